//! Calls one node makes on another through the cluster port, for work that
//! only a partition's leader can do (Kafka clients would route it to the
//! leader themselves; a request sent to any node is carried out there too).
//! The broker forwards; front-ends never talk to other nodes.

use serde::{Deserialize, Serialize};

use super::peer_blobs::Blob;
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
    /// Whether partitions are in a producer's open transaction (KIP-890:
    /// AddPartitionsToTxn with verify_only), asked by a partition's leader
    /// of the transaction's coordinator before the producer's first
    /// transactional batch there; answered with [`PeerReply::TxnVerified`].
    VerifyTxn {
        /// The transactional id.
        transactional_id: String,
        /// The producer id of the batches.
        producer_id: i64,
        /// Their producer epoch.
        epoch: i16,
        /// (topic, partition) pairs to verify.
        partitions: Vec<(String, i32)>,
    },
    /// Messages for a quorum queue, forwarded by a node that does not lead
    /// it (issue #17); answered once the queue's ISR has them (the
    /// publisher confirm), with [`PeerReply::QueueStored`].
    QueuePublish {
        /// Virtual host.
        vhost: String,
        /// Queue name.
        queue: String,
        /// The messages, one record batch (`messaging::message::encode_all`):
        /// base64 in JSON, raw bytes beside it between nodes that can
        /// (`peer_blobs`).
        batch: Blob,
        /// The forwarding client's (session, batch number), the same in
        /// every retry of the batch.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<(String, u64)>,
        /// With `id`'s session, each message's sequence number, the same in
        /// every retry: a leader whose log holds a message already (stored
        /// by it or by an earlier leader) answers it and does not store it
        /// again (`messaging::publish_ids`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        seqs: Vec<u64>,
        /// Answer once appended ([`PeerReply::QueueAppended`]), not once on
        /// the ISR: the forwarding node waits for the ISR separately
        /// ([`PeerRequest::QueueCommitted`]) and sends its next batch
        /// meanwhile. A leader that does not know the field answers
        /// [`PeerReply::QueueStored`] as before.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        pipelined: bool,
        /// The leadership (a [`PeerReply::QueueAppended`]'s) holding the
        /// forwarding node's earlier batches that are not confirmed yet:
        /// refused with [`PeerError::NotLeaderOrFollower`] unless it is
        /// still the leader's, so a pipeline's batches are appended in one
        /// leadership, in order (after a change the forwarding node sends
        /// them all again, in order).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u64>,
        /// Whether some of the messages were sent to a leader before, and
        /// since when: how far back the leader looks for their ids in its
        /// log (`messaging::publish_ids`).
        #[serde(default, skip_serializing_if = "Resent::is_unknown")]
        resent: Resent,
    },
    /// Answered [`PeerReply::Done`] once the queue's ISR has everything up
    /// to `offset`, appended in `leadership` (a pipelined
    /// [`PeerRequest::QueuePublish`]'s answer); refused with
    /// [`PeerError::NotLeaderOrFollower`] if that leadership is over (or
    /// the ISR does not catch up in time).
    QueueCommitted {
        /// Virtual host.
        vhost: String,
        /// Queue name.
        queue: String,
        /// The leadership the records were appended in.
        leadership: u64,
        /// The last offset to wait for.
        offset: u64,
    },
    /// Up to `max` deliveries for the consumers of a forwarding node
    /// (`session`), waiting up to `wait_ms` for one; `max` 0 only renews the
    /// session and asks for the counts. Answered with
    /// [`PeerReply::QueueDeliveries`].
    QueueTake {
        /// Virtual host.
        vhost: String,
        /// Queue name.
        queue: String,
        /// The forwarding node's session: its deliveries go back to the
        /// queue when it is silent for the session timeout.
        session: String,
        /// Most deliveries to return.
        max: u32,
        /// Long-poll bound, ms.
        wait_ms: u64,
        /// The forwarding node's consumer taking (its id in the session,
        /// exclusive): registered on the leader on its first take (a new
        /// leader's too), so single-active-consumer and the consumer count
        /// see it. Absent: basic.get and renewals.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        consumer: Option<(u64, bool)>,
        /// The consumer's take number, advanced once a take is answered:
        /// a retry of a take whose answer was lost (a torn connection)
        /// gets that take's deliveries again instead of leaving them out
        /// with a session that never saw them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        number: Option<u64>,
    },
    /// Registers (or, `cancel`, removes) a forwarding node's consumer on
    /// the leader: answered [`PeerReply::Done`], or
    /// [`PeerError::AccessRefused`] when an exclusive consumer conflicts.
    QueueConsume {
        /// Virtual host.
        vhost: String,
        /// Queue name.
        queue: String,
        /// The forwarding node's session.
        session: String,
        /// The consumer's id in the session.
        consumer: u64,
        /// An exclusive consumer.
        exclusive: bool,
        /// Removes the consumer instead.
        cancel: bool,
        /// With `cancel`: the consumer's next take number. A take of that
        /// number the leader answered never reached the forwarding node
        /// (the answer was lost), so what it handed out and is still out
        /// with the session goes back to the queue at once.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unanswered: Option<u64>,
    },
    /// Acks, returns (requeue) and rejects of a forwarding node's
    /// deliveries, answered once the cursor records are on the ISR.
    QueueSettle {
        /// Virtual host.
        vhost: String,
        /// Queue name.
        queue: String,
        /// The forwarding node's session.
        session: String,
        /// Acknowledged offsets (settled wherever they are: out, handed back
        /// or not yet delivered by a new leader).
        acks: Vec<u64>,
        /// Offsets handed back for redelivery.
        requeues: Vec<u64>,
        /// Offsets rejected without requeue (dead-lettered or dropped).
        rejects: Vec<u64>,
    },
    /// queue.purge of a quorum queue led by the called node.
    QueuePurge {
        /// Virtual host.
        vhost: String,
        /// Queue name.
        queue: String,
    },
    /// An MQTT message published on the calling node, for the called
    /// node's connected subscribers that the caller cannot reach (clean
    /// sessions, and QoS 0 copies); answered [`PeerReply::Done`] once handed
    /// to their sessions. Persistent sessions' QoS 1/2 copies go through
    /// their replicated queues instead.
    MqttRoute {
        /// The messages in publish order: each in the MQTT front-end's
        /// encoding with its publisher's client id (no-local). Base64 in
        /// JSON, as older nodes send and read it; raw bytes beside it
        /// between nodes that can (`peer_blobs`).
        messages: Vec<(Blob, Option<String>)>,
    },
}

/// Whether a publish's messages may be in a queue's log already (sent to
/// a leader before, their answer lost or their leadership ended): a
/// leader looks their publisher ids up in its log only that far back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resent {
    /// Not said (a sender that predates the field): the whole log.
    #[default]
    Unknown,
    /// None was ever sent: no log is read.
    No,
    /// Some were, first at this wall-clock time (ms) or later.
    Since(i64),
}

impl Resent {
    fn is_unknown(&self) -> bool {
        *self == Resent::Unknown
    }
}

/// What a peer call returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerReply {
    /// The partition's log start offset after DeleteRecords.
    LowWatermark(i64),
    /// The marker or offsets are written and acknowledged.
    Done,
    /// To [`PeerRequest::VerifyTxn`]: per partition, in the open
    /// transaction or not.
    TxnVerified(Vec<bool>),
    /// To [`PeerRequest::QueuePublish`]: per message, stored (and on the
    /// ISR) or refused by a full queue.
    QueueStored(Vec<bool>),
    /// To a pipelined [`PeerRequest::QueuePublish`]: per message, stored
    /// (now or before) or refused by a full queue, not yet known to be on
    /// the ISR.
    QueueAppended {
        /// Per message: stored, or refused by a full queue.
        stored: Vec<bool>,
        /// The offset whose commit makes all of them safe (`None`: nothing
        /// stored).
        wait: Option<u64>,
        /// The leadership that appended them (for
        /// [`PeerRequest::QueueCommitted`] and the next batch's `after`).
        leadership: u64,
    },
    /// To [`PeerRequest::QueueTake`] and [`PeerRequest::QueuePurge`].
    QueueDeliveries {
        /// The deliveries, in order.
        deliveries: Vec<WireDelivery>,
        /// Messages ready in the queue (purged, for a purge).
        ready: u64,
        /// Consumers registered on the leader.
        consumers: u32,
    },
}

/// One delivery of a quorum queue, sent to the node forwarding it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireDelivery {
    /// The message's offset in the queue's partition.
    pub offset: u64,
    /// May have been delivered before.
    pub redelivered: bool,
    /// Deliveries so far, this one included.
    pub count: u32,
    /// The message as a one-record batch (`messaging::message::encode`):
    /// base64 in JSON, raw bytes beside it between nodes that can.
    pub batch: Blob,
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
    /// An exclusive consumer refused (AMQP 403).
    #[error("{0}")]
    AccessRefused(String),
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
