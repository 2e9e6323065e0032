//! The aborted-transaction index: which offset ranges of which producers
//! belong to aborted transactions, so `read_committed` readers can skip them
//! (Kafka's `.txnindex`).
//!
//! The log only stores entries; the broker decides what was aborted. One
//! file per log (`aborted.txnindex`) rather than one per segment: entries
//! are few and tiny, and offsets never change under compaction, so a single
//! file needs no rewriting when the cleaner merges segments. Retention and
//! truncation drop the entries that fall outside the log. Entries are fixed
//! 28-byte records (producer id, first offset, last offset, CRC-32C), kept
//! in `last_offset` order; a torn or zero-filled tail fails its CRC and is
//! ignored on load.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use crate::error::Result;
use ferry_util::sync::{lock, read, write};

const FILE: &str = "aborted.txnindex";
const ENTRY_LEN: usize = 28;

/// The offsets `first_offset..=last_offset` of `producer_id` were aborted;
/// `last_offset` is the offset of the abort marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    /// The transactional producer whose records were aborted.
    pub producer_id: i64,
    /// Offset of the transaction's first record.
    pub first_offset: u64,
    /// Offset of the abort marker.
    pub last_offset: u64,
}

impl AbortedTxn {
    /// Whether the batch with header `h` belongs to this aborted transaction.
    pub fn covers(&self, h: &ferry_records::batch::BatchHeader) -> bool {
        h.is_transactional()
            && h.producer_id == self.producer_id
            && (self.first_offset..=self.last_offset).contains(&h.base_offset)
    }

    fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut b = [0u8; ENTRY_LEN];
        b[..8].copy_from_slice(&self.producer_id.to_be_bytes());
        b[8..16].copy_from_slice(&self.first_offset.to_be_bytes());
        b[16..24].copy_from_slice(&self.last_offset.to_be_bytes());
        let crc = ferry_records::batch::crc32c(&b[..24]);
        b[24..].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<AbortedTxn> {
        let word = |i: usize| b.get(i..i + 8).and_then(|s| <[u8; 8]>::try_from(s).ok());
        let crc = u32::from_be_bytes(b.get(24..28)?.try_into().ok()?);
        if crc != ferry_records::batch::crc32c(b.get(..24)?) {
            return None;
        }
        Some(AbortedTxn {
            producer_id: i64::from_be_bytes(word(0)?),
            first_offset: u64::from_be_bytes(word(8)?),
            last_offset: u64::from_be_bytes(word(16)?),
        })
    }
}

pub(crate) struct TxnIndex {
    path: PathBuf,
    entries: RwLock<Vec<AbortedTxn>>,
    /// Serialises file writes.
    file: Mutex<()>,
}

impl TxnIndex {
    /// Loads the valid entries below `end` (the log end after recovery) and
    /// at or past `start`, rewriting the file if it held anything else.
    pub(crate) fn open(dir: &Path, start: u64, end: u64) -> Result<TxnIndex> {
        let path = dir.join(FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let mut entries = Vec::with_capacity(bytes.len() / ENTRY_LEN);
        for chunk in bytes.chunks(ENTRY_LEN) {
            let Some(e) = AbortedTxn::decode(chunk) else { break };
            if entries.last().is_some_and(|p: &AbortedTxn| p.last_offset >= e.last_offset) {
                break;
            }
            entries.push(e);
        }
        let valid = entries.len() * ENTRY_LEN;
        entries.retain(|e| e.last_offset < end);
        let index = TxnIndex { path, entries: RwLock::new(Vec::new()), file: Mutex::new(()) };
        let dropped = entries.len() * ENTRY_LEN != valid || valid != bytes.len();
        let pruned = entries.iter().any(|e| e.last_offset < start);
        entries.retain(|e| e.last_offset >= start);
        *write(&index.entries) = entries;
        if dropped || pruned {
            index.rewrite()?;
        }
        Ok(index)
    }

    /// Adds an entry; one at or before the newest entry's marker is already
    /// there (recovery replays markers) and is ignored. Durable on return.
    pub(crate) fn add(&self, entry: AbortedTxn) -> Result<()> {
        let _f = lock(&self.file);
        if read(&self.entries).last().is_some_and(|l| l.last_offset >= entry.last_offset) {
            return Ok(());
        }
        let mut f = OpenOptions::new().create(true).append(true).open(&self.path)?;
        f.write_all(&entry.encode())?;
        f.sync_data()?;
        write(&self.entries).push(entry);
        Ok(())
    }

    /// Entries that may cover offsets in `from..upto`.
    pub(crate) fn overlapping(&self, from: u64, upto: u64) -> Vec<AbortedTxn> {
        let entries = read(&self.entries);
        let first = entries.partition_point(|e| e.last_offset < from);
        entries[first..].iter().filter(|e| e.first_offset < upto).copied().collect()
    }

    /// Drops entries whose marker is below `start` (retention, DeleteRecords).
    pub(crate) fn prune_before(&self, start: u64) -> Result<()> {
        let _f = lock(&self.file);
        if read(&self.entries).first().is_none_or(|e| e.last_offset >= start) {
            return Ok(());
        }
        write(&self.entries).retain(|e| e.last_offset >= start);
        self.rewrite()
    }

    /// Drops entries whose marker is at or past `end` (suffix truncation).
    pub(crate) fn truncate(&self, end: u64) -> Result<()> {
        let _f = lock(&self.file);
        if read(&self.entries).last().is_none_or(|e| e.last_offset < end) {
            return Ok(());
        }
        write(&self.entries).retain(|e| e.last_offset < end);
        self.rewrite()
    }

    pub(crate) fn len(&self) -> usize {
        read(&self.entries).len()
    }

    /// Replaces the file with the in-memory entries (write, fsync, rename).
    fn rewrite(&self) -> Result<()> {
        let bytes: Vec<u8> = read(&self.entries).iter().flat_map(AbortedTxn::encode).collect();
        if bytes.is_empty() {
            return match fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            };
        }
        Ok(ferry_util::fs::write_atomic(&self.path, &bytes, true)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(pid: i64, first: u64, last: u64) -> AbortedTxn {
        AbortedTxn { producer_id: pid, first_offset: first, last_offset: last }
    }

    #[test]
    fn entries_survive_reopen_and_are_bounded_by_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let ix = TxnIndex::open(dir.path(), 0, 100).unwrap();
        ix.add(e(1, 0, 5)).unwrap();
        ix.add(e(2, 3, 9)).unwrap();
        ix.add(e(2, 3, 9)).unwrap(); // replayed by recovery: ignored
        ix.add(e(1, 20, 30)).unwrap();
        assert_eq!(ix.overlapping(6, 21), vec![e(2, 3, 9), e(1, 20, 30)]);
        assert_eq!(ix.overlapping(10, 20), vec![]);
        drop(ix);

        // The log lost offsets from 25 on in a crash: the last entry goes.
        let ix = TxnIndex::open(dir.path(), 0, 25).unwrap();
        assert_eq!(ix.overlapping(0, u64::MAX), vec![e(1, 0, 5), e(2, 3, 9)]);
        ix.prune_before(6).unwrap();
        assert_eq!(ix.overlapping(0, u64::MAX), vec![e(2, 3, 9)]);
        ix.truncate(9).unwrap();
        assert_eq!(ix.len(), 0);
        assert!(!dir.path().join(FILE).exists());
    }

    #[test]
    fn a_torn_or_zeroed_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let ix = TxnIndex::open(dir.path(), 0, 100).unwrap();
        ix.add(e(1, 0, 5)).unwrap();
        ix.add(e(1, 7, 8)).unwrap();
        drop(ix);
        let path = dir.path().join(FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes.truncate(ENTRY_LEN + 10);
        bytes.extend_from_slice(&[0u8; 64]);
        fs::write(&path, &bytes).unwrap();
        let ix = TxnIndex::open(dir.path(), 0, 100).unwrap();
        assert_eq!(ix.overlapping(0, 100), vec![e(1, 0, 5)]);
        assert_eq!(fs::read(&path).unwrap().len(), ENTRY_LEN);
        ix.add(e(3, 10, 12)).unwrap();
        drop(ix);
        let ix = TxnIndex::open(dir.path(), 0, 100).unwrap();
        assert_eq!(ix.len(), 2);
    }
}
