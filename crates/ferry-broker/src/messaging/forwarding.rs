//! Messages that leave a queue or wait before entering one: dead-lettering
//! (with the front-end's `x-death` rewrite), delayed retries
//! (`x-retry-delays`) and the routing of due delayed messages.
use ferry_util::time::now_ms;

use super::exchange::Headers;
use super::message::{Message, StoredMessage};
use super::queue::{Letter, Queue};
use super::queue_handle::PublishWait;
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
    /// In a cluster the retry waits in the replicated delay queue (as
    /// delayed messages do: it survives the death of `q`'s node); the
    /// returned wait then says when it is safe there, and `q` must keep the
    /// message until it is. `None`: held in the node-local store already.
    pub(crate) fn schedule_retry(
        &self,
        q: &Queue,
        m: &StoredMessage,
        delay: u64,
    ) -> Result<Option<PublishWait>, MessagingError> {
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
        if self.delays_replicated() {
            return self.publish_delayed(&retry).map(Some);
        }
        self.delays.add(&retry)?;
        Ok(None)
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use crate::broker::{Broker, BrokerConfig};
    use crate::messaging::{Destination, Exchange, ExchangeKind, HeaderValue, Headers, Hooks, QueueSpec, Vhosts};
    use crate::metadata::{AmqpRequest, Arguments, ControllerRequest, PeerReply, PeerRequest, QueueType};

    /// A quorum queue served here only to another node's consumer (never
    /// looked up through a vhost on this node: declared through another
    /// node, consumed through one) dead-letters a forwarded reject through
    /// its vhost, with the front-end's `x-death` rewrite. Before, it had no
    /// vhost here and dropped the dead letter.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_forwarded_reject_dead_letters_with_the_death_hook() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(BrokerConfig { data_dir: dir.path().to_path_buf(), ..Default::default() }).unwrap();
        crate::testing::install(&broker);
        let death: crate::messaging::DeathHook = Arc::new(|_props: &[u8], d: &crate::messaging::Death<'_>| {
            (Bytes::from(format!("died in {} ({})", d.queue, d.reason)), Headers::new())
        });
        let hooks = Hooks { broker: Some(broker.clone()), death: Some(death), ..Default::default() };
        let vhosts = Vhosts::open(dir.path(), Default::default(), &["/".to_string()], hooks).unwrap();
        let vhost = vhosts.get("/").unwrap();
        let dlx = Exchange {
            name: "dlx".into(),
            kind: ExchangeKind::Fanout,
            durable: true,
            auto_delete: false,
            internal: false,
            arguments: Headers::new(),
            bindings: Vec::new(),
            delayed: false,
        };
        vhost.declare_exchange(dlx, false).unwrap();
        let dead = QueueSpec {
            name: "dead".into(),
            durable: true,
            exclusive_owner: None,
            auto_delete: false,
            arguments: Headers::new(),
        };
        let dead = vhost.declare_queue(dead, false, 1).unwrap();
        vhost.bind("dlx", Destination::Queue("dead".into()), "", Headers::new(), 1).unwrap();
        // `orders` declared as another node would: straight to the controller.
        let args: Headers = [("x-dead-letter-exchange".to_string(), HeaderValue::Str("dlx".into()))].into();
        let declare = ControllerRequest::Amqp(AmqpRequest::DeclareQueue {
            vhost: "/".into(),
            name: "orders".into(),
            auto_delete: false,
            arguments: Arguments(args),
            queue_type: QueueType::Quorum { group_size: None },
        });
        broker.submit_change(declare).await.unwrap();

        let call = |request| broker.clone().serve_queue_peer(request);
        call(crate::messaging::remote_queue::tests::publish(0, 1, None)).await.unwrap();
        let take = PeerRequest::QueueTake {
            vhost: "/".into(),
            queue: "orders".into(),
            session: "node2-session".into(),
            max: 1,
            wait_ms: 0,
            consumer: Some((7, false)),
            number: Some(0),
        };
        let PeerReply::QueueDeliveries { deliveries, .. } = call(take).await.unwrap() else { panic!("no deliveries") };
        let offsets: Vec<u64> = deliveries.iter().map(|d| d.offset).collect();
        assert_eq!(offsets.len(), 1);
        let settle = PeerRequest::QueueSettle {
            vhost: "/".into(),
            queue: "orders".into(),
            session: "node2-session".into(),
            acks: Vec::new(),
            requeues: Vec::new(),
            rejects: offsets,
        };
        call(settle).await.unwrap();

        let letter = dead.take(None).unwrap().expect("the dead letter");
        assert_eq!(letter.message.body, Bytes::from("m0"));
        assert_eq!(letter.message.properties, Bytes::from("died in orders (rejected)"));
        vhosts.shutdown();
    }
}
