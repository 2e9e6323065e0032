//! The broker: the registry of topics and their partitions, persisted under
//! the data directory, and the broker-wide config defaults.
//!
//! Layout: `<data>/cluster.json`, `<data>/broker-config.json`, and per topic
//! `<data>/topics/<name>/topic.json` with one log directory per partition
//! (`<data>/topics/<name>/<partition>/`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use ferry_log::{EngineConfig, LogManager};
use ferry_util::sync::{lock, read, write};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{BrokerError, Result};
use crate::group::{CoordinatorConfig, GroupCoordinator};
use crate::metadata::{Controller, ControllerStatus, MetadataImage, MetadataRecord};
use crate::metrics::{Metrics, TopicStats};
use crate::partition::Partition;
use crate::producer::ProducerIds;
use crate::topic_config::{self, BrokerDefaults, TopicSettings};
use crate::txn::{TxnConfig, TxnCoordinator, TxnEffects};

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

/// A topic: its partitions and its config overrides.
pub struct Topic {
    /// Topic name, validated by [`validate_topic_name`].
    pub name: String,
    /// Topic id (KIP-516), stable across restarts.
    pub id: Uuid,
    dir: PathBuf,
    overrides: RwLock<BTreeMap<String, String>>,
    settings: Arc<RwLock<TopicSettings>>,
    partitions: RwLock<Vec<Arc<Partition>>>,
    /// Traffic counters, for metrics.
    pub stats: TopicStats,
}

impl Topic {
    /// Every partition, indexed by partition number.
    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        read(&self.partitions).clone()
    }

    /// Partition `index`; `None` if out of range.
    pub fn partition(&self, index: i32) -> Option<Arc<Partition>> {
        usize::try_from(index).ok().and_then(|i| read(&self.partitions).get(i).cloned())
    }

    /// Number of partitions.
    pub fn partition_count(&self) -> usize {
        read(&self.partitions).len()
    }

    /// Config values set on this topic.
    pub fn overrides(&self) -> BTreeMap<String, String> {
        read(&self.overrides).clone()
    }
}

#[derive(Serialize, Deserialize)]
struct TopicFile {
    id: Uuid,
    partitions: usize,
    configs: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct ClusterFile {
    cluster_id: String,
}

/// The broker: topics and their partitions, groups, producers and
/// transactions, over one storage engine. Shared by every front-end (`Arc`).
pub struct Broker {
    config: BrokerConfig,
    cluster_id: String,
    logs: LogManager,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Broker-wide defaults, keyed by topic config name.
    dynamic: RwLock<BrokerDefaults>,
    /// Serialises topic creation, deletion and config changes.
    admin: Mutex<()>,
    producer_ids: ProducerIds,
    groups: Arc<GroupCoordinator>,
    txns: TxnCoordinator,
    metrics: Metrics,
    /// The latest metadata image the cluster node handed over.
    metadata: RwLock<Arc<MetadataImage>>,
    /// The controller quorum, installed by the cluster node at start.
    controller: OnceLock<Arc<dyn Controller>>,
}

impl Broker {
    /// Opens the data directory (creating it), recovering every topic.
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
        let dynamic = fs::read(config.data_dir.join("broker-config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<BTreeMap<String, String>>(&b).ok())
            .unwrap_or_default();
        let fixed = config.topic_defaults.clone();
        let logs = LogManager::new(config.engine.clone());
        let groups = GroupCoordinator::open(&config.data_dir, &logs, config.groups.clone())?;
        let txns = TxnCoordinator::open(&config.data_dir, &logs, config.txns.clone())?;
        let producer_ids_dir = config.data_dir.clone();
        let broker = Arc::new(Broker {
            logs,
            groups,
            txns,
            config,
            cluster_id,
            topics: RwLock::new(BTreeMap::new()),
            dynamic: RwLock::new(BrokerDefaults { dynamic, fixed }),
            admin: Mutex::new(()),
            producer_ids: ProducerIds::open(&producer_ids_dir),
            metrics: Metrics::default(),
            metadata: RwLock::new(Arc::new(MetadataImage::default())),
            controller: OnceLock::new(),
        });
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
            let topic = broker.load_topic(&name, file)?;
            write(&broker.topics).insert(name, topic);
        }
        // Transactions a crash left half-ended are finished before clients
        // come back.
        broker.txns.tick(broker.as_ref());
        // Housekeeping: KIP-848 member expiry and transaction timeouts every
        // second, producer snapshots every 30 s (they keep crash recovery
        // short). The thread ends once the broker is dropped.
        let weak = Arc::downgrade(&broker);
        std::thread::Builder::new().name("ferry-housekeeping".into()).spawn(move || {
            for tick in 1u64.. {
                std::thread::sleep(std::time::Duration::from_secs(1));
                let Some(b) = weak.upgrade() else { return };
                b.with_group_topics(|topics| b.groups.expire_consumer_members(topics));
                b.txns.tick(b.as_ref());
                if tick % 30 == 0 {
                    b.snapshot_producers();
                }
            }
        })?;
        Ok(broker)
    }

    /// The cluster metadata as this node last applied it. Front-ends read
    /// nodes, leaders and replicas only from here.
    pub fn metadata(&self) -> Arc<MetadataImage> {
        read(&self.metadata).clone()
    }

    /// Takes a new metadata image from the cluster node (after every apply).
    pub fn apply_image(&self, image: Arc<MetadataImage>) {
        *write(&self.metadata) = image;
    }

    /// Installs the controller quorum; the first call wins.
    pub fn set_controller(&self, controller: Arc<dyn Controller>) {
        let _ = self.controller.set(controller);
    }

    /// The quorum as this node sees it (default before the cluster node starts).
    pub fn controller_status(&self) -> ControllerStatus {
        self.controller.get().map(|c| c.status()).unwrap_or_default()
    }

    /// The topics of a data directory written before it had cluster
    /// metadata, as the records that import them (ids and configs kept,
    /// every partition on this node).
    pub fn import_records(&self) -> Vec<MetadataRecord> {
        self.topics()
            .iter()
            .map(|t| MetadataRecord::CreateTopic {
                name: t.name.clone(),
                id: t.id,
                internal: false,
                configs: t.overrides(),
                replicas: vec![vec![self.config.node_id]; t.partition_count()],
            })
            .collect()
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

    /// The cluster id, generated on first start and kept in the data directory.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The topic named `name`, if it exists.
    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        read(&self.topics).get(name).cloned()
    }

    /// The topic with id `id`, if it exists.
    pub fn topic_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        read(&self.topics).values().find(|t| t.id == id).cloned()
    }

    /// Every topic, in name order.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        read(&self.topics).values().cloned().collect()
    }

    /// Runs `f` with the topics as KIP-848 consumer groups see them.
    pub fn with_group_topics<R>(&self, f: impl FnOnce(&crate::group::Topics) -> R) -> R {
        let partitions = |t: &str| self.topic(t).map_or(0, |x| x.partition_count());
        let names = || read(&self.topics).keys().cloned().collect();
        f(&crate::group::Topics { partitions: &partitions, names: &names })
    }

    /// The topic, auto-created with the default partition count if the
    /// broker allows it.
    pub fn topic_or_create(&self, name: &str) -> Result<Arc<Topic>> {
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        if !self.config.auto_create_topics {
            return Err(BrokerError::UnknownTopicOrPartition);
        }
        match self.create_topic(name, None, &BTreeMap::new(), false) {
            Err(BrokerError::TopicExists(_)) => self.topic(name).ok_or(BrokerError::UnknownTopicOrPartition),
            other => other,
        }
    }

    /// Creates a topic. `partitions: None` takes `num.partitions`. With
    /// `validate_only`, checks everything and creates nothing.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: Option<i32>,
        configs: &BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>> {
        validate_topic_name(name)?;
        let count = partitions.unwrap_or(self.config.default_partitions);
        if count < 1 || count > self.config.max_partitions_per_topic {
            return Err(BrokerError::InvalidPartitions(format!(
                "{count} partitions (1 to {} allowed)",
                self.config.max_partitions_per_topic
            )));
        }
        topic_config::validate_all(configs)?;
        let _admin = lock(&self.admin);
        if self.topic(name).is_some() {
            return Err(BrokerError::TopicExists(name.to_string()));
        }
        let file = TopicFile { id: Uuid::new_v4(), partitions: count as usize, configs: configs.clone() };
        if validate_only {
            return Ok(Arc::new(Topic {
                name: name.to_string(),
                id: file.id,
                dir: PathBuf::new(),
                overrides: RwLock::new(file.configs),
                settings: Arc::new(RwLock::new(topic_config::resolve(&read(&self.dynamic), configs))),
                partitions: RwLock::new(Vec::new()),
                stats: TopicStats::default(),
            }));
        }
        let dir = self.topic_dir(name);
        fs::create_dir_all(&dir)?;
        let topic = self.load_topic(name, file)?;
        // topic.json last: its presence marks a complete topic.
        self.persist(&topic)?;
        write(&self.topics).insert(name.to_string(), topic.clone());
        tracing::info!(topic = name, partitions = count, "created topic");
        Ok(topic)
    }

    /// Deletes a topic and, in the background, its data.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        let _admin = lock(&self.admin);
        let topic = write(&self.topics).remove(name).ok_or(BrokerError::UnknownTopicOrPartition)?;
        let trash = self.config.data_dir.join("topics").join(format!(".trash-{}", Uuid::new_v4().simple()));
        fs::rename(&topic.dir, &trash)?;
        drop(topic);
        std::thread::spawn(move || {
            let _ = fs::remove_dir_all(trash);
        });
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    /// Grows a topic to `total` partitions (never shrinks, as Kafka).
    pub fn create_partitions(&self, name: &str, total: i32, validate_only: bool) -> Result<()> {
        let _admin = lock(&self.admin);
        let topic = self.topic(name).ok_or(BrokerError::UnknownTopicOrPartition)?;
        let current = topic.partition_count();
        if total > self.config.max_partitions_per_topic {
            return Err(BrokerError::InvalidPartitions(format!(
                "{total} partitions (at most {} allowed)",
                self.config.max_partitions_per_topic
            )));
        }
        if total < 0 || (total as usize) <= current {
            return Err(BrokerError::InvalidPartitions(format!(
                "topic has {current} partitions; the new count must be larger, not {total}"
            )));
        }
        if validate_only {
            return Ok(());
        }
        let settings = read(&topic.settings).clone();
        for index in current..total as usize {
            let log = self.logs.open(&topic.dir.join(index.to_string()), settings.log.clone())?;
            let partition =
                Partition::new(name, index as i32, log, topic.settings.clone(), self.config.producer_id_expiration_ms)?;
            write(&topic.partitions).push(Arc::new(partition));
        }
        self.persist(&topic)
    }

    /// Replaces a topic's config overrides (after validating them) and
    /// applies the result to its partitions.
    pub fn set_topic_configs(&self, name: &str, configs: BTreeMap<String, String>, validate_only: bool) -> Result<()> {
        topic_config::validate_all(&configs)?;
        let _admin = lock(&self.admin);
        let topic = self.topic(name).ok_or(BrokerError::UnknownTopicOrPartition)?;
        if validate_only {
            return Ok(());
        }
        *write(&topic.overrides) = configs;
        self.apply(&topic);
        self.persist(&topic)
    }

    /// Broker-wide defaults, keyed by topic config name.
    pub fn defaults(&self) -> BrokerDefaults {
        read(&self.dynamic).clone()
    }

    /// Replaces the broker-wide defaults and re-applies every topic's settings.
    pub fn set_dynamic_defaults(&self, configs: BTreeMap<String, String>, validate_only: bool) -> Result<()> {
        topic_config::validate_all(&configs)?;
        let _admin = lock(&self.admin);
        if validate_only {
            return Ok(());
        }
        write_json(&self.config.data_dir.join("broker-config.json"), &configs)?;
        write(&self.dynamic).dynamic = configs;
        for topic in self.topics() {
            self.apply(&topic);
        }
        Ok(())
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
    /// has an offset for.
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

    /// Hands out producer ids (InitProducerId).
    pub fn producer_ids(&self) -> &ProducerIds {
        &self.producer_ids
    }

    /// Writes the producer snapshots that changed; run periodically so
    /// recovery after a crash scans little.
    pub fn snapshot_producers(&self) {
        for topic in self.topics() {
            for p in topic.partitions() {
                if let Err(e) = p.snapshot_producers() {
                    tracing::warn!(topic = %topic.name, partition = p.index, error = %e, "producer snapshot failed");
                }
            }
        }
    }

    /// Snapshots producer state, flushes and checkpoints every log, and
    /// stops the storage threads.
    pub fn shutdown(&self) {
        self.snapshot_producers();
        self.logs.shutdown();
    }

    fn apply(&self, topic: &Topic) {
        let settings = topic_config::resolve(&read(&self.dynamic), &read(&topic.overrides));
        for p in topic.partitions() {
            p.log().set_config(settings.log.clone());
        }
        *write(&topic.settings) = settings;
    }

    fn topic_dir(&self, name: &str) -> PathBuf {
        self.config.data_dir.join("topics").join(name)
    }

    fn load_topic(&self, name: &str, file: TopicFile) -> Result<Arc<Topic>> {
        let dir = self.topic_dir(name);
        let settings = Arc::new(RwLock::new(topic_config::resolve(&read(&self.dynamic), &file.configs)));
        let log_config = read(&settings).log.clone();
        let mut partitions = Vec::with_capacity(file.partitions);
        for index in 0..file.partitions {
            let log = self.logs.open(&dir.join(index.to_string()), log_config.clone())?;
            let partition =
                Partition::new(name, index as i32, log, settings.clone(), self.config.producer_id_expiration_ms)?;
            partitions.push(Arc::new(partition));
        }
        Ok(Arc::new(Topic {
            name: name.to_string(),
            id: file.id,
            dir,
            overrides: RwLock::new(file.configs),
            settings,
            partitions: RwLock::new(partitions),
            stats: TopicStats::default(),
        }))
    }

    fn persist(&self, topic: &Topic) -> Result<()> {
        let file = TopicFile { id: topic.id, partitions: topic.partition_count(), configs: topic.overrides() };
        write_json(&topic.dir.join("topic.json"), &file)
    }
}

/// Kafka's rules: 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
/// Commits and aborts reach partitions and groups through the broker.
impl TxnEffects for Broker {
    fn write_marker(&self, topic: &str, partition: i32, producer_id: i64, epoch: i16, commit: bool) -> Result<()> {
        let Some(p) = self.topic(topic).and_then(|t| t.partition(partition)) else {
            return Ok(()); // deleted since it joined the transaction
        };
        p.write_marker(producer_id, epoch, commit, 0).map(|_| ())
    }

    fn commit_offsets(&self, group: &str, offsets: Vec<(String, i32, crate::group::Committed)>) -> Result<()> {
        let end = self.groups.store_offsets(group, offsets)?;
        self.groups.wait_durable(end)
    }
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
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
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
        Broker::open(BrokerConfig { data_dir: dir.to_path_buf(), ..BrokerConfig::default() }).unwrap()
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
        let t = b.create_topic("orders", Some(3), &cfg, false).unwrap();
        let info = t.partition(2).unwrap().append(&one("x"), Acks::All).unwrap().acknowledged().await.unwrap();
        assert_eq!(info.base_offset, 0);
        assert!(matches!(b.create_topic("orders", Some(1), &BTreeMap::new(), false), Err(BrokerError::TopicExists(_))));
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
    async fn names_partitions_and_configs_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        for bad in ["", ".", "..", "a/b", "sp ace", &"x".repeat(250)] {
            assert!(matches!(b.create_topic(bad, Some(1), &BTreeMap::new(), false), Err(BrokerError::InvalidTopic(_))));
        }
        assert!(matches!(
            b.create_topic("t", Some(0), &BTreeMap::new(), false),
            Err(BrokerError::InvalidPartitions(_))
        ));
        let bad_cfg: BTreeMap<String, String> = [("retention.ms".to_string(), "x".to_string())].into();
        assert!(matches!(b.create_topic("t", Some(1), &bad_cfg, false), Err(BrokerError::InvalidConfig(_))));
        b.create_topic("t", Some(1), &BTreeMap::new(), true).unwrap();
        assert!(b.topic("t").is_none(), "validate_only creates nothing");
        b.create_topic("t", Some(2), &BTreeMap::new(), false).unwrap();
        assert!(b.create_partitions("t", 2, false).is_err());
        assert!(b.create_partitions("t", i32::MAX, false).is_err());
        b.create_partitions("t", 5, false).unwrap();
        assert_eq!(b.topic("t").unwrap().partition_count(), 5);
        b.delete_topic("t").unwrap();
        assert!(b.topic("t").is_none());
        assert!(matches!(b.delete_topic("t"), Err(BrokerError::UnknownTopicOrPartition)));
        // Recreating a deleted topic starts empty.
        let t = b.create_topic("t", Some(1), &BTreeMap::new(), false).unwrap();
        assert_eq!(t.partition(0).unwrap().high_watermark(), 0);
    }

    #[tokio::test]
    async fn a_thread_waiting_on_a_partition_is_woken_when_records_land() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        let t = b.create_topic("signalled", Some(1), &BTreeMap::new(), false).unwrap();
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
        let t = b.create_topic("lagging", Some(2), &BTreeMap::new(), false).unwrap();
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
        let t = b.create_topic("t", Some(1), &cfg, false).unwrap();
        let p = t.partition(0).unwrap();
        assert!(matches!(p.append(&one("a"), Acks::All), Err(BrokerError::NotEnoughReplicas { .. })));
        p.append(&one("a"), Acks::Leader).unwrap();
        let future = NewRecord { key: None, value: Some(b"f"), headers: vec![], timestamp: i64::MAX / 2 };
        let batch = build_batch(&[future], Compression::None, -1, -1, -1).unwrap();
        assert!(matches!(p.append(&batch, Acks::Leader), Err(BrokerError::InvalidTimestamp(_))));
    }
}
