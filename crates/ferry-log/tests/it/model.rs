//! Random sequences of append / read / roll / reopen / retention /
//! truncation / compaction, checked against a plain in-memory model.

use std::collections::HashMap;
use std::sync::Arc;

use ferry_log::{CleanupPolicy, FlushPolicy, Log, LogConfig, LogManager};
use ferry_records::compression::Compression;
use proptest::prelude::*;

use crate::{batch, manager, read_all};

type Row = (u64, Option<String>, Option<String>);

#[derive(Clone, Debug)]
enum Op {
    Append { records: usize, keys: u8, codec: u8, len: usize },
    Read { at: f64, max: usize },
    Reopen { clean: bool },
    Retention { keep_bytes: u64 },
    DeleteRecords { at: f64 },
    Truncate { at: f64 },
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..6, 1u8..8, 0u8..5, 1usize..200).prop_map(|(records, keys, codec, len)| Op::Append { records, keys, codec, len }),
        2 => (0.0f64..1.0, 1usize..3000).prop_map(|(at, max)| Op::Read { at, max }),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
        1 => (2000u64..20000).prop_map(|keep_bytes| Op::Retention { keep_bytes }),
        1 => (0.0f64..1.0).prop_map(|at| Op::DeleteRecords { at }),
        1 => (0.0f64..1.0).prop_map(|at| Op::Truncate { at }),
        1 => Just(Op::Compact),
    ]
}

fn config(retention_bytes: Option<u64>) -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 300,
        flush: FlushPolicy::Os,
        cleanup_policy: CleanupPolicy::COMPACT_DELETE,
        retention_ms: None,
        retention_bytes,
        ..LogConfig::default()
    }
}

struct Model {
    /// Batches as (base offset, offset span, live records).
    batches: Vec<(u64, u64, Vec<Row>)>,
    start: u64,
    next: u64,
}

impl Model {
    fn rows(&self) -> Vec<Row> {
        self.batches.iter().flat_map(|(_, _, r)| r.iter().cloned()).filter(|r| r.0 >= self.start).collect()
    }
    /// Adopts the log's content after an operation whose exact outcome
    /// depends on segment layout, once the caller checked it is legal.
    fn adopt(&mut self, rows: &[Row]) {
        for (_, _, recs) in &mut self.batches {
            recs.retain(|r| rows.contains(r));
        }
        // Compaction drops batches left without records.
        self.batches.retain(|(_, _, recs)| !recs.is_empty());
    }
}

fn check(log: &Log, model: &Model) {
    assert_eq!(log.next_offset(), model.next, "next offset");
    assert_eq!(log.log_start_offset(), model.start, "log start");
    assert_eq!(read_all(log), model.rows(), "content");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn log_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut m: LogManager = manager();
        let mut log: Arc<Log> = m.open(dir.path(), config(None)).unwrap();
        let mut model = Model { batches: Vec::new(), start: 0, next: 0 };
        let mut n = 0usize;
        for op in ops {
            match op {
                Op::Append { records, keys, codec, len } => {
                    let codec = [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd][codec as usize];
                    let owned: Vec<(String, Option<String>)> = (0..records)
                        .map(|i| {
                            n += 1;
                            let v = (!n.is_multiple_of(7)).then(|| format!("{n}:{}", "v".repeat(len)));
                            (format!("k{}", (n + i) % keys as usize), v)
                        })
                        .collect();
                    let recs: Vec<_> = owned.iter().map(|(k, v)| (Some(k.as_str()), v.as_deref())).collect();
                    let info = log.append(&batch(&recs, n as i64, codec)).unwrap();
                    prop_assert_eq!(info.base_offset, model.next);
                    let rows = owned.into_iter().enumerate().map(|(i, (k, v))| (model.next + i as u64, Some(k), v)).collect();
                    model.batches.push((model.next, records as u64, rows));
                    model.next += records as u64;
                }
                Op::Read { at, max } => {
                    let span = model.next - model.start;
                    let offset = model.start + (span as f64 * at) as u64;
                    // The read starts at the first surviving batch whose
                    // range reaches `offset` (compaction removes emptied ones).
                    let expected = model.batches.iter().find(|(b, span, _)| b + span > offset).map(|b| b.0);
                    match log.read(offset, max).unwrap() {
                        None => prop_assert_eq!(expected, None),
                        Some(slice) => {
                            let bytes = slice.to_vec().unwrap();
                            let parts = ferry_records::batch::split(&bytes).unwrap();
                            prop_assert_eq!(Some(parts[0].0.base_offset), expected);
                            prop_assert!(parts.len() == 1 || bytes.len() <= max);
                        }
                    }
                }
                Op::Reopen { clean } => {
                    if clean {
                        log.close().unwrap();
                    }
                    drop(log);
                    if clean {
                        m.shutdown();
                        m = manager();
                    }
                    log = m.open(dir.path(), config(None)).unwrap();
                }
                Op::Retention { keep_bytes } => {
                    log.set_config(config(Some(keep_bytes)));
                    let before = log.log_start_offset();
                    log.enforce_retention(u64::MAX).unwrap();
                    log.set_config(config(None));
                    let start = log.log_start_offset();
                    prop_assert!(start >= before && start <= model.next);
                    prop_assert!(log.size_bytes() <= keep_bytes + 2048 + 1024 || log.segment_count() == 1);
                    model.start = start;
                }
                Op::DeleteRecords { at } => {
                    let target = model.start + ((model.next - model.start) as f64 * at) as u64;
                    prop_assert_eq!(log.delete_records_before(target).unwrap(), target.max(model.start));
                    model.start = target.max(model.start);
                }
                Op::Truncate { at } => {
                    let target = model.start + ((model.next - model.start) as f64 * at) as u64;
                    let end = log.truncate_to(target).unwrap();
                    // Whole batches go: the new end is the base of the first
                    // batch reaching `target`.
                    let keep = model.batches.iter().take_while(|(b, span, _)| b + span <= target).count();
                    let expected = model.batches.get(keep).map_or(target, |(b, _, _)| *b).min(target);
                    prop_assert_eq!(end, expected);
                    model.batches.truncate(keep);
                    model.next = end;
                    model.start = model.start.min(end);
                }
                Op::Compact => {
                    log.close().unwrap();
                    let before = read_all(&log);
                    log.compact(u64::MAX).unwrap();
                    let after = read_all(&log);
                    // Only removals, records unchanged, and every key's
                    // latest live value kept.
                    for r in &after {
                        prop_assert!(before.contains(r));
                    }
                    let mut latest: HashMap<&Option<String>, &Row> = HashMap::new();
                    for r in &before {
                        latest.insert(&r.1, r);
                    }
                    for r in latest.values() {
                        prop_assert!(r.2.is_none() || after.contains(r), "latest {:?} lost", r);
                    }
                    model.adopt(&after);
                }
            }
            check(&log, &model);
        }
    }
}
