//! The controller quorum's Raft group on openraft 0.9: the type config,
//! the log store on a ferry-log [`Log`](ferry_log::Log), the state machine
//! that builds the [`MetadataImage`](ferry_broker::metadata::MetadataImage),
//! and the network client over the cluster port.

mod log_store;
mod network;
mod state_file;
mod state_machine;
#[cfg(test)]
mod tests;

use std::io::Cursor;
use std::sync::Arc;

use ferry_broker::metadata::{MetadataError, MetadataRecord};
use openraft::{BasicNode, Config, SnapshotPolicy};

use crate::error::ClusterError;

pub use log_store::LogStore;
pub use network::{Network, Peer};
pub use state_machine::{ImageSink, StateMachine};

openraft::declare_raft_types!(
    /// The metadata log's types: one entry is one atomic batch of records,
    /// answered by the result of applying it.
    pub TypeConfig:
        D = Vec<MetadataRecord>,
        R = Result<(), MetadataError>,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle of a node.
pub type MetadataRaft = openraft::Raft<TypeConfig>;

/// Entries between two snapshots (after which the log is purged).
pub const SNAPSHOT_EVERY: u64 = 1000;

/// The Raft settings: heartbeats every 100 ms, elections after 300-600 ms
/// of silence, so a new leader is in place well within the 2 s failover
/// goal after the old one dies.
pub fn raft_config() -> Result<Arc<Config>, ClusterError> {
    let config = Config {
        cluster_name: "ferry-metadata".into(),
        heartbeat_interval: 100,
        election_timeout_min: 300,
        election_timeout_max: 600,
        // Loopback or LAN: a snapshot chunk that takes longer is lost.
        install_snapshot_timeout: 2000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY),
        max_in_snapshot_log_to_keep: SNAPSHOT_EVERY,
        ..Config::default()
    };
    Ok(Arc::new(config.validate().map_err(|e| ClusterError::Raft(e.to_string()))?))
}

/// A Raft node id from a Ferry node id (ids are `i32 >= 0`).
pub fn raft_id(node_id: i32) -> u64 {
    u64::from(node_id.unsigned_abs())
}

/// The Ferry node id of a Raft node id (ids beyond `i32` never occur: every
/// member joined under an `i32` id).
pub fn node_id(raft_id: u64) -> i32 {
    i32::try_from(raft_id).unwrap_or(i32::MAX)
}
