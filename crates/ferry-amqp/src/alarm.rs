//! Resource alarms, as RabbitMQ's: when free disk space under the data
//! directory drops below a limit, or the broker's resident memory grows past
//! one, publishing connections are blocked (connection.blocked, and their
//! frames are no longer read) until the alarm clears.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

/// Alarm thresholds.
#[derive(Clone, Debug)]
pub struct AlarmConfig {
    /// Where the disk space is measured (the data directory).
    pub data_dir: PathBuf,
    /// Block publishers below this many free bytes (RabbitMQ: 50 MB).
    pub disk_free_limit: u64,
    /// Block publishers above this resident memory (bytes); `None`: 40 % of
    /// the machine's memory (RabbitMQ's vm_memory_high_watermark 0.4).
    pub memory_limit: Option<u64>,
}

/// Free bytes available to unprivileged users on the file system of `dir`.
fn disk_free(dir: &std::path::Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(dir).ok()?;
    Some((s.blocks_available() as u64).saturating_mul(s.fragment_size() as u64))
}

/// This process's resident set size.
fn rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn mem_total() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The current alarm, if any (the reason sent in connection.blocked).
pub fn check(cfg: &AlarmConfig) -> Option<String> {
    if let Some(free) = disk_free(&cfg.data_dir)
        && free < cfg.disk_free_limit
    {
        return Some(format!("low on disk: {free} bytes free, limit {}", cfg.disk_free_limit));
    }
    let limit = cfg.memory_limit.or_else(|| mem_total().map(|t| t / 10 * 4))?;
    let used = rss()?;
    (used > limit).then(|| format!("low on memory: {used} bytes used, limit {limit}"))
}

/// Re-checks every second; the receiver always holds the current alarm.
pub fn monitor(cfg: AlarmConfig) -> watch::Receiver<Option<String>> {
    let (tx, rx) = watch::channel(check(&cfg));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = check(&cfg);
            if *tx.borrow() != now {
                if let Some(reason) = &now {
                    tracing::warn!(%reason, "resource alarm: blocking publishers");
                } else {
                    tracing::info!("resource alarm cleared");
                }
                if tx.send(now).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_limit_trips() {
        let dir = std::env::temp_dir();
        let ok = AlarmConfig { data_dir: dir.clone(), disk_free_limit: 0, memory_limit: Some(u64::MAX) };
        assert_eq!(check(&ok), None);
        let full = AlarmConfig { data_dir: dir.clone(), disk_free_limit: u64::MAX, memory_limit: Some(u64::MAX) };
        assert!(check(&full).is_some_and(|r| r.contains("disk")));
        let mem = AlarmConfig { data_dir: dir, disk_free_limit: 0, memory_limit: Some(1) };
        assert!(check(&mem).is_some_and(|r| r.contains("memory")));
    }
}
