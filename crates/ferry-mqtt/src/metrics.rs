//! What the MQTT front-end counts beside its requests: PUBLISH packets by
//! QoS in and out, messages dropped, and gauges (sessions, subscriptions,
//! retained messages) read off the hub at scrape time. [`MqttStats`] is a
//! collector registered with the broker's registry.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use ferry_broker::metrics::{Labels, Metrics, counter, family, gauge};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;

/// The MQTT front-end's state, read when /metrics is scraped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MqttGauges {
    /// Sessions with a connection.
    pub sessions_connected: u64,
    /// Persistent sessions without one (kept until they expire).
    pub sessions_offline: u64,
    /// Subscriptions over all sessions.
    pub subscriptions: u64,
    /// Retained messages stored.
    pub retained: u64,
}

/// Reads [`MqttGauges`] off the MQTT front-end's state.
pub type MqttGaugeFn = Box<dyn Fn() -> MqttGauges + Send + Sync>;

/// What the MQTT front-end counts beside its requests: application messages
/// by QoS, and messages dropped.
#[derive(Default)]
pub struct MqttStats {
    /// PUBLISH packets received from clients, by QoS 0..=2.
    received: [AtomicU64; 3],
    /// PUBLISH packets sent to clients, by QoS 0..=2.
    sent: [AtomicU64; 3],
    dropped: AtomicU64,
    gauges: OnceLock<MqttGaugeFn>,
}

impl std::fmt::Debug for MqttStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttStats").field("dropped", &self.dropped).finish_non_exhaustive()
    }
}

impl MqttStats {
    /// New counters, encoded by `metrics` at every scrape (replacing an
    /// earlier MQTT front-end's).
    pub fn register(metrics: &Metrics) -> Arc<MqttStats> {
        let stats = Arc::new(MqttStats::default());
        metrics.register_collector("mqtt", stats.clone());
        stats
    }

    /// Sets where the gauges are read from (once; later calls are ignored).
    pub fn set_gauges(&self, f: MqttGaugeFn) {
        let _ = self.gauges.set(f);
    }

    /// A PUBLISH of QoS `qos` came from a client.
    pub fn received(&self, qos: u8) {
        if let Some(c) = self.received.get(usize::from(qos)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A PUBLISH of QoS `qos` went to a client.
    pub fn sent(&self, qos: u8) {
        if let Some(c) = self.sent.get(usize::from(qos)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A message for a session was dropped (queue limit reached, or QoS 0
    /// for a session without a connection).
    pub fn dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages dropped so far (see [`MqttStats::dropped`]).
    pub fn dropped_count(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn gauges(&self) -> MqttGauges {
        self.gauges.get().map(|f| f()).unwrap_or_default()
    }
}

/// MQTT sessions, subscriptions, retained messages and message counts.
impl Collector for MqttStats {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        families(&mut e, self)
    }
}

fn families(e: &mut DescriptorEncoder, m: &MqttStats) -> Result<(), std::fmt::Error> {
    const QOS: [&str; 3] = ["0", "1", "2"];
    let g = m.gauges();
    family(
        e,
        "ferry_mqtt_sessions",
        "MQTT sessions, connected or persistent and offline",
        [
            (vec![("state", Cow::Borrowed("connected"))], gauge(g.sessions_connected as i64)),
            (vec![("state", Cow::Borrowed("offline"))], gauge(g.sessions_offline as i64)),
        ],
    )?;
    family(
        e,
        "ferry_mqtt_subscriptions",
        "MQTT subscriptions of all sessions",
        [(Vec::new(), gauge(g.subscriptions as i64))],
    )?;
    family(
        e,
        "ferry_mqtt_retained_messages",
        "MQTT retained messages stored",
        [(Vec::new(), gauge(g.retained as i64))],
    )?;
    let by_qos = |counts: &[AtomicU64; 3]| -> Vec<(Labels, ConstCounter<u64>)> {
        QOS.iter()
            .zip(counts)
            .map(|(q, c)| (vec![("qos", Cow::Borrowed(*q))], counter(c.load(Ordering::Relaxed))))
            .collect()
    };
    family(
        e,
        "ferry_mqtt_messages_received",
        "MQTT PUBLISH packets received from clients, by QoS",
        by_qos(&m.received),
    )?;
    family(e, "ferry_mqtt_messages_sent", "MQTT PUBLISH packets sent to clients, by QoS", by_qos(&m.sent))?;
    family(
        e,
        "ferry_mqtt_messages_dropped",
        "Messages not queued for an MQTT session: its queue limit was reached, or QoS 0 while it was offline",
        [(Vec::new(), counter(m.dropped_count()))],
    )?;
    Ok(())
}
