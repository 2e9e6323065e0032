//! One crafted history per anomaly, each caught, and clean ones passed.

use std::time::Duration;

use super::{AnomalyKind, Options, Report, check};
use crate::history::{Kind, Op, Phase};

/// Builds a history; events without a time get line number × 1 ms.
#[derive(Default)]
struct H(Vec<Op>);

impl H {
    fn push(&mut self, op: Op) -> &mut H {
        // Time 0: the next millisecond; others as given.
        let time = if op.time == 0 { (self.0.len() as u64 + 1) * 1_000_000 } else { op.time };
        self.0.push(Op { time, ..op });
        self
    }
    fn invoke(&mut self, process: u64, value: i64) -> &mut H {
        self.push(Op::new(Phase::Invoke, Kind::Send, process, 0).value(value))
    }
    fn invoke_txn(&mut self, process: u64, value: i64, txn: u64) -> &mut H {
        self.push(Op::new(Phase::Invoke, Kind::Send, process, 0).value(value).txn(txn))
    }
    fn ok(&mut self, process: u64, value: i64, p: i32, o: i64) -> &mut H {
        self.push(Op::new(Phase::Ok, Kind::Send, process, 0).value(value).partition(p).offset(o))
    }
    fn fail(&mut self, process: u64, value: i64) -> &mut H {
        self.push(Op::new(Phase::Fail, Kind::Send, process, 0).value(value).error("timed out"))
    }
    /// A send acknowledged right away.
    fn send(&mut self, process: u64, value: i64, p: i32, o: i64) -> &mut H {
        self.invoke(process, value).ok(process, value, p, o)
    }
    fn read(&mut self, process: u64, p: i32, o: i64, value: i64) -> &mut H {
        self.push(Op::new(Phase::Ok, Kind::Read, process, 0).partition(p).offset(o).value(value))
    }
    fn reset(&mut self, process: u64, p: i32, o: i64) -> &mut H {
        self.push(Op::new(Phase::Ok, Kind::Reset, process, 0).partition(p).offset(o))
    }
    fn drain(&mut self, process: u64, p: i32, end: i64) -> &mut H {
        self.push(Op::new(Phase::Ok, Kind::Drain, process, 0).partition(p).offset(end))
    }
    fn commit(&mut self, process: u64, txn: u64, phase: Phase) -> &mut H {
        self.push(Op::new(Phase::Invoke, Kind::Commit, process, 0).txn(txn));
        self.push(Op::new(phase, Kind::Commit, process, 0).txn(txn))
    }
    fn check(&self) -> Report {
        check(&self.0, &Options::default())
    }
}

/// The one anomaly a bad history must show, and that its detail names `names`.
fn caught(report: &Report, kind: AnomalyKind, names: &[&str]) {
    assert!(report.count(kind) >= 1, "{kind:?} not caught:\n{report}");
    let detail = &report.anomalies.iter().find(|a| a.kind == kind).unwrap().detail;
    for n in names {
        assert!(detail.contains(n), "{kind:?} detail {detail:?} does not name {n:?}");
    }
}

/// Two producers, two partitions, a consumer restarted once, a committed
/// and an aborted transaction, a failed and an unknown write, a full drain.
fn clean() -> H {
    let mut h = H::default();
    h.send(1, 1, 0, 0).send(2, 100, 1, 0).invoke(1, 2).invoke(2, 101).ok(2, 101, 1, 1).ok(1, 2, 0, 1);
    h.invoke(1, 3).fail(1, 3);
    // Acknowledged at an offset the client does not know (librdkafka's -1001).
    h.invoke(2, 103).ok(2, 103, 1, -1001);
    // Unknown outcome, and it did land: allowed.
    h.invoke(2, 102).push(Op::new(Phase::Info, Kind::Send, 2, 0).value(102).error("broker gone"));
    h.invoke_txn(3, 200, 7).ok(3, 200, 0, 2).invoke_txn(3, 201, 7).ok(3, 201, 1, 3).commit(3, 7, Phase::Ok);
    h.invoke_txn(3, 202, 8).ok(3, 202, 0, 3).push(Op::new(Phase::Ok, Kind::Abort, 3, 0).txn(8));
    h.read(9, 0, 0, 1).read(9, 0, 1, 2).reset(9, 0, 0).read(9, 0, 0, 1).read(9, 0, 1, 2).read(9, 0, 2, 200);
    h.read(9, 1, 0, 100).read(9, 1, 1, 101).read(9, 1, 2, 102).read(9, 1, 3, 201).read(9, 1, 4, 103);
    h.drain(9, 0, 4).drain(9, 1, 5);
    h
}

#[test]
fn a_clean_history_passes() {
    let r = clean().check();
    assert!(r.is_valid(), "{r}");
    assert_eq!(r.writes, [10, 8, 1, 1], "{r}");
    assert_eq!(r.txns, [1, 1, 0], "{r}");
    assert!(r.undrained.is_empty());
    // From the ok of value 2 (line 8) to that of value 103 (line 12).
    assert_eq!(r.longest_gap, (Duration::from_millis(4), 8_000_000), "{r}");
}

#[test]
fn catches_a_lost_acknowledged_write() {
    let mut h = clean();
    h.send(1, 4, 0, 5).drain(9, 0, 6);
    caught(&h.check(), AnomalyKind::LostWrite, &["value 4", "offset 5", "never read"]);
    // The acknowledged offset holds another record.
    let mut h = clean();
    h.send(1, 5, 0, 5).read(9, 0, 5, 77).drain(9, 0, 6);
    caught(&h.check(), AnomalyKind::LostWrite, &["value 5", "holds value 77"]);
    // The partition ends below the acknowledged offset (truncated).
    let mut h = clean();
    h.send(1, 6, 0, 9).drain(9, 0, 4);
    caught(&h.check(), AnomalyKind::LostWrite, &["value 6", "offset 9", "ends at 4"]);
    // Acknowledged at an unknown offset, never read.
    let mut h = clean();
    h.invoke(1, 7).ok(1, 7, 0, -1001).drain(9, 0, 4);
    caught(&h.check(), AnomalyKind::LostWrite, &["value 7", "unknown offset", "never read"]);
    // Without a drain of its partition nothing is claimed lost.
    let mut h = clean();
    h.send(1, 4, 5, 0);
    let r = h.check();
    assert!(r.is_valid() && r.undrained.contains(&5), "{r}");
}

/// A queue: deliveries without offsets, a redelivery after a reconnect.
fn queue() -> H {
    let mut h = H::default();
    h.invoke(1, 1).push(Op::new(Phase::Ok, Kind::Send, 1, 0).value(1).partition(300));
    h.invoke(1, 2).push(Op::new(Phase::Ok, Kind::Send, 1, 0).value(2).partition(300));
    for v in [2, 1, 2] {
        h.push(Op::new(Phase::Ok, Kind::Read, 5, 0).partition(300).value(v));
    }
    h.push(Op::new(Phase::Ok, Kind::Drain, 5, 0).partition(300));
    h
}

#[test]
fn queues_are_checked_by_value() {
    let r = check(&queue().0, &Options { duplicates_forbidden: false, ..Options::default() });
    assert!(r.is_valid(), "{r}");
    // Exactly-once delivery (MQTT QoS 2) forbids the redelivery.
    caught(&queue().check(), AnomalyKind::Duplicate, &["value 2", "2 offsets"]);
    // A confirmed message the emptied queue never delivered.
    let mut h = queue();
    h.invoke(1, 3).push(Op::new(Phase::Ok, Kind::Send, 1, 0).value(3).partition(300));
    let r = check(&h.0, &Options { duplicates_forbidden: false, ..Options::default() });
    caught(&r, AnomalyKind::LostWrite, &["value 3", "never read"]);
}

/// AMQP: a message comes back only flagged redelivered, unless its
/// publish's outcome was unknown.
#[test]
fn a_queue_redelivers_only_flagged() {
    let amqp = Options { duplicates_forbidden: false, unflagged_redelivery_forbidden: true, ..Options::default() };
    let delivery =
        |v: i64, redelivered: bool| Op { redelivered, ..Op::new(Phase::Ok, Kind::Read, 5, 0).partition(300).value(v) };
    let mut flagged = H::default();
    flagged.invoke(1, 1).push(Op::new(Phase::Ok, Kind::Send, 1, 0).value(1).partition(300));
    flagged.invoke(1, 2).push(Op::new(Phase::Info, Kind::Send, 1, 0).value(2).error("connection lost"));
    // 1 back flagged; 2 twice unflagged, but its publish may have been
    // written twice for all the publisher knows.
    flagged.push(delivery(1, false)).push(delivery(1, true)).push(delivery(2, false)).push(delivery(2, false));
    flagged.push(Op::new(Phase::Ok, Kind::Drain, 5, 0).partition(300));
    let r = check(&flagged.0, &amqp);
    assert!(r.is_valid(), "{r}");
    // A confirmed message delivered again without the flag.
    let mut h = H::default();
    h.invoke(1, 1).push(Op::new(Phase::Ok, Kind::Send, 1, 0).value(1).partition(300));
    h.push(delivery(1, false)).push(delivery(1, true)).push(delivery(1, false));
    h.push(Op::new(Phase::Ok, Kind::Drain, 5, 0).partition(300));
    caught(&check(&h.0, &amqp), AnomalyKind::Duplicate, &["value 1", "line 5", "first delivered at line 3"]);
    // Without the option (MQTT QoS 1 has no flag to go by) it passes.
    let r = check(&h.0, &Options { duplicates_forbidden: false, ..Options::default() });
    assert!(r.is_valid(), "{r}");
}

#[test]
fn catches_a_duplicate() {
    let mut h = clean();
    h.read(9, 0, 4, 2).drain(9, 0, 5);
    let r = h.check();
    caught(&r, AnomalyKind::Duplicate, &["value 2", "0@1", "0@4"]);
    // At-least-once producers may duplicate.
    let r = check(&h.0, &Options { duplicates_forbidden: false, ..Options::default() });
    assert!(r.is_valid(), "{r}");
}

#[test]
fn catches_divergent_reads() {
    let mut h = clean();
    h.read(10, 1, 1, 555);
    caught(&h.check(), AnomalyKind::Divergence, &["offset 1", "value 101", "value 555"]);
}

#[test]
fn catches_reordering_within_a_partition() {
    let mut h = H::default();
    h.invoke(1, 10).invoke(1, 11).ok(1, 11, 0, 0).ok(1, 10, 0, 1);
    h.read(9, 0, 0, 11).read(9, 0, 1, 10).drain(9, 0, 2);
    caught(&h.check(), AnomalyKind::Reorder, &["value 10", "offset 1", "value 11"]);
}

#[test]
fn catches_an_aborted_read() {
    let mut h = clean();
    h.read(9, 0, 3, 202);
    caught(&h.check(), AnomalyKind::AbortedRead, &["value 202", "transaction 8"]);
    // read_uncommitted may see it.
    let mut h = clean();
    h.push(Op { uncommitted: true, ..Op::new(Phase::Ok, Kind::Read, 9, 0).partition(0).offset(3).value(202) });
    assert!(h.check().is_valid());
}

#[test]
fn catches_a_failed_write_that_landed() {
    let mut h = clean();
    h.read(9, 0, 4, 3);
    caught(&h.check(), AnomalyKind::FailedWriteVisible, &["value 3"]);
}

#[test]
fn catches_a_torn_transaction() {
    let mut h = H::default();
    h.invoke_txn(3, 300, 9).ok(3, 300, 0, 0).invoke_txn(3, 301, 9).ok(3, 301, 1, 0).commit(3, 9, Phase::Ok);
    h.read(9, 0, 0, 300).drain(9, 0, 1).drain(9, 1, 1);
    caught(&h.check(), AnomalyKind::TornTransaction, &["transaction 9", "[300]", "[301]"]);
    // A commit that failed aborts: nothing visible is right.
    let mut h = H::default();
    h.invoke_txn(3, 300, 9).ok(3, 300, 0, 0).commit(3, 9, Phase::Fail).drain(9, 0, 1);
    assert!(h.check().is_valid(), "{}", h.check());
}

#[test]
fn catches_offsets_going_backwards() {
    // Acknowledged after value 1 was acknowledged at offset 5, value 2 got 3.
    let mut h = H::default();
    h.send(1, 1, 0, 5).send(2, 2, 0, 3);
    caught(&h.check(), AnomalyKind::OffsetBackwards, &["value 2", "offset 3", "offset 5"]);
    // Concurrent writes may land in either order.
    let mut h = H::default();
    h.invoke(1, 1).invoke(2, 2).ok(2, 2, 0, 3).ok(1, 1, 0, 5);
    assert!(h.check().is_valid());
    // A consumer going back without a reset.
    let mut h = clean();
    h.read(9, 1, 2, 102);
    caught(&h.check(), AnomalyKind::OffsetBackwards, &["process 9", "offset 2", "without a reset"]);
}

#[test]
fn catches_an_unavailability_window() {
    let mut h = clean();
    h.push(Op { time: 10_000_000_000, ..Op::new(Phase::Invoke, Kind::Send, 1, 0).value(50) });
    h.push(Op { time: 15_000_000_000, ..Op::new(Phase::Ok, Kind::Send, 1, 0).value(50).partition(4).offset(0) });
    let r = h.check();
    assert!(r.is_valid(), "gaps alone are measured: {r}");
    assert!(r.longest_gap.0 > Duration::from_secs(14), "{r}");
    let r = check(&h.0, &Options { max_gap: Some(Duration::from_secs(5)), ..Options::default() });
    caught(&r, AnomalyKind::Unavailable, &["no write or commit succeeded"]);
}
