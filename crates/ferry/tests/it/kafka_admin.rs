//! The admin API through librdkafka's AdminClient, and offset lookups.

use std::time::Duration;

use rdkafka::admin::{AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

use crate::support::{Broker, admin, config, consume_all, create_topic, producer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_describe_alter_grow_and_delete_topics() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let a = admin(&broker);
    let opts = AdminOptions::new();
    let t = NewTopic::new("admin-t", 2, TopicReplication::Fixed(1)).set("retention.ms", "123456");
    assert!(a.create_topics(&[t], &opts).await.unwrap()[0].is_ok());
    // Errors come back per topic.
    let dup = NewTopic::new("admin-t", 2, TopicReplication::Fixed(1));
    let rf3 = NewTopic::new("admin-rf3", 1, TopicReplication::Fixed(3));
    let bad = NewTopic::new("admin-bad", 1, TopicReplication::Fixed(1)).set("retention.ms", "never");
    let r = a.create_topics(&[dup, rf3, bad], &opts).await.unwrap();
    assert_eq!(r[0].as_ref().unwrap_err().1, RDKafkaErrorCode::TopicAlreadyExists);
    assert_eq!(r[1].as_ref().unwrap_err().1, RDKafkaErrorCode::InvalidReplicationFactor);
    assert_eq!(r[2].as_ref().unwrap_err().1, RDKafkaErrorCode::InvalidConfig);
    // validate_only creates nothing.
    let probe = NewTopic::new("admin-probe", 1, TopicReplication::Fixed(1));
    assert!(a.create_topics(&[probe], &AdminOptions::new().validate_only(true)).await.unwrap()[0].is_ok());

    let describe = |name: &'static str| {
        let a = &a;
        async move {
            let r = a.describe_configs(&[ResourceSpecifier::Topic(name)], &AdminOptions::new()).await.unwrap();
            r.into_iter().next().unwrap().unwrap()
        }
    };
    let cfg = describe("admin-t").await;
    assert_eq!(cfg.get("retention.ms").unwrap().value.as_deref(), Some("123456"));
    assert_eq!(cfg.get("cleanup.policy").unwrap().value.as_deref(), Some("delete"));
    assert!(cfg.get("retention.ms").unwrap().source == rdkafka::admin::ConfigSource::DynamicTopic);
    let alter = AlterConfig::new(ResourceSpecifier::Topic("admin-t")).set("cleanup.policy", "compact");
    assert!(a.alter_configs(&[alter], &opts).await.unwrap()[0].is_ok());
    let cfg = describe("admin-t").await;
    assert_eq!(cfg.get("cleanup.policy").unwrap().value.as_deref(), Some("compact"));
    // AlterConfigs replaces the whole set: retention.ms is back to its default.
    assert_eq!(cfg.get("retention.ms").unwrap().value.as_deref(), Some("604800000"));
    // An invalid value is refused and nothing of that request applies. (The
    // rdkafka crate drops per-resource AlterConfigs errors, so the check is
    // on the effect; interop/ checks the error code with confluent-kafka.)
    let bad_alter = AlterConfig::new(ResourceSpecifier::Topic("admin-t")).set("segment.bytes", "1");
    a.alter_configs(&[bad_alter], &opts).await.unwrap();
    let cfg = describe("admin-t").await;
    assert_eq!(cfg.get("segment.bytes").unwrap().value.as_deref(), Some("1073741824"));
    assert_eq!(cfg.get("cleanup.policy").unwrap().value.as_deref(), Some("compact"));
    // Broker-wide defaults.
    let broker_cfg = a.describe_configs(&[ResourceSpecifier::Broker(1)], &opts).await.unwrap();
    let broker_cfg = broker_cfg[0].as_ref().unwrap();
    assert_eq!(broker_cfg.get("log.retention.ms").unwrap().value.as_deref(), Some("604800000"));

    let grow = NewPartitions::new("admin-t", 5);
    assert!(a.create_partitions(&[grow], &opts).await.unwrap()[0].is_ok());
    let shrink = NewPartitions::new("admin-t", 3);
    assert!(a.create_partitions(&[shrink], &opts).await.unwrap()[0].is_err());
    let md = a.inner().fetch_metadata(Some("admin-t"), Duration::from_secs(10)).unwrap();
    assert_eq!(md.topics()[0].partitions().len(), 5);
    let md = a.inner().fetch_metadata(None, Duration::from_secs(10)).unwrap();
    assert!(!md.topics().iter().any(|t| t.name() == "admin-probe"));

    assert!(a.delete_topics(&["admin-t"], &opts).await.unwrap()[0].is_ok());
    let r = a.delete_topics(&["admin-t"], &opts).await.unwrap();
    assert_eq!(r[0].as_ref().unwrap_err().1, RDKafkaErrorCode::UnknownTopicOrPartition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_for_timestamps_and_delete_records() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    create_topic(&broker, "times", 1, &[]).await;
    let p = producer(&broker, &[("acks", "all")]);
    let base = 1_700_000_000_000i64;
    for i in 0..100i64 {
        let v = format!("{i}");
        let rec = FutureRecord::to("times").key(&v).payload(&v).timestamp(base + i * 1000);
        p.send(rec, Duration::from_secs(10)).await.unwrap();
    }
    let c: BaseConsumer = config(&broker).set("group.id", "unused").create().unwrap();
    let mut q = TopicPartitionList::new();
    q.add_partition_offset("times", 0, Offset::Offset(base + 41_500)).unwrap();
    let r = c.offsets_for_times(q, Duration::from_secs(10)).unwrap();
    assert_eq!(r.find_partition("times", 0).unwrap().offset(), Offset::Offset(42));
    let mut q = TopicPartitionList::new();
    q.add_partition_offset("times", 0, Offset::Offset(base + 1_000_000)).unwrap();
    let r = c.offsets_for_times(q, Duration::from_secs(10)).unwrap();
    assert_eq!(r.find_partition("times", 0).unwrap().offset(), Offset::End);
    let (low, high) = c.fetch_watermarks("times", 0, Duration::from_secs(10)).unwrap();
    assert_eq!((low, high), (0, 100));

    let mut del = TopicPartitionList::new();
    del.add_partition_offset("times", 0, Offset::Offset(60)).unwrap();
    let r = admin(&broker).delete_records(&del, &AdminOptions::new()).await.unwrap();
    assert_eq!(r.find_partition("times", 0).unwrap().offset(), Offset::Offset(60));
    let (low, _) = c.fetch_watermarks("times", 0, Duration::from_secs(10)).unwrap();
    assert_eq!(low, 60);
    let got = consume_all(&broker, "times", 1, 40);
    assert_eq!(got.first().unwrap().1, 60);
}
