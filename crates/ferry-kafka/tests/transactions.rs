//! The transaction APIs request by request, with the codec's client half:
//! the state DescribeTransactions and ListTransactions report, and what
//! Produce refuses (control batches from clients, transactional batches
//! outside an open transaction, fenced epochs).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use ferry_broker::{Broker, BrokerConfig};
use ferry_records::compression::Compression;
use ferry_records::records::{NewRecord, build_batch, build_control_batch};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

mod support;
use support::Client;

impl Client {
    async fn init(&mut self, id: &str) -> (i64, i16) {
        let req = InitProducerIdRequest::default()
            .with_transactional_id(Some(txn_id(id)))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let ResponseKind::InitProducerId(r) =
            self.call(ApiKey::InitProducerId, 4, RequestKind::InitProducerId(req)).await
        else {
            unreachable!()
        };
        assert_eq!(r.error_code, 0);
        (r.producer_id.0, r.producer_epoch)
    }

    async fn add_partition(&mut self, id: &str, pid: i64, epoch: i16, topic: &str) -> i16 {
        let req = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(txn_id(id))
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(vec![
                add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.into())))
                    .with_partitions(vec![0]),
            ]);
        let ResponseKind::AddPartitionsToTxn(r) =
            self.call(ApiKey::AddPartitionsToTxn, 3, RequestKind::AddPartitionsToTxn(req)).await
        else {
            unreachable!()
        };
        r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
    }

    async fn produce(&mut self, topic: &str, batch: Vec<u8>) -> i16 {
        let t = produce_request::TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partition_data(vec![
                produce_request::PartitionProduceData::default().with_index(0).with_records(Some(Bytes::from(batch))),
            ]);
        // The producer's transactional id ("p" below): the leader verifies
        // the batch with that id's transaction (KIP-890).
        let req = ProduceRequest::default()
            .with_transactional_id(Some(txn_id("p")))
            .with_acks(-1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![t]);
        let ResponseKind::Produce(r) = self.call(ApiKey::Produce, 9, RequestKind::Produce(req)).await else {
            unreachable!()
        };
        r.responses[0].partition_responses[0].error_code
    }

    async fn describe(&mut self, id: &str) -> describe_transactions_response::TransactionState {
        let req = DescribeTransactionsRequest::default().with_transactional_ids(vec![txn_id(id)]);
        let ResponseKind::DescribeTransactions(mut r) =
            self.call(ApiKey::DescribeTransactions, 0, RequestKind::DescribeTransactions(req)).await
        else {
            unreachable!()
        };
        r.transaction_states.remove(0)
    }
}

fn txn_id(s: &str) -> TransactionalId {
    TransactionalId(StrBytes::from_string(s.into()))
}

/// A batch of one record; transactional when `pid` >= 0.
fn batch(pid: i64, epoch: i16, seq: i32) -> Vec<u8> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let rec = NewRecord { key: Some(b"k"), value: Some(b"v"), headers: vec![], timestamp: now };
    let mut b = build_batch(&[rec], Compression::None, pid, epoch, seq).unwrap();
    if pid >= 0 {
        b[22] |= 1 << 4;
        let crc = ferry_records::batch::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    b
}

async fn start() -> (tempfile::TempDir, Arc<Broker>, Client) {
    let dir = tempfile::tempdir().unwrap();
    let broker =
        ferry_broker::testing::open(BrokerConfig { data_dir: dir.path().to_path_buf(), ..BrokerConfig::default() })
            .unwrap();
    broker.create_topic("t", Some(1), &BTreeMap::new(), false).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = ferry_kafka::KafkaConfig { advertised_port: i32::from(port), ..Default::default() };
    let ctx = Arc::new(ferry_kafka::Ctx { broker: broker.clone(), config });
    let (stop, rx) = tokio::sync::watch::channel(false);
    std::mem::forget(stop);
    tokio::spawn(ferry_kafka::serve(listener, ctx, rx));
    let client = Client::connect(port, "txn-test").await;
    (dir, broker, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_and_list_show_each_transactions_state() {
    let (_dir, _broker, mut c) = start().await;
    let (pid, epoch) = c.init("app-a").await;
    c.init("app-b").await;
    assert_eq!(c.add_partition("app-a", pid, epoch, "t").await, 0);
    assert_eq!(c.add_partition("app-a", pid, epoch, "nope").await, 3, "UNKNOWN_TOPIC_OR_PARTITION");

    let d = c.describe("app-a").await;
    assert_eq!((d.error_code, d.transaction_state.as_str()), (0, "Ongoing"));
    assert_eq!((d.producer_id.0, d.producer_epoch, d.transaction_timeout_ms), (pid, epoch, 60_000));
    assert!(d.transaction_start_time_ms > 0);
    assert_eq!(d.topics.len(), 1);
    assert_eq!((d.topics[0].topic.as_str(), d.topics[0].partitions.clone()), ("t", vec![0]));
    assert_eq!(c.describe("app-b").await.transaction_state.as_str(), "Empty");
    assert_eq!(c.describe("nobody").await.error_code, 105, "TRANSACTIONAL_ID_NOT_FOUND");

    let list = |states: &[&str], pattern: Option<&str>| {
        ListTransactionsRequest::default()
            .with_state_filters(states.iter().map(|s| StrBytes::from_string(s.to_string())).collect())
            .with_duration_filter(-1)
            .with_transactional_id_pattern(pattern.map(|p| StrBytes::from_string(p.into())))
    };
    let ResponseKind::ListTransactions(r) =
        c.call(ApiKey::ListTransactions, 2, RequestKind::ListTransactions(list(&["Ongoing", "Bogus"], None))).await
    else {
        unreachable!()
    };
    let ids: Vec<_> = r.transaction_states.iter().map(|t| t.transactional_id.to_string()).collect();
    assert_eq!(ids, ["app-a"]);
    assert_eq!(r.unknown_state_filters.iter().map(std::string::ToString::to_string).collect::<Vec<_>>(), ["Bogus"]);
    let ResponseKind::ListTransactions(r) =
        c.call(ApiKey::ListTransactions, 2, RequestKind::ListTransactions(list(&[], Some("app-.*")))).await
    else {
        unreachable!()
    };
    assert_eq!(r.transaction_states.len(), 2);

    // EndTxn commits; the state says so.
    let end = EndTxnRequest::default()
        .with_transactional_id(txn_id("app-a"))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(true);
    let ResponseKind::EndTxn(r) = c.call(ApiKey::EndTxn, 3, RequestKind::EndTxn(end)).await else { unreachable!() };
    assert_eq!(r.error_code, 0);
    assert_eq!(c.describe("app-a").await.transaction_state.as_str(), "CompleteCommit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_refuses_control_batches_and_transactional_batches_outside_a_transaction() {
    let (_dir, broker, mut c) = start().await;
    let before = broker.topic("t").unwrap().partition(0).unwrap().high_watermark();
    // Only the coordinator writes markers: INVALID_RECORD (87).
    assert_eq!(c.produce("t", build_control_batch(1, 0, true, 0, 1).unwrap()).await, 87);
    let (pid, epoch) = c.init("p").await;
    // The partition was never added to the transaction: INVALID_TXN_STATE (48).
    assert_eq!(c.produce("t", batch(pid, epoch, 0)).await, 48);
    // An unknown producer id: INVALID_PRODUCER_ID_MAPPING (49).
    assert_eq!(c.produce("t", batch(pid + 100, 0, 0)).await, 49);
    assert_eq!(broker.topic("t").unwrap().partition(0).unwrap().high_watermark(), before, "nothing written");

    assert_eq!(c.add_partition("p", pid, epoch, "t").await, 0);
    assert_eq!(c.produce("t", batch(pid, epoch, 0)).await, 0);
    let part = broker.topic("t").unwrap().partition(0).unwrap();
    assert_eq!(part.last_stable_offset(), before, "the open transaction holds the last stable offset");
    // A new instance fences this one: its next batch gets
    // INVALID_PRODUCER_EPOCH (47), and its transaction was aborted.
    let (_, epoch2) = c.init("p").await;
    assert!(epoch2 > epoch);
    assert_eq!(c.produce("t", batch(pid, epoch, 1)).await, 47);
    assert_eq!(c.add_partition("p", pid, epoch, "t").await, 90, "PRODUCER_FENCED");
    assert_eq!(part.last_stable_offset(), part.high_watermark());
    assert_eq!(part.aborted_txns(0, u64::MAX).len(), 1);
}
