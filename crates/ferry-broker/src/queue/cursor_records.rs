//! A replicated queue's cursor as records in the queue's own log (issue
//! #17; docs/cluster.md, "Queues in a cluster"). A quorum queue is one
//! replicated partition holding its messages *and* its cursor changes in
//! one order, as RabbitMQ's quorum queue log holds enqueue, settle and
//! return commands: whichever replica becomes leader replays the log into
//! the same [`CursorState`] the old leader had for every record that
//! reached it, so acknowledged messages stay acknowledged and messages
//! that may have been out with a consumer go out again flagged, with the
//! delivery counts their returns recorded.
//!
//! A cursor record is an ordinary record with the header [`CURSOR_HEADER`]
//! and a JSON [`CursorChange`] as its value; message readers skip it
//! ([`is_cursor_record`]).

use std::collections::BTreeMap;

use ferry_log::Log;
use serde::{Deserialize, Serialize};

use crate::error::{BrokerError, Result};
use crate::queue::cursor::{Cursor, DELIVERED_WINDOW};
use crate::queue::cursor_store::Snapshot;
use crate::queue::ranges::RangeSet;
use crate::stored::{self, StoredRecord};

/// Header marking a record of the queue's log as a cursor change.
pub const CURSOR_HEADER: &str = "ferry.cursor";

/// Bytes read from the log per step of a replay.
const REPLAY_CHUNK: usize = 1 << 20;

/// One change of a replicated queue's cursor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CursorChange {
    /// Settled for good: consumer acks, auto-acks, rejects, dead-lettered
    /// or expired messages.
    Ack(Vec<u64>),
    /// `[from, to)` settled at once (a purge).
    AckRange(u64, u64),
    /// Offsets below this may have been delivered: written before the
    /// first delivery at or past the previous mark (one record per
    /// [`DELIVERED_WINDOW`] deliveries).
    Delivered(u64),
    /// Handed back (nack or reject with requeue, a consumer gone), each
    /// with its deliveries so far.
    Returned(Vec<(u64, u32)>),
    /// The whole state, so the log before it (and before the floor) may go.
    Snapshot(CursorSnapshot),
}

/// The whole cursor state, as a [`CursorChange::Snapshot`] carries it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorSnapshot {
    /// Every offset below is acknowledged.
    pub floor: u64,
    /// Acknowledged ranges above the floor, `[start, end)`.
    pub acked: Vec<(u64, u64)>,
    /// The "possibly delivered" mark.
    pub delivered_mark: u64,
    /// Deliveries of unacknowledged messages that were handed back.
    pub returned: Vec<(u64, u32)>,
}

impl CursorChange {
    /// The change as a record of the queue's log.
    pub fn to_record(&self, timestamp: i64) -> Result<StoredRecord> {
        let value = serde_json::to_vec(self).map_err(|e| BrokerError::InvalidRecord(e.to_string()))?;
        Ok(StoredRecord {
            key: None,
            value: Some(value),
            headers: vec![(CURSOR_HEADER.to_string(), b"1".to_vec())],
            timestamp,
        })
    }

    /// The change `record` holds; `None` for a message.
    pub fn from_record(record: &StoredRecord) -> Option<Result<CursorChange>> {
        if !is_cursor_record(record) {
            return None;
        }
        let value = record.value.as_deref().unwrap_or_default();
        Some(serde_json::from_slice(value).map_err(|e| BrokerError::InvalidRecord(format!("cursor record: {e}"))))
    }
}

/// Whether `record` is a cursor change rather than a message.
pub fn is_cursor_record(record: &StoredRecord) -> bool {
    record.headers.iter().any(|(k, _)| k == CURSOR_HEADER)
}

/// What a replicated queue's cursor records say, applied in log order:
/// the same on the leader that wrote them and on a replica that replays
/// them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CursorState {
    floor: u64,
    acked: RangeSet,
    delivered_mark: u64,
    returned: BTreeMap<u64, u32>,
}

impl CursorState {
    /// Applies one change.
    pub fn apply(&mut self, change: &CursorChange) {
        match change {
            CursorChange::Ack(offsets) => {
                for &o in offsets {
                    if o >= self.floor {
                        self.acked.insert(o);
                    }
                    self.returned.remove(&o);
                }
            }
            CursorChange::AckRange(from, to) => {
                if to > from {
                    self.acked.insert_range((*from).max(self.floor), *to);
                    let gone: Vec<u64> = self.returned.range(*from..*to).map(|(&o, _)| o).collect();
                    for o in gone {
                        self.returned.remove(&o);
                    }
                }
            }
            CursorChange::Delivered(mark) => self.delivered_mark = self.delivered_mark.max(*mark),
            CursorChange::Returned(counts) => {
                for &(o, n) in counts {
                    if !self.is_acked(o) {
                        self.returned.insert(o, n);
                    }
                }
            }
            CursorChange::Snapshot(s) => {
                let mut acked = RangeSet::default();
                for &(a, b) in &s.acked {
                    acked.insert_range(a, b);
                }
                self.floor = s.floor;
                self.acked = acked;
                self.delivered_mark = s.delivered_mark;
                self.returned = s.returned.iter().copied().collect();
            }
        }
        self.acked.remove_below(self.floor);
        self.floor = self.acked.advance(self.floor);
        self.acked.remove_below(self.floor);
        let floor = self.floor;
        self.returned.retain(|&o, _| o >= floor);
    }

    /// The cursor record at `offset` is no message: it counts as
    /// acknowledged (the leader that wrote it acknowledged it at once).
    pub fn ack_record(&mut self, offset: u64) {
        self.apply(&CursorChange::Ack(vec![offset]));
    }

    /// Whether `offset` is acknowledged.
    pub fn is_acked(&self, offset: u64) -> bool {
        offset < self.floor || self.acked.contains(offset)
    }

    /// Every offset below this is acknowledged.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Deliveries of `offset` recorded by its returns (0: none recorded).
    pub fn returned_count(&self, offset: u64) -> u32 {
        self.returned.get(&offset).copied().unwrap_or(0)
    }

    /// Unacknowledged messages that were handed back, with their counts.
    pub fn returned(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.returned.iter().map(|(&o, &n)| (o, n))
    }

    /// The state as one snapshot change.
    pub fn snapshot(&self) -> CursorChange {
        CursorChange::Snapshot(CursorSnapshot {
            floor: self.floor,
            acked: self.acked.ranges(),
            delivered_mark: self.delivered_mark,
            returned: self.returned().collect(),
        })
    }

    /// The cursor a new leader serves the queue with, over its log
    /// `[log_start, log_end)`: acknowledged offsets stay acknowledged, and
    /// everything below the delivered mark that is not goes out flagged as
    /// a redelivery ([`Cursor::maybe_delivered_before`]).
    pub fn cursor(&self, log_start: u64, log_end: u64) -> Cursor {
        let snap = Snapshot { floor: self.floor, acked: self.acked.ranges(), delivered_mark: self.delivered_mark };
        Cursor::recover(&snap, log_start, log_end)
    }
}

/// A replay of a queue's log.
#[derive(Debug, Default)]
pub struct Replayed {
    /// The state every cursor record up to the log end builds.
    pub state: CursorState,
    /// Offset of the last snapshot record, if any: with the floor, the
    /// log may be deleted below min(floor, this).
    pub last_snapshot: Option<u64>,
    /// Cursor records after the last snapshot (when to write the next).
    pub records_since_snapshot: u64,
    /// Messages (not cursor records) in the log.
    pub messages: u64,
}

/// Replays the cursor records of `log` from its start to its end (all
/// written records: as a new leader, that is what it will commit).
pub fn replay(log: &Log) -> Result<Replayed> {
    let mut out = Replayed::default();
    let mut pos = log.log_start_offset();
    let end = log.next_offset();
    while pos < end {
        let Some(slice) = log.read_written(pos, REPLAY_CHUNK)? else { break };
        let records = stored::decode_batches(&slice.to_vec()?)?;
        let Some(&(last, _)) = records.last() else { break };
        for (offset, record) in records.iter().filter(|(o, _)| *o >= pos) {
            match CursorChange::from_record(record) {
                None => out.messages += 1,
                Some(change) => {
                    let change = change?;
                    if matches!(change, CursorChange::Snapshot(_)) {
                        out.last_snapshot = Some(*offset);
                        out.records_since_snapshot = 0;
                    } else {
                        out.records_since_snapshot += 1;
                    }
                    out.state.apply(&change);
                    out.state.ack_record(*offset);
                }
            }
        }
        pos = last + 1;
    }
    Ok(out)
}

/// The mark to record before delivering `offset` first, if the recorded
/// one does not cover it (the same window as a node-local cursor's).
pub fn next_delivered_mark(recorded: u64, offset: u64) -> Option<u64> {
    (offset >= recorded).then_some(offset + DELIVERED_WINDOW)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ferry_log::{LogConfig, LogManager};

    use super::*;
    use crate::queue::Outstanding;

    fn message(i: u64) -> StoredRecord {
        StoredRecord { key: None, value: Some(i.to_le_bytes().to_vec()), headers: Vec::new(), timestamp: 0 }
    }

    /// The leader's side: the live cursor the queue serves consumers from,
    /// and the log it records every change in.
    struct Leader {
        log: Arc<Log>,
        live: Cursor,
        state: CursorState,
        /// Deliveries out with consumers (offset -> count).
        out: BTreeMap<u64, u32>,
        /// Every offset that ever went out.
        ever_out: std::collections::BTreeSet<u64>,
        /// Unacknowledged messages handed back, with their count at the last return.
        last_return: BTreeMap<u64, u32>,
        messages: Vec<u64>,
    }

    impl Leader {
        fn record(&mut self, change: CursorChange) {
            let batch = stored::encode_batch(&[change.to_record(0).unwrap()]).unwrap();
            let offset = self.log.append(&batch).unwrap().base_offset;
            self.state.apply(&change);
            self.state.ack_record(offset);
            self.live.ack(&[offset]);
        }

        fn publish(&mut self, i: u64) {
            let batch = stored::encode_batch(&[message(i)]).unwrap();
            let offset = self.log.append(&batch).unwrap().base_offset;
            self.messages.push(offset);
        }

        /// Takes the next message: a returned one first, else the first
        /// never taken; notes the mark before the delivery goes out.
        fn take(&mut self) -> Option<u64> {
            if let Some((o, out)) = self.live.pop_requeued() {
                self.live.deliver(o, Outstanding { count: out.count + 1, size: 0 });
                self.out.insert(o, out.count + 1);
                return Some(o);
            }
            let o = *self.messages.iter().find(|&&o| o >= self.live.next() && !self.live.is_acked(o))?;
            self.live.taken_through(o);
            if let Some(mark) = self.live.note_delivered(o) {
                self.record(CursorChange::Delivered(mark));
            }
            self.live.deliver(o, Outstanding { count: 1, size: 0 });
            self.out.insert(o, 1);
            self.ever_out.insert(o);
            Some(o)
        }

        fn ack(&mut self, o: u64) {
            let done = self.live.settle(&[o]);
            if !done.is_empty() {
                self.live.ack(&done);
                self.out.remove(&o);
                self.last_return.remove(&o);
                self.record(CursorChange::Ack(done));
            }
        }

        fn nack(&mut self, o: u64) {
            if let Some(out) = self.live.requeue(o) {
                self.out.remove(&o);
                self.last_return.insert(o, out.count);
                self.record(CursorChange::Returned(vec![(o, out.count)]));
            }
        }
    }

    fn open(dir: &std::path::Path, logs: &LogManager) -> Arc<Log> {
        // Readable at once (as a replicated partition's high watermark
        // would be, once the ISR has the records).
        let config = LogConfig { segment_bytes: 4096, flush: ferry_log::FlushPolicy::Os, ..LogConfig::default() };
        logs.open(dir, config).unwrap()
    }

    /// A seeded run of publishes, deliveries, acks, nacks, purges and
    /// snapshots (with the log trimmed below min(floor, last snapshot));
    /// then a new leader replays the log: exactly the acknowledged
    /// messages are acknowledged, every message that went out and was not
    /// acknowledged goes out again flagged, and returned messages keep
    /// their delivery counts.
    #[test]
    fn a_new_leader_rebuilds_the_cursor_from_the_log() {
        let (mut returned_at_takeover, mut trimmed) = (0, false);
        for seed in 1..=20u64 {
            let dir = tempfile::tempdir().unwrap();
            let logs = LogManager::new(Default::default());
            let log = open(dir.path(), &logs);
            let mut l = Leader {
                live: Cursor::recover(&Snapshot::default(), 0, 0),
                log,
                state: CursorState::default(),
                out: BTreeMap::new(),
                ever_out: Default::default(),
                last_return: BTreeMap::new(),
                messages: Vec::new(),
            };
            let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut next = || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let mut published = 0;
            let mut last_snapshot = None;
            for _ in 0..600 {
                match next() % 10 {
                    0..=2 => {
                        l.publish(published);
                        published += 1;
                    }
                    3..=4 => {
                        l.take();
                    }
                    5..=6 => {
                        if let Some(&o) = l.out.keys().nth((next() % 4) as usize) {
                            l.ack(o);
                        }
                    }
                    7 => {
                        if let Some(&o) = l.out.keys().next() {
                            l.nack(o);
                        }
                    }
                    8 if next() % 8 == 0 => {
                        // Purge: everything never taken so far.
                        let (from, to) = (l.live.next(), l.log.next_offset());
                        l.live.ack_range(from, to);
                        l.record(CursorChange::AckRange(from, to));
                    }
                    _ => {
                        let snap = l.state.snapshot();
                        let at = l.log.next_offset();
                        l.record(snap);
                        last_snapshot = Some(at);
                        let cut = l.state.floor().min(at).min(l.log.high_watermark());
                        l.log.delete_records_before(cut).unwrap();
                    }
                }
            }
            // The records build, on the leader, the state its live cursor has.
            for o in 0..l.log.next_offset() {
                assert_eq!(l.state.is_acked(o), l.live.is_acked(o), "seed {seed} offset {o}");
            }
            // Takeover: a replica with the same log replays it.
            let replayed = replay(&l.log).unwrap();
            assert_eq!(replayed.state, l.state, "seed {seed}");
            assert_eq!(replayed.last_snapshot, last_snapshot, "seed {seed}");
            let end = l.log.next_offset();
            let cursor = replayed.state.cursor(l.log.log_start_offset(), end);
            for &o in l.messages.iter().filter(|&&o| o >= l.log.log_start_offset()) {
                assert_eq!(cursor.is_acked(o), l.live.is_acked(o), "seed {seed} offset {o}");
                if !l.live.is_acked(o) && l.ever_out.contains(&o) {
                    assert!(cursor.maybe_delivered_before(o), "seed {seed}: {o} went out, must be flagged");
                }
                // Handed back (and maybe out again since): the count of its last return.
                let count = if l.live.is_acked(o) { 0 } else { l.last_return.get(&o).copied().unwrap_or(0) };
                assert_eq!(replayed.state.returned_count(o), count, "seed {seed} offset {o}");
            }
            returned_at_takeover += replayed.state.returned().count();
            trimmed |= l.log.log_start_offset() > 0;
        }
        // The runs exercised what they claim to.
        assert!(returned_at_takeover > 0 && trimmed, "{returned_at_takeover} returned, trimmed: {trimmed}");
    }

    #[test]
    fn messages_and_cursor_records_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogManager::new(Default::default());
        let log = open(dir.path(), &logs);
        let m = message(1);
        assert!(CursorChange::from_record(&m).is_none());
        let change = CursorChange::Returned(vec![(3, 2)]);
        let r = change.to_record(5).unwrap();
        assert!(is_cursor_record(&r));
        assert_eq!(CursorChange::from_record(&r).unwrap().unwrap(), change);
        let batch = stored::encode_batch(&[m, r, message(2)]).unwrap();
        log.append(&batch).unwrap();
        let replayed = replay(&log).unwrap();
        assert_eq!((replayed.messages, replayed.records_since_snapshot), (2, 1));
        assert_eq!(replayed.state.returned_count(3), 2);
        // A cursor record that does not decode is an error, never a panic.
        let bad = StoredRecord {
            key: None,
            value: Some(b"{".to_vec()),
            headers: vec![(CURSOR_HEADER.into(), b"1".to_vec())],
            timestamp: 0,
        };
        assert!(CursorChange::from_record(&bad).unwrap().is_err());
        log.append(&stored::encode_batch(&[bad]).unwrap()).unwrap();
        assert!(replay(&log).is_err());
        assert_eq!(next_delivered_mark(0, 0), Some(DELIVERED_WINDOW));
        assert_eq!(next_delivered_mark(DELIVERED_WINDOW, 5), None);
    }
}
