//! Internal logs: broker state kept as records of compacted logs. Node-local
//! ones live under `<data>/internal/` (key/value stores, and the offsets and
//! transaction logs of a data directory written before the coordinators
//! moved to replicated partitions, read once to import them); the
//! coordinators' own state is in partitions of the replicated internal
//! topics ([`append_acked`]). Both are replayed into memory.

use std::path::Path;
use std::sync::Arc;

use ferry_log::{CleanupPolicy, FlushPolicy, Log, LogConfig, LogError, LogManager};
use ferry_records::batch::BatchHeader;
use ferry_records::compression::Compression;
use ferry_records::records::{NewRecord, build_batch, parse_records, records_payload};

use crate::error::Result;
use crate::partition::{Acks, Appended, Partition};

/// Bytes read per step of a replay (a larger batch is still read whole).
const REPLAY_CHUNK: usize = 4 << 20;

/// Opens (creating) the internal log `name`.
pub(crate) fn open(data_dir: &Path, logs: &LogManager, name: &str) -> Result<Arc<Log>> {
    let config = LogConfig {
        cleanup_policy: CleanupPolicy::COMPACT,
        segment_bytes: 100 << 20,
        flush: FlushPolicy::Always,
        ..LogConfig::default()
    };
    Ok(logs.open(&data_dir.join("internal").join(name), config)?)
}

/// Calls `f(header, batch)` for every batch of `log`, oldest first, from its
/// start to its high watermark: the one replay every internal store runs at
/// start. Compaction may leave gaps between batches; the next read starts
/// after the batch's last offset, so it always progresses.
pub(crate) fn for_each_batch(log: &Log, mut f: impl FnMut(&BatchHeader, &[u8]) -> Result<()>) -> Result<()> {
    let mut at = log.log_start_offset();
    while at < log.high_watermark() {
        let bytes = log.read_bytes(at, REPLAY_CHUNK)?;
        if bytes.is_empty() {
            break;
        }
        for (h, b) in ferry_records::batch::split(&bytes)? {
            f(&h, b)?;
            at = h.next_offset();
        }
    }
    Ok(())
}

/// Calls `f(key, value)` for every keyed record, oldest first (a `None`
/// value is a tombstone).
pub(crate) fn replay(log: &Log, mut f: impl FnMut(&[u8], Option<&[u8]>)) -> Result<()> {
    for_each_batch(log, |h, b| {
        let payload = records_payload(b, 64 << 20).map_err(LogError::from)?;
        for r in parse_records(&payload, h.records_count as usize).map_err(LogError::from)? {
            if let Some(key) = r.key {
                f(key, r.value);
            }
        }
        Ok(())
    })
}

/// Appends `(key, value)` records as one batch to a node-local log (not
/// yet durable) and returns the offset to wait for with `Log::flush_to`:
/// how the coordinators wrote before they moved to the internal topics,
/// kept to build such directories in tests.
#[cfg(test)]
pub(crate) fn append(log: &Arc<Log>, records: &[(&[u8], Option<&[u8]>)]) -> Result<u64> {
    let ts = ferry_util::time::now_ms();
    let recs: Vec<NewRecord<'_>> =
        records.iter().map(|&(k, v)| NewRecord { key: Some(k), value: v, headers: vec![], timestamp: ts }).collect();
    let batch = build_batch(&recs, Compression::None, -1, -1, -1).map_err(LogError::from)?;
    Ok(log.append(&batch)?.last_offset + 1)
}

/// Appends `(key, value)` records as one batch to a partition of an
/// internal topic this node leads, as an acks=all write: the returned
/// [`Appended`] resolves once every ISR member has it.
pub(crate) fn append_acked(partition: &Partition, records: &[(&[u8], Option<&[u8]>)]) -> Result<Appended> {
    let ts = ferry_util::time::now_ms();
    let recs: Vec<NewRecord<'_>> =
        records.iter().map(|&(k, v)| NewRecord { key: Some(k), value: v, headers: vec![], timestamp: ts }).collect();
    let batch = build_batch(&recs, Compression::None, -1, -1, -1).map_err(LogError::from)?;
    partition.append(&batch, Acks::All)
}
