//! ElectLeaders (Kafka's API 43, KIP-183/KIP-460): what the broker asks
//! the controller and what it answers per partition. Unclean election is
//! off by design: an UNCLEAN request elects only among eligible replicas
//! (ISR, then ELR), as a clean election would.

use serde::{Deserialize, Serialize};

/// Kafka's election types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionType {
    /// Move leadership to the preferred replica (the first), if it is in
    /// the ISR and unfenced.
    Preferred,
    /// Give a leaderless partition a leader.
    Unclean,
}

/// Why one partition's election did not happen (Kafka's codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionError {
    /// No such topic or partition (UNKNOWN_TOPIC_OR_PARTITION).
    UnknownTopicOrPartition,
    /// The preferred replica leads already, or (UNCLEAN) a leader exists
    /// (ELECTION_NOT_NEEDED).
    ElectionNotNeeded,
    /// The preferred replica is fenced or not in the ISR
    /// (PREFERRED_LEADER_NOT_AVAILABLE).
    PreferredLeaderNotAvailable,
    /// No live replica in the ISR or ELR, and unclean election is off
    /// (ELIGIBLE_LEADERS_NOT_AVAILABLE).
    EligibleLeadersNotAvailable,
}

/// One partition's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionResult {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// `None`: elected.
    pub error: Option<ElectionError>,
}
