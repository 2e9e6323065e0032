//! Idempotent producers: producer ids, and per partition the sequence
//! numbers that let a retried batch be recognised instead of appended twice,
//! and the open transactions (where each began), which bound the last
//! stable offset.
//!
//! Everything needed is in the batch headers (producer id, epoch, base
//! sequence), so a partition's state can always be rebuilt from its log. A
//! snapshot file (`producers.json` in the partition directory) bounds that
//! work: on open, the snapshot is loaded and only batches written after it
//! are scanned, as the log's own recovery does.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs;
use std::path::Path;
use std::sync::Mutex;

use ferry_log::AbortedTxn;
use ferry_records::batch::BatchHeader;
use ferry_util::time::now_ms_u64;
use serde::{Deserialize, Serialize};

use crate::error::{BrokerError, Result};

/// How many recent batches per producer are remembered for deduplication
/// (Kafka's max.in.flight.requests.per.connection limit for idempotence).
pub const DEDUP_WINDOW: usize = 5;

const SNAPSHOT: &str = "producers.json";

/// A batch an idempotent producer wrote: its sequences and where it went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct BatchMeta {
    first_seq: i32,
    last_seq: i32,
    first_offset: u64,
    last_offset: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMeta>,
    /// Wall-clock ms of the last write, for `producer.id.expiration.ms`.
    last_write_ms: u64,
    /// The coordinator epoch of the producer's last transaction marker here
    /// (Kafka's ProducerStateEntry.coordinatorEpoch; -1: none): a marker
    /// from an older coordinator epoch is refused.
    #[serde(default = "no_coordinator_epoch")]
    coordinator_epoch: i32,
}

fn no_coordinator_epoch() -> i32 {
    -1
}

impl Default for ProducerEntry {
    fn default() -> Self {
        ProducerEntry {
            epoch: 0,
            batches: VecDeque::new(),
            last_write_ms: 0,
            coordinator_epoch: no_coordinator_epoch(),
        }
    }
}

/// What a batch from an idempotent producer should do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sequence {
    /// Next in sequence: append it.
    Append,
    /// A retry of a batch already written: answer with its offsets.
    Duplicate { base_offset: u64, last_offset: u64 },
}

/// The idempotent producers of one partition.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
    /// Open transactions: producer id -> offset of its first batch here.
    #[serde(default)]
    ongoing: BTreeMap<i64, u64>,
    /// Offset up to which this state includes the log.
    offset: u64,
    #[serde(skip)]
    dirty: bool,
    /// KIP-890 verifications of transactional producers whose coordinator
    /// is another node: producer id -> the one under way or done (only in
    /// memory: a new leader verifies again). A marker ends it.
    #[serde(skip)]
    verifications: HashMap<i64, Verification>,
    #[serde(skip)]
    next_verification: u64,
}

/// A producer's verification with its transaction coordinator (KIP-890).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Verification {
    epoch: i16,
    /// Tells this verification from a later one of the same producer.
    token: u64,
    /// The coordinator said the partition is in the open transaction.
    confirmed: bool,
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

/// The last sequence of a batch (sequences wrap at i32::MAX, as Kafka's).
fn last_seq(h: &BatchHeader) -> i32 {
    ((i64::from(h.base_sequence) + i64::from(h.last_offset_delta)) % (i64::from(i32::MAX) + 1)) as i32
}

impl ProducerStates {
    /// Checks a batch against its producer's state (Kafka's rules).
    pub fn check(&self, h: &BatchHeader) -> Result<Sequence> {
        let first = h.base_sequence;
        let Some(entry) = self.producers.get(&h.producer_id) else {
            return if first == 0 { Ok(Sequence::Append) } else { Err(BrokerError::OutOfOrderSequence) };
        };
        if h.producer_epoch < entry.epoch {
            return Err(BrokerError::InvalidProducerEpoch);
        }
        if h.producer_epoch > entry.epoch {
            // A bumped epoch starts its sequences again at 0.
            return if first == 0 { Ok(Sequence::Append) } else { Err(BrokerError::OutOfOrderSequence) };
        }
        let last = last_seq(h);
        if let Some(b) = entry.batches.iter().find(|b| b.first_seq == first && b.last_seq == last) {
            return Ok(Sequence::Duplicate { base_offset: b.first_offset, last_offset: b.last_offset });
        }
        match entry.batches.back() {
            Some(prev) if first == next_seq(prev.last_seq) => Ok(Sequence::Append),
            None if first == 0 => Ok(Sequence::Append),
            _ => Err(BrokerError::OutOfOrderSequence),
        }
    }

    /// Records a batch written at `base_offset` (its header's base offset
    /// is the producer's, not the log's).
    pub fn record(&mut self, h: &BatchHeader, base_offset: u64, now_ms: u64) {
        let entry = self.producers.entry(h.producer_id).or_default();
        if h.producer_epoch != entry.epoch {
            entry.batches.clear();
            entry.epoch = h.producer_epoch;
        }
        entry.batches.push_back(BatchMeta {
            first_seq: h.base_sequence,
            last_seq: last_seq(h),
            first_offset: base_offset,
            last_offset: base_offset + u64::from(h.last_offset_delta),
        });
        while entry.batches.len() > DEDUP_WINDOW {
            entry.batches.pop_front();
        }
        entry.last_write_ms = entry.last_write_ms.max(now_ms);
        if h.is_transactional() {
            self.ongoing.entry(h.producer_id).or_insert(base_offset);
        }
        self.offset = self.offset.max(base_offset + u64::from(h.last_offset_delta) + 1);
        self.dirty = true;
    }

    /// Checks that a transaction marker's epoch is not older than its
    /// producer's (the coordinator fenced that producer long ago), and that
    /// its coordinator epoch is not older than the last marker's here
    /// (Kafka's TRANSACTION_COORDINATOR_FENCED: a deposed coordinator must
    /// not end a transaction its successor owns).
    pub fn check_marker(&self, producer_id: i64, epoch: i16, coordinator_epoch: i32) -> Result<()> {
        match self.producers.get(&producer_id) {
            Some(e) if coordinator_epoch < e.coordinator_epoch => {
                Err(BrokerError::Txn(crate::txn::TxnError::CoordinatorFenced))
            }
            Some(e) if epoch < e.epoch => Err(BrokerError::InvalidProducerEpoch),
            _ => Ok(()),
        }
    }

    /// Records a transaction marker written at `offset` by a coordinator
    /// in `coordinator_epoch`: the producer's transaction here ends; an
    /// aborted one is returned for the index.
    pub fn record_marker(
        &mut self,
        h: &BatchHeader,
        offset: u64,
        commit: bool,
        coordinator_epoch: i32,
        now_ms: u64,
    ) -> Option<AbortedTxn> {
        let entry = self.producers.entry(h.producer_id).or_default();
        entry.coordinator_epoch = coordinator_epoch;
        if h.producer_epoch > entry.epoch {
            // An epoch bumped by the coordinator (a timed-out transaction):
            // the producer's older batches no longer deduplicate.
            entry.batches.clear();
            entry.epoch = h.producer_epoch;
        }
        entry.last_write_ms = entry.last_write_ms.max(now_ms);
        self.offset = self.offset.max(offset + 1);
        self.dirty = true;
        // The transaction ends here: the next one is verified again, and a
        // verification still under way answers for an ended transaction.
        self.verifications.remove(&h.producer_id);
        let first = self.ongoing.remove(&h.producer_id)?;
        (!commit).then_some(AbortedTxn { producer_id: h.producer_id, first_offset: first, last_offset: offset })
    }

    /// Whether `producer_id` has a transaction open on this partition.
    pub fn is_ongoing(&self, producer_id: i64) -> bool {
        self.ongoing.contains_key(&producer_id)
    }

    /// Whether a transactional batch of (`producer_id`, `epoch`) belongs to
    /// a transaction already verified here (KIP-890): the producer's open
    /// transaction here is of that epoch, or its coordinator confirmed the
    /// partition and no marker came since.
    pub fn txn_verified(&self, producer_id: i64, epoch: i16) -> bool {
        let open = self.ongoing.contains_key(&producer_id)
            && self.producers.get(&producer_id).is_some_and(|e| e.epoch == epoch);
        open || self.verifications.get(&producer_id).is_some_and(|v| v.confirmed && v.epoch == epoch)
    }

    /// Starts verifying (`producer_id`, `epoch`) with its coordinator; the
    /// token confirms it later unless a marker ends it first. One under way
    /// for the same epoch is shared.
    pub fn begin_verification(&mut self, producer_id: i64, epoch: i16) -> u64 {
        if let Some(v) = self.verifications.get(&producer_id).filter(|v| v.epoch == epoch) {
            return v.token;
        }
        self.next_verification += 1;
        let token = self.next_verification;
        self.verifications.insert(producer_id, Verification { epoch, token, confirmed: false });
        token
    }

    /// The coordinator's answer to verification `token`: confirmed, it is
    /// remembered until a marker; refused, it is forgotten. False when a
    /// marker (or a newer verification) came meanwhile: the answer is about
    /// a transaction that ended.
    pub fn finish_verification(&mut self, producer_id: i64, token: u64, confirmed: bool) -> bool {
        let Some(v) = self.verifications.get_mut(&producer_id).filter(|v| v.token == token) else {
            return false;
        };
        if confirmed {
            v.confirmed = true;
        } else {
            self.verifications.remove(&producer_id);
        }
        true
    }

    /// Where the oldest open transaction began: no reader in
    /// `read_committed` mode may see past it.
    pub fn first_unstable_offset(&self) -> Option<u64> {
        self.ongoing.values().min().copied()
    }

    /// Loads the snapshot in `dir` and brings it up to the log's end by
    /// scanning the headers written after it. A snapshot past the log's end
    /// (the log lost its tail in a crash, or a follower truncated it) is
    /// not used: state is rebuilt from the whole log and a new snapshot is
    /// written at once. Keeping only the snapshot's batches below the end
    /// would lose older ones its window had already dropped, and leaving it
    /// on disk would let a later rebuild (once the log grows past its
    /// offset again, with other batches there) take the cut tail for the
    /// log's and miss what replaced it: a new leader would append a retry
    /// it holds (docs/reliability.md, Found 6).
    pub fn recover(dir: &Path, log: &ferry_log::Log, expiration_ms: u64) -> Result<ProducerStates> {
        let end = log.next_offset();
        let mut states: ProducerStates =
            fs::read(dir.join(SNAPSHOT)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        let stale = states.offset > end;
        if stale {
            states = ProducerStates::default();
        }
        let from = states.offset.max(log.log_start_offset());
        let now = now_ms_u64();
        let mut failed = None;
        log.scan_headers(from, |h| {
            if h.producer_id < 0 || failed.is_some() {
                return;
            }
            if !h.is_control() {
                states.record(h, h.base_offset, now);
                return;
            }
            // A marker: its type is in its one record.
            let marker = log.read_bytes(h.base_offset, h.size).map_err(BrokerError::from).and_then(|bytes| {
                let batch = bytes.get(..h.size).unwrap_or_default();
                ferry_records::records::end_txn_marker(batch).map_err(|e| BrokerError::Log(e.into()))
            });
            match marker {
                Ok(Some((commit, coordinator_epoch))) => {
                    if let Some(aborted) = states.record_marker(h, h.base_offset, commit, coordinator_epoch, now)
                        && let Err(e) = log.add_aborted_txn(aborted)
                    {
                        failed = Some(e.into());
                    }
                }
                Ok(None) => {}
                Err(e) => failed = Some(e),
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        states.offset = end;
        states.expire(now, expiration_ms);
        if stale {
            states.dirty = true;
            states.snapshot(dir)?;
        }
        Ok(states)
    }

    /// Forgets producers idle longer than `expiration_ms`.
    pub fn expire(&mut self, now_ms: u64, expiration_ms: u64) {
        let before = self.producers.len();
        self.producers.retain(|_, e| e.last_write_ms.saturating_add(expiration_ms) >= now_ms);
        self.dirty |= self.producers.len() != before;
    }

    /// No producer at all, and no snapshot left in `dir` (the log was
    /// emptied and restarted at a later offset).
    pub(crate) fn reset(dir: &Path) -> Result<ProducerStates> {
        match fs::remove_file(dir.join(SNAPSHOT)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        Ok(ProducerStates::default())
    }

    /// Writes the snapshot if anything changed since the last one.
    pub fn snapshot(&mut self, dir: &Path) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        write_atomic(&dir.join(SNAPSHOT), &serde_json::to_vec(self).map_err(std::io::Error::other)?)?;
        self.dirty = false;
        Ok(())
    }

    /// Number of producers tracked.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is tracked.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

/// This node's producer ids: a block of cluster-unique ids the controller
/// handed out (Kafka's AllocateProducerIds), taken one at a time. Nothing is
/// kept on disk: the controller's image remembers which blocks are gone, and
/// a restarted node asks for a new one.
#[derive(Debug, Default)]
pub struct ProducerIds {
    /// (next id to hand out, end of the block).
    state: Mutex<(i64, i64)>,
}

impl ProducerIds {
    /// A new producer id from the current block; `None` once it is used up
    /// (the caller gets a new block from the controller and tries again).
    pub fn next(&self) -> Option<i64> {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if s.0 >= s.1 {
            return None;
        }
        let id = s.0;
        s.0 += 1;
        Some(id)
    }

    /// Ids left in the current block.
    pub fn remaining(&self) -> i64 {
        let s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (s.1 - s.0).max(0)
    }

    /// Takes the block `first..first + count` (replacing what is left of
    /// the current one, which is simply never used).
    pub fn add_block(&self, first: i64, count: i64) {
        *self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = (first, first.saturating_add(count));
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(ferry_util::fs::write_atomic(path, bytes, true)?)
}

/// The first id not handed out by a pre-cluster data directory
/// (`<data_dir>/producer-ids.json`), 0 if it has none.
pub(crate) fn legacy_next_block(data_dir: &Path) -> i64 {
    #[derive(Deserialize)]
    struct IdsFile {
        next_block: i64,
    }
    fs::read(data_dir.join("producer-ids.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<IdsFile>(&b).ok())
        .map_or(0, |f| f.next_block.max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: u32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            size: 61,
            partition_leader_epoch: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: count,
        }
    }

    #[test]
    fn a_verification_lasts_until_the_transactions_marker() {
        let mut s = ProducerStates::default();
        let txn = |seq| BatchHeader { attributes: 1 << 4, ..header(9, 2, seq, 1) };
        let marker = BatchHeader { attributes: (1 << 4) | (1 << 5), ..header(9, 2, -1, 1) };
        assert!(!s.txn_verified(9, 2));
        // Refused by the coordinator: forgotten.
        let t = s.begin_verification(9, 2);
        assert!(s.finish_verification(9, t, false));
        assert!(!s.txn_verified(9, 2));
        // Confirmed: later batches of the epoch need no round trip, other
        // epochs do.
        let t = s.begin_verification(9, 2);
        assert_eq!(s.begin_verification(9, 2), t, "one verification under way is shared");
        assert!(s.finish_verification(9, t, true));
        assert!(s.txn_verified(9, 2) && !s.txn_verified(9, 3));
        s.record(&txn(0), 10, 1);
        assert!(s.txn_verified(9, 2));
        // The marker ends it: the next transaction is verified again.
        s.record_marker(&marker, 11, true, 0, 1);
        assert!(!s.txn_verified(9, 2));
        // A marker between the question and the answer: the answer is about
        // an ended transaction and does not count.
        let t = s.begin_verification(9, 2);
        s.record_marker(&marker, 12, false, 0, 1);
        assert!(!s.finish_verification(9, t, true));
        assert!(!s.txn_verified(9, 2));
    }

    #[test]
    fn sequences_dedup_and_errors_follow_kafka() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check(&header(7, 0, 3, 1)).unwrap_err().to_string(), BrokerError::OutOfOrderSequence.to_string());
        assert_eq!(s.check(&header(7, 0, 0, 2)).unwrap(), Sequence::Append);
        s.record(&header(7, 0, 0, 2), 100, 1);
        // The same batch again is a duplicate with its original offsets.
        assert_eq!(s.check(&header(7, 0, 0, 2)).unwrap(), Sequence::Duplicate { base_offset: 100, last_offset: 101 });
        assert!(matches!(s.check(&header(7, 0, 3, 1)), Err(BrokerError::OutOfOrderSequence)));
        assert_eq!(s.check(&header(7, 0, 2, 1)).unwrap(), Sequence::Append);
        for i in 0..6 {
            s.record(&header(7, 0, 2 + i, 1), 200 + i as u64, 1);
        }
        // Only the last five batches are remembered.
        assert!(matches!(s.check(&header(7, 0, 2, 1)), Err(BrokerError::OutOfOrderSequence)));
        assert_eq!(s.check(&header(7, 0, 3, 1)).unwrap(), Sequence::Duplicate { base_offset: 201, last_offset: 201 });
        // Older epochs are fenced; a newer epoch restarts at sequence 0.
        assert!(matches!(s.check(&header(7, -1, 8, 1)), Err(BrokerError::InvalidProducerEpoch)));
        assert!(matches!(s.check(&header(7, 1, 8, 1)), Err(BrokerError::OutOfOrderSequence)));
        assert_eq!(s.check(&header(7, 1, 0, 1)).unwrap(), Sequence::Append);
        // Sequences wrap.
        s.record(&header(9, 0, i32::MAX - 1, 2), 300, 1);
        assert_eq!(s.check(&header(9, 0, 0, 1)).unwrap(), Sequence::Append);
    }

    /// A snapshot past the log's end (a crash lost the log's tail, or a
    /// follower truncated it) is not trusted: state comes from the log, so
    /// batches older than the snapshot's window still deduplicate, and a
    /// new snapshot replaces the stale one at once.
    #[test]
    fn a_snapshot_past_the_log_end_is_rebuilt_from_the_log() {
        use ferry_log::{LogConfig, LogManager};
        use ferry_records::compression::Compression;
        use ferry_records::records::{NewRecord, build_batch};

        let dir = tempfile::tempdir().unwrap();
        let logs = LogManager::new(Default::default());
        let config = LogConfig { flush: ferry_log::FlushPolicy::Os, ..LogConfig::default() };
        let log = logs.open(dir.path(), config).unwrap();
        let mut states = ProducerStates::default();
        for seq in 0..10 {
            let r = NewRecord { key: None, value: Some(b"v"), headers: vec![], timestamp: 1 };
            let batch = build_batch(&[r], Compression::None, 7, 0, seq).unwrap();
            let info = log.append_as_leader(&batch, 0).unwrap();
            states.record(&BatchHeader::parse(&batch).unwrap(), info.base_offset, now_ms_u64());
        }
        // The snapshot's window holds sequences 5-9 (offsets 5-9).
        states.snapshot(dir.path()).unwrap();
        assert_eq!(log.truncate_to(4).unwrap(), 4);
        let rebuilt = ProducerStates::recover(dir.path(), &log, u64::MAX).unwrap();
        // The log holds sequences 0-3: 3 is a retry, 4 the next one.
        assert_eq!(rebuilt.check(&header(7, 0, 3, 1)).unwrap(), Sequence::Duplicate { base_offset: 3, last_offset: 3 });
        assert_eq!(rebuilt.check(&header(7, 0, 4, 1)).unwrap(), Sequence::Append);
        let on_disk: ProducerStates = serde_json::from_slice(&fs::read(dir.path().join(SNAPSHOT)).unwrap()).unwrap();
        assert_eq!(on_disk.offset, 4, "the stale snapshot is replaced");
        assert_eq!(on_disk.check(&header(7, 0, 4, 1)).unwrap(), Sequence::Append);
    }

    #[test]
    fn idle_producers_expire() {
        let mut s = ProducerStates::default();
        s.record(&header(1, 0, 0, 1), 0, 1000);
        s.record(&header(2, 0, 0, 1), 1, 5000);
        s.expire(6000, 2000);
        assert_eq!(s.len(), 1);
        assert_eq!(s.check(&header(2, 0, 1, 1)).unwrap(), Sequence::Append);
    }

    #[test]
    fn producer_ids_come_from_the_block_and_legacy_files_are_read() {
        let ids = ProducerIds::default();
        assert_eq!(ids.next(), None, "no block yet");
        ids.add_block(1000, 2);
        assert_eq!((ids.next(), ids.remaining()), (Some(1000), 1));
        assert_eq!(ids.next(), Some(1001));
        assert_eq!(ids.next(), None);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(legacy_next_block(dir.path()), 0);
        fs::write(dir.path().join("producer-ids.json"), br#"{"next_block":3000}"#).unwrap();
        assert_eq!(legacy_next_block(dir.path()), 3000);
    }
}
