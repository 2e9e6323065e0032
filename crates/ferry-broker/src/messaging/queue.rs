//! A queue: a log of messages plus a cursor over it ([`CursorLog`], the
//! model every queue shares: ack floor, acknowledged ranges, deliveries
//! out with delivery counts, messages handed back for redelivery, a
//! snapshot plus a journal so an ack is one small write and a kill -9
//! loses none). The ack floor advancing lets the log's acknowledged prefix
//! be deleted segment by segment.
//!
//! What is AMQP's own lives here, beside the cursor under its lock: the
//! read-ahead buffer, the ready bytes (x-max-length-bytes) and the
//! priority index.

use std::cmp::Reverse;
use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use bytes::Bytes;
use ferry_log::{AppendInfo, Log};
use ferry_util::time::{now_ms, now_ms_u64};
use tokio::sync::Notify;

use crate::error::Result;
use crate::messaging::MessagingError;
use crate::messaging::args::{Overflow, QueueArgs};
use crate::messaging::exchange::Headers;
use crate::messaging::message::{self, Message, StoredMessage};
use crate::messaging::vhost::Vhost;
use crate::metrics::QueueStats;
use crate::partition::{Acks, Partition};
use crate::queue::{CursorLog, Outstanding, Snapshots, Tracked, Trim};
/// Bytes read from the log per refill of the read-ahead buffer.
const READ_AHEAD: usize = 256 * 1024;
/// Bodies per record batch of [`Queue::publish_all`] (then a new batch, so
/// no batch nears the log's size limit).
const BATCH_BYTES: usize = 256 * 1024;

/// A queue's declared properties.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueSpec {
    /// The queue's name, unique within its virtual host.
    pub name: String,
    /// Survives a broker restart (definition and persistent messages).
    pub durable: bool,
    /// The connection that owns an exclusive queue.
    pub exclusive_owner: Option<u64>,
    /// Deleted once its last consumer is gone (having had one).
    pub auto_delete: bool,
    /// The declare's `x-` arguments, as given; parsed into [`QueueArgs`].
    pub arguments: Headers,
}

/// One message handed to a consumer.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The message, with its offset in the queue's log.
    pub message: StoredMessage,
    /// May have been delivered before (a requeue, or before a restart).
    pub redelivered: bool,
    /// Deliveries of this message so far, this one included (1 on the first).
    pub delivery_count: u32,
}

/// What the queue keeps beside its cursor, under the cursor's lock.
#[derive(Default)]
struct Ready {
    /// Where the read-ahead buffer ends.
    read_pos: u64,
    buffer: VecDeque<StoredMessage>,
    /// Body bytes of ready messages (x-max-length-bytes).
    ready_bytes: u64,
    /// Priority queues: never-delivered messages by (priority desc, offset).
    priorities: Option<BTreeSet<(Reverse<u8>, u64)>>,
}

/// The cursor with the queue's state beside it, locked.
type Cursor = Tracked<Ready>;

/// A queue: its log, its cursor and its consumers.
pub struct Queue {
    /// How it was declared.
    pub spec: QueueSpec,
    /// Its parsed `x-` arguments (limits, dead-lettering, priorities, ...).
    pub args: QueueArgs,
    log: Arc<Log>,
    /// A quorum queue's replicated partition (this node leads it): messages
    /// are appended through it and readable up to its high watermark, and
    /// the cursor is records in it. `None`: a node-local queue.
    partition: Option<Arc<Partition>>,
    dir: PathBuf,
    state: CursorLog<Ready>,
    notify: Arc<Notify>,
    deleted: AtomicBool,
    consumers: Mutex<Consumers>,
    /// For dead-lettering: the virtual host this queue belongs to.
    vhost: OnceLock<Weak<Vhost>>,
    /// Wall-clock ms of the last use (x-expires).
    last_used: AtomicU64,
    /// Messages published, delivered, acknowledged, dead-lettered.
    pub stats: QueueStats,
    /// Names this opening of the queue (a quorum queue's: one leadership)
    /// to forwarding nodes, whose pipelined publishes are confirmed only
    /// by the leadership that appended them (random: unique across
    /// restarts).
    leadership: u64,
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

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("spec", &self.spec).finish_non_exhaustive()
    }
}

impl Queue {
    /// Opens the queue over `log` (in `dir`), recovering its cursor.
    pub(crate) fn open(spec: QueueSpec, dir: &Path, log: Arc<Log>) -> Result<Arc<Queue>, MessagingError> {
        let args = QueueArgs::parse(&spec.arguments).map_err(MessagingError::PreconditionFailed)?;
        let state = CursorLog::open(dir, log.clone(), Snapshots::InLine, Trim::WholeSegments, Ready::default())?;
        let notify = Arc::new(Notify::new());
        let n = notify.clone();
        log.set_hw_listener(Arc::new(move || n.notify_waiters()));
        Self::build(spec, args, dir, log, None, state, notify)
    }

    /// Opens a quorum queue on `partition`, which this node leads (issue
    /// #17): its cursor is rebuilt from the cursor records in the
    /// partition's log, as the previous leader left it
    /// ([`CursorLog::open_replicated`]).
    pub fn open_replicated(spec: QueueSpec, partition: Arc<Partition>) -> Result<Arc<Queue>, MessagingError> {
        let args = QueueArgs::parse(&spec.arguments).map_err(MessagingError::PreconditionFailed)?;
        let state = CursorLog::open_replicated(partition.clone(), Ready::default())?;
        let log = partition.log().clone();
        let dir = log.dir().to_path_buf();
        let notify = Arc::new(Notify::new());
        let q = Self::build(spec, args, &dir, log, Some(partition.clone()), state, notify)?;
        spawn_hw_bridge(Arc::downgrade(&q), &partition);
        Ok(q)
    }

    fn build(
        spec: QueueSpec,
        args: QueueArgs,
        dir: &Path,
        log: Arc<Log>,
        partition: Option<Arc<Partition>>,
        state: CursorLog<Ready>,
        notify: Arc<Notify>,
    ) -> Result<Arc<Queue>, MessagingError> {
        {
            let mut c = state.lock();
            c.extra.read_pos = c.cursor.floor();
        }
        let q = Arc::new(Queue {
            spec,
            args,
            log,
            partition,
            dir: dir.to_path_buf(),
            state,
            notify,
            deleted: AtomicBool::new(false),
            consumers: Mutex::new(Consumers::default()),
            vhost: OnceLock::new(),
            last_used: AtomicU64::new(now_ms_u64()),
            stats: QueueStats::default(),
            leadership: uuid::Uuid::new_v4().as_u64_pair().0,
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
        let mut pos = c.cursor.floor();
        let mut total = 0u64;
        while pos < self.readable_end() {
            let Some(slice) = self.read_log(pos, READ_AHEAD)? else { break };
            let buf = Bytes::from(slice.to_vec()?);
            let msgs = message::decode_batches(&buf)?;
            let Some(last) = msgs.last() else { break };
            pos = last.offset + 1;
            for m in &msgs {
                if c.cursor.is_acked(m.offset) {
                    continue;
                }
                if !m.persistent && m.offset < c.cursor.boot_end() {
                    c.ack(&[m.offset])?;
                    continue;
                }
                total += m.body.len() as u64;
                if let Some(max) = max {
                    ix.insert((Reverse(m.priority.min(max)), m.offset));
                }
            }
        }
        c.extra.ready_bytes = total;
        if max.is_some() {
            c.extra.priorities = Some(ix);
        }
        Ok(())
    }

    pub(crate) fn set_vhost(&self, vhost: Weak<Vhost>) {
        let _ = self.vhost.set(vhost);
    }

    /// Whether the queue knows its vhost (for dead letters and retries).
    pub(crate) fn has_vhost(&self) -> bool {
        self.vhost.get().is_some()
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// Consumers see messages below this: the log's high watermark, or a
    /// quorum queue's replicated one (on every in-sync replica).
    fn readable_end(&self) -> u64 {
        self.partition.as_ref().map_or_else(|| self.log.high_watermark(), |p| p.high_watermark())
    }

    /// Whole batches from `offset`, up to [`Queue::readable_end`].
    fn read_log(&self, offset: u64, max_bytes: usize) -> Result<Option<ferry_log::ReadSlice>> {
        match &self.partition {
            Some(p) => p.read(offset, max_bytes),
            None => Ok(self.log.read(offset, max_bytes)?),
        }
    }

    /// Appends an encoded message; a quorum queue's goes through its
    /// partition (refused when this node no longer leads it, or when the
    /// ISR is below min.insync.replicas).
    fn append(&self, batch: &[u8]) -> Result<AppendInfo> {
        match &self.partition {
            Some(p) => Ok(p.append(batch, Acks::All)?.info),
            None => Ok(self.log.append(batch)?),
        }
    }

    /// This opening's name for forwarding nodes (see the field).
    pub(crate) fn leadership(&self) -> u64 {
        self.leadership
    }

    /// Whether this is a quorum queue (on a replicated partition).
    pub fn is_replicated(&self) -> bool {
        self.partition.is_some()
    }

    fn cursor(&self) -> MutexGuard<'_, Cursor> {
        self.state.lock()
    }

    /// Woken when messages become available (appended and readable, or
    /// handed back) and when the queue is deleted.
    pub fn notifier(&self) -> &Notify {
        &self.notify
    }

    /// Whether the queue was deleted; consumers still holding it should stop.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    pub(crate) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Records a use (declare, consume, get) for x-expires.
    pub fn touch(&self) {
        self.last_used.store(now_ms_u64(), Ordering::Relaxed);
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
        self.publish_tagged(m, None)
    }

    /// [`Queue::publish`], the record carrying its publisher id `tag`
    /// (a quorum queue's, `messaging::publish_ids`).
    pub(crate) fn publish_tagged(&self, m: &Message, tag: Option<&str>) -> Result<Published> {
        let now = now_ms();
        if !self.args.limited() && self.args.max_priority.is_none() {
            let batch = message::encode_tagged(m, now, tag)?;
            let offset = self.append(&batch)?.base_offset;
            self.stats.published();
            return Ok(Published::Stored(offset));
        }
        let size = m.body.len() as u64;
        let mut c = self.cursor();
        let ready = ready(&c, self.log.next_offset());
        let full = self.args.max_length.is_some_and(|max| ready >= max)
            || self.args.max_length_bytes.is_some_and(|max| c.extra.ready_bytes + size > max);
        if full && self.args.overflow != Overflow::DropHead {
            drop(c);
            if self.args.overflow == Overflow::RejectPublishDlx {
                self.dead_letter(vec![(StoredMessage::from_message(m, now), "maxlen")]);
            }
            return Ok(Published::Rejected);
        }
        let batch = message::encode_tagged(m, now, tag)?;
        let offset = self.append(&batch)?.base_offset;
        c.extra.ready_bytes += size;
        if let (Some(ix), Some(max)) = (c.extra.priorities.as_mut(), self.args.max_priority) {
            ix.insert((Reverse(m.priority.min(max)), offset));
        }
        self.stats.published();
        let letters = self.drop_heads(&mut c)?;
        drop(c);
        self.finish_letters(letters)?;
        Ok(Published::Stored(offset))
    }

    /// Appends `ms`, each with its publisher id (`tags`), as one record
    /// batch: one append and one flush request for a forwarded batch.
    /// Returns the first one's offset (the rest follow it), or `None`
    /// when the queue takes them one at a time (length limits,
    /// priorities: [`Queue::publish_tagged`]) or they are too large
    /// together.
    pub(crate) fn publish_tagged_batch(&self, ms: &[&Message], tags: &[String]) -> Result<Option<u64>> {
        let bytes: usize = ms.iter().map(|m| m.body.len()).sum();
        if self.args.limited() || self.args.max_priority.is_some() || bytes > BATCH_BYTES {
            return Ok(None);
        }
        let offset = self.append(&message::encode_all_tagged(ms, tags, now_ms())?)?.base_offset;
        ms.iter().for_each(|_| self.stats.published());
        Ok(Some(offset))
    }

    /// Appends `ms` as few record batches (one per [`BATCH_BYTES`] of
    /// bodies: one append and one flush request for many messages, a
    /// front-end's group commit); returns the last one's offset. A queue
    /// with length limits or priorities takes them one at a time
    /// ([`Queue::publish`]), stopping at the first refused: then
    /// `Rejected`, the ones before it stored. `ms` must not be empty.
    pub fn publish_all(&self, ms: &[Message]) -> Result<Published> {
        if self.args.limited() || self.args.max_priority.is_some() {
            let mut last = Published::Rejected;
            for m in ms {
                last = self.publish(m)?;
                if last == Published::Rejected {
                    break;
                }
            }
            return Ok(last);
        }
        let (mut last, mut rest) = (Published::Rejected, ms);
        while !rest.is_empty() {
            let mut bytes = 0;
            let n = rest
                .iter()
                .take_while(|m| {
                    let before = bytes;
                    bytes += m.body.len();
                    before < BATCH_BYTES
                })
                .count();
            let (now, later) = rest.split_at(n.max(1));
            let info = self.append(&message::encode_all(now, now_ms())?)?;
            now.iter().for_each(|_| self.stats.published());
            last = Published::Stored(info.last_offset);
            rest = later;
        }
        Ok(last)
    }

    /// drop-head overflow: the oldest readable ready messages go.
    fn drop_heads(&self, c: &mut Cursor) -> Result<Vec<Letter>> {
        let mut letters = Vec::new();
        loop {
            let ready = ready(c, self.log.next_offset());
            let over = self.args.max_length.is_some_and(|max| ready > max)
                || self.args.max_length_bytes.is_some_and(|max| c.extra.ready_bytes > max);
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
        if let Some((off, out)) = c.cursor.pop_requeued() {
            c.extra.ready_bytes = c.extra.ready_bytes.saturating_sub(u64::from(out.size));
            match self.read_one(off)? {
                Some(m) => {
                    c.cursor.deliver(off, out);
                    return Ok(Some(m));
                }
                None => c.ack(&[off])?,
            }
        }
        loop {
            let Some(m) = self.next_fresh(c)? else { return Ok(None) };
            if not_fresh(c, m.offset) {
                continue;
            }
            c.extra.ready_bytes = c.extra.ready_bytes.saturating_sub(m.body.len() as u64);
            c.cursor.deliver(m.offset, Outstanding { count: 0, size: m.body.len() as u32 });
            return Ok(Some(m));
        }
    }

    /// Calls `done` once the message at `offset` is on disk.
    pub fn on_durable(&self, offset: u64, done: impl FnOnce(bool) + Send + 'static) {
        match &self.partition {
            // A quorum queue confirms once the ISR has it.
            Some(p) => p.on_acknowledged(offset + 1, done),
            None => self.log.on_durable(offset + 1, move |r| done(r.is_ok())),
        }
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
        while let Some((off, out)) = c.cursor.pop_requeued() {
            c.extra.ready_bytes = c.extra.ready_bytes.saturating_sub(u64::from(out.size));
            match self.read_one(off)? {
                Some(message) => {
                    let count = out.count + 1;
                    c.cursor.deliver(off, Outstanding { count, size: out.size });
                    if self.expired(&message, now) {
                        letters.push((message, "expired"));
                        continue;
                    }
                    return Ok(Some(Delivery { message, redelivered: true, delivery_count: count }));
                }
                None => c.ack(&[off])?,
            }
        }
        loop {
            let Some(m) = self.next_fresh(c)? else { return Ok(None) };
            if not_fresh(c, m.offset) {
                continue;
            }
            let size = m.body.len() as u32;
            c.extra.ready_bytes = c.extra.ready_bytes.saturating_sub(u64::from(size));
            if !m.persistent && m.offset < c.cursor.boot_end() {
                // Transient messages do not survive a restart.
                c.ack(&[m.offset])?;
                continue;
            }
            if self.expired(&m, now) {
                c.cursor.deliver(m.offset, Outstanding { count: 0, size });
                letters.push((m, "expired"));
                continue;
            }
            let redelivered = c.cursor.maybe_delivered_before(m.offset);
            c.note_delivered(m.offset)?;
            c.cursor.deliver(m.offset, Outstanding { count: 1, size });
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
        if let Some(ix) = c.extra.priorities.as_mut() {
            let hw = self.readable_end();
            loop {
                let Some(&key) = ix.iter().find(|(_, off)| *off < hw) else { return Ok(None) };
                ix.remove(&key);
                match self.read_one(key.1)? {
                    Some(m) => return Ok(Some(m)),
                    None => continue,
                }
            }
        }
        if c.extra.buffer.is_empty() && !self.refill(c)? {
            return Ok(None);
        }
        let m = c.extra.buffer.pop_front();
        if let Some(m) = &m {
            c.cursor.taken_through(m.offset);
        }
        Ok(m)
    }

    /// Fills the read-ahead buffer from the log; false if nothing is there.
    fn refill(&self, c: &mut Cursor) -> Result<bool> {
        let start = self.log.log_start_offset();
        if c.extra.read_pos < start {
            c.extra.read_pos = start;
            c.cursor.skip_to(start);
        }
        let r = &mut c.extra;
        if r.read_pos >= self.readable_end() {
            return Ok(false);
        }
        let Some(slice) = self.read_log(r.read_pos, READ_AHEAD)? else { return Ok(false) };
        let buf = Bytes::from(slice.to_vec()?);
        for m in message::decode_batches(&buf)? {
            if m.offset >= r.read_pos {
                r.read_pos = m.offset + 1;
                r.buffer.push_back(m);
            }
        }
        Ok(!r.buffer.is_empty())
    }

    /// The message at `offset`, if still in the log.
    pub(crate) fn read_one(&self, offset: u64) -> Result<Option<StoredMessage>> {
        if offset < self.log.log_start_offset() {
            return Ok(None);
        }
        let Some(slice) = self.read_log(offset, 1)? else { return Ok(None) };
        let buf = Bytes::from(slice.to_vec()?);
        Ok(message::decode_batches(&buf)?.into_iter().find(|m| m.offset == offset))
    }

    /// Up to `n` ready messages in delivery order (handed-back ones first,
    /// then never-taken ones in log order) after skipping `skip` of them,
    /// left in place (Redis's LRANGE over a list). Not for priority queues,
    /// whose delivery order this does not follow.
    pub fn peek(&self, skip: u64, n: usize) -> Result<Vec<StoredMessage>> {
        let (requeued, next): (Vec<u64>, u64) = {
            let c = self.cursor();
            (c.cursor.requeued().collect(), c.cursor.next())
        };
        let (mut skip, mut out) = (skip, Vec::new());
        for off in requeued {
            if out.len() >= n {
                return Ok(out);
            }
            let Some(m) = self.read_one(off)? else { continue };
            if skip > 0 {
                skip -= 1;
            } else {
                out.push(m);
            }
        }
        let (mut pos, end) = (next.max(self.log.log_start_offset()), self.readable_end());
        while pos < end && out.len() < n {
            let Some(slice) = self.read_log(pos, READ_AHEAD)? else { break };
            let buf = Bytes::from(slice.to_vec()?);
            let batch = message::decode_batches(&buf)?;
            let Some(last) = batch.last().map(|m| m.offset) else { break };
            let c = self.cursor();
            for m in batch.into_iter().filter(|m| m.offset >= pos && !c.cursor.is_acked(m.offset)) {
                if c.cursor.outstanding(m.offset).is_some() || out.len() >= n {
                    continue;
                }
                if skip > 0 {
                    skip -= 1;
                } else {
                    out.push(m);
                }
            }
            pos = last + 1;
        }
        Ok(out)
    }

    /// A consumer acknowledges deliveries. Offsets not outstanding are
    /// ignored.
    pub fn ack(&self, offsets: &[u64]) -> Result<()> {
        let n = self.settle(offsets)?;
        self.stats.acked(n as u64);
        Ok(())
    }

    /// Acknowledgements forwarded by another node (issue #17): each offset
    /// is settled wherever it is: out with a consumer, handed back, or
    /// (after a leader move) not yet delivered again by this leader. So an
    /// ack re-sent to a new leader still holds. Offsets past the log end
    /// are ignored.
    pub fn ack_anywhere(&self, offsets: &[u64]) -> Result<()> {
        let end = self.log.next_offset();
        let mut c = self.cursor();
        let mut done = c.settle(offsets)?;
        let rest: Vec<u64> = offsets
            .iter()
            .copied()
            .filter(|&o| o < end && !c.cursor.is_acked(o) && c.cursor.outstanding(o).is_none())
            .collect();
        for &o in &rest {
            c.cursor.forget_requeued(o);
        }
        c.ack(&rest)?;
        done += rest.len();
        drop(c);
        self.stats.acked(done as u64);
        Ok(())
    }

    /// Calls `done` once every cursor change made so far is safe: on the
    /// ISR for a quorum queue (its cursor records), at once otherwise (a
    /// node-local cursor's journal is its own business).
    pub fn on_settled(&self, done: impl FnOnce(bool) + Send + 'static) {
        match &self.partition {
            Some(p) => p.on_acknowledged(self.log.next_offset(), done),
            None => done(true),
        }
    }

    /// Deliveries made without acknowledgement (auto-ack) leave the queue.
    pub fn auto_ack(&self, offsets: &[u64]) -> Result<()> {
        self.settle(offsets).map(|_| ())
    }

    /// Removes outstanding deliveries for good; returns how many were.
    fn settle(&self, offsets: &[u64]) -> Result<usize> {
        self.cursor().settle(offsets)
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
                    let Some(v) = self.vhost.get().and_then(Weak::upgrade) else {
                        self.settle(&[off])?;
                        continue;
                    };
                    match v.schedule_retry(self, &m, delay) {
                        Ok(None) => {
                            self.settle(&[off])?;
                        }
                        Ok(Some(wait)) => self.settle_once_held(&v, off, wait),
                        Err(MessagingError::Internal(e)) => return Err(e),
                        // The delay queue refused it (its vhost is going):
                        // dead-lettered as a retry-less queue would.
                        Err(e) => {
                            tracing::debug!(queue = %self.name(), error = %e, "retry not held; dead-lettered");
                            letters.push((m, "rejected"));
                        }
                    }
                }
                None => letters.push((m, "rejected")),
            }
        }
        self.finish_letters(letters)
    }

    /// Acknowledges `offset` once the replicated delay queue holds its
    /// retry (`wait`); if it never does, the message is handed back
    /// (redelivered now rather than lost). Until then it stays out with
    /// its consumer: a leader's death in between redelivers it, and the
    /// retry may come too (at-least-once, as the local store after a crash).
    fn settle_once_held(&self, vhost: &Vhost, offset: u64, wait: super::PublishWait) {
        // This queue as its vhost hands it out (the leadership's queue).
        let Some(me) = vhost.queue(self.name()).filter(|q| std::ptr::eq(Arc::as_ptr(q), self)) else {
            let _ = self.settle(&[offset]);
            return;
        };
        wait.on_done(move |held| {
            let done = if held { me.settle(&[offset]).map(|_| ()) } else { me.requeue(&[offset]) };
            if let Err(e) = done {
                tracing::debug!(queue = %me.name(), offset, error = %e, "settling a held retry failed");
            }
        });
    }

    /// Hands deliveries back for redelivery (nack/reject with requeue, a
    /// channel closing with unacknowledged messages). Past x-delivery-limit
    /// a message is dead-lettered instead.
    pub fn requeue(&self, offsets: &[u64]) -> Result<()> {
        let mut over = Vec::new();
        {
            let mut c = self.cursor();
            for &off in offsets {
                if let Some(out) = c.cursor.outstanding(off) {
                    if self.args.delivery_limit.is_some_and(|limit| out.count > limit) {
                        over.push(off);
                        continue;
                    }
                    c.requeue(off)?;
                    c.extra.ready_bytes += u64::from(out.size);
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
            while c.extra.priorities.is_none() {
                if c.extra.buffer.is_empty() && (c.cursor.requeued_len() > 0 || !self.refill(&mut c)?) {
                    break;
                }
                let Some(front) = c.extra.buffer.front() else { break };
                let (offset, settled) = (front.offset, not_fresh(&c, front.offset));
                if !settled && !self.expired(front, now) {
                    break;
                }
                // The front itself leaves: `pop_head` would skip a settled
                // front (one acknowledged before this leader took it: a
                // forwarded ack after a takeover) and expire the next
                // message instead, which is not due.
                let Some(m) = c.extra.buffer.pop_front() else { break };
                c.cursor.taken_through(offset);
                if settled {
                    continue;
                }
                let size = m.body.len() as u32;
                c.extra.ready_bytes = c.extra.ready_bytes.saturating_sub(u64::from(size));
                c.cursor.deliver(offset, Outstanding { count: 0, size });
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
        let n = ready(&c, end);
        let requeued = c.cursor.take_requeued();
        c.ack(&requeued)?;
        if let Some(ix) = c.extra.priorities.as_mut() {
            let ready: Vec<u64> = std::mem::take(ix).into_iter().map(|(_, off)| off).collect();
            c.ack(&ready)?;
            c.extra.ready_bytes = 0;
            return Ok(n);
        }
        let from = c.cursor.next();
        c.ack_range(from, end)?;
        c.extra.buffer.clear();
        c.extra.read_pos = c.cursor.next();
        c.extra.ready_bytes = 0;
        Ok(n)
    }

    /// Messages ready for delivery (counting appended ones a durable
    /// queue makes readable once on disk).
    pub fn ready_count(&self) -> u64 {
        ready(&self.cursor(), self.log.next_offset())
    }

    /// Delivered and not yet acknowledged.
    pub fn unacked_count(&self) -> usize {
        self.cursor().cursor.unacked_len()
    }

    fn consumers(&self) -> MutexGuard<'_, Consumers> {
        self.consumers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Consumers registered now.
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
        self.state.maintain(sync)
    }
}

/// Whether `offset`, met in log order, is not to go out as a first
/// delivery: acknowledged, or (after a quorum queue's takeover) handed
/// back before it, so it goes out from the requeued set with its count
/// and may be out now.
fn not_fresh(c: &Cursor, offset: u64) -> bool {
    c.cursor.is_acked(offset) || c.cursor.is_requeued(offset) || c.cursor.outstanding(offset).is_some()
}

/// Messages ready for delivery below `end`: handed back, or never taken
/// and not acknowledged (a purge acknowledges without taking).
fn ready(c: &Cursor, end: u64) -> u64 {
    let requeued = c.cursor.requeued_len() as u64;
    if let Some(ix) = &c.extra.priorities {
        return ix.len() as u64 + requeued;
    }
    let next = c.cursor.next();
    // Returned messages at or past `next` (a quorum queue's takeover) are
    // counted once, in the range.
    let requeued = requeued - c.cursor.requeued_from(next) as u64;
    end.saturating_sub(next).saturating_sub(c.cursor.acked_from(next)) + requeued
}

/// Wakes a quorum queue's consumers whenever its partition's replicated
/// high watermark moves (the partition's waiters are woken once per
/// registration; this re-registers), until the queue is dropped.
fn spawn_hw_bridge(queue: Weak<Queue>, partition: &Arc<Partition>) {
    let partition = Arc::downgrade(partition);
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(async move {
                let waiter = Arc::new(Notify::new());
                loop {
                    let Some(p) = partition.upgrade() else { return };
                    p.register_waiter(&waiter);
                    drop(p);
                    // Bounded, so a dropped queue is noticed.
                    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), waiter.notified()).await;
                    let Some(q) = queue.upgrade() else { return };
                    if q.is_deleted() {
                        return;
                    }
                    q.notify.notify_waiters();
                }
            });
        }
        Err(_) => {
            let _ = std::thread::Builder::new().name("ferry-quorum-queue".into()).spawn(move || {
                let signal = Arc::new(crate::Signal::default());
                loop {
                    let Some(p) = partition.upgrade() else { return };
                    p.register_signal(&signal);
                    drop(p);
                    signal.wait(std::time::Duration::from_millis(500));
                    let Some(q) = queue.upgrade() else { return };
                    if q.is_deleted() {
                        return;
                    }
                    q.notify.notify_waiters();
                }
            });
        }
    }
}
