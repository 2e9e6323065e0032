//! The metrics registry: what the broker and its front-ends count, exported
//! in Prometheus / OpenMetrics text format (`Broker::encode_metrics`).
//!
//! Hot paths only touch atomics that exist before the first request (one
//! [`ApiStats`] per API, one [`TopicStats`] per topic, one [`QueueStats`]
//! per queue, and each front-end's own counters): no lock, no map lookup, no
//! allocation per request. Everything that can be read off the broker's
//! state (log sizes and offsets, group lag, fsync latency, queue depths) is
//! computed when /metrics is scraped, by `prometheus-client` collectors.
//! Protocol-specific families (AMQP publisher confirms, MQTT sessions and
//! messages) are the front-ends' own collectors, registered with
//! [`Metrics::register_collector`]; this module knows no protocol.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use ferry_util::sync::lock;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::broker::Broker;
use crate::messaging::Vhosts;

/// Upper bounds (seconds) of the request latency buckets: 100 µs to 30 s
/// (a Fetch long poll waits up to its max wait).
pub const REQUEST_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// A latency histogram over fixed buckets, made of atomics.
#[derive(Debug)]
pub struct LatencyHistogram {
    bounds: &'static [f64],
    /// One per bound, plus one for larger values (not cumulative).
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl LatencyHistogram {
    /// An empty histogram over `bounds`: ascending upper bounds in seconds.
    pub fn new(bounds: &'static [f64]) -> LatencyHistogram {
        LatencyHistogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Counts one observation of `d` in the first bucket whose bound is at least `d`.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self.bounds.iter().position(|b| secs <= *b).unwrap_or(self.bounds.len());
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_nanos.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// (sum in seconds, count, per-bucket (bound, count) ending with +Inf).
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let bounds = self.bounds.iter().copied().chain(std::iter::once(f64::INFINITY));
        let buckets = bounds.zip(self.buckets.iter()).map(|(b, c)| (b, c.load(Ordering::Relaxed))).collect();
        (self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9, self.count.load(Ordering::Relaxed), buckets)
    }
}

/// Requests of one API of one protocol.
#[derive(Debug)]
pub struct ApiStats {
    /// The API's name as the protocol spells it, e.g. "Produce"; the `api` label.
    pub name: &'static str,
    /// Request latencies, over [`REQUEST_BUCKETS`].
    pub latency: LatencyHistogram,
}

/// Error counts a front-end keeps: (code, name, count).
pub type ErrorCounts = fn() -> Vec<(i32, &'static str, u64)>;

/// What one protocol front-end counts. Created once per listener.
#[derive(Debug)]
pub struct ProtocolMetrics {
    /// The protocol's name, e.g. "kafka"; the `protocol` label.
    pub protocol: &'static str,
    /// Indexed by the protocol's API number; `None` where there is no API.
    apis: Vec<Option<ApiStats>>,
    connections_open: AtomicI64,
    connections_accepted: AtomicU64,
    errors: Option<ErrorCounts>,
}

impl ProtocolMetrics {
    /// `apis`: (API number, name) of every API the front-end serves.
    pub fn new(protocol: &'static str, apis: &[(usize, &'static str)], errors: Option<ErrorCounts>) -> ProtocolMetrics {
        let len = apis.iter().map(|(i, _)| i + 1).max().unwrap_or(0);
        let mut table: Vec<Option<ApiStats>> = (0..len).map(|_| None).collect();
        for &(i, name) in apis {
            table[i] = Some(ApiStats { name, latency: LatencyHistogram::new(REQUEST_BUCKETS) });
        }
        ProtocolMetrics {
            protocol,
            apis: table,
            connections_open: AtomicI64::new(0),
            connections_accepted: AtomicU64::new(0),
            errors,
        }
    }

    /// One request of API `api` took `d` (unknown APIs are not counted).
    pub fn observe(&self, api: usize, d: Duration) {
        if let Some(Some(s)) = self.apis.get(api) {
            s.latency.observe(d);
        }
    }

    /// Requests of `api` seen so far.
    pub fn requests(&self, api: usize) -> u64 {
        self.apis.get(api).and_then(Option::as_ref).map_or(0, |s| s.latency.count())
    }

    /// Counts a new connection; the guard counts it closed when dropped.
    pub fn connection(self: &Arc<Self>) -> ConnectionGuard {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        self.connections_accepted.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self.clone())
    }
}

/// An open connection, for the `ferry_connections` gauge.
pub struct ConnectionGuard(Arc<ProtocolMetrics>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Traffic of one topic, across its partitions and all protocols.
#[derive(Debug, Default)]
pub struct TopicStats {
    bytes_in: AtomicU64,
    records_in: AtomicU64,
    bytes_out: AtomicU64,
    records_out: AtomicU64,
}

impl TopicStats {
    /// Records appended (counted from the batch headers the log parsed).
    pub fn appended(&self, records: u64, bytes: u64) {
        self.records_in.fetch_add(records, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Record bytes handed to a reader, and the records among them from
    /// the offset it asked for (counted by offsets, not by decoding them).
    pub fn read(&self, bytes: u64, records: u64) {
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
        self.records_out.fetch_add(records, Ordering::Relaxed);
    }

    /// Record bytes appended so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    /// Records appended so far.
    pub fn records_in(&self) -> u64 {
        self.records_in.load(Ordering::Relaxed)
    }

    /// Record bytes handed to readers so far.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }

    /// Records handed to readers so far.
    pub fn records_out(&self) -> u64 {
        self.records_out.load(Ordering::Relaxed)
    }
}

/// What happened to the messages of one queue (AMQP), since it was opened.
/// Its depth, unacknowledged and consumer counts are read off the queue
/// when /metrics is scraped.
#[derive(Debug, Default)]
pub struct QueueStats {
    published: AtomicU64,
    delivered: AtomicU64,
    redelivered: AtomicU64,
    acked: AtomicU64,
    dead_lettered: AtomicU64,
}

impl QueueStats {
    /// A message was stored in the queue (from any exchange, a dead-letter
    /// or delayed route, or a Kafka feed).
    pub fn published(&self) {
        self.published.fetch_add(1, Ordering::Relaxed);
    }

    /// A message was sent to a consumer or a basic.get; `redelivered`: with
    /// the redelivered flag set.
    pub fn delivered(&self, redelivered: bool) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        if redelivered {
            self.redelivered.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Deliveries acknowledged by their consumer (not auto-ack ones).
    pub fn acked(&self, n: u64) {
        self.acked.fetch_add(n, Ordering::Relaxed);
    }

    /// A message left for the queue's dead-letter exchange.
    pub fn dead_lettered(&self) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages stored in the queue so far.
    pub fn published_count(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Deliveries so far, redeliveries included.
    pub fn delivered_count(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Deliveries with the redelivered flag so far.
    pub fn redelivered_count(&self) -> u64 {
        self.redelivered.load(Ordering::Relaxed)
    }

    /// Deliveries acknowledged so far.
    pub fn acked_count(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Messages dead-lettered so far.
    pub fn dead_lettered_count(&self) -> u64 {
        self.dead_lettered.load(Ordering::Relaxed)
    }
}

/// The broker's registry of front-end metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    protocols: Mutex<Vec<Arc<ProtocolMetrics>>>,
    /// The AMQP queues, for per-queue metrics.
    vhosts: Mutex<Option<Weak<Vhosts>>>,
    /// Front-ends' own families by name, encoded in name order (so a scrape
    /// does not depend on which front-end started first).
    collectors: Mutex<BTreeMap<&'static str, Arc<dyn Collector>>>,
}

impl Metrics {
    /// Registers a front-end's metrics (once per listener, at start).
    pub fn register(&self, m: ProtocolMetrics) -> Arc<ProtocolMetrics> {
        let m = Arc::new(m);
        lock(&self.protocols).push(m.clone());
        m
    }

    /// Reports the queues of `vhosts` (the AMQP front-end, at start).
    pub fn register_queues(&self, vhosts: &Arc<Vhosts>) {
        *lock(&self.vhosts) = Some(Arc::downgrade(vhosts));
    }

    /// Registers a front-end's own metric families under `name` (replacing
    /// an earlier collector of that name), encoded at every scrape after the
    /// broker's topic, group and queue families. A front-end registers its
    /// protocol's counters this way, so the registry knows no protocol.
    pub fn register_collector(&self, name: &'static str, collector: Arc<dyn Collector>) {
        lock(&self.collectors).insert(name, collector);
    }

    fn protocols(&self) -> Vec<Arc<ProtocolMetrics>> {
        lock(&self.protocols).clone()
    }

    fn vhosts(&self) -> Option<Arc<Vhosts>> {
        lock(&self.vhosts).as_ref().and_then(Weak::upgrade)
    }

    fn collectors(&self) -> Vec<Arc<dyn Collector>> {
        lock(&self.collectors).values().cloned().collect()
    }
}

/// Renders every metric in OpenMetrics text (which Prometheus scrapes).
pub(crate) fn encode(broker: &Arc<Broker>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(BrokerCollector(broker.clone())));
    for c in broker.metrics().collectors() {
        registry.register_collector(Box::new(Registered(c)));
    }
    registry.register_collector(Box::new(FsyncCollector(broker.clone())));
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::error!(error = %e, "metrics encoding failed");
    }
    out
}

struct BrokerCollector(Arc<Broker>);

impl std::fmt::Debug for BrokerCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BrokerCollector")
    }
}

/// A front-end's collector, shared with the registry that holds it.
#[derive(Debug)]
struct Registered(Arc<dyn Collector>);

impl Collector for Registered {
    fn encode(&self, e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(e)
    }
}

/// The log's fsync latency, last in a scrape.
struct FsyncCollector(Arc<Broker>);

impl std::fmt::Debug for FsyncCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FsyncCollector")
    }
}

impl Collector for FsyncCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let fsync = self.0.fsync_stats().snapshot();
        histogram(
            &mut e,
            "ferry_log_fsync_duration_seconds",
            "Time of a log flush that reached the disk (fsync of data, rolled segments, directory)",
            [(Vec::new(), (fsync.sum_seconds, fsync.count, fsync.buckets))],
        )
    }
}

/// A sample's labels: (name, value) pairs.
pub type Labels = Vec<(&'static str, Cow<'static, str>)>;

/// Encodes one metric family: a descriptor and its samples (nothing when
/// there are no samples). For front-ends' collectors too.
pub fn family<T: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, T)>,
) -> Result<(), std::fmt::Error> {
    let mut samples = samples.into_iter().peekable();
    let Some((_, first)) = samples.peek() else { return Ok(()) };
    let kind = first.metric_type();
    let mut m = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in samples {
        if labels.is_empty() {
            // A metric without labels: `name 1`, not `name{} 1`.
            return v.encode(m);
        }
        v.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, (f64, u64, Vec<(f64, u64)>))>,
) -> Result<(), std::fmt::Error> {
    let mut samples = samples.into_iter().peekable();
    if samples.peek().is_none() {
        return Ok(());
    }
    let mut m = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, (sum, count, buckets)) in samples {
        if labels.is_empty() {
            m.encode_histogram::<Labels>(sum, count, &buckets, None)?;
        } else {
            m.encode_family(&labels)?.encode_histogram::<Labels>(sum, count, &buckets, None)?;
        }
    }
    Ok(())
}

/// A counter sample's value.
pub fn counter(v: u64) -> ConstCounter<u64> {
    ConstCounter::new(v)
}

/// A gauge sample's value.
pub fn gauge(v: i64) -> ConstGauge<i64> {
    ConstGauge::new(v)
}

fn s(v: &str) -> Cow<'static, str> {
    Cow::Owned(v.to_string())
}

impl Collector for BrokerCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let broker = &self.0;
        let protocols = broker.metrics().protocols();
        let apis =
            || {
                protocols.iter().flat_map(|p| {
                    p.apis.iter().flatten().filter(|a| a.latency.count() > 0).map(move |a| {
                        (vec![("protocol", Cow::Borrowed(p.protocol)), ("api", Cow::Borrowed(a.name))], a)
                    })
                })
            };
        family(
            &mut e,
            "ferry_requests",
            "Requests handled, by protocol and API",
            apis().map(|(l, a)| (l, counter(a.latency.count()))),
        )?;
        histogram(
            &mut e,
            "ferry_request_duration_seconds",
            "Time from a request's arrival to its response being ready, by protocol and API",
            apis().map(|(l, a)| (l, a.latency.snapshot())),
        )?;
        let mut errors = Vec::new();
        for p in &protocols {
            for (code, name, n) in p.errors.map(|f| f()).unwrap_or_default() {
                let labels = vec![
                    ("protocol", Cow::Borrowed(p.protocol)),
                    ("code", s(&code.to_string())),
                    ("error", Cow::Borrowed(name)),
                ];
                errors.push((labels, counter(n)));
            }
        }
        family(&mut e, "ferry_errors", "Error codes returned to clients, by protocol and code", errors)?;
        let by_protocol = |p: &Arc<ProtocolMetrics>| vec![("protocol", Cow::Borrowed(p.protocol))];
        family(
            &mut e,
            "ferry_connections",
            "Client connections open now",
            protocols.iter().map(|p| (by_protocol(p), gauge(p.connections_open.load(Ordering::Relaxed)))),
        )?;
        family(
            &mut e,
            "ferry_connections_accepted",
            "Client connections accepted since start",
            protocols.iter().map(|p| (by_protocol(p), counter(p.connections_accepted.load(Ordering::Relaxed)))),
        )?;

        let topics = broker.topics();
        let by_topic = |t: &crate::Topic| vec![("topic", s(&t.name))];
        family(&mut e, "ferry_topics", "Topics", [(Vec::new(), gauge(topics.len() as i64))])?;
        family(
            &mut e,
            "ferry_topic_records_in",
            "Records appended to a topic",
            topics.iter().map(|t| (by_topic(t), counter(t.stats.records_in()))),
        )?;
        family(
            &mut e,
            "ferry_topic_bytes_in",
            "Record batch bytes appended to a topic",
            topics.iter().map(|t| (by_topic(t), counter(t.stats.bytes_in()))),
        )?;
        family(
            &mut e,
            "ferry_topic_bytes_out",
            "Record batch bytes sent to consumers from a topic",
            topics.iter().map(|t| (by_topic(t), counter(t.stats.bytes_out()))),
        )?;
        family(
            &mut e,
            "ferry_topic_records_out",
            "Records sent to consumers from a topic",
            topics.iter().map(|t| (by_topic(t), counter(t.stats.records_out()))),
        )?;
        let partitions: Vec<_> = topics
            .iter()
            .flat_map(|t| t.partitions().into_iter().map(move |p| (t.clone(), p)))
            .map(|(t, p)| (vec![("topic", s(&t.name)), ("partition", s(&p.index.to_string()))], p))
            .collect();
        family(
            &mut e,
            "ferry_partition_log_size_bytes",
            "Bytes of a partition's log on disk",
            partitions.iter().map(|(l, p)| (l.clone(), gauge(p.size_bytes() as i64))),
        )?;
        family(
            &mut e,
            "ferry_partition_high_watermark",
            "Offset after the last record consumers can read",
            partitions.iter().map(|(l, p)| (l.clone(), gauge(p.high_watermark() as i64))),
        )?;
        family(
            &mut e,
            "ferry_partition_log_start_offset",
            "First offset still in a partition's log",
            partitions.iter().map(|(l, p)| (l.clone(), gauge(p.log_start_offset() as i64))),
        )?;

        let groups = broker.groups().list();
        family(&mut e, "ferry_groups", "Consumer groups", [(Vec::new(), gauge(groups.len() as i64))])?;
        family(
            &mut e,
            "ferry_group_members",
            "Members of a consumer group",
            groups.iter().map(|(id, ..)| (vec![("group", s(id))], gauge(broker.group_member_count(id) as i64))),
        )?;
        let mut committed = Vec::new();
        let mut lag = Vec::new();
        let mut lag_sum = Vec::new();
        for (id, ..) in &groups {
            let mut sum = 0;
            for l in broker.group_lag(id) {
                let labels = vec![("group", s(id)), ("topic", s(&l.0)), ("partition", s(&l.1.to_string()))];
                committed.push((labels.clone(), gauge(l.2)));
                if l.4 >= 0 {
                    sum += l.4;
                    lag.push((labels, gauge(l.4)));
                }
            }
            lag_sum.push((vec![("group", s(id))], gauge(sum)));
        }
        family(&mut e, "ferry_group_committed_offset", "A group's committed offset of a partition", committed)?;
        family(&mut e, "ferry_group_lag", "High watermark minus the committed offset", lag)?;
        family(&mut e, "ferry_group_lag_sum", "A group's lag over all its partitions", lag_sum)?;

        if let Some(vhosts) = broker.metrics().vhosts() {
            queue_families(&mut e, &vhosts)?;
        }
        Ok(())
    }
}

/// A queue metric's name and help, and how to read its value.
type QueueGauge = (&'static str, &'static str, fn(&crate::messaging::Queue) -> i64);
type QueueCounter = (&'static str, &'static str, fn(&QueueStats) -> u64);

/// AMQP queues: depth and consumers read off each queue, and its counters.
fn queue_families(e: &mut DescriptorEncoder, vhosts: &Vhosts) -> Result<(), std::fmt::Error> {
    let queues: Vec<_> = vhosts
        .all()
        .into_iter()
        .flat_map(|v| v.queues().into_iter().map(move |q| (vec![("vhost", s(&v.name)), ("queue", s(q.name()))], q)))
        .collect();
    let gauges: [QueueGauge; 3] = [
        ("ferry_queue_messages_ready", "Messages ready for delivery in a queue", |q| q.ready_count() as i64),
        ("ferry_queue_messages_unacked", "Messages delivered and not yet acknowledged", |q| q.unacked_count() as i64),
        ("ferry_queue_consumers", "Consumers of a queue", |q| i64::from(q.consumer_count())),
    ];
    for (name, help, read) in gauges {
        family(e, name, help, queues.iter().map(|(l, q)| (l.clone(), gauge(read(q)))))?;
    }
    let counters: [QueueCounter; 5] = [
        ("ferry_queue_messages_published", "Messages stored in a queue", QueueStats::published_count),
        (
            "ferry_queue_messages_delivered",
            "Messages sent to consumers and basic.get, redeliveries included",
            QueueStats::delivered_count,
        ),
        (
            "ferry_queue_messages_redelivered",
            "Deliveries flagged redelivered (requeued, or possibly delivered before a restart)",
            QueueStats::redelivered_count,
        ),
        (
            "ferry_queue_messages_acked",
            "Deliveries acknowledged by consumers (auto-ack excluded)",
            QueueStats::acked_count,
        ),
        (
            "ferry_queue_messages_dead_lettered",
            "Messages a queue sent to its dead-letter exchange (rejected, expired, over a length or delivery limit)",
            QueueStats::dead_lettered_count,
        ),
    ];
    for (name, help, read) in counters {
        family(e, name, help, queues.iter().map(|(l, q)| (l.clone(), counter(read(&q.stats)))))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_unknown_apis() {
        let m = ProtocolMetrics::new("kafka", &[(0, "Produce"), (3, "Metadata")], None);
        m.observe(0, Duration::from_micros(50));
        m.observe(0, Duration::from_secs(100));
        m.observe(2, Duration::from_millis(1)); // no such API: ignored
        m.observe(99, Duration::from_millis(1));
        assert_eq!((m.requests(0), m.requests(2), m.requests(3)), (2, 0, 0));
        let Some(Some(produce)) = m.apis.first() else { panic!("produce stats") };
        let (sum, count, buckets) = produce.latency.snapshot();
        assert_eq!(count, 2);
        assert!((sum - 100.00005).abs() < 1e-6);
        assert_eq!(buckets.first(), Some(&(0.0001, 1)));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 1)));
    }

    /// A collector that encodes one gauge family with a fixed value.
    #[derive(Debug)]
    struct Fixed(&'static str, i64);

    impl Collector for Fixed {
        fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            family(&mut e, self.0, "a test family", [(Vec::new(), gauge(self.1))])
        }
    }

    #[test]
    fn front_end_collectors_encode_in_name_order_and_replace_by_name() {
        let m = Metrics::default();
        m.register_collector("mqtt", Arc::new(Fixed("m_family", 1)));
        m.register_collector("amqp", Arc::new(Fixed("a_family", 1)));
        m.register_collector("amqp", Arc::new(Fixed("a_family", 2)));
        let mut registry = Registry::default();
        for c in m.collectors() {
            registry.register_collector(Box::new(Registered(c)));
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        let samples: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(samples, ["a_family 2", "m_family 1"]);
    }

    #[test]
    fn connection_guard_counts_open_connections() {
        let m = Arc::new(ProtocolMetrics::new("kafka", &[], None));
        let a = m.connection();
        let b = m.connection();
        drop(a);
        assert_eq!(m.connections_open.load(Ordering::Relaxed), 1);
        assert_eq!(m.connections_accepted.load(Ordering::Relaxed), 2);
        drop(b);
        assert_eq!(m.connections_open.load(Ordering::Relaxed), 0);
    }
}
