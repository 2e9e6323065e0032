//! Where clients' own test suites expect RabbitMQ's exact answer: a
//! publish with `immediate` (540, connection closed) and an exchange of an
//! unknown type (406, channel closed).

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ExchangeKind};

use crate::amqp_support::*;
use crate::support::Broker;

/// The reply code of the first error `conn` reports, within 10 s.
async fn first_error(events: &mut (impl futures_lite::Stream<Item = lapin::Event> + Unpin)) -> Option<u16> {
    let first = async {
        loop {
            match events.next().await {
                Some(lapin::Event::Error(e)) => return reply_code(&e),
                Some(_) => continue,
                None => return None,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), first).await.expect("an error within 10 s")
}

/// Another connection still declares, publishes and reads.
async fn still_serves(other: &Connection, queue: &str) {
    let ch = other.create_channel().await.unwrap();
    declare(&ch, queue, false).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    publish(&ch, "", queue, b"ok", persistent()).await;
    assert_eq!(get(&ch, queue).await.as_deref(), Some("ok"));
}

#[tokio::test]
async fn publish_with_immediate_closes_the_connection_with_540() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let other = connect(&b).await;
    let conn = connect(&b).await;
    let mut events = Box::pin(conn.events_listener());
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "q", false).await;
    let opts = BasicPublishOptions { immediate: true, ..Default::default() };
    // basic.publish has no reply: the connection.close arrives on its own.
    let _ = ch.basic_publish("".into(), "q".into(), opts, b"now", BasicProperties::default()).await;
    assert_eq!(first_error(&mut events).await, Some(540));
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while conn.status().connected() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    closed.await.expect("the connection is closed within 10 s");

    // The message went nowhere; other connections are unaffected.
    let ch = other.create_channel().await.unwrap();
    assert_eq!(ready(&ch, "q").await, 0);
    still_serves(&other, "q2").await;
}

#[tokio::test]
async fn unknown_exchange_type_closes_the_channel_with_406() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let conn = connect(&b).await;
    let ch = conn.create_channel().await.unwrap();
    let kind = ExchangeKind::Custom("x-unknown".into());
    let err = ch
        .exchange_declare("odd".into(), kind, ExchangeDeclareOptions::default(), FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(406));
    assert!(!ch.status().connected());

    // The same for x-delayed-message naming an unknown x-delayed-type.
    let ch = conn.create_channel().await.unwrap();
    let mut a = FieldTable::default();
    a.insert("x-delayed-type".into(), lapin::types::AMQPValue::LongString("x-unknown".into()));
    let kind = ExchangeKind::Custom("x-delayed-message".into());
    let err = ch.exchange_declare("later".into(), kind, ExchangeDeclareOptions::default(), a).await.unwrap_err();
    assert_eq!(reply_code(&err), Some(406));

    // Only the channel closed: the connection goes on.
    assert!(conn.status().connected());
    still_serves(&conn, "q").await;
}
