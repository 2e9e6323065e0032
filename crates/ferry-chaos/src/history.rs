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
/// they were logged, with times from one start instant. One made with
/// [`Recorder::to_file`] also writes each event to its file as it is
/// logged, one line, unbuffered: a run that a watchdog or a crash ends
/// keeps everything logged before.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    ops: Arc<Mutex<History>>,
    calls: Arc<Mutex<Calls>>,
}

struct History {
    ops: Vec<Op>,
    file: Option<std::fs::File>,
    /// The first write error; later events are still kept in memory.
    failed: Option<String>,
}

/// Client calls in progress, by a number of their own.
#[derive(Default)]
struct Calls {
    next: u64,
    open: std::collections::BTreeMap<u64, Blocked>,
}

/// A client call in progress ([`Recorder::call`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    /// Which workload (client) made it.
    pub workload: String,
    /// The call.
    pub op: String,
    /// When it began, nanoseconds on the history's clock.
    pub since: u64,
}

/// Ends its call when dropped ([`Recorder::call`]).
pub struct Call {
    calls: Arc<Mutex<Calls>>,
    id: u64,
}

impl Drop for Call {
    fn drop(&mut self) {
        lock(&self.calls).open.remove(&self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// An empty history starting now, kept in memory only.
    pub fn new() -> Recorder {
        Recorder::with_file(None)
    }

    /// An empty history starting now, also streamed to `path` (created,
    /// or truncated), one JSON line per event as it is logged.
    pub fn to_file(path: &Path) -> std::io::Result<Recorder> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Recorder::with_file(Some(std::fs::File::create(path)?)))
    }

    fn with_file(file: Option<std::fs::File>) -> Recorder {
        Recorder {
            start: Instant::now(),
            ops: Arc::new(Mutex::new(History { ops: Vec::new(), file, failed: None })),
            calls: Arc::new(Mutex::new(Calls::default())),
        }
    }

    /// Nanoseconds since the recorder started.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A new event of `process` stamped now.
    pub fn op(&self, phase: Phase, f: Kind, process: u64) -> Op {
        Op::new(phase, f, process, self.now())
    }

    /// Appends `op` (stamped again now, so the order of lines and of times
    /// agree), and writes its line to the file, if there is one.
    pub fn log(&self, mut op: Op) {
        let mut guard = lock(&self.ops);
        let h = &mut *guard;
        op.time = self.now();
        if h.failed.is_none()
            && let Some(file) = &mut h.file
        {
            // One write per line: the kernel has it once `write` returns,
            // whatever becomes of this process.
            let written = serde_json::to_vec(&op).map_err(std::io::Error::from).and_then(|mut line| {
                line.push(b'\n');
                file.write_all(&line)
            });
            if let Err(e) = written {
                h.failed = Some(e.to_string());
            }
        }
        h.ops.push(op);
    }

    /// Everything logged so far.
    pub fn ops(&self) -> Vec<Op> {
        lock(&self.ops).ops.clone()
    }

    /// The first error writing the history file, if any (the history is
    /// then incomplete on disk, complete in memory).
    pub fn write_error(&self) -> Option<String> {
        lock(&self.ops).failed.clone()
    }

    /// Notes that `workload` starts client call `op`, until the returned
    /// guard is dropped: what [`Recorder::blocked`] names when a run hangs.
    pub fn call(&self, workload: &str, op: impl Into<String>) -> Call {
        let since = self.now();
        let mut calls = lock(&self.calls);
        let id = calls.next;
        calls.next += 1;
        calls.open.insert(id, Blocked { workload: workload.to_string(), op: op.into(), since });
        Call { calls: self.calls.clone(), id }
    }

    /// The client calls in progress, the oldest first.
    pub fn blocked(&self) -> Vec<Blocked> {
        let mut open: Vec<Blocked> = lock(&self.calls).open.values().cloned().collect();
        open.sort_by_key(|b| b.since);
        open
    }

    /// The calls in progress as text, one per line, with how long each
    /// has been running: for a watchdog's last words. Also logged to the
    /// history as an `info` fault line (`error` names them), so the file
    /// says why it ends there.
    pub fn report_blocked(&self, why: &str) -> String {
        let now = self.now();
        let lines: Vec<String> = self
            .blocked()
            .iter()
            .map(|b| {
                let secs = |ns: u64| ns as f64 / 1e9;
                format!(
                    "{}: {} since {:.3} s ({:.1} s)",
                    b.workload,
                    b.op,
                    secs(b.since),
                    secs(now.saturating_sub(b.since))
                )
            })
            .collect();
        let text = if lines.is_empty() { "no client call in progress".to_string() } else { lines.join("; ") };
        self.log(Op::new(Phase::Info, Kind::Fault, 0, 0).error(format!("{why}: {text}")));
        text
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

    /// The child of [`a_streamed_history_survives_its_process_being_aborted`]:
    /// logs three events to the file it is given, then aborts (no
    /// destructor, no flush at exit), as a crash or a watchdog's exit does.
    #[test]
    #[ignore = "run by a_streamed_history_survives_its_process_being_aborted"]
    fn child_logs_then_aborts() {
        let Ok(path) = std::env::var("FERRY_CHAOS_HISTORY_CHILD") else { return };
        let rec = Recorder::to_file(Path::new(&path)).unwrap();
        for v in 0..3 {
            rec.log(Op::new(Phase::Invoke, Kind::Send, 1, 0).value(v));
        }
        let _blocked = rec.call("producer", "send 2");
        std::process::abort();
    }

    #[test]
    fn a_streamed_history_survives_its_process_being_aborted() {
        let dir = std::env::temp_dir().join(format!("ferry-chaos-stream-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("h.jsonl");
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "history::tests::child_logs_then_aborts", "--ignored", "--nocapture"])
            .env("FERRY_CHAOS_HISTORY_CHILD", &path)
            .status()
            .unwrap();
        assert!(!status.success(), "the child aborted");
        let ops = read(&path).unwrap();
        assert_eq!(ops.iter().map(|o| o.value).collect::<Vec<_>>(), [Some(0), Some(1), Some(2)]);
        assert!(ops.windows(2).all(|w| w[0].time <= w[1].time), "{ops:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_line_is_on_disk_as_soon_as_it_is_logged_and_in_memory_too() {
        let dir = std::env::temp_dir().join(format!("ferry-chaos-lines-{}", std::process::id()));
        let path = dir.join("h.jsonl");
        let rec = Recorder::to_file(&path).unwrap();
        rec.log(Op::new(Phase::Invoke, Kind::Send, 1, 0).value(7));
        assert_eq!(read(&path).unwrap().len(), 1);
        rec.clone().log(Op::new(Phase::Ok, Kind::Send, 1, 0).value(7).partition(0).offset(0));
        assert_eq!(read(&path).unwrap(), rec.ops());
        assert_eq!(rec.write_error(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn blocked_calls_are_named_until_they_return() {
        let rec = Recorder::new();
        assert!(rec.blocked().is_empty());
        let commit = rec.call("transform", "commit_transaction txn 3000007");
        {
            let _send = rec.call("producer 2", "delivery of 2000000041");
            let blocked = rec.blocked();
            assert_eq!(
                blocked.iter().map(|b| (b.workload.as_str(), b.op.as_str())).collect::<Vec<_>>(),
                [("transform", "commit_transaction txn 3000007"), ("producer 2", "delivery of 2000000041")]
            );
            assert!(blocked[0].since <= blocked[1].since);
        }
        let text = rec.report_blocked("watchdog");
        assert!(text.starts_with("transform: commit_transaction txn 3000007 since "), "{text}");
        assert!(!text.contains("producer 2"), "{text}");
        let last = rec.ops().pop().unwrap();
        assert_eq!((last.phase, last.f), (Phase::Info, Kind::Fault));
        assert!(last.error.unwrap().starts_with("watchdog: transform: commit_transaction"));
        drop(commit);
        assert_eq!(rec.report_blocked("watchdog"), "no client call in progress");
    }
}
