//! openraft's network over the cluster port: each Raft RPC is one request
//! on the pooled connection to the target's address (from the membership).

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{Backoff, RPCOption};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};

use super::TypeConfig;
use crate::transport::{Pool, Request, Response, TransportError};

/// Makes a [`Peer`] per replication target.
#[derive(Clone)]
pub struct Network {
    pool: Arc<Pool>,
}

impl Network {
    /// Raft RPCs go through `pool`.
    pub fn new(pool: Arc<Pool>) -> Network {
        Network { pool }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        Peer { pool: self.pool.clone(), target, addr: node.addr.clone() }
    }
}

/// The RPC client for one peer.
pub struct Peer {
    pool: Arc<Pool>,
    target: u64,
    addr: String,
}

type RpcResult<T, E = openraft::error::Infallible> = Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>>;

impl Peer {
    async fn call(&self, request: Request, option: &RPCOption) -> Result<Response, TransportError> {
        self.pool.call(&self.addr, &request, option.hard_ttl()).await
    }

    fn remote<E: std::error::Error>(&self, e: RaftError<u64, E>) -> RPCError<u64, BasicNode, RaftError<u64, E>> {
        RPCError::RemoteError(RemoteError::new_with_node(self.target, BasicNode::new(&self.addr), e))
    }
}

/// A dead or unreachable peer is `Unreachable` (openraft backs off); the
/// rest are network errors (retried at once).
fn failed<E: std::error::Error>(e: &TransportError) -> RPCError<u64, BasicNode, E> {
    match e {
        TransportError::Unreachable { .. }
        | TransportError::Down { .. }
        | TransportError::Closed(_)
        | TransportError::Refused(_) => RPCError::Unreachable(Unreachable::new(e)),
        TransportError::Timeout { .. } | TransportError::Protocol { .. } => RPCError::Network(NetworkError::new(e)),
    }
}

fn unexpected<E: std::error::Error>(addr: &str) -> RPCError<u64, BasicNode, E> {
    let e = TransportError::Protocol { addr: addr.to_string(), reason: "reply of another kind".into() };
    RPCError::Network(NetworkError::new(&e))
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>> {
        match self.call(Request::AppendEntries(rpc), &option).await {
            Ok(Response::AppendEntries(r)) => r.map_err(|e| self.remote(e)),
            Ok(_) => Err(unexpected(&self.addr)),
            Err(e) => Err(failed(&e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        match self.call(Request::InstallSnapshot(rpc), &option).await {
            Ok(Response::InstallSnapshot(r)) => r.map_err(|e| self.remote(e)),
            Ok(_) => Err(unexpected(&self.addr)),
            Err(e) => Err(failed(&e)),
        }
    }

    async fn vote(&mut self, rpc: VoteRequest<u64>, option: RPCOption) -> RpcResult<VoteResponse<u64>> {
        match self.call(Request::Vote(rpc), &option).await {
            Ok(Response::Vote(r)) => r.map_err(|e| self.remote(e)),
            Ok(_) => Err(unexpected(&self.addr)),
            Err(e) => Err(failed(&e)),
        }
    }

    fn backoff(&self) -> Backoff {
        // A peer that is down is retried every 200 ms, so a restarted node
        // catches up soon after it is back.
        Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}
