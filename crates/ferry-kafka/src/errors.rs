//! The one place where broker and log errors become Kafka error codes, and
//! where they are counted for the `ferry_errors_total` metric.

use std::sync::atomic::{AtomicU64, Ordering};

use ferry_broker::BrokerError;
use ferry_broker::LogError;
use ferry_broker::group::GroupError;
use ferry_broker::metadata::PeerError;
use ferry_broker::txn::TxnError;
use kafka_protocol::error::ResponseError as E;

/// Codes -1 (UNKNOWN_SERVER_ERROR) to 190: every code Kafka defines.
const CODES: usize = 192;

/// How often each code was returned, process-wide (the front-end's error
/// paths have no broker handle; one process runs one broker).
static ERRORS: [AtomicU64; CODES] = [const { AtomicU64::new(0) }; CODES];

fn counted(code: i16) -> i16 {
    if let Some(c) = usize::try_from(i32::from(code) + 1).ok().and_then(|i| ERRORS.get(i)) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    code
}

/// `code`, counted for the error metric (for codes not from a broker error).
pub fn counted_code(code: i16) -> i16 {
    counted(code)
}

/// (code, Kafka's name for it, times returned) of every code returned so far.
pub fn error_counts() -> Vec<(i32, &'static str, u64)> {
    (0..CODES)
        .filter_map(|i| {
            let n = ERRORS[i].load(Ordering::Relaxed);
            let code = i as i16 - 1;
            (n > 0).then(|| (i32::from(code), E::try_from_code(code).map_or("UNKNOWN", error_name), n))
        })
        .collect()
}

/// Kafka's spelling (UNKNOWN_TOPIC_OR_PARTITION) of a code's name.
fn error_name(e: E) -> &'static str {
    static NAMES: std::sync::OnceLock<std::collections::HashMap<i16, &'static str>> = std::sync::OnceLock::new();
    let names = NAMES.get_or_init(|| {
        (-1i16..190)
            .filter_map(|c| {
                let e = E::try_from_code(c)?;
                let mut name = String::new();
                for (i, ch) in format!("{e:?}").chars().enumerate() {
                    if ch.is_ascii_uppercase() && i > 0 {
                        name.push('_');
                    }
                    name.push(ch.to_ascii_uppercase());
                }
                Some((c, &*Box::leak(name.into_boxed_str())))
            })
            .collect()
    });
    names.get(&e.code()).copied().unwrap_or("UNKNOWN")
}

pub fn error_code(e: &BrokerError) -> i16 {
    counted(broker_error_code(e))
}

fn broker_error_code(e: &BrokerError) -> i16 {
    match e {
        BrokerError::UnknownTopicOrPartition => E::UnknownTopicOrPartition,
        BrokerError::TopicExists(_) => E::TopicAlreadyExists,
        BrokerError::InvalidTopic(_) => E::InvalidTopicException,
        BrokerError::InvalidPartitions(_) => E::InvalidPartitions,
        BrokerError::InvalidReplicationFactor(_) => E::InvalidReplicationFactor,
        BrokerError::InvalidReplicaAssignment(_) => E::InvalidReplicaAssignment,
        BrokerError::NotLeaderOrFollower => E::NotLeaderOrFollower,
        BrokerError::NoReassignmentInProgress(_) => E::NoReassignmentInProgress,
        BrokerError::InvalidRequest(_) => E::InvalidRequest,
        BrokerError::NodeNotRegistered(_) => E::BrokerIdNotRegistered,
        // What a Kafka broker answers when its forwarded request to the
        // controller times out; clients retry.
        BrokerError::ControllerUnavailable(_) => E::RequestTimedOut,
        BrokerError::Peer(p) => match p {
            PeerError::UnknownTopicOrPartition => E::UnknownTopicOrPartition,
            PeerError::NotLeaderOrFollower => E::NotLeaderOrFollower,
            PeerError::OffsetOutOfRange => E::OffsetOutOfRange,
            PeerError::Unavailable(_) => E::RequestTimedOut,
            PeerError::Failed(_) | PeerError::AccessRefused(_) => E::UnknownServerError,
            PeerError::Txn(t) => return txn_code(*t, true),
        },
        BrokerError::InvalidConfig(_) => E::InvalidConfig,
        BrokerError::NotEnoughReplicas { .. } => E::NotEnoughReplicas,
        // KIP-890 verification that could not reach an answer: retried by
        // every client (Kafka's choice, KAFKA-15459).
        BrokerError::TxnUnverified(_) => E::NotEnoughReplicas,
        BrokerError::InvalidTimestamp(_) => E::InvalidTimestamp,
        BrokerError::OutOfOrderSequence => E::OutOfOrderSequenceNumber,
        BrokerError::InvalidProducerEpoch => E::InvalidProducerEpoch,
        BrokerError::InvalidRecord(_) | BrokerError::RejectedRecords { .. } => E::InvalidRecord,
        BrokerError::Txn(t) => return txn_code(*t, true),
        BrokerError::Group(g) => return group_code(*g),
        BrokerError::Log(l) => return log_code(l),
        BrokerError::Io(_) => E::KafkaStorageError,
        BrokerError::ResourceNotFound(_) => E::ResourceNotFound,
    }
    .code()
}

/// The code of a refused authorization, by the resource the request was
/// refused on: the one place denials become Kafka codes.
pub fn denied_code(resource: ferry_broker::security::ResourceType) -> i16 {
    use ferry_broker::security::ResourceType as R;
    counted(
        match resource {
            R::Topic => E::TopicAuthorizationFailed,
            R::Group => E::GroupAuthorizationFailed,
            R::TransactionalId => E::TransactionalIdAuthorizationFailed,
            R::Cluster | R::Vhost | R::Queue | R::Exchange | R::MqttTopic => E::ClusterAuthorizationFailed,
        }
        .code(),
    )
}

fn log_code(e: &LogError) -> i16 {
    match e {
        LogError::CorruptBatch(_) | LogError::Codec(_) | LogError::UnexpectedOffset { .. } => E::CorruptMessage,
        LogError::BatchTooLarge { .. } => E::MessageTooLarge,
        LogError::OffsetOutOfRange { .. } => E::OffsetOutOfRange,
        LogError::Unavailable(_) | LogError::Io(_) | LogError::Flush(_) => E::KafkaStorageError,
    }
    .code()
}

/// `fenced_supported`: whether the request version knows PRODUCER_FENCED
/// (KIP-588); older versions get INVALID_PRODUCER_EPOCH, as from Kafka.
pub fn txn_error_code(e: TxnError, fenced_supported: bool) -> i16 {
    counted(txn_code(e, fenced_supported))
}

fn txn_code(e: TxnError, fenced_supported: bool) -> i16 {
    match e {
        TxnError::ProducerFenced if fenced_supported => E::ProducerFenced,
        TxnError::ProducerFenced => E::InvalidProducerEpoch,
        TxnError::InvalidProducerIdMapping => E::InvalidProducerIdMapping,
        TxnError::InvalidTxnState => E::InvalidTxnState,
        TxnError::ConcurrentTransactions => E::ConcurrentTransactions,
        TxnError::InvalidTransactionTimeout => E::InvalidTransactionTimeout,
        TxnError::TransactionalIdNotFound => E::TransactionalIdNotFound,
        TxnError::CoordinatorNotAvailable => E::CoordinatorNotAvailable,
        TxnError::NotCoordinator => E::NotCoordinator,
        TxnError::CoordinatorFenced => E::TransactionCoordinatorFenced,
    }
    .code()
}

pub fn group_error_code(e: GroupError) -> i16 {
    counted(group_code(e))
}

fn group_code(e: GroupError) -> i16 {
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
        GroupError::NotCoordinator => E::NotCoordinator,
        GroupError::FencedMemberEpoch => E::FencedMemberEpoch,
        GroupError::StaleMemberEpoch => E::StaleMemberEpoch,
        GroupError::UnsupportedAssignor => E::UnsupportedAssignor,
        GroupError::InvalidRegularExpression => E::InvalidRegularExpression,
    }
    .code()
}

/// The error message Kafka responses carry beside the code, where they can.
pub fn error_message(e: &BrokerError) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unverifiable_transactional_batch_is_retriable_with_kafkas_message() {
        let e = BrokerError::TxnUnverified("coordinator node 2: peer unavailable".into());
        assert_eq!(error_code(&e), E::NotEnoughReplicas.code());
        assert!(error_message(&e).starts_with("unable to verify the partition has been added to the transaction"));
        // Outside the transaction: INVALID_TXN_STATE, as Kafka 3.6+.
        assert_eq!(error_code(&BrokerError::Txn(TxnError::InvalidTxnState)), 48);
    }
}
