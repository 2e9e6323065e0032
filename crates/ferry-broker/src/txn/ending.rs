//! EndTxn: Ongoing -> Prepare{Commit,Abort} (durable), then the markers
//! (with the coordinator epoch) and a commit's offsets, then Complete.

use std::collections::HashMap;

use ferry_util::sync::lock;
use ferry_util::time::now_ms_u64;

use super::state::TxnResult;
use super::{TxnCoordinator, TxnEffects, TxnError, TxnMeta, TxnState};
use crate::error::BrokerError;
use crate::metadata::PeerError;

impl TxnCoordinator {
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
    pub(super) fn begin_end(
        &self,
        txns: &mut std::sync::MutexGuard<'_, HashMap<String, TxnMeta>>,
        id: &str,
        commit: bool,
        fence: bool,
    ) -> TxnResult<()> {
        let m = txns.get_mut(id).ok_or(TxnError::InvalidProducerIdMapping)?;
        // The new state takes effect once it is in the log (see `extend`).
        let mut next = m.clone();
        next.state = if commit { TxnState::PrepareCommit } else { TxnState::PrepareAbort };
        if fence && next.producer_epoch < i16::MAX - 1 {
            next.producer_epoch += 1;
        }
        next.update_ms = now_ms_u64();
        let end = self.append(id, Some(&next))?;
        *m = next;
        // Durable before any marker: a restart must know to finish this.
        self.durable(end)
    }

    /// Writes the markers of a Prepare{Commit,Abort} transaction, commits
    /// its offsets (on commit), then records it Complete.
    pub(super) fn complete(&self, id: &str, effects: &dyn TxnEffects) -> TxnResult<()> {
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
}
