//! Calls on another node's broker over the cluster port (the broker's
//! `Controller::call_peer`): work only a partition's leader can do.

use std::time::Duration;

use ferry_broker::metadata::{PeerError, PeerReply, PeerRequest, listener};

use super::Node;
use crate::transport::{Request, Response};

/// How long one peer call may take, the work on the peer included.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);

impl Node {
    /// Sends `request` to node `node` at the cluster address it registered.
    pub(crate) async fn call_peer(&self, node: i32, request: PeerRequest) -> Result<PeerReply, PeerError> {
        let addr = self
            .images
            .borrow()
            .nodes
            .get(&node)
            .filter(|n| !n.fenced)
            .and_then(|n| n.listeners.get(listener::CLUSTER).cloned())
            .ok_or_else(|| PeerError::Unavailable(format!("node {node} is not live")))?;
        match self.pool.call(&addr, &Request::Peer(request), PEER_TIMEOUT).await {
            Ok(Response::Peer(answer)) => answer,
            Ok(Response::Refused(e)) => Err(PeerError::Unavailable(e.to_string())),
            Ok(_) => Err(PeerError::Unavailable(format!("{addr} answered with another kind"))),
            Err(e) => Err(PeerError::Unavailable(e.to_string())),
        }
    }
}
