//! A seeded simulation: node processes start, crash, restart, heartbeat
//! (or miss beats), impostors try to take live ids, topics come and go and
//! the controller fails over, on a simulated clock. Every batch the
//! controller returns must apply, and the invariants hold after each step.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_broker::metadata::{ControllerRequest, MetadataError, MetadataImage, MetadataRecord};
use uuid::Uuid;

use super::QuorumController;
use super::tests::{config, node};

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
    timeout_ms: u64,
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
        let index = self.image.applied_index + 1;
        self.image.apply_batch(index, records).unwrap_or_else(|e| panic!("batch refused: {e}: {records:?}"));
    }

    fn register(&mut self, id: i32) {
        let incarnation = Uuid::from_u128(self.procs[&id].incarnation);
        let rack = ["a", "b"][usize::try_from(id).unwrap() % 2];
        let info = node(id, self.procs[&id].incarnation, Some(rack));
        let holder = self.image.nodes.get(&id).cloned();
        match self.controller.register(&self.image, info, None, self.now()) {
            Ok(records) => {
                // No id registered twice: the previous incarnation, if
                // unfenced, was silent past the session timeout.
                if let Some(h) = holder.filter(|h| !h.fenced && h.incarnation != incarnation) {
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
        match self.rng.below(112) {
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
                self.next_incarnation += 1;
                let p = self.procs.get_mut(&pick).unwrap();
                *p = Process { incarnation: self.next_incarnation, running: true, registered: false };
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
                let old = std::mem::replace(
                    self.procs.get_mut(&pick).unwrap(),
                    Process { incarnation: self.next_incarnation, running: true, registered: false },
                );
                self.register(pick);
                if !self.procs[&pick].registered {
                    self.procs.insert(pick, old);
                }
            }
            90..=94 => {
                let name = format!("t{}", self.rng.below(8));
                let partitions = Some(i32::try_from(self.rng.below(6)).unwrap() + 1);
                let rf = [None, Some(1), Some(2), Some(3)][usize::try_from(self.rng.below(4)).unwrap()];
                let request = ControllerRequest::CreateTopic {
                    name,
                    partitions,
                    replication_factor: rf,
                    assignment: None,
                    configs: BTreeMap::new(),
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
                self.controller = QuorumController::new(config(), &self.image, self.now());
                self.stats.failovers += 1;
                for n in self.image.nodes.values() {
                    self.seen.insert(n.id, (n.incarnation, self.ms));
                }
            }
            100..=105 => self.reassign(pick),
            106..=109 => self.catch_up(),
            110 => self.decommission(pick),
            98..=99 => {
                let name = format!("t{}", self.rng.below(8));
                match self.controller.handle(&self.image, pick, &ControllerRequest::DeleteTopic { name }) {
                    Ok((records, _)) => self.commit(&records),
                    Err(MetadataError::UnknownTopic(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            _ => {}
        }
        self.check();
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

    /// Leaders add their caught-up (live) replicas to the ISR, as
    /// replication does (AlterPartition from the leader).
    fn catch_up(&mut self) {
        let mut requests = Vec::new();
        for t in self.image.topics.values().filter(|t| !t.internal) {
            for (i, p) in (0..).zip(&t.partitions) {
                let live = |n: &i32| self.image.nodes.get(n).is_some_and(|n| !n.fenced);
                let mut isr = p.isr.clone();
                let joining: Vec<i32> =
                    p.adding_replicas.iter().copied().filter(|n| live(n) && !p.isr.contains(n)).collect();
                isr.extend(joining);
                if p.leader >= 0 && isr != p.isr {
                    requests.push((
                        p.leader,
                        ControllerRequest::AlterPartition {
                            topic_id: t.id,
                            partition: i,
                            leader_epoch: p.leader_epoch,
                            partition_epoch: p.partition_epoch,
                            isr,
                        },
                    ));
                }
            }
        }
        for (leader, request) in requests {
            let before = self.image.clone();
            let Ok((records, _)) = self.controller.handle(&self.image, leader, &request) else { continue };
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
                }
                assert!(!p.isr.is_empty() && p.isr.iter().all(|n| p.replicas.contains(n)), "{p:?}");
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

#[test]
fn seeded_scenarios_keep_the_invariants() {
    let mut total = Stats::default();
    for seed in 0..200u64 {
        let mut rng = Rng::new(seed);
        let nodes = 3 + i32::try_from(rng.below(3)).unwrap();
        let t0 = Instant::now();
        let image = MetadataImage::default();
        let controller = QuorumController::new(config(), &image, t0);
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
            timeout_ms: u64::try_from(config().session_timeout.as_millis()).unwrap(),
            stats: Stats::default(),
        };
        let boot = sim.controller.bootstrap(format!("cluster-{seed}"), Vec::new());
        sim.commit(&boot);
        for id in 1..=nodes {
            sim.procs
                .insert(id, Process { incarnation: u128::try_from(id).unwrap(), running: true, registered: false });
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
        total.reassignments += sim.stats.reassignments;
        total.reassignments_completed += sim.stats.reassignments_completed;
    }
    let Stats {
        fenced,
        duplicates_refused,
        leadership_restored,
        topics_created,
        partitions_added,
        failovers,
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
            reassignments,
            reassignments_completed,
        ]
        .iter()
        .all(|n| *n > 50),
        "the scenarios missed a case: {total:?}"
    );
}
