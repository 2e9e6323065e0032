//! What a node does while it is the quorum leader: it runs the
//! [`QuorumController`] and commits what it returns, one call at a time
//! (the mutex), each against an image that holds everything committed
//! before (`ensure_linearizable` waits for this term's first entry to be
//! applied). A new term gets a new controller, which counts every node as
//! just seen; the first leader of a new cluster commits the bootstrap
//! records first.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_broker::metadata::{ControllerRequest, MetadataError, MetadataImage, MetadataRecord, NodeInfo, listener};
use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::{BasicNode, ChangeMembers};
use tokio::sync::MutexGuard;

use super::Node;
use crate::controller::QuorumController;
use crate::raft::raft_id;
use crate::transport::{Forwarded, HeartbeatRequest, LeaderError, Registration};

/// How often the leader lets the controller act on the passing of time.
const TICK: Duration = Duration::from_millis(500);

/// The controller of the current term.
pub(crate) struct LeaderState {
    term: u64,
    pub(super) controller: QuorumController,
    /// When the leadership was last confirmed (a quorum answered): the
    /// controller hears heartbeats only while it is.
    confirmed: Instant,
}

fn not_leader(f: &ForwardToLeader<u64, BasicNode>) -> LeaderError {
    LeaderError::NotLeader(f.leader_id.zip(f.leader_node.as_ref().map(|n| n.addr.clone())))
}

fn unavailable(e: impl std::fmt::Display) -> LeaderError {
    LeaderError::Failed(MetadataError::Unavailable(e.to_string()))
}

impl Node {
    /// Takes the controller for one call: confirms this node leads, with an
    /// image holding everything committed so far, and makes the term's
    /// controller (bootstrapping a new cluster) if need be.
    pub(super) async fn controller(
        &self,
    ) -> Result<(MutexGuard<'_, Option<LeaderState>>, Arc<MetadataImage>), LeaderError> {
        let mut guard = self.leader.lock().await;
        match self.raft.ensure_linearizable().await {
            Ok(_) => {}
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => return Err(not_leader(&f)),
            // Lost contact with a quorum: someone else may lead soon.
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => {
                return Err(LeaderError::NotLeader(None));
            }
            Err(RaftError::Fatal(e)) => return Err(unavailable(e)),
        }
        let term = self.raft.metrics().borrow().current_term;
        let now = Instant::now();
        if let Some(s) = guard.as_mut().filter(|s| s.term == term) {
            // Nothing was heard while the leadership could not be confirmed
            // (this process paused, its quorum out of reach) for more than
            // half a session: that silence is the controller's, not the
            // nodes'. (A tick is due every 500 ms, heartbeats more often.)
            let deaf = now.saturating_duration_since(s.confirmed);
            if deaf > s.controller.session_timeout() / 2 {
                tracing::info!(node = self.id, ?deaf, "the controller heard nothing for a while: sessions start again");
                s.controller.restart_sessions(now);
            }
            s.confirmed = now;
        }
        let mut image = self.image();
        if guard.as_ref().is_none_or(|s| s.term != term) {
            // The leader is this process: an incarnation of its own id in
            // the image is its previous life (a restart), never a live twin,
            // so the controller does not count it as alive. The restarted
            // node then registers at once instead of waiting out its old
            // session and being fenced first.
            let mut view = (*image).clone();
            view.nodes.remove(&self.id);
            let controller = QuorumController::new(self.controller_config(), &view, Instant::now())
                .with_voters(self.config.voters().len());
            if image.cluster_id.is_none() {
                let broker = self.broker.upgrade().ok_or_else(|| unavailable("broker stopped"))?;
                let records = controller.bootstrap(broker.cluster_id().to_string(), broker.import_records());
                let index = self.commit(records).await?;
                tracing::info!(node = self.id, index, "bootstrapped the cluster metadata");
                image = self.image();
            }
            *guard = Some(LeaderState { term, controller, confirmed: now });
        }
        Ok((guard, image))
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
        let (mut guard, image) = self.controller().await?;
        let state = guard.as_mut().ok_or_else(|| unavailable("no controller"))?;
        let (records, reply) = state.controller.handle(&image, from, &request)?;
        let index = if records.is_empty() { image.applied_index } else { self.commit(records).await? };
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
        let (mut guard, image) = self.controller().await?;
        let state = guard.as_mut().ok_or_else(|| unavailable("no controller"))?;
        let Registration { node, previous } = registration;
        let records = state.controller.register(&image, node.clone(), previous, Instant::now())?;
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

    /// A heartbeat; `false` tells the node to register again.
    pub(super) async fn lead_heartbeat(&self, beat: HeartbeatRequest) -> Result<bool, LeaderError> {
        let (mut guard, image) = self.controller().await?;
        let state = guard.as_mut().ok_or_else(|| unavailable("no controller"))?;
        Ok(state.controller.heartbeat(&image, beat.node, beat.incarnation, Instant::now()))
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
                let (mut guard, image) = self.controller().await?;
                let state = guard.as_mut().ok_or_else(|| unavailable("no controller"))?;
                if image.nodes.get(&self.id).is_none_or(|n| n.incarnation != self.incarnation) {
                    // Not registered yet in this process: a tick now would
                    // start counting this node's previous incarnation as
                    // alive and refuse its registration (see `controller`).
                    return Ok(());
                }
                self.lead_probes(&mut state.controller, &image);
                let records = state.controller.tick(&image, Instant::now());
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
