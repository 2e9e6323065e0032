//! Checks a history for the anomalies message brokers are known for:
//! acknowledged writes lost, duplicates, records reordered within a
//! partition, aborted or failed writes visible, torn transactions, offsets
//! going backwards, and long windows without a successful operation.
//! Every anomaly names the history lines (1-based) and records involved.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

use crate::history::{Kind, Op, Phase};

/// What the checker tolerates.
#[derive(Clone, Debug)]
pub struct Options {
    /// Idempotent producers: one record per value. Off for at-least-once
    /// producers, where a retried write may land twice.
    pub duplicates_forbidden: bool,
    /// The longest time without any successful write or commit that still
    /// counts as available; `None`: gaps are measured, never an anomaly.
    pub max_gap: Option<Duration>,
    /// Queues with redelivery flags (AMQP), when duplicates are allowed: a
    /// value delivered again is still a Duplicate unless that delivery is
    /// flagged redelivered or its publish's outcome is unknown (`info`).
    pub unflagged_redelivery_forbidden: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { duplicates_forbidden: true, max_gap: None, unflagged_redelivery_forbidden: false }
    }
}

/// The kinds of anomaly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AnomalyKind {
    /// An acknowledged write no complete read found, or whose offset holds
    /// another record.
    LostWrite,
    /// One value at two offsets.
    Duplicate,
    /// Two readers saw different records at the same offset.
    Divergence,
    /// A producer's records in a partition out of the order it sent them.
    Reorder,
    /// A read-committed read saw a record of an aborted transaction.
    AbortedRead,
    /// A read saw a write that was reported failed.
    FailedWriteVisible,
    /// A committed transaction only partly visible.
    TornTransaction,
    /// A write acknowledged after another got a lower offset in the same
    /// partition, or a consumer's offsets went back without a reset.
    OffsetBackwards,
    /// No successful operation for longer than allowed.
    Unavailable,
}

/// One anomaly and the records it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anomaly {
    /// What went wrong.
    pub kind: AnomalyKind,
    /// The records, offsets and history lines concerned.
    pub detail: String,
}

/// What the checker found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Everything found, by check.
    pub anomalies: Vec<Anomaly>,
    /// Writes invoked / acknowledged / failed / unknown.
    pub writes: [usize; 4],
    /// Read events.
    pub reads: usize,
    /// Transactions committed / aborted / unknown.
    pub txns: [usize; 3],
    /// Longest stretch without a successful write or commit, and when it
    /// started (ns since the run started).
    pub longest_gap: (Duration, u64),
    /// Partitions with acknowledged writes but no complete read: their
    /// writes could not be checked for loss.
    pub undrained: BTreeSet<i32>,
}

impl Report {
    /// No anomaly.
    pub fn is_valid(&self) -> bool {
        self.anomalies.is_empty()
    }

    /// Anomalies of one kind.
    pub fn count(&self, kind: AnomalyKind) -> usize {
        self.anomalies.iter().filter(|a| a.kind == kind).count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [invoked, ok, failed, unknown] = self.writes;
        let [committed, aborted, txn_unknown] = self.txns;
        writeln!(
            f,
            "writes: {invoked} invoked, {ok} ok, {failed} failed, {unknown} unknown; reads: {}; \
             txns: {committed} committed, {aborted} aborted, {txn_unknown} unknown; \
             longest gap without an ok: {:?} from {:.3} s",
            self.reads,
            self.longest_gap.0,
            Duration::from_nanos(self.longest_gap.1).as_secs_f64()
        )?;
        if !self.undrained.is_empty() {
            writeln!(f, "partitions not drained (loss unchecked): {:?}", self.undrained)?;
        }
        let mut by_kind: BTreeMap<AnomalyKind, usize> = BTreeMap::new();
        for a in &self.anomalies {
            *by_kind.entry(a.kind).or_default() += 1;
        }
        writeln!(f, "anomalies: {} {by_kind:?}", self.anomalies.len())?;
        for a in self.anomalies.iter().take(50) {
            writeln!(f, "  {:?}: {}", a.kind, a.detail)?;
        }
        if self.anomalies.len() > 50 {
            writeln!(f, "  ... {} more", self.anomalies.len() - 50)?;
        }
        Ok(())
    }
}

/// A write as the history tells it.
struct Write {
    process: u64,
    invoke_line: usize,
    invoke_time: u64,
    txn: Option<u64>,
    /// The completion.
    outcome: Option<Outcome>,
}

/// A write's completion: phase, line, time, partition, offset.
type Outcome = (Phase, usize, u64, Option<i32>, Option<i64>);

/// Where and when a write was acknowledged: partition, offset, line, time.
type Acked = (i32, i64, usize, u64);

/// One side of an acknowledged write in time: (time, is_invocation,
/// offset, value, line).
type Event = (u64, bool, i64, i64, usize);

impl Write {
    /// Acknowledged in a partition, at an offset the client may not know
    /// (librdkafka reports a batch it infers was written, because a later
    /// one was, with offset -1001): partition, offset, line.
    fn acked_in(&self) -> Option<(i32, Option<i64>, usize)> {
        match self.outcome {
            Some((Phase::Ok, line, _, Some(p), o)) => Some((p, o.filter(|o| *o >= 0), line)),
            _ => None,
        }
    }

    /// Acknowledged at a known offset.
    fn acked(&self) -> Option<Acked> {
        match self.outcome {
            Some((Phase::Ok, line, time, Some(p), Some(o))) if o >= 0 => Some((p, o, line, time)),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TxnOutcome {
    Committed,
    Aborted,
    Unknown,
}

/// A read event.
struct Read {
    line: usize,
    process: u64,
    partition: i32,
    /// `None`: a queue delivery (AMQP, MQTT), which has no offset.
    offset: Option<i64>,
    value: i64,
    uncommitted: bool,
}

/// Checks `history` (in the order it was logged).
pub fn check(history: &[Op], options: &Options) -> Report {
    let mut report = Report::default();
    let mut writes: HashMap<i64, Write> = HashMap::new();
    let mut txns: HashMap<u64, TxnOutcome> = HashMap::new();
    let mut reads: Vec<Read> = Vec::new();
    // Queue deliveries: (value, line, flagged redelivered).
    let mut deliveries: Vec<(i64, usize, bool)> = Vec::new();
    let mut drained: HashMap<i32, i64> = HashMap::new();
    let mut found: Vec<Anomaly> = Vec::new();
    let mut anomaly = |kind, detail: String| found.push(Anomaly { kind, detail });
    // Consumer offsets per (process, partition) since the last reset.
    let mut positions: HashMap<(u64, i32), (i64, usize)> = HashMap::new();
    let mut ok_times: Vec<u64> = Vec::new();
    let mut first_time = None;
    for (i, op) in history.iter().enumerate() {
        let line = i + 1;
        first_time.get_or_insert(op.time);
        match (op.f, op.phase) {
            (Kind::Send, Phase::Invoke) => {
                let Some(v) = op.value else { continue };
                writes.insert(
                    v,
                    Write { process: op.process, invoke_line: line, invoke_time: op.time, txn: op.txn, outcome: None },
                );
            }
            (Kind::Send, phase) => {
                let Some(w) = op.value.and_then(|v| writes.get_mut(&v)) else { continue };
                // The first definite outcome counts (a late `info` adds nothing).
                if w.outcome.is_none() || matches!(w.outcome, Some((Phase::Info, ..))) {
                    w.outcome = Some((phase, line, op.time, op.partition, op.offset));
                }
                if phase == Phase::Ok {
                    ok_times.push(op.time);
                }
            }
            (Kind::Commit | Kind::Abort, Phase::Invoke) => {}
            (Kind::Commit | Kind::Abort, phase) => {
                let Some(t) = op.txn else { continue };
                let outcome = match (op.f, phase) {
                    (Kind::Commit, Phase::Ok) => TxnOutcome::Committed,
                    (Kind::Commit, Phase::Fail) | (Kind::Abort, Phase::Ok) => TxnOutcome::Aborted,
                    _ => TxnOutcome::Unknown,
                };
                if phase == Phase::Ok {
                    ok_times.push(op.time);
                }
                let slot = txns.entry(t).or_insert(outcome);
                if *slot == TxnOutcome::Unknown {
                    *slot = outcome;
                }
            }
            (Kind::Read, _) => {
                let (Some(partition), Some(value)) = (op.partition, op.value) else { continue };
                let Some(offset) = op.offset else {
                    // A queue delivery: counts for loss, duplicates and
                    // visibility; a redelivery may come in any order.
                    let (process, uncommitted) = (op.process, op.uncommitted);
                    reads.push(Read { line, process, partition, offset: None, value, uncommitted });
                    deliveries.push((value, line, op.redelivered));
                    continue;
                };
                if let Some((last, last_line)) = positions.get(&(op.process, partition))
                    && offset <= *last
                {
                    anomaly(
                        AnomalyKind::OffsetBackwards,
                        format!(
                            "process {} read partition {partition} offset {offset} (line {line}) after offset {last} \
                             (line {last_line}) without a reset",
                            op.process
                        ),
                    );
                }
                positions.insert((op.process, partition), (offset, line));
                let (process, uncommitted) = (op.process, op.uncommitted);
                reads.push(Read { line, process, partition, offset: Some(offset), value, uncommitted });
            }
            (Kind::Reset, _) => {
                if let Some(p) = op.partition {
                    positions.remove(&(op.process, p));
                }
            }
            (Kind::Fault, _) => {}
            (Kind::Drain, _) => {
                if let Some(p) = op.partition {
                    // A queue has no offsets: drained means emptied.
                    let end = op.offset.unwrap_or(i64::MAX);
                    let d = drained.entry(p).or_insert(end);
                    *d = (*d).max(end);
                }
            }
        }
    }
    report.reads = reads.len();
    report.writes[0] = writes.len();
    for w in writes.values() {
        match w.outcome {
            Some((Phase::Ok, ..)) => report.writes[1] += 1,
            Some((Phase::Fail, ..)) => report.writes[2] += 1,
            _ => report.writes[3] += 1,
        }
    }
    for t in txns.values() {
        report.txns[match t {
            TxnOutcome::Committed => 0,
            TxnOutcome::Aborted => 1,
            TxnOutcome::Unknown => 2,
        }] += 1;
    }
    let txn_of = |w: &Write| w.txn.map(|t| txns.get(&t).copied().unwrap_or(TxnOutcome::Unknown));

    // Where each value was read, and what each offset holds.
    let mut seen_at: HashMap<i64, BTreeMap<(i32, i64), usize>> = HashMap::new();
    let mut at_offset: BTreeMap<(i32, i64), (i64, usize)> = BTreeMap::new();
    for r in &reads {
        // Each queue delivery is a place of its own (a negative line number).
        let place = r.offset.unwrap_or(-i64::try_from(r.line).unwrap_or(i64::MAX));
        seen_at.entry(r.value).or_default().entry((r.partition, place)).or_insert(r.line);
        if let Some(offset) = r.offset {
            match at_offset.get(&(r.partition, offset)) {
                Some((v, l)) if *v != r.value => anomaly(
                    AnomalyKind::Divergence,
                    format!(
                        "partition {} offset {offset} read as value {v} (line {l}) and value {} (line {}, process {})",
                        r.partition, r.value, r.line, r.process
                    ),
                ),
                Some(_) => {}
                None => {
                    at_offset.insert((r.partition, offset), (r.value, r.line));
                }
            }
        }
        let at = r.offset.map_or_else(|| "a delivery".to_string(), |o| format!("offset {o}"));
        if let Some(w) = writes.get(&r.value) {
            if !r.uncommitted && txn_of(w) == Some(TxnOutcome::Aborted) {
                anomaly(
                    AnomalyKind::AbortedRead,
                    format!(
                        "value {} of aborted transaction {} read at partition {} {at} (line {})",
                        r.value,
                        w.txn.unwrap_or_default(),
                        r.partition,
                        r.line
                    ),
                );
            }
            if w.txn.is_none() && matches!(w.outcome, Some((Phase::Fail, ..))) {
                anomaly(
                    AnomalyKind::FailedWriteVisible,
                    format!(
                        "value {} failed (line {}) but was read at partition {} {at} (line {})",
                        r.value,
                        w.outcome.map(|o| o.1).unwrap_or_default(),
                        r.partition,
                        r.line
                    ),
                );
            }
        }
    }

    // Lost acknowledged writes.
    let mut values: Vec<(&i64, &Write)> = writes.iter().collect();
    values.sort_by_key(|(_, w)| w.invoke_line);
    for (v, w) in &values {
        let Some((p, o, line)) = w.acked_in() else { continue };
        if let Some(TxnOutcome::Aborted | TxnOutcome::Unknown) = txn_of(w) {
            continue;
        }
        let Some(end) = drained.get(&p) else {
            report.undrained.insert(p);
            continue;
        };
        let Some(o) = o else {
            if !seen_at.contains_key(v) {
                anomaly(
                    AnomalyKind::LostWrite,
                    format!(
                        "value {v} acknowledged in partition {p} at an unknown offset (line {line}, process {}) was \
                         never read; partition {p} was drained to {end}",
                        w.process
                    ),
                );
            }
            continue;
        };
        if let Some((other, read_line)) = at_offset.get(&(p, o))
            && other != *v
        {
            anomaly(
                AnomalyKind::LostWrite,
                format!(
                    "value {v} acknowledged at partition {p} offset {o} (line {line}), but that offset holds value \
                     {other} (line {read_line})"
                ),
            );
        } else if o >= *end {
            anomaly(
                AnomalyKind::LostWrite,
                format!(
                    "value {v} acknowledged at partition {p} offset {o} (line {line}, process {}), but partition {p} \
                     ends at {end}",
                    w.process
                ),
            );
        } else if !seen_at.contains_key(v) {
            anomaly(
                AnomalyKind::LostWrite,
                format!(
                    "value {v} acknowledged at partition {p} offset {o} (line {line}, process {}) was never read; \
                     partition {p} was drained to {end}",
                    w.process
                ),
            );
        }
    }

    // Duplicates.
    if options.duplicates_forbidden {
        let mut dups: Vec<_> = seen_at.iter().filter(|(_, at)| at.len() > 1).collect();
        dups.sort_by_key(|(v, _)| **v);
        for (v, at) in dups {
            let places: Vec<String> = at.iter().map(|((p, o), l)| format!("{p}@{o} (line {l})")).collect();
            anomaly(AnomalyKind::Duplicate, format!("value {v} read at {} offsets: {}", at.len(), places.join(", ")));
        }
    }

    // A queue delivers a message again only flagged redelivered (the
    // broker knows it may have been out), or when its publish's outcome was
    // unknown (the publisher's side of at-least-once).
    if !options.duplicates_forbidden && options.unflagged_redelivery_forbidden {
        let mut first: HashMap<i64, usize> = HashMap::new();
        for &(v, line, redelivered) in &deliveries {
            let Some(&earlier) = first.get(&v) else {
                first.insert(v, line);
                continue;
            };
            let unknown = writes.get(&v).is_some_and(|w| !matches!(w.outcome, Some((Phase::Ok | Phase::Fail, ..))));
            if !redelivered && !unknown {
                anomaly(
                    AnomalyKind::Duplicate,
                    format!(
                        "value {v} delivered again at line {line} not flagged redelivered (first delivered at line \
                         {earlier}), its publish confirmed"
                    ),
                );
            }
        }
    }

    // Each producer's records in a partition in the order it sent them
    // (producers send increasing values).
    let mut last_of: HashMap<(i32, u64), (i64, i64, usize)> = HashMap::new();
    for (&(p, o), &(v, line)) in &at_offset {
        let Some(w) = writes.get(&v) else { continue };
        if let Some(&(prev_v, prev_o, prev_line)) = last_of.get(&(p, w.process))
            && v < prev_v
        {
            anomaly(
                AnomalyKind::Reorder,
                format!(
                    "partition {p}: process {}'s value {v} at offset {o} (line {line}) after its later value {prev_v} \
                     at offset {prev_o} (line {prev_line})",
                    w.process
                ),
            );
        }
        last_of.insert((p, w.process), (v, o, line));
    }

    // Torn transactions: a committed transaction is visible whole or not at all.
    let mut members: BTreeMap<u64, Vec<(i64, Option<i32>)>> = BTreeMap::new();
    for (v, w) in &values {
        if let Some(t) = w.txn {
            members.entry(t).or_default().push((**v, w.acked_in().map(|(p, ..)| p)));
        }
    }
    for (t, vs) in &members {
        if txns.get(t) != Some(&TxnOutcome::Committed) {
            continue;
        }
        let checkable = vs.iter().all(|(_, acked)| acked.is_some_and(|p| drained.contains_key(&p)));
        if !checkable {
            continue;
        }
        let (seen, unseen): (Vec<i64>, Vec<i64>) = vs.iter().map(|(v, _)| *v).partition(|v| seen_at.contains_key(v));
        if !seen.is_empty() && !unseen.is_empty() {
            anomaly(
                AnomalyKind::TornTransaction,
                format!("committed transaction {t}: values {seen:?} visible, values {unseen:?} never read"),
            );
        }
    }

    // Acknowledged offsets never go back in real time: a write invoked
    // after another was acknowledged lands above it.
    let mut by_partition: HashMap<i32, Vec<Event>> = HashMap::new();
    for (v, w) in &values {
        if let Some((p, o, line, time)) = w.acked() {
            let events = by_partition.entry(p).or_default();
            // Completions at the same instant sort before invocations.
            events.push((w.invoke_time, true, o, **v, w.invoke_line));
            events.push((time, false, o, **v, line));
        }
    }
    for (p, mut events) in by_partition {
        events.sort_unstable();
        let mut highest: Option<(i64, i64, usize)> = None;
        let mut floor: HashMap<i64, (i64, i64, usize)> = HashMap::new();
        for (_, invoke, o, v, line) in events {
            if invoke {
                if let Some(h) = highest {
                    floor.insert(v, h);
                }
            } else {
                if let Some(&(ho, hv, hline)) = floor.get(&v)
                    && o <= ho
                {
                    anomaly(
                        AnomalyKind::OffsetBackwards,
                        format!(
                            "partition {p}: value {v} acknowledged at offset {o} (line {line}), at or below value {hv}'s \
                             offset {ho}, which was acknowledged (line {hline}) before {v} was sent"
                        ),
                    );
                }
                if highest.is_none_or(|(ho, ..)| o > ho) {
                    highest = Some((o, v, line));
                }
            }
        }
    }

    report.anomalies = found;

    // Availability.
    ok_times.sort_unstable();
    let mut prev = first_time.unwrap_or(0);
    for t in ok_times {
        let gap = Duration::from_nanos(t.saturating_sub(prev));
        if gap > report.longest_gap.0 {
            report.longest_gap = (gap, prev);
        }
        prev = t;
    }
    if let Some(max) = options.max_gap
        && report.longest_gap.0 > max
    {
        let (gap, from) = report.longest_gap;
        report.anomalies.push(Anomaly {
            kind: AnomalyKind::Unavailable,
            detail: format!(
                "no write or commit succeeded for {gap:?} from {:.3} s (allowed: {max:?})",
                Duration::from_nanos(from).as_secs_f64()
            ),
        });
    }
    report
}

#[cfg(test)]
mod tests;
