//! `ferry-broker`: the protocol-neutral core. Topics and partitions over
//! `ferry-log`, topic configs with Kafka's names, acks, and the wakeups that
//! long-polling readers wait on. Front-ends call into this crate; it knows no
//! wire protocol.

mod broker;
pub mod consumer_group;
pub mod coordinator;
mod error;
pub mod group;
pub mod messaging;
mod partition;
mod producer;
pub mod topic_config;
pub mod txn;

pub use broker::{Broker, BrokerConfig, Topic, validate_topic_name};
pub use error::{BrokerError, Result};
pub use partition::{Acks, Appended, Partition};
pub use producer::{ProducerIds, ProducerStates};
