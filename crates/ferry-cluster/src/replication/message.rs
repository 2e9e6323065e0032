//! The replication messages of the cluster port: a follower's fetch of
//! many partitions from one leader, and its OffsetsForLeaderEpoch question
//! before it fetches in a new leader epoch. A fetch response's batches are
//! raw bytes after the JSON header (see [`encode_fetch_response`]), so the
//! data is not inflated by JSON, and the leader sends them from its
//! segment files with `sendfile`, as the Kafka Fetch handler does.

use ferry_broker::{ReadSlice, ReplicaError};
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
    pub records: Records,
}

/// A fetched partition's batches: a range of a segment file on the leader
/// (sent with `sendfile`), or bytes (as the follower reads them).
#[derive(Clone, Debug)]
pub enum Records {
    /// Bytes in memory.
    Bytes(Vec<u8>),
    /// A range of one of the leader's segment files.
    File(ReadSlice),
}

impl Default for Records {
    fn default() -> Self {
        Records::Bytes(Vec::new())
    }
}

impl Records {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Records::Bytes(b) => b.len(),
            Records::File(s) => s.len as usize,
        }
    }

    /// Whether there is nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes (a file range is read; for tests and the copying path).
    pub fn to_vec(&self) -> std::io::Result<Vec<u8>> {
        match self {
            Records::Bytes(b) => Ok(b.clone()),
            Records::File(s) => s.to_vec().map_err(std::io::Error::other),
        }
    }
}

/// The same bytes (a file range is the same range of the same file).
impl PartialEq for Records {
    fn eq(&self, other: &Records) -> bool {
        match (self, other) {
            (Records::Bytes(a), Records::Bytes(b)) => a == b,
            (Records::File(a), Records::File(b)) => {
                std::sync::Arc::ptr_eq(&a.file, &b.file) && (a.position, a.len) == (b.position, b.len)
            }
            _ => false,
        }
    }
}

impl Eq for Records {}

/// One piece of an outgoing frame: bytes, or a file range for `sendfile`.
#[derive(Debug)]
pub enum Chunk {
    /// Bytes in memory.
    Bytes(Vec<u8>),
    /// A range of a segment file.
    File(ReadSlice),
}

impl Chunk {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Chunk::Bytes(b) => b.len(),
            Chunk::File(s) => s.len as usize,
        }
    }

    /// Whether there is nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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

/// `u32 header length | JSON header | every partition's records in order`,
/// as chunks: the records stay file ranges, for `sendfile`.
pub fn encode_fetch_response_chunks(r: &ReplicaFetchResponse) -> Result<Vec<Chunk>, String> {
    encode_fetch_response_chunks_with(r, false)
}

/// [`encode_fetch_response_chunks`], with the binary header
/// (`fetch_binary.rs`) if `binary`.
pub fn encode_fetch_response_chunks_with(r: &ReplicaFetchResponse, binary: bool) -> Result<Vec<Chunk>, String> {
    let head = if binary { super::fetch_binary::encode_response_header(r)? } else { json_header(r)? };
    let mut chunks = vec![Chunk::Bytes(head)];
    for p in r.partitions.iter().filter(|p| !p.records.is_empty()) {
        match &p.records {
            // Small bytes go with the bytes before them (fewer writes).
            Records::Bytes(b) => match chunks.last_mut() {
                Some(Chunk::Bytes(last)) => last.extend_from_slice(b),
                _ => chunks.push(Chunk::Bytes(b.clone())),
            },
            Records::File(s) => chunks.push(Chunk::File(s.clone())),
        }
    }
    Ok(chunks)
}

/// `u32 header length | JSON header`.
fn json_header(r: &ReplicaFetchResponse) -> Result<Vec<u8>, String> {
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
    let mut head = Vec::with_capacity(4 + header.len());
    head.extend_from_slice(&len.to_be_bytes());
    head.extend_from_slice(&header);
    Ok(head)
}

/// [`encode_fetch_response_chunks`] as one buffer (file ranges read).
pub fn encode_fetch_response(r: &ReplicaFetchResponse) -> Result<Vec<u8>, String> {
    encode_fetch_response_with(r, false)
}

/// [`encode_fetch_response_chunks_with`] as one buffer (file ranges read).
pub fn encode_fetch_response_with(r: &ReplicaFetchResponse, binary: bool) -> Result<Vec<u8>, String> {
    let chunks = encode_fetch_response_chunks_with(r, binary)?;
    let mut out = Vec::with_capacity(chunks.iter().map(Chunk::len).sum());
    for c in chunks {
        match c {
            Chunk::Bytes(b) => out.extend_from_slice(&b),
            Chunk::File(s) => out.extend(s.to_vec().map_err(|e| e.to_string())?),
        }
    }
    Ok(out)
}

/// The inverse of [`encode_fetch_response_with`].
pub fn decode_fetch_response_with(body: &[u8], binary: bool) -> Result<ReplicaFetchResponse, String> {
    if binary { super::fetch_binary::decode_response(body) } else { decode_fetch_response(body) }
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
            records: Records::Bytes(records.to_vec()),
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
                    records: Records::Bytes(vec![1, 2, 3]),
                },
                FetchedPartition {
                    topic_id: Uuid::new_v4(),
                    partition: 3,
                    result: Err(ReplicaError::FencedLeaderEpoch),
                    records: Records::default(),
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

    #[test]
    fn file_ranges_stay_chunks_of_their_own_and_read_back_as_their_bytes() {
        use std::io::Write;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"0123456789abcdef").unwrap();
        let file = std::sync::Arc::new(f);
        let slice = |position, len| ReadSlice { file: file.clone(), position, len, end_offset: 0 };
        let info = Ok(FetchedInfo { high_watermark: 1, log_start: 0, log_end: 2 });
        let part = |partition, records| FetchedPartition { topic_id: Uuid::nil(), partition, result: info, records };
        let r = ReplicaFetchResponse {
            partitions: vec![
                part(0, Records::File(slice(2, 5))),
                part(1, Records::Bytes(b"xy".to_vec())),
                part(2, Records::default()),
                part(3, Records::File(slice(10, 6))),
            ],
        };
        let chunks = encode_fetch_response_chunks(&r).unwrap();
        let kinds: Vec<(bool, usize)> = chunks.iter().map(|c| (matches!(c, Chunk::File(_)), c.len())).collect();
        assert_eq!(kinds[1..], [(true, 5), (false, 2), (true, 6)], "no copy of a file range");
        let back = decode_fetch_response(&encode_fetch_response(&r).unwrap()).unwrap();
        let bytes: Vec<Vec<u8>> = back.partitions.iter().map(|p| p.records.to_vec().unwrap()).collect();
        assert_eq!(bytes, [b"23456".to_vec(), b"xy".to_vec(), vec![], b"abcdef".to_vec()]);
    }
}
