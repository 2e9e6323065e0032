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
use crate::partition::{Acks, Appended, Partition};
use crate::queue::cursor::{Cursor, DELIVERED_WINDOW, Outstanding};
use crate::queue::cursor_records::{self, CursorChange, CursorSnapshot};
use crate::queue::cursor_store::CursorStore;
use crate::stored;

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

/// Cursor records after which a replicated cursor writes a snapshot record
/// (so a new leader's replay and the log's retained prefix stay short).
const RECORDS_PER_SNAPSHOT: u64 = 4096;

/// Where a cursor's changes go.
enum Journal {
    /// Node-local files (`cursor.json` + `cursor.journal`).
    Files(CursorStore),
    /// Records in the queue's own replicated partition, beside its
    /// messages (a quorum queue: [`cursor_records`]).
    Records(RecordJournal),
}

/// A replicated cursor's journal: the partition it appends its records to.
struct RecordJournal {
    partition: Arc<Partition>,
    since_snapshot: u64,
    last_snapshot: Option<u64>,
    /// The highest delivered mark whose record the ISR has: a new leader
    /// flags every offset below it.
    committed_mark: u64,
    /// A mark recorded ahead, not yet known to be on the ISR.
    pending_mark: Option<PendingMark>,
}

/// A delivered-mark record waiting for the high watermark.
struct PendingMark {
    /// The highest mark recorded up to and with this record: once the
    /// ISR has the record, it has every record before it too.
    covers: u64,
    offset: u64,
    appended: Appended,
}

/// The cursor, the user's state beside it and the journal, under one lock.
pub struct Tracked<S> {
    /// The acknowledgement state; change it through `Tracked`'s methods
    /// where one exists, so the change is journaled.
    pub cursor: Cursor,
    /// What the cursor's user keeps with it.
    pub extra: S,
    store: Journal,
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
        match &mut self.store {
            Journal::Files(store) => {
                store.journal_acks(offsets)?;
                if self.snapshots == Snapshots::InLine && store.journal_len() > COMPACT_AT {
                    self.persist(false)?;
                }
                Ok(())
            }
            Journal::Records(_) => self.record(CursorChange::Ack(offsets.to_vec())),
        }
    }

    /// Appends `change` to a replicated cursor's partition (acks=1: the
    /// followers copy it at once; AMQP's acks have no answer to wait for).
    /// The record's own offset is no message: it counts as acknowledged,
    /// here as in a replay. A node-local cursor has nothing to do.
    fn record(&mut self, change: CursorChange) -> Result<()> {
        let Journal::Records(j) = &mut self.store else { return Ok(()) };
        let is_snapshot = matches!(change, CursorChange::Snapshot(_));
        let batch = stored::encode_batch(&[change.to_record(ferry_util::time::now_ms())?])?;
        let offset = j.partition.append(&batch, Acks::Leader)?.info.base_offset;
        if is_snapshot {
            j.last_snapshot = Some(offset);
            j.since_snapshot = 0;
        } else {
            j.since_snapshot += 1;
        }
        self.cursor.ack(&[offset]);
        Ok(())
    }

    /// Hands an unacknowledged delivery back (see [`Cursor::requeue`]); a
    /// replicated cursor records it with its delivery count.
    pub fn requeue(&mut self, offset: u64) -> Result<Option<Outstanding>> {
        let out = self.cursor.requeue(offset);
        if let Some(o) = out {
            self.record(CursorChange::Returned(vec![(offset, o.count)]))?;
        }
        Ok(out)
    }

    /// The whole cursor as a snapshot record's content: unacknowledged
    /// messages that were handed back keep the count of their last return.
    fn record_snapshot(&self) -> CursorSnapshot {
        let snap = self.cursor.snapshot();
        let mut returned: Vec<(u64, u32)> = self.cursor.requeued_counts().collect();
        returned.extend(self.cursor.unacked_counts().filter(|&(_, n)| n > 1).map(|(o, n)| (o, n - 1)));
        returned.sort_unstable();
        CursorSnapshot { floor: snap.floor, acked: snap.acked, delivered_mark: snap.delivered_mark, returned }
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
            match &mut self.store {
                Journal::Files(store) => store.journal_range(from, to)?,
                Journal::Records(_) => self.record(CursorChange::AckRange(from, to))?,
            }
        }
        Ok(())
    }

    /// Notes a first delivery of `offset`, journaling the "possibly
    /// delivered" mark when it moves.
    pub fn note_delivered(&mut self, offset: u64) -> Result<()> {
        if matches!(self.store, Journal::Records(_)) {
            return self.note_delivered_replicated(offset);
        }
        match (self.cursor.note_delivered(offset), &mut self.store) {
            (Some(mark), Journal::Files(store)) => store.journal_mark(mark),
            _ => Ok(()),
        }
    }

    /// A replicated cursor delivers `offset` only below a mark whose
    /// record the ISR has, so whichever replica leads next flags it as a
    /// possible redelivery. The next mark is recorded half a window
    /// ahead, so a delivery waits for it (bounded, under the cursor's
    /// lock) only when deliveries outrun replication.
    fn note_delivered_replicated(&mut self, offset: u64) -> Result<()> {
        loop {
            let Journal::Records(j) = &mut self.store else { return Ok(()) };
            if j.pending_mark.as_ref().is_some_and(|p| j.partition.high_watermark() > p.offset) {
                let p = j.pending_mark.take();
                j.committed_mark = j.committed_mark.max(p.map_or(0, |p| p.covers));
            }
            if j.pending_mark.is_none() && offset + DELIVERED_WINDOW / 2 >= j.committed_mark {
                let mark = offset + DELIVERED_WINDOW;
                let record = CursorChange::Delivered(mark).to_record(ferry_util::time::now_ms())?;
                let appended = j.partition.append(&stored::encode_batch(&[record])?, Acks::All)?;
                let at = appended.info.base_offset;
                j.since_snapshot += 1;
                // Snapshots carry the highest mark recorded.
                self.cursor.raise_delivered_mark(mark);
                let covers = self.cursor.delivered_mark();
                j.pending_mark = Some(PendingMark { covers, offset: at, appended });
                self.cursor.ack(&[at]);
                continue;
            }
            if offset < j.committed_mark {
                return Ok(());
            }
            let Some(p) = j.pending_mark.take() else { return Ok(()) };
            wait_acknowledged(p.appended)?;
            j.committed_mark = j.committed_mark.max(p.covers);
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
        match &mut self.store {
            Journal::Files(store) => store.write_snapshot(&self.cursor.snapshot(), sync)?,
            Journal::Records(j) => {
                // The records are the state; a snapshot record only
                // shortens the replay and lets the log's prefix go.
                if j.since_snapshot >= RECORDS_PER_SNAPSHOT || (sync && j.since_snapshot > 0) {
                    let snap = self.record_snapshot();
                    self.record(CursorChange::Snapshot(snap))?;
                }
            }
        }
        self.dirty = false;
        Ok(())
    }

    fn files(&self) -> Option<&CursorStore> {
        match &self.store {
            Journal::Files(store) => Some(store),
            Journal::Records(_) => None,
        }
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
        let mut tracked =
            Tracked { cursor, extra, store: Journal::Files(store), snapshots, dirty: true, synced_len: 0 };
        if snapshots == Snapshots::InLine {
            // Folds the replayed journal into the snapshot.
            tracked.persist(false)?;
        }
        Ok(CursorLog { log, state: Mutex::new(tracked), trim })
    }

    /// Opens a replicated cursor over `partition`, which this node leads:
    /// replays the cursor records in the partition's log (to its end: as
    /// leader, that is what it will commit) into the state the previous
    /// leader had. Handed-back messages come back first with their counts;
    /// everything else below the delivered mark goes out flagged.
    pub fn open_replicated(partition: Arc<Partition>, extra: S) -> Result<CursorLog<S>> {
        let log = partition.log().clone();
        let replayed = cursor_records::replay(&log)?;
        let mut cursor = replayed.state.cursor(log.log_start_offset(), log.next_offset());
        for (offset, count) in replayed.state.returned() {
            cursor.restore_requeued(offset, Outstanding { count, size: 0 });
        }
        let journal = RecordJournal {
            partition,
            since_snapshot: replayed.records_since_snapshot,
            last_snapshot: replayed.last_snapshot,
            // The replayed marks may be past the high watermark (the old
            // leader's tail): the first delivery records a mark and waits
            // for it, which commits them all.
            committed_mark: 0,
            pending_mark: None,
        };
        let tracked = Tracked {
            cursor,
            extra,
            store: Journal::Records(journal),
            snapshots: Snapshots::InLine,
            dirty: false,
            synced_len: 0,
        };
        Ok(CursorLog { log, state: Mutex::new(tracked), trim: Trim::ToFloor })
    }

    /// The log the cursor runs over.
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// Locks the cursor and the user's state (a poisoned lock is taken over).
    pub fn lock(&self) -> MutexGuard<'_, Tracked<S>> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The journal file, to fsync off the async threads (`None` for a
    /// replicated cursor: its records are durable with the partition).
    pub fn journal(&self) -> Option<Arc<File>> {
        self.lock().files().map(CursorStore::journal_handle)
    }

    /// Persists the cursor and deletes the acknowledged prefix of the log.
    /// Called periodically from a background thread, and at shutdown with
    /// `sync`: it may fsync.
    pub fn maintain(&self, sync: bool) -> Result<()> {
        let (floor, unsynced, replicated) = {
            let mut t = self.lock();
            let mut unsynced = None;
            let journal_len = t.files().map_or(0, CursorStore::journal_len);
            match t.snapshots {
                Snapshots::InLine => t.persist(sync)?,
                Snapshots::Synced if sync || journal_len > SYNCED_COMPACT_AT => {
                    t.dirty = true;
                    t.persist(true)?;
                    t.synced_len = 0;
                }
                Snapshots::Synced => {
                    if journal_len != t.synced_len {
                        t.synced_len = journal_len;
                        unsynced = t.files().map(CursorStore::journal_handle);
                    }
                }
            }
            let replicated = match &t.store {
                // The log before the last snapshot record (and the floor)
                // is no longer needed by a replay.
                Journal::Records(j) => Some((j.partition.clone(), j.last_snapshot.unwrap_or(0))),
                Journal::Files(_) => None,
            };
            (t.cursor.floor(), unsynced, replicated)
        };
        if let Some(journal) = unsynced {
            journal.sync_data()?;
        }
        if let Some((partition, snapshot)) = replicated {
            let target = floor.min(snapshot).min(partition.high_watermark());
            if target > partition.log_start_offset() {
                partition.delete_records_before(target)?;
            }
            return Ok(());
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

/// Waits for `appended` to be acknowledged by the ISR, off the async
/// scheduler where possible (a multi-threaded runtime's worker hands its
/// other tasks over first).
fn wait_acknowledged(appended: Appended) -> Result<()> {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| appended.acknowledged_blocking().map(|_| ()))
        }
        _ => appended.acknowledged_blocking().map(|_| ()),
    }
}
