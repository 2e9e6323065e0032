//! A stream's entries in its partition: encoding an entry as a record,
//! reading entries back in id order, finding where an id is.

use bytes::Bytes;
use ferry_broker::bridge::read_committed;
use ferry_broker::stored::StoredRecord;
use ferry_broker::{BrokerError, Partition};

use super::id::{ID_HEADER, StreamId};

/// Bytes asked of the log per read.
const READ_BYTES: usize = 256 * 1024;

/// One entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Its record's offset.
    pub offset: u64,
    /// Its id.
    pub id: StreamId,
    /// Field-value pairs, in order.
    pub fields: Vec<(Bytes, Bytes)>,
}

/// The record XADD appends: `redis-id` first, then the fields as headers
/// (field names are text), the value a JSON object of the fields for Kafka
/// readers that only look at values (non-UTF-8 bytes shown lossily).
pub fn to_record(id: StreamId, fields: &[(String, Bytes)], now_ms: i64) -> StoredRecord {
    let mut headers = Vec::with_capacity(fields.len() + 1);
    headers.push((ID_HEADER.to_string(), id.to_string().into_bytes()));
    let mut json = serde_json::Map::new();
    for (f, v) in fields {
        headers.push((f.clone(), v.to_vec()));
        json.insert(f.clone(), serde_json::Value::String(String::from_utf8_lossy(v).into_owned()));
    }
    let value = serde_json::to_vec(&json).unwrap_or_default();
    StoredRecord { key: None, value: Some(value), headers, timestamp: now_ms }
}

/// An entry from a record: ours by its `redis-id`; another protocol's as
/// `<timestamp>-<offset>` with fields `key` (if any), `value` (if any) and
/// its headers.
pub fn from_record(offset: u64, r: StoredRecord) -> Entry {
    let mut headers = r.headers.into_iter().peekable();
    if let Some((name, v)) = headers.peek()
        && name == ID_HEADER
        && let Some(id) = StreamId::parse(v, 0)
    {
        headers.next();
        let fields = headers.map(|(k, v)| (Bytes::from(k), Bytes::from(v))).collect();
        return Entry { offset, id, fields };
    }
    let mut fields = Vec::new();
    if let Some(k) = r.key {
        fields.push((Bytes::from_static(b"key"), Bytes::from(k)));
    }
    if let Some(v) = r.value {
        fields.push((Bytes::from_static(b"value"), Bytes::from(v)));
    }
    fields.extend(headers.map(|(k, v)| (Bytes::from(k), Bytes::from(v))));
    Entry { offset, id: StreamId { ms: r.timestamp.max(0) as u64, seq: offset }, fields }
}

/// Entries from offset `from` on, in log order, while `keep` says go on
/// (false stops), at most `count`. Stops at the last stable offset.
pub fn scan(
    p: &Partition,
    from: u64,
    count: usize,
    keep: impl FnMut(&Entry) -> Keep,
) -> Result<Vec<Entry>, BrokerError> {
    scan_reading(p, from, count, READ_BYTES, keep)
}

/// [`scan`] asking the log for about `bytes` per read (at least a batch).
fn scan_reading(
    p: &Partition,
    mut from: u64,
    count: usize,
    bytes: usize,
    mut keep: impl FnMut(&Entry) -> Keep,
) -> Result<Vec<Entry>, BrokerError> {
    let mut out = Vec::new();
    while out.len() < count {
        let Some(read) = read_committed(p, from, bytes)? else { break };
        for (off, r) in read.records {
            let e = from_record(off, r);
            match keep(&e) {
                Keep::Take => out.push(e),
                Keep::Skip => {}
                Keep::Stop => return Ok(out),
            }
            if out.len() >= count {
                return Ok(out);
            }
        }
        from = read.next;
    }
    Ok(out)
}

/// What [`scan`] does with an entry.
pub enum Keep {
    /// Return it.
    Take,
    /// Pass over it.
    Skip,
    /// End the scan before it.
    Stop,
}

/// The entry at or after `offset` (the first readable one).
pub fn entry_at(p: &Partition, offset: u64) -> Result<Option<Entry>, BrokerError> {
    // One batch is enough: a binary search probes many offsets.
    Ok(scan_reading(p, offset, 1, 1, |_| Keep::Take)?.pop())
}

/// The first offset whose entry's id is >= `id` (the high watermark if
/// none): a binary search, the log being sorted by id.
pub fn seek(p: &Partition, id: StreamId) -> Result<u64, BrokerError> {
    let (mut lo, mut hi) = (p.log_start_offset(), p.last_stable_offset());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match entry_at(p, mid)? {
            Some(e) if e.offset < hi => {
                if e.id < id {
                    lo = e.offset + 1;
                } else {
                    hi = mid;
                }
            }
            // Nothing readable in [mid, hi): the answer is below mid.
            _ => hi = mid,
        }
    }
    Ok(lo)
}

/// The last entry (`None` for an empty stream).
pub fn last_entry(p: &Partition) -> Result<Option<Entry>, BrokerError> {
    let end = p.last_stable_offset();
    let start = p.log_start_offset();
    for back in [1u64, 64, 4096, u64::MAX] {
        let from = end.saturating_sub(back).max(start);
        if let Some(e) = scan(p, from, usize::MAX, |_| Keep::Take)?.pop() {
            return Ok(Some(e));
        }
        if from == start {
            break;
        }
    }
    Ok(None)
}

/// Entries with ids in `[start, end]` in reverse order, at most `count`.
pub fn scan_back(p: &Partition, start: StreamId, end: StreamId, count: usize) -> Result<Vec<Entry>, BrokerError> {
    let floor = seek(p, start)?;
    let mut top = match end.next() {
        Some(after) => seek(p, after)?,
        None => p.last_stable_offset(),
    };
    let mut out: Vec<Entry> = Vec::new();
    let mut window = 64u64;
    while top > floor && out.len() < count {
        let from = top.saturating_sub(window).max(floor);
        let mut chunk = scan(p, from, usize::MAX, |e| if e.offset < top { Keep::Take } else { Keep::Stop })?;
        chunk.retain(|e| e.id >= start && e.id <= end);
        while let Some(e) = chunk.pop() {
            if out.len() >= count {
                break;
            }
            out.push(e);
        }
        top = from;
        window = window.saturating_mul(2);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ferry_broker::{Acks, BrokerConfig};

    use super::*;

    fn id(ms: u64, seq: u64) -> StreamId {
        StreamId { ms, seq }
    }

    /// A stream of 300 entries with ids 10-0, 10-1, 20-0, 20-1, ... (two per ms).
    async fn stream(dir: &std::path::Path) -> (std::sync::Arc<ferry_broker::Broker>, std::sync::Arc<Partition>) {
        let b =
            ferry_broker::testing::open(BrokerConfig { data_dir: dir.to_path_buf(), ..Default::default() }).unwrap();
        b.create_topic("s", Some(1), &BTreeMap::new(), false).await.unwrap();
        let p = b.topic("s").unwrap().partition(0).unwrap();
        for i in 0..300u64 {
            let e = id(10 * (i / 2 + 1), i % 2);
            let batch = ferry_broker::stored::encode_batch(&[to_record(
                e,
                &[("n".to_string(), Bytes::from(i.to_string()))],
                ferry_util::time::now_ms(),
            )])
            .unwrap();
            p.append(&batch, Acks::All).unwrap().acknowledged().await.unwrap();
        }
        (b, p)
    }

    #[tokio::test]
    async fn entries_round_trip_and_ids_are_found_by_search() {
        let dir = tempfile::tempdir().unwrap();
        let (_b, p) = stream(dir.path()).await;
        let first = entry_at(&p, 0).unwrap().unwrap();
        assert_eq!((first.id, first.fields.clone()), (id(10, 0), vec![(Bytes::from("n"), Bytes::from("0"))]));
        assert_eq!(seek(&p, StreamId::MIN).unwrap(), 0);
        assert_eq!(seek(&p, id(10, 1)).unwrap(), 1);
        assert_eq!(seek(&p, id(10, 2)).unwrap(), 2, "between ids: the next one");
        assert_eq!(seek(&p, id(750, 0)).unwrap(), 148);
        assert_eq!(seek(&p, id(1500, 1)).unwrap(), 299);
        assert_eq!(seek(&p, StreamId::MAX).unwrap(), 300);
        assert_eq!(last_entry(&p).unwrap().unwrap().id, id(1500, 1));
    }

    #[tokio::test]
    async fn backward_scans_cross_their_growing_windows() {
        let dir = tempfile::tempdir().unwrap();
        let (_b, p) = stream(dir.path()).await;
        let got = scan_back(&p, StreamId::MIN, StreamId::MAX, 250).unwrap();
        assert_eq!(got.len(), 250);
        assert!(got.windows(2).all(|w| w[0].id > w[1].id), "newest first, no repeats");
        assert_eq!(got[0].id, id(1500, 1));
        assert_eq!(got[249].offset, 50);
        let mid = scan_back(&p, id(100, 0), id(200, 0), usize::MAX).unwrap();
        assert_eq!(mid.iter().map(|e| e.offset).collect::<Vec<_>>(), (18..=38).rev().collect::<Vec<_>>());
        assert!(scan_back(&p, id(5, 0), id(9, 0), 10).unwrap().is_empty());
        let forward = scan(&p, 10, 3, |e| if e.offset % 2 == 0 { Keep::Take } else { Keep::Skip }).unwrap();
        assert_eq!(forward.iter().map(|e| e.offset).collect::<Vec<_>>(), [10, 12, 14]);
    }

    #[test]
    fn records_of_other_protocols_are_entries() {
        let r = StoredRecord {
            key: Some(b"k".to_vec()),
            value: Some(b"v".to_vec()),
            headers: vec![("h".into(), b"x".to_vec())],
            timestamp: 1234,
        };
        let e = from_record(7, r);
        assert_eq!(e.id, id(1234, 7));
        let names: Vec<&[u8]> = e.fields.iter().map(|(f, _)| f.as_ref()).collect();
        assert_eq!(names, [&b"key"[..], b"value", b"h"]);
    }
}
