//! Fetch: records from several partitions of a topic, one request per
//! partition leader.

use std::collections::BTreeMap;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest};

use crate::batches::{FetchedRecord, decode_batches};
use crate::client::Client;
use crate::error::{ClientError, check};
use crate::topic_name;

/// Preferred Fetch version (v12: flexible, topic names, no topic ids).
pub const FETCH_VERSION: i16 = 12;

/// What one partition's fetch returned.
#[derive(Clone, Debug, Default)]
pub struct PartitionFetch {
    /// The records at or after the fetch offset.
    pub records: Vec<FetchedRecord>,
    /// The offset to fetch next.
    pub next_offset: i64,
}

/// A Fetch request (no session, read_uncommitted, as a consumer: replica id
/// -1) for `partitions` (partition, offset) of `topic`.
pub fn fetch_request(topic: &str, partitions: &[(i32, i64)], max_bytes: i32, max_wait_ms: i32) -> FetchRequest {
    let parts = partitions
        .iter()
        .map(|&(p, o)| {
            FetchPartition::default()
                .with_partition(p)
                .with_current_leader_epoch(-1)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(-1)
                .with_fetch_offset(o)
                .with_partition_max_bytes(max_bytes)
        })
        .collect();
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default().with_topic(topic_name(topic)).with_partitions(parts)])
}

impl Client {
    /// Fetches from several partitions of a topic (one request per leader;
    /// on one node, one request). `offsets`: partition -> fetch offset.
    /// Follows leaders that move (bounded retries with fresh Metadata).
    pub async fn fetch(
        &self,
        topic: &str,
        offsets: &BTreeMap<i32, i64>,
        max_wait_ms: i32,
        max_bytes: i32,
    ) -> Result<BTreeMap<i32, PartitionFetch>, ClientError> {
        self.with_leader_retries(true, || self.fetch_once(topic, offsets, max_wait_ms, max_bytes)).await
    }

    async fn fetch_once(
        &self,
        topic: &str,
        offsets: &BTreeMap<i32, i64>,
        max_wait_ms: i32,
        max_bytes: i32,
    ) -> Result<BTreeMap<i32, PartitionFetch>, ClientError> {
        let md = self.topic(topic).await?;
        let mut by_leader: BTreeMap<i32, Vec<(i32, i64)>> = BTreeMap::new();
        for (&p, &o) in offsets {
            let leader = md.partition(p).map_or(-1, |x| x.leader);
            by_leader.entry(leader).or_default().push((p, o));
        }
        let mut out = BTreeMap::new();
        for (leader, parts) in by_leader {
            let conn = self.node(leader).await?;
            let req = fetch_request(topic, &parts, max_bytes, max_wait_ms);
            let resp = conn.send(req, FETCH_VERSION).await?;
            check(resp.error_code, || format!("fetching from {topic}"))?;
            for t in &resp.responses {
                for p in &t.partitions {
                    let from = parts.iter().find(|x| x.0 == p.partition_index).map_or(0, |x| x.1);
                    check(p.error_code, || format!("fetching {topic}/{} at offset {from}", p.partition_index))?;
                    let (records, next) = match &p.records {
                        Some(data) => decode_batches(p.partition_index, data, from)?,
                        None => (Vec::new(), from),
                    };
                    out.insert(p.partition_index, PartitionFetch { records, next_offset: next });
                }
            }
        }
        Ok(out)
    }
}
