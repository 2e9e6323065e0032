//! The high-watermark checkpoint of one partition (Kafka's
//! `replication-offset-checkpoint`, one small file per partition here, in
//! its log's directory): written every few seconds when it moved and at a
//! clean shutdown, read when the partition opens. Without it a restarted
//! node would start every partition at its log start and hide records
//! that were committed until its leader (or, alone, its own flush) told it
//! again.
//!
//! The format is Kafka's text style: a version line `0`, then the offset.
//! Written atomically; a missing or damaged file means "no checkpoint".

use std::path::Path;

use ferry_log::Log;

/// The file's name in the partition's log directory.
pub(crate) const FILE_NAME: &str = "high-watermark-checkpoint";

/// The checkpointed high watermark in `dir`, if there is a readable one.
pub(crate) fn read(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join(FILE_NAME)).ok()?;
    let mut lines = text.lines();
    if lines.next()? != "0" {
        return None;
    }
    let hw = lines.next()?.trim().parse().ok()?;
    lines.next().is_none().then_some(hw)
}

/// Replaces the checkpoint with `hw` (write, fsync, rename).
pub(crate) fn write(dir: &Path, hw: u64) -> std::io::Result<()> {
    ferry_util::fs::write_atomic(&dir.join(FILE_NAME), format!("0\n{hw}\n").as_bytes(), true)
}

/// Where a partition opening on `log` starts its high watermark: the
/// checkpoint, within the log as recovered (a crash under a lax flush
/// policy may have cut the log below it), else the log start.
pub(crate) fn initial(log: &Log) -> (u64, Option<u64>) {
    let start = log.log_start_offset();
    let checkpoint = read(log.dir());
    let hw = checkpoint.map_or(start, |hw| hw.min(log.next_offset()).max(start));
    (hw, checkpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), None);
        write(dir.path(), 42).unwrap();
        assert_eq!(read(dir.path()), Some(42));
        write(dir.path(), 7).unwrap();
        assert_eq!(read(dir.path()), Some(7));
        for bad in ["", "0\n", "1\n5\n", "0\nx\n", "0\n5\n6\n", "0\n-3\n"] {
            std::fs::write(dir.path().join(FILE_NAME), bad).unwrap();
            assert_eq!(read(dir.path()), None, "{bad:?}");
        }
    }
}
