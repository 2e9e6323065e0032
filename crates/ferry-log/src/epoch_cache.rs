//! The leader epoch cache of one log (Kafka's `leader-epoch-checkpoint`):
//! for each leader epoch that appended to the log, the offset of its first
//! batch. A follower that changes leader asks the new leader where its own
//! last epoch ended (KIP-101, KIP-279) and truncates there, which the high
//! watermark alone cannot tell it.
//!
//! The file is Kafka's text format: a version line `0`, a count line, then
//! `epoch start_offset` per line. It is rewritten (atomically, fsynced)
//! whenever an entry is added or removed, which happens once per leader
//! change, before the batch that carries the new epoch is written: every
//! batch on disk has its epoch in the file, and recovery only has to drop
//! entries past the recovered log end.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use crate::error::Result;
use ferry_util::sync::{read, write};

/// The file's name in the log's directory.
pub const FILE_NAME: &str = "leader-epoch-checkpoint";

/// One epoch and the offset of the first batch it appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    /// The leader epoch.
    pub epoch: i32,
    /// Offset of the first batch written under `epoch`.
    pub start_offset: u64,
}

pub(crate) struct EpochCache {
    path: PathBuf,
    /// Ascending in both epoch and start offset.
    entries: RwLock<Vec<EpochEntry>>,
}

impl EpochCache {
    /// Loads the file, keeping the entries that start below `end` (the log
    /// end after recovery). A missing or unreadable file gives an empty
    /// cache (as a log from before replication has).
    pub(crate) fn open(dir: &Path, end: u64) -> Result<EpochCache> {
        let path = dir.join(FILE_NAME);
        let loaded = std::fs::read_to_string(&path).ok().and_then(|t| parse(&t)).unwrap_or_default();
        let kept: Vec<EpochEntry> = loaded.iter().copied().filter(|e| e.start_offset < end).collect();
        let cache = EpochCache { path, entries: RwLock::new(kept) };
        if cache.entries().len() != loaded.len() {
            cache.persist(&cache.entries())?;
        }
        Ok(cache)
    }

    /// A copy of the entries, oldest first.
    pub(crate) fn entries(&self) -> Vec<EpochEntry> {
        read(&self.entries).clone()
    }

    /// The newest epoch, if any batch carried one.
    pub(crate) fn latest_epoch(&self) -> Option<i32> {
        read(&self.entries).last().map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset`, unless the newest
    /// entry already is `epoch`. Epochs below the newest are ignored (a
    /// stale batch cannot rewrite history). Durable on return.
    pub(crate) fn assign(&self, epoch: i32, start_offset: u64) -> Result<()> {
        if epoch < 0 || self.latest_epoch().is_some_and(|l| l >= epoch) {
            return Ok(());
        }
        let mut entries = write(&self.entries);
        if entries.last().is_some_and(|l| l.epoch >= epoch) {
            return Ok(());
        }
        let mut next = entries.clone();
        next.retain(|e| e.start_offset < start_offset);
        next.push(EpochEntry { epoch, start_offset });
        self.persist(&next)?;
        *entries = next;
        Ok(())
    }

    /// Drops entries starting at or after `end` (the log was truncated to it).
    pub(crate) fn truncate_from_end(&self, end: u64) -> Result<()> {
        let mut entries = write(&self.entries);
        if entries.last().is_none_or(|e| e.start_offset < end) {
            return Ok(());
        }
        let next: Vec<EpochEntry> = entries.iter().copied().filter(|e| e.start_offset < end).collect();
        self.persist(&next)?;
        *entries = next;
        Ok(())
    }

    /// The log now starts at `start`: entries wholly before it go, and the
    /// one covering it starts at `start` (Kafka's truncateFromStart).
    pub(crate) fn truncate_from_start(&self, start: u64) -> Result<()> {
        let mut entries = write(&self.entries);
        let covering = entries.iter().rposition(|e| e.start_offset <= start);
        let Some(i) = covering else { return Ok(()) };
        if i == 0 && entries[0].start_offset == start {
            return Ok(());
        }
        let mut next = entries[i..].to_vec();
        next[0].start_offset = start;
        self.persist(&next)?;
        *entries = next;
        Ok(())
    }

    /// Kafka's `endOffsetFor`: the largest epoch at most `requested` and the
    /// offset where the log moved past `requested` (the start of the first
    /// higher epoch, or `log_end` when `requested` is the newest epoch).
    /// `None` (UNDEFINED) when the cache is empty or `requested` is newer
    /// than every epoch here.
    pub(crate) fn end_offset_for(&self, requested: i32, log_end: u64) -> Option<(i32, u64)> {
        let entries = read(&self.entries);
        let last = entries.last()?;
        if requested < 0 {
            return None;
        }
        if last.epoch == requested {
            return Some((requested, log_end));
        }
        let higher = entries.iter().find(|e| e.epoch > requested)?;
        let floor = entries.iter().rev().find(|e| e.epoch <= requested);
        Some((floor.map_or(requested, |f| f.epoch), higher.start_offset))
    }

    fn persist(&self, entries: &[EpochEntry]) -> Result<()> {
        let mut text = format!("0\n{}\n", entries.len());
        for e in entries {
            text.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        ferry_util::fs::write_atomic(&self.path, text.as_bytes(), true)?;
        Ok(())
    }
}

/// Parses Kafka's checkpoint text; `None` if it is malformed in any way
/// (wrong version, count or order), so a damaged file is never half-used.
fn parse(text: &str) -> Option<Vec<EpochEntry>> {
    let mut lines = text.lines();
    if lines.next()?.trim() != "0" {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    let mut out: Vec<EpochEntry> = Vec::with_capacity(count.min(1024));
    for line in lines.by_ref().take(count) {
        let mut f = line.split_whitespace();
        let epoch: i32 = f.next()?.parse().ok()?;
        let start_offset: u64 = f.next()?.parse().ok()?;
        if f.next().is_some() || epoch < 0 {
            return None;
        }
        if out.last().is_some_and(|l| l.epoch >= epoch || l.start_offset > start_offset) {
            return None;
        }
        out.push(EpochEntry { epoch, start_offset });
    }
    (out.len() == count && lines.all(|l| l.trim().is_empty())).then_some(out)
}

impl crate::Log {
    /// The newest leader epoch that appended to this log.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }

    /// The leader epoch cache, oldest entry first.
    pub fn epoch_entries(&self) -> Vec<EpochEntry> {
        self.epochs.entries()
    }

    /// Records that `epoch` starts at the log end (a new leader does this
    /// as it takes over, before it appends, so a follower that asks about an
    /// older epoch learns where that one ended here). Ignored unless newer
    /// than every epoch here.
    pub fn assign_epoch(&self, epoch: i32) -> crate::Result<()> {
        let w = ferry_util::sync::lock(&self.writer);
        self.epochs.assign(epoch, w.leo)
    }

    /// OffsetsForLeaderEpoch (KIP-101/279): the largest epoch here at most
    /// `epoch`, and the offset after its last record here (the log end for
    /// the newest epoch). `None`: undefined (no epochs, or `epoch` is newer
    /// than any here).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, u64)> {
        // The writer lock keeps the log end and the cache consistent.
        let w = ferry_util::sync::lock(&self.writer);
        self.epochs.end_offset_for(epoch, w.leo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(epoch: i32, start_offset: u64) -> EpochEntry {
        EpochEntry { epoch, start_offset }
    }

    #[test]
    fn assign_persists_and_ignores_stale_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let c = EpochCache::open(dir.path(), 0).unwrap();
        assert_eq!(c.latest_epoch(), None);
        c.assign(1, 0).unwrap();
        c.assign(1, 5).unwrap();
        c.assign(3, 10).unwrap();
        c.assign(2, 12).unwrap();
        assert_eq!(c.entries(), vec![e(1, 0), e(3, 10)]);
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(text, "0\n2\n1 0\n3 10\n");
        let again = EpochCache::open(dir.path(), 20).unwrap();
        assert_eq!(again.entries(), vec![e(1, 0), e(3, 10)]);
        // Reopened below the second epoch's start: it goes, on disk too.
        let cut = EpochCache::open(dir.path(), 10).unwrap();
        assert_eq!(cut.entries(), vec![e(1, 0)]);
        assert_eq!(EpochCache::open(dir.path(), 100).unwrap().entries(), vec![e(1, 0)]);
    }

    #[test]
    fn end_offset_for_follows_kafka() {
        let dir = tempfile::tempdir().unwrap();
        let c = EpochCache::open(dir.path(), 0).unwrap();
        assert_eq!(c.end_offset_for(0, 0), None);
        c.assign(2, 0).unwrap();
        c.assign(4, 10).unwrap();
        c.assign(7, 25).unwrap();
        assert_eq!(c.end_offset_for(7, 40), Some((7, 40)));
        assert_eq!(c.end_offset_for(4, 40), Some((4, 25)));
        assert_eq!(c.end_offset_for(5, 40), Some((4, 25)));
        assert_eq!(c.end_offset_for(3, 40), Some((2, 10)));
        // Older than every epoch here: the first epoch's start, requested epoch.
        assert_eq!(c.end_offset_for(1, 40), Some((1, 0)));
        assert_eq!(c.end_offset_for(8, 40), None);
        assert_eq!(c.end_offset_for(-1, 40), None);
    }

    #[test]
    fn truncation_from_either_end() {
        let dir = tempfile::tempdir().unwrap();
        let c = EpochCache::open(dir.path(), 0).unwrap();
        for (ep, s) in [(1, 0), (2, 10), (3, 20)] {
            c.assign(ep, s).unwrap();
        }
        c.truncate_from_end(20).unwrap();
        assert_eq!(c.entries(), vec![e(1, 0), e(2, 10)]);
        c.truncate_from_start(15).unwrap();
        assert_eq!(c.entries(), vec![e(2, 15)]);
        c.truncate_from_start(5).unwrap();
        assert_eq!(c.entries(), vec![e(2, 15)]);
        c.truncate_from_end(15).unwrap();
        assert_eq!(c.entries(), vec![]);
        assert_eq!(EpochCache::open(dir.path(), 100).unwrap().entries(), vec![]);
    }

    #[test]
    fn damaged_files_are_not_used() {
        for text in ["1\n1\n0 0\n", "0\n2\n1 0\n", "0\n2\n2 0\n1 5\n", "0\n1\n1 x\n", "0\n1\n1 0 9\n", ""] {
            assert_eq!(parse(text), None, "{text:?}");
        }
        assert_eq!(parse("0\n2\n1 0\n2 0\n"), Some(vec![e(1, 0), e(2, 0)]));
    }
}
