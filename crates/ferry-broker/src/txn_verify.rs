//! KIP-890 part 1: the leader of a data partition takes a producer's
//! transactional batch only if the partition is in the producer's open
//! transaction. Where this node coordinates the transactional id, its
//! coordinator answers in-process for every batch. Elsewhere the leader asks
//! the coordinator's node (AddPartitionsToTxn `verify_only` as a peer call)
//! before the first batch of a (producer id, epoch) here; the answer is kept
//! in the partition's producer state until the transaction's marker, so
//! later batches of that transaction append without a round trip. A batch
//! outside the transaction gets INVALID_TXN_STATE; an unreachable or moving
//! coordinator a retriable NOT_ENOUGH_REPLICAS (`BrokerError::TxnUnverified`,
//! as Kafka since KAFKA-15459), so no batch opens a transaction on a
//! partition that no coordinator will ever close (a hanging transaction).

use std::sync::Arc;

use ferry_records::batch::BatchHeader;

use crate::broker::Broker;
use crate::error::{BrokerError, Result};
use crate::metadata::{CoordinatorKind, PeerError, PeerReply, PeerRequest};
use crate::partition::Partition;
use crate::txn::TxnError;

/// What a batch needs before its partition takes it.
pub enum TxnBatch {
    /// Append as is: not transactional, or checked by this node's
    /// coordinator.
    Append,
    /// Append with [`Partition::append_checked`] (`verified_txn`): the
    /// transaction was verified here before.
    AppendVerified,
    /// Ask the transaction's coordinator first
    /// ([`Broker::verify_txn_batches`]), then append as `AppendVerified`.
    Verify(PendingVerification),
}

/// A partition waiting for the coordinator's answer about a producer.
pub struct PendingVerification {
    /// The partition the batch is for.
    pub partition: Arc<Partition>,
    producer_id: i64,
    epoch: i16,
    token: u64,
}

impl Broker {
    /// What a produce request's batch for `partition` (which this node
    /// leads) needs before it is appended; an error refuses it now.
    /// `transactional_id` is the request's.
    pub fn check_txn_batch(
        &self,
        transactional_id: Option<&str>,
        partition: &Arc<Partition>,
        records: &[u8],
    ) -> Result<TxnBatch> {
        let h = match BatchHeader::parse(records) {
            Ok(h) if h.is_transactional() && !h.is_control() => h,
            _ => return Ok(TxnBatch::Append), // the log checks the rest
        };
        // Kafka refuses transactional records without a transactional id.
        let id = transactional_id.ok_or(BrokerError::Txn(TxnError::InvalidTxnState))?;
        let (pid, epoch) = (h.producer_id, h.producer_epoch);
        if self.txns().serves(id) {
            self.txns().verify_produce(id, pid, epoch, &partition.topic, partition.index).map_err(refused)?;
            return Ok(TxnBatch::Append);
        }
        if partition.txn_verified(pid, epoch) {
            return Ok(TxnBatch::AppendVerified);
        }
        let token = partition.begin_verification(pid, epoch);
        Ok(TxnBatch::Verify(PendingVerification { partition: partition.clone(), producer_id: pid, epoch, token }))
    }

    /// Asks the coordinator of `transactional_id` whether the pending
    /// partitions are in its producer's open transaction (one call per
    /// producer); per partition, in order: verified (append with
    /// `verified_txn`) or why not.
    pub async fn verify_txn_batches(&self, transactional_id: &str, pending: &[PendingVerification]) -> Vec<Result<()>> {
        let mut results: Vec<Option<Result<()>>> = pending.iter().map(|_| None).collect();
        while let Some(first) = results.iter().position(Option::is_none) {
            let (pid, epoch) = (pending[first].producer_id, pending[first].epoch);
            let group: Vec<usize> = (first..pending.len())
                .filter(|&i| results[i].is_none() && (pending[i].producer_id, pending[i].epoch) == (pid, epoch))
                .collect();
            let partitions: Vec<(String, i32)> =
                group.iter().map(|&i| (pending[i].partition.topic.clone(), pending[i].partition.index)).collect();
            let answer = self.ask_coordinator(transactional_id, pid, epoch, partitions).await;
            for (k, &i) in group.iter().enumerate() {
                let p = &pending[i];
                let verified = match &answer {
                    Ok(v) => v.get(k).copied().unwrap_or(false),
                    Err(_) => false,
                };
                // A marker written meanwhile ended the transaction the answer
                // was about: the batch is outside it.
                let current = p.partition.finish_verification(p.producer_id, p.token, verified);
                results[i] = Some(match &answer {
                    Err(e) => Err(copy(e)),
                    Ok(_) if verified && current => Ok(()),
                    Ok(_) => Err(BrokerError::Txn(TxnError::InvalidTxnState)),
                });
            }
        }
        results.into_iter().map(|r| r.unwrap_or(Err(BrokerError::Txn(TxnError::InvalidTxnState)))).collect()
    }

    /// One verify_only call on the id's coordinator (in-process if it moved
    /// here since the check).
    async fn ask_coordinator(
        &self,
        id: &str,
        pid: i64,
        epoch: i16,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<bool>> {
        if self.txns().serves(id) {
            return self.txns().verify_partitions(id, pid, epoch, &partitions).map_err(refused);
        }
        let node = self
            .metadata()
            .coordinator(CoordinatorKind::Transaction, id)
            .map(|n| n.id)
            .filter(|n| *n != self.node_id())
            .ok_or_else(|| BrokerError::TxnUnverified("the transaction coordinator is not available".into()))?;
        let controller = self
            .controller
            .get()
            .cloned()
            .ok_or_else(|| BrokerError::TxnUnverified("no controller installed".into()))?;
        let request = PeerRequest::VerifyTxn { transactional_id: id.to_string(), producer_id: pid, epoch, partitions };
        match controller.call_peer(node, request).await {
            Ok(PeerReply::TxnVerified(v)) => Ok(v),
            Ok(other) => Err(BrokerError::TxnUnverified(format!("node {node} answered {other:?}"))),
            Err(PeerError::Txn(e)) => Err(refused(e)),
            Err(e) => {
                tracing::debug!(transactional_id = id, node, error = %e, "transaction verification failed");
                Err(BrokerError::TxnUnverified(format!("coordinator node {node}: {e}")))
            }
        }
    }
}

/// A coordinator's refusal as the produce answer: Produce knows no
/// PRODUCER_FENCED (INVALID_PRODUCER_EPOCH, as from Kafka), and a
/// coordinator that moves, loads or is ending the transaction is retried.
fn refused(e: TxnError) -> BrokerError {
    match e {
        TxnError::ProducerFenced => BrokerError::InvalidProducerEpoch,
        TxnError::NotCoordinator | TxnError::CoordinatorNotAvailable | TxnError::ConcurrentTransactions => {
            BrokerError::TxnUnverified(format!("{e:?}"))
        }
        e => BrokerError::Txn(e),
    }
}

/// The one error of a call, for each partition it covered.
fn copy(e: &BrokerError) -> BrokerError {
    match e {
        BrokerError::InvalidProducerEpoch => BrokerError::InvalidProducerEpoch,
        BrokerError::Txn(t) => BrokerError::Txn(*t),
        BrokerError::TxnUnverified(why) => BrokerError::TxnUnverified(why.clone()),
        other => BrokerError::TxnUnverified(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::BrokerConfig;
    use crate::partition::Acks;

    /// A transactional batch of one record for (pid, epoch).
    fn txn_batch(pid: i64, epoch: i16) -> Vec<u8> {
        let record = ferry_records::records::NewRecord {
            key: None,
            value: Some(b"v"),
            headers: vec![],
            timestamp: ferry_util::time::now_ms(),
        };
        let mut batch = ferry_records::records::build_batch(
            &[record],
            ferry_records::compression::Compression::None,
            pid,
            epoch,
            0,
        )
        .unwrap();
        // Transactional attribute bit, then the CRC (over attributes onwards).
        batch[22] |= 1 << 4;
        let crc = ferry_records::batch::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        batch
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_coordinator_that_cannot_answer_gets_a_retriable_refusal_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let b = crate::testing::open(BrokerConfig { data_dir: dir.path().to_path_buf(), ..BrokerConfig::default() })
            .unwrap();
        b.create_topic("d", Some(1), &std::collections::BTreeMap::new(), false).await.unwrap();
        let p = b.leader_partition("d", 0).unwrap();
        // Without the request's transactional id: refused.
        let no_id = b.check_txn_batch(None, &p, &txn_batch(5, 0));
        assert!(matches!(no_id, Err(BrokerError::Txn(TxnError::InvalidTxnState))));
        // The id's `__transaction_state` partition is not served here (it
        // moved away, or is loading) and no other node leads it.
        let count = crate::testing::INTERNAL_PARTITIONS;
        let index = crate::metadata::coordinator_partition("gone", count).unwrap();
        b.txns().unload(index);
        let Ok(TxnBatch::Verify(v)) = b.check_txn_batch(Some("gone"), &p, &txn_batch(5, 0)) else {
            panic!("a batch whose coordinator is not here waits for its answer");
        };
        let verdict = b.verify_txn_batches("gone", &[v]).await.pop().unwrap();
        assert!(matches!(verdict, Err(BrokerError::TxnUnverified(_))), "{verdict:?}");
        // The refusal left nothing behind: the next batch asks again, and
        // an append claiming verification is refused.
        assert!(!p.txn_verified(5, 0));
        let forced = p.append_checked(&txn_batch(5, 0), Acks::Leader, true);
        assert!(matches!(forced, Err(BrokerError::Txn(TxnError::InvalidTxnState))));
        assert_eq!(p.high_watermark(), 0);
        assert_eq!(p.last_stable_offset(), 0);
    }

    #[test]
    fn coordinator_errors_become_produce_answers() {
        assert!(matches!(refused(TxnError::ProducerFenced), BrokerError::InvalidProducerEpoch));
        for retried in [TxnError::NotCoordinator, TxnError::CoordinatorNotAvailable, TxnError::ConcurrentTransactions] {
            assert!(matches!(refused(retried), BrokerError::TxnUnverified(_)), "{retried:?}");
        }
        assert!(matches!(
            refused(TxnError::InvalidProducerIdMapping),
            BrokerError::Txn(TxnError::InvalidProducerIdMapping)
        ));
    }
}
