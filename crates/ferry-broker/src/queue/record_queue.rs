//! Record queues: a log per queue under `<data>/internal/<store>/<id>/`
//! with its acknowledgement cursor ([`CursorLog`]) in the same directory.
//! A front-end keeps here what a client must get even across a restart
//! (for instance messages for a client that is away).
//!
//! Acknowledgements are per offset, in any order, journaled as they come
//! (a kill -9 loses none); [`RecordQueue::acks_durable`] makes them survive
//! a power loss too, fsyncing on the blocking pool. A thread per store
//! persists the cursors and trims acknowledged prefixes off the logs every
//! 500 ms. A queue directory from before the cursor files existed starts
//! with its floor at the log start (its old cursor).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use ferry_log::{FlushPolicy, Log, LogConfig};

use crate::broker::Broker;
use crate::error::Result;
use crate::queue::cursor::Outstanding;
use crate::queue::cursor_log::{CursorLog, Snapshots, Tracked, Trim};
use crate::stored::{Durable, StoredRecord, decode_batches, encode_batch};

/// Bytes read from the log per refill of the read-ahead buffer.
const READ_AHEAD: usize = 256 * 1024;
/// How often the store's thread persists cursors and trims logs.
const MAINTAIN_EVERY: Duration = Duration::from_millis(500);

type Registry = Mutex<HashMap<u64, Weak<RecordQueue>>>;

/// A family of queues sharing one directory, named by number.
pub struct RecordQueueStore {
    dir: PathBuf,
    broker: Weak<Broker>,
    /// Queues opened, for the maintenance thread (which ends with the store).
    open: Arc<Registry>,
}

/// Records read ahead of delivery, durable ones only.
#[derive(Default)]
struct ReadAhead {
    buffer: VecDeque<(u64, StoredRecord)>,
    /// Where the buffer ends.
    read_pos: u64,
}

/// One numbered queue of stored records with its durable cursor.
pub struct RecordQueue {
    cursor: CursorLog<ReadAhead>,
    /// Deleted from disk: the maintenance thread leaves it alone.
    removed: AtomicBool,
}

/// A record handed out for delivery.
#[derive(Clone, Debug)]
pub struct Taken {
    /// The record's offset in the queue's log; acknowledge by it.
    pub offset: u64,
    /// The record as appended: key, value, headers, timestamp.
    pub record: StoredRecord,
    /// Handed out before (to an earlier consumer, or before a restart).
    pub redelivered: bool,
}

impl Broker {
    /// The record queue store `<data>/internal/<name>`.
    pub fn record_queue_store(self: &Arc<Self>, name: &str) -> Result<RecordQueueStore> {
        let dir = self.config().data_dir.join("internal").join(name);
        std::fs::create_dir_all(&dir)?;
        let open: Arc<Registry> = Arc::default();
        let weak = Arc::downgrade(&open);
        std::thread::Builder::new().name("ferry-record-queues".into()).spawn(move || {
            loop {
                std::thread::sleep(MAINTAIN_EVERY);
                let Some(open) = weak.upgrade() else { return };
                maintain_all(&open);
            }
        })?;
        Ok(RecordQueueStore { dir, broker: Arc::downgrade(self), open })
    }
}

fn maintain_all(open: &Registry) {
    let queues: Vec<(u64, Arc<RecordQueue>)> = {
        let mut map = open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|_, q| q.strong_count() > 0);
        map.iter().filter_map(|(&id, q)| Some((id, q.upgrade()?))).collect()
    };
    for (id, q) in queues {
        if !q.removed.load(Ordering::Acquire)
            && let Err(e) = q.cursor.maintain(false)
        {
            tracing::warn!(queue = id, error = %e, "record queue maintenance failed");
        }
    }
}

impl RecordQueueStore {
    /// Opens (creating) queue `id`.
    pub fn open(&self, id: u64) -> Result<Arc<RecordQueue>> {
        let broker = self.broker.upgrade().ok_or_else(|| std::io::Error::other("broker stopped"))?;
        let config = LogConfig {
            segment_bytes: 16 << 20,
            flush: FlushPolicy::Always,
            retention_ms: None,
            max_message_bytes: 256 << 20,
            ..LogConfig::default()
        };
        let dir = self.dir.join(id.to_string());
        let log = broker.log_manager().open(&dir, config)?;
        let cursor = CursorLog::open(&dir, log, Snapshots::Synced, Trim::ToFloor, ReadAhead::default())?;
        let q = Arc::new(RecordQueue { cursor, removed: AtomicBool::new(false) });
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, Arc::downgrade(&q));
        Ok(q)
    }

    /// Deletes queue `id` and its data. The queue must no longer be used.
    pub fn remove(&self, id: u64) -> Result<()> {
        if let Some(q) =
            self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id).and_then(|q| q.upgrade())
        {
            q.removed.store(true, Ordering::Release);
        }
        let dir = self.dir.join(id.to_string());
        if dir.exists() {
            let trash = self.dir.join(format!(".trash-{id}"));
            std::fs::rename(&dir, &trash)?;
            std::fs::remove_dir_all(&trash)?;
        }
        Ok(())
    }

    /// Ids of the queues on disk.
    pub fn ids(&self) -> Result<Vec<u64>> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name.strip_prefix(".trash-") {
                let _ = std::fs::remove_dir_all(self.dir.join(format!(".trash-{rest}")));
            } else if let Ok(id) = name.parse() {
                ids.push(id);
            }
        }
        Ok(ids)
    }
}

impl RecordQueue {
    fn log(&self) -> &Arc<Log> {
        self.cursor.log()
    }

    /// Appends records; returns the offset after them and a waiter for disk.
    pub fn append(&self, records: &[StoredRecord]) -> Result<(u64, Durable)> {
        if records.is_empty() {
            return Ok((self.end(), Durable::ready()));
        }
        let info = self.log().append(&encode_batch(records)?)?;
        Ok((info.last_offset + 1, Durable::after(self.log(), info.last_offset + 1)))
    }

    /// Calls `f` once offsets below `end` are durable (readable), or the
    /// flush failed.
    pub fn on_durable(&self, end: u64, f: impl FnOnce() + Send + 'static) {
        self.log().on_durable(end, move |_| f());
    }

    /// Blocks until everything appended and acknowledged is on disk
    /// (shutdown, tests).
    pub fn flush(&self) -> Result<()> {
        self.log().flush_to(self.log().next_offset())?;
        if !self.removed.load(Ordering::Acquire) {
            self.cursor.maintain(true)?;
        }
        Ok(())
    }

    /// The next record to deliver: those handed back first (in offset
    /// order), then durable ones never delivered, in order. It stays
    /// outstanding until [`RecordQueue::ack`] or
    /// [`RecordQueue::requeue_unacked`].
    pub fn take(&self) -> Result<Option<Taken>> {
        let mut t = self.cursor.lock();
        while let Some((offset, out)) = t.cursor.pop_requeued() {
            match self.read_one(offset)? {
                Some(record) => {
                    t.cursor.deliver(offset, Outstanding { count: out.count + 1, size: 0 });
                    return Ok(Some(Taken { offset, record, redelivered: true }));
                }
                // Gone from the log: nothing to deliver.
                None => t.ack(&[offset])?,
            }
        }
        loop {
            if t.extra.buffer.is_empty() && !self.refill(&mut t)? {
                return Ok(None);
            }
            let Some((offset, record)) = t.extra.buffer.pop_front() else { return Ok(None) };
            t.cursor.taken_through(offset);
            if t.cursor.is_acked(offset) {
                continue;
            }
            let redelivered = t.cursor.maybe_delivered_before(offset);
            t.note_delivered(offset)?;
            t.cursor.deliver(offset, Outstanding { count: 1, size: 0 });
            return Ok(Some(Taken { offset, record, redelivered }));
        }
    }

    fn refill(&self, t: &mut Tracked<ReadAhead>) -> Result<bool> {
        let from = t.extra.read_pos.max(t.cursor.next()).max(self.start());
        t.cursor.skip_to(from);
        if from >= self.end() {
            return Ok(false);
        }
        for (offset, r) in decode_batches(&self.log().read_bytes(from, READ_AHEAD)?)? {
            if offset >= from {
                t.extra.read_pos = offset + 1;
                t.extra.buffer.push_back((offset, r));
            }
        }
        Ok(!t.extra.buffer.is_empty())
    }

    fn read_one(&self, offset: u64) -> Result<Option<StoredRecord>> {
        if offset < self.start() || offset >= self.end() {
            return Ok(None);
        }
        let batch = self.log().read_bytes(offset, 1)?;
        Ok(decode_batches(&batch)?.into_iter().find(|(o, _)| *o == offset).map(|(_, r)| r))
    }

    /// Acknowledges the record at `offset` (out for delivery or handed
    /// back), in any order. Journaled on return: a kill -9 keeps it.
    pub fn ack(&self, offset: u64) -> Result<()> {
        self.ack_all(&[offset])
    }

    /// [`RecordQueue::ack`] for several offsets, journaled in one write.
    pub fn ack_all(&self, offsets: &[u64]) -> Result<()> {
        let mut t = self.cursor.lock();
        let known: Vec<u64> = offsets
            .iter()
            .copied()
            .filter(|&o| !t.cursor.settle(&[o]).is_empty() || t.cursor.forget_requeued(o))
            .collect();
        t.ack(&known)
    }

    /// Resolves once every acknowledgement made so far survives a power
    /// loss (the journal is fsynced on the blocking pool).
    pub async fn acks_durable(&self) -> Result<()> {
        let Some(journal) = self.cursor.journal() else { return Ok(()) };
        tokio::task::spawn_blocking(move || journal.sync_data()).await.map_err(std::io::Error::other)??;
        Ok(())
    }

    /// Hands every outstanding record back, to be delivered again first
    /// (its consumer is gone).
    pub fn requeue_unacked(&self) {
        self.cursor.lock().cursor.requeue_all();
    }

    /// Unacknowledged records from `offset` on (whole batches, about
    /// `max_bytes`), only those already durable.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Vec<(u64, StoredRecord)>> {
        let from = offset.max(self.start());
        if from >= self.end() {
            return Ok(Vec::new());
        }
        let records = decode_batches(&self.log().read_bytes(from, max_bytes)?)?;
        let t = self.cursor.lock();
        Ok(records.into_iter().filter(|(o, _)| *o >= from && !t.cursor.is_acked(*o)).collect())
    }

    /// The first unacknowledged offset.
    pub fn floor(&self) -> u64 {
        self.cursor.lock().cursor.floor()
    }

    fn start(&self) -> u64 {
        self.log().log_start_offset()
    }

    /// The offset after the last durable record.
    fn end(&self) -> u64 {
        self.log().high_watermark()
    }

    /// Records waiting (durable and not acknowledged).
    pub fn len(&self) -> u64 {
        self.cursor.lock().cursor.unacked_below(self.end())
    }

    /// Whether no durable record waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records not acknowledged, those not yet on disk too (the queue
    /// limit).
    pub fn written_len(&self) -> u64 {
        self.cursor.lock().cursor.unacked_below(self.log().next_offset())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BrokerConfig;

    fn rec(i: u32) -> StoredRecord {
        StoredRecord { value: Some(i.to_string().into_bytes()), timestamp: 1, ..Default::default() }
    }

    fn values(q: &RecordQueue) -> Vec<(u64, Vec<u8>)> {
        q.read(0, 1 << 20).unwrap().into_iter().map(|(o, r)| (o, r.value.unwrap())).collect()
    }

    #[tokio::test]
    async fn acknowledged_prefix_stays_acknowledged_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = crate::testing::open(BrokerConfig { data_dir: dir.path().to_path_buf(), ..Default::default() })
                .unwrap();
            let store = b.record_queue_store("test/queues").unwrap();
            let q = store.open(7).unwrap();
            for i in 0..5 {
                q.append(&[rec(i)]).unwrap().1.wait().await.unwrap();
            }
            assert_eq!(q.read(0, 1 << 20).unwrap().len(), 5);
            for _ in 0..2 {
                let t = q.take().unwrap().unwrap();
                q.ack(t.offset).unwrap();
            }
            assert_eq!(q.len(), 3);
            b.shutdown();
        }
        let b =
            crate::testing::open(BrokerConfig { data_dir: dir.path().to_path_buf(), ..Default::default() }).unwrap();
        let store = b.record_queue_store("test/queues").unwrap();
        assert_eq!(store.ids().unwrap(), vec![7]);
        let q = store.open(7).unwrap();
        assert_eq!(values(&q), vec![(2, b"2".to_vec()), (3, b"3".to_vec()), (4, b"4".to_vec())]);
        drop(q);
        store.remove(7).unwrap();
        assert!(store.ids().unwrap().is_empty());
    }

    #[tokio::test]
    async fn out_of_order_acks_survive_a_crash_and_requeued_records_come_first() {
        let dir = tempfile::tempdir().unwrap();
        let data = BrokerConfig { data_dir: dir.path().to_path_buf(), ..Default::default() };
        {
            let b = crate::testing::open(data.clone()).unwrap();
            let q = b.record_queue_store("s").unwrap().open(1).unwrap();
            for i in 0..5 {
                q.append(&[rec(i)]).unwrap().1.wait().await.unwrap();
            }
            let taken: Vec<u64> = (0..5).map(|_| q.take().unwrap().unwrap().offset).collect();
            assert_eq!(taken, [0, 1, 2, 3, 4]);
            assert!(q.take().unwrap().is_none());
            // In one journal write; a repeat and an offset never taken change nothing.
            q.ack_all(&[3, 1, 3, 9]).unwrap();
            q.acks_durable().await.unwrap();
            assert_eq!((q.floor(), q.len(), q.written_len()), (0, 3, 3));
            // The consumer went away: 0, 2, 4 come back first, as redeliveries.
            q.requeue_unacked();
            q.append(&[rec(5)]).unwrap().1.wait().await.unwrap();
            let again: Vec<(u64, bool)> =
                (0..4).map(|_| q.take().unwrap().unwrap()).map(|t| (t.offset, t.redelivered)).collect();
            assert_eq!(again, [(0, true), (2, true), (4, true), (5, false)]);
            q.ack(0).unwrap();
            assert_eq!(q.floor(), 2);
            // No shutdown: as after a kill -9, only the journal has the acks.
        }
        let b = crate::testing::open(data).unwrap();
        let q = b.record_queue_store("s").unwrap().open(1).unwrap();
        assert_eq!(values(&q), vec![(2, b"2".to_vec()), (4, b"4".to_vec()), (5, b"5".to_vec())]);
        let t = q.take().unwrap().unwrap();
        // Possibly delivered before the restart: flagged.
        assert_eq!((t.offset, t.redelivered), (2, true));
        q.ack(2).unwrap();
        // The maintenance pass trims the acknowledged prefix off the log.
        q.cursor.maintain(false).unwrap();
        assert_eq!(q.start(), 4);
        b.shutdown();
    }

    #[tokio::test]
    async fn a_queue_from_before_cursor_files_starts_at_its_log_start() {
        let dir = tempfile::tempdir().unwrap();
        let data = BrokerConfig { data_dir: dir.path().to_path_buf(), ..Default::default() };
        let b = crate::testing::open(data.clone()).unwrap();
        let store = b.record_queue_store("old").unwrap();
        {
            let q = store.open(3).unwrap();
            for i in 0..4 {
                q.append(&[rec(i)]).unwrap().1.wait().await.unwrap();
            }
            // The old cursor: DeleteRecords up to the first unacknowledged.
            q.log().delete_records_before(2).unwrap();
            q.flush().unwrap();
        }
        for f in ["cursor.json", "cursor.journal"] {
            let _ = std::fs::remove_file(dir.path().join("internal/old/3").join(f));
        }
        b.shutdown();
        drop(store);
        let b = crate::testing::open(data).unwrap();
        let q = b.record_queue_store("old").unwrap().open(3).unwrap();
        assert_eq!((q.floor(), q.len()), (2, 2));
        assert_eq!(q.take().unwrap().unwrap().offset, 2);
        b.shutdown();
    }
}
