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

//!
//! The coordinator's parts, one file each: `state` (errors, states, the
//! stored record), `init` (InitProducerId), `ongoing` (what an open
//! transaction gathers: AddPartitionsToTxn, AddOffsetsToTxn,
//! TxnOffsetCommit, produce checks), `ending` (EndTxn: Prepare, markers,
//! Complete). This file holds the coordinator itself: loading and
//! unloading partitions, writes, the housekeeping tick and describing.

mod ending;
mod init;
mod ongoing;
mod state;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ferry_util::sync::lock;
use ferry_util::time::now_ms_u64;

use crate::coordinator_partitions::CoordinatorPartitions;
use crate::error::{BrokerError, Result};
use crate::group::Committed;
use crate::internal_log;
use crate::partition::{Appended, Partition};

use state::TxnResult;
pub use state::{TxnError, TxnMeta, TxnState};

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
    /// The `__transaction_state` partitions served here.
    parts: CoordinatorPartitions,
}

impl TxnCoordinator {
    /// A coordinator serving no partition yet (see [`TxnCoordinator::load`]).
    pub fn open(config: TxnConfig) -> TxnCoordinator {
        TxnCoordinator { config, txns: Mutex::new(HashMap::new()), parts: CoordinatorPartitions::default() }
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
            // Only a tombstone forgets an id: a record that does not parse
            // leaves the id's previous state (and says so).
            match value.map(serde_json::from_slice::<TxnMeta>) {
                Some(Ok(m)) => {
                    found.insert(id.to_string(), m);
                }
                Some(Err(e)) => {
                    tracing::error!(transactional_id = id, error = %e, "unreadable transaction state record");
                }
                None => {
                    found.remove(id);
                }
            }
        })?;
        let mine = |id: &str| crate::metadata::coordinator_partition(id, count) == Some(index);
        found.retain(|id, _| mine(id));
        let mut txns = lock(&self.txns);
        // Whatever an earlier term left in memory goes; the log is the truth.
        self.drop_ids(&mut txns, |id| mine(id));
        txns.extend(found);
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
        txns.retain(|id, _| !which(id));
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
        // A state that cannot be stored is refused, never written as a
        // tombstone (which a coordinator loading the log takes as "no such
        // id": it answered the producer INVALID_PRODUCER_ID_MAPPING).
        let value = match meta.map(serde_json::to_vec).transpose() {
            Ok(value) => value,
            Err(e) => {
                tracing::error!(transactional_id = id, error = %e, "cannot encode transaction state");
                return Err(TxnError::CoordinatorNotAvailable);
            }
        };
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
                if self.append(&id, None).is_ok() {
                    txns.remove(&id);
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
