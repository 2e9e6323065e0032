//! The high-watermark checkpoint of a data directory (Kafka's
//! `replication-offset-checkpoint`): one file, `<data_dir>/replication-
//! offset-checkpoint`, holding the high watermark of every partition hosted
//! here, rewritten by the housekeeper every few seconds when any of them
//! moved and at a clean shutdown, read when the broker opens. Without it a
//! restarted node would start every partition at its log start and hide
//! records that were committed until its leader (or, alone, its own flush)
//! told it again.
//!
//! One file, not one per partition: a tick costs one write, fsync, rename
//! and directory fsync whatever the partition count (it used to be that per
//! moved partition, a burst on the disk that showed in produce latency).
//!
//! The format is Kafka's text: a version line `0`, the entry count, then one
//! `topic partition offset` line per partition (topic names have no
//! spaces). Written atomically; a missing or damaged file means "no
//! checkpoint" for every partition.
//!
//! Upgrade: a partition with no entry reads the per-partition file of older
//! versions (`high-watermark-checkpoint` in its log directory), which is
//! removed once the new file holding that partition is on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ferry_log::Log;
use ferry_util::sync::lock;

/// The file's name in the data directory.
pub(crate) const FILE_NAME: &str = "replication-offset-checkpoint";

/// The per-partition file of older versions, in the partition's log directory.
pub(crate) const LEGACY_FILE_NAME: &str = "high-watermark-checkpoint";

/// A partition: topic name and index (its log directory is `topics/<topic>/<index>`).
pub(crate) type Key = (String, i32);

/// The entries of a checkpoint file's text, or `None` if it is damaged.
pub(crate) fn parse(text: &str) -> Option<BTreeMap<Key, u64>> {
    let mut lines = text.lines();
    if lines.next()? != "0" {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    let mut entries = BTreeMap::new();
    for _ in 0..count {
        let mut fields = lines.next()?.split(' ');
        let (topic, index, hw) = (fields.next()?, fields.next()?, fields.next()?);
        if topic.is_empty() || fields.next().is_some() {
            return None;
        }
        let (index, hw): (i32, u64) = (index.parse().ok()?, hw.parse().ok()?);
        if index < 0 || entries.insert((topic.to_string(), index), hw).is_some() {
            return None;
        }
    }
    lines.next().is_none().then_some(entries)
}

/// The text of a checkpoint file holding `entries`.
pub(crate) fn render(entries: &BTreeMap<Key, u64>) -> String {
    let mut text = format!("0\n{}\n", entries.len());
    for ((topic, index), hw) in entries {
        text.push_str(&format!("{topic} {index} {hw}\n"));
    }
    text
}

/// The checkpoint of data directory `data_dir`, if there is a readable one.
pub(crate) fn read(data_dir: &Path) -> Option<BTreeMap<Key, u64>> {
    parse(&std::fs::read_to_string(data_dir.join(FILE_NAME)).ok()?)
}

/// The checkpointed high watermark in an older version's per-partition
/// file in log directory `dir`, if there is a readable one.
pub(crate) fn read_legacy(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join(LEGACY_FILE_NAME)).ok()?;
    let mut lines = text.lines();
    if lines.next()? != "0" {
        return None;
    }
    let hw = lines.next()?.trim().parse().ok()?;
    lines.next().is_none().then_some(hw)
}

/// Where a partition opening on `log` starts its high watermark: its entry
/// in the data directory's checkpoint, else its older per-partition file,
/// within the log as recovered (a crash under a lax flush policy may have
/// cut the log below it), else the log start. Also the checkpointed value
/// as read, and whether an older per-partition file is there to remove.
pub(crate) fn initial(log: &Log, entry: Option<u64>) -> (u64, Option<u64>, bool) {
    let legacy = log.dir().join(LEGACY_FILE_NAME).exists();
    let checkpoint = entry.or_else(|| if legacy { read_legacy(log.dir()) } else { None });
    let start = log.log_start_offset();
    let hw = checkpoint.map_or(start, |hw| hw.min(log.next_offset()).max(start));
    (hw, checkpoint, legacy)
}

/// The checkpoint file of one data directory, and the entries last read or
/// written (those of partitions not open yet are carried over).
pub(crate) struct Checkpoints {
    data_dir: PathBuf,
    /// Also serialises writers (the housekeeper and a shutdown).
    entries: Mutex<BTreeMap<Key, u64>>,
}

impl Checkpoints {
    /// Reads the checkpoint of `data_dir` (none if missing or damaged).
    pub(crate) fn open(data_dir: &Path) -> Checkpoints {
        let entries = read(data_dir).unwrap_or_default();
        Checkpoints { data_dir: data_dir.to_path_buf(), entries: Mutex::new(entries) }
    }

    /// The entry of partition `index` of `topic`, for its opening.
    pub(crate) fn get(&self, topic: &str, index: i32) -> Option<u64> {
        lock(&self.entries).get(&(topic.to_string(), index)).copied()
    }

    /// Replaces the file with the high watermarks of the open partitions
    /// that `open` returns (`None`: none moved, nothing to write), plus the
    /// entries of partitions not open (yet) for which `keep` holds (their
    /// log directory is still there): one write, fsync and rename. Whether
    /// it wrote. `open` runs under the writers' lock, so a slower writer
    /// never replaces a newer file with the older values it read.
    pub(crate) fn write(
        &self,
        open: impl FnOnce() -> Option<BTreeMap<Key, u64>>,
        keep: impl Fn(&Key) -> bool,
    ) -> std::io::Result<bool> {
        let mut entries = lock(&self.entries);
        let Some(open) = open() else { return Ok(false) };
        let mut next: BTreeMap<Key, u64> =
            entries.iter().filter(|(k, _)| !open.contains_key(*k) && keep(k)).map(|(k, v)| (k.clone(), *v)).collect();
        next.extend(open);
        ferry_util::fs::write_atomic(&self.data_dir.join(FILE_NAME), render(&next).as_bytes(), true)?;
        *entries = next;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: &str, i: i32) -> Key {
        (t.to_string(), i)
    }

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), None);
        let c = Checkpoints::open(dir.path());
        let open = BTreeMap::from([(key("t", 0), 42), (key("t", 1), 0), (key("__consumer_offsets", 7), 9)]);
        c.write(|| Some(open.clone()), |_| true).unwrap();
        assert_eq!(read(dir.path()), Some(open.clone()));
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(text, "0\n3\n__consumer_offsets 7 9\nt 0 42\nt 1 0\n");
        assert_eq!(Checkpoints::open(dir.path()).get("t", 0), Some(42));
        assert_eq!(Checkpoints::open(dir.path()).get("t", 2), None);
        assert_eq!(parse("0\n0\n"), Some(BTreeMap::new()));
        for bad in [
            "",
            "0\n",
            "1\n1\nt 0 5\n",
            "0\n1\n",
            "0\n1\nt 0 x\n",
            "0\n1\nt 0 -3\n",
            "0\n1\nt -1 3\n",
            "0\n1\nt 0\n",
            "0\n1\nt 0 5 6\n",
            "0\n1\n 0 5\n",
            "0\n2\nt 0 5\nt 0 6\n",
            "0\n1\nt 0 5\nt 1 6\n",
            "0\nx\n",
        ] {
            std::fs::write(dir.path().join(FILE_NAME), bad).unwrap();
            assert_eq!(read(dir.path()), None, "{bad:?}");
            assert_eq!(Checkpoints::open(dir.path()).get("t", 0), None, "{bad:?}");
        }
    }

    #[test]
    fn many_partitions_in_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::open(dir.path());
        let open: BTreeMap<Key, u64> =
            (0..1000).map(|i| (key(&format!("topic-{}", i % 10), i / 10), i as u64 * 3)).collect();
        c.write(|| Some(open.clone()), |_| true).unwrap();
        assert_eq!(read(dir.path()).unwrap(), open);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [FILE_NAME], "one file, no temporary left");
    }

    #[test]
    fn entries_of_partitions_not_open_are_kept_while_their_directory_is() {
        let dir = tempfile::tempdir().unwrap();
        Checkpoints::open(dir.path())
            .write(|| Some(BTreeMap::from([(key("a", 0), 5), (key("b", 0), 6), (key("c", 0), 7)])), |_| true)
            .unwrap();
        // After a restart, only a/0 opened so far; b/0 is still on disk, c/0 was trashed.
        let c = Checkpoints::open(dir.path());
        assert!(!c.write(|| None, |_| false).unwrap());
        assert_eq!(read(dir.path()).unwrap().len(), 3, "nothing moved: not rewritten");
        c.write(|| Some(BTreeMap::from([(key("a", 0), 8)])), |k| k.0 == "b").unwrap();
        assert_eq!(read(dir.path()).unwrap(), BTreeMap::from([(key("a", 0), 8), (key("b", 0), 6)]));
        assert_eq!(c.get("b", 0), Some(6));
        assert_eq!(c.get("c", 0), None);
    }

    #[test]
    fn legacy_files_are_read_and_damage_means_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_legacy(dir.path()), None);
        std::fs::write(dir.path().join(LEGACY_FILE_NAME), "0\n42\n").unwrap();
        assert_eq!(read_legacy(dir.path()), Some(42));
        for bad in ["", "0\n", "1\n5\n", "0\nx\n", "0\n5\n6\n", "0\n-3\n"] {
            std::fs::write(dir.path().join(LEGACY_FILE_NAME), bad).unwrap();
            assert_eq!(read_legacy(dir.path()), None, "{bad:?}");
        }
    }
}
