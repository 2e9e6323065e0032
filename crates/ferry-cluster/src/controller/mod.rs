//! The quorum controller: what only the Raft leader does. It turns
//! requests, registrations, heartbeats and the passing of time into
//! metadata records; it never touches the network or the disk, and takes
//! the clock as an argument, so every decision is tested deterministically.
//! The node commits what it returns as one Raft entry (all or nothing).
//!
//! - `requests.rs`: validation and records of each [`ControllerRequest`].
//! - `placement.rs`: rack-aware replica placement, explicit assignments.
//! - `liveness.rs`: last-seen times, duplicate ids.
//! - `election.rs`: fencing, leader moves, the ISR and ELR rules (KIP-966).
//! - `balance.rs`: automatic preferred-leader balancing and ElectLeaders.
//! - `decommission.rs`: moving replicas off leaving nodes, completing
//!   reassignments (the reassignment rules are `ferry_broker::metadata`'s).
//! - `draft.rs`: a change under construction, applied to a scratch image
//!   as it grows, so the controller never returns records the apply refuses.
//!
//! Internal topics (`__consumer_offsets`, `__transaction_state`) are
//! created lazily: by the first registration after which enough nodes are
//! live for their replication factor (the configured default, else
//! min(3, live nodes)) and, if the node said how many voters there are
//! ([`QuorumController::with_voters`]), at least min(3, voters) nodes are
//! live; at bootstrap no node has registered yet.

mod balance;
mod decommission;
mod draft;
mod election;
#[cfg(test)]
mod election_tests;
#[cfg(test)]
mod gone_tests;
mod liveness;
mod placement;
mod requests;
#[cfg(test)]
mod scenario;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_broker::metadata::{
    ControllerReply, ControllerRequest, MetadataError, MetadataImage, MetadataRecord, NodeInfo,
};
use uuid::Uuid;

use draft::Draft;
pub use liveness::Gone;
use liveness::Liveness;
use placement::NodeOrder;
use requests::TopicSpec;

/// The group coordinators' topic.
pub const CONSUMER_OFFSETS: &str = "__consumer_offsets";
/// The transaction coordinators' topic.
pub const TRANSACTION_STATE: &str = "__transaction_state";

/// The controller's settings (from [`ClusterConfig`](crate::ClusterConfig)).
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// A node silent this long is fenced.
    pub session_timeout: Duration,
    /// A node whose process is gone (probes of its cluster port refused
    /// or reset, at least this far apart, and no heartbeat in between) is
    /// fenced then instead of at the session timeout. At or above the
    /// session timeout it changes nothing.
    pub dead_node_grace: Duration,
    /// `num.partitions`.
    pub default_partitions: i32,
    /// `default.replication.factor`; `None`: min(3, live nodes).
    pub default_replication_factor: Option<i16>,
    /// Most partitions one topic may have.
    pub max_partitions_per_topic: i32,
    /// Partitions of `__consumer_offsets` and `__transaction_state`.
    pub internal_topic_partitions: i32,
    /// Producer ids per block handed to a node.
    pub producer_id_block: i64,
    /// This node's static topic config defaults (the config file's), for
    /// the eligible leader replicas' `min.insync.replicas`; the dynamic
    /// ones come from the image. Nodes should agree on them.
    pub topic_defaults: BTreeMap<String, String>,
    /// Automatic preferred-leader balancing.
    pub leader_balance: LeaderBalanceConfig,
}

/// Automatic leader balancing (Kafka's `auto.leader.rebalance.enable`,
/// `leader.imbalance.check.interval.seconds`,
/// `leader.imbalance.per.broker.percentage`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderBalanceConfig {
    /// Whether the controller moves leadership back to preferred replicas.
    pub enabled: bool,
    /// How often it checks.
    pub check_interval: Duration,
    /// A node whose preferred partitions are led elsewhere for more than
    /// this share (percent) gets them back.
    pub max_imbalance_percent: u32,
}

impl Default for LeaderBalanceConfig {
    fn default() -> Self {
        LeaderBalanceConfig { enabled: true, check_interval: Duration::from_secs(300), max_imbalance_percent: 10 }
    }
}

/// The leader's controller state: liveness of every node (in memory only;
/// a new leader starts by counting every node as just seen).
pub struct QuorumController {
    config: ControllerConfig,
    liveness: Liveness,
    /// Live nodes the internal topics wait for (see [`QuorumController::with_voters`]).
    internal_topic_min_nodes: usize,
    /// When leader balancing last ran (or the controller started).
    last_balance: Instant,
    /// When the leader last heard anyone: its leadership confirmed, or a
    /// heartbeat from another node (see [`QuorumController::hearing`]).
    heard: Instant,
}

impl QuorumController {
    /// A controller for a leader elected at `now` over `image`.
    pub fn new(config: ControllerConfig, image: &MetadataImage, now: Instant) -> Self {
        QuorumController {
            config,
            liveness: Liveness::new(image, now),
            internal_topic_min_nodes: 1,
            last_balance: now,
            heard: now,
        }
    }

    /// Tells the controller the quorum has `voters` voters: the internal
    /// topics then wait until min(3, voters) nodes are live, so that a
    /// cluster starting node by node does not put every coordinator on the
    /// first node (Kafka's internal topic creation likewise fails until the
    /// cluster has `offsets.topic.replication.factor` brokers). Without
    /// it they come with the first registration.
    #[must_use]
    pub fn with_voters(mut self, voters: usize) -> Self {
        self.internal_topic_min_nodes = voters.clamp(1, 3);
        self
    }

    /// The records a new cluster starts with: its id and `imported` topics
    /// found in a single-node data directory (`CreateTopic` records with
    /// their existing ids). A record that would not apply (a name imported
    /// twice) is left out, so the first entry always applies. The internal
    /// topics come later, with the first registrations (see the module docs).
    pub fn bootstrap(&self, cluster_id: String, imported: Vec<MetadataRecord>) -> Vec<MetadataRecord> {
        let mut draft = Draft::new(&MetadataImage::default());
        for record in std::iter::once(MetadataRecord::InitCluster { cluster_id }).chain(imported) {
            let shown = format!("{record:?}");
            if let Err(e) = draft.push(record) {
                tracing::warn!(record = %shown, error = %e, "import: record left out");
            }
        }
        draft.into_records()
    }

    /// Carries out `request` from node `from` against `image`: the records
    /// to commit (none for validate_only) and the reply.
    pub fn handle(
        &mut self,
        image: &MetadataImage,
        from: i32,
        request: &ControllerRequest,
    ) -> Result<(Vec<MetadataRecord>, ControllerReply), MetadataError> {
        let mut draft = Draft::new(image);
        let reply = requests::carry_out(&self.config, &mut draft, from, request)?;
        election::clear_stale_elrs(&self.config, &mut draft)?;
        let validate_only = match request {
            ControllerRequest::CreateTopic { validate_only, .. }
            | ControllerRequest::CreatePartitions { validate_only, .. } => *validate_only,
            _ => false,
        };
        let records = if validate_only { Vec::new() } else { draft.into_records() };
        Ok((records, reply))
    }

    /// A node (re-)registers at `now`: `RegisterNode`, leadership of the
    /// leaderless partitions it is eligible for (ISR, else ELR), and the
    /// internal topics if they are still missing. `previous` is the
    /// incarnation the node's data directory last ran as: naming the
    /// registered incarnation, the registration replaces it at once (a
    /// restart, even after kill -9: acknowledged data was fsynced, so it
    /// is the same data and stays eligible). Otherwise it is refused with
    /// `DuplicateNodeId` while another incarnation holds the id and was
    /// heard from within the session timeout (a second process with the
    /// same id and another data directory; the node may retry after the
    /// timeout); once it may register, its old incarnation is fenced and
    /// it leaves every ELR first (its data is not known to be the same).
    pub fn register(
        &mut self,
        image: &MetadataImage,
        node: NodeInfo,
        previous: Option<Uuid>,
        now: Instant,
    ) -> Result<Vec<MetadataRecord>, MetadataError> {
        let (id, incarnation) = (node.id, node.incarnation);
        let replaces = previous.is_some_and(|p| image.nodes.get(&id).is_some_and(|n| n.incarnation == p));
        if !replaces && self.liveness.held_by_other(image, id, incarnation, now, self.config.session_timeout) {
            return Err(MetadataError::DuplicateNodeId(id));
        }
        let mut draft = Draft::new(image);
        election::forget_unknown_history(&self.config, &mut draft, id, incarnation, previous)?;
        draft.push(MetadataRecord::RegisterNode(node))?;
        election::restore(&self.config, &mut draft, id)?;
        self.create_internal_topics(&mut draft);
        self.liveness.saw(id, incarnation, now);
        Ok(draft.into_records())
    }

    /// A heartbeat from `node` of `incarnation` at `now`. `false`: the node
    /// must register again (unknown, another incarnation, or fenced).
    pub fn heartbeat(&mut self, image: &MetadataImage, node: i32, incarnation: Uuid, now: Instant) -> bool {
        self.liveness.heartbeat(image, node, incarnation, now)
    }

    /// The leader hears at `now`: its leadership was confirmed by a quorum,
    /// or another node's heartbeat arrived (its own node's heartbeat says
    /// only that the process runs, not that anyone can reach it). If it
    /// had heard nothing for more than half a session (paused, starved, cut
    /// off from every peer but not deposed), that silence was its own, not
    /// the nodes': every session starts again at `now`, as after an
    /// election. Otherwise its first tick afterwards would fence every node
    /// at once, itself included (docs/reliability.md, Found 14). Returns
    /// how long it was deaf when it restarted the sessions.
    pub fn hearing(&mut self, now: Instant) -> Option<Duration> {
        let deaf = now.saturating_duration_since(self.heard);
        self.heard = self.heard.max(now);
        (deaf > self.config.session_timeout / 2).then(|| {
            self.liveness.restart_sessions(now);
            deaf
        })
    }

    /// What probes of the nodes' cluster ports found so far (replacing
    /// what was said before): nodes whose process is gone. A node found
    /// gone at least `dead_node_grace` apart, and not heard from since the
    /// first, is fenced by the next tick; one that is silent but not found
    /// gone (paused, cut off) waits for the session timeout.
    pub fn found_gone(&mut self, found: impl IntoIterator<Item = Gone>) {
        self.liveness.found(found);
    }

    /// Unfenced nodes not heard from for more than `after` at `now`: the
    /// ones worth probing (with those whose connections broke).
    pub fn quiet(&mut self, image: &MetadataImage, now: Instant, after: Duration) -> Vec<i32> {
        self.liveness.silent(image, now, after)
    }

    /// Fences nodes silent past the session timeout at `now`, and nodes
    /// whose process is known gone (see [`QuorumController::found_gone`]) past
    /// `dead_node_grace`, and moves the leadership of their partitions to
    /// live eligible replicas (or to none); see `election.rs` for the rule. The node commits the records
    /// before its next tick, so a node is not fenced twice.
    ///
    /// Then it moves replicas off decommissioning nodes where it can and
    /// completes the reassignments whose new replicas are in sync (see
    /// `decommission.rs`). Every `leader_balance.check_interval` it also
    /// moves leadership back to preferred replicas (`balance.rs`), after
    /// the moves, so it sees the replica lists they leave.
    pub fn tick(&mut self, image: &MetadataImage, now: Instant) -> Vec<MetadataRecord> {
        let mut silent = self.liveness.silent(image, now, self.config.session_timeout);
        if self.config.dead_node_grace < self.config.session_timeout {
            silent.extend(self.liveness.dead(image, self.config.dead_node_grace));
            silent.sort_unstable();
            silent.dedup();
        }
        let balance = &self.config.leader_balance;
        let balance_due = balance.enabled && now.saturating_duration_since(self.last_balance) >= balance.check_interval;
        if silent.is_empty() && !balance_due && !decommission::due(image) {
            return Vec::new(); // no image copy on an idle tick
        }
        let mut draft = Draft::new(image);
        if !silent.is_empty() {
            let mut fencing = Draft::new(image);
            match election::fence(&self.config, &mut fencing, &silent) {
                Ok(()) => {
                    let silent_for: Vec<_> = silent.iter().map(|n| self.liveness.silent_for(*n, now)).collect();
                    tracing::info!(nodes = ?silent, ?silent_for, "fencing silent or dead nodes");
                    draft = fencing;
                }
                Err(e) => tracing::error!(nodes = ?silent, error = %e, "fencing refused by the image"),
            }
        }
        decommission::progress(&mut draft);
        if let Err(e) = election::clear_stale_elrs(&self.config, &mut draft) {
            tracing::error!(error = %e, "clearing stale eligible leader replicas refused by the image");
        }
        if balance_due {
            self.last_balance = now;
            balance::rebalance(&mut draft, self.config.leader_balance.max_imbalance_percent);
        }
        draft.into_records()
    }

    /// Adds the internal topics that are missing, if enough nodes are live
    /// for their replication factor.
    fn create_internal_topics(&self, draft: &mut Draft) {
        let configs = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
        let partitions = self.config.internal_topic_partitions.clamp(1, self.config.max_partitions_per_topic.max(1));
        for name in [CONSUMER_OFFSETS, TRANSACTION_STATE] {
            let live = NodeOrder::live(draft.image()).len();
            if draft.image().topic(name).is_some()
                || live < self.internal_topic_min_nodes
                || requests::replication_factor(&self.config, None, live).is_err()
            {
                continue;
            }
            let spec = TopicSpec {
                name,
                partitions: Some(partitions),
                replication_factor: None,
                assignment: None,
                internal: true,
                configs: &configs,
            };
            if let Err(e) = requests::create_topic(&self.config, draft, &spec) {
                tracing::warn!(topic = name, error = %e, "internal topic not created");
            }
        }
    }
}
