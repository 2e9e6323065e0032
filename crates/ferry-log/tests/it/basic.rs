use ferry_log::{EngineConfig, FlushPolicy, LogConfig, LogError, LogManager, TimestampType};
use ferry_records::compression::Compression;

use crate::{batch, manager, open, read_all, small_config, value_batch};

#[test]
fn offsets_are_assigned_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager();
    let log = open(&m, dir.path(), small_config());
    let a = log.append(&batch(&[(None, Some("a")), (None, Some("b"))], 1, Compression::None)).unwrap();
    assert_eq!((a.base_offset, a.last_offset, a.records), (0, 1, 2));
    // Two batches in one append get consecutive offsets.
    let mut two = value_batch("c", 2);
    two.extend(value_batch("d", 3));
    let b = log.append(&two).unwrap();
    assert_eq!((b.base_offset, b.last_offset), (2, 3));
    assert_eq!(log.next_offset(), 4);
    assert_eq!(log.high_watermark(), 4);
    let values: Vec<_> = read_all(&log).into_iter().map(|r| r.2.unwrap()).collect();
    assert_eq!(values, ["a", "b", "c", "d"]);
    // Reading from the middle of a batch returns that whole batch.
    let slice = log.read(1, 1 << 20).unwrap().unwrap();
    assert_eq!(slice.position, 0);
    assert!(log.read(4, 100).unwrap().is_none());
    assert!(matches!(log.read(5, 100), Err(LogError::OffsetOutOfRange { .. })));
}

#[test]
fn stored_bytes_are_the_producers_bytes_with_offset_patched() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager();
    let log = open(&m, dir.path(), small_config());
    log.append(&value_batch("x", 1)).unwrap();
    let sent = batch(&[(Some("k"), Some("v")), (Some("k2"), None)], 7, Compression::Gzip);
    log.append(&sent).unwrap();
    let stored = log.read_bytes(1, 1 << 20).unwrap();
    assert_eq!(&stored[8..], &sent[8..]);
    assert_eq!(i64::from_be_bytes(stored[..8].try_into().unwrap()), 1);
}

#[test]
fn bad_batches_are_refused_and_leave_the_log_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager();
    let log = open(&m, dir.path(), LogConfig { max_message_bytes: 200, ..small_config() });
    log.append(&value_batch("ok", 1)).unwrap();
    let size = log.size_bytes();
    let mut corrupt = value_batch("bad", 1);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    assert!(matches!(log.append(&corrupt), Err(LogError::CorruptBatch(_))));
    // A good batch followed by a bad one: nothing of the request is written.
    let mut mixed = value_batch("good", 1);
    mixed.extend(&corrupt);
    assert!(log.append(&mixed).is_err());
    assert!(log.append(&value_batch("cut", 1)[..40]).is_err());
    assert!(log.append(&[]).is_err());
    let big = value_batch(&"z".repeat(300), 1);
    assert!(matches!(log.append(&big), Err(LogError::BatchTooLarge { .. })));
    let mut magic1 = value_batch("m", 1);
    magic1[16] = 1;
    assert!(log.append(&magic1).is_err());
    assert_eq!(log.size_bytes(), size);
    assert_eq!(log.next_offset(), 1);
    assert_eq!(read_all(&log).len(), 1);
}

#[test]
fn segments_roll_and_reads_cross_them() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager();
    let log = open(&m, dir.path(), small_config());
    for i in 0..200 {
        log.append(&value_batch(&format!("value-{i:04}-{}", "p".repeat(40)), i)).unwrap();
    }
    assert!(log.segment_count() > 3, "{} segments", log.segment_count());
    let all = read_all(&log);
    assert_eq!(all.len(), 200);
    for (i, (o, _, v)) in all.iter().enumerate() {
        assert_eq!(*o, i as u64);
        assert!(v.as_ref().unwrap().starts_with(&format!("value-{i:04}")));
    }
    // max_bytes bounds a read to whole batches, but at least one.
    let one = log.read(10, 1).unwrap().unwrap();
    let parts = ferry_records::batch::split(&one.to_vec().unwrap()).unwrap().len();
    assert_eq!(parts, 1);
    let some = log.read(10, 500).unwrap().unwrap();
    assert!(some.len <= 500 && some.len > 100);
    log.close().unwrap();
    drop(log);
    let log = open(&m, dir.path(), small_config());
    assert_eq!(log.next_offset(), 200);
    assert_eq!(read_all(&log).len(), 200);
}

#[test]
fn log_append_time_overrides_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager();
    let log = open(&m, dir.path(), LogConfig { timestamp_type: TimestampType::LogAppendTime, ..small_config() });
    let info = log.append(&value_batch("t", 5)).unwrap();
    let now = info.log_append_time.unwrap();
    assert!(now > 1_600_000_000_000);
    let stored = log.read_bytes(0, 1000).unwrap();
    let (h, _) = ferry_records::batch::split(&stored).unwrap()[0];
    assert!(h.is_log_append_time());
    assert_eq!(h.max_timestamp, now);
}

#[test]
fn offset_for_timestamp_finds_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager();
    let log = open(&m, dir.path(), small_config());
    for i in 0..100i64 {
        // Two records per batch with timestamps 1000+20i and 1000+20i+10.
        let recs = [
            ferry_records::records::NewRecord {
                key: None,
                value: Some(b"a"),
                headers: vec![],
                timestamp: 1000 + 20 * i,
            },
            ferry_records::records::NewRecord {
                key: None,
                value: Some(b"b"),
                headers: vec![],
                timestamp: 1010 + 20 * i,
            },
        ];
        log.append(&ferry_records::records::build_batch(&recs, Compression::Lz4, -1, -1, -1).unwrap()).unwrap();
    }
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 1000)));
    assert_eq!(log.offset_for_timestamp(1005).unwrap(), Some((1, 1010)));
    assert_eq!(log.offset_for_timestamp(1011).unwrap(), Some((2, 1020)));
    assert_eq!(log.offset_for_timestamp(1000 + 20 * 77 + 3).unwrap(), Some((155, 1000 + 20 * 77 + 10)));
    assert_eq!(log.offset_for_timestamp(1000 + 20 * 99 + 10).unwrap(), Some((199, 2990)));
    assert_eq!(log.offset_for_timestamp(5000).unwrap(), None);
}

#[test]
fn flush_always_publishes_only_durable_data_and_groups_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager();
    let log = open(&m, dir.path(), LogConfig { flush: FlushPolicy::Always, ..small_config() });
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let info = log.append(&value_batch(&format!("{t}-{i}"), 1)).unwrap();
                    log.flush_to(info.last_offset + 1).unwrap();
                    assert!(log.durable_offset() > info.last_offset);
                    assert!(log.high_watermark() > info.last_offset);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(log.high_watermark(), 400);
    assert_eq!(read_all(&log).len(), 400);
}

#[test]
fn many_logs_flush_at_once_and_every_waiter_is_answered() {
    // More logs than flusher threads, each with two writers waiting for
    // durability: logs are flushed independently, none is forgotten.
    let dir = tempfile::tempdir().unwrap();
    let m = manager();
    let logs: Vec<_> = (0..20)
        .map(|i| open(&m, &dir.path().join(i.to_string()), LogConfig { flush: FlushPolicy::Always, ..small_config() }))
        .collect();
    let threads: Vec<_> = logs
        .iter()
        .flat_map(|log| [log.clone(), log.clone()])
        .enumerate()
        .map(|(t, log)| {
            std::thread::spawn(move || {
                for i in 0..25 {
                    let info = log.append(&value_batch(&format!("{t}-{i}"), 1)).unwrap();
                    log.flush_to(info.last_offset + 1).unwrap();
                    assert!(log.durable_offset() > info.last_offset);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for log in &logs {
        assert_eq!(log.high_watermark(), 50);
        assert_eq!(log.durable_offset(), 50);
    }
    // Callbacks queued right before shutdown are still answered.
    let (tx, rx) = std::sync::mpsc::channel();
    for log in &logs {
        log.append(&value_batch("last", 2)).unwrap();
        let tx = tx.clone();
        log.on_durable(51, move |r| tx.send(r.is_ok()).unwrap());
    }
    m.shutdown();
    let answers: Vec<bool> =
        (0..logs.len()).map(|_| rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap()).collect();
    assert!(answers.iter().all(|ok| *ok), "{answers:?}");
}

/// A manager whose checkpointer looks every 50 ms, with the given triggers.
fn checkpointing(bytes: u64, max_age: std::time::Duration) -> LogManager {
    LogManager::new(EngineConfig {
        cleaner_interval: std::time::Duration::from_secs(3600),
        checkpoint_interval: std::time::Duration::from_millis(50),
        checkpoint_bytes: bytes,
        checkpoint_max_age: max_age,
        ..EngineConfig::default()
    })
}

/// Appends and fsyncs 40 small batches; returns the checkpoint file's
/// text from before them and a way to read it again.
fn busy_log(m: &LogManager, dir: &std::path::Path) -> (std::sync::Arc<ferry_log::Log>, String) {
    let log = open(m, dir, LogConfig { flush: FlushPolicy::Always, ..small_config() });
    let at_open = std::fs::read_to_string(dir.join("recovery.checkpoint")).unwrap();
    for i in 0..40 {
        let info = log.append(&value_batch(&format!("v{i}"), 1)).unwrap();
        log.flush_to(info.last_offset + 1).unwrap();
    }
    (log, at_open)
}

fn wait_for_new_checkpoint(dir: &std::path::Path, old: &str) {
    let checkpoint = || std::fs::read_to_string(dir.join("recovery.checkpoint")).unwrap_or_default();
    // No close: only the checkpointer thread can move it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while checkpoint() == old {
        assert!(std::time::Instant::now() < deadline, "checkpoint never moved from {old:?}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // "v1 <segment> <position> <log start> <crc>": past the start now.
    let fields: Vec<u64> = checkpoint().split_whitespace().skip(1).take(2).map(|f| f.parse().unwrap()).collect();
    assert!((fields[0], fields[1]) > (0, 0), "{:?}", checkpoint());
}

#[test]
fn the_checkpointer_keeps_a_busy_logs_checkpoint_fresh() {
    let dir = tempfile::tempdir().unwrap();
    // 40 batches are well past 1 KiB.
    let m = checkpointing(1024, std::time::Duration::from_secs(3600));
    let (_log, at_open) = busy_log(&m, dir.path());
    wait_for_new_checkpoint(dir.path(), &at_open);
}

#[test]
fn a_checkpoint_waits_for_enough_bytes_or_its_age() {
    let dir = tempfile::tempdir().unwrap();
    let m = checkpointing(1 << 30, std::time::Duration::from_secs(3600));
    let (_log, at_open) = busy_log(&m, dir.path());
    // Several passes of the checkpointer: little was written, the
    // checkpoint is young, so it stays (no fsyncs for it).
    std::thread::sleep(std::time::Duration::from_millis(400));
    let now = std::fs::read_to_string(dir.path().join("recovery.checkpoint")).unwrap();
    assert_eq!(now, at_open, "checkpoint rewritten for a few bytes");
    drop(m);
    // The same little, once the checkpoint is old enough, is recorded.
    let dir = tempfile::tempdir().unwrap();
    let m = checkpointing(1 << 30, std::time::Duration::from_millis(100));
    let (_log, at_open) = busy_log(&m, dir.path());
    wait_for_new_checkpoint(dir.path(), &at_open);
}

#[test]
fn interval_flush_happens_without_waiters() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager();
    let log = open(
        &m,
        dir.path(),
        LogConfig { flush: FlushPolicy::Interval { ms: 20, messages: u64::MAX }, ..small_config() },
    );
    log.append(&value_batch("a", 1)).unwrap();
    assert_eq!(log.high_watermark(), 1, "interval policy exposes data before fsync");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while log.durable_offset() < 1 {
        assert!(std::time::Instant::now() < deadline, "interval flush never happened");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // The message threshold triggers a flush too.
    let log2 = open(
        &m,
        &dir.path().join("b"),
        LogConfig { flush: FlushPolicy::Interval { ms: 3_600_000, messages: 3 }, ..small_config() },
    );
    for i in 0..3 {
        log2.append(&value_batch("x", i)).unwrap();
    }
    while log2.durable_offset() < 3 {
        assert!(std::time::Instant::now() < deadline, "message-count flush never happened");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn open_file_descriptors_are_bounded_across_many_logs() {
    let dir = tempfile::tempdir().unwrap();
    let m = ferry_log::LogManager::new(ferry_log::EngineConfig { max_open_segments: 16, ..Default::default() });
    let logs: Vec<_> = (0..200).map(|i| open(&m, &dir.path().join(format!("p{i}")), small_config())).collect();
    for (i, log) in logs.iter().enumerate() {
        for j in 0..3 {
            log.append(&value_batch(&format!("{i}-{j}"), 1)).unwrap();
        }
    }
    for (i, log) in logs.iter().enumerate() {
        let all = read_all(log);
        assert_eq!(all.len(), 3);
        assert_eq!(all[2].2.as_deref(), Some(format!("{i}-2").as_str()));
    }
    assert!(m.open_segments() <= 16, "{} open", m.open_segments());
    // Descriptors into this test's directory (other tests run in parallel).
    let fds = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir.path()))
        .count();
    assert!(fds <= 16, "{fds} descriptors open for 200 logs");
    // Memory per idle log stays small.
    let per_log = logs.iter().map(|l| l.heap_bytes()).sum::<usize>() / logs.len();
    eprintln!("heap per idle log: {per_log} bytes");
    assert!(per_log < 4096, "{per_log} bytes per idle log");
}

#[test]
fn reads_bounded_by_a_stable_offset_stop_at_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager();
    let log = open(&m, dir.path(), small_config());
    for i in 0..200 {
        log.append(&value_batch(&format!("v{i}"), 1)).unwrap();
    }
    // Across segments (4 KiB each), every read stops before offset 150.
    let mut at = 0;
    let mut seen = 0;
    while let Some(slice) = log.read_upto(at, 1 << 20, 150).unwrap() {
        let bytes = slice.to_vec().unwrap();
        for (h, _) in ferry_records::batch::split(&bytes).unwrap() {
            assert!(h.base_offset < 150);
            at = h.next_offset();
            seen += 1;
        }
        assert_eq!(slice.end_offset, at, "the slice knows where the next read goes on");
    }
    // Unbounded reads of every size report their end offset too.
    for max in [1, 100, 700, 5000, 1 << 20] {
        let mut at = 0;
        while let Some(slice) = log.read(at, max).unwrap() {
            let bytes = slice.to_vec().unwrap();
            let last = ferry_records::batch::split(&bytes).unwrap().last().unwrap().0;
            assert_eq!(slice.end_offset, last.next_offset(), "max {max} at {at}");
            at = slice.end_offset;
        }
        assert_eq!(at, 200);
    }
    assert_eq!((seen, at), (150, 150));
    assert!(log.read_upto(150, 1 << 20, 150).unwrap().is_none());
    assert!(log.read_upto(199, 1 << 20, 150).unwrap().is_none(), "past the bound, below the high watermark");
}

#[test]
fn aborted_transactions_follow_the_log_through_reopen_truncation_and_deletion() {
    use ferry_log::AbortedTxn;
    let dir = tempfile::tempdir().unwrap();
    let m = manager();
    let log = open(&m, dir.path(), small_config());
    for i in 0..100 {
        log.append(&value_batch(&format!("v{i}"), 1)).unwrap();
    }
    let a = AbortedTxn { producer_id: 7, first_offset: 10, last_offset: 20 };
    let b = AbortedTxn { producer_id: 8, first_offset: 50, last_offset: 90 };
    log.add_aborted_txn(a).unwrap();
    log.add_aborted_txn(b).unwrap();
    assert_eq!(log.aborted_txns(21, 60), vec![b]);
    assert_eq!(log.aborted_txns(0, 11), vec![a]);
    drop(log);
    let log = open(&m, dir.path(), small_config());
    assert_eq!(log.aborted_txns(0, 100), vec![a, b]);
    log.truncate_to(80).unwrap();
    assert_eq!(log.aborted_txns(0, 100), vec![a], "the marker at 90 is gone");
    log.delete_records_before(30).unwrap();
    assert_eq!(log.aborted_txns(0, 100), vec![], "wholly below the log start");
    drop(log);
    let log = open(&m, dir.path(), small_config());
    assert!(log.aborted_txns(0, u64::MAX).is_empty());
}

/// `flush_to` (and `on_durable`) let their caller go only once the
/// high-watermark listener has run for the flush, not as soon as the fsync
/// is done: the flusher thread that did an append's queued fsync stores
/// the durable offset before it tells the listener, and a caller let go in
/// between raced it (a leader's acks=all released after the replication
/// simulation had read its high watermark: seed 135 under load).
#[test]
fn flush_to_returns_after_the_high_watermark_listener_ran() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let m = manager();
    let log = open(&m, dir.path(), LogConfig { flush: FlushPolicy::Always, ..small_config() });
    let told = Arc::new(AtomicU64::new(0));
    let (t, l) = (told.clone(), Arc::downgrade(&log));
    // A slow listener: the window between the fsync and its effects.
    log.set_hw_listener(Arc::new(move || {
        std::thread::sleep(Duration::from_millis(300));
        if let Some(log) = l.upgrade() {
            t.fetch_max(log.high_watermark(), Ordering::AcqRel);
        }
    }));
    // The append queues an fsync; the flusher does it on its own.
    log.append(&value_batch("a", 1)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.durable_offset() < 1 {
        assert!(Instant::now() < deadline, "the queued flush never happened");
        std::thread::yield_now();
    }
    // Durable now, its listener still asleep.
    log.flush_to(1).unwrap();
    assert_eq!(told.load(Ordering::Acquire), 1, "flush_to returned before the listener saw the flush");
    let (tx, rx) = std::sync::mpsc::channel();
    let t = told.clone();
    log.on_durable(1, move |_| {
        let _ = tx.send(t.load(Ordering::Acquire));
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), 1);
}
