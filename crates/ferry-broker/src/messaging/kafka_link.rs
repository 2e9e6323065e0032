//! The link between AMQP-style exchanges and queues and Kafka topics, both
//! ways, over the broker's one bridge ([`crate::bridge`]); the front-end
//! supplies the property conversions through [`Hooks`].
//!
//! - An exchange bound to a topic ([`Destination::Topic`]): a message it
//!   routes there becomes one record: key = routing key (none if empty),
//!   value = body, headers = readable ones from the properties
//!   (`content-type`, application headers, ...) plus `amqp.exchange` and
//!   `amqp.properties` (raw, so a queue fed from the topic restores the
//!   exact properties), appended by [`bridge::append_by_key`] (Kafka's
//!   default partition for the key, round-robin without one; acks=all).
//! - A queue with `x-kafka-topic` is fed from the topic: a feeder thread
//!   reads every partition with [`bridge::read_committed`] (committed
//!   records only) and publishes each record into the queue. A new feed
//!   starts at each partition's last stable offset (or its start, with
//!   `x-kafka-start = "earliest"`). Its position (next offset per
//!   partition) is kept in `kafka-feed.json` in the queue's directory,
//!   written after the queue's log is flushed, so a crash can feed a record
//!   twice but never skips one.
//!
//! [`Destination::Topic`]: super::exchange::Destination::Topic

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use ferry_records::records::NewRecord;
use ferry_util::time::now_ms;
use serde::{Deserialize, Serialize};

use super::MessagingError;
use super::message::{H_EXCHANGE, H_PROPERTIES, Message};
use super::queue::Queue;
use crate::partition::Appended;
use crate::stored::StoredRecord;
use crate::{Broker, BrokerError, bridge};

/// Record headers -> protocol properties (a topic feeding a queue). Gets
/// the record's headers plus `x-kafka-topic`, `x-kafka-partition`,
/// `x-kafka-offset`.
pub type PropertiesFromHeaders = Arc<dyn Fn(&[(&[u8], &[u8])]) -> Bytes + Send + Sync>;
/// Protocol properties -> readable record headers (a message sent to a topic).
pub type HeadersFromProperties = Arc<dyn Fn(&[u8]) -> Vec<(String, Vec<u8>)> + Send + Sync>;

/// Where the broker reaches beyond messaging: the Kafka side, and the
/// front-end's property codec.
#[derive(Clone, Default)]
pub struct Hooks {
    /// The broker's topics, for exchanges bound to topics and queues fed
    /// from them; `None`: neither is available.
    pub broker: Option<Arc<Broker>>,
    /// The dead-letter property rewrite; `None` keeps properties as they are.
    pub death: Option<super::DeathHook>,
    /// Builds a fed message's properties from its record's headers, for
    /// records that carry no stored properties (written by Kafka clients).
    pub properties_from_headers: Option<PropertiesFromHeaders>,
    /// Builds a record's headers from a message's properties when it goes to a topic.
    pub headers_from_properties: Option<HeadersFromProperties>,
    /// The type of a queue declared without `x-queue-type` (`[amqp]
    /// default_queue_type`); `None`: quorum in a cluster of more than one
    /// node, else classic.
    pub default_queue_type: Option<crate::metadata::QueueType>,
}

/// Appends `m` to `topic` as one record (acks=all); the caller waits on
/// the result to confirm.
pub(crate) fn publish_to_topic(hooks: &Hooks, topic: &str, m: &Message) -> Result<Appended, MessagingError> {
    let broker = hooks.broker.as_ref().ok_or_else(|| MessagingError::NotFound(format!("no topic '{topic}'")))?;
    let t = broker.topic(topic).ok_or_else(|| MessagingError::NotFound(format!("no topic '{topic}'")))?;
    let key = m.routing_key.as_bytes();
    let readable = hooks.headers_from_properties.as_ref().map(|f| f(&m.properties)).unwrap_or_default();
    let mut headers: Vec<(&[u8], Option<&[u8]>)> =
        readable.iter().map(|(k, v)| (k.as_bytes(), Some(v.as_slice()))).collect();
    headers.push((H_EXCHANGE.as_bytes(), Some(m.exchange.as_bytes())));
    headers.push((H_PROPERTIES.as_bytes(), Some(&m.properties[..])));
    let record =
        NewRecord { key: (!key.is_empty()).then_some(key), value: Some(&m.body), headers, timestamp: now_ms() };
    bridge::append_by_key(&t, &record).map_err(|e| match e {
        BrokerError::UnknownTopicOrPartition => MessagingError::NotFound(format!("topic '{topic}' has no partitions")),
        e => e.into(),
    })
}

#[derive(Default, Serialize, Deserialize)]
struct FeedFile {
    topic: String,
    next: BTreeMap<i32, u64>,
}

/// A queue fed from a topic.
pub(crate) struct Feed {
    queue: Weak<Queue>,
    topic: String,
    next: BTreeMap<i32, u64>,
    path: PathBuf,
}

impl Feed {
    /// Resumes the queue's feed, or starts one at the topic's last stable
    /// offsets (or start, with `x-kafka-start = "earliest"`): a transaction
    /// still open there is fed once it commits.
    pub(crate) fn open(hooks: &Hooks, q: &Arc<Queue>) -> Option<Feed> {
        let topic = q.args.kafka_topic.clone()?;
        let path = q.dir().join("kafka-feed.json");
        let saved: Option<FeedFile> = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let next = match saved {
            Some(f) if f.topic == topic => f.next,
            _ => {
                let mut next = BTreeMap::new();
                if let Some(t) = hooks.broker.as_ref().and_then(|b| b.topic(&topic)) {
                    for p in t.partitions() {
                        let at =
                            if q.args.kafka_start_earliest { p.log_start_offset() } else { p.last_stable_offset() };
                        next.insert(p.index, at);
                    }
                }
                next
            }
        };
        let feed = Feed { queue: Arc::downgrade(q), topic, next, path };
        feed.save();
        Some(feed)
    }

    fn save(&self) {
        let file = FeedFile { topic: self.topic.clone(), next: self.next.clone() };
        let Ok(bytes) = serde_json::to_vec(&file) else { return };
        if ferry_util::fs::write_atomic(&self.path, &bytes, false).is_err() {
            tracing::warn!(path = %self.path.display(), "writing a kafka feed position failed");
        }
    }

    /// Moves what is new in the topic into the queue, and has `signal`
    /// raised when the topic's partitions move on. False once the queue is
    /// gone.
    pub(crate) fn pump(&mut self, hooks: &Hooks, signal: &Arc<crate::Signal>) -> bool {
        let Some(q) = self.queue.upgrade() else { return false };
        if q.is_deleted() {
            return false;
        }
        let Some(t) = hooks.broker.as_ref().and_then(|b| b.topic(&self.topic)) else { return true };
        let mut moved = false;
        for p in t.partitions() {
            // Before reading: a record landing after the read wakes us.
            p.register_signal(signal);
            // A partition added after the feed started is fed from its start.
            let next = self.next.entry(p.index).or_insert(0);
            loop {
                let read = match bridge::read_committed(&p, *next, 1 << 20) {
                    Ok(Some(read)) => read,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(topic = %self.topic, partition = p.index, error = %e, "kafka feed read failed");
                        break;
                    }
                };
                for (offset, r) in read.records {
                    if let Err(e) = feed_record(hooks, &q, &self.topic, p.index, offset, r) {
                        tracing::warn!(topic = %self.topic, error = %e, "kafka feed publish failed");
                        // Fed again from this record next time.
                        *next = offset;
                        return true;
                    }
                }
                *next = read.next;
                moved = true;
            }
        }
        if moved {
            // The queue's appends reach the disk before the position does.
            if let Err(e) = q.log().flush_to(q.log().next_offset()) {
                tracing::warn!(queue = %q.name(), error = %e, "flushing a fed queue failed");
                return true;
            }
            self.save();
        }
        true
    }
}

/// Publishes the record at `offset` of `topic`'s `partition` into `q`.
fn feed_record(
    hooks: &Hooks,
    q: &Queue,
    topic: &str,
    partition: i32,
    offset: u64,
    r: StoredRecord,
) -> Result<(), MessagingError> {
    // Encoded properties are never empty: an empty header is not one.
    let raw = r.headers.iter().find(|(k, v)| k == H_PROPERTIES && !v.is_empty()).map(|(_, v)| v);
    let properties = match (raw, &hooks.properties_from_headers) {
        (Some(raw), _) => Bytes::copy_from_slice(raw),
        (None, Some(f)) => {
            let (ps, os) = (partition.to_string(), offset.to_string());
            let mut hs: Vec<(&[u8], &[u8])> = r.headers.iter().map(|(k, v)| (k.as_bytes(), v.as_slice())).collect();
            hs.push((b"x-kafka-topic", topic.as_bytes()));
            hs.push((b"x-kafka-partition", ps.as_bytes()));
            hs.push((b"x-kafka-offset", os.as_bytes()));
            f(&hs)
        }
        (None, None) => Bytes::from_static(&[0, 0]),
    };
    let m = Message {
        exchange: format!("kafka:{topic}"),
        routing_key: String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned(),
        properties,
        body: Bytes::from(r.value.unwrap_or_default()),
        persistent: true,
        headers: Default::default(),
        expires_at: None,
        priority: 0,
        deliver_at: None,
        retry_queue: None,
        retries: 0,
    };
    q.publish(&m)?;
    Ok(())
}
