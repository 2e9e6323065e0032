//! Zeros written ahead of the appends of a log that fsyncs little at a
//! time: appends overwrite them in place, a crash leaves them as a tail
//! that recovery cuts without calling it damage, and a roll or a close
//! leaves a file as long as its data.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_log::{FlushPolicy, LogConfig};

use crate::{manager, open, read_all, value_batch};

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig { segment_bytes, flush: FlushPolicy::Always, ..LogConfig::default() }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

fn len(p: &Path) -> u64 {
    fs::metadata(p).unwrap().len()
}

/// Waits (bounded) for the flusher to write zeros past `data` bytes.
fn zeros_ahead_of(p: &Path, data: u64) -> bool {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if len(p) > data {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

fn value(i: usize) -> String {
    format!("{i:05}:{}", "z".repeat(200))
}

#[test]
fn appends_overwrite_zeros_and_a_crash_leaves_only_a_tail_to_cut() {
    let live = tempfile::tempdir().unwrap();
    let m = manager();
    let log = open(&m, live.path(), config(1 << 30));
    let mut data = 0;
    for i in 0..50 {
        let info = log.append(&value_batch(&value(i), i as i64)).unwrap();
        log.flush_to(info.last_offset + 1).unwrap();
        data += info.bytes;
    }
    let seg = segments(live.path()).pop().unwrap();
    assert!(zeros_ahead_of(&seg, data), "no zeros were written ahead of {data} bytes");
    // Appends after the zeros land at the end of the data, not of the file.
    for i in 50..80 {
        let info = log.append(&value_batch(&value(i), i as i64)).unwrap();
        log.flush_to(info.last_offset + 1).unwrap();
        data += info.bytes;
    }
    let expected: Vec<String> = (0..80).map(value).collect();
    let got = |log: &ferry_log::Log| read_all(log).into_iter().map(|r| r.2.unwrap()).collect::<Vec<_>>();
    assert_eq!(got(&log), expected);
    assert!(len(&seg) > data, "the zeros are still ahead");

    // A crash now: the files as they are, zeros included.
    let copy = tempfile::tempdir().unwrap();
    for e in fs::read_dir(live.path()).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), copy.path().join(e.file_name())).unwrap();
    }
    let m2 = manager();
    let recovered = open(&m2, copy.path(), config(1 << 30));
    assert_eq!(got(&recovered), expected, "every batch survives, nothing else appears");
    let seg2 = segments(copy.path()).pop().unwrap();
    assert_eq!(len(&seg2), data, "recovery cut the zeros");
    // And appends go on at the right offset.
    let info = recovered.append(&value_batch(&value(80), 80)).unwrap();
    assert_eq!(info.base_offset, 80);
    recovered.flush_to(81).unwrap();
    let mut expected = expected;
    expected.push(value(80));
    assert_eq!(got(&recovered), expected);
}

#[test]
fn a_rolled_segment_and_a_closed_log_are_as_long_as_their_data() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager();
    // Small segments: every roll seals a segment that had zeros ahead.
    let log = open(&m, dir.path(), config(16 * 1024));
    let mut sizes = Vec::new();
    let mut data = 0;
    for i in 0..300 {
        let info = log.append(&value_batch(&value(i), i as i64)).unwrap();
        log.flush_to(info.last_offset + 1).unwrap();
        if data + info.bytes > 16 * 1024 {
            sizes.push(data);
            data = 0;
        }
        data += info.bytes;
    }
    let segs = segments(dir.path());
    assert!(segs.len() > 3, "the log rolled");
    for (seg, size) in segs.iter().zip(&sizes) {
        assert_eq!(len(seg), *size, "{} keeps no zeros past its data", seg.display());
    }
    log.close().unwrap();
    assert_eq!(len(segs.last().unwrap()), data, "close cut the active segment's zeros");
    let m2 = manager();
    drop(log);
    let reopened = open(&m2, dir.path(), config(16 * 1024));
    assert_eq!(read_all(&reopened).len(), 300);
}
