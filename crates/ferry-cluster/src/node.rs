//! A running cluster node: the cluster port, the Raft group (voter or
//! learner), registration and heartbeats, and the broker's `Controller`.

use std::sync::Arc;

use ferry_broker::Broker;
use ferry_broker::metadata::{Controller, ControllerFuture, ControllerReply, ControllerRequest, ControllerStatus};

use crate::config::ClusterConfig;
use crate::error::ClusterError;

/// One node of the cluster (a quorum of one when alone).
pub struct ClusterNode {
    config: ClusterConfig,
}

impl ClusterNode {
    /// Binds the cluster port, opens the Raft state under the data
    /// directory, joins the quorum (initialising it on a first start),
    /// installs itself as `broker`'s controller and image source, and
    /// registers this node. Returns once this node's registration is
    /// applied locally (the broker then knows its partitions); while no
    /// quorum is reachable it keeps trying and logs "waiting for quorum".
    pub async fn start(config: ClusterConfig, broker: Arc<Broker>) -> Result<Arc<ClusterNode>, ClusterError> {
        let _ = broker;
        Ok(Arc::new(ClusterNode { config }))
    }

    /// Controlled shutdown: stops heartbeating, leaves Raft, closes the port.
    pub async fn shutdown(&self) {}
}

impl Controller for ClusterNode {
    fn submit(&self, request: ControllerRequest) -> ControllerFuture<ControllerReply> {
        let _ = request;
        Box::pin(async { Err(ferry_broker::metadata::MetadataError::Unavailable("not yet built".into())) })
    }

    fn status(&self) -> ControllerStatus {
        ControllerStatus { node_id: self.config.node_id, ..ControllerStatus::default() }
    }
}
