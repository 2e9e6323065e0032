//! basic.publish: the method, then a content header and body frames
//! assembled into a message, routed to queues and topics (or held by the
//! delay store), confirmed to the publisher once safe, or buffered by a
//! transaction.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use amq_protocol::protocol::AMQPClass;
use amq_protocol::protocol::basic::{self, AMQPProperties, parse_properties};
use bytes::{Bytes, BytesMut};
use ferry_broker::messaging::{HandlePublished, Message, PublishWait};
use ferry_util::time::now_ms;

use super::{Channel, Perm};
use crate::confirms::Confirms;
use crate::connection::ConnCtx;
use crate::error::*;
use crate::{frame, values};

/// A basic.publish waiting for its content frames.
pub(super) struct PendingPublish {
    publish: basic::Publish,
    /// Raw property flags + list, and what we need from them.
    header: Option<(u64, Bytes, AMQPProperties)>,
    body: Vec<Bytes>,
    received: u64,
    /// When the basic.publish method arrived (request latency).
    started: std::time::Instant,
}

/// What a publish must wait for before it is confirmed.
struct Confirm {
    remaining: AtomicUsize,
    failed: AtomicBool,
}

impl Channel {
    /// basic.publish: the content frames follow. `immediate` was dropped
    /// by RabbitMQ 3.0; like RabbitMQ we refuse it with a connection close
    /// (540) rather than ignore it, so clients that test for it see it.
    pub(super) fn start_publish(&mut self, publish: basic::Publish) -> Result<(), AmqpError> {
        if publish.immediate {
            return Err(AmqpError::new(NOT_IMPLEMENTED, "immediate=true"));
        }
        self.pending = Some(PendingPublish {
            publish,
            header: None,
            body: Vec::new(),
            received: 0,
            started: std::time::Instant::now(),
        });
        Ok(())
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
                let Ok((_, props)) = parse_properties(&raw[..]) else {
                    return Err(AmqpError::new(SYNTAX_ERROR, "malformed content properties"));
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
        let delay = if delayed {
            headers.get("x-delay").and_then(ferry_broker::messaging::HeaderValue::as_int).filter(|d| *d > 0)
        } else {
            None
        };
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
    pub(super) fn route_and_store(
        &self,
        cx: &ConnCtx,
        msg: &Message,
        mandatory: bool,
        confirm: Option<(Confirms, u64)>,
    ) -> Result<Vec<PublishWait>, AmqpError> {
        if msg.deliver_at.is_some() {
            return self.store_delayed(cx, msg, confirm);
        }
        let (queues, topics) = cx.vhost.route_handles(&msg.exchange, &msg.routing_key, &msg.headers)?;
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
                HandlePublished::Stored(wait) => waits.push(wait),
                HandlePublished::Volatile => {}
                HandlePublished::Rejected => rejected = true,
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
            failed: AtomicBool::new(false),
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
        for wait in waits {
            let (state, confirms) = (state.clone(), confirms.clone());
            wait.on_done(move |ok| {
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
    /// held in the durable delay store (the replicated delay queue in a
    /// cluster); confirmed once stored (on disk, or the ISR, if persistent). `mandatory` cannot be honoured: routing happens later.
    fn store_delayed(
        &self,
        cx: &ConnCtx,
        msg: &Message,
        confirm: Option<(Confirms, u64)>,
    ) -> Result<Vec<PublishWait>, AmqpError> {
        let wait = cx.vhost.publish_delayed(msg)?;
        let Some((confirms, seq)) = confirm else { return Ok(Vec::new()) };
        if !msg.persistent {
            confirms.complete(seq, true);
            return Ok(Vec::new());
        }
        wait.on_done(move |ok| confirms.complete(seq, ok));
        Ok(Vec::new())
    }
}
