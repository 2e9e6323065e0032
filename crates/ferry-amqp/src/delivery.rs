//! Delivery state shared by a channel's reader side and its consumer
//! tasks: delivery tags, unacknowledged deliveries, prefetch credit.
//!
//! One task per consumer pulls from its queue while it has credit, and
//! sends basic.deliver + content under the channel's lock, so delivery
//! tags reach the socket in order.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use amq_protocol::protocol::{AMQPClass, basic};
use bytes::BytesMut;
use ferry_broker::messaging::consumer::{Credit, FeedEnd};
use ferry_broker::messaging::{Delivery, HandleConsumer, QueueHandle};
use tokio::sync::Notify;

use crate::error::{AmqpError, PRECONDITION_FAILED};
use crate::frame;
use crate::outbox::Outbox;

pub struct Unacked {
    pub queue: QueueHandle,
    pub offset: u64,
    pub consumer: Option<Arc<str>>,
}

pub struct ConsumerSlot {
    pub prefetch: u16,
    pub in_flight: u32,
    pub no_ack: bool,
}

#[derive(Default)]
pub struct DeliveryState {
    pub next_tag: u64,
    pub unacked: BTreeMap<u64, Unacked>,
    pub consumers: HashMap<Arc<str>, ConsumerSlot>,
    /// basic.qos global=true: unacknowledged deliveries across the channel.
    pub channel_prefetch: u16,
    /// channel.flow active=false pauses deliveries.
    pub paused: bool,
    pub closed: bool,
}

pub struct Shared {
    pub channel: u16,
    pub frame_max: u32,
    pub outbox: Outbox,
    state: Mutex<DeliveryState>,
    /// Woken when credit may have appeared or a consumer was cancelled.
    pub credit: Notify,
}

/// What to do with settled deliveries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    Ack,
    Requeue,
    /// Rejected without requeue: dropped.
    Discard,
}

impl Shared {
    pub fn new(channel: u16, frame_max: u32, outbox: Outbox) -> Arc<Shared> {
        Arc::new(Shared { channel, frame_max, outbox, state: Mutex::default(), credit: Notify::new() })
    }

    pub fn lock(&self) -> MutexGuard<'_, DeliveryState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn credit(&self, tag: &str) -> Credit {
        let s = self.lock();
        let Some(slot) = s.consumers.get(tag) else { return Credit::Gone };
        if s.closed {
            return Credit::Gone;
        }
        if s.paused {
            return Credit::No;
        }
        if slot.no_ack {
            return Credit::Yes;
        }
        let consumer_ok = slot.prefetch == 0 || slot.in_flight < u32::from(slot.prefetch);
        let channel_ok = s.channel_prefetch == 0 || s.unacked.len() < usize::from(s.channel_prefetch);
        if consumer_ok && channel_ok { Credit::Yes } else { Credit::No }
    }

    /// Hands `d` to consumer `tag` (or, for basic.get, `tag` None). Returns
    /// false if the consumer is gone; the message then goes back.
    pub fn deliver(&self, tag: Option<&Arc<str>>, no_ack: bool, d: &Delivery, queue: &QueueHandle, ready: u32) -> bool {
        let m = &d.message;
        let mut s = self.lock();
        let live = !s.closed && tag.is_none_or(|t| s.consumers.contains_key(t));
        if !live {
            drop(s);
            let _ = queue.requeue(&[m.offset]);
            return false;
        }
        s.next_tag += 1;
        let delivery_tag = s.next_tag;
        let method = match tag {
            Some(t) => basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: t.as_ref().into(),
                delivery_tag,
                redelivered: d.redelivered,
                exchange: m.exchange.as_str().into(),
                routing_key: m.routing_key.as_str().into(),
            }),
            None => basic::AMQPMethod::GetOk(basic::GetOk {
                delivery_tag,
                redelivered: d.redelivered,
                exchange: m.exchange.as_str().into(),
                routing_key: m.routing_key.as_str().into(),
                message_count: ready,
            }),
        };
        let mut out = BytesMut::with_capacity(m.body.len() + m.properties.len() + 128);
        if frame::put_method(&mut out, self.channel, &AMQPClass::Basic(method)).is_err() {
            drop(s);
            let _ = queue.requeue(&[m.offset]);
            return false;
        }
        frame::put_content(&mut out, self.channel, &m.properties, &m.body, self.frame_max);
        if !no_ack {
            s.unacked.insert(delivery_tag, Unacked { queue: queue.clone(), offset: m.offset, consumer: tag.cloned() });
            if let Some(slot) = tag.and_then(|t| s.consumers.get_mut(t)) {
                slot.in_flight += 1;
            }
        }
        queue.delivered(d.redelivered);
        self.outbox.send(out.freeze());
        drop(s);
        if no_ack && let Err(e) = queue.auto_ack(&[m.offset]) {
            tracing::warn!(queue = %queue.name(), error = %e, "auto-ack failed");
        }
        true
    }

    /// basic.ack / nack / reject.
    pub fn settle(&self, delivery_tag: u64, multiple: bool, how: Settle) -> Result<(), AmqpError> {
        let taken: Vec<Unacked> = {
            let mut s = self.lock();
            let taken: Vec<Unacked> = if multiple {
                let keep = if delivery_tag == 0 { BTreeMap::new() } else { s.unacked.split_off(&(delivery_tag + 1)) };
                let done = std::mem::replace(&mut s.unacked, keep);
                if done.is_empty() && delivery_tag != 0 {
                    return Err(unknown_tag(delivery_tag));
                }
                done.into_values().collect()
            } else {
                vec![s.unacked.remove(&delivery_tag).ok_or_else(|| unknown_tag(delivery_tag))?]
            };
            for u in &taken {
                if let Some(slot) = u.consumer.as_ref().and_then(|c| s.consumers.get_mut(c)) {
                    slot.in_flight = slot.in_flight.saturating_sub(1);
                }
            }
            taken
        };
        apply(taken, how)?;
        self.credit.notify_waiters();
        Ok(())
    }

    /// Every unacknowledged delivery goes back to its queue (channel
    /// closed, basic.recover).
    pub fn requeue_all(&self) {
        let taken: Vec<Unacked> = {
            let mut s = self.lock();
            for slot in s.consumers.values_mut() {
                slot.in_flight = 0;
            }
            std::mem::take(&mut s.unacked).into_values().collect()
        };
        let _ = apply(taken, Settle::Requeue);
        self.credit.notify_waiters();
    }

    /// Feeds consumer `tag` from `queue` until it is cancelled.
    pub async fn run_consumer(self: Arc<Self>, tag: Arc<str>, queue: QueueHandle, id: HandleConsumer, no_ack: bool) {
        loop {
            // Backpressure: a client that does not read its socket stops
            // getting deliveries.
            if self.outbox.is_full() {
                self.outbox.wait_room().await;
            }
            match queue.next_delivery(&id, &self.credit, || self.credit(&tag)).await {
                Ok(d) => {
                    if !self.deliver(Some(&tag), no_ack, &d, &queue, 0) {
                        return;
                    }
                }
                Err(FeedEnd::QueueDeleted) => return self.cancelled_by_server(&tag),
                Err(FeedEnd::Stopped) => return,
            }
        }
    }

    /// The queue went away: tell the client (consumer_cancel_notify).
    fn cancelled_by_server(&self, tag: &str) {
        let mut s = self.lock();
        if s.consumers.remove(tag).is_some() && !s.closed {
            let cancel =
                AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel { consumer_tag: tag.into(), nowait: true }));
            let mut out = BytesMut::new();
            if frame::put_method(&mut out, self.channel, &cancel).is_ok() {
                self.outbox.send(out.freeze());
            }
        }
    }
}

fn unknown_tag(tag: u64) -> AmqpError {
    AmqpError::new(PRECONDITION_FAILED, format!("unknown delivery tag {tag}"))
}

fn apply(taken: Vec<Unacked>, how: Settle) -> Result<(), AmqpError> {
    let mut by_queue: Vec<(QueueHandle, Vec<u64>)> = Vec::new();
    for u in taken {
        match by_queue.iter_mut().find(|(q, _)| q.same(&u.queue)) {
            Some((_, offs)) => offs.push(u.offset),
            None => by_queue.push((u.queue, vec![u.offset])),
        }
    }
    for (q, offs) in by_queue {
        match how {
            Settle::Requeue => q.requeue(&offs)?,
            Settle::Discard => q.reject(&offs)?,
            Settle::Ack => q.ack(&offs)?,
        }
    }
    Ok(())
}
