//! Group errors, shared by both group protocols and the coordinator.

use crate::error::BrokerError;

/// Group errors, named after Kafka's codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupError {
    /// The member id is not (or no longer) in the group.
    UnknownMemberId,
    /// The request names a generation other than the group's current one.
    IllegalGeneration,
    /// A rebalance round is under way; the member must rejoin.
    RebalanceInProgress,
    /// The join's protocol type or protocols match none the group's members share.
    InconsistentGroupProtocol,
    /// KIP-394: the member must join again with the member id handed back.
    MemberIdRequired,
    /// KIP-345: another member id now holds this static instance id.
    FencedInstanceId,
    /// The session timeout is outside the broker's allowed range.
    InvalidSessionTimeout,
    /// The group still has members, so it cannot be deleted.
    NonEmptyGroup,
    /// No group with this id exists.
    GroupIdNotFound,
    /// The group cannot be served now (it is dead, or its offsets log failed).
    CoordinatorNotAvailable,
    /// This node does not coordinate the group (its `__consumer_offsets`
    /// partition is led, or loaded, elsewhere); the client looks it up again.
    NotCoordinator,
    /// KIP-848: the member's epoch is not the current one; it must rejoin.
    FencedMemberEpoch,
    /// KIP-848: an offset commit with an outdated member epoch.
    StaleMemberEpoch,
    /// KIP-848: a server assignor the broker does not have.
    UnsupportedAssignor,
    /// KIP-848: a subscription's regular expression does not compile.
    InvalidRegularExpression,
}

impl From<GroupError> for BrokerError {
    fn from(e: GroupError) -> Self {
        BrokerError::Group(e)
    }
}
