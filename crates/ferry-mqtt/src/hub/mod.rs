//! The MQTT broker state shared by every connection, behind one facade
//! ([`Hub`]): the session registry (`sessions`: takeover, expiry,
//! persistence), the subscription index (`subscriptions`, shared
//! subscriptions included), retained messages (`retained`), and routing a
//! published message to its subscribers and to Kafka topics by bridge rules
//! (`routing`).
//!
//! Lock order: the session map, then a session, then the subscription tree.

mod cluster;
mod import;
pub mod packed;
mod qos2;
mod retained;
mod routing;
mod session_queue;
mod sessions;
mod staged;
mod subscriptions;
mod wills;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use crate::metrics::{MqttGauges, MqttStats};
use crate::topic_tree::TopicTree;
use ferry_broker::kv_store::KvStore;
use ferry_broker::metadata::MqttState;
use ferry_broker::metrics::ProtocolMetrics;
use ferry_broker::queue::RecordQueueStore;
use ferry_broker::{Broker, BrokerError};
use ferry_util::sync::lock;

pub use routing::{Routed, Wait};
pub use session_queue::{QueueReader, Queued, SessionQueue, Taken};
pub use sessions::delivery_from_record;
pub use staged::{BatchStore, Staged};
use subscriptions::SubscriptionIndex;
pub use subscriptions::split_shared;
pub use wills::will_def;

use crate::config::MqttConfig;
use crate::session::Session;

/// The MQTT front-end's shared state: sessions, subscriptions, retained
/// messages, the stores they persist to, and the metrics they feed.
pub struct Hub {
    /// The broker the stores and Kafka bridge rules write to.
    pub broker: Arc<Broker>,
    /// The front-end's configuration (limits, users, ACLs, bridge rules).
    pub config: MqttConfig,
    sessions: Mutex<HashMap<Arc<str>, Arc<Session>>>,
    tree: RwLock<SubscriptionIndex>,
    /// Per shared subscription (full filter), the next member's turn.
    shared_next: Mutex<HashMap<Arc<str>, usize>>,
    /// The image's MQTT state the sessions were last synchronised with.
    synced: Mutex<Arc<MqttState>>,
    /// Sessions whose node died with their client connected, by client id:
    /// when this node noticed, and whether their will went out (`wills`).
    orphans: Mutex<HashMap<String, (std::time::Instant, bool)>>,
    /// Clean sessions' wills of dead nodes this node published, as
    /// (client id, node, connection), until their records are cleared.
    clean_wills_fired: Mutex<std::collections::HashSet<(String, i32, u64)>>,
    /// The next connection id for a clean session's recorded will (from
    /// the start time: unique across this node's restarts).
    next_conn: AtomicU64,
    /// QoS 2 packet ids received and not yet released, per persistent
    /// session (value: the ids, u16 big-endian), so a restart keeps
    /// exactly-once for exchanges half done.
    qos2: Arc<KvStore>,
    /// Outbound QoS 2 ids released (PUBREL sent) and not completed, per
    /// persistent session (value: per id, u16 and the message's queue
    /// offset, u64, big-endian; `u64::MAX` for none), so PUBREL goes out
    /// again after a restart.
    released: Arc<KvStore>,
    queues: RecordQueueStore,
    next_queue_id: AtomicU64,
    /// Messages received, sent and dropped (queue limit reached, or QoS 0
    /// for an offline session); sessions, subscriptions and retained
    /// messages are read off the hub when /metrics is scraped.
    pub stats: Arc<MqttStats>,
    /// Connections and packets, for /metrics.
    pub protocol: Arc<ProtocolMetrics>,
}

impl Hub {
    /// Opens the node-local stores (`<data>/internal/mqtt/...`), imports
    /// an older version's sessions and retained messages into the cluster
    /// metadata, and restores persistent sessions from the metadata.
    pub fn open(broker: Arc<Broker>, config: MqttConfig) -> Result<Arc<Hub>, BrokerError> {
        let qos2 = broker.kv_store("mqtt/qos2-received")?;
        let released = broker.kv_store("mqtt/qos2-released")?;
        let queues = broker.record_queue_store("mqtt/sessions")?;
        let stats = MqttStats::register(broker.metrics());
        let protocol = broker.metrics().register(ProtocolMetrics::new("mqtt", crate::packet::TYPE_NAMES, None));
        let hub = Hub {
            broker,
            config,
            sessions: Mutex::new(HashMap::new()),
            tree: RwLock::new(TopicTree::default()),
            shared_next: Mutex::new(HashMap::new()),
            synced: Mutex::new(Arc::default()),
            orphans: Mutex::default(),
            clean_wills_fired: Mutex::default(),
            next_conn: AtomicU64::new(u64::try_from(ferry_util::time::now_ms()).unwrap_or(0) << 16),
            qos2,
            released,
            queues,
            next_queue_id: AtomicU64::new(1),
            stats,
            protocol,
        };
        hub.import_old_stores()?;
        hub.restore_sessions()?;
        let hub = Arc::new(hub);
        let weak = Arc::downgrade(&hub);
        hub.broker.set_mqtt_router(Box::new(move |message, origin| {
            if let Some(hub) = weak.upgrade() {
                hub.route_from_peer(message, origin);
            }
        }));
        let weak = Arc::downgrade(&hub);
        hub.stats.set_gauges(Box::new(move || weak.upgrade().map(|h| h.gauges()).unwrap_or_default()));
        Ok(hub)
    }

    /// Sessions by state, subscriptions and retained messages, for /metrics.
    fn gauges(&self) -> MqttGauges {
        let sessions: Vec<Arc<Session>> = lock(&self.sessions).values().cloned().collect();
        let mut g = MqttGauges { retained: self.retained_count() as u64, ..MqttGauges::default() };
        for s in sessions {
            let st = s.lock();
            if st.online.is_some() {
                g.sessions_connected += 1;
            } else {
                g.sessions_offline += 1;
            }
            g.subscriptions += st.subscriptions.len() as u64;
        }
        g
    }
}
