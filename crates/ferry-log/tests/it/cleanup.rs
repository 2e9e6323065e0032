use std::collections::BTreeMap;

use ferry_log::{CleanupPolicy, LogConfig, LogError};
use ferry_records::compression::Compression;

use crate::{batch, manager, open, read_all, small_config, value_batch};

#[test]
fn retention_by_size_deletes_oldest_closed_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager();
    let log = open(&m, dir.path(), LogConfig { retention_bytes: Some(10_000), retention_ms: None, ..small_config() });
    for i in 0..300 {
        log.append(&value_batch(&format!("{i:05}{}", "r".repeat(60)), i)).unwrap();
    }
    let before = log.segment_count();
    let deleted = log.enforce_retention(ferry_log_now()).unwrap();
    assert!(deleted > 0 && log.segment_count() == before - deleted);
    assert!(log.size_bytes() < 10_000 + 4096, "{} bytes left", log.size_bytes());
    let start = log.log_start_offset();
    assert!(start > 0);
    let all = read_all(&log);
    assert_eq!(all.first().unwrap().0, start);
    assert_eq!(all.last().unwrap().0, 299);
    assert!(matches!(log.read(start - 1, 100), Err(LogError::OffsetOutOfRange { .. })));
    // The start survives a reopen.
    log.close().unwrap();
    drop(log);
    let log = open(&m, dir.path(), LogConfig { retention_bytes: Some(10_000), ..small_config() });
    assert_eq!(log.log_start_offset(), start);
}

#[test]
fn retention_by_time_uses_the_largest_timestamp_and_spares_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager();
    let now = ferry_log_now();
    let log = open(&m, dir.path(), LogConfig { retention_ms: Some(60_000), ..small_config() });
    // Old data (two hours ago), then one recent batch in the last segment.
    for i in 0..100 {
        log.append(&value_batch(&format!("old{i}{}", "o".repeat(60)), now as i64 - 7_200_000)).unwrap();
    }
    let old_segments = log.segment_count() - 1;
    assert!(old_segments > 0);
    assert_eq!(log.enforce_retention(now).unwrap(), old_segments);
    assert_eq!(log.segment_count(), 1, "active segment is never deleted, even when expired");
    assert!(!read_all(&log).is_empty());
    log.append(&value_batch("new", now as i64)).unwrap();
    assert_eq!(log.enforce_retention(now).unwrap(), 0);
    // Compact-only logs are not subject to deletion.
    let log2 = open(
        &m,
        &dir.path().join("c"),
        LogConfig { retention_ms: Some(1), cleanup_policy: CleanupPolicy::COMPACT, ..small_config() },
    );
    for i in 0..100 {
        log2.append(&batch(&[(Some(&format!("k{i}")), Some(&"v".repeat(60)))], 1, Compression::None)).unwrap();
    }
    assert_eq!(log2.enforce_retention(now).unwrap(), 0);
}

#[test]
fn delete_records_moves_the_start_durably() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager();
    let log = open(&m, dir.path(), small_config());
    for i in 0..200 {
        log.append(&value_batch(&format!("{i}{}", "d".repeat(60)), i)).unwrap();
    }
    let segments = log.segment_count();
    assert!(log.delete_records_before(500).is_err(), "past the high watermark");
    assert_eq!(log.delete_records_before(150).unwrap(), 150);
    assert!(log.segment_count() < segments);
    assert_eq!(read_all(&log).first().unwrap().0, 150);
    assert_eq!(log.delete_records_before(10).unwrap(), 150, "never moves back");
    drop(log);
    let log = open(&m, dir.path(), small_config());
    assert_eq!(log.log_start_offset(), 150);
    assert_eq!(read_all(&log).len(), 50);
}

#[test]
fn truncate_to_removes_the_suffix_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager();
    let log = open(&m, dir.path(), small_config());
    for i in 0..150 {
        let recs: Vec<(Option<&str>, Option<&str>)> = vec![(None, Some("a")), (None, Some("b"))];
        let _ = i;
        log.append(&batch(&recs, 1, Compression::None)).unwrap();
    }
    // Offset 101 is inside the batch [100, 101]: the whole batch goes.
    assert_eq!(log.truncate_to(101).unwrap(), 100);
    assert_eq!(log.next_offset(), 100);
    assert_eq!(read_all(&log).len(), 100);
    let info = log.append(&value_batch("after", 1)).unwrap();
    assert_eq!(info.base_offset, 100);
    assert_eq!(log.truncate_to(0).unwrap(), 0);
    assert!(read_all(&log).is_empty());
    log.append(&value_batch("fresh", 1)).unwrap();
    drop(log);
    let log = open(&m, dir.path(), small_config());
    let all = read_all(&log);
    assert_eq!(all, vec![(0, None, Some("fresh".to_string()))]);
}

#[test]
fn truncate_to_with_flush_always_moves_every_watermark_back_and_survives_reopen() {
    // Raft's conflicting-suffix truncation: the log is fsynced per append,
    // so the high watermark and durable offset sit at the log end and must
    // follow it back; appends after the cut get the freed offsets again.
    let dir = tempfile::tempdir().unwrap();
    let m = manager();
    let config = LogConfig { flush: ferry_log::FlushPolicy::Always, ..small_config() };
    let log = open(&m, dir.path(), config.clone());
    for i in 0..120 {
        log.append(&value_batch(&format!("e{i}{}", "p".repeat(40)), 1)).unwrap();
    }
    log.flush_to(120).unwrap();
    assert_eq!((log.high_watermark(), log.durable_offset()), (120, 120));
    assert!(log.segment_count() > 2, "the cut must cross segments");
    assert_eq!(log.truncate_to(37).unwrap(), 37);
    assert_eq!((log.next_offset(), log.high_watermark(), log.durable_offset()), (37, 37, 37));
    assert!(log.read_bytes(37, 1 << 20).unwrap().is_empty());
    let info = log.append(&value_batch("replacement", 1)).unwrap();
    assert_eq!(info.base_offset, 37);
    log.flush_to(38).unwrap();
    assert_eq!((log.high_watermark(), log.durable_offset()), (38, 38));
    // A cut at the end is a no-op.
    assert_eq!(log.truncate_to(38).unwrap(), 38);
    drop(log);
    let log = open(&m, dir.path(), config);
    let all = read_all(&log);
    assert_eq!(all.len(), 38);
    assert_eq!(all[36].2.as_deref(), Some(format!("e36{}", "p".repeat(40)).as_str()));
    assert_eq!(all[37], (37, None, Some("replacement".to_string())));
}

#[test]
fn compaction_keeps_latest_per_key_without_moving_offsets() {
    for codec in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
        let dir = tempfile::tempdir().unwrap();
        let m = manager();
        let config = LogConfig { cleanup_policy: CleanupPolicy::COMPACT, delete_retention_ms: 1000, ..small_config() };
        let log = open(&m, dir.path(), config.clone());
        let mut model: BTreeMap<String, (u64, Option<String>)> = BTreeMap::new();
        let mut offset = 0;
        for round in 0..40 {
            let mut recs = Vec::new();
            let mut owned = Vec::new();
            for k in 0..5 {
                let key = format!("key{}", (round * 3 + k) % 11);
                let value = if (round + k) % 13 == 0 { None } else { Some(format!("v{round}-{k}-{}", "x".repeat(40))) };
                owned.push((key, value));
            }
            for (k, v) in &owned {
                recs.push((Some(k.as_str()), v.as_deref()));
            }
            // Tombstones written "long ago" so they are past delete.retention.ms.
            let ts = if round < 30 { 1 } else { ferry_log_now() as i64 };
            log.append(&batch(&recs, ts, codec)).unwrap();
            for (k, v) in owned {
                model.insert(k, (offset, v));
                offset += 1;
            }
        }
        let before = read_all(&log);
        log.close().unwrap(); // writes a checkpoint, making closed segments eligible
        let stats = log.compact(ferry_log_now()).unwrap();
        assert!(stats.segments_rewritten > 0 && stats.records_removed > 0, "{codec:?}: {stats:?}");
        assert!(stats.bytes_after < stats.bytes_before);
        let after = read_all(&log);
        // Every surviving record is unchanged at its original offset.
        for r in &after {
            assert!(before.contains(r), "{codec:?}: {r:?} was not in the log before");
        }
        // Closed segments (all before the active one) now hold only the
        // latest record of each key, minus tombstones past their retention.
        let active_base = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".log")?.parse::<u64>().ok())
            .max()
            .unwrap();
        for (key, (off, value)) in &model {
            // The key map covers closed segments only (the active one may
            // still be truncated), as Kafka's cleaner does.
            let closed: Vec<_> = after.iter().filter(|r| r.1.as_deref() == Some(key) && r.0 < active_base).collect();
            assert!(closed.len() <= 1, "{codec:?}: superseded {key} kept in a closed segment: {closed:?}");
            let latest = after.iter().find(|r| r.1.as_deref() == Some(key) && r.0 == *off);
            match value {
                Some(_) => assert!(latest.is_some(), "{codec:?}: latest {key}@{off} lost"),
                // A tombstone written at ts=1 in a closed segment is expired.
                None if *off < active_base && *off < 150 => assert!(latest.is_none(), "{codec:?}: old tombstone kept"),
                None => {}
            }
        }
        // Reads and appends keep working after the swap, and after reopen.
        log.append(&batch(&[(Some("key1"), Some("new"))], ferry_log_now() as i64, codec)).unwrap();
        drop(log);
        let log = open(&m, dir.path(), config);
        assert_eq!(read_all(&log), {
            let mut a = after.clone();
            a.push((offset, Some("key1".into()), Some("new".into())));
            a
        });
    }
}

pub fn ferry_log_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

#[test]
fn tombstones_go_on_a_later_pass_once_expired() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager();
    let config = LogConfig { cleanup_policy: CleanupPolicy::COMPACT, delete_retention_ms: 60_000, ..small_config() };
    let log = open(&m, dir.path(), config);
    let now = ferry_log_now();
    for i in 0..60 {
        let v = "x".repeat(80);
        log.append(&batch(&[(Some(&format!("k{}", i % 3)), Some(&v))], now as i64, Compression::None)).unwrap();
    }
    log.append(&batch(&[(Some("k0"), None)], now as i64, Compression::None)).unwrap();
    for i in 0..60 {
        log.append(&batch(&[(Some(&format!("other{i}")), Some(&"y".repeat(80)))], now as i64, Compression::None))
            .unwrap();
    }
    log.close().unwrap();
    let has_tombstone =
        |log: &ferry_log::Log| read_all(log).iter().any(|r| r.1.as_deref() == Some("k0") && r.2.is_none());
    assert!(log.compact(now).unwrap().records_removed > 0);
    assert!(has_tombstone(&log), "fresh tombstone kept");
    assert_eq!(log.compact(now).unwrap(), Default::default(), "nothing new: the pass is skipped");
    let later = now + 61_000;
    assert_eq!(log.compact(later).unwrap().records_removed, 1);
    assert!(!has_tombstone(&log), "expired tombstone removed");
    assert!(!read_all(&log).iter().any(|r| r.1.as_deref() == Some("k0")));
}

#[test]
fn compaction_runs_while_appends_and_reads_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager();
    let config = LogConfig { cleanup_policy: CleanupPolicy::COMPACT, ..small_config() };
    let log = open(&m, dir.path(), config);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (log, stop) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while (!stop.load(std::sync::atomic::Ordering::Relaxed) || n < 500) && n < 20_000 {
                let v = format!("{n}-{}", "w".repeat(60));
                log.append(&batch(&[(Some(&format!("k{}", n % 17)), Some(&v))], 1, Compression::None)).unwrap();
                n += 1;
            }
            n
        })
    };
    let reader = {
        let (log, stop) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Every read yields whole, valid batches, offsets ascending.
                let rows = read_all(&log);
                assert!(rows.windows(2).all(|w| w[0].0 < w[1].0));
                reads += 1;
            }
            reads
        })
    };
    let mut rewritten = 0;
    for _ in 0..30 {
        log.close().unwrap(); // moves the checkpoint so new segments are eligible
        rewritten += log.compact(ferry_log_now()).unwrap().segments_rewritten;
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(reader.join().unwrap() > 0);
    assert!(rewritten > 0);
    let rows = read_all(&log);
    assert_eq!(log.next_offset(), written);
    // Runs of segments were merged: a compacted topic does not pile up
    // thousands of tiny segments.
    assert!(log.segment_count() < 40, "{} segments", log.segment_count());
    // The last value of every key is there.
    for k in 0..17u64 {
        let last = (0..written).rev().find(|n| n % 17 == k).unwrap();
        assert!(rows.iter().any(|r| r.0 == last), "latest of k{k} lost");
    }
}

#[test]
fn a_swap_interrupted_by_a_crash_is_completed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager();
    let config = LogConfig { cleanup_policy: CleanupPolicy::COMPACT, ..small_config() };
    let log = open(&m, dir.path(), config.clone());
    for i in 0..300u64 {
        let v = format!("{i}-{}", "s".repeat(60));
        log.append(&batch(&[(Some(&format!("k{}", i % 5)), Some(&v))], 1, Compression::None)).unwrap();
    }
    log.close().unwrap();
    let expected = {
        // What a completed compaction leaves, computed on a copy.
        let copy = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), copy.path());
        let l = open(&m, copy.path(), config.clone());
        l.compact(ferry_log_now()).unwrap();
        read_all(&l)
    };
    // Crash states of the swap: cleaned files written and the manifest
    // committed, with 0, 1 or all of the old segments already deleted.
    for deleted in [0usize, 1, usize::MAX] {
        let crashed = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), crashed.path());
        let l = open(&m, crashed.path(), config.clone());
        let segs = segment_bases(crashed.path());
        // Build the cleaned files by compacting a scratch copy.
        let scratch = tempfile::tempdir().unwrap();
        copy_dir(crashed.path(), scratch.path());
        open(&m, scratch.path(), config.clone()).compact(ferry_log_now()).unwrap();
        drop(l);
        let merged = segment_bases(scratch.path());
        let first = merged[0];
        let upto = merged.get(1).copied().unwrap_or(u64::MAX);
        for ext in ["log", "index", "timeindex"] {
            let name = format!("{first:020}.{ext}");
            std::fs::copy(scratch.path().join(&name), crashed.path().join(format!("{name}.cleaned"))).unwrap();
        }
        std::fs::write(crashed.path().join(format!("{first:020}.swap")), format!("{upto}\n")).unwrap();
        for base in segs.iter().filter(|&&b| b >= first && b < upto).take(deleted) {
            std::fs::remove_file(crashed.path().join(format!("{base:020}.log"))).unwrap();
        }
        let l = open(&m, crashed.path(), config.clone());
        let got = read_all(&l);
        assert!(
            got == expected,
            "{deleted} deleted: {} rows vs {} expected, first {:?}",
            got.len(),
            expected.len(),
            got.first()
        );
        assert!(!crashed.path().join(format!("{first:020}.swap")).exists());
    }
    // An uncommitted swap (no manifest) is discarded.
    std::fs::write(dir.path().join(format!("{:020}.log.cleaned", 0)), b"partial").unwrap();
    let l = open(&m, dir.path(), config);
    assert_eq!(read_all(&l).len(), 300);
    assert!(!dir.path().join(format!("{:020}.log.cleaned", 0)).exists());
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn segment_bases(dir: &std::path::Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .collect();
    v.sort();
    v
}

/// A transactional batch (attribute bit 4) of `key`=`value` from `pid`.
fn txn_batch(pid: i64, seq: i32, key: &str, value: &str) -> Vec<u8> {
    let rec = ferry_records::records::NewRecord {
        key: Some(key.as_bytes()),
        value: Some(value.as_bytes()),
        headers: vec![],
        timestamp: ferry_log_now() as i64,
    };
    let mut b = ferry_records::records::build_batch(&[rec], Compression::None, pid, 0, seq).unwrap();
    b[22] |= 1 << 4;
    let crc = ferry_records::batch::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[test]
fn compaction_drops_aborted_records_and_waits_for_open_transactions() {
    use ferry_log::AbortedTxn;
    use ferry_records::records::build_control_batch;
    let dir = tempfile::tempdir().unwrap();
    let m = manager();
    let config = LogConfig { cleanup_policy: CleanupPolicy::COMPACT, ..small_config() };
    let log = open(&m, dir.path(), config);
    let filler = "x".repeat(200);
    log.append(&batch(&[(Some("k"), Some("committed"))], 1, Compression::None)).unwrap();
    // An aborted transaction rewrites k: readers skip it, so compaction must
    // neither let it supersede "committed" nor keep it.
    let first = log.append(&txn_batch(5, 0, "k", "aborted")).unwrap().base_offset;
    let marker = log.append(&build_control_batch(5, 0, false, 0, 1).unwrap()).unwrap().base_offset;
    log.add_aborted_txn(AbortedTxn { producer_id: 5, first_offset: first, last_offset: marker }).unwrap();
    // An open transaction from pid 6 further on, then enough filler for
    // several closed segments.
    let open_at = {
        for i in 0..20 {
            log.append(&batch(&[(Some(&format!("f{i}")), Some(&filler))], 1, Compression::None)).unwrap();
        }
        log.append(&txn_batch(6, 0, "k", "pending")).unwrap().base_offset
    };
    for i in 20..60 {
        log.append(&batch(&[(Some(&format!("f{i}")), Some(&filler))], 1, Compression::None)).unwrap();
    }
    log.set_uncleanable_from(open_at);
    log.close().unwrap();
    log.compact(ferry_log_now()).unwrap();
    let after = read_all(&log);
    let values: Vec<_> = after.iter().filter(|r| r.1.as_deref() == Some("k")).map(|r| r.2.clone().unwrap()).collect();
    assert_eq!(values, ["committed", "pending"], "aborted record dropped, open one left for its outcome");
    assert!(after.iter().any(|r| r.0 == marker), "markers stay");
    // Segments from the open transaction on were not compacted: f20.. all
    // remain even though nothing supersedes them anyway; the earlier
    // filler, unique keys too, remains.
    assert_eq!(after.iter().filter(|r| r.1.as_deref().is_some_and(|k| k.starts_with('f'))).count(), 60);
}
