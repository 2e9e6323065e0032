//! Bounded retries of per-partition requests while a partition's
//! leadership moves (a node fenced, stopped or restarted): each attempt
//! asks Metadata afresh and goes to the leader it names, as Kafka clients
//! do on NOT_LEADER_OR_FOLLOWER and LEADER_NOT_AVAILABLE.

use std::future::Future;
use std::time::Duration;

use crate::client::Client;
use crate::error::ClientError;

/// Attempts after the first one.
const RETRIES: u32 = 8;
/// Pause before the first retry; doubled each time up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between attempts (all pauses add up to about 5 s).
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// NOT_LEADER_OR_FOLLOWER.
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
/// LEADER_NOT_AVAILABLE.
const LEADER_NOT_AVAILABLE: i16 = 5;
/// FENCED_LEADER_EPOCH.
const FENCED_LEADER_EPOCH: i16 = 74;
/// UNKNOWN_LEADER_EPOCH.
const UNKNOWN_LEADER_EPOCH: i16 = 75;

impl ClientError {
    /// Whether fresh Metadata may name a leader that accepts the request:
    /// the broker says it does not lead the partition (or nobody does yet),
    /// Metadata named a leader it does not list (-1: none), or the leader
    /// refused the connection (it is stopping or restarting). Nothing was
    /// written, so a retry is safe even for Produce.
    pub fn is_leader_change(&self) -> bool {
        match self {
            ClientError::Kafka { code, .. } => {
                matches!(
                    *code,
                    NOT_LEADER_OR_FOLLOWER | LEADER_NOT_AVAILABLE | FENCED_LEADER_EPOCH | UNKNOWN_LEADER_EPOCH
                )
            }
            ClientError::UnknownBroker(_) | ClientError::Connect(..) => true,
            _ => false,
        }
    }

    /// As [`ClientError::is_leader_change`], or a connection that broke or
    /// closed: a request that only reads may be sent again.
    fn is_retriable_read(&self) -> bool {
        self.is_leader_change() || matches!(self, ClientError::Io(..) | ClientError::Closed(_))
    }
}

impl Client {
    /// Runs `attempt` until it succeeds, fails for another reason, or
    /// [`RETRIES`] retries are spent. `reads_only`: the request changes
    /// nothing, so a broken connection is retried too.
    pub(crate) async fn with_leader_retries<T, F, Fut>(
        &self,
        reads_only: bool,
        mut attempt: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let mut backoff = FIRST_BACKOFF;
        let mut retries = 0;
        loop {
            match attempt().await {
                Err(e) if retries < RETRIES && (e.is_leader_change() || (reads_only && e.is_retriable_read())) => {
                    retries += 1;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                result => return result,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leadership_errors_are_retried_others_are_not() {
        let kafka = |code| ClientError::Kafka { code, context: String::new() };
        for e in [
            kafka(6),
            kafka(5),
            kafka(74),
            kafka(75),
            ClientError::UnknownBroker(-1),
            ClientError::Connect("a".into(), "refused".into()),
        ] {
            assert!(e.is_leader_change(), "{e}");
        }
        for e in [
            kafka(3),
            kafka(36),
            kafka(87),
            ClientError::Timeout("a".into()),
            ClientError::Io("a".into(), "reset".into()),
        ] {
            assert!(!e.is_leader_change(), "{e}");
        }
        assert!(ClientError::Closed("a".into()).is_retriable_read());
        assert!(!kafka(3).is_retriable_read());
    }
}
