//! The leader's side of replication: answering replica fetches (a long
//! poll over many partitions) and OffsetsForLeaderEpoch questions.

use std::sync::Arc;
use std::time::Duration;

use ferry_broker::{Broker, Partition, ReplicaError};
use ferry_util::time::now_ms_u64;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::message::{
    EpochAnswer, EpochQuery, FetchedInfo, FetchedPartition, Records, ReplicaFetchRequest, ReplicaFetchResponse,
};

/// Longest a fetch may wait at the leader, whatever it asks.
const MAX_WAIT: Duration = Duration::from_secs(5);
/// Most record bytes one response carries, whatever it asks (a frame is
/// at most 64 MiB).
const MAX_BYTES: usize = 32 << 20;

/// Answers a replica fetch from node `from`: at once if any partition has
/// data or an error, else once one does or `max_wait_ms` passes. Each look
/// records the follower's progress, which may move high watermarks.
pub(crate) async fn serve_fetch(broker: Arc<Broker>, from: i32, request: ReplicaFetchRequest) -> ReplicaFetchResponse {
    let wait = Duration::from_millis(request.max_wait_ms).min(MAX_WAIT);
    let deadline = Instant::now() + wait;
    let parts = fetched_partitions(&broker, &request);
    loop {
        // Register first, then look: an append in between still wakes us.
        let waiter = Arc::new(Notify::new());
        for p in parts.iter().flatten() {
            p.register_fetch_waiter(&waiter);
        }
        let (response, ready) = collect(from, &request, &parts, now_ms_u64());
        let left = deadline.saturating_duration_since(Instant::now());
        if ready || left.is_zero() {
            return response;
        }
        if tokio::time::timeout(left, waiter.notified()).await.is_err() {
            return collect(from, &request, &parts, now_ms_u64()).0;
        }
    }
}

/// The local partitions a fetch asks for, in its order (`None`: not here).
pub(super) fn fetched_partitions(broker: &Broker, request: &ReplicaFetchRequest) -> Vec<Option<Arc<Partition>>> {
    request.partitions.iter().map(|p| broker.topic_by_id(p.topic_id).and_then(|t| t.partition(p.partition))).collect()
}

/// One look at every partition at `now` (ms); true when the answer should
/// go now (data or an error somewhere). The simulation (`sim.rs`) answers
/// with one look, never waiting.
pub(super) fn collect(
    from: i32,
    request: &ReplicaFetchRequest,
    parts: &[Option<Arc<Partition>>],
    now: u64,
) -> (ReplicaFetchResponse, bool) {
    let mut budget = request.max_bytes.clamp(1, MAX_BYTES);
    let mut ready = false;
    let partitions = request
        .partitions
        .iter()
        .zip(parts)
        .map(|(want, part)| {
            let mut out = FetchedPartition {
                topic_id: want.topic_id,
                partition: want.partition,
                result: Err(ReplicaError::UnknownPartition),
                records: Records::default(),
            };
            let Some(part) = part else {
                ready = true;
                return out;
            };
            let read =
                part.serve_replica_fetch(from, want.leader_epoch, want.fetch_offset, want.acked_end, budget, now);
            match read {
                Ok(r) => {
                    // A file range: the connection sends it with sendfile.
                    if let Some(slice) = r.slice.filter(|s| budget > 0 && s.len > 0) {
                        budget = budget.saturating_sub(slice.len as usize);
                        out.records = Records::File(slice);
                        ready = true;
                    }
                    out.result = Ok(FetchedInfo {
                        high_watermark: r.high_watermark,
                        log_start: r.log_start,
                        log_end: r.log_end,
                    });
                }
                Err(e) => {
                    out.result = Err(e);
                    ready = true;
                }
            }
            out
        })
        .collect();
    (ReplicaFetchResponse { partitions }, ready)
}

/// Answers OffsetsForLeaderEpoch for each query, in order.
pub(crate) fn serve_epoch_end(broker: &Broker, queries: &[EpochQuery]) -> Vec<EpochAnswer> {
    queries
        .iter()
        .map(|q| {
            let result = match broker.topic_by_id(q.topic_id).and_then(|t| t.partition(q.partition)) {
                Some(p) => p.leader_end_offset_for_epoch(q.current_epoch, q.epoch),
                None => Err(ReplicaError::UnknownPartition),
            };
            EpochAnswer { topic_id: q.topic_id, partition: q.partition, result }
        })
        .collect()
}
