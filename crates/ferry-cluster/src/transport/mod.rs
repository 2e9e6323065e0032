//! The cluster port: request/response frames between nodes carrying Raft
//! RPCs, forwarded controller requests, registrations and heartbeats
//! (and, with #15, replication). One connection per peer, multiplexed by
//! correlation id; every request names its sender and its quorum
//! fingerprint, and a node refuses requests from another quorum.

mod error;
mod frame;
mod message;
mod peer_body;
mod pool;
mod server;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) use tests::garbled;

pub use error::TransportError;
pub use frame::{Frame, FrameError, MAX_FRAME, read_frame};
pub use message::{
    Forwarded, HeartbeatRequest, LeaderError, Pong, Registration, Request, Response, decode_request, encode_request,
};
pub use pool::Pool;
pub use server::{Service, ServiceFuture, serve};

/// The quorum fingerprint: the voters as `id@host:port`, by id, comma
/// separated. Two nodes agree on the quorum when their fingerprints are equal.
pub fn fingerprint(voters: &[(i32, String)]) -> String {
    let mut voters = voters.to_vec();
    voters.sort();
    voters.iter().map(|(id, addr)| format!("{id}@{addr}")).collect::<Vec<_>>().join(",")
}
