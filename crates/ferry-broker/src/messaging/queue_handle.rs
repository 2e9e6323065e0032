//! What a front-end's channel holds for a queue (issue #17): a node-local
//! queue ([`Queue`]: classic, exclusive, or any queue of a single node), or
//! a quorum queue through this node's [`QuorumClient`], which reaches the
//! queue on whichever node leads it now, so a client on any node publishes
//! to and consumes from it, and its consumers outlive leader moves.

use std::sync::Arc;

use tokio::sync::Notify;

use super::consumer::{self, Credit, FeedEnd};
use super::delayed_replicated::DELAY_QUEUE;
use super::message::Message;
use super::queue::{Delivery, Published, Queue, QueueSpec};
use super::quorum_client::{Done, QuorumClient, QuorumConsumer};
use super::vhost::Vhost;
use super::{Headers, MessagingError};
use crate::BrokerError;
use crate::metadata::{AmqpRequest, ControllerRequest};

type Result<T, E = MessagingError> = std::result::Result<T, E>;

/// A queue as a channel reaches it.
#[derive(Clone, Debug)]
pub enum QueueHandle {
    /// A queue of this node.
    Local(Arc<Queue>),
    /// A quorum queue, wherever it is led, or a classic queue held by
    /// another node: reached through this node's forwarding client.
    Quorum(Arc<QuorumClient>),
}

impl std::fmt::Debug for QuorumClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuorumClient").field("name", &self.name()).finish_non_exhaustive()
    }
}

/// A consumer registered through a [`QueueHandle`].
#[derive(Clone, Debug)]
pub enum HandleConsumer {
    /// The local queue's consumer id.
    Local(u64),
    /// A quorum queue's consumer on this node.
    Quorum(Arc<QuorumConsumer>),
}

/// What a publish through a handle must wait for before it is confirmed.
pub enum PublishWait {
    /// The local queue's offset reaching disk (or the ISR).
    Local(Arc<Queue>, u64),
    /// The quorum client's answer (its forwarding pipeline's, or the
    /// local leader's high watermark).
    Forwarded(Outcome),
    /// A delayed message's offset in its vhost's node-local delay store
    /// reaching disk.
    Delayed(std::sync::Weak<Vhost>, u64),
    /// Known already.
    Done(bool),
}

impl PublishWait {
    /// Calls `done` with the outcome: true once the message is safe.
    pub fn on_done(self, done: impl FnOnce(bool) + Send + 'static) {
        match self {
            PublishWait::Local(q, offset) => q.on_durable(offset, done),
            PublishWait::Delayed(v, offset) => match v.upgrade() {
                Some(v) => v.delays.on_durable(offset, done),
                None => done(false),
            },
            PublishWait::Done(ok) => done(ok),
            PublishWait::Forwarded(outcome) => outcome.on_done(done),
        }
    }
}

/// A publish's outcome, handed from whoever learns it to whoever waits
/// for it by the one that comes second, on its own thread: no task and no
/// channel per publish, and a high watermark that releases many publishes
/// confirms them in one burst (`ferry_util::batch`).
pub struct Outcome(Arc<std::sync::Mutex<OutcomeState>>);

enum OutcomeState {
    Open,
    Known(bool),
    Wanted(Box<dyn FnOnce(bool) + Send>),
    Given,
}

/// The side of an [`Outcome`] that learns it; dropped unused: `false`
/// (the publish is nacked, as a dropped channel was before).
struct Resolver(Arc<std::sync::Mutex<OutcomeState>>);

impl Outcome {
    /// An outcome, and the [`Done`] that gives it.
    fn new() -> (Outcome, Done) {
        let state = Arc::new(std::sync::Mutex::new(OutcomeState::Open));
        let resolver = Resolver(state.clone());
        (Outcome(state), Box::new(move |ok| resolver.give(ok)))
    }

    /// Calls `done` with the outcome, now if known.
    pub fn on_done(self, done: impl FnOnce(bool) + Send + 'static) {
        let mut s = ferry_util::sync::lock(&self.0);
        match std::mem::replace(&mut *s, OutcomeState::Given) {
            OutcomeState::Known(ok) => {
                drop(s);
                done(ok);
            }
            OutcomeState::Open => *s = OutcomeState::Wanted(Box::new(done)),
            // Only one `on_done` per outcome (it takes `self`).
            OutcomeState::Wanted(_) | OutcomeState::Given => {}
        }
    }
}

impl Resolver {
    fn give(&self, ok: bool) {
        let mut s = ferry_util::sync::lock(&self.0);
        match std::mem::replace(&mut *s, OutcomeState::Given) {
            OutcomeState::Open => *s = OutcomeState::Known(ok),
            OutcomeState::Wanted(done) => {
                drop(s);
                done(ok);
            }
            // Given once already (`give` and then the drop).
            known @ (OutcomeState::Known(_) | OutcomeState::Given) => *s = known,
        }
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.give(false);
    }
}

/// The result of a publish through a handle.
pub enum HandlePublished {
    /// Stored; confirmed once `PublishWait` says so.
    Stored(PublishWait),
    /// Stored, nothing to wait for (a transient message or queue).
    Volatile,
    /// Refused: the queue is full and its overflow is reject-publish.
    Rejected,
}

impl QueueHandle {
    /// The queue's name.
    pub fn name(&self) -> &str {
        match self {
            QueueHandle::Local(q) => q.name(),
            QueueHandle::Quorum(c) => c.name(),
        }
    }

    /// Whether both reach the same queue.
    pub fn same(&self, other: &QueueHandle) -> bool {
        match (self, other) {
            (QueueHandle::Local(a), QueueHandle::Local(b)) => Arc::ptr_eq(a, b),
            (QueueHandle::Quorum(a), QueueHandle::Quorum(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// The node-local queue, for a local handle.
    pub fn as_local(&self) -> Option<&Arc<Queue>> {
        match self {
            QueueHandle::Local(q) => Some(q),
            QueueHandle::Quorum(_) => None,
        }
    }

    /// Records a use (x-expires).
    pub fn touch(&self) {
        match self {
            QueueHandle::Local(q) => q.touch(),
            QueueHandle::Quorum(c) => {
                if let Some(q) = c.local() {
                    q.touch();
                }
            }
        }
    }

    /// Stores `m`; see [`HandlePublished`].
    pub fn publish(&self, m: &Message) -> Result<HandlePublished> {
        let local = |q: Arc<Queue>, p: Published| match p {
            Published::Stored(offset) if m.persistent && q.spec.durable => {
                HandlePublished::Stored(PublishWait::Local(q, offset))
            }
            Published::Stored(_) => HandlePublished::Volatile,
            Published::Rejected => HandlePublished::Rejected,
        };
        let stored = match self {
            QueueHandle::Local(q) => q.publish(m).map(|p| local(q.clone(), p)).map_err(MessagingError::from),
            QueueHandle::Quorum(c) => {
                let (outcome, done) = Outcome::new();
                c.publish(m, Some(done)).map(|p| match p {
                    Some((q, p)) => local(q, p),
                    None => HandlePublished::Stored(PublishWait::Forwarded(outcome)),
                })
            }
        };
        match stored {
            // Refused before the append (too few in-sync replicas, or
            // leadership just moved): not stored, so the publisher gets a
            // nack and may retry, as from a reject-publish queue, instead of
            // losing its channel to a 541.
            Err(MessagingError::Internal(BrokerError::NotEnoughReplicas { .. } | BrokerError::NotLeaderOrFollower)) => {
                Ok(HandlePublished::Rejected)
            }
            other => other,
        }
    }

    /// Registers a consumer; `window` is its prefetch (0 = unlimited).
    pub fn add_consumer(&self, exclusive: bool, window: u16) -> Result<HandleConsumer> {
        match self {
            QueueHandle::Local(q) => Ok(HandleConsumer::Local(q.add_consumer(exclusive)?)),
            QueueHandle::Quorum(c) => Ok(HandleConsumer::Quorum(c.add_consumer(exclusive, window)?)),
        }
    }

    /// Removes a consumer; returns the local queue if it was the last
    /// consumer of an auto-delete queue (which the caller then deletes).
    pub fn remove_consumer(&self, consumer: &HandleConsumer) -> Option<Arc<Queue>> {
        match (self, consumer) {
            (QueueHandle::Local(q), HandleConsumer::Local(id)) => q.remove_consumer(*id).then(|| q.clone()),
            (QueueHandle::Quorum(c), HandleConsumer::Quorum(qc)) => {
                c.remove_consumer(qc);
                None
            }
            _ => None,
        }
    }

    /// The next delivery for `consumer` (see [`consumer::next_delivery`]).
    pub async fn next_delivery(
        &self,
        consumer: &HandleConsumer,
        credit_changed: &Notify,
        credit: impl FnMut() -> Credit,
    ) -> Result<Delivery, FeedEnd> {
        match (self, consumer) {
            (QueueHandle::Local(q), HandleConsumer::Local(id)) => {
                consumer::next_delivery(q, *id, credit_changed, credit).await
            }
            (QueueHandle::Quorum(c), HandleConsumer::Quorum(qc)) => c.next_delivery(qc, credit_changed, credit).await,
            _ => Err(FeedEnd::Stopped),
        }
    }

    /// basic.get: a delivery and the messages left ready.
    pub fn get(&self) -> Result<Option<(Delivery, u64)>> {
        match self {
            QueueHandle::Local(q) => Ok(q.take(None)?.map(|d| (d, q.ready_count()))),
            QueueHandle::Quorum(c) => c.get(),
        }
    }

    /// Acknowledges deliveries.
    pub fn ack(&self, offsets: &[u64]) -> Result<()> {
        match self {
            QueueHandle::Local(q) => Ok(q.ack(offsets)?),
            QueueHandle::Quorum(c) => {
                c.settle(offsets, &[], &[]);
                Ok(())
            }
        }
    }

    /// Deliveries made without acknowledgement leave the queue.
    pub fn auto_ack(&self, offsets: &[u64]) -> Result<()> {
        match self {
            QueueHandle::Local(q) => Ok(q.auto_ack(offsets)?),
            QueueHandle::Quorum(c) => {
                c.settle(offsets, &[], &[]);
                Ok(())
            }
        }
    }

    /// Hands deliveries back for redelivery.
    pub fn requeue(&self, offsets: &[u64]) -> Result<()> {
        match self {
            QueueHandle::Local(q) => Ok(q.requeue(offsets)?),
            QueueHandle::Quorum(c) => {
                c.settle(&[], offsets, &[]);
                Ok(())
            }
        }
    }

    /// Rejects deliveries without requeue.
    pub fn reject(&self, offsets: &[u64]) -> Result<()> {
        match self {
            QueueHandle::Local(q) => Ok(q.reject(offsets)?),
            QueueHandle::Quorum(c) => {
                c.settle(&[], &[], offsets);
                Ok(())
            }
        }
    }

    /// Counts a delivery in the queue's statistics (where they are kept: the
    /// queue's node).
    pub fn delivered(&self, redelivered: bool) {
        match self {
            QueueHandle::Local(q) => q.stats.delivered(redelivered),
            QueueHandle::Quorum(c) => {
                if let Some(q) = c.local() {
                    q.stats.delivered(redelivered);
                }
            }
        }
    }

    /// (ready messages, consumers).
    pub fn counts(&self) -> (u64, u32) {
        match self {
            QueueHandle::Local(q) => (q.ready_count(), q.consumer_count()),
            QueueHandle::Quorum(c) => c.counts(),
        }
    }

    /// Deliveries out and not yet settled, as far as this node knows them
    /// (a queue served elsewhere: 0, its leader keeps them).
    pub fn unacked_count(&self) -> usize {
        match self {
            QueueHandle::Local(q) => q.unacked_count(),
            QueueHandle::Quorum(c) => c.local().map_or(0, |q| q.unacked_count()),
        }
    }

    /// Drops every ready message; returns how many.
    pub fn purge(&self) -> Result<u64> {
        match self {
            QueueHandle::Local(q) => Ok(q.purge()?),
            QueueHandle::Quorum(c) => c.purge(),
        }
    }
}

/// 403 for the broker's own queues (the delay queue), which no client
/// may declare, consume from, bind or delete.
pub(crate) fn check_not_internal(name: &str) -> Result<()> {
    if name == DELAY_QUEUE {
        return Err(MessagingError::AccessRefused(format!("queue name '{name}' contains reserved prefix 'amq.*'")));
    }
    Ok(())
}

impl Vhost {
    /// This node's forwarding client of `name`, if the metadata declares a
    /// quorum queue, or a classic queue another node holds, by that name.
    fn quorum_client(&self, name: &str) -> Option<Arc<QuorumClient>> {
        let broker = self.hooks.broker.as_ref()?;
        broker.is_forwarded_queue(&self.name, name).then(|| broker.quorum_client(&self.name, name))
    }

    /// The queue `name` as a channel reaches it, if declared: a quorum
    /// queue wherever it is led, else a queue of this node.
    pub fn queue_handle(&self, name: &str) -> Option<QueueHandle> {
        if let Some(c) = self.quorum_client(name) {
            if let Some(q) = c.local() {
                q.set_vhost(self.weak_self());
            }
            return Some(QueueHandle::Quorum(c));
        }
        self.queue(name).map(QueueHandle::Local)
    }

    /// [`Vhost::queue_handle`] for `owner`: 404 if absent, 405 if another
    /// connection's exclusive queue.
    pub fn queue_handle_for(&self, name: &str, owner: u64) -> Result<QueueHandle> {
        check_not_internal(name)?;
        let h = self.queue_handle(name).ok_or_else(|| self.not_found_queue(name))?;
        match &h {
            QueueHandle::Local(q) => self.check_owner(q, owner)?,
            QueueHandle::Quorum(c) => c.check_reachable()?,
        }
        Ok(h)
    }

    /// [`Vhost::route_all`] as handles: quorum queues are reached wherever
    /// they are led.
    pub fn route_handles(
        &self,
        exchange: &str,
        routing_key: &str,
        headers: &Headers,
    ) -> Result<(Vec<QueueHandle>, Vec<String>)> {
        let (names, topics) = self.route_names(exchange, routing_key, headers)?;
        let queues = names.iter().filter(|n| *n != DELAY_QUEUE).filter_map(|n| self.queue_handle(n)).collect();
        Ok((queues, topics))
    }

    /// Declares a queue (or, `passive`, finds it) as
    /// [`Vhost::declare_queue`] does, answering a quorum queue led by
    /// another node with its handle instead of refusing it.
    pub fn declare_queue_handle(self: &Arc<Self>, spec: QueueSpec, passive: bool, owner: u64) -> Result<QueueHandle> {
        let name = spec.name.clone();
        check_not_internal(&name)?;
        if self.queue(&name).is_none()
            && let Some(c) = self.quorum_client(&name)
        {
            c.check_reachable()?;
            if !passive {
                self.check_quorum_equivalent(&spec)?;
            }
            return Ok(QueueHandle::Quorum(c));
        }
        match self.declare_queue(spec, passive, owner) {
            Ok(q) if q.is_replicated() => {
                Ok(self.quorum_client(&name).map(QueueHandle::Quorum).unwrap_or(QueueHandle::Local(q)))
            }
            Ok(q) => Ok(QueueHandle::Local(q)),
            // Declared through the controller, led by another node.
            Err(MessagingError::Internal(crate::BrokerError::NotLeaderOrFollower)) => {
                let c = self.quorum_client(&name).ok_or_else(|| self.not_found_queue(&name))?;
                c.check_reachable()?;
                Ok(QueueHandle::Quorum(c))
            }
            Err(e) => Err(e),
        }
    }

    /// A redeclaration of a queue served elsewhere: the same settings
    /// as its declaration in the metadata, else 406.
    fn check_quorum_equivalent(&self, spec: &QueueSpec) -> Result<()> {
        let Some(broker) = self.hooks.broker.as_ref() else { return Ok(()) };
        let image = broker.metadata();
        let Some(def) = image.amqp.get(&self.name).and_then(|d| d.queues.get(&spec.name)) else { return Ok(()) };
        let (vhost, name) = (&self.name, &spec.name);
        let bad = |arg: &str, got: String, now: String| {
            MessagingError::PreconditionFailed(format!(
                "inequivalent arg '{arg}' for queue '{name}' in vhost '{vhost}': received '{got}' but current is '{now}'"
            ))
        };
        if !spec.durable {
            return Err(bad("durable", "false".into(), "true".into()));
        }
        if spec.exclusive_owner.is_some() {
            return Err(MessagingError::ResourceLocked(format!(
                "cannot obtain exclusive access to locked queue '{name}' in vhost '{vhost}'"
            )));
        }
        if def.auto_delete != spec.auto_delete {
            return Err(bad("auto_delete", spec.auto_delete.to_string(), def.auto_delete.to_string()));
        }
        for (k, v) in &spec.arguments {
            // x-queue-type may be left out by a client that redeclares.
            if k.starts_with("x-") && def.arguments.0.get(k) != Some(v) {
                return Err(bad(k, format!("{v:?}"), format!("{:?}", def.arguments.0.get(k))));
            }
        }
        Ok(())
    }

    /// Deletes a queue as [`Vhost::delete_queue`] does; a queue served by
    /// another node is deleted through the controller (whose record makes
    /// a classic queue's holder close it and remove its files).
    pub fn delete_queue_handle(&self, name: &str, if_unused: bool, if_empty: bool, owner: u64) -> Result<u64> {
        check_not_internal(name)?;
        if self.queue(name).is_some() {
            return self.delete_queue(name, if_unused, if_empty, owner);
        }
        let Some(c) = self.quorum_client(name) else { return Ok(0) };
        let (ready, consumers) = c.counts();
        if if_unused && consumers > 0 {
            return Err(MessagingError::PreconditionFailed(format!("queue '{name}' in vhost '{}' in use", self.name)));
        }
        if if_empty && ready > 0 {
            return Err(MessagingError::PreconditionFailed(format!(
                "queue '{name}' in vhost '{}' is not empty",
                self.name
            )));
        }
        let broker = self.hooks.broker.as_ref().ok_or_else(|| self.not_found_queue(name))?;
        let request = ControllerRequest::Amqp(AmqpRequest::DeleteQueue { vhost: self.name.clone(), name: name.into() });
        broker.submit_change_blocking(request)?;
        Ok(ready)
    }
}
