//! The one place where broker and log errors become Kafka error codes.

use ferry_broker::BrokerError;
use ferry_broker::group::GroupError;
use ferry_broker::txn::TxnError;
use ferry_log::LogError;
use kafka_protocol::error::ResponseError as E;

pub fn error_code(e: &BrokerError) -> i16 {
    match e {
        BrokerError::UnknownTopicOrPartition => E::UnknownTopicOrPartition,
        BrokerError::TopicExists(_) => E::TopicAlreadyExists,
        BrokerError::InvalidTopic(_) => E::InvalidTopicException,
        BrokerError::InvalidPartitions(_) => E::InvalidPartitions,
        BrokerError::InvalidReplicationFactor(_) => E::InvalidReplicationFactor,
        BrokerError::InvalidConfig(_) => E::InvalidConfig,
        BrokerError::NotEnoughReplicas { .. } => E::NotEnoughReplicas,
        BrokerError::InvalidTimestamp(_) => E::InvalidTimestamp,
        BrokerError::OutOfOrderSequence => E::OutOfOrderSequenceNumber,
        BrokerError::InvalidProducerEpoch => E::InvalidProducerEpoch,
        BrokerError::InvalidRecord(_) => E::InvalidRecord,
        BrokerError::Txn(t) => return txn_error_code(*t, true),
        BrokerError::Group(g) => return group_error_code(*g),
        BrokerError::Log(l) => return log_error_code(l),
        BrokerError::Io(_) => E::KafkaStorageError,
    }
    .code()
}

pub fn log_error_code(e: &LogError) -> i16 {
    match e {
        LogError::CorruptBatch(_) | LogError::Codec(_) => E::CorruptMessage,
        LogError::BatchTooLarge { .. } => E::MessageTooLarge,
        LogError::OffsetOutOfRange { .. } => E::OffsetOutOfRange,
        LogError::Unavailable(_) | LogError::Io(_) | LogError::Flush(_) => E::KafkaStorageError,
    }
    .code()
}

/// `fenced_supported`: whether the request version knows PRODUCER_FENCED
/// (KIP-588); older versions get INVALID_PRODUCER_EPOCH, as from Kafka.
pub fn txn_error_code(e: TxnError, fenced_supported: bool) -> i16 {
    match e {
        TxnError::ProducerFenced if fenced_supported => E::ProducerFenced,
        TxnError::ProducerFenced => E::InvalidProducerEpoch,
        TxnError::InvalidProducerIdMapping => E::InvalidProducerIdMapping,
        TxnError::InvalidTxnState => E::InvalidTxnState,
        TxnError::ConcurrentTransactions => E::ConcurrentTransactions,
        TxnError::InvalidTransactionTimeout => E::InvalidTransactionTimeout,
        TxnError::TransactionalIdNotFound => E::TransactionalIdNotFound,
        TxnError::CoordinatorNotAvailable => E::CoordinatorNotAvailable,
    }
    .code()
}

pub fn group_error_code(e: GroupError) -> i16 {
    match e {
        GroupError::UnknownMemberId => E::UnknownMemberId,
        GroupError::IllegalGeneration => E::IllegalGeneration,
        GroupError::RebalanceInProgress => E::RebalanceInProgress,
        GroupError::InconsistentGroupProtocol => E::InconsistentGroupProtocol,
        GroupError::MemberIdRequired => E::MemberIdRequired,
        GroupError::FencedInstanceId => E::FencedInstanceId,
        GroupError::InvalidSessionTimeout => E::InvalidSessionTimeout,
        GroupError::NonEmptyGroup => E::NonEmptyGroup,
        GroupError::GroupIdNotFound => E::GroupIdNotFound,
        GroupError::CoordinatorNotAvailable => E::CoordinatorNotAvailable,
        GroupError::FencedMemberEpoch => E::FencedMemberEpoch,
        GroupError::StaleMemberEpoch => E::StaleMemberEpoch,
        GroupError::UnsupportedAssignor => E::UnsupportedAssignor,
    }
    .code()
}

/// The error message Kafka responses carry beside the code, where they can.
pub fn error_message(e: &BrokerError) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(e.to_string())
}
