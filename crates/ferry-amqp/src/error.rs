//! AMQP reply codes, and the one place broker errors become them.

use ferry_broker::messaging::MessagingError;

/// Soft: a message exceeded the allowed size.
pub const CONTENT_TOO_LARGE: u16 = 311;
/// Soft: a `mandatory` message could not be routed.
pub const NO_ROUTE: u16 = 312;
/// Hard: the server closed the connection (shutdown or admin action).
pub const CONNECTION_FORCED: u16 = 320;
/// Hard: the client named a virtual host that does not exist or is refused.
pub const INVALID_PATH: u16 = 402;
/// Soft: the user lacks the permission, or an exclusive queue belongs to another connection.
pub const ACCESS_REFUSED: u16 = 403;
/// Soft: the named exchange or queue does not exist.
pub const NOT_FOUND: u16 = 404;
/// Soft: the queue is in exclusive use by another consumer.
pub const RESOURCE_LOCKED: u16 = 405;
/// Soft: a redeclare's arguments differ, or a precondition of the method fails.
pub const PRECONDITION_FAILED: u16 = 406;
/// Hard: a malformed frame.
pub const FRAME_ERROR: u16 = 501;
/// Hard: a frame with invalid field values.
pub const SYNTAX_ERROR: u16 = 502;
/// Hard: a method the server cannot perform in the current state.
pub const COMMAND_INVALID: u16 = 503;
/// Hard: a method on a channel that is not open.
pub const CHANNEL_ERROR: u16 = 504;
/// Hard: a frame the server did not expect at this point.
pub const UNEXPECTED_FRAME: u16 = 505;
/// Hard: the server lacks a resource (e.g. too many channels).
pub const RESOURCE_ERROR: u16 = 506;
/// Hard: a method the spec forbids (e.g. a reserved value or misuse of a command).
pub const NOT_ALLOWED: u16 = 530;
/// Hard: functionality the server does not implement.
pub const NOT_IMPLEMENTED: u16 = 540;
/// Hard: an internal server error.
pub const INTERNAL_ERROR: u16 = 541;

/// A protocol error: closes the channel (soft codes) or the connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code} {text}")]
pub struct AmqpError {
    /// Reply code (one of the constants above).
    pub code: u16,
    /// Reply text sent to the client.
    pub text: String,
    /// Class of the method that failed (0 if none).
    pub class_id: u16,
    /// Method id of the method that failed (0 if none).
    pub method_id: u16,
}

fn name(code: u16) -> &'static str {
    match code {
        CONTENT_TOO_LARGE => "CONTENT_TOO_LARGE",
        NO_ROUTE => "NO_ROUTE",
        CONNECTION_FORCED => "CONNECTION_FORCED",
        INVALID_PATH => "INVALID_PATH",
        ACCESS_REFUSED => "ACCESS_REFUSED",
        NOT_FOUND => "NOT_FOUND",
        RESOURCE_LOCKED => "RESOURCE_LOCKED",
        PRECONDITION_FAILED => "PRECONDITION_FAILED",
        FRAME_ERROR => "FRAME_ERROR",
        SYNTAX_ERROR => "SYNTAX_ERROR",
        COMMAND_INVALID => "COMMAND_INVALID",
        CHANNEL_ERROR => "CHANNEL_ERROR",
        UNEXPECTED_FRAME => "UNEXPECTED_FRAME",
        RESOURCE_ERROR => "RESOURCE_ERROR",
        NOT_ALLOWED => "NOT_ALLOWED",
        NOT_IMPLEMENTED => "NOT_IMPLEMENTED",
        _ => "INTERNAL_ERROR",
    }
}

impl AmqpError {
    /// `text` without the code name; it is prefixed as RabbitMQ does.
    pub fn new(code: u16, text: impl std::fmt::Display) -> AmqpError {
        AmqpError { code, text: format!("{} - {text}", name(code)), class_id: 0, method_id: 0 }
    }

    /// The method that failed.
    pub fn on(mut self, class_id: u16, method_id: u16) -> AmqpError {
        if self.class_id == 0 {
            self.class_id = class_id;
            self.method_id = method_id;
        }
        self
    }

    /// Connection-level (hard) errors close the connection.
    pub fn is_hard(&self) -> bool {
        !matches!(
            self.code,
            CONTENT_TOO_LARGE | NO_ROUTE | ACCESS_REFUSED | NOT_FOUND | RESOURCE_LOCKED | PRECONDITION_FAILED
        )
    }
}

impl From<MessagingError> for AmqpError {
    fn from(e: MessagingError) -> Self {
        let (code, text) = match e {
            MessagingError::NotFound(t) => (NOT_FOUND, t),
            MessagingError::PreconditionFailed(t) => (PRECONDITION_FAILED, t),
            MessagingError::ResourceLocked(t) => (RESOURCE_LOCKED, t),
            MessagingError::AccessRefused(t) => (ACCESS_REFUSED, t),
            MessagingError::CommandInvalid(t) => (COMMAND_INVALID, t),
            MessagingError::Internal(e) => (INTERNAL_ERROR, e.to_string()),
        };
        AmqpError::new(code, text)
    }
}

impl From<ferry_broker::BrokerError> for AmqpError {
    fn from(e: ferry_broker::BrokerError) -> Self {
        AmqpError::new(INTERNAL_ERROR, e)
    }
}

impl From<std::io::Error> for AmqpError {
    fn from(e: std::io::Error) -> Self {
        AmqpError::new(INTERNAL_ERROR, e)
    }
}
