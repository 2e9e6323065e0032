//! AMQP 0-9-1 with lapin: queues, exchanges, publishing, consuming.

use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};

use crate::amqp_support::*;
use crate::support::Broker;

#[tokio::test]
async fn publish_confirm_consume_ack_through_the_default_exchange() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (_c, ch) = channel(&b).await;
    declare(&ch, "task_queue", true).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    for i in 0..3 {
        publish(&ch, "", "task_queue", format!("task {i}").as_bytes(), persistent()).await;
    }
    assert_eq!(ready(&ch, "task_queue").await, 3);
    let mut cons = consumer(&ch, "task_queue", "worker").await;
    for i in 0..3 {
        let d = next(&mut cons).await;
        assert_eq!(d.data, format!("task {i}").as_bytes());
        assert!(!d.redelivered);
        assert_eq!(d.routing_key.as_str(), "task_queue");
        assert_eq!(d.properties.delivery_mode(), &Some(2));
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    nothing_within(&mut cons, 200).await;
    assert_eq!(ready(&ch, "task_queue").await, 0);
}

#[tokio::test]
async fn properties_and_large_bodies_survive_the_trip() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (_c, ch) = channel(&b).await;
    declare(&ch, "big", false).await;
    let mut headers = FieldTable::default();
    headers.insert("x-trace".into(), AMQPValue::LongString("abc".into()));
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_correlation_id("c-1".into())
        .with_headers(headers.clone())
        .with_priority(3);
    // Larger than frame_max (128 KiB): split into several body frames both ways.
    let body: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
    publish(&ch, "", "big", &body, props).await;
    let mut cons = consumer(&ch, "big", "").await;
    let d = next(&mut cons).await;
    assert_eq!(d.data.len(), body.len());
    assert!(d.data == body);
    assert_eq!(d.properties.content_type().as_ref().map(lapin::types::ShortString::as_str), Some("application/json"));
    assert_eq!(d.properties.correlation_id().as_ref().map(lapin::types::ShortString::as_str), Some("c-1"));
    assert_eq!(d.properties.headers().as_ref(), Some(&headers));
    assert_eq!(d.properties.priority(), &Some(3));
}

#[tokio::test]
async fn exchanges_route_by_type() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (_c, ch) = channel(&b).await;
    for (name, kind) in [
        ("ex.direct", ExchangeKind::Direct),
        ("ex.fanout", ExchangeKind::Fanout),
        ("ex.topic", ExchangeKind::Topic),
        ("ex.headers", ExchangeKind::Headers),
    ] {
        ch.exchange_declare(name.into(), kind, ExchangeDeclareOptions::default(), FieldTable::default()).await.unwrap();
    }
    for q in ["q1", "q2", "q3"] {
        declare(&ch, q, false).await;
    }
    let bind = |q: &'static str, ex: &'static str, key: &'static str, args: FieldTable| {
        let ch = ch.clone();
        async move { ch.queue_bind(q.into(), ex.into(), key.into(), QueueBindOptions::default(), args).await.unwrap() }
    };
    bind("q1", "ex.direct", "red", FieldTable::default()).await;
    bind("q2", "ex.direct", "blue", FieldTable::default()).await;
    bind("q1", "ex.fanout", "", FieldTable::default()).await;
    bind("q2", "ex.fanout", "", FieldTable::default()).await;
    bind("q1", "ex.topic", "stock.*.nyse", FieldTable::default()).await;
    bind("q2", "ex.topic", "stock.#", FieldTable::default()).await;
    let mut all = FieldTable::default();
    all.insert("x-match".into(), AMQPValue::LongString("all".into()));
    all.insert("format".into(), AMQPValue::LongString("pdf".into()));
    all.insert("type".into(), AMQPValue::LongString("report".into()));
    let mut any = FieldTable::default();
    any.insert("x-match".into(), AMQPValue::LongString("any".into()));
    any.insert("format".into(), AMQPValue::LongString("pdf".into()));
    any.insert("type".into(), AMQPValue::LongString("report".into()));
    bind("q1", "ex.headers", "", all).await;
    bind("q2", "ex.headers", "", any).await;

    let plain = BasicProperties::default;
    publish(&ch, "ex.direct", "red", b"d-red", plain()).await;
    publish(&ch, "ex.direct", "blue", b"d-blue", plain()).await;
    publish(&ch, "ex.direct", "green", b"d-green", plain()).await;
    publish(&ch, "ex.fanout", "whatever", b"f", plain()).await;
    publish(&ch, "ex.topic", "stock.ibm.nyse", b"t1", plain()).await;
    publish(&ch, "ex.topic", "stock.ibm.nasdaq", b"t2", plain()).await;
    publish(&ch, "ex.topic", "bond.x", b"t3", plain()).await;
    let mut h = FieldTable::default();
    h.insert("format".into(), AMQPValue::LongString("pdf".into()));
    publish(&ch, "ex.headers", "", b"h-pdf", plain().with_headers(h.clone())).await;
    h.insert("type".into(), AMQPValue::LongString("report".into()));
    publish(&ch, "ex.headers", "", b"h-pdf-report", plain().with_headers(h)).await;

    let mut got1 = Vec::new();
    while let Some(m) = get(&ch, "q1").await {
        got1.push(m);
    }
    let mut got2 = Vec::new();
    while let Some(m) = get(&ch, "q2").await {
        got2.push(m);
    }
    assert_eq!(got1, ["d-red", "f", "t1", "h-pdf-report"]);
    assert_eq!(got2, ["d-blue", "f", "t1", "t2", "h-pdf", "h-pdf-report"]);
    assert_eq!(get(&ch, "q3").await, None);

    // Unbinding stops the routing.
    ch.queue_unbind("q1".into(), "ex.direct".into(), "red".into(), FieldTable::default()).await.unwrap();
    publish(&ch, "ex.direct", "red", b"again", plain()).await;
    assert_eq!(get(&ch, "q1").await, None);
}

#[tokio::test]
async fn exchange_to_exchange_bindings_and_alternate_exchange() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (_c, ch) = channel(&b).await;
    let mut args = FieldTable::default();
    args.insert("alternate-exchange".into(), AMQPValue::LongString("unrouted".into()));
    ch.exchange_declare(
        "unrouted".into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_declare("front".into(), ExchangeKind::Direct, ExchangeDeclareOptions::default(), args).await.unwrap();
    ch.exchange_declare("back".into(), ExchangeKind::Topic, ExchangeDeclareOptions::default(), FieldTable::default())
        .await
        .unwrap();
    ch.exchange_bind(
        "back".into(),
        "front".into(),
        "orders".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for (q, ex, key) in [("orders", "back", "#"), ("lost", "unrouted", "")] {
        declare(&ch, q, false).await;
        ch.queue_bind(q.into(), ex.into(), key.into(), QueueBindOptions::default(), FieldTable::default())
            .await
            .unwrap();
    }
    publish(&ch, "front", "orders", b"o1", BasicProperties::default()).await;
    publish(&ch, "front", "nobody", b"x1", BasicProperties::default()).await;
    assert_eq!(get(&ch, "orders").await.as_deref(), Some("o1"));
    assert_eq!(get(&ch, "orders").await, None);
    assert_eq!(get(&ch, "lost").await.as_deref(), Some("x1"));
}

#[tokio::test]
async fn mandatory_unroutable_is_returned_then_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (_c, ch) = channel(&b).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let confirm = ch
        .basic_publish(
            "".into(),
            "no-such-queue".into(),
            BasicPublishOptions { mandatory: true, ..Default::default() },
            b"lost",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
    let returned = confirm.take_message().expect("basic.return");
    assert_eq!(returned.data, b"lost");
    assert_eq!(returned.reply_code, 312);
}

#[tokio::test]
async fn nack_requeue_redelivers_and_reject_drops() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (_c, ch) = channel(&b).await;
    declare(&ch, "work", false).await;
    publish(&ch, "", "work", b"one", BasicProperties::default()).await;
    publish(&ch, "", "work", b"two", BasicProperties::default()).await;
    let mut cons = consumer(&ch, "work", "c").await;
    let d1 = next(&mut cons).await;
    let d2 = next(&mut cons).await;
    assert_eq!((d1.data.as_slice(), d1.redelivered), (&b"one"[..], false));
    d1.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.unwrap();
    let again = next(&mut cons).await;
    assert_eq!((again.data.as_slice(), again.redelivered), (&b"one"[..], true));
    again.ack(BasicAckOptions::default()).await.unwrap();
    d2.reject(BasicRejectOptions { requeue: false }).await.unwrap();
    nothing_within(&mut cons, 300).await;
    assert_eq!(ready(&ch, "work").await, 0);
}

#[tokio::test]
async fn prefetch_bounds_unacknowledged_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (_c, ch) = channel(&b).await;
    declare(&ch, "pf", false).await;
    for i in 0..5 {
        publish(&ch, "", "pf", format!("{i}").as_bytes(), BasicProperties::default()).await;
    }
    ch.basic_qos(2, BasicQosOptions::default()).await.unwrap();
    let mut cons = consumer(&ch, "pf", "c").await;
    let a = next(&mut cons).await;
    let _b = next(&mut cons).await;
    nothing_within(&mut cons, 300).await;
    a.ack(BasicAckOptions::default()).await.unwrap();
    let c = next(&mut cons).await;
    assert_eq!(c.data, b"2");
    nothing_within(&mut cons, 300).await;
    // Acknowledging everything so far (multiple) lets two more through.
    c.ack(BasicAckOptions { multiple: true }).await.unwrap();
    assert_eq!(next(&mut cons).await.data, b"3");
    assert_eq!(next(&mut cons).await.data, b"4");
}

#[tokio::test]
async fn closing_a_channel_requeues_its_unacked_messages() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let conn = connect(&b).await;
    let ch1 = conn.create_channel().await.unwrap();
    declare(&ch1, "rq", false).await;
    publish(&ch1, "", "rq", b"m", BasicProperties::default()).await;
    let mut cons = consumer(&ch1, "rq", "c1").await;
    let d = next(&mut cons).await;
    assert!(!d.redelivered);
    ch1.close(200, "bye".into()).await.unwrap();
    let ch2 = conn.create_channel().await.unwrap();
    let mut cons2 = consumer(&ch2, "rq", "c2").await;
    let d = next(&mut cons2).await;
    assert_eq!((d.data.as_slice(), d.redelivered), (&b"m"[..], true));
    // basic.recover hands unacked deliveries back as well.
    ch2.basic_recover(BasicRecoverOptions { requeue: true }).await.unwrap();
    let d = next(&mut cons2).await;
    assert!(d.redelivered);
}

#[tokio::test]
async fn purge_delete_and_queue_lifecycles() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (c1, ch) = channel(&b).await;
    declare(&ch, "p", false).await;
    for _ in 0..4 {
        publish(&ch, "", "p", b"x", BasicProperties::default()).await;
    }
    assert_eq!(ch.queue_purge("p".into(), QueuePurgeOptions::default()).await.unwrap(), 4);
    assert_eq!(ready(&ch, "p").await, 0);
    publish(&ch, "", "p", b"y", BasicProperties::default()).await;
    let err =
        ch.queue_delete("p".into(), QueueDeleteOptions { if_empty: true, ..Default::default() }).await.unwrap_err();
    assert_eq!(reply_code(&err), Some(406));
    let ch = c1.create_channel().await.unwrap();
    assert_eq!(ch.queue_delete("p".into(), QueueDeleteOptions::default()).await.unwrap(), 1);
    let err = ch
        .queue_declare("p".into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(404));

    // Server-named exclusive queues go away with their connection; other
    // connections may not touch them meanwhile.
    let ch = c1.create_channel().await.unwrap();
    let q = ch
        .queue_declare("".into(), QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap();
    let name = q.name().as_str().to_string();
    assert!(name.starts_with("amq.gen-"));
    let (c2, ch2) = channel(&b).await;
    let err = ch2.basic_consume(name.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default());
    assert_eq!(reply_code(&err.await.unwrap_err()), Some(405));
    c1.close(200, "bye".into()).await.unwrap();
    let ch2 = c2.create_channel().await.unwrap();
    let err = ch2
        .queue_declare(
            name.as_str().into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(404));

    // Auto-delete: gone when its last consumer cancels.
    let ch2 = c2.create_channel().await.unwrap();
    let opts = QueueDeclareOptions { auto_delete: true, ..Default::default() };
    ch2.queue_declare("ad".into(), opts, FieldTable::default()).await.unwrap();
    let _cons = consumer(&ch2, "ad", "only").await;
    ch2.basic_cancel("only".into(), BasicCancelOptions::default()).await.unwrap();
    let err = ch2
        .queue_declare("ad".into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(404));
}

#[tokio::test]
async fn channel_errors_have_rabbitmq_codes_and_spare_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let conn = connect(&b).await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "d", true).await;

    // 406: redeclared with other properties.
    let err = ch.queue_declare("d".into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap_err();
    assert_eq!(reply_code(&err), Some(406));
    // 404: publishing to a missing exchange.
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let r = ch
        .basic_publish("nope".into(), "k".into(), BasicPublishOptions::default(), b"x", BasicProperties::default())
        .await;
    let failed = match r {
        Ok(confirm) => confirm.await.is_err() || ch.wait_for_confirms().await.is_err(),
        Err(_) => true,
    };
    assert!(failed);
    assert!(!ch.status().connected());
    // 403: binding to the default exchange; declaring an amq.* exchange.
    let ch = conn.create_channel().await.unwrap();
    let err = ch.queue_bind("d".into(), "".into(), "d".into(), QueueBindOptions::default(), FieldTable::default());
    assert_eq!(reply_code(&err.await.unwrap_err()), Some(403));
    let ch = conn.create_channel().await.unwrap();
    let err = ch.exchange_declare(
        "amq.mine".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    );
    assert_eq!(reply_code(&err.await.unwrap_err()), Some(403));
    // 406: acknowledging an unknown delivery tag. basic.ack has no reply,
    // so the channel.close arrives on its own, before or after the client's
    // next method: read it from the connection's events, not from a method
    // that may race it.
    let mut events = conn.events_listener();
    let ch = conn.create_channel().await.unwrap();
    ch.basic_ack(42, BasicAckOptions::default()).await.unwrap();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match events.next().await {
                Some(lapin::Event::Error(e)) => return reply_code(&e),
                Some(_) => continue,
                None => return None,
            }
        }
    });
    assert_eq!(closed.await.expect("the channel is closed within 10 s"), Some(406));

    // The connection itself is fine.
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    publish(&ch, "", "d", b"ok", persistent()).await;
    assert_eq!(ready(&ch, "d").await, 1);
}

#[tokio::test]
async fn transactions_commit_and_roll_back() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (_c, ch) = channel(&b).await;
    declare(&ch, "txq", true).await;
    ch.tx_select().await.unwrap();
    ch.basic_publish("".into(), "txq".into(), BasicPublishOptions::default(), b"a", persistent()).await.unwrap();
    assert_eq!(ready(&ch, "txq").await, 0, "nothing before commit");
    ch.tx_commit().await.unwrap();
    assert_eq!(ready(&ch, "txq").await, 1);
    ch.basic_publish("".into(), "txq".into(), BasicPublishOptions::default(), b"b", persistent()).await.unwrap();
    ch.tx_rollback().await.unwrap();
    assert_eq!(ready(&ch, "txq").await, 1);
}

#[tokio::test]
async fn exclusive_consumers_lock_out_others() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (conn, ch) = channel(&b).await;
    declare(&ch, "ex", false).await;
    let opts = BasicConsumeOptions { exclusive: true, ..Default::default() };
    let _c1 = ch.basic_consume("ex".into(), "first".into(), opts, FieldTable::default()).await.unwrap();
    let ch2 = conn.create_channel().await.unwrap();
    let err = ch2.basic_consume("ex".into(), "second".into(), BasicConsumeOptions::default(), FieldTable::default());
    assert_eq!(reply_code(&err.await.unwrap_err()), Some(403));
}

#[tokio::test]
async fn internal_and_auto_delete_exchanges_and_if_unused() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (conn, ch) = channel(&b).await;
    let internal = ExchangeDeclareOptions { internal: true, ..Default::default() };
    ch.exchange_declare("inner".into(), ExchangeKind::Fanout, internal, FieldTable::default()).await.unwrap();
    ch.exchange_declare("outer".into(), ExchangeKind::Fanout, ExchangeDeclareOptions::default(), FieldTable::default())
        .await
        .unwrap();
    ch.exchange_bind("inner".into(), "outer".into(), "".into(), ExchangeBindOptions::default(), FieldTable::default())
        .await
        .unwrap();
    declare(&ch, "behind", false).await;
    ch.queue_bind("behind".into(), "inner".into(), "".into(), QueueBindOptions::default(), FieldTable::default())
        .await
        .unwrap();
    // Reachable through another exchange, not directly.
    publish(&ch, "outer", "", b"via outer", BasicProperties::default()).await;
    assert_eq!(get(&ch, "behind").await.as_deref(), Some("via outer"));
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let r = ch
        .basic_publish("inner".into(), "".into(), BasicPublishOptions::default(), b"x", BasicProperties::default())
        .await;
    let refused = match r {
        Ok(c) => c.await.is_err() || !ch.status().connected(),
        Err(_) => true,
    };
    assert!(refused, "publishing to an internal exchange is refused");

    // if-unused: an exchange with bindings, a queue with a consumer.
    let ch = conn.create_channel().await.unwrap();
    let err = ch.exchange_delete("inner".into(), ExchangeDeleteOptions { if_unused: true, ..Default::default() });
    assert_eq!(reply_code(&err.await.unwrap_err()), Some(406));
    let ch = conn.create_channel().await.unwrap();
    let _cons = consumer(&ch, "behind", "c").await;
    let ch2 = conn.create_channel().await.unwrap();
    let err = ch2.queue_delete("behind".into(), QueueDeleteOptions { if_unused: true, ..Default::default() });
    assert_eq!(reply_code(&err.await.unwrap_err()), Some(406));
    let ch2 = conn.create_channel().await.unwrap();
    ch2.exchange_delete("outer".into(), ExchangeDeleteOptions::default()).await.unwrap();
    ch2.exchange_delete("no-such".into(), ExchangeDeleteOptions::default()).await.unwrap();

    // An auto-delete exchange goes with its last binding.
    let opts = ExchangeDeclareOptions { auto_delete: true, ..Default::default() };
    ch2.exchange_declare("brief-x".into(), ExchangeKind::Direct, opts, FieldTable::default()).await.unwrap();
    declare(&ch2, "bq", false).await;
    ch2.queue_bind("bq".into(), "brief-x".into(), "k".into(), QueueBindOptions::default(), FieldTable::default())
        .await
        .unwrap();
    ch2.queue_unbind("bq".into(), "brief-x".into(), "k".into(), FieldTable::default()).await.unwrap();
    let passive = ExchangeDeclareOptions { passive: true, ..Default::default() };
    let err = ch2.exchange_declare("brief-x".into(), ExchangeKind::Direct, passive, FieldTable::default());
    assert_eq!(reply_code(&err.await.unwrap_err()), Some(404));

    // basic.get reports the messages left; no-ack consumers need no acks.
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "counted", false).await;
    for m in ["1", "2", "3"] {
        publish(&ch, "", "counted", m.as_bytes(), BasicProperties::default()).await;
    }
    let m = ch.basic_get("counted".into(), BasicGetOptions { no_ack: true }).await.unwrap().unwrap();
    assert_eq!(m.message_count, 2);
    let opts = BasicConsumeOptions { no_ack: true, ..Default::default() };
    let mut c = ch.basic_consume("counted".into(), "na".into(), opts, FieldTable::default()).await.unwrap();
    assert_eq!(next(&mut c).await.data, b"2");
    assert_eq!(next(&mut c).await.data, b"3");
    assert_eq!(ready(&ch, "counted").await, 0);
}
