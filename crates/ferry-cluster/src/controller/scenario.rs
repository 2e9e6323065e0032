//! A seeded simulation: node processes start, crash, restart (some with a
//! new, empty data directory), heartbeat (or miss beats), impostors try to
//! take live ids, topics come and go, leaders shrink and grow ISRs,
//! acks=all writes are acknowledged, elections are asked for, leadership is
//! balanced, partitions are reassigned (and moves cancelled), nodes are
//! decommissioned and the controller fails over, on a simulated clock. Every
//! batch the controller returns must apply, and the invariants hold after
//! each step, among them the one eligible leader replicas exist for: a
//! leader, ISR member or ELR member always holds every acknowledged record
//! (the oracle tracks which data directories do).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ferry_broker::metadata::{
    ControllerReply, ControllerRequest, ElectionType, MetadataError, MetadataImage, MetadataRecord, PartitionInfo,
    TopicInfo,
};
use uuid::Uuid;

use super::tests::{config, node};
use super::{ControllerConfig, LeaderBalanceConfig, QuorumController};

/// The scenario's controller: balancing on, every 5 simulated seconds.
fn sim_config() -> ControllerConfig {
    ControllerConfig {
        leader_balance: LeaderBalanceConfig {
            enabled: true,
            check_interval: Duration::from_secs(5),
            max_imbalance_percent: 10,
        },
        ..config()
    }
}

/// The ISR size below which the high watermark stands still, computed
/// here independently of the controller: `min.insync.replicas` of the
/// topic, else 2 with 3 or more replicas, else 1; at most the replicas.
fn required(t: &TopicInfo, p: &PartitionInfo) -> usize {
    let rf = t.partitions.first().map_or(1, |p| p.replicas.len());
    let min = t.configs.get("min.insync.replicas").and_then(|v| v.parse().ok()).unwrap_or(if rf >= 3 { 2 } else { 1 });
    min.min(p.replicas.len()).max(1)
}

/// xorshift64*: a tiny PRNG so each seed replays exactly.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One `ferry serve` process.
struct Process {
    incarnation: u128,
    /// The incarnation its data directory names (`node.json`), sent as
    /// `previous` when it registers: `None` for a new directory.
    previous: Option<u128>,
    /// Which data directory it runs on (a new one after a wipe).
    disk: u64,
    running: bool,
    registered: bool,
}

struct Sim {
    rng: Rng,
    t0: Instant,
    ms: u64,
    image: MetadataImage,
    controller: QuorumController,
    procs: BTreeMap<i32, Process>,
    /// When the controller last heard from each (node, incarnation), as the
    /// oracle sees it (registrations, accepted heartbeats, elections).
    seen: BTreeMap<i32, (Uuid, u64)>,
    epochs: BTreeMap<(Uuid, usize), (i32, i32)>,
    next_incarnation: u128,
    next_disk: u64,
    timeout_ms: u64,
    /// The oracle: per partition, the (node, data directory) pairs that
    /// hold every record acknowledged so far.
    has_all: BTreeMap<(Uuid, usize), BTreeSet<(i32, u64)>>,
    stats: Stats,
}

/// What the runs went through, so the test proves it covered the cases.
#[derive(Debug, Default)]
struct Stats {
    fenced: usize,
    duplicates_refused: usize,
    leadership_restored: usize,
    topics_created: usize,
    partitions_added: usize,
    failovers: usize,
    acknowledged: usize,
    isr_shrinks: usize,
    isr_expansions: usize,
    elr_elections: usize,
    elect_leaders: usize,
    balanced: usize,
    wiped: usize,
    reassignments: usize,
    reassignments_completed: usize,
}

impl Sim {
    fn now(&self) -> Instant {
        self.t0 + Duration::from_millis(self.ms)
    }

    fn commit(&mut self, records: &[MetadataRecord]) {
        if records.is_empty() {
            return;
        }
        let before = self.image.clone();
        let index = self.image.applied_index + 1;
        self.image.apply_batch(index, records).unwrap_or_else(|e| panic!("batch refused: {e}: {records:?}"));
        for t in self.image.topics.values() {
            for (i, p) in t.partitions.iter().enumerate() {
                let old = before.topic_by_id(t.id).and_then(|o| o.partitions.get(i));
                if old.is_some_and(|o| o.leader != p.leader && p.leader != -1 && o.elr.contains(&p.leader)) {
                    self.stats.elr_elections += 1;
                }
                // Internal partitions have no replicated log yet: a move
                // completes at once and starts them afresh on the new
                // replicas (docs/cluster.md, Reassignment: internal topics),
                // so the oracle starts over there too.
                if t.internal && old.is_some_and(|o| o.replicas != p.replicas) {
                    let holders = p.replicas.iter().filter_map(|n| Some((*n, self.procs.get(n)?.disk))).collect();
                    self.has_all.insert((t.id, i), holders);
                }
            }
        }
    }

    /// The partition at `pick` (a random number) among all partitions.
    fn some_partition(&self, pick: u64) -> Option<(Uuid, usize, PartitionInfo)> {
        let all: Vec<(Uuid, usize, PartitionInfo)> = self
            .image
            .topics
            .values()
            .flat_map(|t| t.partitions.iter().enumerate().map(|(i, p)| (t.id, i, p.clone())))
            .collect();
        let n = u64::try_from(all.len()).ok().filter(|n| *n > 0)?;
        all.into_iter().nth(usize::try_from(pick % n).ok()?)
    }

    /// A leader's AlterPartition, from the current image: never refused.
    fn alter(&mut self, topic_id: Uuid, index: usize, p: &PartitionInfo, isr: Vec<i32>) {
        let request = ControllerRequest::AlterPartition {
            topic_id,
            partition: i32::try_from(index).unwrap(),
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            isr,
        };
        match self.controller.handle(&self.image, p.leader, &request) {
            Ok((records, _)) => self.commit(&records),
            Err(e) => panic!("AlterPartition refused: {e}: {p:?}"),
        }
    }

    /// Whether node `n`'s registered incarnation is its running process's.
    fn current(&self, n: i32) -> bool {
        let registered = self.image.nodes.get(&n).map(|n| n.incarnation);
        self.procs.get(&n).is_some_and(|p| p.running && registered == Some(Uuid::from_u128(p.incarnation)))
    }

    fn register(&mut self, id: i32) {
        let incarnation = Uuid::from_u128(self.procs[&id].incarnation);
        let rack = ["a", "b"][usize::try_from(id).unwrap() % 2];
        let info = node(id, self.procs[&id].incarnation, Some(rack));
        let holder = self.image.nodes.get(&id).cloned();
        let previous = self.procs[&id].previous.map(Uuid::from_u128);
        match self.controller.register(&self.image, info, previous, self.now()) {
            Ok(records) => {
                // No id registered twice: the previous incarnation, if
                // unfenced, was silent past the session timeout, or is
                // this process's previous life (a restart).
                if let Some(h) =
                    holder.filter(|h| !h.fenced && h.incarnation != incarnation && previous != Some(h.incarnation))
                {
                    let (inc, at) = self.seen[&id];
                    assert!(inc != h.incarnation || self.ms - at > self.timeout_ms, "node {id} taken while live");
                }
                let restored = records.iter().filter(|r| matches!(r, MetadataRecord::PartitionChange { .. })).count();
                self.stats.leadership_restored += restored;
                self.commit(&records);
                self.seen.insert(id, (incarnation, self.ms));
                if let Some(p) = self.procs.get_mut(&id) {
                    p.registered = true;
                }
            }
            Err(MetadataError::DuplicateNodeId(n)) => {
                assert_eq!(n, id);
                self.stats.duplicates_refused += 1;
                let h = holder.unwrap();
                let (inc, at) = self.seen[&id];
                assert!(!h.fenced && inc == h.incarnation && self.ms - at <= self.timeout_ms);
            }
            Err(e) => panic!("registration refused: {e}"),
        }
    }

    fn step(&mut self) {
        let ids: Vec<i32> = self.procs.keys().copied().collect();
        let pick = ids[usize::try_from(self.rng.below(ids.len() as u64)).unwrap()];
        match self.rng.below(132) {
            0..=39 => {
                self.ms += self.rng.below(2000);
                for id in &ids {
                    let p = &self.procs[id];
                    if !(p.running && p.registered) || self.rng.below(10) == 0 {
                        continue;
                    }
                    let inc = Uuid::from_u128(p.incarnation);
                    if self.controller.heartbeat(&self.image, *id, inc, self.now()) {
                        self.seen.insert(*id, (inc, self.ms));
                    } else if let Some(p) = self.procs.get_mut(id) {
                        p.registered = false;
                    }
                }
            }
            40..=54 => {
                let records = self.controller.tick(&self.image, self.now());
                let before = self.image.clone();
                self.commit(&records);
                self.stats.reassignments_completed += completed(&before, &self.image);
                for t in self.image.topics.values() {
                    for (i, p) in t.partitions.iter().enumerate() {
                        let old = before.topic_by_id(t.id).and_then(|o| o.partitions.get(i));
                        // A live leader replaced by its preferred replica: balancing
                        // (a reassignment completing also moves leaders, and changes
                        // the replicas).
                        if old.is_some_and(|o| {
                            o.leader != p.leader
                                && o.leader != -1
                                && !self.image.nodes[&o.leader].fenced
                                && o.replicas == p.replicas
                        }) {
                            assert_eq!(Some(&p.leader), p.replicas.first(), "{}-{i}: {old:?} -> {p:?}", t.name);
                            self.stats.balanced += 1;
                        }
                    }
                }
                // The tick completed whatever could complete, and moved
                // every replica it could off a leaving node: what is left
                // there has no node to go to.
                assert!(ferry_broker::metadata::complete_reassignments(&self.image).is_empty());
                let placeable: Vec<i32> = self.image.placeable_nodes().map(|n| n.id).collect();
                for &leaving in &self.image.decommissioning {
                    for (t, i, p) in self.image.partitions_on(leaving) {
                        let stays = p.target_replicas().contains(&leaving);
                        assert!(
                            !stays || t.internal && p.leader < 0 || placeable.iter().all(|n| p.replicas.contains(n)),
                            "{}-{i} keeps leaving node {leaving} with {placeable:?} placeable: {p:?}; tick: {records:?}",
                            t.name
                        );
                    }
                }
                self.stats.fenced += records.iter().filter(|r| matches!(r, MetadataRecord::FenceNode { .. })).count();
                for n in before.live_nodes() {
                    let silent = self.seen.get(&n.id).is_none_or(|(_, at)| self.ms - at > self.timeout_ms);
                    assert_eq!(self.image.nodes[&n.id].fenced, silent, "node {} at {} ms", n.id, self.ms);
                }
            }
            55..=64 => self.procs.get_mut(&pick).unwrap().running = false,
            65..=74 if !self.procs[&pick].running => {
                // One restart in four comes with a new, empty data directory.
                let wiped = self.rng.below(4) == 0;
                self.next_incarnation += 1;
                self.next_disk += 1;
                let next_disk = self.next_disk;
                let p = self.procs.get_mut(&pick).unwrap();
                // node.json names the last start, registered or not.
                p.previous = (!wiped).then_some(p.incarnation);
                p.incarnation = self.next_incarnation;
                p.running = true;
                p.registered = false;
                if wiped {
                    p.disk = next_disk;
                    self.stats.wiped += 1;
                }
            }
            75..=84 => {
                for id in ids {
                    if self.procs[&id].running && !self.procs[&id].registered {
                        self.register(id);
                    }
                }
            }
            85..=89 => {
                // A second process with a running node's id; if it gets in,
                // it replaces the first (which would exit on its next refused heartbeat).
                self.next_incarnation += 1;
                self.next_disk += 1;
                let impostor = Process {
                    incarnation: self.next_incarnation,
                    previous: None,
                    disk: self.next_disk,
                    running: true,
                    registered: false,
                };
                let old = std::mem::replace(self.procs.get_mut(&pick).unwrap(), impostor);
                self.register(pick);
                if !self.procs[&pick].registered {
                    self.procs.insert(pick, old);
                }
            }
            90..=94 => {
                let name = format!("t{}", self.rng.below(8));
                let partitions = Some(i32::try_from(self.rng.below(6)).unwrap() + 1);
                let rf = [None, Some(1), Some(2), Some(3)][usize::try_from(self.rng.below(4)).unwrap()];
                let min_isr = [None, None, Some("1"), Some("3")][usize::try_from(self.rng.below(4)).unwrap()];
                let request = ControllerRequest::CreateTopic {
                    name,
                    partitions,
                    replication_factor: rf,
                    assignment: None,
                    configs: min_isr.map(|m| ("min.insync.replicas".to_string(), m.to_string())).into_iter().collect(),
                    validate_only: false,
                };
                match self.controller.handle(&self.image, pick, &request) {
                    Ok((records, _)) => {
                        self.commit(&records);
                        self.stats.topics_created += 1;
                    }
                    Err(MetadataError::TopicExists(_) | MetadataError::InvalidReplicationFactor(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            97 => {
                let name = format!("t{}", self.rng.below(8));
                let current = self.image.topic(&name).map_or(0, |t| t.partitions.len());
                let total = i32::try_from(current + 1 + usize::try_from(self.rng.below(3)).unwrap()).unwrap();
                let request =
                    ControllerRequest::CreatePartitions { name, total, assignment: None, validate_only: false };
                match self.controller.handle(&self.image, pick, &request) {
                    Ok((records, _)) => {
                        self.commit(&records);
                        self.stats.partitions_added += 1;
                    }
                    Err(MetadataError::UnknownTopic(_) | MetadataError::InvalidReplicationFactor(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            95..=96 => {
                self.controller = QuorumController::new(sim_config(), &self.image, self.now());
                self.stats.failovers += 1;
                for n in self.image.nodes.values() {
                    self.seen.insert(n.id, (n.incarnation, self.ms));
                }
            }
            98..=99 => {
                let name = format!("t{}", self.rng.below(8));
                match self.controller.handle(&self.image, pick, &ControllerRequest::DeleteTopic { name }) {
                    Ok((records, _)) => self.commit(&records),
                    Err(MetadataError::UnknownTopic(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            100..=104 => self.acknowledge(),
            105..=109 => {
                // A leader drops a follower from the ISR (it lagged).
                let r = self.rng.next();
                let Some((id, i, p)) = self.some_partition(r) else { return };
                let followers: Vec<i32> = p.isr.iter().copied().filter(|n| *n != p.leader).collect();
                if p.leader == -1 || !self.current(p.leader) || followers.is_empty() {
                    return;
                }
                let out = followers[usize::try_from(self.rng.below(followers.len() as u64)).unwrap()];
                let isr = p.isr.iter().copied().filter(|n| *n != out).collect();
                self.alter(id, i, &p, isr);
                self.stats.isr_shrinks += 1;
            }
            110..=114 => {
                // Followers catch up (copying the leader's log, so they
                // hold what the leader holds) and join ISRs, one per
                // partition where one can.
                let all: Vec<(Uuid, usize)> =
                    self.image.topics.values().flat_map(|t| (0..t.partitions.len()).map(|i| (t.id, i))).collect();
                for (id, i) in all {
                    let Some(p) = self.image.topic_by_id(id).and_then(|t| t.partitions.get(i)).cloned() else {
                        continue;
                    };
                    if p.leader == -1 || !self.current(p.leader) || self.rng.below(2) == 0 {
                        continue;
                    }
                    let joiner = p
                        .replicas
                        .iter()
                        .copied()
                        .find(|n| !p.isr.contains(n) && self.current(*n) && !self.image.nodes[n].fenced);
                    let Some(joiner) = joiner else { continue };
                    let (leader_disk, joiner_disk) = (self.procs[&p.leader].disk, self.procs[&joiner].disk);
                    let has_all = self.has_all.entry((id, i)).or_default();
                    if has_all.contains(&(p.leader, leader_disk)) {
                        has_all.insert((joiner, joiner_disk));
                    }
                    let mut isr = p.isr.clone();
                    isr.push(joiner);
                    self.alter(id, i, &p, isr);
                    self.stats.isr_expansions += 1;
                }
            }
            120..=125 => self.reassign(pick),
            126..=129 => self.catch_up(),
            130 => self.decommission(pick),
            115..=117 => {
                let election = if self.rng.below(2) == 0 { ElectionType::Preferred } else { ElectionType::Unclean };
                let request = ControllerRequest::ElectLeaders { election, partitions: None };
                let (records, reply) = self.controller.handle(&self.image, pick, &request).unwrap();
                let ControllerReply::Elections(results) = reply else { panic!("{reply:?}") };
                self.stats.elect_leaders += results.iter().filter(|r| r.error.is_none()).count();
                self.commit(&records);
            }
            _ => {}
        }
        self.check();
    }

    /// acks=all writes to every partition whose leader and ISR run and
    /// whose ISR is large enough for the high watermark to move: once
    /// acknowledged, exactly the ISR's data directories hold everything.
    fn acknowledge(&mut self) {
        let mut acked = Vec::new();
        for t in self.image.topics.values() {
            for (i, p) in t.partitions.iter().enumerate() {
                let running = p.isr.iter().all(|n| self.current(*n));
                if p.leader != -1 && running && p.isr.len() >= required(t, p) {
                    let holders: BTreeSet<(i32, u64)> = p.isr.iter().map(|n| (*n, self.procs[n].disk)).collect();
                    acked.push(((t.id, i), holders));
                }
            }
        }
        self.stats.acknowledged += acked.len();
        self.has_all.extend(acked);
    }

    /// A random partition to random nodes (sometimes a cancel, sometimes
    /// a bad target, which must change nothing).
    fn reassign(&mut self, from: i32) {
        let Some(t) = self.image.topics.values().filter(|t| !t.internal).nth(self.rng.below(8) as usize) else {
            return;
        };
        let (topic, partition) = (t.name.clone(), i32::try_from(self.rng.below(t.partitions.len() as u64)).unwrap());
        let nodes: Vec<i32> = self.image.nodes.keys().copied().collect();
        let replicas = match self.rng.below(10) {
            0 => None,
            1 => Some(vec![nodes[0], nodes[0]]),
            _ => {
                let rf = 1 + self.rng.below(3) as usize;
                let mut target = Vec::new();
                while target.len() < rf.min(nodes.len()) {
                    let n = nodes[self.rng.below(nodes.len() as u64) as usize];
                    if !target.contains(&n) {
                        target.push(n);
                    }
                }
                Some(target)
            }
        };
        let request = ControllerRequest::AlterReassignment { topic, partition, replicas };
        let before = self.image.clone();
        match self.controller.handle(&self.image, from, &request) {
            Ok((records, _)) => {
                self.commit(&records);
                self.stats.reassignments += 1;
            }
            Err(
                MetadataError::InvalidReplicaAssignment(_)
                | MetadataError::NoReassignmentInProgress(_)
                | MetadataError::UnknownPartition(..),
            ) => assert_eq!(self.image, before, "a refused reassignment changed the image"),
            Err(e) => panic!("{e}"),
        }
    }

    /// Leaders add their caught-up adding replicas to the ISR, as
    /// replication does (AlterPartition from the leader): a running leader
    /// and running, unfenced joiners, which copy the leader's log (so hold
    /// what it holds, for the oracle).
    fn catch_up(&mut self) {
        let mut requests = Vec::new();
        for t in self.image.topics.values().filter(|t| !t.internal) {
            for (i, p) in (0..).zip(&t.partitions) {
                if p.leader < 0 || !self.current(p.leader) {
                    continue;
                }
                let live = |n: &i32| self.image.nodes.get(n).is_some_and(|n| !n.fenced) && self.current(*n);
                let joining: Vec<i32> =
                    p.adding_replicas.iter().copied().filter(|n| live(n) && !p.isr.contains(n)).collect();
                if joining.is_empty() {
                    continue;
                }
                let mut isr = p.isr.clone();
                isr.extend(&joining);
                let request = ControllerRequest::AlterPartition {
                    topic_id: t.id,
                    partition: i,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                    isr,
                };
                requests.push((t.id, usize::try_from(i).unwrap(), p.leader, joining, request));
            }
        }
        for (id, i, leader, joining, request) in requests {
            let before = self.image.clone();
            let Ok((records, _)) = self.controller.handle(&self.image, leader, &request) else { continue };
            let has_all = self.has_all.entry((id, i)).or_default();
            if has_all.contains(&(leader, self.procs[&leader].disk)) {
                has_all.extend(joining.iter().map(|n| (*n, self.procs[n].disk)));
            }
            self.commit(&records);
            self.stats.reassignments_completed += completed(&before, &self.image);
        }
    }

    /// Decommissions one node per run at most (the others keep room).
    fn decommission(&mut self, node: i32) {
        if !self.image.decommissioning.is_empty() || !self.image.nodes.contains_key(&node) {
            return;
        }
        let request = ControllerRequest::DecommissionNode { node_id: node };
        let (records, _) = self.controller.handle(&self.image, node, &request).unwrap();
        self.commit(&records);
    }

    fn check(&mut self) {
        for t in self.image.topics.values() {
            for (i, p) in t.partitions.iter().enumerate() {
                let distinct: std::collections::BTreeSet<_> = p.replicas.iter().collect();
                assert_eq!(distinct.len(), p.replicas.len(), "{}-{i}: {p:?}", t.name);
                let moving = p.adding_replicas.iter().chain(&p.removing_replicas);
                assert!(moving.clone().all(|r| p.replicas.contains(r)), "{}-{i}: {p:?}", t.name);
                assert!(!p.adding_replicas.iter().any(|r| p.removing_replicas.contains(r)), "{p:?}");

                let live = |n: &i32| self.image.nodes.get(n).is_some_and(|n| !n.fenced);
                if p.leader != -1 {
                    assert!(live(&p.leader), "{}-{i} led by fenced or unknown node {}", t.name, p.leader);
                    assert!(p.isr.contains(&p.leader) && p.replicas.contains(&p.leader), "{}-{i}: {p:?}", t.name);
                } else {
                    assert!(!p.isr.iter().any(live), "{}-{i} leaderless with a live ISR member: {p:?}", t.name);
                    assert!(!p.elr.iter().any(live), "{}-{i} leaderless with a live eligible replica: {p:?}", t.name);
                }
                assert!(p.isr.iter().all(|n| p.replicas.contains(n)), "{p:?}");
                assert!(p.leader == -1 || !p.isr.is_empty(), "{p:?}");
                // KIP-966: ISR and ELR are disjoint replicas; the ELR is
                // empty while the ISR is large enough to move the HW.
                assert!(p.elr.iter().all(|n| p.replicas.contains(n) && !p.isr.contains(n)), "{p:?}");
                assert!(p.elr.is_empty() || p.isr.len() < required(t, p), "{}-{i}: {p:?} {t:?}", t.name);
                // The oracle: a new partition's replicas hold everything
                // (nothing was acknowledged yet); after that, every leader,
                // ISR and ELR member that runs as registered holds every
                // acknowledged record.
                let procs = &self.procs;
                let has_all = self
                    .has_all
                    .entry((t.id, i))
                    .or_insert_with(|| p.replicas.iter().filter_map(|n| Some((*n, procs.get(n)?.disk))).collect());
                for n in p.isr.iter().chain(&p.elr).chain(std::iter::once(&p.leader)).filter(|n| **n != -1) {
                    let registered = self.image.nodes.get(n).map(|x| x.incarnation);
                    let Some(proc) = procs.get(n).filter(|x| registered == Some(Uuid::from_u128(x.incarnation))) else {
                        continue;
                    };
                    assert!(
                        has_all.contains(&(*n, proc.disk)),
                        "{}-{i}: node {n} (data {}) may lack acknowledged records: {p:?}, holders {has_all:?}",
                        t.name,
                        proc.disk
                    );
                }
                let epochs = (p.leader_epoch, p.partition_epoch);
                if let Some(old) = self.epochs.insert((t.id, i), epochs) {
                    assert!(
                        epochs.0 >= old.0 && epochs.1 >= old.1,
                        "{}-{i} epochs went back: {old:?} -> {epochs:?}",
                        t.name
                    );
                }
            }
        }
    }
}

/// Reassignments `before` had in progress that `after` completed.
fn completed(before: &MetadataImage, after: &MetadataImage) -> usize {
    before
        .topics
        .values()
        .flat_map(|t| (0..).zip(&t.partitions).map(move |(i, p)| (t.name.clone(), i, p)))
        .filter(|(name, i, p)| p.reassigning() && after.partition(name, *i).is_some_and(|q| !q.reassigning()))
        .count()
}

/// Names the seed of a scenario that panics, and how to replay it alone.
struct Replay(u64);

impl Drop for Replay {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "scenario seed {} failed; replay it with FERRY_SIM_FIRST_SEED={} FERRY_SIM_SEEDS=1 \
                 cargo test -p ferry-cluster --lib seeded_scenarios",
                self.0, self.0
            );
        }
    }
}

/// `FERRY_SIM_<name>` as a number, else `default`.
fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(format!("FERRY_SIM_{name}")).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// 200 seeds in `cargo test`; `FERRY_SIM_SEEDS=5000` (and
/// `FERRY_SIM_FIRST_SEED`) run more, or replay one (docs/reliability.md).
#[test]
fn seeded_scenarios_keep_the_invariants() {
    let mut total = Stats::default();
    let first = env_number("FIRST_SEED", 0);
    let count = env_number("SEEDS", 200);
    for seed in first..first.saturating_add(count) {
        let _replay = Replay(seed);
        let mut rng = Rng::new(seed);
        let nodes = 3 + i32::try_from(rng.below(3)).unwrap();
        let t0 = Instant::now();
        let image = MetadataImage::default();
        let controller = QuorumController::new(sim_config(), &image, t0);
        let mut sim = Sim {
            rng,
            t0,
            ms: 0,
            controller,
            image,
            procs: BTreeMap::new(),
            seen: BTreeMap::new(),
            epochs: BTreeMap::new(),
            next_incarnation: 100,
            next_disk: 100,
            timeout_ms: u64::try_from(config().session_timeout.as_millis()).unwrap(),
            has_all: BTreeMap::new(),
            stats: Stats::default(),
        };
        let boot = sim.controller.bootstrap(format!("cluster-{seed}"), Vec::new());
        sim.commit(&boot);
        for id in 1..=nodes {
            let process = Process {
                incarnation: u128::try_from(id).unwrap(),
                previous: None,
                disk: u64::try_from(id).unwrap(),
                running: true,
                registered: false,
            };
            sim.procs.insert(id, process);
            sim.register(id);
        }
        for _ in 0..300 {
            sim.step();
        }
        assert!(sim.image.nodes.len() <= usize::try_from(nodes).unwrap());
        total.fenced += sim.stats.fenced;
        total.duplicates_refused += sim.stats.duplicates_refused;
        total.leadership_restored += sim.stats.leadership_restored;
        total.topics_created += sim.stats.topics_created;
        total.partitions_added += sim.stats.partitions_added;
        total.failovers += sim.stats.failovers;
        total.acknowledged += sim.stats.acknowledged;
        total.isr_shrinks += sim.stats.isr_shrinks;
        total.isr_expansions += sim.stats.isr_expansions;
        total.elr_elections += sim.stats.elr_elections;
        total.elect_leaders += sim.stats.elect_leaders;
        total.balanced += sim.stats.balanced;
        total.wiped += sim.stats.wiped;
        total.reassignments += sim.stats.reassignments;
        total.reassignments_completed += sim.stats.reassignments_completed;
    }
    eprintln!("{total:?}");
    let Stats {
        fenced,
        duplicates_refused,
        leadership_restored,
        topics_created,
        partitions_added,
        failovers,
        acknowledged,
        isr_shrinks,
        isr_expansions,
        elr_elections,
        elect_leaders,
        balanced,
        wiped,
        reassignments,
        reassignments_completed,
    } = total;
    assert!(
        [
            fenced,
            duplicates_refused,
            leadership_restored,
            topics_created,
            partitions_added,
            failovers,
            acknowledged,
            isr_shrinks,
            isr_expansions,
            elr_elections,
            elect_leaders,
            balanced,
            wiped,
            reassignments,
            reassignments_completed,
        ]
        .iter()
        // A replay of a few seeds need not reach every case.
        .all(|n| *n > 50)
            || count < 200,
        "the scenarios missed a case: {total:?}"
    );
}
