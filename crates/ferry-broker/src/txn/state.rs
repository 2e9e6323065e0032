//! What the transaction coordinator keeps and answers: its errors, Kafka's
//! transaction states, and the record stored per transactional id.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::BrokerError;
use crate::group::Committed;

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

pub(super) type TxnResult<T> = std::result::Result<T, TxnError>;

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

    pub(super) fn preparing(self) -> bool {
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
    /// TxnOffsetCommit offsets by group, applied on commit. Stored as a
    /// list per group: JSON map keys must be strings, and a (topic,
    /// partition) key made the whole record fail to serialize.
    #[serde(with = "staged_offsets")]
    pub offsets: BTreeMap<String, BTreeMap<(String, i32), Committed>>,
    /// Wall-clock ms when the open transaction began (0: none open).
    pub start_ms: u64,
    /// Wall-clock ms of the last state change.
    pub update_ms: u64,
}

/// The stored form of [`TxnMeta::offsets`]: group -> [(topic, partition,
/// offset)]. A record from before had to have no offsets (one with offsets
/// could not be written), and `{}` reads the same in both forms.
mod staged_offsets {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::group::Committed;

    type Staged = BTreeMap<String, BTreeMap<(String, i32), Committed>>;

    pub(super) fn serialize<S: Serializer>(offsets: &Staged, s: S) -> Result<S::Ok, S::Error> {
        let listed: BTreeMap<&String, Vec<(&String, i32, &Committed)>> =
            offsets.iter().map(|(group, o)| (group, o.iter().map(|((t, p), c)| (t, *p, c)).collect())).collect();
        listed.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Staged, D::Error> {
        let listed = BTreeMap::<String, Vec<(String, i32, Committed)>>::deserialize(d)?;
        Ok(listed.into_iter().map(|(group, o)| (group, o.into_iter().map(|(t, p, c)| ((t, p), c)).collect())).collect())
    }
}
