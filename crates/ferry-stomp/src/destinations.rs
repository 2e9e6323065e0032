//! Destinations, as RabbitMQ's STOMP plugin defines them, over the
//! messaging layer's exchanges and queues (no queue of STOMP's own):
//!
//! - `/queue/<name>`: the queue `<name>` (declared durable on first use);
//!   SEND goes through the default exchange, SUBSCRIBE consumes it.
//! - `/topic/<key>`: the `amq.topic` exchange with routing key `<key>`;
//!   each SUBSCRIBE gets its own exclusive, auto-delete queue bound with
//!   `<key>` as pattern. `durable:true` (or `persistent:true`) with an `id`
//!   makes a durable subscription: a durable queue named
//!   `stomp-subscription-<id>` (or `x-queue-name`) that outlives the
//!   connection, deleted by an UNSUBSCRIBE that also says `durable:true`.
//! - `/exchange/<name>/<pattern>`: like `/topic/`, on exchange `<name>`.
//! - `/amq/queue/<name>`: an existing queue, never declared.
//! - `/temp-queue/<x>`: a private reply queue of the connection (SEND
//!   with `reply-to:/temp-queue/x` creates it and subscribes to it; the
//!   stored reply-to becomes `/reply-queue/<queue name>`).
//! - `/reply-queue/<name>`: SEND only, to a temporary queue by name.
//! - `/kafka/<topic>` (Ferry's own): SEND appends a record to the Kafka
//!   topic (created if the broker auto-creates topics); SUBSCRIBE reads it
//!   through a queue fed from the topic (`x-kafka-topic`), from the tail
//!   by default or from the start with `x-stream-offset:first`.

use std::sync::Arc;

use ferry_broker::messaging::{self, HeaderValue, Headers, QueueHandle, QueueSpec, Vhost};

use crate::error::StompError;
use crate::server::Access;

/// The permission check of the connection: (access, `"queue"` or
/// `"exchange"`, name).
pub type Check<'a> = &'a dyn Fn(Access, &str, &str) -> Result<(), StompError>;

/// A parsed `destination` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// `/queue/<name>`.
    Queue(String),
    /// `/topic/<key>`.
    Topic(String),
    /// `/exchange/<name>/<pattern>` (pattern may be empty).
    Exchange {
        /// The exchange.
        name: String,
        /// Routing key (SEND) or binding pattern (SUBSCRIBE).
        pattern: String,
    },
    /// `/amq/queue/<name>`.
    AmqQueue(String),
    /// `/temp-queue/<x>`.
    TempQueue(String),
    /// `/reply-queue/<name>`.
    ReplyQueue(String),
    /// `/kafka/<topic>`.
    Kafka(String),
}

fn name(kind: &str, s: &str) -> Result<String, StompError> {
    if s.is_empty() || s.contains('/') || s.len() > 255 {
        return Err(StompError::protocol(format!("invalid {kind} name {s:?} in destination")));
    }
    Ok(s.to_string())
}

impl Destination {
    /// Parses a `destination` header.
    pub fn parse(d: &str) -> Result<Destination, StompError> {
        if let Some(rest) = d.strip_prefix("/queue/") {
            return Ok(Destination::Queue(name("queue", rest)?));
        }
        if let Some(rest) = d.strip_prefix("/topic/") {
            if rest.is_empty() || rest.len() > 255 {
                return Err(StompError::protocol(format!("invalid topic in destination {d:?}")));
            }
            return Ok(Destination::Topic(rest.to_string()));
        }
        if let Some(rest) = d.strip_prefix("/exchange/") {
            let (x, pattern) = rest.split_once('/').unwrap_or((rest, ""));
            if pattern.len() > 255 {
                return Err(StompError::protocol("routing key longer than 255 bytes"));
            }
            return Ok(Destination::Exchange { name: name("exchange", x)?, pattern: pattern.to_string() });
        }
        if let Some(rest) = d.strip_prefix("/amq/queue/") {
            return Ok(Destination::AmqQueue(name("queue", rest)?));
        }
        if let Some(rest) = d.strip_prefix("/temp-queue/") {
            return Ok(Destination::TempQueue(name("temp-queue", rest)?));
        }
        if let Some(rest) = d.strip_prefix("/reply-queue/") {
            return Ok(Destination::ReplyQueue(name("queue", rest)?));
        }
        if let Some(rest) = d.strip_prefix("/kafka/") {
            ferry_broker::validate_topic_name(rest)
                .map_err(|_| StompError::protocol(format!("invalid Kafka topic name {rest:?}")))?;
            return Ok(Destination::Kafka(rest.to_string()));
        }
        Err(StompError::protocol(format!("Unknown destination {d:?}")))
    }
}

/// The `destination` a MESSAGE frame names for a message published to
/// `exchange` with `routing_key` (RabbitMQ's rules, plus `/kafka/`).
pub fn of_message(exchange: &str, routing_key: &str) -> String {
    match exchange {
        "" => format!("/queue/{routing_key}"),
        "amq.topic" => format!("/topic/{routing_key}"),
        x => match x.strip_prefix("kafka:") {
            Some(topic) => format!("/kafka/{topic}"),
            None => format!("/exchange/{x}/{routing_key}"),
        },
    }
}

/// A durable queue for `/queue/<name>`, declared on first use; an
/// existing queue is used as it was declared, wherever it is served (a
/// queue of another node is reached by forwarding, issue #17).
pub fn queue(vhost: &Arc<Vhost>, name: &str, owner: u64, check: Check<'_>) -> Result<QueueHandle, StompError> {
    if vhost.queue_handle(name).is_some() {
        return Ok(vhost.queue_handle_for(name, owner)?);
    }
    check(Access::Configure, "queue", name)?;
    let spec = QueueSpec {
        name: name.to_string(),
        durable: true,
        exclusive_owner: None,
        auto_delete: false,
        arguments: Headers::new(),
    };
    Ok(vhost.declare_queue_handle(spec, false, owner)?)
}

/// How a SUBSCRIBE wants its queue.
#[derive(Clone, Debug, Default)]
pub struct SubscribeOptions {
    /// The subscription `id` (1.0 may omit it).
    pub id: String,
    /// `durable:true` / `persistent:true`.
    pub durable: bool,
    /// `x-queue-name`: the subscription queue's name.
    pub queue_name: Option<String>,
    /// `x-stream-offset:first` (`/kafka/` only).
    pub from_start: bool,
}

/// The queue a subscription reads, and whether it is the subscription's
/// own (deleted when the subscription ends, unless durable).
pub struct Resolved {
    /// The queue to consume.
    pub queue: QueueHandle,
    /// Created for this subscription only.
    pub private: bool,
}

/// Declares (or finds) the queue behind a SUBSCRIBE to `dest`, with the
/// permissions RabbitMQ asks for: configure to declare, write to bind (on
/// the queue), read to bind (on the exchange) and to consume.
pub fn subscribe(
    vhost: &Arc<Vhost>,
    broker: Option<&Arc<ferry_broker::Broker>>,
    dest: &Destination,
    opts: &SubscribeOptions,
    owner: u64,
    check: Check<'_>,
) -> Result<Resolved, StompError> {
    match dest {
        Destination::Queue(n) => {
            let q = queue(vhost, n, owner, check)?;
            check(Access::Read, "queue", n)?;
            Ok(Resolved { queue: q, private: false })
        }
        Destination::AmqQueue(n) | Destination::ReplyQueue(n) => {
            check(Access::Read, "queue", n)?;
            Ok(Resolved { queue: vhost.queue_handle_for(n, owner)?, private: false })
        }
        Destination::Topic(key) => bound_queue(vhost, "amq.topic", key, opts, owner, check),
        Destination::Exchange { name, pattern } => bound_queue(vhost, name, pattern, opts, owner, check),
        Destination::TempQueue(_) => Err(StompError::protocol(
            "SUBSCRIBE to /temp-queue/ is not allowed: its replies arrive by themselves".to_string(),
        )),
        Destination::Kafka(topic) => {
            if let Some(b) = broker {
                // So that "the tail" means something for a topic not yet written.
                let _ = b.topic_or_create_blocking(topic);
            }
            let mut arguments = Headers::new();
            arguments.insert("x-kafka-topic".into(), HeaderValue::Str(topic.clone()));
            let start = if opts.from_start { "earliest" } else { "latest" };
            arguments.insert("x-kafka-start".into(), HeaderValue::Str(start.into()));
            let spec = private_spec(opts, owner, "stomp-kafka-", arguments)?;
            check(Access::Read, "exchange", &format!("kafka:{topic}"))?;
            check(Access::Configure, "queue", &spec.name)?;
            check(Access::Read, "queue", &spec.name)?;
            let durable = spec.durable;
            let q = own_queue(vhost, spec, owner)?;
            Ok(Resolved { queue: q, private: !durable })
        }
    }
}

fn private_spec(
    opts: &SubscribeOptions,
    owner: u64,
    prefix: &str,
    arguments: Headers,
) -> Result<QueueSpec, StompError> {
    if opts.durable {
        if opts.id.is_empty() && opts.queue_name.is_none() {
            return Err(StompError::protocol("a durable subscription needs an id header"));
        }
        let name = opts.queue_name.clone().unwrap_or_else(|| format!("{prefix}{}", opts.id));
        if name.len() > 255 {
            return Err(StompError::protocol("subscription queue name longer than 255 bytes"));
        }
        return Ok(QueueSpec { name, durable: true, exclusive_owner: None, auto_delete: false, arguments });
    }
    let name = opts.queue_name.clone().unwrap_or_else(|| format!("{prefix}{}", uuid::Uuid::new_v4().simple()));
    Ok(QueueSpec { name, durable: false, exclusive_owner: Some(owner), auto_delete: true, arguments })
}

/// A subscription's own queue: a durable one found (wherever it is
/// served: a durable subscription's queue is a cluster queue) or
/// declared; a private one always declared (exclusive, so this node's).
fn own_queue(vhost: &Arc<Vhost>, spec: QueueSpec, owner: u64) -> Result<QueueHandle, StompError> {
    if spec.durable && vhost.queue_handle(&spec.name).is_some() {
        return Ok(vhost.queue_handle_for(&spec.name, owner)?);
    }
    Ok(vhost.declare_queue_handle(spec, false, owner)?)
}

fn bound_queue(
    vhost: &Arc<Vhost>,
    exchange: &str,
    pattern: &str,
    opts: &SubscribeOptions,
    owner: u64,
    check: Check<'_>,
) -> Result<Resolved, StompError> {
    // The exchange first: a missing one must not leave a queue behind.
    vhost.exchange_info(exchange)?;
    let spec = private_spec(opts, owner, "stomp-subscription-", Headers::new())?;
    check(Access::Read, "exchange", exchange)?;
    for access in [Access::Configure, Access::Write, Access::Read] {
        check(access, "queue", &spec.name)?;
    }
    let durable = spec.durable;
    let q = own_queue(vhost, spec, owner)?;
    if let Err(e) =
        vhost.bind(exchange, messaging::Destination::Queue(q.name().to_string()), pattern, Headers::new(), owner)
    {
        if !durable && let Some(q) = q.as_local() {
            let _ = vhost.delete_if_present(q);
        }
        return Err(e.into());
    }
    Ok(Resolved { queue: q, private: !durable })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rabbitmq_destinations() {
        assert_eq!(Destination::parse("/queue/a").unwrap(), Destination::Queue("a".into()));
        assert_eq!(Destination::parse("/topic/a.b.#").unwrap(), Destination::Topic("a.b.#".into()));
        assert_eq!(
            Destination::parse("/exchange/logs/x.*").unwrap(),
            Destination::Exchange { name: "logs".into(), pattern: "x.*".into() }
        );
        assert_eq!(
            Destination::parse("/exchange/amq.fanout").unwrap(),
            Destination::Exchange { name: "amq.fanout".into(), pattern: String::new() }
        );
        assert_eq!(Destination::parse("/amq/queue/q").unwrap(), Destination::AmqQueue("q".into()));
        assert_eq!(Destination::parse("/temp-queue/r").unwrap(), Destination::TempQueue("r".into()));
        assert_eq!(Destination::parse("/kafka/events").unwrap(), Destination::Kafka("events".into()));
        for bad in ["q", "/queue/", "/queue/a/b", "/kafka/bad topic", "/nope/x", "/topic/"] {
            assert!(Destination::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn message_destinations() {
        assert_eq!(of_message("", "q"), "/queue/q");
        assert_eq!(of_message("amq.topic", "a.b"), "/topic/a.b");
        assert_eq!(of_message("logs", "k"), "/exchange/logs/k");
        assert_eq!(of_message("kafka:t", "key"), "/kafka/t");
    }
}
