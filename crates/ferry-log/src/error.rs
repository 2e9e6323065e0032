//! The log's error type. Front-ends map these to protocol error codes.

use std::io;
use std::sync::Arc;

/// Everything that can go wrong in the storage engine.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The batch is malformed or its CRC does not match; nothing was written.
    #[error("corrupt record batch: {0}")]
    CorruptBatch(&'static str),
    /// The batch is larger than the log's `max.message.bytes`.
    #[error("record batch of {size} bytes exceeds the limit of {max}")]
    BatchTooLarge {
        /// Size of the rejected batch, in bytes.
        size: usize,
        /// The log's limit, in bytes.
        max: usize,
    },
    /// A read asked for an offset outside [log start, high watermark].
    #[error("offset {offset} out of range [{start}, {end}]")]
    OffsetOutOfRange {
        /// The requested offset.
        offset: u64,
        /// Log start offset (inclusive).
        start: u64,
        /// High watermark (inclusive: a read there returns no data yet).
        end: u64,
    },
    /// A replicated batch does not continue the log: its base offset is
    /// below the log end (or below the batch before it).
    #[error("replicated batch at offset {got} does not continue the log at {expected}")]
    UnexpectedOffset {
        /// The smallest base offset the log could take.
        expected: u64,
        /// The batch's base offset.
        got: u64,
    },
    /// A stored batch failed to decode (only reachable through files damaged
    /// after recovery, or a bug).
    #[error("record codec: {0}")]
    Codec(ferry_records::RecordsError),
    /// The log was closed, or an earlier fsync failed and the log refuses
    /// further writes (a failed fsync leaves the page cache state unknown).
    #[error("log is closed or failed: {0}")]
    Unavailable(String),
    /// A file operation failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// An I/O error shared by every waiter of one group commit.
    #[error("fsync failed: {0}")]
    Flush(Arc<io::Error>),
}

impl From<ferry_records::RecordsError> for LogError {
    fn from(e: ferry_records::RecordsError) -> Self {
        match e {
            ferry_records::RecordsError::CorruptBatch(what) => LogError::CorruptBatch(what),
            other => LogError::Codec(other),
        }
    }
}

/// `Result` with [`LogError`] as the default error.
pub type Result<T, E = LogError> = std::result::Result<T, E>;
