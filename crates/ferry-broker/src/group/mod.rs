//! Consumer groups, in Kafka's two protocols, and their committed offsets.
//!
//! - `classic`: the classic rebalance protocol (JoinGroup / SyncGroup /
//!   Heartbeat), where a leader member computes the assignment.
//! - `consumer`: KIP-848 "consumer" groups (ConsumerGroupHeartbeat), where
//!   the coordinator computes and hands out the assignment.
//! - `coordinator`: the `GroupCoordinator` that owns both kinds of group and
//!   the committed offsets, kept in the replicated `__consumer_offsets` topic.

mod classic;
mod consumer;
pub(crate) mod coordinator;
mod error;

pub use classic::{ClassicGroup, ClassicGroupState, ClassicMember, Join, JoinResult, SyncResult};
pub use consumer::{
    Assignor, ConsumerGroup, ConsumerMember, Heartbeat, HeartbeatResult, TopicPartition, TopicRegex, Topics,
};
pub use coordinator::{
    Committed, CoordinatorConfig, GroupCoordinator, GroupDescription, GroupOffsets, MemberDescription, OffsetsWritten,
};
pub use error::GroupError;
