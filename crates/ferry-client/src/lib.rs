//! `ferry-client`: a small async Kafka client on the `kafka-protocol` codec.
//!
//! It speaks the Kafka protocol to any compatible broker (Ferry, Kafka,
//! Redpanda): a [`Connection`] per broker with responses matched by
//! correlation id (so requests can be pipelined) and request versions from
//! ApiVersions; a [`Client`] over one cluster, with partition leaders from
//! Metadata and group coordinators from FindCoordinator. On top: produce,
//! fetch, ListOffsets, topic administration, reassignments and node
//! decommission, the cluster's nodes and
//! controller quorum, consumer group inspection and commits, and a
//! classic-protocol group member with the range assignor.
//! Record batches are built and parsed with `ferry_records`.
//!
//! The API stays at the protocol level (no printing, and no retries on the
//! caller's behalf but one: per-partition requests follow a partition's
//! leader when it moves, a bounded number of times, as every Kafka client
//! does) so that the CLI, `ferry bench` and broker-to-broker calls can
//! share it.

mod admin;
mod assignor;
mod batches;
mod client;
mod cluster;
mod conn;
mod consumer_protocol;
mod delete_records;
mod error;
mod fetch;
mod groups;
mod member;
mod metadata;
mod offsets;
mod produce;
mod reassign;
mod retry;
mod sasl;

pub(crate) use ferry_util::sync::lock;
use kafka_protocol::messages::{GroupId, TopicName};
use kafka_protocol::protocol::StrBytes;

pub use admin::{ConfigEntry, ElectionOutcome};
pub use assignor::{RANGE, range_assign};
pub use batches::{FetchedRecord, Record, decode_batches, encode_batch};
pub use client::{Client, ClientConfig};
pub use cluster::{ClusterDescription, ClusterNode, QuorumDescription, QuorumReplica};
pub use conn::{Connection, InFlight};
pub use consumer_protocol::{decode_assignment, decode_subscription, encode_assignment, encode_subscription};
pub use delete_records::{HIGH_WATERMARK, delete_records_request};
pub use error::{ClientError, check, describe_code};
/// Record-batch compression codecs, as `ferry_records` defines them.
pub use ferry_records::compression::Compression;
pub use fetch::{FETCH_VERSION, PartitionFetch, fetch_request};
pub use groups::{GroupDescription, GroupListing, GroupMember, GroupOffset};
pub use member::GroupMembership;
pub use metadata::{BrokerMetadata, ClusterMetadata, PartitionMetadata, TopicMetadata};
pub use offsets::{EARLIEST, LATEST};
pub use produce::{PRODUCE_VERSION, produce_request, produce_result};
pub use reassign::PartitionReassignment;
pub use sasl::SaslLogin;

pub(crate) fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

pub(crate) fn group_id(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_string()))
}
