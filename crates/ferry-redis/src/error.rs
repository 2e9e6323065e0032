//! Why a command failed, and its error reply: the one place where broker
//! and messaging errors become Redis error codes.

use ferry_broker::BrokerError;
use ferry_broker::messaging::MessagingError;

use crate::resp::Reply;

/// A failed command. The connection stays open (a [`ProtocolError`] on the
/// byte stream is handled by the connection, which closes).
///
/// [`ProtocolError`]: crate::resp::ProtocolError
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Arguments that do not parse.
    #[error("ERR syntax error")]
    Syntax,
    /// The wrong number of arguments for the named command.
    #[error("ERR wrong number of arguments for '{0}' command")]
    Arity(String),
    /// A reply text with its own code (`ERR ...`, `NOGROUP ...`, `WRONGTYPE ...`).
    #[error("{0}")]
    Reply(String),
    /// The messaging layer refused (lists).
    #[error("ERR {0}")]
    Messaging(#[from] MessagingError),
    /// The broker refused (streams).
    #[error("ERR {0}")]
    Broker(#[from] BrokerError),
}

impl CommandError {
    /// An `ERR`-coded error with this text.
    pub fn err(msg: impl std::fmt::Display) -> CommandError {
        CommandError::Reply(format!("ERR {msg}"))
    }

    /// The error reply sent to the client.
    pub fn reply(&self) -> Reply {
        Reply::Error(self.to_string())
    }
}

impl From<std::io::Error> for CommandError {
    fn from(e: std::io::Error) -> Self {
        CommandError::Broker(e.into())
    }
}

/// What a command handler returns.
pub type CmdResult<T> = Result<T, CommandError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_carry_redis_codes() {
        assert_eq!(CommandError::Syntax.reply(), Reply::Error("ERR syntax error".into()));
        assert_eq!(
            CommandError::Arity("xadd".into()).reply(),
            Reply::Error("ERR wrong number of arguments for 'xadd' command".into())
        );
        assert_eq!(CommandError::Reply("NOGROUP x".into()).reply(), Reply::Error("NOGROUP x".into()));
    }
}
