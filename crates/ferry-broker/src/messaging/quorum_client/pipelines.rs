//! The two background tasks of a [`QuorumClient`]: the ordered publish
//! pipeline (forwarded batches pipelined, `window.rs`, and retried on the
//! next leader) and the
//! settlement pipeline (kept until a leader answers; the session's
//! heartbeat).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use ferry_util::sync::lock;

use tokio::task::JoinHandle;

use super::window::{At, Entry, Pending, Window, mark_sent, requeue, split_expired};
use super::{HEARTBEAT, PUBLISH_BATCH, PUBLISH_DEADLINE, QuorumClient, RETRY, Target};
use crate::messaging::message::Message;
use crate::messaging::publish_ids::Stored;
use crate::messaging::remote_queue::{self, encode_messages};
use crate::metadata::{PeerError, PeerReply, PeerRequest};

/// Batches appended and waiting for the ISR at once, at most.
const WINDOW: usize = 16;

/// A batch's ISR wait: a task answering whether the leadership that
/// appended it has it on its ISR; aborted when dropped (a rewind).
pub(super) struct Commit {
    task: Option<JoinHandle<bool>>,
    /// Set by the task once the ISR has the batch, so the pipeline can
    /// confirm it while it waits for another append's answer.
    committed: Arc<AtomicBool>,
}

impl Commit {
    /// Nothing to wait for: `ok` already known.
    fn known(ok: bool) -> Commit {
        let task = tokio::spawn(async move { ok });
        Commit { task: Some(task), committed: Arc::new(AtomicBool::new(ok)) }
    }

    /// Waits for `offset` to be on the ISR of leadership `at`, then wakes
    /// the pipeline.
    fn start(c: &Arc<QuorumClient>, at: &At, offset: u64) -> Commit {
        let (c, at) = (c.clone(), at.clone());
        let committed = Arc::new(AtomicBool::new(false));
        let flag = committed.clone();
        let task = tokio::spawn(async move {
            let ok = match at {
                At::Local(q) => remote_queue::completion(|done| q.on_durable(offset, done)).await,
                At::Remote { node, leadership } => {
                    let request = PeerRequest::QueueCommitted {
                        vhost: c.vhost.clone(),
                        queue: c.name.clone(),
                        leadership,
                        offset,
                    };
                    match c.call(node, request).await {
                        Ok(PeerReply::Done) => true,
                        Ok(other) => {
                            tracing::warn!(queue = %c.name, reply = ?other, "unexpected commit reply");
                            false
                        }
                        Err(e) => {
                            tracing::debug!(queue = %c.name, node, error = %e, "a forwarded batch's ISR wait failed");
                            false
                        }
                    }
                }
            };
            flag.store(ok, Ordering::Release);
            c.publish_wake.notify_one();
            ok
        });
        Commit { task: Some(task), committed }
    }

    fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Known to be on the ISR.
    fn is_committed(&self) -> bool {
        self.committed.load(Ordering::Acquire)
    }

    async fn outcome(mut self) -> bool {
        match self.task.take() {
            Some(task) => task.await.unwrap_or(false),
            None => false,
        }
    }
}

impl Drop for Commit {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The publish pipeline: batches sent in order, each as soon as the one
/// before is appended (`window.rs`), confirmed once its ISR wait answers;
/// retried on the current leader until confirmed or past
/// [`PUBLISH_DEADLINE`].
pub(super) async fn publisher(client: Weak<QuorumClient>) {
    let mut window: Window<Commit> = Window::default();
    loop {
        let Some(c) = client.upgrade() else { return };
        let wake = c.publish_wake.clone();
        let mut woken = Box::pin(wake.notified());
        woken.as_mut().enable();
        confirm_heads(&c, &mut window).await;
        if window.len() < WINDOW {
            let batch = next_batch(&c);
            if !batch.is_empty() {
                // Not waiting here while sending: a wake-up then is for
                // `send`, which confirms what the ISR has meanwhile.
                drop(woken);
                send(&c, &mut window, batch).await;
                continue;
            }
        }
        // Idle, the client is not held: an unused one can be freed
        // (`Broker::free_idle_quorum_clients`), which ends this task.
        drop(c);
        // Woken by a publish or a commit task.
        let _ = tokio::time::timeout(Duration::from_secs(1), woken).await;
    }
}

/// Confirms the window's oldest batches whose waits answered, in order;
/// a failed wait sends the whole window again.
async fn confirm_heads(c: &Arc<QuorumClient>, window: &mut Window<Commit>) {
    while window.head().is_some_and(|w| w.is_finished()) {
        let Some(entry) = window.pop() else { return };
        let Entry { batch, stored, wait } = entry;
        if wait.outcome().await {
            let n = batch.len();
            Entry { batch, stored, wait: () }.finish(true);
            c.forwarding.fetch_sub(n, Ordering::AcqRel);
        } else {
            // Not on that leadership's ISR (deposed, or the ISR too slow):
            // sent again, in order, with the same ids.
            let mut again = batch;
            again.extend(window.rewind());
            give_back(c, again);
            return;
        }
    }
}

/// Confirms the window's oldest batches known to be on the ISR, in order,
/// while the pipeline waits for another batch's append: their confirms do
/// not wait for that answer. A failed wait is left for [`confirm_heads`]
/// (its rewind must not pass the batch being appended).
fn confirm_committed(c: &QuorumClient, window: &mut Window<Commit>) {
    while window.head().is_some_and(|w| w.is_committed()) {
        let Some(Entry { batch, stored, .. }) = window.pop() else { return };
        let n = batch.len();
        Entry { batch, stored, wait: () }.finish(true);
        c.forwarding.fetch_sub(n, Ordering::AcqRel);
    }
}

/// `call`'s answer, confirming what the ISR has meanwhile.
async fn answer_confirming<F: std::future::Future<Output = Result<PeerReply, PeerError>>>(
    c: &QuorumClient,
    window: &mut Window<Commit>,
    call: F,
) -> Result<PeerReply, PeerError> {
    tokio::pin!(call);
    loop {
        let woken = c.publish_wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        confirm_committed(c, window);
        tokio::select! {
            answer = &mut call => return answer,
            () = &mut woken => {}
        }
    }
}

/// Up to [`PUBLISH_BATCH`] messages from the pipeline's queue, each with a
/// deadline from its first turn; those already past it are nacked.
fn next_batch(c: &Arc<QuorumClient>) -> Vec<Pending> {
    let now = tokio::time::Instant::now();
    let batch: Vec<Pending> = {
        let mut q = lock(&c.publishes);
        let n = q.len().min(PUBLISH_BATCH);
        c.forwarding.fetch_add(n, Ordering::AcqRel);
        q.drain(..n).collect()
    };
    let batch = batch
        .into_iter()
        .map(|mut p| {
            p.deadline.get_or_insert(now + PUBLISH_DEADLINE);
            p
        })
        .collect();
    let (live, expired) = split_expired(batch, now);
    nack(c, expired);
    live
}

fn nack(c: &QuorumClient, ps: Vec<Pending>) {
    c.forwarding.fetch_sub(ps.len(), Ordering::AcqRel);
    for p in ps {
        p.finish(false);
    }
}

/// Messages taken by the pipeline and not confirmed: back to the front of
/// its queue, in sequence order.
fn give_back(c: &Arc<QuorumClient>, ps: Vec<Pending>) {
    let n = ps.len();
    requeue(&mut lock(&c.publishes), ps);
    c.forwarding.fetch_sub(n, Ordering::AcqRel);
    c.publish_wake.notify_one();
}

/// Sends `batch` (the pipeline's next messages) to the queue's current
/// leader, retrying until it is appended; the window takes it (and its ISR
/// wait). When the window's leadership is not the one appending now, the
/// window and the batch go back to the queue to be sent again in order.
async fn send(c: &Arc<QuorumClient>, window: &mut Window<Commit>, mut batch: Vec<Pending>) {
    loop {
        // Every retry carries the same ids, so whichever leader gets it
        // stores only what its log does not hold yet (`publish_ids`).
        let msgs: Vec<(Message, u64)> = batch.iter().map(|p| (p.message.clone(), p.seq)).collect();
        match c.target() {
            // Deleted, or a classic queue whose holder is down: nacked.
            Target::Deleted | Target::Down { .. } => {
                let mut all = window.rewind();
                all.extend(batch);
                nack(c, all);
                return;
            }
            Target::Local(q) => {
                let at = At::Local(q.clone());
                if !window.accepts(&at) {
                    let mut all = window.rewind();
                    all.extend(batch);
                    give_back(c, all);
                    return;
                }
                let resent = mark_sent(&mut batch, ferry_util::time::now_ms());
                let appended = match c.broker.upgrade() {
                    Some(b) => b.store_published(&c.vhost, &c.name, &q, (&c.session, resent), &msgs),
                    None => Err(crate::BrokerError::NotLeaderOrFollower),
                };
                match appended {
                    Ok(Stored { stored, wait }) => {
                        let wait = wait.map_or_else(|| Commit::known(true), |offset| Commit::start(c, &at, offset));
                        window.push(at, Entry { batch, stored, wait });
                        return;
                    }
                    Err(e) => tracing::debug!(queue = %c.name, error = %e, "storing forwarded messages here failed"),
                }
            }
            Target::Remote { node, .. } => {
                let after = match window.at() {
                    None => None,
                    Some(At::Remote { node: n, leadership }) if *n == node => Some(*leadership),
                    Some(_) => {
                        let mut all = window.rewind();
                        all.extend(batch);
                        give_back(c, all);
                        return;
                    }
                };
                let plain: Vec<Message> = msgs.into_iter().map(|(m, _)| m).collect();
                let encoded = match encode_messages(&plain) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(queue = %c.name, error = %e, "cannot encode forwarded messages");
                        nack(c, batch);
                        return;
                    }
                };
                let resent = mark_sent(&mut batch, ferry_util::time::now_ms());
                let request = PeerRequest::QueuePublish {
                    vhost: c.vhost.clone(),
                    queue: c.name.clone(),
                    batch: encoded,
                    id: Some((c.session.clone(), batch.first().map_or(0, |p| p.seq))),
                    seqs: batch.iter().map(|p| p.seq).collect(),
                    pipelined: true,
                    after,
                    resent,
                };
                match answer_confirming(c, window, c.call(node, request)).await {
                    Ok(PeerReply::QueueAppended { stored, wait, leadership }) => {
                        let at = At::Remote { node, leadership };
                        let wait = wait.map_or_else(|| Commit::known(true), |offset| Commit::start(c, &at, offset));
                        let rewound = window.push(at, Entry { batch, stored, wait });
                        // `after` was checked by the leader: nothing to rewind.
                        debug_assert!(rewound.is_empty());
                        give_back(c, rewound);
                        return;
                    }
                    // A leader without pipelining answers once on its ISR.
                    Ok(PeerReply::QueueStored(stored)) => {
                        let at = At::Remote { node, leadership: 0 };
                        let rewound = window.push(at, Entry { batch, stored, wait: Commit::known(true) });
                        give_back(c, rewound);
                        return;
                    }
                    Ok(other) => tracing::warn!(queue = %c.name, reply = ?other, "unexpected publish reply"),
                    Err(PeerError::UnknownTopicOrPartition) => {}
                    Err(e) => tracing::debug!(queue = %c.name, node, error = %e, "forwarded publish failed; retrying"),
                }
            }
            Target::Unavailable => {}
        }
        if !window.is_empty() {
            // The window's leadership may be gone: everything again, in order.
            let mut all = window.rewind();
            all.extend(batch);
            give_back(c, all);
            return;
        }
        let (live, expired) = split_expired(batch, tokio::time::Instant::now());
        nack(c, expired);
        if live.is_empty() {
            return;
        }
        batch = live;
        tokio::time::sleep(RETRY).await;
    }
}

/// The settlement pipeline, and the session's heartbeat.
pub(super) async fn settler(client: Weak<QuorumClient>) {
    loop {
        let Some(c) = client.upgrade() else { return };
        let wake = c.settle_wake.clone();
        let woken = wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let (acks, requeues, rejects) = {
            let mut s = lock(&c.settles);
            if s.is_empty() {
                (Vec::new(), Vec::new(), Vec::new())
            } else {
                s.sending = true;
                s.gate.take();
                (std::mem::take(&mut s.acks), std::mem::take(&mut s.requeues), std::mem::take(&mut s.rejects))
            }
        };
        if acks.is_empty() && requeues.is_empty() && rejects.is_empty() {
            let heartbeat = c.unsettled.load(Ordering::Relaxed) > 0;
            let target = if heartbeat { Some(c.target()) } else { None };
            // Not held while idle (see the publisher).
            drop(c);
            if tokio::time::timeout(HEARTBEAT, woken).await.is_err()
                && let Some(Target::Remote { node, .. }) = target
                && let Some(c) = client.upgrade()
            {
                let renew = PeerRequest::QueueTake {
                    vhost: c.vhost.clone(),
                    queue: c.name.clone(),
                    session: c.session.clone(),
                    max: 0,
                    wait_ms: 0,
                    consumer: None,
                    number: None,
                };
                let _ = c.call(node, renew).await;
            }
            continue;
        }
        let n = (acks.len() + requeues.len() + rejects.len()) as i64;
        let answered = send_settles(&c, &acks, &requeues, &rejects).await;
        let released = {
            let mut s = lock(&c.settles);
            s.sending = false;
            if answered {
                s.gate.answered()
            } else {
                // Kept for the next leader, before anything settled since.
                s.acks = [acks, std::mem::take(&mut s.acks)].concat();
                s.requeues = [requeues, std::mem::take(&mut s.requeues)].concat();
                s.rejects = [rejects, std::mem::take(&mut s.rejects)].concat();
                Vec::new()
            }
        };
        // Confirms of publishes made after these settlements.
        for done in released {
            done(true);
        }
        if answered {
            let left = c.unsettled.fetch_sub(n, Ordering::Relaxed) - n;
            if left < 0 {
                c.unsettled.store(0, Ordering::Relaxed);
            }
            c.settled.notify_waiters();
        } else {
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// Sends one settlement batch to the current leader; true once answered
/// (or the queue is gone, so there is nothing left to settle).
async fn send_settles(c: &Arc<QuorumClient>, acks: &[u64], requeues: &[u64], rejects: &[u64]) -> bool {
    match c.target() {
        Target::Deleted => true,
        Target::Unavailable | Target::Down { .. } => false,
        Target::Local(q) => {
            let applied = (|| -> crate::Result<()> {
                if !acks.is_empty() {
                    q.ack_anywhere(acks)?;
                }
                if !requeues.is_empty() {
                    q.requeue(requeues)?;
                }
                if !rejects.is_empty() {
                    q.reject(rejects)?;
                }
                Ok(())
            })();
            applied.is_ok() && remote_queue::completion(|done| q.on_settled(done)).await
        }
        Target::Remote { node, .. } => {
            let request = PeerRequest::QueueSettle {
                vhost: c.vhost.clone(),
                queue: c.name.clone(),
                session: c.session.clone(),
                acks: acks.to_vec(),
                requeues: requeues.to_vec(),
                rejects: rejects.to_vec(),
            };
            match c.call(node, request).await {
                Ok(_) => true,
                Err(PeerError::UnknownTopicOrPartition) => true,
                Err(e) => {
                    tracing::debug!(queue = %c.name, node, error = %e, "forwarded settlement failed; retrying");
                    false
                }
            }
        }
    }
}
