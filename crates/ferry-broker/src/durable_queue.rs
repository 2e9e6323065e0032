//! Durable queues: a log per queue under `<data>/internal/<store>/<id>/`
//! plus an acknowledgement cursor. The cursor is the log start offset:
//! acknowledging a prefix deletes it (DeleteRecords), which is durable when
//! it returns, so a restart resumes at the first unacknowledged record.
//! MQTT keeps the QoS 1/2 messages of offline persistent sessions here.

use std::path::PathBuf;
use std::sync::Arc;

use ferry_log::{FlushPolicy, Log, LogConfig};

use crate::broker::Broker;
use crate::error::Result;
use crate::stored::{Durable, StoredRecord, decode_batches, encode_batch};

/// A family of queues sharing one directory, named by number.
pub struct QueueStore {
    dir: PathBuf,
    broker: std::sync::Weak<Broker>,
}

pub struct DurableQueue {
    log: Arc<Log>,
}

impl Broker {
    /// The queue store `<data>/internal/<name>`.
    pub fn queue_store(self: &Arc<Self>, name: &str) -> Result<QueueStore> {
        let dir = self.config().data_dir.join("internal").join(name);
        std::fs::create_dir_all(&dir)?;
        Ok(QueueStore { dir, broker: Arc::downgrade(self) })
    }
}

impl QueueStore {
    /// Opens (creating) queue `id`.
    pub fn open(&self, id: u64) -> Result<DurableQueue> {
        let broker = self.broker.upgrade().ok_or_else(|| std::io::Error::other("broker stopped"))?;
        let config = LogConfig {
            segment_bytes: 16 << 20,
            flush: FlushPolicy::Always,
            retention_ms: None,
            max_message_bytes: 256 << 20,
            ..LogConfig::default()
        };
        Ok(DurableQueue { log: broker.log_manager().open(&self.dir.join(id.to_string()), config)? })
    }

    /// Deletes queue `id` and its data. The queue must no longer be used.
    pub fn remove(&self, id: u64) -> Result<()> {
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

impl DurableQueue {
    /// Appends records; returns the offset after them and a waiter for disk.
    pub fn append(&self, records: &[StoredRecord]) -> Result<(u64, Durable)> {
        if records.is_empty() {
            return Ok((self.end(), Durable::ready()));
        }
        let info = self.log.append(&encode_batch(records)?)?;
        Ok((info.last_offset + 1, Durable::after(&self.log, info.last_offset + 1)))
    }

    /// Calls `f` once offsets below `end` are durable (readable), or the
    /// flush failed.
    pub fn on_durable(&self, end: u64, f: impl FnOnce() + Send + 'static) {
        self.log.on_durable(end, move |_| f());
    }

    /// Blocks until everything appended is on disk (shutdown, tests).
    pub fn flush(&self) -> Result<()> {
        Ok(self.log.flush_to(self.log.next_offset())?)
    }

    /// Records from `offset` on (whole batches, about `max_bytes`), only
    /// those already durable.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Vec<(u64, StoredRecord)>> {
        let from = offset.max(self.start());
        if from >= self.end() {
            return Ok(Vec::new());
        }
        Ok(decode_batches(&self.log.read_bytes(from, max_bytes)?)?.into_iter().filter(|(o, _)| *o >= from).collect())
    }

    /// Acknowledges every record below `offset` (durable on return).
    pub fn ack_before(&self, offset: u64) -> Result<()> {
        if offset > self.start() {
            self.log.delete_records_before(offset.min(self.end()))?;
        }
        Ok(())
    }

    /// The first unacknowledged offset.
    pub fn start(&self) -> u64 {
        self.log.log_start_offset()
    }

    /// The offset after the last durable record.
    pub fn end(&self) -> u64 {
        self.log.high_watermark()
    }

    /// Records waiting (durable and not acknowledged).
    pub fn len(&self) -> u64 {
        self.end().saturating_sub(self.start())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Offsets not yet on disk count too (the queue limit).
    pub fn written_len(&self) -> u64 {
        self.log.next_offset().saturating_sub(self.start())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BrokerConfig;

    #[tokio::test]
    async fn acknowledged_prefix_stays_acknowledged_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let rec = |i: u32| StoredRecord { value: Some(i.to_string().into_bytes()), timestamp: 1, ..Default::default() };
        {
            let b = Broker::open(BrokerConfig { data_dir: dir.path().to_path_buf(), ..Default::default() }).unwrap();
            let store = b.queue_store("test/queues").unwrap();
            let q = store.open(7).unwrap();
            for i in 0..5 {
                q.append(&[rec(i)]).unwrap().1.wait().await.unwrap();
            }
            assert_eq!(q.read(0, 1 << 20).unwrap().len(), 5);
            q.ack_before(2).unwrap();
            assert_eq!(q.len(), 3);
            b.shutdown();
        }
        let b = Broker::open(BrokerConfig { data_dir: dir.path().to_path_buf(), ..Default::default() }).unwrap();
        let store = b.queue_store("test/queues").unwrap();
        assert_eq!(store.ids().unwrap(), vec![7]);
        let q = store.open(7).unwrap();
        let left: Vec<_> = q.read(0, 1 << 20).unwrap().into_iter().map(|(o, r)| (o, r.value.unwrap())).collect();
        assert_eq!(left, vec![(2, b"2".to_vec()), (3, b"3".to_vec()), (4, b"4".to_vec())]);
        drop(q);
        store.remove(7).unwrap();
        assert!(store.ids().unwrap().is_empty());
    }
}
