//! The interval-flush ticker: asks for a flush of every interval-policy log
//! whose oldest unflushed data is `flush.ms` old. It sleeps until the
//! earliest such deadline instead of polling: an append that makes a clean
//! interval-policy log dirty (and a config change that makes a dirty log
//! interval-policy) wakes it if that log falls due before it would look
//! again. A 5 ms poll of every log cost an idle broker about 400 wake-ups
//! a second, each taking a CPU from whatever else was runnable.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::flusher::Registry;
use ferry_util::sync::lock;

/// Shortest sleep between passes: a log found due gets its flush requested
/// and is looked at again this much later (it is clean by then).
const MIN_SLEEP: Duration = Duration::from_millis(5);

/// Longest sleep with nothing due: only a safety net, as every way a log
/// falls due wakes the ticker.
const MAX_SLEEP: Duration = Duration::from_secs(1);

pub(crate) struct Ticker {
    /// When (ms since the epoch) the ticker looks next; lowered by
    /// [`Ticker::due_at`], which then wakes it.
    planned: Mutex<u64>,
    woken: Condvar,
    stopped: AtomicBool,
}

impl Ticker {
    pub(crate) fn new() -> Ticker {
        Ticker { planned: Mutex::new(0), woken: Condvar::new(), stopped: AtomicBool::new(false) }
    }

    /// Ends [`Ticker::run`].
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.due_at(0);
    }

    /// A log falls due for a flush at `due_ms`: wake the ticker if it would
    /// look later than that.
    pub(crate) fn due_at(&self, due_ms: u64) {
        let mut planned = lock(&self.planned);
        if due_ms < *planned {
            *planned = due_ms;
            self.woken.notify_one();
        }
    }

    /// Runs passes of `pass` (which requests the flushes due and returns
    /// the next deadline, if any) until [`Ticker::stop`].
    pub(crate) fn run(&self, registry: &Registry, pass: fn(&Registry, u64) -> Option<u64>) {
        loop {
            // Reset before looking: a log that falls due during the pass
            // lowers this, so its wake-up is not lost.
            *lock(&self.planned) = u64::MAX;
            if self.stopped.load(Ordering::Acquire) {
                return;
            }
            let now = ferry_util::time::now_ms_u64();
            let next = pass(registry, now).unwrap_or(u64::MAX);
            let mut planned = lock(&self.planned);
            let at = next.min(*planned);
            *planned = at;
            let sleep = Duration::from_millis(at.saturating_sub(now)).clamp(MIN_SLEEP, MAX_SLEEP);
            // Woken early only when `due_at` lowers the plan.
            let _ = self.woken.wait_timeout_while(planned, sleep, |p| *p == at && at != 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;
    use std::time::Instant;

    static PASSES: AtomicU64 = AtomicU64::new(0);

    /// A pass that finds nothing dirty.
    fn idle(_: &Registry, _: u64) -> Option<u64> {
        PASSES.fetch_add(1, Ordering::SeqCst);
        None
    }

    #[test]
    fn sleeps_while_idle_and_wakes_for_a_due_log_and_for_stop() {
        let ticker = Arc::new(Ticker::new());
        let registry: Arc<Registry> = Arc::default();
        let t = {
            let (ticker, registry) = (ticker.clone(), registry.clone());
            std::thread::spawn(move || ticker.run(&registry, idle))
        };
        std::thread::sleep(Duration::from_millis(300));
        // Idle: one pass, then asleep (a 5 ms poll would have made ~60).
        let idle_passes = PASSES.load(Ordering::SeqCst);
        assert!((1..=3).contains(&idle_passes), "{idle_passes} passes while idle");
        // A log due now: the ticker passes again at once, not after MAX_SLEEP.
        let woken = Instant::now();
        ticker.due_at(ferry_util::time::now_ms_u64());
        while PASSES.load(Ordering::SeqCst) == idle_passes {
            assert!(woken.elapsed() < Duration::from_millis(500), "not woken by due_at");
            std::thread::sleep(Duration::from_millis(1));
        }
        ticker.stop();
        let stopping = Instant::now();
        t.join().expect("ticker thread");
        assert!(stopping.elapsed() < Duration::from_millis(500), "stop took {:?}", stopping.elapsed());
    }
}
