//! The data directory lock: `ferry serve` holds an exclusive `flock` on
//! `<data>/.lock` while it runs, so a second process on the same directory
//! (which would corrupt the logs and the Raft state) exits at once. The
//! kernel drops the lock when the process ends, even on kill -9, so a
//! restart never finds a stale lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::Path;

use anyhow::Context;

/// Held for as long as the process serves from the directory.
#[derive(Debug)]
pub struct DataLock {
    _file: File,
}

/// Takes the lock on `data_dir` (created if missing), or says which
/// process holds it.
pub fn acquire(data_dir: &Path) -> anyhow::Result<DataLock> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let path = data_dir.join(".lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            let by = if holder.is_empty() { String::new() } else { format!(" (pid {holder})") };
            anyhow::bail!(
                "data directory {} is in use by another ferry process{by}: {} is locked",
                data_dir.display(),
                path.display()
            );
        }
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    }
    // For the operator and the message above: which process holds it.
    file.set_len(0)?;
    writeln!(file, "{}", std::process::id())?;
    Ok(DataLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = acquire(&data).unwrap();
        let err = acquire(&data).unwrap_err().to_string();
        assert!(err.contains("in use by another ferry process"), "{err}");
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
        drop(first);
        assert!(acquire(&data).is_ok());
    }
}
