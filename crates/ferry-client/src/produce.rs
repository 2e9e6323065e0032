//! Produce: one batch to one partition, or the request and answer apart for
//! callers that pipeline (`ferry bench`).

use bytes::Bytes;
use ferry_records::compression::Compression;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use crate::batches::{Record, encode_batch};
use crate::client::Client;
use crate::error::{ClientError, check};
use crate::topic_name;

/// Preferred Produce version (v9: flexible, topic names).
pub const PRODUCE_VERSION: i16 = 9;

/// How long the broker may wait for the replicas `acks` asks for.
const PRODUCE_TIMEOUT_MS: i32 = 30_000;

/// A Produce request carrying one batch for one partition.
pub fn produce_request(topic: &str, partition: i32, batch: Bytes, acks: i16, timeout_ms: i32) -> ProduceRequest {
    let data = PartitionProduceData::default().with_index(partition).with_records(Some(batch));
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(timeout_ms)
        .with_topic_data(vec![TopicProduceData::default().with_name(topic_name(topic)).with_partition_data(vec![data])])
}

/// The base offset a Produce response gives its one partition.
pub fn produce_result(resp: &ProduceResponse, topic: &str, partition: i32) -> Result<i64, ClientError> {
    let p = resp
        .responses
        .first()
        .and_then(|t| t.partition_responses.first())
        .ok_or_else(|| ClientError::Decode("Produce: no partition result".into()))?;
    check(p.error_code, || match &p.error_message {
        Some(m) if !m.is_empty() => format!("producing to {topic}/{partition} ({m})"),
        _ => format!("producing to {topic}/{partition}"),
    })?;
    Ok(p.base_offset)
}

impl Client {
    /// Produces one batch of `records` to a partition's leader; returns its
    /// base offset (-1 with `acks` 0, which gets no answer). Where the
    /// leader moved (NOT_LEADER_OR_FOLLOWER, LEADER_NOT_AVAILABLE), asks
    /// Metadata again and retries, a bounded number of times.
    pub async fn produce(
        &self,
        topic: &str,
        partition: i32,
        records: &[Record],
        acks: i16,
        compression: Compression,
    ) -> Result<i64, ClientError> {
        let batch = Bytes::from(encode_batch(records, compression)?);
        self.with_leader_retries(false, || {
            let batch = batch.clone();
            async move {
                let conn = self.leader(topic, partition).await?;
                let req = produce_request(topic, partition, batch, acks, PRODUCE_TIMEOUT_MS);
                let v = conn.version::<ProduceRequest>(PRODUCE_VERSION)?;
                if acks == 0 {
                    conn.fire(&req, v).await?;
                    return Ok(-1);
                }
                let resp = conn.send_version(req, v).await?;
                produce_result(&resp, topic, partition)
            }
        })
        .await
    }
}
