//! What goes wrong on a STOMP connection. Every error is answered with an
//! ERROR frame (its `message` header is [`StompError::message`]) and the
//! connection is closed, as STOMP requires; other connections are not
//! affected.

use ferry_broker::messaging::MessagingError;

use crate::codec::FrameError;

/// A fatal error on one connection.
#[derive(Debug, thiserror::Error)]
pub enum StompError {
    /// Bytes that are not a frame.
    #[error("malformed frame: {0}")]
    Frame(#[from] FrameError),
    /// A frame that breaks the protocol (missing header, unknown command,
    /// unknown subscription or ack id, ...).
    #[error("{0}")]
    Protocol(String),
    /// Login refused.
    #[error("{0}")]
    Access(String),
    /// The messaging layer refused (no such queue or exchange, ...).
    #[error("{0}")]
    Messaging(#[from] MessagingError),
    /// The socket failed; nothing can be sent.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl StompError {
    /// A protocol violation with this description.
    pub fn protocol(msg: impl Into<String>) -> StompError {
        StompError::Protocol(msg.into())
    }

    /// The ERROR frame's `message` header: one short line, RabbitMQ's
    /// wording where it has one.
    pub fn message(&self) -> &'static str {
        match self {
            StompError::Frame(_) => "Invalid frame",
            StompError::Protocol(_) => "Bad frame",
            StompError::Access(_) => "Access refused",
            StompError::Messaging(MessagingError::NotFound(_)) => "not_found",
            StompError::Messaging(MessagingError::PreconditionFailed(_)) => "precondition_failed",
            StompError::Messaging(MessagingError::ResourceLocked(_)) => "resource_locked",
            StompError::Messaging(MessagingError::AccessRefused(_)) => "access_refused",
            StompError::Messaging(MessagingError::CommandInvalid(_)) => "command_invalid",
            StompError::Messaging(MessagingError::Internal(_)) => "internal_error",
            StompError::Io(_) => "I/O error",
        }
    }
}

impl From<ferry_broker::BrokerError> for StompError {
    fn from(e: ferry_broker::BrokerError) -> Self {
        StompError::Messaging(MessagingError::Internal(e))
    }
}
