//! DeleteRecords: move partitions' log start offsets forward, asking each
//! partition's leader (a broker that does not lead a partition answers
//! NOT_LEADER_OR_FOLLOWER for it, as Kafka's do).

use std::collections::BTreeMap;

use kafka_protocol::messages::DeleteRecordsRequest;
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};

use crate::client::Client;
use crate::error::{ClientError, check};
use crate::topic_name;

/// Preferred DeleteRecords version (v2: flexible).
const DELETE_RECORDS_VERSION: i16 = 2;
/// How long a leader may take to delete.
const DELETE_TIMEOUT_MS: i32 = 30_000;

/// The DeleteRecords offset that means "up to the high watermark".
pub const HIGH_WATERMARK: i64 = -1;

/// A DeleteRecords request for `before` (partition -> offset) of `topic`.
pub fn delete_records_request(topic: &str, before: &[(i32, i64)]) -> DeleteRecordsRequest {
    let partitions =
        before.iter().map(|&(p, o)| DeleteRecordsPartition::default().with_partition_index(p).with_offset(o)).collect();
    DeleteRecordsRequest::default()
        .with_timeout_ms(DELETE_TIMEOUT_MS)
        .with_topics(vec![DeleteRecordsTopic::default().with_name(topic_name(topic)).with_partitions(partitions)])
}

impl Client {
    /// Makes the records of each partition before `before[p]`
    /// ([`HIGH_WATERMARK`]: all of them) unreadable; returns each
    /// partition's new log start offset. One request per leader, following
    /// leaders that move (bounded retries with fresh Metadata; deleting
    /// again before the same offset changes nothing).
    pub async fn delete_records(
        &self,
        topic: &str,
        before: &BTreeMap<i32, i64>,
    ) -> Result<BTreeMap<i32, i64>, ClientError> {
        if before.is_empty() {
            return Ok(BTreeMap::new());
        }
        self.with_leader_retries(true, || self.delete_records_once(topic, before)).await
    }

    async fn delete_records_once(
        &self,
        topic: &str,
        before: &BTreeMap<i32, i64>,
    ) -> Result<BTreeMap<i32, i64>, ClientError> {
        let md = self.topic(topic).await?;
        let mut by_leader: BTreeMap<i32, Vec<(i32, i64)>> = BTreeMap::new();
        for (&p, &o) in before {
            let leader = md.partition(p).map_or(-1, |x| x.leader);
            by_leader.entry(leader).or_default().push((p, o));
        }
        let mut out = BTreeMap::new();
        for (leader, parts) in by_leader {
            let req = delete_records_request(topic, &parts);
            let resp = self.node(leader).await?.send(req, DELETE_RECORDS_VERSION).await?;
            for t in &resp.topics {
                for p in &t.partitions {
                    check(p.error_code, || format!("deleting records of {topic}/{}", p.partition_index))?;
                    out.insert(p.partition_index, p.low_watermark);
                }
            }
        }
        Ok(out)
    }
}
