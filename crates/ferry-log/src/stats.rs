//! Counters the engine keeps for observers (the broker exports them as
//! metrics). Plain atomics: the engine knows nothing of metrics libraries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the fsync latency buckets: 50 µs to 5 s.
pub const FSYNC_BUCKETS: &[f64] =
    &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// A latency histogram of the log flushes that reached the disk (one
/// observation per flush of a log, however many fsyncs it took: rolled
/// segments, the directory, the active segment).
#[derive(Debug)]
pub struct FsyncStats {
    /// One counter per bucket of [`FSYNC_BUCKETS`], plus one for larger values.
    buckets: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

/// A consistent-enough copy of [`FsyncStats`] for export.
#[derive(Clone, Debug, PartialEq)]
pub struct FsyncSnapshot {
    /// (upper bound in seconds, observations in this bucket, not cumulative);
    /// the last bound is `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
    /// Total time of all observed flushes, in seconds.
    pub sum_seconds: f64,
    /// Number of observed flushes.
    pub count: u64,
}

impl Default for FsyncStats {
    fn default() -> Self {
        FsyncStats {
            buckets: (0..=FSYNC_BUCKETS.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl FsyncStats {
    /// Records one flush that took `d`.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = FSYNC_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(FSYNC_BUCKETS.len());
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_nanos.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads the counters (not atomically as a whole: a concurrent flush may
    /// show in `count` but not yet in a bucket).
    pub fn snapshot(&self) -> FsyncSnapshot {
        let bounds = FSYNC_BUCKETS.iter().copied().chain(std::iter::once(f64::INFINITY));
        FsyncSnapshot {
            buckets: bounds.zip(&self.buckets).map(|(b, c)| (b, c.load(Ordering::Relaxed))).collect(),
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_buckets() {
        let s = FsyncStats::default();
        s.observe(Duration::from_micros(10));
        s.observe(Duration::from_millis(3));
        s.observe(Duration::from_secs(60));
        let snap = s.snapshot();
        assert_eq!(snap.count, 3);
        assert_eq!(snap.buckets.len(), FSYNC_BUCKETS.len() + 1);
        assert_eq!(snap.buckets[0], (0.00005, 1));
        assert_eq!(snap.buckets.iter().find(|(b, _)| *b == 0.005).map(|x| x.1), Some(1));
        assert_eq!(snap.buckets.last(), Some(&(f64::INFINITY, 1)));
        assert!((snap.sum_seconds - 60.00301).abs() < 1e-6);
    }
}
