//! The one place broker errors become HTTP statuses.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferry_broker::BrokerError;
use ferry_broker::group::GroupError;

/// An error answered as `{"error": message, "code": status}`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status answered, also echoed as `code` in the body.
    pub status: StatusCode,
    /// Human-readable reason, answered as `error`.
    pub message: String,
}

impl ApiError {
    /// An error answered with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }

    /// `400 Bad Request`: the request's body, query or path is invalid.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// `404 Not Found`: the named topic, group, queue or route does not exist.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> ApiError {
        let status = match &e {
            BrokerError::UnknownTopicOrPartition | BrokerError::Group(GroupError::GroupIdNotFound) => {
                StatusCode::NOT_FOUND
            }
            BrokerError::NodeNotRegistered(_) | BrokerError::ResourceNotFound(_) => StatusCode::NOT_FOUND,
            BrokerError::TopicExists(_)
            | BrokerError::Group(GroupError::NonEmptyGroup)
            | BrokerError::InvalidRequest(_)
            | BrokerError::NoReassignmentInProgress(_) => StatusCode::CONFLICT,
            BrokerError::InvalidTopic(_)
            | BrokerError::InvalidPartitions(_)
            | BrokerError::InvalidReplicationFactor(_)
            | BrokerError::InvalidReplicaAssignment(_)
            | BrokerError::InvalidConfig(_)
            | BrokerError::InvalidTimestamp(_) => StatusCode::BAD_REQUEST,
            BrokerError::Group(GroupError::CoordinatorNotAvailable | GroupError::NotCoordinator)
            | BrokerError::ControllerUnavailable(_)
            | BrokerError::NotLeaderOrFollower => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match &e {
            BrokerError::Group(GroupError::GroupIdNotFound) => "group not found".to_string(),
            BrokerError::Group(GroupError::NonEmptyGroup) => "the group has active members".to_string(),
            BrokerError::UnknownTopicOrPartition => "topic not found".to_string(),
            other => other.to_string(),
        };
        ApiError::new(status, message)
    }
}

impl From<GroupError> for ApiError {
    fn from(e: GroupError) -> ApiError {
        BrokerError::Group(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message, "code": self.status.as_u16() });
        (self.status, Json(body)).into_response()
    }
}
