//! Telling a dead node from a silent one. A node's heartbeats stop both
//! when its process is gone (kill -9, a crash, an OOM kill) and when it is
//! paused or cut off; only the first may be fenced before the session
//! timeout, since a paused node's partitions should not change hands on
//! every long GC pause or brief network cut. So nodes probe the cluster
//! port of peers whose connections to them broke (every node: the next
//! controller leader then knows already), and the leader also probes
//! peers that went quiet (no heartbeat for 1.5 intervals): a refused or
//! reset connection means no process serves the port (the kernel of a
//! paused process still accepts, a cut-off host does not answer), an
//! answer means alive, and no answer in time says nothing. A peer found
//! gone is probed again every half `dead_node_grace` while it stays so, for up
//! to a session timeout; the leader hands the findings to the controller,
//! which fences a node found gone `dead_node_grace` apart and not heard
//! from since (`controller/liveness.rs`). A probe reaching a restarted
//! process counts as an answer (it registers in place of the old one).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_broker::metadata::{MetadataImage, listener};
use ferry_util::sync::lock;
use tokio::sync::Notify;

use super::Node;
use crate::controller::{Gone, QuorumController};
use crate::transport::{Request, Response};

/// Longest wait for a probe's answer: a paused node's kernel accepts the
/// connection but nobody answers.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The node's probing state.
#[derive(Default)]
pub(super) struct Probes {
    /// Nodes being probed now (one probe per node at a time).
    running: Mutex<BTreeSet<i32>>,
    /// Peers found gone, by id.
    found: Mutex<BTreeMap<i32, Gone>>,
    /// Raised when a probe found a node gone: the leader's loop runs at
    /// once instead of at its next tick.
    pub(super) wake: Notify,
}

impl Node {
    /// A connection from `from` ended (its end closed or reset it): probe it.
    pub(super) fn connection_broke(self: Arc<Self>, from: i32) {
        if from != self.id && self.config.dead_node_grace < self.config.session_timeout {
            let image = self.image();
            self.start_probe(&image, from);
        }
    }

    /// Leader only, with the term's controller in hand: hands the findings
    /// to the controller and starts probes of quiet peers. Off when
    /// `dead_node_grace` is not below the session timeout (nothing could
    /// be fenced earlier).
    pub(super) fn lead_probes(self: &Arc<Self>, controller: &mut QuorumController, image: &MetadataImage) {
        let config = &self.config;
        if config.dead_node_grace >= config.session_timeout {
            return;
        }
        let found: Vec<Gone> = {
            let mut found = lock(&self.probes.found);
            // Forget findings about nodes fenced or registered again since,
            // and stale ones (the session timeout took over).
            found.retain(|id, g| {
                image.nodes.get(id).is_some_and(|n| n.incarnation == g.incarnation && !n.fenced)
                    && g.last.elapsed() <= config.session_timeout
            });
            found.values().copied().collect()
        };
        controller.found_gone(found);
        for node in controller.quiet(image, Instant::now(), config.heartbeat_interval * 3 / 2) {
            self.start_probe(image, node);
        }
    }

    /// Probes `node` unless a probe of it runs already.
    fn start_probe(self: &Arc<Self>, image: &MetadataImage, node: i32) {
        if node == self.id {
            return;
        }
        let Some(info) = image.nodes.get(&node).filter(|n| !n.fenced) else { return };
        let Some(addr) = info.listeners.get(listener::CLUSTER).cloned() else { return };
        if !lock(&self.probes.running).insert(node) {
            return;
        }
        let incarnation = info.incarnation;
        tokio::spawn(self.clone().probe(node, incarnation, addr));
    }

    /// Probes `node` (registered as `incarnation`, serving the cluster port
    /// at `addr`); while it is found gone and still registered, unfenced,
    /// probes again every half `dead_node_grace`, for up to a session timeout.
    async fn probe(self: Arc<Self>, node: i32, incarnation: uuid::Uuid, addr: String) {
        let started = Instant::now();
        loop {
            match self.pool.call(&addr, &Request::Ping, PROBE_TIMEOUT).await {
                Ok(Response::Ping(_)) => {
                    lock(&self.probes.found).remove(&node);
                    break;
                }
                Err(e) if e.peer_gone() => {
                    let now = Instant::now();
                    let mut found = lock(&self.probes.found);
                    match found.get_mut(&node) {
                        Some(g) if g.incarnation == incarnation => g.last = now,
                        _ => {
                            tracing::info!(node = self.id, peer = node, error = %e, "peer's cluster port refuses: its process looks gone");
                            found.insert(node, Gone { node, incarnation, first: now, last: now });
                        }
                    }
                }
                // No answer in time, or not an answer to a probe: nothing known.
                Ok(_) | Err(_) => break,
            }
            self.probes.wake.notify_one();
            let live = self.image().nodes.get(&node).is_some_and(|n| n.incarnation == incarnation && !n.fenced);
            if !live || started.elapsed() >= self.config.session_timeout {
                break;
            }
            // Twice per grace: a heartbeat counted late (sent before the
            // death) delays the fence by at most half a grace more.
            tokio::time::sleep(self.config.dead_node_grace / 2).await;
        }
        lock(&self.probes.running).remove(&node);
    }
}
