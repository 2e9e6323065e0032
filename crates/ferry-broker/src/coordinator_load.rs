//! Coordinators follow the leadership of their internal partitions (Kafka's
//! design): after each image, the node loads the partitions of
//! `__consumer_offsets` and `__transaction_state` it now leads (replaying
//! them into the group and transaction coordinators) and unloads those it
//! no longer leads. A partition led again in a newer leader epoch is
//! reloaded, since another node may have written it meanwhile.
//!
//! Upgrade: a data directory from before this design kept the coordinators'
//! state in node-local logs (`<data>/internal/__consumer_offsets`,
//! `<data>/internal/__transaction_state`). Once this node has loaded every
//! partition of the matching topic (a single node, the only layout those
//! directories came from), their records are appended to the partitions
//! their keys hash to, the partitions are reloaded, and the old directory
//! is renamed `<name>.imported`, so the import happens once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_util::sync::lock;

use crate::broker::Broker;
use crate::error::Result;
use crate::group::coordinator::Key as GroupKey;
use crate::internal_log;
use crate::metadata::{CoordinatorKind, GROUP_TOPIC, TXN_TOPIC, TopicInfo, coordinator_partition};
use crate::partition::Partition;
use crate::topic::Topic;

/// Records appended per batch while importing.
const IMPORT_BATCH: usize = 500;

/// The node-local coordinator logs of an older data directory.
pub(crate) fn legacy_logs(data_dir: &Path) -> Vec<CoordinatorKind> {
    let found: Vec<CoordinatorKind> = [CoordinatorKind::Group, CoordinatorKind::Transaction]
        .into_iter()
        .filter(|k| legacy_dir(data_dir, *k).is_dir())
        .collect();
    for kind in &found {
        tracing::info!(
            topic = kind.topic(),
            "found a node-local coordinator log; it is imported once this node serves every partition of the topic"
        );
    }
    found
}

fn legacy_dir(data_dir: &Path, kind: CoordinatorKind) -> PathBuf {
    data_dir.join("internal").join(kind.topic())
}

fn kind_of(topic: &str) -> Option<CoordinatorKind> {
    match topic {
        GROUP_TOPIC => Some(CoordinatorKind::Group),
        TXN_TOPIC => Some(CoordinatorKind::Transaction),
        _ => None,
    }
}

impl Broker {
    /// Loads the partitions of the internal topic `info` this node leads
    /// (or leads in a new epoch) and unloads the others; then imports the
    /// old node-local log if every partition is loaded here. Called by
    /// [`Broker::apply_image`] once the topic's partitions took their roles.
    pub(crate) fn sync_coordinators(&self, topic: &Topic, info: &TopicInfo) -> Result<()> {
        let Some(kind) = kind_of(&info.name) else { return Ok(()) };
        let count = info.partitions.len();
        let mut result = Ok(());
        for index in (0..).take(count) {
            let local = topic.partition(index);
            let leading = local.as_ref().and_then(|p| p.leader_state()).map(|s| s.leader_epoch);
            let loaded = self.coordinator_epoch(kind, index);
            match (leading, local) {
                (Some(epoch), Some(p)) if loaded != Some(epoch) => {
                    self.unload_coordinator(kind, index);
                    if let Err(e) = self.load_coordinator(kind, index, count, p, epoch) {
                        tracing::error!(topic = %info.name, partition = index, error = %e, "cannot load coordinator partition");
                        result = Err(e);
                    }
                }
                (None, _) if loaded.is_some() => self.unload_coordinator(kind, index),
                _ => {}
            }
        }
        result?;
        self.import_legacy(kind)
    }

    /// Unloads every partition of `topic`, if it is an internal one (it
    /// moved away or is gone).
    pub(crate) fn unload_coordinators(&self, topic: &str) {
        let Some(kind) = kind_of(topic) else { return };
        let loaded = match kind {
            CoordinatorKind::Group => self.groups().loaded(),
            CoordinatorKind::Transaction => self.txns().loaded(),
        };
        for index in loaded {
            self.unload_coordinator(kind, index);
        }
    }

    fn coordinator_epoch(&self, kind: CoordinatorKind, index: i32) -> Option<i32> {
        match kind {
            CoordinatorKind::Group => self.groups().loaded_epoch(index),
            CoordinatorKind::Transaction => self.txns().loaded_epoch(index),
        }
    }

    fn load_coordinator(
        &self,
        kind: CoordinatorKind,
        index: i32,
        count: usize,
        p: Arc<Partition>,
        epoch: i32,
    ) -> Result<()> {
        match kind {
            CoordinatorKind::Group => self.groups().load(index, count, p, epoch),
            CoordinatorKind::Transaction => self.txns().load(index, count, p, epoch),
        }
    }

    fn unload_coordinator(&self, kind: CoordinatorKind, index: i32) {
        match kind {
            CoordinatorKind::Group => self.groups().unload(index),
            CoordinatorKind::Transaction => self.txns().unload(index),
        }
    }

    fn all_loaded(&self, kind: CoordinatorKind) -> bool {
        match kind {
            CoordinatorKind::Group => self.groups().all_loaded(),
            CoordinatorKind::Transaction => self.txns().all_loaded(),
        }
    }

    /// Imports the old node-local log of `kind`, once, when this node
    /// serves every partition of its topic (see the module docs).
    fn import_legacy(&self, kind: CoordinatorKind) -> Result<()> {
        if !lock(&self.legacy_internal).contains(&kind) || !self.all_loaded(kind) {
            return Ok(());
        }
        let dir = legacy_dir(&self.config.data_dir, kind);
        let topic = self.topic(kind.topic()).ok_or(crate::error::BrokerError::UnknownTopicOrPartition)?;
        let count = topic.partition_count();
        let log = internal_log::open(&self.config.data_dir, self.log_manager(), kind.topic())?;
        // The records as (partition, key, value), in log order.
        let mut records: Vec<(i32, Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        internal_log::replay(&log, |key, value| {
            let owner = match kind {
                CoordinatorKind::Group => serde_json::from_slice::<GroupKey>(key).ok().map(|k| k.group().to_string()),
                CoordinatorKind::Transaction => std::str::from_utf8(key).ok().map(str::to_string),
            };
            if let Some(index) = owner.and_then(|o| coordinator_partition(&o, count)) {
                records.push((index, key.to_vec(), value.map(<[u8]>::to_vec)));
            }
        })?;
        log.close()?;
        drop(log);
        let imported = records.len();
        for index in (0..).take(count) {
            let mine: Vec<(&[u8], Option<&[u8]>)> =
                records.iter().filter(|r| r.0 == index).map(|(_, k, v)| (k.as_slice(), v.as_deref())).collect();
            if mine.is_empty() {
                continue;
            }
            let p = topic.partition(index).ok_or(crate::error::BrokerError::NotLeaderOrFollower)?;
            for chunk in mine.chunks(IMPORT_BATCH) {
                internal_log::append_acked(&p, chunk)?.acknowledged_blocking()?;
            }
            let epoch =
                p.leader_state().map(|s| s.leader_epoch).ok_or(crate::error::BrokerError::NotLeaderOrFollower)?;
            self.unload_coordinator(kind, index);
            self.load_coordinator(kind, index, count, p, epoch)?;
        }
        let done = dir.with_file_name(format!("{}.imported", kind.topic()));
        std::fs::rename(&dir, &done)?;
        lock(&self.legacy_internal).retain(|k| *k != kind);
        tracing::info!(topic = kind.topic(), records = imported, "imported the node-local coordinator log");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use ferry_log::LogManager;

    use super::*;
    use crate::broker::BrokerConfig;
    use crate::group::Committed;
    use crate::txn::{TxnMeta, TxnState};

    fn committed(offset: i64) -> Committed {
        Committed { offset, leader_epoch: -1, metadata: None, commit_ms: ferry_util::time::now_ms_u64() }
    }

    /// Writes the node-local logs the coordinators kept before they moved
    /// to the internal topics, in that format: JSON keys and values in
    /// `<data>/internal/<topic>`.
    fn write_old_layout(dir: &Path) {
        let logs = LogManager::new(Default::default());
        let groups = internal_log::open(dir, &logs, GROUP_TOPIC).unwrap();
        let key = |group: &str, partition| {
            serde_json::to_vec(&GroupKey::Offset { group: group.into(), topic: "t".into(), partition }).unwrap()
        };
        let value = |offset| Some(serde_json::to_vec(&committed(offset)).unwrap());
        for (group, partition, offset) in [("g1", 0, 5), ("g1", 1, 7), ("g2", 0, 3), ("g1", 0, 6)] {
            let (k, v) = (key(group, partition), value(offset));
            internal_log::append(&groups, &[(k.as_slice(), v.as_deref())]).unwrap();
        }
        let (k, gone) = (key("g2", 1), value(1));
        internal_log::append(&groups, &[(k.as_slice(), gone.as_deref())]).unwrap();
        internal_log::append(&groups, &[(k.as_slice(), None)]).unwrap();
        let txns = internal_log::open(dir, &logs, TXN_TOPIC).unwrap();
        let meta = TxnMeta {
            producer_id: 17,
            producer_epoch: 3,
            timeout_ms: 60_000,
            state: TxnState::CompleteCommit,
            partitions: BTreeSet::new(),
            groups: BTreeSet::new(),
            offsets: BTreeMap::new(),
            start_ms: 0,
            update_ms: ferry_util::time::now_ms_u64(),
        };
        let v = serde_json::to_vec(&meta).unwrap();
        internal_log::append(&txns, &[(b"tx".as_slice(), Some(v.as_slice()))]).unwrap();
        logs.shutdown();
    }

    fn open(dir: &Path) -> Arc<Broker> {
        crate::testing::open(BrokerConfig { data_dir: dir.to_path_buf(), ..BrokerConfig::default() }).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_old_node_local_offsets_log_is_imported_once() {
        let dir = tempfile::tempdir().unwrap();
        write_old_layout(dir.path());
        let check = |b: &Broker| {
            let g1 = b.groups().committed("g1");
            let offsets: Vec<(i32, i64)> = g1.iter().map(|((_, p), c)| (*p, c.offset)).collect();
            assert_eq!(offsets, vec![(0, 6), (1, 7)], "the last commit of each partition wins");
            let g2 = b.groups().committed("g2");
            assert_eq!(g2.iter().map(|((_, p), c)| (*p, c.offset)).collect::<Vec<_>>(), vec![(0, 3)]);
            let tx = b.txns().describe("tx").unwrap();
            assert_eq!((tx.producer_id, tx.producer_epoch, tx.state), (17, 3, TxnState::CompleteCommit));
        };
        // The import waits for the ISR: off the test's runtime thread.
        let b = tokio::task::block_in_place(|| open(dir.path()));
        check(&b);
        let internal = dir.path().join("internal");
        assert!(!internal.join(GROUP_TOPIC).exists() && !internal.join(TXN_TOPIC).exists());
        assert!(internal.join(format!("{GROUP_TOPIC}.imported")).is_dir());
        // Served from the internal topic now: a commit after the import
        // survives a restart, and the import is not repeated over it.
        let c = Committed { offset: 9, ..committed(0) };
        b.groups().commit("g1", "", -1, vec![("t".into(), 0, c)]).unwrap().acknowledged().await.unwrap();
        b.shutdown();
        drop(b);
        let b = tokio::task::block_in_place(|| open(dir.path()));
        assert_eq!(b.groups().committed("g1").get(&("t".to_string(), 0)).map(|c| c.offset), Some(9));
        assert!(b.txns().describe("tx").is_some());
    }
}
