//! The binary form of a replica fetch and of its response's header, for
//! leaders that read it ([`crate::transport::Pong::binary_fetch`]). Every
//! fetch names every partition the follower copies from that leader (a
//! 3-node cluster's ~34, most of them idle internal partitions), and as
//! JSON, topic ids as strings, both ends spent 10-13% of their CPU on it
//! under quorum-queue load (docs/benchmarks.md, phase 2d). Big-endian:
//!
//! request: `u32 quorum length | quorum | i32 from | u64 max_bytes |
//! u64 max_wait_ms | u32 count | (16 topic id | i32 partition |
//! i32 leader_epoch | u64 fetch_offset | u64 acked_end)*`
//!
//! response header: `u32 count | (16 topic id | i32 partition | u8 result
//! | result fields | u32 records length)*`, the records after it as in the
//! JSON form. Result 0 is `FetchedInfo` (three u64), the others a
//! [`ReplicaError`] (`BelowLogStart` with its u64). Lengths and counts are
//! checked against the body: a cut or garbled one is an error, never a
//! panic or an allocation it asks for.

use bytes::{Buf, BufMut};
use ferry_broker::ReplicaError;
use uuid::Uuid;

use super::message::{
    FetchPartition, FetchedInfo, FetchedPartition, Records, ReplicaFetchRequest, ReplicaFetchResponse,
};

/// Bytes of one partition in a request.
const REQUEST_PARTITION: usize = 16 + 4 + 4 + 8 + 8;
/// Fewest bytes of one partition in a response header.
const RESPONSE_PARTITION_MIN: usize = 16 + 4 + 1 + 4;

/// The body of a binary replica fetch from node `from` of quorum `quorum`.
pub(crate) fn encode_request(from: i32, quorum: &str, r: &ReplicaFetchRequest) -> Result<Vec<u8>, String> {
    let count = u32::try_from(r.partitions.len()).map_err(|_| "too many partitions in a fetch")?;
    let quorum_len = u32::try_from(quorum.len()).map_err(|_| "quorum fingerprint too long")?;
    let mut out = Vec::with_capacity(4 + quorum.len() + 4 + 8 + 8 + 4 + r.partitions.len() * REQUEST_PARTITION);
    out.put_u32(quorum_len);
    out.put_slice(quorum.as_bytes());
    out.put_i32(from);
    out.put_u64(r.max_bytes as u64);
    out.put_u64(r.max_wait_ms);
    out.put_u32(count);
    for p in &r.partitions {
        out.put_slice(p.topic_id.as_bytes());
        out.put_i32(p.partition);
        out.put_i32(p.leader_epoch);
        out.put_u64(p.fetch_offset);
        out.put_u64(p.acked_end);
    }
    Ok(out)
}

/// The sender, quorum fingerprint and fetch of a body made by [`encode_request`].
pub(crate) fn decode_request(mut body: &[u8]) -> Result<(i32, String, ReplicaFetchRequest), String> {
    let quorum_len = take_u32(&mut body, "quorum length")? as usize;
    let quorum = take(&mut body, quorum_len, "quorum")?;
    let quorum = std::str::from_utf8(quorum).map_err(|_| "quorum fingerprint not UTF-8")?.to_string();
    need(body, 4 + 8 + 8 + 4, "fetch fields")?;
    let from = body.get_i32();
    let max_bytes = usize::try_from(body.get_u64()).unwrap_or(usize::MAX);
    let max_wait_ms = body.get_u64();
    let count = body.get_u32() as usize;
    if body.len() != count.saturating_mul(REQUEST_PARTITION) {
        return Err(format!("{count} fetch partitions in {} bytes", body.len()));
    }
    let mut partitions = Vec::with_capacity(count);
    for _ in 0..count {
        partitions.push(FetchPartition {
            topic_id: take_uuid(&mut body),
            partition: body.get_i32(),
            leader_epoch: body.get_i32(),
            fetch_offset: body.get_u64(),
            acked_end: body.get_u64(),
        });
    }
    Ok((from, quorum, ReplicaFetchRequest { partitions, max_bytes, max_wait_ms }))
}

/// The binary header of `r` (its records follow it, in order).
pub(super) fn encode_response_header(r: &ReplicaFetchResponse) -> Result<Vec<u8>, String> {
    let count = u32::try_from(r.partitions.len()).map_err(|_| "too many partitions in a fetch response")?;
    let mut out = Vec::with_capacity(4 + r.partitions.len() * (RESPONSE_PARTITION_MIN + 24));
    out.put_u32(count);
    for p in &r.partitions {
        out.put_slice(p.topic_id.as_bytes());
        out.put_i32(p.partition);
        match &p.result {
            Ok(info) => {
                out.put_u8(0);
                out.put_u64(info.high_watermark);
                out.put_u64(info.log_start);
                out.put_u64(info.log_end);
            }
            Err(e) => {
                out.put_u8(error_code(e));
                if let ReplicaError::BelowLogStart(start) = e {
                    out.put_u64(*start);
                }
            }
        }
        out.put_u32(u32::try_from(p.records.len()).map_err(|_| "records too large")?);
    }
    Ok(out)
}

/// A response whose body is a header made by [`encode_response_header`]
/// and the records.
pub(super) fn decode_response(mut body: &[u8]) -> Result<ReplicaFetchResponse, String> {
    let count = take_u32(&mut body, "partition count")? as usize;
    if count > body.len() / RESPONSE_PARTITION_MIN {
        return Err(format!("{count} fetched partitions cannot fit in {} bytes", body.len()));
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        need(body, 16 + 4 + 1, "partition")?;
        let topic_id = take_uuid(&mut body);
        let partition = body.get_i32();
        let result = match body.get_u8() {
            0 => {
                need(body, 24, "partition state")?;
                Ok(FetchedInfo { high_watermark: body.get_u64(), log_start: body.get_u64(), log_end: body.get_u64() })
            }
            6 => {
                need(body, 8, "log start")?;
                Err(ReplicaError::BelowLogStart(body.get_u64()))
            }
            code => Err(error_from(code)?),
        };
        let records_len = take_u32(&mut body, "records length")? as usize;
        headers.push((topic_id, partition, result, records_len));
    }
    let mut partitions = Vec::with_capacity(count);
    for (topic_id, partition, result, records_len) in headers {
        let records = take(&mut body, records_len, "records")?;
        partitions.push(FetchedPartition { topic_id, partition, result, records: Records::Bytes(records.to_vec()) });
    }
    if !body.is_empty() {
        return Err("trailing bytes after fetch response records".into());
    }
    Ok(ReplicaFetchResponse { partitions })
}

fn error_code(e: &ReplicaError) -> u8 {
    match e {
        ReplicaError::NotLeader => 1,
        ReplicaError::FencedLeaderEpoch => 2,
        ReplicaError::UnknownLeaderEpoch => 3,
        ReplicaError::UnknownPartition => 4,
        ReplicaError::OffsetOutOfRange => 5,
        ReplicaError::BelowLogStart(_) => 6,
        ReplicaError::Storage => 7,
    }
}

fn error_from(code: u8) -> Result<ReplicaError, String> {
    Ok(match code {
        1 => ReplicaError::NotLeader,
        2 => ReplicaError::FencedLeaderEpoch,
        3 => ReplicaError::UnknownLeaderEpoch,
        4 => ReplicaError::UnknownPartition,
        5 => ReplicaError::OffsetOutOfRange,
        7 => ReplicaError::Storage,
        other => return Err(format!("unknown fetch result {other}")),
    })
}

fn need(body: &[u8], len: usize, what: &str) -> Result<(), String> {
    if body.len() < len { Err(format!("binary fetch cut in its {what}")) } else { Ok(()) }
}

fn take_u32(body: &mut &[u8], what: &str) -> Result<u32, String> {
    need(body, 4, what)?;
    Ok(body.get_u32())
}

fn take<'a>(body: &mut &'a [u8], len: usize, what: &str) -> Result<&'a [u8], String> {
    need(body, len, what)?;
    let (head, rest) = body.split_at(len);
    *body = rest;
    Ok(head)
}

/// 16 bytes the caller checked are there.
fn take_uuid(body: &mut &[u8]) -> Uuid {
    let mut id = [0u8; 16];
    body.copy_to_slice(&mut id);
    Uuid::from_bytes(id)
}

#[cfg(test)]
mod tests {
    use super::super::message::{decode_fetch_response_with, encode_fetch_response_with};
    use super::*;

    fn request() -> ReplicaFetchRequest {
        let part = |n: u128| FetchPartition {
            topic_id: Uuid::from_u128(n << 64 | n),
            partition: n as i32,
            leader_epoch: -(n as i32),
            fetch_offset: u64::MAX - n as u64,
            acked_end: n as u64,
        };
        ReplicaFetchRequest { partitions: (0..5).map(part).collect(), max_bytes: 8 << 20, max_wait_ms: 500 }
    }

    fn response() -> ReplicaFetchResponse {
        let info = Ok(FetchedInfo { high_watermark: 5, log_start: 1, log_end: 9 });
        let part = |n: u128, result, records: &[u8]| FetchedPartition {
            topic_id: Uuid::from_u128(n),
            partition: n as i32,
            result,
            records: Records::Bytes(records.to_vec()),
        };
        let mut partitions = vec![part(1, info, b"batches"), part(2, info, b"")];
        let errors = [
            ReplicaError::NotLeader,
            ReplicaError::FencedLeaderEpoch,
            ReplicaError::UnknownLeaderEpoch,
            ReplicaError::UnknownPartition,
            ReplicaError::OffsetOutOfRange,
            ReplicaError::BelowLogStart(77),
            ReplicaError::Storage,
        ];
        partitions.extend(errors.into_iter().enumerate().map(|(i, e)| part(10 + i as u128, Err(e), b"")));
        partitions.push(part(3, info, b"more"));
        ReplicaFetchResponse { partitions }
    }

    #[test]
    fn fetches_and_responses_round_trip() {
        let body = encode_request(3, "1@h:1,2@h:2", &request()).unwrap();
        assert_eq!(decode_request(&body).unwrap(), (3, "1@h:1,2@h:2".to_string(), request()));
        let r = response();
        let body = encode_fetch_response_with(&r, true).unwrap();
        assert_eq!(decode_fetch_response_with(&body, true).unwrap(), r);
        // Smaller than the JSON form by far (topic ids are 16 bytes, not 38).
        assert!(body.len() * 3 < encode_fetch_response_with(&r, false).unwrap().len());
    }

    /// Every cut, a trailing byte, and garbled bytes anywhere are errors
    /// (or a body read differently), never a panic or a huge allocation.
    #[test]
    fn cut_or_garbled_bodies_are_errors() {
        let request = encode_request(3, "q", &request()).unwrap();
        let response = encode_fetch_response_with(&response(), true).unwrap();
        for cut in 0..request.len() {
            assert!(decode_request(&request[..cut]).is_err(), "request cut at {cut}");
        }
        for cut in 0..response.len() {
            assert!(decode_fetch_response_with(&response[..cut], true).is_err(), "response cut at {cut}");
        }
        let mut longer = request.clone();
        longer.push(0);
        assert!(decode_request(&longer).is_err());
        let mut longer = response.clone();
        longer.push(0);
        assert!(decode_fetch_response_with(&longer, true).is_err());
        // Counts and lengths of u32::MAX.
        let mut bad = request.clone();
        bad[0..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_request(&bad).is_err());
        let mut bad = response.clone();
        bad[0..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_fetch_response_with(&bad, true).is_err());
        for body in [&request, &response] {
            for bad in crate::transport::garbled(body, 0x1234_5678, 3000) {
                let _ = decode_request(&bad);
                let _ = decode_fetch_response_with(&bad, true);
            }
        }
    }
}
