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
    /// the first partition's leader.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partitions: &[i32],
        timestamp: i64,
    ) -> Result<BTreeMap<i32, i64>, ClientError> {
        let parts = partitions
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
        let conn = match partitions.first() {
            Some(&p) => self.leader(topic, p).await?,
            None => return Ok(BTreeMap::new()),
        };
        let resp = conn.send(req, 7).await?;
        let mut out = BTreeMap::new();
        for t in &resp.topics {
            for p in &t.partitions {
                check(p.error_code, || format!("listing offsets of {topic}/{}", p.partition_index))?;
                out.insert(p.partition_index, p.offset);
            }
        }
        Ok(out)
    }
}
