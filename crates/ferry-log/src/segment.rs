//! One segment: `<base>.log` plus its two index files.
//!
//! A segment's descriptor and (once it is closed) its in-memory indexes are
//! loaded on first use and dropped when the [`SegmentCache`] evicts it, so an
//! idle segment costs a few dozen bytes. The active segment keeps its indexes
//! in memory (they are how appends extend the index) but may lose its
//! descriptor like any other.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::cache::SegmentCache;
use crate::error::{LogError, Result};
use crate::index::Indexes;
use ferry_records::batch::{self, BatchHeader, HEADER_LEN};
use ferry_util::sync::{lock, read, write};

/// File name stem of the segment starting at `base`, as Kafka names them.
pub fn file_stem(base: u64) -> String {
    format!("{base:020}")
}

pub struct Segment {
    pub base: u64,
    log_path: PathBuf,
    index_path: PathBuf,
    time_path: PathBuf,
    /// Bytes written (the writer's view).
    size: AtomicU64,
    /// Bytes readers may see; always a batch boundary.
    visible: AtomicU64,
    /// Offset after the last batch written.
    end: AtomicU64,
    /// File length when the file runs past `size` with zeros written ahead
    /// (see [`Segment::zero_ahead`]); 0 when it does not.
    zeroed_to: AtomicU64,
    /// Set while this is the log's active segment.
    active: AtomicBool,
    file: Mutex<Option<Arc<File>>>,
    indexes: RwLock<Option<Indexes>>,
    /// CLOCK reference bit for the cache.
    pub(crate) referenced: AtomicBool,
    pub(crate) cached: AtomicBool,
    /// Serialises writers of the index files (checkpoint, eviction).
    persisting: Mutex<()>,
    /// Replaced or deleted: keeps its descriptor and indexes (which now
    /// describe a file no longer at `log_path`) until the last reader drops
    /// its handle.
    retired: AtomicBool,
}

impl Segment {
    /// A segment over existing files, trusted up to `size` bytes, whose
    /// batches end before `end`.
    pub fn existing(dir: &Path, base: u64, size: u64, end: u64) -> Segment {
        let stem = file_stem(base);
        Segment {
            base,
            log_path: dir.join(format!("{stem}.log")),
            index_path: dir.join(format!("{stem}.index")),
            time_path: dir.join(format!("{stem}.timeindex")),
            size: AtomicU64::new(size),
            visible: AtomicU64::new(size),
            end: AtomicU64::new(end),
            zeroed_to: AtomicU64::new(0),
            active: AtomicBool::new(false),
            file: Mutex::new(None),
            indexes: RwLock::new(None),
            referenced: AtomicBool::new(false),
            cached: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            persisting: Mutex::new(()),
        }
    }

    /// Creates the empty files of a new segment.
    pub fn create(dir: &Path, base: u64) -> Result<Segment> {
        let seg = Segment::existing(dir, base, 0, base);
        OpenOptions::new().create(true).truncate(true).write(true).open(&seg.log_path)?;
        for p in [&seg.index_path, &seg.time_path] {
            let _ = fs::remove_file(p);
        }
        *write(&seg.indexes) = Some(Indexes::new());
        Ok(seg)
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub fn visible(&self) -> u64 {
        self.visible.load(Ordering::Acquire)
    }

    pub fn set_visible(&self, bytes: u64) {
        self.visible.fetch_max(bytes, Ordering::AcqRel);
    }

    pub fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    pub fn set_active(&self, active: bool) {
        self.active.store(active, Ordering::Release);
    }

    /// The segment's descriptor, reopened if the cache closed it.
    pub fn file(self: &Arc<Self>, cache: &SegmentCache) -> io::Result<Arc<File>> {
        self.referenced.store(true, Ordering::Relaxed);
        let mut slot = lock(&self.file);
        if let Some(f) = slot.as_ref() {
            return Ok(f.clone());
        }
        // Not O_APPEND: writes are positional, as the file may run past
        // `size` with zeros written ahead.
        let f = Arc::new(OpenOptions::new().read(true).write(true).open(&self.log_path)?);
        *slot = Some(f.clone());
        drop(slot);
        cache.admit(self);
        Ok(f)
    }

    /// Runs `f` on the indexes, loading (and if need be rebuilding) them.
    pub fn with_indexes<R>(self: &Arc<Self>, cache: &SegmentCache, f: impl FnOnce(&Indexes) -> R) -> Result<R> {
        self.referenced.store(true, Ordering::Relaxed);
        if let Some(ix) = read(&self.indexes).as_ref() {
            return Ok(f(ix));
        }
        let file = self.file(cache)?;
        let mut slot = write(&self.indexes);
        if slot.is_none() {
            *slot = Some(self.load_indexes(&file)?);
        }
        Ok(f(slot.as_ref().expect("just loaded")))
    }

    /// Mutable access for the writer; the active segment's indexes are
    /// always loaded.
    pub fn with_indexes_mut<R>(self: &Arc<Self>, cache: &SegmentCache, f: impl FnOnce(&mut Indexes) -> R) -> Result<R> {
        self.with_indexes(cache, |_| ())?;
        let mut slot = write(&self.indexes);
        match slot.as_mut() {
            Some(ix) => Ok(f(ix)),
            None => Err(LogError::Unavailable("segment indexes unloaded".into())),
        }
    }

    /// Loads the index files (rebuilding them if missing or damaged) and
    /// replays the batches after the last entry, which restores the running
    /// maximum timestamp and the exact end offset.
    fn load_indexes(&self, file: &File) -> Result<Indexes> {
        let size = self.size();
        let mut ix = Indexes::load(&self.index_path, &self.time_path, size)
            .filter(|ix| entry_matches(file, self.base, ix, size))
            .unwrap_or_default();
        let resume = ix.truncate(u32::MAX);
        let mut end = self.base + u64::from(resume.rel);
        let mut pos = u64::from(resume.pos);
        while pos < size {
            let h = read_header(file, pos, size)?
                .ok_or(LogError::Unavailable(format!("torn batch inside {}", self.log_path.display())))?;
            ix.on_batch(rel(self.base, h.base_offset), pos as u32, h.size as u64, h.max_timestamp, u64::MAX);
            end = h.next_offset();
            pos += h.size as u64;
        }
        if !self.is_active() {
            ix.seal(rel(self.base, end));
        }
        self.end.fetch_max(end, Ordering::AcqRel);
        Ok(ix)
    }

    /// Appends already-validated batches at the end of the data with one
    /// vectored positional write. On a failed or short write the file is
    /// cut back, leaving it as it was (less any zeros written ahead).
    pub fn write(self: &Arc<Self>, cache: &SegmentCache, slices: &mut [IoSlice<'_>], len: u64) -> Result<u64> {
        let file = self.file(cache)?;
        let before = self.size();
        let mut rest = &mut slices[..];
        let mut at = before;
        while !rest.is_empty() {
            match nix::sys::uio::pwritev(&*file, rest, at as i64) {
                Ok(0) => {
                    self.cut_back(&file, before);
                    return Err(io::Error::new(io::ErrorKind::WriteZero, "segment write").into());
                }
                Ok(n) => {
                    IoSlice::advance_slices(&mut rest, n);
                    at += n as u64;
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    self.cut_back(&file, before);
                    return Err(io::Error::from(e).into());
                }
            }
        }
        Ok(before + len)
    }

    fn cut_back(&self, file: &File, len: u64) {
        let _ = file.set_len(len);
        self.zeroed_to.store(0, Ordering::Release);
    }

    /// Writes zeros past the data, up to `upto`, unless they are there
    /// already; true when it wrote some (they are not durable until the
    /// next fsync of the file). The caller holds the log's writer lock, so
    /// no append lands in the range meanwhile.
    /// Why: `crate::zero_ahead`.
    pub fn zero_ahead(self: &Arc<Self>, cache: &SegmentCache, upto: u64) -> Result<bool> {
        let size = self.size();
        let from = self.zeroed_to.load(Ordering::Acquire).max(size);
        if from >= upto {
            return Ok(false);
        }
        let file = self.file(cache)?;
        let zeros = vec![0u8; (upto - from) as usize];
        if let Err(e) = file.write_all_at(&zeros, from) {
            self.cut_back(&file, size);
            return Err(e.into());
        }
        self.zeroed_to.store(upto, Ordering::Release);
        Ok(true)
    }

    /// Bytes of zeros written ahead past the data.
    pub fn zero_headroom(&self) -> u64 {
        self.zeroed_to.load(Ordering::Acquire).saturating_sub(self.size())
    }

    /// Cuts zeros written ahead off the file, so that its length is its
    /// data again (before a roll seals it, or at close).
    pub fn cut_zero_tail(self: &Arc<Self>, cache: &SegmentCache) -> Result<()> {
        if self.zeroed_to.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        let file = self.file(cache)?;
        file.set_len(self.size())?;
        self.zeroed_to.store(0, Ordering::Release);
        Ok(())
    }

    /// Publishes a completed write of batches ending at `end`.
    pub fn commit_write(&self, size: u64, end: u64) {
        self.size.store(size, Ordering::Release);
        self.end.store(end, Ordering::Release);
    }

    /// Cuts the segment at byte `pos` (a batch boundary) ending at `end`.
    pub fn truncate(self: &Arc<Self>, cache: &SegmentCache, pos: u64, end: u64) -> Result<()> {
        let file = self.file(cache)?;
        file.set_len(pos)?;
        file.sync_all()?;
        self.zeroed_to.store(0, Ordering::Release);
        self.size.store(pos, Ordering::Release);
        self.visible.store(pos, Ordering::Release);
        self.end.store(end, Ordering::Release);
        let mut slot = write(&self.indexes);
        if let Some(ix) = slot.as_mut() {
            let resume = ix.truncate(pos as u32);
            // Re-feed the few batches between the last kept entry and `pos`.
            let mut p = u64::from(resume.pos);
            while p < pos {
                let Some(h) = read_header(&file, p, pos)? else { break };
                ix.on_batch(rel(self.base, h.base_offset), p as u32, h.size as u64, h.max_timestamp, u64::MAX);
                p += h.size as u64;
            }
            ix.persist(&self.index_path, &self.time_path, true)?;
        }
        Ok(())
    }

    /// Writes pending index entries and fsyncs the data (and the indexes
    /// when `with_indexes`).
    pub fn sync(self: &Arc<Self>, cache: &SegmentCache, with_indexes: bool) -> Result<()> {
        self.file(cache)?.sync_data()?;
        if with_indexes {
            self.persist_indexes(true)?;
        }
        Ok(())
    }

    /// Writes pending index entries (fsyncing with `sync`). The entries are
    /// copied under the index lock and written after it is released, so
    /// appends and reads never wait for this I/O.
    pub fn persist_indexes(&self, sync: bool) -> Result<()> {
        let _one_at_a_time = lock(&self.persisting);
        let plan = match read(&self.indexes).as_ref() {
            Some(ix) if ix.dirty() || sync => ix.plan_persist(),
            _ => return Ok(()),
        };
        plan.write(&self.index_path, &self.time_path, sync)?;
        if let Some(ix) = write(&self.indexes).as_mut() {
            ix.persisted(&plan);
        }
        Ok(())
    }

    /// Marks the segment closed to appends: adds the final time entry.
    pub fn seal(&self) {
        self.set_active(false);
        if let Some(ix) = write(&self.indexes).as_mut() {
            ix.seal(rel(self.base, self.end()));
        }
    }

    /// Drops the descriptor and, unless active, the in-memory indexes.
    /// Called by the cache on eviction.
    pub fn release(&self) {
        if self.retired.load(Ordering::Acquire) {
            return;
        }
        *lock(&self.file) = None;
        // Best effort: anything not persisted is rebuilt on next load.
        let _ = self.persist_indexes(false);
        if !self.is_active() {
            *write(&self.indexes) = None;
        }
    }

    /// Pins the current file and indexes in memory before the files are
    /// replaced or deleted, so readers holding this segment keep a
    /// consistent view.
    pub fn retire(self: &Arc<Self>, cache: &SegmentCache) -> Result<()> {
        self.with_indexes(cache, |_| ())?;
        self.file(cache)?;
        self.retired.store(true, Ordering::Release);
        Ok(())
    }

    /// Deletes the segment's files.
    pub fn delete_files(&self) {
        for p in [&self.log_path, &self.index_path, &self.time_path] {
            let _ = fs::remove_file(p);
        }
    }

    /// Heap bytes held by this segment's indexes.
    pub fn heap_bytes(&self) -> usize {
        size_of::<Segment>() + read(&self.indexes).as_ref().map_or(0, Indexes::heap_bytes)
    }

    /// Max timestamp of all batches in the segment (-1 if none).
    pub fn max_timestamp(self: &Arc<Self>, cache: &SegmentCache) -> Result<i64> {
        self.with_indexes(cache, Indexes::max_timestamp)
    }
}

/// Offset relative to a segment base. Segments roll before a relative
/// offset could exceed `u32`, so the cast cannot truncate.
pub fn rel(base: u64, offset: u64) -> u32 {
    offset.saturating_sub(base) as u32
}

/// Reads the header of the batch at `pos`. `Ok(None)` at or past `limit`,
/// or when the batch does not fit before `limit` (a torn tail).
pub fn read_header(file: &File, pos: u64, limit: u64) -> Result<Option<BatchHeader>> {
    if pos + HEADER_LEN as u64 > limit {
        return Ok(None);
    }
    let mut buf = [0u8; HEADER_LEN];
    file.read_exact_at(&mut buf, pos)?;
    let h = BatchHeader::parse(&buf)?;
    if pos + h.size as u64 > limit {
        return Ok(None);
    }
    Ok(Some(h))
}

/// Validates every batch from `from` (fully, CRC included) and rebuilds the
/// indexes from the last entry before `from`. Cuts the file after the last
/// valid batch. Batches before `from` are trusted (they were fsynced before
/// the recovery checkpoint that named `from`). Returns true when something
/// was cut off.
pub fn recover(seg: &Arc<Segment>, cache: &SegmentCache, from: u64, interval: u64) -> Result<bool> {
    let file = seg.file(cache)?;
    let file_len = file.metadata()?.len();
    let from = from.min(file_len);
    let (mut ix, mut pos) = match Indexes::load(&seg.index_path, &seg.time_path, file_len) {
        Some(ix) if from > 0 && entry_matches(&file, seg.base, &ix, file_len) => (ix, from),
        // Missing or damaged indexes: validate the whole segment.
        _ => (Indexes::new(), 0),
    };
    let resume = ix.truncate(pos as u32);
    let mut end = seg.base + u64::from(resume.rel);
    let mut p = u64::from(resume.pos);
    while p < pos {
        let Some(h) = read_header(&file, p, pos)? else {
            // The trusted region does not parse: validate all of it.
            ix = Indexes::new();
            end = seg.base;
            pos = 0;
            break;
        };
        ix.on_batch(rel(seg.base, h.base_offset), p as u32, h.size as u64, h.max_timestamp, interval);
        end = h.next_offset();
        p += h.size as u64;
    }
    let mut buf = Vec::new();
    let mut truncated = false;
    while pos < file_len {
        if let Some(h) = read_valid_batch(&file, pos, file_len, end, &mut buf) {
            ix.on_batch(rel(seg.base, h.base_offset), pos as u32, h.size as u64, h.max_timestamp, interval);
            end = h.next_offset();
            pos += h.size as u64;
        } else {
            truncated = true;
            break;
        }
    }
    if truncated || pos < file_len {
        if zero_tail(&file, pos, file_len) {
            // Zeros written ahead of the appends (`Segment::zero_ahead`):
            // the end of the data, not damage; later segments stay.
            tracing::debug!(segment = %seg.log_path.display(), valid = pos, len = file_len, "cutting zeroed tail");
            truncated = false;
        } else {
            tracing::warn!(segment = %seg.log_path.display(), valid = pos, len = file_len, "truncating torn or corrupt tail");
            truncated = true;
        }
        file.set_len(pos)?;
    }
    file.sync_all()?;
    ix.persist(&seg.index_path, &seg.time_path, true)?;
    seg.size.store(pos, Ordering::Release);
    seg.visible.store(pos, Ordering::Release);
    seg.end.store(end.max(seg.base), Ordering::Release);
    *write(&seg.indexes) = Some(ix);
    Ok(truncated)
}

/// Whether the newest index entry points at a batch with the offset it
/// claims: catches indexes left over from another file (the check Kafka
/// makes too; entries in between are trusted).
fn entry_matches(file: &File, base: u64, ix: &Indexes, limit: u64) -> bool {
    match ix.last_entry() {
        None => true,
        Some(e) => {
            matches!(read_header(file, u64::from(e.pos), limit), Ok(Some(h)) if h.base_offset == base + u64::from(e.rel))
        }
    }
}

/// Whether the file holds only zeros from `pos` to `len`.
fn zero_tail(file: &File, pos: u64, len: u64) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = pos;
    while at < len {
        let n = buf.len().min((len - at) as usize);
        if file.read_exact_at(&mut buf[..n], at).is_err() || buf[..n].iter().any(|&b| b != 0) {
            return false;
        }
        at += n as u64;
    }
    true
}

/// Reads and fully validates the batch at `pos`; `None` if it is torn,
/// corrupt, or goes backwards in offsets.
fn read_valid_batch(file: &File, pos: u64, limit: u64, min_offset: u64, buf: &mut Vec<u8>) -> Option<BatchHeader> {
    let h = read_header(file, pos, limit).ok()??;
    if h.base_offset < min_offset || h.next_offset() > i64::MAX as u64 {
        return None;
    }
    buf.resize(h.size, 0);
    file.read_exact_at(buf, pos).ok()?;
    batch::validate(buf).ok()
}

/// Calls `f` with each whole batch of `file` below `limit`, in order.
pub fn for_each_batch(file: &File, limit: u64, mut f: impl FnMut(u64, BatchHeader, &[u8]) -> Result<()>) -> Result<()> {
    let mut pos = 0;
    let mut buf = Vec::new();
    while let Some(h) = read_header(file, pos, limit)? {
        buf.resize(h.size, 0);
        file.read_exact_at(&mut buf, pos)?;
        f(pos, h, &buf)?;
        pos += h.size as u64;
    }
    Ok(())
}
