//! A consumer's registration on a remote leader at basic.consume, bounded
//! so a dead leader that is not fenced yet (the cluster port waits 10 s
//! for it) never holds a consume past its client's own timeout: a client
//! that gives up on a consume it is answered later can keep that consumer
//! alive behind its caller's back (docs/reliability.md, Found 15).
//!
//! - A non-exclusive consumer waits at most [`REGISTER_WAIT`] for the
//!   leader's word; unanswered, it registers with its first take.
//! - An exclusive one needs the leader's word before consume-ok (its
//!   exclusivity is the leader's to grant: 403 beside other consumers). It
//!   follows the leader for up to [`EXCLUSIVE_WAIT`], sending the
//!   registration again to each new leader (a kill -9 is fenced within
//!   about a second, a pause after its session timeout, so such moves are
//!   mostly ridden through), then the consume
//!   fails as RabbitMQ's quorum queue answers a consume that timed out
//!   (541, "timeout occurred during consume operation"), and the
//!   consumer's cancel goes to whichever node leads next, so a
//!   registration still on its way registers nothing (`remote_queue.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::{QuorumClient, QuorumConsumer, RETRY, Target, unavailable};
use crate::messaging::MessagingError;
use crate::metadata::{PeerError, PeerReply, PeerRequest};

/// How long basic.consume waits for a non-exclusive consumer's
/// registration on a remote leader.
const REGISTER_WAIT: Duration = Duration::from_secs(2);
/// How long basic.consume follows the leader for an exclusive consumer's
/// registration: past a killed leader's fence and the next election
/// (about 1.5 s) and, mostly, a paused one's (its 6 s session timeout
/// counts from its last heartbeat), below clients' own consume timeouts
/// (10 s and more).
pub(super) const EXCLUSIVE_WAIT: Duration = Duration::from_secs(7);

/// A registration on its way to a leader (node, epoch).
type OutCall<'a> = ((i32, u128), Pin<Box<dyn Future<Output = Result<PeerReply, PeerError>> + 'a>>);

impl QuorumClient {
    /// Registers `c` on the remote leader `node` (`None`: none is known
    /// now), as the module docs say.
    pub(super) fn register_remote(
        self: &Arc<Self>,
        c: &QuorumConsumer,
        node: Option<i32>,
    ) -> Result<(), MessagingError> {
        let started = std::time::Instant::now();
        let answer = match node {
            _ if c.exclusive => self.blocking(self.register_exclusive(c)),
            None => Ok(()),
            Some(node) => match self.call_blocking_within(node, self.registration(c), Some(REGISTER_WAIT)) {
                Err(MessagingError::Internal(crate::BrokerError::Peer(PeerError::AccessRefused(m)))) => {
                    Err(MessagingError::AccessRefused(m))
                }
                // Not answered now: registered by its first take.
                Err(e) => {
                    tracing::info!(queue = %self.name, error = %e, "registering a consumer failed");
                    Ok(())
                }
                Ok(_) => Ok(()),
            },
        };
        tracing::info!(
            queue = %self.name,
            consumer = c.id,
            exclusive = c.exclusive,
            ms = started.elapsed().as_millis() as u64,
            ok = answer.is_ok(),
            "a consumer registered on the queue's leader"
        );
        if answer.is_err() {
            // Nothing may stay registered for a consume that failed.
            self.remove_consumer(c);
        }
        answer
    }

    fn registration(&self, c: &QuorumConsumer) -> PeerRequest {
        PeerRequest::QueueConsume {
            vhost: self.vhost.clone(),
            queue: self.name.clone(),
            session: self.session.clone(),
            consumer: c.id,
            exclusive: c.exclusive,
            cancel: false,
            unanswered: None,
        }
    }

    /// The exclusive consumer `c` registered by whichever node leads the
    /// queue, following the leader for up to [`EXCLUSIVE_WAIT`]. An answer
    /// from a leadership that ended meanwhile does not count: the next
    /// leader is asked.
    async fn register_exclusive(&self, c: &QuorumConsumer) -> Result<(), MessagingError> {
        let deadline = tokio::time::Instant::now() + EXCLUSIVE_WAIT;
        let mut out: Option<OutCall<'_>> = None;
        let mut last = String::from("no leader");
        loop {
            match self.target() {
                Target::Local(q) => {
                    self.local_id(c, &q)?;
                    return Ok(());
                }
                Target::Deleted => return Err(self.not_found()),
                Target::Down { node } => return Err(self.down(node)),
                Target::Unavailable => out = None,
                Target::Remote { node, epoch } => {
                    if out.as_ref().is_none_or(|(to, _)| *to != (node, epoch)) {
                        out = Some(((node, epoch), Box::pin(self.call(node, self.registration(c)))));
                    }
                }
            }
            let answered = if let Some((to, call)) = out.as_mut() {
                tokio::select! {
                    answer = call => Some((*to, answer)),
                    () = tokio::time::sleep(RETRY) => None,
                }
            } else {
                tokio::time::sleep(RETRY).await;
                None
            };
            if let Some((to, answer)) = answered {
                out = None;
                match answer {
                    Ok(_) if matches!(self.target(), Target::Remote { node, epoch } if (node, epoch) == to) => {
                        return Ok(());
                    }
                    // A leadership that ended since: the next one is asked.
                    Ok(_) => last = format!("node {} answered as a former leader", to.0),
                    Err(PeerError::AccessRefused(m)) => return Err(MessagingError::AccessRefused(m)),
                    Err(e) => {
                        last = e.to_string();
                        tokio::time::sleep(RETRY).await;
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                if let Some(((node, _), _)) = out {
                    last = format!("node {node} did not answer");
                }
                return Err(MessagingError::Internal(crate::BrokerError::Peer(PeerError::Failed(format!(
                    "queue '{}' in vhost '{}' timeout occurred during consume operation \
                     (no leader registered the exclusive consumer within {EXCLUSIVE_WAIT:?}: {last})",
                    self.name, self.vhost
                )))));
            }
        }
    }

    /// Runs `f` to its end from a synchronous caller on an async worker:
    /// on a multi-threaded runtime only, never blocking a current-thread one.
    pub(super) fn blocking<T>(&self, f: impl Future<Output = Result<T, MessagingError>>) -> Result<T, MessagingError> {
        let runtime = self
            .broker
            .upgrade()
            .and_then(|b| b.runtime_handle())
            .ok_or_else(|| unavailable("no runtime for peer calls"))?;
        let run = || runtime.block_on(f);
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(run)
            }
            Ok(_) => Err(unavailable("forwarding needs a multi-threaded runtime")),
            Err(_) => run(),
        }
    }
}
