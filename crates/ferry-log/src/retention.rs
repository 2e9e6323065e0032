//! Removing data: retention by time and size, prefix truncation
//! (DeleteRecords) and suffix truncation (replica divergence).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::error::{LogError, Result};
use crate::log::Log;
use ferry_util::sync::{lock, write};

use crate::segment::{Segment, read_header, rel};

impl Log {
    /// Deletes closed segments past `retention.ms` (by their largest
    /// timestamp) or beyond `retention.bytes`, oldest first, and advances
    /// the log start. Never touches the active segment. Returns how many
    /// segments went.
    pub fn enforce_retention(&self, now_ms: u64) -> Result<usize> {
        let _m = lock(&self.maintenance);
        let config = self.config();
        if !config.cleanup_policy.delete {
            return Ok(0);
        }
        let segments = self.segment_list();
        let mut total: u64 = segments.iter().map(|s| s.size()).sum();
        let mut doomed = Vec::new();
        for seg in segments.iter().filter(|s| !s.is_active()) {
            let by_size = config.retention_bytes.is_some_and(|limit| total - seg.size() >= limit);
            let by_time = match config.retention_ms {
                Some(ms) => {
                    let ts = seg.max_timestamp(&self.env.cache)?;
                    // Batches without timestamps: age by file modification time.
                    let ts = if ts >= 0 { ts as u64 } else { mtime_ms(seg) };
                    ts.saturating_add(ms) < now_ms
                }
                None => false,
            };
            if !(by_size || by_time) {
                break;
            }
            total -= seg.size();
            doomed.push(seg.clone());
        }
        let n = doomed.len();
        self.delete_segments(doomed)?;
        Ok(n)
    }

    /// Makes offsets below `offset` unreadable (Kafka's DeleteRecords) and
    /// deletes segments wholly below it. `offset` may not pass the high
    /// watermark. Durable when this returns.
    pub fn delete_records_before(&self, offset: u64) -> Result<u64> {
        let _m = lock(&self.maintenance);
        let hw = self.high_watermark();
        if offset > hw {
            return Err(LogError::OffsetOutOfRange { offset, start: self.log_start_offset(), end: hw });
        }
        if offset <= self.log_start_offset() {
            return Ok(self.log_start_offset());
        }
        self.start.fetch_max(offset, Ordering::AcqRel);
        self.aborted.prune_before(offset)?;
        self.epochs.truncate_from_start(self.log_start_offset())?;
        let segments = self.segment_list();
        let doomed: Vec<_> =
            segments.windows(2).filter(|w| w[1].base <= offset && !w[0].is_active()).map(|w| w[0].clone()).collect();
        self.delete_segments(doomed)?;
        self.write_checkpoint(lock(&self.flush), true)?;
        Ok(self.log_start_offset())
    }

    fn delete_segments(&self, doomed: Vec<Arc<Segment>>) -> Result<()> {
        if doomed.is_empty() {
            return Ok(());
        }
        {
            let mut segs = write(&self.segments);
            for seg in &doomed {
                segs.remove(&seg.base);
            }
            if let Some((&first, _)) = segs.iter().next() {
                self.start.fetch_max(first, Ordering::AcqRel);
            }
        }
        self.aborted.prune_before(self.log_start_offset())?;
        self.epochs.truncate_from_start(self.log_start_offset())?;
        for seg in &doomed {
            // In-flight readers keep the unlinked file open until they finish.
            let _ = seg.retire(&self.env.cache);
            seg.delete_files();
        }
        lock(&self.writer).dir_dirty = true;
        self.write_checkpoint(lock(&self.flush), true)
    }

    /// Removes every record at or after `offset`. A batch straddling
    /// `offset` goes whole (batches are atomic), so the new log end is
    /// `offset` or the base of that batch, whichever is lower. An `offset`
    /// at or before the first segment empties the log and restarts it there
    /// (Kafka's truncateFullyAndStartAt). Returns the new log end offset.
    pub fn truncate_to(self: &Arc<Self>, offset: u64) -> Result<u64> {
        let _m = lock(&self.maintenance);
        let mut fs = lock(&self.flush);
        let mut w = lock(&self.writer);
        if offset >= w.leo {
            // No record goes, but an epoch that starts at the log end (a
            // leader that recorded its epoch and appended nothing before it
            // was deposed) does: else a follower asking the leader about
            // its latest epoch would ask about that one forever (Kafka's
            // truncateTo trims the epoch cache the same way).
            self.epochs.truncate_from_end(w.leo)?;
            return Ok(w.leo);
        }
        let cache = &self.env.cache;
        let segments = self.segment_list();
        let first_base = segments.first().map_or(0, |s| s.base);
        let (keep, removed): (Vec<_>, Vec<_>) =
            segments.into_iter().partition(|s| s.base < offset && offset > first_base);
        {
            let mut segs = write(&self.segments);
            for seg in &removed {
                segs.remove(&seg.base);
            }
        }
        for seg in &removed {
            let _ = seg.retire(cache);
            seg.delete_files();
        }
        // `natural` is where the kept batches end, when known: if the new end
        // lies past it (compaction emptied the range), a fresh segment starts
        // at the new end so that the end survives a restart in its file name.
        let (target, pos, end, natural) = match keep.last() {
            Some(target) => {
                let file = target.file(cache)?;
                let size = target.size();
                let mut pos = u64::from(target.with_indexes(cache, |ix| ix.lookup(rel(target.base, offset)))?.pos);
                let mut natural = (pos == 0).then_some(target.base);
                let mut end = offset;
                while let Some(h) = read_header(&file, pos, size)? {
                    if h.last_offset() >= offset {
                        end = h.base_offset.min(offset);
                        break;
                    }
                    natural = Some(h.next_offset());
                    pos += h.size as u64;
                }
                (target.clone(), pos, end, natural)
            }
            None => (Arc::new(Segment::create(&self.dir, offset)?), 0, offset, Some(offset)),
        };
        write(&self.segments).insert(target.base, target.clone());
        w.rolled.retain(|s| !removed.iter().any(|d| Arc::ptr_eq(s, d)) && !Arc::ptr_eq(s, &target));
        target.truncate(cache, pos, end)?;
        let target = if natural == Some(end) {
            target.set_active(true);
            target
        } else {
            target.seal();
            target.persist_indexes(true)?;
            let fresh = Arc::new(Segment::create(&self.dir, end)?);
            fresh.set_active(true);
            write(&self.segments).insert(end, fresh.clone());
            fresh
        };
        let pos = if target.base == end { 0 } else { pos };
        w.active = target.clone();
        w.leo = end;
        w.dir_dirty = true;
        self.leo.store(end, Ordering::Release);
        self.hw.fetch_min(end, Ordering::AcqRel);
        self.durable.fetch_min(end, Ordering::AcqRel);
        self.announced.fetch_min(end, Ordering::AcqRel);
        self.start.fetch_min(end, Ordering::AcqRel);
        if keep.is_empty() {
            self.start.store(end, Ordering::Release);
        }
        self.aborted.truncate(end)?;
        self.epochs.truncate_from_end(end)?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        fs.durable_pos = (target.base, pos);
        drop(w);
        self.write_checkpoint(fs, true)?;
        Ok(end)
    }
}

impl Log {
    /// Empties the log and starts it again at `offset`, which may lie past
    /// the log end (Kafka's truncateFullyAndStartAt): a follower whose log
    /// ends below its leader's log start (retention or DeleteRecords
    /// removed what it would fetch next) can only continue from there.
    /// Every segment, aborted transaction and leader epoch goes; durable
    /// on return.
    pub fn restart_at(self: &Arc<Self>, offset: u64) -> Result<()> {
        let maintenance = lock(&self.maintenance);
        let mut fs = lock(&self.flush);
        let mut w = lock(&self.writer);
        let removed: Vec<Arc<Segment>> = std::mem::take(&mut *write(&self.segments)).into_values().collect();
        for seg in &removed {
            // In-flight readers keep the unlinked files open until they finish.
            let _ = seg.retire(&self.env.cache);
            seg.delete_files();
        }
        let fresh = match Segment::create(&self.dir, offset) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                self.failed.store(true, Ordering::Release);
                return Err(e);
            }
        };
        fresh.set_active(true);
        write(&self.segments).insert(offset, fresh.clone());
        w.active = fresh;
        w.rolled.clear();
        w.leo = offset;
        w.dir_dirty = true;
        w.unflushed_records = 0;
        self.leo.store(offset, Ordering::Release);
        self.hw.store(offset, Ordering::Release);
        self.durable.store(offset, Ordering::Release);
        self.announced.store(offset, Ordering::Release);
        self.start.store(offset, Ordering::Release);
        self.dirty_since.store(0, Ordering::Relaxed);
        self.aborted.prune_before(u64::MAX)?;
        self.epochs.truncate_from_end(0)?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        fs.durable_pos = (offset, 0);
        drop(w);
        self.write_checkpoint(fs, true)?;
        drop(maintenance);
        self.hw_advanced();
        Ok(())
    }
}

fn mtime_ms(seg: &Segment) -> u64 {
    std::fs::metadata(seg.log_path())
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}
