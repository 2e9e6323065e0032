//! Compaction (`cleanup.policy=compact`): keep the latest record per key.
//!
//! Runs on the cleaner thread over closed segments that lie wholly before
//! the recovery checkpoint. Each segment is rewritten to a `.cleaned` file
//! beside it and swapped in with a rename; appends and readers go on
//! throughout (readers of the old segment keep its open descriptor).
//! Offsets never change: a batch that loses records is rebuilt with the same
//! base offset and `lastOffsetDelta`, its surviving records byte for byte.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use crate::batch::BatchHeader;
use crate::error::Result;
use crate::index::Indexes;
use crate::log::Log;
use crate::records::{parse_records, rebuild_batch, records_payload};
use crate::segment::{self, Segment, for_each_batch, lock, rel, write};

/// What one compaction pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactionStats {
    pub segments_rewritten: usize,
    pub records_removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Decompressed batches are bounded by this (decompression bombs).
const MAX_DECOMPRESSED: usize = 256 << 20;

impl Log {
    /// One compaction pass; a no-op unless the cleanup policy includes
    /// `compact`.
    pub fn compact(&self, now_ms: u64) -> Result<CompactionStats> {
        let _m = lock(&self.maintenance);
        let config = self.config();
        let mut stats = CompactionStats::default();
        if !config.cleanup_policy.compact {
            return Ok(stats);
        }
        let Some(horizon) = lock(&self.flush).checkpoint.map(|c| c.segment) else { return Ok(stats) };
        let eligible: Vec<Arc<Segment>> =
            self.segment_list().into_iter().filter(|s| !s.is_active() && s.base < horizon).collect();
        if eligible.is_empty() {
            return Ok(stats);
        }
        let cache = &self.env.cache;
        // Records below the log start (DeleteRecords) are already deleted
        // logically; compaction removes them physically too.
        let start = self.log_start_offset();

        // Pass 1: the latest offset of every key.
        let mut latest: HashMap<Vec<u8>, u64> = HashMap::new();
        for seg in &eligible {
            for_each_batch(&*seg.file(cache)?, seg.size(), |_, h, bytes| {
                if !h.is_control() {
                    let payload = records_payload(bytes, MAX_DECOMPRESSED)?;
                    for r in parse_records(&payload, h.records_count as usize)? {
                        if let Some(key) = r.key {
                            latest.insert(key.to_vec(), h.base_offset + r.offset_delta as u64);
                        }
                    }
                }
                Ok(())
            })?;
        }

        // Pass 2: rewrite each segment that holds superseded records.
        for seg in &eligible {
            let file = seg.file(cache)?;
            let mut out: Vec<u8> = Vec::new();
            let mut ix = Indexes::new();
            let mut removed = 0u64;
            for_each_batch(&file, seg.size(), |_, h, bytes| {
                let kept = if h.is_control() {
                    Some(bytes.to_vec())
                } else {
                    let (batch, n) = compact_batch(&h, bytes, &latest, start, now_ms, config.delete_retention_ms)?;
                    removed += n;
                    batch
                };
                if let Some(b) = kept {
                    ix.on_batch(
                        rel(seg.base, h.base_offset),
                        out.len() as u32,
                        b.len() as u64,
                        h.max_timestamp,
                        config.index_interval_bytes,
                    );
                    out.extend_from_slice(&b);
                }
                Ok(())
            })?;
            if removed == 0 {
                continue;
            }
            stats.segments_rewritten += 1;
            stats.records_removed += removed;
            stats.bytes_before += seg.size();
            stats.bytes_after += out.len() as u64;
            ix.seal(rel(seg.base, seg.end()));
            self.swap_in(seg, &out, &mut ix)?;
        }
        Ok(stats)
    }

    /// Replaces `old` with a segment holding `data`. Crash-safe: the old
    /// index files go first, so a crash between the renames leaves either
    /// the old log or the new one without indexes, which are then rebuilt.
    fn swap_in(&self, old: &Arc<Segment>, data: &[u8], ix: &mut Indexes) -> Result<()> {
        let stem = self.dir.join(segment::file_stem(old.base));
        let path = |ext: &str| PathBuf::from(format!("{}.{ext}", stem.display()));
        let cleaned = path("log.cleaned");
        let mut f = OpenOptions::new().create(true).truncate(true).write(true).open(&cleaned)?;
        f.write_all(data)?;
        f.sync_all()?;
        ix.persist(&path("index.cleaned"), &path("timeindex.cleaned"), true)?;
        old.retire(&self.env.cache)?;
        let fresh = Arc::new(Segment::existing(&self.dir, old.base, data.len() as u64, old.end()));
        {
            let mut segs = write(&self.segments);
            fs::remove_file(path("index"))?;
            fs::remove_file(path("timeindex"))?;
            fs::rename(&cleaned, path("log"))?;
            fs::rename(path("index.cleaned"), path("index"))?;
            fs::rename(path("timeindex.cleaned"), path("timeindex"))?;
            segs.insert(old.base, fresh);
        }
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }
}

/// The batch with superseded records (and expired tombstones) removed:
/// `None` if nothing is left, the original bytes if nothing went. Also
/// returns how many records went.
fn compact_batch(
    h: &BatchHeader,
    bytes: &[u8],
    latest: &HashMap<Vec<u8>, u64>,
    start: u64,
    now_ms: u64,
    delete_retention_ms: u64,
) -> Result<(Option<Vec<u8>>, u64)> {
    let payload = records_payload(bytes, MAX_DECOMPRESSED)?;
    let records = parse_records(&payload, h.records_count as usize)?;
    let tombstones_expire =
        h.max_timestamp >= 0 && (h.max_timestamp as u64).saturating_add(delete_retention_ms) < now_ms;
    let keep: Vec<&[u8]> = records
        .iter()
        .filter(|r| h.base_offset + r.offset_delta as u64 >= start)
        .filter(|r| match r.key {
            // Keyless records cannot be superseded; Kafka refuses them on
            // compacted topics, so they only come from a policy change.
            None => true,
            Some(k) => {
                latest.get(k) == Some(&(h.base_offset + r.offset_delta as u64))
                    && !(r.value.is_none() && tombstones_expire)
            }
        })
        .map(|r| r.raw)
        .collect();
    let removed = (records.len() - keep.len()) as u64;
    Ok(match (removed, keep.len()) {
        (0, _) => (Some(bytes.to_vec()), 0),
        (_, 0) => (None, removed),
        _ => (Some(rebuild_batch(bytes, &keep)?), removed),
    })
}
