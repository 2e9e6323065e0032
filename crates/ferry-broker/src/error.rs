//! The broker's error type; front-ends map it to protocol error codes.

use ferry_log::LogError;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("topic {0} already exists")]
    TopicExists(String),
    #[error("invalid topic name: {0}")]
    InvalidTopic(String),
    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),
    #[error("replication factor {0} is larger than the number of brokers (1)")]
    InvalidReplicationFactor(i32),
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("not enough in-sync replicas: {isr} < min.insync.replicas {min}")]
    NotEnoughReplicas { isr: usize, min: usize },
    #[error("timestamp {0} outside the allowed range")]
    InvalidTimestamp(i64),
    #[error("out of order sequence number")]
    OutOfOrderSequence,
    #[error("producer epoch is older than the latest")]
    InvalidProducerEpoch,
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    #[error("transaction: {0:?}")]
    Txn(crate::txn::TxnError),
    #[error("group: {0:?}")]
    Group(crate::group::GroupError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<ferry_records::RecordsError> for BrokerError {
    fn from(e: ferry_records::RecordsError) -> Self {
        BrokerError::Log(e.into())
    }
}

pub type Result<T, E = BrokerError> = std::result::Result<T, E>;
