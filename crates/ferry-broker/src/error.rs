//! The broker's error type; front-ends map it to protocol error codes.

use ferry_log::LogError;

use crate::metadata::MetadataError;

/// Everything a broker operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The topic does not exist, or has no such partition.
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    /// CreateTopics for a name that is taken.
    #[error("topic {0} already exists")]
    TopicExists(String),
    /// The name breaks Kafka's topic naming rules.
    #[error("invalid topic name: {0}")]
    InvalidTopic(String),
    /// A partition count below 1, above the limit, or a decrease.
    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),
    /// A replication factor below 1 or above the live nodes.
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    /// An explicit replica assignment naming unknown nodes, repeating one,
    /// or of uneven lengths.
    #[error("invalid replica assignment: {0}")]
    InvalidReplicaAssignment(String),
    /// Cancelling a reassignment where none is in progress.
    #[error("no reassignment in progress: {0}")]
    NoReassignmentInProgress(String),
    /// A request the broker refuses as a whole (Kafka's INVALID_REQUEST),
    /// e.g. unregistering a node that still runs or holds replicas, a bad
    /// user name or too few SCRAM iterations.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A node id the cluster has no registration for.
    #[error("node {0} is not registered")]
    NodeNotRegistered(i32),
    /// The partition exists, but this node does not lead it (another node
    /// does, or none is available now).
    #[error("this node is not the leader of the partition")]
    NotLeaderOrFollower,
    /// No controller is installed, or the quorum could not carry out the
    /// change in time (no leader, election, network partition).
    #[error("controller unavailable: {0}")]
    ControllerUnavailable(String),
    /// The node leading the partition refused a forwarded call.
    #[error("{0}")]
    Peer(crate::metadata::PeerError),
    /// An unknown topic config name or an invalid value.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// acks=all with fewer in-sync replicas than `min.insync.replicas`.
    #[error("not enough in-sync replicas: {isr} < min.insync.replicas {min}")]
    NotEnoughReplicas {
        /// In-sync replicas now.
        isr: usize,
        /// The topic's `min.insync.replicas`.
        min: usize,
    },
    /// A CreateTime timestamp (ms) further from the broker's clock than the
    /// topic's `message.timestamp.*.ms` allow.
    #[error("timestamp {0} outside the allowed range")]
    InvalidTimestamp(i64),
    /// An idempotent producer's sequence number does not follow the last one
    /// written (a gap, or a new producer not starting at 0).
    #[error("out of order sequence number")]
    OutOfOrderSequence,
    /// A producer fenced by a newer epoch of the same producer id.
    #[error("producer epoch is older than the latest")]
    InvalidProducerEpoch,
    /// A batch or record the broker refuses (e.g. a client-written control batch).
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// Records a topic refuses, e.g. keyless records on a compacted topic:
    /// each with its index among the request's records for the partition
    /// and why (Kafka's KIP-467 record errors).
    #[error("{message}")]
    RejectedRecords {
        /// The partition-level message, naming the first few errors.
        message: String,
        /// (record index, error message) of every refused record.
        records: Vec<(i32, String)>,
    },
    /// A transactional batch whose transaction could not be verified with
    /// its coordinator (unreachable, moving, ending one): retriable; Kafka
    /// answers NOT_ENOUGH_REPLICAS with this message (KAFKA-15459).
    #[error("unable to verify the partition has been added to the transaction: {0}")]
    TxnUnverified(String),
    /// A transaction coordinator error.
    #[error("transaction: {0:?}")]
    Txn(crate::txn::TxnError),
    /// A group coordinator error.
    #[error("group: {0:?}")]
    Group(crate::group::GroupError),
    /// A user, credential or ACL that is not there.
    #[error("not found: {0}")]
    ResourceNotFound(String),
    /// A storage engine error.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A file operation of the broker's own (metadata files, directories) failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<MetadataError> for BrokerError {
    fn from(e: MetadataError) -> Self {
        match e {
            MetadataError::TopicExists(name) => BrokerError::TopicExists(name),
            MetadataError::InvalidTopic(m) => BrokerError::InvalidTopic(m),
            MetadataError::UnknownTopic(_) | MetadataError::UnknownTopicId(_) | MetadataError::UnknownPartition(..) => {
                BrokerError::UnknownTopicOrPartition
            }
            MetadataError::InvalidPartitions(m) => BrokerError::InvalidPartitions(m),
            MetadataError::InvalidReplicationFactor(m) => BrokerError::InvalidReplicationFactor(m),
            MetadataError::InvalidReplicaAssignment(m) => BrokerError::InvalidReplicaAssignment(m),
            MetadataError::ResourceNotFound(m) => BrokerError::ResourceNotFound(m),
            MetadataError::InvalidRequest(m) => BrokerError::InvalidRequest(m),
            e @ MetadataError::UnknownNode(_) => BrokerError::InvalidReplicaAssignment(e.to_string()),
            MetadataError::NoReassignmentInProgress(m) => BrokerError::NoReassignmentInProgress(m),
            MetadataError::NodeInUse(m) => BrokerError::InvalidRequest(m),
            e @ (MetadataError::ProducerIdsTaken(_)
            | MetadataError::DuplicateNodeId(_)
            | MetadataError::QuorumMismatch(_)
            | MetadataError::StaleEpoch(_)
            | MetadataError::Unavailable(_)) => BrokerError::ControllerUnavailable(e.to_string()),
        }
    }
}

impl From<ferry_records::RecordsError> for BrokerError {
    fn from(e: ferry_records::RecordsError) -> Self {
        BrokerError::Log(e.into())
    }
}

/// `Result` with [`BrokerError`] as the default error.
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;
