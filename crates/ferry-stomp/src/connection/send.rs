//! SEND: a frame becomes a message routed through an exchange to queues
//! (and Kafka topics bound to it), appended to a Kafka topic for
//! `/kafka/`, or held by a transaction until COMMIT. Temporary reply
//! queues are made here too.

use std::sync::Arc;

use ferry_broker::messaging::{HandlePublished, Message, MessagingError, QueueHandle, QueueSpec};
use ferry_util::time::now_ms;

use super::Conn;
use crate::codec::Frame;
use crate::destinations::Destination;
use crate::error::StompError;
use crate::receipts::Wait;
use crate::server::Access;
use crate::subscribe::AckMode;
use crate::transactions::Pending;

impl Conn {
    /// SEND (outside a transaction: stored now; inside: at COMMIT).
    pub(super) async fn send(&mut self, f: Frame) -> Result<(), StompError> {
        let dest = f.header("destination").ok_or_else(|| StompError::protocol("SEND without a destination"))?;
        Destination::parse(dest)?;
        let receipt = f.header("receipt").map(str::to_string);
        if let Some(tx) = f.header("transaction").map(str::to_string) {
            self.txns.push(&tx, Pending::Send(f))?;
            self.receipts.after(Vec::new(), receipt).await;
            return Ok(());
        }
        let waits = self.store(&f)?;
        self.receipts.after(waits, receipt).await;
        Ok(())
    }

    /// Routes and appends the message of SEND `f`; returns what must
    /// complete before it counts as stored.
    pub(super) fn store(&mut self, f: &Frame) -> Result<Vec<Wait>, StompError> {
        let dest = Destination::parse(f.header("destination").unwrap_or_default())?;
        let reply_to = match f.header("reply-to") {
            Some(r) => match r.strip_prefix("/temp-queue/") {
                Some(x) => Some(format!("/reply-queue/{}", self.temp_queue(x)?)),
                None => Some(r.to_string()),
            },
            None => None,
        };
        let c = crate::headers::from_send(&f.headers, reply_to.as_deref())?;
        let now = now_ms();
        let vhost = self.vhost.clone();
        let mut msg = Message {
            exchange: String::new(),
            routing_key: String::new(),
            properties: c.properties,
            body: f.body.clone(),
            persistent: c.persistent,
            headers: c.routing,
            expires_at: c.expiration_ms.map(|ms| now.saturating_add(ms.min(i64::MAX as u64) as i64)),
            priority: c.priority,
            deliver_at: None,
            retry_queue: None,
            retries: 0,
        };
        let missing_queue = |n: &str| {
            StompError::Messaging(MessagingError::NotFound(format!("no queue '{n}' in vhost '{}'", vhost.name)))
        };
        let check = |a, k: &str, n: &str| self.check(a, k, n);
        match &dest {
            Destination::Topic(_) => check(Access::Write, "exchange", "amq.topic")?,
            Destination::Exchange { name, .. } => check(Access::Write, "exchange", name)?,
            Destination::Kafka(topic) => check(Access::Write, "exchange", &format!("kafka:{topic}"))?,
            _ => check(Access::Write, "exchange", "")?,
        }
        match &dest {
            Destination::Queue(n) => {
                crate::destinations::queue(&vhost, n, self.id, &check)?;
                msg.routing_key = n.clone();
            }
            // Publishing to another connection's exclusive queue is
            // allowed, as through AMQP's default exchange.
            Destination::AmqQueue(n) | Destination::ReplyQueue(n) => {
                vhost.queue_handle(n).ok_or_else(|| missing_queue(n))?;
                msg.routing_key = n.clone();
            }
            Destination::TempQueue(x) => msg.routing_key = self.temp_queue(x)?,
            Destination::Topic(k) => {
                msg.exchange = "amq.topic".into();
                msg.routing_key = k.clone();
            }
            Destination::Exchange { name, pattern } => {
                let (_, internal, delayed) = vhost.exchange_info(name)?;
                if internal {
                    return Err(MessagingError::AccessRefused(format!(
                        "cannot publish to internal exchange '{name}' in vhost '{}'",
                        vhost.name
                    ))
                    .into());
                }
                msg.exchange = name.clone();
                msg.routing_key = pattern.clone();
                let delay = f.header("x-delay").and_then(|d| d.trim().parse::<i64>().ok()).filter(|d| *d > 0);
                if let (true, Some(d)) = (delayed, delay) {
                    msg.deliver_at = Some(now.saturating_add(d));
                    let wait = vhost.publish_delayed(&msg)?;
                    return Ok(if msg.persistent { vec![Wait::Delayed(wait)] } else { Vec::new() });
                }
            }
            Destination::Kafka(topic) => {
                let broker = self.server.broker.as_ref().ok_or_else(|| {
                    StompError::Messaging(MessagingError::NotFound("Kafka topics are not available".into()))
                })?;
                broker
                    .topic_or_create_blocking(topic)
                    .map_err(|_| StompError::Messaging(MessagingError::NotFound(format!("no topic '{topic}'"))))?;
                msg.routing_key = f.header("kafka-key").unwrap_or_default().to_string();
                return Ok(vec![Wait::Topic(vhost.publish_to_topic(topic, &msg)?)]);
            }
        }
        // Queues served by other nodes too (forwarded, issue #17).
        let (queues, topics) = vhost.route_handles(&msg.exchange, &msg.routing_key, &msg.headers)?;
        let mut waits = Vec::with_capacity(queues.len() + topics.len());
        for t in &topics {
            waits.push(Wait::Topic(vhost.publish_to_topic(t, &msg)?));
        }
        for q in queues {
            match q.publish(&msg)? {
                HandlePublished::Stored(wait) => waits.push(Wait::Queue(wait)),
                HandlePublished::Volatile => {}
                HandlePublished::Rejected => {
                    return Err(MessagingError::PreconditionFailed(format!(
                        "queue '{}' in vhost '{}' is full and refuses messages",
                        q.name(),
                        vhost.name
                    ))
                    .into());
                }
            }
        }
        Ok(waits)
    }

    /// The connection's reply queue `/temp-queue/<x>`: an exclusive queue,
    /// made and subscribed to (`ack:auto`, subscription id and MESSAGE
    /// destination `/temp-queue/<x>`) on first use. Returns its name.
    pub(super) fn temp_queue(&mut self, x: &str) -> Result<String, StompError> {
        if let Some(q) = self.temp.get(x) {
            return Ok(q.name().to_string());
        }
        if self.temp.len() >= MAX_TEMP_QUEUES {
            return Err(StompError::protocol(format!("more than {MAX_TEMP_QUEUES} temporary queues")));
        }
        let name = format!("amq.gen-stomp-{}", uuid::Uuid::new_v4().simple());
        self.check(Access::Configure, "queue", &name)?;
        let spec = QueueSpec {
            name,
            durable: false,
            exclusive_owner: Some(self.id),
            auto_delete: false,
            arguments: Default::default(),
        };
        let q = self.vhost.declare_queue(spec, false, self.id)?;
        let dest = format!("/temp-queue/{x}");
        let id: Arc<str> = dest.as_str().into();
        let handle = QueueHandle::Local(q.clone());
        self.start_subscription(id, handle, AckMode::Auto, 0, (&dest.clone(), Some(dest)), false, false)?;
        self.temp.insert(x.to_string(), q.clone());
        Ok(q.name().to_string())
    }
}

/// Most temporary queues one connection may make.
const MAX_TEMP_QUEUES: usize = 256;
