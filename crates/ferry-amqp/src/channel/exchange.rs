//! The exchange class: declare (including RabbitMQ's `x-delayed-message`
//! type), delete, and exchange-to-exchange bindings; a `kafka:<topic>`
//! destination binds an exchange to a Kafka topic.

use amq_protocol::protocol::{AMQPClass, exchange};
use ferry_broker::messaging::{Destination, Exchange, ExchangeKind};

use super::{Channel, Perm, not_valid_here};
use crate::connection::ConnCtx;
use crate::error::*;
use crate::values;

impl Channel {
    /// An exchange-class method.
    pub(super) fn exchange(&mut self, cx: &mut ConnCtx, m: exchange::AMQPMethod) -> Result<(), AmqpError> {
        match m {
            exchange::AMQPMethod::Declare(d) => {
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
                // A channel error (406), as current RabbitMQ answers, not a
                // connection close: the client's other channels go on.
                let kind = ExchangeKind::parse(&type_name)
                    .ok_or_else(|| AmqpError::new(PRECONDITION_FAILED, format!("unknown exchange type '{type_name}'")));
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
            exchange::AMQPMethod::Delete(d) => {
                cx.check(Perm::Delete, "exchange", d.exchange.as_str())?;
                cx.vhost.delete_exchange(d.exchange.as_str(), d.if_unused)?;
                if !d.nowait {
                    self.send(cx, AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})))?;
                }
                Ok(())
            }
            exchange::AMQPMethod::Bind(b) => {
                cx.check(Perm::Write, "exchange", b.destination.as_str())?;
                cx.check(Perm::Read, "exchange", b.source.as_str())?;
                let dest = destination_exchange(b.destination.as_str());
                cx.vhost.bind(b.source.as_str(), dest, b.routing_key.as_str(), values::headers(&b.arguments), cx.id)?;
                if !b.nowait {
                    self.send(cx, AMQPClass::Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {})))?;
                }
                Ok(())
            }
            exchange::AMQPMethod::Unbind(b) => {
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
            other => Err(not_valid_here(&AMQPClass::Exchange(other))),
        }
    }
}

/// An exchange.bind destination: `kafka:<topic>` names a Kafka topic.
fn destination_exchange(name: &str) -> Destination {
    match name.strip_prefix("kafka:") {
        Some(topic) => Destination::Topic(topic.to_string()),
        None => Destination::Exchange(name.to_string()),
    }
}
