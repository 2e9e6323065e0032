//! The leader's side of forwarding (issue #17, "any node serves any
//! client"): a node that does not lead a quorum queue forwards its
//! clients' publishes, takes and settlements here over the cluster port
//! ([`PeerRequest::QueuePublish`], [`PeerRequest::QueueTake`],
//! [`PeerRequest::QueueSettle`], [`PeerRequest::QueuePurge`]).
//!
//! Deliveries taken by a forwarding node belong to its *session*: when the
//! session is silent for [`SESSION_TIMEOUT`] (the node died, or lost the
//! cluster port) its unsettled deliveries go back to the queue, as a
//! closed channel's do. The forwarding node renews its session with an
//! empty take while it holds deliveries.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use ferry_util::sync::lock;

use crate::broker::Broker;
use crate::messaging::message::{self, Message, StoredMessage};
use crate::messaging::queue::{Delivery, Published, Queue};
use crate::metadata::{PeerError, PeerReply, PeerRequest, QueueKind, WireDelivery};

/// A forwarding node silent this long loses its deliveries to the queue.
pub(crate) const SESSION_TIMEOUT: Duration = Duration::from_secs(30);
/// A fenced node's session silent this long is gone: past the forwarding
/// node's renewal period (5 s), so a live one is never taken for dead.
const FENCED_SILENCE: Duration = Duration::from_secs(6);
/// Longest long-poll of a take (below the cluster port's 10 s call timeout).
const MAX_WAIT: Duration = Duration::from_secs(5);
/// How long a forwarded publish or settlement waits for the ISR.
const ISR_WAIT: Duration = Duration::from_secs(8);

/// The last publish batch a forwarding session had stored here.
pub(crate) struct ForwardedBatch {
    /// The queue (this leadership's) it was stored in: a retry reaching a
    /// later leadership is stored again (at-least-once).
    queue: Weak<Queue>,
    number: u64,
    /// Per message, stored or refused; the last stored offset.
    stored: Vec<bool>,
    last: Option<u64>,
}

/// Last batches by (vhost, queue, session id).
pub(crate) type Forwarded = HashMap<(String, String, String), ForwardedBatch>;

/// One forwarding node's deliveries of one queue.
pub(crate) struct Session {
    /// The queue (this leadership's) the deliveries were taken from.
    queue: Weak<Queue>,
    /// Offsets out with the forwarding node's consumers.
    offsets: BTreeSet<u64>,
    seen: Instant,
}

/// Sessions by (vhost, queue, session id).
pub(crate) type Sessions = HashMap<(String, String, String), Session>;

/// A stored message back as the message that was published (its
/// timestamp becomes the re-append's).
pub(crate) fn to_message(m: StoredMessage) -> Message {
    Message {
        exchange: m.exchange,
        routing_key: m.routing_key,
        properties: m.properties,
        body: m.body,
        persistent: m.persistent,
        headers: m.headers,
        expires_at: m.expires_at,
        priority: m.priority,
        deliver_at: None,
        retry_queue: m.retry_queue,
        retries: m.retries,
    }
}

/// A delivery for the wire.
pub(crate) fn encode_delivery(d: &Delivery) -> crate::Result<WireDelivery> {
    let batch = message::encode(&to_message(d.message.clone()), d.message.timestamp)?;
    Ok(WireDelivery {
        offset: d.message.offset,
        redelivered: d.redelivered,
        count: d.delivery_count,
        batch: B64.encode(batch),
    })
}

/// A delivery back from the wire.
pub(crate) fn decode_delivery(w: &WireDelivery) -> Option<Delivery> {
    let bytes = B64.decode(&w.batch).ok()?;
    let mut m = message::decode_batches(&Bytes::from(bytes)).ok()?.into_iter().next()?;
    m.offset = w.offset;
    Some(Delivery { message: m, redelivered: w.redelivered, delivery_count: w.count })
}

/// Messages for the wire: one record batch, base64.
pub(crate) fn encode_messages(ms: &[Message]) -> crate::Result<String> {
    Ok(B64.encode(message::encode_all(ms, ferry_util::time::now_ms())?))
}

fn failed(e: impl std::fmt::Display) -> PeerError {
    PeerError::Failed(e.to_string())
}

/// Waits (bounded) for a completion callback's answer.
pub(crate) async fn completion(register: impl FnOnce(Box<dyn FnOnce(bool) + Send>)) -> bool {
    let (tx, rx) = tokio::sync::oneshot::channel();
    register(Box::new(move |ok| {
        let _ = tx.send(ok);
    }));
    matches!(tokio::time::timeout(ISR_WAIT, rx).await, Ok(Ok(true)))
}

impl Broker {
    /// The quorum queue served here, or why not: deleted (unknown) or led
    /// elsewhere (the caller looks the leader up again).
    fn served_queue(&self, vhost: &str, name: &str) -> Result<Arc<Queue>, PeerError> {
        if let Some(q) = self.quorum_queue(vhost, name) {
            return Ok(q);
        }
        let image = self.metadata();
        let declared = image
            .amqp
            .get(vhost)
            .and_then(|d| d.queues.get(name))
            .is_some_and(|d| matches!(d.kind, QueueKind::Quorum { .. }));
        Err(if declared { PeerError::NotLeaderOrFollower } else { PeerError::UnknownTopicOrPartition })
    }

    /// Stores a forwarded batch, unless this leadership stored the same
    /// batch (`id`) already: a retry after the answer was lost (a torn
    /// connection, a timed-out call) then gets the first attempt's answer,
    /// once that is on the ISR, instead of a second copy of each message.
    fn store_forwarded(
        &self,
        vhost: &str,
        name: &str,
        q: &Arc<Queue>,
        id: Option<(String, u64)>,
        msgs: Vec<StoredMessage>,
    ) -> Result<(Vec<bool>, Option<u64>), PeerError> {
        // Held across the appends (no await): a retry arriving while the
        // first attempt is still being stored waits for it.
        let mut forwarded = lock(&self.queue_publishes);
        let key = id.as_ref().map(|(session, _)| (vhost.to_string(), name.to_string(), session.clone()));
        if let (Some(key), Some((_, number))) = (&key, &id)
            && let Some(b) = forwarded.get(key)
            && b.number == *number
            && std::ptr::eq(b.queue.as_ptr(), Arc::as_ptr(q))
        {
            return Ok((b.stored.clone(), b.last));
        }
        let mut stored = Vec::with_capacity(msgs.len());
        let mut last = None;
        for m in msgs {
            match q.publish(&to_message(m)).map_err(PeerError::from)? {
                Published::Stored(offset) => {
                    stored.push(true);
                    last = Some(offset);
                }
                Published::Rejected => stored.push(false),
            }
        }
        if let (Some(key), Some((_, number))) = (key, id) {
            forwarded.retain(|_, b| b.queue.strong_count() > 0);
            let batch = ForwardedBatch { queue: Arc::downgrade(q), number, stored: stored.clone(), last };
            forwarded.insert(key, batch);
        }
        Ok((stored, last))
    }

    /// Notes `session` alive, with `taken` offsets now out with it.
    fn note_session(&self, vhost: &str, name: &str, session: &str, q: &Arc<Queue>, taken: &[u64], settled: &[u64]) {
        let mut sessions = lock(&self.queue_sessions);
        let key = (vhost.to_string(), name.to_string(), session.to_string());
        let s = sessions.entry(key).or_insert_with(|| Session {
            queue: Arc::downgrade(q),
            offsets: BTreeSet::new(),
            seen: Instant::now(),
        });
        if !std::ptr::eq(s.queue.as_ptr(), Arc::as_ptr(q)) {
            // A new leadership: what the old one handed out comes back by the replay.
            s.queue = Arc::downgrade(q);
            s.offsets.clear();
        }
        s.seen = Instant::now();
        s.offsets.extend(taken.iter().copied());
        for o in settled {
            s.offsets.remove(o);
        }
    }

    /// Sessions silent past [`SESSION_TIMEOUT`] (past [`FENCED_SILENCE`]
    /// for a node the controller fenced) hand their deliveries back
    /// (the housekeeping tick).
    pub(crate) fn expire_queue_sessions(&self) {
        let image = self.metadata();
        // A session of a node the controller fenced (it died) goes once
        // silent for FENCED_SILENCE, not the full SESSION_TIMEOUT: its node
        // is named first in its id (`QuorumClient`'s "<node>-<uuid>"). Not
        // at once: a node fenced while alive (a pause, a loaded machine)
        // still takes and renews, and must keep its deliveries.
        let fenced = |session: &str| {
            session
                .split_once('-')
                .and_then(|(node, _)| node.parse::<i32>().ok())
                .is_some_and(|node| image.nodes.get(&node).is_none_or(|n| n.fenced))
        };
        let expired: Vec<Session> = {
            let mut sessions = lock(&self.queue_sessions);
            let now = Instant::now();
            let gone: Vec<_> = sessions
                .iter()
                .filter(|((_, _, session), s)| {
                    let silent = now.duration_since(s.seen);
                    silent >= SESSION_TIMEOUT
                        || s.queue.strong_count() == 0
                        || (silent >= FENCED_SILENCE && fenced(session))
                })
                .map(|(k, _)| k.clone())
                .collect();
            gone.into_iter().filter_map(|k| sessions.remove(&k)).collect()
        };
        for s in expired {
            let Some(q) = s.queue.upgrade() else { continue };
            let offsets: Vec<u64> = s.offsets.into_iter().collect();
            tracing::info!(queue = %q.name(), deliveries = offsets.len(), "a forwarding node's session expired");
            if let Err(e) = q.requeue(&offsets) {
                tracing::warn!(queue = %q.name(), error = %e, "returning an expired session's deliveries failed");
            }
        }
    }

    /// Carries out a forwarded queue call (see `serve_peer`).
    pub(crate) async fn serve_queue_peer(self: Arc<Self>, request: PeerRequest) -> Result<PeerReply, PeerError> {
        match request {
            PeerRequest::QueuePublish { vhost, queue, batch, id } => {
                let q = self.served_queue(&vhost, &queue)?;
                let bytes = B64.decode(batch).map_err(failed)?;
                let msgs = message::decode_batches(&Bytes::from(bytes)).map_err(PeerError::from)?;
                let (stored, last) = self.store_forwarded(&vhost, &queue, &q, id, msgs)?;
                if let Some(offset) = last
                    && !completion(|done| q.on_durable(offset, done)).await
                {
                    // Not on the ISR (leadership moved, ISR too small): the
                    // forwarding node retries, possibly storing it twice.
                    return Err(PeerError::NotLeaderOrFollower);
                }
                Ok(PeerReply::QueueStored(stored))
            }
            PeerRequest::QueueTake { vhost, queue, session, max, wait_ms } => {
                let q = self.served_queue(&vhost, &queue)?;
                let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms).min(MAX_WAIT);
                let mut out = Vec::new();
                loop {
                    let available = q.notifier().notified();
                    tokio::pin!(available);
                    available.as_mut().enable();
                    while out.len() < max as usize {
                        match q.take(None).map_err(PeerError::from)? {
                            Some(d) => out.push(d),
                            None => break,
                        }
                    }
                    if !out.is_empty() || max == 0 || tokio::time::Instant::now() >= deadline {
                        break;
                    }
                    if q.is_deleted() {
                        return Err(PeerError::NotLeaderOrFollower);
                    }
                    let _ = tokio::time::timeout_at(deadline, available).await;
                }
                let offsets: Vec<u64> = out.iter().map(|d| d.message.offset).collect();
                self.note_session(&vhost, &queue, &session, &q, &offsets, &[]);
                let deliveries = out.iter().map(encode_delivery).collect::<crate::Result<Vec<_>>>();
                let deliveries = match deliveries {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = q.requeue(&offsets);
                        return Err(PeerError::from(e));
                    }
                };
                Ok(PeerReply::QueueDeliveries { deliveries, ready: q.ready_count(), consumers: q.consumer_count() })
            }
            PeerRequest::QueueSettle { vhost, queue, session, acks, requeues, rejects } => {
                let q = self.served_queue(&vhost, &queue)?;
                let mut settled = acks.clone();
                settled.extend(&requeues);
                settled.extend(&rejects);
                self.note_session(&vhost, &queue, &session, &q, &[], &settled);
                if !acks.is_empty() {
                    q.ack_anywhere(&acks).map_err(PeerError::from)?;
                }
                if !requeues.is_empty() {
                    q.requeue(&requeues).map_err(PeerError::from)?;
                }
                if !rejects.is_empty() {
                    q.reject(&rejects).map_err(PeerError::from)?;
                }
                // Answered once the cursor records are on the ISR: an
                // answered ack survives this leader's death.
                if !completion(|done| q.on_settled(done)).await {
                    return Err(PeerError::NotLeaderOrFollower);
                }
                Ok(PeerReply::Done)
            }
            PeerRequest::QueuePurge { vhost, queue } => {
                let q = self.served_queue(&vhost, &queue)?;
                let ready = q.purge().map_err(PeerError::from)?;
                Ok(PeerReply::QueueDeliveries { deliveries: Vec::new(), ready, consumers: q.consumer_count() })
            }
            other => Err(PeerError::Failed(format!("not a queue call: {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::broker::{Broker, BrokerConfig};
    use crate::metadata::{AmqpRequest, Arguments, ControllerRequest, PeerReply, PeerRequest, QueueType};

    use super::encode_messages;
    use crate::messaging::quorum::tests::message;

    /// A forwarding node retries a batch whose answer it lost (its
    /// connection to the leader was torn while the ISR caught up: chaos
    /// seed 17, docs/reliability.md Found 12): the leader answers the retry
    /// from the first attempt and stores nothing again. Another batch, or a
    /// request without an id, is stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retried_forwarded_batch_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(BrokerConfig { data_dir: dir.path().to_path_buf(), ..Default::default() }).unwrap();
        let _controller = crate::testing::install(&broker);
        let declare = ControllerRequest::Amqp(AmqpRequest::DeclareQueue {
            vhost: "/".into(),
            name: "orders".into(),
            auto_delete: false,
            arguments: Arguments::default(),
            queue_type: QueueType::Quorum { group_size: None },
        });
        broker.submit_change(declare).await.unwrap();
        let publish = |first: u32, id: Option<u64>| PeerRequest::QueuePublish {
            vhost: "/".into(),
            queue: "orders".into(),
            batch: encode_messages(&[message(first), message(first + 1)]).unwrap(),
            id: id.map(|n| ("node2-session".to_string(), n)),
        };
        for (request, what) in [
            (publish(0, Some(7)), "batch 7"),
            (publish(0, Some(7)), "batch 7 again"),
            (publish(2, Some(8)), "batch 8"),
            (publish(4, None), "no id"),
        ] {
            match broker.clone().serve_queue_peer(request).await {
                Ok(PeerReply::QueueStored(stored)) => assert_eq!(stored, [true, true], "{what}"),
                other => panic!("{what}: {other:?}"),
            }
        }
        let q = broker.quorum_queue("/", "orders").unwrap();
        let mut bodies = Vec::new();
        while let Some(d) = q.take(None).unwrap() {
            bodies.push(String::from_utf8(d.message.body.to_vec()).unwrap());
        }
        assert_eq!(bodies, ["m0", "m1", "m2", "m3", "m4", "m5"], "each message stored once");
    }
}
