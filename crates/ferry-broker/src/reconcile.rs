//! Reconciling local state with the metadata image: the only place the
//! topics and partitions this node hosts change. The cluster node hands
//! every new image to [`Broker::apply_image`]; the diff against the previous
//! image opens the partitions placed here, applies configs, and deletes
//! what the cluster deleted.

use std::collections::BTreeMap;
use std::fs;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use ferry_util::sync::{lock, read, write};
use uuid::Uuid;

use crate::broker::{Broker, write_json};
use crate::error::Result;
use crate::metadata::{MetadataImage, TopicInfo};
use crate::metrics::TopicStats;
use crate::partition::Partition;
use crate::topic::{Topic, TopicFile};
use crate::topic_config;

/// What a directory under `topics/` is to an image.
enum DirState {
    /// No directory (or one left incomplete): create it.
    Missing,
    /// The directory of this topic (same id): open it.
    Same(TopicFile),
    /// Another topic's: trash it.
    Stale,
    /// A topic newer than the image (a restarted node replaying its
    /// metadata log): leave it alone until the image catches up.
    Newer,
}

impl Broker {
    /// Takes a new metadata image from the cluster node (after every apply)
    /// and reconciles local state with it:
    /// - every topic with partitions placed on this node is hosted (the
    ///   internal ones too, compacted and flushed on every write whatever
    ///   their configs say, and the coordinators load the internal
    ///   partitions this node leads and unload the others): its directory
    ///   created (or reopened, if its `topic.json` has
    ///   the same id; trashed first if it is another topic's), the placed
    ///   partitions' logs opened, partitions no longer placed here closed;
    /// - topic overrides and the cluster-wide defaults (over the config
    ///   file's fixed ones) are applied to the open logs;
    /// - hosted topics gone from the image, or whose id changed, are
    ///   deleted (moved to trash, removed in the background).
    ///
    /// Does file I/O: call it from a blocking thread. Errors opening one
    /// topic are logged and leave that topic (or the partitions that failed)
    /// unhosted; the next image tries again.
    pub fn apply_image(&self, image: Arc<MetadataImage>) {
        self.apply_image_at(image, ferry_util::time::now_ms_u64());
    }

    /// [`Broker::apply_image`] at `now_ms` (the time leaders start their
    /// followers' lag clocks from): the replication simulation runs on a
    /// simulated clock.
    pub fn apply_image_at(&self, image: Arc<MetadataImage>, now_ms: u64) {
        let _reconcile = lock(&self.reconcile);
        let previous = self.metadata();
        let defaults_changed = {
            let mut d = write(&self.dynamic);
            let changed = d.dynamic != image.broker_defaults;
            if changed {
                d.dynamic = image.broker_defaults.clone();
            }
            changed
        };
        let node = self.config.node_id;
        for (name, info) in &image.topics {
            let local = self.topic(name);
            if let Some(t) = &local
                && t.id == info.id
                && !defaults_changed
                && t.synced.load(Ordering::Acquire)
                && previous.topic(name).is_some_and(|p| Arc::ptr_eq(p, info))
            {
                continue; // unchanged (images share unchanged topics) and complete
            }
            let placed: Vec<i32> = placed_on(info, node);
            if let Some(t) = &local {
                if t.id != info.id {
                    self.delete_local(name, "re-created with another id");
                } else if placed.is_empty() {
                    // Moved away (reassigned elsewhere): stop serving and
                    // delete the data, unless the directory was first
                    // hosted after this image (a restarted node replaying
                    // its metadata log); sweep_orphans catches that later.
                    self.unload_coordinators(name);
                    let newer = read_topic_file(&t.dir).is_some_and(|f| f.created_index > image.applied_index);
                    if newer {
                        write(&self.topics).remove(name);
                    } else {
                        self.delete_local(name, "no replica placed here any more");
                    }
                    continue;
                }
            }
            if placed.is_empty() {
                continue;
            }
            let topic = match local.filter(|t| t.id == info.id) {
                Some(t) => t,
                None => match self.host(info, image.applied_index) {
                    Ok(Some(t)) => t,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::error!(topic = %name, error = %e, "cannot host topic");
                        continue;
                    }
                },
            };
            let synced = self.sync_topic(&topic, info, &placed, image.applied_index, now_ms);
            // A coordinator partition that failed to load is tried again
            // with the next image.
            let synced = synced.and_then(|()| self.sync_coordinators(&topic, info));
            topic.synced.store(synced.is_ok(), Ordering::Release);
            if let Err(e) = synced {
                tracing::error!(topic = %name, error = %e, "cannot open partitions");
            }
        }
        for topic in self.hosted_topics() {
            if image.topic(&topic.name).is_none_or(|i| i.id != topic.id) {
                self.delete_local(&topic.name, "deleted");
            }
        }
        // Quorum queues follow their partitions' leadership, loaded before
        // the image is published, as the coordinators are.
        self.sync_quorum_queues(&image);
        // Published last: a client that sees a partition led here in
        // Metadata finds it open.
        *write(&self.metadata) = image;
    }

    /// Trashes every topic directory the current image does not place on
    /// this node (a topic deleted, or moved away, while this node was down
    /// or before it caught up).
    ///
    /// Contract: call it only once this node's image is caught up with the
    /// quorum and includes this node's own registration (the cluster node
    /// does so once after start). On an older image, such as a snapshot
    /// being replayed, it would trash topics the image does not know yet;
    /// as a second guard, a directory first hosted at an index newer than
    /// the image is never trashed. Returns the names trashed.
    pub fn sweep_orphans(&self) -> Vec<String> {
        let _reconcile = lock(&self.reconcile);
        let image = self.metadata();
        let node = self.config.node_id;
        let Ok(entries) = fs::read_dir(self.config.data_dir.join("topics")) else {
            return Vec::new();
        };
        let mut trashed = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".trash-") {
                continue;
            }
            if let Some(topic) = self.topic(&name) {
                self.sweep_partitions(&topic, &image);
                continue;
            }
            let file = read_topic_file(&entry.path());
            if file.as_ref().is_some_and(|f| f.created_index > image.applied_index) {
                continue;
            }
            let wanted = image
                .topic(&name)
                .is_some_and(|i| file.as_ref().is_some_and(|f| f.id == i.id) && !placed_on(i, node).is_empty());
            if !wanted {
                tracing::info!(topic = %name, "removing a topic directory the cluster does not place here");
                if let Err(e) = self.trash(&name) {
                    tracing::warn!(topic = %name, error = %e, "cannot trash topic directory");
                    continue;
                }
                trashed.push(name);
            }
        }
        trashed
    }

    /// Trashes the partition directories of a hosted topic that `image`
    /// does not place here (reassigned away while this node was down).
    fn sweep_partitions(&self, topic: &Topic, image: &MetadataImage) {
        let Some(info) = image.topic(&topic.name).filter(|i| i.id == topic.id) else { return };
        let placed = placed_on(info, self.config.node_id);
        let Ok(entries) = fs::read_dir(&topic.dir) else { return };
        for entry in entries.flatten() {
            let Some(index) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
            if !placed.contains(&index) && entry.path().is_dir() {
                self.trash_partition(topic, index, image.applied_index);
            }
        }
    }

    /// Opens (or creates) the local topic for `info`; `None` when its
    /// directory belongs to a topic newer than the image.
    fn host(&self, info: &TopicInfo, applied_index: u64) -> Result<Option<Arc<Topic>>> {
        let dir = self.topic_dir(&info.name);
        let file = match dir_state(&dir, info.id, applied_index) {
            DirState::Newer => return Ok(None),
            DirState::Same(file) => file,
            state => {
                if matches!(state, DirState::Stale) {
                    tracing::info!(topic = %info.name, "trashing the directory of an older topic of the same name");
                    self.trash(&info.name)?;
                } else if dir.exists() {
                    fs::remove_dir_all(&dir)?;
                }
                fs::create_dir_all(&dir)?;
                let file = TopicFile {
                    id: info.id,
                    partitions: info.partitions.len(),
                    configs: info.configs.clone(),
                    created_index: applied_index,
                };
                write_json(&dir.join("topic.json"), &file)?;
                tracing::info!(topic = %info.name, partitions = info.partitions.len(), "hosting topic");
                file
            }
        };
        let settings = self.settings_for(info);
        let topic = Arc::new(Topic {
            name: info.name.clone(),
            id: info.id,
            dir,
            overrides: RwLock::new(info.configs.clone()),
            settings: Arc::new(RwLock::new(settings)),
            partitions: RwLock::new(BTreeMap::new()),
            count: AtomicUsize::new(file.partitions),
            synced: AtomicBool::new(false),
            stats: TopicStats::default(),
        });
        write(&self.topics).insert(info.name.clone(), topic.clone());
        Ok(Some(topic))
    }

    /// Brings a hosted topic in line with `info`: configs, partition count,
    /// the local partitions (`placed`), and `topic.json`.
    fn sync_topic(&self, topic: &Topic, info: &TopicInfo, placed: &[i32], applied_index: u64, now: u64) -> Result<()> {
        let configs_changed = *read(&topic.overrides) != info.configs;
        if configs_changed {
            (*write(&topic.overrides)).clone_from(&info.configs);
        }
        let settings = self.settings_for(info);
        let log_config = settings.log.clone();
        *write(&topic.settings) = settings;
        let old_count = topic.count.swap(info.partitions.len(), Ordering::AcqRel);
        let open: Vec<(i32, Arc<Partition>)> = read(&topic.partitions).iter().map(|(i, p)| (*i, p.clone())).collect();
        for (index, p) in &open {
            if placed.contains(index) {
                p.log().set_config(log_config.clone());
            } else {
                // Reassigned away: the replica's log goes with it.
                write(&topic.partitions).remove(index);
                self.trash_partition(topic, *index, applied_index);
            }
        }
        let missing: Vec<i32> = placed.iter().copied().filter(|i| !read(&topic.partitions).contains_key(i)).collect();
        let open = |index: i32| -> Result<()> {
            let dir = topic.dir.join(index.to_string());
            if !dir.exists() {
                fs::create_dir_all(&dir)?;
                write_json(&dir.join(REPLICA_FILE), &ReplicaFile { placed_index: applied_index })?;
            }
            let log = self.logs.open(&dir, log_config.clone())?;
            let checkpoint = self.hw_checkpoints.get(&topic.name, index);
            let partition = Partition::new(
                &topic.name,
                index,
                log,
                topic.settings.clone(),
                self.config.producer_id_expiration_ms,
                checkpoint,
            )?;
            write(&topic.partitions).insert(index, Arc::new(partition));
            Ok(())
        };
        in_parallel(&missing, open)?;
        // Lead or follow each local partition as the image says.
        let local: Vec<(i32, Arc<Partition>)> = read(&topic.partitions).iter().map(|(i, p)| (*i, p.clone())).collect();
        in_parallel(&local, |(index, p)| {
            if let Some(pinfo) = usize::try_from(index).ok().and_then(|i| info.partitions.get(i)) {
                p.apply_placement(self.config.node_id, pinfo, now);
            }
            Ok(())
        })?;
        if configs_changed || old_count != info.partitions.len() {
            let file = read_topic_file(&topic.dir);
            let file = TopicFile {
                id: topic.id,
                // Never lower: a replayed older image must not hide partitions.
                partitions: file.as_ref().map_or(0, |f| f.partitions).max(info.partitions.len()),
                configs: info.configs.clone(),
                created_index: file.map_or(0, |f| f.created_index),
            };
            write_json(&topic.dir.join("topic.json"), &file)?;
        }
        Ok(())
    }

    /// Trashes the directory of partition `index` of `topic`, no longer a
    /// replica here as of `applied_index`, unless it was placed here
    /// after that index (an older image replayed at restart).
    fn trash_partition(&self, topic: &Topic, index: i32, applied_index: u64) {
        let dir = topic.dir.join(index.to_string());
        if read_replica_file(&dir).is_some_and(|f| f.placed_index > applied_index) {
            return;
        }
        let trash = self.config.data_dir.join("topics").join(format!(".trash-{}", Uuid::new_v4().simple()));
        match fs::rename(&dir, &trash) {
            Ok(()) => {
                tracing::info!(topic = %topic.name, partition = index, "deleted a replica reassigned away");
                std::thread::spawn(move || {
                    let _ = fs::remove_dir_all(trash);
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(topic = %topic.name, partition = index, error = %e, "cannot trash replica"),
        }
    }

    /// The effective settings of `info`'s topic. The internal topics hold
    /// coordinator state (compacted) or a quorum queue (never compacted:
    /// its records have no keys; the queue's acknowledgements, not
    /// retention, delete): every write on disk before it counts, nothing
    /// expires by time, whatever their configs say.
    fn settings_for(&self, info: &TopicInfo) -> topic_config::TopicSettings {
        let mut settings = topic_config::resolve(&read(&self.dynamic), &info.configs, info.replication_factor());
        if info.internal {
            settings.log.cleanup_policy = if info.name.starts_with(crate::metadata::QUEUE_TOPIC_PREFIX) {
                ferry_log::CleanupPolicy::DELETE
            } else {
                ferry_log::CleanupPolicy::COMPACT
            };
            settings.log.flush = ferry_log::FlushPolicy::Always;
            settings.log.retention_ms = None;
            settings.log.retention_bytes = None;
        }
        settings
    }

    /// Stops hosting `name` and trashes its directory.
    fn delete_local(&self, name: &str, why: &str) {
        self.unload_coordinators(name);
        let Some(topic) = write(&self.topics).remove(name) else { return };
        drop(topic);
        match self.trash(name) {
            Ok(()) => tracing::info!(topic = name, why, "deleted topic"),
            Err(e) => tracing::warn!(topic = name, error = %e, "cannot trash deleted topic"),
        }
    }

    /// Moves `topics/<name>` aside and removes it in the background (a
    /// crash before that finishes leaves a `.trash-*` that the next open
    /// removes).
    fn trash(&self, name: &str) -> Result<()> {
        let topics = self.config.data_dir.join("topics");
        let trash = topics.join(format!(".trash-{}", Uuid::new_v4().simple()));
        fs::rename(topics.join(name), &trash)?;
        std::thread::spawn(move || {
            let _ = fs::remove_dir_all(trash);
        });
        Ok(())
    }
}

/// Threads opening or placing one topic's partitions at once: each step
/// waits on fsyncs (files, directories, checkpoints), and a topic of many
/// partitions (the internal ones have 50) would otherwise wait for them
/// one by one.
const PARALLEL_OPENS: usize = 8;

/// Runs `f` on the items, split over up to [`PARALLEL_OPENS`] threads;
/// each thread stops at its first error, which is returned.
fn in_parallel<T: Clone + Send + Sync>(items: &[T], f: impl Fn(T) -> Result<()> + Sync) -> Result<()> {
    if items.len() <= 1 {
        return items.iter().cloned().try_for_each(f);
    }
    let chunk = items.len().div_ceil(PARALLEL_OPENS);
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                let f = &f;
                scope.spawn(move || part.iter().cloned().map(f).find(Result::is_err).unwrap_or(Ok(())))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err(std::io::Error::other("partition open panicked").into())))
            .find(Result::is_err)
            .unwrap_or(Ok(()))
    })
}

/// Indices of `info`'s partitions with `node` among their replicas.
fn placed_on(info: &TopicInfo, node: i32) -> Vec<i32> {
    (0..).zip(&info.partitions).filter(|(_, p)| p.replicas.contains(&node)).map(|(i, _)| i).collect()
}

/// `<partition dir>/replica.json`: the image index at which this node
/// first held the replica, so a replayed older image that does not place
/// it here does not delete it.
const REPLICA_FILE: &str = "replica.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct ReplicaFile {
    placed_index: u64,
}

fn read_replica_file(dir: &std::path::Path) -> Option<ReplicaFile> {
    fs::read(dir.join(REPLICA_FILE)).ok().and_then(|b| serde_json::from_slice(&b).ok())
}

fn read_topic_file(dir: &std::path::Path) -> Option<TopicFile> {
    fs::read(dir.join("topic.json")).ok().and_then(|b| serde_json::from_slice(&b).ok())
}

fn dir_state(dir: &std::path::Path, id: Uuid, applied_index: u64) -> DirState {
    match read_topic_file(dir) {
        None => DirState::Missing,
        Some(f) if f.id == id => DirState::Same(f),
        Some(f) if f.created_index > applied_index => DirState::Newer,
        Some(_) => DirState::Stale,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use ferry_records::compression::Compression;
    use ferry_records::records::{NewRecord, build_batch};

    use super::*;
    use crate::broker::BrokerConfig;
    use crate::error::BrokerError;
    use crate::metadata::{MetadataRecord, NodeInfo};
    use crate::partition::Acks;

    fn node(id: i32) -> NodeInfo {
        NodeInfo { id, incarnation: Uuid::new_v4(), listeners: BTreeMap::new(), rack: None, voter: true, fenced: false }
    }

    fn create(name: &str, id: Uuid, replicas: Vec<Vec<i32>>) -> MetadataRecord {
        MetadataRecord::CreateTopic { name: name.into(), id, internal: false, configs: BTreeMap::new(), replicas }
    }

    /// An image of nodes 1 and 2 plus `records`, as of log index `index`.
    fn image(index: u64, records: Vec<MetadataRecord>) -> Arc<MetadataImage> {
        let mut image = MetadataImage::default();
        let mut all = vec![MetadataRecord::RegisterNode(node(1)), MetadataRecord::RegisterNode(node(2))];
        all.extend(records);
        image.apply_batch(index, &all).unwrap();
        Arc::new(image)
    }

    fn open(dir: &Path) -> Arc<Broker> {
        Broker::open(BrokerConfig { data_dir: dir.to_path_buf(), ..BrokerConfig::default() }).unwrap()
    }

    fn one(value: &str) -> Vec<u8> {
        let r = NewRecord {
            key: None,
            value: Some(value.as_bytes()),
            headers: vec![],
            timestamp: ferry_util::time::now_ms(),
        };
        build_batch(&[r], Compression::None, -1, -1, -1).unwrap()
    }

    #[tokio::test]
    async fn only_the_partitions_placed_here_are_opened() {
        let dir = tempfile::tempdir().unwrap();
        let b = open(dir.path());
        assert!(b.topics().is_empty(), "nothing is served before an image");
        let (t, elsewhere, internal) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        b.apply_image(image(
            3,
            vec![
                create("t", t, vec![vec![1], vec![2], vec![2, 1]]),
                create("elsewhere", elsewhere, vec![vec![2]]),
                MetadataRecord::CreateTopic {
                    name: "__consumer_offsets".into(),
                    id: internal,
                    internal: true,
                    configs: BTreeMap::new(),
                    replicas: vec![vec![1]],
                },
            ],
        ));
        let topic = b.topic("t").unwrap();
        assert_eq!(topic.partition_count(), 3);
        assert_eq!(topic.partitions().iter().map(|p| p.index).collect::<Vec<_>>(), vec![0, 2]);
        assert!(topic.partition(1).is_none());
        assert!(b.leader_partition("t", 0).is_ok());
        assert!(matches!(b.leader_partition("t", 1), Err(BrokerError::NotLeaderOrFollower)));
        assert!(matches!(b.leader_partition("t", 2), Err(BrokerError::NotLeaderOrFollower)), "a follower here");
        assert!(matches!(b.leader_partition("t", 3), Err(BrokerError::UnknownTopicOrPartition)));
        assert!(b.topic("elsewhere").is_none() && !dir.path().join("topics/elsewhere").exists());
        // Internal topics are hosted like any other, compacted and flushed
        // on every write; their leader serves the groups that hash to them.
        let internal = b.topic("__consumer_offsets").unwrap();
        let log = &b.topic_settings(&internal).log;
        assert_eq!(
            (log.cleanup_policy, log.flush),
            (ferry_log::CleanupPolicy::COMPACT, ferry_log::FlushPolicy::Always)
        );
        assert!(b.groups().serves("any-group"));
        assert!(dir.path().join("topics/t/0").is_dir() && !dir.path().join("topics/t/1").exists());
    }

    #[tokio::test]
    async fn removed_topics_are_deleted_and_data_survives_reopen_and_reapply() {
        let dir = tempfile::tempdir().unwrap();
        let (keep, gone) = (Uuid::new_v4(), Uuid::new_v4());
        let first = image(2, vec![create("keep", keep, vec![vec![1]]), create("gone", gone, vec![vec![1]])]);
        let b = open(dir.path());
        b.apply_image(first.clone());
        let p = b.topic("keep").unwrap().partition(0).unwrap();
        p.append(&one("a"), Acks::All).unwrap().acknowledged().await.unwrap();
        drop(p);
        b.apply_image(image(3, vec![create("keep", keep, vec![vec![1]])]));
        assert!(b.topic("gone").is_none());
        assert!(!dir.path().join("topics/gone").exists(), "moved to trash");
        b.shutdown();
        drop(b);
        let b = open(dir.path());
        b.apply_image(first);
        assert_eq!(b.topic("keep").unwrap().partition(0).unwrap().high_watermark(), 1);
        assert_eq!(b.topic("gone").unwrap().partition(0).unwrap().high_watermark(), 0);
    }

    #[tokio::test]
    async fn a_directory_of_another_id_is_trashed_unless_it_is_newer_than_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (Uuid::new_v4(), Uuid::new_v4());
        let b = open(dir.path());
        b.apply_image(image(5, vec![create("t", old, vec![vec![1]])]));
        let p = b.topic("t").unwrap().partition(0).unwrap();
        p.append(&one("old"), Acks::All).unwrap().acknowledged().await.unwrap();
        drop(p);
        b.shutdown();
        drop(b);
        // Deleted and re-created while this node was away.
        let b = open(dir.path());
        b.apply_image(image(9, vec![create("t", new, vec![vec![1]])]));
        let t = b.topic("t").unwrap();
        assert_eq!((t.id, t.partition(0).unwrap().high_watermark()), (new, 0));
        t.partition(0).unwrap().append(&one("new"), Acks::All).unwrap().acknowledged().await.unwrap();
        drop(t);
        b.shutdown();
        drop(b);
        // Replaying from an older image (the old id, index 5): the newer
        // directory is neither opened nor trashed, nor swept.
        let b = open(dir.path());
        b.apply_image(image(5, vec![create("t", old, vec![vec![1]])]));
        assert!(b.topic("t").is_none());
        assert!(b.sweep_orphans().is_empty());
        b.apply_image(image(9, vec![create("t", new, vec![vec![1]])]));
        assert_eq!(b.topic("t").unwrap().partition(0).unwrap().high_watermark(), 1);
    }

    #[tokio::test]
    async fn orphans_are_swept_and_configs_follow_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let (a, orphan) = (Uuid::new_v4(), Uuid::new_v4());
        let b = open(dir.path());
        b.apply_image(image(2, vec![create("a", a, vec![vec![1]]), create("orphan", orphan, vec![vec![1]])]));
        b.shutdown();
        drop(b);
        let b = open(dir.path());
        let defaults: BTreeMap<String, String> = [("retention.ms".to_string(), "5000".to_string())].into();
        b.apply_image(image(
            4,
            vec![create("a", a, vec![vec![1]]), MetadataRecord::SetBrokerDefaults { configs: defaults }],
        ));
        assert!(dir.path().join("topics/orphan").exists(), "never hosted since the restart, so not deleted");
        assert_eq!(b.sweep_orphans(), vec!["orphan".to_string()]);
        assert!(!dir.path().join("topics/orphan").exists() && b.topic("a").is_some());
        let t = b.topic("a").unwrap();
        assert_eq!(b.topic_settings(&t).log.retention_ms, Some(5000));
        let overrides: BTreeMap<String, String> = [("retention.ms".to_string(), "7000".to_string())].into();
        b.apply_image(image(
            5,
            vec![create("a", a, vec![vec![1]]), MetadataRecord::SetTopicConfigs { id: a, configs: overrides.clone() }],
        ));
        assert_eq!(b.topic_settings(&t).log.retention_ms, Some(7000));
        assert_eq!(t.overrides(), overrides);
        assert_eq!(read_topic_file(&dir.path().join("topics/a")).unwrap().configs, overrides);
    }

    #[tokio::test]
    async fn a_replica_reassigned_away_is_deleted_unless_placed_here_after_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let b = open(dir.path());
        let id = Uuid::new_v4();
        let both = || create("t", id, vec![vec![1], vec![1, 2]]);
        let moved = || {
            vec![
                both(),
                MetadataRecord::PartitionReassignment {
                    topic_id: id,
                    partition: 1,
                    replicas: vec![2],
                    adding_replicas: vec![],
                    removing_replicas: vec![],
                    leader: 2,
                    isr: vec![2],
                },
            ]
        };
        let p1 = dir.path().join("topics/t/1");
        b.apply_image(image(2, vec![both()]));
        assert!(p1.is_dir());
        b.apply_image(image(3, moved()));
        assert!(!p1.exists(), "moved away: deleted");
        assert!(b.topic("t").unwrap().partition(1).is_none() && dir.path().join("topics/t/0").is_dir());
        // Placed here again at index 4: a fresh log, which a replayed
        // older image that does not place it here leaves alone.
        b.apply_image(image(4, vec![both()]));
        assert!(p1.is_dir());
        b.apply_image(image(3, moved()));
        assert!(p1.is_dir(), "placed here after index 3");
        // Every partition moves away: the topic's directory goes.
        b.apply_image(image(5, vec![create("t", id, vec![vec![2], vec![2]])]));
        assert!(b.topic("t").is_none() && !dir.path().join("topics/t").exists());
    }
}
