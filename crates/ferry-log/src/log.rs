//! One partition's log: an ordered set of segments with one writer.
//!
//! Appends are serialised by the writer lock and only write to the page
//! cache; fsync happens on a flusher thread (group commit) or in
//! [`Log::flush_to`]. Readers take the segment map's read lock just long
//! enough to clone a segment handle, then read with `pread`, so they never
//! wait for a write or an fsync.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::IoSlice;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use crate::checkpoint::Checkpoint;
use crate::config::{FlushPolicy, LogConfig, TimestampType};
use crate::error::{LogError, Result};
use crate::manager::Env;
use ferry_util::sync::{lock, read, write};

use crate::segment::{Segment, read_header, rel};
use crate::txn_index::AbortedTxn;
use ferry_records::batch::{self, HEADER_LEN};

/// Whose offsets and epochs an append writes.
#[derive(Clone, Copy)]
enum Mode {
    /// The log assigns offsets; the epoch, if any, is stamped into each batch.
    Leader(Option<i32>),
    /// The batches keep the leader's offsets and epochs.
    Replica,
}

/// Callback run (on the appending or the flusher thread) when the high
/// watermark advances. Must be quick and must not call back into the log.
pub type HwListener = Arc<dyn Fn() + Send + Sync>;

/// What an append assigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset assigned to the first record appended.
    pub base_offset: u64,
    /// Offset assigned to the last record appended (inclusive).
    pub last_offset: u64,
    /// Largest batch max-timestamp appended (after LogAppendTime patching).
    pub max_timestamp: i64,
    /// The broker time written into the batches, for LogAppendTime logs.
    pub log_append_time: Option<i64>,
    /// Records appended, summed over the batches.
    pub records: u64,
    /// Bytes appended.
    pub bytes: u64,
}

/// A byte range of one segment file holding whole batches, ready for
/// `sendfile` or a copying read.
#[derive(Clone, Debug)]
pub struct ReadSlice {
    /// The segment file the range is in.
    pub file: Arc<File>,
    /// Byte position of the first batch in `file`.
    pub position: u64,
    /// Length of the range in bytes.
    pub len: u64,
    /// The offset after the slice's last batch: where the next read goes on
    /// (exact unless the slice runs to the readable end while a flush
    /// publishes more, when it may lag; fine for counting records out).
    pub end_offset: u64,
}

impl ReadSlice {
    /// Copies the range into memory.
    pub fn to_vec(&self) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; self.len as usize];
        self.file.read_exact_at(&mut buf, self.position)?;
        Ok(buf)
    }
}

pub(crate) struct Writer {
    pub active: Arc<Segment>,
    /// Log end offset: the offset the next record gets.
    pub leo: u64,
    /// Segments rolled since the last flush; they are fsynced by the next one.
    pub rolled: Vec<Arc<Segment>>,
    /// A segment file was created or deleted: the directory needs an fsync.
    pub dir_dirty: bool,
    /// Wall-clock ms at which `segment.ms` rolls the active segment.
    pub roll_at_ms: u64,
    pub unflushed_records: u64,
    /// Set by `close`: no more zeros ahead (`crate::zero_ahead`).
    pub zeros_off: bool,
}

pub(crate) struct FlushState {
    /// Durable position: (segment base, byte position).
    pub durable_pos: (u64, u64),
    /// How this log's flushes have gone lately (`crate::zero_ahead`).
    pub pace: crate::zero_ahead::FlushPace,
}

/// The recovery checkpoint last written. Its own lock, so that writing one
/// (several fsyncs) never holds up the fsyncs that acknowledge appends.
pub(crate) struct CheckpointState {
    pub last: Instant,
    pub written: Option<Checkpoint>,
    /// [`Log::appended`] when `written` was taken.
    pub appended_at: u64,
}

/// One partition's append-only log: a directory of segments with their
/// offset and time indexes. Shared (`Arc`) between one writer at a time and
/// any number of readers; opened through [`crate::LogManager`].
pub struct Log {
    pub(crate) dir: PathBuf,
    pub(crate) config: RwLock<LogConfig>,
    pub(crate) env: Arc<Env>,
    pub(crate) segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    pub(crate) writer: Mutex<Writer>,
    pub(crate) flush: Mutex<FlushState>,
    pub(crate) checkpoint: Mutex<CheckpointState>,
    /// Serialises retention, compaction and truncation.
    pub(crate) maintenance: Mutex<()>,
    pub(crate) start: AtomicU64,
    pub(crate) hw: AtomicU64,
    pub(crate) leo: AtomicU64,
    pub(crate) durable: AtomicU64,
    /// Offsets below this are durable and the high-watermark listener has
    /// been told (it runs on the flusher thread after `durable` moves):
    /// what [`Log::on_durable`] and [`Log::flush_to`] wait for, so a caller
    /// they release sees every effect of the flush (a leader's acks=all
    /// released, a follower's acknowledged end), not just the fsync.
    pub(crate) announced: AtomicU64,
    /// Wall-clock ms of the first append not yet flushed (0: none).
    pub(crate) dirty_since: AtomicU64,
    /// Bytes appended since the log was opened (what the checkpointer
    /// weighs a checkpoint's age against).
    pub(crate) appended: AtomicU64,
    pub(crate) flush_queued: AtomicBool,
    /// Where the last completed compaction pass stopped (an offset).
    pub(crate) compacted_below: AtomicU64,
    /// Wall-clock ms when a kept tombstone expires, forcing another pass.
    pub(crate) recompact_at: AtomicU64,
    /// Called whenever the high watermark advances (long-poll wakeups).
    pub(crate) hw_listener: RwLock<Option<HwListener>>,
    /// Set after a failed write or fsync: the page cache state is unknown,
    /// so the log refuses writes until reopened (and recovered).
    pub(crate) failed: AtomicBool,
    /// Aborted transactions, for `read_committed` readers.
    pub(crate) aborted: crate::txn_index::TxnIndex,
    /// The cleaner leaves segments reaching this offset alone: an open
    /// transaction starts here, and its records may yet be aborted.
    pub(crate) uncleanable_from: AtomicU64,
    /// Where each leader epoch starts (`leader-epoch-checkpoint`).
    pub(crate) epochs: crate::epoch_cache::EpochCache,
}

impl Log {
    /// The directory holding this log's segment files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// First readable offset.
    pub fn log_start_offset(&self) -> u64 {
        self.start.load(Ordering::Acquire)
    }

    /// Offset the next appended record will get.
    pub fn next_offset(&self) -> u64 {
        self.leo.load(Ordering::Acquire)
    }

    /// Readers see offsets below this. Equals [`Log::next_offset`] unless the
    /// flush policy is `Always`, where it is the durable offset: nobody reads
    /// a record that a crash could still take back.
    pub fn high_watermark(&self) -> u64 {
        self.hw.load(Ordering::Acquire)
    }

    /// Offsets below this are on disk.
    pub fn durable_offset(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// The current settings (a copy).
    pub fn config(&self) -> LogConfig {
        read(&self.config).clone()
    }

    /// Changes the log's settings; they apply from the next append, roll or
    /// cleaner pass.
    pub fn set_config(&self, config: LogConfig) {
        let deadline = match config.flush {
            FlushPolicy::Interval { ms, .. } => {
                Some(self.dirty_since.load(Ordering::Relaxed)).filter(|&s| s != 0).map(|s| s.saturating_add(ms))
            }
            _ => None,
        };
        *write(&self.config) = config;
        if let Some(at) = deadline {
            // Dirty data under a new interval: the ticker may sleep past it.
            self.env.ticker.due_at(at);
        }
        // New cleanup settings deserve a fresh compaction pass.
        self.compacted_below.store(u64::MAX, Ordering::Release);
    }

    /// Registers the callback run whenever the high watermark advances.
    pub fn set_hw_listener(&self, listener: HwListener) {
        *write(&self.hw_listener) = Some(listener);
    }

    pub(crate) fn hw_advanced(&self) {
        if let Some(l) = read(&self.hw_listener).as_ref() {
            l();
        }
    }

    /// Bytes on disk across all segments.
    pub fn size_bytes(&self) -> u64 {
        read(&self.segments).values().map(|s| s.size()).sum()
    }

    /// Number of segment files, the active one included.
    pub fn segment_count(&self) -> usize {
        read(&self.segments).len()
    }

    /// Approximate heap bytes held for this log (segments and loaded indexes).
    pub fn heap_bytes(&self) -> usize {
        size_of::<Log>()
            + read(&self.segments).values().map(|s| s.heap_bytes() + 48).sum::<usize>()
            + self.aborted.len() * size_of::<AbortedTxn>()
    }

    /// Appends one or more concatenated v2 batches. The batches are checked
    /// (length, magic, CRC, size limit) before anything is written; a bad
    /// batch leaves the log untouched. Returns once the data is in the page
    /// cache: use [`Log::flush_to`] or [`Log::on_durable`] to wait for disk.
    pub fn append(self: &Arc<Self>, batches: &[u8]) -> Result<AppendInfo> {
        self.append_with(batches, Mode::Leader(None))
    }

    /// [`Log::append`] by a partition leader: each batch's
    /// partitionLeaderEpoch is set to `leader_epoch` (outside the CRC, so
    /// nothing is recomputed) and the epoch cache learns where the epoch
    /// starts, for followers' OffsetsForLeaderEpoch.
    pub fn append_as_leader(self: &Arc<Self>, batches: &[u8], leader_epoch: i32) -> Result<AppendInfo> {
        self.append_with(batches, Mode::Leader(Some(leader_epoch)))
    }

    /// A follower's append: batches copied from the leader keep their
    /// offsets, epochs, timestamps and bytes. Each batch's CRC is checked;
    /// the first must start at or past the log end and each one after the
    /// one before (a compacted leader log has gaps), else
    /// [`LogError::UnexpectedOffset`] and nothing is written. New leader
    /// epochs in the batches go to the epoch cache before the data.
    pub fn append_replicated(self: &Arc<Self>, batches: &[u8]) -> Result<AppendInfo> {
        self.append_with(batches, Mode::Replica)
    }

    fn append_with(self: &Arc<Self>, batches: &[u8], mode: Mode) -> Result<AppendInfo> {
        let parsed = batch::split(batches)?;
        let config = self.config();
        let replica = matches!(mode, Mode::Replica);
        for (h, _) in parsed.iter().filter(|_| !replica) {
            if h.size > config.max_message_bytes {
                return Err(LogError::BatchTooLarge { size: h.size, max: config.max_message_bytes });
            }
        }
        let now = ferry_util::time::now_ms_u64();
        let append_time = (!replica && config.timestamp_type == TimestampType::LogAppendTime).then_some(now as i64);
        let total: u64 = parsed.iter().map(|(h, _)| h.size as u64).sum();
        let span: u64 = parsed.iter().map(|(h, _)| u64::from(h.last_offset_delta) + 1).sum();

        let mut w = lock(&self.writer);
        if self.failed.load(Ordering::Acquire) {
            return Err(LogError::Unavailable(format!("{} failed earlier; reopen to recover", self.dir.display())));
        }
        // Where each batch goes: assigned from the log end, or (replica) its own.
        let mut bases = Vec::with_capacity(parsed.len());
        let mut next = w.leo;
        for (h, _) in &parsed {
            if replica {
                if h.base_offset < next {
                    return Err(LogError::UnexpectedOffset { expected: next, got: h.base_offset });
                }
                next = h.base_offset;
            }
            bases.push(next);
            next += u64::from(h.last_offset_delta) + 1;
        }
        let seg_limit = config.segment_bytes.clamp(HEADER_LEN as u64, i32::MAX as u64);
        let active_size = w.active.size();
        if active_size > 0
            && (active_size + total > seg_limit
                || now >= w.roll_at_ms
                || next.max(w.leo + span) - w.active.base > u64::from(u32::MAX))
        {
            self.roll(&mut w, &config, now)?;
        }
        let epochs: Vec<i32> = match mode {
            Mode::Leader(epoch) => epoch.into_iter().collect(),
            Mode::Replica => parsed.iter().map(|(h, _)| h.partition_leader_epoch).collect(),
        };
        for (&epoch, &base) in epochs.iter().zip(&bases) {
            self.epochs.assign(epoch, base)?;
        }

        let active = w.active.clone();
        let stamp = match mode {
            Mode::Leader(epoch) => epoch,
            Mode::Replica => None,
        };
        let headers: Vec<[u8; HEADER_LEN]> = parsed
            .iter()
            .zip(&bases)
            .filter(|_| !replica)
            .map(|((_, bytes), &base)| batch::patched_header(bytes, base, stamp, append_time))
            .collect();
        let mut slices = Vec::with_capacity(parsed.len() * 2);
        if replica {
            slices.extend(parsed.iter().map(|(_, bytes)| IoSlice::new(bytes)));
        } else {
            for ((_, bytes), header) in parsed.iter().zip(&headers) {
                slices.push(IoSlice::new(header));
                slices.push(IoSlice::new(&bytes[HEADER_LEN..]));
            }
        }
        let new_size = match active.write(&self.env.cache, &mut slices, total) {
            Ok(size) => size,
            Err(e) => {
                self.failed.store(true, Ordering::Release);
                return Err(e);
            }
        };

        let mut pos = active.size();
        let mut max_timestamp = -1;
        active.with_indexes_mut(&self.env.cache, |ix| {
            for ((h, _), &base) in parsed.iter().zip(&bases) {
                let ts = append_time.unwrap_or(h.max_timestamp);
                ix.on_batch(rel(active.base, base), pos as u32, h.size as u64, ts, config.index_interval_bytes);
                max_timestamp = max_timestamp.max(ts);
                pos += h.size as u64;
            }
        })?;
        let info = AppendInfo {
            base_offset: bases.first().copied().unwrap_or(w.leo),
            last_offset: next - 1,
            max_timestamp,
            log_append_time: append_time,
            records: parsed.iter().map(|(h, _)| u64::from(h.records_count)).sum(),
            bytes: total,
        };
        active.commit_write(new_size, next);
        self.appended.fetch_add(total, Ordering::Relaxed);
        w.leo = next;
        self.leo.store(next, Ordering::Release);
        if self.dirty_since.load(Ordering::Relaxed) == 0 {
            self.dirty_since.store(now.max(1), Ordering::Relaxed);
            if let FlushPolicy::Interval { ms, .. } = config.flush {
                self.env.ticker.due_at(now.max(1).saturating_add(ms));
            }
        }
        match config.flush {
            FlushPolicy::Always => self.queue_flush(),
            FlushPolicy::Interval { messages, .. } => {
                active.set_visible(new_size);
                self.hw.store(next, Ordering::Release);
                w.unflushed_records += info.records;
                if w.unflushed_records >= messages {
                    w.unflushed_records = 0;
                    self.queue_flush();
                }
            }
            FlushPolicy::Os => {
                active.set_visible(new_size);
                self.hw.store(next, Ordering::Release);
            }
        }
        drop(w);
        if config.flush != FlushPolicy::Always {
            self.hw_advanced();
        }
        Ok(info)
    }

    /// Closes the active segment and starts a new one at the log end.
    pub(crate) fn roll(self: &Arc<Self>, w: &mut Writer, config: &LogConfig, now: u64) -> Result<()> {
        let old = w.active.clone();
        // Its zeros ahead go before the fsync that the roll queues, so a
        // sealed segment's length is its data.
        old.cut_zero_tail(&self.env.cache)?;
        old.seal();
        let new = Arc::new(Segment::create(&self.dir, w.leo)?);
        new.set_active(true);
        write(&self.segments).insert(w.leo, new.clone());
        w.rolled.push(old);
        w.dir_dirty = true;
        w.active = new;
        w.roll_at_ms = now.saturating_add(config.segment_ms);
        // Every policy fsyncs a rolled segment (Kafka does too), so recovery
        // never has to scan more than the active segment.
        self.queue_flush();
        Ok(())
    }

    /// Asks the flusher to make offsets below `target` durable.
    fn queue_flush(self: &Arc<Self>) {
        if !self.flush_queued.swap(true, Ordering::SeqCst) {
            self.env.flusher.request(self.clone(), u64::MAX, None);
        }
    }

    /// Calls `done` once every offset below `offset` is on disk and the
    /// high-watermark listener has run for it (at once if so already). The
    /// callback runs on a flusher thread: keep it short.
    pub fn on_durable(self: &Arc<Self>, offset: u64, done: impl FnOnce(Result<()>) + Send + 'static) {
        // Not `durable`: between its store and the listener's return, a
        // caller let go here would race the flusher thread (the replication
        // simulation's seed 135 under load, docs/reliability.md).
        if self.announced.load(Ordering::Acquire) >= offset {
            done(Ok(()));
        } else {
            self.env.flusher.request(self.clone(), offset, Some(Box::new(done)));
        }
    }

    /// Blocks until every offset below `offset` is on disk (and the
    /// listener told, as [`Log::on_durable`]). Concurrent callers share
    /// fsyncs (group commit).
    pub fn flush_to(self: &Arc<Self>, offset: u64) -> Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.on_durable(offset, move |r| {
            let _ = tx.send(r);
        });
        rx.recv().map_err(|_| LogError::Unavailable("flusher stopped".into()))?
    }

    /// Makes offsets below `target` durable (`u64::MAX`: everything written
    /// so far): fsyncs rolled segments, the directory, and, if `target`
    /// reaches into it, the active segment. Runs on a flusher thread or in
    /// `close`, never on an async worker.
    pub(crate) fn flush(&self, target: u64) -> Result<()> {
        let mut fs = lock(&self.flush);
        // Cleared before the snapshot below: an append that saw it still set
        // wrote its data before this point, so this flush covers it.
        self.flush_queued.store(false, Ordering::SeqCst);
        if self.failed.load(Ordering::Acquire) {
            return Err(LogError::Unavailable(format!("{} failed earlier", self.dir.display())));
        }
        let (active, size, end, rolled, dir_dirty) = {
            let mut w = lock(&self.writer);
            if self.durable_offset() >= target.min(w.leo) && w.rolled.is_empty() {
                return Ok(());
            }
            (w.active.clone(), w.active.size(), w.leo, std::mem::take(&mut w.rolled), std::mem::take(&mut w.dir_dirty))
        };
        let target = target.min(end);
        let sync_active = target > active.base;
        let started = std::time::Instant::now();
        let result = (|| -> Result<()> {
            for seg in &rolled {
                seg.sync(&self.env.cache, true)?;
            }
            if dir_dirty {
                File::open(&self.dir)?.sync_all()?;
            }
            if sync_active {
                active.sync(&self.env.cache, false)?;
            }
            Ok(())
        })();
        if sync_active || dir_dirty || !rolled.is_empty() {
            self.env.fsync.observe(started.elapsed());
        }
        if let Err(e) = result {
            // After a failed fsync the kernel may have dropped the dirty
            // pages; nothing written since the last good fsync can be trusted.
            tracing::error!(log = %self.dir.display(), error = %e, "fsync failed; log is now read-only");
            self.failed.store(true, Ordering::Release);
            return Err(e);
        }
        for seg in &rolled {
            seg.set_visible(seg.size());
        }
        let (durable, pos) = if sync_active { (end, size) } else { (active.base, 0) };
        if sync_active {
            active.set_visible(size);
        }
        self.durable.fetch_max(durable, Ordering::AcqRel);
        if matches!(self.config().flush, FlushPolicy::Always) && self.hw.fetch_max(durable, Ordering::AcqRel) < durable
        {
            self.hw_advanced();
        }
        self.announced.fetch_max(durable, Ordering::AcqRel);
        let before = fs.durable_pos;
        fs.durable_pos = fs.durable_pos.max((active.base, pos));
        if sync_active {
            fs.pace.note(if before.0 == active.base { size.saturating_sub(before.1) } else { size });
        }
        let pending = self.leo.load(Ordering::Acquire) > durable;
        self.dirty_since.store(if pending { ferry_util::time::now_ms_u64().max(1) } else { 0 }, Ordering::Relaxed);
        Ok(())
    }

    /// Persists the recovery checkpoint at the durable position, with the
    /// active segment's index entries below it (`force`: even if that
    /// position was checkpointed already, as after a truncation).
    ///
    /// Takes the flush lock's guard: the position is read under it, then
    /// the checkpoint lock is taken before the flush lock is let go, so
    /// checkpoints land in the order their positions were read, while the
    /// fsyncs of this log go on during the checkpoint's own.
    pub(crate) fn write_checkpoint(&self, fs: MutexGuard<'_, FlushState>, force: bool) -> Result<()> {
        let (segment, position) = fs.durable_pos;
        let cp = Checkpoint { segment, position, log_start: self.log_start_offset() };
        let appended = self.appended.load(Ordering::Relaxed);
        let mut state = lock(&self.checkpoint);
        drop(fs);
        if state.written == Some(cp) && !force {
            return Ok(());
        }
        state.last = Instant::now();
        state.appended_at = appended;
        state.written = None;
        if let Some(seg) = read(&self.segments).get(&segment) {
            seg.persist_indexes(true)?;
        }
        cp.write(&self.dir)?;
        state.written = Some(cp);
        Ok(())
    }

    /// Interval policy: when (ms since the epoch) the unflushed data
    /// becomes `flush.ms` old; `None` for a clean log or another policy.
    pub(crate) fn flush_deadline(&self) -> Option<u64> {
        // The ticker asks every log: a clean log answers from one atomic,
        // without touching (or copying) its config.
        let since = self.dirty_since.load(Ordering::Relaxed);
        if since == 0 {
            return None;
        }
        let FlushPolicy::Interval { ms, .. } = read(&self.config).flush else { return None };
        Some(since.saturating_add(ms))
    }

    /// Writes a checkpoint if the durable position moved since the last one
    /// and either enough was appended since that recovery would rescan much
    /// (`checkpoint_bytes`) or it is `checkpoint_max_age` old (so an idle
    /// log's checkpoint catches up with its last flush). A checkpoint costs
    /// three fsyncs (indexes, file, directory) that take the journal with
    /// them: once a second per active log, they delayed the appends' own
    /// fdatasyncs often enough to show in a low-rate p99.
    pub(crate) fn checkpoint_if_stale(&self) -> Result<()> {
        let fs = lock(&self.flush);
        let config = &self.env.config;
        let due = {
            let state = lock(&self.checkpoint);
            let age = state.last.elapsed();
            let behind = self.appended.load(Ordering::Relaxed).saturating_sub(state.appended_at);
            age >= config.checkpoint_interval && (behind >= config.checkpoint_bytes || age >= config.checkpoint_max_age)
        };
        if due {
            self.write_checkpoint(fs, false)?;
        }
        Ok(())
    }

    /// Flushes everything, persists indexes and the checkpoint. The log
    /// stays usable; call this before dropping it for a fast next start.
    pub fn close(&self) -> Result<()> {
        let active = {
            // Under the writer lock: no append lands past the cut meanwhile.
            let mut w = lock(&self.writer);
            w.zeros_off = true;
            w.active.cut_zero_tail(&self.env.cache)?;
            w.active.clone()
        };
        self.flush(u64::MAX)?;
        active.persist_indexes(true)?;
        self.write_checkpoint(lock(&self.flush), true)
    }

    /// Whole batches starting with the one that holds `offset`, at most
    /// `max_bytes` long unless the first batch alone is larger (so a reader
    /// always progresses, as Kafka's KIP-74). `Ok(None)` when `offset` is the
    /// high watermark.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Option<ReadSlice>> {
        self.read_upto(offset, max_bytes, u64::MAX)
    }

    /// [`Log::read`] that stops before the first batch starting at or past
    /// `upto` (the last stable offset, for `read_committed` readers).
    pub fn read_upto(&self, offset: u64, max_bytes: usize, upto: u64) -> Result<Option<ReadSlice>> {
        self.read_range(offset, max_bytes, upto, false)
    }

    /// [`Log::read`] past the high watermark, up to the log end: everything
    /// written, durable or not. A partition leader serves its followers
    /// this way, so they copy (and fsync) a batch while the leader's own
    /// fsync of it is still running; what counts as acknowledged is decided
    /// by the durable ends, not by what was read.
    pub fn read_written(&self, offset: u64, max_bytes: usize) -> Result<Option<ReadSlice>> {
        self.read_range(offset, max_bytes, u64::MAX, true)
    }

    /// `written`: bounded by the log end and each segment's written size
    /// instead of the high watermark and its visible size.
    fn read_range(&self, offset: u64, max_bytes: usize, upto: u64, written: bool) -> Result<Option<ReadSlice>> {
        // The log end before the sizes: whatever the end covers is written
        // (an append publishes its segment size before the log end).
        let end = if written { self.next_offset() } else { self.high_watermark() };
        let start = self.log_start_offset();
        if offset < start || offset > end {
            return Err(LogError::OffsetOutOfRange { offset, start, end });
        }
        let hw = end.min(upto);
        let cache = &self.env.cache;
        let mut cursor = offset;
        while cursor < hw {
            let Some(seg) = self.segment_for(cursor) else { break };
            let mut limit = if written { seg.size() } else { seg.visible() };
            let mut limit_offset = seg.end().min(hw);
            let file = seg.file(cache)?;
            if hw < end && hw < seg.end() {
                // Bounded below the high watermark (a last stable offset):
                // the slice must stop at the batch holding `hw`.
                let mut p = u64::from(seg.with_indexes(cache, |ix| ix.lookup(rel(seg.base, hw)))?.pos);
                while let Some(h) = read_header(&file, p, limit)? {
                    if h.base_offset >= hw {
                        limit_offset = h.base_offset;
                        break;
                    }
                    p += h.size as u64;
                }
                limit = p;
            }
            let mut pos = u64::from(seg.with_indexes(cache, |ix| ix.lookup(rel(seg.base, cursor)))?.pos);
            while let Some(h) = read_header(&file, pos, limit)? {
                if h.base_offset >= hw {
                    return Ok(None);
                }
                if h.last_offset() >= cursor {
                    let (end, end_offset) =
                        self.batch_end(&seg, &file, pos, &h, (limit, limit_offset), max_bytes as u64)?;
                    return Ok(Some(ReadSlice { file, position: pos, len: end - pos, end_offset }));
                }
                pos += h.size as u64;
            }
            // Past this segment's data (compaction can leave a gap): go on
            // with the next segment.
            cursor = match read(&self.segments).range(seg.base + 1..).next() {
                Some((&base, _)) => base.max(cursor),
                None => break,
            };
        }
        Ok(None)
    }

    /// End of the last whole batch within `max` bytes of `pos`.
    /// With the offset that follows it; `limit` is the readable end
    /// (position, offset).
    fn batch_end(
        &self,
        seg: &Arc<Segment>,
        file: &File,
        pos: u64,
        first: &batch::BatchHeader,
        limit: (u64, u64),
        max: u64,
    ) -> Result<(u64, u64)> {
        let target = pos.saturating_add(max);
        if target >= limit.0 {
            return Ok(limit);
        }
        if first.size as u64 >= max {
            return Ok((pos + first.size as u64, first.next_offset()));
        }
        let near = seg.with_indexes(&self.env.cache, |ix| ix.lookup_position(target as u32))?;
        let (mut p, mut offset) = if u64::from(near.pos) > pos {
            (u64::from(near.pos), seg.base + u64::from(near.rel))
        } else {
            (pos, first.base_offset)
        };
        while let Some(h) = read_header(file, p, target)? {
            p += h.size as u64;
            offset = h.next_offset();
        }
        Ok((p, offset))
    }

    /// Copying read for callers that need bytes rather than a file range.
    pub fn read_bytes(&self, offset: u64, max_bytes: usize) -> Result<Vec<u8>> {
        Ok(self.read(offset, max_bytes)?.map(|s| s.to_vec()).transpose()?.unwrap_or_default())
    }

    /// The segment whose range may contain `offset`.
    pub(crate) fn segment_for(&self, offset: u64) -> Option<Arc<Segment>> {
        let segs = read(&self.segments);
        segs.range(..=offset).next_back().or_else(|| segs.iter().next()).map(|(_, s)| s.clone())
    }

    /// A snapshot of the segments, oldest first.
    pub(crate) fn segment_list(&self) -> Vec<Arc<Segment>> {
        read(&self.segments).values().cloned().collect()
    }
}

impl Log {
    /// Records an aborted transaction (durable on return). Entries must come
    /// in marker order; one not past the newest is taken as a replay and
    /// ignored, so recovery may add what it finds again.
    pub fn add_aborted_txn(&self, txn: AbortedTxn) -> Result<()> {
        self.aborted.add(txn)
    }

    /// Keeps compaction below `offset` (the first offset of the oldest
    /// open transaction; `u64::MAX` when none is open).
    pub fn set_uncleanable_from(&self, offset: u64) {
        self.uncleanable_from.store(offset, Ordering::Release);
    }

    /// Aborted transactions that may cover offsets in `from..upto`.
    pub fn aborted_txns(&self, from: u64, upto: u64) -> Vec<AbortedTxn> {
        self.aborted.overlapping(from, upto)
    }

    /// Calls `f` with the header of every batch holding offsets at or past
    /// `from`, up to the log end, in order. Reads headers only: how the
    /// broker rebuilds state kept in batch headers (producer ids and
    /// sequences) after a crash.
    pub fn scan_headers(&self, from: u64, mut f: impl FnMut(&ferry_records::batch::BatchHeader)) -> Result<()> {
        let cache = &self.env.cache;
        let Some(first) = self.segment_for(from) else { return Ok(()) };
        let segments: Vec<Arc<Segment>> = read(&self.segments).range(first.base..).map(|(_, s)| s.clone()).collect();
        for seg in segments {
            let file = seg.file(cache)?;
            let size = seg.size();
            let mut pos = u64::from(seg.with_indexes(cache, |ix| ix.lookup(rel(seg.base, from)))?.pos);
            while let Some(h) = read_header(&file, pos, size)? {
                if h.last_offset() >= from {
                    f(&h);
                }
                pos += h.size as u64;
            }
        }
        Ok(())
    }
}
