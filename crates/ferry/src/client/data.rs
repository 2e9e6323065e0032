//! Records in and out: Produce, Fetch, ListOffsets, and record batches
//! built and parsed with `ferry_records::records`.

use std::collections::BTreeMap;

use bytes::Bytes;
use ferry_records::batch::{BatchHeader, HEADER_LEN};
use ferry_records::compression::Compression;
use ferry_records::records::{NewRecord, build_batch, parse_records, records_payload};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{BrokerId, FetchRequest, ListOffsetsRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{Client, ClientError, Connection, check};

/// A record to produce.
#[derive(Clone, Debug, Default)]
pub struct Record {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Milliseconds since the epoch (CreateTime).
    pub timestamp: i64,
}

/// A record read back.
#[derive(Clone, Debug)]
pub struct FetchedRecord {
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// What one partition's fetch returned.
#[derive(Clone, Debug, Default)]
pub struct PartitionFetch {
    pub records: Vec<FetchedRecord>,
    /// The offset to fetch next.
    pub next_offset: i64,
}

/// Largest records section decompressed from one fetched batch.
const MAX_DECOMPRESSED: usize = 256 << 20;

/// Encodes records as one v2 batch.
pub fn encode_batch(records: &[Record], compression: Compression) -> Result<Vec<u8>, ClientError> {
    let views: Vec<NewRecord<'_>> = records
        .iter()
        .map(|r| NewRecord {
            key: r.key.as_deref(),
            value: r.value.as_deref(),
            headers: r.headers.iter().map(|(k, v)| (k.as_bytes(), Some(v.as_slice()))).collect(),
            timestamp: r.timestamp,
        })
        .collect();
    build_batch(&views, compression, -1, -1, -1).map_err(|e| ClientError::Encode(e.to_string()))
}

/// Decodes every record at or after `from` in a fetched records section
/// (whole batches; a trailing partial batch is ignored, as Kafka clients do).
/// Returns the records and the offset after the last batch seen.
pub fn decode_batches(partition: i32, mut data: &[u8], from: i64) -> Result<(Vec<FetchedRecord>, i64), ClientError> {
    let mut out = Vec::new();
    let mut next = from;
    while data.len() >= HEADER_LEN {
        let h = BatchHeader::parse(data).map_err(|e| ClientError::Decode(e.to_string()))?;
        let Some(batch) = data.get(..h.size) else { break };
        data = &data[h.size..];
        next = next.max(h.next_offset() as i64);
        if h.is_control() {
            continue;
        }
        let payload = records_payload(batch, MAX_DECOMPRESSED).map_err(|e| ClientError::Decode(e.to_string()))?;
        let records =
            parse_records(&payload, h.records_count as usize).map_err(|e| ClientError::Decode(e.to_string()))?;
        for r in records {
            let offset = h.base_offset as i64 + i64::from(r.offset_delta);
            if offset < from {
                continue;
            }
            let timestamp = if h.is_log_append_time() { h.max_timestamp } else { h.base_timestamp + r.timestamp_delta };
            out.push(FetchedRecord {
                partition,
                offset,
                timestamp,
                key: r.key.map(<[u8]>::to_vec),
                value: r.value.map(<[u8]>::to_vec),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.map(<[u8]>::to_vec)))
                    .collect(),
            });
        }
    }
    Ok((out, next))
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// A Produce request carrying one batch for one partition.
pub fn produce_request(topic: &str, partition: i32, batch: Bytes, acks: i16, timeout_ms: i32) -> ProduceRequest {
    let data = PartitionProduceData::default().with_index(partition).with_records(Some(batch));
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(timeout_ms)
        .with_topic_data(vec![TopicProduceData::default().with_name(topic_name(topic)).with_partition_data(vec![data])])
}

/// Preferred Produce version (v9: flexible, topic names).
pub const PRODUCE_VERSION: i16 = 9;

/// The base offset a Produce response gives its one partition.
pub fn produce_result(
    resp: &kafka_protocol::messages::ProduceResponse,
    topic: &str,
    partition: i32,
) -> Result<i64, ClientError> {
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
    /// The leader's connection for a partition.
    pub async fn leader(&self, topic: &str, partition: i32) -> Result<std::sync::Arc<Connection>, ClientError> {
        let t = self.topic(topic).await?;
        let (_, leader, error) = t
            .partitions
            .iter()
            .find(|(p, ..)| *p == partition)
            .copied()
            .ok_or_else(|| ClientError::Other(format!("topic {topic} has no partition {partition}")))?;
        check(error, || format!("partition {topic}/{partition}"))?;
        self.node(leader).await
    }

    /// Produces one batch of `records` to a partition; returns its base offset.
    pub async fn produce(
        &self,
        topic: &str,
        partition: i32,
        records: &[Record],
        acks: i16,
        compression: Compression,
    ) -> Result<i64, ClientError> {
        let batch = Bytes::from(encode_batch(records, compression)?);
        let conn = self.leader(topic, partition).await?;
        let req = produce_request(topic, partition, batch, acks, 30_000);
        let v = conn.version::<ProduceRequest>(PRODUCE_VERSION)?;
        if acks == 0 {
            conn.fire(&req, v).await?;
            return Ok(-1);
        }
        let resp = conn.send_version(req, v).await?;
        produce_result(&resp, topic, partition)
    }

    /// Fetches from several partitions of a topic (one request per leader;
    /// on one node, one request). `offsets`: partition -> fetch offset.
    pub async fn fetch(
        &self,
        topic: &str,
        offsets: &BTreeMap<i32, i64>,
        max_wait_ms: i32,
        max_bytes: i32,
    ) -> Result<BTreeMap<i32, PartitionFetch>, ClientError> {
        let md = self.topic(topic).await?;
        let mut by_leader: BTreeMap<i32, Vec<(i32, i64)>> = BTreeMap::new();
        for (&p, &o) in offsets {
            let leader = md.partitions.iter().find(|x| x.0 == p).map(|x| x.1).unwrap_or(-1);
            by_leader.entry(leader).or_default().push((p, o));
        }
        let mut out = BTreeMap::new();
        for (leader, parts) in by_leader {
            let conn = self.node(leader).await?;
            let req = fetch_request(topic, &parts, max_bytes, max_wait_ms);
            let resp = conn.send(req, 12).await?;
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

    /// ListOffsets: for each partition, the offset for `timestamp`
    /// (-2 earliest, -1 latest, else the first offset at or after it; -1 if none).
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

/// A Fetch request (no session, read_uncommitted) for `partitions`
/// (partition, offset) of `topic`; the CLI's consumer and `ferry bench`
/// share it.
pub(crate) fn fetch_request(topic: &str, partitions: &[(i32, i64)], max_bytes: i32, max_wait_ms: i32) -> FetchRequest {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_skip_earlier_offsets() {
        let records: Vec<Record> = (0..3)
            .map(|i| Record {
                key: Some(format!("k{i}").into_bytes()),
                value: Some(format!("v{i}").into_bytes()),
                headers: vec![("h".into(), b"x".to_vec())],
                timestamp: 1000 + i,
            })
            .collect();
        let mut batch = encode_batch(&records, Compression::None).unwrap();
        // As the broker would store it: base offset 10.
        batch[..8].copy_from_slice(&10u64.to_be_bytes());
        let (got, next) = decode_batches(0, &batch, 11).unwrap();
        assert_eq!(next, 13);
        assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), [11, 12]);
        assert_eq!(got[0].value.as_deref(), Some(&b"v1"[..]));
        assert_eq!(got[1].timestamp, 1002);
        assert_eq!(got[1].headers, [("h".to_string(), Some(b"x".to_vec()))]);
        // A partial batch at the end is left for the next fetch.
        let (got, next) = decode_batches(0, &batch[..batch.len() - 1], 10).unwrap();
        assert!(got.is_empty());
        assert_eq!(next, 10);
    }
}
