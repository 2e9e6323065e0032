//! Zeros written ahead of the appends, so that the fsync acknowledging an
//! append at a low rate writes the data and nothing else.
//!
//! An fdatasync that finds its file grown must also make the new length
//! durable: on ext4 without a journal (this project's machines) a second
//! synchronous write, of the inode table block, after the data's; with a
//! journal, a commit of the journal that the whole filesystem shares. Over
//! blocks already written (zeros) it writes the data and flushes the disk
//! cache, nothing more: measured in docs/benchmarks.md ("Issue #21 part 3:
//! the fsynced path (branch e-lat)"). Fallocated (unwritten) extents do not
//! do it: their conversion on first write is metadata again.
//!
//! Only for logs that fsync small amounts at a time and often (the
//! latency-bound case): at high rates a flush covers megabytes and shares
//! that one metadata write among them, while zeros would double the disk
//! writes; a log flushed now and then (an offsets partition taking a commit
//! every few seconds, one of ten thousand quiet partitions) would only hold
//! a megabyte of zeros for nothing. So the disk cost is at most `AHEAD` per
//! busy low-rate log, cut off at its roll or close.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::FlushPolicy;
use crate::log::Log;
use ferry_util::sync::lock;

/// Zeros kept ready past the data.
const AHEAD: u64 = 1 << 20;
/// Refill when fewer than this many are left.
const REFILL_BELOW: u64 = 256 << 10;
/// A flush that made more than this durable marks a rate at which the
/// zeros are not worth their write.
const SMALL_FLUSH: u64 = 256 << 10;
/// Small flushes in a row, each within `STEADY_GAP` of the one before,
/// before a log gets zeros.
const STEADY_FLUSHES: u32 = 16;
const STEADY_GAP: Duration = Duration::from_secs(1);

/// How a log's flushes of its active segment have gone lately.
#[derive(Default)]
pub(crate) struct FlushPace {
    small_in_a_row: u32,
    last: Option<Instant>,
}

impl FlushPace {
    /// Records a flush that made `bytes` of the active segment durable.
    pub(crate) fn note(&mut self, bytes: u64) {
        self.note_at(bytes, Instant::now());
    }

    fn note_at(&mut self, bytes: u64, now: Instant) {
        let steady = self.last.is_some_and(|t| now.duration_since(t) <= STEADY_GAP);
        self.small_in_a_row = if bytes <= SMALL_FLUSH && steady { self.small_in_a_row.saturating_add(1) } else { 0 };
        self.last = Some(now);
    }

    /// Small flushes come steadily: the appends wait for fsyncs one by one.
    fn latency_bound(&self) -> bool {
        self.small_in_a_row >= STEADY_FLUSHES
    }
}

impl Log {
    /// After a flush (on the flusher thread, once its waiters have been
    /// answered): tops up the active segment's zeros if this log flushes
    /// small amounts, often, and fsyncs them, so the file's new length
    /// is made durable here rather than under an append's fsync. A failed
    /// write only cuts the zeros off again (appends go on as plain file
    /// growth); a failed fsync fails the log, as in `Log::flush`.
    pub(crate) fn zero_ahead(self: &Arc<Self>) {
        let config = self.config();
        if config.flush != FlushPolicy::Always || !lock(&self.flush).pace.latency_bound() {
            return;
        }
        let seg_limit = config.segment_bytes;
        let active = {
            let w = lock(&self.writer);
            let active = w.active.clone();
            if w.zeros_off || active.zero_headroom() >= REFILL_BELOW {
                return;
            }
            let upto = (active.size() + AHEAD).min(seg_limit);
            match active.zero_ahead(&self.env.cache, upto) {
                Ok(true) => active,
                Ok(false) => return,
                Err(e) => {
                    tracing::debug!(log = %self.dir.display(), error = %e, "could not write zeros ahead");
                    return;
                }
            }
        };
        // No other flush of this log runs meanwhile (the flusher holds it).
        // A failed fsync may have dropped appended pages too, and reports
        // the error once per file: fail the log as `flush` would.
        if let Err(e) = active.sync(&self.env.cache, false) {
            tracing::error!(log = %self.dir.display(), error = %e, "fsync failed; log is now read-only");
            self.failed.store(true, std::sync::atomic::Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_steady_small_flushes_make_a_log_latency_bound() {
        let t0 = Instant::now();
        let mut pace = FlushPace::default();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        for i in 0..=u64::from(STEADY_FLUSHES) {
            assert!(!pace.latency_bound(), "not yet after {i} flushes");
            pace.note_at(1024, ms(i * 6));
        }
        assert!(pace.latency_bound());
        // One large flush: the rate is high, start over.
        pace.note_at(SMALL_FLUSH + 1, ms(200));
        assert!(!pace.latency_bound());
        for i in 0..=u64::from(STEADY_FLUSHES) {
            pace.note_at(1024, ms(300 + i * 900));
        }
        assert!(pace.latency_bound(), "a flush every 0.9 s is steady");
        // A quiet spell longer than the gap: start over.
        pace.note_at(1024, ms(300 + 17 * 900 + 1_500));
        assert!(!pace.latency_bound());
    }
}
