//! The node's side of the cluster port: Raft RPCs go to openraft, the
//! controller calls to the leader side (which answers `NotLeader` with the
//! leader's address when this node does not lead).

use std::sync::Arc;

use ferry_broker::metadata::{MetadataError, PeerError};

use crate::transport::{Pong, Request, Response, Service, ServiceFuture};

use super::Node;

impl Service for Node {
    fn node_id(&self) -> i32 {
        self.id
    }

    fn quorum(&self) -> &str {
        &self.quorum
    }

    fn disconnected(self: Arc<Self>, from: i32) {
        self.connection_broke(from);
    }

    fn call(self: Arc<Self>, from: i32, request: Request) -> ServiceFuture {
        Box::pin(async move {
            match request {
                Request::AppendEntries(r) => Response::AppendEntries(self.raft.append_entries(r).await),
                Request::Vote(r) => Response::Vote(self.raft.vote(r).await),
                Request::InstallSnapshot(r) => Response::InstallSnapshot(self.raft.install_snapshot(r).await),
                Request::Forward(r) => Response::Forward(self.lead_request(from, r).await),
                Request::Register(n) => Response::Register(self.lead_register(n).await),
                Request::Heartbeat(h) => Response::Heartbeat(self.lead_heartbeat(h)),
                Request::Peer(r) => Response::Peer(match self.broker.upgrade() {
                    Some(broker) => broker.serve_peer(r).await,
                    None => Err(PeerError::Unavailable("the broker is shutting down".into())),
                }),
                Request::ReplicaFetch(r) => match self.broker.upgrade() {
                    Some(broker) => Response::ReplicaFetch(crate::replication::serve_fetch(broker, from, r).await),
                    None => Response::Refused(MetadataError::Unavailable("broker stopped".into())),
                },
                Request::Ping => Response::Ping(Pong {
                    node: self.id,
                    incarnation: self.incarnation,
                    binary_peer: true,
                    binary_fetch: true,
                }),
                Request::EpochEnd(q) => match self.broker.upgrade() {
                    Some(broker) => Response::EpochEnd(crate::replication::serve_epoch_end(&broker, &q)),
                    None => Response::Refused(MetadataError::Unavailable("broker stopped".into())),
                },
            }
        })
    }
}
