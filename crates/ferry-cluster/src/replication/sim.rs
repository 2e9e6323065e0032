//! A deterministic simulation of partition replication (issue #16): the
//! real leader and follower code of ferry-broker (`Partition`: appends,
//! `serve_replica_fetch`, `append_replicated`, `truncate_as_follower`,
//! the high watermark, ISR changes) and of this module (the fetcher's
//! rounds, `collect`, `serve_epoch_end`, `isr_changes`), on real logs in
//! temporary directories, with the real controller (`QuorumController`:
//! registrations, heartbeats, fencing, clean elections from the ISR or ELR,
//! AlterPartition), driven by a seeded schedule on a simulated clock.
//!
//! Between nodes there is no socket: a message is a value in a bag the
//! schedule delivers in any order, loses, or delivers late (even after the
//! sender's round timed out, which TCP would not: a superset). Nodes crash
//! (their memory goes, their directory stays and is reopened; every append
//! was fsynced when its step ended, so that is what kill -9 leaves), restart
//! replaying a stale image, lose the controller for a while (no heartbeats,
//! no new images: fenced while they still think they lead), and learn new
//! images at their own pace.
//!
//! Invariants after every step (see `check`): every log holds only what the
//! leader of the batch's epoch wrote at that offset; replicas agree below
//! every high watermark they expose (the committed prefix); every ISR and
//! ELR member holds the whole committed prefix; every acks=all record
//! acknowledged is in it; a leader's high watermark never goes back; a
//! fetch or epoch answer that arrives after its partition moved on changes
//! nothing. After the schedule, with every fault healed, every partition
//! must converge (all replicas equal to the leader, high watermark at its
//! end). `FERRY_SIM_SEEDS` / `FERRY_SIM_FIRST_SEED` as for the controller
//! scenarios (docs/reliability.md).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use ferry_broker::metadata::{ControllerRequest, ElectionType, MetadataImage, MetadataRecord, NodeInfo};
use ferry_broker::{Acks, Broker, BrokerConfig, BrokerError, Partition};
use ferry_log::AppendInfo;
use ferry_records::compression::Compression;
use ferry_records::records::{NewRecord, build_batch, parse_records, records_payload};
use uuid::Uuid;

use super::fetcher::{self, Followed, Round};
use super::leader::{collect, fetched_partitions};
use super::message::{
    EpochAnswer, EpochQuery, ReplicaFetchRequest, ReplicaFetchResponse, decode_fetch_response_with,
    encode_fetch_response_with,
};
use super::{ReplicationConfig, isr_changes, serve_epoch_end};
use crate::controller::{ControllerConfig, LeaderBalanceConfig, QuorumController};
use crate::image_gate::ImageGate;

const TOPIC: &str = "sim";
const PARTITIONS: usize = 2;
/// The controller's session timeout, ms.
const SESSION_MS: u64 = 3_000;
/// A fetcher round not answered within this is given up (a new one starts).
const ROUND_TIMEOUT_MS: u64 = 1_000;
/// The simulated clock starts here (lag clocks count from it).
const T0_MS: u64 = 1_000_000;

fn replication_config() -> ReplicationConfig {
    ReplicationConfig {
        lag_time_max: Duration::from_millis(2_000),
        fetch_max_wait: Duration::from_millis(0),
        // A few batches per fetch, so fetches interleave with the rest.
        fetch_max_bytes: 300,
        isr_check_interval: Duration::from_millis(250),
        isr_retry: Duration::from_millis(1_500),
    }
}

fn controller_config() -> ControllerConfig {
    ControllerConfig {
        session_timeout: Duration::from_millis(SESSION_MS),
        // The simulation reports no probes: silence alone fences.
        dead_node_grace: Duration::from_millis(SESSION_MS),
        default_partitions: 1,
        default_replication_factor: None,
        max_partitions_per_topic: 100,
        internal_topic_partitions: 1,
        producer_id_block: 1000,
        topic_defaults: BTreeMap::new(),
        leader_balance: LeaderBalanceConfig { enabled: false, ..LeaderBalanceConfig::default() },
    }
}

/// xorshift64*: each seed replays exactly.
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
        self.next() % n.max(1)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.below(items.len() as u64) as usize])
    }
}

/// One node: its data directory outlives its processes.
struct Node {
    dir: tempfile::TempDir,
    broker: Option<Arc<Broker>>,
    /// The real node's gate between its state machine and its broker:
    /// closed until its registration is applied (`image_gate.rs`).
    gate: Option<Arc<ImageGate>>,
    incarnation: u128,
    /// The incarnation its directory last ran (sent as `previous`).
    previous: Option<u128>,
    registered: bool,
    /// Cut from the controller until then (ms): no heartbeats, no images.
    cut_until: u64,
    /// The newest image it applied (an index into `Sim::images`).
    applied: usize,
    /// Per partition: what its log holds, as checked so far.
    views: BTreeMap<usize, View>,
}

/// A log as the checks last read it: (leader epoch, value) per offset,
/// and how much of it agrees with the committed prefix.
#[derive(Default)]
struct View {
    records: Vec<(i32, u64)>,
    agreed: usize,
}

enum Payload {
    Fetch(ReplicaFetchRequest),
    FetchAnswer(ReplicaFetchResponse),
    EpochQueries(Vec<EpochQuery>),
    EpochAnswers(Vec<EpochAnswer>),
    Alter(ControllerRequest),
}

/// A message in flight: `to` 0 is the controller.
struct Msg {
    from: i32,
    from_inc: u128,
    to: i32,
    to_inc: u128,
    round: u64,
    payload: Payload,
}

/// A fetcher round in flight: the follower's partitions as it saw them.
struct RoundState {
    node: i32,
    leader: i32,
    started: u64,
    parts: Vec<Followed>,
}

type Ack = Pin<Box<dyn Future<Output = Result<AppendInfo, BrokerError>> + Send>>;

struct Pending {
    partition: usize,
    offset: u64,
    value: u64,
    ack: Ack,
}

#[derive(Debug, Default)]
struct Stats {
    appended: usize,
    acknowledged: usize,
    crashes: usize,
    cuts: usize,
    elections: usize,
    truncations: usize,
    late_answers: usize,
    late_records: usize,
    lost: usize,
    isr_changes: usize,
    refused_alters: usize,
    offline: usize,
}

struct Sim {
    seed: u64,
    rng: Rng,
    ms: u64,
    /// `ms` for the gates' appliers.
    clock: Arc<AtomicU64>,
    t0: Instant,
    config: ReplicationConfig,
    controller: QuorumController,
    image: MetadataImage,
    images: Vec<Arc<MetadataImage>>,
    nodes: BTreeMap<i32, Node>,
    net: Vec<Msg>,
    /// Messages held back for a while (delivered late, after the rounds
    /// and epochs they belong to may have moved on).
    held: Vec<Msg>,
    rounds: BTreeMap<u64, RoundState>,
    next_round: u64,
    next_incarnation: u128,
    next_value: u64,
    topic_id: Uuid,
    /// What the leader of each epoch wrote at each offset: (partition, epoch, offset).
    written: BTreeMap<(usize, i32, u64), u64>,
    /// Per partition: every value any replica exposed below its high watermark.
    committed: BTreeMap<usize, Vec<u64>>,
    acked: BTreeMap<usize, BTreeMap<u64, u64>>,
    pending: Vec<Pending>,
    /// A leader's last high watermark: (node, incarnation, partition) -> (epoch, hw).
    leader_hw: BTreeMap<(i32, u128, usize), (i32, u64)>,
    leader_epochs: BTreeMap<usize, i32>,
    stats: Stats,
    /// `FERRY_SIM_TRACE=1`: print every event (to read a failing seed).
    trace: bool,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng::new(seed);
        let count = 3 + rng.below(2) as i32;
        let t0 = Instant::now();
        let image = MetadataImage::default();
        let controller = QuorumController::new(controller_config(), &image, t0);
        let mut sim = Sim {
            seed,
            rng,
            ms: T0_MS,
            clock: Arc::new(AtomicU64::new(T0_MS)),
            t0,
            config: replication_config(),
            controller,
            image,
            images: vec![Arc::new(MetadataImage::default())],
            nodes: BTreeMap::new(),
            net: Vec::new(),
            held: Vec::new(),
            rounds: BTreeMap::new(),
            next_round: 1,
            next_incarnation: 100,
            next_value: 1,
            topic_id: Uuid::nil(),
            written: BTreeMap::new(),
            committed: BTreeMap::new(),
            acked: BTreeMap::new(),
            pending: Vec::new(),
            leader_hw: BTreeMap::new(),
            leader_epochs: BTreeMap::new(),
            stats: Stats::default(),
            trace: std::env::var("FERRY_SIM_TRACE").is_ok(),
        };
        let boot = sim.controller.bootstrap(format!("sim-{seed}"), Vec::new());
        sim.commit(&boot);
        for id in 1..=count {
            // tmpfs where there is one: every append is fsynced.
            let dir = if std::path::Path::new("/dev/shm").is_dir() {
                tempfile::tempdir_in("/dev/shm")
            } else {
                tempfile::tempdir()
            };
            let dir = dir.expect("temporary directory");
            let node = Node {
                dir,
                broker: None,
                gate: None,
                incarnation: 0,
                previous: None,
                registered: false,
                cut_until: 0,
                applied: 0,
                views: BTreeMap::new(),
            };
            sim.nodes.insert(id, node);
            sim.start(id);
        }
        let min_isr = ["2", "2", "2", "1"][sim.rng.below(4) as usize];
        let request = ControllerRequest::CreateTopic {
            name: TOPIC.into(),
            partitions: Some(PARTITIONS as i32),
            replication_factor: Some(3),
            assignment: None,
            configs: BTreeMap::from([("min.insync.replicas".to_string(), min_isr.to_string())]),
            validate_only: false,
        };
        let (records, _) = sim.controller.handle(&sim.image, 1, &request).expect("topic created");
        sim.commit(&records);
        sim.topic_id = sim.image.topic(TOPIC).expect("topic").id;
        for id in 1..=count {
            sim.learn(id, usize::MAX);
        }
        sim
    }

    fn log(&self, what: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("{:>7} {}", self.ms - T0_MS, what());
        }
    }

    fn now(&self) -> Instant {
        self.t0 + Duration::from_millis(self.ms - T0_MS)
    }

    fn commit(&mut self, records: &[MetadataRecord]) {
        if records.is_empty() {
            return;
        }
        let index = self.image.applied_index + 1;
        self.image.apply_batch(index, records).unwrap_or_else(|e| panic!("batch refused: {e}: {records:?}"));
        self.images.push(Arc::new(self.image.clone()));
        self.log(|| format!("image {}: {records:?}", self.images.len() - 1));
        if let Some(t) = self.image.topic(TOPIC) {
            for (i, p) in t.partitions.iter().enumerate() {
                let old = self.leader_epochs.insert(i, p.leader_epoch);
                if old.is_some_and(|e| e != p.leader_epoch) {
                    self.stats.elections += 1;
                }
            }
        }
    }

    fn alive(&self) -> Vec<i32> {
        self.nodes.iter().filter(|(_, n)| n.broker.is_some()).map(|(id, _)| *id).collect()
    }

    fn connected(&self, id: i32) -> bool {
        self.nodes[&id].broker.is_some() && self.nodes[&id].cut_until <= self.ms
    }

    /// A process starts on the node's directory: replays the image it had
    /// (a stale one: the metadata log is caught up later), then registers.
    fn start(&mut self, id: i32) {
        self.next_incarnation += 1;
        let incarnation = self.next_incarnation;
        let node = self.nodes.get_mut(&id).expect("node");
        let config = BrokerConfig { node_id: id, data_dir: node.dir.path().to_path_buf(), ..BrokerConfig::default() };
        let broker = Broker::open(config).expect("broker opens");
        let gate = Arc::new(ImageGate::new({
            let (weak, clock) = (Arc::downgrade(&broker), self.clock.clone());
            move |image| {
                if let Some(b) = weak.upgrade() {
                    b.apply_image_at(image, clock.load(Ordering::Acquire));
                }
            }
        }));
        // The state machine replays the node's own (stale) metadata first.
        if node.applied > 0 {
            gate.offer(self.images[node.applied].clone());
        }
        node.previous = (node.incarnation != 0).then_some(node.incarnation);
        node.incarnation = incarnation;
        node.broker = Some(broker);
        node.gate = Some(gate);
        node.registered = false;
        node.views.clear();
        let applied = node.applied;
        self.log(|| format!("node {id} starts (incarnation {incarnation}) on image {applied}"));
        self.register(id);
    }

    fn register(&mut self, id: i32) {
        if !self.connected(id) || self.nodes[&id].registered {
            return;
        }
        let node = &self.nodes[&id];
        let info = NodeInfo {
            id,
            incarnation: Uuid::from_u128(node.incarnation),
            listeners: BTreeMap::new(),
            rack: None,
            voter: true,
            fenced: false,
        };
        let previous = node.previous.map(Uuid::from_u128);
        if let Ok(records) = self.controller.register(&self.image, info, previous, self.now()) {
            self.commit(&records);
            let node = self.nodes.get_mut(&id).expect("node");
            node.registered = true;
            node.previous = Some(node.incarnation);
            // As the node's start does: its registration applied, the
            // broker may act on the (now caught-up) image.
            self.learn(id, usize::MAX);
            if let Some(gate) = &self.nodes[&id].gate {
                gate.open();
            }
        }
    }

    /// Node `id` applies the image at `upto` (capped at the newest).
    fn learn(&mut self, id: i32, upto: usize) {
        if !self.connected(id) {
            return;
        }
        let target = upto.min(self.images.len() - 1);
        let node = self.nodes.get_mut(&id).expect("node");
        if target <= node.applied {
            return;
        }
        node.applied = target;
        if let Some(gate) = &node.gate {
            gate.offer(self.images[target].clone());
        }
        self.log(|| format!("node {id} applies image {target}"));
    }

    fn crash(&mut self, id: i32) {
        let node = self.nodes.get_mut(&id).expect("node");
        let Some(broker) = node.broker.take() else { return };
        node.gate = None;
        node.views.clear();
        // Its connections die with it, and so do its rounds.
        self.net.retain(|m| m.from != id && m.to != id);
        self.held.retain(|m| m.from != id && m.to != id);
        self.rounds.retain(|_, r| r.node != id);
        assert_eq!(Arc::strong_count(&broker), 1, "nothing else holds a crashed node's broker");
        drop(broker);
        self.stats.crashes += 1;
        self.log(|| format!("node {id} crashes"));
    }

    fn send(&mut self, from: i32, to: i32, round: u64, payload: Payload) {
        let from_inc = self.nodes.get(&from).map_or(0, |n| n.incarnation);
        let to_inc = self.nodes.get(&to).map_or(0, |n| n.incarnation);
        self.net.push(Msg { from, from_inc, to, to_inc, round, payload });
    }

    fn broker(&self, id: i32) -> Option<Arc<Broker>> {
        self.nodes.get(&id).and_then(|n| n.broker.clone())
    }

    fn partition(&self, id: i32, index: usize) -> Option<Arc<Partition>> {
        self.broker(id)?.topic(TOPIC)?.partition(index as i32)
    }

    /// A producer with node `view`'s metadata writes one acks=all record.
    fn produce(&mut self) {
        let alive = self.alive();
        let Some(view) = self.rng.pick(&alive) else { return };
        let index = self.rng.below(PARTITIONS as u64) as usize;
        let Some(leader) =
            self.broker(view).and_then(|b| b.metadata().partition(TOPIC, index as i32).map(|p| p.leader))
        else {
            return;
        };
        let Some(part) = self.partition(leader, index) else { return };
        let value = self.next_value;
        self.next_value += 1;
        let text = value.to_string();
        let record = NewRecord { key: None, value: Some(text.as_bytes()), headers: vec![], timestamp: 1 };
        let batch = build_batch(&[record], Compression::None, -1, -1, -1).expect("batch");
        let Some(epoch) = part.leader_state().map(|s| s.leader_epoch) else { return };
        let Ok(appended) = part.append(&batch, Acks::All) else { return };
        let offset = appended.info.base_offset;
        self.written.insert((index, epoch, offset), value);
        self.log(|| format!("node {leader} appends {value} at {TOPIC}-{index}@{offset} epoch {epoch}"));
        // The leader's fsync, done before the step ends.
        part.flush_local().expect("leader flush");
        self.stats.appended += 1;
        self.pending.push(Pending { partition: index, offset, value, ack: Box::pin(appended.acknowledged()) });
    }

    /// Node `id` starts a round towards each leader it follows, where none
    /// is in flight (or the last one timed out).
    fn fetch_rounds(&mut self, id: i32) {
        let Some(broker) = self.broker(id) else { return };
        let leaders: BTreeSet<i32> = broker
            .hosted_topics()
            .iter()
            .flat_map(|t| t.partitions())
            .filter_map(|p| p.follower_state().map(|f| f.leader))
            .filter(|l| *l >= 0)
            .collect();
        for leader in leaders {
            let busy = self
                .rounds
                .values()
                .any(|r| r.node == id && r.leader == leader && self.ms.saturating_sub(r.started) < ROUND_TIMEOUT_MS);
            if busy {
                continue;
            }
            let followed = fetcher::followed_from(&broker, leader);
            if followed.is_empty() {
                continue;
            }
            let round = self.next_round;
            self.next_round += 1;
            let (payload, parts) = match fetcher::plan(followed) {
                Round::Truncate(parts) => (Payload::EpochQueries(fetcher::epoch_queries(&parts)), parts),
                Round::Fetch(parts) => (Payload::Fetch(fetcher::fetch_request(&parts, &self.config)), parts),
            };
            self.rounds.insert(round, RoundState { node: id, leader, started: self.ms, parts });
            self.send(id, leader, round, payload);
        }
    }

    /// Leaders ask the controller for the ISR changes their followers'
    /// progress calls for (the replicator's periodic check).
    fn isr_checks(&mut self) {
        for id in self.alive() {
            let Some(broker) = self.broker(id) else { continue };
            for (_, _, request) in isr_changes(&broker, &self.config, self.ms) {
                self.send(id, 0, 0, Payload::Alter(request));
            }
        }
    }

    /// Time passes: heartbeats from connected nodes, the controller's tick
    /// (fencing and elections), the leaders' ISR checks.
    fn advance(&mut self, ms: u64) {
        self.ms += ms;
        self.clock.store(self.ms, Ordering::Release);
        for id in self.nodes.keys().copied().collect::<Vec<_>>() {
            if !self.connected(id) {
                continue;
            }
            let node = &self.nodes[&id];
            if !node.registered {
                self.register(id);
                continue;
            }
            let inc = Uuid::from_u128(node.incarnation);
            if !self.controller.heartbeat(&self.image, id, inc, self.now()) {
                self.nodes.get_mut(&id).expect("node").registered = false;
            }
        }
        let records = self.controller.tick(&self.image, self.now());
        self.commit(&records);
        self.isr_checks();
    }

    /// Delivers message `i` of the bag.
    fn deliver(&mut self, i: usize) {
        let msg = self.net.swap_remove(i);
        if msg.to == 0 {
            // A cut node's requests never reach the controller.
            if !self.connected(msg.from) || self.nodes[&msg.from].incarnation != msg.from_inc {
                return;
            }
            if let Payload::Alter(request) = msg.payload {
                match self.controller.handle(&self.image, msg.from, &request) {
                    Ok((records, _)) => {
                        self.stats.isr_changes += 1;
                        self.commit(&records);
                    }
                    Err(_) => self.stats.refused_alters += 1,
                }
            }
            return;
        }
        let Some(node) = self.nodes.get(&msg.to).filter(|n| n.incarnation == msg.to_inc) else { return };
        let Some(broker) = node.broker.clone() else { return };
        match msg.payload {
            Payload::Fetch(request) => {
                let parts = fetched_partitions(&broker, &request);
                let (response, _) = collect(msg.from, &request, &parts, self.ms);
                // Through the wire format, as the cluster port sends it
                // (binary, or JSON as to a node that predates it).
                let binary = msg.round.is_multiple_of(2);
                let bytes = encode_fetch_response_with(&response, binary).expect("encodes");
                let response = decode_fetch_response_with(&bytes, binary).expect("decodes");
                self.send(msg.to, msg.from, msg.round, Payload::FetchAnswer(response));
            }
            Payload::EpochQueries(queries) => {
                let answers = serve_epoch_end(&broker, &queries);
                self.log(|| {
                    let parts: Vec<String> = queries
                        .iter()
                        .zip(&answers)
                        .map(|(q, a)| {
                            let p = broker.topic_by_id(q.topic_id).and_then(|t| t.partition(q.partition));
                            let local = p.map(|p| {
                                (p.latest_epoch(), p.log_end_offset(), p.leader_state().map(|s| s.leader_epoch))
                            });
                            format!("{}: {q:?} -> {:?}, here (latest, end, leading) {local:?}", q.partition, a.result)
                        })
                        .collect();
                    format!("node {} answers epoch queries of {}: {parts:?}", msg.to, msg.from)
                });
                self.send(msg.to, msg.from, msg.round, Payload::EpochAnswers(answers));
            }
            Payload::FetchAnswer(response) => {
                let Some(round) = self.rounds.remove(&msg.round) else { return };
                self.log(|| {
                    let parts: Vec<String> = round
                        .parts
                        .iter()
                        .zip(&response.partitions)
                        .map(|(f, r)| {
                            format!(
                                "{}-{} epoch {} end {} <- {:?} {}B",
                                f.part.topic,
                                f.part.index,
                                f.state.leader_epoch,
                                f.part.log_end_offset(),
                                r.result,
                                r.records.len()
                            )
                        })
                        .collect();
                    format!("node {} takes fetch answer from {}: {parts:?}", msg.to, msg.from)
                });
                let stale = self.stale_parts(&round.parts);
                // Late answers with records for a follower that fetches
                // (truncated) in a newer epoch: the case the epoch check
                // in `append_replicated` is for.
                self.stats.late_records += stale
                    .iter()
                    .filter(|(i, ..)| {
                        let f = &round.parts[*i];
                        response.partitions.get(*i).is_some_and(|r| !r.records.is_empty())
                            && f.part.follower_state().is_some_and(|s| s.truncated)
                    })
                    .count();
                let ends: Vec<u64> = round.parts.iter().map(|f| f.part.log_end_offset()).collect();
                fetcher::apply_fetch_response(&round.parts, response);
                // Every part, not only those the fetcher finds unflushed: an
                // append's queued fsync may be on a flusher thread still
                // telling the log's listener (the follower's high watermark),
                // and the step must end with that done, or the next ones race
                // it (a seed would not replay; seed 135 under load).
                fetcher::flush_all(round.parts.iter().map(|f| f.part.clone()).collect());
                self.check_unchanged(&round.parts, &stale);
                self.count_truncations(&round.parts, &ends);
            }
            Payload::EpochAnswers(answers) => {
                let Some(round) = self.rounds.remove(&msg.round) else { return };
                self.log(|| {
                    let parts: Vec<String> = round
                        .parts
                        .iter()
                        .zip(&answers)
                        .map(|(f, a)| {
                            format!(
                                "{}-{} epoch {} end {} latest {:?} <- {:?}",
                                f.part.topic,
                                f.part.index,
                                f.state.leader_epoch,
                                f.part.log_end_offset(),
                                f.part.latest_epoch(),
                                a.result
                            )
                        })
                        .collect();
                    format!("node {} takes epoch answers from {}: {parts:?}", msg.to, msg.from)
                });
                let stale = self.stale_parts(&round.parts);
                let ends: Vec<u64> = round.parts.iter().map(|f| f.part.log_end_offset()).collect();
                fetcher::apply_epoch_answers(&round.parts, answers);
                self.check_unchanged(&round.parts, &stale);
                self.count_truncations(&round.parts, &ends);
            }
            Payload::Alter(_) => {}
        }
    }

    /// The partitions of a round whose role moved on since it was sent
    /// (another epoch or leader, or it leads now), with their logs' state:
    /// an answer must not change them.
    fn stale_parts(&mut self, parts: &[Followed]) -> Vec<(usize, u64, Option<i32>)> {
        let mut out = Vec::new();
        for (i, f) in parts.iter().enumerate() {
            let now = f.part.follower_state();
            let moved = now.is_none_or(|s| s.leader != f.state.leader || s.leader_epoch != f.state.leader_epoch);
            if moved {
                self.stats.late_answers += 1;
                out.push((i, f.part.log_end_offset(), f.part.latest_epoch()));
            }
        }
        out
    }

    fn check_unchanged(&self, parts: &[Followed], stale: &[(usize, u64, Option<i32>)]) {
        for &(i, end, epoch) in stale {
            let p = &parts[i].part;
            assert_eq!(
                (p.log_end_offset(), p.latest_epoch()),
                (end, epoch),
                "seed {}: a late answer for {}-{} (sent in epoch {}) changed its log",
                self.seed,
                p.topic,
                p.index,
                parts[i].state.leader_epoch
            );
        }
    }

    fn count_truncations(&mut self, parts: &[Followed], ends: &[u64]) {
        self.stats.truncations += parts.iter().zip(ends).filter(|(f, e)| f.part.log_end_offset() < **e).count();
    }

    fn step(&mut self) {
        match self.rng.below(100) {
            0..=17 => self.produce(),
            18..=37 => {
                let alive = self.alive();
                if let Some(id) = self.rng.pick(&alive) {
                    self.fetch_rounds(id);
                }
            }
            38..=61 => {
                if !self.net.is_empty() {
                    let i = self.rng.below(self.net.len() as u64) as usize;
                    self.deliver(i);
                }
            }
            62 => {
                if !self.net.is_empty() {
                    let i = self.rng.below(self.net.len() as u64) as usize;
                    self.net.swap_remove(i);
                    self.stats.lost += 1;
                }
            }
            63..=64 => {
                // Hold back a fetch answer (the late answers the epoch and
                // fetch offset checks are for), else any message.
                let answers: Vec<usize> =
                    (0..self.net.len()).filter(|i| matches!(self.net[*i].payload, Payload::FetchAnswer(_))).collect();
                let i = match self.rng.pick(&answers) {
                    Some(i) => Some(i),
                    None => (!self.net.is_empty()).then(|| self.rng.below(self.net.len() as u64) as usize),
                };
                if let Some(i) = i {
                    let msg = self.net.swap_remove(i);
                    self.held.push(msg);
                }
            }
            65..=77 => {
                let ms = self.rng.below(700);
                self.advance(ms);
                if !self.held.is_empty() && self.rng.below(3) == 0 {
                    let i = self.rng.below(self.held.len() as u64) as usize;
                    let msg = self.held.swap_remove(i);
                    self.net.push(msg);
                }
            }
            78..=88 => {
                let ids: Vec<i32> = self.nodes.keys().copied().collect();
                if let Some(id) = self.rng.pick(&ids) {
                    let upto = if self.rng.below(2) == 0 { self.nodes[&id].applied + 1 } else { usize::MAX };
                    self.learn(id, upto);
                }
            }
            89..=91 => {
                let alive = self.alive();
                if let Some(id) = self.rng.pick(&alive) {
                    self.crash(id);
                }
            }
            92..=95 => {
                let down: Vec<i32> = self.nodes.iter().filter(|(_, n)| n.broker.is_none()).map(|(i, _)| *i).collect();
                if let Some(id) = self.rng.pick(&down) {
                    self.start(id);
                }
            }
            96..=97 => {
                let alive = self.alive();
                if let Some(id) = self.rng.pick(&alive) {
                    let ms = 2_000 + self.rng.below(6_000);
                    self.nodes.get_mut(&id).expect("node").cut_until = self.ms + ms;
                    self.stats.cuts += 1;
                }
            }
            _ => {
                let request = ControllerRequest::ElectLeaders { election: ElectionType::Preferred, partitions: None };
                if let Ok((records, _)) = self.controller.handle(&self.image, 1, &request) {
                    self.commit(&records);
                }
            }
        }
        self.check();
    }

    /// Reads node `id`'s log of `index` into its view (from where it last
    /// read, or from the start if it was cut below that), checking each
    /// batch against what its epoch's leader wrote there.
    fn read_view(&mut self, id: i32, index: usize) -> Option<(u64, Option<(i32, u64)>)> {
        let part = self.partition(id, index)?;
        let seed = self.seed;
        let written = &self.written;
        let view = self.nodes.get_mut(&id)?.views.entry(index).or_default();
        let end = part.log_end_offset();
        let len = view.records.len() as u64;
        // A truncation, or a truncation and appends past the old end since
        // the last look: read again from the first offset that may differ.
        let keep = if len > end { end } else { len.saturating_sub(1) };
        view.records.truncate(keep as usize);
        view.agreed = view.agreed.min(view.records.len());
        while (view.records.len() as u64) < end {
            let from = view.records.len() as u64;
            let Some(slice) = part.read_local(from, 1 << 16).expect("local read") else { break };
            let bytes = slice.to_vec().expect("slice");
            for (h, b) in ferry_records::batch::split(&bytes).expect("batches") {
                assert_eq!(h.base_offset, view.records.len() as u64, "seed {seed}: node {id} log {index} has a gap");
                let payload = records_payload(b, 1 << 20).expect("payload");
                for r in parse_records(&payload, h.records_count as usize).expect("records") {
                    let offset = view.records.len() as u64;
                    let value: u64 =
                        std::str::from_utf8(r.value.expect("value")).expect("utf8").parse().expect("number");
                    let wrote = written.get(&(index, h.partition_leader_epoch, offset));
                    assert_eq!(
                        wrote,
                        Some(&value),
                        "seed {seed}: node {id} holds value {value} at {TOPIC}-{index}@{offset} in epoch {}, \
                         which its leader did not write there",
                        h.partition_leader_epoch
                    );
                    view.records.push((h.partition_leader_epoch, value));
                }
            }
        }
        let leading = part.leader_state().map(|s| (s.leader_epoch, part.high_watermark()));
        Some((part.high_watermark(), leading))
    }

    /// How far node `id`'s view of `index` agrees with the committed prefix.
    fn agree(&mut self, id: i32, index: usize) -> usize {
        let committed = self.committed.entry(index).or_default();
        let Some(view) = self.nodes.get_mut(&id).and_then(|n| n.views.get_mut(&index)) else { return 0 };
        while view.agreed < view.records.len().min(committed.len())
            && view.records[view.agreed].1 == committed[view.agreed]
        {
            view.agreed += 1;
        }
        view.agreed
    }

    fn check(&mut self) {
        let seed = self.seed;
        for index in 0..PARTITIONS {
            for id in self.alive() {
                let Some((hw, leading)) = self.read_view(id, index) else { continue };
                let len = self.nodes[&id].views[&index].records.len();
                assert!(
                    hw as usize <= len,
                    "seed {seed}: node {id} {TOPIC}-{index} high watermark {hw} past its log end {len}"
                );
                // Replicas agree below every high watermark they expose.
                let agreed = self.agree(id, index);
                let committed = self.committed.entry(index).or_default();
                if hw as usize > agreed {
                    assert!(
                        agreed >= committed.len(),
                        "seed {seed}: node {id} exposes {TOPIC}-{index}@{agreed} (high watermark {hw}) with value {:?}, \
                         but {:?} is committed there",
                        self.nodes[&id].views[&index].records.get(agreed),
                        committed.get(agreed)
                    );
                    let view = &self.nodes[&id].views[&index];
                    committed.extend(view.records[agreed..hw as usize].iter().map(|r| r.1));
                    let role = if leading.is_some() { "leader" } else { "follower" };
                    self.log(|| format!("node {id} ({role}) commits {TOPIC}-{index} {agreed}..{hw}"));
                    self.agree(id, index);
                }
                // A leader's high watermark never goes back in its leadership.
                let inc = self.nodes[&id].incarnation;
                if let Some((epoch, hw)) = leading
                    && let Some((old_epoch, old)) = self.leader_hw.insert((id, inc, index), (epoch, hw))
                {
                    assert!(
                        old_epoch != epoch || hw >= old,
                        "seed {seed}: leader {id} {TOPIC}-{index} epoch {epoch} high watermark went back {old} -> {hw}"
                    );
                }
            }
            // Every ISR and ELR member holds the whole committed prefix.
            let Some(p) = self.image.partition(TOPIC, index as i32).cloned() else { continue };
            for id in p.isr.iter().chain(&p.elr).copied().collect::<Vec<_>>() {
                if self.partition(id, index).is_none() {
                    continue;
                }
                let agreed = self.agree(id, index);
                let committed = &self.committed[&index];
                assert!(
                    agreed >= committed.len(),
                    "seed {seed}: node {id}, in the ISR/ELR of {TOPIC}-{index} ({p:?}), agrees with the committed \
                     prefix only up to {agreed} of {} (its log: {:?})",
                    committed.len(),
                    self.nodes[&id].views[&index].records.iter().skip(agreed).take(5).collect::<Vec<_>>()
                );
            }
        }
        self.poll_acks();
    }

    /// Acknowledged records must be committed, at the offset the append got.
    fn poll_acks(&mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        let seed = self.seed;
        let mut i = 0;
        while i < self.pending.len() {
            match self.pending[i].ack.as_mut().poll(&mut cx) {
                Poll::Pending => i += 1,
                Poll::Ready(result) => {
                    let p = self.pending.swap_remove(i);
                    if let Ok(info) = result {
                        assert_eq!(info.base_offset, p.offset);
                        let committed = self.committed.get(&p.partition).and_then(|c| c.get(p.offset as usize));
                        assert_eq!(
                            committed,
                            Some(&p.value),
                            "seed {seed}: value {} acknowledged at {TOPIC}-{}@{} is not what is committed there",
                            p.value,
                            p.partition,
                            p.offset
                        );
                        self.acked.entry(p.partition).or_default().insert(p.offset, p.value);
                        self.stats.acknowledged += 1;
                    }
                }
            }
        }
        // Acknowledged earlier: still committed (the prefix only grows, so
        // this holds by construction; the ISR check above is the real test).
        for (index, acked) in &self.acked {
            let committed = &self.committed[index];
            for (o, v) in acked.iter().rev().take(3) {
                assert_eq!(committed.get(*o as usize), Some(v), "seed {seed}: acknowledged {v} at {o} lost");
            }
        }
    }

    /// Every fault healed: nodes up and connected, no loss, every node
    /// caught up; the partitions must converge.
    fn heal(&mut self) {
        for id in self.nodes.keys().copied().collect::<Vec<_>>() {
            self.nodes.get_mut(&id).expect("node").cut_until = 0;
            if self.nodes[&id].broker.is_none() {
                self.start(id);
            }
        }
        self.net.append(&mut self.held);
        for _ in 0..80 {
            self.advance(300);
            for id in self.nodes.keys().copied().collect::<Vec<_>>() {
                self.learn(id, usize::MAX);
                self.fetch_rounds(id);
            }
            while !self.net.is_empty() {
                self.deliver(0);
            }
            self.check();
        }
        for index in 0..PARTITIONS {
            let p = self.image.partition(TOPIC, index as i32).cloned().expect("partition");
            if p.leader < 0 && p.isr.is_empty() && p.elr.is_empty() {
                // No eligible replica left: every one was in the ISR or ELR
                // last but restarted from a directory whose previous run
                // never registered (KIP-966: an unclean restart leaves the
                // ELR). Offline until an unclean election, by design.
                self.stats.offline += 1;
                continue;
            }
            assert!(p.leader >= 0, "seed {}: {TOPIC}-{index} has no leader after healing: {p:?}", self.seed);
            let leader = self.partition(p.leader, index).expect("leader's partition");
            let end = leader.log_end_offset();
            assert_eq!(leader.high_watermark(), end, "seed {}: {TOPIC}-{index} did not converge: {p:?}", self.seed);
            assert_eq!(p.isr.len(), p.replicas.len(), "seed {}: {TOPIC}-{index} ISR not whole: {p:?}", self.seed);
            for r in &p.replicas {
                let view = &self.nodes[r].views[&index];
                assert_eq!(view.records.len() as u64, end, "seed {}: replica {r} of {TOPIC}-{index}", self.seed);
            }
        }
    }
}

/// Names the seed of a run that panics, and how to replay it alone.
struct Replay(u64);

impl Drop for Replay {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "replication seed {} failed; replay it with FERRY_SIM_FIRST_SEED={} FERRY_SIM_SEEDS=1 \
                 cargo test -p ferry-cluster --lib replication::sim",
                self.0, self.0
            );
        }
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(format!("FERRY_SIM_{name}")).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// 200 seeds in `cargo test`; `FERRY_SIM_SEEDS=N` (and
/// `FERRY_SIM_FIRST_SEED`) run more, or replay one.
#[test]
fn seeded_replication_keeps_acknowledged_records() {
    let first = env_number("FIRST_SEED", 0);
    let count = env_number("SEEDS", 200);
    let steps = env_number("STEPS", 400);
    let mut total = Stats::default();
    for seed in first..first.saturating_add(count) {
        let _replay = Replay(seed);
        let mut sim = Sim::new(seed);
        for _ in 0..steps {
            sim.step();
        }
        sim.heal();
        let s = &sim.stats;
        total.appended += s.appended;
        total.acknowledged += s.acknowledged;
        total.crashes += s.crashes;
        total.cuts += s.cuts;
        total.elections += s.elections;
        total.truncations += s.truncations;
        total.late_answers += s.late_answers;
        total.late_records += s.late_records;
        total.lost += s.lost;
        total.isr_changes += s.isr_changes;
        total.refused_alters += s.refused_alters;
        total.offline += s.offline;
    }
    eprintln!("{total:?}");
    let Stats {
        appended,
        acknowledged,
        crashes,
        cuts,
        elections,
        truncations,
        late_answers,
        late_records: _,
        lost,
        isr_changes,
        refused_alters,
        offline: _,
    } = total;
    assert!(
        [
            appended,
            acknowledged,
            crashes,
            cuts,
            elections,
            truncations,
            late_answers,
            lost,
            isr_changes,
            refused_alters,
        ]
        .iter()
        .all(|n| *n > 50)
            || count < 200,
        "the runs missed a case: {total:?}"
    );
}
