//! The group coordinator: consumer groups and their committed offsets.
//!
//! Committed offsets and each group's generation are records of the
//! replicated, compacted `__consumer_offsets` topic, keyed per group and
//! partition, as Kafka keeps them; a group lives in the partition its id
//! hashes to. When this node becomes a partition's leader, the broker
//! [`loads`](GroupCoordinator::load) it (replays it into the in-memory
//! maps) and this node serves its groups; when it stops leading, the
//! partition is [`unloaded`](GroupCoordinator::unload) and its groups'
//! requests get NOT_COORDINATOR. Writes are acks=all appends: a commit is
//! answered once its record is on every ISR member. A ticker thread drives
//! timeouts (sessions, rebalances) and expires the offsets of groups left
//! empty past `offsets.retention.minutes`.

//!
//! The coordinator's parts, one file each: `records` (the keys and values
//! of `__consumer_offsets`), `offsets` (commits and committed offsets),
//! `classic_requests` (JoinGroup, SyncGroup, Heartbeat, LeaveGroup),
//! `consumer_requests` (KIP-848 heartbeats), `describe` (listing,
//! describing and deleting groups). This file holds the coordinator itself:
//! loading and unloading partitions, writes, and the ticker.

mod classic_requests;
mod consumer_requests;
mod describe;
mod offsets;
mod records;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use ferry_util::sync::lock;
use ferry_util::time::now_ms_u64;

use crate::coordinator_partitions::CoordinatorPartitions;
use crate::error::{BrokerError, Result};
use crate::internal_log;
use crate::partition::{Appended, Partition};

pub use describe::{GroupDescription, MemberDescription};
pub use offsets::{Committed, GroupOffsets, OffsetsWritten};
use records::GroupRecord;
pub(crate) use records::Key;

use super::GroupError;
use super::classic::{ClassicGroup, ClassicGroupState};
use super::consumer::ConsumerGroup;

/// Settings of the coordinator.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// `group.initial.rebalance.delay.ms`.
    pub initial_rebalance_delay: Duration,
    /// `offsets.retention.minutes`, in ms.
    pub offsets_retention_ms: u64,
    /// `group.min.session.timeout.ms`: joins asking for less are refused.
    pub min_session_timeout: Duration,
    /// `group.max.session.timeout.ms`: joins asking for more are refused.
    pub max_session_timeout: Duration,
    /// `group.consumer.session.timeout.ms` (KIP-848 groups).
    pub consumer_session_timeout: Duration,
    /// `group.consumer.heartbeat.interval.ms` (KIP-848 groups).
    pub consumer_heartbeat_interval: Duration,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            initial_rebalance_delay: Duration::from_millis(3000),
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            min_session_timeout: Duration::from_millis(6000),
            max_session_timeout: Duration::from_millis(1_800_000),
            consumer_session_timeout: Duration::from_millis(45_000),
            consumer_heartbeat_interval: Duration::from_millis(5_000),
        }
    }
}

/// Owns every consumer group, classic and KIP-848, and their committed offsets.
pub struct GroupCoordinator {
    config: CoordinatorConfig,
    /// KIP-848 groups (ConsumerGroupHeartbeat), apart from classic ones.
    consumer_groups: Mutex<HashMap<String, ConsumerGroup>>,
    groups: Mutex<HashMap<String, ClassicGroup>>,
    offsets: Mutex<HashMap<String, GroupOffsets>>,
    /// The `__consumer_offsets` partitions served here.
    parts: CoordinatorPartitions,
}

impl GroupCoordinator {
    /// A coordinator serving no partition yet (see [`GroupCoordinator::load`]).
    pub fn open(config: CoordinatorConfig) -> Result<Arc<GroupCoordinator>> {
        let coordinator = Arc::new(GroupCoordinator {
            config,
            consumer_groups: Mutex::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
            offsets: Mutex::new(HashMap::new()),
            parts: CoordinatorPartitions::default(),
        });
        let weak = Arc::downgrade(&coordinator);
        std::thread::Builder::new().name("ferry-groups".into()).spawn(move || ticker(weak))?;
        Ok(coordinator)
    }

    /// Loads partition `index` (of `count`) of `__consumer_offsets`, which
    /// this node now leads in `leader_epoch`: replays its log (to its local
    /// end, which as leader it will commit) into groups and offsets, then
    /// serves the groups that hash to it. Call from a blocking thread.
    pub(crate) fn load(&self, index: i32, count: usize, partition: Arc<Partition>, leader_epoch: i32) -> Result<()> {
        // What it appended as a follower and not yet flushed is part of it.
        partition.flush_local()?;
        let mut groups = HashMap::new();
        let mut offsets: HashMap<String, GroupOffsets> = HashMap::new();
        let now = now_ms_u64();
        internal_log::replay(partition.log(), |key, value| {
            let Ok(key) = serde_json::from_slice::<Key>(key) else { return };
            match key {
                Key::Offset { group, topic, partition } => {
                    let map = offsets.entry(group).or_default();
                    match value.and_then(|v| serde_json::from_slice::<Committed>(v).ok()) {
                        Some(c) => map.insert((topic, partition), c),
                        None => map.remove(&(topic, partition)),
                    };
                }
                Key::Group { group } => match value.and_then(|v| serde_json::from_slice::<GroupRecord>(v).ok()) {
                    Some(g) => {
                        groups.insert(group.clone(), ClassicGroup::new(&group, g.generation, g.protocol_type, now));
                    }
                    None => {
                        groups.remove(&group);
                    }
                },
            }
        })?;
        offsets.retain(|_, m| !m.is_empty());
        let mine = |g: &str| crate::metadata::coordinator_partition(g, count) == Some(index);
        groups.retain(|g, _| mine(g));
        offsets.retain(|g, _| mine(g));
        // Whatever an earlier term left in memory goes; the log is the truth.
        self.drop_groups(|g| mine(g));
        lock(&self.groups).extend(groups);
        lock(&self.offsets).extend(offsets);
        self.parts.insert(index, count, partition, leader_epoch);
        tracing::info!(partition = index, epoch = leader_epoch, "loaded group coordinator partition");
        Ok(())
    }

    /// Stops serving partition `index`: its groups leave memory (their
    /// members' pending joins end), and their requests get NOT_COORDINATOR.
    pub(crate) fn unload(&self, index: i32) {
        if !self.parts.remove(index) {
            return;
        }
        let count = self.parts.count();
        self.drop_groups(|g| crate::metadata::coordinator_partition(g, count) == Some(index));
        tracing::info!(partition = index, "unloaded group coordinator partition");
    }

    /// The leader epoch partition `index` was loaded in, if it is.
    pub(crate) fn loaded_epoch(&self, index: i32) -> Option<i32> {
        self.parts.epoch(index)
    }

    /// Indexes of the loaded partitions.
    pub(crate) fn loaded(&self) -> Vec<i32> {
        self.parts.indexes()
    }

    /// Whether every `__consumer_offsets` partition is served here.
    pub(crate) fn all_loaded(&self) -> bool {
        self.parts.all_loaded()
    }

    /// Whether this node serves `group` now (its partition is loaded).
    pub fn serves(&self, group: &str) -> bool {
        self.parts.serves(group)
    }

    /// Removes the groups for which `which` holds from every map (lock
    /// order: groups, consumer groups, offsets; each taken alone).
    fn drop_groups(&self, which: impl Fn(&str) -> bool) {
        lock(&self.groups).retain(|g, _| !which(g));
        lock(&self.consumer_groups).retain(|g, _| !which(g));
        lock(&self.offsets).retain(|g, _| !which(g));
    }

    /// Appends records of `group` to its partition (acks=all).
    fn write(&self, group: &str, records: &[(Key, Option<Vec<u8>>)]) -> std::result::Result<Appended, GroupError> {
        let partition = self.parts.get(group).ok_or(GroupError::NotCoordinator)?;
        let keys: Vec<Vec<u8>> = records.iter().map(|(k, _)| serde_json::to_vec(k).unwrap_or_default()).collect();
        let recs: Vec<(&[u8], Option<&[u8]>)> =
            records.iter().zip(&keys).map(|((_, v), k)| (k.as_slice(), v.as_deref())).collect();
        internal_log::append_acked(&partition, &recs).map_err(|e| match e {
            BrokerError::NotLeaderOrFollower => GroupError::NotCoordinator,
            e => {
                tracing::error!(group, error = %e, "offsets write failed");
                GroupError::CoordinatorNotAvailable
            }
        })
    }

    fn persist_generation(&self, g: &ClassicGroup) {
        let value =
            serde_json::to_vec(&GroupRecord { generation: g.generation, protocol_type: g.protocol_type.clone() }).ok();
        if let Err(e) = self.write(&g.id, &[(Key::Group { group: g.id.clone() }, value)]) {
            tracing::warn!(group = %g.id, error = ?e, "could not persist group generation");
        }
    }

    fn tick(&self) {
        let now = Instant::now();
        let ms = now_ms_u64();
        let mut expired = Vec::new();
        {
            let mut groups = lock(&self.groups);
            for g in groups.values_mut() {
                if g.tick(now, ms) {
                    self.persist_generation(g);
                }
                if g.state == ClassicGroupState::Empty
                    && g.empty_since_ms.saturating_add(self.config.offsets_retention_ms) < ms
                {
                    expired.push(g.id.clone());
                }
            }
        }
        for group in expired {
            if lock(&self.offsets).contains_key(&group) {
                tracing::info!(group, "expiring offsets of an empty group");
                let _ = self.delete_group(&group);
            }
        }
    }
}

fn ticker(weak: Weak<GroupCoordinator>) {
    loop {
        std::thread::sleep(Duration::from_millis(100));
        match weak.upgrade() {
            Some(c) => c.tick(),
            None => return,
        }
    }
}
