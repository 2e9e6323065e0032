//! InitProducerId for a transactional id: binds or bumps its producer,
//! fencing older instances and aborting their open transaction.

use std::collections::{BTreeMap, BTreeSet};

use ferry_util::sync::lock;
use ferry_util::time::now_ms_u64;

use super::state::TxnResult;
use super::{TxnCoordinator, TxnEffects, TxnError, TxnMeta, TxnState};
use crate::producer::ProducerIds;

impl TxnCoordinator {
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
        // The new state takes effect once it is in the log (see `extend`).
        let mut next = m.clone();
        if next.producer_epoch >= i16::MAX - 1 {
            next.producer_id = ids.next().ok_or(TxnError::CoordinatorNotAvailable)?;
            next.producer_epoch = 0;
        } else {
            next.producer_epoch += 1;
        }
        next.timeout_ms = timeout_ms;
        next.state = TxnState::Empty;
        next.update_ms = now;
        let (pid, epoch) = (next.producer_id, next.producer_epoch);
        let end = self.append(id, Some(&next))?;
        *m = next;
        drop(txns);
        self.durable(end)?;
        Ok((pid, epoch))
    }
}
