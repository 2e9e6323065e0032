//! Durable queues across restarts and crashes.

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};

use crate::amqp_support::*;
use crate::support::Broker;

#[tokio::test]
async fn kill9_redelivers_unacked_persistent_messages() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Broker::start(dir.path());
    {
        let (_c, ch) = channel(&b).await;
        declare(&ch, "jobs", true).await;
        // Durable but exclusive: its connection dies with the broker, so it
        // is not restored.
        let opts = QueueDeclareOptions { durable: true, exclusive: true, ..Default::default() };
        ch.queue_declare("mine".into(), opts, FieldTable::default()).await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        for i in 0..10 {
            publish(&ch, "", "jobs", format!("job {i}").as_bytes(), persistent()).await;
        }
        let mut cons = consumer(&ch, "jobs", "w").await;
        let mut got = Vec::new();
        for _ in 0..10 {
            got.push(next(&mut cons).await);
        }
        for d in &got[..4] {
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
        // A round trip on the same connection: the acks before it were handled.
        assert_eq!(ready(&ch, "jobs").await, 0);
        b.kill9();
    }
    b.start_again();
    let (_c, ch) = channel(&b).await;
    let err = ch
        .queue_declare(
            "mine".into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(404));
    let ch = _c.create_channel().await.unwrap();
    assert_eq!(ready(&ch, "jobs").await, 6);
    let mut cons = consumer(&ch, "jobs", "w2").await;
    for i in 4..10 {
        let d = next(&mut cons).await;
        assert_eq!(d.data, format!("job {i}").as_bytes());
        assert!(d.redelivered, "job {i} may have been delivered before the crash");
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    nothing_within(&mut cons, 300).await;
}

#[tokio::test]
async fn definitions_survive_restarts_transient_things_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Broker::start(dir.path());
    {
        let (_c, ch) = channel(&b).await;
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        ch.exchange_declare("logs".into(), ExchangeKind::Fanout, durable, FieldTable::default()).await.unwrap();
        declare(&ch, "kept", true).await;
        declare(&ch, "gone", false).await;
        ch.queue_bind("kept".into(), "logs".into(), "".into(), QueueBindOptions::default(), FieldTable::default())
            .await
            .unwrap();
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        publish(&ch, "logs", "", b"persistent", persistent()).await;
        publish(&ch, "logs", "", b"transient", BasicProperties::default()).await;
        publish(&ch, "", "gone", b"x", persistent()).await;
        assert_eq!(ready(&ch, "kept").await, 2);
    }
    b.restart();
    let (_c, ch) = channel(&b).await;
    // The transient message is counted until the cursor skips it.
    assert_eq!(get(&ch, "kept").await.as_deref(), Some("persistent"));
    assert_eq!(get(&ch, "kept").await, None);
    let err = ch
        .queue_declare(
            "gone".into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(404));
    let ch = _c.create_channel().await.unwrap();
    let err = ch
        .queue_declare(
            "mine".into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(404));
    // The binding is still there.
    let ch = _c.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    publish(&ch, "logs", "", b"after", persistent()).await;
    assert_eq!(get(&ch, "kept").await.as_deref(), Some("after"));
}

#[tokio::test]
async fn acknowledged_prefix_is_reclaimed() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (_c, ch) = channel(&b).await;
    declare(&ch, "reclaim", true).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    // 64 MiB segments: 70 messages of 1 MiB fill more than one.
    let body = vec![7u8; 1 << 20];
    for _ in 0..70 {
        publish(&ch, "", "reclaim", &body, persistent()).await;
    }
    let qdir = dir.path().join("queues/%2F/q/reclaim");
    let segments = || {
        std::fs::read_dir(&qdir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "log"))
            .count()
    };
    assert!(segments() >= 2, "expected a rolled segment");
    let mut cons = consumer(&ch, "reclaim", "c").await;
    for _ in 0..70 {
        next(&mut cons).await.ack(BasicAckOptions::default()).await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while segments() >= 2 {
        assert!(std::time::Instant::now() < deadline, "acknowledged segments were not deleted");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
