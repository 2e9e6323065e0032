//! A cursor's files: `cursor.json`, a snapshot written atomically (temp
//! file + rename), and `cursor.journal`, 9-byte entries appended since the
//! snapshot (`A` + offset: acknowledged; `R` start + `E` end: a range
//! acknowledged (purge); `D` + offset: the "possibly delivered" mark
//! moved). Appends are plain writes (no fsync): they survive a kill -9
//! through the page cache. Whoever needs them to survive a power loss
//! fsyncs the journal ([`CursorStore::journal_handle`], off the async
//! threads) or writes the snapshot with `sync`.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// What `cursor.json` holds: enough to recover a [`Cursor`](crate::queue::Cursor).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// Every offset below this is acknowledged.
    pub floor: u64,
    /// Acknowledged ranges above the floor, each `[start, end)`.
    pub acked: Vec<(u64, u64)>,
    /// Offsets below this may have been delivered (the "possibly delivered" mark).
    pub delivered_mark: u64,
}

/// A cursor's snapshot and journal files in one directory.
pub struct CursorStore {
    dir: PathBuf,
    journal: Arc<File>,
    journal_len: u64,
}

impl CursorStore {
    /// Reads the snapshot and replays the journal over it.
    pub fn open(dir: &Path) -> Result<(CursorStore, Snapshot)> {
        fs::create_dir_all(dir)?;
        let mut snap: Snapshot =
            fs::read(dir.join("cursor.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        let journal_path = dir.join("cursor.journal");
        let mut bytes = Vec::new();
        if let Ok(mut f) = File::open(&journal_path) {
            f.read_to_end(&mut bytes)?;
        }
        // A torn last entry (crash mid-write) is ignored.
        let mut range_start = None;
        for entry in bytes.chunks_exact(9) {
            let mut o = [0u8; 8];
            o.copy_from_slice(&entry[1..]);
            let offset = u64::from_le_bytes(o);
            match entry[0] {
                b'A' => snap.acked.push((offset, offset + 1)),
                b'D' => snap.delivered_mark = snap.delivered_mark.max(offset),
                b'R' => range_start = Some(offset),
                b'E' => {
                    if let Some(start) = range_start.take() {
                        snap.acked.push((start, offset));
                    }
                }
                _ => {}
            }
        }
        let journal = OpenOptions::new().create(true).append(true).open(&journal_path)?;
        let journal_len = journal.metadata()?.len();
        Ok((CursorStore { dir: dir.to_path_buf(), journal: Arc::new(journal), journal_len }, snap))
    }

    /// Journal bytes written since the last snapshot.
    pub fn journal_len(&self) -> u64 {
        self.journal_len
    }

    /// The journal file, to fsync without holding its owner's lock.
    pub fn journal_handle(&self) -> Arc<File> {
        self.journal.clone()
    }

    fn append(&mut self, buf: &[u8]) -> Result<()> {
        (&*self.journal).write_all(buf)?;
        self.journal_len += buf.len() as u64;
        Ok(())
    }

    /// Journals the acknowledgement of each of `offsets`.
    pub fn journal_acks(&mut self, offsets: &[u64]) -> Result<()> {
        let mut buf = Vec::with_capacity(offsets.len() * 9);
        for o in offsets {
            buf.push(b'A');
            buf.extend_from_slice(&o.to_le_bytes());
        }
        self.append(&buf)
    }

    /// Journals the acknowledgement of `[from, to)`.
    pub fn journal_range(&mut self, from: u64, to: u64) -> Result<()> {
        let mut buf = Vec::with_capacity(18);
        buf.push(b'R');
        buf.extend_from_slice(&from.to_le_bytes());
        buf.push(b'E');
        buf.extend_from_slice(&to.to_le_bytes());
        self.append(&buf)
    }

    /// Journals the "possibly delivered" mark moving to `mark`.
    pub fn journal_mark(&mut self, mark: u64) -> Result<()> {
        let mut buf = Vec::with_capacity(9);
        buf.push(b'D');
        buf.extend_from_slice(&mark.to_le_bytes());
        self.append(&buf)
    }

    /// Writes the snapshot, then empties the journal it covers (with
    /// `sync`, only once the snapshot is on disk).
    pub fn write_snapshot(&mut self, snap: &Snapshot, sync: bool) -> Result<()> {
        let bytes = serde_json::to_vec(snap).map_err(std::io::Error::other)?;
        ferry_util::fs::write_atomic(&self.dir.join("cursor.json"), &bytes, sync)?;
        self.journal.set_len(0)?;
        self.journal_len = 0;
        Ok(())
    }
}
