//! The transaction coordinator: Kafka's transaction state machine per
//! transactional id, kept in an internal compacted log
//! (`<data>/internal/__transaction_state`, one record per id) and rebuilt
//! from it at start.
//!
//! A transaction goes Empty -> Ongoing (AddPartitionsToTxn,
//! AddOffsetsToTxn) -> PrepareCommit / PrepareAbort (EndTxn, a timeout, or a
//! new producer instance fencing the old) -> CompleteCommit / CompleteAbort.
//! The Prepare state is durable before any marker is written, and the
//! Complete state only after every marker is, so a crash anywhere in between
//! is finished on the next start by writing the markers again (a marker for
//! a transaction a partition already closed is a no-op there).
//!
//! Offsets sent with TxnOffsetCommit wait in the transaction's record and
//! reach the group coordinator only on commit: for a consumer, input offsets
//! and output records become visible together or not at all.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use ferry_log::{Log, LogManager};
use ferry_util::sync::lock;
use ferry_util::time::now_ms_u64;
use serde::{Deserialize, Serialize};

use crate::error::{BrokerError, Result};
use crate::group::Committed;
use crate::internal_log;
use crate::producer::ProducerIds;

/// Why a transactional request was refused; front-ends map these to codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// and waits until it is on disk. A partition that no longer exists is
    /// not an error.
    fn write_marker(&self, topic: &str, partition: i32, producer_id: i64, epoch: i16, commit: bool) -> Result<()>;
    /// Commits a transaction's offsets for a group, durably.
    fn commit_offsets(&self, group: &str, offsets: Vec<(String, i32, Committed)>) -> Result<()>;
}

/// Kafka's transaction coordinator for this broker (see the module docs).
pub struct TxnCoordinator {
    config: TxnConfig,
    log: Arc<Log>,
    txns: Mutex<HashMap<String, TxnMeta>>,
    /// Producer id -> transactional id, for checking produce requests.
    /// Lock order: `txns`, then `pids`.
    pids: Mutex<HashMap<i64, String>>,
}

impl TxnCoordinator {
    /// Opens the internal log and rebuilds every transactional id's state.
    pub fn open(data_dir: &Path, logs: &LogManager, config: TxnConfig) -> Result<TxnCoordinator> {
        let log = internal_log::open(data_dir, logs, "__transaction_state")?;
        let mut txns = HashMap::new();
        internal_log::replay(&log, |key, value| {
            let Ok(id) = std::str::from_utf8(key) else { return };
            match value.and_then(|v| serde_json::from_slice::<TxnMeta>(v).ok()) {
                Some(m) => txns.insert(id.to_string(), m),
                None => txns.remove(id),
            };
        })?;
        let pids = txns.iter().map(|(id, m)| (m.producer_id, id.clone())).collect();
        Ok(TxnCoordinator { config, log, txns: Mutex::new(txns), pids: Mutex::new(pids) })
    }

    /// Appends a state record (under the `txns` lock, so the log's order is
    /// the order of the changes) and returns the offset to wait for.
    fn append(&self, id: &str, meta: Option<&TxnMeta>) -> TxnResult<u64> {
        let value = meta.and_then(|m| serde_json::to_vec(m).ok());
        internal_log::append(&self.log, &[(id.as_bytes(), value.as_deref())]).map_err(|e| {
            tracing::error!(transactional_id = id, error = %e, "transaction state write failed");
            TxnError::CoordinatorNotAvailable
        })
    }

    /// Waits (blocking) until the state records below `end` are on disk.
    fn durable(&self, end: u64) -> TxnResult<()> {
        self.log.flush_to(end).map_err(|e| {
            tracing::error!(error = %e, "transaction state flush failed");
            TxnError::CoordinatorNotAvailable
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
    pub fn verify_produce(&self, pid: i64, epoch: i16, topic: &str, partition: i32) -> TxnResult<()> {
        let txns = lock(&self.txns);
        let Some(m) = lock(&self.pids).get(&pid).and_then(|id| txns.get(id)) else {
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
        for (topic, partition) in &m.partitions {
            effects.write_marker(topic, *partition, m.producer_id, m.producer_epoch, commit).map_err(|e| {
                tracing::error!(transactional_id = id, topic, partition, error = %e, "transaction marker write failed");
                TxnError::CoordinatorNotAvailable
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
    use std::sync::Mutex as StdMutex;

    /// (topic, partition, producer id, epoch, commit).
    type Marker = (String, i32, i64, i16, bool);
    type GroupCommit = (String, Vec<(String, i32, Committed)>);

    /// Records what the coordinator asked for.
    #[derive(Default)]
    struct Recorder {
        markers: StdMutex<Vec<Marker>>,
        offsets: StdMutex<Vec<GroupCommit>>,
    }

    impl TxnEffects for Recorder {
        fn write_marker(&self, topic: &str, partition: i32, pid: i64, epoch: i16, commit: bool) -> Result<()> {
            self.markers.lock().unwrap().push((topic.to_string(), partition, pid, epoch, commit));
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

    fn open(dir: &Path, logs: &LogManager) -> TxnCoordinator {
        TxnCoordinator::open(dir, logs, TxnConfig::default()).unwrap()
    }

    #[test]
    fn commit_writes_markers_then_offsets_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogManager::new(Default::default());
        let ids = ProducerIds::default();
        ids.add_block(0, 1000);
        let fx = Recorder::default();
        let c = open(dir.path(), &logs);
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
            vec![("a".into(), 0, pid, epoch, true), ("b".into(), 1, pid, epoch, true)]
        );
        assert_eq!(fx.offsets.lock().unwrap()[0].0, "g");
        // A retried commit succeeds; an abort now does not fit.
        c.end("t1", pid, epoch, true, &fx).unwrap();
        assert_eq!(c.end("t1", pid, epoch, false, &fx), Err(TxnError::InvalidTxnState));
        drop(c);
        let c = open(dir.path(), &logs);
        let m = c.describe("t1").unwrap();
        assert_eq!((m.state, m.producer_id, m.partitions.len()), (TxnState::CompleteCommit, pid, 0));
    }

    #[test]
    fn a_new_instance_fences_the_old_and_aborts_its_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogManager::new(Default::default());
        let ids = ProducerIds::default();
        ids.add_block(0, 1000);
        let fx = Recorder::default();
        let c = open(dir.path(), &logs);
        let (pid, e0) = c.init_producer("t", 60_000, None, &ids, &fx).unwrap();
        c.add_partitions("t", pid, e0, &[("a".to_string(), 0)]).unwrap();
        let (pid2, e1) = c.init_producer("t", 60_000, None, &ids, &fx).unwrap();
        assert_eq!(pid2, pid);
        assert!(e1 > e0 + 1, "the abort fenced with one bump, the new instance got another");
        assert_eq!(*fx.markers.lock().unwrap(), vec![("a".into(), 0, pid, e0 + 1, false)]);
        assert_eq!(c.add_partitions("t", pid, e0, &[("a".to_string(), 0)]), Err(TxnError::ProducerFenced));
        assert_eq!(c.init_producer("t", 0, None, &ids, &fx), Err(TxnError::InvalidTransactionTimeout));
        assert_eq!(c.init_producer("t", 1000, Some((pid, e0)), &ids, &fx), Err(TxnError::ProducerFenced));
    }

    #[test]
    fn idle_transactional_ids_expire_but_open_transactions_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogManager::new(Default::default());
        let ids = ProducerIds::default();
        ids.add_block(0, 1000);
        let fx = Recorder::default();
        let config = TxnConfig { id_expiration_ms: 0, ..TxnConfig::default() };
        let c = TxnCoordinator::open(dir.path(), &logs, config.clone()).unwrap();
        c.init_producer("idle", 60_000, None, &ids, &fx).unwrap();
        let (pid, epoch) = c.init_producer("busy", 60_000, None, &ids, &fx).unwrap();
        c.add_partitions("busy", pid, epoch, &[("a".to_string(), 0)]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        c.tick(&fx);
        assert!(c.describe("idle").is_none());
        assert!(c.describe("busy").is_some());
        drop(c);
        let c = TxnCoordinator::open(dir.path(), &logs, config).unwrap();
        assert!(c.describe("idle").is_none(), "the expiry is durable");
    }

    #[test]
    fn timed_out_and_prepared_transactions_are_finished_by_the_ticker() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogManager::new(Default::default());
        let ids = ProducerIds::default();
        ids.add_block(0, 1000);
        let fx = Recorder::default();
        let c = open(dir.path(), &logs);
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
        let c = open(dir.path(), &logs);
        std::thread::sleep(std::time::Duration::from_millis(5));
        c.tick(&fx);
        let markers = fx.markers.lock().unwrap().clone();
        assert!(markers.contains(&("a".into(), 0, pid, epoch + 1, false)), "{markers:?}");
        assert!(markers.contains(&("b".into(), 0, pid2, epoch2, true)), "{markers:?}");
        assert_eq!(c.describe("t").unwrap().state, TxnState::CompleteAbort);
        assert_eq!(c.describe("u").unwrap().state, TxnState::CompleteCommit);
        assert_eq!(c.end("t", pid, epoch, true, &fx), Err(TxnError::ProducerFenced));
    }
}
