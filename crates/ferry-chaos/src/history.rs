//! A history: one JSON line per operation event, as Jepsen records them.
//! A client writes `invoke` when it starts an operation and `ok` (it
//! happened), `fail` (it certainly did not) or `info` (unknown: a timeout,
//! a crash) when it learns the outcome. Reads are single `ok` events, one
//! per record seen. Times are client nanoseconds since the run started.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Which stage of an operation an event records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The client starts the operation.
    Invoke,
    /// It took effect.
    Ok,
    /// It certainly did not take effect.
    Fail,
    /// Its outcome is unknown (timeout, crashed client or broker).
    Info,
}

/// What an operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Writes `value` (to `partition`, which `ok` names with its `offset`);
    /// with `txn`, inside that transaction.
    Send,
    /// One record seen by a consumer: `partition`, `offset`, `value`. Reads
    /// are read-committed unless the line says `uncommitted`.
    Read,
    /// A consumer (re)starts reading `partition` from `offset` (an
    /// assignment, a rebalance, a restart): its later reads may repeat.
    Reset,
    /// A complete read of `partition` up to `offset` (its end) happened:
    /// every acknowledged write below it must have been read by someone,
    /// and none may have been acknowledged at or above it.
    Drain,
    /// Commits transaction `txn`: `ok` committed, `fail` aborted.
    Commit,
    /// Aborts transaction `txn` (`ok`: it is aborted).
    Abort,
    /// The harness injected (`invoke`) or healed (`ok`) the fault `error`
    /// names: context for a reader of the history, ignored by the checker.
    Fault,
}

/// One line of a history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Invoke, ok, fail or info (`type` in the JSON).
    #[serde(rename = "type")]
    pub phase: Phase,
    /// The operation.
    pub f: Kind,
    /// The client (a producer, a consumer) the event belongs to.
    pub process: u64,
    /// Nanoseconds since the run started, on the client's clock.
    pub time: u64,
    /// The record key, when the workload keys its records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The partition written or read: a number unique across the run's
    /// topics (the harness numbers them `100 * topic + partition`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    /// The offset acknowledged or read (a drain's end, a reset's start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    /// The value written or read: unique per write in a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<i64>,
    /// The transaction a send belongs to, or a commit/abort ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn: Option<u64>,
    /// A read made with read_uncommitted (aborted records may show).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub uncommitted: bool,
    /// A queue delivery the broker flagged redelivered (AMQP's
    /// `redelivered`): it may have been delivered before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redelivered: bool,
    /// Free text: the error of a `fail`/`info`, what a fault did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Op {
    /// An event with no record fields.
    pub fn new(phase: Phase, f: Kind, process: u64, time: u64) -> Op {
        Op {
            phase,
            f,
            process,
            time,
            key: None,
            partition: None,
            offset: None,
            value: None,
            txn: None,
            uncommitted: false,
            redelivered: false,
            error: None,
        }
    }

    /// With `partition`.
    pub fn partition(mut self, p: i32) -> Op {
        self.partition = Some(p);
        self
    }

    /// With `offset`.
    pub fn offset(mut self, o: i64) -> Op {
        self.offset = Some(o);
        self
    }

    /// With `value`.
    pub fn value(mut self, v: i64) -> Op {
        self.value = Some(v);
        self
    }

    /// With `txn`.
    pub fn txn(mut self, t: u64) -> Op {
        self.txn = Some(t);
        self
    }

    /// With `key`.
    pub fn key(mut self, k: impl Into<String>) -> Op {
        self.key = Some(k.into());
        self
    }

    /// With `error`.
    pub fn error(mut self, e: impl Into<String>) -> Op {
        self.error = Some(e.into());
        self
    }
}

/// Reads a JSON-lines history; a bad line is an error naming its number.
pub fn read(path: &Path) -> std::io::Result<Vec<Op>> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut ops = Vec::new();
    for (n, line) in file.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let op = serde_json::from_str(&line).map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}:{}: {e}", path.display(), n + 1))
        })?;
        ops.push(op);
    }
    Ok(ops)
}

/// Writes `ops` as JSON lines.
pub fn write(path: &Path, ops: &[Op]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for op in ops {
        serde_json::to_writer(&mut out, op)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// A history being recorded by many clients at once: events in the order
/// they were logged, with times from one start instant.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// An empty history starting now.
    pub fn new() -> Recorder {
        Recorder { start: Instant::now(), ops: Arc::new(Mutex::new(Vec::new())) }
    }

    /// Nanoseconds since the recorder started.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A new event of `process` stamped now.
    pub fn op(&self, phase: Phase, f: Kind, process: u64) -> Op {
        Op::new(phase, f, process, self.now())
    }

    /// Appends `op` (stamped again now, so the order of lines and of times agree).
    pub fn log(&self, mut op: Op) {
        let mut ops = self.ops.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        op.time = self.now();
        ops.push(op);
    }

    /// Everything logged so far.
    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let dir = std::env::temp_dir().join(format!("ferry-chaos-history-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("h.jsonl");
        let ops = vec![
            Op::new(Phase::Invoke, Kind::Send, 1, 10).value(7).key("k"),
            Op::new(Phase::Ok, Kind::Send, 1, 20).value(7).partition(0).offset(3),
            Op::new(Phase::Ok, Kind::Commit, 2, 30).txn(9),
        ];
        write(&path, &ops).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.lines().next().unwrap().contains(r#""type":"invoke""#), "{text}");
        assert_eq!(read(&path).unwrap(), ops);
        std::fs::write(&path, "{\"type\":\"ok\"}\n").unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains(":1:"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
