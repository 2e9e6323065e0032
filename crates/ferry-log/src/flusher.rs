//! Group commit: a small pool of flusher threads fsyncs logs on request.
//!
//! A log is flushed by at most one thread at a time; requests that arrive
//! while it is being flushed pile up and share its next fsync. Logs are
//! flushed independently of one another, so a slow fsync holds up only its
//! own log, and fsyncs of different files overlap (disks serve concurrent
//! fsyncs far faster than the same fsyncs one after another). fsync never
//! runs on a caller's (possibly async) thread.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use crate::error::{LogError, Result};
use crate::log::Log;
use ferry_util::sync::lock;

pub type FlushCallback = Box<dyn FnOnce(Result<()>) + Send>;

/// The logs the background threads look after.
pub type Registry = Mutex<Vec<Weak<Log>>>;

/// How many fsyncs may run at once, across all logs.
const THREADS: usize = 8;

/// How long a flusher thread waits for the writers its fsync just released
/// to come back before the log's next fsync (see `linger`).
const LINGER: Duration = Duration::from_micros(200);

pub struct Flusher {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

struct Shared {
    state: Mutex<State>,
    /// A request arrived for a log that a thread holds (it may be lingering).
    arrived: Condvar,
}

#[derive(Default)]
struct State {
    /// Logs with requests pending or a flush running, by `Arc::as_ptr`.
    logs: HashMap<usize, Entry>,
    /// Logs with requests pending and no thread on them, oldest first.
    queue: VecDeque<usize>,
    /// Threads with nothing to do, the most recently busy last: it is woken
    /// first, as its caches are warm (a condvar would rotate through all).
    idle: Vec<Thread>,
    stopped: bool,
}

struct Entry {
    log: Arc<Log>,
    /// The highest offset asked for, and who waits for it.
    pending: Option<(u64, Vec<FlushCallback>)>,
    /// A thread holds the log (flushing or lingering).
    held: bool,
}

impl Flusher {
    pub fn start() -> Flusher {
        let shared = Arc::new(Shared { state: Default::default(), arrived: Condvar::new() });
        let threads: Vec<_> = (0..THREADS)
            .filter_map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new().name(format!("ferry-log-flush-{i}")).spawn(move || work(&shared)).ok()
            })
            .collect();
        if threads.is_empty() {
            tracing::error!("could not start the flusher threads; flushes will fail");
            lock(&shared.state).stopped = true;
        }
        Flusher { shared, threads: Mutex::new(threads) }
    }

    /// Asks for offsets below `target` to be made durable (`u64::MAX`:
    /// everything written so far); `done` runs on a flusher thread after.
    pub fn request(&self, log: Arc<Log>, target: u64, done: Option<FlushCallback>) {
        let mut st = lock(&self.shared.state);
        if st.stopped {
            drop(st);
            if let Some(done) = done {
                done(Err(LogError::Unavailable("flusher stopped".into())));
            }
            return;
        }
        let key = Arc::as_ptr(&log) as usize;
        let mut queued = false;
        let entry = st.logs.entry(key).or_insert_with(|| {
            queued = true;
            Entry { log, pending: None, held: false }
        });
        let (t, waiters) = entry.pending.get_or_insert_with(|| (0, Vec::new()));
        *t = (*t).max(target);
        waiters.extend(done);
        let held = entry.held;
        let wake = if queued {
            st.queue.push_back(key);
            st.idle.pop()
        } else {
            None
        };
        // Woken after unlocking, so the woken thread does not block on the
        // lock this thread still holds.
        drop(st);
        if let Some(t) = wake {
            t.unpark();
        } else if held {
            self.shared.arrived.notify_all();
        }
    }

    /// Runs the requests already made, then stops the threads; later
    /// requests fail.
    pub fn stop(&self) {
        let idle = {
            let mut st = lock(&self.shared.state);
            st.stopped = true;
            std::mem::take(&mut st.idle)
        };
        idle.iter().for_each(Thread::unpark);
        self.shared.arrived.notify_all();
        for t in std::mem::take(&mut *lock(&self.threads)) {
            let _ = t.join();
        }
    }
}

/// A flusher thread: takes the oldest runnable log, fsyncs it, answers its
/// waiters, and puts it back in line if more requests came meanwhile.
fn work(shared: &Shared) {
    let mut st = lock(&shared.state);
    loop {
        let Some(key) = st.queue.pop_front() else {
            if st.stopped {
                return;
            }
            let me = std::thread::current();
            st.idle.push(me.clone());
            drop(st);
            std::thread::park();
            st = lock(&shared.state);
            // Woken by `request` (which took it off the list) or spuriously.
            st.idle.retain(|t| t.id() != me.id());
            continue;
        };
        let Some(entry) = st.logs.get_mut(&key) else { continue };
        entry.held = true;
        let log = entry.log.clone();
        let (target, waiters) = entry.pending.take().unwrap_or_default();
        drop(st);
        let released = waiters.len();
        flush_one(&log, target, waiters);
        st = lock(&shared.state);
        if released > 1 {
            st = linger(shared, st, key, released);
        }
        let Some(entry) = st.logs.get_mut(&key) else { continue };
        entry.held = false;
        if entry.pending.is_some() {
            st.queue.push_back(key);
            // This thread takes the front; wake another if more wait.
            if st.queue.len() > 1
                && let Some(t) = st.idle.pop()
            {
                t.unpark();
            }
        } else {
            st.logs.remove(&key);
        }
    }
}

/// The waiters an fsync released wake one by one; flushing again on the
/// first one back would split them into two groups that alternate. So wait
/// (briefly) until as many are back.
fn linger<'a>(shared: &'a Shared, mut st: MutexGuard<'a, State>, key: usize, released: usize) -> MutexGuard<'a, State> {
    let until = Instant::now() + LINGER;
    loop {
        let back = st.logs.get(&key).and_then(|e| e.pending.as_ref()).map_or(0, |(_, w)| w.len());
        let left = until.saturating_duration_since(Instant::now());
        if back >= released || left.is_zero() || st.stopped {
            return st;
        }
        st = shared.arrived.wait_timeout(st, left).unwrap_or_else(std::sync::PoisonError::into_inner).0;
    }
}

/// Flushes one log and tells its waiters how it went, as one burst
/// (`ferry_util::batch`: an AMQP channel answers the publishes one fsync
/// made durable with one confirm frame); then, their answers out, prepares
/// the log's next fsync (`Log::zero_ahead`).
fn flush_one(log: &Arc<Log>, target: u64, waiters: Vec<FlushCallback>) {
    let result = log.flush(target);
    ferry_util::batch::scope(|| {
        for done in waiters {
            done(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(LogError::Unavailable(e.to_string())),
            });
        }
    });
    if result.is_ok() {
        log.zero_ahead();
    }
}
