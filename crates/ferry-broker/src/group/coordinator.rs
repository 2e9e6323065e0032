//! The group coordinator: consumer groups and their committed offsets.
//!
//! Committed offsets and each group's generation are records in an internal
//! compacted log (`<data>/internal/__consumer_offsets`), keyed per group and
//! partition, as Kafka keeps them; the in-memory maps are rebuilt from it at
//! start. A ticker thread drives timeouts (sessions, rebalances) and expires
//! the offsets of groups left empty past `offsets.retention.minutes`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use ferry_log::{Log, LogManager};
use ferry_util::sync::lock;
use ferry_util::time::now_ms_u64;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::error::Result;
use crate::internal_log;

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
enum Key {
    Offset { group: String, topic: String, partition: i32 },
    Group { group: String },
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
    log: Arc<Log>,
}

impl GroupCoordinator {
    /// Opens the internal log and rebuilds groups and offsets from it.
    pub fn open(data_dir: &Path, logs: &LogManager, config: CoordinatorConfig) -> Result<Arc<GroupCoordinator>> {
        let log = internal_log::open(data_dir, logs, "__consumer_offsets")?;
        let mut groups = HashMap::new();
        let mut offsets: HashMap<String, GroupOffsets> = HashMap::new();
        let now = now_ms_u64();
        internal_log::replay(&log, |key, value| {
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
        let coordinator = Arc::new(GroupCoordinator {
            config,
            consumer_groups: Mutex::new(HashMap::new()),
            groups: Mutex::new(groups),
            offsets: Mutex::new(offsets),
            log,
        });
        let weak = Arc::downgrade(&coordinator);
        std::thread::Builder::new().name("ferry-groups".into()).spawn(move || ticker(weak))?;
        Ok(coordinator)
    }

    fn write(&self, records: &[(Key, Option<Vec<u8>>)]) -> Result<u64> {
        let keys: Vec<Vec<u8>> = records.iter().map(|(k, _)| serde_json::to_vec(k).unwrap_or_default()).collect();
        let recs: Vec<(&[u8], Option<&[u8]>)> =
            records.iter().zip(&keys).map(|((_, v), k)| (k.as_slice(), v.as_deref())).collect();
        internal_log::append(&self.log, &recs)
    }

    fn persist_generation(&self, g: &ClassicGroup) {
        let value =
            serde_json::to_vec(&GroupRecord { generation: g.generation, protocol_type: g.protocol_type.clone() }).ok();
        if let Err(e) = self.write(&[(Key::Group { group: g.id.clone() }, value)]) {
            tracing::warn!(group = %g.id, error = %e, "could not persist group generation");
        }
    }

    /// Runs `f` on the group (created if missing), persisting a generation change.
    fn with_group<R>(&self, id: &str, f: impl FnOnce(&mut ClassicGroup) -> R) -> R {
        let mut groups = lock(&self.groups);
        let g = groups.entry(id.to_string()).or_insert_with(|| ClassicGroup::new(id, 0, None, now_ms_u64()));
        let generation = g.generation;
        let r = f(g);
        if g.generation != generation {
            self.persist_generation(g);
        }
        r
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
        self.with_group(group, |g| g.join(j, Instant::now(), delay))
    }

    /// Handles a SyncGroup; the answer arrives once the leader's assignment has.
    pub fn sync(
        &self,
        group: &str,
        member: &str,
        generation: i32,
        assignments: Vec<(String, Vec<u8>)>,
    ) -> oneshot::Receiver<SyncResult> {
        self.with_group(group, |g| g.sync(member, generation, assignments, Instant::now()))
    }

    /// Handles a classic Heartbeat; `None` means the member is in good standing.
    pub fn heartbeat(&self, group: &str, member: &str, generation: i32) -> Option<GroupError> {
        match lock(&self.groups).get_mut(group) {
            Some(g) => g.heartbeat(member, generation, Instant::now()),
            None => Some(GroupError::UnknownMemberId),
        }
    }

    /// Handles a LeaveGroup of one member, by member id or static instance id.
    pub fn leave(&self, group: &str, member: &str, instance: Option<&str>) -> Option<GroupError> {
        let mut groups = lock(&self.groups);
        let Some(g) = groups.get_mut(group) else { return Some(GroupError::UnknownMemberId) };
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

    /// Commits offsets: checks the member and generation, writes them to
    /// the internal log and returns the offset that must be durable before
    /// answering.
    pub fn commit(
        &self,
        group: &str,
        member: &str,
        generation: i32,
        offsets: Vec<(String, i32, Committed)>,
    ) -> std::result::Result<u64, GroupError> {
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
                None if generation >= 0 => return Err(GroupError::IllegalGeneration),
                None => {
                    groups.insert(group.to_string(), ClassicGroup::new(group, 0, None, now_ms_u64()));
                }
            }
        }
        Ok(())
    }

    /// Writes offsets without a membership check (a committed transaction's
    /// offsets, checked when they were sent) and returns the offset that
    /// must be durable before answering.
    pub fn store_offsets(
        &self,
        group: &str,
        offsets: Vec<(String, i32, Committed)>,
    ) -> std::result::Result<u64, GroupError> {
        let records: Vec<(Key, Option<Vec<u8>>)> = offsets
            .iter()
            .map(|(t, p, c)| {
                (Key::Offset { group: group.to_string(), topic: t.clone(), partition: *p }, serde_json::to_vec(c).ok())
            })
            .collect();
        let end = self.write(&records).map_err(|e| {
            tracing::error!(group, error = %e, "offset commit failed");
            GroupError::CoordinatorNotAvailable
        })?;
        let mut all = lock(&self.offsets);
        let map = all.entry(group.to_string()).or_default();
        for (t, p, c) in offsets {
            map.insert((t, p), c);
        }
        Ok(end)
    }

    /// Blocks until offsets below `end` in the internal log are on disk
    /// (for callers outside the async runtime).
    pub fn wait_durable(&self, end: u64) -> Result<()> {
        Ok(self.log.flush_to(end)?)
    }

    /// Resolves once offsets below `end` in the internal log are on disk.
    pub fn durable(&self, end: u64) -> oneshot::Receiver<ferry_log::Result<()>> {
        let (tx, rx) = oneshot::channel();
        self.log.on_durable(end, move |r| {
            let _ = tx.send(r);
        });
        rx
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
        self.write(&tombstones).map_err(|_| GroupError::CoordinatorNotAvailable)?;
        Ok(())
    }

    /// Deletes some offsets of a group (OffsetDelete); the caller refuses
    /// topics the group is consuming.
    pub fn delete_offsets(&self, group: &str, partitions: &[(String, i32)]) -> Result<()> {
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
            self.write(&tombstones)?;
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
    use super::*;

    fn open(dir: &Path, logs: &LogManager, retention_ms: u64) -> Arc<GroupCoordinator> {
        let config = CoordinatorConfig {
            initial_rebalance_delay: Duration::ZERO,
            offsets_retention_ms: retention_ms,
            ..CoordinatorConfig::default()
        };
        GroupCoordinator::open(dir, logs, config).unwrap()
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

    #[tokio::test]
    async fn offsets_and_generations_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogManager::new(ferry_log::EngineConfig::default());
        let c = open(dir.path(), &logs, u64::MAX);
        let joined = c.join("g", join("")).await.unwrap();
        assert_eq!((joined.error, joined.generation), (None, 1));
        let end = c.commit("g", &joined.member_id, 1, vec![("t".into(), 0, committed(42))]).unwrap();
        c.durable(end).await.unwrap().unwrap();
        // A stale generation is refused; a simple consumer may not commit
        // into a group with members.
        assert_eq!(c.commit("g", &joined.member_id, 0, vec![]), Err(GroupError::IllegalGeneration));
        assert_eq!(c.commit("g", "", -1, vec![]), Err(GroupError::UnknownMemberId));
        assert_eq!(c.delete_group("g"), Err(GroupError::NonEmptyGroup));
        drop(c);
        let c = open(dir.path(), &logs, u64::MAX);
        assert_eq!(c.committed("g").get(&("t".to_string(), 0)).map(|x| x.offset), Some(42));
        // The generation goes on from where it was.
        let rejoined = c.join("g", join("")).await.unwrap();
        assert_eq!(rejoined.generation, 2);
        assert_eq!(c.leave("g", &rejoined.member_id, None), None);
        c.delete_group("g").unwrap();
        assert_eq!(c.delete_group("g"), Err(GroupError::GroupIdNotFound));
        drop(c);
        let c = open(dir.path(), &logs, u64::MAX);
        assert!(c.committed("g").is_empty(), "deleted groups stay deleted");
    }

    #[tokio::test]
    async fn offsets_of_empty_groups_expire() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogManager::new(ferry_log::EngineConfig::default());
        let c = open(dir.path(), &logs, 0);
        c.commit("simple", "", -1, vec![("t".into(), 0, committed(7))]).unwrap();
        let joined = c.join("busy", join("")).await.unwrap();
        c.commit("busy", &joined.member_id, joined.generation, vec![("t".into(), 0, committed(9))]).unwrap();
        std::thread::sleep(Duration::from_millis(10));
        c.tick();
        assert!(c.committed("simple").is_empty(), "an empty group's offsets expire");
        assert_eq!(c.committed("busy").len(), 1, "a group with members keeps its offsets");
    }
}
