//! The Kafka <-> AMQP bridge, with a real client on each side (lapin,
//! librdkafka).

use std::time::{Duration, Instant};

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers as _, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

use crate::amqp_support::*;
use crate::support::{self, Broker};

/// (partition, key, value, headers) of a record.
type Record = (i32, String, String, Vec<(String, String)>);

/// Every record of `topic`, read from the start until `n` arrived.
fn read_topic(b: &Broker, topic: &str, partitions: i32, n: usize) -> Vec<Record> {
    let consumer: BaseConsumer =
        support::config(b).set("group.id", "bridge-test").set("enable.auto.commit", "false").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < n && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            let text = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
            let headers =
                m.headers().map(|h| h.iter().map(|x| (x.key.to_string(), text(x.value))).collect()).unwrap_or_default();
            out.push((m.partition(), text(m.key()), text(m.payload()), headers));
        }
    }
    out
}

#[tokio::test]
async fn an_exchange_bound_to_a_kafka_topic() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    support::create_topic(&b, "orders", 3, &[]).await;
    let (_c, ch) = channel(&b).await;
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    ch.exchange_declare("orders-x".into(), ExchangeKind::Direct, durable, FieldTable::default()).await.unwrap();
    ch.exchange_bind(
        "kafka:orders".into(),
        "orders-x".into(),
        "eu".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let mut h = FieldTable::default();
    h.insert("customer".into(), AMQPValue::LongString("42".into()));
    let props = persistent().with_content_type("application/json".into()).with_headers(h);
    publish(&ch, "orders-x", "eu", b"{\"id\":1}", props).await;
    publish(&ch, "orders-x", "us", b"not bound", persistent()).await;

    let got = read_topic(&b, "orders", 3, 1);
    assert_eq!(got.len(), 1);
    let (partition, key, value, headers) = &got[0];
    assert_eq!((key.as_str(), value.as_str()), ("eu", "{\"id\":1}"));
    assert!(headers.contains(&("content-type".into(), "application/json".into())), "{headers:?}");
    assert!(headers.contains(&("customer".into(), "42".into())), "{headers:?}");

    // The partition is Kafka's default for the key: librdkafka's murmur2
    // partitioner puts the same key in the same partition.
    let p = support::producer(&b, &[("partitioner", "murmur2")]);
    let d = p.send(FutureRecord::to("orders").key("eu").payload("from kafka"), Duration::from_secs(10)).await.unwrap();
    assert_eq!(d.partition, *partition);

    // Dead letters reach the topic through the dead-letter exchange.
    let mut a = FieldTable::default();
    a.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("orders-x".into()));
    a.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString("eu".into()));
    ch.queue_declare("doomed".into(), QueueDeclareOptions::default(), a).await.unwrap();
    publish(&ch, "", "doomed", b"dead", BasicProperties::default()).await;
    let m = ch.basic_get("doomed".into(), BasicGetOptions { no_ack: false }).await.unwrap().unwrap();
    m.delivery.reject(BasicRejectOptions { requeue: false }).await.unwrap();
    let all = read_topic(&b, "orders", 3, 3);
    let dead = all.iter().find(|r| r.2 == "dead").expect("the dead letter reached the topic");
    assert_eq!(dead.1, "eu");
}

#[tokio::test]
async fn a_kafka_topic_feeds_a_queue_and_properties_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Broker::start(dir.path());
    support::create_topic(&b, "events", 2, &[]).await;
    {
        let (_c, ch) = channel(&b).await;
        let mut a = FieldTable::default();
        a.insert("x-kafka-topic".into(), AMQPValue::LongString("events".into()));
        let opts = QueueDeclareOptions { durable: true, ..Default::default() };
        ch.queue_declare("events-q".into(), opts, a).await.unwrap();
    }
    let p = support::producer(&b, &[("acks", "all")]);
    for i in 0..4 {
        let headers = OwnedHeaders::new().insert(Header { key: "source", value: Some("kafka") });
        let key = format!("k{i}");
        let value = format!("event {i}");
        p.send(FutureRecord::to("events").key(&key).payload(&value).headers(headers), Duration::from_secs(10))
            .await
            .unwrap();
    }
    let (_c, ch) = channel(&b).await;
    let mut cons = consumer(&ch, "events-q", "c").await;
    let mut got = Vec::new();
    for _ in 0..4 {
        let d = next(&mut cons).await;
        let h = d.properties.headers().clone().unwrap_or_default();
        assert_eq!(h.inner().get("source"), Some(&AMQPValue::LongString("kafka".into())));
        assert_eq!(h.inner().get("x-kafka-topic"), Some(&AMQPValue::LongString("events".into())));
        assert_eq!(d.exchange.as_str(), "kafka:events");
        got.push((d.routing_key.as_str().to_string(), String::from_utf8_lossy(&d.data).into_owned()));
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    got.sort();
    assert_eq!(got, (0..4).map(|i| (format!("k{i}"), format!("event {i}"))).collect::<Vec<_>>());

    // The feed resumes after a restart without repeating itself.
    drop(cons);
    b.restart();
    let p = support::producer(&b, &[("acks", "all")]);
    p.send(FutureRecord::<str, str>::to("events").key("k9").payload("after restart"), Duration::from_secs(10))
        .await
        .unwrap();
    let (_c, ch) = channel(&b).await;
    let mut cons = consumer(&ch, "events-q", "c2").await;
    assert_eq!(next(&mut cons).await.data, b"after restart");
    nothing_within(&mut cons, 300).await;

    // AMQP -> Kafka -> AMQP keeps the original properties.
    support::create_topic(&b, "loop", 1, &[]).await;
    let ch = _c.create_channel().await.unwrap();
    let mut a = FieldTable::default();
    a.insert("x-kafka-topic".into(), AMQPValue::LongString("loop".into()));
    ch.queue_declare("loop-q".into(), QueueDeclareOptions::default(), a).await.unwrap();
    ch.exchange_declare(
        "loop-x".into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_bind(
        "kafka:loop".into(),
        "loop-x".into(),
        "".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let props = BasicProperties::default().with_correlation_id("corr-7".into()).with_priority(4);
    publish(&ch, "loop-x", "", b"round trip", props).await;
    let mut cons = consumer(&ch, "loop-q", "c3").await;
    let d = next(&mut cons).await;
    assert_eq!(d.data, b"round trip");
    assert_eq!(d.properties.correlation_id().as_ref().map(lapin::types::ShortString::as_str), Some("corr-7"));
    assert_eq!(d.properties.priority(), &Some(4));
}
