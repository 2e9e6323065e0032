//! Reaching the quorum leader from any node: a local call when this node
//! leads, else a request over the cluster port to the leader it knows of
//! (or, knowing none, to each voter in turn, which answer with the leader).
//! Calls are retried across elections and unreachable peers for a bounded
//! time. Registration and heartbeats go the same way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_broker::metadata::{ControllerReply, ControllerRequest, MetadataError, NodeInfo, listener};
use ferry_util::sync::lock;

use super::Node;
use crate::raft::raft_id;
use crate::transport::{Forwarded, HeartbeatRequest, LeaderError, Registration, Request, Response, TransportError};

/// How long a controller call keeps looking for a leader.
const SUBMIT_PATIENCE: Duration = Duration::from_secs(10);
/// How long one forwarded call may take (a commit and its apply).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between attempts while no leader answers.
const BACKOFF: Duration = Duration::from_millis(50);
/// How often "waiting for quorum" is logged.
const WAITING_LOG_EVERY: Duration = Duration::from_secs(5);
/// How long a controlled shutdown waits for the controller to fence this
/// node before it stops anyway (the quorum may be gone).
const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(5);

/// A call for the leader.
enum Call {
    Forward(ControllerRequest),
    Register(Registration),
    Heartbeat(HeartbeatRequest),
}

/// What the leader answered.
enum Answer {
    Forwarded(Forwarded),
    Registered(u64),
    Alive(bool),
}

/// Where to send a call.
enum Target {
    Local,
    Remote(String),
}

/// An attempt that did not get an answer.
enum Miss {
    /// Try the hinted node next.
    Redirect(Option<(u64, String)>),
    /// Transient: try again (a reason for the log).
    Retry(String),
    /// Final.
    Refused(MetadataError),
}

impl From<LeaderError> for Miss {
    fn from(e: LeaderError) -> Miss {
        match e {
            LeaderError::NotLeader(hint) => Miss::Redirect(hint),
            LeaderError::Failed(MetadataError::Unavailable(why)) => Miss::Retry(why),
            LeaderError::Failed(e) => Miss::Refused(e),
        }
    }
}

impl Call {
    /// How long one attempt may take: a heartbeat gives up well within a
    /// session, so that one stuck on a leader that is gone (paused, cut
    /// off: no reply until the timeout) tries the new leader in time,
    /// before its session runs out; a leader heartbeats itself locally.
    fn attempt_timeout(&self, session: Duration) -> Duration {
        match self {
            Call::Heartbeat(_) => CALL_TIMEOUT.min(session / 2),
            Call::Forward(_) | Call::Register(_) => CALL_TIMEOUT,
        }
    }

    fn request(&self) -> Request {
        match self {
            Call::Forward(r) => Request::Forward(r.clone()),
            Call::Register(n) => Request::Register(n.clone()),
            Call::Heartbeat(h) => Request::Heartbeat(h.clone()),
        }
    }
}

impl Node {
    /// The broker's `Controller::submit`: carried out by the leader, then
    /// waited for until applied here.
    pub(super) async fn submit(&self, request: ControllerRequest) -> Result<ControllerReply, MetadataError> {
        match self.to_leader(&Call::Forward(request), SUBMIT_PATIENCE).await? {
            Answer::Forwarded(Forwarded { reply, index }) => {
                self.applied(index, SUBMIT_PATIENCE).await?;
                Ok(reply)
            }
            Answer::Registered(_) | Answer::Alive(_) => {
                Err(MetadataError::Unavailable("the leader answered another call".into()))
            }
        }
    }

    /// Controlled shutdown: asks the controller to fence this incarnation
    /// now, so its partitions' leadership moves (or goes to -1) at once
    /// rather than after the session timeout. Skipped by a quorum of one
    /// (it is the controller, and no other node could lead) and by a node
    /// not registered in this incarnation (a start abandoned early).
    /// Bounded by [`SHUTDOWN_PATIENCE`]; a failure is logged, and the
    /// session timeout fences the node as it would after a crash.
    pub(super) async fn leave(&self) {
        let voters = self.config.voters();
        if voters.len() == 1 && voters.iter().all(|(id, _)| *id == self.id) {
            return;
        }
        let registered =
            self.image().nodes.get(&self.id).is_some_and(|n| n.incarnation == self.incarnation && !n.fenced);
        if !registered {
            return;
        }
        let call = Call::Forward(ControllerRequest::ShutdownNode { incarnation: self.incarnation });
        match tokio::time::timeout(SHUTDOWN_PATIENCE, self.to_leader(&call, SHUTDOWN_PATIENCE)).await {
            Ok(Ok(_)) => tracing::info!(node = self.id, "controlled shutdown: fenced by the controller"),
            Ok(Err(e)) => tracing::warn!(node = self.id, error = %e, "controlled shutdown not acknowledged"),
            Err(_) => tracing::warn!(node = self.id, "controlled shutdown: no answer within {SHUTDOWN_PATIENCE:?}"),
        }
    }

    /// This node as it registers, naming its data directory's previous
    /// incarnation.
    fn registration(&self) -> Registration {
        let mut listeners = self.config.listeners.clone();
        listeners.insert(listener::CLUSTER.to_string(), self.advertised.clone());
        let node = NodeInfo {
            id: self.id,
            incarnation: self.incarnation,
            listeners,
            rack: self.config.rack.clone(),
            voter: self.config.is_voter(),
            fenced: false,
        };
        Registration { node, previous: self.previous }
    }

    /// Registers this node and waits until the registration is applied
    /// here. Retries while no quorum answers. `DuplicateNodeId` is retried
    /// for twice the session timeout (a node restarted faster than its old
    /// incarnation's session expires is let in once it has), then
    /// returned, as is `QuorumMismatch`.
    pub(super) async fn register(&self) -> Result<(), MetadataError> {
        let started = Instant::now();
        let duplicate_patience = self.config.session_timeout * 2;
        let mut logged: Option<Instant> = None;
        loop {
            let outcome = match self.to_leader(&Call::Register(self.registration()), CALL_TIMEOUT).await {
                Ok(Answer::Registered(index)) => self.applied(index, SUBMIT_PATIENCE).await,
                Ok(_) => Err(MetadataError::Unavailable("the leader answered another call".into())),
                Err(e) => Err(e),
            };
            let why = match outcome {
                Ok(()) => {
                    *lock(&self.waiting) = None;
                    return Ok(());
                }
                Err(e @ MetadataError::QuorumMismatch(_)) => return Err(e),
                Err(e @ MetadataError::DuplicateNodeId(_)) if started.elapsed() >= duplicate_patience => return Err(e),
                Err(e) => e.to_string(),
            };
            *lock(&self.waiting) = Some(format!("waiting for quorum: {why}"));
            if logged.is_none_or(|at| at.elapsed() >= WAITING_LOG_EVERY) {
                tracing::info!(node = self.id, reason = %why, "waiting for quorum");
                logged = Some(Instant::now());
            }
            tokio::time::sleep(BACKOFF * 4).await;
        }
    }

    /// Heartbeats the leader every `heartbeat_interval`; registers again
    /// when the leader no longer knows this incarnation (or fenced it).
    pub(super) async fn heartbeat_forever(self: Arc<Self>) {
        let every = self.config.heartbeat_interval;
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let beat = HeartbeatRequest { node: self.id, incarnation: self.incarnation };
            match self.to_leader(&Call::Heartbeat(beat), every.max(Duration::from_secs(1))).await {
                Ok(Answer::Alive(true)) => {}
                Ok(_) => {
                    tracing::info!(node = self.id, "the controller no longer knows this node; registering again");
                    if let Err(e) = self.register().await {
                        tracing::error!(node = self.id, error = %e, "registering again failed");
                    }
                }
                Err(e) => tracing::debug!(node = self.id, error = %e, "heartbeat"),
            }
        }
    }

    /// Sends `call` to the leader, retrying for `patience`.
    async fn to_leader(&self, call: &Call, patience: Duration) -> Result<Answer, MetadataError> {
        let deadline = Instant::now() + patience;
        let mut hint: Option<(u64, String)> = None;
        let mut next_voter = 0usize;
        let mut last: String;
        let timeout = call.attempt_timeout(self.config.session_timeout);
        loop {
            let target = self.target(hint.take(), &mut next_voter);
            let attempt = match target {
                Target::Local => match tokio::time::timeout(timeout, self.lead(call)).await {
                    Ok(answer) => answer.map_err(Miss::from),
                    Err(_) => Err(Miss::Retry(format!("no answer from this node's controller within {timeout:?}"))),
                },
                Target::Remote(addr) => self.forward(&addr, call, timeout).await,
            };
            match attempt {
                Ok(answer) => return Ok(answer),
                Err(Miss::Refused(e)) => return Err(e),
                Err(Miss::Redirect(Some(leader))) => {
                    last = format!("redirected to node {}", leader.0);
                    hint = Some(leader);
                }
                Err(Miss::Redirect(None)) => last = "no leader elected".into(),
                Err(Miss::Retry(why)) => last = why,
            }
            if Instant::now() >= deadline {
                return Err(MetadataError::Unavailable(format!(
                    "no quorum leader answered within {patience:?} ({last})"
                )));
            }
            tokio::time::sleep(BACKOFF).await;
        }
    }

    /// The node to try: a hint from the last answer, else the leader this
    /// node knows, else the next voter.
    fn target(&self, hint: Option<(u64, String)>, next_voter: &mut usize) -> Target {
        let me = raft_id(self.id);
        let (leader, addr) = if let Some((id, addr)) = hint {
            (Some(id), Some(addr))
        } else {
            let m = self.raft.metrics().borrow().clone();
            let membership = m.membership_config.membership();
            (m.current_leader, m.current_leader.and_then(|l| membership.get_node(&l).map(|n| n.addr.clone())))
        };
        match (leader, addr) {
            (Some(l), _) if l == me => Target::Local,
            (Some(_), Some(addr)) => Target::Remote(addr),
            _ => {
                let voters = self.config.voters();
                let (id, addr) = voters[*next_voter % voters.len()].clone();
                *next_voter += 1;
                if id == self.id { Target::Local } else { Target::Remote(addr) }
            }
        }
    }

    async fn lead(&self, call: &Call) -> Result<Answer, LeaderError> {
        match call {
            Call::Forward(r) => self.lead_request(self.id, r.clone()).await.map(Answer::Forwarded),
            Call::Register(n) => self.lead_register(n.clone()).await.map(Answer::Registered),
            Call::Heartbeat(h) => self.lead_heartbeat(h.clone()).map(Answer::Alive),
        }
    }

    async fn forward(&self, addr: &str, call: &Call, timeout: Duration) -> Result<Answer, Miss> {
        let response = match self.pool.call(addr, &call.request(), timeout).await {
            Ok(r) => r,
            Err(TransportError::Refused(e)) => return Err(Miss::Refused(e)),
            Err(e) => return Err(Miss::Retry(e.to_string())),
        };
        match response {
            Response::Forward(r) => r.map(Answer::Forwarded).map_err(Miss::from),
            Response::Register(r) => r.map(Answer::Registered).map_err(Miss::from),
            Response::Heartbeat(r) => r.map(Answer::Alive).map_err(Miss::from),
            Response::Refused(e) => Err(Miss::Refused(e)),
            _ => Err(Miss::Retry(format!("{addr} answered with another kind"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_attempt_gives_up_within_half_a_session() {
        let beat = Call::Heartbeat(HeartbeatRequest { node: 1, incarnation: uuid::Uuid::from_u128(1) });
        let delete = Call::Forward(ControllerRequest::DeleteTopic { name: "t".into() });
        // The chaos harness's 2 s session: a heartbeat stuck on a former
        // leader tries the new one after 1 s, within the session.
        assert_eq!(beat.attempt_timeout(Duration::from_secs(2)), Duration::from_secs(1));
        // The default 6 s session: 3 s; never more than a forwarded call.
        assert_eq!(beat.attempt_timeout(Duration::from_secs(6)), Duration::from_secs(3));
        assert_eq!(beat.attempt_timeout(Duration::from_secs(60)), CALL_TIMEOUT);
        // A forwarded change waits for its commit as before.
        assert_eq!(delete.attempt_timeout(Duration::from_secs(2)), CALL_TIMEOUT);
    }
}
