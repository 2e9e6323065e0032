//! The two background tasks of a [`QuorumClient`]: the ordered publish
//! pipeline (forwarded batches retried on the next leader) and the
//! settlement pipeline (kept until a leader answers; the session's
//! heartbeat).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use ferry_util::sync::lock;

use super::{HEARTBEAT, PUBLISH_BATCH, PUBLISH_DEADLINE, Pending, QuorumClient, RETRY, Target};
use crate::messaging::message::Message;
use crate::messaging::publish_ids::Stored;
use crate::messaging::remote_queue::{self, encode_messages};
use crate::metadata::{PeerError, PeerReply, PeerRequest};

/// The publish pipeline: batches in order, each retried on the current
/// leader until stored or past [`PUBLISH_DEADLINE`].
pub(super) async fn publisher(client: Weak<QuorumClient>) {
    loop {
        let Some(c) = client.upgrade() else { return };
        let woken = c.publish_wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let batch: Vec<Pending> = {
            let mut q = lock(&c.publishes);
            let n = q.len().min(PUBLISH_BATCH);
            q.drain(..n).collect()
        };
        if batch.is_empty() {
            let _ = tokio::time::timeout(Duration::from_secs(1), woken).await;
            continue;
        }
        forward_batch(&c, batch).await;
    }
}

async fn forward_batch(c: &Arc<QuorumClient>, batch: Vec<Pending>) {
    let deadline = tokio::time::Instant::now() + PUBLISH_DEADLINE;
    // Every retry carries the same ids, so whichever leader gets it stores
    // only what its log does not hold yet (`publish_ids`).
    let msgs: Vec<(Message, u64)> = batch.iter().map(|(m, _, seq)| (m.clone(), *seq)).collect();
    let stored = loop {
        match c.target() {
            // A classic queue whose holder is down: nacked at once.
            Target::Deleted | Target::Down { .. } => break None,
            Target::Local(q) => {
                // Led here now: stored locally, confirmed once on the ISR.
                if let Some(b) = c.broker.upgrade()
                    && let Ok(Stored { stored, wait }) = b.store_published(&c.vhost, &c.name, &q, &c.session, &msgs)
                {
                    drop(b);
                    match wait {
                        None => break Some(stored),
                        Some(offset) if remote_queue::completion(|done| q.on_durable(offset, done)).await => {
                            break Some(stored);
                        }
                        Some(_) => {}
                    }
                }
            }
            Target::Remote { node, .. } => {
                let plain: Vec<Message> = msgs.iter().map(|(m, _)| m.clone()).collect();
                let encoded = match encode_messages(&plain) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(queue = %c.name, error = %e, "cannot encode forwarded messages");
                        break None;
                    }
                };
                let request = PeerRequest::QueuePublish {
                    vhost: c.vhost.clone(),
                    queue: c.name.clone(),
                    batch: encoded,
                    id: Some((c.session.clone(), msgs.first().map_or(0, |(_, seq)| *seq))),
                    seqs: msgs.iter().map(|(_, seq)| *seq).collect(),
                };
                match c.call(node, request).await {
                    Ok(PeerReply::QueueStored(stored)) => break Some(stored),
                    Ok(other) => tracing::warn!(queue = %c.name, reply = ?other, "unexpected publish reply"),
                    Err(PeerError::UnknownTopicOrPartition) => {}
                    Err(e) => tracing::debug!(queue = %c.name, node, error = %e, "forwarded publish failed; retrying"),
                }
            }
            Target::Unavailable => {}
        }
        if tokio::time::Instant::now() >= deadline {
            break None;
        }
        tokio::time::sleep(RETRY).await;
    };
    // Not stored (`None`): the publishers get a nack.
    for (i, (_, done, _)) in batch.into_iter().enumerate() {
        if let Some(done) = done {
            done(stored.as_ref().and_then(|s| s.get(i)).copied().unwrap_or(false));
        }
    }
}

/// The settlement pipeline, and the session's heartbeat.
pub(super) async fn settler(client: Weak<QuorumClient>) {
    loop {
        let Some(c) = client.upgrade() else { return };
        let woken = c.settle_wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let (acks, requeues, rejects) = {
            let mut s = lock(&c.settles);
            if s.is_empty() {
                (Vec::new(), Vec::new(), Vec::new())
            } else {
                s.sending = true;
                (std::mem::take(&mut s.acks), std::mem::take(&mut s.requeues), std::mem::take(&mut s.rejects))
            }
        };
        if acks.is_empty() && requeues.is_empty() && rejects.is_empty() {
            let heartbeat = c.unsettled.load(Ordering::Relaxed) > 0;
            let target = if heartbeat { Some(c.target()) } else { None };
            if tokio::time::timeout(HEARTBEAT, woken).await.is_err()
                && let Some(Target::Remote { node, .. }) = target
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
        {
            let mut s = lock(&c.settles);
            s.sending = false;
            if !answered {
                // Kept for the next leader, before anything settled since.
                let later = std::mem::take(&mut *s);
                s.acks = [acks, later.acks].concat();
                s.requeues = [requeues, later.requeues].concat();
                s.rejects = [rejects, later.rejects].concat();
            }
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
