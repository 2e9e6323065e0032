//! The basic class, publishing aside (`publish`): consumers (consume,
//! cancel), basic.get, acknowledgements (ack, nack, reject, possibly held
//! by a transaction), recover and QoS (prefetch).

use std::sync::Arc;

use amq_protocol::protocol::{AMQPClass, basic};
use tracing::Instrument;

use super::{Channel, ConsumerHandle, Perm, not_valid_here};
use crate::connection::ConnCtx;
use crate::delivery::{ConsumerSlot, Settle};
use crate::error::*;

impl Channel {
    /// A basic-class method other than basic.publish.
    pub(super) fn basic(&mut self, cx: &mut ConnCtx, m: basic::AMQPMethod) -> Result<(), AmqpError> {
        match m {
            basic::AMQPMethod::Ack(a) => self.settle(a.delivery_tag, a.multiple, Settle::Ack),
            basic::AMQPMethod::Nack(n) => {
                self.settle(n.delivery_tag, n.multiple, if n.requeue { Settle::Requeue } else { Settle::Discard })
            }
            basic::AMQPMethod::Reject(r) => {
                self.settle(r.delivery_tag, false, if r.requeue { Settle::Requeue } else { Settle::Discard })
            }
            basic::AMQPMethod::Qos(q) => {
                if q.global {
                    self.shared.lock().channel_prefetch = q.prefetch_count;
                } else {
                    self.consumer_prefetch = q.prefetch_count;
                }
                self.shared.credit.notify_waiters();
                self.send(cx, AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})))
            }
            basic::AMQPMethod::Consume(c) => self.consume(cx, c),
            basic::AMQPMethod::Cancel(c) => {
                let tag: Arc<str> = c.consumer_tag.as_str().into();
                self.shared.lock().consumers.remove(&tag);
                self.shared.credit.notify_waiters();
                if let Some(h) = self.consumers.remove(&tag) {
                    h.task.abort();
                    if let Some(q) = h.queue.remove_consumer(&h.id) {
                        cx.vhost.delete_if_present(&q)?;
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
            basic::AMQPMethod::Get(g) => {
                cx.check(Perm::Read, "queue", g.queue.as_str())?;
                let q = cx.vhost.queue_handle_for(g.queue.as_str(), cx.id)?;
                q.touch();
                match q.get()? {
                    Some((d, ready)) => {
                        let ready = ready.min(u64::from(u32::MAX)) as u32;
                        self.shared.deliver(None, g.no_ack, &d, &q, ready);
                        Ok(())
                    }
                    None => self.send(cx, AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {}))),
                }
            }
            basic::AMQPMethod::Recover(_) => {
                self.shared.requeue_all();
                self.send(cx, AMQPClass::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})))
            }
            basic::AMQPMethod::RecoverAsync(_) => {
                self.shared.requeue_all();
                Ok(())
            }
            other => Err(not_valid_here(&AMQPClass::Basic(other))),
        }
    }

    fn settle(&mut self, tag: u64, multiple: bool, how: Settle) -> Result<(), AmqpError> {
        if let Some(tx) = self.tx.as_mut() {
            tx.settles.push((tag, multiple, how));
            return Ok(());
        }
        self.shared.settle(tag, multiple, how)
    }

    fn consume(&mut self, cx: &mut ConnCtx, c: basic::Consume) -> Result<(), AmqpError> {
        let name = cx.queue_name(c.queue.as_str())?;
        cx.check(Perm::Read, "queue", &name)?;
        let q = cx.vhost.queue_handle_for(&name, cx.id)?;
        let tag: Arc<str> = if c.consumer_tag.as_str().is_empty() {
            format!("amq.ctag-{}", uuid::Uuid::new_v4().simple()).into()
        } else {
            c.consumer_tag.as_str().into()
        };
        if self.consumers.contains_key(&tag) {
            return Err(AmqpError::new(NOT_ALLOWED, format!("attempt to reuse consumer tag '{tag}'")));
        }
        let id = q.add_consumer(c.exclusive, self.consumer_prefetch)?;
        self.shared
            .lock()
            .consumers
            .insert(tag.clone(), ConsumerSlot { prefetch: self.consumer_prefetch, in_flight: 0, no_ack: c.no_ack });
        if !c.nowait {
            // Before the task starts, so consume-ok precedes any delivery.
            let ok = basic::ConsumeOk { consumer_tag: tag.as_ref().into() };
            self.send(cx, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(ok)))?;
        }
        // In the connection's span, so its deliveries can be told apart.
        let task = tokio::spawn(
            self.shared.clone().run_consumer(tag.clone(), q.clone(), id.clone(), c.no_ack).in_current_span(),
        );
        self.consumers.insert(tag, ConsumerHandle { queue: q, id, task });
        Ok(())
    }
}
