//! The frames clients send, numbered for the request metrics
//! (`ferry_requests_total{protocol="stomp", api="SEND"}`), and what the
//! STOMP front-end counts beside them ([`StompStats`], registered as a
//! collector with the broker's registry).
//!
//! CONNECT / STOMP are counted too: a connection sends one.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_broker::metrics::{Metrics, counter, family, gauge};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use crate::registry::Registry;

/// Client commands; the position is the metrics API number.
const COMMANDS: &[&str] =
    &["CONNECT", "STOMP", "SEND", "SUBSCRIBE", "UNSUBSCRIBE", "ACK", "NACK", "BEGIN", "COMMIT", "ABORT", "DISCONNECT"];

/// (API number, name) of every counted command, for `ProtocolMetrics::new`.
pub fn command_names() -> Vec<(usize, &'static str)> {
    COMMANDS.iter().enumerate().map(|(i, &name)| (i, name)).collect()
}

/// The API number of a command; `usize::MAX` (not counted) for others.
pub fn command_index(command: &str) -> usize {
    COMMANDS.iter().position(|&c| c == command).unwrap_or(usize::MAX)
}

/// What the STOMP front-end counts beside its requests.
#[derive(Debug, Default)]
pub struct StompStats {
    /// Open subscriptions are counted from it (`ferry_stomp_subscriptions`).
    registry: Arc<Registry>,
    delivered: AtomicU64,
    acked: AtomicU64,
    nacked: AtomicU64,
    errors: AtomicU64,
    receipts: AtomicU64,
}

impl StompStats {
    /// New counters, encoded by `metrics` at every scrape, with the
    /// subscriptions open in `registry`.
    pub fn register(metrics: &Metrics, registry: Arc<Registry>) -> Arc<StompStats> {
        let stats = Arc::new(StompStats { registry, ..Default::default() });
        metrics.register_collector("stomp", stats.clone());
        stats
    }

    /// A MESSAGE frame was written.
    pub fn delivered(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }

    /// Deliveries settled by ACK.
    pub fn acked(&self, n: u64) {
        self.acked.fetch_add(n, Ordering::Relaxed);
    }

    /// Deliveries settled by NACK.
    pub fn nacked(&self, n: u64) {
        self.nacked.fetch_add(n, Ordering::Relaxed);
    }

    /// An ERROR frame was sent (and its connection closed).
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A RECEIPT frame was sent.
    pub fn receipt(&self) {
        self.receipts.fetch_add(1, Ordering::Relaxed);
    }
}

impl Collector for StompStats {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = |a: &AtomicU64| counter(a.load(Ordering::Relaxed));
        family(
            &mut e,
            "ferry_stomp_deliveries",
            "STOMP MESSAGE frames written to subscribers",
            [(vec![], c(&self.delivered))],
        )?;
        family(
            &mut e,
            "ferry_stomp_settled",
            "STOMP deliveries settled by the client, by frame (ACK or NACK)",
            [("ACK", &self.acked), ("NACK", &self.nacked)].map(|(f, a)| (vec![("frame", Cow::Borrowed(f))], c(a))),
        )?;
        family(
            &mut e,
            "ferry_stomp_errors",
            "STOMP ERROR frames sent (each closes its connection)",
            [(vec![], c(&self.errors))],
        )?;
        family(&mut e, "ferry_stomp_receipts", "STOMP RECEIPT frames sent", [(vec![], c(&self.receipts))])?;
        family(
            &mut e,
            "ferry_stomp_subscriptions",
            "STOMP subscriptions open on all connections",
            [(vec![], gauge(self.registry.subscription_count() as i64))],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_numbered_by_position() {
        assert_eq!(command_index("SEND"), 2);
        assert_eq!(command_index("MESSAGE"), usize::MAX);
        assert_eq!(command_names().len(), COMMANDS.len());
    }
}
