//! Reading what a Kafka consumer in `read_committed` mode would see of a
//! partition: the bridges hand nothing else to another protocol.

use ferry_records::batch;

use crate::error::{BrokerError, Result};
use crate::partition::Partition;
use crate::stored::{StoredRecord, decode_batch};

/// One [`read_committed`].
#[derive(Debug)]
pub struct Committed {
    /// The committed records read, with their offsets, in offset order.
    pub records: Vec<(u64, StoredRecord)>,
    /// Where the next read starts: past every batch this one covered,
    /// including control batches and aborted ones it skipped.
    pub next: u64,
}

/// Reads the committed records of `p` from offset `from` (at least the log
/// start), about `max_bytes` of batches (at least one batch): only below the
/// last stable offset, skipping control batches (transaction markers) and
/// batches of aborted transactions. `None` once `from` reaches the last
/// stable offset. A batch that does not decode is an error unless records
/// before it were read; the next read then starts at it.
pub fn read_committed(p: &Partition, from: u64, max_bytes: usize) -> Result<Option<Committed>> {
    let from = from.max(p.log_start_offset());
    let lso = p.last_stable_offset();
    if from >= lso {
        return Ok(None);
    }
    let Some(slice) = p.read_committed(from, max_bytes, lso)? else { return Ok(None) };
    let bytes = slice.to_vec()?;
    let batches = batch::split(&bytes)?;
    let no_batch = || BrokerError::InvalidRecord(format!("no batch at offset {from} of {}-{}", p.topic, p.index));
    let end = batches.last().map(|(h, _)| h.next_offset()).ok_or_else(no_batch)?;
    let aborted = p.aborted_txns(from, end);
    let mut read = Committed { records: Vec::new(), next: from };
    for (h, b) in batches {
        if h.next_offset() <= read.next {
            continue;
        }
        if !h.is_control() && !aborted.iter().any(|a| a.covers(&h)) {
            match decode_batch(&h, b) {
                Ok(records) => read.records.extend(records.into_iter().filter(|(offset, _)| *offset >= from)),
                Err(e) if read.next == from => return Err(e),
                Err(_) => break,
            }
        }
        read.next = h.next_offset();
    }
    // Every read moves on, or callers would loop.
    if read.next == from {
        return Err(no_batch());
    }
    Ok(Some(read))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ferry_records::compression::Compression;
    use ferry_records::records::{NewRecord, build_batch};

    use super::*;
    use crate::{Acks, BrokerConfig};

    /// A batch of one record; `txn` = (producer id, base sequence) makes it
    /// transactional.
    fn batch(value: &str, txn: Option<(i64, i32)>) -> Vec<u8> {
        let r = NewRecord { key: None, value: Some(value.as_bytes()), headers: vec![], timestamp: 1_700_000_000_000 };
        let Some((pid, seq)) = txn else { return build_batch(&[r], Compression::None, -1, -1, -1).unwrap() };
        let mut b = build_batch(&[r], Compression::None, pid, 0, seq).unwrap();
        // Sets the transactional attribute (bit 4 of the attributes at byte
        // 21) and re-signs: the CRC at byte 17 covers byte 21 to the end.
        b[22] |= 1 << 4;
        let crc = batch::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn values(read: &Committed) -> Vec<(u64, String)> {
        read.records
            .iter()
            .map(|(o, r)| (*o, String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()))
            .collect()
    }

    #[tokio::test]
    async fn reads_stop_at_the_lso_and_skip_markers_and_aborted_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let b =
            crate::testing::open(BrokerConfig { data_dir: dir.path().to_path_buf(), ..Default::default() }).unwrap();
        b.create_topic("t", Some(1), &BTreeMap::new(), false).await.unwrap();
        let p = b.topic("t").unwrap().partition(0).unwrap();
        let append = |bytes: Vec<u8>| {
            let p = p.clone();
            async move { p.append(&bytes, Acks::All).unwrap().acknowledged().await.unwrap() }
        };
        append(batch("a", None)).await; // 0
        append(batch("aborted", Some((7, 0)))).await; // 1: an open transaction
        append(batch("b", None)).await; // 2
        let read = read_committed(&p, 0, 1 << 20).unwrap().unwrap();
        assert_eq!((values(&read), read.next), (vec![(0, "a".into())], 1), "stops at the open transaction");
        assert!(read_committed(&p, 1, 1 << 20).unwrap().is_none());

        p.write_marker(7, 0, false, 0).unwrap(); // 3: abort
        append(batch("committed", Some((7, 1)))).await; // 4
        p.write_marker(7, 0, true, 0).unwrap(); // 5: commit
        let read = read_committed(&p, 1, 1 << 20).unwrap().unwrap();
        assert_eq!(values(&read), vec![(2, "b".into()), (4, "committed".into())]);
        assert_eq!(read.next, 6);
        assert!(read_committed(&p, 6, 1 << 20).unwrap().is_none());
        // From inside nothing: a read starting at a marker moves past it.
        let read = read_committed(&p, 5, 1 << 20).unwrap().unwrap();
        assert_eq!((values(&read), read.next), (vec![], 6));
    }
}
