//! The recovery checkpoint of one log: how far the log is known to be on
//! disk, and where it starts. Recovery validates only what lies past it, so
//! start-up time depends on what was written since the last checkpoint, not
//! on the size of the log.

use std::fs::{self};
use std::io::{self};
use std::path::Path;

pub const FILE_NAME: &str = "recovery.checkpoint";

/// Everything before (`segment`, `position`) was fsynced before this was
/// written; `log_start` is the first readable offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub segment: u64,
    pub position: u64,
    pub log_start: u64,
}

impl Checkpoint {
    /// Reads the checkpoint; `None` if it is missing or damaged (then
    /// recovery validates the whole log).
    pub fn read(dir: &Path) -> Option<Checkpoint> {
        let text = fs::read_to_string(dir.join(FILE_NAME)).ok()?;
        let mut fields = text.split_whitespace();
        if fields.next()? != "v1" {
            return None;
        }
        let mut num = || fields.next()?.parse::<u64>().ok();
        let (segment, position, log_start, crc) = (num()?, num()?, num()?, num()?);
        let cp = Checkpoint { segment, position, log_start };
        (u64::from(cp.crc()) == crc).then_some(cp)
    }

    /// Replaces the checkpoint atomically (write, fsync, rename).
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        let line = format!("v1 {} {} {} {}\n", self.segment, self.position, self.log_start, self.crc());
        ferry_util::fs::write_atomic(&dir.join(FILE_NAME), line.as_bytes(), true)
    }

    fn crc(&self) -> u32 {
        let mut b = Vec::with_capacity(24);
        for v in [self.segment, self.position, self.log_start] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        ferry_records::batch::crc32c(&b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Checkpoint::read(dir.path()), None);
        let cp = Checkpoint { segment: 100, position: 4096, log_start: 7 };
        cp.write(dir.path()).unwrap();
        assert_eq!(Checkpoint::read(dir.path()), Some(cp));
        fs::write(dir.path().join(FILE_NAME), "v1 100 4097 7 1234\n").unwrap();
        assert_eq!(Checkpoint::read(dir.path()), None);
        fs::write(dir.path().join(FILE_NAME), [0u8; 30]).unwrap();
        assert_eq!(Checkpoint::read(dir.path()), None);
    }
}
