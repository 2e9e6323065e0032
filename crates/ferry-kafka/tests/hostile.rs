//! Requests that lie about their sizes. Before the codec patch (see
//! vendor/README.md) each of these made the broker attempt a huge
//! allocation, and a failed allocation aborts the process.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use ferry_broker::BrokerConfig;

async fn ctx(dir: &std::path::Path) -> Arc<ferry_kafka::Ctx> {
    let broker =
        ferry_broker::testing::open(BrokerConfig { data_dir: dir.to_path_buf(), ..BrokerConfig::default() }).unwrap();
    broker.create_topic("t", Some(1), &BTreeMap::new(), false).await.unwrap();
    Arc::new(ferry_kafka::Ctx { broker, config: ferry_kafka::KafkaConfig::default() })
}

/// Header v1 (key, version, correlation id, client id "x") then `body`.
fn frame(key: i16, version: i16, body: &[u8]) -> Bytes {
    let mut f = Vec::new();
    f.extend_from_slice(&key.to_be_bytes());
    f.extend_from_slice(&version.to_be_bytes());
    f.extend_from_slice(&1i32.to_be_bytes());
    f.extend_from_slice(&1i16.to_be_bytes());
    f.push(b'x');
    f.extend_from_slice(body);
    Bytes::from(f)
}

#[tokio::test]
async fn lying_counts_and_lengths_close_the_connection_without_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx(dir.path()).await;
    let mut cases = vec![
        // Found by the fuzzer: Produce v13 with a compact array count near 2^32.
        (
            "fuzz crash",
            Bytes::from(std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oom-produce-v13.bin")).unwrap()),
        ),
    ];
    // Produce v3: null transactional id, acks, timeout, then 2^31-1 topics.
    let mut produce = vec![0xff, 0xff, 0, 1, 0, 0, 0x13, 0x88];
    produce.extend_from_slice(&i32::MAX.to_be_bytes());
    cases.push(("array count i32::MAX", frame(0, 3, &produce)));
    // Metadata v1 with 2^31-1 topics.
    cases.push(("metadata count", frame(3, 1, &i32::MAX.to_be_bytes())));
    // Metadata v9 (flexible): compact array count u32::MAX.
    let mut md = vec![0]; // header tagged fields
    md.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    cases.push(("compact count", frame(3, 9, &md)));
    // DeleteTopics v1 with one topic name claiming 32767 bytes.
    let mut dt = 1i32.to_be_bytes().to_vec();
    dt.extend_from_slice(&i16::MAX.to_be_bytes());
    cases.push(("string length", frame(20, 1, &dt)));
    for (what, f) in cases {
        assert!(!ferry_kafka::handle_frame(&ctx, f).await, "{what}: connection should close");
    }
    // Found by the fuzzer: CreateTopics asking for ~1.6 billion partitions
    // gets INVALID_PARTITIONS instead of an attempt to create them.
    let create = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oom-create-topics.bin")).unwrap();
    assert!(ferry_kafka::handle_frame(&ctx, Bytes::from(create)).await);
    assert_eq!(ctx.broker.topics().len(), 1, "no topic was created");
    // The broker still serves a normal request.
    let api_versions = frame(18, 0, &[]);
    assert!(ferry_kafka::handle_frame(&ctx, api_versions).await);
}
