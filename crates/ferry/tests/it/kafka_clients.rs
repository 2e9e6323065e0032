//! librdkafka (through the rdkafka crate) producing and consuming.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::producer::FutureRecord;

use crate::support::{Broker, consume_all, create_topic, producer};

const RECORDS: usize = 100_000;
const KEYS: usize = 1000;

/// 100,000 keyed records into 6 partitions, in 15 runs covering every
/// compression codec with every acks setting; read back with assigned
/// partitions: none lost, none duplicated, per-key order kept; again after
/// a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_survive_every_codec_acks_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path());
    create_topic(&broker, "keyed", 6, &[]).await;
    let combos: Vec<(&str, &str)> = ["none", "gzip", "snappy", "lz4", "zstd"]
        .iter()
        .flat_map(|c| ["0", "1", "all"].map(move |a| (*c, a)))
        .collect();
    let per_combo = RECORDS.div_ceil(combos.len());
    let mut seq = 0usize;
    for (codec, acks) in &combos {
        let p = producer(&broker, &[("compression.type", codec), ("acks", acks), ("linger.ms", "5")]);
        let mut deliveries = Vec::with_capacity(per_combo);
        for _ in 0..per_combo.min(RECORDS - seq) {
            let key = format!("key-{}", seq % KEYS);
            let value = format!("{seq}");
            let record = FutureRecord::to("keyed").key(&key).payload(&value);
            deliveries.push(p.send_result(record).expect("queue"));
            seq += 1;
        }
        for d in deliveries {
            d.await.expect("delivery future").unwrap_or_else(|(e, _)| panic!("{codec}/{acks}: {e}"));
        }
    }
    check(&consume_all(&broker, "keyed", 6, RECORDS));
    broker.restart();
    check(&consume_all(&broker, "keyed", 6, RECORDS));
}

/// Every sequence number once; within each partition, each key's values
/// ascend; a key lives in one partition.
fn check(records: &[(i32, i64, Vec<u8>, Vec<u8>)]) {
    assert_eq!(records.len(), RECORDS, "records lost or duplicated");
    let mut seen = vec![false; RECORDS];
    let mut last: HashMap<Vec<u8>, (i32, usize)> = HashMap::new();
    let mut sorted = records.to_vec();
    sorted.sort_by_key(|r| (r.0, r.1));
    for (partition, _, key, value) in &sorted {
        let n: usize = std::str::from_utf8(value).unwrap().parse().unwrap();
        assert!(!std::mem::replace(&mut seen[n], true), "record {n} duplicated");
        assert_eq!(key, format!("key-{}", n % KEYS).as_bytes());
        if let Some((p, prev)) = last.insert(key.clone(), (*partition, n)) {
            assert_eq!(p, *partition, "a key spans partitions");
            assert!(prev < n, "order of {} broken: {prev} before {n}", String::from_utf8_lossy(key));
        }
    }
}

/// acks=all answers only after fsync: after kill -9 every acknowledged
/// record is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path());
    create_topic(&broker, "durable", 3, &[]).await;
    let p = producer(&broker, &[("acks", "all"), ("linger.ms", "1")]);
    let mut deliveries = Vec::new();
    for i in 0..5000 {
        let v = format!("{i}");
        deliveries.push(p.send_result(FutureRecord::to("durable").key(&v).payload(&v)).unwrap());
    }
    for d in deliveries {
        d.await.unwrap().unwrap();
    }
    drop(p);
    broker.kill9();
    broker.start_again();
    let got = consume_all(&broker, "durable", 3, 5000);
    assert_eq!(got.len(), 5000);
}

/// Producing to a topic that does not exist creates it (auto-create is on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producing_auto_creates_topics() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let p = producer(&broker, &[]);
    p.send(FutureRecord::to("fresh-topic").key("k").payload("v"), Duration::from_secs(20)).await.unwrap();
    let got = consume_all(&broker, "fresh-topic", 1, 1);
    assert_eq!(got[0].3, b"v");
}
