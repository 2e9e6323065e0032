//! The flusher thread: group commit, interval flushes and checkpoints.
//!
//! Appenders and waiters send requests over a channel. The thread drains
//! everything queued, merges the requests per log, and does one fsync per
//! log for all of them: while an fsync runs, new requests pile up and share
//! the next one. fsync never runs on a caller's (possibly async) thread.

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{LogError, Result};
use crate::log::Log;
use crate::segment::lock;

pub type FlushCallback = Box<dyn FnOnce(Result<()>) + Send>;

enum Msg {
    Flush { log: Arc<Log>, target: u64, done: Option<FlushCallback> },
    Stop,
}

pub struct Flusher {
    tx: Mutex<Sender<Msg>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The logs the background threads look after.
pub type Registry = Mutex<Vec<Weak<Log>>>;

impl Flusher {
    pub fn start(registry: Arc<Registry>, checkpoint_interval: Duration) -> Flusher {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ferry-log-flusher".into())
            .spawn(move || run(rx, &registry, checkpoint_interval))
            .ok();
        if thread.is_none() {
            tracing::error!("could not start the flusher thread; flushes will fail");
        }
        Flusher { tx: Mutex::new(tx), thread: Mutex::new(thread) }
    }

    pub fn request(&self, log: Arc<Log>, target: u64, done: Option<FlushCallback>) {
        if let Err(mpsc::SendError(Msg::Flush { done: Some(done), .. })) =
            lock(&self.tx).send(Msg::Flush { log, target, done })
        {
            done(Err(LogError::Unavailable("flusher stopped".into())));
        }
    }

    pub fn stop(&self) {
        let _ = lock(&self.tx).send(Msg::Stop);
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

/// How often interval-policy logs are checked for due flushes.
const TICK: Duration = Duration::from_millis(5);

/// How long the flusher waits for the writers it just released to come back
/// before the next fsync (see `run`).
const LINGER: Duration = Duration::from_micros(200);

fn run(rx: Receiver<Msg>, registry: &Registry, checkpoint_interval: Duration) {
    let mut last_sweep = Instant::now();
    let mut last_checkpoints = Instant::now();
    // Waiters released by the last fsync. They wake one by one; starting the
    // next fsync on the first one back would split them into two groups
    // that alternate. So wait (briefly) until as many are back.
    let mut released = 0usize;
    loop {
        let mut batch = Vec::new();
        match rx.recv_timeout(TICK) {
            Ok(m) => batch.push(m),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        batch.extend(rx.try_iter());
        let waiters = |b: &[Msg]| b.iter().filter(|m| matches!(m, Msg::Flush { done: Some(_), .. })).count();
        if released > 1 && waiters(&batch) > 0 {
            let until = Instant::now() + LINGER;
            while waiters(&batch) < released {
                let left = until.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
                batch.extend(rx.try_iter());
            }
        }
        released = waiters(&batch);
        let mut stop = false;
        let mut per_log: HashMap<*const Log, (Arc<Log>, u64, Vec<FlushCallback>)> = HashMap::new();
        for m in batch {
            match m {
                Msg::Stop => stop = true,
                Msg::Flush { log, target, done } => {
                    let e = per_log.entry(Arc::as_ptr(&log)).or_insert_with(|| (log, 0, Vec::new()));
                    e.1 = e.1.max(target);
                    e.2.extend(done);
                }
            }
        }
        let mut jobs: Vec<(Arc<Log>, u64, Vec<FlushCallback>)> = per_log.into_values().collect();
        if jobs.len() == 1 {
            flush_one(jobs.pop().expect("one job"));
        } else if !jobs.is_empty() {
            // Disks serve concurrent fsyncs of different files far faster
            // than the same fsyncs one after another.
            let lanes = jobs.len().min(MAX_PARALLEL_FSYNCS);
            let mut per_lane: Vec<Vec<_>> = (0..lanes).map(|_| Vec::new()).collect();
            for (i, job) in jobs.into_iter().enumerate() {
                per_lane[i % lanes].push(job);
            }
            std::thread::scope(|scope| {
                for lane in per_lane {
                    scope.spawn(move || lane.into_iter().for_each(flush_one));
                }
            });
        }
        if stop {
            return;
        }
        if last_sweep.elapsed() >= TICK {
            last_sweep = Instant::now();
            let checkpoints = last_checkpoints.elapsed() >= checkpoint_interval;
            if checkpoints {
                last_checkpoints = Instant::now();
            }
            sweep(registry, checkpoints);
        }
    }
}

/// Most fsyncs of one round that run at once.
const MAX_PARALLEL_FSYNCS: usize = 8;

/// Flushes one log and tells its waiters how it went.
fn flush_one((log, target, callbacks): (Arc<Log>, u64, Vec<FlushCallback>)) {
    let result = log.flush(target);
    for cb in callbacks {
        cb(match &result {
            Ok(()) => Ok(()),
            Err(e) => Err(LogError::Unavailable(e.to_string())),
        });
    }
}

/// Flushes interval-policy logs that are due and refreshes stale checkpoints.
fn sweep(registry: &Registry, checkpoints: bool) {
    let logs: Vec<Arc<Log>> = {
        let mut reg = lock(registry);
        reg.retain(|w| w.strong_count() > 0);
        reg.iter().filter_map(Weak::upgrade).collect()
    };
    let now = crate::now_ms();
    for log in logs {
        if let Some(target) = log.flush_due(now)
            && let Err(e) = log.flush(target)
        {
            tracing::error!(log = %log.dir().display(), error = %e, "interval flush failed");
        }
        if checkpoints && let Err(e) = log.checkpoint_if_stale() {
            tracing::warn!(log = %log.dir().display(), error = %e, "checkpoint failed");
        }
    }
}
