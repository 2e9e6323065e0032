//! TTL, length limits, dead-lettering, delivery limits, x-expires and
//! single-active-consumer, with lapin.

use std::time::Duration;

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};

use crate::amqp_support::*;
use crate::support::Broker;

fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(v.into())
}

/// A fanout exchange "dlx" into queue "dead".
async fn dead_letter_target(ch: &Channel) {
    ch.exchange_declare("dlx".into(), ExchangeKind::Fanout, ExchangeDeclareOptions::default(), FieldTable::default())
        .await
        .unwrap();
    declare(ch, "dead", false).await;
    ch.queue_bind("dead".into(), "dlx".into(), "".into(), QueueBindOptions::default(), FieldTable::default())
        .await
        .unwrap();
}

async fn declare_with(ch: &Channel, name: &str, a: FieldTable) {
    ch.queue_declare(name.into(), QueueDeclareOptions::default(), a).await.expect("queue.declare");
}

/// The x-death entries' (queue, reason, count).
fn deaths(d: &lapin::message::Delivery) -> Vec<(String, String, i64)> {
    let Some(h) = d.properties.headers() else { return vec![] };
    let Some(AMQPValue::FieldArray(a)) = h.inner().get("x-death") else { return vec![] };
    let text = |v: Option<&AMQPValue>| match v {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        _ => String::new(),
    };
    a.as_slice()
        .iter()
        .filter_map(|v| match v {
            AMQPValue::FieldTable(t) => Some((
                text(t.inner().get("queue")),
                text(t.inner().get("reason")),
                match t.inner().get("count") {
                    Some(AMQPValue::LongLongInt(n)) => *n,
                    _ => -1,
                },
            )),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn rejected_messages_are_dead_lettered_with_x_death() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (_c, ch) = channel(&b).await;
    dead_letter_target(&ch).await;
    declare_with(&ch, "work", args(&[("x-dead-letter-exchange", s("dlx"))])).await;
    publish(&ch, "", "work", b"poison", BasicProperties::default()).await;
    let mut cons = consumer(&ch, "work", "w").await;
    next(&mut cons).await.reject(BasicRejectOptions { requeue: false }).await.unwrap();
    let mut dead = consumer(&ch, "dead", "d").await;
    let d = next(&mut dead).await;
    assert_eq!(d.data, b"poison");
    assert_eq!(d.routing_key.as_str(), "work");
    assert_eq!(deaths(&d), vec![("work".into(), "rejected".into(), 1)]);
}

#[tokio::test]
async fn expired_messages_leave_for_the_dead_letter_exchange() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (_c, ch) = channel(&b).await;
    dead_letter_target(&ch).await;
    let a = args(&[
        ("x-message-ttl", AMQPValue::LongInt(200)),
        ("x-dead-letter-exchange", s("dlx")),
        ("x-dead-letter-routing-key", s("expired-key")),
    ]);
    declare_with(&ch, "ttl", a).await;
    publish(&ch, "", "ttl", b"old", BasicProperties::default()).await;
    // Per-message expiration on a queue without TTL.
    declare_with(&ch, "pm", args(&[("x-dead-letter-exchange", s("dlx"))])).await;
    publish(&ch, "", "pm", b"short-lived", BasicProperties::default().with_expiration("100".into())).await;
    publish(&ch, "", "pm", b"long-lived", BasicProperties::default().with_expiration("600000".into())).await;
    // No consumer on either: expiry happens anyway.
    let mut dead = consumer(&ch, "dead", "d").await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let d = next(&mut dead).await;
        got.push((String::from_utf8_lossy(&d.data).into_owned(), d.routing_key.as_str().to_string(), deaths(&d)));
        assert_eq!(d.properties.expiration(), &None);
    }
    got.sort();
    assert_eq!(got[0].0, "old");
    assert_eq!(got[0].1, "expired-key");
    assert_eq!(got[0].2, vec![("ttl".into(), "expired".into(), 1)]);
    assert_eq!(got[1].0, "short-lived");
    assert_eq!(get(&ch, "pm").await.as_deref(), Some("long-lived"));
    assert_eq!(get(&ch, "ttl").await, None);
}

#[tokio::test]
async fn max_length_drops_the_head_or_rejects_publishes() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (_c, ch) = channel(&b).await;
    dead_letter_target(&ch).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    declare_with(&ch, "head", args(&[("x-max-length", AMQPValue::LongInt(2)), ("x-dead-letter-exchange", s("dlx"))]))
        .await;
    for m in ["1", "2", "3"] {
        publish(&ch, "", "head", m.as_bytes(), BasicProperties::default()).await;
    }
    assert_eq!(get(&ch, "head").await.as_deref(), Some("2"));
    assert_eq!(get(&ch, "head").await.as_deref(), Some("3"));
    assert_eq!(get(&ch, "dead").await.as_deref(), Some("1"));

    let a = args(&[("x-max-length", AMQPValue::LongInt(1)), ("x-overflow", s("reject-publish"))]);
    declare_with(&ch, "rej", a).await;
    publish(&ch, "", "rej", b"a", BasicProperties::default()).await;
    let c = ch
        .basic_publish("".into(), "rej".into(), BasicPublishOptions::default(), b"b", BasicProperties::default())
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(c.is_nack(), "a full reject-publish queue nacks");
    assert_eq!(get(&ch, "rej").await.as_deref(), Some("a"));
    assert_eq!(get(&ch, "rej").await, None);

    declare_with(&ch, "bytes", args(&[("x-max-length-bytes", AMQPValue::LongInt(10))])).await;
    for m in ["aaaa", "bbbb", "cccc"] {
        publish(&ch, "", "bytes", m.as_bytes(), BasicProperties::default()).await;
    }
    assert_eq!(get(&ch, "bytes").await.as_deref(), Some("bbbb"));
    assert_eq!(get(&ch, "bytes").await.as_deref(), Some("cccc"));
}

#[tokio::test]
async fn poison_messages_hit_the_delivery_limit() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (_c, ch) = channel(&b).await;
    dead_letter_target(&ch).await;
    let a = args(&[("x-delivery-limit", AMQPValue::LongInt(2)), ("x-dead-letter-exchange", s("dlx"))]);
    declare_with(&ch, "retry", a).await;
    publish(&ch, "", "retry", b"poison", BasicProperties::default()).await;
    let mut cons = consumer(&ch, "retry", "w").await;
    // Delivered, then returned: with a limit of 2, the third return is one too many.
    for _ in 0..3 {
        let d = next(&mut cons).await;
        d.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.unwrap();
    }
    nothing_within(&mut cons, 300).await;
    let mut dead = consumer(&ch, "dead", "d").await;
    let d = next(&mut dead).await;
    assert_eq!(d.data, b"poison");
    assert_eq!(deaths(&d), vec![("retry".into(), "delivery_limit".into(), 1)]);
}

#[tokio::test]
async fn unused_queues_expire_and_single_active_consumer_hands_over() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (conn, ch) = channel(&b).await;
    declare_with(&ch, "brief", args(&[("x-expires", AMQPValue::LongInt(300))])).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let err = ch
        .queue_declare(
            "brief".into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(404));

    let ch = conn.create_channel().await.unwrap();
    declare_with(&ch, "sac", args(&[("x-single-active-consumer", AMQPValue::Boolean(true))])).await;
    let mut first = consumer(&ch, "sac", "first").await;
    let ch2 = conn.create_channel().await.unwrap();
    let mut second = consumer(&ch2, "sac", "second").await;
    for m in ["a", "b"] {
        publish(&ch, "", "sac", m.as_bytes(), BasicProperties::default()).await;
    }
    for m in ["a", "b"] {
        let d = next(&mut first).await;
        assert_eq!(d.data, m.as_bytes());
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    nothing_within(&mut second, 300).await;
    ch.basic_cancel("first".into(), BasicCancelOptions::default()).await.unwrap();
    publish(&ch2, "", "sac", b"c", BasicProperties::default()).await;
    assert_eq!(next(&mut second).await.data, b"c");

    // Invalid arguments are refused with 406.
    let ch = conn.create_channel().await.unwrap();
    let err = ch.queue_declare("bad".into(), QueueDeclareOptions::default(), args(&[("x-overflow", s("explode"))]));
    assert_eq!(reply_code(&err.await.unwrap_err()), Some(406));
}

#[tokio::test]
async fn priority_queues_deliver_higher_priorities_first_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Broker::start(dir.path());
    {
        let (_c, ch) = channel(&b).await;
        let opts = QueueDeclareOptions { durable: true, ..Default::default() };
        ch.queue_declare("prio".into(), opts, args(&[("x-max-priority", AMQPValue::LongInt(5))])).await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        for (body, p) in [("low", 1u8), ("none", 0), ("high", 5), ("capped", 9), ("mid", 3)] {
            publish(&ch, "", "prio", body.as_bytes(), persistent().with_priority(p)).await;
        }
        assert_eq!(ready(&ch, "prio").await, 5);
        assert_eq!(get(&ch, "prio").await.as_deref(), Some("high"));
    }
    b.restart();
    let (_c, ch) = channel(&b).await;
    let mut got = Vec::new();
    while let Some(m) = get(&ch, "prio").await {
        got.push(m);
    }
    // 9 is capped at the maximum 5 and queued behind the earlier 5.
    assert_eq!(got, ["capped", "mid", "low", "none"]);
}
