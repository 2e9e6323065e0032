//! A precise async sleep for the benches' paced senders. tokio's timer
//! wheel has a 1 ms resolution and rounds deadlines up, so at 1,000
//! messages/s a sender woken by `tokio::time::sleep_until` sent each
//! message 0 to 1 ms after it was due, and since latency is counted from
//! the due time, that delay was in every end-to-end figure, for Ferry and
//! its peer alike (about 0.5 ms at p50). Here tokio's timer covers all but
//! the last 2 ms, and a blocking `std::thread::sleep` (an hrtimer, as the
//! raw probe's in scripts/latency-probe.rs) on a blocking-pool thread the
//! rest; waking the sender from there costs a thread hand-off (tens of
//! microseconds, counted as latency), not a timer tick. (`block_in_place`
//! instead stalled lapin's publishes by up to a second.)

use std::time::{Duration, Instant};

/// What tokio's timer may be late by, and then some.
const COARSE: Duration = Duration::from_millis(2);

/// Returns at `at` (at once if it has passed).
pub async fn until(at: Instant) {
    if let Some(d) = at.checked_duration_since(Instant::now() + COARSE) {
        tokio::time::sleep(d).await;
    }
    if let Some(d) = at.checked_duration_since(Instant::now()) {
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(d)).await;
    }
}
