//! What an open transaction gathers: partitions (AddPartitionsToTxn and
//! the produce checks), groups and offsets (AddOffsetsToTxn,
//! TxnOffsetCommit); each change is persisted before it is answered.

use std::collections::HashMap;

use ferry_util::sync::lock;
use ferry_util::time::now_ms_u64;

use super::state::TxnResult;
use super::{TxnCoordinator, TxnError, TxnMeta, TxnState};
use crate::group::Committed;

impl TxnCoordinator {
    /// Checks the producer against the id's current one.
    pub(super) fn check<'a>(
        txns: &'a mut HashMap<String, TxnMeta>,
        id: &str,
        pid: i64,
        epoch: i16,
    ) -> TxnResult<&'a mut TxnMeta> {
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
    pub(super) fn extend(&self, id: &str, pid: i64, epoch: i16, f: impl FnOnce(&mut TxnMeta) -> bool) -> TxnResult<()> {
        if !self.parts.serves(id) {
            return Err(TxnError::NotCoordinator);
        }
        let mut txns = lock(&self.txns);
        let m = Self::check(&mut txns, id, pid, epoch)?;
        let now = now_ms_u64();
        // Changes go to a copy that replaces the state only once it is in
        // the log. Changing memory first made a failed write (too few
        // in-sync replicas) look done: the client's retry found nothing to
        // change and wrote nothing, so a partition of the transaction was
        // missing from the log, and a coordinator loaded from it after a
        // move never wrote that partition's marker (a transaction left
        // hanging, found by the fault harness, docs/reliability.md).
        let mut next = m.clone();
        let mut changed = f(&mut next);
        if next.state != TxnState::Ongoing {
            next.state = TxnState::Ongoing;
            next.start_ms = now;
            changed = true;
        }
        if !changed {
            return Ok(());
        }
        next.update_ms = now;
        let end = self.append(id, Some(&next))?;
        *m = next;
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

    /// Checks that a transactional batch of transactional id `id` may be
    /// written: its producer's transaction is open and holds the partition
    /// (Kafka's KIP-890 verification), so no stray batch can hold the last
    /// stable offset. Only the id's coordinator knows: elsewhere this is
    /// NOT_COORDINATOR, and the partition's leader asks the coordinator
    /// (`Broker::check_txn_batch`).
    pub fn verify_produce(&self, id: &str, pid: i64, epoch: i16, topic: &str, partition: i32) -> TxnResult<()> {
        if !self.parts.serves(id) {
            return Err(TxnError::NotCoordinator);
        }
        let txns = lock(&self.txns);
        let m = txns.get(id).filter(|m| m.producer_id == pid).ok_or(TxnError::InvalidProducerIdMapping)?;
        if epoch < m.producer_epoch {
            return Err(TxnError::ProducerFenced);
        }
        let key = (topic.to_string(), partition);
        if m.state != TxnState::Ongoing || epoch != m.producer_epoch || !m.partitions.contains(&key) {
            return Err(TxnError::InvalidTxnState);
        }
        Ok(())
    }
}
