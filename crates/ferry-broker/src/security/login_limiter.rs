//! Failed logins are slowed down per source address: each failure from
//! an address within the last minute makes the next failure answer later
//! (as Kafka's `connection.failed.authentication.delay.ms`, growing), so a
//! password guesser gets few tries per second while other clients are
//! not slowed at all.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Delay before a failure is answered, by recent failures from the address.
const DELAYS_MS: [u64; 6] = [100, 250, 500, 1000, 2000, 5000];
/// Failures older than this are forgotten.
const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most (a flood of sources cannot grow it unbounded).
const MAX_ADDRESSES: usize = 10_000;

/// Recent failed logins by source address.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl LoginLimiter {
    /// A limiter with no failures.
    pub fn new() -> LoginLimiter {
        LoginLimiter::default()
    }

    /// Counts a failure from `addr` at `now`; returns how long to wait
    /// before answering it.
    pub fn failed(&self, addr: IpAddr, now: Instant) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if failures.len() >= MAX_ADDRESSES {
            failures.retain(|_, (_, last)| now.saturating_duration_since(*last) < WINDOW);
            if failures.len() >= MAX_ADDRESSES {
                failures.clear();
            }
        }
        let entry = failures.entry(addr).or_insert((0, now));
        if now.saturating_duration_since(entry.1) >= WINDOW {
            entry.0 = 0;
        }
        let delay = DELAYS_MS[usize::try_from(entry.0).unwrap_or(usize::MAX).min(DELAYS_MS.len() - 1)];
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        Duration::from_millis(delay)
    }

    /// A login from `addr` succeeded: its failures are forgotten.
    pub fn succeeded(&self, addr: IpAddr) {
        self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_per_address_and_reset() {
        let l = LoginLimiter::new();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t = Instant::now();
        let delays: Vec<u64> = (0..8).map(|_| l.failed(a, t).as_millis() as u64).collect();
        assert_eq!(delays, [100, 250, 500, 1000, 2000, 5000, 5000, 5000]);
        assert_eq!(l.failed(b, t), Duration::from_millis(100), "other addresses are not slowed");
        assert_eq!(l.failed(a, t + WINDOW), Duration::from_millis(100), "old failures are forgotten");
        l.failed(b, t);
        l.succeeded(b);
        assert_eq!(l.failed(b, t), Duration::from_millis(100));
    }
}
