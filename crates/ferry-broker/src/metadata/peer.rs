//! Calls one node makes on another through the cluster port, for work that
//! only a partition's leader can do (Kafka clients would route it to the
//! leader themselves; a request sent to any node is carried out there too).
//! The broker forwards; front-ends never talk to other nodes.

use serde::{Deserialize, Serialize};

use crate::error::BrokerError;

/// A call on the node leading a partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerRequest {
    /// DeleteRecords for one partition: records before `before` (-1: the
    /// high watermark) go.
    DeleteRecords {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: i32,
        /// The new log start offset, or -1 for the high watermark.
        before: i64,
    },
    /// A transaction coordinator's commit or abort marker for one
    /// partition (Kafka's WriteTxnMarkers), answered once the partition's
    /// ISR has it.
    WriteTxnMarker {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: i32,
        /// The transaction's producer id.
        producer_id: i64,
        /// The producer epoch the transaction ends in.
        epoch: i16,
        /// Commit (true) or abort.
        commit: bool,
        /// The coordinator's epoch (its `__transaction_state` partition's
        /// leader epoch): refused if older than the partition's last
        /// marker's for the producer (TRANSACTION_COORDINATOR_FENCED).
        #[serde(default)]
        coordinator_epoch: i32,
    },
    /// A committed transaction's offsets for a group, sent by the
    /// transaction's coordinator to the group's, answered once the
    /// `__consumer_offsets` ISR has them.
    CommitOffsets {
        /// The consumer group.
        group: String,
        /// (topic, partition, offset) triples.
        offsets: Vec<(String, i32, crate::group::Committed)>,
    },
    /// TxnOffsetCommit's offsets, sent by the group's coordinator to the
    /// transaction's, which holds them until the transaction ends.
    StageTxnOffsets {
        /// The transactional id.
        transactional_id: String,
        /// The transaction's producer id.
        producer_id: i64,
        /// The producer epoch.
        epoch: i16,
        /// The consumer group.
        group: String,
        /// (topic, partition, offset) triples.
        offsets: Vec<(String, i32, crate::group::Committed)>,
    },
}

/// What a peer call returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerReply {
    /// The partition's log start offset after DeleteRecords.
    LowWatermark(i64),
    /// The marker or offsets are written and acknowledged.
    Done,
}

/// Why a peer did not carry out a call; serializable, and mapped back to a
/// [`BrokerError`] by the caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum PeerError {
    /// The topic or partition does not exist there.
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    /// The peer does not lead the partition (leadership moved).
    #[error("not the leader of the partition")]
    NotLeaderOrFollower,
    /// An offset past the high watermark.
    #[error("offset out of range")]
    OffsetOutOfRange,
    /// The peer could not be reached or answered nothing usable.
    #[error("peer unavailable: {0}")]
    Unavailable(String),
    /// The transaction coordinator refused the call.
    #[error("transaction error {0:?}")]
    Txn(crate::txn::TxnError),
    /// Any other failure, with its message.
    #[error("{0}")]
    Failed(String),
}

impl From<BrokerError> for PeerError {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::UnknownTopicOrPartition => PeerError::UnknownTopicOrPartition,
            BrokerError::NotLeaderOrFollower => PeerError::NotLeaderOrFollower,
            BrokerError::Txn(e) => PeerError::Txn(e),
            BrokerError::Log(ferry_log::LogError::OffsetOutOfRange { .. }) => PeerError::OffsetOutOfRange,
            other => PeerError::Failed(other.to_string()),
        }
    }
}

impl From<PeerError> for BrokerError {
    fn from(e: PeerError) -> Self {
        match e {
            PeerError::UnknownTopicOrPartition => BrokerError::UnknownTopicOrPartition,
            PeerError::NotLeaderOrFollower => BrokerError::NotLeaderOrFollower,
            PeerError::Unavailable(why) => BrokerError::ControllerUnavailable(why),
            other => BrokerError::Peer(other),
        }
    }
}
