//! Wall-clock milliseconds since the Unix epoch, as Kafka timestamps count
//! them. A clock before the epoch reads as 0 rather than failing: callers
//! use these for timestamps and deadlines, where a panic would be worse.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, signed as Kafka record timestamps are.
pub fn now_ms() -> i64 {
    i64::try_from(now_ms_u64()).unwrap_or(i64::MAX)
}

/// Milliseconds since the Unix epoch, unsigned (deadlines, expiry times).
pub fn now_ms_u64() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_read_the_same_clock() {
        let a = now_ms_u64();
        let b = now_ms();
        let c = now_ms_u64();
        // After 2020-01-01 and monotone enough across three reads.
        assert!(a > 1_577_836_800_000);
        assert!(a as i64 <= b && b as u64 <= c);
    }
}
