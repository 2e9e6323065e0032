//! A queue: a log of messages plus a cursor over it.
//!
//! The cursor knows the ack floor (every offset below is acknowledged), the
//! acknowledged offsets above it (as ranges), the deliveries not yet
//! acknowledged (with delivery counts) and the messages handed back for
//! redelivery. Its durable state ([`crate::messaging::cursor_store`]) is a
//! snapshot plus an append-only journal of acknowledgements, so an ack is one
//! small write and a kill -9 loses none. The ack floor advancing lets the
//! log's acknowledged prefix be deleted segment by segment.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use bytes::Bytes;
use ferry_log::Log;
use tokio::sync::Notify;

use crate::error::Result;
use crate::messaging::MessagingError;
use crate::messaging::args::{Overflow, QueueArgs};
use crate::messaging::cursor_store::{CursorStore, Snapshot};
use crate::messaging::exchange::Headers;
use crate::messaging::message::{self, Message, StoredMessage};
use crate::messaging::ranges::RangeSet;
use crate::messaging::vhost::Vhost;
use crate::metrics::QueueStats;

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
    /// Delivered, not yet acknowledged: offset -> (delivery count, body size).
    unacked: HashMap<u64, (u32, u32)>,
    /// Handed back, to be delivered again first: offset -> (count, size).
    requeued: BTreeMap<u64, (u32, u32)>,
    /// Offsets below this may have been delivered before the last start.
    delivered_before_boot: u64,
    /// Log end at open: transient messages below it died with the restart.
    boot_end: u64,
    /// The persisted "possibly delivered" mark.
    delivered_mark: u64,
    store: CursorStore,
    dirty: bool,
    /// Body bytes of ready messages (x-max-length-bytes).
    ready_bytes: u64,
    /// Priority queues: never-delivered messages by (priority desc, offset).
    priorities: Option<BTreeSet<(Reverse<u8>, u64)>>,
}

pub struct Queue {
    pub spec: QueueSpec,
    pub args: QueueArgs,
    log: Arc<Log>,
    dir: PathBuf,
    state: Mutex<Cursor>,
    notify: Arc<Notify>,
    deleted: AtomicBool,
    consumers: Mutex<Consumers>,
    /// For dead-lettering: the virtual host this queue belongs to.
    vhost: OnceLock<Weak<Vhost>>,
    /// Wall-clock ms of the last use (x-expires).
    last_used: AtomicU64,
    /// Messages published, delivered, acknowledged, dead-lettered.
    pub stats: QueueStats,
}

#[derive(Default)]
struct Consumers {
    count: u32,
    exclusive: bool,
    ever: bool,
    next_id: u64,
    /// Registration order; with single-active-consumer the first is active.
    order: Vec<u64>,
}

/// The result of a publish to one queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Published {
    /// Appended at this offset.
    Stored(u64),
    /// Refused: the queue is full and its overflow is reject-publish.
    Rejected,
}

/// A message leaving a queue for its dead-letter exchange, and why
/// (RabbitMQ's reasons: rejected, expired, maxlen, delivery_limit).
pub type Letter = (StoredMessage, &'static str);

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("spec", &self.spec).finish_non_exhaustive()
    }
}

impl Queue {
    /// Opens the queue over `log` (in `dir`), recovering its cursor.
    pub(crate) fn open(spec: QueueSpec, dir: &Path, log: Arc<Log>) -> Result<Arc<Queue>, MessagingError> {
        let args = QueueArgs::parse(&spec.arguments).map_err(MessagingError::PreconditionFailed)?;
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
            ready_bytes: 0,
            priorities: None,
        };
        cursor.persist(false)?;
        let notify = Arc::new(Notify::new());
        let n = notify.clone();
        log.set_hw_listener(Arc::new(move || n.notify_waiters()));
        let q = Arc::new(Queue {
            spec,
            args,
            log,
            dir: dir.to_path_buf(),
            state: Mutex::new(cursor),
            notify,
            deleted: AtomicBool::new(false),
            consumers: Mutex::new(Consumers::default()),
            vhost: OnceLock::new(),
            last_used: AtomicU64::new(now_ms() as u64),
            stats: QueueStats::default(),
        });
        if q.args.max_length_bytes.is_some() || q.args.max_priority.is_some() {
            q.rescan()?;
        }
        Ok(q)
    }

    /// Rebuilds what is kept in memory about ready messages after a start:
    /// their total size (x-max-length-bytes) and the priority index.
    fn rescan(&self) -> Result<()> {
        let mut c = self.cursor();
        let max = self.args.max_priority;
        let mut ix = BTreeSet::new();
        let mut pos = c.floor;
        let mut total = 0u64;
        while pos < self.log.high_watermark() {
            let Some(slice) = self.log.read(pos, READ_AHEAD)? else { break };
            let buf = Bytes::from(slice.to_vec()?);
            let msgs = message::decode_batches(&buf)?;
            let Some(last) = msgs.last() else { break };
            pos = last.offset + 1;
            for m in &msgs {
                if c.acked.contains(m.offset) {
                    continue;
                }
                if !m.persistent && m.offset < c.boot_end {
                    c.ack_one(m.offset)?;
                    continue;
                }
                total += m.body.len() as u64;
                if let Some(max) = max {
                    ix.insert((Reverse(m.priority.min(max)), m.offset));
                }
            }
        }
        c.ready_bytes = total;
        if max.is_some() {
            c.priorities = Some(ix);
        }
        Ok(())
    }

    pub(crate) fn set_vhost(&self, vhost: Weak<Vhost>) {
        let _ = self.vhost.set(vhost);
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

    /// Records a use (declare, consume, get) for x-expires.
    pub fn touch(&self) {
        self.last_used.store(now_ms() as u64, Ordering::Relaxed);
    }

    /// Unused past its x-expires.
    pub(crate) fn unused_expired(&self, now: i64) -> bool {
        self.args.expires.is_some_and(|ms| {
            self.consumer_count() == 0 && (now as u64).saturating_sub(self.last_used.load(Ordering::Relaxed)) >= ms
        })
    }

    fn expired(&self, m: &StoredMessage, now: i64) -> bool {
        m.expires_at.is_some_and(|e| now >= e)
            || self.args.message_ttl.is_some_and(|ttl| now >= m.timestamp.saturating_add(ttl as i64))
    }

    /// Appends `m` (unless the queue is full and refuses); returns its offset.
    /// Readable by consumers once the log makes it visible (for a durable
    /// queue: once on disk).
    pub fn publish(&self, m: &Message) -> Result<Published> {
        let now = now_ms();
        if !self.args.limited() && self.args.max_priority.is_none() {
            let batch = message::encode(m, now)?;
            let offset = self.log.append(&batch)?.base_offset;
            self.stats.published();
            return Ok(Published::Stored(offset));
        }
        let size = m.body.len() as u64;
        let mut c = self.cursor();
        let ready = c.ready(self.log.next_offset());
        let full = self.args.max_length.is_some_and(|max| ready >= max)
            || self.args.max_length_bytes.is_some_and(|max| c.ready_bytes + size > max);
        if full && self.args.overflow != Overflow::DropHead {
            drop(c);
            if self.args.overflow == Overflow::RejectPublishDlx {
                self.dead_letter(vec![(StoredMessage::from_message(m, now), "maxlen")]);
            }
            return Ok(Published::Rejected);
        }
        let batch = message::encode(m, now)?;
        let offset = self.log.append(&batch)?.base_offset;
        c.ready_bytes += size;
        if let (Some(ix), Some(max)) = (c.priorities.as_mut(), self.args.max_priority) {
            ix.insert((Reverse(m.priority.min(max)), offset));
        }
        self.stats.published();
        let letters = self.drop_heads(&mut c)?;
        drop(c);
        self.finish_letters(letters)?;
        Ok(Published::Stored(offset))
    }

    /// drop-head overflow: the oldest readable ready messages go.
    fn drop_heads(&self, c: &mut Cursor) -> Result<Vec<Letter>> {
        let mut letters = Vec::new();
        loop {
            let ready = c.ready(self.log.next_offset());
            let over = self.args.max_length.is_some_and(|max| ready > max)
                || self.args.max_length_bytes.is_some_and(|max| c.ready_bytes > max);
            if !over {
                return Ok(letters);
            }
            // Not readable yet (a durable queue's unsynced tail): the next
            // publish or the periodic sweep finishes the job.
            let Some(m) = self.pop_head(c)? else { return Ok(letters) };
            letters.push((m, "maxlen"));
        }
    }

    /// Takes the oldest ready message off the queue as if delivered.
    fn pop_head(&self, c: &mut Cursor) -> Result<Option<StoredMessage>> {
        if let Some((&off, _)) = c.requeued.first_key_value() {
            let (_, (count, size)) = c.requeued.pop_first().unwrap_or((off, (0, 0)));
            c.ready_bytes = c.ready_bytes.saturating_sub(u64::from(size));
            match self.read_one(off)? {
                Some(m) => {
                    c.unacked.insert(off, (count, size));
                    return Ok(Some(m));
                }
                None => c.ack_one(off)?,
            }
        }
        loop {
            let Some(m) = self.next_fresh(c)? else { return Ok(None) };
            if c.acked.contains(m.offset) {
                continue;
            }
            c.ready_bytes = c.ready_bytes.saturating_sub(m.body.len() as u64);
            c.unacked.insert(m.offset, (0, m.body.len() as u32));
            return Ok(Some(m));
        }
    }

    /// Calls `done` once the message at `offset` is on disk.
    pub fn on_durable(&self, offset: u64, done: impl FnOnce(bool) + Send + 'static) {
        self.log.on_durable(offset + 1, move |r| done(r.is_ok()));
    }

    /// The next message for consumer `consumer` (None: basic.get), if one
    /// is ready and, with single-active-consumer, the consumer is active.
    pub fn take(&self, consumer: Option<u64>) -> Result<Option<Delivery>> {
        if let Some(id) = consumer
            && !self.is_active(id)
        {
            return Ok(None);
        }
        let mut letters = Vec::new();
        let r = {
            let mut c = self.cursor();
            self.take_inner(&mut c, &mut letters)
        };
        self.finish_letters(letters)?;
        r
    }

    fn take_inner(&self, c: &mut Cursor, letters: &mut Vec<Letter>) -> Result<Option<Delivery>> {
        if self.is_deleted() {
            return Ok(None);
        }
        let now = now_ms();
        while let Some((off, (count, size))) = c.requeued.pop_first() {
            c.ready_bytes = c.ready_bytes.saturating_sub(u64::from(size));
            match self.read_one(off)? {
                Some(message) => {
                    c.unacked.insert(off, (count + 1, size));
                    if self.expired(&message, now) {
                        letters.push((message, "expired"));
                        continue;
                    }
                    return Ok(Some(Delivery { message, redelivered: true, delivery_count: count + 1 }));
                }
                None => c.ack_one(off)?,
            }
        }
        loop {
            let Some(m) = self.next_fresh(c)? else { return Ok(None) };
            if c.acked.contains(m.offset) {
                continue;
            }
            let size = m.body.len() as u32;
            c.ready_bytes = c.ready_bytes.saturating_sub(u64::from(size));
            if !m.persistent && m.offset < c.boot_end {
                // Transient messages do not survive a restart.
                c.ack_one(m.offset)?;
                continue;
            }
            if self.expired(&m, now) {
                c.unacked.insert(m.offset, (0, size));
                letters.push((m, "expired"));
                continue;
            }
            let redelivered = m.offset < c.delivered_before_boot.min(c.boot_end);
            if m.offset >= c.delivered_mark {
                c.delivered_mark = m.offset + DELIVERED_WINDOW;
                let mark = c.delivered_mark;
                c.store.journal_mark(mark)?;
            }
            c.unacked.insert(m.offset, (1, size));
            return Ok(Some(Delivery { message: m, redelivered, delivery_count: 1 }));
        }
    }

    /// Dead-letters `letters` (if the queue has a dead-letter exchange),
    /// then acknowledges them: a crash in between delivers them twice
    /// rather than never.
    fn finish_letters(&self, letters: Vec<Letter>) -> Result<()> {
        if letters.is_empty() {
            return Ok(());
        }
        let offsets: Vec<u64> = letters.iter().map(|(m, _)| m.offset).collect();
        self.dead_letter(letters);
        self.settle(&offsets).map(|_| ())
    }

    fn dead_letter(&self, letters: Vec<Letter>) {
        if self.args.dead_letter_exchange.is_none() {
            return;
        }
        if let Some(v) = self.vhost.get().and_then(Weak::upgrade) {
            v.dead_letter(self, letters);
        }
    }

    /// The next message never delivered: in log order, or for a priority
    /// queue the oldest readable one of the highest priority.
    fn next_fresh(&self, c: &mut Cursor) -> Result<Option<StoredMessage>> {
        if let Some(ix) = c.priorities.as_mut() {
            let hw = self.log.high_watermark();
            loop {
                let Some(&key) = ix.iter().find(|(_, off)| *off < hw) else { return Ok(None) };
                ix.remove(&key);
                match self.read_one(key.1)? {
                    Some(m) => return Ok(Some(m)),
                    None => continue,
                }
            }
        }
        if c.buffer.is_empty() && !self.refill(c)? {
            return Ok(None);
        }
        let m = c.buffer.pop_front();
        if let Some(m) = &m {
            c.next = m.offset + 1;
        }
        Ok(m)
    }

    /// Fills the read-ahead buffer from the log; false if nothing is there.
    fn refill(&self, c: &mut Cursor) -> Result<bool> {
        let start = self.log.log_start_offset();
        if c.read_pos < start {
            c.read_pos = start;
            c.next = c.next.max(start);
        }
        if c.read_pos >= self.log.high_watermark() {
            return Ok(false);
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

    /// A consumer acknowledges deliveries. Offsets not outstanding are
    /// ignored.
    pub fn ack(&self, offsets: &[u64]) -> Result<()> {
        let n = self.settle(offsets)?;
        self.stats.acked(n as u64);
        Ok(())
    }

    /// Deliveries made without acknowledgement (auto-ack) leave the queue.
    pub fn auto_ack(&self, offsets: &[u64]) -> Result<()> {
        self.settle(offsets).map(|_| ())
    }

    /// Removes outstanding deliveries for good; returns how many were.
    fn settle(&self, offsets: &[u64]) -> Result<usize> {
        let mut c = self.cursor();
        let done: Vec<u64> = offsets.iter().copied().filter(|o| c.unacked.remove(o).is_some()).collect();
        c.ack_all(&done)?;
        Ok(done.len())
    }

    /// Rejected without requeue: retried later (`x-retry-delays`), else
    /// dead-lettered (reason `rejected`) or dropped.
    pub fn reject(&self, offsets: &[u64]) -> Result<()> {
        if self.args.dead_letter_exchange.is_none() && self.args.retry_delays.is_empty() {
            return self.settle(offsets).map(|_| ());
        }
        let mut letters = Vec::new();
        for &off in offsets {
            let Some(m) = self.read_one(off)? else {
                self.settle(&[off])?;
                continue;
            };
            match self.args.retry_delays.get(m.retries as usize) {
                Some(&delay) => {
                    // Held in the delay store first, then acknowledged here:
                    // a crash in between retries twice, never loses it.
                    if let Some(v) = self.vhost.get().and_then(Weak::upgrade) {
                        v.schedule_retry(self, &m, delay)?;
                    }
                    self.settle(&[off])?;
                }
                None => letters.push((m, "rejected")),
            }
        }
        self.finish_letters(letters)
    }

    /// Hands deliveries back for redelivery (nack/reject with requeue, a
    /// channel closing with unacknowledged messages). Past x-delivery-limit
    /// a message is dead-lettered instead.
    pub fn requeue(&self, offsets: &[u64]) -> Result<()> {
        let mut over = Vec::new();
        {
            let mut c = self.cursor();
            for off in offsets {
                if let Some((count, size)) = c.unacked.get(off).copied() {
                    if self.args.delivery_limit.is_some_and(|limit| count > limit) {
                        over.push(*off);
                        continue;
                    }
                    c.unacked.remove(off);
                    c.requeued.insert(*off, (count, size));
                    c.ready_bytes += u64::from(size);
                }
            }
        }
        self.notify.notify_waiters();
        let mut letters = Vec::new();
        for off in over {
            match self.read_one(off)? {
                Some(m) => letters.push((m, "delivery_limit")),
                None => {
                    self.settle(&[off])?;
                }
            }
        }
        self.finish_letters(letters)
    }

    /// Expired messages at the head of the queue leave (dead-lettered),
    /// consumers or not; drop-head limits catch up. Called periodically.
    pub(crate) fn sweep(&self) -> Result<()> {
        let mut letters = Vec::new();
        {
            let mut c = self.cursor();
            let now = now_ms();
            while c.priorities.is_none() {
                if c.buffer.is_empty() && (!c.requeued.is_empty() || !self.refill(&mut c)?) {
                    break;
                }
                let Some(front) = c.buffer.front() else { break };
                if !c.acked.contains(front.offset) && !self.expired(front, now) {
                    break;
                }
                let Some(m) = self.pop_head(&mut c)? else { break };
                letters.push((m, "expired"));
            }
            if self.args.limited() {
                letters.extend(self.drop_heads(&mut c)?);
            }
        }
        self.finish_letters(letters)
    }

    /// Drops every ready message; returns how many.
    pub fn purge(&self) -> Result<u64> {
        let mut c = self.cursor();
        // The log end, not the high watermark: appended messages not yet
        // readable (a durable queue's unsynced tail) are purged too.
        let end = self.log.next_offset();
        let n = c.ready(end);
        let requeued: Vec<u64> = std::mem::take(&mut c.requeued).into_keys().collect();
        c.ack_all(&requeued)?;
        if let Some(ix) = c.priorities.as_mut() {
            let ready: Vec<u64> = std::mem::take(ix).into_iter().map(|(_, off)| off).collect();
            c.ack_all(&ready)?;
            c.ready_bytes = 0;
            return Ok(n);
        }
        let (from, to) = (c.next, end);
        if to > from {
            c.acked.insert_range(from, to);
            c.store.journal_range(from, to)?;
        }
        c.buffer.clear();
        c.next = to.max(c.next);
        c.read_pos = c.next;
        let floor = c.floor;
        c.floor = c.acked.advance(floor);
        c.ready_bytes = 0;
        c.dirty = true;
        Ok(n)
    }

    /// Messages ready for delivery (counting appended ones a durable
    /// queue makes readable once on disk).
    pub fn ready_count(&self) -> u64 {
        self.cursor().ready(self.log.next_offset())
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

    /// Registers a consumer and returns its id; an exclusive one only on a
    /// queue without consumers, and none beside an exclusive one.
    pub fn add_consumer(&self, exclusive: bool) -> Result<u64, MessagingError> {
        let mut c = self.consumers();
        if c.exclusive || (exclusive && c.count > 0) {
            return Err(MessagingError::AccessRefused(format!("queue '{}' in exclusive use", self.spec.name)));
        }
        c.count += 1;
        c.exclusive = exclusive;
        c.ever = true;
        c.next_id += 1;
        let id = c.next_id;
        c.order.push(id);
        drop(c);
        self.touch();
        Ok(id)
    }

    /// With single-active-consumer, only the oldest consumer gets messages.
    pub fn is_active(&self, id: u64) -> bool {
        !self.args.single_active_consumer || self.consumers().order.first() == Some(&id)
    }

    /// Returns true if this was the last consumer of an auto-delete queue
    /// (which the caller then deletes).
    pub fn remove_consumer(&self, id: u64) -> bool {
        let mut c = self.consumers();
        let Some(pos) = c.order.iter().position(|&x| x == id) else { return false };
        c.order.remove(pos);
        c.count = c.count.saturating_sub(1);
        c.exclusive = false;
        let last = c.count == 0 && self.spec.auto_delete && c.ever;
        drop(c);
        self.touch();
        // The next single active consumer takes over.
        self.notify.notify_waiters();
        last
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
        // Only whole segments give space back; moving the start offset alone
        // would just cost a checkpoint write.
        if target > self.log.log_start_offset() && self.log.segment_count() > 1 {
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
        if let Some(ix) = &self.priorities {
            return (ix.len() + self.requeued.len()) as u64;
        }
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
