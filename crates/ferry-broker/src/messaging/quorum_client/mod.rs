//! A node's client of one quorum queue (issue #17, "any node serves any
//! client"): every channel of this node reaches the queue through it,
//! whichever node leads it now. Each call looks the leader up in the
//! latest image: this node (the local [`Queue`]) or another one, called
//! over the cluster port (`remote_queue.rs` is the other end).
//!
//! A classic queue held by another node is reached the same way, its
//! holder standing for the leader (phase 2c); it never moves, and while
//! its holder is fenced (down) publishes to it are nacked at once and
//! declarations, consumes and gets answer 404, as RabbitMQ answers for a
//! classic queue whose node is down.
//!
//! - Publishes go through one ordered pipeline: a batch is sent once the
//!   one before is appended (not once on the ISR), each waiting for the
//!   ISR separately (`window.rs`), and confirmed in order; a batch is
//!   retried on the next leader until one stores it and its ISR has it, for
//!   up to [`PUBLISH_DEADLINE`], then nacked. Every message carries this
//!   client's session and a sequence number, stored with it in the queue's
//!   log (`publish_ids`): the same in every retry, so whichever leader gets
//!   a retry stores only what its log does not hold yet. A message stored
//!   here while this node led, whose leadership ended before the ISR had
//!   it, is retried the same way instead of being nacked: it may survive
//!   in the new leader's log (docs/reliability.md, Found 13).
//! - Settlements (ack, requeue, reject) are kept until a leader answered
//!   them (its cursor records on the ISR) and re-sent to the next leader
//!   until then; a take waits for them, so a new leader never hands out
//!   again what this node's consumers acknowledged. Offsets acknowledged
//!   here recently are also filtered out of what a leader hands out.
//!   A publish's confirm waits for the settlements made before it
//!   (`settle_gate.rs`), so a confirm means earlier acks are on the ISR.
//! - Consumers survive leader moves: a consumer follows the leader (local
//!   or remote); its deliveries out at the move come back from the new
//!   leader flagged redelivered. Only a deletion ends it.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use ferry_util::sync::lock;
use ferry_util::time::now_ms_u64;
use tokio::sync::Notify;

use crate::broker::Broker;
mod idle;
#[cfg(test)]
mod pipeline_tests;
mod pipelines;
mod register;
mod settle_gate;
mod take;
mod window;

pub(crate) use idle::IDLE;

use crate::messaging::MessagingError;
use crate::messaging::consumer::{self, Credit, FeedEnd};
use crate::messaging::message::Message;
use crate::messaging::queue::{Delivery, Published, Queue};
use crate::messaging::remote_queue::decode_delivery;

use crate::metadata::{PeerError, PeerReply, PeerRequest, QueueKind};
use window::Pending;

/// A forwarded publish is nacked if no leader stored it within this.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(30);
/// Long-poll of a remote take.
const TAKE_WAIT_MS: u64 = 1000;
/// Pause before retrying a call that found no leader.
const RETRY: Duration = Duration::from_millis(100);
/// Renewal period of this node's session on a remote leader.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Recently acknowledged offsets remembered for filtering.
const RECENT_ACKS: usize = 1 << 16;
/// Messages per forwarded publish batch.
const PUBLISH_BATCH: usize = 256;
/// How long a removed consumer's cancel is retried towards the leader
/// (past it the leader's session timeout has removed it anyway).
const CANCEL_DEADLINE: Duration = Duration::from_secs(30);

/// Clients by (vhost, queue).
pub type Clients = HashMap<(String, String), Arc<QuorumClient>>;

/// Called with a publish's outcome: stored on the ISR (true) or not.
pub type Done = Box<dyn FnOnce(bool) + Send>;

/// Where the queue is served now.
enum Target {
    /// Here.
    Local(Arc<Queue>),
    /// On node `node`, in `epoch`: a quorum queue's leader epoch, a
    /// classic queue's holder incarnation (what a restart changes).
    Remote { node: i32, epoch: u128 },
    /// No leader at the moment.
    Unavailable,
    /// A classic queue whose holder is down (fenced).
    Down { node: i32 },
    /// The queue is no longer declared.
    Deleted,
}

#[derive(Default)]
struct Settles {
    acks: Vec<u64>,
    requeues: Vec<u64>,
    rejects: Vec<u64>,
    /// A batch is on its way to a leader.
    sending: bool,
    /// Confirms waiting for the settlements made before their publish.
    gate: settle_gate::SettleGate,
}

impl Settles {
    fn is_empty(&self) -> bool {
        self.acks.is_empty() && self.requeues.is_empty() && self.rejects.is_empty()
    }
}

/// This node's client of one quorum queue.
pub struct QuorumClient {
    broker: Weak<Broker>,
    vhost: String,
    name: String,
    /// This node's session on remote leaders.
    session: String,
    /// Waiting for the pipeline, in sequence order.
    publishes: Mutex<VecDeque<Pending>>,
    /// Messages the pipeline took from `publishes` and has not confirmed
    /// or nacked yet (a publish stored here directly must not overtake
    /// them).
    forwarding: AtomicUsize,
    /// Shared with the pipelines, which wait on them without holding the
    /// client (an idle client is freed).
    publish_wake: Arc<Notify>,
    settles: Mutex<Settles>,
    settle_wake: Arc<Notify>,
    /// Raised when a settlement batch was answered.
    settled: Notify,
    recent_acks: Mutex<BTreeSet<u64>>,
    /// Deliveries taken from a remote leader and not yet settled (the
    /// session needs renewing while there are any).
    unsettled: AtomicI64,
    next_consumer: AtomicU64,
    /// Numbers this client's messages (with `session`, the id a leader
    /// recognises a retry by).
    next_seq: AtomicU64,
    workers: AtomicBool,
    /// Wall-clock ms of the last call (an idle client is freed).
    last_used: AtomicU64,
}

/// Deliveries taken from a remote leader, tagged with its (node, epoch).
type Buffered = (Option<(i32, u128)>, VecDeque<Delivery>);

/// One consumer of a quorum queue on this node.
pub struct QuorumConsumer {
    id: u64,
    exclusive: bool,
    /// Deliveries asked of a remote leader per take.
    window: u32,
    /// Taken from a remote leader (node, epoch) and not yet handed out.
    buffer: Mutex<Buffered>,
    /// Its registration on the local queue, while this node leads.
    local: Mutex<Option<(Weak<Queue>, u64)>>,
    /// Removed (cancelled, channel closed): takes answered since go back.
    removed: AtomicBool,
    /// Takes answered by remote leaders (the next take's number).
    takes: AtomicU64,
}

impl std::fmt::Debug for QuorumConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuorumConsumer").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Broker {
    /// This node's client of quorum queue `name` of `vhost` (made on first use).
    pub fn quorum_client(self: &Arc<Self>, vhost: &str, name: &str) -> Arc<QuorumClient> {
        lock(&self.quorum_clients)
            .entry((vhost.to_string(), name.to_string()))
            .or_insert_with(|| {
                Arc::new(QuorumClient {
                    broker: Arc::downgrade(self),
                    vhost: vhost.to_string(),
                    name: name.to_string(),
                    session: format!("{}-{}", self.node_id(), uuid::Uuid::new_v4().simple()),
                    publishes: Mutex::default(),
                    forwarding: AtomicUsize::new(0),
                    publish_wake: Arc::default(),
                    settles: Mutex::default(),
                    settle_wake: Arc::default(),
                    settled: Notify::new(),
                    recent_acks: Mutex::default(),
                    unsettled: AtomicI64::new(0),
                    next_consumer: AtomicU64::new(0),
                    next_seq: AtomicU64::new(0),
                    workers: AtomicBool::new(false),
                    last_used: AtomicU64::new(now_ms_u64()),
                })
            })
            .clone()
    }

    /// Whether `vhost` declares `name` as a quorum queue (in the image).
    pub fn is_quorum_queue(&self, vhost: &str, name: &str) -> bool {
        self.metadata()
            .amqp
            .get(vhost)
            .and_then(|d| d.queues.get(name))
            .is_some_and(|d| matches!(d.kind, QueueKind::Quorum { .. }))
    }

    /// Whether this node reaches `name` of `vhost` through a
    /// [`QuorumClient`]: a quorum queue, or a classic queue another node
    /// holds.
    pub fn is_forwarded_queue(&self, vhost: &str, name: &str) -> bool {
        self.metadata().amqp.get(vhost).and_then(|d| d.queues.get(name)).is_some_and(|d| match d.kind {
            QueueKind::Quorum { .. } => true,
            QueueKind::Classic { node } => node != self.node_id(),
        })
    }
}

fn unavailable(why: impl std::fmt::Display) -> MessagingError {
    MessagingError::Internal(crate::BrokerError::ControllerUnavailable(why.to_string()))
}

impl QuorumClient {
    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn target(&self) -> Target {
        let Some(b) = self.broker.upgrade() else { return Target::Deleted };
        let image = b.metadata();
        let Some(def) = image.amqp.get(&self.vhost).and_then(|d| d.queues.get(&self.name)) else {
            return Target::Deleted;
        };
        let topic_id = match def.kind {
            QueueKind::Quorum { topic_id } => topic_id,
            QueueKind::Classic { node } if node == b.node_id() => {
                return b.held_classic_queue(&self.vhost, &self.name).map_or(Target::Unavailable, Target::Local);
            }
            QueueKind::Classic { node } => {
                return match image.nodes.get(&node) {
                    Some(n) if !n.fenced => Target::Remote { node, epoch: n.incarnation.as_u128() },
                    _ => Target::Down { node },
                };
            }
        };
        if let Some(q) = b.quorum_queue(&self.vhost, &self.name) {
            return Target::Local(q);
        }
        match image.topic_by_id(topic_id).and_then(|t| t.partitions.first()) {
            Some(p) if p.leader >= 0 && p.leader != b.node_id() => {
                Target::Remote { node: p.leader, epoch: u128::from(p.leader_epoch as u32) }
            }
            Some(_) => Target::Unavailable,
            None => Target::Deleted,
        }
    }

    /// The local queue, if this node serves it now.
    pub fn local(&self) -> Option<Arc<Queue>> {
        match self.target() {
            Target::Local(q) => Some(q),
            _ => None,
        }
    }

    async fn call(&self, node: i32, request: PeerRequest) -> Result<PeerReply, PeerError> {
        let b = self.broker.upgrade().ok_or_else(|| PeerError::Unavailable("broker stopped".into()))?;
        let controller =
            b.controller.get().cloned().ok_or_else(|| PeerError::Unavailable("no controller installed".into()))?;
        drop(b);
        controller.call_peer(node, request).await
    }

    /// A call from a synchronous caller on an async worker (basic.get,
    /// queue.declare's counts, queue.purge): on a multi-threaded runtime
    /// only, never blocking a current-thread one.
    fn call_blocking(&self, node: i32, request: PeerRequest) -> Result<PeerReply, MessagingError> {
        self.call_blocking_within(node, request, None)
    }

    /// [`Self::call_blocking`], given up after `within` if set (the call
    /// may still be carried out).
    fn call_blocking_within(
        &self,
        node: i32,
        request: PeerRequest,
        within: Option<Duration>,
    ) -> Result<PeerReply, MessagingError> {
        let Some(within) = within else {
            let b = self.broker.upgrade().ok_or_else(|| unavailable("broker stopped"))?;
            let call = || b.call_peer_blocking(node, request).map_err(MessagingError::Internal);
            return match tokio::runtime::Handle::try_current() {
                Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                    tokio::task::block_in_place(call)
                }
                Ok(_) => Err(unavailable("forwarding needs a multi-threaded runtime")),
                Err(_) => call(),
            };
        };
        self.blocking(async move {
            match tokio::time::timeout(within, self.call(node, request)).await {
                Ok(answer) => answer.map_err(|e| MessagingError::Internal(e.into())),
                Err(_) => Err(unavailable(format!("node {node} did not answer within {within:?}"))),
            }
        })
    }

    fn start_workers(self: &Arc<Self>) {
        if self.workers.swap(true, Ordering::AcqRel) {
            return;
        }
        // A caller off the runtime (the delayed-message timer, dead-lettering
        // from the queues' maintenance thread) uses the cluster node's.
        let Some(handle) = self.broker.upgrade().and_then(|b| b.runtime_handle()) else {
            self.workers.store(false, Ordering::Release);
            return;
        };
        handle.spawn(pipelines::publisher(Arc::downgrade(self)));
        handle.spawn(pipelines::settler(Arc::downgrade(self)));
    }

    /// Publishes `m`: at once into the local queue when this node leads
    /// it and nothing forwarded is still queued (order), else (or when the
    /// local queue refuses it for now) through the forwarding pipeline.
    /// `Ok(None)`: `done` will be called (a persistent message stored here
    /// is confirmed once the ISR has it, or retried through the pipeline if
    /// this leadership ends first; a transient one stored here while
    /// earlier settlements are unanswered, once they are);
    /// `Ok(Some(..))`: a transient message stored here, or refused (`done`
    /// not called).
    pub fn publish(
        self: &Arc<Self>,
        m: &Message,
        done: Option<Done>,
    ) -> Result<Option<(Arc<Queue>, Published)>, MessagingError> {
        self.touch();
        // Settlements made before this publish and not answered yet: its
        // confirm waits for them (`settle_gate.rs`).
        let need = lock(&self.settles).gate.mark();
        let done = match (done, need) {
            (Some(d), Some(need)) => Some(self.after_settles(need, d)),
            (done, _) => done,
        };
        if lock(&self.publishes).is_empty()
            && self.forwarding.load(Ordering::Acquire) == 0
            && let Target::Local(q) = self.target()
            && let Some(b) = self.broker.upgrade()
        {
            if !m.persistent {
                match q.publish(m) {
                    // Not confirmed at once (as a transient message stored
                    // here otherwise is): once those settlements are.
                    Ok(Published::Stored(_)) if need.is_some() && done.is_some() => {
                        if let Some(done) = done {
                            done(true);
                        }
                        return Ok(None);
                    }
                    Ok(p) => return Ok(Some((q, p))),
                    Err(crate::BrokerError::NotLeaderOrFollower) => {}
                    Err(e) => return Err(e.into()),
                }
            } else {
                let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
                let sent_at = ferry_util::time::now_ms();
                // A new message: no log holds it, nothing to look up.
                let id = (self.session.as_str(), crate::metadata::Resent::No);
                match b.store_published(&self.vhost, &self.name, &q, id, &[(m.clone(), seq)]) {
                    Ok(stored) => match stored.wait {
                        Some(offset) if stored.stored == [true] => {
                            // Held until answered: a client with a publish
                            // out is not idle.
                            let (client, m) = (self.clone(), m.clone());
                            q.on_durable(offset, move |ok| {
                                if ok {
                                    if let Some(done) = done {
                                        done(true);
                                    }
                                } else {
                                    client.retry(Pending::again(m, done, seq, sent_at));
                                }
                            });
                            return Ok(None);
                        }
                        _ => return Ok(Some((q, Published::Rejected))),
                    },
                    // Refused before the append (the leadership just moved,
                    // or too few in-sync replicas for now: followers fenced
                    // under load), perhaps stored before the error: retried
                    // by the pipeline like a forwarded publish (looked up),
                    // in order, until stored or past its deadline. Refused at
                    // once, an MQTT session queue's copy was taken for one a
                    // full queue drops, its publisher told it was stored
                    // (docs/cluster.md, issue #17).
                    Err(crate::BrokerError::NotLeaderOrFollower | crate::BrokerError::NotEnoughReplicas { .. }) => {
                        self.retry(Pending::again(m.clone(), done, seq, sent_at));
                        return Ok(None);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        self.start_workers();
        {
            let mut q = lock(&self.publishes);
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            q.push_back(Pending::new(m.clone(), done, seq));
        }
        self.publish_wake.notify_one();
        Ok(None)
    }

    /// Hands `pending`, stored here while this node led but not confirmed
    /// by that leadership, to the pipeline again, before the messages
    /// published after it (sequence order), with its sequence number.
    fn retry(self: &Arc<Self>, pending: Pending) {
        self.start_workers();
        {
            let mut q = lock(&self.publishes);
            let at = q.partition_point(|p| p.seq < pending.seq);
            q.insert(at, pending);
        }
        self.publish_wake.notify_one();
    }

    /// Acknowledges, hands back or rejects offsets, through whichever node
    /// leads the queue; kept and retried until a leader answers.
    pub fn settle(self: &Arc<Self>, acks: &[u64], requeues: &[u64], rejects: &[u64]) {
        self.touch();
        if !acks.is_empty() {
            let mut recent = lock(&self.recent_acks);
            recent.extend(acks.iter().copied());
            while recent.len() > RECENT_ACKS {
                recent.pop_first();
            }
        }
        {
            let mut s = lock(&self.settles);
            if !(acks.is_empty() && requeues.is_empty() && rejects.is_empty()) {
                s.gate.issue();
            }
            s.acks.extend_from_slice(acks);
            s.requeues.extend_from_slice(requeues);
            s.rejects.extend_from_slice(rejects);
        }
        self.start_workers();
        self.settle_wake.notify_one();
    }

    /// Waits until every settlement made so far has been answered.
    async fn settles_flushed(&self) {
        loop {
            let answered = self.settled.notified();
            tokio::pin!(answered);
            answered.as_mut().enable();
            {
                let s = lock(&self.settles);
                if s.is_empty() && !s.sending {
                    return;
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), answered).await;
        }
    }

    /// Resolves once every settlement made so far is on a leader's ISR.
    pub async fn settled(&self) {
        self.settles_flushed().await;
    }

    /// `done`, holding a positive confirm until settlement `need` (the
    /// last made before the publish) is answered (`settle_gate.rs`): a confirm covers this
    /// node's earlier acks too.
    fn after_settles(self: &Arc<Self>, need: u64, done: Done) -> Done {
        let client = Arc::downgrade(self);
        Box::new(move |ok| {
            let now = match client.upgrade() {
                Some(c) if ok => lock(&c.settles).gate.confirm(need, done),
                // A nack is not held; a freed client had nothing unanswered.
                _ => Some(done),
            };
            if let Some(done) = now {
                done(ok);
            }
        })
    }

    fn recently_acked(&self, offset: u64) -> bool {
        lock(&self.recent_acks).contains(&offset)
    }

    /// A new consumer; `window` is how many deliveries it may hold (its
    /// prefetch; 0 = unlimited). Registered on the node serving the queue
    /// now (again on each later leader as it takes), so the leader counts
    /// it and applies single-active-consumer and exclusive consume across
    /// nodes: refused (403) beside an exclusive consumer, or exclusive
    /// beside any.
    pub fn add_consumer(self: &Arc<Self>, exclusive: bool, window: u16) -> Result<Arc<QuorumConsumer>, MessagingError> {
        self.touch();
        let window = if window == 0 { 64 } else { u32::from(window) };
        let c = Arc::new(QuorumConsumer {
            id: self.next_consumer.fetch_add(1, Ordering::Relaxed),
            exclusive,
            window,
            buffer: Mutex::default(),
            local: Mutex::default(),
            removed: AtomicBool::new(false),
            takes: AtomicU64::new(0),
        });
        match self.target() {
            Target::Local(q) => {
                self.local_id(&c, &q)?;
            }
            Target::Remote { node, .. } => self.register_remote(&c, Some(node))?,
            // No leader now: an exclusive consumer waits for the next one's word.
            Target::Unavailable if exclusive => self.register_remote(&c, None)?,
            Target::Unavailable | Target::Down { .. } | Target::Deleted => {}
        }
        Ok(c)
    }

    /// The consumer is gone: its unsent deliveries go back, and so do those
    /// of a take still out for it (`take.rs`); the node serving the queue
    /// forgets it.
    pub fn remove_consumer(self: &Arc<Self>, c: &QuorumConsumer) {
        if !matches!(self.target(), Target::Local(_))
            && let Some(rt) = self.broker.upgrade().and_then(|b| b.runtime_handle())
        {
            let cancel = PeerRequest::QueueConsume {
                vhost: self.vhost.clone(),
                queue: self.name.clone(),
                session: self.session.clone(),
                consumer: c.id,
                exclusive: c.exclusive,
                cancel: true,
                // A take of this number went unanswered (its answer lost):
                // the leader hands its deliveries back.
                unanswered: Some(c.takes.load(Ordering::Acquire)),
            };
            let me = self.clone();
            let consumer = c.id;
            rt.spawn(async move { me.cancel_remote(consumer, cancel).await });
        }
        let buffered: Vec<u64> = {
            let mut buffer = lock(&c.buffer);
            c.removed.store(true, Ordering::Release);
            buffer.1.drain(..).map(|d| d.message.offset).collect()
        };
        if !buffered.is_empty() {
            self.settle(&[], &buffered, &[]);
        }
        if let Some((q, id)) = lock(&c.local).take()
            && let Some(q) = q.upgrade()
        {
            q.remove_consumer(id);
        }
    }

    /// Sends a removed consumer's cancel to whichever node leads the
    /// queue, until one answers (for at most [`CANCEL_DEADLINE`]): this
    /// node's session on the leader lives on while its other consumers
    /// take, so a cancel lost to a torn connection or sent while no leader
    /// was known would leave the consumer registered there (counted,
    /// holding an exclusive or single-active turn, taking nothing), and
    /// the deliveries of a take whose answer was lost out with the
    /// session. A leader that has not seen the consumer records the
    /// cancel, so a registration still on its way is refused.
    async fn cancel_remote(self: Arc<Self>, consumer: u64, cancel: PeerRequest) {
        let deadline = tokio::time::Instant::now() + CANCEL_DEADLINE;
        let mut last = String::from("no leader");
        while tokio::time::Instant::now() < deadline {
            match self.target() {
                // Gone with the queue, or led here now (a new leadership
                // registers only what takes from it).
                Target::Deleted | Target::Local(_) => return,
                Target::Remote { node, .. } => match self.call(node, cancel.clone()).await {
                    Ok(_) => {
                        tracing::info!(queue = %self.name, consumer, leader = node, "a consumer cancelled on the queue's leader");
                        return;
                    }
                    Err(e) => last = e.to_string(),
                },
                Target::Unavailable | Target::Down { .. } => {}
            }
            tokio::time::sleep(RETRY * 5).await;
        }
        tracing::info!(queue = %self.name, consumer, error = %last, "a consumer's cancel never answered: its session's expiry removes it");
    }

    /// Registers `c` on the local queue `q` (this leadership's), once.
    fn local_id(&self, c: &QuorumConsumer, q: &Arc<Queue>) -> Result<u64, MessagingError> {
        let mut local = lock(&c.local);
        if let Some((cur, id)) = local.as_ref()
            && std::ptr::eq(cur.as_ptr(), Arc::as_ptr(q))
        {
            return Ok(*id);
        }
        if let Some((old, id)) = local.take()
            && let Some(old) = old.upgrade()
        {
            old.remove_consumer(id);
        }
        let id = q.add_consumer(c.exclusive)?;
        *local = Some((Arc::downgrade(q), id));
        Ok(id)
    }

    /// The next delivery for consumer `c` while `credit()` allows one, from
    /// whichever node leads the queue; ends only when the consumer stops
    /// or the queue is deleted (never on a leader move).
    pub async fn next_delivery(
        self: &Arc<Self>,
        c: &QuorumConsumer,
        credit_changed: &Notify,
        mut credit: impl FnMut() -> Credit,
    ) -> Result<Delivery, FeedEnd> {
        loop {
            let changed = credit_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match credit() {
                Credit::Gone => return Err(FeedEnd::Stopped),
                Credit::No => {
                    // Bounded, so the session on a remote leader is renewed
                    // by the settler's heartbeat while the consumer is full.
                    let _ = tokio::time::timeout(HEARTBEAT, changed).await;
                    continue;
                }
                Credit::Yes => {}
            }
            match self.target() {
                Target::Deleted => {
                    self.remove_consumer(c);
                    return Err(FeedEnd::QueueDeleted);
                }
                // A classic queue's consumer waits for its holder's return.
                Target::Unavailable | Target::Down { .. } => tokio::time::sleep(RETRY).await,
                Target::Local(q) => {
                    lock(&c.buffer).1.clear();
                    let id = match self.local_id(c, &q) {
                        Ok(id) => id,
                        Err(e) => {
                            tracing::warn!(queue = %self.name, error = %e, "cannot consume from the queue here");
                            tokio::time::sleep(RETRY).await;
                            continue;
                        }
                    };
                    // Settlements made through an earlier leader land first.
                    self.settles_flushed().await;
                    match consumer::next_delivery(&q, id, credit_changed, &mut credit).await {
                        Ok(d) if self.recently_acked(d.message.offset) => {
                            self.settle(&[d.message.offset], &[], &[]);
                        }
                        Ok(d) => return Ok(d),
                        Err(FeedEnd::Stopped) => return Err(FeedEnd::Stopped),
                        // Deposed (or deleted: the next target says which).
                        Err(FeedEnd::QueueDeleted) => {}
                    }
                }
                Target::Remote { node, epoch } => {
                    if let Some((q, id)) = lock(&c.local).take()
                        && let Some(q) = q.upgrade()
                    {
                        q.remove_consumer(id);
                    }
                    {
                        let mut buffer = lock(&c.buffer);
                        if buffer.0 != Some((node, epoch)) {
                            // Taken under another leader epoch than the one
                            // named now: usually an earlier leader's, whose
                            // successor hands them out again (redelivered).
                            // But this image may have named an older epoch
                            // than the leader served (it moved away and back
                            // unseen): then the leader has them out with this
                            // node's session, renewed by every take, and
                            // dropping them lost them. Handed back: either way
                            // they come again (requeueing what a leader does
                            // not have out does nothing).
                            buffer.0 = Some((node, epoch));
                            let dropped: Vec<u64> = buffer.1.drain(..).map(|d| d.message.offset).collect();
                            if !dropped.is_empty() {
                                drop(buffer);
                                self.settle(&[], &dropped, &[]);
                                buffer = lock(&c.buffer);
                            }
                        }
                        while let Some(d) = buffer.1.pop_front() {
                            if self.recently_acked(d.message.offset) {
                                drop(buffer);
                                self.settle(&[d.message.offset], &[], &[]);
                                buffer = lock(&c.buffer);
                                continue;
                            }
                            return Ok(d);
                        }
                    }
                    // What this node's consumers settled reaches the leader
                    // before anything is taken from it.
                    self.settles_flushed().await;
                    let take = PeerRequest::QueueTake {
                        vhost: self.vhost.clone(),
                        queue: self.name.clone(),
                        session: self.session.clone(),
                        max: c.window,
                        wait_ms: TAKE_WAIT_MS,
                        consumer: Some((c.id, c.exclusive)),
                        number: Some(c.takes.load(Ordering::Relaxed)),
                    };
                    match self.take_from(node, take).await {
                        Ok(PeerReply::QueueDeliveries { deliveries, .. }) => {
                            c.takes.fetch_add(1, Ordering::Relaxed);
                            let mut buffer = lock(&c.buffer);
                            if c.removed.load(Ordering::Acquire) {
                                // Removed while the take was out.
                                drop(buffer);
                                self.hand_back(&deliveries);
                                return Err(FeedEnd::Stopped);
                            }
                            for w in &deliveries {
                                self.unsettled.fetch_add(1, Ordering::Relaxed);
                                match decode_delivery(w) {
                                    Some(d) if buffer.0 == Some((node, epoch)) => buffer.1.push_back(d),
                                    Some(_) => {}
                                    None => {
                                        tracing::warn!(queue = %self.name, offset = w.offset, "undecodable delivery");
                                    }
                                }
                            }
                        }
                        Ok(other) => {
                            tracing::warn!(queue = %self.name, reply = ?other, "unexpected take reply");
                            tokio::time::sleep(RETRY).await;
                        }
                        Err(e) => {
                            tracing::debug!(queue = %self.name, node, error = %e, "take from the queue's leader failed");
                            tokio::time::sleep(RETRY).await;
                        }
                    }
                }
            }
        }
    }

    /// One message without a consumer (basic.get), from the leader.
    pub fn get(self: &Arc<Self>) -> Result<Option<(Delivery, u64)>, MessagingError> {
        self.touch();
        match self.target() {
            Target::Local(q) => Ok(q.take(None)?.map(|d| (d, q.ready_count()))),
            Target::Remote { node, .. } => {
                let take = PeerRequest::QueueTake {
                    vhost: self.vhost.clone(),
                    queue: self.name.clone(),
                    session: self.session.clone(),
                    max: 1,
                    wait_ms: 0,
                    consumer: None,
                    number: None,
                };
                match self.call_blocking(node, take)? {
                    PeerReply::QueueDeliveries { deliveries, ready, .. } => {
                        let d = deliveries.first().and_then(decode_delivery);
                        if d.is_some() {
                            self.unsettled.fetch_add(1, Ordering::Relaxed);
                            self.start_workers();
                        }
                        Ok(d.map(|d| (d, ready)))
                    }
                    other => Err(unavailable(format!("unexpected reply {other:?}"))),
                }
            }
            Target::Unavailable => Err(MessagingError::Internal(crate::BrokerError::NotLeaderOrFollower)),
            Target::Down { node } => Err(self.down(node)),
            Target::Deleted => Err(self.not_found()),
        }
    }

    fn not_found(&self) -> MessagingError {
        MessagingError::NotFound(format!("no queue '{}' in vhost '{}'", self.name, self.vhost))
    }

    /// RabbitMQ's answer for a classic queue whose node is down.
    fn down(&self, node: i32) -> MessagingError {
        MessagingError::NotFound(format!(
            "home node 'ferry@{node}' of durable queue '{}' in vhost '{}' is down or inaccessible",
            self.name, self.vhost
        ))
    }

    /// 404 for a classic queue whose holder is down (declare, consume, get).
    pub fn check_reachable(&self) -> Result<(), MessagingError> {
        match self.target() {
            Target::Down { node } => Err(self.down(node)),
            _ => Ok(()),
        }
    }

    /// (ready messages, consumers) as the leader counts them; zeros when
    /// no leader answers.
    pub fn counts(&self) -> (u64, u32) {
        self.touch();
        match self.target() {
            Target::Local(q) => (q.ready_count(), q.consumer_count()),
            Target::Remote { node, .. } => {
                let take = PeerRequest::QueueTake {
                    vhost: self.vhost.clone(),
                    queue: self.name.clone(),
                    session: self.session.clone(),
                    max: 0,
                    wait_ms: 0,
                    consumer: None,
                    number: None,
                };
                match self.call_blocking(node, take) {
                    Ok(PeerReply::QueueDeliveries { ready, consumers, .. }) => (ready, consumers),
                    _ => (0, 0),
                }
            }
            Target::Unavailable | Target::Down { .. } | Target::Deleted => (0, 0),
        }
    }

    /// queue.purge, on the leader.
    pub fn purge(&self) -> Result<u64, MessagingError> {
        self.touch();
        match self.target() {
            Target::Local(q) => Ok(q.purge()?),
            Target::Remote { node, .. } => {
                let purge = PeerRequest::QueuePurge { vhost: self.vhost.clone(), queue: self.name.clone() };
                match self.call_blocking(node, purge)? {
                    PeerReply::QueueDeliveries { ready, .. } => Ok(ready),
                    other => Err(unavailable(format!("unexpected reply {other:?}"))),
                }
            }
            Target::Unavailable => Err(MessagingError::Internal(crate::BrokerError::NotLeaderOrFollower)),
            Target::Down { node } => Err(self.down(node)),
            Target::Deleted => Err(self.not_found()),
        }
    }
}
