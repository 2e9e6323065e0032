//! A persistent session's queue of QoS 1/2 messages: a node-local record
//! queue (a single node), or a replicated quorum queue (a cluster, issue
//! #17) reached through this node's `QuorumClient` wherever it is led, so
//! what was queued or in flight survives the death of any one node and is
//! sent again (DUP) by whichever node the client reconnects to.
//!
//! A replicated queue's message is an AMQP-queue message: routing key =
//! topic, body = payload, properties = the rest of the delivery's record
//! ([`packed`](super::packed)); expiry is the queue's to enforce.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ferry_broker::BrokerError;
use ferry_broker::messaging::consumer::Credit;
use ferry_broker::messaging::queue_handle::{HandlePublished, QueueHandle};
use ferry_broker::messaging::quorum_client::QuorumClient;
use ferry_broker::messaging::{Headers, Message as QueueMessage};
use ferry_broker::queue::RecordQueue;
use ferry_broker::stored::{Durable, StoredRecord};
use ferry_util::sync::lock;
use tokio::sync::{Notify, oneshot};

use super::packed::{pack, unpack};
use super::routing::Wait;
use crate::session::Session;

/// Deliveries a connection's feed takes ahead from a replicated queue.
const PREFETCH: usize = 64;

/// A persistent session's queue.
#[derive(Clone)]
pub enum SessionQueue {
    /// This node's record queue (a single node's session).
    Local(Arc<RecordQueue>),
    /// A quorum queue of the cluster, wherever it is led.
    Replicated(Arc<QuorumClient>),
}

/// What storing a delivery in a session queue did.
pub enum Queued {
    /// Stored; the publisher's acknowledgement waits for this.
    Stored(Wait),
    /// The queue is full: dropped.
    Full,
}

impl SessionQueue {
    /// Stores `records` (deliveries in their stored form); `limit` bounds a
    /// local queue (a replicated one is bounded by its own arguments).
    /// `wake` is woken once a local queue has them on disk.
    pub fn push(
        &self,
        records: &[StoredRecord],
        limit: u64,
        wake: Option<Arc<Session>>,
    ) -> Result<Vec<Queued>, BrokerError> {
        match self {
            SessionQueue::Local(q) => {
                if q.written_len() >= limit {
                    return Ok(records.iter().map(|_| Queued::Full).collect());
                }
                let (end, durable) = q.append(records)?;
                if let Some(s) = wake {
                    q.on_durable(end, move || s.wake.notify_one());
                }
                Ok(vec![Queued::Stored(Wait::Durable(durable))])
            }
            SessionQueue::Replicated(c) => {
                let handle = QueueHandle::Quorum(c.clone());
                let mut out = Vec::with_capacity(records.len());
                for r in records {
                    let published = handle
                        .publish(&to_queue_message(r))
                        .map_err(|e| BrokerError::ControllerUnavailable(format!("session queue {}: {e}", c.name())))?;
                    out.push(match published {
                        HandlePublished::Stored(w) => {
                            let (tx, rx) = oneshot::channel();
                            w.on_done(move |ok| {
                                let _ = tx.send(ok);
                            });
                            Queued::Stored(Wait::Replicated(rx))
                        }
                        HandlePublished::Volatile => Queued::Stored(Wait::Durable(Durable::ready())),
                        HandlePublished::Rejected => Queued::Full,
                    });
                }
                Ok(out)
            }
        }
    }

    /// Makes sure a local queue's records are on disk (clean shutdown).
    pub fn flush(&self) -> Result<(), BrokerError> {
        match self {
            SessionQueue::Local(q) => q.flush(),
            SessionQueue::Replicated(_) => Ok(()),
        }
    }

    /// Opens the connection's reader: what an earlier connection left
    /// unacknowledged comes first, flagged DUP.
    pub fn reader(&self, session: &Arc<Session>) -> QueueReader {
        match self {
            SessionQueue::Local(q) => {
                q.requeue_unacked();
                QueueReader::Local(q.clone())
            }
            SessionQueue::Replicated(c) => QueueReader::Replicated(Feed::start(c.clone(), session.clone())),
        }
    }
}

/// The queue message holding `r`.
fn to_queue_message(r: &StoredRecord) -> QueueMessage {
    let topic = r.key.as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
    let rest = StoredRecord { key: None, value: None, headers: r.headers.clone(), timestamp: r.timestamp };
    let expires_at = r
        .headers
        .iter()
        .find(|(k, _)| k == "mqtt.expires_at")
        .and_then(|(_, v)| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(i64::from_be_bytes);
    QueueMessage {
        exchange: String::new(),
        routing_key: topic,
        properties: Bytes::from(pack(&rest)),
        body: Bytes::from(r.value.clone().unwrap_or_default()),
        persistent: true,
        headers: Headers::new(),
        expires_at,
        priority: 0,
        deliver_at: None,
        retry_queue: None,
        retries: 0,
    }
}

/// The record a queue message holds back (`None`: not one of ours).
fn from_queue_message(m: &ferry_broker::messaging::message::StoredMessage) -> Option<StoredRecord> {
    let mut r = unpack(&m.properties)?;
    r.key = Some(m.routing_key.as_bytes().to_vec());
    r.value = Some(m.body.to_vec());
    Some(r)
}

/// A record handed to a connection to send.
pub struct Taken {
    /// Its offset in the queue: the packet id derives from it, and it is
    /// acknowledged by it.
    pub offset: u64,
    /// The delivery's stored form.
    pub record: StoredRecord,
    /// Handed out before (DUP).
    pub redelivered: bool,
}

/// A connection's side of its session's queue.
pub enum QueueReader {
    /// A local record queue.
    Local(Arc<RecordQueue>),
    /// A replicated queue, through a feed task.
    Replicated(Feed),
}

impl QueueReader {
    /// The next record to send, if one is ready.
    pub fn take(&self) -> Result<Option<Taken>, BrokerError> {
        match self {
            QueueReader::Local(q) => {
                Ok(q.take()?.map(|t| Taken { offset: t.offset, record: t.record, redelivered: t.redelivered }))
            }
            QueueReader::Replicated(f) => Ok(f.take()),
        }
    }

    /// The client has the messages at `offsets` (or they are dropped).
    pub fn ack(&self, offsets: &[u64]) -> Result<(), BrokerError> {
        match self {
            QueueReader::Local(q) => q.ack_all(offsets),
            QueueReader::Replicated(f) => {
                f.client.settle(offsets, &[], &[]);
                Ok(())
            }
        }
    }

    /// Resolves once the acknowledgements made so far are durable (a local
    /// queue's on disk, a replicated one's on its leader's ISR).
    pub async fn acks_durable(&self) -> Result<(), BrokerError> {
        match self {
            QueueReader::Local(q) => q.acks_durable().await,
            QueueReader::Replicated(f) => {
                f.client.settled().await;
                Ok(())
            }
        }
    }

    /// The connection ends with `unacked` offsets out: a replicated queue
    /// gets them back (sent again, DUP, on the next connection, wherever);
    /// a local queue hands them out again when next opened.
    pub fn close(&self, unacked: &[u64]) {
        if let QueueReader::Replicated(f) = self {
            f.stop(unacked);
        }
    }
}

/// Takes deliveries from a replicated queue ahead of the connection (at
/// most [`PREFETCH`]), waking the session when some arrive.
pub struct Feed {
    client: Arc<QuorumClient>,
    shared: Arc<FeedShared>,
}

struct FeedShared {
    ready: Mutex<VecDeque<Taken>>,
    credit: Notify,
    stopped: AtomicBool,
}

impl Feed {
    fn start(client: Arc<QuorumClient>, session: Arc<Session>) -> Feed {
        let shared =
            Arc::new(FeedShared { ready: Mutex::default(), credit: Notify::new(), stopped: AtomicBool::new(false) });
        let handle = QueueHandle::Quorum(client.clone());
        let (task_shared, task_client) = (shared.clone(), client.clone());
        let feed = async move {
            let consumer = match handle.add_consumer(false, PREFETCH as u16) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(client = %session.client_id, error = %e, "cannot consume the session queue");
                    return;
                }
            };
            let credit = || {
                if task_shared.stopped.load(Ordering::Acquire) {
                    Credit::Gone
                } else if lock(&task_shared.ready).len() < PREFETCH {
                    Credit::Yes
                } else {
                    Credit::No
                }
            };
            while let Ok(d) = handle.next_delivery(&consumer, &task_shared.credit, credit).await {
                let offset = d.message.offset;
                match from_queue_message(&d.message) {
                    Some(record) => {
                        lock(&task_shared.ready).push_back(Taken { offset, record, redelivered: d.redelivered });
                        session.wake.notify_one();
                    }
                    // Not a message of ours: never sent.
                    None => task_client.settle(&[offset], &[], &[]),
                }
                if task_shared.stopped.load(Ordering::Acquire) {
                    break;
                }
            }
            handle.remove_consumer(&consumer);
            let left: Vec<u64> = lock(&task_shared.ready).drain(..).map(|t| t.offset).collect();
            if !left.is_empty() {
                task_client.settle(&[], &left, &[]);
            }
        };
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(feed);
        } else {
            tracing::warn!("no runtime for a session queue's feed");
        }
        Feed { client, shared }
    }

    fn take(&self) -> Option<Taken> {
        let t = lock(&self.shared.ready).pop_front();
        if t.is_some() {
            self.shared.credit.notify_one();
        }
        t
    }

    fn stop(&self, unacked: &[u64]) {
        self.shared.stopped.store(true, Ordering::Release);
        self.shared.credit.notify_one();
        if !unacked.is_empty() {
            self.client.settle(&[], unacked, &[]);
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Release);
        self.shared.credit.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_round_trip_through_queue_messages() {
        let r = StoredRecord {
            key: Some(b"a/b".to_vec()),
            value: Some(b"payload".to_vec()),
            headers: vec![
                ("mqtt.qos".into(), vec![2]),
                ("mqtt.expires_at".into(), 77i64.to_be_bytes().to_vec()),
                ("mqtt.subscription_id".into(), 5u32.to_be_bytes().to_vec()),
            ],
            timestamp: 9,
        };
        let m = to_queue_message(&r);
        assert_eq!((m.routing_key.as_str(), m.expires_at, &m.body[..]), ("a/b", Some(77), &b"payload"[..]));
        let stored = ferry_broker::messaging::message::StoredMessage::from_message(&m, 9);
        assert_eq!(from_queue_message(&stored), Some(r));
    }
}
