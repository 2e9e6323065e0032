//! Integration tests of the storage engine (one binary: faster to link).

mod basic;
mod cleanup;
mod crash;
mod damage;
mod model;
mod replica;
mod zero_ahead;

use std::path::Path;
use std::sync::Arc;

use ferry_log::{EngineConfig, FlushPolicy, Log, LogConfig, LogManager};
use ferry_records::compression::Compression;
use ferry_records::records::{NewRecord, build_batch, parse_records, records_payload};

/// A manager whose cleaner does not run during a test (hourly interval).
pub fn manager() -> LogManager {
    LogManager::new(EngineConfig { cleaner_interval: std::time::Duration::from_secs(3600), ..EngineConfig::default() })
}

/// Tiny segments and dense indexes so tests roll and index often; no fsync.
pub fn small_config() -> LogConfig {
    LogConfig { segment_bytes: 4096, index_interval_bytes: 256, flush: FlushPolicy::Os, ..LogConfig::default() }
}

/// A batch of records `(key, value)` with timestamp `ts`.
pub fn batch(records: &[(Option<&str>, Option<&str>)], ts: i64, codec: Compression) -> Vec<u8> {
    let recs: Vec<_> = records
        .iter()
        .map(|(k, v)| NewRecord {
            key: k.map(str::as_bytes),
            value: v.map(str::as_bytes),
            headers: vec![],
            timestamp: ts,
        })
        .collect();
    build_batch(&recs, codec, -1, -1, -1).unwrap()
}

/// A single uncompressed record with no key.
pub fn value_batch(value: &str, ts: i64) -> Vec<u8> {
    batch(&[(None, Some(value))], ts, Compression::None)
}

/// Every record readable from `log`: (offset, key, value).
pub fn read_all(log: &Log) -> Vec<(u64, Option<String>, Option<String>)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.high_watermark() {
        let bytes = log.read_bytes(offset, 1 << 20).unwrap();
        if bytes.is_empty() {
            break;
        }
        for (h, b) in ferry_records::batch::split(&bytes).unwrap() {
            let payload = records_payload(b, 1 << 30).unwrap();
            for r in parse_records(&payload, h.records_count as usize).unwrap() {
                let o = h.base_offset + r.offset_delta as u64;
                if o >= offset {
                    let s = |x: Option<&[u8]>| x.map(|x| String::from_utf8_lossy(x).into_owned());
                    out.push((o, s(r.key), s(r.value)));
                }
            }
            offset = h.next_offset();
        }
    }
    out
}

/// Opens `dir` through `m`, panicking on error (tests only).
pub fn open(m: &LogManager, dir: &Path, config: LogConfig) -> Arc<Log> {
    m.open(dir, config).unwrap()
}
