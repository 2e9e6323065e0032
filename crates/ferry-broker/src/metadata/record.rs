//! Metadata records: the entries of the controller quorum's Raft log (as
//! Kafka's `__cluster_metadata` records). Each is a deterministic change to
//! the [`MetadataImage`](super::MetadataImage); epochs are bumped by the
//! apply, never carried, so a record cannot set one wrong.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::amqp::AmqpRecord;
use super::image::NodeInfo;
use super::mqtt::MqttRecord;
use crate::security::{AclBinding, ScramCredential, ScramMechanism};

/// One change to the cluster metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataRecord {
    /// The first record of a new cluster: its id (kept from a single-node
    /// data directory that already had one).
    InitCluster {
        /// Cluster id, as Kafka reports it.
        cluster_id: String,
    },
    /// A node (re-)registers: a new incarnation replaces the old one,
    /// updates its listeners and rack, and unfences it.
    RegisterNode(NodeInfo),
    /// The node missed its heartbeats for the session timeout (or shut
    /// down): it leads nothing until it registers again.
    FenceNode {
        /// The fenced node.
        node_id: i32,
    },
    /// A new topic with its replica assignment (one list of node ids per
    /// partition, the first being the preferred leader).
    CreateTopic {
        /// Topic name.
        name: String,
        /// Topic id (KIP-516).
        id: Uuid,
        /// Kafka's `internal` flag (`__consumer_offsets`, `__transaction_state`).
        internal: bool,
        /// Config overrides.
        configs: BTreeMap<String, String>,
        /// Replicas of each partition, in partition order.
        replicas: Vec<Vec<i32>>,
    },
    /// Deletes a topic (by id, so a re-created topic of the same name is safe).
    DeleteTopic {
        /// Topic id.
        id: Uuid,
    },
    /// Appends partitions to a topic.
    CreatePartitions {
        /// Topic id.
        id: Uuid,
        /// Replicas of each new partition.
        replicas: Vec<Vec<i32>>,
    },
    /// Replaces a topic's config overrides.
    SetTopicConfigs {
        /// Topic id.
        id: Uuid,
        /// The new overrides (all of them).
        configs: BTreeMap<String, String>,
    },
    /// Replaces the cluster-wide dynamic topic config defaults.
    SetBrokerDefaults {
        /// The new defaults, by topic config name.
        configs: BTreeMap<String, String>,
    },
    /// A partition's leader, ISR or replicas change (Kafka's
    /// PartitionChangeRecord). The apply bumps the partition epoch on every
    /// change and the leader epoch when the leader changes.
    PartitionChange {
        /// Topic id.
        topic_id: Uuid,
        /// Partition index.
        partition: i32,
        /// The new leader (-1: none).
        leader: i32,
        /// The new ISR.
        isr: Vec<i32>,
        /// New replicas (reassignment), if they change.
        replicas: Option<Vec<i32>>,
        /// The new eligible leader replicas (KIP-966), if the controller
        /// sets them; `None` keeps them. Either way the apply drops members
        /// of the new ISR and non-replicas. Absent in older records.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        elr: Option<Vec<i32>>,
    },
    /// A partition's replicas change (KIP-455): a reassignment starts
    /// (replicas = target ∪ current, with the adding and removing ones
    /// named), is cancelled (back to the original replicas), or completes
    /// (replicas = target, both lists empty), with the leader and ISR that
    /// go with it. The apply bumps the partition epoch, and the leader
    /// epoch when the leader changes or a replica leaves the set.
    PartitionReassignment {
        /// Topic id.
        topic_id: Uuid,
        /// Partition index.
        partition: i32,
        /// All replicas, target first.
        replicas: Vec<i32>,
        /// Replicas being added (empty: none, or complete).
        adding_replicas: Vec<i32>,
        /// Replicas being removed.
        removing_replicas: Vec<i32>,
        /// The leader (-1: none).
        leader: i32,
        /// The ISR.
        isr: Vec<i32>,
    },
    /// A node starts leaving the cluster: no new replicas go to it and the
    /// controller moves its replicas elsewhere.
    DecommissionNode {
        /// The node.
        node_id: i32,
    },
    /// A decommission is called off: placement may pick the node again
    /// (moves already started run on to their targets).
    RecommissionNode {
        /// The node.
        node_id: i32,
    },
    /// A node leaves the metadata (Kafka's UnregisterBroker), once stopped
    /// and holding no replicas.
    UnregisterNode {
        /// The node.
        node_id: i32,
    },
    /// A block of producer ids handed to a node (Kafka's AllocateProducerIds):
    /// `first..first + count`, cluster-unique.
    ProducerIds {
        /// The node the block is for.
        node_id: i32,
        /// First id of the block.
        first: i64,
        /// Ids in the block.
        count: i64,
    },
    /// Sets a user's SCRAM credential for one mechanism (creating the
    /// user). Only SCRAM's salted, hashed form is ever recorded.
    UpsertScramCredential {
        /// User name.
        user: String,
        /// The credential.
        credential: ScramCredential,
    },
    /// Removes a user's credential for one mechanism; a user left with none
    /// is gone.
    DeleteScramCredential {
        /// User name.
        user: String,
        /// Which credential.
        mechanism: ScramMechanism,
    },
    /// Adds an ACL (already present: nothing changes).
    CreateAcl(AclBinding),
    /// Removes an ACL (absent: nothing changes).
    DeleteAcl(AclBinding),
    /// A change to the AMQP definitions (exchanges, bindings, durable queues).
    Amqp(AmqpRecord),
    /// A change to the MQTT sessions or retained messages.
    Mqtt(MqttRecord),
}
