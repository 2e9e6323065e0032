//! The methods clients send, numbered for the request metrics
//! (`ferry_requests_total{protocol="amqp", api="basic.publish"}`).
//!
//! The handshake (connection.start-ok, tune-ok, open) is not counted: it
//! happens once per connection, counted by `ferry_connections_accepted`.
//!
//! [`AmqpStats`] is what AMQP counts beside requests and queues (publisher
//! confirms); it registers itself as a collector with the broker's registry.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_broker::metrics::{Metrics, counter, family};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

/// (class id, method id, name) of every method a client sends after the
/// handshake; the position in this table is the metrics API number.
const METHODS: &[(u16, u16, &str)] = &[
    (10, 50, "connection.close"),
    (10, 51, "connection.close-ok"),
    (10, 60, "connection.blocked"),
    (10, 61, "connection.unblocked"),
    (10, 70, "connection.update-secret"),
    (20, 10, "channel.open"),
    (20, 20, "channel.flow"),
    (20, 21, "channel.flow-ok"),
    (20, 40, "channel.close"),
    (20, 41, "channel.close-ok"),
    (30, 10, "access.request"),
    (40, 10, "exchange.declare"),
    (40, 20, "exchange.delete"),
    (40, 30, "exchange.bind"),
    (40, 40, "exchange.unbind"),
    (50, 10, "queue.declare"),
    (50, 20, "queue.bind"),
    (50, 30, "queue.purge"),
    (50, 40, "queue.delete"),
    (50, 50, "queue.unbind"),
    (60, 10, "basic.qos"),
    (60, 20, "basic.consume"),
    (60, 30, "basic.cancel"),
    (60, 40, "basic.publish"),
    (60, 70, "basic.get"),
    (60, 80, "basic.ack"),
    (60, 90, "basic.reject"),
    (60, 100, "basic.recover-async"),
    (60, 110, "basic.recover"),
    (60, 120, "basic.nack"),
    (85, 10, "confirm.select"),
    (90, 10, "tx.select"),
    (90, 20, "tx.commit"),
    (90, 30, "tx.rollback"),
];

/// The API number of basic.publish, observed when its content is complete.
pub const BASIC_PUBLISH: usize = 23;

/// (API number, name) of every counted method, for `ProtocolMetrics::new`.
pub fn method_names() -> Vec<(usize, &'static str)> {
    METHODS.iter().enumerate().map(|(i, &(_, _, name))| (i, name)).collect()
}

/// The API number of a method; `usize::MAX` (not counted) if it is not one.
pub fn method_index(class: u16, method: u16) -> usize {
    METHODS.iter().position(|&(c, m, _)| c == class && m == method).unwrap_or(usize::MAX)
}

/// What the AMQP front-end counts beside its requests and queues.
#[derive(Debug, Default)]
pub struct AmqpStats {
    confirms_acked: AtomicU64,
    confirms_nacked: AtomicU64,
}

impl AmqpStats {
    /// New counters, encoded by `metrics` at every scrape (replacing an
    /// earlier AMQP front-end's).
    pub fn register(metrics: &Metrics) -> Arc<AmqpStats> {
        let stats = Arc::new(AmqpStats::default());
        metrics.register_collector("amqp", stats.clone());
        stats
    }

    /// A publish in confirm mode was confirmed: acked (`ok`) or nacked.
    pub fn confirmed(&self, ok: bool) {
        let c = if ok { &self.confirms_acked } else { &self.confirms_nacked };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

impl Collector for AmqpStats {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        family(
            &mut e,
            "ferry_amqp_publisher_confirms",
            "Publishes in confirm mode confirmed to their publisher, by result (ack or nack)",
            [("ack", &self.confirms_acked), ("nack", &self.confirms_nacked)]
                .map(|(r, c)| (vec![("result", Cow::Borrowed(r))], counter(c.load(Ordering::Relaxed)))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_numbered_by_position() {
        assert_eq!(METHODS[BASIC_PUBLISH].2, "basic.publish");
        assert_eq!(method_index(60, 40), BASIC_PUBLISH);
        assert_eq!(method_index(50, 10), 15);
        assert_eq!(method_index(10, 11), usize::MAX);
        assert_eq!(method_names().len(), METHODS.len());
    }
}
