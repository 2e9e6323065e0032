//! The one error type of record-batch decoding, encoding and compression.

/// What can be wrong with a batch, its records or their compression.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordsError {
    /// The batch header is malformed or its CRC does not match.
    #[error("corrupt record batch: {0}")]
    CorruptBatch(&'static str),
    /// Attribute bits 0-2 name a codec Kafka does not define (5, 6 or 7).
    #[error("unknown compression codec id {0}")]
    UnknownCodec(i16),
    /// The records or their compression are malformed: truncated, bad
    /// checksum, bad framing, ...
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The decompressed data would exceed the caller's limit.
    #[error("decompressed data exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The caller's limit, in bytes.
        limit: usize,
    },
    /// The caller asked for something unencodable (e.g. a field overflowing an `i32`).
    #[error("invalid input: {0}")]
    Invalid(String),
}

pub(crate) fn corrupt(what: impl std::fmt::Display) -> RecordsError {
    RecordsError::Corrupt(what.to_string())
}
