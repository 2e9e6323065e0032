//! Topic configs that act on records, through librdkafka: `compression.type`
//! (the broker recompresses), compacted topics' keys (KIP-467 record
//! errors), and legacy configs old clients still send.

use std::path::Path;
use std::time::Duration;

use ferry_records::batch::BatchHeader;
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminOptions, AlterConfig, ConfigSource, ResourceSpecifier};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;

use crate::support::{Broker, admin, consume_all, create_topic, producer};

/// Codec ids of every batch stored for `topic`'s partition 0, read from its segments.
fn stored_codecs(data: &Path, topic: &str) -> Vec<i16> {
    let dir = data.join("topics").join(topic).join("0");
    let mut segments: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segments.sort();
    let mut codecs = Vec::new();
    for segment in segments {
        let bytes = std::fs::read(segment).unwrap();
        let mut at = 0;
        while let Ok(h) = BatchHeader::parse(bytes.get(at..).unwrap_or_default()) {
            ferry_records::batch::validate(&bytes[at..at + h.size]).expect("stored batch has a valid CRC");
            codecs.push(h.compression_id());
            at += h.size;
        }
    }
    codecs
}

async fn send(
    p: &rdkafka::producer::FutureProducer,
    topic: &str,
    key: Option<&str>,
    value: &str,
) -> Result<(), KafkaError> {
    let mut r = FutureRecord::<str, str>::to(topic).payload(value).partition(0);
    if let Some(k) = key {
        r = r.key(k);
    }
    p.send(r, Duration::from_secs(30)).await.map(|_| ()).map_err(|(e, _)| e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_compression_type_recompresses_on_append() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    create_topic(&broker, "gz", 1, &[("compression.type", "gzip")]).await;
    create_topic(&broker, "as-sent", 1, &[]).await;
    // librdkafka sends a batch uncompressed unless compressing makes it smaller.
    let padding = "x".repeat(2000);
    for (codec, n) in [("lz4", 0), ("none", 1), ("gzip", 2), ("zstd", 3)] {
        let p = producer(&broker, &[("compression.type", codec), ("linger.ms", "5")]);
        for i in 0..5 {
            send(&p, "gz", Some("k"), &format!("{codec}-{n}-{i}-{padding}")).await.unwrap();
            send(&p, "as-sent", Some("k"), &format!("{codec}-{i}-{padding}")).await.unwrap();
        }
    }
    let got = consume_all(&broker, "gz", 1, 20);
    let values: Vec<String> = got.iter().map(|r| String::from_utf8(r.3.clone()).unwrap()).collect();
    assert_eq!(values[0], format!("lz4-0-0-{padding}"));
    assert_eq!(values[19], format!("zstd-3-4-{padding}"));
    assert_eq!(got.iter().map(|r| r.1).collect::<Vec<_>>(), (0..20).collect::<Vec<_>>(), "offsets as assigned");
    let gz = stored_codecs(dir.path(), "gz");
    assert!(!gz.is_empty() && gz.iter().all(|&c| c == 1), "every stored batch is gzip: {gz:?}");
    // `producer` keeps each batch in the producer's codec.
    let sent = stored_codecs(dir.path(), "as-sent");
    for codec in [0, 1, 3, 4] {
        assert!(sent.contains(&codec), "codec {codec} kept: {sent:?}");
    }

    // DescribeConfigs shows the value and where it comes from; AlterConfigs changes it.
    let a = admin(&broker);
    let opts = AdminOptions::new();
    let describe = |name: &'static str| {
        let a = &a;
        async move {
            let r = a.describe_configs(&[ResourceSpecifier::Topic(name)], &AdminOptions::new()).await.unwrap();
            let cfg = r.into_iter().next().unwrap().unwrap();
            let e = cfg.get("compression.type").unwrap();
            (e.value.clone().unwrap(), format!("{:?}", e.source))
        }
    };
    assert_eq!(describe("gz").await, ("gzip".to_string(), "DynamicTopic".to_string()));
    assert_eq!(describe("as-sent").await, ("producer".to_string(), "Default".to_string()));
    let alter = AlterConfig::new(ResourceSpecifier::Topic("as-sent")).set("compression.type", "snappy");
    assert!(a.alter_configs(&[alter], &opts).await.unwrap()[0].is_ok());
    assert_eq!(describe("as-sent").await, ("snappy".to_string(), "DynamicTopic".to_string()));
    let before = stored_codecs(dir.path(), "as-sent").len();
    let p = producer(&broker, &[("compression.type", "lz4")]);
    send(&p, "as-sent", Some("k"), &format!("after-{padding}")).await.unwrap();
    let after = stored_codecs(dir.path(), "as-sent");
    assert_eq!(after[before..], [2], "snappy after the change");
    assert_eq!(consume_all(&broker, "as-sent", 1, 21)[20].3, format!("after-{padding}").as_bytes());

    // The broker-wide default (`compression.type` on the broker) applies to topics without their own.
    let alter = AlterConfig::new(ResourceSpecifier::Broker(1)).set("compression.type", "zstd");
    assert!(a.alter_configs(&[alter], &opts).await.unwrap()[0].is_ok());
    create_topic(&broker, "by-default", 1, &[]).await;
    assert_eq!(describe("by-default").await, ("zstd".to_string(), "DynamicDefaultBroker".to_string()));
    send(&p, "by-default", None, "z").await.unwrap();
    assert_eq!(stored_codecs(dir.path(), "by-default"), [4]);
    // Unknown codecs are refused.
    let bad = rdkafka::admin::NewTopic::new("bad-codec", 1, rdkafka::admin::TopicReplication::Fixed(1))
        .set("compression.type", "brotli");
    let r = a.create_topics(&[bad], &opts).await.unwrap();
    assert_eq!(r[0].as_ref().unwrap_err().1, RDKafkaErrorCode::InvalidConfig);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_topics_refuse_records_without_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    create_topic(&broker, "compacted", 1, &[("cleanup.policy", "compact")]).await;
    let p = producer(&broker, &[("linger.ms", "0")]);
    match send(&p, "compacted", None, "no key").await {
        Err(KafkaError::MessageProduction(code)) => assert_eq!(code, RDKafkaErrorCode::InvalidRecord),
        other => panic!("expected INVALID_RECORD, got {other:?}"),
    }
    send(&p, "compacted", Some("k"), "keyed").await.unwrap();
    let got = consume_all(&broker, "compacted", 1, 1);
    assert_eq!((got[0].2.as_slice(), got[0].3.as_slice()), (&b"k"[..], &b"keyed"[..]));

    // KIP-467: the response names each keyless record (Produce v8+).
    let client = ferry_client::Client::connect(
        &broker.bootstrap(),
        ferry_client::ClientConfig::new("kip-467", Duration::from_secs(10)),
    )
    .await
    .unwrap();
    let records = [(Some(&b"k"[..]), &b"a"[..]), (None, &b"b"[..]), (None, &b"c"[..])];
    let records: Vec<_> = records
        .iter()
        .map(|&(key, value)| ferry_records::records::NewRecord {
            key,
            value: Some(value),
            headers: vec![],
            timestamp: ferry_util::time::now_ms(),
        })
        .collect();
    let batch = ferry_records::records::build_batch(&records, ferry_records::compression::Compression::Lz4, -1, -1, -1)
        .unwrap();
    let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(StrBytes::from_static_str("compacted").into())
            .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(batch.into()))]),
    ]);
    let resp = client.any().send_version(req, 8).await.unwrap();
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 87, "INVALID_RECORD");
    let indexes: Vec<i32> = p.record_errors.iter().map(|e| e.batch_index).collect();
    assert_eq!(indexes, [1, 2]);
    let msg = p.record_errors[0].batch_index_error_message.as_deref().unwrap();
    assert!(msg.contains("without key"), "{msg}");
    assert!(p.error_message.as_deref().unwrap().contains("2 record errors"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_topic_configs_are_accepted_and_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let legacy = [
        ("message.format.version", "2.8-IV1"),
        ("message.downconversion.enable", "false"),
        ("message.timestamp.difference.max.ms", "1000"),
    ];
    create_topic(&broker, "old-client", 1, &legacy).await;
    let a = admin(&broker);
    let r = a.describe_configs(&[ResourceSpecifier::Topic("old-client")], &AdminOptions::new()).await.unwrap();
    let cfg = r.into_iter().next().unwrap().unwrap();
    for (name, value) in legacy {
        let e = cfg.get(name).unwrap();
        assert_eq!(e.value.as_deref(), Some(value), "{name}");
        assert!(e.source == ConfigSource::DynamicTopic, "{name}");
    }
    // Ignored: old timestamps still pass (message.timestamp.difference.max.ms has no effect).
    let p = producer(&broker, &[]);
    let old = ferry_util::time::now_ms() - 3_600_000;
    let r = FutureRecord::<str, str>::to("old-client").payload("v").partition(0).timestamp(old);
    p.send(r, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
    assert_eq!(consume_all(&broker, "old-client", 1, 1)[0].3, b"v");
}
