//! One channel: method dispatch, content assembly (method, header, body
//! frames), publishing with confirms and transactions, consumers.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use amq_protocol::protocol::basic::{AMQPProperties, parse_properties};
use amq_protocol::protocol::{AMQPClass, basic, channel, confirm, exchange, queue, tx};
use bytes::{Bytes, BytesMut};
use ferry_broker::messaging::{Destination, Exchange, ExchangeKind, Message, Published, Queue, QueueSpec};
use tokio::task::JoinHandle;

use crate::confirms::Confirms;
use crate::connection::ConnCtx;
use crate::delivery::{ConsumerSlot, Settle, Shared};
use crate::error::*;
use crate::frame;
use crate::values;

struct PendingPublish {
    publish: basic::Publish,
    /// Raw property flags + list, and what we need from them.
    header: Option<(u64, Bytes, AMQPProperties)>,
    body: Vec<Bytes>,
    received: u64,
    /// When the basic.publish method arrived (request latency).
    started: std::time::Instant,
}

struct ConsumerHandle {
    queue: Arc<Queue>,
    /// The queue's id for this consumer.
    id: u64,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct TxBuffer {
    publishes: Vec<(Message, bool)>,
    settles: Vec<(u64, bool, Settle)>,
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

/// What a publish must wait for before it is confirmed.
struct Confirm {
    remaining: AtomicUsize,
    failed: std::sync::atomic::AtomicBool,
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
            if c.queue.remove_consumer(c.id) {
                let _ = cx.vhost.delete_if_present(&c.queue);
            }
        }
        self.shared.requeue_all();
        self.pending = None;
    }

    /// A content header or body frame.
    pub fn content(&mut self, cx: &ConnCtx, kind: u8, payload: Bytes) -> Result<(), AmqpError> {
        let Some(p) = self.pending.as_mut() else {
            return Err(AmqpError::new(UNEXPECTED_FRAME, "content frame without a basic.publish"));
        };
        match (kind, &p.header) {
            (frame::FRAME_HEADER, None) => {
                if payload.len() < 14 {
                    return Err(AmqpError::new(FRAME_ERROR, "content header too short"));
                }
                let class = u16::from_be_bytes([payload[0], payload[1]]);
                if class != 60 {
                    return Err(AmqpError::new(FRAME_ERROR, format!("content header for class {class}")));
                }
                let mut size = [0u8; 8];
                size.copy_from_slice(&payload[4..12]);
                let size = u64::from_be_bytes(size);
                if size > cx.max_message as u64 {
                    return Err(AmqpError::new(
                        PRECONDITION_FAILED,
                        format!("message size {size} is larger than configured max size {}", cx.max_message),
                    )
                    .on(60, 40));
                }
                let raw = payload.slice(12..);
                let props = match parse_properties(&raw[..]) {
                    Ok((_, props)) => props,
                    Err(_) => return Err(AmqpError::new(SYNTAX_ERROR, "malformed content properties")),
                };
                p.header = Some((size, raw, props));
            }
            (frame::FRAME_BODY, Some((size, _, _))) => {
                p.received += payload.len() as u64;
                if p.received > *size {
                    return Err(AmqpError::new(FRAME_ERROR, "content body longer than its header says"));
                }
                p.body.push(payload);
            }
            _ => return Err(AmqpError::new(UNEXPECTED_FRAME, "content frames out of order")),
        }
        if matches!(&p.header, Some((size, _, _)) if p.received == *size) {
            let started = p.started;
            let r = self.complete_publish(cx);
            cx.metrics.observe(crate::metrics::BASIC_PUBLISH, started.elapsed());
            r?;
        }
        Ok(())
    }

    /// Dispatches a method (not channel.open, handled by the connection).
    pub async fn method(&mut self, cx: &mut ConnCtx, m: AMQPClass) -> Result<(), AmqpError> {
        let (class, method) = (m.get_amqp_class_id(), m.get_amqp_method_id());
        if self.pending.is_some() {
            return Err(AmqpError::new(UNEXPECTED_FRAME, "expected content header/body").on(class, method));
        }
        self.dispatch(cx, m).await.map_err(|e| e.on(class, method))
    }

    async fn dispatch(&mut self, cx: &mut ConnCtx, m: AMQPClass) -> Result<(), AmqpError> {
        match m {
            AMQPClass::Basic(basic::AMQPMethod::Publish(p)) => {
                self.pending = Some(PendingPublish {
                    publish: p,
                    header: None,
                    body: Vec::new(),
                    received: 0,
                    started: std::time::Instant::now(),
                });
                Ok(())
            }
            AMQPClass::Basic(basic::AMQPMethod::Ack(a)) => self.settle(a.delivery_tag, a.multiple, Settle::Ack),
            AMQPClass::Basic(basic::AMQPMethod::Nack(n)) => {
                self.settle(n.delivery_tag, n.multiple, if n.requeue { Settle::Requeue } else { Settle::Discard })
            }
            AMQPClass::Basic(basic::AMQPMethod::Reject(r)) => {
                self.settle(r.delivery_tag, false, if r.requeue { Settle::Requeue } else { Settle::Discard })
            }
            AMQPClass::Basic(basic::AMQPMethod::Qos(q)) => {
                if q.global {
                    self.shared.lock().channel_prefetch = q.prefetch_count;
                } else {
                    self.consumer_prefetch = q.prefetch_count;
                }
                self.shared.credit.notify_waiters();
                self.send(cx, AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})))
            }
            AMQPClass::Basic(basic::AMQPMethod::Consume(c)) => self.consume(cx, c),
            AMQPClass::Basic(basic::AMQPMethod::Cancel(c)) => {
                let tag: Arc<str> = c.consumer_tag.as_str().into();
                self.shared.lock().consumers.remove(&tag);
                self.shared.credit.notify_waiters();
                if let Some(h) = self.consumers.remove(&tag) {
                    h.task.abort();
                    if h.queue.remove_consumer(h.id) {
                        cx.vhost.delete_if_present(&h.queue)?;
                    }
                }
                if !c.nowait {
                    self.send(
                        cx,
                        AMQPClass::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk { consumer_tag: c.consumer_tag })),
                    )?;
                }
                Ok(())
            }
            AMQPClass::Basic(basic::AMQPMethod::Get(g)) => {
                cx.check(Perm::Read, "queue", g.queue.as_str())?;
                let q = cx.vhost.queue_for(g.queue.as_str(), cx.id)?;
                q.touch();
                match q.take(None)? {
                    Some(d) => {
                        let ready = q.ready_count().min(u64::from(u32::MAX)) as u32;
                        self.shared.deliver(None, g.no_ack, &d, &q, ready);
                        Ok(())
                    }
                    None => self.send(cx, AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {}))),
                }
            }
            AMQPClass::Basic(basic::AMQPMethod::Recover(_)) => {
                self.shared.requeue_all();
                self.send(cx, AMQPClass::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})))
            }
            AMQPClass::Basic(basic::AMQPMethod::RecoverAsync(_)) => {
                self.shared.requeue_all();
                Ok(())
            }
            AMQPClass::Channel(channel::AMQPMethod::Flow(f)) => {
                self.shared.lock().paused = !f.active;
                self.shared.credit.notify_waiters();
                self.send(cx, AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk { active: f.active })))
            }
            AMQPClass::Channel(channel::AMQPMethod::FlowOk(_)) => Ok(()),
            AMQPClass::Exchange(exchange::AMQPMethod::Declare(d)) => {
                let arguments = values::headers(&d.arguments);
                // x-delayed-message (RabbitMQ's plugin): routes as its
                // x-delayed-type once a message's x-delay has passed.
                let delayed = d.kind.as_str() == "x-delayed-message";
                let type_name = if delayed {
                    match arguments.get("x-delayed-type").and_then(|v| v.as_str()) {
                        Some(t) => t.to_string(),
                        None => {
                            return Err(AmqpError::new(
                                PRECONDITION_FAILED,
                                "Invalid argument, 'x-delayed-type' must be an existing exchange type",
                            ));
                        }
                    }
                } else {
                    d.kind.as_str().to_string()
                };
                let kind = ExchangeKind::parse(&type_name)
                    .ok_or_else(|| AmqpError::new(COMMAND_INVALID, format!("unknown exchange type '{type_name}'")));
                let kind = match (kind, d.passive) {
                    (Ok(k), _) => k,
                    (Err(_), true) => ExchangeKind::Direct,
                    (Err(e), false) => return Err(e),
                };
                cx.check(Perm::Configure, "exchange", d.exchange.as_str())?;
                let ex = Exchange {
                    name: d.exchange.as_str().to_string(),
                    kind,
                    durable: d.durable,
                    auto_delete: d.auto_delete,
                    internal: d.internal,
                    arguments,
                    bindings: Vec::new(),
                    delayed,
                };
                cx.vhost.declare_exchange(ex, d.passive)?;
                if !d.nowait {
                    self.send(cx, AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {})))?;
                }
                Ok(())
            }
            AMQPClass::Exchange(exchange::AMQPMethod::Delete(d)) => {
                cx.check(Perm::Configure, "exchange", d.exchange.as_str())?;
                cx.vhost.delete_exchange(d.exchange.as_str(), d.if_unused)?;
                if !d.nowait {
                    self.send(cx, AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})))?;
                }
                Ok(())
            }
            AMQPClass::Exchange(exchange::AMQPMethod::Bind(b)) => {
                cx.check(Perm::Write, "exchange", b.destination.as_str())?;
                cx.check(Perm::Read, "exchange", b.source.as_str())?;
                let dest = destination_exchange(b.destination.as_str());
                cx.vhost.bind(b.source.as_str(), dest, b.routing_key.as_str(), values::headers(&b.arguments), cx.id)?;
                if !b.nowait {
                    self.send(cx, AMQPClass::Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {})))?;
                }
                Ok(())
            }
            AMQPClass::Exchange(exchange::AMQPMethod::Unbind(b)) => {
                cx.check(Perm::Write, "exchange", b.destination.as_str())?;
                cx.check(Perm::Read, "exchange", b.source.as_str())?;
                let dest = destination_exchange(b.destination.as_str());
                cx.vhost.unbind(
                    b.source.as_str(),
                    dest,
                    b.routing_key.as_str(),
                    &values::headers(&b.arguments),
                    cx.id,
                )?;
                if !b.nowait {
                    self.send(cx, AMQPClass::Exchange(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {})))?;
                }
                Ok(())
            }
            AMQPClass::Queue(queue::AMQPMethod::Declare(d)) => self.declare_queue(cx, d),
            AMQPClass::Queue(queue::AMQPMethod::Bind(b)) => {
                let name = cx.queue_name(b.queue.as_str())?;
                cx.check(Perm::Write, "queue", &name)?;
                cx.check(Perm::Read, "exchange", b.exchange.as_str())?;
                let dest = Destination::Queue(name);
                cx.vhost.bind(
                    b.exchange.as_str(),
                    dest,
                    b.routing_key.as_str(),
                    values::headers(&b.arguments),
                    cx.id,
                )?;
                if !b.nowait {
                    self.send(cx, AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {})))?;
                }
                Ok(())
            }
            AMQPClass::Queue(queue::AMQPMethod::Unbind(b)) => {
                let name = cx.queue_name(b.queue.as_str())?;
                cx.check(Perm::Write, "queue", &name)?;
                cx.check(Perm::Read, "exchange", b.exchange.as_str())?;
                let dest = Destination::Queue(name);
                cx.vhost.unbind(
                    b.exchange.as_str(),
                    dest,
                    b.routing_key.as_str(),
                    &values::headers(&b.arguments),
                    cx.id,
                )?;
                self.send(cx, AMQPClass::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {})))
            }
            AMQPClass::Queue(queue::AMQPMethod::Purge(p)) => {
                let name = cx.queue_name(p.queue.as_str())?;
                cx.check(Perm::Read, "queue", &name)?;
                let n = cx.vhost.queue_for(&name, cx.id)?.purge()?;
                if !p.nowait {
                    let message_count = n.min(u64::from(u32::MAX)) as u32;
                    self.send(cx, AMQPClass::Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk { message_count })))?;
                }
                Ok(())
            }
            AMQPClass::Queue(queue::AMQPMethod::Delete(d)) => {
                let name = cx.queue_name(d.queue.as_str())?;
                cx.check(Perm::Configure, "queue", &name)?;
                let n = cx.vhost.delete_queue(&name, d.if_unused, d.if_empty, cx.id)?;
                if !d.nowait {
                    let message_count = n.min(u64::from(u32::MAX)) as u32;
                    self.send(cx, AMQPClass::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk { message_count })))?;
                }
                Ok(())
            }
            AMQPClass::Confirm(confirm::AMQPMethod::Select(s)) => {
                if self.tx.is_some() {
                    return Err(AmqpError::new(PRECONDITION_FAILED, "cannot switch from tx to confirm mode"));
                }
                if self.confirms.is_none() {
                    self.confirms = Some(Confirms::new(self.id, cx.outbox.clone(), cx.stats.clone()));
                }
                if !s.nowait {
                    self.send(cx, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})))?;
                }
                Ok(())
            }
            AMQPClass::Tx(tx::AMQPMethod::Select(_)) => {
                if self.confirms.is_some() {
                    return Err(AmqpError::new(PRECONDITION_FAILED, "cannot switch from confirm to tx mode"));
                }
                self.tx.get_or_insert_with(TxBuffer::default);
                self.send(cx, AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})))
            }
            AMQPClass::Tx(tx::AMQPMethod::Commit(_)) => {
                let Some(buf) = self.tx.as_mut().map(std::mem::take) else {
                    return Err(AmqpError::new(PRECONDITION_FAILED, "channel is not transactional"));
                };
                self.commit(cx, buf).await?;
                self.send(cx, AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})))
            }
            AMQPClass::Tx(tx::AMQPMethod::Rollback(_)) => {
                let Some(buf) = self.tx.as_mut() else {
                    return Err(AmqpError::new(PRECONDITION_FAILED, "channel is not transactional"));
                };
                *buf = TxBuffer::default();
                self.send(cx, AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})))
            }
            AMQPClass::Access(_) => self.send(
                cx,
                AMQPClass::Access(amq_protocol::protocol::access::AMQPMethod::RequestOk(
                    amq_protocol::protocol::access::RequestOk {},
                )),
            ),
            other => Err(AmqpError::new(
                COMMAND_INVALID,
                format!("method {}.{} is not valid here", other.get_amqp_class_id(), other.get_amqp_method_id()),
            )),
        }
    }

    fn settle(&mut self, tag: u64, multiple: bool, how: Settle) -> Result<(), AmqpError> {
        if let Some(tx) = self.tx.as_mut() {
            tx.settles.push((tag, multiple, how));
            return Ok(());
        }
        self.shared.settle(tag, multiple, how)
    }

    fn declare_queue(&mut self, cx: &mut ConnCtx, d: queue::Declare) -> Result<(), AmqpError> {
        let mut name = d.queue.as_str().to_string();
        if name.is_empty() && d.passive {
            name = cx.last_queue.clone().ok_or_else(|| AmqpError::new(NOT_FOUND, "no previously declared queue"))?;
        }
        if name.is_empty() {
            name = format!("amq.gen-{}", uuid::Uuid::new_v4().simple());
        }
        cx.check(Perm::Configure, "queue", &name)?;
        let spec = QueueSpec {
            name,
            durable: d.durable,
            exclusive_owner: d.exclusive.then_some(cx.id),
            auto_delete: d.auto_delete,
            arguments: values::headers(&d.arguments),
        };
        let q = cx.vhost.declare_queue(spec, d.passive, cx.id)?;
        if q.spec.exclusive_owner == Some(cx.id) && !cx.exclusive.iter().any(|e| Arc::ptr_eq(e, &q)) {
            cx.exclusive.push(q.clone());
        }
        cx.last_queue = Some(q.name().to_string());
        if !d.nowait {
            let ok = queue::DeclareOk {
                queue: q.name().into(),
                message_count: q.ready_count().min(u64::from(u32::MAX)) as u32,
                consumer_count: q.consumer_count(),
            };
            self.send(cx, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)))?;
        }
        Ok(())
    }

    fn consume(&mut self, cx: &mut ConnCtx, c: basic::Consume) -> Result<(), AmqpError> {
        let name = cx.queue_name(c.queue.as_str())?;
        cx.check(Perm::Read, "queue", &name)?;
        let q = cx.vhost.queue_for(&name, cx.id)?;
        let tag: Arc<str> = if c.consumer_tag.as_str().is_empty() {
            format!("amq.ctag-{}", uuid::Uuid::new_v4().simple()).into()
        } else {
            c.consumer_tag.as_str().into()
        };
        if self.consumers.contains_key(&tag) {
            return Err(AmqpError::new(NOT_ALLOWED, format!("attempt to reuse consumer tag '{tag}'")));
        }
        let id = q.add_consumer(c.exclusive)?;
        self.shared
            .lock()
            .consumers
            .insert(tag.clone(), ConsumerSlot { prefetch: self.consumer_prefetch, in_flight: 0, no_ack: c.no_ack });
        if !c.nowait {
            // Before the task starts, so consume-ok precedes any delivery.
            let ok = basic::ConsumeOk { consumer_tag: tag.as_ref().into() };
            self.send(cx, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(ok)))?;
        }
        let task = tokio::spawn(self.shared.clone().run_consumer(tag.clone(), q.clone(), id, c.no_ack));
        self.consumers.insert(tag, ConsumerHandle { queue: q, id, task });
        Ok(())
    }

    /// The last content frame of a publish arrived.
    fn complete_publish(&mut self, cx: &ConnCtx) -> Result<(), AmqpError> {
        let Some(p) = self.pending.take() else { return Ok(()) };
        let Some((_, raw, props)) = p.header else { return Ok(()) };
        let body = match p.body.len() {
            0 => Bytes::new(),
            1 => p.body.into_iter().next().unwrap_or_default(),
            _ => {
                let mut b = BytesMut::with_capacity(p.received as usize);
                for part in &p.body {
                    b.extend_from_slice(part);
                }
                b.freeze()
            }
        };
        let exchange = p.publish.exchange.as_str();
        let fail = |e: AmqpError| e.on(60, 40);
        cx.check(Perm::Write, "exchange", exchange).map_err(fail)?;
        let (_, internal, delayed) = cx.vhost.exchange_info(exchange).map_err(|e| fail(e.into()))?;
        if internal {
            return Err(fail(AmqpError::new(
                ACCESS_REFUSED,
                format!("cannot publish to internal exchange '{exchange}' in vhost '{}'", cx.vhost.name),
            )));
        }
        let expires_at = match props.expiration() {
            None => None,
            Some(e) => match e.as_str().parse::<u64>() {
                Ok(ms) => Some(now_ms().saturating_add(ms.min(i64::MAX as u64) as i64)),
                Err(_) => {
                    return Err(fail(AmqpError::new(
                        PRECONDITION_FAILED,
                        format!("invalid expiration '{}'", e.as_str()),
                    )));
                }
            },
        };
        let headers = props.headers().as_ref().map(values::headers).unwrap_or_default();
        let delay = if delayed { headers.get("x-delay").and_then(|v| v.as_int()).filter(|d| *d > 0) } else { None };
        let msg = Message {
            retry_queue: None,
            retries: 0,
            expires_at,
            deliver_at: delay.map(|d| now_ms().saturating_add(d)),
            priority: props.priority().unwrap_or(0),
            exchange: exchange.to_string(),
            routing_key: p.publish.routing_key.as_str().to_string(),
            properties: raw,
            body,
            persistent: props.delivery_mode() == &Some(2),
            headers,
        };
        if let Some(tx) = self.tx.as_mut() {
            tx.publishes.push((msg, p.publish.mandatory));
            return Ok(());
        }
        let confirm = match &self.confirms {
            Some(c) => {
                self.publish_seq += 1;
                Some((c.clone(), self.publish_seq))
            }
            None => None,
        };
        self.route_and_store(cx, &msg, p.publish.mandatory, confirm).map(|_| ()).map_err(fail)
    }

    /// Routes and appends `msg`; returns the appends that must reach disk
    /// before the publish counts as safe, if not confirming itself.
    fn route_and_store(
        &self,
        cx: &ConnCtx,
        msg: &Message,
        mandatory: bool,
        confirm: Option<(Confirms, u64)>,
    ) -> Result<Vec<(Arc<Queue>, u64)>, AmqpError> {
        if msg.deliver_at.is_some() {
            return self.store_delayed(cx, msg, confirm);
        }
        let (queues, topics) = cx.vhost.route_all(&msg.exchange, &msg.routing_key, &msg.headers)?;
        let mut appends = Vec::with_capacity(topics.len());
        for t in &topics {
            appends.push(cx.vhost.publish_to_topic(t, msg)?);
        }
        if queues.is_empty() && topics.is_empty() && mandatory {
            let mut out = BytesMut::with_capacity(msg.body.len() + 128);
            let ret = basic::Return {
                reply_code: NO_ROUTE,
                reply_text: "NO_ROUTE".into(),
                exchange: msg.exchange.as_str().into(),
                routing_key: msg.routing_key.as_str().into(),
            };
            frame::put_method(&mut out, self.id, &AMQPClass::Basic(basic::AMQPMethod::Return(ret)))?;
            frame::put_content(&mut out, self.id, &msg.properties, &msg.body, cx.frame_max);
            cx.outbox.send(out.freeze());
        }
        let mut waits = Vec::new();
        let mut rejected = false;
        for q in &queues {
            match q.publish(msg)? {
                Published::Stored(offset) if msg.persistent && q.spec.durable => waits.push((q.clone(), offset)),
                Published::Stored(_) => {}
                Published::Rejected => rejected = true,
            }
        }
        let Some((confirms, seq)) = confirm else {
            // Without confirms (or in a transaction) topic appends still
            // complete; nobody waits for them.
            return Ok(waits);
        };
        if (waits.is_empty() && appends.is_empty()) || rejected {
            // A full reject-publish queue refuses: the publisher gets a nack.
            confirms.complete(seq, !rejected);
            return Ok(Vec::new());
        }
        let state = Arc::new(Confirm {
            remaining: AtomicUsize::new(waits.len() + appends.len()),
            failed: std::sync::atomic::AtomicBool::new(false),
        });
        for a in appends {
            let (state, confirms) = (state.clone(), confirms.clone());
            tokio::spawn(async move {
                if a.acknowledged().await.is_err() {
                    state.failed.store(true, Ordering::Release);
                }
                if state.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    confirms.complete(seq, !state.failed.load(Ordering::Acquire));
                }
            });
        }
        for (q, offset) in waits {
            let (state, confirms) = (state.clone(), confirms.clone());
            q.on_durable(offset, move |ok| {
                if !ok {
                    state.failed.store(true, Ordering::Release);
                }
                if state.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    confirms.complete(seq, !state.failed.load(Ordering::Acquire));
                }
            });
        }
        Ok(Vec::new())
    }

    /// A message for an `x-delayed-message` exchange with an `x-delay`:
    /// held in the durable delay store; confirmed once stored (on disk if
    /// persistent). `mandatory` cannot be honoured: routing happens later.
    fn store_delayed(
        &self,
        cx: &ConnCtx,
        msg: &Message,
        confirm: Option<(Confirms, u64)>,
    ) -> Result<Vec<(Arc<Queue>, u64)>, AmqpError> {
        let offset = cx.vhost.publish_delayed(msg)?;
        let Some((confirms, seq)) = confirm else { return Ok(Vec::new()) };
        if !msg.persistent {
            confirms.complete(seq, true);
            return Ok(Vec::new());
        }
        cx.vhost.delayed_on_durable(offset, move |ok| confirms.complete(seq, ok));
        Ok(Vec::new())
    }

    async fn commit(&mut self, cx: &ConnCtx, buf: TxBuffer) -> Result<(), AmqpError> {
        for (tag, multiple, how) in buf.settles {
            self.shared.settle(tag, multiple, how)?;
        }
        let mut waits = Vec::new();
        for (msg, mandatory) in &buf.publishes {
            waits.extend(self.route_and_store(cx, msg, *mandatory, None)?);
        }
        for (q, offset) in waits {
            let (tx, rx) = tokio::sync::oneshot::channel();
            q.on_durable(offset, move |ok| {
                let _ = tx.send(ok);
            });
            if !matches!(rx.await, Ok(true)) {
                return Err(AmqpError::new(INTERNAL_ERROR, "a transactional publish could not be made durable"));
            }
        }
        Ok(())
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// An exchange.bind destination: `kafka:<topic>` names a Kafka topic.
fn destination_exchange(name: &str) -> Destination {
    match name.strip_prefix("kafka:") {
        Some(topic) => Destination::Topic(topic.to_string()),
        None => Destination::Exchange(name.to_string()),
    }
}

/// The three permission kinds.
#[derive(Clone, Copy, Debug)]
pub enum Perm {
    Configure,
    Write,
    Read,
}
