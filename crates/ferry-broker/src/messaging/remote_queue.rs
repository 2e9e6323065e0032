//! The leader's side of forwarding (issue #17, "any node serves any
//! client"): a node that does not lead a quorum queue (or hold a classic
//! one) forwards its
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

use ferry_util::sync::lock;

use crate::broker::Broker;
use crate::messaging::message::{self, Message, StoredMessage};
use crate::messaging::publish_ids::Stored;
use crate::messaging::queue::{Delivery, Published, Queue};
use crate::metadata::{Blob, PeerError, PeerReply, PeerRequest, QueueKind, Resent, WireDelivery};
use uuid::Uuid;

/// A forwarding node silent this long loses its deliveries to the queue.
pub(crate) const SESSION_TIMEOUT: Duration = Duration::from_secs(30);
/// A fenced node's session silent this long is gone: past the forwarding
/// node's renewal period (5 s), so a live one is never taken for dead.
const FENCED_SILENCE: Duration = Duration::from_secs(6);
/// Longest long-poll of a take (below the cluster port's 10 s call timeout).
const MAX_WAIT: Duration = Duration::from_secs(5);
/// How long a forwarded publish or settlement waits for the ISR.
const ISR_WAIT: Duration = Duration::from_secs(8);
/// Cancelled consumers a session remembers (a take still on its way when
/// its consumer was cancelled must not register it again).
const CANCELLED: usize = 4096;

/// One forwarding node's deliveries of one queue.
pub(crate) struct Session {
    /// The queue (this leadership's) the deliveries were taken from.
    queue: Weak<Queue>,
    /// Offsets out with the forwarding node's consumers.
    offsets: BTreeSet<u64>,
    /// Its consumers registered on `queue`: id in the session -> the
    /// queue's consumer id.
    consumers: HashMap<u64, u64>,
    /// Each consumer's last take: (its number, what it was answered).
    last_takes: HashMap<u64, (u64, Vec<WireDelivery>)>,
    /// Consumers cancelled (ids are never reused), kept across leaderships.
    cancelled: BTreeSet<u64>,
    seen: Instant,
    /// The forwarding node's incarnation in this node's image at its last
    /// call (`None`: not in the image): a restarted node's new process
    /// never renews its predecessor's session.
    incarnation: Option<Uuid>,
}

/// The node that named `session` (`QuorumClient`'s "<node>-<uuid>").
fn session_node(session: &str) -> Option<i32> {
    session.split_once('-').and_then(|(node, _)| node.parse().ok())
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
        // Kept: the delay queue's records carry their due time.
        deliver_at: m.deliver_at,
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
        batch: Blob::from(batch),
    })
}

/// A delivery back from the wire.
pub(crate) fn decode_delivery(w: &WireDelivery) -> Option<Delivery> {
    let mut m = message::decode_batches(w.batch.bytes()).ok()?.into_iter().next()?;
    m.offset = w.offset;
    Some(Delivery { message: m, redelivered: w.redelivered, delivery_count: w.count })
}

/// Messages for the wire: one record batch.
pub(crate) fn encode_messages(ms: &[Message]) -> crate::Result<Blob> {
    Ok(Blob::from(message::encode_all(ms, ferry_util::time::now_ms())?))
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
    /// The queue served here (a quorum queue led here, a classic queue
    /// held here), or why not: deleted (unknown) or served elsewhere or
    /// not opened yet (the caller looks the queue up again).
    fn served_queue(&self, vhost: &str, name: &str) -> Result<Arc<Queue>, PeerError> {
        if let Some(q) = self.quorum_queue(vhost, name).or_else(|| self.held_classic_queue(vhost, name)) {
            // Rejects and nacks forwarded here dead-letter and retry
            // through the vhost, even with no client of it on this node.
            self.link_vhost(vhost, &q);
            return Ok(q);
        }
        let declared = self.metadata().amqp.get(vhost).is_some_and(|d| d.queues.contains_key(name));
        Err(if declared { PeerError::NotLeaderOrFollower } else { PeerError::UnknownTopicOrPartition })
    }

    /// The classic queue `name` of `vhost` if the image places it on this
    /// node and its vhost has it open.
    pub(crate) fn held_classic_queue(&self, vhost: &str, name: &str) -> Option<Arc<Queue>> {
        let image = self.metadata();
        let def = image.amqp.get(vhost)?.queues.get(name)?;
        if def.kind != (QueueKind::Classic { node: self.node_id() }) {
            return None;
        }
        self.vhosts.get()?.upgrade()?.get_open(vhost)?.held_queue(name)
    }

    /// Stores a forwarded batch. With its publisher's ids (`id`'s
    /// session and one sequence number per message), what this leader's
    /// log holds already (a retry after a lost answer, on this leader or
    /// from the one before: `publish_ids`) is answered, not stored again.
    fn store_forwarded(
        &self,
        vhost: &str,
        name: &str,
        q: &Arc<Queue>,
        id: Option<(String, Resent)>,
        seqs: Vec<u64>,
        msgs: Vec<StoredMessage>,
    ) -> Result<Stored, PeerError> {
        if let Some((session, resent)) = id
            && seqs.len() == msgs.len()
        {
            let msgs: Vec<(Message, u64)> = msgs.into_iter().map(to_message).zip(seqs).collect();
            return self.store_published(vhost, name, q, (&session, resent), &msgs).map_err(PeerError::from);
        }
        let mut out = Stored { stored: Vec::with_capacity(msgs.len()), wait: None };
        for m in msgs {
            match q.publish(&to_message(m)).map_err(PeerError::from)? {
                Published::Stored(offset) => {
                    out.stored.push(true);
                    out.wait = Some(offset);
                }
                Published::Rejected => out.stored.push(false),
            }
        }
        Ok(out)
    }

    /// Notes `session` alive, with `taken` offsets now out with it.
    fn note_session(&self, vhost: &str, name: &str, session: &str, q: &Arc<Queue>, taken: &[u64], settled: &[u64]) {
        let incarnation =
            session_node(session).and_then(|node| self.metadata().nodes.get(&node).map(|n| n.incarnation));
        let mut sessions = lock(&self.queue_sessions);
        let key = (vhost.to_string(), name.to_string(), session.to_string());
        let s = sessions.entry(key).or_insert_with(|| Session {
            queue: Arc::downgrade(q),
            offsets: BTreeSet::new(),
            consumers: HashMap::new(),
            last_takes: HashMap::new(),
            cancelled: BTreeSet::new(),
            seen: Instant::now(),
            incarnation,
        });
        if !std::ptr::eq(s.queue.as_ptr(), Arc::as_ptr(q)) {
            // A new leadership: what the old one handed out comes back by
            // the replay; its consumers register again as they take.
            s.queue = Arc::downgrade(q);
            s.offsets.clear();
            s.consumers.clear();
            s.last_takes.clear();
        }
        s.seen = Instant::now();
        s.incarnation = incarnation;
        s.offsets.extend(taken.iter().copied());
        for o in settled {
            s.offsets.remove(o);
        }
    }

    /// The queue's consumer id of a forwarding node's consumer `remote`
    /// (its id in `session`, exclusive), registered now if it is not yet
    /// (its first take, or a new leadership's). `None`: that consumer was
    /// cancelled, and a registration or take arriving after its cancel
    /// (sent earlier, or retried, on another connection of the cluster
    /// port) must not bring it back: registered for good, it would count
    /// as a consumer, hold an exclusive consume or single-active-consumer
    /// turn, and never take (Found 15).
    fn session_consumer(
        &self,
        vhost: &str,
        name: &str,
        session: &str,
        q: &Arc<Queue>,
        (remote, exclusive): (u64, bool),
    ) -> Result<Option<u64>, PeerError> {
        self.note_session(vhost, name, session, q, &[], &[]);
        let mut sessions = lock(&self.queue_sessions);
        let key = (vhost.to_string(), name.to_string(), session.to_string());
        let s = sessions.get_mut(&key).ok_or(PeerError::NotLeaderOrFollower)?;
        if let Some(id) = s.consumers.get(&remote) {
            return Ok(Some(*id));
        }
        if s.cancelled.contains(&remote) {
            tracing::info!(queue = %q.name(), session, consumer = remote, "a cancelled forwarded consumer not registered again");
            return Ok(None);
        }
        let id = q.add_consumer(exclusive).map_err(|e| match e {
            crate::messaging::MessagingError::AccessRefused(m) => PeerError::AccessRefused(m),
            other => PeerError::Failed(other.to_string()),
        })?;
        s.consumers.insert(remote, id);
        tracing::info!(queue = %q.name(), session, consumer = remote, id, "a forwarded consumer registered");
        Ok(Some(id))
    }

    /// Removes a forwarding node's consumer (its cancel). What its take
    /// numbered `unanswered` handed out and is still out with the session
    /// goes back to the queue: that answer never reached the forwarding
    /// node (it would have taken the next number), so nobody else will
    /// deliver or settle it before the session expires.
    fn cancel_session_consumer(
        &self,
        (vhost, name, session): (&str, &str, &str),
        q: &Arc<Queue>,
        remote: u64,
        unanswered: Option<u64>,
    ) -> crate::Result<()> {
        self.note_session(vhost, name, session, q, &[], &[]);
        let key = (vhost.to_string(), name.to_string(), session.to_string());
        let (id, lost) = {
            let mut sessions = lock(&self.queue_sessions);
            let Some(s) = sessions.get_mut(&key) else { return Ok(()) };
            s.cancelled.insert(remote);
            while s.cancelled.len() > CANCELLED {
                s.cancelled.pop_first();
            }
            let lost: Vec<u64> = match s.last_takes.remove(&remote) {
                Some((n, deliveries)) if Some(n) == unanswered => {
                    deliveries.iter().map(|w| w.offset).filter(|o| s.offsets.remove(o)).collect()
                }
                _ => Vec::new(),
            };
            (s.consumers.remove(&remote), lost)
        };
        tracing::info!(
            queue = %q.name(),
            session,
            consumer = remote,
            registered = id.is_some(),
            handed_back = lost.len(),
            "a forwarded consumer cancelled"
        );
        if let Some(id) = id {
            q.remove_consumer(id);
        }
        if !lost.is_empty() {
            tracing::debug!(queue = %q.name(), deliveries = lost.len(), "a cancelled consumer's lost take handed back");
            q.requeue(&lost)?;
        }
        Ok(())
    }

    /// Whether `remote` of `key`'s session was cancelled.
    fn cancelled(&self, key: &(String, String, String), remote: u64) -> bool {
        lock(&self.queue_sessions).get(key).is_some_and(|s| s.cancelled.contains(&remote))
    }

    /// Of `offsets`, those out with `key`'s session in `q`'s leadership.
    fn held_by_session(&self, key: &(String, String, String), q: &Arc<Queue>, offsets: &[u64]) -> Vec<u64> {
        let sessions = lock(&self.queue_sessions);
        let Some(s) = sessions.get(key).filter(|s| std::ptr::eq(s.queue.as_ptr(), Arc::as_ptr(q))) else {
            return Vec::new();
        };
        offsets.iter().copied().filter(|o| s.offsets.contains(o)).collect()
    }

    /// A retried take (`number` as the consumer's last take): that take's
    /// deliveries still out with the session, the first answer having
    /// been lost. `None`: a new take.
    fn retaken(
        &self,
        key: &(String, String, String),
        q: &Arc<Queue>,
        consumer: u64,
        number: u64,
    ) -> Option<Vec<WireDelivery>> {
        let sessions = lock(&self.queue_sessions);
        let s = sessions.get(key).filter(|s| std::ptr::eq(s.queue.as_ptr(), Arc::as_ptr(q)))?;
        let (n, deliveries) = s.last_takes.get(&consumer)?;
        (*n == number).then(|| deliveries.iter().filter(|w| s.offsets.contains(&w.offset)).cloned().collect())
    }

    /// Sessions silent past [`SESSION_TIMEOUT`] (past [`FENCED_SILENCE`]
    /// for a node the controller fenced) hand their deliveries back
    /// (the housekeeping tick).
    pub(crate) fn expire_queue_sessions(&self) {
        let image = self.metadata();
        // A session of a node the controller fenced (it died), or whose
        // node registered again since its last call (it died and restarted:
        // its new process has sessions of its own, and a restart within
        // the dead-node grace is never fenced), goes once silent for
        // FENCED_SILENCE, not the full SESSION_TIMEOUT: its deliveries
        // (confirmed messages) would otherwise stay out for 30 s (the AMQP
        // chaos run, seed 16). Not at once: a node fenced while alive (a
        // pause, a loaded machine) still takes and renews, and must keep
        // its deliveries; a session whose first calls came before this
        // node's image had its restart renews within the silence and
        // records the new incarnation.
        let dead = |session: &str, s: &Session| {
            session_node(session).is_some_and(|node| match image.nodes.get(&node) {
                Some(n) => n.fenced || s.incarnation.is_some_and(|i| i != n.incarnation),
                None => true,
            })
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
                        || (silent >= FENCED_SILENCE && dead(session, s))
                })
                .map(|(k, _)| k.clone())
                .collect();
            gone.into_iter().filter_map(|k| sessions.remove(&k)).collect()
        };
        for s in expired {
            let Some(q) = s.queue.upgrade() else { continue };
            for id in s.consumers.values() {
                q.remove_consumer(*id);
            }
            let offsets: Vec<u64> = s.offsets.into_iter().collect();
            tracing::info!(
                queue = %q.name(),
                deliveries = offsets.len(),
                consumers = s.consumers.len(),
                "a forwarding node's session expired"
            );
            if let Err(e) = q.requeue(&offsets) {
                tracing::warn!(queue = %q.name(), error = %e, "returning an expired session's deliveries failed");
            }
        }
    }

    /// Carries out a forwarded queue call (see `serve_peer`).
    pub(crate) async fn serve_queue_peer(self: Arc<Self>, request: PeerRequest) -> Result<PeerReply, PeerError> {
        match request {
            PeerRequest::QueuePublish { vhost, queue, batch, id, seqs, pipelined, after, resent } => {
                let q = self.served_queue(&vhost, &queue)?;
                if after.is_some_and(|l| l != q.leadership()) {
                    // Earlier batches of the pipeline went to another
                    // leadership: they are sent again first (order).
                    return Err(PeerError::NotLeaderOrFollower);
                }
                let msgs = message::decode_batches(batch.bytes()).map_err(PeerError::from)?;
                let id = id.map(|(session, _)| (session, resent));
                let Stored { stored, wait } = self.store_forwarded(&vhost, &queue, &q, id, seqs, msgs)?;
                if pipelined {
                    return Ok(PeerReply::QueueAppended { stored, wait, leadership: q.leadership() });
                }
                if let Some(offset) = wait
                    && !completion(|done| q.on_durable(offset, done)).await
                {
                    // Not on the ISR (leadership moved, ISR too small): the
                    // forwarding node retries with the same ids.
                    return Err(PeerError::NotLeaderOrFollower);
                }
                Ok(PeerReply::QueueStored(stored))
            }
            PeerRequest::QueueCommitted { vhost, queue, leadership, offset } => {
                let q = self.served_queue(&vhost, &queue)?;
                // Another leadership's offset may name another record.
                if q.leadership() != leadership || !completion(|done| q.on_durable(offset, done)).await {
                    return Err(PeerError::NotLeaderOrFollower);
                }
                Ok(PeerReply::Done)
            }
            PeerRequest::QueueConsume { vhost, queue, session, consumer, exclusive, cancel, unanswered } => {
                let q = self.served_queue(&vhost, &queue)?;
                if cancel {
                    self.cancel_session_consumer((&vhost, &queue, &session), &q, consumer, unanswered)?;
                } else {
                    self.session_consumer(&vhost, &queue, &session, &q, (consumer, exclusive))?;
                }
                Ok(PeerReply::Done)
            }
            PeerRequest::QueueTake { vhost, queue, session, max, wait_ms, consumer, number } => {
                let q = self.served_queue(&vhost, &queue)?;
                let key = (vhost.clone(), queue.clone(), session.clone());
                let retry = consumer.zip(number).map(|((c, _), n)| (c, n));
                if let Some((c, n)) = retry
                    && let Some(deliveries) = self.retaken(&key, &q, c, n)
                {
                    self.note_session(&vhost, &queue, &session, &q, &[], &[]);
                    return Ok(PeerReply::QueueDeliveries {
                        deliveries,
                        ready: q.ready_count(),
                        consumers: q.consumer_count(),
                    });
                }
                if let Some((c, _)) = consumer
                    && self.cancelled(&key, c)
                {
                    // Sent before its consumer's cancel, arriving after it:
                    // nothing is taken for a consumer that is gone.
                    self.note_session(&vhost, &queue, &session, &q, &[], &[]);
                    return Ok(PeerReply::QueueDeliveries {
                        deliveries: Vec::new(),
                        ready: q.ready_count(),
                        consumers: q.consumer_count(),
                    });
                }
                // A consumer's take respects single-active-consumer.
                let taker = match consumer {
                    Some(c) if max > 0 => match self.session_consumer(&vhost, &queue, &session, &q, c)? {
                        Some(id) => Some(id),
                        // Cancelled since the check above.
                        None => {
                            return Ok(PeerReply::QueueDeliveries {
                                deliveries: Vec::new(),
                                ready: q.ready_count(),
                                consumers: q.consumer_count(),
                            });
                        }
                    },
                    _ => None,
                };
                let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms).min(MAX_WAIT);
                let mut out = Vec::new();
                loop {
                    let available = q.notifier().notified();
                    tokio::pin!(available);
                    available.as_mut().enable();
                    while out.len() < max as usize {
                        match q.take(taker).map_err(PeerError::from)? {
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
                if let Some((c, n)) = retry
                    && let Some(s) = lock(&self.queue_sessions).get_mut(&key)
                {
                    s.last_takes.insert(c, (n, deliveries.clone()));
                }
                Ok(PeerReply::QueueDeliveries { deliveries, ready: q.ready_count(), consumers: q.consumer_count() })
            }
            PeerRequest::QueueSettle { vhost, queue, session, acks, requeues, rejects } => {
                let q = self.served_queue(&vhost, &queue)?;
                // Only what is out with this session goes back: the rest
                // went back already (a cancel's lost take, an expired
                // session, an earlier leadership) and may be out with
                // another consumer now.
                let requeues = self.held_by_session(&(vhost.clone(), queue.clone(), session.clone()), &q, &requeues);
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
pub(super) mod tests {
    use std::sync::Arc;

    use crate::broker::{Broker, BrokerConfig};
    use crate::metadata::{MetadataRecord, PeerReply, PeerRequest, QueueKind};
    use crate::testing::TestController;

    use super::encode_messages;
    use crate::messaging::quorum::tests::{message, ready_bodies};

    /// A broker leading quorum queue `orders`, and its controller.
    pub(in crate::messaging) async fn leading_orders(dir: &tempfile::TempDir) -> (Arc<Broker>, Arc<TestController>) {
        let broker = Broker::open(BrokerConfig { data_dir: dir.path().to_path_buf(), ..Default::default() }).unwrap();
        let controller = crate::testing::install(&broker);
        crate::testing::declare_quorum(&broker, "orders").await;
        (broker, controller)
    }

    /// Leadership of `orders` moves away and back: a new leader epoch, a
    /// new leadership replaying the same log (as a new leader's would).
    pub(in crate::messaging) fn takeover(broker: &Broker, controller: &TestController, isr: Vec<i32>) {
        let QueueKind::Quorum { topic_id } = broker.metadata().amqp["/"].queues["orders"].kind else {
            panic!("not a quorum queue")
        };
        let lead = |leader, isr| MetadataRecord::PartitionChange {
            topic_id,
            partition: 0,
            leader,
            isr,
            replicas: None,
            elr: None,
        };
        controller.apply(vec![lead(-1, vec![broker.node_id()])]).unwrap();
        assert!(broker.quorum_queue("/", "orders").is_none(), "not served without the leadership");
        controller.apply(vec![lead(broker.node_id(), isr)]).unwrap();
    }

    /// Message `m{first}`, `m{first + 1}`, .. of session `node2-session`,
    /// with sequence numbers `seqs` (none: no ids at all).
    pub(in crate::messaging) fn publish(first: u32, n: u32, seqs: Option<Vec<u64>>) -> PeerRequest {
        let msgs: Vec<_> = (first..first + n).map(message).collect();
        PeerRequest::QueuePublish {
            vhost: "/".into(),
            queue: "orders".into(),
            batch: encode_messages(&msgs).unwrap(),
            id: seqs.as_ref().map(|s| ("node2-session".to_string(), s.first().copied().unwrap_or(0))),
            seqs: seqs.unwrap_or_default(),
            pipelined: false,
            after: None,
            resent: crate::metadata::Resent::Unknown,
        }
    }

    async fn stored(broker: &Arc<Broker>, request: PeerRequest, what: &str) -> Vec<bool> {
        match broker.clone().serve_queue_peer(request).await {
            Ok(PeerReply::QueueStored(stored)) => stored,
            other => panic!("{what}: {other:?}"),
        }
    }

    /// A forwarding node retries a batch whose answer it lost (its
    /// connection to the leader was torn while the ISR caught up: chaos
    /// seed 17, docs/reliability.md Found 12): the leader answers the retry
    /// from its log and stores nothing again. Another batch, or a request
    /// without ids, is stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retried_forwarded_batch_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, _controller) = leading_orders(&dir).await;
        for (request, what) in [
            (publish(0, 2, Some(vec![7, 8])), "batch 7"),
            (publish(0, 2, Some(vec![7, 8])), "batch 7 again"),
            (publish(2, 2, Some(vec![9, 10])), "batch 9"),
            (publish(4, 2, None), "no ids"),
        ] {
            assert_eq!(stored(&broker, request, what).await, [true, true], "{what}");
        }
        assert_eq!(ready_bodies(&broker), ["m0", "m1", "m2", "m3", "m4", "m5"], "each message stored once");
    }

    /// Found 13 (chaos seed 19): the leader stored a forwarded batch and
    /// lost its leadership before the ISR answered; the retry reaches the
    /// next leader, whose log holds the batch. It is answered from that
    /// log, not stored a second time (the leadership's memory is gone: the
    /// ids come from the records). A retry holding one message more (it
    /// joined the batch after the first attempt) stores only that one, and
    /// ids of another session are no match.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retry_reaching_the_next_leader_is_not_stored_again() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, controller) = leading_orders(&dir).await;
        assert_eq!(stored(&broker, publish(0, 2, Some(vec![0, 1])), "first attempt").await, [true, true]);
        takeover(&broker, &controller, vec![broker.node_id()]);
        assert_eq!(stored(&broker, publish(0, 2, Some(vec![0, 1])), "retry").await, [true, true]);
        assert_eq!(stored(&broker, publish(0, 3, Some(vec![0, 1, 2])), "retry and one more").await, [true; 3]);
        let other = match publish(3, 1, Some(vec![0])) {
            PeerRequest::QueuePublish { vhost, queue, batch, seqs, pipelined, after, resent, .. } => {
                let id = Some(("node3-session".into(), 0));
                PeerRequest::QueuePublish { vhost, queue, batch, id, seqs, pipelined, after, resent }
            }
            _ => unreachable!(),
        };
        assert_eq!(stored(&broker, other, "another session").await, [true]);
        assert_eq!(ready_bodies(&broker), ["m0", "m1", "m2", "m3"], "each message stored once across the takeover");
    }

    /// A forwarded batch is one append (one record batch in the log, each
    /// record with its publisher id); a retry whose first messages the
    /// log holds appends only the rest, again as one batch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_forwarded_batch_is_one_append() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, _controller) = leading_orders(&dir).await;
        assert_eq!(stored(&broker, publish(0, 5, Some(vec![0, 1, 2, 3, 4])), "five").await, [true; 5]);
        assert_eq!(stored(&broker, publish(0, 8, Some((0..8).collect())), "retry and three").await, [true; 8]);
        let q = broker.quorum_queue("/", "orders").unwrap();
        let bytes = q.log().read(0, 1 << 20).unwrap().expect("the log's records").to_vec().unwrap();
        let batches = ferry_records::batch::split(&bytes).unwrap();
        let counts: Vec<u32> = batches.iter().map(|(h, _)| h.records_count).collect();
        assert_eq!(counts, [5, 3], "one batch per forwarded batch");
        assert_eq!(ready_bodies(&broker), ["m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7"]);
    }
}

#[cfg(test)]
mod take_tests {
    use crate::metadata::{PeerReply, PeerRequest};

    use super::tests::publish;

    /// A take of two by `session`, without a consumer or a number.
    fn take(session: &str) -> PeerRequest {
        take_by(session, None, None)
    }

    /// A take of two by `session`, for `consumer`, numbered `number`.
    fn take_by(session: &str, consumer: Option<(u64, bool)>, number: Option<u64>) -> PeerRequest {
        PeerRequest::QueueTake {
            vhost: "/".into(),
            queue: "orders".into(),
            session: session.into(),
            max: 2,
            wait_ms: 0,
            consumer,
            number,
        }
    }

    /// A forwarding node whose take's answer was lost (chaos seed 16: an
    /// isolated node's consumer skipped a message that stayed out with
    /// its session for good) retries the take under the same number and
    /// gets the same deliveries; the next number takes new ones; settled
    /// ones are not handed out again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retried_take_gets_the_lost_answer_again() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, _controller) = super::tests::leading_orders(&dir).await;
        broker.clone().serve_queue_peer(publish(0, 6, None)).await.unwrap();
        let take = |number: u64| take_by("node2-session", Some((7, false)), Some(number));
        let offsets = |reply: PeerReply| match reply {
            PeerReply::QueueDeliveries { deliveries, consumers, .. } => {
                assert_eq!(consumers, 1, "the consumer is registered");
                deliveries.iter().map(|w| w.offset).collect::<Vec<u64>>()
            }
            other => panic!("{other:?}"),
        };
        let first = offsets(broker.clone().serve_queue_peer(take(0)).await.unwrap());
        assert_eq!(first.len(), 2);
        let again = offsets(broker.clone().serve_queue_peer(take(0)).await.unwrap());
        assert_eq!(again, first, "a retry of take 0 gets take 0's deliveries");
        let next = offsets(broker.clone().serve_queue_peer(take(1)).await.unwrap());
        assert_eq!(next.len(), 2);
        assert!(next.iter().all(|o| !first.contains(o)), "take 1 takes new ones: {first:?} {next:?}");
        // Settled: a retry of take 1 returns only what is still out.
        let settle = PeerRequest::QueueSettle {
            vhost: "/".into(),
            queue: "orders".into(),
            session: "node2-session".into(),
            acks: vec![next[0]],
            requeues: Vec::new(),
            rejects: Vec::new(),
        };
        broker.clone().serve_queue_peer(settle).await.unwrap();
        let retried = offsets(broker.clone().serve_queue_peer(take(1)).await.unwrap());
        assert_eq!(retried, [next[1]]);
    }

    /// A forwarding node's registration of a consumer reaching the leader
    /// after that consumer's cancel (sent earlier, held up on a slow or
    /// torn cluster-port connection while the cancel took another; Found
    /// 15) registers nothing: the leader neither counts it nor lets it
    /// take. Another consumer of the same session registers as before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_registration_arriving_after_its_cancel_registers_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, _controller) = super::tests::leading_orders(&dir).await;
        broker.clone().serve_queue_peer(publish(0, 2, None)).await.unwrap();
        let consume = |consumer: u64, cancel: bool| PeerRequest::QueueConsume {
            vhost: "/".into(),
            queue: "orders".into(),
            session: "node2-session".into(),
            consumer,
            exclusive: false,
            cancel,
            unanswered: None,
        };
        let q = broker.quorum_queue("/", "orders").unwrap();
        broker.clone().serve_queue_peer(consume(7, true)).await.unwrap();
        broker.clone().serve_queue_peer(consume(7, false)).await.unwrap();
        assert_eq!(q.consumer_count(), 0, "the cancelled consumer is not registered");
        match broker.clone().serve_queue_peer(take_by("node2-session", Some((7, false)), Some(0))).await.unwrap() {
            PeerReply::QueueDeliveries { deliveries, consumers, .. } => {
                assert!(deliveries.is_empty(), "a cancelled consumer takes nothing");
                assert_eq!(consumers, 0);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(q.ready_count(), 2);
        broker.clone().serve_queue_peer(consume(8, false)).await.unwrap();
        assert_eq!(q.consumer_count(), 1, "another consumer registers");
    }

    /// A forwarded requeue hands back only what its session holds: an
    /// offset out with another node's session (handed back by a cancel or
    /// an expiry and taken again since, or a late settle) stays out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_requeue_returns_only_what_its_session_holds() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, _controller) = super::tests::leading_orders(&dir).await;
        broker.clone().serve_queue_peer(publish(0, 4, None)).await.unwrap();
        let requeue = |session: &str, offsets: Vec<u64>| PeerRequest::QueueSettle {
            vhost: "/".into(),
            queue: "orders".into(),
            session: session.into(),
            acks: Vec::new(),
            requeues: offsets,
            rejects: Vec::new(),
        };
        let taken = match broker.clone().serve_queue_peer(take("node2-session")).await.unwrap() {
            PeerReply::QueueDeliveries { deliveries, .. } => deliveries.iter().map(|w| w.offset).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(taken.len(), 2);
        let q = broker.quorum_queue("/", "orders").unwrap();
        assert_eq!(q.ready_count(), 2);
        broker.clone().serve_queue_peer(requeue("node3-session", taken.clone())).await.unwrap();
        assert_eq!(q.ready_count(), 2, "another session's requeue leaves node 2's deliveries out");
        broker.clone().serve_queue_peer(requeue("node2-session", taken)).await.unwrap();
        assert_eq!(q.ready_count(), 4, "its own session's requeue hands them back");
    }

    /// A forwarding node killed and restarted within the dead-node grace
    /// (never fenced) leaves its old process's session behind: its
    /// deliveries, confirmed messages, go back once the session is silent
    /// for `FENCED_SILENCE`, not after the 30 s `SESSION_TIMEOUT` (AMQP
    /// chaos run, seed 16: 50 messages out with node 2's dead session for
    /// 32 s; a run whose drain came first reported one as never read).
    /// The new process's session, whose first call came after the
    /// restart, keeps its deliveries.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restarted_nodes_old_session_hands_its_deliveries_back() {
        use crate::metadata::{MetadataRecord, NodeInfo};
        let dir = tempfile::tempdir().unwrap();
        let (broker, controller) = super::tests::leading_orders(&dir).await;
        let register = |incarnation: u128| {
            let node = NodeInfo {
                id: 2,
                incarnation: uuid::Uuid::from_u128(incarnation),
                listeners: Default::default(),
                rack: None,
                voter: true,
                fenced: false,
            };
            controller.apply(vec![MetadataRecord::RegisterNode(node)]).unwrap();
        };
        register(1);
        broker.clone().serve_queue_peer(publish(0, 6, None)).await.unwrap();
        let taken = |reply: PeerReply| match reply {
            PeerReply::QueueDeliveries { deliveries, .. } => deliveries,
            other => panic!("{other:?}"),
        };
        let old = taken(broker.clone().serve_queue_peer(take("2-first")).await.unwrap());
        assert_eq!(old.len(), 2);
        let q = broker.quorum_queue("/", "orders").unwrap();
        // Silent as long as a dead session would be by the next tick.
        let silence = |session: &str| {
            let key = ("/".to_string(), "orders".to_string(), session.to_string());
            let mut sessions = ferry_util::sync::lock(&broker.queue_sessions);
            let s = sessions.get_mut(&key).expect("the session");
            s.seen -= super::FENCED_SILENCE + std::time::Duration::from_secs(1);
        };
        silence("2-first");
        broker.expire_queue_sessions();
        assert_eq!(q.ready_count(), 4, "node 2 unchanged (a pause): its session keeps its deliveries");

        register(2);
        let new = taken(broker.clone().serve_queue_peer(take("2-second")).await.unwrap());
        assert_eq!(new.len(), 2);
        assert!(new.iter().all(|d| !old.iter().any(|o| o.offset == d.offset)));
        assert_eq!(q.ready_count(), 2);
        silence("2-second");
        broker.expire_queue_sessions();
        assert_eq!(q.ready_count(), 4, "the old process's session handed back its two, the new one kept its own");
        let again = taken(broker.clone().serve_queue_peer(take("3-other")).await.unwrap());
        let offsets = |ds: &[crate::metadata::WireDelivery]| ds.iter().map(|d| d.offset).collect::<Vec<_>>();
        assert_eq!(offsets(&again), offsets(&old), "the old session's deliveries come first");
        assert!(again.iter().all(|d| d.redelivered), "flagged redelivered: {:?}", offsets(&again));
    }
}
