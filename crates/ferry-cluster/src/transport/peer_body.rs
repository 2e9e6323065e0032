//! The body of a binary peer frame (issue #17, phase 2d): a peer call or
//! its answer as JSON with its binary payloads (forwarded messages,
//! deliveries: `ferry_broker::metadata::Blob`) taken out and sent raw
//! after it, as a replica fetch sends its records after a JSON header:
//!
//! `u32 json length | JSON | u32 payload count | (u32 length | bytes)*`
//!
//! big-endian. Lengths are checked against the body: a truncated or
//! garbled body is an error, never a panic or an allocation it asks for.

use bytes::{Buf, Bytes};
use serde::Serialize;

/// `json` followed by `blobs`.
pub(super) fn encode<T: Serialize>(json: &T, blobs: &[Bytes]) -> Result<Vec<u8>, String> {
    let json = serde_json::to_vec(json).map_err(|e| e.to_string())?;
    let len = |n: usize| u32::try_from(n).map_err(|_| "binary peer body too large".to_string());
    let total = 8 + json.len() + blobs.iter().map(|b| 4 + b.len()).sum::<usize>();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&len(json.len())?.to_be_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&len(blobs.len())?.to_be_bytes());
    for b in blobs {
        out.extend_from_slice(&len(b.len())?.to_be_bytes());
        out.extend_from_slice(b);
    }
    Ok(out)
}

/// The JSON part and the payloads of a body made by [`encode`]; the
/// payloads share `body`'s memory.
pub(super) fn decode(body: Bytes) -> Result<(Bytes, Vec<Bytes>), String> {
    let mut rest = body;
    let json_len = take_u32(&mut rest, "JSON length")?;
    let json = take(&mut rest, json_len, "JSON")?;
    let count = take_u32(&mut rest, "payload count")?;
    // Each payload needs at least its length field: a count the body
    // cannot hold is refused before anything is allocated for it.
    if count > rest.len() / 4 {
        return Err(format!("{count} payloads cannot fit in {} bytes", rest.len()));
    }
    let mut blobs = Vec::with_capacity(count);
    for _ in 0..count {
        let len = take_u32(&mut rest, "payload length")?;
        blobs.push(take(&mut rest, len, "payload")?);
    }
    if !rest.is_empty() {
        return Err(format!("{} bytes after the last payload", rest.len()));
    }
    Ok((json, blobs))
}

fn take_u32(rest: &mut Bytes, what: &str) -> Result<usize, String> {
    if rest.len() < 4 {
        return Err(format!("binary peer body cut in its {what}"));
    }
    Ok(rest.get_u32() as usize)
}

fn take(rest: &mut Bytes, len: usize, what: &str) -> Result<Bytes, String> {
    if rest.len() < len {
        return Err(format!("binary peer body cut in its {what} ({len} bytes, {} left)", rest.len()));
    }
    Ok(rest.split_to(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_and_every_cut_or_garbled_one_is_an_error() {
        let blobs = [Bytes::from_static(b"first"), Bytes::new(), Bytes::from(vec![7u8; 300])];
        let body = encode(&serde_json::json!({"a": [1, 2]}), &blobs).unwrap();
        let (json, back) = decode(Bytes::from(body.clone())).unwrap();
        assert_eq!(&json[..], br#"{"a":[1,2]}"#);
        assert_eq!(back, blobs);
        // Every truncation, and a trailing byte, is refused.
        for cut in 0..body.len() {
            assert!(decode(Bytes::copy_from_slice(&body[..cut])).is_err(), "cut at {cut}");
        }
        let mut longer = body.clone();
        longer.push(0);
        assert!(decode(Bytes::from(longer)).is_err());
        // Lengths pointing past the end (or a count far too large) are
        // errors, not panics or huge allocations.
        for at in [0usize, 15, 19, 28] {
            let mut bad = body.clone();
            bad[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
            assert!(decode(Bytes::from(bad)).is_err(), "u32::MAX at {at}");
        }
        // Garbled bytes anywhere: an error or a body of the same length
        // cut differently, never a panic.
        for bad in crate::transport::garbled(&body, 0x9e37_79b9, 2000) {
            let _ = decode(Bytes::from(bad));
        }
    }
}
