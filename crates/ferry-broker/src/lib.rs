//! `ferry-broker`: the protocol-neutral core. Topics and partitions over
//! `ferry-log`, topic configs with Kafka's names, acks, and the wakeups that
//! long-polling readers wait on, and the metrics registry. Front-ends call
//! into this crate; it knows no wire protocol.

mod admin;
pub mod bridge;
mod broker;
mod coordinator_load;
mod coordinator_partitions;
mod error;
pub mod group;
mod hw_checkpoint;
mod internal_log;
pub mod kv_store;
pub mod messaging;
pub mod metadata;
pub mod metrics;
mod partition;
mod producer;
pub mod queue;
mod reassign;
mod reconcile;
mod record_rules;
pub mod replica;
mod replicated;
pub mod security;
mod security_admin;
pub mod stored;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod topic;
pub mod topic_config;
pub mod txn;
mod txn_effects;
mod txn_verify;
mod vhost_admin;

pub use admin::{CreatedTopic, NewTopic};
pub use broker::{Broker, BrokerConfig, MqttRouter, is_internal, validate_topic_name};
pub use error::{BrokerError, Result};
/// What front-ends see of the log: the file ranges a read hands out (sent
/// with `sendfile`) and the errors they map to protocol codes.
pub use ferry_log::{LogError, ReadSlice};
pub use partition::{Acks, Appended, Partition, Signal};
pub use producer::{ProducerIds, ProducerStates};
pub use reassign::Reassignment;
pub use replicated::{ReplicaError, ReplicaRead};
pub use topic::Topic;
pub use txn_verify::{PendingVerification, TxnBatch};
