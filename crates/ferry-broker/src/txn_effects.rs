//! How the transaction coordinator's work reaches other nodes: commit and
//! abort markers are written by each partition's leader (Kafka's
//! WriteTxnMarkers), a committed transaction's offsets by the group's
//! coordinator, and TxnOffsetCommit (sent by clients to the group's
//! coordinator) is staged with the transaction's coordinator. Each goes
//! to the node the image names, through the controller's peer link, and is
//! answered once the write is on that partition's ISR.

use crate::broker::Broker;
use crate::error::{BrokerError, Result};
use crate::group::{Committed, GroupError};
use crate::metadata::{CoordinatorKind, PeerError, PeerReply, PeerRequest};
use crate::txn::{TxnEffects, TxnError};

/// Commits and aborts reach partitions and groups through the broker.
impl TxnEffects for Broker {
    fn write_marker(
        &self,
        topic: &str,
        partition: i32,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
    ) -> Result<()> {
        let image = self.metadata();
        if image.applied_index == 0 {
            // No image yet (start-up): nothing is hosted; the housekeeping
            // tick retries once partitions are.
            return Err(BrokerError::ControllerUnavailable("no cluster metadata yet".into()));
        }
        let Some(info) = image.partition(topic, partition) else {
            return Ok(()); // deleted since it joined the transaction
        };
        if info.leader == self.config.node_id {
            let p = self.leader_partition(topic, partition)?;
            return p.write_marker(producer_id, epoch, commit, coordinator_epoch).map(|_| ());
        }
        if info.leader < 0 {
            return Err(BrokerError::NotLeaderOrFollower); // retried by the tick
        }
        // Kafka's WriteTxnMarkers: the partition's leader writes it and
        // answers once its ISR has it.
        let request = PeerRequest::WriteTxnMarker {
            topic: topic.to_string(),
            partition,
            producer_id,
            epoch,
            commit,
            coordinator_epoch,
        };
        self.call_peer_blocking(info.leader, request).map(|_| ())
    }

    fn commit_offsets(&self, group: &str, offsets: Vec<(String, i32, Committed)>) -> Result<()> {
        if self.groups().serves(group) {
            return Ok(self.groups().store_offsets(group, offsets)?.acknowledged_blocking()?);
        }
        // The group's coordinator is another node: it writes them there.
        let node = self
            .metadata()
            .coordinator(CoordinatorKind::Group, group)
            .map(|n| n.id)
            .ok_or(BrokerError::Group(GroupError::CoordinatorNotAvailable))?;
        if node == self.config.node_id {
            return Err(GroupError::CoordinatorNotAvailable.into()); // not loaded yet
        }
        self.call_peer_blocking(node, PeerRequest::CommitOffsets { group: group.to_string(), offsets }).map(|_| ())
    }
}

impl Broker {
    /// TxnOffsetCommit: stages a transaction's offsets for `group` with the
    /// transaction's coordinator (here, or the node leading the id's
    /// partition of `__transaction_state`). Call from a blocking thread.
    pub fn stage_txn_offsets(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
        offsets: Vec<(String, i32, Committed)>,
    ) -> std::result::Result<(), TxnError> {
        if self.txns().serves(transactional_id) {
            return self.txns().stage_offsets(transactional_id, producer_id, epoch, group, offsets);
        }
        let node = self
            .metadata()
            .coordinator(CoordinatorKind::Transaction, transactional_id)
            .map(|n| n.id)
            .filter(|n| *n != self.node_id())
            .ok_or(TxnError::CoordinatorNotAvailable)?;
        let request = PeerRequest::StageTxnOffsets {
            transactional_id: transactional_id.to_string(),
            producer_id,
            epoch,
            group: group.to_string(),
            offsets,
        };
        match self.call_peer_blocking(node, request) {
            Ok(_) => Ok(()),
            Err(BrokerError::Peer(PeerError::Txn(e))) => Err(e),
            Err(e) => {
                tracing::debug!(transactional_id, node, error = %e, "staging transaction offsets failed");
                Err(TxnError::CoordinatorNotAvailable)
            }
        }
    }

    /// Carries out a transaction peer call on this node (see `serve_peer`).
    pub(crate) fn serve_txn_peer(&self, request: PeerRequest) -> std::result::Result<PeerReply, PeerError> {
        match request {
            PeerRequest::WriteTxnMarker { topic, partition, producer_id, epoch, commit, coordinator_epoch } => {
                let part = self.leader_partition(&topic, partition)?;
                part.write_marker(producer_id, epoch, commit, coordinator_epoch)?;
            }
            PeerRequest::CommitOffsets { group, offsets } => {
                let written = self.groups().store_offsets(&group, offsets).map_err(group_peer_error)?;
                written.acknowledged_blocking().map_err(group_peer_error)?;
            }
            PeerRequest::StageTxnOffsets { transactional_id, producer_id, epoch, group, offsets } => {
                self.txns()
                    .stage_offsets(&transactional_id, producer_id, epoch, &group, offsets)
                    .map_err(PeerError::Txn)?;
            }
            PeerRequest::VerifyTxn { transactional_id, producer_id, epoch, partitions } => {
                let verified = self
                    .txns()
                    .verify_partitions(&transactional_id, producer_id, epoch, &partitions)
                    .map_err(PeerError::Txn)?;
                return Ok(PeerReply::TxnVerified(verified));
            }
            other => return Err(PeerError::Failed(format!("not a transaction call: {other:?}"))),
        }
        Ok(PeerReply::Done)
    }
}

fn group_peer_error(e: GroupError) -> PeerError {
    match e {
        GroupError::NotCoordinator => PeerError::NotLeaderOrFollower,
        e => PeerError::Failed(format!("{e:?}")),
    }
}
