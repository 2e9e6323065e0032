//! Opening a log: find its segments, validate what lies past the recovery
//! checkpoint, cut a torn or corrupt tail, rebuild damaged indexes.
//!
//! Work is proportional to the data written since the last checkpoint (and
//! to the number of segments, for listing them), never to the log's size:
//! segments before the checkpoint are trusted and loaded lazily on first read.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use crate::checkpoint::Checkpoint;
use crate::config::LogConfig;
use crate::epoch_cache::EpochCache;
use crate::error::Result;
use crate::log::{CheckpointState, FlushState, Log, Writer};
use crate::manager::Env;
use crate::segment::{self, Segment};
use crate::txn_index::TxnIndex;

/// Suffixes of files left behind by an interrupted compaction or write.
const LEFTOVERS: [&str; 3] = [".cleaned", ".tmp", ".deleted"];

impl Log {
    pub(crate) fn open(dir: &Path, config: LogConfig, env: Arc<Env>) -> Result<Arc<Log>> {
        fs::create_dir_all(dir)?;
        crate::cleaner::finish_swaps(dir)?;
        let mut bases = Vec::new();
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if LEFTOVERS.iter().any(|s| name.ends_with(s)) {
                let _ = fs::remove_file(dir.join(name));
            } else if let Some(stem) = name.strip_suffix(".log")
                && let Ok(base) = stem.parse::<u64>()
            {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        let checkpoint = Checkpoint::read(dir);

        let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(bases.len().max(1));
        for (i, &base) in bases.iter().enumerate() {
            let size = fs::metadata(dir.join(format!("{}.log", segment::file_stem(base))))?.len();
            let end = bases.get(i + 1).copied().unwrap_or(base);
            segments.push(Arc::new(Segment::existing(dir, base, size, end)));
        }
        if segments.is_empty() {
            let base = checkpoint.map_or(0, |c| c.log_start);
            segments.push(Arc::new(Segment::create(dir, base)?));
        }

        // Where validation starts: the checkpoint's position if its segment
        // still exists, else the start of the first segment after it, else
        // (no usable checkpoint) the very beginning.
        let (first, from) = match checkpoint {
            Some(cp) => match segments.iter().position(|s| s.base >= cp.segment) {
                Some(i) if segments[i].base == cp.segment && segments[i].size() >= cp.position => (i, cp.position),
                Some(i) if segments[i].base > cp.segment => (i, 0),
                Some(i) => (i, 0),
                None => (segments.len() - 1, segments[segments.len() - 1].size()),
            },
            None => (0, 0),
        };

        let interval = config.index_interval_bytes;
        let env_ref = &env;
        let mut cut_at = None;
        for (i, seg) in segments.iter().enumerate().skip(first) {
            let from = if i == first { from } else { 0 };
            if segment::recover(seg, &env_ref.cache, from, interval)? {
                cut_at = Some(i + 1);
                break;
            }
        }
        if let Some(keep) = cut_at {
            // Everything after a corrupt batch is unreachable garbage: the
            // offsets that follow it were never acknowledged as durable.
            for seg in segments.drain(keep..) {
                tracing::warn!(segment = %seg.log_path().display(), "deleting segment after corrupt tail");
                seg.delete_files();
            }
        }

        let active = segments.last().cloned().expect("at least one segment");
        active.set_active(true);
        // The active segment's indexes stay loaded; loading also settles its
        // exact end offset if recovery did not touch it.
        active.with_indexes(&env.cache, |_| ())?;
        let leo = active.end().max(active.base);
        let log_start = checkpoint.map_or(0, |c| c.log_start).max(segments.first().map_or(0, |s| s.base)).min(leo);
        let now = ferry_util::time::now_ms_u64();
        let map: BTreeMap<u64, Arc<Segment>> = segments.iter().map(|s| (s.base, s.clone())).collect();
        let log = Arc::new(Log {
            dir: dir.to_path_buf(),
            env: env.clone(),
            segments: RwLock::new(map),
            writer: Mutex::new(Writer {
                active: active.clone(),
                leo,
                rolled: Vec::new(),
                dir_dirty: true,
                roll_at_ms: now.saturating_add(config.segment_ms),
                unflushed_records: 0,
                zeros_off: false,
            }),
            flush: Mutex::new(FlushState { durable_pos: (active.base, active.size()), pace: Default::default() }),
            checkpoint: Mutex::new(CheckpointState { last: Instant::now(), written: None, appended_at: 0 }),
            config: RwLock::new(config),
            maintenance: Mutex::new(()),
            start: AtomicU64::new(log_start),
            hw: AtomicU64::new(leo),
            leo: AtomicU64::new(leo),
            durable: AtomicU64::new(leo),
            announced: AtomicU64::new(leo),
            dirty_since: AtomicU64::new(0),
            appended: AtomicU64::new(0),
            flush_queued: AtomicBool::new(false),
            compacted_below: AtomicU64::new(u64::MAX),
            recompact_at: AtomicU64::new(0),
            hw_listener: RwLock::new(None),
            failed: AtomicBool::new(false),
            aborted: TxnIndex::open(dir, log_start, leo)?,
            uncleanable_from: AtomicU64::new(u64::MAX),
            epochs: EpochCache::open(dir, leo)?,
        });
        // Recovery fsynced what it validated; segments before the checkpoint
        // were fsynced before it was written. Record that.
        fs::File::open(dir)?.sync_all()?;
        log.write_checkpoint(ferry_util::sync::lock(&log.flush), true)?;
        Ok(log)
    }
}
