//! Bounded retries of per-partition requests while a partition's
//! leadership moves (a node fenced, stopped or restarted): each attempt
//! asks Metadata afresh and goes to the leader it names, as Kafka clients
//! do on NOT_LEADER_OR_FOLLOWER and LEADER_NOT_AVAILABLE.

use std::future::Future;
use std::time::Duration;

use crate::client::Client;
use crate::error::ClientError;

/// NOT_LEADER_OR_FOLLOWER.
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
/// LEADER_NOT_AVAILABLE.
const LEADER_NOT_AVAILABLE: i16 = 5;
/// FENCED_LEADER_EPOCH.
const FENCED_LEADER_EPOCH: i16 = 74;
/// UNKNOWN_LEADER_EPOCH.
const UNKNOWN_LEADER_EPOCH: i16 = 75;

/// How many times, and after which pauses, a request is sent again.
#[derive(Clone, Copy, Debug)]
struct RetryPolicy {
    /// Attempts after the first one.
    retries: u32,
    /// Pause before the first retry; doubled each time up to `max_backoff`.
    first_backoff: Duration,
    /// Longest pause between attempts.
    max_backoff: Duration,
}

/// 8 retries, pauses of 0.1, 0.2, 0.4, 0.8 s, then 1 s: about 5.5 s in all,
/// enough for a fenced or stopped leader to be replaced.
const LEADER_RETRY: RetryPolicy =
    RetryPolicy { retries: 8, first_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(1) };

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
    /// Runs `attempt` until it succeeds, fails for another reason, or the
    /// retries of [`LEADER_RETRY`] are spent. `reads_only`: the request
    /// changes nothing, so a broken connection is retried too.
    pub(crate) async fn with_leader_retries<T, F, Fut>(&self, reads_only: bool, attempt: F) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        retry(LEADER_RETRY, reads_only, attempt).await
    }
}

async fn retry<T, F, Fut>(policy: RetryPolicy, reads_only: bool, mut attempt: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let mut backoff = policy.first_backoff;
    let mut retries = 0;
    loop {
        match attempt().await {
            Err(e) if retries < policy.retries && (e.is_leader_change() || (reads_only && e.is_retriable_read())) => {
                retries += 1;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(policy.max_backoff);
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka(code: i16) -> ClientError {
        ClientError::Kafka { code, context: String::new() }
    }

    #[test]
    fn leadership_errors_are_retried_others_are_not() {
        let connect = ClientError::Connect("a".into(), "refused".into());
        for e in [kafka(6), kafka(5), kafka(74), kafka(75), ClientError::UnknownBroker(-1), connect] {
            assert!(e.is_leader_change(), "{e}");
        }
        let io = ClientError::Io("a".into(), "reset".into());
        for e in [kafka(3), kafka(36), kafka(87), ClientError::Timeout("a".into()), io] {
            assert!(!e.is_leader_change(), "{e}");
        }
        assert!(ClientError::Closed("a".into()).is_retriable_read());
        assert!(!kafka(3).is_retriable_read());
    }

    /// Runs `retry` (3 retries) over `outcomes`, one per attempt, the last
    /// repeated; returns the result and how many attempts were made.
    async fn attempts(reads_only: bool, outcomes: &[Result<u32, ClientError>]) -> (Result<u32, ClientError>, usize) {
        let policy =
            RetryPolicy { retries: 3, first_backoff: Duration::from_millis(1), max_backoff: Duration::from_millis(2) };
        let mut made = 0;
        let result = retry(policy, reads_only, || {
            let outcome = outcomes[made.min(outcomes.len() - 1)].clone();
            made += 1;
            async move { outcome }
        })
        .await;
        (result, made)
    }

    #[tokio::test]
    async fn a_moving_leader_is_followed_a_bounded_number_of_times() {
        let broken = || Err(ClientError::Io("a".into(), "reset".into()));
        // The leader moved twice, then the request goes through.
        let (result, made) = attempts(false, &[Err(kafka(6)), Err(kafka(5)), Ok(7)]).await;
        assert_eq!((result.ok(), made), (Some(7), 3));
        // It never settles: the last error, after 1 + 3 attempts.
        let (result, made) = attempts(false, &[Err(kafka(6))]).await;
        assert_eq!((result.err().and_then(|e| e.code()), made), (Some(6), 4));
        // Another error is returned at once.
        let (result, made) = attempts(true, &[Err(kafka(3)), Ok(1)]).await;
        assert_eq!((result.err().and_then(|e| e.code()), made), (Some(3), 1));
        // A broken connection: sent again only if the request only reads.
        let (result, made) = attempts(false, &[broken(), Ok(1)]).await;
        assert_eq!((result.is_err(), made), (true, 1));
        let (result, made) = attempts(true, &[broken(), Ok(1)]).await;
        assert_eq!((result.ok(), made), (Some(1), 2));
    }
}
