//! What the broker asks of the controller quorum. The broker defines this
//! trait; `ferry-cluster` implements it on openraft (a single node is a
//! quorum of one on the same code path). Requests are carried out by the
//! quorum's leader (forwarded there from any node), and a call returns only
//! once the resulting records are applied to this node's image, so a
//! client that created a topic sees it in its next Metadata call.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::MetadataError;
use super::amqp::AmqpRequest;
use super::election::{ElectionResult, ElectionType};
use super::mqtt::MqttRecord;
use super::peer::{PeerError, PeerReply, PeerRequest};
use crate::security::{AclBinding, ScramCredential, ScramMechanism};

/// A request to change the cluster metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerRequest {
    /// CreateTopics, for one topic.
    CreateTopic {
        /// Topic name (already validated by the broker).
        name: String,
        /// Partitions; `None` takes `num.partitions`.
        partitions: Option<i32>,
        /// Replicas per partition; `None` takes `default.replication.factor`.
        replication_factor: Option<i16>,
        /// An explicit assignment (replica node ids per partition) instead
        /// of the two counts.
        assignment: Option<Vec<Vec<i32>>>,
        /// Config overrides (already validated by the broker).
        configs: BTreeMap<String, String>,
        /// Check everything, change nothing.
        validate_only: bool,
    },
    /// DeleteTopics, for one topic.
    DeleteTopic {
        /// Topic name.
        name: String,
    },
    /// CreatePartitions, for one topic.
    CreatePartitions {
        /// Topic name.
        name: String,
        /// The new total.
        total: i32,
        /// Replicas of each new partition, if the client chose them.
        assignment: Option<Vec<Vec<i32>>>,
        /// Check everything, change nothing.
        validate_only: bool,
    },
    /// Replaces a topic's config overrides.
    SetTopicConfigs {
        /// Topic name.
        name: String,
        /// All overrides.
        configs: BTreeMap<String, String>,
    },
    /// Replaces the cluster-wide dynamic topic config defaults.
    SetBrokerDefaults {
        /// All defaults, by topic config name.
        configs: BTreeMap<String, String>,
    },
    /// A block of cluster-unique producer ids for this node.
    AllocateProducerIds,
    /// Controlled shutdown (Kafka's ControlledShutdown): fence the calling
    /// node now, so its leaderships move at once instead of after the
    /// session timeout. Only the named incarnation is fenced: a late request
    /// from a previous life does not fence the node's next one.
    ShutdownNode {
        /// The incarnation shutting down.
        incarnation: Uuid,
    },
    /// AlterPartition: the partition's leader changes its ISR (see
    /// [`alter_partition`](super::alter_partition)).
    AlterPartition {
        /// Topic id.
        topic_id: Uuid,
        /// Partition index.
        partition: i32,
        /// The leader epoch the leader leads in.
        leader_epoch: i32,
        /// The partition epoch of the leader's view.
        partition_epoch: i32,
        /// The new ISR.
        isr: Vec<i32>,
    },
    /// ElectLeaders: preferred-leader or (clean only) leaderless elections.
    ElectLeaders {
        /// The election type.
        election: ElectionType,
        /// `(topic, partition)` pairs; `None`: every partition (the reply
        /// then leaves out those that needed no election, as Kafka).
        partitions: Option<Vec<(String, i32)>>,
    },
    /// AlterPartitionReassignments, for one partition: reassign it to
    /// `replicas`, or cancel its reassignment (`None`). See
    /// [`reassign`](super::reassign).
    AlterReassignment {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: i32,
        /// The target replicas; `None` cancels.
        replicas: Option<Vec<i32>>,
    },
    /// Starts decommissioning `node_id`: new replicas never go to it and
    /// the controller moves its replicas to other live nodes.
    DecommissionNode {
        /// The node leaving.
        node_id: i32,
    },
    /// Calls off `node_id`'s decommission.
    RecommissionNode {
        /// The node.
        node_id: i32,
    },
    /// UnregisterBroker: removes a stopped node that holds no replicas
    /// from the metadata.
    UnregisterNode {
        /// The node.
        node_id: i32,
    },
    /// AlterUserScramCredentials, one upsertion (creates the user).
    UpsertScramCredential {
        /// User name.
        user: String,
        /// The credential (salted and hashed already).
        credential: ScramCredential,
    },
    /// AlterUserScramCredentials, one deletion.
    DeleteScramCredential {
        /// User name.
        user: String,
        /// Which credential.
        mechanism: ScramMechanism,
    },
    /// CreateAcls (bindings already present are kept as they are).
    CreateAcls {
        /// The new bindings.
        bindings: Vec<AclBinding>,
    },
    /// DeleteAcls: the bindings the broker found matching the filters.
    DeleteAcls {
        /// The bindings to remove (absent ones are skipped).
        bindings: Vec<AclBinding>,
    },
    /// A change to the AMQP definitions (see [`amqp_change`](super::amqp_change)).
    Amqp(AmqpRequest),
    /// A change to the MQTT sessions or retained messages (see
    /// [`mqtt_change`](super::mqtt_change)).
    Mqtt(MqttRecord),
}

/// What a carried-out request returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerReply {
    /// Done; nothing to return.
    Done,
    /// The topic exists now (or would, with `validate_only`).
    TopicCreated {
        /// Topic id.
        id: Uuid,
        /// Replicas of each partition.
        replicas: Vec<Vec<i32>>,
    },
    /// Producer ids `first..first + count` are this node's to hand out.
    ProducerIds {
        /// First id of the block.
        first: i64,
        /// Ids in the block.
        count: i64,
    },
    /// ElectLeaders: one result per partition.
    Elections(Vec<ElectionResult>),
}

/// The quorum as this node sees it, for `ferry cluster status`, the HTTP
/// API and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerStatus {
    /// This node's id.
    pub node_id: i32,
    /// The quorum's leader, if one is known.
    pub leader: Option<i32>,
    /// The Raft term.
    pub term: u64,
    /// The last log index known committed.
    pub commit_index: u64,
    /// The last log index applied to this node's image.
    pub applied_index: u64,
    /// Voter ids (`--controller-quorum`).
    pub voters: Vec<i32>,
    /// Broker-only nodes following the log.
    pub observers: Vec<i32>,
    /// Set while the node cannot reach a quorum (startup or partition):
    /// why, for the log and `/v1/health`.
    pub waiting: Option<String>,
}

/// A boxed future the controller's calls return.
pub type ControllerFuture<T> = Pin<Box<dyn Future<Output = Result<T, MetadataError>> + Send + 'static>>;

/// The controller quorum, as the broker uses it.
pub trait Controller: Send + Sync + 'static {
    /// Carries out `request` on the quorum's leader; resolves once the
    /// change is applied to this node's image.
    fn submit(&self, request: ControllerRequest) -> ControllerFuture<ControllerReply>;

    /// The quorum as this node sees it now.
    fn status(&self) -> ControllerStatus;

    /// Carries out `request` on node `node` (the leader of the partition it
    /// names), over the cluster port.
    fn call_peer(&self, node: i32, request: PeerRequest) -> PeerFuture;
}

/// The boxed future [`Controller::call_peer`] returns.
pub type PeerFuture = Pin<Box<dyn Future<Output = Result<PeerReply, PeerError>> + Send + 'static>>;
