//! A queue: a log of messages plus a cursor over it.
//!
//! The cursor knows the ack floor (every offset below is acknowledged), the
//! acknowledged offsets above it (as ranges), the deliveries not yet
//! acknowledged (with delivery counts) and the messages handed back for
//! redelivery. Its durable state ([`crate::messaging::cursor_store`]) is a
//! snapshot plus an append-only journal of acknowledgements, so an ack is one
//! small write and a kill -9 loses none. The ack floor advancing lets the
//! log's acknowledged prefix be deleted segment by segment.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use ferry_log::Log;
use tokio::sync::Notify;

use crate::error::Result;
use crate::messaging::MessagingError;
use crate::messaging::cursor_store::{CursorStore, Snapshot};
use crate::messaging::exchange::Headers;
use crate::messaging::message::{self, Message, StoredMessage};
use crate::messaging::ranges::RangeSet;

/// How far ahead of the last delivery the "possibly delivered" mark is
/// persisted: one small write per this many deliveries. After a crash,
/// messages below the mark are flagged redelivered (they may have been).
const DELIVERED_WINDOW: u64 = 1024;
/// Bytes read from the log per refill of the read-ahead buffer.
const READ_AHEAD: usize = 256 * 1024;

/// A queue's declared properties.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueSpec {
    pub name: String,
    pub durable: bool,
    /// The connection that owns an exclusive queue.
    pub exclusive_owner: Option<u64>,
    pub auto_delete: bool,
    pub arguments: Headers,
}

/// One message handed to a consumer.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub message: StoredMessage,
    /// May have been delivered before (a requeue, or before a restart).
    pub redelivered: bool,
    pub delivery_count: u32,
}

struct Cursor {
    /// Every offset below is acknowledged (or was never a message).
    floor: u64,
    /// Next offset never yet taken from the log.
    next: u64,
    /// Where the read-ahead buffer ends.
    read_pos: u64,
    buffer: VecDeque<StoredMessage>,
    acked: RangeSet,
    /// Delivered, not yet acknowledged: offset -> delivery count.
    unacked: HashMap<u64, u32>,
    /// Handed back, to be delivered again first: offset -> delivery count.
    requeued: BTreeMap<u64, u32>,
    /// Offsets below this may have been delivered before the last start.
    delivered_before_boot: u64,
    /// Log end at open: transient messages below it died with the restart.
    boot_end: u64,
    /// The persisted "possibly delivered" mark.
    delivered_mark: u64,
    store: CursorStore,
    dirty: bool,
}

pub struct Queue {
    pub spec: QueueSpec,
    log: Arc<Log>,
    dir: PathBuf,
    state: Mutex<Cursor>,
    notify: Arc<Notify>,
    deleted: AtomicBool,
    consumers: Mutex<Consumers>,
}

#[derive(Default)]
struct Consumers {
    count: u32,
    exclusive: bool,
    ever: bool,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("spec", &self.spec).finish_non_exhaustive()
    }
}

impl Queue {
    /// Opens the queue over `log` (in `dir`), recovering its cursor.
    pub(crate) fn open(spec: QueueSpec, dir: &Path, log: Arc<Log>) -> Result<Arc<Queue>> {
        let (store, snap) = CursorStore::open(dir)?;
        let mut acked = RangeSet::default();
        for &(a, b) in &snap.acked {
            acked.insert_range(a, b);
        }
        let mut floor = snap.floor.max(log.log_start_offset());
        acked.remove_below(floor);
        floor = acked.advance(floor);
        let boot_end = log.next_offset();
        let mut cursor = Cursor {
            floor,
            next: floor,
            read_pos: floor,
            buffer: VecDeque::new(),
            acked,
            unacked: HashMap::new(),
            requeued: BTreeMap::new(),
            delivered_before_boot: snap.delivered_mark,
            boot_end,
            delivered_mark: snap.delivered_mark,
            store,
            dirty: true,
        };
        cursor.persist(false)?;
        let notify = Arc::new(Notify::new());
        let n = notify.clone();
        log.set_hw_listener(Arc::new(move || n.notify_waiters()));
        Ok(Arc::new(Queue {
            spec,
            log,
            dir: dir.to_path_buf(),
            state: Mutex::new(cursor),
            notify,
            deleted: AtomicBool::new(false),
            consumers: Mutex::new(Consumers::default()),
        }))
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn log(&self) -> &Arc<Log> {
        &self.log
    }

    fn cursor(&self) -> MutexGuard<'_, Cursor> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Woken when messages become available (appended and readable, or
    /// handed back) and when the queue is deleted.
    pub fn notifier(&self) -> &Notify {
        &self.notify
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    pub(crate) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Appends `m`; returns its offset. Readable by consumers once the log
    /// makes it visible (for a durable queue: once on disk).
    pub fn publish(&self, m: &Message) -> Result<u64> {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let batch = message::encode(m, now)?;
        Ok(self.log.append(&batch)?.base_offset)
    }

    /// Calls `done` once the message at `offset` is on disk.
    pub fn on_durable(&self, offset: u64, done: impl FnOnce(bool) + Send + 'static) {
        self.log.on_durable(offset + 1, move |r| done(r.is_ok()));
    }

    /// The next message for a consumer, if one is ready.
    pub fn take(&self) -> Result<Option<Delivery>> {
        let mut c = self.cursor();
        if self.is_deleted() {
            return Ok(None);
        }
        while let Some((off, count)) = c.requeued.pop_first() {
            match self.read_one(off)? {
                Some(message) => {
                    c.unacked.insert(off, count + 1);
                    return Ok(Some(Delivery { message, redelivered: true, delivery_count: count + 1 }));
                }
                None => c.ack_one(off)?,
            }
        }
        loop {
            if c.buffer.is_empty() && !self.refill(&mut c)? {
                return Ok(None);
            }
            let Some(m) = c.buffer.pop_front() else { return Ok(None) };
            c.next = m.offset + 1;
            if c.acked.contains(m.offset) {
                continue;
            }
            if !m.persistent && m.offset < c.boot_end {
                // Transient messages do not survive a restart.
                c.ack_one(m.offset)?;
                continue;
            }
            let redelivered = m.offset < c.delivered_before_boot.min(c.boot_end);
            if m.offset >= c.delivered_mark {
                c.delivered_mark = m.offset + DELIVERED_WINDOW;
                let mark = c.delivered_mark;
                c.store.journal_mark(mark)?;
            }
            c.unacked.insert(m.offset, 1);
            return Ok(Some(Delivery { message: m, redelivered, delivery_count: 1 }));
        }
    }

    /// Fills the read-ahead buffer from the log; false if nothing is there.
    fn refill(&self, c: &mut Cursor) -> Result<bool> {
        let start = self.log.log_start_offset();
        if c.read_pos < start {
            c.read_pos = start;
            c.next = c.next.max(start);
        }
        let Some(slice) = self.log.read(c.read_pos, READ_AHEAD)? else { return Ok(false) };
        let buf = Bytes::from(slice.to_vec()?);
        for m in message::decode_batches(&buf)? {
            if m.offset >= c.read_pos {
                c.read_pos = m.offset + 1;
                c.buffer.push_back(m);
            }
        }
        Ok(!c.buffer.is_empty())
    }

    fn read_one(&self, offset: u64) -> Result<Option<StoredMessage>> {
        if offset < self.log.log_start_offset() {
            return Ok(None);
        }
        let Some(slice) = self.log.read(offset, 1)? else { return Ok(None) };
        let buf = Bytes::from(slice.to_vec()?);
        Ok(message::decode_batches(&buf)?.into_iter().find(|m| m.offset == offset))
    }

    /// Acknowledges deliveries. Offsets not outstanding are ignored.
    pub fn ack(&self, offsets: &[u64]) -> Result<()> {
        let mut c = self.cursor();
        let done: Vec<u64> = offsets.iter().copied().filter(|o| c.unacked.remove(o).is_some()).collect();
        c.ack_all(&done)
    }

    /// Hands deliveries back for redelivery (nack/reject with requeue, a
    /// channel closing with unacknowledged messages).
    pub fn requeue(&self, offsets: &[u64]) {
        let mut c = self.cursor();
        for off in offsets {
            if let Some(count) = c.unacked.remove(off) {
                c.requeued.insert(*off, count);
            }
        }
        drop(c);
        self.notify.notify_waiters();
    }

    /// Drops every ready message; returns how many.
    pub fn purge(&self) -> Result<u64> {
        let mut c = self.cursor();
        let n = c.ready(self.log.high_watermark());
        let requeued: Vec<u64> = std::mem::take(&mut c.requeued).into_keys().collect();
        c.ack_all(&requeued)?;
        let (from, to) = (c.next, self.log.high_watermark());
        if to > from {
            c.acked.insert_range(from, to);
            c.store.journal_range(from, to)?;
        }
        c.buffer.clear();
        c.next = to.max(c.next);
        c.read_pos = c.next;
        let floor = c.floor;
        c.floor = c.acked.advance(floor);
        c.dirty = true;
        Ok(n)
    }

    /// Messages ready for delivery.
    pub fn ready_count(&self) -> u64 {
        self.cursor().ready(self.log.high_watermark())
    }

    /// Delivered and not yet acknowledged.
    pub fn unacked_count(&self) -> usize {
        self.cursor().unacked.len()
    }

    fn consumers(&self) -> MutexGuard<'_, Consumers> {
        self.consumers.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn consumer_count(&self) -> u32 {
        self.consumers().count
    }

    /// Registers a consumer; an exclusive one only on a queue without
    /// consumers, and none beside an exclusive one.
    pub fn add_consumer(&self, exclusive: bool) -> Result<(), MessagingError> {
        let mut c = self.consumers();
        if c.exclusive || (exclusive && c.count > 0) {
            return Err(MessagingError::AccessRefused(format!("queue '{}' in exclusive use", self.spec.name)));
        }
        c.count += 1;
        c.exclusive = exclusive;
        c.ever = true;
        Ok(())
    }

    /// Returns true if this was the last consumer of an auto-delete queue
    /// (which the caller then deletes).
    pub fn remove_consumer(&self) -> bool {
        let mut c = self.consumers();
        c.count = c.count.saturating_sub(1);
        c.exclusive = false;
        c.count == 0 && self.spec.auto_delete && c.ever
    }

    /// Persists the cursor (if it changed) and deletes the acknowledged
    /// prefix of the log. Called periodically and at shutdown.
    pub(crate) fn maintain(&self, sync: bool) -> Result<()> {
        let floor = {
            let mut c = self.cursor();
            c.persist(sync)?;
            c.floor
        };
        let target = floor.min(self.log.high_watermark());
        if target > self.log.log_start_offset() {
            self.log.delete_records_before(target)?;
        }
        Ok(())
    }
}

impl Cursor {
    fn ack_one(&mut self, off: u64) -> Result<()> {
        self.ack_all(&[off])
    }

    fn ack_all(&mut self, offsets: &[u64]) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        for &o in offsets {
            self.acked.insert(o);
        }
        self.floor = self.acked.advance(self.floor);
        self.dirty = true;
        self.store.journal_acks(offsets)?;
        if self.store.journal_len() > 1 << 20 {
            self.persist(false)?;
        }
        Ok(())
    }

    fn ready(&self, hw: u64) -> u64 {
        let tail = hw.saturating_sub(self.next).saturating_sub(self.acked.count_from(self.next));
        tail + self.requeued.len() as u64
    }

    fn persist(&mut self, sync: bool) -> Result<()> {
        if !self.dirty && !sync {
            return Ok(());
        }
        let snap = Snapshot { floor: self.floor, acked: self.acked.ranges(), delivered_mark: self.delivered_mark };
        self.store.write_snapshot(&snap, sync)?;
        self.dirty = false;
        Ok(())
    }
}
