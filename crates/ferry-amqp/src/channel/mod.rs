//! One channel: its state, and dispatch of its methods by AMQP class, one
//! module per class the way ferry-kafka's handlers are split by API group:
//! `basic` (consumers, gets, acknowledgements, QoS), `publish` (content
//! assembly, routing, confirms), `exchange`, `queue`, `confirm`, `tx` and
//! `flow` (channel.flow). channel.open and channel.close belong to the
//! connection, which owns the channels.

mod basic;
mod confirm;
mod exchange;
mod flow;
mod publish;
mod queue;
mod tx;

use std::collections::HashMap;
use std::sync::Arc;

use amq_protocol::protocol::{AMQPClass, access};
use bytes::BytesMut;
use ferry_broker::messaging::{HandleConsumer, QueueHandle};
use tokio::task::JoinHandle;

use crate::confirms::Confirms;
use crate::connection::ConnCtx;
use crate::delivery::Shared;
use crate::error::*;
use crate::frame;

use publish::PendingPublish;
use tx::TxBuffer;

struct ConsumerHandle {
    queue: QueueHandle,
    /// The queue's registration of this consumer.
    id: HandleConsumer,
    task: JoinHandle<()>,
}

pub struct Channel {
    pub id: u16,
    /// channel.close sent, waiting for close-ok: other frames are dropped.
    pub closing: bool,
    shared: Arc<Shared>,
    pending: Option<PendingPublish>,
    /// confirm.select: publishes are numbered and confirmed through this.
    confirms: Option<Confirms>,
    publish_seq: u64,
    tx: Option<TxBuffer>,
    consumers: HashMap<Arc<str>, ConsumerHandle>,
    /// basic.qos global=false: prefetch of consumers created afterwards.
    consumer_prefetch: u16,
}

impl Channel {
    pub fn new(id: u16, cx: &ConnCtx) -> Channel {
        Channel {
            id,
            closing: false,
            shared: Shared::new(id, cx.frame_max, cx.outbox.clone()),
            pending: None,
            confirms: None,
            publish_seq: 0,
            tx: None,
            consumers: HashMap::new(),
            consumer_prefetch: 0,
        }
    }

    fn send(&self, cx: &ConnCtx, m: AMQPClass) -> Result<(), AmqpError> {
        let mut out = BytesMut::with_capacity(64);
        frame::put_method(&mut out, self.id, &m)?;
        cx.outbox.send(out.freeze());
        Ok(())
    }

    /// Stops consumers and requeues unacknowledged deliveries (the channel
    /// is closing or the connection ended).
    pub fn release(&mut self, cx: &ConnCtx) {
        self.shared.lock().closed = true;
        self.shared.credit.notify_waiters();
        for (_, c) in self.consumers.drain() {
            c.task.abort();
            if let Some(q) = c.queue.remove_consumer(&c.id) {
                let _ = cx.vhost.delete_if_present(&q);
            }
        }
        self.shared.requeue_all();
        self.pending = None;
    }

    /// Dispatches a method (not channel.open, handled by the connection).
    pub async fn method(&mut self, cx: &mut ConnCtx, m: AMQPClass) -> Result<(), AmqpError> {
        let (class, method) = (m.get_amqp_class_id(), m.get_amqp_method_id());
        if self.pending.is_some() {
            return Err(AmqpError::new(UNEXPECTED_FRAME, "expected content header/body").on(class, method));
        }
        self.dispatch(cx, m).await.map_err(|e| e.on(class, method))
    }

    /// Routes a method to its class's handler.
    async fn dispatch(&mut self, cx: &mut ConnCtx, m: AMQPClass) -> Result<(), AmqpError> {
        match m {
            AMQPClass::Basic(amq_protocol::protocol::basic::AMQPMethod::Publish(p)) => self.start_publish(p),
            AMQPClass::Basic(m) => self.basic(cx, m),
            AMQPClass::Channel(m) => self.flow(cx, m),
            AMQPClass::Exchange(m) => self.exchange(cx, m),
            AMQPClass::Queue(m) => self.queue(cx, m),
            AMQPClass::Confirm(m) => self.confirm(cx, m),
            AMQPClass::Tx(m) => self.tx(cx, m).await,
            AMQPClass::Access(_) => {
                self.send(cx, AMQPClass::Access(access::AMQPMethod::RequestOk(access::RequestOk {})))
            }
            other => Err(not_valid_here(&other)),
        }
    }
}

/// A method a client may not send on a channel (a reply, or another
/// class's method).
fn not_valid_here(m: &AMQPClass) -> AmqpError {
    AmqpError::new(
        COMMAND_INVALID,
        format!("method {}.{} is not valid here", m.get_amqp_class_id(), m.get_amqp_method_id()),
    )
}

/// The three permission kinds.
#[derive(Clone, Copy, Debug)]
pub enum Perm {
    Configure,
    Delete,
    Write,
    Read,
}
