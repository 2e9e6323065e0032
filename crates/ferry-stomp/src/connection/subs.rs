//! SUBSCRIBE, UNSUBSCRIBE, ACK and NACK frames (the delivery machinery is
//! in [`crate::subscribe`]).

use std::sync::Arc;

use ferry_broker::messaging::QueueHandle;
use tracing::Instrument;

use super::{Conn, SubHandle};
use crate::codec::{Frame, Version};
use crate::destinations::{self, Destination, SubscribeOptions};
use crate::error::StompError;
use crate::server::Access;
use crate::subscribe::{AckMode, Settle};
use crate::transactions::Pending;

/// Most subscriptions one connection may hold.
const MAX_SUBSCRIPTIONS: usize = 1024;

fn is_true(f: &Frame, name: &str) -> bool {
    f.header(name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

impl Conn {
    /// SUBSCRIBE.
    pub(super) fn subscribe(&mut self, f: &Frame) -> Result<(), StompError> {
        let dest_text =
            f.header("destination").ok_or_else(|| StompError::protocol("SUBSCRIBE without a destination"))?;
        let dest = Destination::parse(dest_text)?;
        // 1.0 makes the id optional: the destination stands in for it.
        let id: Arc<str> = match f.header("id") {
            Some(id) => id.into(),
            None if self.version == Version::V1_0 => dest_text.into(),
            None => return Err(StompError::protocol("SUBSCRIBE without an id")),
        };
        if self.subs.contains_key(&id) {
            return Err(StompError::protocol(format!("duplicate subscription id {id:?}")));
        }
        if self.subs.len() >= MAX_SUBSCRIPTIONS {
            return Err(StompError::protocol(format!("more than {MAX_SUBSCRIPTIONS} subscriptions")));
        }
        let mode = AckMode::parse(f.header("ack"))?;
        let prefetch = match f.header("prefetch-count") {
            None => 0,
            Some(p) => {
                p.trim().parse::<u32>().map_err(|_| StompError::protocol(format!("invalid prefetch-count {p:?}")))?
            }
        };
        let from_start = match f.header("x-stream-offset") {
            None | Some("last" | "next") => false,
            Some("first") => true,
            Some(o) => {
                return Err(StompError::protocol(format!("invalid x-stream-offset {o:?} (first, last or next)")));
            }
        };
        let opts = SubscribeOptions {
            id: f.header("id").unwrap_or_default().to_string(),
            durable: is_true(f, "durable") || is_true(f, "persistent"),
            queue_name: f.header("x-queue-name").map(str::to_string),
            from_start,
        };
        let check = |a, k: &str, n: &str| self.check(a, k, n);
        let resolved =
            destinations::subscribe(&self.vhost, self.server.broker.as_ref(), &dest, &opts, self.id, &check)?;
        let r = self.start_subscription(
            id.clone(),
            resolved.queue.clone(),
            mode,
            prefetch,
            (dest_text, None),
            resolved.private,
            is_true(f, "exclusive"),
        );
        if r.is_err()
            && resolved.private
            && let Some(q) = resolved.queue.as_local()
        {
            let _ = self.vhost.delete_if_present(q);
        }
        if let Some(h) = self.subs.get_mut(&id) {
            h.durable = opts.durable
                && matches!(dest, Destination::Topic(_) | Destination::Exchange { .. } | Destination::Kafka(_));
            if h.durable {
                self.listed.durable(&id);
            }
        }
        r
    }

    /// Registers a subscription and starts its delivery task. `destination`:
    /// the one subscribed to (as listed), and the one MESSAGE frames name
    /// if not the queue's own.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_subscription(
        &mut self,
        id: Arc<str>,
        queue: QueueHandle,
        mode: AckMode,
        prefetch: u32,
        (listed_as, destination): (&str, Option<String>),
        private: bool,
        exclusive: bool,
    ) -> Result<(), StompError> {
        // A forwarded consumer takes at most its prefetch per call.
        let window = u16::try_from(prefetch).unwrap_or(u16::MAX);
        let consumer = queue.add_consumer(exclusive, window)?;
        if !self.deliveries.add(&id, mode, prefetch, destination) {
            queue.remove_consumer(&consumer);
            return Err(StompError::protocol(format!("duplicate subscription id {id:?}")));
        }
        let task =
            tokio::spawn(self.deliveries.clone().run(id.clone(), queue.clone(), consumer.clone()).in_current_span());
        self.listed.subscribed(&id, listed_as, queue.clone(), mode.as_str(), prefetch);
        self.subs.insert(id, SubHandle { queue, consumer, task, private, durable: false });
        Ok(())
    }

    /// UNSUBSCRIBE; with `durable:true` a durable subscription's queue goes too.
    pub(super) fn unsubscribe(&mut self, f: &Frame) -> Result<(), StompError> {
        let id = match (f.header("id"), self.version) {
            (Some(id), _) => id,
            (None, Version::V1_0) => f.header("destination").unwrap_or_default(),
            (None, _) => return Err(StompError::protocol("UNSUBSCRIBE without an id")),
        };
        let h = self.subs.remove(id).ok_or_else(|| StompError::protocol(format!("no subscription {id:?}")))?;
        let (queue, durable) = (h.queue.clone(), h.durable);
        self.end_subscription(id, h);
        if (is_true(f, "durable") || is_true(f, "persistent")) && durable && queue.counts().1 == 0 {
            self.check(Access::Configure, "queue", queue.name())?;
            self.vhost.delete_queue_handle(queue.name(), false, false, self.id)?;
        }
        Ok(())
    }

    /// Stops a subscription's task, hands its deliveries back and drops
    /// its private queue.
    pub(super) fn end_subscription(&mut self, id: &str, h: SubHandle) {
        h.task.abort();
        self.deliveries.remove(id);
        self.listed.unsubscribed(id);
        // The last consumer of a local auto-delete queue, or the
        // subscription's own (local, exclusive) queue.
        let last = h.queue.remove_consumer(&h.consumer);
        let own = if h.private { h.queue.as_local().cloned() } else { None };
        if let Some(q) = last.or(own)
            && let Err(e) = self.vhost.delete_if_present(&q)
        {
            tracing::warn!(queue = %h.queue.name(), error = %e, "deleting a subscription queue failed");
        }
    }

    /// ACK or NACK (NACK needs 1.1).
    pub(super) fn settle(&mut self, f: &Frame, nack: bool) -> Result<(), StompError> {
        if nack && self.version == Version::V1_0 {
            return Err(StompError::protocol("NACK is not a STOMP 1.0 command"));
        }
        // 1.2 acknowledges by the MESSAGE's `ack` header, sent back as `id`;
        // 1.0 and 1.1 by its `message-id`.
        let ack_id = match self.version {
            Version::V1_2 => f.header("id").or_else(|| f.header("message-id")),
            _ => f.header("message-id").or_else(|| f.header("id")),
        }
        .ok_or_else(|| StompError::protocol(format!("{} without an id", f.command)))?;
        let how = if !nack {
            Settle::Ack
        } else if f.header("requeue").is_some_and(|v| v.eq_ignore_ascii_case("false")) {
            Settle::Discard
        } else {
            Settle::Requeue
        };
        match f.header("transaction") {
            Some(tx) => self.txns.push(tx, Pending::Settle(ack_id.to_string(), how)),
            None => self.deliveries.settle(ack_id, how),
        }
    }
}
