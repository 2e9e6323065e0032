//! The client's one error type, and Kafka's error codes turned into it.

use ferry_records::RecordsError;

/// Why a request to a broker failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ClientError {
    /// No TCP connection to the address (refused, unresolvable, timed out).
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    /// An established connection broke while writing or reading.
    #[error("connection to {0} failed: {1}")]
    Io(String, String),
    /// The broker did not answer within the request timeout.
    #[error("no answer from {0} in time")]
    Timeout(String),
    /// The connection closed before the answer came.
    #[error("connection to {0} closed")]
    Closed(String),
    /// A response, or data inside it, that does not decode.
    #[error("malformed response: {0}")]
    Decode(String),
    /// A fetched record batch that does not decode.
    #[error("malformed response: {0}")]
    Records(#[from] RecordsError),
    /// A request that cannot be encoded (too large, a field out of range).
    #[error("cannot encode request: {0}")]
    Encode(String),
    /// The broker speaks no version of this API key that the client does.
    #[error("the broker does not support API {0} in a version this client speaks")]
    Unsupported(i16),
    /// The broker answered with a Kafka error code.
    #[error("{context}: {}", describe_code(*.code))]
    Kafka {
        /// Kafka's error code (e.g. 3, UNKNOWN_TOPIC_OR_PARTITION).
        code: i16,
        /// What the client was doing.
        context: String,
    },
    /// No broker address was given to connect to.
    #[error("no broker address given")]
    NoBrokers,
    /// A broker id that the last Metadata answer did not list.
    #[error("unknown broker id {0}")]
    UnknownBroker(i32),
    /// Metadata had no entry for a topic that was asked for.
    #[error("topic {0}: no metadata")]
    NoMetadata(String),
    /// A partition the topic does not have.
    #[error("topic {topic} has no partition {partition}")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: i32,
    },
    /// Joining a group never settled: every attempt met a new rebalance.
    #[error("group {0} kept rebalancing")]
    KeptRebalancing(String),
}

impl ClientError {
    /// Kafka's error code, if the broker answered with one.
    pub fn code(&self) -> Option<i16> {
        match self {
            ClientError::Kafka { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Kafka's name for an error code and the code, e.g.
/// `UNKNOWN_TOPIC_OR_PARTITION (Kafka error 3)`.
pub fn describe_code(code: i16) -> String {
    use kafka_protocol::error::ResponseError;
    match ResponseError::try_from_code(code) {
        // The codec calls codes it does not know Unknown(code): no name.
        Some(e) if !matches!(e, ResponseError::Unknown(_)) => {
            let mut name = String::new();
            for (i, ch) in format!("{e:?}").chars().enumerate() {
                if ch.is_ascii_uppercase() && i > 0 {
                    name.push('_');
                }
                name.push(ch.to_ascii_uppercase());
            }
            format!("{name} (Kafka error {code})")
        }
        _ => format!("Kafka error {code}"),
    }
}

/// Fails with the Kafka error behind a non-zero code.
pub fn check(code: i16, context: impl FnOnce() -> String) -> Result<(), ClientError> {
    if code == 0 { Ok(()) } else { Err(ClientError::Kafka { code, context: context() }) }
}

/// As [`check`], with the broker's error message (if any) after the context.
pub(crate) fn check_with_message(
    code: i16,
    message: Option<&kafka_protocol::protocol::StrBytes>,
    context: impl FnOnce() -> String,
) -> Result<(), ClientError> {
    check(code, || match message {
        Some(m) if !m.is_empty() => format!("{}: {m}", context()),
        _ => context(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_named_like_kafka() {
        assert_eq!(describe_code(3), "UNKNOWN_TOPIC_OR_PARTITION (Kafka error 3)");
        assert_eq!(describe_code(-12345), "Kafka error -12345");
        let e = check(36, || "creating topic t".into()).unwrap_err();
        assert_eq!(e.to_string(), "creating topic t: TOPIC_ALREADY_EXISTS (Kafka error 36)");
        assert_eq!(e.code(), Some(36));
        assert!(check(0, || unreachable!()).is_ok());
    }
}
