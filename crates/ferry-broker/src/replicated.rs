//! A partition as a replica: its role from the metadata image, the
//! replicated high watermark, acks=all waiters, and what the replica
//! fetchers of `ferry-cluster` call on leaders and followers (issue #15).
//!
//! The high watermark readers see is this one, not the local log's: on a
//! leader it is the smallest acknowledged end over the ISR
//! ([`LeaderState::high_watermark`]); on a follower, the leader's as last
//! fetched (capped by the local log). A node alone in the ISR (a single
//! node) gets its local log's readable end, as before replication.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ferry_log::{AppendInfo, LogError, ReadSlice};
use ferry_records::batch::BatchHeader;
use ferry_util::sync::lock;
use ferry_util::time::now_ms_u64;
use tokio::sync::oneshot;

use crate::error::{BrokerError, Result};
use crate::metadata::PartitionInfo;
use crate::partition::Partition;
use crate::producer::ProducerStates;
use crate::replica::{FollowerState, LeaderState, Role};

type AckSender = oneshot::Sender<ferry_log::Result<()>>;

/// Waits for the high watermark to pass an offset.
enum AckWaiter {
    /// An acks=all append, a transaction marker (awaited).
    Channel(AckSender),
    /// A quorum queue's publisher confirm, called on the thread that moves
    /// the high watermark: no task per publish, and the publishes one move
    /// releases are confirmed as one burst (`ferry_util::batch`).
    Call(Box<dyn FnOnce(bool) + Send>),
}

/// Waiters by the offset after their last record.
type AckWaiters = BTreeMap<u64, Vec<AckWaiter>>;

/// Tells `waiters`, in offset order, that the high watermark passed them
/// (`ok`) or that the leadership ended first. Call without locks held:
/// callbacks run here.
fn release(waiters: AckWaiters, ok: bool) {
    if waiters.is_empty() {
        return;
    }
    ferry_util::batch::scope(|| {
        for waiter in waiters.into_values().flatten() {
            match waiter {
                AckWaiter::Channel(tx) => {
                    let r =
                        if ok { Ok(()) } else { Err(LogError::Unavailable("no longer the partition leader".into())) };
                    let _ = tx.send(r);
                }
                AckWaiter::Call(done) => done(ok),
            }
        }
    });
}

/// The replication state a partition shares with its log's listener.
pub(crate) struct Replication {
    role: Mutex<Option<Role>>,
    /// The replicated high watermark (never moves back, but by truncation).
    hw: AtomicU64,
    /// A follower's last high watermark from its leader.
    leader_hw: AtomicU64,
    /// acks=all appends waiting for the high watermark, by the offset after
    /// their last record.
    acks: Mutex<AckWaiters>,
    /// The high watermark in the data directory's checkpoint file
    /// (`u64::MAX`: unknown, write one). A partition without an entry
    /// starts at its log start, which is what the missing entry already
    /// says: nothing moved, nothing to write.
    checkpointed: AtomicU64,
    /// An older version's per-partition checkpoint file is in the log
    /// directory, to remove once the new file holds this partition.
    legacy_checkpoint: AtomicBool,
}

impl Replication {
    /// Before the image places it, a partition leads nothing and readers
    /// see nothing past `hw` (the checkpointed high watermark, or the log
    /// start), with the `checkpointed` value as read; the first placement
    /// sets the role.
    pub(crate) fn new((hw, checkpointed, legacy): (u64, Option<u64>, bool)) -> Replication {
        Replication {
            role: Mutex::new(None),
            hw: AtomicU64::new(hw),
            leader_hw: AtomicU64::new(hw),
            acks: Mutex::default(),
            checkpointed: AtomicU64::new(checkpointed.unwrap_or(hw)),
            legacy_checkpoint: AtomicBool::new(legacy),
        }
    }

    pub(crate) fn high_watermark(&self) -> u64 {
        self.hw.load(Ordering::Acquire)
    }

    /// Recomputes the high watermark from the role and the local log's
    /// acknowledged end; true if it advanced (readers should be woken).
    pub(crate) fn refresh(&self, local_acked: u64) -> bool {
        let target = match &*lock(&self.role) {
            Some(Role::Leader(s)) => match s.high_watermark(local_acked) {
                Some(hw) => hw,
                None => return false,
            },
            Some(Role::Follower(_)) => self.leader_hw.load(Ordering::Acquire).min(local_acked),
            None => return false,
        };
        self.advance(target)
    }

    fn advance(&self, target: u64) -> bool {
        let released = {
            let mut acks = lock(&self.acks);
            if self.hw.fetch_max(target, Ordering::AcqRel) >= target {
                return false;
            }
            let rest = acks.split_off(&(target + 1));
            std::mem::replace(&mut *acks, rest)
        };
        release(released, true);
        true
    }

    /// Resolves once the high watermark reaches `offset`, or with an error
    /// if this node no longer leads in `leader_epoch` (then the record may
    /// be truncated away and must not be acknowledged). Lock order: role,
    /// then acks, as where leadership is lost.
    pub(crate) fn wait_for(&self, offset: u64, leader_epoch: i32) -> oneshot::Receiver<ferry_log::Result<()>> {
        let (tx, rx) = oneshot::channel();
        self.on_reached(offset, leader_epoch, AckWaiter::Channel(tx));
        rx
    }

    /// Tells `waiter` once the high watermark reaches `offset` (now if it
    /// has), or that this node no longer leads in `leader_epoch`.
    fn on_reached(&self, offset: u64, leader_epoch: i32, waiter: AckWaiter) {
        let now = {
            let role = lock(&self.role);
            if !matches!(&*role, Some(Role::Leader(s)) if s.leader_epoch == leader_epoch) {
                Some(false)
            } else {
                let mut acks = lock(&self.acks);
                if self.high_watermark() >= offset {
                    Some(true)
                } else {
                    acks.entry(offset).or_default().push(waiter);
                    return;
                }
            }
        };
        if let Some(ok) = now {
            release(BTreeMap::from([(offset, vec![waiter])]), ok);
        }
    }

    /// Leadership is gone: nobody waiting will be acknowledged here. The
    /// waiters, to [`release`] once the caller's locks are dropped.
    fn take_acks(&self) -> AckWaiters {
        std::mem::take(&mut *lock(&self.acks))
    }
}

/// Why a replica fetch or epoch query was refused (Kafka's codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum ReplicaError {
    /// This node does not lead the partition (NOT_LEADER_OR_FOLLOWER).
    #[error("not the leader")]
    NotLeader,
    /// The requester's leader epoch is older than the leader's (FENCED_LEADER_EPOCH).
    #[error("fenced leader epoch")]
    FencedLeaderEpoch,
    /// The requester's leader epoch is newer (UNKNOWN_LEADER_EPOCH): this
    /// node has not seen that image yet.
    #[error("unknown leader epoch")]
    UnknownLeaderEpoch,
    /// The partition is not hosted here (UNKNOWN_TOPIC_OR_PARTITION).
    #[error("unknown partition")]
    UnknownPartition,
    /// The fetch offset is past the leader's log end (OFFSET_OUT_OF_RANGE).
    #[error("offset out of range")]
    OffsetOutOfRange,
    /// The fetch offset is below the leader's log start, given here
    /// (OFFSET_OUT_OF_RANGE in Kafka, where the follower then asks for the
    /// log start): the follower restarts its log there.
    #[error("offset below the log start {0}")]
    BelowLogStart(u64),
    /// The leader's log failed (KAFKA_STORAGE_ERROR).
    #[error("storage error")]
    Storage,
}

/// What a leader answers one partition of a replica fetch.
#[derive(Debug)]
pub struct ReplicaRead {
    /// Whole batches from the fetch offset (none: nothing new).
    pub slice: Option<ReadSlice>,
    /// The leader's high watermark.
    pub high_watermark: u64,
    /// The leader's log start offset.
    pub log_start: u64,
    /// The leader's log end offset.
    pub log_end: u64,
}

impl Partition {
    /// Takes this partition's placement from a new image: leads it (a new
    /// leader epoch starts a fresh view of the followers), follows it (a
    /// new leader or epoch means truncating before fetching again), or
    /// keeps its role with the new ISR.
    pub fn apply_placement(&self, node: i32, info: &PartitionInfo, now_ms: u64) {
        let min_insync = self.settings.read().unwrap_or_else(std::sync::PoisonError::into_inner).min_insync_replicas;
        let mut role = lock(&self.repl.role);
        let lost_leadership = matches!(&*role, Some(Role::Leader(_))) && info.leader != node;
        match &mut *role {
            Some(Role::Leader(s)) if info.leader == node && s.leader_epoch == info.leader_epoch => {
                s.update(info, now_ms);
            }
            _ if info.leader == node => {
                tracing::info!(topic = %self.topic, partition = self.index, epoch = info.leader_epoch, "leading");
                // The new epoch starts at the log end even before an append,
                // so followers' OffsetsForLeaderEpoch get a defined answer.
                if let Err(e) = self.log().assign_epoch(info.leader_epoch) {
                    tracing::error!(topic = %self.topic, partition = self.index, error = %e, "cannot record leader epoch");
                }
                *role = Some(Role::Leader(LeaderState::new(node, info, self.log().next_offset(), now_ms)));
            }
            Some(Role::Follower(f)) if f.leader == info.leader && f.leader_epoch == info.leader_epoch => {}
            _ => {
                tracing::info!(topic = %self.topic, partition = self.index, leader = info.leader, epoch = info.leader_epoch, "following");
                *role = Some(Role::Follower(FollowerState {
                    leader: info.leader,
                    leader_epoch: info.leader_epoch,
                    truncated: false,
                }));
            }
        }
        if let Some(Role::Leader(s)) = &mut *role {
            s.min_insync_replicas = min_insync;
        }
        // Under the role lock, so no acks=all append slips in after; told
        // after it, as their callbacks may take it.
        let failed = if lost_leadership { self.repl.take_acks() } else { AckWaiters::new() };
        drop(role);
        release(failed, false);
        if self.repl.refresh(self.log().high_watermark()) {
            self.wake_readers();
        }
    }

    /// The leader's view, if this node leads the partition.
    pub fn leader_state(&self) -> Option<LeaderState> {
        match &*lock(&self.repl.role) {
            Some(Role::Leader(s)) => Some(s.clone()),
            _ => None,
        }
    }

    /// The follower's view, if this node follows the partition.
    pub fn follower_state(&self) -> Option<FollowerState> {
        match &*lock(&self.repl.role) {
            Some(Role::Follower(f)) => Some(*f),
            _ => None,
        }
    }

    /// Calls `done(true)` once the high watermark passes `end` in this
    /// leadership, `done(false)` if the leadership ends first (a quorum
    /// queue's publisher confirm).
    /// `done` runs on the thread that moves the high watermark (a replica
    /// fetch's, or the flusher's), or on the caller's if it is known now:
    /// keep it short, and hold no lock `done` takes while calling this.
    pub(crate) fn on_acknowledged(&self, end: u64, done: impl FnOnce(bool) + Send + 'static) {
        match self.leading() {
            Ok((epoch, _)) => self.repl.on_reached(end, epoch, AckWaiter::Call(Box::new(done))),
            Err(_) => done(false),
        }
    }

    /// The leader epoch appends are stamped with, and the ISR size, if
    /// this node leads the partition.
    pub(crate) fn leading(&self) -> Result<(i32, usize)> {
        match &*lock(&self.repl.role) {
            Some(Role::Leader(s)) => Ok((s.leader_epoch, s.isr.len())),
            _ => Err(BrokerError::NotLeaderOrFollower),
        }
    }

    /// Leader side of a replica fetch from `follower` at `fetch_offset` (its
    /// log end) in `leader_epoch`, which has `acked_end` acknowledged:
    /// records its progress (which may move the high watermark) and reads
    /// from the local log, past the high watermark (followers need it).
    pub fn serve_replica_fetch(
        &self,
        follower: i32,
        leader_epoch: i32,
        fetch_offset: u64,
        acked_end: u64,
        max_bytes: usize,
        now_ms: u64,
    ) -> std::result::Result<ReplicaRead, ReplicaError> {
        let log = self.log();
        {
            let mut role = lock(&self.repl.role);
            let Some(Role::Leader(s)) = &mut *role else { return Err(ReplicaError::NotLeader) };
            check_epoch(leader_epoch, s.leader_epoch)?;
            if fetch_offset > log.next_offset() {
                return Err(ReplicaError::OffsetOutOfRange);
            }
            if fetch_offset < log.log_start_offset() {
                return Err(ReplicaError::BelowLogStart(log.log_start_offset()));
            }
            if !s.record_fetch(follower, fetch_offset, acked_end, log.next_offset(), now_ms) {
                return Err(ReplicaError::NotLeader);
            }
        }
        if self.repl.refresh(log.high_watermark()) {
            self.wake_readers();
        }
        // Up to the log end, not the durable end: the follower copies and
        // fsyncs while this node's own fsync runs. The high watermark still
        // waits for both (the leader counts its own durable end).
        let slice = match log.read_written(fetch_offset, max_bytes) {
            Ok(s) => s,
            // DeleteRecords or a truncation since the check above.
            Err(LogError::OffsetOutOfRange { start, .. }) if fetch_offset < start => {
                return Err(ReplicaError::BelowLogStart(start));
            }
            Err(LogError::OffsetOutOfRange { .. }) => return Err(ReplicaError::OffsetOutOfRange),
            Err(_) => return Err(ReplicaError::Storage),
        };
        Ok(ReplicaRead {
            slice,
            high_watermark: self.high_watermark(),
            log_start: log.log_start_offset(),
            log_end: log.next_offset(),
        })
    }

    /// Leader side of OffsetsForLeaderEpoch: where `epoch` ends in this
    /// log, for a follower in `current_epoch` (must be the leader's).
    pub fn leader_end_offset_for_epoch(
        &self,
        current_epoch: i32,
        epoch: i32,
    ) -> std::result::Result<Option<(i32, u64)>, ReplicaError> {
        match &*lock(&self.repl.role) {
            Some(Role::Leader(s)) => check_epoch(current_epoch, s.leader_epoch)?,
            _ => return Err(ReplicaError::NotLeader),
        }
        Ok(self.log().end_offset_for_epoch(epoch))
    }

    /// This log's newest leader epoch and where it ends, for a follower's
    /// OffsetsForLeaderEpoch question.
    pub fn local_end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, u64)> {
        self.log().end_offset_for_epoch(epoch)
    }

    /// Whole batches of the local log from `offset`, past the high
    /// watermark (as a replica fetch reads): for checks that compare
    /// replicas' logs, such as the replication simulation's.
    pub fn read_local(&self, offset: u64, max_bytes: usize) -> Result<Option<ReadSlice>> {
        Ok(self.log().read_written(offset, max_bytes)?)
    }

    /// The newest leader epoch in the local log.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.log().latest_epoch()
    }

    /// Follower side: truncates the local log to `offset` (the end of its
    /// last epoch on the leader) before fetching in `leader_epoch`, and
    /// rebuilds producer state from what remains. Returns the new log end.
    /// Refused (NotLeaderOrFollower) if the partition no longer follows in
    /// `leader_epoch`: an answer that arrives after this node became leader
    /// or moved on to a newer epoch must not cut its log.
    pub fn truncate_as_follower(&self, leader_epoch: i32, offset: u64) -> Result<u64> {
        self.truncate_follower(leader_epoch, offset, true)
    }

    /// KIP-279's intermediate step: the leader's answer named an epoch this
    /// log does not have, so the log is cut to where its largest epoch
    /// before that one ends, and the leader is asked again (about that
    /// epoch) before any fetch. Otherwise as [`Partition::truncate_as_follower`].
    pub fn truncate_as_follower_partly(&self, leader_epoch: i32, offset: u64) -> Result<u64> {
        self.truncate_follower(leader_epoch, offset, false)
    }

    fn truncate_follower(&self, leader_epoch: i32, offset: u64, complete: bool) -> Result<u64> {
        // Lock order: producers, then role (as in `write_marker`); the role
        // is held across the truncation so no placement slips in between.
        let mut states = lock(&self.producers);
        let mut role = lock(&self.repl.role);
        let Some(Role::Follower(f)) = &mut *role else { return Err(BrokerError::NotLeaderOrFollower) };
        if f.leader_epoch != leader_epoch {
            return Err(BrokerError::NotLeaderOrFollower);
        }
        let end = self.log().truncate_to(offset)?;
        *states = ProducerStates::recover(self.log().dir(), self.log(), self.producer_expiration_ms)?;
        self.track_unstable(&states);
        self.repl.hw.fetch_min(end, Ordering::AcqRel);
        self.repl.leader_hw.fetch_min(end, Ordering::AcqRel);
        f.truncated = complete;
        Ok(end)
    }

    /// Follower side: appends batches fetched from the leader unchanged,
    /// keeping producer state (so a new leader deduplicates retries) and
    /// aborted transactions, then takes the leader's high watermark.
    /// `leader_epoch` is the epoch the fetch was sent in: refused
    /// (NotLeaderOrFollower) unless the partition still follows, truncated,
    /// in that epoch, so a late answer from a deposed leader (its stale
    /// tail) never lands in a newer epoch's log.
    pub fn append_replicated(&self, leader_epoch: i32, batches: &[u8], leader_hw: u64) -> Result<Option<AppendInfo>> {
        // Lock order: producers, then role; the role is held across the
        // append so a new placement waits for it.
        let mut states = lock(&self.producers);
        let role = lock(&self.repl.role);
        if !matches!(&*role, Some(Role::Follower(f)) if f.leader_epoch == leader_epoch && f.truncated) {
            return Err(BrokerError::NotLeaderOrFollower);
        }
        let info = if batches.is_empty() {
            None
        } else {
            let info = self.log().append_replicated(batches)?;
            let now = now_ms_u64();
            let mut rest = batches;
            while let Ok(h) = BatchHeader::parse(rest) {
                let one = rest.get(..h.size).unwrap_or_default();
                rest = rest.get(h.size..).unwrap_or_default();
                if h.producer_id < 0 {
                    continue;
                }
                if !h.is_control() {
                    states.record(&h, h.base_offset, now);
                } else if let Some((commit, coordinator_epoch)) =
                    ferry_records::records::end_txn_marker(one).map_err(LogError::from)?
                    && let Some(aborted) = states.record_marker(&h, h.base_offset, commit, coordinator_epoch, now)
                {
                    self.log().add_aborted_txn(aborted)?;
                }
            }
            self.track_unstable(&states);
            Some(info)
        };
        self.repl.leader_hw.fetch_max(leader_hw, Ordering::AcqRel);
        drop(role);
        drop(states);
        if self.repl.refresh(self.log().high_watermark()) {
            self.wake_readers();
        }
        Ok(info)
    }

    /// Follower side: the leader's log starts at `log_start`, past this
    /// log's end (retention or DeleteRecords removed what it would fetch
    /// next): empties the log and restarts it there (Kafka's
    /// truncateFullyAndStartAt), with no producer state. Nothing is lost
    /// that the leader still has.
    pub fn restart_as_follower(&self, leader_epoch: i32, log_start: u64) -> Result<()> {
        if !matches!(self.follower_state(), Some(f) if f.leader_epoch == leader_epoch) {
            return Err(BrokerError::NotLeaderOrFollower);
        }
        let mut states = lock(&self.producers);
        self.log().restart_at(log_start)?;
        *states = ProducerStates::reset(self.log().dir())?;
        self.track_unstable(&states);
        drop(states);
        // The offsets below the new start are gone: readers begin there.
        self.repl.hw.store(log_start, Ordering::Release);
        self.repl.leader_hw.store(log_start, Ordering::Release);
        self.wake_readers();
        Ok(())
    }

    /// The high watermark to checkpoint now, and whether it moved since the
    /// last checkpoint (see `hw_checkpoint.rs`). It counts as written from
    /// here on: the writer calls `checkpoint_written(false)` if it failed.
    pub(crate) fn take_high_watermark_checkpoint(&self) -> (u64, bool) {
        let hw = self.high_watermark();
        (hw, self.repl.checkpointed.swap(hw, Ordering::AcqRel) != hw)
    }

    /// The data directory's checkpoint holding this partition was written
    /// (`ok`: the older per-partition file can go) or failed (write again).
    pub(crate) fn checkpoint_written(&self, ok: bool) {
        if !ok {
            self.repl.checkpointed.store(u64::MAX, Ordering::Release);
        } else if self.repl.legacy_checkpoint.swap(false, Ordering::AcqRel) {
            let path = self.log().dir().join(crate::hw_checkpoint::LEGACY_FILE_NAME);
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "removing an old high-watermark checkpoint failed");
            }
        }
    }

    /// Follower side: truncate again before the next fetch in
    /// `leader_epoch` (the leader refused our offset, or our append).
    pub fn request_truncation(&self, leader_epoch: i32) {
        if let Some(Role::Follower(f)) = &mut *lock(&self.repl.role)
            && f.leader_epoch == leader_epoch
        {
            f.truncated = false;
        }
    }

    /// Blocks until the local log is on disk to its end (a follower under
    /// the `always` flush policy, before it reports its acknowledged end).
    pub fn flush_local(&self) -> Result<()> {
        Ok(self.log().flush_to(self.log().next_offset())?)
    }

    /// Calls `done` once the local log is on disk to its current end (at
    /// once if it is), on a flusher thread: a follower asks this for every
    /// partition of a fetch response at once, so the fsyncs overlap.
    pub fn on_local_flushed(&self, done: impl FnOnce(Result<()>) + Send + 'static) {
        self.log().on_durable(self.log().next_offset(), move |r| done(r.map_err(BrokerError::from)));
    }

    /// Offsets below this are acknowledged locally: on disk under the
    /// topic's flush policy (what a follower reports to its leader).
    pub fn local_acked_end(&self) -> u64 {
        self.log().high_watermark()
    }

    /// The local log end offset.
    pub fn log_end_offset(&self) -> u64 {
        self.log().next_offset()
    }

    /// Leader side: the ISR to ask the controller for, if the followers'
    /// progress calls for a change now (see [`LeaderState::isr_change`]);
    /// marks it in flight. Only `eligible` followers may join. Returns
    /// (leader epoch, partition epoch, ISR).
    pub fn isr_change_due(
        &self,
        now_ms: u64,
        lag_max_ms: u64,
        retry_ms: u64,
        eligible: &dyn Fn(i32) -> bool,
    ) -> Option<(i32, i32, Vec<i32>)> {
        let mut role = lock(&self.repl.role);
        let Some(Role::Leader(s)) = &mut *role else { return None };
        let hw = self.repl.high_watermark();
        let isr = s.next_isr_change(now_ms, lag_max_ms, hw, retry_ms, eligible)?;
        Some((s.leader_epoch, s.partition_epoch, isr))
    }
}

fn check_epoch(requested: i32, ours: i32) -> std::result::Result<(), ReplicaError> {
    match requested.cmp(&ours) {
        std::cmp::Ordering::Less => Err(ReplicaError::FencedLeaderEpoch),
        std::cmp::Ordering::Greater => Err(ReplicaError::UnknownLeaderEpoch),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    use ferry_records::compression::Compression;
    use ferry_records::records::{NewRecord, build_batch, parse_records, records_payload};
    use uuid::Uuid;

    use super::*;
    use crate::broker::{Broker, BrokerConfig};
    use crate::metadata::{MetadataImage, MetadataRecord, NodeInfo};
    use crate::partition::Acks;

    /// Nodes 1 and 2, topic `t` (one partition on both, led by 1), then `changes`.
    fn image(id: Uuid, configs: &[(&str, &str)], changes: &[(i32, Vec<i32>)]) -> Arc<MetadataImage> {
        image_of(id, &[1, 2], configs, changes)
    }

    /// Topic `t` with one partition on `replicas` (each a registered node),
    /// then the given (leader, ISR) changes.
    fn image_of(
        id: Uuid,
        replicas: &[i32],
        configs: &[(&str, &str)],
        changes: &[(i32, Vec<i32>)],
    ) -> Arc<MetadataImage> {
        let node = |id| NodeInfo {
            id,
            incarnation: Uuid::nil(),
            listeners: BTreeMap::new(),
            rack: None,
            voter: true,
            fenced: false,
        };
        let mut records: Vec<MetadataRecord> =
            replicas.iter().map(|r| MetadataRecord::RegisterNode(node(*r))).collect();
        records.push(MetadataRecord::CreateTopic {
            name: "t".into(),
            id,
            internal: false,
            configs: configs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect(),
            replicas: vec![replicas.to_vec()],
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

    fn broker(dir: &std::path::Path, node_id: i32) -> Arc<Broker> {
        Broker::open(BrokerConfig { node_id, data_dir: dir.to_path_buf(), ..BrokerConfig::default() }).unwrap()
    }

    fn one(value: &str) -> Vec<u8> {
        let r = NewRecord { key: None, value: Some(value.as_bytes()), headers: vec![], timestamp: 1 };
        build_batch(&[r], Compression::None, -1, -1, -1).unwrap()
    }

    fn values(p: &Partition) -> Vec<String> {
        let mut out = Vec::new();
        let mut offset = p.log_start_offset();
        while let Some(slice) = p.read(offset, 1 << 20).unwrap() {
            let bytes = slice.to_vec().unwrap();
            for (h, b) in ferry_records::batch::split(&bytes).unwrap() {
                for r in parse_records(&records_payload(b, 1 << 20).unwrap(), h.records_count as usize).unwrap() {
                    out.push(String::from_utf8_lossy(r.value.unwrap()).into_owned());
                }
            }
            offset = slice.end_offset;
        }
        out
    }

    /// One fetch round of `follower` (node `node`) from `leader`, as the
    /// cluster's fetcher does it: append, flush, take the high watermark.
    fn fetch(leader: &Partition, follower: &Partition, node: i32) -> std::result::Result<(), ReplicaError> {
        let epoch = follower.follower_state().unwrap().leader_epoch;
        let r = leader.serve_replica_fetch(
            node,
            epoch,
            follower.log_end_offset(),
            follower.local_acked_end(),
            1 << 20,
            now_ms_u64(),
        );
        let r = match r {
            Err(ReplicaError::BelowLogStart(start)) => {
                follower.restart_as_follower(epoch, start).unwrap();
                return Ok(());
            }
            r => r?,
        };
        let bytes = r.slice.map(|s| s.to_vec().unwrap()).unwrap_or_default();
        follower.append_replicated(epoch, &bytes, r.high_watermark).unwrap();
        follower.flush_local().unwrap();
        Ok(())
    }

    /// What the fetcher does before fetching in a new leader epoch.
    fn truncate(leader: &Partition, follower: &Partition) {
        let state = follower.follower_state().unwrap();
        let asked = follower.latest_epoch().unwrap_or(-1);
        let end = match leader.leader_end_offset_for_epoch(state.leader_epoch, asked).unwrap() {
            Some((epoch, end)) => end.min(follower.local_end_offset_for_epoch(epoch).map_or(u64::MAX, |e| e.1)),
            None => follower.high_watermark(),
        };
        follower.truncate_as_follower(state.leader_epoch, end).unwrap();
        assert!(follower.follower_state().unwrap().truncated);
    }

    #[tokio::test]
    async fn acks_all_waits_for_the_isr_and_readers_stop_at_the_high_watermark() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let id = Uuid::new_v4();
        let (b1, b2) = (broker(d1.path(), 1), broker(d2.path(), 2));
        let img = image(id, &[("min.insync.replicas", "2")], &[]);
        b1.apply_image(img.clone());
        b2.apply_image(img);
        let leader = b1.topic("t").unwrap().partition(0).unwrap();
        let follower = b2.topic("t").unwrap().partition(0).unwrap();
        assert!(leader.leader_state().is_some() && follower.follower_state().is_some());
        assert!(matches!(follower.append(&one("x"), Acks::Leader), Err(BrokerError::NotLeaderOrFollower)));

        let appended = leader.append(&one("a"), Acks::All).unwrap();
        let mut ack = Box::pin(appended.acknowledged());
        assert!(tokio::time::timeout(Duration::ZERO, &mut ack).await.is_err(), "not before the follower has it");
        leader.log().flush_to(1).unwrap();
        assert_eq!((leader.high_watermark(), values(&leader)), (0, Vec::<String>::new()), "readers wait too");

        truncate(&leader, &follower);
        fetch(&leader, &follower, 2).unwrap(); // copies the batch
        fetch(&leader, &follower, 2).unwrap(); // reports it acknowledged
        let info = tokio::time::timeout(Duration::from_secs(10), ack).await.unwrap().unwrap();
        assert_eq!(info.base_offset, 0);
        assert_eq!(leader.high_watermark(), 1);
        assert_eq!(values(&leader), ["a"]);
        fetch(&leader, &follower, 2).unwrap();
        assert_eq!((follower.high_watermark(), values(&follower)), (1, vec!["a".to_string()]));
        assert_eq!(follower.latest_epoch(), Some(0));

        // Refusals: epochs that disagree, offsets outside the log, strangers.
        let now = now_ms_u64();
        assert_eq!(leader.serve_replica_fetch(2, -1, 1, 1, 100, now).unwrap_err(), ReplicaError::FencedLeaderEpoch);
        assert_eq!(leader.serve_replica_fetch(2, 3, 1, 1, 100, now).unwrap_err(), ReplicaError::UnknownLeaderEpoch);
        assert_eq!(leader.serve_replica_fetch(2, 0, 9, 1, 100, now).unwrap_err(), ReplicaError::OffsetOutOfRange);
        assert_eq!(leader.serve_replica_fetch(7, 0, 1, 1, 100, now).unwrap_err(), ReplicaError::NotLeader);
        assert_eq!(follower.serve_replica_fetch(1, 0, 1, 1, 100, now).unwrap_err(), ReplicaError::NotLeader);

        // Below min.insync.replicas, acks=all is refused; acks=1 goes on,
        // but the high watermark stands still (KIP-966), so readers do not
        // see it: the follower that left holds everything they can read.
        b1.apply_image(image(id, &[("min.insync.replicas", "2")], &[(1, vec![1])]));
        assert!(matches!(leader.append(&one("b"), Acks::All), Err(BrokerError::NotEnoughReplicas { isr: 1, min: 2 })));
        leader.append(&one("b"), Acks::Leader).unwrap();
        leader.log().flush_to(2).unwrap();
        assert_eq!((leader.high_watermark(), values(&leader)), (1, vec!["a".to_string()]));
        // With min.insync.replicas 1, the leader alone moves it.
        b1.apply_image(image(id, &[("min.insync.replicas", "1")], &[(1, vec![1])]));
        assert_eq!(leader.high_watermark(), 2, "the ISR is the leader alone now");
    }

    #[tokio::test]
    async fn a_deposed_leader_truncates_by_leader_epoch_not_by_high_watermark() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let id = Uuid::new_v4();
        let (b1, b2) = (broker(d1.path(), 1), broker(d2.path(), 2));
        b1.apply_image(image(id, &[], &[]));
        b2.apply_image(image(id, &[], &[]));
        let p1 = b1.topic("t").unwrap().partition(0).unwrap();
        let p2 = b2.topic("t").unwrap().partition(0).unwrap();
        for v in ["a", "b"] {
            p1.append(&one(v), Acks::Leader).unwrap();
        }
        p1.log().flush_to(2).unwrap();
        truncate(&p1, &p2);
        fetch(&p1, &p2, 2).unwrap();
        fetch(&p1, &p2, 2).unwrap();
        // Written by node 1 but never replicated: not acknowledged to acks=all.
        for v in ["c", "d"] {
            p1.append(&one(v), Acks::Leader).unwrap();
        }
        // Node 1 is fenced; node 2 leads in epoch 1 and writes.
        let fenced = image(id, &[], &[(2, vec![2])]);
        b2.apply_image(fenced.clone());
        assert_eq!(p2.leader_state().unwrap().leader_epoch, 1);
        p2.append(&one("e"), Acks::Leader).unwrap();
        p2.log().flush_to(3).unwrap();
        // Node 1 returns as a follower of epoch 1: it cuts "c" and "d" (the
        // end of epoch 0 on the new leader), then copies "e".
        b1.apply_image(fenced);
        assert_eq!(p1.follower_state().unwrap().leader_epoch, 1);
        truncate(&p2, &p1);
        assert_eq!(p1.log_end_offset(), 2);
        fetch(&p2, &p1, 1).unwrap();
        fetch(&p2, &p1, 1).unwrap();
        assert_eq!(p1.log_end_offset(), 3);
        assert_eq!(p1.log().epoch_entries(), p2.log().epoch_entries());
        let expected = ["a", "b", "e"].map(String::from).to_vec();
        assert_eq!(values(&p2), expected);
        fetch(&p2, &p1, 1).unwrap();
        assert_eq!(values(&p1), expected, "the follower reads to the leader's high watermark");
    }

    #[tokio::test]
    async fn a_late_answer_from_a_deposed_leader_never_reaches_a_newer_epochs_log() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let id = Uuid::new_v4();
        let (b1, b2) = (broker(d1.path(), 1), broker(d2.path(), 2));
        b1.apply_image(image(id, &[], &[]));
        b2.apply_image(image(id, &[], &[]));
        let p1 = b1.topic("t").unwrap().partition(0).unwrap();
        let p2 = b2.topic("t").unwrap().partition(0).unwrap();
        p1.append(&one("a"), Acks::Leader).unwrap();
        p1.log().flush_to(1).unwrap();
        truncate(&p1, &p2);
        fetch(&p1, &p2, 2).unwrap();
        // Node 1's stale tail, read for a fetch in epoch 0 but answered late.
        p1.append(&one("stale"), Acks::Leader).unwrap();
        let late = p1.serve_replica_fetch(2, 0, 1, 1, 1 << 20, now_ms_u64()).unwrap();
        let late = late.slice.expect("the stale batch").to_vec().unwrap();
        // Node 2 leads in epoch 1 before the answer arrives: it is refused,
        // and so is a late truncation answer of epoch 0.
        b2.apply_image(image(id, &[], &[(2, vec![2])]));
        assert!(matches!(p2.append_replicated(0, &late, 2), Err(BrokerError::NotLeaderOrFollower)));
        assert!(matches!(p2.truncate_as_follower(0, 0), Err(BrokerError::NotLeaderOrFollower)));
        assert_eq!(values(&p2), ["a"]);
        assert_eq!(p2.log_end_offset(), 1);
        // Likewise on a follower that moved on to a newer epoch (of node 1
        // again): only answers to fetches in its own epoch, once truncated.
        let d3 = tempfile::tempdir().unwrap();
        let b3 = broker(d3.path(), 2);
        b3.apply_image(image(id, &[], &[]));
        let p3 = b3.topic("t").unwrap().partition(0).unwrap();
        truncate(&p1, &p3);
        b3.apply_image(image(id, &[], &[(2, vec![1, 2]), (1, vec![1, 2])]));
        assert_eq!(p3.follower_state().unwrap().leader_epoch, 2);
        assert!(matches!(p3.append_replicated(0, &late, 2), Err(BrokerError::NotLeaderOrFollower)));
        assert!(
            matches!(p3.append_replicated(2, &late, 2), Err(BrokerError::NotLeaderOrFollower)),
            "not truncated in epoch 2 yet"
        );
        assert_eq!(p3.log_end_offset(), 0);
    }

    #[tokio::test]
    async fn followers_copy_past_the_leaders_durable_end_and_acks_still_wait_for_it() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let id = Uuid::new_v4();
        let (b1, b2) = (broker(d1.path(), 1), broker(d2.path(), 2));
        let img = image(id, &[("min.insync.replicas", "2")], &[]);
        b1.apply_image(img.clone());
        b2.apply_image(img);
        let leader = b1.topic("t").unwrap().partition(0).unwrap();
        let follower = b2.topic("t").unwrap().partition(0).unwrap();
        truncate(&leader, &follower);
        let mut acks = Vec::new();
        for i in 0..20u64 {
            let appended = leader.append(&one(&format!("v{i}")), Acks::All).unwrap();
            acks.push(appended.acknowledged());
            // The batch is there for the follower at once, fsynced by the
            // leader or not (the flush policy is `always`).
            let r = leader.serve_replica_fetch(2, 0, i, follower.local_acked_end(), 1 << 20, now_ms_u64()).unwrap();
            let bytes = r.slice.expect("the batch just appended").to_vec().unwrap();
            assert_eq!(BatchHeader::parse(&bytes).unwrap().base_offset, i);
            follower.append_replicated(0, &bytes, r.high_watermark).unwrap();
            follower.flush_local().unwrap();
            // Never past what is on the leader's disk, whatever the follower has.
            assert!(leader.high_watermark() <= leader.log().durable_offset());
        }
        fetch(&leader, &follower, 2).unwrap();
        for ack in acks {
            tokio::time::timeout(Duration::from_secs(10), ack).await.unwrap().unwrap();
        }
        assert_eq!(leader.high_watermark(), 20);
        assert!(leader.log().durable_offset() >= 20 && follower.local_acked_end() >= 20);
    }

    #[tokio::test]
    async fn a_follower_behind_the_leaders_log_start_restarts_its_log_there() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let id = Uuid::new_v4();
        let (b1, b2) = (broker(d1.path(), 1), broker(d2.path(), 2));
        let img = image(id, &[], &[]);
        b1.apply_image(img.clone());
        b2.apply_image(img.clone());
        let leader = b1.topic("t").unwrap().partition(0).unwrap();
        let follower = b2.topic("t").unwrap().partition(0).unwrap();
        truncate(&leader, &follower);
        for v in ["a", "b"] {
            leader.append(&one(v), Acks::Leader).unwrap();
        }
        leader.log().flush_to(2).unwrap();
        fetch(&leader, &follower, 2).unwrap();
        assert_eq!(follower.log_end_offset(), 2);
        // The follower drops out of the ISR (it stopped, say) while the
        // leader writes more and DeleteRecords removes the follower's next
        // offsets.
        b1.apply_image(image(id, &[], &[(1, vec![1])]));
        b2.apply_image(image(id, &[], &[(1, vec![1])]));
        for v in ["c", "d", "e", "f"] {
            leader.append(&one(v), Acks::Leader).unwrap();
        }
        leader.log().flush_to(6).unwrap();
        assert_eq!(leader.delete_records_before(4).unwrap(), 4);
        let epoch = follower.follower_state().unwrap().leader_epoch;
        let r = leader.serve_replica_fetch(2, epoch, 2, 2, 1 << 20, now_ms_u64());
        assert_eq!(r.unwrap_err(), ReplicaError::BelowLogStart(4));
        // The fetcher's answer: restart at 4, then copy from there.
        fetch(&leader, &follower, 2).unwrap();
        assert_eq!((follower.log_start_offset(), follower.log_end_offset()), (4, 4));
        fetch(&leader, &follower, 2).unwrap();
        fetch(&leader, &follower, 2).unwrap();
        assert_eq!(follower.log_end_offset(), 6);
        assert_eq!(values(&follower), ["e", "f"]);
        assert_eq!(follower.log().epoch_entries(), leader.log().epoch_entries());
        // A restart of a node that does not follow that leader epoch is refused.
        assert!(follower.restart_as_follower(epoch + 1, 9).is_err());
        assert!(leader.restart_as_follower(epoch, 9).is_err());
    }

    #[tokio::test]
    async fn a_partition_at_its_log_start_writes_no_high_watermark_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        let b = broker(d.path(), 1);
        b.apply_image(image(Uuid::new_v4(), &[], &[]));
        let p = b.topic("t").unwrap().partition(0).unwrap();
        assert_eq!(p.high_watermark(), 0);
        // A missing entry already means "the log start": nothing to fsync.
        b.checkpoint_high_watermarks().unwrap();
        assert!(!d.path().join(crate::hw_checkpoint::FILE_NAME).exists());
    }

    #[tokio::test]
    async fn a_restarted_follower_starts_at_its_checkpointed_high_watermark() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let id = Uuid::new_v4();
        let img = image(id, &[], &[]);
        let b1 = broker(d1.path(), 1);
        b1.apply_image(img.clone());
        let leader = b1.topic("t").unwrap().partition(0).unwrap();
        {
            let b2 = broker(d2.path(), 2);
            b2.apply_image(img.clone());
            let follower = b2.topic("t").unwrap().partition(0).unwrap();
            truncate(&leader, &follower);
            for v in ["a", "b", "c"] {
                leader.append(&one(v), Acks::Leader).unwrap();
            }
            leader.log().flush_to(3).unwrap();
            for _ in 0..3 {
                fetch(&leader, &follower, 2).unwrap();
            }
            assert_eq!((leader.high_watermark(), follower.high_watermark()), (3, 3));
            b2.shutdown(); // writes the checkpoint
        }
        // Back as a follower, before any fetch: readers see what they saw.
        let b2 = broker(d2.path(), 2);
        b2.apply_image(img);
        let follower = b2.topic("t").unwrap().partition(0).unwrap();
        assert_eq!(follower.high_watermark(), 3);
        assert_eq!(values(&follower), ["a", "b", "c"]);
        // Only moves are written; a damaged file counts as none.
        b2.checkpoint_high_watermarks().unwrap();
        let path = d2.path().join(crate::hw_checkpoint::FILE_NAME);
        std::fs::write(&path, "garbage").unwrap();
        b2.checkpoint_high_watermarks().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "garbage", "unchanged: not rewritten");
        leader.append(&one("d"), Acks::Leader).unwrap();
        leader.log().flush_to(4).unwrap();
        // As the fetcher does: a new follower state truncates first.
        truncate(&leader, &follower);
        fetch(&leader, &follower, 2).unwrap();
        fetch(&leader, &follower, 2).unwrap();
        fetch(&leader, &follower, 2).unwrap();
        assert_eq!(follower.high_watermark(), 4);
        b2.checkpoint_high_watermarks().unwrap();
        let read = crate::hw_checkpoint::read(d2.path()).unwrap();
        assert_eq!(read.get(&("t".to_string(), 0)), Some(&4));
        drop(b2);
        std::fs::write(&path, "garbage").unwrap();
        let b2 = broker(d2.path(), 2);
        b2.apply_image(image(id, &[], &[]));
        assert_eq!(b2.topic("t").unwrap().partition(0).unwrap().high_watermark(), 0, "damaged: the log start");
    }

    #[tokio::test]
    async fn an_older_per_partition_checkpoint_is_read_then_removed() {
        let d = tempfile::tempdir().unwrap();
        let id = Uuid::new_v4();
        let p_dir;
        {
            let b = broker(d.path(), 1);
            b.apply_image(image_of(id, &[1], &[], &[]));
            let p = b.topic("t").unwrap().partition(0).unwrap();
            for v in ["a", "b", "c"] {
                p.append(&one(v), Acks::Leader).unwrap();
            }
            p.log().flush_to(3).unwrap();
            p_dir = p.log().dir().to_path_buf();
            b.shutdown();
        }
        // As an older version left it: no data-directory file, one per partition.
        std::fs::remove_file(d.path().join(crate::hw_checkpoint::FILE_NAME)).unwrap();
        let legacy = p_dir.join(crate::hw_checkpoint::LEGACY_FILE_NAME);
        std::fs::write(&legacy, "0\n3\n").unwrap();
        let b = broker(d.path(), 1);
        b.apply_image(image_of(id, &[1], &[], &[]));
        let p = b.topic("t").unwrap().partition(0).unwrap();
        let before_placement = crate::hw_checkpoint::initial(p.log(), None);
        assert_eq!(before_placement, (3, Some(3), true));
        assert_eq!(p.high_watermark(), 3);
        // Unmoved: nothing written, the old file stays the checkpoint.
        b.checkpoint_high_watermarks().unwrap();
        assert!(legacy.exists());
        assert!(!d.path().join(crate::hw_checkpoint::FILE_NAME).exists());
        p.append(&one("d"), Acks::Leader).unwrap();
        p.log().flush_to(4).unwrap();
        b.checkpoint_high_watermarks().unwrap();
        assert!(!legacy.exists(), "removed once the new file holds the partition");
        let read = crate::hw_checkpoint::read(d.path()).unwrap();
        assert_eq!(read.get(&("t".to_string(), 0)), Some(&4));
    }

    /// A batch of idempotent producer `pid` (epoch 0) at sequence `seq`.
    fn idem(pid: i64, seq: i32, value: &str) -> Vec<u8> {
        let r = NewRecord { key: None, value: Some(value.as_bytes()), headers: vec![], timestamp: 1 };
        build_batch(&[r], Compression::None, pid, 0, seq).unwrap()
    }

    /// Found 6 (docs/reliability.md): a node that appended a batch as a
    /// follower must answer that batch's retry with its original offset once
    /// it leads, even after truncations in between. Here node 1's producer
    /// snapshot still held a tail it truncated away (the batch of producer 8
    /// at offset 1); a later truncation above that snapshot rebuilt producer
    /// state from it, lost producer 7's sequence 1 (fetched from node 2 at
    /// offset 1), and the new leader appended the retry again.
    #[tokio::test]
    async fn a_follower_promoted_to_leader_answers_a_retry_with_the_original_offset() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let id = Uuid::new_v4();
        let (b1, b2) = (broker(d1.path(), 1), broker(d2.path(), 2));
        b1.apply_image(image(id, &[], &[]));
        b2.apply_image(image(id, &[], &[]));
        let p1 = b1.topic("t").unwrap().partition(0).unwrap();
        let p2 = b2.topic("t").unwrap().partition(0).unwrap();
        p1.append(&idem(7, 0, "a"), Acks::Leader).unwrap();
        p1.log().flush_to(1).unwrap();
        truncate(&p1, &p2);
        fetch(&p1, &p2, 2).unwrap();
        fetch(&p1, &p2, 2).unwrap();
        // Node 1 writes a batch nobody copies, and snapshots its producers
        // (the housekeeping thread does every 30 s) with it.
        p1.append(&idem(8, 0, "x"), Acks::Leader).unwrap();
        p1.snapshot_producers().unwrap();
        // Node 2 leads epoch 1 and takes producer 7's next batch at offset 1.
        let e1 = [(2, vec![2])];
        b2.apply_image(image(id, &[], &e1));
        assert_eq!(p2.append(&idem(7, 1, "b"), Acks::Leader).unwrap().info.base_offset, 1);
        p2.log().flush_to(2).unwrap();
        // Node 1 follows: cuts "x", copies "b" (as a follower).
        b1.apply_image(image(id, &[], &e1));
        truncate(&p2, &p1);
        assert_eq!(p1.log_end_offset(), 1);
        fetch(&p2, &p1, 1).unwrap();
        fetch(&p2, &p1, 1).unwrap();
        assert_eq!(p1.log_end_offset(), 2);
        // A retried fetch truncates again, to its log end (2, not below the
        // old snapshot's offset): producer state is rebuilt once more.
        p1.request_truncation(1);
        truncate(&p2, &p1);
        assert_eq!(p1.log_end_offset(), 2);
        // Node 1 leads epoch 2; producer 7 retries sequence 1 (its answer
        // from node 2 was lost), and a new producer 8 starts at sequence 0.
        b1.apply_image(image(id, &[], &[(2, vec![2]), (1, vec![1])]));
        assert_eq!(p1.leader_state().unwrap().leader_epoch, 2);
        let retry = p1.append(&idem(7, 1, "b"), Acks::Leader).unwrap().info;
        assert_eq!((retry.base_offset, retry.last_offset), (1, 1), "answered with the original offset");
        assert_eq!(p1.log_end_offset(), 2, "not appended again");
        assert_eq!(p1.append(&idem(7, 0, "a"), Acks::Leader).unwrap().info.base_offset, 0);
        assert_eq!(p1.append(&idem(8, 0, "y"), Acks::Leader).unwrap().info.base_offset, 2, "\"x\" is gone");
        assert_eq!(p1.append(&idem(7, 2, "c"), Acks::Leader).unwrap().info.base_offset, 3);
        p1.log().flush_to(4).unwrap();
        assert_eq!(values(&p1), ["a", "b", "y", "c"].map(String::from).to_vec());
    }

    /// Found 7 (docs/reliability.md): an acks=all batch appended just before
    /// the ISR shrank waits for the ISR; its producer's retries (same epoch
    /// and sequence) are refused while the ISR is too small (as Kafka: the
    /// min.insync.replicas check comes first) and answered with the original
    /// offset once it is back, never appended again. The same record resent
    /// under a bumped epoch from sequence 0, as librdkafka does after its
    /// epoch bump, is a new epoch's first batch: accepted, as by Kafka.
    #[tokio::test]
    async fn a_retry_while_the_first_append_waits_for_the_isr_is_never_appended_again() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let id = Uuid::new_v4();
        let (b1, b2) = (broker(d1.path(), 1), broker(d2.path(), 2));
        let min2 = [("min.insync.replicas", "2")];
        b1.apply_image(image(id, &min2, &[]));
        b2.apply_image(image(id, &min2, &[]));
        let leader = b1.topic("t").unwrap().partition(0).unwrap();
        let follower = b2.topic("t").unwrap().partition(0).unwrap();
        truncate(&leader, &follower);
        let first = leader.append(&idem(7, 0, "a"), Acks::All).unwrap();
        assert_eq!(first.info.base_offset, 0);
        leader.log().flush_to(1).unwrap();
        let mut first = Box::pin(first.acknowledged());
        assert!(tokio::time::timeout(Duration::ZERO, &mut first).await.is_err(), "waits for the follower");
        // The ISR shrinks to the leader: the retry is refused, not appended.
        b1.apply_image(image(id, &min2, &[(1, vec![1])]));
        assert!(matches!(
            leader.append(&idem(7, 0, "a"), Acks::All),
            Err(BrokerError::NotEnoughReplicas { isr: 1, min: 2 })
        ));
        assert_eq!(leader.log_end_offset(), 1);
        // The follower is back: the next retry gets offset 0 and waits too.
        b1.apply_image(image(id, &min2, &[(1, vec![1]), (1, vec![1, 2])]));
        let retry = leader.append(&idem(7, 0, "a"), Acks::All).unwrap();
        assert_eq!((retry.info.base_offset, leader.log_end_offset()), (0, 1), "answered, not appended");
        fetch(&leader, &follower, 2).unwrap();
        fetch(&leader, &follower, 2).unwrap();
        let retry = tokio::time::timeout(Duration::from_secs(10), retry.acknowledged()).await.unwrap().unwrap();
        assert_eq!(retry.base_offset, 0);
        assert_eq!(tokio::time::timeout(Duration::from_secs(10), first).await.unwrap().unwrap().base_offset, 0);
        assert_eq!(values(&leader), ["a"]);
        // The same record renumbered under epoch 1: the broker cannot know.
        let r = NewRecord { key: None, value: Some(b"a"), headers: vec![], timestamp: 1 };
        let bumped = build_batch(&[r], Compression::None, 7, 1, 0).unwrap();
        assert_eq!(leader.append(&bumped, Acks::Leader).unwrap().info.base_offset, 1);
    }

    #[tokio::test]
    async fn a_fenced_follower_is_never_proposed_for_the_isr() {
        let dir = tempfile::tempdir().unwrap();
        // Replicas 1, 2, 3; node 3 was fenced (and so left the ISR).
        let image = image_of(Uuid::new_v4(), &[1, 2, 3], &[], &[(1, vec![1, 2])]);
        let b = broker(dir.path(), 1);
        b.apply_image(image);
        let leader = b.topic("t").unwrap().partition(0).unwrap();
        leader.append(&one("a"), Acks::Leader).unwrap();
        leader.log().flush_to(1).unwrap();
        // Node 3's last fetch (before it died) had it caught up.
        let now = now_ms_u64();
        let epoch = leader.leader_state().unwrap().leader_epoch;
        leader.serve_replica_fetch(2, epoch, 1, 1, 1 << 20, now).unwrap();
        leader.serve_replica_fetch(3, epoch, 1, 1, 1 << 20, now).unwrap();
        assert_eq!(leader.isr_change_due(now, 30_000, 5_000, &|r| r != 3), None, "fenced: not proposed");
        assert_eq!(leader.leader_state().unwrap().pending_isr, None, "and not counted for the high watermark");
        let (_, _, isr) = leader.isr_change_due(now, 30_000, 5_000, &|_| true).unwrap();
        assert_eq!(isr, vec![1, 2, 3], "live and caught up: proposed");
    }
}
