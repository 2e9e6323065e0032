//! The transaction coordinator: Kafka's transaction state machine per
//! transactional id, kept in the replicated, compacted `__transaction_state`
//! topic (one record per id, in the partition the id hashes to). The node
//! leading a partition [`loads`](TxnCoordinator::load) it and serves its
//! ids; on losing leadership it [`unloads`](TxnCoordinator::unload) them
//! (NOT_COORDINATOR). Every state record is an acks=all append, waited for
//! before the next step, so a new coordinator finds each transaction where
//! the old one left it: Ongoing ones carry on (or time out), Prepare ones
//! are finished by the housekeeping tick, re-sending their markers.
//!
//! A transaction goes Empty -> Ongoing (AddPartitionsToTxn,
//! AddOffsetsToTxn) -> PrepareCommit / PrepareAbort (EndTxn, a timeout, or a
//! new producer instance fencing the old) -> CompleteCommit / CompleteAbort.
//! The Prepare state is durable before any marker is written, and the
//! Complete state only after every marker is, so a crash anywhere in between
//! is finished by the next coordinator, or after the next start, by writing the markers again (a marker for
//! a transaction a partition already closed is a no-op there).
//!
//! Offsets sent with TxnOffsetCommit wait in the transaction's record and
//! reach the group coordinator only on commit: for a consumer, input offsets
//! and output records become visible together or not at all.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use ferry_util::sync::lock;
use ferry_util::time::now_ms_u64;
use serde::{Deserialize, Serialize};

use crate::coordinator_partitions::CoordinatorPartitions;
use crate::error::{BrokerError, Result};
use crate::group::Committed;
use crate::internal_log;
use crate::metadata::PeerError;
use crate::partition::{Appended, Partition};
use crate::producer::ProducerIds;

/// Why a transactional request was refused; front-ends map these to codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnError {
    /// Another producer instance took over the transactional id.
    ProducerFenced,
    /// The producer id does not belong to the transactional id.
    InvalidProducerIdMapping,
    /// The request does not fit the transaction's state.
    InvalidTxnState,
    /// A commit or abort is still being written; retry.
    ConcurrentTransactions,
    /// The requested timeout is not positive or exceeds `transaction.max.timeout.ms`.
    InvalidTransactionTimeout,
    /// No transaction state exists for the transactional id.
    TransactionalIdNotFound,
    /// Writing state or markers failed; retry.
    CoordinatorNotAvailable,
    /// This node does not coordinate the transactional id (its
    /// `__transaction_state` partition is led, or loaded, elsewhere).
    NotCoordinator,
    /// A partition leader refused a marker: a coordinator with a newer
    /// coordinator epoch (the `__transaction_state` partition's leader
    /// epoch) wrote one for the producer (TRANSACTION_COORDINATOR_FENCED).
    CoordinatorFenced,
}

impl From<TxnError> for BrokerError {
    fn from(e: TxnError) -> Self {
        BrokerError::Txn(e)
    }
}

type TxnResult<T> = std::result::Result<T, TxnError>;

/// Kafka's transaction states; see the module docs for the transitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    /// No transaction open.
    Empty,
    /// Partitions or offsets were added; records are being written.
    Ongoing,
    /// EndTxn(commit) accepted; commit markers are being written.
    PrepareCommit,
    /// EndTxn(abort), a timeout or fencing; abort markers are being written.
    PrepareAbort,
    /// Every commit marker is written.
    CompleteCommit,
    /// Every abort marker is written.
    CompleteAbort,
}

impl TxnState {
    /// The name Kafka's DescribeTransactions and ListTransactions use.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    fn preparing(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// One transactional id's state, as stored in the internal log.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TxnMeta {
    /// Producer id the transactional id is bound to.
    pub producer_id: i64,
    /// Current epoch; older epochs are fenced.
    pub producer_epoch: i16,
    /// Transaction timeout, in ms: an open transaction older than this is aborted.
    pub timeout_ms: i32,
    /// Where the transaction is in its state machine.
    pub state: TxnState,
    /// Partitions (topic, partition) written in the open transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// Consumer groups whose offsets the transaction commits (AddOffsetsToTxn).
    pub groups: BTreeSet<String>,
    /// TxnOffsetCommit offsets by group, applied on commit.
    pub offsets: BTreeMap<String, BTreeMap<(String, i32), Committed>>,
    /// Wall-clock ms when the open transaction began (0: none open).
    pub start_ms: u64,
    /// Wall-clock ms of the last state change.
    pub update_ms: u64,
}

/// Settings of the transaction coordinator.
#[derive(Clone, Debug)]
pub struct TxnConfig {
    /// `transaction.max.timeout.ms`: the longest timeout a producer may ask.
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`: ids idle (no open transaction) this
    /// long are forgotten.
    pub id_expiration_ms: u64,
}

impl Default for TxnConfig {
    fn default() -> Self {
        TxnConfig { max_timeout_ms: 900_000, id_expiration_ms: 7 * 24 * 3600 * 1000 }
    }
}

/// What committing or aborting does outside the coordinator: the broker
/// writes markers into partitions and commits offsets for groups.
pub trait TxnEffects {
    /// Writes a commit or abort marker for the producer into a partition
    /// and waits until it is on disk. `coordinator_epoch` is the leader
    /// epoch the coordinator loaded the transaction's `__transaction_state`
    /// partition in (Kafka's WriteTxnMarkers coordinatorEpoch); the
    /// partition refuses it if older than its last marker's for the
    /// producer. A partition that no longer exists is not an error.
    fn write_marker(
        &self,
        topic: &str,
        partition: i32,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
    ) -> Result<()>;
    /// Commits a transaction's offsets for a group, durably.
    fn commit_offsets(&self, group: &str, offsets: Vec<(String, i32, Committed)>) -> Result<()>;
}

/// Kafka's transaction coordinator for this broker (see the module docs).
pub struct TxnCoordinator {
    config: TxnConfig,
    txns: Mutex<HashMap<String, TxnMeta>>,
    /// Producer id -> transactional id, for checking produce requests.
    /// Lock order: `txns`, then `pids`.
    pids: Mutex<HashMap<i64, String>>,
    /// The `__transaction_state` partitions served here.
    parts: CoordinatorPartitions,
}

impl TxnCoordinator {
    /// A coordinator serving no partition yet (see [`TxnCoordinator::load`]).
    pub fn open(config: TxnConfig) -> TxnCoordinator {
        TxnCoordinator {
            config,
            txns: Mutex::new(HashMap::new()),
            pids: Mutex::new(HashMap::new()),
            parts: CoordinatorPartitions::default(),
        }
    }

    /// Loads partition `index` (of `count`) of `__transaction_state`, which
    /// this node now leads in `leader_epoch`: replays it (to its local end)
    /// and serves the ids that hash to it. Transactions it finds in a
    /// Prepare state are finished by the next [`TxnCoordinator::tick`].
    /// Call from a blocking thread.
    pub(crate) fn load(&self, index: i32, count: usize, partition: Arc<Partition>, leader_epoch: i32) -> Result<()> {
        // What it appended as a follower and not yet flushed is part of it.
        partition.flush_local()?;
        let mut found = HashMap::new();
        internal_log::replay(partition.log(), |key, value| {
            let Ok(id) = std::str::from_utf8(key) else { return };
            match value.and_then(|v| serde_json::from_slice::<TxnMeta>(v).ok()) {
                Some(m) => found.insert(id.to_string(), m),
                None => found.remove(id),
            };
        })?;
        let mine = |id: &str| crate::metadata::coordinator_partition(id, count) == Some(index);
        found.retain(|id, _| mine(id));
        let mut txns = lock(&self.txns);
        // Whatever an earlier term left in memory goes; the log is the truth.
        self.drop_ids(&mut txns, |id| mine(id));
        let mut pids = lock(&self.pids);
        for (id, m) in found {
            pids.insert(m.producer_id, id.clone());
            txns.insert(id, m);
        }
        drop(pids);
        self.parts.insert(index, count, partition, leader_epoch);
        tracing::info!(partition = index, epoch = leader_epoch, "loaded transaction coordinator partition");
        Ok(())
    }

    /// Stops serving partition `index`: its ids leave memory and their
    /// requests get NOT_COORDINATOR.
    pub(crate) fn unload(&self, index: i32) {
        let mut txns = lock(&self.txns);
        if !self.parts.remove(index) {
            return;
        }
        let count = self.parts.count();
        self.drop_ids(&mut txns, |id| crate::metadata::coordinator_partition(id, count) == Some(index));
        tracing::info!(partition = index, "unloaded transaction coordinator partition");
    }

    fn drop_ids(&self, txns: &mut HashMap<String, TxnMeta>, which: impl Fn(&str) -> bool) {
        let mut pids = lock(&self.pids);
        txns.retain(|id, m| {
            let keep = !which(id);
            if !keep {
                pids.remove(&m.producer_id);
            }
            keep
        });
    }

    /// The leader epoch partition `index` was loaded in, if it is.
    pub(crate) fn loaded_epoch(&self, index: i32) -> Option<i32> {
        self.parts.epoch(index)
    }

    /// Indexes of the loaded partitions.
    pub(crate) fn loaded(&self) -> Vec<i32> {
        self.parts.indexes()
    }

    /// Whether every `__transaction_state` partition is served here.
    pub(crate) fn all_loaded(&self) -> bool {
        self.parts.all_loaded()
    }

    /// Whether this node serves transactional id `id` now.
    pub fn serves(&self, id: &str) -> bool {
        self.parts.serves(id)
    }

    /// Appends a state record (under the `txns` lock, so the log's order is
    /// the order of the changes) to the id's partition, as acks=all.
    fn append(&self, id: &str, meta: Option<&TxnMeta>) -> TxnResult<Appended> {
        let partition = self.parts.get(id).ok_or(TxnError::NotCoordinator)?;
        let value = meta.and_then(|m| serde_json::to_vec(m).ok());
        internal_log::append_acked(&partition, &[(id.as_bytes(), value.as_deref())]).map_err(|e| match e {
            BrokerError::NotLeaderOrFollower => TxnError::NotCoordinator,
            e => {
                tracing::error!(transactional_id = id, error = %e, "transaction state write failed");
                TxnError::CoordinatorNotAvailable
            }
        })
    }

    /// Waits (blocking) until a state record is on every ISR member.
    fn durable(&self, written: Appended) -> TxnResult<()> {
        written.acknowledged_blocking().map(|_| ()).map_err(|e| match e {
            BrokerError::NotLeaderOrFollower | BrokerError::Log(ferry_log::LogError::Unavailable(_)) => {
                TxnError::NotCoordinator
            }
            e => {
                tracing::error!(error = %e, "transaction state write failed");
                TxnError::CoordinatorNotAvailable
            }
        })
    }

    /// InitProducerId for a transactional id: a new producer id, or the
    /// next epoch of the id's producer, fencing older instances. An open
    /// transaction of the previous instance is aborted first.
    pub fn init_producer(
        &self,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        ids: &ProducerIds,
        effects: &dyn TxnEffects,
    ) -> TxnResult<(i64, i16)> {
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return Err(TxnError::InvalidTransactionTimeout);
        }
        let mut txns = lock(&self.txns);
        let now = now_ms_u64();
        let Some(m) = txns.get_mut(id) else {
            if !self.parts.serves(id) {
                return Err(TxnError::NotCoordinator);
            }
            if expected.is_some() {
                return Err(TxnError::InvalidProducerIdMapping);
            }
            let pid = ids.next().ok_or(TxnError::CoordinatorNotAvailable)?;
            let meta = TxnMeta {
                producer_id: pid,
                producer_epoch: 0,
                timeout_ms,
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                groups: BTreeSet::new(),
                offsets: BTreeMap::new(),
                start_ms: 0,
                update_ms: now,
            };
            let end = self.append(id, Some(&meta))?;
            txns.insert(id.to_string(), meta);
            lock(&self.pids).insert(pid, id.to_string());
            drop(txns);
            self.durable(end)?;
            return Ok((pid, 0));
        };
        if m.state.preparing() {
            return Err(TxnError::ConcurrentTransactions);
        }
        if expected.is_some_and(|e| e != (m.producer_id, m.producer_epoch)) {
            return Err(TxnError::ProducerFenced);
        }
        if m.state == TxnState::Ongoing {
            // The previous instance left a transaction open: abort it under
            // a bumped epoch, which fences that instance.
            self.begin_end(&mut txns, id, false, true)?;
            drop(txns);
            self.complete(id, effects)?;
            txns = lock(&self.txns);
        }
        let m = txns.get_mut(id).ok_or(TxnError::ConcurrentTransactions)?;
        if m.state.preparing() {
            return Err(TxnError::ConcurrentTransactions);
        }
        if m.producer_epoch >= i16::MAX - 1 {
            let pid = ids.next().ok_or(TxnError::CoordinatorNotAvailable)?;
            let mut pids = lock(&self.pids);
            pids.remove(&m.producer_id);
            pids.insert(pid, id.to_string());
            m.producer_id = pid;
            m.producer_epoch = 0;
        } else {
            m.producer_epoch += 1;
        }
        m.timeout_ms = timeout_ms;
        m.state = TxnState::Empty;
        m.update_ms = now;
        let (pid, epoch) = (m.producer_id, m.producer_epoch);
        let snapshot = m.clone();
        let end = self.append(id, Some(&snapshot))?;
        drop(txns);
        self.durable(end)?;
        Ok((pid, epoch))
    }

    /// Checks the producer against the id's current one.
    fn check<'a>(txns: &'a mut HashMap<String, TxnMeta>, id: &str, pid: i64, epoch: i16) -> TxnResult<&'a mut TxnMeta> {
        let m = txns.get_mut(id).ok_or(TxnError::InvalidProducerIdMapping)?;
        if m.producer_id != pid {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if m.producer_epoch != epoch {
            return Err(TxnError::ProducerFenced);
        }
        if m.state.preparing() {
            return Err(TxnError::ConcurrentTransactions);
        }
        Ok(m)
    }

    /// Makes the transaction Ongoing (if it is not) and applies `f`,
    /// persisting the result if anything changed.
    fn extend(&self, id: &str, pid: i64, epoch: i16, f: impl FnOnce(&mut TxnMeta) -> bool) -> TxnResult<()> {
        if !self.parts.serves(id) {
            return Err(TxnError::NotCoordinator);
        }
        let mut txns = lock(&self.txns);
        let m = Self::check(&mut txns, id, pid, epoch)?;
        let now = now_ms_u64();
        let mut changed = f(m);
        if m.state != TxnState::Ongoing {
            m.state = TxnState::Ongoing;
            m.start_ms = now;
            changed = true;
        }
        if !changed {
            return Ok(());
        }
        m.update_ms = now;
        let snapshot = m.clone();
        let end = self.append(id, Some(&snapshot))?;
        drop(txns);
        self.durable(end)
    }

    /// AddPartitionsToTxn (the caller checked the partitions exist).
    pub fn add_partitions(&self, id: &str, pid: i64, epoch: i16, partitions: &[(String, i32)]) -> TxnResult<()> {
        self.extend(id, pid, epoch, |m| {
            let before = m.partitions.len();
            m.partitions.extend(partitions.iter().cloned());
            m.partitions.len() != before
        })
    }

    /// Whether the partitions are in the producer's open transaction
    /// (AddPartitionsToTxn v4+ `verify_only`).
    pub fn verify_partitions(
        &self,
        id: &str,
        pid: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> TxnResult<Vec<bool>> {
        if !self.parts.serves(id) {
            return Err(TxnError::NotCoordinator);
        }
        let mut txns = lock(&self.txns);
        let m = Self::check(&mut txns, id, pid, epoch)?;
        let open = m.state == TxnState::Ongoing;
        Ok(partitions.iter().map(|p| open && m.partitions.contains(p)).collect())
    }

    /// AddOffsetsToTxn: the group's offsets will be committed with the
    /// transaction.
    pub fn add_offsets(&self, id: &str, pid: i64, epoch: i16, group: &str) -> TxnResult<()> {
        self.extend(id, pid, epoch, |m| m.groups.insert(group.to_string()))
    }

    /// TxnOffsetCommit: offsets held until the transaction commits. The
    /// group must have been added with AddOffsetsToTxn.
    pub fn stage_offsets(
        &self,
        id: &str,
        pid: i64,
        epoch: i16,
        group: &str,
        offsets: Vec<(String, i32, Committed)>,
    ) -> TxnResult<()> {
        if !self.parts.serves(id) {
            return Err(TxnError::NotCoordinator);
        }
        {
            let mut txns = lock(&self.txns);
            let m = Self::check(&mut txns, id, pid, epoch)?;
            if m.state != TxnState::Ongoing || !m.groups.contains(group) {
                return Err(TxnError::InvalidTxnState);
            }
        }
        self.extend(id, pid, epoch, |m| {
            let staged = m.offsets.entry(group.to_string()).or_default();
            for (t, p, c) in offsets {
                staged.insert((t, p), c);
            }
            true
        })
    }

    /// Checks that a transactional batch may be written: its producer's
    /// transaction is open and holds the partition (Kafka's KIP-890
    /// verification), so no stray batch can hold the last stable offset.
    ///
    /// Only the producer's coordinator knows its transaction: where the
    /// producer id is unknown here and some `__transaction_state`
    /// partition is served elsewhere, the batch is taken unchecked (as
    /// Kafka before KIP-890; the producer's epoch still fences it).
    pub fn verify_produce(&self, pid: i64, epoch: i16, topic: &str, partition: i32) -> TxnResult<()> {
        let txns = lock(&self.txns);
        let Some(m) = lock(&self.pids).get(&pid).and_then(|id| txns.get(id)) else {
            if !self.parts.all_loaded() {
                return Ok(());
            }
            return Err(TxnError::InvalidProducerIdMapping);
        };
        if epoch < m.producer_epoch {
            return Err(TxnError::ProducerFenced);
        }
        let key = (topic.to_string(), partition);
        if m.state != TxnState::Ongoing || epoch != m.producer_epoch || !m.partitions.contains(&key) {
            return Err(TxnError::InvalidTxnState);
        }
        Ok(())
    }

    /// EndTxn: commits or aborts the open transaction. A retry of an end
    /// that already completed succeeds again.
    pub fn end(&self, id: &str, pid: i64, epoch: i16, commit: bool, effects: &dyn TxnEffects) -> TxnResult<()> {
        if !self.parts.serves(id) {
            return Err(TxnError::NotCoordinator);
        }
        {
            let mut txns = lock(&self.txns);
            let m = txns.get_mut(id).ok_or(TxnError::InvalidProducerIdMapping)?;
            if m.producer_id != pid {
                return Err(TxnError::InvalidProducerIdMapping);
            }
            if m.producer_epoch != epoch {
                return Err(TxnError::ProducerFenced);
            }
            match (m.state, commit) {
                (TxnState::Ongoing, _) => self.begin_end(&mut txns, id, commit, false)?,
                (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => return Ok(()),
                (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                    return Err(TxnError::ConcurrentTransactions);
                }
                _ => return Err(TxnError::InvalidTxnState),
            }
        }
        self.complete(id, effects)
    }

    /// Moves an Ongoing transaction to Prepare{Commit,Abort} durably
    /// (bumping the epoch when fencing). The caller then calls `complete`
    /// without the lock.
    fn begin_end(
        &self,
        txns: &mut std::sync::MutexGuard<'_, HashMap<String, TxnMeta>>,
        id: &str,
        commit: bool,
        fence: bool,
    ) -> TxnResult<()> {
        let m = txns.get_mut(id).ok_or(TxnError::InvalidProducerIdMapping)?;
        m.state = if commit { TxnState::PrepareCommit } else { TxnState::PrepareAbort };
        if fence && m.producer_epoch < i16::MAX - 1 {
            m.producer_epoch += 1;
        }
        m.update_ms = now_ms_u64();
        let snapshot = m.clone();
        let end = self.append(id, Some(&snapshot))?;
        // Durable before any marker: a restart must know to finish this.
        self.durable(end)
    }

    /// Writes the markers of a Prepare{Commit,Abort} transaction, commits
    /// its offsets (on commit), then records it Complete.
    fn complete(&self, id: &str, effects: &dyn TxnEffects) -> TxnResult<()> {
        let Some(m) = lock(&self.txns).get(id).cloned().filter(|m| m.state.preparing()) else {
            return Ok(());
        };
        let commit = m.state == TxnState::PrepareCommit;
        let coordinator_epoch =
            self.parts.index_of(id).and_then(|i| self.parts.epoch(i)).ok_or(TxnError::NotCoordinator)?;
        for (topic, partition) in &m.partitions {
            effects
                .write_marker(topic, *partition, m.producer_id, m.producer_epoch, commit, coordinator_epoch)
                .map_err(|e| match e {
                    BrokerError::Txn(TxnError::CoordinatorFenced)
                    | BrokerError::Peer(PeerError::Txn(TxnError::CoordinatorFenced)) => {
                        // A newer coordinator owns the id: the client finds it.
                        tracing::info!(transactional_id = id, topic, partition, coordinator_epoch, "marker refused: a newer transaction coordinator owns it");
                        TxnError::NotCoordinator
                    }
                    e => {
                        tracing::error!(transactional_id = id, topic, partition, error = %e, "transaction marker write failed");
                        TxnError::CoordinatorNotAvailable
                    }
                })?;
        }
        if commit {
            for (group, offsets) in &m.offsets {
                let offsets = offsets.iter().map(|((t, p), c)| (t.clone(), *p, c.clone())).collect();
                effects.commit_offsets(group, offsets).map_err(|e| {
                    tracing::error!(transactional_id = id, group, error = %e, "transaction offset commit failed");
                    TxnError::CoordinatorNotAvailable
                })?;
            }
        }
        let mut txns = lock(&self.txns);
        let Some(m) = txns.get_mut(id).filter(|m| m.state.preparing()) else { return Ok(()) };
        m.state = if commit { TxnState::CompleteCommit } else { TxnState::CompleteAbort };
        m.partitions.clear();
        m.groups.clear();
        m.offsets.clear();
        m.start_ms = 0;
        m.update_ms = now_ms_u64();
        let snapshot = m.clone();
        let end = self.append(id, Some(&snapshot))?;
        drop(txns);
        self.durable(end)
    }

    /// Housekeeping, once a second: finishes transactions left in a Prepare
    /// state (after a restart or a failed marker write), aborts those past
    /// their timeout (fencing their producer), and forgets idle ids.
    pub fn tick(&self, effects: &dyn TxnEffects) {
        let now = now_ms_u64();
        let mut preparing = Vec::new();
        let mut timed_out = Vec::new();
        {
            let mut txns = lock(&self.txns);
            let mut expired = Vec::new();
            for (id, m) in txns.iter() {
                match m.state {
                    TxnState::PrepareCommit | TxnState::PrepareAbort => preparing.push(id.clone()),
                    TxnState::Ongoing if m.start_ms.saturating_add(m.timeout_ms.max(0) as u64) < now => {
                        timed_out.push(id.clone());
                    }
                    TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                        if m.update_ms.saturating_add(self.config.id_expiration_ms) < now =>
                    {
                        expired.push(id.clone());
                    }
                    _ => {}
                }
            }
            for id in expired {
                if self.append(&id, None).is_ok()
                    && let Some(m) = txns.remove(&id)
                {
                    lock(&self.pids).remove(&m.producer_id);
                }
            }
            for id in &timed_out {
                tracing::info!(transactional_id = %id, "aborting a transaction past its timeout");
                if self.begin_end(&mut txns, id, false, true).is_err() {
                    continue;
                }
                preparing.push(id.clone());
            }
        }
        for id in preparing {
            if let Err(e) = self.complete(&id, effects) {
                tracing::warn!(transactional_id = %id, error = ?e, "could not finish transaction; will retry");
            }
        }
    }

    /// One transactional id's state (DescribeTransactions).
    pub fn describe(&self, id: &str) -> Option<TxnMeta> {
        lock(&self.txns).get(id).cloned()
    }

    /// (transactional id, producer id, state, start ms) of every id.
    pub fn list(&self) -> Vec<(String, i64, TxnState, u64)> {
        let mut out: Vec<_> =
            lock(&self.txns).iter().map(|(id, m)| (id.clone(), m.producer_id, m.state, m.start_ms)).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::Mutex as StdMutex;

    use crate::broker::{Broker, BrokerConfig};
    use crate::metadata::TXN_TOPIC;
    use crate::testing::INTERNAL_PARTITIONS;

    /// (topic, partition, producer id, epoch, commit, coordinator epoch).
    type Marker = (String, i32, i64, i16, bool, i32);
    type GroupCommit = (String, Vec<(String, i32, Committed)>);

    /// Records what the coordinator asked for.
    #[derive(Default)]
    struct Recorder {
        markers: StdMutex<Vec<Marker>>,
        offsets: StdMutex<Vec<GroupCommit>>,
    }

    impl TxnEffects for Recorder {
        fn write_marker(&self, topic: &str, partition: i32, pid: i64, epoch: i16, commit: bool, ce: i32) -> Result<()> {
            self.markers.lock().unwrap().push((topic.to_string(), partition, pid, epoch, commit, ce));
            Ok(())
        }
        fn commit_offsets(&self, group: &str, offsets: Vec<(String, i32, Committed)>) -> Result<()> {
            self.offsets.lock().unwrap().push((group.to_string(), offsets));
            Ok(())
        }
    }

    fn committed(offset: i64) -> Committed {
        Committed { offset, leader_epoch: -1, metadata: None, commit_ms: 0 }
    }

    /// A broker whose `__transaction_state` partitions are served by a
    /// coordinator the test drives (with its own effects and ticks), not
    /// by the broker's own (whose housekeeping would tick it).
    fn open_with(dir: &Path, config: TxnConfig) -> (Arc<Broker>, TxnCoordinator) {
        let b = crate::testing::open(BrokerConfig { data_dir: dir.to_path_buf(), ..BrokerConfig::default() }).unwrap();
        let c = TxnCoordinator::open(config);
        for index in (0..).take(INTERNAL_PARTITIONS) {
            b.txns().unload(index);
            load(&b, &c, index);
        }
        (b, c)
    }

    fn load(b: &Broker, c: &TxnCoordinator, index: i32) {
        let p = b.topic(TXN_TOPIC).unwrap().partition(index).unwrap();
        let epoch = p.leader_state().unwrap().leader_epoch;
        c.load(index, INTERNAL_PARTITIONS, p, epoch).unwrap();
    }

    fn open(dir: &Path) -> (Arc<Broker>, TxnCoordinator) {
        open_with(dir, TxnConfig::default())
    }

    /// The coordinator epoch markers for `id` carry: the leader epoch of
    /// its `__transaction_state` partition.
    fn ce(b: &Broker, id: &str) -> i32 {
        let index = crate::metadata::coordinator_partition(id, INTERNAL_PARTITIONS).unwrap();
        b.topic(TXN_TOPIC).unwrap().partition(index).unwrap().leader_state().unwrap().leader_epoch
    }

    fn close(b: Arc<Broker>) {
        b.shutdown();
    }

    #[test]
    fn commit_writes_markers_then_offsets_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let ids = ProducerIds::default();
        ids.add_block(0, 1000);
        let fx = Recorder::default();
        let (b, c) = open(dir.path());
        let (pid, epoch) = c.init_producer("t1", 60_000, None, &ids, &fx).unwrap();
        let parts = vec![("a".to_string(), 0), ("b".to_string(), 1)];
        c.add_partitions("t1", pid, epoch, &parts).unwrap();
        // Offsets need AddOffsetsToTxn first.
        let early = c.stage_offsets("t1", pid, epoch, "g", vec![("in".into(), 0, committed(5))]);
        assert_eq!(early, Err(TxnError::InvalidTxnState));
        c.add_offsets("t1", pid, epoch, "g").unwrap();
        c.stage_offsets("t1", pid, epoch, "g", vec![("in".into(), 0, committed(5))]).unwrap();
        assert_eq!(c.describe("t1").unwrap().state, TxnState::Ongoing);
        c.verify_produce(pid, epoch, "a", 0).unwrap();
        assert_eq!(c.verify_produce(pid, epoch, "c", 0), Err(TxnError::InvalidTxnState));
        assert_eq!(c.end("t1", pid, epoch - 1, true, &fx), Err(TxnError::ProducerFenced));
        c.end("t1", pid, epoch, true, &fx).unwrap();
        assert_eq!(
            *fx.markers.lock().unwrap(),
            vec![("a".into(), 0, pid, epoch, true, ce(&b, "t1")), ("b".into(), 1, pid, epoch, true, ce(&b, "t1"))]
        );
        assert_eq!(fx.offsets.lock().unwrap()[0].0, "g");
        // A retried commit succeeds; an abort now does not fit.
        c.end("t1", pid, epoch, true, &fx).unwrap();
        assert_eq!(c.end("t1", pid, epoch, false, &fx), Err(TxnError::InvalidTxnState));
        drop(c);
        close(b);
        let (_b, c) = open(dir.path());
        let m = c.describe("t1").unwrap();
        assert_eq!((m.state, m.producer_id, m.partitions.len()), (TxnState::CompleteCommit, pid, 0));
    }

    #[test]
    fn a_new_instance_fences_the_old_and_aborts_its_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let ids = ProducerIds::default();
        ids.add_block(0, 1000);
        let fx = Recorder::default();
        let (b, c) = open(dir.path());
        let (pid, e0) = c.init_producer("t", 60_000, None, &ids, &fx).unwrap();
        c.add_partitions("t", pid, e0, &[("a".to_string(), 0)]).unwrap();
        let (pid2, e1) = c.init_producer("t", 60_000, None, &ids, &fx).unwrap();
        assert_eq!(pid2, pid);
        assert!(e1 > e0 + 1, "the abort fenced with one bump, the new instance got another");
        assert_eq!(*fx.markers.lock().unwrap(), vec![("a".into(), 0, pid, e0 + 1, false, ce(&b, "t"))]);
        assert_eq!(c.add_partitions("t", pid, e0, &[("a".to_string(), 0)]), Err(TxnError::ProducerFenced));
        assert_eq!(c.init_producer("t", 0, None, &ids, &fx), Err(TxnError::InvalidTransactionTimeout));
        assert_eq!(c.init_producer("t", 1000, Some((pid, e0)), &ids, &fx), Err(TxnError::ProducerFenced));
    }

    #[test]
    fn idle_transactional_ids_expire_but_open_transactions_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let ids = ProducerIds::default();
        ids.add_block(0, 1000);
        let fx = Recorder::default();
        let config = TxnConfig { id_expiration_ms: 0, ..TxnConfig::default() };
        let (b, c) = open_with(dir.path(), config.clone());
        c.init_producer("idle", 60_000, None, &ids, &fx).unwrap();
        let (pid, epoch) = c.init_producer("busy", 60_000, None, &ids, &fx).unwrap();
        c.add_partitions("busy", pid, epoch, &[("a".to_string(), 0)]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        c.tick(&fx);
        assert!(c.describe("idle").is_none());
        assert!(c.describe("busy").is_some());
        drop(c);
        close(b);
        let (_b, c) = open_with(dir.path(), config);
        assert!(c.describe("idle").is_none(), "the expiry is durable");
    }

    #[test]
    fn timed_out_and_prepared_transactions_are_finished_by_the_ticker() {
        let dir = tempfile::tempdir().unwrap();
        let ids = ProducerIds::default();
        ids.add_block(0, 1000);
        let fx = Recorder::default();
        let (b, c) = open(dir.path());
        let (pid, epoch) = c.init_producer("t", 1, None, &ids, &fx).unwrap();
        c.add_partitions("t", pid, epoch, &[("a".to_string(), 0)]).unwrap();
        // Left in PrepareCommit, as by a crash between the two writes.
        let (pid2, epoch2) = c.init_producer("u", 60_000, None, &ids, &fx).unwrap();
        c.add_partitions("u", pid2, epoch2, &[("b".to_string(), 0)]).unwrap();
        {
            let mut txns = lock(&c.txns);
            c.begin_end(&mut txns, "u", true, false).unwrap();
        }
        drop(c);
        close(b);
        let (b, c) = open(dir.path());
        std::thread::sleep(std::time::Duration::from_millis(5));
        c.tick(&fx);
        let markers = fx.markers.lock().unwrap().clone();
        assert!(markers.contains(&("a".into(), 0, pid, epoch + 1, false, ce(&b, "t"))), "{markers:?}");
        assert!(markers.contains(&("b".into(), 0, pid2, epoch2, true, ce(&b, "u"))), "{markers:?}");
        assert_eq!(c.describe("t").unwrap().state, TxnState::CompleteAbort);
        assert_eq!(c.describe("u").unwrap().state, TxnState::CompleteCommit);
        assert_eq!(c.end("t", pid, epoch, true, &fx), Err(TxnError::ProducerFenced));
    }

    #[test]
    fn a_new_coordinator_loads_open_and_half_ended_transactions_and_finishes_them() {
        let dir = tempfile::tempdir().unwrap();
        let ids = ProducerIds::default();
        ids.add_block(0, 1000);
        let fx = Recorder::default();
        let (b, old) = open(dir.path());
        let (pid, epoch) = old.init_producer("open", 60_000, None, &ids, &fx).unwrap();
        old.add_partitions("open", pid, epoch, &[("a".to_string(), 0)]).unwrap();
        let (pid2, epoch2) = old.init_producer("ending", 60_000, None, &ids, &fx).unwrap();
        old.add_partitions("ending", pid2, epoch2, &[("b".to_string(), 0)]).unwrap();
        {
            // The old coordinator dies between PrepareCommit and its markers.
            let mut txns = lock(&old.txns);
            old.begin_end(&mut txns, "ending", true, false).unwrap();
        }
        // It loses its partitions: its ids are no longer served there.
        for index in (0..).take(INTERNAL_PARTITIONS) {
            old.unload(index);
        }
        assert!(old.describe("open").is_none() && !old.serves("open"));
        assert_eq!(old.add_partitions("open", pid, epoch, &[]), Err(TxnError::NotCoordinator));
        assert_eq!(old.init_producer("new", 60_000, None, &ids, &fx), Err(TxnError::NotCoordinator));
        assert_eq!(old.end("open", pid, epoch, true, &fx), Err(TxnError::NotCoordinator));

        // Another coordinator loads the same partitions (as a new leader).
        let new = TxnCoordinator::open(TxnConfig::default());
        for index in (0..).take(INTERNAL_PARTITIONS) {
            load(&b, &new, index);
        }
        let m = new.describe("open").unwrap();
        assert_eq!((m.state, m.producer_epoch, m.partitions.len()), (TxnState::Ongoing, epoch, 1));
        new.verify_produce(pid, epoch, "a", 0).unwrap();
        assert_eq!(new.describe("ending").unwrap().state, TxnState::PrepareCommit);
        // The half-ended one is finished by re-sending its markers; the
        // open one carries on under the new coordinator.
        new.tick(&fx);
        assert_eq!(new.describe("ending").unwrap().state, TxnState::CompleteCommit);
        assert!(fx.markers.lock().unwrap().contains(&("b".into(), 0, pid2, epoch2, true, ce(&b, "ending"))));
        new.end("open", pid, epoch, false, &fx).unwrap();
        assert!(fx.markers.lock().unwrap().contains(&("a".into(), 0, pid, epoch, false, ce(&b, "open"))));
        assert_eq!(new.describe("open").unwrap().state, TxnState::CompleteAbort);
    }

    #[test]
    fn a_deposed_coordinators_markers_are_refused_once_its_successor_wrote_one() {
        let dir = tempfile::tempdir().unwrap();
        let ids = ProducerIds::default();
        ids.add_block(0, 1000);
        let fx = Recorder::default();
        let (b, old) = open(dir.path());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(b.create_topic("d", Some(1), &BTreeMap::new(), false)).unwrap();
        let data = b.topic("d").unwrap().partition(0).unwrap();
        let (pid, epoch) = old.init_producer("x", 60_000, None, &ids, &fx).unwrap();
        old.add_partitions("x", pid, epoch, &[("d".to_string(), 0)]).unwrap();
        let loaded = ce(&b, "x");
        assert_eq!(
            old.loaded_epoch(crate::metadata::coordinator_partition("x", INTERNAL_PARTITIONS).unwrap()),
            Some(loaded)
        );

        // A successor loads the same `__transaction_state` partitions one
        // leader epoch later (as after a leader change; the old one has
        // not heard yet) and commits, through the partition leader (here,
        // this broker's own `TxnEffects`).
        let new = TxnCoordinator::open(TxnConfig::default());
        for index in (0..).take(INTERNAL_PARTITIONS) {
            let p = b.topic(TXN_TOPIC).unwrap().partition(index).unwrap();
            new.load(index, INTERNAL_PARTITIONS, p, loaded + 1).unwrap();
        }
        new.end("x", pid, epoch, true, &*b).unwrap();
        assert_eq!(data.log_end_offset(), 1, "the commit marker");

        // The deposed coordinator tries to abort it: the leader refuses its
        // marker (TRANSACTION_COORDINATOR_FENCED), it answers NOT_COORDINATOR.
        assert_eq!(old.end("x", pid, epoch, false, &*b), Err(TxnError::NotCoordinator));
        assert_eq!(data.log_end_offset(), 1, "no abort marker after the commit");
        let refused = TxnEffects::write_marker(&*b, "d", 0, pid, epoch, false, loaded);
        assert!(matches!(refused, Err(BrokerError::Txn(TxnError::CoordinatorFenced))), "{refused:?}");
        // The successor's retry (same coordinator epoch) and a newer one pass.
        TxnEffects::write_marker(&*b, "d", 0, pid, epoch, true, loaded + 1).unwrap();
        TxnEffects::write_marker(&*b, "d", 0, pid, epoch, true, loaded + 2).unwrap();
        assert_eq!(data.log_end_offset(), 3);
        // The epoch is part of the producer state a restart rebuilds from
        // the markers themselves (no snapshot left).
        let log_dir = data.log().dir().to_path_buf();
        drop((old, new, data));
        close(b);
        std::fs::remove_file(log_dir.join("producers.json")).unwrap();
        let (b, _c) = open(dir.path());
        let refused = TxnEffects::write_marker(&*b, "d", 0, pid, epoch, false, loaded + 1);
        assert!(matches!(refused, Err(BrokerError::Txn(TxnError::CoordinatorFenced))), "{refused:?}");
        TxnEffects::write_marker(&*b, "d", 0, pid, epoch, false, loaded + 2).unwrap();
    }
}
