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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use ferry_util::sync::lock;
use ferry_util::time::now_ms_u64;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::coordinator_partitions::CoordinatorPartitions;
use crate::error::{BrokerError, Result};
use crate::internal_log;
use crate::partition::{Appended, Partition};

use super::GroupError;
use super::classic::{ClassicGroup, ClassicGroupState, Join, JoinResult, SyncResult};
use super::consumer::{ConsumerGroup, Heartbeat, HeartbeatResult, Topics};

/// A committed offset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// The next offset the group will consume.
    pub offset: i64,
    /// The leader epoch of the committed record; -1 if the client did not say.
    pub leader_epoch: i32,
    /// The client's free-form metadata string.
    pub metadata: Option<String>,
    /// Wall-clock ms of the commit.
    pub commit_ms: u64,
}

/// Keys of the internal log.
#[derive(Serialize, Deserialize)]
pub(crate) enum Key {
    Offset { group: String, topic: String, partition: i32 },
    Group { group: String },
}

impl Key {
    /// The group the record belongs to (it decides the record's partition).
    pub(crate) fn group(&self) -> &str {
        match self {
            Key::Offset { group, .. } | Key::Group { group } => group,
        }
    }
}

/// A write to `__consumer_offsets` that happened and is waiting for the
/// ISR; answer the client once it resolves.
pub struct OffsetsWritten(Appended);

impl OffsetsWritten {
    /// Resolves once every ISR member has the records. Losing the
    /// partition's leadership meanwhile is NOT_COORDINATOR.
    pub async fn acknowledged(self) -> std::result::Result<(), GroupError> {
        self.0.acknowledged().await.map(|_| ()).map_err(ack_error)
    }

    /// [`OffsetsWritten::acknowledged`] for a blocking thread.
    pub fn acknowledged_blocking(self) -> std::result::Result<(), GroupError> {
        self.0.acknowledged_blocking().map(|_| ()).map_err(ack_error)
    }
}

fn ack_error(e: BrokerError) -> GroupError {
    match e {
        BrokerError::NotLeaderOrFollower | BrokerError::Log(ferry_log::LogError::Unavailable(_)) => {
            GroupError::NotCoordinator
        }
        e => {
            tracing::warn!(error = %e, "offsets write failed");
            GroupError::CoordinatorNotAvailable
        }
    }
}

#[derive(Serialize, Deserialize)]
struct GroupRecord {
    generation: i32,
    protocol_type: Option<String>,
}

/// A member as DescribeGroups shows it.
pub struct MemberDescription {
    /// The member id the coordinator assigned.
    pub member_id: String,
    /// The group instance id of a static member.
    pub instance_id: Option<String>,
    /// The client id from the member's request header.
    pub client_id: String,
    /// The address the member connected from.
    pub client_host: String,
    /// The member's metadata for the group's chosen protocol; empty if none.
    pub metadata: Vec<u8>,
    /// The member's assignment from the last SyncGroup.
    pub assignment: Vec<u8>,
}

/// A classic group as DescribeGroups shows it.
pub struct GroupDescription {
    /// The group's state; DescribeGroups reports its name.
    pub state: ClassicGroupState,
    /// The protocol type; empty if the group has none.
    pub protocol_type: String,
    /// The chosen protocol (assignor); empty if none was chosen.
    pub protocol: String,
    /// The current generation; 0 before the first completed rebalance.
    pub generation: i32,
    /// The members, in member id order.
    pub members: Vec<MemberDescription>,
}

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

/// A group's committed offsets by (topic, partition).
pub type GroupOffsets = BTreeMap<(String, i32), Committed>;

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

    /// Runs `f` on the group (created if missing), persisting a generation
    /// change; `None` if this node does not serve the group (checked under
    /// the groups lock, so an unload cannot miss a group created here).
    fn with_group<R>(&self, id: &str, f: impl FnOnce(&mut ClassicGroup) -> R) -> Option<R> {
        let mut groups = lock(&self.groups);
        if !self.parts.serves(id) {
            return None;
        }
        let g = groups.entry(id.to_string()).or_insert_with(|| ClassicGroup::new(id, 0, None, now_ms_u64()));
        let generation = g.generation;
        let r = f(g);
        if g.generation != generation {
            self.persist_generation(g);
        }
        Some(r)
    }

    /// Handles a JoinGroup, creating the classic group if missing; joins whose
    /// session timeout is outside the configured bounds get INVALID_SESSION_TIMEOUT.
    pub fn join(&self, group: &str, j: Join) -> oneshot::Receiver<JoinResult> {
        if j.session_timeout < self.config.min_session_timeout || j.session_timeout > self.config.max_session_timeout {
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(JoinResult {
                error: Some(GroupError::InvalidSessionTimeout),
                generation: -1,
                ..Default::default()
            });
            return rx;
        }
        let delay = self.config.initial_rebalance_delay;
        self.with_group(group, |g| g.join(j, Instant::now(), delay)).unwrap_or_else(|| {
            let (tx, rx) = oneshot::channel();
            let _ =
                tx.send(JoinResult { error: Some(GroupError::NotCoordinator), generation: -1, ..Default::default() });
            rx
        })
    }

    /// Handles a SyncGroup; the answer arrives once the leader's assignment has.
    pub fn sync(
        &self,
        group: &str,
        member: &str,
        generation: i32,
        assignments: Vec<(String, Vec<u8>)>,
    ) -> oneshot::Receiver<SyncResult> {
        self.with_group(group, |g| g.sync(member, generation, assignments, Instant::now())).unwrap_or_else(|| {
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(SyncResult { error: Some(GroupError::NotCoordinator), ..Default::default() });
            rx
        })
    }

    /// Handles a classic Heartbeat; `None` means the member is in good standing.
    pub fn heartbeat(&self, group: &str, member: &str, generation: i32) -> Option<GroupError> {
        match lock(&self.groups).get_mut(group) {
            Some(g) => g.heartbeat(member, generation, Instant::now()),
            None if !self.parts.serves(group) => Some(GroupError::NotCoordinator),
            None => Some(GroupError::UnknownMemberId),
        }
    }

    /// Handles a LeaveGroup of one member, by member id or static instance id.
    pub fn leave(&self, group: &str, member: &str, instance: Option<&str>) -> Option<GroupError> {
        let mut groups = lock(&self.groups);
        let Some(g) = groups.get_mut(group) else {
            return Some(if self.parts.serves(group) {
                GroupError::UnknownMemberId
            } else {
                GroupError::NotCoordinator
            });
        };
        let generation = g.generation;
        let r = g.leave(member, instance, Instant::now());
        if g.generation != generation {
            self.persist_generation(g);
        }
        r
    }

    /// A KIP-848 heartbeat; `topics` shows the group the topics it may subscribe to.
    /// Refused while a classic group of that name has members.
    pub fn consumer_heartbeat(
        &self,
        group: &str,
        hb: Heartbeat,
        topics: &Topics,
    ) -> std::result::Result<HeartbeatResult, GroupError> {
        if lock(&self.groups).get(group).is_some_and(|g| !g.members.is_empty()) {
            // A classic group of that name is active.
            return Err(GroupError::InconsistentGroupProtocol);
        }
        let mut groups = lock(&self.consumer_groups);
        if !self.parts.serves(group) {
            return Err(GroupError::NotCoordinator);
        }
        let g = groups.entry(group.to_string()).or_insert_with(|| ConsumerGroup::new(group, 0));
        g.heartbeat(hb, Instant::now(), topics)
    }

    /// The heartbeat interval KIP-848 members are told to keep.
    pub fn consumer_heartbeat_interval(&self) -> Duration {
        self.config.consumer_heartbeat_interval
    }

    /// Runs `f` on a KIP-848 group, if it exists.
    pub fn with_consumer_group<R>(&self, group: &str, f: impl FnOnce(&ConsumerGroup) -> R) -> Option<R> {
        lock(&self.consumer_groups).get(group).map(f)
    }

    /// Commits offsets: checks the member and generation and writes them
    /// to the group's partition; answer once the write is acknowledged.
    pub fn commit(
        &self,
        group: &str,
        member: &str,
        generation: i32,
        offsets: Vec<(String, i32, Committed)>,
    ) -> std::result::Result<OffsetsWritten, GroupError> {
        self.check_member(group, member, generation)?;
        self.store_offsets(group, offsets)
    }

    /// Checks that `member` of `generation` may commit for `group` (a
    /// generation below 0 commits from outside any group, which creates it).
    pub fn check_member(&self, group: &str, member: &str, generation: i32) -> std::result::Result<(), GroupError> {
        let consumer_group = lock(&self.consumer_groups)
            .get(group)
            .filter(|g| !g.members.is_empty())
            .map(|g| g.check_commit(member, generation));
        if let Some(check) = consumer_group {
            if let Some(e) = check {
                return Err(e);
            }
        } else {
            // Lock order everywhere: groups, then offsets.
            let mut groups = lock(&self.groups);
            match groups.get(group) {
                Some(g) => {
                    if let Some(e) = g.check_commit(member, generation) {
                        return Err(e);
                    }
                }
                // A group member commits for a group this broker never saw.
                None if !self.parts.serves(group) => return Err(GroupError::NotCoordinator),
                None if generation >= 0 => return Err(GroupError::IllegalGeneration),
                None => {
                    groups.insert(group.to_string(), ClassicGroup::new(group, 0, None, now_ms_u64()));
                }
            }
        }
        Ok(())
    }

    /// Writes offsets without a membership check (a committed transaction's
    /// offsets, checked when they were sent); answer once the write is
    /// acknowledged.
    pub fn store_offsets(
        &self,
        group: &str,
        offsets: Vec<(String, i32, Committed)>,
    ) -> std::result::Result<OffsetsWritten, GroupError> {
        let records: Vec<(Key, Option<Vec<u8>>)> = offsets
            .iter()
            .map(|(t, p, c)| {
                (Key::Offset { group: group.to_string(), topic: t.clone(), partition: *p }, serde_json::to_vec(c).ok())
            })
            .collect();
        // Under the offsets lock, so the map and the log agree on the order
        // of concurrent commits.
        let mut all = lock(&self.offsets);
        let written = self.write(group, &records)?;
        let map = all.entry(group.to_string()).or_default();
        for (t, p, c) in offsets {
            map.insert((t, p), c);
        }
        Ok(OffsetsWritten(written))
    }

    /// All committed offsets of a group; empty if it has none.
    pub fn committed(&self, group: &str) -> GroupOffsets {
        lock(&self.offsets).get(group).cloned().unwrap_or_default()
    }

    /// (group id, protocol type, state name, group type) of every group.
    pub fn list(&self) -> Vec<(String, String, &'static str, &'static str)> {
        let mut out: Vec<_> = lock(&self.groups)
            .values()
            .map(|g| (g.id.clone(), g.protocol_type.clone().unwrap_or_default(), g.state.name(), "classic"))
            .collect();
        out.extend(
            lock(&self.consumer_groups).values().map(|g| (g.id.clone(), "consumer".to_string(), g.state(), "consumer")),
        );
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Describes a classic group; `None` if there is none of that name.
    pub fn describe(&self, group: &str) -> Option<GroupDescription> {
        let groups = lock(&self.groups);
        let g = groups.get(group)?;
        Some(GroupDescription {
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: g.protocol.clone().unwrap_or_default(),
            generation: g.generation,
            members: g
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m
                        .protocols
                        .iter()
                        .find(|(n, _)| Some(n) == g.protocol.as_ref())
                        .map(|(_, d)| d.clone())
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    /// Deletes an empty group and its offsets.
    pub fn delete_group(&self, group: &str) -> std::result::Result<(), GroupError> {
        let mut groups = lock(&self.groups);
        if !self.parts.serves(group) {
            return Err(GroupError::NotCoordinator);
        }
        let known = groups.contains_key(group) || lock(&self.offsets).contains_key(group);
        if !known {
            return Err(GroupError::GroupIdNotFound);
        }
        if groups.get(group).is_some_and(|g| !g.members.is_empty()) {
            return Err(GroupError::NonEmptyGroup);
        }
        groups.remove(group);
        drop(groups);
        let offsets = lock(&self.offsets).remove(group).unwrap_or_default();
        let mut tombstones: Vec<(Key, Option<Vec<u8>>)> = offsets
            .into_keys()
            .map(|(topic, partition)| (Key::Offset { group: group.to_string(), topic, partition }, None))
            .collect();
        tombstones.push((Key::Group { group: group.to_string() }, None));
        self.write(group, &tombstones)?;
        Ok(())
    }

    /// Deletes some offsets of a group (OffsetDelete); the caller refuses
    /// topics the group is consuming.
    pub fn delete_offsets(&self, group: &str, partitions: &[(String, i32)]) -> Result<()> {
        if !self.parts.serves(group) {
            return Err(GroupError::NotCoordinator.into());
        }
        let mut all = lock(&self.offsets);
        let Some(map) = all.get_mut(group) else { return Ok(()) };
        let mut tombstones = Vec::new();
        for (t, p) in partitions {
            if map.remove(&(t.clone(), *p)).is_some() {
                tombstones.push((Key::Offset { group: group.to_string(), topic: t.clone(), partition: *p }, None));
            }
        }
        drop(all);
        if !tombstones.is_empty() {
            self.write(group, &tombstones)?;
        }
        Ok(())
    }

    /// Members of a group now (classic or KIP-848).
    pub fn member_count(&self, group: &str) -> usize {
        if let Some(n) = lock(&self.consumer_groups).get(group).map(|g| g.members.len()) {
            return n;
        }
        lock(&self.groups).get(group).map_or(0, |g| g.members.len())
    }

    /// Whether a group exists (has state or offsets).
    pub fn exists(&self, group: &str) -> bool {
        if lock(&self.consumer_groups).contains_key(group) {
            return true;
        }
        lock(&self.groups).contains_key(group) || lock(&self.offsets).contains_key(group)
    }

    /// Expires silent KIP-848 members and has the groups follow topics
    /// being created and growing.
    pub fn expire_consumer_members(&self, topics: &Topics) {
        let now = Instant::now();
        for g in lock(&self.consumer_groups).values_mut() {
            g.expire(now, self.config.consumer_session_timeout, topics);
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::broker::{Broker, BrokerConfig};
    use crate::metadata::{GROUP_TOPIC, MetadataRecord, coordinator_partition};
    use crate::testing::{INTERNAL_PARTITIONS, TestController};

    fn open(dir: &Path, retention_ms: u64) -> (Arc<Broker>, Arc<TestController>) {
        let groups = CoordinatorConfig {
            initial_rebalance_delay: Duration::ZERO,
            offsets_retention_ms: retention_ms,
            ..CoordinatorConfig::default()
        };
        let b = Broker::open(BrokerConfig { data_dir: dir.to_path_buf(), groups, ..BrokerConfig::default() }).unwrap();
        let controller = crate::testing::install(&b);
        (b, controller)
    }

    fn committed(offset: i64) -> Committed {
        Committed { offset, leader_epoch: -1, metadata: Some("m".into()), commit_ms: now_ms_u64() }
    }

    fn join(member: &str) -> Join {
        Join {
            member_id: member.into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(10),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), vec![1])],
            require_known_member_id: false,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn offsets_and_generations_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (b, _) = open(dir.path(), u64::MAX);
        let c = b.groups().clone();
        let joined = c.join("g", join("")).await.unwrap();
        assert_eq!((joined.error, joined.generation), (None, 1));
        let written = c.commit("g", &joined.member_id, 1, vec![("t".into(), 0, committed(42))]).unwrap();
        written.acknowledged().await.unwrap();
        // A stale generation is refused; a simple consumer may not commit
        // into a group with members.
        assert_eq!(c.commit("g", &joined.member_id, 0, vec![]).err(), Some(GroupError::IllegalGeneration));
        assert_eq!(c.commit("g", "", -1, vec![]).err(), Some(GroupError::UnknownMemberId));
        assert_eq!(c.delete_group("g"), Err(GroupError::NonEmptyGroup));
        b.shutdown();
        drop((c, b));
        let (b, _) = open(dir.path(), u64::MAX);
        let c = b.groups().clone();
        assert_eq!(c.committed("g").get(&("t".to_string(), 0)).map(|x| x.offset), Some(42));
        // The generation goes on from where it was.
        let rejoined = c.join("g", join("")).await.unwrap();
        assert_eq!(rejoined.generation, 2);
        assert_eq!(c.leave("g", &rejoined.member_id, None), None);
        c.delete_group("g").unwrap();
        assert_eq!(c.delete_group("g"), Err(GroupError::GroupIdNotFound));
        b.shutdown();
        drop((c, b));
        let (b, _) = open(dir.path(), u64::MAX);
        assert!(b.groups().committed("g").is_empty(), "deleted groups stay deleted");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn offsets_of_empty_groups_expire() {
        let dir = tempfile::tempdir().unwrap();
        let (b, _) = open(dir.path(), 0);
        let c = b.groups().clone();
        c.commit("simple", "", -1, vec![("t".into(), 0, committed(7))]).unwrap();
        let joined = c.join("busy", join("")).await.unwrap();
        c.commit("busy", &joined.member_id, joined.generation, vec![("t".into(), 0, committed(9))]).unwrap();
        std::thread::sleep(Duration::from_millis(10));
        c.tick();
        assert!(c.committed("simple").is_empty(), "an empty group's offsets expire");
        assert_eq!(c.committed("busy").len(), 1, "a group with members keeps its offsets");
    }

    /// Moves the leadership of `group`'s `__consumer_offsets` partition
    /// (-1: none), as the controller does when its leader dies.
    fn lead(controller: &TestController, group: &str, leader: i32) {
        let image = controller.image();
        let topic = image.topic(GROUP_TOPIC).unwrap();
        let partition = coordinator_partition(group, INTERNAL_PARTITIONS).unwrap();
        let isr = if leader < 0 { vec![] } else { vec![leader] };
        controller
            .apply(vec![MetadataRecord::PartitionChange {
                topic_id: topic.id,
                partition,
                leader,
                isr,
                replicas: None,
                elr: None,
            }])
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn groups_unload_with_leadership_and_reload_from_the_partition() {
        let dir = tempfile::tempdir().unwrap();
        let (b, controller) = open(dir.path(), u64::MAX);
        let c = b.groups().clone();
        // Two groups on different partitions.
        let other = (0..100)
            .map(|i| format!("other-{i}"))
            .find(|g| coordinator_partition(g, INTERNAL_PARTITIONS) != coordinator_partition("g", INTERNAL_PARTITIONS))
            .unwrap();
        let joined = c.join("g", join("")).await.unwrap();
        c.commit("g", &joined.member_id, 1, vec![("t".into(), 0, committed(5))]).unwrap().acknowledged().await.unwrap();
        c.commit(&other, "", -1, vec![("t".into(), 0, committed(8))]).unwrap().acknowledged().await.unwrap();
        let heartbeat_rx = c.sync("g", &joined.member_id, 1, vec![]);
        assert_eq!(heartbeat_rx.await.unwrap().error, None);

        // The partition loses its leader: the group leaves memory and every
        // request for it is refused with NOT_COORDINATOR; the other stays.
        tokio::task::block_in_place(|| lead(&controller, "g", -1));
        assert!(!c.serves("g") && c.serves(&other));
        assert!(!b.coordinates(crate::metadata::CoordinatorKind::Group, "g"));
        assert!(c.committed("g").is_empty() && c.describe("g").is_none());
        assert_eq!(c.heartbeat("g", &joined.member_id, 1), Some(GroupError::NotCoordinator));
        assert_eq!(c.commit("g", "", -1, vec![]).err(), Some(GroupError::NotCoordinator));
        assert_eq!(c.join("g", join("")).await.unwrap().error, Some(GroupError::NotCoordinator));
        assert_eq!(c.committed(&other).len(), 1);

        // Led here again (a new leader epoch): reloaded from the partition,
        // offsets and generation as committed.
        tokio::task::block_in_place(|| lead(&controller, "g", 1));
        assert!(c.serves("g") && b.coordinates(crate::metadata::CoordinatorKind::Group, "g"));
        assert_eq!(c.committed("g").get(&("t".to_string(), 0)).map(|x| x.offset), Some(5));
        assert_eq!(c.describe("g").unwrap().generation, 1);
        assert_eq!(c.heartbeat("g", &joined.member_id, 1), Some(GroupError::UnknownMemberId), "members rejoin");
        assert_eq!(c.join("g", join("")).await.unwrap().generation, 2);
    }

    fn hb(member: &str, epoch: i32) -> Heartbeat {
        Heartbeat {
            member_id: member.into(),
            member_epoch: epoch,
            instance_id: None,
            rack_id: None,
            client_id: "c".into(),
            client_host: "h".into(),
            subscribed: (epoch == 0).then(|| vec!["t".to_string()]),
            regex: None,
            owned: Some(vec![]),
            server_assignor: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kip_848_members_are_fenced_by_a_new_coordinator_and_rejoin() {
        let dir = tempfile::tempdir().unwrap();
        let (b, controller) = open(dir.path(), u64::MAX);
        let c = b.groups().clone();
        let four = |_: &str| 4;
        let no_names = Vec::new;
        let topics = Topics { partitions: &four, names: &no_names };
        let a = c.consumer_heartbeat("g", hb("a", 0), &topics).unwrap();
        let a = c.consumer_heartbeat("g", hb("a", a.member_epoch), &topics).unwrap();
        let epoch = a.member_epoch;
        assert!(epoch > 0);
        c.commit("g", "a", epoch, vec![("t".into(), 0, committed(5))]).unwrap().acknowledged().await.unwrap();

        // The coordinator moves away and back (a new leader epoch): members
        // are not stored, so the new term fences every one of them.
        tokio::task::block_in_place(|| lead(&controller, "g", -1));
        assert_eq!(c.consumer_heartbeat("g", hb("a", epoch), &topics).err(), Some(GroupError::NotCoordinator));
        tokio::task::block_in_place(|| lead(&controller, "g", 1));
        assert!(c.with_consumer_group("g", |_| ()).is_none(), "no KIP-848 state survives the move");
        // UNKNOWN_MEMBER_ID: the client drops its partitions and rejoins
        // with epoch 0; a commit from its old term is refused meanwhile.
        assert_eq!(c.consumer_heartbeat("g", hb("a", epoch), &topics).err(), Some(GroupError::UnknownMemberId));
        assert!(c.commit("g", "a", epoch, vec![("t".into(), 0, committed(99))]).is_err());
        let b2 = c.consumer_heartbeat("g", hb("b", 0), &topics).unwrap();
        assert_eq!(
            c.commit("g", "a", epoch, vec![("t".into(), 0, committed(99))]).err(),
            Some(GroupError::UnknownMemberId)
        );
        let a = c.consumer_heartbeat("g", hb("a", 0), &topics).unwrap();
        assert!(a.member_epoch > 0 && b2.member_epoch > 0);
        // The committed offsets are the old term's, untouched by the stale commits.
        assert_eq!(c.committed("g").get(&("t".to_string(), 0)).map(|x| x.offset), Some(5));
        // The rejoined members share the partitions again.
        let mut owned = std::collections::BTreeSet::new();
        for _ in 0..4 {
            for m in ["a", "b"] {
                let e = c.with_consumer_group("g", |g| g.members[m].epoch).unwrap();
                let r = c.consumer_heartbeat("g", hb(m, e), &topics).unwrap();
                if let Some(assigned) = r.assignment {
                    owned.retain(|(member, _)| *member != m);
                    owned.extend(assigned.into_iter().map(|p| (m, p)));
                }
            }
        }
        let partitions: std::collections::BTreeSet<_> = owned.iter().map(|(_, p)| p.clone()).collect();
        assert_eq!((owned.len(), partitions.len()), (4, 4), "each partition owned once: {owned:?}");
    }
}
