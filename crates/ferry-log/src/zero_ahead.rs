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
//! Only for logs that fsync small amounts at a time (the latency-bound
//! case): at high rates a flush covers megabytes and shares that one
//! metadata write among them, while zeros would double the disk writes.

use std::sync::Arc;

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

impl Log {
    /// After a flush (on the flusher thread, once its waiters have been
    /// answered): tops up the active segment's zeros if this log flushes
    /// small amounts at a time, and fsyncs them, so the file's new length
    /// is made durable here rather than under an append's fsync. A failed
    /// write only cuts the zeros off again (appends go on as plain file
    /// growth); a failed fsync fails the log, as in `Log::flush`.
    pub(crate) fn zero_ahead(self: &Arc<Self>) {
        let config = self.config();
        if config.flush != FlushPolicy::Always || lock(&self.flush).last_flush_bytes > SMALL_FLUSH {
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
