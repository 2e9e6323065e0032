//! ListOffsets: a partition's offsets by time (earliest, latest, or the
//! first at or after a timestamp).

use std::collections::BTreeMap;

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest};

use crate::client::Client;
use crate::error::{ClientError, check};
use crate::topic_name;

/// The timestamp that asks ListOffsets for the log start offset.
pub const EARLIEST: i64 = -2;
/// The timestamp that asks ListOffsets for the log end offset.
pub const LATEST: i64 = -1;

impl Client {
    /// For each partition, the offset for `timestamp` ([`EARLIEST`],
    /// [`LATEST`], else the first offset at or after it; -1 if none). Asks
    /// each partition's leader (one request per leader), following leaders
    /// that move (bounded retries with fresh Metadata).
    pub async fn list_offsets(
        &self,
        topic: &str,
        partitions: &[i32],
        timestamp: i64,
    ) -> Result<BTreeMap<i32, i64>, ClientError> {
        if partitions.is_empty() {
            return Ok(BTreeMap::new());
        }
        self.with_leader_retries(true, || self.list_offsets_once(topic, partitions, timestamp)).await
    }

    async fn list_offsets_once(
        &self,
        topic: &str,
        partitions: &[i32],
        timestamp: i64,
    ) -> Result<BTreeMap<i32, i64>, ClientError> {
        let md = self.topic(topic).await?;
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for &p in partitions {
            let leader = md.partition(p).map_or(-1, |x| x.leader);
            by_leader.entry(leader).or_default().push(p);
        }
        let mut out = BTreeMap::new();
        for (leader, parts) in by_leader {
            let parts = parts
                .iter()
                .map(|&p| {
                    ListOffsetsPartition::default()
                        .with_partition_index(p)
                        .with_current_leader_epoch(-1)
                        .with_timestamp(timestamp)
                })
                .collect();
            let req = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![ListOffsetsTopic::default().with_name(topic_name(topic)).with_partitions(parts)]);
            let resp = self.node(leader).await?.send(req, 7).await?;
            for t in &resp.topics {
                for p in &t.partitions {
                    check(p.error_code, || format!("listing offsets of {topic}/{}", p.partition_index))?;
                    out.insert(p.partition_index, p.offset);
                }
            }
        }
        Ok(out)
    }
}
