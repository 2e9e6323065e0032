//! AMQP reply codes, and the one place broker errors become them.

use ferry_broker::messaging::MessagingError;

pub const CONTENT_TOO_LARGE: u16 = 311;
pub const NO_ROUTE: u16 = 312;
pub const CONNECTION_FORCED: u16 = 320;
pub const INVALID_PATH: u16 = 402;
pub const ACCESS_REFUSED: u16 = 403;
pub const NOT_FOUND: u16 = 404;
pub const RESOURCE_LOCKED: u16 = 405;
pub const PRECONDITION_FAILED: u16 = 406;
pub const FRAME_ERROR: u16 = 501;
pub const SYNTAX_ERROR: u16 = 502;
pub const COMMAND_INVALID: u16 = 503;
pub const CHANNEL_ERROR: u16 = 504;
pub const UNEXPECTED_FRAME: u16 = 505;
pub const RESOURCE_ERROR: u16 = 506;
pub const NOT_ALLOWED: u16 = 530;
pub const NOT_IMPLEMENTED: u16 = 540;
pub const INTERNAL_ERROR: u16 = 541;

/// A protocol error: closes the channel (soft codes) or the connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code} {text}")]
pub struct AmqpError {
    pub code: u16,
    pub text: String,
    pub class_id: u16,
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
