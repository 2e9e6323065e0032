//! The sparse offset index and time index of one segment.
//!
//! Both live in memory while their segment is open and are appended to
//! `<base>.index` / `<base>.timeindex` at checkpoints, rolls and evictions,
//! not on every append: everything past the recovery checkpoint is rebuilt
//! from the log on recovery, so the index files only need to be durable up
//! to the checkpoint.
//!
//! Entries are added at a batch boundary once `index.interval.bytes` have
//! been written since the previous entry. A time entry `(t, o)` means "every
//! batch before relative offset `o` has max timestamp <= `t`", added beside
//! an offset entry whenever that running maximum grew. A closed segment gets
//! a final time entry at its end, as Kafka does.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

const OFFSET_ENTRY: usize = 8;
const TIME_ENTRY: usize = 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffsetEntry {
    /// Offset relative to the segment's base offset.
    pub rel: u32,
    /// Byte position of the batch starting at (or containing) `rel`.
    pub pos: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeEntry {
    pub max_ts: i64,
    pub rel: u32,
}

/// The in-memory indexes of one segment, plus the state needed to extend
/// them as batches are appended.
#[derive(Clone, Debug)]
pub struct Indexes {
    offsets: Vec<OffsetEntry>,
    times: Vec<TimeEntry>,
    persisted_offsets: usize,
    persisted_times: usize,
    /// Set when entries below the persisted count were dropped: the files
    /// must be rewritten, not appended to.
    rewrite: bool,
    bytes_since_entry: u64,
    /// Largest max-timestamp of all batches fed so far (-1: none).
    max_ts: i64,
    /// Bumped by every truncation, so a persist planned before one is not
    /// recorded after it.
    epoch: u64,
}

/// Index entries to write out, taken under the segment's index lock and
/// written after it is released (so appends and reads never wait for the
/// index fsync).
pub struct PersistPlan {
    offsets_at: usize,
    offsets: Vec<u8>,
    offsets_len: usize,
    times_at: usize,
    times: Vec<u8>,
    times_len: usize,
    epoch: u64,
}

impl Default for Indexes {
    fn default() -> Self {
        Indexes {
            offsets: Vec::new(),
            times: Vec::new(),
            persisted_offsets: 0,
            persisted_times: 0,
            rewrite: false,
            bytes_since_entry: 0,
            max_ts: -1,
            epoch: 0,
        }
    }
}

impl Indexes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Largest batch max-timestamp seen in this segment, -1 if none.
    pub fn max_timestamp(&self) -> i64 {
        self.max_ts
    }

    /// Records one appended batch at `pos`.
    pub fn on_batch(&mut self, rel: u32, pos: u32, size: u64, max_ts: i64, interval: u64) {
        if self.bytes_since_entry >= interval && pos > 0 {
            self.offsets.push(OffsetEntry { rel, pos });
            if self.times.last().is_none_or(|t| self.max_ts > t.max_ts) && self.max_ts >= 0 {
                self.times.push(TimeEntry { max_ts: self.max_ts, rel });
            }
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += size;
        self.max_ts = self.max_ts.max(max_ts);
    }

    /// Adds the final time entry of a segment that stops taking appends.
    pub fn seal(&mut self, end_rel: u32) {
        if self.max_ts >= 0 && self.times.last().is_none_or(|t| t.rel < end_rel) {
            self.times.push(TimeEntry { max_ts: self.max_ts, rel: end_rel });
        }
    }

    /// The newest offset entry, if any.
    pub fn last_entry(&self) -> Option<OffsetEntry> {
        self.offsets.last().copied()
    }

    /// Position to start scanning from for relative offset `rel`: the last
    /// entry at or before it, or the segment start.
    pub fn lookup(&self, rel: u32) -> OffsetEntry {
        let i = self.offsets.partition_point(|e| e.rel <= rel);
        if i == 0 { OffsetEntry { rel: 0, pos: 0 } } else { self.offsets[i - 1] }
    }

    /// Last entry at or before byte position `pos` (to find batch
    /// boundaries near a read's byte limit).
    pub fn lookup_position(&self, pos: u32) -> OffsetEntry {
        let i = self.offsets.partition_point(|e| e.pos <= pos);
        if i == 0 { OffsetEntry { rel: 0, pos: 0 } } else { self.offsets[i - 1] }
    }

    /// Relative offset from which batches may have a timestamp >= `ts`.
    pub fn lookup_time(&self, ts: i64) -> u32 {
        let i = self.times.partition_point(|t| t.max_ts < ts);
        if i == 0 { 0 } else { self.times[i - 1].rel }
    }

    /// Drops every entry at or past byte position `pos` and rewinds the
    /// builder state to the last kept entry. Returns the position from which
    /// batches must be fed again (through [`Indexes::on_batch`]) to rebuild
    /// the index exactly.
    pub fn truncate(&mut self, pos: u32) -> OffsetEntry {
        self.offsets.retain(|e| e.pos < pos);
        let resume = self.offsets.last().copied().unwrap_or(OffsetEntry { rel: 0, pos: 0 });
        // Time entries sit beside offset entries (never at position 0), so
        // this also drops a sealed segment's final entry.
        self.times.retain(|t| t.rel <= resume.rel);
        self.max_ts = self.times.last().map_or(-1, |t| t.max_ts);
        self.bytes_since_entry = 0;
        self.epoch += 1;
        if self.offsets.len() < self.persisted_offsets || self.times.len() < self.persisted_times {
            self.rewrite = true;
        }
        resume
    }

    /// Reads both index files. Returns `None` when either is missing or
    /// fails the sanity checks (then the caller rebuilds from the log).
    pub fn load(index: &Path, time_index: &Path, log_size: u64) -> Option<Indexes> {
        let offsets = read_entries(index, OFFSET_ENTRY)?
            .chunks_exact(OFFSET_ENTRY)
            .map(|c| OffsetEntry { rel: be_u32(&c[0..4]), pos: be_u32(&c[4..8]) })
            .collect::<Vec<_>>();
        let times = read_entries(time_index, TIME_ENTRY)?
            .chunks_exact(TIME_ENTRY)
            .map(|c| TimeEntry {
                max_ts: i64::from_be_bytes(c[0..8].try_into().unwrap_or_default()),
                rel: be_u32(&c[8..12]),
            })
            .collect::<Vec<_>>();
        let offsets_ok = offsets.iter().all(|e| e.pos > 0 && u64::from(e.pos) < log_size)
            && offsets.windows(2).all(|w| w[0].rel < w[1].rel && w[0].pos < w[1].pos);
        let times_ok = times.iter().all(|t| t.max_ts >= 0)
            && times.windows(2).all(|w| w[0].max_ts <= w[1].max_ts && w[0].rel < w[1].rel);
        if !offsets_ok || !times_ok {
            return None;
        }
        let max_ts = times.last().map_or(-1, |t| t.max_ts);
        Some(Indexes {
            persisted_offsets: offsets.len(),
            persisted_times: times.len(),
            offsets,
            times,
            rewrite: false,
            bytes_since_entry: 0,
            max_ts,
            epoch: 0,
        })
    }

    /// What `persist` would write, without writing it.
    pub fn plan_persist(&self) -> PersistPlan {
        let (po, pt) = if self.rewrite { (0, 0) } else { (self.persisted_offsets, self.persisted_times) };
        let mut offsets = Vec::with_capacity((self.offsets.len() - po) * OFFSET_ENTRY);
        for e in &self.offsets[po..] {
            offsets.extend_from_slice(&e.rel.to_be_bytes());
            offsets.extend_from_slice(&e.pos.to_be_bytes());
        }
        let mut times = Vec::with_capacity((self.times.len() - pt) * TIME_ENTRY);
        for t in &self.times[pt..] {
            times.extend_from_slice(&t.max_ts.to_be_bytes());
            times.extend_from_slice(&t.rel.to_be_bytes());
        }
        PersistPlan {
            offsets_at: po,
            offsets,
            offsets_len: self.offsets.len(),
            times_at: pt,
            times,
            times_len: self.times.len(),
            epoch: self.epoch,
        }
    }

    /// Records a plan as written, unless a truncation came in between.
    pub fn persisted(&mut self, plan: &PersistPlan) {
        if plan.epoch == self.epoch {
            self.persisted_offsets = plan.offsets_len;
            self.persisted_times = plan.times_len;
            self.rewrite = false;
        }
    }

    /// Whether entries are waiting to be written.
    pub fn dirty(&self) -> bool {
        self.rewrite || self.persisted_offsets != self.offsets.len() || self.persisted_times != self.times.len()
    }

    /// Writes entries not yet on disk (or the whole files after a
    /// truncation). With `sync`, fsyncs them too.
    pub fn persist(&mut self, index: &Path, time_index: &Path, sync: bool) -> io::Result<()> {
        if !self.dirty() && !sync {
            return Ok(());
        }
        let plan = self.plan_persist();
        plan.write(index, time_index, sync)?;
        self.persisted(&plan);
        Ok(())
    }

    /// Approximate heap bytes held, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.offsets.capacity() * size_of::<OffsetEntry>() + self.times.capacity() * size_of::<TimeEntry>()
    }
}

impl PersistPlan {
    /// Writes the planned entries (and fsyncs the files with `sync`).
    pub fn write(&self, index: &Path, time_index: &Path, sync: bool) -> io::Result<()> {
        append_file(index, (self.offsets_at * OFFSET_ENTRY) as u64, &self.offsets, sync)?;
        append_file(time_index, (self.times_at * TIME_ENTRY) as u64, &self.times, sync)
    }
}

/// Reads an index file, dropping a partial trailing entry (a torn write).
fn read_entries(path: &Path, entry: usize) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path).ok()?.read_to_end(&mut buf).ok()?;
    buf.truncate(buf.len() / entry * entry);
    Some(buf)
}

/// Cuts `path` to `keep` bytes and appends `data`.
fn append_file(path: &Path, keep: u64, data: &[u8], sync: bool) -> io::Result<()> {
    use std::io::Seek;
    let mut f = OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
    if f.metadata()?.len() != keep {
        f.set_len(keep)?;
    }
    f.seek(io::SeekFrom::Start(keep))?;
    f.write_all(data)?;
    if sync {
        f.sync_data()?;
    }
    Ok(())
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(batches: &[(u32, u64, i64)], interval: u64) -> Indexes {
        let mut ix = Indexes::new();
        let mut pos = 0u64;
        for &(rel, size, ts) in batches {
            ix.on_batch(rel, pos as u32, size, ts, interval);
            pos += size;
        }
        ix
    }

    #[test]
    fn sparse_entries_and_lookup() {
        let batches: Vec<_> = (0..10).map(|i| (i * 10, 100, 1000 + i64::from(i))).collect();
        let ix = build(&batches, 250);
        // entries once 250 bytes passed: at batch 3 (pos 300), 6 (600), 9 (900)
        assert_eq!(ix.lookup(0), OffsetEntry { rel: 0, pos: 0 });
        assert_eq!(ix.lookup(35), OffsetEntry { rel: 30, pos: 300 });
        assert_eq!(ix.lookup(95), OffsetEntry { rel: 90, pos: 900 });
        assert_eq!(ix.lookup_position(650), OffsetEntry { rel: 60, pos: 600 });
        assert_eq!(ix.lookup_time(1000), 0);
        assert_eq!(ix.lookup_time(1004), 30);
        assert_eq!(ix.lookup_time(1006), 60);
        assert_eq!(ix.lookup_time(1009), 90);
        assert_eq!(ix.max_timestamp(), 1009);
    }

    #[test]
    fn truncate_then_refeed_rebuilds_identically() {
        let batches: Vec<_> = (0..20).map(|i| (i, 100, (i64::from(i) * 7) % 13)).collect();
        let full = build(&batches, 250);
        for cut in [0u32, 1, 250, 301, 1000, 1999, 5000] {
            let mut ix = build(&batches, 250);
            let resume = ix.truncate(cut);
            let mut pos = 0u64;
            for &(rel, size, ts) in &batches {
                if pos >= u64::from(resume.pos) {
                    ix.on_batch(rel, pos as u32, size, ts, 250);
                }
                pos += size;
            }
            assert_eq!(ix.offsets, full.offsets, "cut {cut}");
            assert_eq!(ix.times, full.times, "cut {cut}");
            assert_eq!(ix.max_ts, full.max_ts);
        }
    }

    #[test]
    fn persist_and_load_round_trip_and_reject_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let (i, t) = (dir.path().join("0.index"), dir.path().join("0.timeindex"));
        let batches: Vec<_> = (0..10).map(|i| (i, 100, i64::from(i))).collect();
        let mut ix = build(&batches, 150);
        ix.persist(&i, &t, true).unwrap();
        let loaded = Indexes::load(&i, &t, 1000).unwrap();
        assert_eq!(loaded.offsets, ix.offsets);
        assert_eq!(loaded.times, ix.times);
        // a position past the log end is corrupt
        assert!(Indexes::load(&i, &t, 500).is_none());
        // truncate then persist rewrites the file
        ix.truncate(300);
        ix.persist(&i, &t, false).unwrap();
        assert_eq!(Indexes::load(&i, &t, 1000).unwrap().offsets, ix.offsets);
        // zero-filled file (power loss) is rejected
        std::fs::write(&i, [0u8; 64]).unwrap();
        assert!(Indexes::load(&i, &t, 1000).is_none());
        // missing file
        std::fs::remove_file(&t).unwrap();
        assert!(Indexes::load(&i, &t, 1000).is_none());
    }
}
