//! Subscriptions: one task per SUBSCRIBE pulls from its queue while it has
//! credit and writes MESSAGE frames; ACK / NACK settle deliveries by ack
//! id through the queue's cursor (the one AMQP consumers use).
//!
//! - `ack:auto`: settled as it is written.
//! - `ack:client`: an ACK settles the delivery and every earlier one of
//!   the same subscription (cumulative), likewise NACK.
//! - `ack:client-individual`: one delivery per ACK / NACK.
//!
//! `prefetch-count` bounds unacknowledged deliveries per subscription (0
//! or absent: unbounded, as RabbitMQ's default; the socket's backpressure
//! still bounds memory). A NACK requeues (redelivered later with
//! `redelivered:true`) unless it says `requeue:false`, which drops the
//! message or dead-letters it if its queue says so. Deliveries not settled
//! when the connection ends go back to their queues.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use ferry_broker::messaging::consumer::Credit;
use ferry_broker::messaging::{Delivery, HandleConsumer, QueueHandle};
use tokio::sync::{Notify, mpsc};

use crate::codec::{Frame, Version, encode};
use crate::error::StompError;
use crate::metrics::StompStats;

/// How a subscription's deliveries are acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckMode {
    /// Settled as sent.
    Auto,
    /// Cumulative ACK / NACK.
    Client,
    /// ACK / NACK one delivery.
    ClientIndividual,
}

impl AckMode {
    /// Parses the `ack` header of SUBSCRIBE (absent: auto).
    pub fn parse(v: Option<&str>) -> Result<AckMode, StompError> {
        match v {
            None | Some("auto") => Ok(AckMode::Auto),
            Some("client") => Ok(AckMode::Client),
            Some("client-individual") => Ok(AckMode::ClientIndividual),
            Some(other) => Err(StompError::protocol(format!("invalid ack mode {other:?}"))),
        }
    }

    /// The `ack` header's value for this mode.
    pub fn as_str(self) -> &'static str {
        match self {
            AckMode::Auto => "auto",
            AckMode::Client => "client",
            AckMode::ClientIndividual => "client-individual",
        }
    }
}

/// What to do with settled deliveries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    /// ACK.
    Ack,
    /// NACK (default): back to the queue.
    Requeue,
    /// NACK with `requeue:false`.
    Discard,
}

struct Unacked {
    sub: Arc<str>,
    queue: QueueHandle,
    offset: u64,
}

struct Slot {
    mode: AckMode,
    prefetch: u32,
    in_flight: u32,
    /// The `destination` the client subscribed to (temporary queues
    /// answer with it, as RabbitMQ does).
    destination: Option<String>,
}

#[derive(Default)]
struct State {
    next_ack: u64,
    unacked: BTreeMap<u64, Unacked>,
    subs: HashMap<Arc<str>, Slot>,
    closed: bool,
}

/// A connection's deliveries: ack ids, unacknowledged messages, credit.
pub struct Deliveries {
    state: Mutex<State>,
    credit: Notify,
    out: mpsc::Sender<Bytes>,
    version: Version,
    stats: Arc<StompStats>,
}

impl Deliveries {
    /// Deliveries written to `out`, encoded for `version`.
    pub fn new(out: mpsc::Sender<Bytes>, version: Version, stats: Arc<StompStats>) -> Arc<Deliveries> {
        Arc::new(Deliveries { state: Mutex::default(), credit: Notify::new(), out, version, stats })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers subscription `id`; false if the id is taken.
    pub fn add(&self, id: &Arc<str>, mode: AckMode, prefetch: u32, destination: Option<String>) -> bool {
        let mut s = self.lock();
        if s.subs.contains_key(id) {
            return false;
        }
        s.subs.insert(id.clone(), Slot { mode, prefetch, in_flight: 0, destination });
        true
    }

    /// Ends subscription `id`: its unacknowledged deliveries go back.
    pub fn remove(&self, id: &str) -> bool {
        let (found, back) = {
            let mut s = self.lock();
            let found = s.subs.remove(id).is_some();
            let keys: Vec<u64> = s.unacked.iter().filter(|(_, u)| &*u.sub == id).map(|(k, _)| *k).collect();
            let back: Vec<Unacked> = keys.iter().filter_map(|k| s.unacked.remove(k)).collect();
            (found, back)
        };
        apply(back, Settle::Requeue);
        self.credit.notify_waiters();
        found
    }

    /// The connection is closing: no more deliveries, and every
    /// unacknowledged one goes back to its queue.
    pub fn close(&self) {
        let back: Vec<Unacked> = {
            let mut s = self.lock();
            s.closed = true;
            std::mem::take(&mut s.unacked).into_values().collect()
        };
        apply(back, Settle::Requeue);
        self.credit.notify_waiters();
    }

    /// ACK / NACK of `ack_id` (the MESSAGE's `ack` or `message-id`).
    pub fn settle(&self, ack_id: &str, how: Settle) -> Result<(), StompError> {
        let unknown = || StompError::protocol(format!("unknown ack id {ack_id:?}"));
        let id: u64 = ack_id.parse().map_err(|_| unknown())?;
        let taken: Vec<Unacked> = {
            let mut s = self.lock();
            let sub = s.unacked.get(&id).ok_or_else(unknown)?.sub.clone();
            let mode = s.subs.get(&sub).map_or(AckMode::ClientIndividual, |slot| slot.mode);
            let keys: Vec<u64> = if mode == AckMode::Client {
                s.unacked.range(..=id).filter(|(_, u)| u.sub == sub).map(|(k, _)| *k).collect()
            } else {
                vec![id]
            };
            let taken: Vec<Unacked> = keys.iter().filter_map(|k| s.unacked.remove(k)).collect();
            if let Some(slot) = s.subs.get_mut(&sub) {
                slot.in_flight = slot.in_flight.saturating_sub(taken.len() as u32);
            }
            taken
        };
        if how == Settle::Ack {
            self.stats.acked(taken.len() as u64);
        } else {
            self.stats.nacked(taken.len() as u64);
        }
        apply(taken, how);
        self.credit.notify_waiters();
        Ok(())
    }

    fn credit(&self, id: &str) -> Credit {
        let s = self.lock();
        let Some(slot) = s.subs.get(id) else { return Credit::Gone };
        if s.closed {
            return Credit::Gone;
        }
        if slot.mode == AckMode::Auto || slot.prefetch == 0 || slot.in_flight < slot.prefetch {
            Credit::Yes
        } else {
            Credit::No
        }
    }

    /// Registers `d` and encodes its MESSAGE frame; `None` if the
    /// subscription is gone (the message then goes back). No await
    /// between taking the message and this: a task stopped at any await
    /// leaves every taken message registered, so [`Deliveries::close`]
    /// returns it.
    fn prepare(&self, sub: &Arc<str>, d: &Delivery, queue: &QueueHandle) -> Option<(Bytes, u64, bool)> {
        let m = &d.message;
        let mut s = self.lock();
        let live = !s.closed && s.subs.contains_key(sub);
        if !live {
            drop(s);
            let _ = queue.requeue(&[m.offset]);
            return None;
        }
        s.next_ack += 1;
        let ack_id = s.next_ack;
        s.unacked.insert(ack_id, Unacked { sub: sub.clone(), queue: queue.clone(), offset: m.offset });
        let (auto, destination) = match s.subs.get_mut(sub) {
            Some(slot) => {
                slot.in_flight += 1;
                (slot.mode == AckMode::Auto, slot.destination.clone())
            }
            None => (true, None),
        };
        drop(s);
        let ack = ack_id.to_string();
        let destination = destination.unwrap_or_else(|| crate::destinations::of_message(&m.exchange, &m.routing_key));
        let mut f = Frame::new("MESSAGE")
            .with("subscription", sub.as_ref())
            .with("destination", destination)
            .with("message-id", ack.clone());
        if !auto && self.version >= Version::V1_2 {
            f = f.with("ack", ack);
        }
        f = f.with("redelivered", d.redelivered.to_string());
        crate::headers::to_message(&m.properties, &mut f.headers);
        f.headers.push(("content-length".into(), m.body.len().to_string()));
        f.body = m.body.clone();
        let mut out = BytesMut::with_capacity(m.body.len() + 256);
        encode(&f, self.version, &mut out);
        Some((out.freeze(), ack_id, auto))
    }

    /// Feeds subscription `sub` from `queue` (as consumer `consumer`,
    /// wherever the queue is served) until it ends or the connection
    /// closes.
    pub async fn run(self: Arc<Self>, sub: Arc<str>, queue: QueueHandle, consumer: HandleConsumer) {
        while let Ok(d) = queue.next_delivery(&consumer, &self.credit, || self.credit(&sub)).await {
            let Some((frame, ack_id, auto)) = self.prepare(&sub, &d, &queue) else { return };
            queue.delivered(d.redelivered);
            self.stats.delivered();
            if self.out.send(frame).await.is_err() {
                return;
            }
            if auto {
                self.auto_settle(ack_id);
            }
        }
    }

    /// An `ack:auto` delivery was written: it leaves its queue.
    fn auto_settle(&self, ack_id: u64) {
        let taken = {
            let mut s = self.lock();
            let Some(u) = s.unacked.remove(&ack_id) else { return };
            if let Some(slot) = s.subs.get_mut(&u.sub) {
                slot.in_flight = slot.in_flight.saturating_sub(1);
            }
            u
        };
        if let Err(e) = taken.queue.auto_ack(&[taken.offset]) {
            tracing::warn!(queue = %taken.queue.name(), error = %e, "auto-ack failed");
        }
    }

    /// Unacknowledged deliveries now (for tests and metrics).
    pub fn unacked(&self) -> usize {
        self.lock().unacked.len()
    }
}

fn apply(taken: Vec<Unacked>, how: Settle) {
    let mut by_queue: Vec<(QueueHandle, Vec<u64>)> = Vec::new();
    for u in taken {
        match by_queue.iter_mut().find(|(q, _)| q.same(&u.queue)) {
            Some((_, offs)) => offs.push(u.offset),
            None => by_queue.push((u.queue, vec![u.offset])),
        }
    }
    for (q, offs) in by_queue {
        let r = match how {
            Settle::Requeue => q.requeue(&offs),
            Settle::Discard => q.reject(&offs),
            Settle::Ack => q.ack(&offs),
        };
        if let Err(e) = r {
            tracing::warn!(queue = %q.name(), error = %e, "settling deliveries failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_modes() {
        assert_eq!(AckMode::parse(None).unwrap(), AckMode::Auto);
        assert_eq!(AckMode::parse(Some("client")).unwrap(), AckMode::Client);
        assert_eq!(AckMode::parse(Some("client-individual")).unwrap(), AckMode::ClientIndividual);
        assert!(AckMode::parse(Some("sometimes")).is_err());
    }
}
