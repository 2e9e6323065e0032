//! What a node does while it is the quorum leader: it runs the
//! [`QuorumController`] and commits what it returns.
//!
//! Two locks, for two kinds of work (docs/cluster.md, "Heartbeats"):
//! - Decisions (requests, registrations, ticks) take turns
//!   ([`Leading::turn`]): each confirms the leadership with a quorum
//!   (`ensure_linearizable`, which also waits for this term's first entry
//!   to be applied) and holds its turn until its records are committed, so
//!   the next decision sees them.
//! - The controller itself ([`Leading::state`]) is locked only for
//!   synchronous work, never across an await. A heartbeat takes only this
//!   lock: liveness is the leader's own soft state, as in Kafka's
//!   controller, so a heartbeat is counted at once, without a quorum round
//!   trip and without waiting for a decision's commit. Only the fencing
//!   that liveness leads to goes through Raft.
//!
//! A new term gets a new controller, which counts every node as just
//! seen; the first leader of a new cluster commits the bootstrap records
//! first.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_broker::metadata::{ControllerRequest, MetadataError, MetadataImage, MetadataRecord, NodeInfo, listener};
use ferry_util::sync::lock;
use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::{BasicNode, ChangeMembers};

use super::Node;
use crate::controller::QuorumController;
use crate::raft::raft_id;
use crate::transport::{Forwarded, HeartbeatRequest, LeaderError, Registration};

/// How often the leader lets the controller act on the passing of time.
const TICK: Duration = Duration::from_millis(500);
/// How long a decision waits for the leadership to be confirmed (a quorum
/// round trip, then this term's first entry applied) before it gives its
/// turn up: a leader cut off from its quorum must not hold every later
/// decision behind an unbounded wait.
const CONFIRM_PATIENCE: Duration = Duration::from_secs(2);
/// A decision that waited longer than this for its turn and the
/// confirmation is logged at debug (to see a controller falling behind:
/// under faults and load that is thousands of lines in ten minutes).
const SLOW_TURN: Duration = Duration::from_millis(500);

/// The controller of the current term.
pub(crate) struct LeaderState {
    term: u64,
    controller: QuorumController,
}

/// The leader side's locks (see the module docs).
#[derive(Default)]
pub(crate) struct Leading {
    /// The current term's controller. A std mutex: held only for
    /// synchronous work.
    state: std::sync::Mutex<Option<LeaderState>>,
    /// One decision at a time, from the confirmation of the leadership to
    /// the commit of its records.
    turn: tokio::sync::Mutex<()>,
}

/// A decision's turn: the leadership was confirmed in `term`, the term's
/// controller exists, and `image` holds everything committed before.
pub(super) struct Turn<'a> {
    _turn: tokio::sync::MutexGuard<'a, ()>,
    term: u64,
    image: Arc<MetadataImage>,
}

fn not_leader(f: &ForwardToLeader<u64, BasicNode>) -> LeaderError {
    LeaderError::NotLeader(f.leader_id.zip(f.leader_node.as_ref().map(|n| n.addr.clone())))
}

fn unavailable(e: impl std::fmt::Display) -> LeaderError {
    LeaderError::Failed(MetadataError::Unavailable(e.to_string()))
}

impl Node {
    /// Takes a turn for one decision: confirms this node leads, with an
    /// image holding everything committed so far, and makes the term's
    /// controller (bootstrapping a new cluster) if need be.
    pub(super) async fn turn(&self, what: &'static str) -> Result<Turn<'_>, LeaderError> {
        let asked = Instant::now();
        let turn = self.leading.turn.lock().await;
        let waited = asked.elapsed();
        let confirmed = tokio::time::timeout(CONFIRM_PATIENCE, self.raft.ensure_linearizable()).await;
        if asked.elapsed() > SLOW_TURN {
            tracing::debug!(node = self.id, what, ?waited, confirm = ?asked.elapsed() - waited, "slow controller turn");
        }
        match confirmed {
            Ok(Ok(_)) => {}
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => return Err(not_leader(&f)),
            // Lost contact with a quorum: someone else may lead soon.
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) | Err(_) => {
                return Err(LeaderError::NotLeader(None));
            }
            Ok(Err(RaftError::Fatal(e))) => return Err(unavailable(e)),
        }
        let term = self.raft.metrics().borrow().current_term;
        let now = Instant::now();
        let mut image = self.image();
        {
            let mut state = lock(&self.leading.state);
            if let Some(s) = state.as_mut().filter(|s| s.term == term) {
                if let Some(deaf) = s.controller.hearing(now) {
                    tracing::info!(
                        node = self.id,
                        ?deaf,
                        "the controller heard nothing for a while: sessions start again"
                    );
                }
                return Ok(Turn { _turn: turn, term, image });
            }
        }
        // The leader is this process: an incarnation of its own id in the
        // image is its previous life (a restart), never a live twin, so the
        // controller does not count it as alive. The restarted node then
        // registers at once instead of waiting out its old session and
        // being fenced first.
        let mut view = (*image).clone();
        view.nodes.remove(&self.id);
        let controller =
            QuorumController::new(self.controller_config(), &view, now).with_voters(self.config.voters().len());
        if image.cluster_id.is_none() {
            let broker = self.broker.upgrade().ok_or_else(|| unavailable("broker stopped"))?;
            let records = controller.bootstrap(broker.cluster_id().to_string(), broker.import_records());
            let index = self.commit(records).await?;
            tracing::info!(node = self.id, index, "bootstrapped the cluster metadata");
            image = self.image();
        }
        *lock(&self.leading.state) = Some(LeaderState { term, controller });
        Ok(Turn { _turn: turn, term, image })
    }

    /// Runs `f` on the controller of `turn`'s term (gone if a newer term
    /// replaced it meanwhile).
    fn with_controller<T>(
        &self,
        turn: &Turn<'_>,
        f: impl FnOnce(&mut QuorumController) -> T,
    ) -> Result<T, LeaderError> {
        let mut state = lock(&self.leading.state);
        let s = state.as_mut().filter(|s| s.term == turn.term).ok_or(LeaderError::NotLeader(None))?;
        Ok(f(&mut s.controller))
    }

    /// Commits `records` as one entry; its index once applied here.
    async fn commit(&self, records: Vec<MetadataRecord>) -> Result<u64, LeaderError> {
        match self.raft.client_write(records).await {
            Ok(written) => written.data.map(|()| written.log_id.index).map_err(LeaderError::Failed),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(not_leader(&f)),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Carries out a controller request from node `from`.
    pub(super) async fn lead_request(&self, from: i32, request: ControllerRequest) -> Result<Forwarded, LeaderError> {
        let turn = self.turn("request").await?;
        let (records, reply) = self.with_controller(&turn, |c| c.handle(&turn.image, from, &request))??;
        let index = if records.is_empty() { turn.image.applied_index } else { self.commit(records).await? };
        if let ControllerRequest::UnregisterNode { node_id } = request {
            self.remove_learner(node_id).await;
        }
        Ok(Forwarded { reply, index })
    }

    /// An unregistered broker-only node stops receiving the metadata log
    /// (voters stay: the quorum is `--controller-quorum`). Best effort: a
    /// learner left behind only costs replication traffic to a dead address.
    async fn remove_learner(&self, node: i32) {
        let id = raft_id(node);
        let learner = self.raft.metrics().borrow().membership_config.membership().learner_ids().any(|l| l == id);
        if !learner {
            return;
        }
        let remove = ChangeMembers::RemoveNodes(std::collections::BTreeSet::from([id]));
        match self.raft.change_membership(remove, false).await {
            Ok(_) => tracing::info!(node, "removed the unregistered node's Raft learner"),
            Err(e) => tracing::warn!(node, error = %e, "cannot remove the unregistered node's Raft learner"),
        }
    }

    /// Registers a node; a broker-only node becomes a Raft learner first,
    /// so that it receives the entry that registers it.
    pub(super) async fn lead_register(&self, registration: Registration) -> Result<u64, LeaderError> {
        let turn = self.turn("register").await?;
        let Registration { node, previous } = registration;
        let now = Instant::now();
        let records = self.with_controller(&turn, |c| c.register(&turn.image, node.clone(), previous, now))??;
        if !node.voter {
            self.add_learner(&node).await?;
        }
        let index = self.commit(records).await?;
        tracing::info!(node = node.id, incarnation = %node.incarnation, index, "node registered");
        Ok(index)
    }

    async fn add_learner(&self, node: &NodeInfo) -> Result<(), LeaderError> {
        let addr = node.listeners.get(listener::CLUSTER).ok_or_else(|| {
            LeaderError::Failed(MetadataError::Unavailable(format!("node {} has no cluster listener", node.id)))
        })?;
        let id = raft_id(node.id);
        let known = self.raft.metrics().borrow().membership_config.membership().get_node(&id).cloned();
        let result = match known {
            Some(n) if &n.addr == addr => return Ok(()),
            // Back at another address: point replication there.
            Some(_) => {
                let nodes = BTreeMap::from([(id, BasicNode::new(addr))]);
                self.raft.change_membership(ChangeMembers::SetNodes(nodes), true).await
            }
            None => self.raft.add_learner(id, BasicNode::new(addr), false).await,
        };
        match result {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(not_leader(&f)),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// A heartbeat; `false` tells the node to register again. Counted at
    /// once by the controller of the term this node leads as far as it
    /// knows (no quorum round trip, no wait for a decision: see the module
    /// docs). A leader deposed without knowing it yet counts heartbeats no
    /// one will act on: its fences cannot commit, and the next term's
    /// controller starts every session afresh.
    pub(super) fn lead_heartbeat(&self, beat: HeartbeatRequest) -> Result<bool, LeaderError> {
        let (leader, term, leader_addr) = {
            let m = self.raft.metrics().borrow().clone();
            let addr =
                m.current_leader.and_then(|l| m.membership_config.membership().get_node(&l).map(|n| n.addr.clone()));
            (m.current_leader, m.current_term, addr)
        };
        if leader != Some(raft_id(self.id)) {
            return Err(LeaderError::NotLeader(leader.zip(leader_addr)));
        }
        let image = self.image();
        let now = Instant::now();
        let mut state = lock(&self.leading.state);
        // Just elected: the controller comes with the term's first turn.
        let s = state.as_mut().filter(|s| s.term == term).ok_or_else(|| unavailable("the controller is starting"))?;
        // This node's own heartbeat says the process runs, not that anyone
        // can reach it.
        if beat.node != self.id
            && let Some(deaf) = s.controller.hearing(now)
        {
            tracing::info!(node = self.id, ?deaf, "the controller heard nothing for a while: sessions start again");
        }
        Ok(s.controller.heartbeat(&image, beat.node, beat.incarnation, now))
    }

    /// While this node leads: takes up the controller as soon as it is
    /// elected (bootstrapping a new cluster) and ticks it, committing the
    /// fences and leader moves it decides on, and probes quiet peers
    /// (`probe.rs`); a probe's finding wakes it at once.
    pub(super) async fn lead_while_leader(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut metrics = self.raft.metrics();
        let mut taken: Option<u64> = None;
        loop {
            let ticked = tokio::select! {
                _ = ticks.tick() => true,
                // A probe found something: act now, not at the next tick.
                () = self.probes.wake.notified() => true,
                changed = metrics.changed() => if changed.is_err() { return } else { false },
            };
            let (leader, term) = {
                let m = metrics.borrow_and_update();
                (m.current_leader, m.current_term)
            };
            // Metrics change all the time; act on a tick, or at once on
            // winning an election.
            if leader != Some(raft_id(self.id)) || (taken == Some(term) && !ticked) {
                continue;
            }
            taken = Some(term);
            let result = async {
                let turn = self.turn("tick").await?;
                let image = &turn.image;
                if image.nodes.get(&self.id).is_none_or(|n| n.incarnation != self.incarnation) {
                    // Not registered yet in this process: a tick now would
                    // start counting this node's previous incarnation as
                    // alive and refuse its registration (see `turn`).
                    return Ok(());
                }
                let records = self.with_controller(&turn, |c| {
                    let now = Instant::now();
                    // The node running the controller is alive: its tick
                    // runs. Its heartbeat loop may be late (an attempt on
                    // a former leader timing out), which must not fence the
                    // node, and with it every partition it leads.
                    c.heartbeat(image, self.id, self.incarnation, now);
                    self.lead_probes(c, image);
                    c.tick(image, now)
                })?;
                if !records.is_empty() {
                    self.commit(records).await?;
                }
                Ok::<(), LeaderError>(())
            }
            .await;
            if let Err(e) = result {
                tracing::debug!(node = self.id, error = %e, "controller tick");
            }
        }
    }
}

#[cfg(test)]
#[path = "leader_tests.rs"]
mod tests;
