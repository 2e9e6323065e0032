//! The broker: the topics and partitions this node hosts, as the cluster
//! metadata image places them, and the broker-wide config defaults.
//!
//! Layout: `<data>/cluster.json`, and per hosted topic
//! `<data>/topics/<name>/topic.json` with one log directory per local
//! partition (`<data>/topics/<name>/<partition>/`); the internal topics
//! `__consumer_offsets` and `__transaction_state` are hosted the same way.
//! `broker-config.json` and `producer-ids.json` of a pre-cluster directory
//! are only read, to import them into a new cluster; its node-local
//! `internal/__consumer_offsets` and `internal/__transaction_state` logs
//! are imported once into the internal topics (see `coordinator_load.rs`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use ferry_log::{EngineConfig, LogManager};
use ferry_util::sync::read;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{BrokerError, Result};
use crate::group::{CoordinatorConfig, GroupCoordinator};
use crate::metadata::{
    Controller, ControllerStatus, CoordinatorKind, GROUP_TOPIC, MetadataImage, MetadataRecord, PeerReply, PeerRequest,
    TXN_TOPIC,
};
use crate::metrics::Metrics;
use crate::partition::Partition;
use crate::producer::{self, ProducerIds};
use crate::topic::{Topic, TopicFile};
use crate::topic_config::{self, BrokerDefaults, TopicSettings};
use crate::txn::{TxnConfig, TxnCoordinator};

/// Settings of the broker process.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// This node's id (`node.id`), reported in Metadata.
    pub node_id: i32,
    /// Directory holding the topics' partition logs and the broker's state.
    pub data_dir: PathBuf,
    /// `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// `num.partitions`: partitions of auto-created topics and of
    /// CreateTopics requests that leave the count to the broker.
    pub default_partitions: i32,
    /// Broker-wide topic config defaults from the config file (topic config
    /// names, e.g. `flush.messages`).
    pub topic_defaults: BTreeMap<String, String>,
    /// `producer.id.expiration.ms`: idle idempotent producers are forgotten.
    pub producer_id_expiration_ms: u64,
    /// Most partitions one topic may have (each is a directory and a log).
    pub max_partitions_per_topic: i32,
    /// Group coordinator settings.
    pub groups: CoordinatorConfig,
    /// Transaction coordinator settings.
    pub txns: TxnConfig,
    /// Storage engine settings shared by every log.
    pub engine: EngineConfig,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            node_id: 1,
            data_dir: PathBuf::from("data"),
            auto_create_topics: true,
            default_partitions: 1,
            topic_defaults: BTreeMap::new(),
            producer_id_expiration_ms: 86_400_000,
            max_partitions_per_topic: 10_000,
            groups: CoordinatorConfig::default(),
            txns: TxnConfig::default(),
            engine: EngineConfig::default(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct ClusterFile {
    cluster_id: String,
}

/// Hands an MQTT message routed from another node (front-end encoding,
/// publisher's client id) to this node's subscribers.
pub type MqttRouter = Box<dyn Fn(&[u8], Option<&str>) + Send + Sync>;

/// The broker: the topics and partitions the cluster metadata places on this
/// node, groups, producers and transactions, over one storage engine.
/// Shared by every front-end (`Arc`).
///
/// The metadata image is the truth: local state changes only in
/// [`Broker::apply_image`], and every admin change goes through the
/// [`Controller`] (see `admin.rs`).
pub struct Broker {
    pub(crate) config: BrokerConfig,
    cluster_id: String,
    pub(crate) logs: LogManager,
    /// Topics hosted here, by name.
    pub(crate) topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Topic directories found at open, for [`Broker::import_records`].
    found: BTreeMap<String, TopicFile>,
    /// Producer ids of a pre-cluster data directory (`producer-ids.json`).
    legacy_producer_ids: i64,
    /// The data directory's high-watermark checkpoint (`hw_checkpoint.rs`).
    pub(crate) hw_checkpoints: crate::hw_checkpoint::Checkpoints,
    /// Dynamic defaults of a pre-cluster data directory (`broker-config.json`).
    legacy_defaults: BTreeMap<String, String>,
    /// Broker-wide defaults, keyed by topic config name: the image's dynamic
    /// ones over the config file's fixed ones.
    pub(crate) dynamic: RwLock<BrokerDefaults>,
    /// Serialises reconciliation (apply_image, sweep_orphans).
    pub(crate) reconcile: Mutex<()>,
    producer_ids: ProducerIds,
    groups: Arc<GroupCoordinator>,
    txns: TxnCoordinator,
    /// Node-local coordinator logs of an older data directory, still to be
    /// imported into the internal topics.
    pub(crate) legacy_internal: Mutex<Vec<CoordinatorKind>>,
    /// The runtime peer calls from blocking threads run on (the cluster
    /// node's, taken when it installs the controller).
    runtime: OnceLock<tokio::runtime::Handle>,
    metrics: Metrics,
    /// The latest metadata image the cluster node handed over.
    pub(crate) metadata: RwLock<Arc<MetadataImage>>,
    /// The controller quorum, installed by the cluster node at start.
    pub(crate) controller: OnceLock<Arc<dyn Controller>>,
    /// Quorum queues whose partition this node leads, opened in that
    /// leader epoch (`messaging/quorum.rs`).
    pub(crate) quorum_queues: Mutex<crate::messaging::quorum::QuorumQueues>,
    /// Forwarding nodes' deliveries of the quorum queues led here
    /// (`messaging/remote_queue.rs`).
    pub(crate) queue_sessions: Mutex<crate::messaging::remote_queue::Sessions>,
    /// The last forwarded publish batch stored per forwarding session
    /// (`messaging/remote_queue.rs`): retries are not stored twice.
    pub(crate) queue_publishes: Mutex<crate::messaging::publish_ids::Publishers>,
    /// This node's forwarding clients of quorum queues, one per queue
    /// (`messaging/quorum_client/`).
    pub(crate) quorum_clients: Mutex<crate::messaging::quorum_client::Clients>,
    /// The MQTT front-end's handler of messages routed from other nodes.
    pub(crate) mqtt_router: OnceLock<MqttRouter>,
    /// Ordered senders of MQTT messages to other nodes, by node id.
    pub(crate) mqtt_peer_routes: Mutex<crate::messaging::peer_routes::PeerRoutes>,
    /// The vhosts opened over this broker, for forwarded calls to the
    /// classic queues held here (`messaging/remote_queue.rs`).
    pub(crate) vhosts: OnceLock<std::sync::Weak<crate::messaging::Vhosts>>,
}

impl Broker {
    /// Opens the data directory (creating it). Topic directories found under
    /// `topics/` are not served until an image places them on this node
    /// ([`Broker::apply_image`]); they are the source of
    /// [`Broker::import_records`].
    pub fn open(config: BrokerConfig) -> Result<Arc<Broker>> {
        topic_config::validate_all(&config.topic_defaults)?;
        let topics_dir = config.data_dir.join("topics");
        fs::create_dir_all(&topics_dir)?;
        let cluster_path = config.data_dir.join("cluster.json");
        let cluster_id = if let Some(c) =
            fs::read(&cluster_path).ok().and_then(|b| serde_json::from_slice::<ClusterFile>(&b).ok())
        {
            c.cluster_id
        } else {
            let c = ClusterFile { cluster_id: Uuid::new_v4().simple().to_string() };
            write_json(&cluster_path, &c)?;
            c.cluster_id
        };
        let legacy_defaults = fs::read(config.data_dir.join("broker-config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<BTreeMap<String, String>>(&b).ok())
            .unwrap_or_default();
        let legacy_producer_ids = producer::legacy_next_block(&config.data_dir);
        let mut found = BTreeMap::new();
        for entry in fs::read_dir(&topics_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".trash-") {
                let _ = fs::remove_dir_all(entry.path());
                continue;
            }
            let Ok(bytes) = fs::read(entry.path().join("topic.json")) else {
                // A topic whose creation never completed.
                tracing::warn!(topic = %name, "removing topic directory without topic.json");
                let _ = fs::remove_dir_all(entry.path());
                continue;
            };
            let file: TopicFile = serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", entry.path().display())))?;
            found.insert(name, file);
        }
        let fixed = config.topic_defaults.clone();
        let logs = LogManager::new(config.engine.clone());
        let groups = GroupCoordinator::open(config.groups.clone())?;
        let txns = TxnCoordinator::open(config.txns.clone());
        let legacy_internal = crate::coordinator_load::legacy_logs(&config.data_dir);
        let hw_checkpoints = crate::hw_checkpoint::Checkpoints::open(&config.data_dir);
        let broker = Arc::new(Broker {
            logs,
            groups,
            txns,
            legacy_internal: Mutex::new(legacy_internal),
            runtime: OnceLock::new(),
            config,
            cluster_id,
            topics: RwLock::new(BTreeMap::new()),
            found,
            legacy_producer_ids,
            hw_checkpoints,
            legacy_defaults,
            dynamic: RwLock::new(BrokerDefaults { dynamic: BTreeMap::new(), fixed }),
            reconcile: Mutex::new(()),
            producer_ids: ProducerIds::default(),
            metrics: Metrics::default(),
            metadata: RwLock::new(Arc::new(MetadataImage::default())),
            controller: OnceLock::new(),
            quorum_queues: Mutex::default(),
            queue_sessions: Mutex::default(),
            queue_publishes: Mutex::default(),
            quorum_clients: Mutex::default(),
            mqtt_router: OnceLock::new(),
            mqtt_peer_routes: Mutex::default(),
            vhosts: OnceLock::new(),
        });
        // Transactions a crash left half-ended are finished by the
        // housekeeping tick once the image has placed their partitions here
        // (their markers fail, and are retried, until then).
        // Housekeeping: KIP-848 member expiry and transaction timeouts every
        // second, high-watermark checkpoints every 5 s, producer snapshots
        // every 30 s (they keep crash recovery short). The thread ends once the broker is dropped.
        let weak = Arc::downgrade(&broker);
        std::thread::Builder::new().name("ferry-housekeeping".into()).spawn(move || {
            for tick in 1u64.. {
                std::thread::sleep(std::time::Duration::from_secs(1));
                let Some(b) = weak.upgrade() else { return };
                b.with_group_topics(|topics| b.groups.expire_consumer_members(topics));
                b.txns.tick(b.as_ref());
                b.maintain_quorum_queues();
                if tick % 30 == 0 {
                    b.snapshot_producers();
                }
                // Kafka's replica.high.watermark.checkpoint.interval.ms.
                if tick % 5 == 0
                    && let Err(e) = b.checkpoint_high_watermarks()
                {
                    tracing::warn!(error = %e, "high-watermark checkpoint failed");
                }
            }
        })?;
        Ok(broker)
    }

    /// A runtime to spawn on: the caller's, else the cluster node's (for
    /// blocking threads such as the delayed-message timer).
    pub(crate) fn runtime_handle(&self) -> Option<tokio::runtime::Handle> {
        tokio::runtime::Handle::try_current().ok().or_else(|| self.runtime.get().cloned())
    }

    /// The cluster metadata as this node last applied it. Front-ends read
    /// nodes, leaders and replicas only from here.
    pub fn metadata(&self) -> Arc<MetadataImage> {
        read(&self.metadata).clone()
    }

    /// Installs the controller quorum; the first call wins.
    pub fn set_controller(&self, controller: Arc<dyn Controller>) {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let _ = self.runtime.set(handle);
        }
        let _ = self.controller.set(controller);
    }

    /// Calls `node` through the controller's peer link from a blocking
    /// thread (never an async worker).
    pub(crate) fn call_peer_blocking(&self, node: i32, request: PeerRequest) -> Result<PeerReply> {
        let controller = self
            .controller
            .get()
            .cloned()
            .ok_or_else(|| BrokerError::ControllerUnavailable("no controller installed".into()))?;
        let runtime = self
            .runtime
            .get()
            .cloned()
            .or_else(|| tokio::runtime::Handle::try_current().ok())
            .ok_or_else(|| BrokerError::ControllerUnavailable("no runtime for peer calls".into()))?;
        Ok(runtime.block_on(controller.call_peer(node, request))?)
    }

    /// The quorum as this node sees it (default before the cluster node starts).
    pub fn controller_status(&self) -> ControllerStatus {
        self.controller.get().map(|c| c.status()).unwrap_or_default()
    }

    /// What a data directory written before it had cluster metadata holds,
    /// as the records that import it into a new cluster: its topics (ids,
    /// partition counts and configs kept, every partition on this node), its
    /// dynamic config defaults, and the producer ids it handed out (so the
    /// cluster never hands them out again).
    pub fn import_records(&self) -> Vec<MetadataRecord> {
        let mut records: Vec<MetadataRecord> = self
            .found
            .iter()
            .map(|(name, file)| MetadataRecord::CreateTopic {
                name: name.clone(),
                id: file.id,
                // A directory that hosted the internal topics keeps them
                // (with their ids, so the coordinators' state is reused).
                internal: is_internal(name),
                configs: file.configs.clone(),
                replicas: vec![vec![self.config.node_id]; file.partitions],
            })
            .collect();
        if !self.legacy_defaults.is_empty() {
            records.push(MetadataRecord::SetBrokerDefaults { configs: self.legacy_defaults.clone() });
        }
        if self.legacy_producer_ids > 0 {
            records.push(MetadataRecord::ProducerIds {
                node_id: self.config.node_id,
                first: 0,
                count: self.legacy_producer_ids,
            });
        }
        records
    }

    /// The settings the broker was opened with.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The storage engine, for the broker's own internal stores.
    pub(crate) fn log_manager(&self) -> &LogManager {
        &self.logs
    }

    /// This node's id.
    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// The id generated on this data directory's first start and kept in
    /// it: the id a new cluster started from this node takes (InitCluster).
    /// Clients are told [`Broker::current_cluster_id`].
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The cluster's id as clients see it: the image's once it has one
    /// (a node that joined an existing cluster), else [`Broker::cluster_id`].
    pub fn current_cluster_id(&self) -> String {
        read(&self.metadata).cluster_id.clone().unwrap_or_else(|| self.cluster_id.clone())
    }

    /// The topic named `name`, if this node hosts it.
    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        read(&self.topics).get(name).cloned()
    }

    /// The topic with id `id`, if this node hosts it.
    pub fn topic_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        read(&self.topics).values().find(|t| t.id == id).cloned()
    }

    /// Every client topic hosted here, in name order (the internal
    /// `__consumer_offsets` and `__transaction_state` left out).
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        read(&self.topics).values().filter(|t| !is_internal(&t.name)).cloned().collect()
    }

    /// Every topic hosted here, the internal ones included (what
    /// replication and housekeeping go over), in name order.
    pub fn hosted_topics(&self) -> Vec<Arc<Topic>> {
        read(&self.topics).values().cloned().collect()
    }

    /// Partition `index` of `topic` if this node leads it: the partition
    /// every read and write path uses. `UnknownTopicOrPartition` if the
    /// image has no such partition, `NotLeaderOrFollower` if another node
    /// (or none) leads it.
    pub fn leader_partition(&self, topic: &str, index: i32) -> Result<Arc<Partition>> {
        let image = self.metadata();
        let info = image.partition(topic, index).ok_or(BrokerError::UnknownTopicOrPartition)?;
        if info.leader != self.config.node_id {
            return Err(BrokerError::NotLeaderOrFollower);
        }
        self.topic(topic).and_then(|t| t.partition(index)).ok_or(BrokerError::NotLeaderOrFollower)
    }

    /// Whether this node coordinates `key` of `kind` now (it leads the
    /// key's partition of the internal topic, see
    /// [`MetadataImage::coordinator`],
    /// and has loaded it).
    pub fn coordinates(&self, kind: CoordinatorKind, key: &str) -> bool {
        let loaded = match kind {
            CoordinatorKind::Group => self.groups.serves(key),
            CoordinatorKind::Transaction => self.txns.serves(key),
        };
        loaded && read(&self.metadata).coordinator(kind, key).is_some_and(|n| n.id == self.config.node_id)
    }

    /// Runs `f` with the topics as KIP-848 consumer groups see them: every
    /// non-internal topic of the cluster.
    pub fn with_group_topics<R>(&self, f: impl FnOnce(&crate::group::Topics) -> R) -> R {
        let image = self.metadata();
        let partitions = |t: &str| image.topic(t).filter(|t| !t.internal).map_or(0, |x| x.partitions.len());
        let names = || image.topics.values().filter(|t| !t.internal).map(|t| t.name.clone()).collect();
        f(&crate::group::Topics { partitions: &partitions, names: &names })
    }

    /// Broker-wide defaults, keyed by topic config name.
    pub fn defaults(&self) -> BrokerDefaults {
        read(&self.dynamic).clone()
    }

    /// The effective settings of a topic.
    pub fn topic_settings(&self, topic: &Topic) -> TopicSettings {
        read(&topic.settings).clone()
    }

    /// The group coordinator (consumer groups and committed offsets).
    pub fn groups(&self) -> &Arc<GroupCoordinator> {
        &self.groups
    }

    /// Committed offset, high watermark and lag of every partition a group
    /// has an offset for (high watermark and lag -1 where this node does not
    /// host the partition).
    pub fn group_lag(&self, group: &str) -> Vec<(String, i32, i64, i64, i64)> {
        self.groups
            .committed(group)
            .into_iter()
            .map(|((topic, partition), c)| {
                let hw =
                    self.topic(&topic).and_then(|t| t.partition(partition)).map_or(-1, |p| p.high_watermark() as i64);
                let lag = if hw >= 0 && c.offset >= 0 { (hw - c.offset).max(0) } else { -1 };
                (topic, partition, c.offset, hw, lag)
            })
            .collect()
    }

    /// The transaction coordinator.
    pub fn txns(&self) -> &TxnCoordinator {
        &self.txns
    }

    /// Members of a group (classic or KIP-848); 0 for an unknown group.
    pub fn group_member_count(&self, group: &str) -> usize {
        self.groups.member_count(group)
    }

    /// The registry front-ends add their counters to.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Every metric, in Prometheus / OpenMetrics text format.
    pub fn encode_metrics(self: &Arc<Self>) -> String {
        crate::metrics::encode(self)
    }

    /// Latency of the log flushes that reached the disk.
    pub fn fsync_stats(&self) -> &ferry_log::FsyncStats {
        self.logs.fsync_stats()
    }

    /// This node's block of producer ids (InitProducerId). Top it up with
    /// [`Broker::reserve_producer_ids`] before taking one.
    pub fn producer_ids(&self) -> &ProducerIds {
        &self.producer_ids
    }

    /// Whether `id` was ever handed out in the cluster (KIP-360's check of
    /// a producer asking for its next epoch).
    pub fn producer_id_issued(&self, id: i64) -> bool {
        id >= 0 && id < read(&self.metadata).next_producer_id
    }

    /// Writes the producer snapshots that changed; run periodically so
    /// recovery after a crash scans little.
    pub fn snapshot_producers(&self) {
        for topic in self.hosted_topics() {
            for p in topic.partitions() {
                if let Err(e) = p.snapshot_producers() {
                    tracing::warn!(topic = %topic.name, partition = p.index, error = %e, "producer snapshot failed");
                }
            }
        }
    }

    /// Writes the data directory's high-watermark checkpoint if any hosted
    /// partition's moved (one file for all: `hw_checkpoint.rs`); run
    /// periodically and at shutdown so a restarted node starts where
    /// readers were.
    pub fn checkpoint_high_watermarks(&self) -> Result<()> {
        let mut partitions = Vec::new();
        let open = || {
            let mut moved = false;
            let mut open = BTreeMap::new();
            for topic in self.hosted_topics() {
                for p in topic.partitions() {
                    let (hw, changed) = p.take_high_watermark_checkpoint();
                    moved |= changed;
                    open.insert((topic.name.clone(), p.index), hw);
                    partitions.push(p);
                }
            }
            moved.then_some(open)
        };
        // Partitions not open (yet: the image places them after start) keep
        // their entries while their log directory is there.
        let keep = |(topic, index): &(String, i32)| self.topic_dir(topic).join(index.to_string()).is_dir();
        let result = self.hw_checkpoints.write(open, keep);
        if !matches!(result, Ok(false)) {
            for p in &partitions {
                p.checkpoint_written(result.is_ok());
            }
        }
        result?;
        Ok(())
    }

    /// Snapshots producer state and high watermarks, flushes and
    /// checkpoints every log, and stops the storage threads.
    pub fn shutdown(&self) {
        self.snapshot_producers();
        if let Err(e) = self.checkpoint_high_watermarks() {
            tracing::warn!(error = %e, "high-watermark checkpoint failed");
        }
        self.logs.shutdown();
    }

    pub(crate) fn topic_dir(&self, name: &str) -> PathBuf {
        self.config.data_dir.join("topics").join(name)
    }
}

/// Whether `name` is one of the coordinators' internal topics.
pub fn is_internal(name: &str) -> bool {
    name == GROUP_TOPIC || name == TXN_TOPIC
}

/// Checks a topic name the way Kafka does: 1 to 249 characters from
/// `[a-zA-Z0-9._-]`, neither `.` nor `..`.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok { Ok(()) } else { Err(BrokerError::InvalidTopic(name.to_string())) }
}

/// Writes a JSON file atomically and durably (tmp, fsync, rename, fsync dir).
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    Ok(ferry_util::fs::write_atomic(path, &bytes, true)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::Acks;
    use ferry_records::compression::Compression;
    use ferry_records::records::{NewRecord, build_batch};

    fn broker(dir: &Path) -> Arc<Broker> {
        crate::testing::open(BrokerConfig { data_dir: dir.to_path_buf(), ..BrokerConfig::default() }).unwrap()
    }

    fn one(value: &str) -> Vec<u8> {
        let now = ferry_util::time::now_ms();
        let r = NewRecord { key: None, value: Some(value.as_bytes()), headers: vec![], timestamp: now };
        build_batch(&[r], Compression::None, -1, -1, -1).unwrap()
    }

    #[tokio::test]
    async fn topics_and_their_data_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        let cfg: BTreeMap<String, String> = [("retention.ms".to_string(), "1000".to_string())].into();
        b.create_topic("orders", Some(3), &cfg, false).await.unwrap();
        let t = b.topic("orders").unwrap();
        let info = t.partition(2).unwrap().append(&one("x"), Acks::All).unwrap().acknowledged().await.unwrap();
        assert_eq!(info.base_offset, 0);
        assert!(matches!(
            b.create_topic("orders", Some(1), &BTreeMap::new(), false).await,
            Err(BrokerError::TopicExists(_))
        ));
        let id = t.id;
        let cluster = b.cluster_id().to_string();
        b.shutdown();
        drop((t, b));
        let b = broker(dir.path());
        assert_eq!(b.cluster_id(), cluster);
        let t = b.topic("orders").unwrap();
        assert_eq!(t.id, id);
        assert_eq!(t.partition_count(), 3);
        assert_eq!(t.partition(2).unwrap().high_watermark(), 1);
        assert_eq!(b.topic_settings(&t).log.retention_ms, Some(1000));
    }

    #[tokio::test]
    async fn a_pre_cluster_directory_is_imported_with_its_ids_defaults_and_producer_ids() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::new_v4();
        let topic = dir.path().join("topics/old");
        fs::create_dir_all(&topic).unwrap();
        let file =
            TopicFile { id, partitions: 2, configs: [("retention.ms".into(), "9".into())].into(), created_index: 0 };
        write_json(&topic.join("topic.json"), &file).unwrap();
        fs::write(dir.path().join("broker-config.json"), br#"{"retention.bytes":"100"}"#).unwrap();
        fs::write(dir.path().join("producer-ids.json"), br#"{"next_block":2000}"#).unwrap();
        let b = Broker::open(BrokerConfig { data_dir: dir.path().to_path_buf(), ..BrokerConfig::default() }).unwrap();
        assert!(b.topic("old").is_none(), "not served before an image places it");
        let records = b.import_records();
        assert_eq!(
            records,
            vec![
                MetadataRecord::CreateTopic {
                    name: "old".into(),
                    id,
                    internal: false,
                    configs: file.configs.clone(),
                    replicas: vec![vec![1], vec![1]],
                },
                MetadataRecord::SetBrokerDefaults { configs: [("retention.bytes".into(), "100".into())].into() },
                MetadataRecord::ProducerIds { node_id: 1, first: 0, count: 2000 },
            ]
        );
        // Imported through the test controller: served with its id, and new
        // producer ids start past the old ones.
        crate::testing::install(&b);
        assert_eq!(b.topic("old").unwrap().id, id);
        assert_eq!(b.topic_settings(&b.topic("old").unwrap()).log.retention_bytes, Some(100));
        assert!(b.next_producer_id().await.unwrap() >= 2000);
        assert!(b.producer_id_issued(5) && !b.producer_id_issued(1_000_000));
    }

    #[tokio::test]
    async fn names_partitions_and_configs_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        for bad in ["", ".", "..", "a/b", "sp ace", &"x".repeat(250)] {
            assert!(matches!(
                b.create_topic(bad, Some(1), &BTreeMap::new(), false).await,
                Err(BrokerError::InvalidTopic(_))
            ));
        }
        assert!(matches!(
            b.create_topic("t", Some(0), &BTreeMap::new(), false).await,
            Err(BrokerError::InvalidPartitions(_))
        ));
        let bad_cfg: BTreeMap<String, String> = [("retention.ms".to_string(), "x".to_string())].into();
        assert!(matches!(b.create_topic("t", Some(1), &bad_cfg, false).await, Err(BrokerError::InvalidConfig(_))));
        b.create_topic("t", Some(1), &BTreeMap::new(), true).await.unwrap();
        assert!(b.topic("t").is_none(), "validate_only creates nothing");
        b.create_topic("t", Some(2), &BTreeMap::new(), false).await.unwrap();
        assert!(b.create_partitions("t", 2, None, false).await.is_err());
        assert!(b.create_partitions("t", i32::MAX, None, false).await.is_err());
        b.create_partitions("t", 5, None, false).await.unwrap();
        assert_eq!(b.topic("t").unwrap().partition_count(), 5);
        b.delete_topic("t").await.unwrap();
        assert!(b.topic("t").is_none());
        assert!(matches!(b.delete_topic("t").await, Err(BrokerError::UnknownTopicOrPartition)));
        // Recreating a deleted topic starts empty.
        b.create_topic("t", Some(1), &BTreeMap::new(), false).await.unwrap();
        let t = b.topic("t").unwrap();
        assert_eq!(t.partition(0).unwrap().high_watermark(), 0);
    }

    #[tokio::test]
    async fn a_thread_waiting_on_a_partition_is_woken_when_records_land() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        b.create_topic("signalled", Some(1), &BTreeMap::new(), false).await.unwrap();
        let t = b.topic("signalled").unwrap();
        let p = t.partition(0).unwrap();
        let signal = Arc::new(crate::Signal::default());
        p.register_signal(&signal);
        p.register_signal(&signal); // once in the list, however often registered
        assert!(!signal.wait(std::time::Duration::from_millis(1)), "nothing happened yet");
        let waiter = {
            let signal = signal.clone();
            std::thread::spawn(move || signal.wait(std::time::Duration::from_secs(30)))
        };
        p.append(&one("x"), Acks::All).unwrap().acknowledged().await.unwrap();
        assert!(waiter.join().unwrap(), "the append's high watermark move raised the signal");
        // Raised once per registration: the next move needs a new one.
        p.append(&one("y"), Acks::All).unwrap().acknowledged().await.unwrap();
        assert!(!signal.wait(std::time::Duration::from_millis(1)));
        p.register_signal(&signal);
        p.append(&one("z"), Acks::All).unwrap().acknowledged().await.unwrap();
        assert!(signal.wait(std::time::Duration::from_secs(30)));
    }

    #[tokio::test]
    async fn lag_is_high_watermark_minus_committed() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        b.create_topic("lagging", Some(2), &BTreeMap::new(), false).await.unwrap();
        let t = b.topic("lagging").unwrap();
        for _ in 0..5 {
            t.partition(0).unwrap().append(&one("x"), Acks::All).unwrap().acknowledged().await.unwrap();
        }
        let c = |offset| crate::group::Committed { offset, leader_epoch: -1, metadata: None, commit_ms: 0 };
        b.groups().commit("lg", "", -1, vec![("lagging".into(), 0, c(2)), ("lagging".into(), 1, c(0))]).unwrap();
        let lag = b.group_lag("lg");
        assert_eq!(lag, vec![("lagging".to_string(), 0, 2, 5, 3), ("lagging".to_string(), 1, 0, 0, 0)]);
    }

    #[tokio::test]
    async fn acks_all_needs_enough_replicas_and_timestamps_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        let cfg: BTreeMap<String, String> = [("min.insync.replicas".to_string(), "2".to_string())].into();
        b.create_topic("t", Some(1), &cfg, false).await.unwrap();
        let t = b.topic("t").unwrap();
        let p = t.partition(0).unwrap();
        assert!(matches!(p.append(&one("a"), Acks::All), Err(BrokerError::NotEnoughReplicas { .. })));
        p.append(&one("a"), Acks::Leader).unwrap();
        let future = NewRecord { key: None, value: Some(b"f"), headers: vec![], timestamp: i64::MAX / 2 };
        let batch = build_batch(&[future], Compression::None, -1, -1, -1).unwrap();
        assert!(matches!(p.append(&batch, Acks::Leader), Err(BrokerError::InvalidTimestamp(_))));
    }
}
