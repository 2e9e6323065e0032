//! The follower's side: one fetcher per leader node, fetching every
//! partition this node follows from that leader in one request. Before it
//! fetches in a new leader epoch, a partition is truncated to where its
//! last epoch ends on the leader (OffsetsForLeaderEpoch, KIP-101/279),
//! never by high watermark alone.

use std::sync::Arc;
use std::time::Duration;

use ferry_broker::metadata::listener;
use ferry_broker::replica::FollowerState;
use ferry_broker::{Broker, BrokerError, Partition, ReplicaError};
use tokio::sync::watch;
use uuid::Uuid;

use super::Replicator;
use super::message::{EpochQuery, FetchPartition, Records, ReplicaFetchRequest};
use crate::transport::{Request, Response};

/// Pause after a failed call or when nothing can be fetched yet.
const BACKOFF: Duration = Duration::from_millis(100);

/// A partition this node follows, as one fetch round sees it.
struct Followed {
    topic_id: Uuid,
    part: Arc<Partition>,
    state: FollowerState,
}

/// Fetches from `leader` until no local partition follows it (the
/// replicator starts another when one does again) or `stop`.
pub(super) async fn run(ctx: Arc<Replicator>, leader: i32, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        let Some(broker) = ctx.broker.upgrade() else { return };
        let followed = followed_from(&broker, leader);
        if followed.is_empty() {
            return;
        }
        let addr = broker.metadata().nodes.get(&leader).and_then(|n| n.listeners.get(listener::CLUSTER).cloned());
        drop(broker);
        let progressed = match addr {
            Some(addr) => tokio::select! {
                r = round(&ctx, &addr, followed) => r,
                _ = stop.changed() => return,
            },
            None => false,
        };
        if !progressed {
            tokio::select! {
                () = tokio::time::sleep(BACKOFF) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

/// The local partitions following `leader` now.
fn followed_from(broker: &Broker, leader: i32) -> Vec<Followed> {
    let mut out = Vec::new();
    for topic in broker.hosted_topics() {
        for part in topic.partitions() {
            if let Some(state) = part.follower_state().filter(|f| f.leader == leader) {
                out.push(Followed { topic_id: topic.id, part, state });
            }
        }
    }
    out
}

/// One round: truncate what needs it, then one fetch. False when nothing
/// was done (an error, or nothing ready), so the caller backs off.
async fn round(ctx: &Arc<Replicator>, addr: &str, followed: Vec<Followed>) -> bool {
    let (ready, untruncated): (Vec<Followed>, Vec<Followed>) = followed.into_iter().partition(|f| f.state.truncated);
    if !untruncated.is_empty() {
        return truncate(ctx, addr, untruncated).await;
    }
    let request = ReplicaFetchRequest {
        partitions: ready
            .iter()
            .map(|f| FetchPartition {
                topic_id: f.topic_id,
                partition: f.part.index,
                leader_epoch: f.state.leader_epoch,
                fetch_offset: f.part.log_end_offset(),
                acked_end: f.part.local_acked_end(),
            })
            .collect(),
        max_bytes: ctx.config.fetch_max_bytes,
        max_wait_ms: ctx.config.fetch_max_wait.as_millis() as u64,
    };
    let timeout = ctx.config.fetch_max_wait + Duration::from_secs(5);
    let response = match ctx.pool.call(addr, &Request::ReplicaFetch(request), timeout).await {
        Ok(Response::ReplicaFetch(r)) => r,
        Ok(other) => {
            tracing::debug!(?other, "unexpected answer to a replica fetch");
            return false;
        }
        Err(e) => {
            tracing::debug!(addr, error = %e, "replica fetch failed");
            return false;
        }
    };
    let work = move || {
        // Any partition answered (an empty long poll included): no back-off.
        let mut answered = false;
        let mut unflushed: Vec<Arc<Partition>> = Vec::new();
        for (f, got) in ready.iter().zip(response.partitions) {
            if got.topic_id != f.topic_id || got.partition != f.part.index {
                continue;
            }
            let records = match &got.records {
                Records::Bytes(b) => b.as_slice(),
                // Only a leader's own responses hold file ranges.
                Records::File(_) => continue,
            };
            match got.result {
                Ok(info) => match f.part.append_replicated(f.state.leader_epoch, records, info.high_watermark) {
                    Ok(_) => answered = true,
                    // The role or epoch changed since the fetch was sent
                    // (a late answer, maybe a deposed leader's stale tail):
                    // dropped; the next round fetches as the new role says.
                    Err(BrokerError::NotLeaderOrFollower) => {
                        tracing::debug!(topic = %f.part.topic, partition = f.part.index, "late replica fetch answer dropped");
                    }
                    Err(e) => {
                        // Diverged from the leader: ask it again where to cut.
                        tracing::warn!(topic = %f.part.topic, partition = f.part.index, error = %e, "replicated append refused");
                        f.part.request_truncation(f.state.leader_epoch);
                    }
                },
                Err(ReplicaError::OffsetOutOfRange) => f.part.request_truncation(f.state.leader_epoch),
                // Retention or DeleteRecords on the leader removed what this
                // log would fetch next: continue from the leader's start.
                Err(ReplicaError::BelowLogStart(start)) => {
                    match f.part.restart_as_follower(f.state.leader_epoch, start) {
                        Ok(()) => {
                            answered = true;
                            tracing::info!(topic = %f.part.topic, partition = f.part.index, start, "follower log restarted at the leader's log start");
                        }
                        Err(e) => {
                            tracing::warn!(topic = %f.part.topic, partition = f.part.index, error = %e, "follower log restart failed");
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(topic = %f.part.topic, partition = f.part.index, error = %e, "replica fetch refused");
                }
            }
            if f.part.local_acked_end() < f.part.log_end_offset() {
                unflushed.push(f.part.clone());
            }
        }
        // acks=all counts what followers have on disk: make it so before
        // the next fetch (sent as soon as this returns) reports it. Every
        // partition's fsync is asked for at once, so they overlap on the
        // log's flusher pool instead of running one after another: the
        // next fetch, and so the leader's high watermark, waits for the
        // slowest one, not for their sum.
        let (tx, rx) = std::sync::mpsc::channel();
        for part in unflushed {
            let tx = tx.clone();
            let p = part.clone();
            part.on_local_flushed(move |r| {
                let _ = tx.send((p, r));
            });
        }
        drop(tx);
        for (part, r) in rx {
            if let Err(e) = r {
                tracing::warn!(topic = %part.topic, partition = part.index, error = %e, "follower flush failed");
            }
        }
        answered
    };
    tokio::task::spawn_blocking(work).await.unwrap_or(false)
}

/// OffsetsForLeaderEpoch for `parts`, then truncation to the answers.
/// True if any partition was truncated (is ready to fetch).
async fn truncate(ctx: &Arc<Replicator>, addr: &str, parts: Vec<Followed>) -> bool {
    let queries: Vec<EpochQuery> = parts
        .iter()
        .map(|f| EpochQuery {
            topic_id: f.topic_id,
            partition: f.part.index,
            current_epoch: f.state.leader_epoch,
            epoch: f.part.latest_epoch().unwrap_or(-1),
        })
        .collect();
    let Ok(Response::EpochEnd(answers)) =
        ctx.pool.call(addr, &Request::EpochEnd(queries), Duration::from_secs(5)).await
    else {
        return false;
    };
    let work = move || {
        let mut truncated = false;
        for (f, answer) in parts.iter().zip(answers) {
            let end = match answer.result {
                // KIP-279: the leader's end for the largest epoch it has at
                // most ours, capped by where that epoch ends here.
                Ok(Some((epoch, leader_end))) => {
                    let local = f.part.local_end_offset_for_epoch(epoch).map_or(f.part.log_end_offset(), |(_, e)| e);
                    leader_end.min(local)
                }
                // Undefined: the leader knows no epoch at most ours (a new
                // leader records its own before it serves, so only data from
                // before replication gets here): keep what the high
                // watermark covers, as Kafka does.
                Ok(None) => f.part.high_watermark(),
                Err(e) => {
                    tracing::debug!(topic = %f.part.topic, partition = f.part.index, error = %e, "epoch query refused");
                    continue;
                }
            };
            match f.part.truncate_as_follower(f.state.leader_epoch, end) {
                Ok(end) => {
                    truncated = true;
                    tracing::info!(topic = %f.part.topic, partition = f.part.index, end, "follower truncated");
                }
                Err(BrokerError::NotLeaderOrFollower) => {
                    tracing::debug!(topic = %f.part.topic, partition = f.part.index, "late epoch answer dropped");
                }
                Err(e) => {
                    tracing::warn!(topic = %f.part.topic, partition = f.part.index, error = %e, "truncation failed");
                }
            }
        }
        truncated
    };
    tokio::task::spawn_blocking(work).await.unwrap_or(false)
}
