//! One partition of a topic: its log plus what the protocol front-ends
//! need around it (acks, timestamp checks, long-poll wakeups).

use std::sync::{Arc, Mutex, RwLock, Weak};

use ferry_log::{AppendInfo, FlushPolicy, Log, TimestampType, batch::BatchHeader, batch::HEADER_LEN};
use tokio::sync::{Notify, oneshot};

use crate::error::{BrokerError, Result};
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

pub struct Partition {
    pub topic: String,
    pub index: i32,
    log: Arc<Log>,
    settings: Arc<RwLock<TopicSettings>>,
    /// Fetches waiting for the high watermark to move.
    waiters: Arc<Mutex<Vec<Weak<Notify>>>>,
}

impl Partition {
    pub(crate) fn new(topic: &str, index: i32, log: Arc<Log>, settings: Arc<RwLock<TopicSettings>>) -> Partition {
        let waiters: Arc<Mutex<Vec<Weak<Notify>>>> = Arc::default();
        let w = waiters.clone();
        log.set_hw_listener(Arc::new(move || {
            let list = std::mem::take(&mut *w.lock().unwrap_or_else(|p| p.into_inner()));
            for n in list.iter().filter_map(Weak::upgrade) {
                n.notify_one();
            }
        }));
        Partition { topic: topic.to_string(), index, log, settings, waiters }
    }

    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    pub fn high_watermark(&self) -> u64 {
        self.log.high_watermark()
    }

    pub fn log_start_offset(&self) -> u64 {
        self.log.log_start_offset()
    }

    /// Wakes `waiter` (once) the next time the high watermark advances.
    /// Register before checking for data, so no append slips between.
    pub fn register_waiter(&self, waiter: &Arc<Notify>) {
        let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        w.retain(|x| x.strong_count() > 0);
        w.push(Arc::downgrade(waiter));
    }

    /// Appends a producer's batches now (in call order) and returns what
    /// is left to wait for as `acks` asks. The write itself only reaches the
    /// page cache, so it runs on the caller's task; fsync happens on the
    /// log's flusher thread.
    pub fn append(&self, batches: &[u8], acks: Acks) -> Result<Appended> {
        let settings = self.settings.read().unwrap_or_else(|p| p.into_inner()).clone();
        if acks == Acks::All && settings.min_insync_replicas > 1 {
            return Err(BrokerError::NotEnoughReplicas { isr: 1, min: settings.min_insync_replicas });
        }
        if settings.log.timestamp_type == TimestampType::CreateTime {
            check_timestamps(batches, &settings)?;
        }
        let info = self.log.append(batches)?;
        let durable = (acks == Acks::All && settings.log.flush == FlushPolicy::Always).then(|| {
            let (tx, rx) = oneshot::channel();
            self.log.on_durable(info.last_offset + 1, move |r| {
                let _ = tx.send(r);
            });
            rx
        });
        Ok(Appended { info, durable })
    }
}

/// An append that happened, possibly still waiting to be durable.
pub struct Appended {
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
}

/// Kafka's `message.timestamp.{before,after}.max.ms`, checked on each batch
/// header (base and max timestamp) rather than on every record, so the
/// append path decodes no records.
fn check_timestamps(mut buf: &[u8], settings: &TopicSettings) -> Result<()> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    while buf.len() >= HEADER_LEN {
        let Ok(h) = BatchHeader::parse(buf) else { return Ok(()) }; // the log reports corruption
        for ts in [h.base_timestamp, h.max_timestamp] {
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
