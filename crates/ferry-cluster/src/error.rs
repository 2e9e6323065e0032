//! The cluster's error type.

/// Everything starting or running the cluster node can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A `--controller-quorum` string that does not parse, or names this
    /// node at another address.
    #[error("invalid controller quorum: {0}")]
    InvalidQuorum(String),
    /// The metadata refused this node (duplicate id, quorum mismatch).
    #[error(transparent)]
    Metadata(#[from] ferry_broker::metadata::MetadataError),
    /// The Raft state on disk is unreadable.
    #[error("raft storage: {0}")]
    Storage(String),
    /// openraft reported a fatal error.
    #[error("raft: {0}")]
    Raft(String),
    /// A socket or file operation failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}
