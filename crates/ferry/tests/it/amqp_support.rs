//! Helpers for AMQP tests with lapin.

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};

use crate::support::Broker;

pub async fn connect(b: &Broker) -> Connection {
    Connection::connect(&b.amqp_uri(), ConnectionProperties::default()).await.expect("amqp connect")
}

pub async fn channel(b: &Broker) -> (Connection, Channel) {
    let c = connect(b).await;
    let ch = c.create_channel().await.expect("channel");
    (c, ch)
}

pub async fn declare(ch: &Channel, name: &str, durable: bool) {
    let opts = QueueDeclareOptions { durable, ..Default::default() };
    ch.queue_declare(name.into(), opts, FieldTable::default()).await.expect("queue.declare");
}

pub fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// Publishes through `exchange` and waits for the broker's confirm (the
/// channel must be in confirm mode) or, without confirms, for the send.
pub async fn publish(ch: &Channel, exchange: &str, key: &str, body: &[u8], props: BasicProperties) {
    let confirm = ch
        .basic_publish(exchange.into(), key.into(), BasicPublishOptions::default(), body, props)
        .await
        .expect("basic.publish");
    let c = confirm.await.expect("confirm");
    assert!(!c.is_nack(), "publish nacked");
}

pub async fn consumer(ch: &Channel, queue: &str, tag: &str) -> Consumer {
    ch.basic_consume(queue.into(), tag.into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("basic.consume")
}

/// The next delivery, failing the test after 10 s.
pub async fn next(c: &mut Consumer) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), c.next())
        .await
        .expect("a delivery within 10 s")
        .expect("consumer stream open")
        .expect("delivery")
}

/// Asserts nothing arrives within `ms`.
pub async fn nothing_within(c: &mut Consumer, ms: u64) {
    if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(ms), c.next()).await {
        panic!("unexpected delivery: {:?}", d.map(|d| String::from_utf8_lossy(&d.data).into_owned()));
    }
}

/// Ready messages of `queue` (passive declare).
pub async fn ready(ch: &Channel, queue: &str) -> u32 {
    let opts = QueueDeclareOptions { passive: true, ..Default::default() };
    ch.queue_declare(queue.into(), opts, FieldTable::default()).await.expect("passive declare").message_count()
}

/// basic.get's body, if a message was there.
pub async fn get(ch: &Channel, queue: &str) -> Option<String> {
    let m = ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.expect("basic.get")?;
    Some(String::from_utf8_lossy(&m.delivery.data).into_owned())
}

/// The reply code a failed operation closed its channel with.
pub fn reply_code(e: &lapin::Error) -> Option<u16> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(p) => Some(p.get_id()),
        _ => None,
    }
}
