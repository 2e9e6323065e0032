//! `ferry-cluster`: the controller quorum and node membership.
//!
//! Every `ferry serve` runs a [`ClusterNode`]: voters (named in
//! `--controller-quorum`) run one openraft group whose log is the cluster
//! metadata ([`ferry_broker::metadata::MetadataRecord`]); broker-only nodes
//! follow it as Raft learners. Each node applies the log into a
//! [`MetadataImage`](ferry_broker::metadata::MetadataImage) and hands every
//! new image to its broker. A node with no cluster flags is a quorum of one
//! on the same code path.
//!
//! Layout (one concept per file):
//! - `config.rs`: [`ClusterConfig`], the quorum string parser.
//! - `raft/`: openraft type config, the log store on ferry-log, the state
//!   machine (image + snapshots), the network client.
//! - `transport/`: the cluster port: length-prefixed frames, server and
//!   connection pool (Raft RPCs, forwarded controller requests, heartbeats).
//! - `controller/`: what only the quorum leader does: carries out
//!   [`ControllerRequest`](ferry_broker::metadata::ControllerRequest)s
//!   (validation, replica placement over nodes and racks), tracks node
//!   heartbeats, fences silent nodes and moves leadership. Pure and
//!   deterministic (a clock passed in), so it is tested without processes.
//! - `replication/`: partition replication: replica fetchers on
//!   followers, fetch and OffsetsForLeaderEpoch answers on leaders, ISR
//!   changes through the controller.
//! - `node.rs`: [`ClusterNode`]: starts all of it, registers this node,
//!   heartbeats, implements the broker's `Controller` trait.

mod config;
pub mod controller;
mod error;
mod image_gate;
mod node;
pub mod raft;
pub mod replication;
pub mod transport;

pub use config::{ClusterConfig, parse_quorum};
pub use error::ClusterError;
pub use node::ClusterNode;
