//! The replication messages of the cluster port: a follower's fetch of
//! many partitions from one leader, and its OffsetsForLeaderEpoch question
//! before it fetches in a new leader epoch. A fetch response's batches are
//! raw bytes after the JSON header (see [`encode_fetch_response`]), so the
//! data is not inflated by JSON.

use ferry_broker::ReplicaError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One partition of a replica fetch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchPartition {
    /// Topic id.
    pub topic_id: Uuid,
    /// Partition index.
    pub partition: i32,
    /// The leader epoch the follower fetches in.
    pub leader_epoch: i32,
    /// The follower's log end offset: where to read from.
    pub fetch_offset: u64,
    /// Offsets below this are acknowledged on the follower (on disk under
    /// the topic's flush policy); the leader's high watermark counts it.
    pub acked_end: u64,
}

/// A follower's fetch from one leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaFetchRequest {
    /// The partitions, each once.
    pub partitions: Vec<FetchPartition>,
    /// Most record bytes in the response (a first batch may exceed it).
    pub max_bytes: usize,
    /// How long the leader may wait for data before answering empty.
    pub max_wait_ms: u64,
}

/// What the leader knows of a fetched partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchedInfo {
    /// The leader's high watermark.
    pub high_watermark: u64,
    /// The leader's log start offset.
    pub log_start: u64,
    /// The leader's log end offset.
    pub log_end: u64,
}

/// One partition of a replica fetch response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedPartition {
    /// Topic id.
    pub topic_id: Uuid,
    /// Partition index.
    pub partition: i32,
    /// The leader's state, or why the partition was refused.
    pub result: Result<FetchedInfo, ReplicaError>,
    /// Whole batches from the fetch offset, as the leader stores them.
    pub records: Vec<u8>,
}

/// The answer to a [`ReplicaFetchRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaFetchResponse {
    /// The partitions, in request order.
    pub partitions: Vec<FetchedPartition>,
}

#[derive(Serialize, Deserialize)]
struct PartitionHeader {
    topic_id: Uuid,
    partition: i32,
    result: Result<FetchedInfo, ReplicaError>,
    records_len: usize,
}

/// `u32 header length | JSON header | every partition's records in order`.
pub fn encode_fetch_response(r: &ReplicaFetchResponse) -> Result<Vec<u8>, String> {
    let headers: Vec<PartitionHeader> = r
        .partitions
        .iter()
        .map(|p| PartitionHeader {
            topic_id: p.topic_id,
            partition: p.partition,
            result: p.result,
            records_len: p.records.len(),
        })
        .collect();
    let header = serde_json::to_vec(&headers).map_err(|e| e.to_string())?;
    let len = u32::try_from(header.len()).map_err(|_| "fetch response header too large".to_string())?;
    let mut out = Vec::with_capacity(4 + header.len() + r.partitions.iter().map(|p| p.records.len()).sum::<usize>());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&header);
    for p in &r.partitions {
        out.extend_from_slice(&p.records);
    }
    Ok(out)
}

/// The inverse of [`encode_fetch_response`]; lengths are checked against
/// the body (a peer's bytes are not trusted).
pub fn decode_fetch_response(body: &[u8]) -> Result<ReplicaFetchResponse, String> {
    let len_bytes: [u8; 4] = body.get(..4).and_then(|b| b.try_into().ok()).ok_or("fetch response too short")?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    let header = body.get(4..4 + len).ok_or("fetch response header past its end")?;
    let headers: Vec<PartitionHeader> = serde_json::from_slice(header).map_err(|e| e.to_string())?;
    let mut rest = &body[4 + len..];
    let mut partitions = Vec::with_capacity(headers.len());
    for h in headers {
        if h.records_len > rest.len() {
            return Err("fetch response records past its end".into());
        }
        let (records, tail) = rest.split_at(h.records_len);
        rest = tail;
        partitions.push(FetchedPartition {
            topic_id: h.topic_id,
            partition: h.partition,
            result: h.result,
            records: records.to_vec(),
        });
    }
    if !rest.is_empty() {
        return Err("trailing bytes after fetch response records".into());
    }
    Ok(ReplicaFetchResponse { partitions })
}

/// One partition of an OffsetsForLeaderEpoch question.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochQuery {
    /// Topic id.
    pub topic_id: Uuid,
    /// Partition index.
    pub partition: i32,
    /// The leader epoch the follower is about to fetch in (fences a stale leader).
    pub current_epoch: i32,
    /// The follower's newest epoch: where does it end on the leader?
    pub epoch: i32,
}

/// The leader's answer for one partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochAnswer {
    /// Topic id.
    pub topic_id: Uuid,
    /// Partition index.
    pub partition: i32,
    /// The largest epoch at most the one asked and its end offset on the
    /// leader (`None`: undefined), or why the partition was refused.
    pub result: Result<Option<(i32, u64)>, ReplicaError>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_responses_round_trip_and_bad_lengths_are_errors() {
        let r = ReplicaFetchResponse {
            partitions: vec![
                FetchedPartition {
                    topic_id: Uuid::new_v4(),
                    partition: 0,
                    result: Ok(FetchedInfo { high_watermark: 5, log_start: 0, log_end: 9 }),
                    records: vec![1, 2, 3],
                },
                FetchedPartition {
                    topic_id: Uuid::new_v4(),
                    partition: 3,
                    result: Err(ReplicaError::FencedLeaderEpoch),
                    records: vec![],
                },
            ],
        };
        let body = encode_fetch_response(&r).unwrap();
        assert_eq!(decode_fetch_response(&body).unwrap(), r);
        assert!(decode_fetch_response(&body[..body.len() - 1]).is_err());
        let mut longer = body.clone();
        longer.push(0);
        assert!(decode_fetch_response(&longer).is_err());
        assert!(decode_fetch_response(&[0, 0, 1]).is_err());
        assert!(decode_fetch_response(&[0xff, 0xff, 0xff, 0xff, b'[']).is_err());
    }
}
