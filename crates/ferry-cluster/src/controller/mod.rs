//! The quorum controller: what only the Raft leader does. It turns
//! requests, registrations, heartbeats and the passing of time into
//! metadata records; it never touches the network or the disk, and takes
//! the clock as an argument, so every decision is tested deterministically.
//! The node commits what it returns as one Raft entry (all or nothing).

use std::time::{Duration, Instant};

use ferry_broker::metadata::{
    ControllerReply, ControllerRequest, MetadataError, MetadataImage, MetadataRecord, NodeInfo,
};
use uuid::Uuid;

/// The controller's settings (from [`ClusterConfig`](crate::ClusterConfig)).
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// A node silent this long is fenced.
    pub session_timeout: Duration,
    /// `num.partitions`.
    pub default_partitions: i32,
    /// `default.replication.factor`; `None`: min(3, live nodes).
    pub default_replication_factor: Option<i16>,
    /// Most partitions one topic may have.
    pub max_partitions_per_topic: i32,
    /// Partitions of `__consumer_offsets` and `__transaction_state`.
    pub internal_topic_partitions: i32,
    /// Producer ids per block handed to a node.
    pub producer_id_block: i64,
}

/// The leader's controller state: liveness of every node (in memory only;
/// a new leader starts by counting every node as just seen).
pub struct QuorumController {
    config: ControllerConfig,
}

impl QuorumController {
    /// A controller for a leader elected at `now` over `image`.
    pub fn new(config: ControllerConfig, image: &MetadataImage, now: Instant) -> Self {
        let _ = (image, now);
        QuorumController { config }
    }

    /// The records a new cluster starts with: its id, the internal topics,
    /// and `imported` topics found in a single-node data directory
    /// (`CreateTopic` records with their existing ids).
    pub fn bootstrap(&self, cluster_id: String, imported: Vec<MetadataRecord>) -> Vec<MetadataRecord> {
        let mut records = vec![MetadataRecord::InitCluster { cluster_id }];
        records.extend(imported);
        records
    }

    /// Carries out `request` from node `from` against `image`: the records
    /// to commit (none for validate_only) and the reply.
    pub fn handle(
        &mut self,
        image: &MetadataImage,
        from: i32,
        request: &ControllerRequest,
    ) -> Result<(Vec<MetadataRecord>, ControllerReply), MetadataError> {
        let _ = (image, from, request, &self.config);
        Err(MetadataError::Unavailable("not yet built".into()))
    }

    /// A node (re-)registers at `now`: `RegisterNode` plus leadership given
    /// back where it is the only live replica able to lead.
    pub fn register(
        &mut self,
        image: &MetadataImage,
        node: NodeInfo,
        now: Instant,
    ) -> Result<Vec<MetadataRecord>, MetadataError> {
        let _ = (image, now);
        Ok(vec![MetadataRecord::RegisterNode(node)])
    }

    /// A heartbeat from `node` of `incarnation` at `now`. `false`: the node
    /// must register again (unknown, another incarnation, or fenced).
    pub fn heartbeat(&mut self, image: &MetadataImage, node: i32, incarnation: Uuid, now: Instant) -> bool {
        let _ = now;
        image.nodes.get(&node).is_some_and(|n| n.incarnation == incarnation && !n.fenced)
    }

    /// Fences nodes silent past the session timeout at `now` and moves the
    /// leadership of their partitions to live in-sync replicas (or to none).
    pub fn tick(&mut self, image: &MetadataImage, now: Instant) -> Vec<MetadataRecord> {
        let _ = (image, now);
        Vec::new()
    }
}
