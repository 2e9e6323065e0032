//! The queue class: declare (server-named and exclusive queues), bind,
//! unbind, purge, delete.

use std::sync::Arc;

use amq_protocol::protocol::{AMQPClass, queue};
use ferry_broker::messaging::{Destination, QueueSpec};

use super::{Channel, Perm, not_valid_here};
use crate::connection::ConnCtx;
use crate::error::*;
use crate::values;

impl Channel {
    /// A queue-class method.
    pub(super) fn queue(&mut self, cx: &mut ConnCtx, m: queue::AMQPMethod) -> Result<(), AmqpError> {
        match m {
            queue::AMQPMethod::Declare(d) => self.declare_queue(cx, d),
            queue::AMQPMethod::Bind(b) => {
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
            queue::AMQPMethod::Unbind(b) => {
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
            queue::AMQPMethod::Purge(p) => {
                let name = cx.queue_name(p.queue.as_str())?;
                cx.check(Perm::Read, "queue", &name)?;
                let n = cx.vhost.queue_handle_for(&name, cx.id)?.purge()?;
                if !p.nowait {
                    let message_count = n.min(u64::from(u32::MAX)) as u32;
                    self.send(cx, AMQPClass::Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk { message_count })))?;
                }
                Ok(())
            }
            queue::AMQPMethod::Delete(d) => {
                let name = cx.queue_name(d.queue.as_str())?;
                cx.check(Perm::Delete, "queue", &name)?;
                let n = cx.vhost.delete_queue_handle(&name, d.if_unused, d.if_empty, cx.id)?;
                if !d.nowait {
                    let message_count = n.min(u64::from(u32::MAX)) as u32;
                    self.send(cx, AMQPClass::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk { message_count })))?;
                }
                Ok(())
            }
            other => Err(not_valid_here(&AMQPClass::Queue(other))),
        }
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
        let h = cx.vhost.declare_queue_handle(spec, d.passive, cx.id)?;
        if let Some(q) = h.as_local()
            && q.spec.exclusive_owner == Some(cx.id)
            && !cx.exclusive.iter().any(|e| Arc::ptr_eq(e, q))
        {
            cx.exclusive.push(q.clone());
        }
        cx.last_queue = Some(h.name().to_string());
        if !d.nowait {
            let (ready, consumers) = h.counts();
            let ok = queue::DeclareOk {
                queue: h.name().into(),
                message_count: ready.min(u64::from(u32::MAX)) as u32,
                consumer_count: consumers,
            };
            self.send(cx, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)))?;
        }
        Ok(())
    }
}
