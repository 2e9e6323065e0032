//! One consumer group on the classic rebalance protocol, as Kafka's
//! GroupCoordinator runs it: Empty -> PreparingRebalance ->
//! CompletingRebalance -> Stable, and back to PreparingRebalance whenever a
//! member joins, leaves or times out.
//!
//! Joins and syncs are answered through one-shot channels, completed either
//! by the request that completes the round or by the coordinator's ticker
//! (rebalance timeouts, session timeouts, the initial rebalance delay).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::GroupError;

/// The group states of Kafka's classic protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassicGroupState {
    /// No members; committed offsets may still be kept.
    Empty,
    /// A join round is open: members (re)join until all have or the rebalance timeout passes.
    PreparingRebalance,
    /// The join round completed; waiting for the leader's SyncGroup with the assignment.
    CompletingRebalance,
    /// Every member has its assignment for the current generation.
    Stable,
    /// The group is gone; joins get COORDINATOR_NOT_AVAILABLE.
    Dead,
}

impl ClassicGroupState {
    /// The state's name as Kafka reports it in DescribeGroups and ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            ClassicGroupState::Empty => "Empty",
            ClassicGroupState::PreparingRebalance => "PreparingRebalance",
            ClassicGroupState::CompletingRebalance => "CompletingRebalance",
            ClassicGroupState::Stable => "Stable",
            ClassicGroupState::Dead => "Dead",
        }
    }
}

/// What a JoinGroup gets back.
#[derive(Clone, Debug, Default)]
pub struct JoinResult {
    /// Why the join failed; `None` on success.
    pub error: Option<GroupError>,
    /// The generation the member joined; -1 on most errors.
    pub generation: i32,
    /// The group's protocol type (e.g. "consumer"), once it has one.
    pub protocol_type: Option<String>,
    /// The protocol (assignor) the members' vote chose.
    pub protocol: Option<String>,
    /// The leader's member id; empty if the group has none.
    pub leader: String,
    /// The joining member's id, newly assigned if it joined with an empty one.
    pub member_id: String,
    /// For the leader only: every member as (member id, group instance id,
    /// metadata for the chosen protocol).
    pub members: Vec<(String, Option<String>, Vec<u8>)>,
}

/// What a SyncGroup gets back.
#[derive(Clone, Debug, Default)]
pub struct SyncResult {
    /// Why the sync failed; `None` on success.
    pub error: Option<GroupError>,
    /// The group's protocol type.
    pub protocol_type: Option<String>,
    /// The protocol (assignor) chosen in the join round.
    pub protocol: Option<String>,
    /// This member's assignment as the leader encoded it; empty if it got none.
    pub assignment: Vec<u8>,
}

/// A member of a classic group.
pub struct ClassicMember {
    /// The member id the coordinator assigned.
    pub id: String,
    /// The group instance id of a static member (KIP-345); `None` for a dynamic one.
    pub instance_id: Option<String>,
    /// The client id from the member's request header.
    pub client_id: String,
    /// The address the member connected from.
    pub client_host: String,
    /// Silence longer than this removes the member.
    pub session_timeout: Duration,
    /// How long a rebalance round waits for this member to rejoin.
    pub rebalance_timeout: Duration,
    /// Supported protocols as (name, metadata), most preferred first.
    pub protocols: Vec<(String, Vec<u8>)>,
    /// The assignment from the last SyncGroup, as the leader encoded it.
    pub assignment: Vec<u8>,
    last_heartbeat: Instant,
    join: Option<oneshot::Sender<JoinResult>>,
    sync: Option<oneshot::Sender<SyncResult>>,
}

/// A consumer group on the classic rebalance protocol.
pub struct ClassicGroup {
    /// The `group.id` clients name the group by.
    pub id: String,
    /// Where the group is in its rebalance cycle.
    pub state: ClassicGroupState,
    /// Counts completed join rounds; persisted so it survives restarts.
    pub generation: i32,
    /// The protocol type the members share (e.g. "consumer"); `None` until one joins.
    pub protocol_type: Option<String>,
    /// The protocol (assignor) chosen in the last join round.
    pub protocol: Option<String>,
    /// The member id of the leader, which computes the assignment.
    pub leader: Option<String>,
    /// The members by member id.
    pub members: BTreeMap<String, ClassicMember>,
    /// When the current rebalance gives up waiting for members.
    deadline: Option<Instant>,
    /// A fresh group's round does not complete before this.
    initial_delay_until: Option<Instant>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not yet joined.
    pending: std::collections::HashSet<String>,
    /// Wall-clock ms when the group last became empty (offset expiry).
    pub empty_since_ms: u64,
}

/// A join request's parameters.
pub struct Join {
    /// The member's id; empty on its first join.
    pub member_id: String,
    /// The group instance id of a static member (KIP-345).
    pub instance_id: Option<String>,
    /// The client id from the request header.
    pub client_id: String,
    /// The address the member connected from.
    pub client_host: String,
    /// Silence longer than this removes the member.
    pub session_timeout: Duration,
    /// How long a rebalance round waits for the member to rejoin.
    pub rebalance_timeout: Duration,
    /// The protocol type, e.g. "consumer" or "connect".
    pub protocol_type: String,
    /// Supported protocols as (name, metadata), most preferred first; must not be empty.
    pub protocols: Vec<(String, Vec<u8>)>,
    /// v4+: unknown members must first get an id (KIP-394).
    pub require_known_member_id: bool,
}

impl ClassicGroup {
    /// An empty group at `generation` (0 for a new group, the persisted one
    /// on restart); `now_ms` (wall clock) starts its offset-expiry clock.
    pub fn new(id: &str, generation: i32, protocol_type: Option<String>, now_ms: u64) -> ClassicGroup {
        ClassicGroup {
            id: id.to_string(),
            state: ClassicGroupState::Empty,
            generation,
            protocol_type,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            deadline: None,
            initial_delay_until: None,
            pending: Default::default(),
            empty_since_ms: now_ms,
        }
    }

    fn new_member_id(&self, client_id: &str) -> String {
        format!("{client_id}-{}-{}", self.generation, uuid::Uuid::new_v4().simple())
    }

    /// Handles a JoinGroup. The answer arrives on the returned channel once
    /// the rebalance round completes (possibly at once).
    pub fn join(&mut self, j: Join, now: Instant, initial_delay: Duration) -> oneshot::Receiver<JoinResult> {
        let (tx, rx) = oneshot::channel();
        let fail = |tx: oneshot::Sender<JoinResult>, e: GroupError, member_id: String| {
            let _ = tx.send(JoinResult { error: Some(e), member_id, generation: -1, ..Default::default() });
        };
        if self.state == ClassicGroupState::Dead {
            fail(tx, GroupError::CoordinatorNotAvailable, j.member_id);
            return rx;
        }
        if self.protocol_type.as_ref().is_some_and(|t| *t != j.protocol_type && !self.members.is_empty())
            || j.protocols.is_empty()
            || (!self.members.is_empty() && !self.members.values().all(|m| shares_protocol(m, &j.protocols)))
        {
            fail(tx, GroupError::InconsistentGroupProtocol, j.member_id);
            return rx;
        }
        // Static membership: the instance id names the member; a new join
        // with it replaces the old member id (which is fenced from then on).
        let static_old = j.instance_id.as_ref().and_then(|inst| {
            self.members.values().find(|m| m.instance_id.as_ref() == Some(inst)).map(|m| m.id.clone())
        });
        let mut member_id = j.member_id.clone();
        if member_id.is_empty() {
            if let Some(old) = &static_old {
                member_id = self.new_member_id(&j.client_id);
                let mut m = self.members.remove(old).expect("found above");
                m.id = member_id.clone();
                if self.leader.as_deref() == Some(old.as_str()) {
                    self.leader = Some(member_id.clone());
                }
                let unchanged = m.protocols == j.protocols;
                m.protocols = j.protocols;
                m.last_heartbeat = now;
                if let Some(old_join) = m.join.take() {
                    fail(old_join, GroupError::FencedInstanceId, old.clone());
                }
                self.members.insert(member_id.clone(), m);
                if self.state == ClassicGroupState::Stable && unchanged {
                    // Known static member coming back: no rebalance (KIP-345).
                    let _ = tx.send(self.join_result(&member_id, false));
                    return rx;
                }
                self.members.get_mut(&member_id).expect("inserted").join = Some(tx);
                self.prepare_rebalance(now, initial_delay);
                self.try_complete_join(now);
                return rx;
            }
            member_id = self.new_member_id(&j.client_id);
            if j.require_known_member_id && j.instance_id.is_none() {
                // KIP-394: hand out the id; the member joins again with it
                // and only then becomes a member.
                self.pending.insert(member_id.clone());
                fail(tx, GroupError::MemberIdRequired, member_id);
                return rx;
            }
        } else if !self.members.contains_key(&member_id) && !self.pending.remove(&member_id) {
            let e = if j.instance_id.is_some() { GroupError::FencedInstanceId } else { GroupError::UnknownMemberId };
            fail(tx, e, member_id);
            return rx;
        }
        // A new member, or new protocols, always means a new round.
        let changed = self.members.get(&member_id).is_none_or(|m| m.protocols != j.protocols);
        self.add_member(&member_id, &j, now, Some(tx));
        match self.state {
            ClassicGroupState::Stable | ClassicGroupState::CompletingRebalance
                if !changed && self.leader.as_deref() != Some(&member_id) =>
            {
                // A follower rejoining with nothing new: answer with the current round.
                let result = self.join_result(&member_id, false);
                if let Some(m) = self.members.get_mut(&member_id)
                    && let Some(tx) = m.join.take()
                {
                    let _ = tx.send(result);
                }
            }
            _ => {
                self.prepare_rebalance(now, initial_delay);
                self.try_complete_join(now);
            }
        }
        rx
    }

    fn add_member(&mut self, id: &str, j: &Join, now: Instant, join: Option<oneshot::Sender<JoinResult>>) {
        let m = self.members.entry(id.to_string()).or_insert_with(|| ClassicMember {
            id: id.to_string(),
            instance_id: j.instance_id.clone(),
            client_id: j.client_id.clone(),
            client_host: j.client_host.clone(),
            session_timeout: j.session_timeout,
            rebalance_timeout: j.rebalance_timeout,
            protocols: Vec::new(),
            assignment: Vec::new(),
            last_heartbeat: now,
            join: None,
            sync: None,
        });
        m.protocols = j.protocols.clone();
        m.session_timeout = j.session_timeout;
        m.rebalance_timeout = j.rebalance_timeout;
        m.last_heartbeat = now;
        if let Some(old) = std::mem::replace(&mut m.join, join) {
            let _ = old.send(JoinResult { error: Some(GroupError::RebalanceInProgress), ..Default::default() });
        }
        if self.protocol_type.is_none() || self.members.len() == 1 {
            self.protocol_type = Some(j.protocol_type.clone());
        }
    }

    /// Starts a rebalance round unless one is under way.
    fn prepare_rebalance(&mut self, now: Instant, initial_delay: Duration) {
        if self.state == ClassicGroupState::PreparingRebalance {
            return;
        }
        tracing::debug!(group = %self.id, members = self.members.len(), "rebalance started");
        // Members waiting on a sync of the abandoned round must rejoin.
        for m in self.members.values_mut() {
            if let Some(tx) = m.sync.take() {
                let _ = tx.send(SyncResult { error: Some(GroupError::RebalanceInProgress), ..Default::default() });
            }
        }
        let longest = self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or_default();
        // A fresh group waits a little for more members (Kafka's
        // group.initial.rebalance.delay.ms), bounded by the rebalance timeout.
        let was_empty = self.state == ClassicGroupState::Empty;
        let wait = if was_empty { initial_delay.min(longest) } else { longest };
        self.deadline = Some(now + wait);
        self.state = ClassicGroupState::PreparingRebalance;
        self.initial_delay_until = (was_empty && !wait.is_zero()).then(|| now + wait);
    }

    /// Completes the join round if every member rejoined (and any initial
    /// delay passed), or the deadline passed (dropping members that did not).
    pub fn try_complete_join(&mut self, now: Instant) {
        if self.state != ClassicGroupState::PreparingRebalance {
            return;
        }
        let deadline_passed = self.deadline.is_some_and(|d| now >= d);
        let delaying = self.initial_delay_until.is_some_and(|d| now < d);
        let all_joined = self.members.values().all(|m| m.join.is_some());
        if !(deadline_passed || (all_joined && !delaying)) {
            return;
        }
        self.members.retain(|_, m| m.join.is_some());
        self.generation += 1;
        self.deadline = None;
        self.initial_delay_until = None;
        if self.members.is_empty() {
            self.state = ClassicGroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.choose_protocol();
        if self.leader.as_ref().is_none_or(|l| !self.members.contains_key(l)) {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = ClassicGroupState::CompletingRebalance;
        tracing::info!(
            group = %self.id,
            generation = self.generation,
            members = self.members.len(),
            protocol = self.protocol.as_deref().unwrap_or(""),
            "rebalance complete"
        );
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let is_leader = self.leader.as_deref() == Some(id.as_str());
            let result = self.join_result(&id, is_leader);
            if let Some(m) = self.members.get_mut(&id) {
                m.last_heartbeat = now;
                if let Some(tx) = m.join.take() {
                    let _ = tx.send(result);
                }
            }
        }
    }

    fn join_result(&self, member_id: &str, with_members: bool) -> JoinResult {
        let protocol = self.protocol.clone();
        JoinResult {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if with_members {
                self.members
                    .values()
                    .map(|m| {
                        let meta =
                            m.protocols.iter().find(|(n, _)| Some(n) == protocol.as_ref()).map(|(_, d)| d.clone());
                        (m.id.clone(), m.instance_id.clone(), meta.unwrap_or_default())
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    /// Kafka's vote: among protocols every member supports, each member
    /// votes for its most preferred; the most votes win.
    fn choose_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| self.members.values().all(|m| m.protocols.iter().any(|(x, _)| x == *n)))
            .collect();
        let mut votes: BTreeMap<&String, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((n, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(&n)) {
                *votes.entry(n).or_default() += 1;
            }
        }
        candidates.iter().max_by_key(|c| votes.get(*c).copied().unwrap_or(0)).map(|c| (*c).clone())
    }

    /// Handles a SyncGroup; the leader's carries everyone's assignment.
    pub fn sync(
        &mut self,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Vec<u8>)>,
        now: Instant,
    ) -> oneshot::Receiver<SyncResult> {
        let (tx, rx) = oneshot::channel();
        let error = if !self.members.contains_key(member_id) {
            Some(GroupError::UnknownMemberId)
        } else if generation != self.generation {
            Some(GroupError::IllegalGeneration)
        } else if self.state == ClassicGroupState::PreparingRebalance {
            Some(GroupError::RebalanceInProgress)
        } else {
            None
        };
        if let Some(e) = error {
            let _ = tx.send(SyncResult { error: Some(e), ..Default::default() });
            return rx;
        }
        let result = |m: &ClassicMember, g: &ClassicGroup| SyncResult {
            error: None,
            protocol_type: g.protocol_type.clone(),
            protocol: g.protocol.clone(),
            assignment: m.assignment.clone(),
        };
        if self.state == ClassicGroupState::Stable {
            let m = &self.members[member_id];
            let _ = tx.send(result(m, self));
            return rx;
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_heartbeat = now;
            m.sync = Some(tx);
        }
        if self.leader.as_deref() == Some(member_id) {
            let mut given: BTreeMap<String, Vec<u8>> = assignments.into_iter().collect();
            for m in self.members.values_mut() {
                m.assignment = given.remove(&m.id).unwrap_or_default();
            }
            self.state = ClassicGroupState::Stable;
            let ids: Vec<String> = self.members.keys().cloned().collect();
            for id in ids {
                let r = result(&self.members[&id], self);
                if let Some(tx) = self.members.get_mut(&id).and_then(|m| m.sync.take()) {
                    let _ = tx.send(r);
                }
            }
        }
        rx
    }

    /// Handles a Heartbeat.
    pub fn heartbeat(&mut self, member_id: &str, generation: i32, now: Instant) -> Option<GroupError> {
        let Some(m) = self.members.get_mut(member_id) else { return Some(GroupError::UnknownMemberId) };
        m.last_heartbeat = now;
        if self.state == ClassicGroupState::PreparingRebalance {
            return Some(GroupError::RebalanceInProgress);
        }
        if generation != self.generation {
            return Some(GroupError::IllegalGeneration);
        }
        None
    }

    /// Handles a LeaveGroup of one member.
    pub fn leave(&mut self, member_id: &str, instance_id: Option<&str>, now: Instant) -> Option<GroupError> {
        let id = match instance_id {
            Some(inst) => match self.members.values().find(|m| m.instance_id.as_deref() == Some(inst)) {
                Some(m) if member_id.is_empty() || m.id == member_id => m.id.clone(),
                Some(_) => return Some(GroupError::FencedInstanceId),
                None => return Some(GroupError::UnknownMemberId),
            },
            None => member_id.to_string(),
        };
        let Some(m) = self.members.remove(&id) else { return Some(GroupError::UnknownMemberId) };
        if let Some(tx) = m.join {
            let _ = tx.send(JoinResult { error: Some(GroupError::UnknownMemberId), ..Default::default() });
        }
        self.member_gone(now);
        None
    }

    /// After a member left or expired: rebalance the rest.
    fn member_gone(&mut self, now: Instant) {
        match self.state {
            ClassicGroupState::Stable | ClassicGroupState::CompletingRebalance => {
                self.prepare_rebalance(now, Duration::ZERO);
                self.try_complete_join(now);
            }
            ClassicGroupState::PreparingRebalance => self.try_complete_join(now),
            ClassicGroupState::Empty | ClassicGroupState::Dead => {}
        }
    }

    /// Timeouts: members silent past their session timeout are removed
    /// (not while they wait in a join, which the rebalance deadline covers),
    /// and due rebalance rounds complete. Returns true if the generation moved.
    pub fn tick(&mut self, now: Instant, now_ms: u64) -> bool {
        let before = (self.generation, self.state);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join.is_none() && now.duration_since(m.last_heartbeat) > m.session_timeout)
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            tracing::info!(group = %self.id, member = %id, "member session expired");
            self.members.remove(id);
        }
        if !expired.is_empty() {
            self.member_gone(now);
        }
        self.try_complete_join(now);
        if self.state == ClassicGroupState::Empty && before.1 != ClassicGroupState::Empty {
            self.empty_since_ms = now_ms;
        }
        (self.generation, self.state) != before
    }

    /// Whether a member of the current generation may commit offsets.
    pub fn check_commit(&self, member_id: &str, generation: i32) -> Option<GroupError> {
        if generation < 0 && member_id.is_empty() {
            // A consumer that assigns partitions itself.
            return if self.members.is_empty() { None } else { Some(GroupError::UnknownMemberId) };
        }
        if !self.members.contains_key(member_id) {
            return Some(GroupError::UnknownMemberId);
        }
        if generation != self.generation {
            return Some(GroupError::IllegalGeneration);
        }
        if self.state == ClassicGroupState::PreparingRebalance {
            return Some(GroupError::RebalanceInProgress);
        }
        None
    }
}

fn shares_protocol(m: &ClassicMember, protocols: &[(String, Vec<u8>)]) -> bool {
    m.protocols.iter().any(|(n, _)| protocols.iter().any(|(x, _)| x == n))
}
