//! The engine: opens logs and runs the threads they share (the flushers,
//! the interval ticker (`ticker.rs`), the checkpointer and the cleaner),
//! and bounds the open segments across all of them.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::cache::SegmentCache;
use crate::config::{EngineConfig, LogConfig};
use crate::error::Result;
use crate::flusher::{Flusher, Registry};
use crate::log::Log;
use crate::ticker::Ticker;
use ferry_util::sync::lock;

/// What every log of one manager shares.
pub struct Env {
    pub(crate) config: EngineConfig,
    pub(crate) cache: SegmentCache,
    pub(crate) flusher: Flusher,
    pub(crate) fsync: crate::stats::FsyncStats,
    /// Flushes interval-policy logs when due; appends wake it.
    pub(crate) ticker: Ticker,
}

/// Owns the background threads; dropping it (or [`LogManager::shutdown`])
/// stops them. Logs are opened through it.
pub struct LogManager {
    env: Arc<Env>,
    registry: Arc<Registry>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    stopped: AtomicBool,
}

impl LogManager {
    /// Starts the engine's background threads (flusher, flush ticker,
    /// checkpointer, cleaner) with `config`.
    pub fn new(config: EngineConfig) -> LogManager {
        let registry: Arc<Registry> = Arc::new(Mutex::new(Vec::new()));
        let flusher = Flusher::start();
        let env = Arc::new(Env {
            cache: SegmentCache::new(config.max_open_segments),
            flusher,
            fsync: Default::default(),
            ticker: Ticker::new(),
            config,
        });
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        // Checkpoints have a thread of their own: their fsyncs would hold up
        // the flusher's group commits, and a long compaction the checkpoints.
        let ticker = {
            let (env, registry) = (env.clone(), registry.clone());
            let spawned = std::thread::Builder::new()
                .name("ferry-log-ticker".into())
                .spawn(move || env.ticker.run(&registry, request_due));
            if let Err(e) = &spawned {
                tracing::error!(error = %e, "could not start the log flush ticker");
            }
            spawned.ok()
        };
        let threads = [
            ticker,
            every(&registry, &stop, "ferry-log-checkpointer", env.config.checkpoint_interval, checkpoint_all),
            every(&registry, &stop, "ferry-log-cleaner", env.config.cleaner_interval, clean_all),
        ];
        LogManager {
            env,
            registry,
            threads: Mutex::new(threads.into_iter().flatten().collect()),
            stop,
            stopped: AtomicBool::new(false),
        }
    }

    /// Opens (recovering if needed) or creates the log in `dir`.
    pub fn open(&self, dir: &Path, config: LogConfig) -> Result<Arc<Log>> {
        let log = Log::open(dir, config, self.env.clone())?;
        lock(&self.registry).push(Arc::downgrade(&log));
        Ok(log)
    }

    /// Segments currently holding a file descriptor, across all logs.
    pub fn open_segments(&self) -> usize {
        self.env.cache.open_segments()
    }

    /// Latency of the log flushes that reached the disk, across all logs.
    pub fn fsync_stats(&self) -> &crate::stats::FsyncStats {
        &self.env.fsync
    }

    /// Flushes and checkpoints every log, then stops the threads.
    pub fn shutdown(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        {
            let (flag, cv) = &*self.stop;
            *lock(flag) = true;
            cv.notify_all();
        }
        self.env.ticker.stop();
        for t in std::mem::take(&mut *lock(&self.threads)) {
            let _ = t.join();
        }
        for log in live(&self.registry) {
            if let Err(e) = log.close() {
                tracing::error!(log = %log.dir().display(), error = %e, "close failed");
            }
        }
        self.env.flusher.stop();
    }
}

impl Drop for LogManager {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The logs still open (forgetting dropped ones).
fn live(registry: &Registry) -> Vec<Arc<Log>> {
    let mut reg = lock(registry);
    reg.retain(|w| w.strong_count() > 0);
    reg.iter().filter_map(Weak::upgrade).collect()
}

/// Asks for a flush of every interval-policy log whose unflushed data is
/// due at `now`; returns the earliest deadline of the others.
fn request_due(registry: &Registry, now: u64) -> Option<u64> {
    let mut next: Option<u64> = None;
    for log in live(registry) {
        match log.flush_deadline() {
            Some(at) if at <= now => log.env.flusher.request(log.clone(), log.next_offset(), None),
            Some(at) => next = Some(next.map_or(at, |n| n.min(at))),
            None => {}
        }
    }
    next
}

fn clean_all(registry: &Registry) {
    let now = ferry_util::time::now_ms_u64();
    for log in live(registry) {
        if let Err(e) = log.enforce_retention(now) {
            tracing::warn!(log = %log.dir().display(), error = %e, "retention failed");
        }
        if let Err(e) = log.compact(now) {
            tracing::warn!(log = %log.dir().display(), error = %e, "compaction failed");
        }
    }
}

/// Refreshes stale recovery checkpoints, so a restart scans little.
fn checkpoint_all(registry: &Registry) {
    for log in live(registry) {
        if let Err(e) = log.checkpoint_if_stale() {
            tracing::warn!(log = %log.dir().display(), error = %e, "checkpoint failed");
        }
    }
}

/// Starts a thread that runs `work` every `interval` until the manager stops.
fn every(
    registry: &Arc<Registry>,
    stop: &Arc<(Mutex<bool>, Condvar)>,
    name: &str,
    interval: Duration,
    work: fn(&Registry),
) -> Option<JoinHandle<()>> {
    let (registry, stop) = (registry.clone(), stop.clone());
    let spawned = std::thread::Builder::new().name(name.into()).spawn(move || {
        let (flag, cv) = &*stop;
        loop {
            let guard = lock(flag);
            let (guard, _) =
                cv.wait_timeout_while(guard, interval, |s| !*s).unwrap_or_else(std::sync::PoisonError::into_inner);
            if *guard {
                return;
            }
            drop(guard);
            work(&registry);
        }
    });
    if let Err(e) = &spawned {
        tracing::error!(thread = name, error = %e, "could not start a log thread");
    }
    spawned.ok()
}
