//! Group errors, shared by both group protocols and the coordinator.

use crate::error::BrokerError;

/// Group errors, named after Kafka's codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupError {
    UnknownMemberId,
    IllegalGeneration,
    RebalanceInProgress,
    InconsistentGroupProtocol,
    MemberIdRequired,
    FencedInstanceId,
    InvalidSessionTimeout,
    NonEmptyGroup,
    GroupIdNotFound,
    CoordinatorNotAvailable,
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
