//! One partition of a topic: its log plus what the protocol front-ends
//! need around it (acks, timestamp checks, long-poll wakeups).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};

use ferry_log::{AbortedTxn, AppendInfo, FlushPolicy, Log, LogError, ReadSlice, TimestampType};
use ferry_records::batch::{BatchHeader, HEADER_LEN};
use ferry_util::sync::lock;
use ferry_util::time::now_ms_u64;
use tokio::sync::{Notify, oneshot};

use crate::error::{BrokerError, Result};
use crate::producer::{ProducerStates, Sequence};
use crate::record_rules;
use crate::replicated::Replication;
use crate::topic_config::TopicSettings;

/// How much acknowledgement a producer asked for (Kafka's `acks`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    /// acks=0: the producer does not wait.
    None,
    /// acks=1: answered once the write reached the log (the OS).
    Leader,
    /// acks=all: answered once every in-sync replica has it; on one node,
    /// once it is on disk under the topic's flush policy.
    All,
}

/// One partition of a topic: its log, the topic's settings and the readers
/// waiting for new data.
pub struct Partition {
    /// Name of the topic it belongs to.
    pub topic: String,
    /// Partition number within the topic, from 0.
    pub index: i32,
    log: Arc<Log>,
    pub(crate) settings: Arc<RwLock<TopicSettings>>,
    /// Readers waiting for the high watermark (or the LSO) to move.
    waiters: Arc<Mutex<Vec<Waiter>>>,
    /// Replica fetches waiting for an append (they read past the high
    /// watermark, so an append must wake them before its fsync ends).
    fetchers: Arc<Mutex<Vec<Waiter>>>,
    /// Idempotent producers' sequences; held across check and append.
    pub(crate) producers: Mutex<ProducerStates>,
    pub(crate) producer_expiration_ms: u64,
    /// First offset of the oldest open transaction (`u64::MAX`: none);
    /// written under the `producers` lock, read without it.
    first_unstable: AtomicU64,
    /// Role, replicated high watermark and acks=all waiters (`replicated.rs`).
    pub(crate) repl: Arc<Replication>,
}

impl Partition {
    pub(crate) fn new(
        topic: &str,
        index: i32,
        log: Arc<Log>,
        settings: Arc<RwLock<TopicSettings>>,
        producer_expiration_ms: u64,
        hw_checkpoint: Option<u64>,
    ) -> Result<Partition> {
        let producers = ProducerStates::recover(log.dir(), &log, producer_expiration_ms)?;
        let first_unstable = producers.first_unstable_offset().unwrap_or(u64::MAX);
        log.set_uncleanable_from(first_unstable);
        let first_unstable = AtomicU64::new(first_unstable);
        let waiters: Arc<Mutex<Vec<Waiter>>> = Arc::default();
        let fetchers: Arc<Mutex<Vec<Waiter>>> = Arc::default();
        let repl = Arc::new(Replication::new(crate::hw_checkpoint::initial(&log, hw_checkpoint)));
        let (w, f, r, l) = (waiters.clone(), fetchers.clone(), repl.clone(), Arc::downgrade(&log));
        // Every local advance wakes readers: consumers wait for the
        // replicated high watermark (they look again), and replica fetches
        // for the leader's own durable end too (it may move the former).
        log.set_hw_listener(Arc::new(move || {
            if let Some(log) = l.upgrade() {
                r.refresh(log.high_watermark());
            }
            wake(&w);
            wake(&f);
        }));
        Ok(Partition {
            topic: topic.to_string(),
            index,
            log,
            settings,
            waiters,
            fetchers,
            producers: Mutex::new(producers),
            producer_expiration_ms,
            first_unstable,
            repl,
        })
    }

    /// Expires idle producers and writes the producer snapshot if it changed.
    pub fn snapshot_producers(&self) -> Result<()> {
        let now = now_ms_u64();
        let mut p = self.producers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        p.expire(now, self.producer_expiration_ms);
        p.snapshot(self.log.dir())
    }

    pub(crate) fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// Whole batches from `offset`, at most `max_bytes` unless the first
    /// batch is larger; `None` at the (replicated) high watermark.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Option<ReadSlice>> {
        Ok(self.log.read_upto(offset, max_bytes, self.high_watermark())?)
    }

    /// [`Partition::read`] for `read_committed` readers: stops before the
    /// first batch at or past `lso` (a [`Partition::last_stable_offset`]).
    pub fn read_committed(&self, offset: u64, max_bytes: usize, lso: u64) -> Result<Option<ReadSlice>> {
        Ok(self.log.read_upto(offset, max_bytes, lso.min(self.high_watermark()))?)
    }

    /// Readers in `read_committed` mode see offsets below this: the high
    /// watermark, or the start of the oldest open transaction if earlier.
    pub fn last_stable_offset(&self) -> u64 {
        self.high_watermark().min(self.first_unstable.load(Ordering::Acquire))
    }

    /// Aborted transactions that may cover offsets in `from..upto`.
    pub fn aborted_txns(&self, from: u64, upto: u64) -> Vec<AbortedTxn> {
        self.log.aborted_txns(from, upto)
    }

    /// Whether `producer_id` has an open transaction here.
    pub fn in_transaction(&self, producer_id: i64) -> bool {
        lock(&self.producers).is_ongoing(producer_id)
    }

    /// Whether (`producer_id`, `epoch`)'s transaction is verified here
    /// (KIP-890, see [`crate::producer::ProducerStates::txn_verified`]).
    pub fn txn_verified(&self, producer_id: i64, epoch: i16) -> bool {
        lock(&self.producers).txn_verified(producer_id, epoch)
    }

    /// Starts verifying a producer's transaction with its coordinator;
    /// returns the token [`Partition::finish_verification`] takes.
    pub fn begin_verification(&self, producer_id: i64, epoch: i16) -> u64 {
        lock(&self.producers).begin_verification(producer_id, epoch)
    }

    /// The coordinator's answer; false if a marker ended the transaction
    /// meanwhile.
    pub fn finish_verification(&self, producer_id: i64, token: u64, confirmed: bool) -> bool {
        lock(&self.producers).finish_verification(producer_id, token, confirmed)
    }

    /// Writes a transaction marker for `producer_id` and blocks until it is
    /// acknowledged as an acks=all write is (on every ISR member, durable
    /// under the flush policy), so the transaction coordinator records the
    /// transaction complete only once no leader change can lose a marker.
    /// Call from a blocking thread. Returns the marker's offset.
    pub fn write_marker(&self, producer_id: i64, epoch: i16, commit: bool, coordinator_epoch: i32) -> Result<u64> {
        let now = now_ms_u64();
        let batch =
            ferry_records::records::build_control_batch(producer_id, epoch, commit, coordinator_epoch, now as i64)
                .map_err(LogError::from)?;
        let (offset, leader_epoch) = {
            let mut states = lock(&self.producers);
            states.check_marker(producer_id, epoch, coordinator_epoch)?;
            let (leader_epoch, _) = self.leading()?;
            let info = self.log.append_as_leader(&batch, leader_epoch)?;
            let h = BatchHeader::parse(&batch)?;
            if let Some(aborted) = states.record_marker(&h, info.base_offset, commit, coordinator_epoch, now) {
                self.log.add_aborted_txn(aborted)?;
            }
            self.track_unstable(&states);
            (info.base_offset, leader_epoch)
        };
        self.wake_fetchers();
        let flush = self.settings.read().unwrap_or_else(std::sync::PoisonError::into_inner).log.flush;
        if flush == FlushPolicy::Always {
            self.log.flush_to(offset + 1)?;
        }
        // The LSO may have moved without the high watermark moving.
        self.wake_waiters();
        // Bounded: a coordinator whose call timed out sends the marker again.
        wait_blocking(self.repl.wait_for(offset + 1, leader_epoch))?;
        Ok(offset)
    }

    /// Publishes where the oldest open transaction begins, for readers
    /// (the last stable offset) and for the log's cleaner.
    pub(crate) fn track_unstable(&self, states: &ProducerStates) {
        let first = states.first_unstable_offset().unwrap_or(u64::MAX);
        self.first_unstable.store(first, Ordering::Release);
        self.log.set_uncleanable_from(first);
    }

    fn wake_waiters(&self) {
        wake(&self.waiters);
    }

    /// Wakes every reader waiting for this partition (the high watermark moved).
    pub(crate) fn wake_readers(&self) {
        wake(&self.waiters);
    }

    fn wake_fetchers(&self) {
        wake(&self.fetchers);
    }

    /// Wakes `waiter` (once) at the next append or high watermark move:
    /// for a replica fetch, which reads up to the log end.
    pub fn register_fetch_waiter(&self, waiter: &Arc<Notify>) {
        let mut w = lock(&self.fetchers);
        w.retain(Waiter::alive);
        w.push(Waiter::Task(Arc::downgrade(waiter)));
    }

    /// DeleteRecords: makes offsets below `offset` unreadable; the new log start.
    pub fn delete_records_before(&self, offset: u64) -> Result<u64> {
        Ok(self.log.delete_records_before(offset)?)
    }

    /// The first offset with a timestamp >= `ts`, and that timestamp.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(u64, i64)>> {
        Ok(self.log.offset_for_timestamp(ts)?)
    }

    /// The offset of the record with the largest timestamp, and that timestamp.
    pub fn max_timestamp_offset(&self) -> Result<Option<(u64, i64)>> {
        Ok(self.log.max_timestamp_offset()?)
    }

    /// Bytes on disk.
    pub fn size_bytes(&self) -> u64 {
        self.log.size_bytes()
    }

    /// Offset after the last record readers may see: on a leader, the
    /// smallest acknowledged end over the ISR (see `replicated.rs`).
    pub fn high_watermark(&self) -> u64 {
        self.repl.high_watermark()
    }

    /// First readable offset.
    pub fn log_start_offset(&self) -> u64 {
        self.log.log_start_offset()
    }

    /// Wakes `waiter` (once) the next time the high watermark advances.
    /// Register before checking for data, so no append slips between.
    pub fn register_waiter(&self, waiter: &Arc<Notify>) {
        let mut w = self.waiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        w.retain(Waiter::alive);
        w.push(Waiter::Task(Arc::downgrade(waiter)));
    }

    /// [`Partition::register_waiter`] for a thread: `signal` is raised
    /// once, the next time the high watermark or the LSO moves.
    pub fn register_signal(&self, signal: &Arc<Signal>) {
        let mut w = self.waiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        w.retain(Waiter::alive);
        if !w.iter().any(|x| matches!(x, Waiter::Thread(s) if std::ptr::eq(s.as_ptr(), Arc::as_ptr(signal)))) {
            w.push(Waiter::Thread(Arc::downgrade(signal)));
        }
    }

    /// Appends a producer's batches now (in call order) and returns what
    /// is left to wait for as `acks` asks. The write itself only reaches the
    /// page cache, so it runs on the caller's task; fsync happens on the
    /// log's flusher thread.
    pub fn append(&self, batches: &[u8], acks: Acks) -> Result<Appended> {
        self.append_checked(batches, acks, false)
    }

    /// [`Partition::append`]; with `verified_txn`, each transactional batch
    /// must also belong to a transaction verified here (KIP-890), checked
    /// under the lock the append holds, so a marker written since the
    /// verification refuses the batch (INVALID_TXN_STATE) instead of
    /// opening a transaction no coordinator knows.
    pub fn append_checked(&self, batches: &[u8], acks: Acks, verified_txn: bool) -> Result<Appended> {
        let _span = tracing::debug_span!("append", topic = %self.topic, partition = self.index).entered();
        let settings = self.settings.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let (epoch, isr) = self.leading()?;
        if acks == Acks::All && isr < settings.min_insync_replicas {
            return Err(BrokerError::NotEnoughReplicas { isr, min: settings.min_insync_replicas });
        }
        check_headers(batches, &settings)?;
        let batches = &*record_rules::apply(batches, &settings, &self.topic, self.index)?;
        let info = if first_producer_id(batches) >= 0 {
            self.append_idempotent(batches, epoch, verified_txn)?
        } else {
            self.log.append_as_leader(batches, epoch)?
        };
        // Followers copy it now, fsyncing while this node does.
        self.wake_fetchers();
        // acks=all: the high watermark passes the batch once every ISR
        // member has it acknowledged (on disk under the flush policy).
        let durable = (acks == Acks::All).then(|| self.repl.wait_for(info.last_offset + 1, epoch));
        Ok(Appended { info, durable })
    }
}

impl Partition {
    /// Batches from idempotent producers: each is checked against its
    /// producer's sequence; a retry of a batch already written is answered
    /// with the original offsets instead of being appended again.
    fn append_idempotent(&self, batches: &[u8], leader_epoch: i32, verified_txn: bool) -> Result<AppendInfo> {
        let mut states = self.producers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = now_ms_u64();
        let mut total: Option<AppendInfo> = None;
        let mut rest = batches;
        while !rest.is_empty() {
            let h = BatchHeader::parse(rest)?;
            let Some(one) = rest.get(..h.size) else {
                return Err(LogError::CorruptBatch("batch length past end of buffer").into());
            };
            rest = &rest[h.size..];
            let info = match states.check(&h)? {
                Sequence::Duplicate { base_offset, last_offset } => AppendInfo {
                    base_offset,
                    last_offset,
                    max_timestamp: -1,
                    log_append_time: None,
                    records: 0,
                    bytes: 0,
                },
                Sequence::Append => {
                    // A retry of a batch written is answered above even if
                    // its transaction has ended since.
                    if verified_txn
                        && h.is_transactional()
                        && !h.is_control()
                        && !states.txn_verified(h.producer_id, h.producer_epoch)
                    {
                        return Err(BrokerError::Txn(crate::txn::TxnError::InvalidTxnState));
                    }
                    let info = self.log.append_as_leader(one, leader_epoch)?;
                    states.record(&h, info.base_offset, now);
                    if h.is_transactional() {
                        self.track_unstable(&states);
                    }
                    info
                }
            };
            total = Some(match total {
                None => info,
                Some(t) => AppendInfo {
                    last_offset: info.last_offset.max(t.last_offset),
                    max_timestamp: t.max_timestamp.max(info.max_timestamp),
                    records: t.records + info.records,
                    bytes: t.bytes + info.bytes,
                    ..t
                },
            });
        }
        total.ok_or(BrokerError::Log(LogError::CorruptBatch("no record batch")))
    }
}

/// The producer id of the first batch (-1: not an idempotent producer).
fn first_producer_id(batches: &[u8]) -> i64 {
    BatchHeader::parse(batches).map_or(-1, |h| h.producer_id)
}

/// How long a blocking wait for the ISR (a transaction marker, a
/// coordinator's write) lasts before the writer is told to retry: below
/// the 10 s a peer call is given, so a remote caller gets the answer.
const BLOCKING_ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(8);

/// An append that happened, possibly still waiting to be durable.
pub struct Appended {
    /// Offsets, timestamps and sizes the log assigned.
    pub info: AppendInfo,
    durable: Option<oneshot::Receiver<ferry_log::Result<()>>>,
}

impl Appended {
    /// Resolves once the append is acknowledged as `acks` asked.
    pub async fn acknowledged(self) -> Result<AppendInfo> {
        if let Some(rx) = self.durable {
            rx.await.map_err(|_| BrokerError::Log(ferry_log::LogError::Unavailable("flusher stopped".into())))??;
        }
        Ok(self.info)
    }

    /// [`Appended::acknowledged`] for a blocking thread (never call it on
    /// an async worker), waiting at most 8 s: then an `Unavailable` error,
    /// and the write may still be acknowledged later.
    pub fn acknowledged_blocking(self) -> Result<AppendInfo> {
        if let Some(rx) = self.durable {
            wait_blocking(rx)?;
        }
        Ok(self.info)
    }
}

/// Waits on a blocking thread for an acknowledgement, at most
/// [`BLOCKING_ACK_WAIT`] (then the caller is told to retry; a thread must
/// not wait for an ISR that never comes). One already given is taken
/// without blocking, so callers on a runtime that find the answer there do
/// not block it.
fn wait_blocking(mut rx: oneshot::Receiver<ferry_log::Result<()>>) -> Result<()> {
    let deadline = std::time::Instant::now() + BLOCKING_ACK_WAIT;
    let mut pause = std::time::Duration::from_micros(100);
    loop {
        match rx.try_recv() {
            Ok(r) => return Ok(r?),
            Err(oneshot::error::TryRecvError::Closed) => {
                return Err(LogError::Unavailable("flusher stopped".into()).into());
            }
            Err(oneshot::error::TryRecvError::Empty) if std::time::Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(2));
            }
            Err(oneshot::error::TryRecvError::Empty) => {
                return Err(LogError::Unavailable("not acknowledged by the ISR in time".into()).into());
            }
        }
    }
}

/// Checks on each batch header, so the append path decodes no records:
/// clients may not write control batches (transaction markers are the
/// coordinator's), and Kafka's `message.timestamp.{before,after}.max.ms`
/// apply to the base and max timestamps of CreateTime topics.
fn check_headers(mut buf: &[u8], settings: &TopicSettings) -> Result<()> {
    let now = ferry_util::time::now_ms();
    let create_time = settings.log.timestamp_type == TimestampType::CreateTime;
    while buf.len() >= HEADER_LEN {
        let Ok(h) = BatchHeader::parse(buf) else { return Ok(()) }; // the log reports corruption
        if h.is_control() {
            return Err(BrokerError::InvalidRecord("clients may not write control batches".into()));
        }
        if h.is_transactional() && h.producer_id < 0 {
            return Err(BrokerError::InvalidRecord("a transactional batch needs a producer id".into()));
        }
        for ts in [h.base_timestamp, h.max_timestamp].into_iter().filter(|_| create_time) {
            if ts >= 0
                && (now.saturating_sub(ts) > settings.timestamp_before_max_ms
                    || ts.saturating_sub(now) > settings.timestamp_after_max_ms)
            {
                return Err(BrokerError::InvalidTimestamp(ts));
            }
        }
        buf = buf.get(h.size..).unwrap_or_default();
    }
    Ok(())
}

/// Who waits for a partition's high watermark: a task or a thread.
enum Waiter {
    Task(Weak<Notify>),
    Thread(Weak<Signal>),
}

impl Waiter {
    fn alive(&self) -> bool {
        match self {
            Waiter::Task(n) => n.strong_count() > 0,
            Waiter::Thread(s) => s.strong_count() > 0,
        }
    }
}

/// Wakes (and forgets) everyone waiting: each registers again for the next
/// move.
fn wake(waiters: &Mutex<Vec<Waiter>>) {
    let list = std::mem::take(&mut *waiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    for w in list {
        match w {
            Waiter::Task(n) => n.upgrade().into_iter().for_each(|n| n.notify_one()),
            Waiter::Thread(s) => s.upgrade().into_iter().for_each(|s| s.raise()),
        }
    }
}

/// What a tokio `Notify` is to a task, for a plain thread: raised by a
/// partition whose high watermark moved, waited for with a timeout.
#[derive(Default)]
pub struct Signal {
    raised: Mutex<bool>,
    cv: Condvar,
}

impl Signal {
    /// Wakes the waiting thread (or the next one to wait).
    pub fn raise(&self) {
        *self.raised.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        self.cv.notify_all();
    }

    /// Waits until raised (true) or `timeout` passes (false); lowers it.
    pub fn wait(&self, timeout: std::time::Duration) -> bool {
        let raised = self.raised.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (mut raised, _) =
            self.cv.wait_timeout_while(raised, timeout, |r| !*r).unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::take(&mut *raised)
    }
}
