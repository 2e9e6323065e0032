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

use super::ReplicationConfig;
use super::Replicator;
use super::message::{EpochAnswer, EpochQuery, FetchPartition, Records, ReplicaFetchRequest, ReplicaFetchResponse};
use crate::transport::{Request, Response};

/// Pause after a failed call or when nothing can be fetched yet.
const BACKOFF: Duration = Duration::from_millis(100);

/// A partition this node follows, as one fetch round sees it.
pub(super) struct Followed {
    pub(super) topic_id: Uuid,
    pub(super) part: Arc<Partition>,
    pub(super) state: FollowerState,
    /// The log end when the round began: where it fetches from.
    pub(super) fetch_offset: u64,
}

/// What one round of a fetcher does (the same choice in the node and in
/// the replication simulation, `sim.rs`).
pub(super) enum Round {
    /// Some partitions start a new leader epoch: ask where to cut first.
    Truncate(Vec<Followed>),
    /// Every partition is truncated: fetch them all in one request.
    Fetch(Vec<Followed>),
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
pub(super) fn followed_from(broker: &Broker, leader: i32) -> Vec<Followed> {
    let mut out = Vec::new();
    for topic in broker.hosted_topics() {
        for part in topic.partitions() {
            if let Some(state) = part.follower_state().filter(|f| f.leader == leader) {
                let fetch_offset = part.log_end_offset();
                out.push(Followed { topic_id: topic.id, part, state, fetch_offset });
            }
        }
    }
    out
}

/// Truncation comes first: while any partition needs it, the round only
/// truncates (those), and fetches nothing.
pub(super) fn plan(followed: Vec<Followed>) -> Round {
    let (ready, untruncated): (Vec<Followed>, Vec<Followed>) = followed.into_iter().partition(|f| f.state.truncated);
    if untruncated.is_empty() { Round::Fetch(ready) } else { Round::Truncate(untruncated) }
}

/// One round: truncate what needs it, then one fetch. False when nothing
/// was done (an error, or nothing ready), so the caller backs off.
async fn round(ctx: &Arc<Replicator>, addr: &str, followed: Vec<Followed>) -> bool {
    let ready = match plan(followed) {
        Round::Truncate(parts) => return truncate(ctx, addr, parts).await,
        Round::Fetch(ready) => ready,
    };
    let request = fetch_request(&ready, &ctx.config);
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
    // Appends only reach the page cache (as a producer's do, on its
    // task), so they run here: a hand-off to a blocking thread and back
    // per round was two more wake-ups on every confirm's path. A log
    // restart (segment files removed) still goes to a blocking thread.
    let restarts = response.partitions.iter().any(|p| matches!(p.result, Err(ReplicaError::BelowLogStart(_))));
    let (answered, unflushed) = if restarts {
        match tokio::task::spawn_blocking(move || apply_fetch_response(&ready, response)).await {
            Ok(r) => r,
            Err(_) => return false,
        }
    } else {
        apply_fetch_response(&ready, response)
    };
    flushed(unflushed).await;
    answered
}

/// acks=all counts what followers have on disk: make it so before the
/// next fetch (sent as soon as this returns) reports it. Every
/// partition's fsync is asked for at once, so they overlap on the log's
/// flusher pool: the next fetch waits for the slowest, not their sum.
async fn flushed(unflushed: Vec<Arc<Partition>>) {
    let waits: Vec<_> = unflushed
        .into_iter()
        .map(|part| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            part.on_local_flushed(move |r| {
                let _ = tx.send(r);
            });
            (part, rx)
        })
        .collect();
    for (part, rx) in waits {
        let r = rx
            .await
            .unwrap_or_else(|_| Err(BrokerError::Log(ferry_log::LogError::Unavailable("flusher stopped".into()))));
        if let Err(e) = r {
            tracing::warn!(topic = %part.topic, partition = part.index, error = %e, "follower flush failed");
        }
    }
}

/// The fetch of `ready` (every one truncated in its epoch), from each
/// log's end, reporting what each has acknowledged.
pub(super) fn fetch_request(ready: &[Followed], config: &ReplicationConfig) -> ReplicaFetchRequest {
    ReplicaFetchRequest {
        partitions: ready
            .iter()
            .map(|f| FetchPartition {
                topic_id: f.topic_id,
                partition: f.part.index,
                leader_epoch: f.state.leader_epoch,
                fetch_offset: f.fetch_offset,
                acked_end: f.part.local_acked_end(),
            })
            .collect(),
        max_bytes: config.fetch_max_bytes,
        max_wait_ms: config.fetch_max_wait.as_millis() as u64,
    }
}

/// Takes a fetch response for `ready` (as the round saw them when it sent
/// the request, so a late answer is checked against the epoch it was asked
/// in): appends, truncation requests, log restarts. Blocking (appends).
/// Returns whether any partition answered (an empty long poll included:
/// then no back-off) and the partitions left to fsync.
pub(super) fn apply_fetch_response(ready: &[Followed], response: ReplicaFetchResponse) -> (bool, Vec<Arc<Partition>>) {
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
        // The log moved since the fetch was sent (truncated, or another
        // answer landed first): this answer is for an older log end, and
        // its batches would leave a gap or overlap (Kafka discards it the
        // same way). Found by the replication simulation (seed 33), which
        // delivers answers late.
        if f.part.log_end_offset() != f.fetch_offset {
            tracing::debug!(topic = %f.part.topic, partition = f.part.index, "replica fetch answer for an older log end dropped");
            continue;
        }
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
            Err(ReplicaError::BelowLogStart(start)) => match f.part.restart_as_follower(f.state.leader_epoch, start) {
                Ok(()) => {
                    answered = true;
                    tracing::info!(topic = %f.part.topic, partition = f.part.index, start, "follower log restarted at the leader's log start");
                }
                Err(e) => {
                    tracing::warn!(topic = %f.part.topic, partition = f.part.index, error = %e, "follower log restart failed");
                }
            },
            Err(e) => {
                tracing::debug!(topic = %f.part.topic, partition = f.part.index, error = %e, "replica fetch refused");
            }
        }
        if f.part.local_acked_end() < f.part.log_end_offset() {
            unflushed.push(f.part.clone());
        }
    }
    (answered, unflushed)
}

/// [`flushed`] for a blocking thread (the tests' and the simulation's).
#[cfg(test)]
pub(super) fn flush_all(unflushed: Vec<Arc<Partition>>) {
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
}

/// OffsetsForLeaderEpoch for `parts`, then truncation to the answers.
/// True if any partition was truncated (is ready to fetch).
async fn truncate(ctx: &Arc<Replicator>, addr: &str, parts: Vec<Followed>) -> bool {
    let queries = epoch_queries(&parts);
    let Ok(Response::EpochEnd(answers)) =
        ctx.pool.call(addr, &Request::EpochEnd(queries), Duration::from_secs(5)).await
    else {
        return false;
    };
    tokio::task::spawn_blocking(move || apply_epoch_answers(&parts, answers)).await.unwrap_or(false)
}

/// Where does each partition's newest epoch end on the leader?
pub(super) fn epoch_queries(parts: &[Followed]) -> Vec<EpochQuery> {
    parts
        .iter()
        .map(|f| EpochQuery {
            topic_id: f.topic_id,
            partition: f.part.index,
            current_epoch: f.state.leader_epoch,
            epoch: f.part.latest_epoch().unwrap_or(-1),
        })
        .collect()
}

/// Truncates each of `parts` (as the round saw them when it asked) to the
/// leader's answer. Blocking. True if any partition was truncated.
pub(super) fn apply_epoch_answers(parts: &[Followed], answers: Vec<EpochAnswer>) -> bool {
    let mut truncated = false;
    for (f, answer) in parts.iter().zip(answers) {
        if answer.topic_id != f.topic_id || answer.partition != f.part.index {
            continue;
        }
        // The log moved since the question (another round's answer landed
        // first, and fetches followed): the question is not this log's any
        // more, and its answer could cut what the leader already counts as
        // copied. Found by the replication simulation (seed 759).
        if f.part.log_end_offset() != f.fetch_offset {
            tracing::debug!(topic = %f.part.topic, partition = f.part.index, "epoch answer for an older log end dropped");
            continue;
        }
        let (end, complete) = match answer.result {
            Ok(Some((epoch, leader_end))) => match f.part.local_end_offset_for_epoch(epoch) {
                // KIP-279: this log has the leader's epoch (the largest it
                // has at most ours): cut where that epoch ends on the
                // leader or here, whichever comes first.
                Some((local, local_end)) if local == epoch => (leader_end.min(local_end), true),
                // It has not: cut to where its own largest epoch before the
                // leader's ends, and ask again about that one. Cutting at
                // the leader's end instead would keep records of an older
                // epoch at offsets where the leader has its epoch's records.
                Some((_, local_end)) => (local_end.min(f.part.log_end_offset()), false),
                // No epochs here (data from before replication).
                None => (leader_end.min(f.part.log_end_offset()), true),
            },
            // Undefined: the leader knows no epoch at most ours (a new
            // leader records its own before it serves, so only data from
            // before replication gets here): keep what the high
            // watermark covers, as Kafka does.
            Ok(None) => (f.part.high_watermark(), true),
            Err(e) => {
                tracing::debug!(topic = %f.part.topic, partition = f.part.index, error = %e, "epoch query refused");
                continue;
            }
        };
        let cut = if complete {
            f.part.truncate_as_follower(f.state.leader_epoch, end)
        } else {
            f.part.truncate_as_follower_partly(f.state.leader_epoch, end)
        };
        match cut {
            Ok(end) if complete => {
                truncated = true;
                tracing::info!(topic = %f.part.topic, partition = f.part.index, end, "follower truncated");
            }
            Ok(end) => {
                // Progress all the same: the next round asks again at once.
                truncated = true;
                tracing::info!(topic = %f.part.topic, partition = f.part.index, end, "follower truncated to an older epoch's end; asking again");
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
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ferry_broker::metadata::{MetadataImage, MetadataRecord, NodeInfo};
    use ferry_broker::{Acks, BrokerConfig};
    use ferry_records::compression::Compression;
    use ferry_records::records::{NewRecord, build_batch, parse_records, records_payload};

    use super::super::leader::{collect, fetched_partitions};
    use super::super::serve_epoch_end;
    use super::*;

    /// Nodes 1 and 2, topic `t` (one partition on both), then each (leader, ISR).
    fn image(id: Uuid, changes: &[(i32, Vec<i32>)]) -> Arc<MetadataImage> {
        let node = |id| NodeInfo {
            id,
            incarnation: Uuid::nil(),
            listeners: BTreeMap::new(),
            rack: None,
            voter: true,
            fenced: false,
        };
        let mut records = vec![MetadataRecord::RegisterNode(node(1)), MetadataRecord::RegisterNode(node(2))];
        records.push(MetadataRecord::CreateTopic {
            name: "t".into(),
            id,
            internal: false,
            configs: BTreeMap::new(),
            replicas: vec![vec![1, 2]],
        });
        for (leader, isr) in changes {
            records.push(MetadataRecord::PartitionChange {
                topic_id: id,
                partition: 0,
                leader: *leader,
                isr: isr.clone(),
                replicas: None,
                elr: None,
            });
        }
        let mut image = MetadataImage::default();
        image.apply_batch(1, &records).unwrap();
        Arc::new(image)
    }

    fn append(b: &Broker, value: &str) {
        let r = NewRecord { key: None, value: Some(value.as_bytes()), headers: vec![], timestamp: 1 };
        let p = b.topic("t").unwrap().partition(0).unwrap();
        p.append(&build_batch(&[r], Compression::None, -1, -1, -1).unwrap(), Acks::Leader).unwrap();
        p.flush_local().unwrap();
    }

    fn values(b: &Broker) -> Vec<String> {
        let p = b.topic("t").unwrap().partition(0).unwrap();
        let mut out = Vec::new();
        while let Some(slice) = p.read_local(out.len() as u64, 1 << 20).unwrap() {
            let bytes = slice.to_vec().unwrap();
            for (h, batch) in ferry_records::batch::split(&bytes).unwrap() {
                let payload = records_payload(batch, 1 << 20).unwrap();
                for r in parse_records(&payload, h.records_count as usize).unwrap() {
                    out.push(String::from_utf8_lossy(r.value.unwrap()).into_owned());
                }
            }
        }
        out
    }

    /// One fetcher round of `follower` against `leader`, as `round` does
    /// it, through the leader's real answers. True if it fetched.
    fn one_round(follower: &Broker, from: i32, leader: &Broker, leader_id: i32) -> bool {
        match plan(followed_from(follower, leader_id)) {
            Round::Truncate(parts) => {
                let answers = serve_epoch_end(leader, &epoch_queries(&parts));
                assert!(apply_epoch_answers(&parts, answers));
                false
            }
            Round::Fetch(ready) => {
                let request = fetch_request(&ready, &ReplicationConfig::default());
                let (response, _) = collect(from, &request, &fetched_partitions(leader, &request), 1);
                let bytes = super::super::encode_fetch_response_with(&response, true).unwrap();
                let response = super::super::decode_fetch_response_with(&bytes, true).unwrap();
                let (_, unflushed) = apply_fetch_response(&ready, response);
                flush_all(unflushed);
                true
            }
        }
    }

    /// Found by the replication simulation (seed 16): a follower whose log
    /// has an epoch the leader never had (it led epoch 2 and wrote nothing)
    /// over records of epoch 0 that the leader replaced in epoch 1. The
    /// leader answers "epoch 1 ends at 2"; cutting at 2 kept "a", "b" where
    /// the leader has "x", "y" (KIP-279: cut to the end of the follower's
    /// own epoch before 1, and ask again about that one).
    #[test]
    fn a_follower_without_the_leaders_epoch_asks_again_before_it_fetches() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let open = |node_id, dir: &std::path::Path| {
            Broker::open(BrokerConfig { node_id, data_dir: dir.to_path_buf(), ..BrokerConfig::default() }).unwrap()
        };
        let (b1, b2) = (open(1, d1.path()), open(2, d2.path()));
        let id = Uuid::new_v4();
        let mut changes = Vec::new();
        // Epoch 0: node 1 leads and writes what nobody copies.
        b1.apply_image(image(id, &changes));
        b2.apply_image(image(id, &changes));
        for v in ["a", "b", "c"] {
            append(&b1, v);
        }
        // Epoch 1: node 2 leads and writes.
        changes.push((2, vec![2]));
        b2.apply_image(image(id, &changes));
        for v in ["x", "y"] {
            append(&b2, v);
        }
        // Epoch 2: node 1 leads again (only it hears), writes nothing.
        changes.push((1, vec![1]));
        b1.apply_image(image(id, &changes));
        // Epoch 3: node 2 leads, node 1 follows.
        changes.push((2, vec![2]));
        b1.apply_image(image(id, &changes));
        b2.apply_image(image(id, &changes));
        let mut fetched = false;
        for _ in 0..5 {
            fetched |= one_round(&b1, 1, &b2, 2);
        }
        assert!(fetched);
        assert_eq!(values(&b1), values(&b2));
        assert_eq!(values(&b1), ["x", "y"]);
    }
}
