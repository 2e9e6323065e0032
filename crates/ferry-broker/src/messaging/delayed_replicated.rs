//! Replicated delayed messages (issue #17, phase 2c): in a cluster (the
//! vhost's default queue type is quorum), a vhost's delayed messages wait
//! in one internal quorum queue, [`DELAY_QUEUE`], instead of the node-local
//! store (`delayed.rs`), so a delay accepted by any node survives that
//! node's death.
//!
//! - Publishing: the message, encoded whole (its properties, headers,
//!   persistence and expiry kept as they were published), is the body of
//!   a persistent record whose `deliver_at` is the due time; it is stored
//!   through the node's forwarding client like any publish to a quorum
//!   queue, and confirmed once the ISR has it.
//! - Scheduling: the node leading the queue's partition takes every
//!   message from it (so they are deliveries, out with the timer), keeps
//!   only (due time, offset) in memory, and routes each when due through
//!   the vhost's exchanges (forwarding to queues served elsewhere); once
//!   every queue it reached confirmed it, the message is acknowledged in
//!   the delay queue. A new leader's takeover hands every unacknowledged
//!   delivery back, so its timer rebuilds the index from the log: a delay
//!   outlives its leader, and a message routed but not yet acknowledged
//!   when the leader died is routed again (at-least-once, as the local
//!   store after a crash).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use ferry_util::sync::lock;
use ferry_util::time::now_ms;

use super::message::{self, Message};
use super::queue::Queue;
use super::queue_handle::{HandlePublished, PublishWait, QueueHandle};
use super::remote_queue::to_message;
use super::vhost::Vhost;
use super::{MessagingError, definitions};
/// The internal quorum queue holding a vhost's delayed messages (`amq.*`:
/// no client may declare, consume from, bind or publish to it).
pub use crate::metadata::DELAY_QUEUE;
use crate::metadata::{AmqpRequest, Arguments, QueueType};

/// Messages taken from the delay queue per timer tick.
const TAKE_PER_TICK: usize = 256;
/// A message some queue did not confirm is routed again after this.
const RETRY_MS: i64 = 1000;

/// The due index of the delay queue, while this node leads it.
#[derive(Default)]
pub(crate) struct DelayTimer {
    state: Mutex<Option<Leading>>,
}

struct Leading {
    /// The queue of this leadership: a new one starts a new index.
    queue: Weak<Queue>,
    /// (due ms, offset) of the messages taken and not yet routed.
    due: BTreeSet<(i64, u64)>,
}

/// The delay queue's record for `m`: the whole message as its body.
fn wrap(m: &Message) -> crate::Result<Message> {
    let due = m.deliver_at.unwrap_or(0);
    Ok(Message {
        exchange: String::new(),
        routing_key: String::new(),
        properties: Bytes::new(),
        body: Bytes::from(message::encode(m, now_ms())?),
        persistent: true,
        headers: Default::default(),
        expires_at: None,
        priority: 0,
        deliver_at: Some(due),
        retry_queue: None,
        retries: 0,
    })
}

/// The message a delay-queue record holds, ready to be routed.
fn unwrap(body: &Bytes) -> Option<Message> {
    let inner = message::decode_batches(body).ok()?.into_iter().next()?;
    Some(to_message(inner))
}

impl Vhost {
    /// Whether this vhost's delayed messages are replicated: a cluster's
    /// (the default queue type is quorum), or the delay queue exists.
    pub(super) fn delays_replicated(&self) -> bool {
        let Some(broker) = &self.hooks.broker else { return false };
        if broker.metadata().amqp.get(&self.name).is_some_and(|d| d.queues.contains_key(DELAY_QUEUE)) {
            return true;
        }
        matches!(definitions::default_queue_type(Some(broker), self.hooks.default_queue_type), QueueType::Quorum { .. })
    }

    /// The delay queue through this node's forwarding client, declared
    /// through the controller on first use.
    fn delay_queue(&self) -> Result<QueueHandle, MessagingError> {
        let broker = self.hooks.broker.as_ref().ok_or_else(|| self.not_found_queue(DELAY_QUEUE))?;
        if !broker.is_quorum_queue(&self.name, DELAY_QUEUE) {
            definitions::submit(
                Some(broker),
                AmqpRequest::DeclareQueue {
                    vhost: self.name.clone(),
                    name: DELAY_QUEUE.into(),
                    auto_delete: false,
                    arguments: Arguments::default(),
                    queue_type: QueueType::Quorum { group_size: None },
                },
            )?;
        }
        Ok(QueueHandle::Quorum(broker.quorum_client(&self.name, DELAY_QUEUE)))
    }

    /// Holds `m` (`deliver_at` set, `exchange` a delayed exchange) until it
    /// is due; the returned wait says when it is safe (a persistent
    /// message: on disk here, or on the delay queue's ISR in a cluster).
    pub fn publish_delayed(&self, m: &Message) -> Result<PublishWait, MessagingError> {
        if !self.delays_replicated() {
            let offset = self.delays.add(m)?;
            return Ok(PublishWait::Delayed(self.weak_self(), offset));
        }
        Ok(match self.delay_queue()?.publish(&wrap(m)?)? {
            HandlePublished::Stored(wait) => wait,
            HandlePublished::Volatile => PublishWait::Done(true),
            HandlePublished::Rejected => PublishWait::Done(false),
        })
    }

    /// Delayed messages not yet routed: the local store's, plus those of
    /// the delay queue when this node leads it.
    pub fn delayed_pending(&self) -> usize {
        let replicated = self
            .hooks
            .broker
            .as_ref()
            .and_then(|b| b.quorum_queue(&self.name, DELAY_QUEUE))
            .map_or(0, |q| q.ready_count() as usize + q.unacked_count());
        self.delays.pending() + replicated
    }

    /// The timer's tick for the delay queue (the vhosts' timer thread):
    /// takes what arrived, routes what is due.
    pub(crate) fn fire_replicated_delays(&self, now: i64) {
        let Some(broker) = &self.hooks.broker else { return };
        let mut state = lock(&self.replicated_delays.state);
        let Some(q) = broker.quorum_queue(&self.name, DELAY_QUEUE).filter(|q| !q.is_deleted()) else {
            *state = None;
            return;
        };
        let lead = match state.take() {
            Some(l) if std::ptr::eq(l.queue.as_ptr(), Arc::as_ptr(&q)) => state.insert(l),
            _ => state.insert(Leading { queue: Arc::downgrade(&q), due: BTreeSet::new() }),
        };
        for _ in 0..TAKE_PER_TICK {
            match q.take(None) {
                Ok(Some(d)) => {
                    lead.due.insert((d.message.deliver_at.unwrap_or(0), d.message.offset));
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(vhost = %self.name, error = %e, "taking from the delay queue failed");
                    break;
                }
            }
        }
        let mut due = Vec::new();
        while let Some(&(at, offset)) = lead.due.first() {
            if at > now {
                break;
            }
            lead.due.pop_first();
            due.push(offset);
        }
        drop(state);
        if due.is_empty() {
            return;
        }
        let (Some(rt), Some(me)) = (broker.runtime_handle(), self.weak_self().upgrade()) else {
            self.retry_later(&q, &due);
            return;
        };
        rt.spawn(async move { me.route_due(q, due).await });
    }

    /// Routes the due messages at `offsets` of the delay queue `q`, then
    /// acknowledges each one every queue it reached confirmed.
    async fn route_due(&self, q: Arc<Queue>, offsets: Vec<u64>) {
        let mut pending = Vec::with_capacity(offsets.len());
        for offset in offsets {
            let m = match q.read_one(offset) {
                Ok(Some(stored)) => unwrap(&stored.body),
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(vhost = %self.name, offset, error = %e, "reading a delayed message failed");
                    self.retry_later(&q, &[offset]);
                    continue;
                }
            };
            let Some(mut m) = m else {
                tracing::warn!(vhost = %self.name, offset, "undecodable delayed message dropped");
                let _ = q.ack(&[offset]);
                continue;
            };
            m.deliver_at = None;
            pending.push((offset, self.route_held(&m)));
        }
        let mut acked = Vec::new();
        for (offset, waits) in pending {
            let mut ok = true;
            for w in waits {
                ok &= w.await.unwrap_or(false);
            }
            if ok {
                acked.push(offset);
            } else {
                self.retry_later(&q, &[offset]);
            }
        }
        // A deposed leader's ack fails: its successor routes them again.
        if let Err(e) = q.ack(&acked) {
            tracing::debug!(vhost = %self.name, error = %e, "acknowledging routed delayed messages failed");
        }
    }

    /// Routes one due message to its queues (wherever they are served) and
    /// topics; the receivers say whether each stored it. A message whose
    /// exchange is gone is dropped (nothing to wait for).
    fn route_held(&self, m: &Message) -> Vec<tokio::sync::oneshot::Receiver<bool>> {
        let mut waits = Vec::new();
        let handles = match &m.retry_queue {
            // A retry (`x-retry-delays`) goes straight back to its queue,
            // wherever it is served, if it still exists.
            Some(name) => self.queue_handle(name).into_iter().collect(),
            None => match self.route_handles(&m.exchange, &m.routing_key, &m.headers) {
                Ok((queues, topics)) => {
                    for t in topics {
                        match self.publish_to_topic(&t, m) {
                            Ok(appended) => {
                                let (tx, rx) = tokio::sync::oneshot::channel();
                                tokio::spawn(async move {
                                    let _ = tx.send(appended.acknowledged().await.is_ok());
                                });
                                waits.push(rx);
                            }
                            Err(e) => tracing::warn!(topic = %t, error = %e, "a delayed message to a topic failed"),
                        }
                    }
                    queues
                }
                Err(e) => {
                    tracing::debug!(exchange = %m.exchange, error = %e, "delayed message dropped");
                    Vec::new()
                }
            },
        };
        for h in handles {
            match h.publish(m) {
                Ok(HandlePublished::Stored(wait)) => {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    wait.on_done(move |ok| {
                        let _ = tx.send(ok);
                    });
                    waits.push(rx);
                }
                // Stored without a wait, or refused by a full queue (as
                // the local store drops it): nothing to retry.
                Ok(HandlePublished::Volatile | HandlePublished::Rejected) => {}
                Err(e) => {
                    tracing::warn!(queue = %h.name(), error = %e, "routing a delayed message failed");
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let _ = tx.send(false);
                    waits.push(rx);
                }
            }
        }
        waits
    }

    /// Puts `offsets` back in the due index, due again in [`RETRY_MS`].
    fn retry_later(&self, q: &Arc<Queue>, offsets: &[u64]) {
        let mut state = lock(&self.replicated_delays.state);
        if let Some(lead) = state.as_mut().filter(|l| std::ptr::eq(l.queue.as_ptr(), Arc::as_ptr(q))) {
            let at = now_ms() + RETRY_MS;
            lead.due.extend(offsets.iter().map(|&o| (at, o)));
        }
    }
}
