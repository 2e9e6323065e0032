//! `<data>/cluster/vote.json`: what Raft must remember outside its log:
//! the vote, the last known committed log id and the last purged log id.
//! Rewritten whole with `write_atomic` (fsynced) on every change.

use std::path::{Path, PathBuf};

use openraft::{LogId, Vote};
use serde::{Deserialize, Serialize};

/// The persisted state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftState {
    /// The last vote cast or seen.
    pub vote: Option<Vote<u64>>,
    /// The last log id known committed.
    pub committed: Option<LogId<u64>>,
    /// Entries up to this one are gone from the log (in a snapshot).
    pub last_purged: Option<LogId<u64>>,
}

/// The file holding [`RaftState`].
#[derive(Clone, Debug)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The state file at `path`.
    pub fn new(path: &Path) -> StateFile {
        StateFile { path: path.to_path_buf() }
    }

    /// Reads the state; a missing file is the empty state.
    pub fn load(&self) -> std::io::Result<RaftState> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", self.path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RaftState::default()),
            Err(e) => Err(e),
        }
    }

    /// Replaces the state durably. Blocking: call from a blocking thread.
    pub fn store(&self, state: &RaftState) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(state).map_err(std::io::Error::other)?;
        ferry_util::fs::write_atomic(&self.path, &bytes, true)
    }
}
