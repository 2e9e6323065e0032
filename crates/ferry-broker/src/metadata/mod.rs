//! Cluster metadata as every node sees it: the records the controller
//! quorum agrees on ([`MetadataRecord`]), the image they build
//! ([`MetadataImage`]), and the [`Controller`] the broker sends changes to.
//! Front-ends read only the image; the Raft machinery is `ferry-cluster`'s.

mod alter_partition;
mod amqp;
mod controller;
mod coordinator;
mod decommission;
mod election;
mod image;
mod mqtt;
mod peer;
mod peer_blobs;
mod reassignment;
mod record;
mod security;

pub use alter_partition::alter_partition;
pub use amqp::{
    AmqpRecord, AmqpRequest, Arguments, BindingDef, DELAY_QUEUE, ExchangeDef, QUEUE_TOPIC_PREFIX, QueueDef, QueueKind,
    QueueTopicMaker, QueueType, VhostDefinitions, amqp_change, is_builtin_exchange, queue_topic_name,
};
pub use controller::{Controller, ControllerFuture, ControllerReply, ControllerRequest, ControllerStatus, PeerFuture};
pub use coordinator::{CoordinatorKind, GROUP_TOPIC, TXN_TOPIC, coordinator_partition, java_string_hash};
pub use decommission::{decommission, recommission, unregister};
pub use election::{ElectionError, ElectionResult, ElectionType};
pub use image::{MetadataImage, NodeInfo, PartitionInfo, TopicInfo, listener};
pub use mqtt::{
    CleanWill, MAX_RETAINED_BYTES, MAX_SUBSCRIPTIONS, MQTT_VHOST, MqttRecord, MqttSession, MqttState, MqttSubscription,
    Qos2State, RetainedMessage, WillDef, mqtt_change,
};
pub use peer::{PeerError, PeerReply, PeerRequest, Resent, WireDelivery};
pub use peer_blobs::{Blob, BlobCount, RAW_PAYLOADS};
pub use reassignment::{complete as complete_reassignment, complete_all as complete_reassignments, reassign};
pub use record::MetadataRecord;
pub use security::security_change;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why the controller refused or could not carry out a change. Serializable:
/// it travels back to the node that forwarded the request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MetadataError {
    /// CreateTopics for a name that is taken.
    #[error("topic {0} already exists")]
    TopicExists(String),
    /// A change the topic's kind forbids (deleting or growing an internal
    /// topic); Kafka's INVALID_TOPIC_EXCEPTION.
    #[error("invalid topic: {0}")]
    InvalidTopic(String),
    /// No topic of that name.
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    /// No topic with that id.
    #[error("unknown topic id {0}")]
    UnknownTopicId(Uuid),
    /// No such partition.
    #[error("unknown partition {1} of topic id {0}")]
    UnknownPartition(Uuid, i32),
    /// No such node.
    #[error("unknown node {0}")]
    UnknownNode(i32),
    /// A partition count or assignment the controller refuses.
    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),
    /// More replicas than live nodes, or below 1.
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    /// An explicit assignment naming unknown nodes or repeating one.
    #[error("invalid replica assignment: {0}")]
    InvalidReplicaAssignment(String),
    /// A producer id block overlapping one already handed out.
    #[error("producer ids from {0} are already taken")]
    ProducerIdsTaken(i64),
    /// A node registering with an id a live node of another incarnation holds.
    #[error("node id {0} is already registered by a live node")]
    DuplicateNodeId(i32),
    /// A node whose `--controller-quorum` differs from the quorum's.
    #[error("controller quorum mismatch: {0}")]
    QuorumMismatch(String),
    /// A partition change based on an outdated leader or partition epoch
    /// (Kafka's FENCED_LEADER_EPOCH / INVALID_UPDATE_VERSION).
    #[error("stale epoch: {0}")]
    StaleEpoch(String),
    /// Cancelling a reassignment where none is in progress (Kafka's
    /// NO_REASSIGNMENT_IN_PROGRESS).
    #[error("no reassignment in progress for {0}")]
    NoReassignmentInProgress(String),
    /// A node that cannot leave the metadata yet (still running, or still
    /// holding replicas).
    #[error("node in use: {0}")]
    NodeInUse(String),
    /// A user, credential or ACL that is not there (Kafka's
    /// RESOURCE_NOT_FOUND).
    #[error("not found: {0}")]
    ResourceNotFound(String),
    /// A user name, credential or ACL the controller refuses.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// No quorum leader could be reached in time (startup, partition, election).
    #[error("controller unavailable: {0}")]
    Unavailable(String),
}
