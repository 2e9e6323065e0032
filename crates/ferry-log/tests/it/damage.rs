//! A crashed log's files, damaged the ways disks and power cuts damage
//! them: each recovers to the last valid batch and keeps serving.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use ferry_log::LogConfig;

use crate::{manager, open, read_all, value_batch};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 8192,
        index_interval_bytes: 256,
        flush: ferry_log::FlushPolicy::Os,
        ..LogConfig::default()
    }
}

/// Writes `n` batches and returns a copy of the files as a crash at that
/// moment would leave them (the checkpoint is whatever was last written).
fn crashed_log(n: usize) -> (tempfile::TempDir, tempfile::TempDir) {
    log_copy(n, false)
}

/// As `crashed_log`, or after a clean close when `closed`.
fn log_copy(n: usize, closed: bool) -> (tempfile::TempDir, tempfile::TempDir) {
    let live = tempfile::tempdir().unwrap();
    let m = manager();
    let log = open(&m, live.path(), config());
    for i in 0..n {
        log.append(&value_batch(&format!("{i:04}:{}", "v".repeat(100)), i as i64)).unwrap();
    }
    if closed {
        log.close().unwrap();
    }
    let copy = tempfile::tempdir().unwrap();
    for e in fs::read_dir(live.path()).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), copy.path().join(e.file_name())).unwrap();
    }
    (live, copy)
}

fn segment_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

fn values(dir: &Path) -> Vec<String> {
    let m = manager();
    let log = open(&m, dir, config());
    let vals: Vec<String> = read_all(&log).into_iter().map(|r| r.2.unwrap()[..4].to_string()).collect();
    // The recovered log takes appends at the right offset.
    let next = log.next_offset();
    assert_eq!(next as usize, vals.len());
    assert_eq!(log.append(&value_batch("more", 1)).unwrap().base_offset, next);
    vals
}

fn expect_prefix(vals: &[String], n: usize) {
    assert_eq!(vals.len(), n);
    for (i, v) in vals.iter().enumerate() {
        assert_eq!(v, &format!("{i:04}"));
    }
}

#[test]
fn undamaged_crash_loses_nothing() {
    let (_live, copy) = crashed_log(20);
    expect_prefix(&values(copy.path()), 20);
}

#[test]
fn flipped_byte_in_the_tail_cuts_the_last_batch() {
    let (_live, copy) = crashed_log(20);
    let last = segment_files(copy.path(), "log").pop().unwrap();
    let mut data = fs::read(&last).unwrap();
    let n = data.len();
    data[n - 10] ^= 0xff;
    fs::write(&last, data).unwrap();
    expect_prefix(&values(copy.path()), 19);
}

#[test]
fn batch_cut_in_half_is_dropped() {
    let (_live, copy) = crashed_log(20);
    let last = segment_files(copy.path(), "log").pop().unwrap();
    let len = fs::metadata(&last).unwrap().len();
    OpenOptions::new().write(true).open(&last).unwrap().set_len(len - 60).unwrap();
    expect_prefix(&values(copy.path()), 19);
}

#[test]
fn zero_filled_tail_after_power_loss_is_cut() {
    let (_live, copy) = crashed_log(20);
    let last = segment_files(copy.path(), "log").pop().unwrap();
    OpenOptions::new().append(true).open(&last).unwrap().write_all(&[0u8; 4096]).unwrap();
    expect_prefix(&values(copy.path()), 20);
}

#[test]
fn corruption_in_an_earlier_unflushed_segment_drops_everything_after_it() {
    // 200 batches of ~180 bytes roll several 8 KiB segments; with the `os`
    // policy the checkpoint only covers rolled segments once the flusher
    // synced them, so damage the last two segments' boundary region.
    let (_live, copy) = crashed_log(200);
    let logs = segment_files(copy.path(), "log");
    assert!(logs.len() >= 3);
    // Remove the checkpoint: recovery must validate every segment.
    fs::remove_file(copy.path().join("recovery.checkpoint")).unwrap();
    let victim = &logs[1];
    let mut data = fs::read(victim).unwrap();
    data[500] ^= 0x01;
    fs::write(victim, data).unwrap();
    let vals = values(copy.path());
    let first_seg_batches = fs::metadata(&logs[0]).unwrap().len() as usize / 180; // rough
    assert!(vals.len() > first_seg_batches / 2 && vals.len() < 200, "{} survived", vals.len());
    expect_prefix(&vals, vals.len());
    assert!(segment_files(copy.path(), "log").len() <= 2, "segments after the corrupt one remain");
}

#[test]
fn missing_truncated_or_garbage_indexes_are_rebuilt() {
    // After a clean close every segment has index files, and recovery
    // trusts all the data: the damaged indexes are caught when loaded.
    let (_live, copy) = log_copy(200, true);
    let indexes = segment_files(copy.path(), "index");
    let times = segment_files(copy.path(), "timeindex");
    fs::remove_file(&indexes[0]).unwrap();
    let len = fs::metadata(&indexes[1]).unwrap().len();
    OpenOptions::new().write(true).open(&indexes[1]).unwrap().set_len(len / 2 + 3).unwrap();
    // Plausible but wrong: relative offset 1 at byte 16 (mid-batch).
    fs::write(&indexes[2], b"\x00\x00\x00\x01\x00\x00\x00\x10garbage").unwrap();
    fs::write(&times[0], [0u8; 36]).unwrap();
    expect_prefix(&values(copy.path()), 200);
    // Lookups through the rebuilt indexes land on the right batches.
    let m = manager();
    let log = open(&m, copy.path(), config());
    for o in (0..200).step_by(7).chain([199]) {
        let bytes = log.read_bytes(o, 1).unwrap();
        let (h, _) = ferry_records::batch::split(&bytes).unwrap()[0];
        assert_eq!(h.base_offset, o);
    }
    assert_eq!(log.offset_for_timestamp(123).unwrap().map(|r| r.0), Some(123));
}

#[test]
fn damaged_checkpoint_means_full_validation() {
    let (_live, copy) = crashed_log(100);
    fs::write(copy.path().join("recovery.checkpoint"), b"v1 0 999999 0 12").unwrap();
    let last = segment_files(copy.path(), "log").pop().unwrap();
    let len = fs::metadata(&last).unwrap().len();
    OpenOptions::new().write(true).open(&last).unwrap().set_len(len - 1).unwrap();
    expect_prefix(&values(copy.path()), 99);
}

#[test]
fn start_up_after_a_clean_close_touches_only_the_active_segment() {
    let (_live, copy) = log_copy(400, true);
    assert!(segment_files(copy.path(), "log").len() > 8);
    let m = manager();
    let log = open(&m, copy.path(), config());
    assert_eq!(m.open_segments(), 1, "closed segments stay unopened until read");
    assert_eq!(log.next_offset(), 400);
    assert_eq!(read_all(&log).len(), 400);
}
