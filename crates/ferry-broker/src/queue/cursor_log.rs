//! A log plus its acknowledgement cursor, kept durable: the one
//! implementation under AMQP queues, the delayed-message store and record
//! queues.
//!
//! The cursor ([`Cursor`]) and what its user keeps beside it (`S`: a
//! read-ahead buffer, an index) share one lock, so a delivery decision and
//! its bookkeeping are one step. Every change the cursor must not forget
//! goes to the journal before the lock is released ([`CursorStore`]: a
//! plain write, so it survives a kill -9 through the page cache);
//! [`CursorLog::maintain`] (a background thread) rewrites the snapshot and
//! deletes the log's acknowledged prefix.

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use ferry_log::Log;

use crate::error::Result;
use crate::queue::cursor::Cursor;
use crate::queue::cursor_store::CursorStore;

/// Journal bytes past which an acknowledgement rewrites the snapshot in
/// line (with [`Snapshots::InLine`]).
const COMPACT_AT: u64 = 1 << 20;
/// Journal bytes past which `maintain` folds it into a snapshot (with
/// [`Snapshots::Synced`]): the snapshot's fsync holds the cursor's lock,
/// so it is rare; in between, `maintain` fsyncs only the journal, unlocked.
const SYNCED_COMPACT_AT: u64 = 64 << 10;

/// When the snapshot is rewritten (which empties the journal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Snapshots {
    /// At open, when the journal passes 1 MiB, and by `maintain`; fsynced
    /// only when `maintain` is asked to (shutdown). A power loss can lose
    /// recent acknowledgements: those messages are delivered again.
    InLine,
    /// Only by `maintain` (a background thread), always fsynced: the
    /// journal is emptied only once the snapshot covering it is on disk,
    /// so a synced journal ([`CursorLog::journal`]) means acknowledged for
    /// good. `maintain` fsyncs a grown journal too.
    Synced,
}

/// How `maintain` gives the acknowledged prefix of the log back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trim {
    /// Only when whole segments are done (moving the start offset alone
    /// costs a checkpoint write and gives no space back).
    WholeSegments,
    /// The log start follows the floor.
    ToFloor,
    /// Never: the log is shared (a topic partition that other readers and
    /// other cursors read); its retention, not the cursor, deletes.
    Never,
}

/// The cursor, the user's state beside it and the journal, under one lock.
pub struct Tracked<S> {
    /// The acknowledgement state; change it through `Tracked`'s methods
    /// where one exists, so the change is journaled.
    pub cursor: Cursor,
    /// What the cursor's user keeps with it.
    pub extra: S,
    store: CursorStore,
    snapshots: Snapshots,
    dirty: bool,
    /// Journal length at its last fsync by `maintain`.
    synced_len: u64,
}

impl<S> Tracked<S> {
    /// Acknowledges `offsets` (wherever they are) and journals them.
    pub fn ack(&mut self, offsets: &[u64]) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        self.cursor.ack(offsets);
        self.dirty = true;
        self.store.journal_acks(offsets)?;
        if self.snapshots == Snapshots::InLine && self.store.journal_len() > COMPACT_AT {
            self.persist(false)?;
        }
        Ok(())
    }

    /// Acknowledges those of `offsets` out with a consumer; returns how
    /// many were.
    pub fn settle(&mut self, offsets: &[u64]) -> Result<usize> {
        let done = self.cursor.settle(offsets);
        self.ack(&done)?;
        Ok(done.len())
    }

    /// Acknowledges `[from, to)` (a purge).
    pub fn ack_range(&mut self, from: u64, to: u64) -> Result<()> {
        self.cursor.ack_range(from, to);
        self.dirty = true;
        if to > from {
            self.store.journal_range(from, to)?;
        }
        Ok(())
    }

    /// Notes a first delivery of `offset`, journaling the "possibly
    /// delivered" mark when it moves.
    pub fn note_delivered(&mut self, offset: u64) -> Result<()> {
        match self.cursor.note_delivered(offset) {
            Some(mark) => self.store.journal_mark(mark),
            None => Ok(()),
        }
    }

    /// Moves the cursor to `offset` ([`Cursor::reposition`]); a journal
    /// cannot say that, so the snapshot is rewritten and fsynced at once.
    pub fn reposition(&mut self, offset: u64) -> Result<()> {
        self.cursor.reposition(offset);
        self.dirty = true;
        self.persist(true)?;
        self.synced_len = 0;
        Ok(())
    }

    /// Something changed that only a snapshot records.
    pub fn touch(&mut self) {
        self.dirty = true;
    }

    fn persist(&mut self, sync: bool) -> Result<()> {
        if !self.dirty && !sync {
            return Ok(());
        }
        self.store.write_snapshot(&self.cursor.snapshot(), sync)?;
        self.dirty = false;
        Ok(())
    }
}

/// A log with its durable cursor; `S` is what the user keeps beside the cursor.
pub struct CursorLog<S> {
    log: Arc<Log>,
    state: Mutex<Tracked<S>>,
    trim: Trim,
}

impl<S> CursorLog<S> {
    /// Opens the cursor files in `dir` over `log`. A directory without
    /// them starts with the floor at the log start.
    pub fn open(dir: &Path, log: Arc<Log>, snapshots: Snapshots, trim: Trim, extra: S) -> Result<CursorLog<S>> {
        let (store, snap) = CursorStore::open(dir)?;
        let cursor = Cursor::recover(&snap, log.log_start_offset(), log.next_offset());
        let mut tracked = Tracked { cursor, extra, store, snapshots, dirty: true, synced_len: 0 };
        if snapshots == Snapshots::InLine {
            // Folds the replayed journal into the snapshot.
            tracked.persist(false)?;
        }
        Ok(CursorLog { log, state: Mutex::new(tracked), trim })
    }

    /// The log the cursor runs over.
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// Locks the cursor and the user's state (a poisoned lock is taken over).
    pub fn lock(&self) -> MutexGuard<'_, Tracked<S>> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The journal file, to fsync off the async threads.
    pub fn journal(&self) -> Arc<File> {
        self.lock().store.journal_handle()
    }

    /// Persists the cursor and deletes the acknowledged prefix of the log.
    /// Called periodically from a background thread, and at shutdown with
    /// `sync`: it may fsync.
    pub fn maintain(&self, sync: bool) -> Result<()> {
        let (floor, unsynced) = {
            let mut t = self.lock();
            let mut unsynced = None;
            match t.snapshots {
                Snapshots::InLine => t.persist(sync)?,
                Snapshots::Synced if sync || t.store.journal_len() > SYNCED_COMPACT_AT => {
                    t.dirty = true;
                    t.persist(true)?;
                    t.synced_len = 0;
                }
                Snapshots::Synced => {
                    let len = t.store.journal_len();
                    if len != t.synced_len {
                        t.synced_len = len;
                        unsynced = Some(t.store.journal_handle());
                    }
                }
            }
            (t.cursor.floor(), unsynced)
        };
        if let Some(journal) = unsynced {
            journal.sync_data()?;
        }
        let target = floor.min(self.log.high_watermark());
        let trim = match self.trim {
            Trim::WholeSegments => self.log.segment_count() > 1,
            Trim::ToFloor => true,
            Trim::Never => false,
        };
        if trim && target > self.log.log_start_offset() {
            self.log.delete_records_before(target)?;
        }
        Ok(())
    }
}
