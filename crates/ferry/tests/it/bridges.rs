//! The cross-protocol bridges with real clients on every side: they carry
//! committed data only (librdkafka transactions -> rumqttc), start at the
//! last stable offset (a transaction open when an AMQP queue's feed starts
//! reaches it once committed), and a key lands on the partition Kafka's
//! default partitioner picks whichever protocol wrote it (librdkafka,
//! lapin, rumqttc).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use lapin::ExchangeKind;
use lapin::options::{
    BasicAckOptions, ConfirmSelectOptions, ExchangeBindOptions, ExchangeDeclareOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, FutureRecord, Producer, ThreadedProducer};
use rumqttc::{Packet, QoS};

use crate::amqp_support::{channel, consumer, next, nothing_within, persistent, publish};
use crate::mqtt_clients::{client, expect, publishes, quiet};
use crate::support::{self, Broker};

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_subscribers_of_a_bridged_topic_get_committed_records_only() {
    let dir = tempfile::tempdir().unwrap();
    // A fixed MQTT topic: every record of "ledger" (markers too, if the
    // bridge let them through) reaches the subscriber.
    let b = Broker::start_with_toml(
        dir.path(),
        "[[mqtt.from_kafka]]\ntopic = \"ledger\"\nmqtt_topic = \"ledger/out\"\nqos = 1\n",
    );
    let (c, mut rx) = client(b.mqtt_port, "ledger-reader", true, |_| {}).await;
    c.subscribe("ledger/#", QoS::AtLeastOnce).await.unwrap();
    expect(&mut rx, |p| matches!(p, Packet::SubAck(_))).await;

    let producer: ThreadedProducer<DefaultProducerContext> = support::config(&b)
        .set("transactional.id", "ledger-writer")
        .set("linger.ms", "2")
        .create()
        .expect("transactional producer");
    tokio::task::spawn_blocking(move || {
        producer.init_transactions(T).expect("init_transactions");
        for (prefix, commit) in [("aborted", false), ("committed", true)] {
            producer.begin_transaction().expect("begin_transaction");
            for i in 0..3 {
                let v = format!("{prefix}-{i}");
                producer.send(BaseRecord::to("ledger").key(&v).payload(&v)).expect("enqueue");
            }
            producer.flush(T).expect("flush");
            if commit {
                producer.commit_transaction(T).expect("commit_transaction");
            } else {
                producer.abort_transaction(T).expect("abort_transaction");
            }
        }
    })
    .await
    .unwrap();

    let got = publishes(&mut rx, 3).await;
    let values: Vec<&str> = got.iter().map(|g| g.1.as_str()).collect();
    assert_eq!(values, ["committed-0", "committed-1", "committed-2"], "{got:?}");
    assert!(got.iter().all(|g| g.0 == "ledger/out"));
    // No commit/abort marker follows.
    quiet(&mut rx, 1500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_fed_from_a_topic_gets_a_transaction_open_when_it_was_declared() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    support::create_topic(&b, "pending", 1, &[]).await;
    let producer: ThreadedProducer<DefaultProducerContext> = support::config(&b)
        .set("transactional.id", "pending-writer")
        .set("linger.ms", "2")
        .create()
        .expect("transactional producer");
    // Written, not yet committed: past the last stable offset.
    let producer = tokio::task::spawn_blocking(move || {
        producer.init_transactions(T).expect("init_transactions");
        producer.begin_transaction().expect("begin_transaction");
        for i in 0..3 {
            let v = format!("pending-{i}");
            producer.send(BaseRecord::to("pending").key(&v).payload(&v)).expect("enqueue");
        }
        producer.flush(T).expect("flush");
        producer
    })
    .await
    .unwrap();

    // The feed starts at the last stable offset, not the high watermark.
    let (_conn, ch) = channel(&b).await;
    let mut args = FieldTable::default();
    args.insert("x-kafka-topic".into(), AMQPValue::LongString("pending".into()));
    ch.queue_declare("pending-q".into(), QueueDeclareOptions::default(), args).await.unwrap();
    tokio::task::spawn_blocking(move || producer.commit_transaction(T).expect("commit_transaction")).await.unwrap();

    let mut c = consumer(&ch, "pending-q", "pending-c").await;
    for i in 0..3 {
        let d = next(&mut c).await;
        assert_eq!(String::from_utf8_lossy(&d.data), format!("pending-{i}"));
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    nothing_within(&mut c, 500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_lands_on_one_partition_whichever_protocol_wrote_it() {
    const PARTITIONS: i32 = 8;
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start_with_toml(dir.path(), "[[mqtt.kafka_bridge]]\nfilter = \"keys/#\"\ntopic = \"keys\"\n");
    support::create_topic(&b, "keys", PARTITIONS, &[]).await;
    // The MQTT bridge keys a record by its MQTT topic.
    let keys: Vec<String> = (0..12).map(|i| format!("keys/device-{i}")).collect();

    // Kafka: the partition librdkafka's murmur2_random partitioner picks.
    let p = support::producer(&b, &[("acks", "all"), ("partitioner", "murmur2_random")]);
    let mut kafka_partition = HashMap::new();
    for k in &keys {
        let d = p.send(FutureRecord::to("keys").key(k).payload("kafka"), T).await.expect("produce");
        kafka_partition.insert(k.clone(), d.partition);
    }
    let spread: BTreeSet<i32> = kafka_partition.values().copied().collect();
    assert!(spread.len() > 1, "the keys should spread over partitions: {spread:?}");

    // AMQP: an exchange bound to the topic; the routing key is the key.
    let (_conn, ch) = channel(&b).await;
    ch.exchange_declare(
        "keys-x".into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_bind(
        "kafka:keys".into(),
        "keys-x".into(),
        "".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    for k in &keys {
        publish(&ch, "keys-x", k, b"amqp", persistent()).await;
    }

    // MQTT: a bridge rule; the topic is the key.
    let (c, mut rx) = client(b.mqtt_port, "keys-writer", true, |_| {}).await;
    for k in &keys {
        c.publish(k.as_str(), QoS::AtLeastOnce, false, "mqtt").await.unwrap();
        expect(&mut rx, |p| matches!(p, Packet::PubAck(_))).await;
    }

    let records = support::consume_all(&b, "keys", PARTITIONS, keys.len() * 3);
    assert_eq!(records.len(), keys.len() * 3);
    let mut seen: HashMap<String, BTreeSet<String>> = HashMap::new();
    for (partition, _, key, value) in records {
        let key = String::from_utf8(key).unwrap();
        let value = String::from_utf8(value).unwrap();
        assert_eq!(Some(&partition), kafka_partition.get(&key), "{value} wrote {key} to partition {partition}");
        seen.entry(key).or_default().insert(value);
    }
    for k in &keys {
        let all: BTreeSet<String> = ["amqp", "kafka", "mqtt"].map(String::from).into();
        assert_eq!(seen.get(k), Some(&all), "{k}");
    }
}
