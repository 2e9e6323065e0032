//! The commands clients send, numbered for the request metrics
//! (`ferry_requests_total{protocol="redis", api="XADD"}`), and what the
//! Redis front-end counts beside them ([`RedisStats`], registered as a
//! collector with the broker's registry).

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_broker::metrics::{Metrics, counter, family};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

/// Counted commands; the position is the metrics API number. Others
/// (INFO, CLIENT, ...) are served but not counted.
const COMMANDS: &[&str] = &[
    "XADD",
    "XREAD",
    "XREADGROUP",
    "XACK",
    "XRANGE",
    "XREVRANGE",
    "XLEN",
    "XPENDING",
    "XCLAIM",
    "XAUTOCLAIM",
    "XGROUP",
    "XINFO",
    "XDEL",
    "XTRIM",
    "LPUSH",
    "RPUSH",
    "LPOP",
    "RPOP",
    "BLPOP",
    "BRPOP",
    "LMOVE",
    "BLMOVE",
    "LLEN",
    "LRANGE",
    "LINDEX",
    "PUBLISH",
    "SPUBLISH",
    "SUBSCRIBE",
    "PSUBSCRIBE",
    "SSUBSCRIBE",
    "HELLO",
    "AUTH",
    "PING",
];

/// (API number, name) of every counted command, for `ProtocolMetrics::new`.
pub fn command_names() -> Vec<(usize, &'static str)> {
    COMMANDS.iter().enumerate().map(|(i, &name)| (i, name)).collect()
}

/// The API number of an upper-case command name; `usize::MAX` (not counted) for others.
pub fn command_index(command: &str) -> usize {
    COMMANDS.iter().position(|&c| c == command).unwrap_or(usize::MAX)
}

/// What the Redis front-end counts beside its requests.
#[derive(Debug, Default)]
pub struct RedisStats {
    stream_entries: AtomicU64,
    group_deliveries: AtomicU64,
    group_acks: AtomicU64,
    list_pushes: AtomicU64,
    list_pops: AtomicU64,
    published: AtomicU64,
    pushed: AtomicU64,
    protocol_errors: AtomicU64,
}

impl RedisStats {
    /// New counters, encoded by `metrics` at every scrape.
    pub fn register(metrics: &Metrics) -> Arc<RedisStats> {
        let stats = Arc::new(RedisStats::default());
        metrics.register_collector("redis", stats.clone());
        stats
    }

    /// Stream entries appended by XADD.
    pub fn stream_entries(&self, n: u64) {
        self.stream_entries.fetch_add(n, Ordering::Relaxed);
    }

    /// Entries handed to consumer-group readers (XREADGROUP, XCLAIM, XAUTOCLAIM).
    pub fn group_deliveries(&self, n: u64) {
        self.group_deliveries.fetch_add(n, Ordering::Relaxed);
    }

    /// Entries acknowledged by XACK.
    pub fn group_acks(&self, n: u64) {
        self.group_acks.fetch_add(n, Ordering::Relaxed);
    }

    /// Elements pushed onto lists.
    pub fn list_pushes(&self, n: u64) {
        self.list_pushes.fetch_add(n, Ordering::Relaxed);
    }

    /// Elements popped (or moved) off lists.
    pub fn list_pops(&self, n: u64) {
        self.list_pops.fetch_add(n, Ordering::Relaxed);
    }

    /// PUBLISH / SPUBLISH calls.
    pub fn published(&self) {
        self.published.fetch_add(1, Ordering::Relaxed);
    }

    /// Pub/sub messages written to subscribers.
    pub fn pushed(&self, n: u64) {
        self.pushed.fetch_add(n, Ordering::Relaxed);
    }

    /// Connections closed for input that is not RESP.
    pub fn protocol_error(&self) {
        self.protocol_errors.fetch_add(1, Ordering::Relaxed);
    }
}

impl Collector for RedisStats {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = |a: &AtomicU64| counter(a.load(Ordering::Relaxed));
        let kind = |pairs: [(&'static str, &AtomicU64); 2]| pairs.map(|(k, a)| (vec![("op", Cow::Borrowed(k))], c(a)));
        family(
            &mut e,
            "ferry_redis_stream_entries",
            "Redis stream entries appended (XADD)",
            [(vec![], c(&self.stream_entries))],
        )?;
        family(
            &mut e,
            "ferry_redis_group_entries",
            "Redis consumer-group entries, by operation (deliver or ack)",
            kind([("deliver", &self.group_deliveries), ("ack", &self.group_acks)]),
        )?;
        family(
            &mut e,
            "ferry_redis_list_elements",
            "Redis list elements, by operation (push or pop)",
            kind([("push", &self.list_pushes), ("pop", &self.list_pops)]),
        )?;
        family(
            &mut e,
            "ferry_redis_pubsub_messages",
            "Redis pub/sub messages, by operation (publish or push to a subscriber)",
            kind([("publish", &self.published), ("push", &self.pushed)]),
        )?;
        family(
            &mut e,
            "ferry_redis_protocol_errors",
            "Redis connections closed for input that is not RESP",
            [(vec![], c(&self.protocol_errors))],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_numbered_by_position() {
        assert_eq!(command_index("XADD"), 0);
        assert_eq!(command_index("GET"), usize::MAX);
        assert_eq!(command_names().len(), COMMANDS.len());
    }
}
