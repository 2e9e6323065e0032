//! The compact binary form of a stored record (an MQTT message with its
//! delivery headers), for where a message leaves this node's stores: the
//! cluster metadata (retained messages), a replicated session queue (the
//! queue message's properties) and routing to another node.
//!
//! Layout, big-endian: timestamp i64; key and value each as a u32 length
//! (`u32::MAX`: none) and the bytes; a u32 header count, then per header a
//! u16 name length, the name, a u32 value length, the value.

use ferry_broker::stored::StoredRecord;

/// Encodes `r`.
pub fn pack(r: &StoredRecord) -> Vec<u8> {
    let size = 20 + r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len);
    let mut out = Vec::with_capacity(size + r.headers.iter().map(|(k, v)| 6 + k.len() + v.len()).sum::<usize>());
    out.extend_from_slice(&r.timestamp.to_be_bytes());
    for part in [&r.key, &r.value] {
        match part {
            Some(b) => {
                out.extend_from_slice(&len32(b.len()).to_be_bytes());
                out.extend_from_slice(b);
            }
            None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
        }
    }
    out.extend_from_slice(&len32(r.headers.len()).to_be_bytes());
    for (k, v) in &r.headers {
        let k = &k.as_bytes()[..k.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(k.len() as u16).to_be_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&len32(v.len()).to_be_bytes());
        out.extend_from_slice(v);
    }
    out
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX - 1)
}

/// Decodes [`pack`]'s form; `None` for anything malformed (truncated,
/// lengths past the end, a header name that is not UTF-8, bytes left over).
pub fn unpack(mut b: &[u8]) -> Option<StoredRecord> {
    let timestamp = i64::from_be_bytes(take(&mut b, 8)?.try_into().ok()?);
    let mut parts = [None, None];
    for part in &mut parts {
        let n = u32::from_be_bytes(take(&mut b, 4)?.try_into().ok()?);
        if n != u32::MAX {
            *part = Some(take(&mut b, n as usize)?.to_vec());
        }
    }
    let [key, value] = parts;
    let count = u32::from_be_bytes(take(&mut b, 4)?.try_into().ok()?);
    let mut headers = Vec::with_capacity((count as usize).min(b.len() / 6));
    for _ in 0..count {
        let n = u16::from_be_bytes(take(&mut b, 2)?.try_into().ok()?);
        let k = String::from_utf8(take(&mut b, n.into())?.to_vec()).ok()?;
        let n = u32::from_be_bytes(take(&mut b, 4)?.try_into().ok()?);
        headers.push((k, take(&mut b, n as usize)?.to_vec()));
    }
    b.is_empty().then_some(StoredRecord { key, value, headers, timestamp })
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Some(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_refused() {
        let r = StoredRecord {
            key: Some(b"a/b".to_vec()),
            value: None,
            headers: vec![("mqtt.qos".into(), vec![2]), ("k".into(), Vec::new()), ("k".into(), b"v".to_vec())],
            timestamp: -5,
        };
        let b = pack(&r);
        assert_eq!(unpack(&b), Some(r.clone()));
        let empty = StoredRecord::default();
        assert_eq!(unpack(&pack(&empty)), Some(empty));
        // Every truncation, and a trailing byte, is refused (never a panic).
        for n in 0..b.len() {
            assert_eq!(unpack(&b[..n]), None, "{n}");
        }
        let mut long = b.clone();
        long.push(0);
        assert_eq!(unpack(&long), None);
        // A length far past the end.
        let mut bad = b;
        bad[8..12].copy_from_slice(&0x7fff_ffffu32.to_be_bytes());
        assert_eq!(unpack(&bad), None);
    }
}
