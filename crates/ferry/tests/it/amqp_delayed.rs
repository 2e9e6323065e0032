//! Delayed delivery (x-delayed-message) and the retry-with-backoff recipe.

use std::time::{Duration, Instant};

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};

use crate::amqp_support::*;
use crate::support::Broker;

async fn delayed_exchange(ch: &Channel, name: &str, kind: &str) {
    let mut a = FieldTable::default();
    a.insert("x-delayed-type".into(), AMQPValue::LongString(kind.into()));
    let opts = ExchangeDeclareOptions { durable: true, ..Default::default() };
    ch.exchange_declare(name.into(), lapin::ExchangeKind::Custom("x-delayed-message".into()), opts, a).await.unwrap();
}

fn delay(ms: i64) -> BasicProperties {
    let mut h = FieldTable::default();
    h.insert("x-delay".into(), AMQPValue::LongLongInt(ms));
    persistent().with_headers(h)
}

#[tokio::test]
async fn delayed_messages_wait_for_their_x_delay_and_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Broker::start(dir.path());
    {
        let (_c, ch) = channel(&b).await;
        delayed_exchange(&ch, "later", "direct").await;
        declare(&ch, "inbox", true).await;
        ch.queue_bind("inbox".into(), "later".into(), "k".into(), QueueBindOptions::default(), FieldTable::default())
            .await
            .unwrap();
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let start = Instant::now();
        publish(&ch, "later", "k", b"slow", delay(700)).await;
        publish(&ch, "later", "k", b"fast", delay(150)).await;
        publish(&ch, "later", "k", b"now", persistent()).await;
        publish(&ch, "later", "other-key", b"unrouted", delay(10)).await;
        let mut cons = consumer(&ch, "inbox", "c").await;
        let mut order = Vec::new();
        for _ in 0..3 {
            let d = next(&mut cons).await;
            order.push((String::from_utf8_lossy(&d.data).into_owned(), start.elapsed()));
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
        let names: Vec<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["now", "fast", "slow"]);
        assert!(order[1].1 >= Duration::from_millis(150) && order[2].1 >= Duration::from_millis(700));
        nothing_within(&mut cons, 200).await;

        // A delay pending across kill -9 is still honoured after the restart.
        publish(&ch, "later", "k", b"after-crash", delay(1500)).await;
        b.kill9();
    }
    b.start_again();
    let (_c, ch) = channel(&b).await;
    assert_eq!(ready(&ch, "inbox").await, 0, "not due yet");
    let mut cons = consumer(&ch, "inbox", "c2").await;
    let d = next(&mut cons).await;
    assert_eq!(d.data, b"after-crash");
    d.ack(BasicAckOptions::default()).await.unwrap();
    nothing_within(&mut cons, 300).await;

    // x-delayed-type is required.
    let err = ch
        .exchange_declare(
            "bad".into(),
            lapin::ExchangeKind::Custom("x-delayed-message".into()),
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(406));
}

/// The recipe in docs/protocols.md: a failed message is republished to a
/// delayed exchange with a growing x-delay and a retry count; after three
/// retries the consumer rejects it and the queue dead-letters it.
#[tokio::test]
async fn retry_with_exponential_backoff_then_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (_c, ch) = channel(&b).await;
    delayed_exchange(&ch, "retry", "direct").await;
    ch.exchange_declare(
        "dead".into(),
        lapin::ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare(&ch, "orders.dead", true).await;
    ch.queue_bind("orders.dead".into(), "dead".into(), "".into(), QueueBindOptions::default(), FieldTable::default())
        .await
        .unwrap();
    let mut a = FieldTable::default();
    a.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("dead".into()));
    let opts = QueueDeclareOptions { durable: true, ..Default::default() };
    ch.queue_declare("orders".into(), opts, a).await.unwrap();
    ch.queue_bind("orders".into(), "retry".into(), "orders".into(), QueueBindOptions::default(), FieldTable::default())
        .await
        .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    publish(&ch, "", "orders", b"always fails", persistent()).await;

    let mut cons = consumer(&ch, "orders", "worker").await;
    let mut seen = Vec::new();
    let start = Instant::now();
    loop {
        let d = next(&mut cons).await;
        let retries = d
            .properties
            .headers()
            .as_ref()
            .and_then(|h| match h.inner().get("x-retries") {
                Some(AMQPValue::LongInt(n)) => Some(*n),
                _ => None,
            })
            .unwrap_or(0);
        seen.push((retries, start.elapsed()));
        if retries >= 3 {
            d.reject(BasicRejectOptions { requeue: false }).await.unwrap();
            break;
        }
        let mut h = FieldTable::default();
        h.insert("x-retries".into(), AMQPValue::LongInt(retries + 1));
        h.insert("x-delay".into(), AMQPValue::LongLongInt(100 << retries));
        publish(&ch, "retry", "orders", &d.data, persistent().with_headers(h)).await;
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_eq!(seen.iter().map(|(r, _)| *r).collect::<Vec<_>>(), [0, 1, 2, 3]);
    // 100, 200 and 400 ms apart at least.
    for (i, w) in seen.windows(2).enumerate() {
        assert!(w[1].1 - w[0].1 >= Duration::from_millis(100 << i), "retry {} came early", i + 1);
    }
    let mut dead = consumer(&ch, "orders.dead", "d").await;
    assert_eq!(next(&mut dead).await.data, b"always fails");
    assert_eq!(ready(&ch, "orders").await, 0);
}

/// The one-argument form: `x-retry-delays` on the work queue.
#[tokio::test]
async fn x_retry_delays_retries_with_backoff_then_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (_c, ch) = channel(&b).await;
    ch.exchange_declare(
        "dead".into(),
        lapin::ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare(&ch, "jobs.dead", true).await;
    ch.queue_bind("jobs.dead".into(), "dead".into(), "".into(), QueueBindOptions::default(), FieldTable::default())
        .await
        .unwrap();
    let mut a = FieldTable::default();
    a.insert("x-retry-delays".into(), AMQPValue::LongString("100,200,400".into()));
    a.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("dead".into()));
    let opts = QueueDeclareOptions { durable: true, ..Default::default() };
    ch.queue_declare("jobs".into(), opts, a).await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    publish(&ch, "", "jobs", b"flaky", persistent()).await;

    let mut cons = consumer(&ch, "jobs", "w").await;
    let start = Instant::now();
    let mut arrivals = Vec::new();
    for _ in 0..4 {
        let d = next(&mut cons).await;
        assert_eq!(d.data, b"flaky");
        assert_eq!(d.routing_key.as_str(), "jobs", "the original routing key is kept");
        arrivals.push(start.elapsed());
        d.nack(BasicNackOptions { requeue: false, ..Default::default() }).await.unwrap();
    }
    nothing_within(&mut cons, 300).await;
    for (i, w) in arrivals.windows(2).enumerate() {
        assert!(w[1] - w[0] >= Duration::from_millis(100 << i), "retry {} came early", i + 1);
    }
    let mut dead = consumer(&ch, "jobs.dead", "d").await;
    let d = next(&mut dead).await;
    let h = d.properties.headers().clone().unwrap();
    let Some(AMQPValue::FieldArray(deaths)) = h.inner().get("x-death") else { panic!("no x-death") };
    let AMQPValue::FieldTable(t) = &deaths.as_slice()[0] else { panic!() };
    // Three retries and the final rejection, all recorded as one entry.
    assert_eq!(t.inner().get("count"), Some(&AMQPValue::LongLongInt(4)));
}
