//! The acknowledgement cursor over a log: which offsets are done, which are
//! out with a consumer, which were handed back. Pure bookkeeping, no I/O:
//! [`crate::queue::cursor_log`] journals what changes here.
//!
//! - The *floor*: every offset below it is acknowledged (or was never a
//!   message), so the log's prefix below it may be deleted.
//! - *Acknowledged ranges* above the floor: acks arrive out of order.
//! - *Next*: the first offset never taken from the log.
//! - *Unacknowledged* deliveries (taken, out with a consumer) and
//!   *requeued* ones (handed back, to be delivered again first), each with
//!   its delivery count and size.
//! - The *delivered mark*: offsets below it may have been delivered before
//!   the last start, so they go out flagged as redeliveries.

use std::collections::{BTreeMap, HashMap};

use crate::queue::cursor_store::Snapshot;
use crate::queue::ranges::RangeSet;

/// How far ahead of the last delivery the "possibly delivered" mark is
/// persisted: one small write per this many deliveries. After a crash,
/// messages below the mark are flagged redelivered (they may have been).
pub const DELIVERED_WINDOW: u64 = 1024;

/// A delivery not yet settled: how often it went out and its body size
/// (for byte limits; 0 where nobody counts bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outstanding {
    /// Deliveries so far, the current one included.
    pub count: u32,
    /// Body size in bytes; 0 where nobody counts bytes.
    pub size: u32,
}

/// The acknowledgement state of one log (see the module docs).
#[derive(Debug, Default)]
pub struct Cursor {
    floor: u64,
    acked: RangeSet,
    next: u64,
    unacked: HashMap<u64, Outstanding>,
    requeued: BTreeMap<u64, Outstanding>,
    /// Offsets below this may have been delivered before the last start.
    delivered_before_boot: u64,
    /// Log end at recovery: nothing at or past it was delivered before.
    boot_end: u64,
    /// The persisted "possibly delivered" mark.
    delivered_mark: u64,
}

impl Cursor {
    /// The cursor recovered from `snap` over a log holding
    /// `[log_start, log_end)`: the floor never lies below the log start (a
    /// log without cursor files starts there).
    pub fn recover(snap: &Snapshot, log_start: u64, log_end: u64) -> Cursor {
        let mut acked = RangeSet::default();
        for &(a, b) in &snap.acked {
            acked.insert_range(a, b);
        }
        let mut floor = snap.floor.max(log_start);
        acked.remove_below(floor);
        floor = acked.advance(floor);
        Cursor {
            floor,
            acked,
            next: floor,
            unacked: HashMap::new(),
            requeued: BTreeMap::new(),
            delivered_before_boot: snap.delivered_mark,
            boot_end: log_end,
            delivered_mark: snap.delivered_mark,
        }
    }

    /// What a snapshot must hold to recover this cursor.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot { floor: self.floor, acked: self.acked.ranges(), delivered_mark: self.delivered_mark }
    }

    /// Every offset below this is acknowledged; the log below it may go.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// The first offset never taken from the log.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Log end when the cursor was recovered.
    pub fn boot_end(&self) -> u64 {
        self.boot_end
    }

    /// Whether `offset` is acknowledged (below the floor or in a range above).
    pub fn is_acked(&self, offset: u64) -> bool {
        offset < self.floor || self.acked.contains(offset)
    }

    /// Acknowledged offsets at or above `from`.
    pub fn acked_from(&self, from: u64) -> u64 {
        self.acked.count_from(from)
    }

    /// Offsets in `[floor, end)` not acknowledged.
    pub fn unacked_below(&self, end: u64) -> u64 {
        end.saturating_sub(self.floor).saturating_sub(self.acked.count_from(self.floor))
    }

    /// Deliveries out with consumers, not yet settled.
    pub fn unacked_len(&self) -> usize {
        self.unacked.len()
    }

    /// Deliveries handed back, waiting to go out again.
    pub fn requeued_len(&self) -> usize {
        self.requeued.len()
    }

    /// The delivery of `offset` if it is out with a consumer.
    pub fn outstanding(&self, offset: u64) -> Option<Outstanding> {
        self.unacked.get(&offset).copied()
    }

    /// Moves the first-never-taken offset past `offset`.
    pub fn taken_through(&mut self, offset: u64) {
        self.next = self.next.max(offset + 1);
    }

    /// Skips offsets below `start` (deleted from the log).
    pub fn skip_to(&mut self, start: u64) {
        self.next = self.next.max(start);
    }

    /// `offset` went out (again) with `count` deliveries so far.
    pub fn deliver(&mut self, offset: u64, out: Outstanding) {
        self.unacked.insert(offset, out);
    }

    /// Whether a first delivery of `offset` may repeat one made before the
    /// last start.
    pub fn maybe_delivered_before(&self, offset: u64) -> bool {
        offset < self.delivered_before_boot.min(self.boot_end)
    }

    /// Notes a first delivery of `offset`; returns the new "possibly
    /// delivered" mark when it has to be persisted.
    pub fn note_delivered(&mut self, offset: u64) -> Option<u64> {
        if offset < self.delivered_mark {
            return None;
        }
        self.delivered_mark = offset + DELIVERED_WINDOW;
        Some(self.delivered_mark)
    }

    /// The persisted "possibly delivered" mark.
    pub fn delivered_mark(&self) -> u64 {
        self.delivered_mark
    }

    /// Raises the "possibly delivered" mark to `mark` (a replicated cursor
    /// records its marks ahead of the deliveries).
    pub fn raise_delivered_mark(&mut self, mark: u64) {
        self.delivered_mark = self.delivered_mark.max(mark);
    }

    /// The oldest handed-back delivery, taken off the requeued set.
    pub fn pop_requeued(&mut self) -> Option<(u64, Outstanding)> {
        self.requeued.pop_first()
    }

    /// The handed-back offsets, lowest first, left in the requeued set.
    pub fn requeued(&self) -> impl Iterator<Item = u64> + '_ {
        self.requeued.keys().copied()
    }

    /// The lowest handed-back offset, left in the requeued set.
    pub fn first_requeued(&self) -> Option<u64> {
        self.requeued.first_key_value().map(|(&o, _)| o)
    }

    /// Every handed-back offset, taken off the requeued set.
    pub fn take_requeued(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.requeued).into_keys().collect()
    }

    /// Hands an unacknowledged delivery back; returns it if it was out.
    pub fn requeue(&mut self, offset: u64) -> Option<Outstanding> {
        let out = self.unacked.remove(&offset)?;
        self.requeued.insert(offset, out);
        Some(out)
    }

    /// Whether `offset` was handed back and waits to go out again.
    pub fn is_requeued(&self, offset: u64) -> bool {
        self.requeued.contains_key(&offset)
    }

    /// Handed-back deliveries at or past `offset`.
    pub fn requeued_from(&self, offset: u64) -> usize {
        self.requeued.range(offset..).count()
    }

    /// Puts `offset` in the handed-back set as a replicated queue's replay
    /// found it (returned before the takeover, not acknowledged since).
    pub fn restore_requeued(&mut self, offset: u64, out: Outstanding) {
        if !self.is_acked(offset) {
            self.requeued.insert(offset, out);
        }
    }

    /// Handed-back deliveries with their counts, lowest offset first.
    pub fn requeued_counts(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.requeued.iter().map(|(&o, out)| (o, out.count))
    }

    /// Deliveries out with consumers, with their counts (in no order).
    pub fn unacked_counts(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.unacked.iter().map(|(&o, out)| (o, out.count))
    }

    /// Hands every unacknowledged delivery back (its consumer is gone).
    pub fn requeue_all(&mut self) -> usize {
        let n = self.unacked.len();
        self.requeued.extend(self.unacked.drain());
        n
    }

    /// Keeps of `offsets` those out with a consumer, no longer out: they
    /// are the ones to acknowledge.
    pub fn settle(&mut self, offsets: &[u64]) -> Vec<u64> {
        offsets.iter().copied().filter(|o| self.unacked.remove(o).is_some()).collect()
    }

    /// Acknowledges `offsets` for good, wherever they are (out, handed
    /// back or never taken); the floor advances over a completed prefix.
    pub fn ack(&mut self, offsets: &[u64]) {
        for &o in offsets {
            if o >= self.floor {
                self.acked.insert(o);
            }
        }
        self.floor = self.acked.advance(self.floor);
    }

    /// Drops `offset` from the handed-back set (acknowledged meanwhile).
    pub fn forget_requeued(&mut self, offset: u64) -> bool {
        self.requeued.remove(&offset).is_some()
    }

    /// Moves the cursor to `offset` (a consumer group set to another
    /// position): everything below it counts as acknowledged, nothing at or
    /// above it does, and it is the next offset taken. Deliveries out stay
    /// out; handed-back ones are dropped (the new position decides).
    pub fn reposition(&mut self, offset: u64) {
        self.floor = offset;
        self.acked = RangeSet::default();
        self.next = offset;
        self.requeued.clear();
    }

    /// Acknowledges `[from, to)` (a purge); nothing in it is taken again.
    pub fn ack_range(&mut self, from: u64, to: u64) {
        if to > from {
            self.acked.insert_range(from.max(self.floor), to);
        }
        self.next = self.next.max(to);
        self.floor = self.acked.advance(self.floor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settle(c: &mut Cursor, offsets: &[u64]) {
        let done = c.settle(offsets);
        c.ack(&done);
    }

    fn out(count: u32) -> Outstanding {
        Outstanding { count, size: 0 }
    }

    #[test]
    fn the_floor_advances_only_over_a_completed_prefix() {
        let mut c = Cursor::recover(&Snapshot::default(), 0, 10);
        for o in 0..5 {
            c.deliver(o, out(1));
            c.taken_through(o);
        }
        assert_eq!(c.next(), 5);
        // Out of order: 1 and 3 first.
        let done = c.settle(&[3, 1, 7]);
        assert_eq!(done, [3, 1]);
        c.ack(&done);
        assert_eq!(c.floor(), 0);
        assert!(c.is_acked(1) && c.is_acked(3) && !c.is_acked(0) && !c.is_acked(2));
        assert_eq!(c.unacked_below(5), 3);
        settle(&mut c, &[0]);
        assert_eq!(c.floor(), 2);
        settle(&mut c, &[2]);
        assert_eq!(c.floor(), 4);
        assert_eq!(c.unacked_len(), 1);
        // Settling twice is a no-op.
        assert!(c.settle(&[2]).is_empty());
    }

    #[test]
    fn requeued_deliveries_come_back_first_in_offset_order() {
        let mut c = Cursor::recover(&Snapshot::default(), 0, 0);
        for o in [4, 2, 9] {
            c.deliver(o, out(1));
        }
        assert_eq!(c.requeue(9), Some(out(1)));
        assert_eq!(c.requeue(9), None);
        assert_eq!(c.requeue_all(), 2);
        assert_eq!(c.unacked_len(), 0);
        assert_eq!(c.first_requeued(), Some(2));
        assert_eq!(c.pop_requeued(), Some((2, out(1))));
        // Acknowledged while handed back: gone from the requeued set.
        assert!(c.forget_requeued(4));
        c.ack(&[4]);
        assert_eq!(c.pop_requeued(), Some((9, out(1))));
        assert_eq!(c.pop_requeued(), None);
    }

    #[test]
    fn recovery_keeps_acks_and_flags_possible_redeliveries() {
        let mut c = Cursor::recover(&Snapshot::default(), 0, 100);
        assert_eq!(c.note_delivered(0), Some(DELIVERED_WINDOW));
        assert_eq!(c.note_delivered(5), None);
        c.ack(&[0, 1, 5, 6, 9]);
        let snap = c.snapshot();
        assert_eq!((snap.floor, snap.acked.clone(), snap.delivered_mark), (2, vec![(5, 7), (9, 10)], DELIVERED_WINDOW));
        // Restart: the log grew to 120; below it everything may have gone
        // out before, past it nothing did.
        let r = Cursor::recover(&snap, 0, 120);
        assert_eq!((r.floor(), r.next()), (2, 2));
        assert!(r.is_acked(5) && r.is_acked(9) && !r.is_acked(7));
        assert!(r.maybe_delivered_before(119) && !r.maybe_delivered_before(120));
        // The log's start moved past the floor (old data dir, no cursor
        // files, or records deleted): the floor follows.
        let r = Cursor::recover(&snap, 6, 120);
        assert_eq!(r.floor(), 7);
        let fresh = Cursor::recover(&Snapshot::default(), 40, 50);
        assert_eq!((fresh.floor(), fresh.next()), (40, 40));
        assert!(!fresh.maybe_delivered_before(40));
    }

    #[test]
    fn a_purged_range_is_acknowledged_and_never_taken() {
        let mut c = Cursor::recover(&Snapshot::default(), 0, 0);
        c.deliver(0, out(1));
        c.taken_through(0);
        c.ack_range(1, 10);
        assert_eq!((c.floor(), c.next()), (0, 10));
        settle(&mut c, &[0]);
        assert_eq!(c.floor(), 10);
        assert_eq!(c.unacked_below(10), 0);
    }

    #[test]
    fn a_repositioned_cursor_forgets_acks_and_keeps_deliveries_out() {
        let mut c = Cursor::recover(&Snapshot::default(), 0, 20);
        c.deliver(3, out(1));
        c.taken_through(3);
        c.ack(&[0, 1, 2, 8]);
        c.reposition(6);
        assert_eq!((c.floor(), c.next()), (6, 6));
        assert!(c.is_acked(5) && !c.is_acked(8), "acks at or above the new position are forgotten");
        assert_eq!(c.outstanding(3), Some(out(1)));
        c.reposition(1);
        assert!(!c.is_acked(2) && c.is_acked(0));
        assert_eq!(c.snapshot().floor, 1);
    }

    proptest::proptest! {
        /// Against a plain model: what is acknowledged (and so the floor),
        /// what is out and what was handed back, through takes, acks in any
        /// order, requeues, purges and recoveries from a snapshot.
        #[test]
        fn behaves_like_the_model(ops in proptest::collection::vec((0u8..7, 0u64..40), 0..150)) {
            use std::collections::{BTreeMap, BTreeSet};
            const END: u64 = 40;
            let mut c = Cursor::recover(&Snapshot::default(), 0, END);
            let mut acked = BTreeSet::new();
            let mut out: BTreeMap<u64, u32> = BTreeMap::new();
            let mut back: BTreeMap<u64, u32> = BTreeMap::new();
            let mut next = 0u64;
            for (op, at) in ops {
                match op {
                    0 => {
                        while next < END && acked.contains(&next) { next += 1; }
                        if next < END {
                            c.deliver(next, Outstanding { count: 1, size: 0 });
                            c.taken_through(next);
                            out.insert(next, 1);
                            next += 1;
                        }
                    }
                    1 => {
                        let done = c.settle(&[at]);
                        proptest::prop_assert_eq!(done.is_empty(), out.remove(&at).is_none());
                        c.ack(&done);
                        acked.extend(done);
                    }
                    2 => {
                        let moved = c.requeue(at);
                        let expect = out.remove(&at);
                        proptest::prop_assert_eq!(moved.map(|o| o.count), expect);
                        if let Some(n) = expect { back.insert(at, n); }
                    }
                    3 => {
                        let got = c.pop_requeued();
                        let expect = back.pop_first();
                        proptest::prop_assert_eq!(got.map(|(o, x)| (o, x.count)), expect);
                        if let Some((o, n)) = expect {
                            c.deliver(o, Outstanding { count: n + 1, size: 0 });
                            out.insert(o, n + 1);
                        }
                    }
                    4 => {
                        proptest::prop_assert_eq!(c.requeue_all(), out.len());
                        back.append(&mut out);
                    }
                    5 => {
                        let to = (next + at % 5).min(END);
                        c.ack_range(next, to);
                        acked.extend(next..to);
                        next = next.max(to);
                    }
                    _ => {
                        // A restart: only acknowledgements survive.
                        c = Cursor::recover(&c.snapshot(), 0, END);
                        out.clear();
                        back.clear();
                        next = (0..=END).find(|o| !acked.contains(o)).unwrap_or(END);
                        proptest::prop_assert_eq!(c.next(), next);
                    }
                }
                let floor = (0..=END).find(|o| !acked.contains(o)).unwrap_or(END);
                proptest::prop_assert_eq!(c.floor(), floor);
                for o in 0..END + 2 {
                    proptest::prop_assert_eq!(c.is_acked(o), acked.contains(&o), "offset {}", o);
                }
                proptest::prop_assert_eq!(c.unacked_len(), out.len());
                proptest::prop_assert_eq!(c.requeued_len(), back.len());
                proptest::prop_assert_eq!(c.unacked_below(END), END - acked.len() as u64);
            }
        }
    }
}
