//! Compaction (`cleanup.policy=compact`): keep the latest record per key.
//!
//! Runs on the cleaner thread over closed segments that lie wholly before
//! the recovery checkpoint. Runs of segments are rewritten into one
//! `.cleaned` file and swapped in by renames behind a manifest; appends and
//! readers go on throughout (readers of an old segment keep its open
//! descriptor until they let go).
//! Offsets never change: a batch that loses records is rebuilt with the same
//! base offset and `lastOffsetDelta`, its surviving records byte for byte.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::cache::SegmentCache;
use crate::config::LogConfig;
use crate::error::Result;
use crate::index::Indexes;
use crate::log::Log;
use ferry_util::sync::{lock, write};

use crate::segment::{self, Segment, for_each_batch, rel};
use crate::txn_index::AbortedTxn;
use ferry_records::batch::BatchHeader;
use ferry_records::compression::MAX_DECOMPRESSED;
use ferry_records::records::{parse_records, rebuild_batch, records_payload};

/// What one compaction pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactionStats {
    /// Source segments replaced by cleaned ones (a group of several counts each).
    pub segments_rewritten: usize,
    /// Records dropped because a later record has the same key, or expired tombstones.
    pub records_removed: u64,
    /// Total size of the replaced segments, in bytes.
    pub bytes_before: u64,
    /// Total size of the segments written in their place, in bytes.
    pub bytes_after: u64,
}

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
        let Some(horizon) = lock(&self.checkpoint).written.map(|c| c.segment) else { return Ok(stats) };
        let stable = self.uncleanable_from.load(Ordering::Acquire);
        let eligible: Vec<Arc<Segment>> = self
            .segment_list()
            .into_iter()
            .filter(|s| !s.is_active() && s.base < horizon)
            .take_while(|s| s.end() <= stable)
            .collect();
        let (Some(first), Some(last)) = (eligible.first(), eligible.last()) else {
            return Ok(stats);
        };
        // Nothing new became eligible and no kept tombstone expired since
        // the last pass: skip re-reading the segments.
        let reach = last.end();
        if self.compacted_below.load(Ordering::Acquire) == reach && now_ms < self.recompact_at.load(Ordering::Acquire) {
            return Ok(stats);
        }
        let mut next_expiry = u64::MAX;
        // Records of aborted transactions never count as a key's latest
        // value (readers skip them), and the cleaner drops them.
        let aborted = self.aborted_txns(first.base, last.end());
        let cache = &self.env.cache;
        // Records below the log start (DeleteRecords) are already deleted
        // logically; compaction removes them physically too.
        let start = self.log_start_offset();

        // Pass 1: the latest offset of every key.
        let mut latest: HashMap<Vec<u8>, u64> = HashMap::new();
        for seg in &eligible {
            for_each_batch(&*seg.file(cache)?, seg.size(), |_, h, bytes| {
                if !h.is_control() && !is_aborted(&h, &aborted) {
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

        // Pass 2: rewrite runs of segments into one output each, filled up
        // to `segment.bytes` of *cleaned* data, so compacted topics do not
        // pile up tiny segments. A lone segment that loses nothing is left
        // alone.
        let ctx = Ctx { latest: &latest, start, now_ms, config: &config, aborted: &aborted };
        let mut pending = eligible.into_iter().peekable();
        while let Some(first) = pending.next() {
            let mut out = Output::create(&self.dir, first.base)?;
            out.add(&first, &ctx, cache, &mut next_expiry)?;
            let mut group = vec![first];
            while let Some(next) = pending.peek() {
                if next.end() - group[0].base > u64::from(u32::MAX) {
                    break;
                }
                let mark = out.mark()?;
                out.add(next, &ctx, cache, &mut next_expiry)?;
                if out.size > config.segment_bytes.min(i32::MAX as u64) {
                    out.rewind(mark)?;
                    break;
                }
                group.extend(pending.next());
            }
            if out.removed == 0 && group.len() == 1 {
                out.discard()?;
                continue;
            }
            let end = group.last().map_or(0, |s| s.end());
            stats.segments_rewritten += group.len();
            stats.records_removed += out.removed;
            stats.bytes_before += group.iter().map(|s| s.size()).sum::<u64>();
            stats.bytes_after += out.size;
            let size = out.finish(end)?;
            self.swap_in(group, size, end)?;
        }
        self.compacted_below.store(reach, Ordering::Release);
        self.recompact_at.store(next_expiry, Ordering::Release);
        Ok(stats)
    }

    /// Replaces the run `old` with the cleaned segment written beside its
    /// first member. The manifest `<base>.swap` (naming where the run ends)
    /// is the commit point: recovery finishes a swap it finds (see
    /// [`finish_swaps`]); `.cleaned` files without one are discarded.
    fn swap_in(&self, old: Vec<Arc<Segment>>, size: u64, end: u64) -> Result<()> {
        let first = old[0].base;
        let upto = self.segment_list().into_iter().map(|s| s.base).find(|&b| b > old[old.len() - 1].base);
        let stem = self.dir.join(segment::file_stem(first));
        for seg in &old {
            seg.retire(&self.env.cache)?;
        }
        write_manifest(&stem, upto.unwrap_or(u64::MAX))?;
        let fresh = Arc::new(Segment::existing(&self.dir, first, size, end));
        {
            let mut segs = write(&self.segments);
            for seg in &old {
                segs.remove(&seg.base);
            }
            complete_swap(&self.dir, first, upto.unwrap_or(u64::MAX))?;
            segs.insert(first, fresh);
        }
        // `old` drops here: the retired segments close their descriptors as
        // soon as the last reader lets go.
        Ok(())
    }
}

/// What decides a record's fate in one pass.
struct Ctx<'a> {
    latest: &'a HashMap<Vec<u8>, u64>,
    start: u64,
    now_ms: u64,
    config: &'a LogConfig,
    aborted: &'a [AbortedTxn],
}

/// The `.cleaned` files of one output segment being written.
struct Output {
    stem: PathBuf,
    first: u64,
    file: BufWriter<File>,
    ix: Indexes,
    size: u64,
    removed: u64,
}

/// Where an output stood before a segment was added, to undo the addition.
struct Mark {
    size: u64,
    removed: u64,
    ix: Indexes,
}

impl Output {
    fn create(dir: &Path, first: u64) -> Result<Output> {
        let stem = dir.join(segment::file_stem(first));
        let file = OpenOptions::new().create(true).truncate(true).write(true).open(path(&stem, "log.cleaned"))?;
        Ok(Output { stem, first, file: BufWriter::new(file), ix: Indexes::new(), size: 0, removed: 0 })
    }

    /// Appends the surviving batches of `seg`.
    fn add(&mut self, seg: &Arc<Segment>, ctx: &Ctx<'_>, cache: &SegmentCache, next_expiry: &mut u64) -> Result<()> {
        let retention = ctx.config.delete_retention_ms;
        for_each_batch(&*seg.file(cache)?, seg.size(), |_, h, bytes| {
            let kept = if h.is_control() {
                Some(bytes.to_vec())
            } else if is_aborted(&h, ctx.aborted) {
                self.removed += u64::from(h.records_count);
                None
            } else {
                let (batch, n) = compact_batch(&h, bytes, ctx.latest, ctx.start, ctx.now_ms, retention)?;
                self.removed += n;
                if batch.is_some() && h.max_timestamp >= 0 {
                    let expiry = (h.max_timestamp as u64).saturating_add(retention);
                    if expiry >= ctx.now_ms {
                        *next_expiry = (*next_expiry).min(expiry);
                    }
                }
                batch
            };
            if let Some(b) = kept {
                let (rel, pos) = (rel(self.first, h.base_offset), self.size as u32);
                self.ix.on_batch(rel, pos, b.len() as u64, h.max_timestamp, ctx.config.index_interval_bytes);
                self.file.write_all(&b)?;
                self.size += b.len() as u64;
            }
            Ok(())
        })
    }

    fn mark(&mut self) -> Result<Mark> {
        Ok(Mark { size: self.size, removed: self.removed, ix: self.ix.clone() })
    }

    fn rewind(&mut self, mark: Mark) -> Result<()> {
        self.file.flush()?;
        self.file.get_ref().set_len(mark.size)?;
        self.file.seek(SeekFrom::Start(mark.size))?;
        (self.size, self.removed, self.ix) = (mark.size, mark.removed, mark.ix);
        Ok(())
    }

    fn discard(self) -> Result<()> {
        drop(self.file);
        fs::remove_file(path(&self.stem, "log.cleaned"))?;
        Ok(())
    }

    /// Makes the output durable; returns its size.
    fn finish(mut self, end: u64) -> Result<u64> {
        self.file.into_inner().map_err(std::io::IntoInnerError::into_error)?.sync_all()?;
        self.ix.seal(rel(self.first, end));
        self.ix.persist(&path(&self.stem, "index.cleaned"), &path(&self.stem, "timeindex.cleaned"), true)?;
        Ok(self.size)
    }
}

/// Whether a batch belongs to an aborted transaction.
fn is_aborted(h: &BatchHeader, aborted: &[AbortedTxn]) -> bool {
    aborted.iter().any(|a| a.covers(h))
}

fn path(stem: &Path, ext: &str) -> PathBuf {
    PathBuf::from(format!("{}.{ext}", stem.display()))
}

fn write_manifest(stem: &Path, upto: u64) -> Result<()> {
    let p = path(stem, "swap");
    let mut f = File::create(&p)?;
    writeln!(f, "{upto}")?;
    f.sync_all()?;
    if let Some(dir) = stem.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Deletes the replaced segments `[first, upto)` and moves the cleaned files
/// into place. Idempotent, so recovery can rerun it after a crash at any
/// step: old files go first, and only while the cleaned log still waits.
fn complete_swap(dir: &Path, first: u64, upto: u64) -> Result<()> {
    let stem = dir.join(segment::file_stem(first));
    if path(&stem, "log.cleaned").exists() {
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            let base = name.split('.').next().and_then(|b| b.parse::<u64>().ok());
            let kind = name.split_once('.').map(|(_, k)| k);
            if base.is_some_and(|b| b >= first && b < upto) && matches!(kind, Some("log" | "index" | "timeindex")) {
                fs::remove_file(dir.join(name))?;
            }
        }
        fs::rename(path(&stem, "log.cleaned"), path(&stem, "log"))?;
    }
    for ext in ["index", "timeindex"] {
        let cleaned = path(&stem, &format!("{ext}.cleaned"));
        if cleaned.exists() {
            fs::rename(cleaned, path(&stem, ext))?;
        }
    }
    File::open(dir)?.sync_all()?;
    fs::remove_file(path(&stem, "swap"))?;
    Ok(())
}

/// Finishes swaps interrupted by a crash (called when a log opens).
pub(crate) fn finish_swaps(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(first) = name.to_str().and_then(|n| n.strip_suffix(".swap")).and_then(|b| b.parse::<u64>().ok())
        else {
            continue;
        };
        let upto = fs::read_to_string(dir.join(&name)).ok().and_then(|t| t.trim().parse::<u64>().ok());
        match upto {
            Some(upto) => complete_swap(dir, first, upto)?,
            // A torn manifest: the swap never committed.
            None => fs::remove_file(dir.join(&name))?,
        }
    }
    Ok(())
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
