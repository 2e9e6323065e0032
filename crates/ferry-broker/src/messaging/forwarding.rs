//! Messages that leave a queue or wait before entering one: dead-lettering
//! (with the front-end's `x-death` rewrite), delayed retries
//! (`x-retry-delays`) and the routing of due delayed messages.
use ferry_util::time::now_ms;

use super::exchange::Headers;
use super::message::{Message, StoredMessage};
use super::queue::{Letter, Queue};
use super::vhost::Vhost;
use super::{Death, MessagingError};

impl Vhost {
    /// Publishes `letters` from `from` to its dead-letter exchange, with
    /// their death recorded in their properties. A missing dead-letter
    /// exchange drops them, as in RabbitMQ.
    pub(crate) fn dead_letter(&self, from: &Queue, letters: Vec<Letter>) {
        let Some(dlx) = from.args.dead_letter_exchange.as_deref() else { return };
        for (m, reason) in letters {
            let routing_key = from.args.dead_letter_routing_key.clone().unwrap_or_else(|| m.routing_key.clone());
            let death = Death {
                queue: from.name(),
                reason,
                exchange: &m.exchange,
                routing_key: &m.routing_key,
                time: now_ms() / 1000,
            };
            let (properties, headers) = match &self.hooks.death {
                Some(hook) => hook(&m.properties, &death),
                None => (m.properties.clone(), Headers::new()),
            };
            let msg = Message {
                exchange: dlx.to_string(),
                routing_key,
                properties,
                body: m.body.clone(),
                persistent: m.persistent,
                headers,
                expires_at: None,
                priority: m.priority,
                deliver_at: None,
                retry_queue: None,
                retries: 0,
            };
            match self.publish_routed(dlx, &msg) {
                Ok(()) => from.stats.dead_lettered(),
                Err(e) => tracing::debug!(queue = %from.name(), error = %e, "dead letter dropped"),
            }
        }
    }

    /// Routes `msg` from `exchange` to its queues and Kafka topics, without
    /// waiting for disk (the caller acknowledges its source afterwards: a
    /// crash can repeat the message, a power loss before the page cache is
    /// written back can lose the copy).
    fn publish_routed(&self, exchange: &str, msg: &Message) -> Result<(), MessagingError> {
        // Queues served by other nodes too (forwarded, issue #17).
        let (queues, topics) = self.route_handles(exchange, &msg.routing_key, &msg.headers)?;
        for q in queues {
            if let Err(e) = q.publish(msg) {
                tracing::warn!(queue = %q.name(), error = %e, "forwarding a message failed");
            }
        }
        for t in topics {
            if let Err(e) = self.publish_to_topic(&t, msg) {
                tracing::warn!(topic = %t, error = %e, "forwarding a message to a topic failed");
            }
        }
        Ok(())
    }

    /// Holds a rejected message of `q` for `delay` ms, then puts it back
    /// into `q` (`x-retry-delays`), with its death recorded as for a
    /// dead letter (`x-death`, reason `rejected`, so consumers can count).
    pub(crate) fn schedule_retry(&self, q: &Queue, m: &StoredMessage, delay: u64) -> crate::Result<()> {
        let death = Death {
            queue: q.name(),
            reason: "rejected",
            exchange: &m.exchange,
            routing_key: &m.routing_key,
            time: now_ms() / 1000,
        };
        let properties = match &self.hooks.death {
            Some(hook) => hook(&m.properties, &death).0,
            None => m.properties.clone(),
        };
        let retry = Message {
            exchange: m.exchange.clone(),
            routing_key: m.routing_key.clone(),
            properties,
            body: m.body.clone(),
            persistent: m.persistent,
            headers: Headers::new(),
            expires_at: None,
            priority: m.priority,
            deliver_at: Some(now_ms().saturating_add(delay.min(i64::MAX as u64) as i64)),
            retry_queue: Some(q.name().to_string()),
            retries: m.retries + 1,
        };
        self.delays.add(&retry)?;
        Ok(())
    }

    /// Routes the delayed messages that are due. A message whose exchange
    /// was deleted meanwhile is dropped.
    pub(crate) fn fire_delayed(&self, now: i64) {
        let due = match self.delays.take_due(now) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(vhost = %self.name, error = %e, "reading delayed messages failed");
                return;
            }
        };
        let mut done = Vec::with_capacity(due.len());
        for m in due {
            let msg = Message {
                exchange: m.exchange.clone(),
                routing_key: m.routing_key.clone(),
                properties: m.properties.clone(),
                body: m.body.clone(),
                persistent: m.persistent,
                headers: m.headers.clone(),
                expires_at: m.expires_at,
                priority: m.priority,
                deliver_at: None,
                retry_queue: None,
                retries: m.retries,
            };
            if let Some(name) = &m.retry_queue {
                // A retry goes straight back to its queue, if it still exists.
                if let Some(q) = self.queue(name)
                    && let Err(e) = q.publish(&msg)
                {
                    tracing::warn!(queue = %name, error = %e, "a delayed retry failed");
                }
            } else if let Err(e) = self.publish_routed(&msg.exchange, &msg) {
                tracing::debug!(exchange = %msg.exchange, error = %e, "delayed message dropped");
            }
            done.push(m.offset);
        }
        if let Err(e) = self.delays.done(&done) {
            tracing::warn!(vhost = %self.name, error = %e, "recording routed delayed messages failed");
        }
    }
}
