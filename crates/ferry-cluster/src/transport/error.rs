//! What a call over the cluster port can fail with.

use std::time::Duration;

use ferry_broker::metadata::MetadataError;

/// A failed call to a peer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// No connection could be made.
    #[error("{addr} unreachable: {reason}")]
    Unreachable {
        /// The peer's address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The peer's port refused or reset the connection: no process serves
    /// it (a live but paused or cut-off node times out instead).
    #[error("{addr} is down: {reason}")]
    Down {
        /// The peer's address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The connection closed before the reply came.
    #[error("connection to {0} closed")]
    Closed(String),
    /// No reply in time.
    #[error("no reply from {addr} within {timeout:?}")]
    Timeout {
        /// The peer's address.
        addr: String,
        /// How long the call waited.
        timeout: Duration,
    },
    /// The peer sent something that is not the reply asked for.
    #[error("protocol error from {addr}: {reason}")]
    Protocol {
        /// The peer's address.
        addr: String,
        /// What was wrong.
        reason: String,
    },
    /// The peer refused the request (another quorum).
    #[error(transparent)]
    Refused(MetadataError),
}

impl TransportError {
    /// Whether the failure says the peer's process is gone: its port
    /// refused or reset the connection, or closed it before answering.
    /// (A timeout says nothing: the peer may be paused or cut off.)
    pub fn peer_gone(&self) -> bool {
        matches!(self, TransportError::Down { .. } | TransportError::Closed(_))
    }
}
