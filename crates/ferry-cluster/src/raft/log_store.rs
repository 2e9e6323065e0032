//! The Raft log on a ferry-log [`Log`]: each entry is one record (the
//! entry as JSON) in a batch of its own. Raft indexes and log offsets
//! usually differ by a constant, but not always (a log emptied by a purge
//! past its end, when a follower installs a snapshot, goes on at the next
//! index from its old end offset; openraft's storage suite even appends
//! with gaps), so an in-memory map from index to offset, rebuilt at open,
//! finds entries. It holds the entries since the last snapshot purge, a
//! few thousand at most.
//!
//! Appends reach the page cache at once and call openraft back once a
//! flusher thread has fsynced them. The vote, the committed log id and the
//! last purged log id live in `vote.json` ([`StateFile`]).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ferry_log::{CleanupPolicy, EngineConfig, FlushPolicy, Log, LogConfig, LogManager};
use ferry_records::batch;
use ferry_records::compression::{Compression, MAX_DECOMPRESSED};
use ferry_records::records::{NewRecord, build_batch, parse_records, records_payload};
use ferry_util::sync::lock;
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, LogState, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};

use super::TypeConfig;
use super::state_file::{RaftState, StateFile};
use crate::error::ClusterError;

/// Largest entry accepted (a bootstrap importing many topics is one entry).
const MAX_ENTRY_BYTES: usize = 64 << 20;

type StorageResult<T> = Result<T, StorageError<u64>>;

/// The Raft log store. Cheap to clone: clones share the log (a clone is
/// also the log reader openraft asks for).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Keeps the log's flusher and checkpointer threads; dropped with the
    /// last clone of the store, which flushes and closes the log.
    _manager: LogManager,
    log: Arc<Log>,
    file: StateFile,
    state: Mutex<Cached>,
    committed_index: Arc<AtomicU64>,
}

struct Cached {
    raft: RaftState,
    /// Log offset of every entry in the log, by Raft index.
    offsets: BTreeMap<u64, u64>,
    last_log_id: Option<LogId<u64>>,
}

impl LogStore {
    /// Opens (or creates) the log in `dir` and the state in `state_path`.
    /// Blocking.
    pub fn open(dir: &Path, state_path: &Path) -> Result<LogStore, ClusterError> {
        let storage = |e: &dyn std::fmt::Display| ClusterError::Storage(format!("{}: {e}", dir.display()));
        let manager = LogManager::new(EngineConfig::default());
        let config = LogConfig {
            // Small segments, so a purge after a snapshot frees space.
            segment_bytes: 1 << 20,
            max_message_bytes: MAX_ENTRY_BYTES,
            retention_ms: None,
            retention_bytes: None,
            cleanup_policy: CleanupPolicy { delete: false, compact: false },
            // fsync on demand: every append asks for its own (see `append`).
            flush: FlushPolicy::Os,
            ..LogConfig::default()
        };
        let log = manager.open(dir, config).map_err(|e| storage(&e))?;
        let file = StateFile::new(state_path);
        let raft = file.load()?;
        let (start, end) = (log.log_start_offset(), log.next_offset());
        let mut offsets = BTreeMap::new();
        let mut last_log_id = raft.last_purged;
        let mut offset = start;
        while offset < end {
            let upto = end.min(offset + 1024);
            for (entry_offset, entry) in read_range(&log, offset, upto).map_err(|e| storage(&e))? {
                if raft.last_purged.is_some_and(|p| entry.log_id.index <= p.index) {
                    // Purged, but the crash came before the log was cut.
                    continue;
                }
                offsets.insert(entry.log_id.index, entry_offset);
                last_log_id = Some(entry.log_id);
            }
            offset = upto;
        }
        let committed_index = Arc::new(AtomicU64::new(raft.committed.map_or(0, |c| c.index)));
        let state = Mutex::new(Cached { raft, offsets, last_log_id });
        Ok(LogStore { inner: Arc::new(Inner { _manager: manager, log, file, state, committed_index }) })
    }

    /// The last committed log index this store was told of (0: none), for status.
    pub fn committed_index(&self) -> Arc<AtomicU64> {
        self.inner.committed_index.clone()
    }

    /// Writes the state file on a blocking thread.
    async fn store_state(&self, state: RaftState, err: fn(AnyError) -> StorageIOError<u64>) -> StorageResult<()> {
        let file = self.inner.file.clone();
        let result = tokio::task::spawn_blocking(move || file.store(&state)).await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(err(AnyError::new(&e)).into()),
            Err(e) => Err(err(AnyError::new(&e)).into()),
        }
    }

    /// Runs a blocking log operation off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Arc<Log>) -> Result<T, ferry_log::LogError> + Send + 'static,
    ) -> StorageResult<T> {
        let log = self.inner.log.clone();
        match tokio::task::spawn_blocking(move || f(&log)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StorageIOError::write_logs(AnyError::new(&e)).into()),
            Err(e) => Err(StorageIOError::write_logs(AnyError::new(&e)).into()),
        }
    }
}

/// The entries at offsets `from..to` that the log holds, with their
/// offsets. A purge or truncation racing the read shortens the answer
/// rather than failing it (the caller keeps only what its map names).
fn read_range(log: &Log, from: u64, to: u64) -> Result<Vec<(u64, Entry<TypeConfig>)>, String> {
    let mut out = Vec::new();
    let mut offset = from;
    while offset < to.min(log.high_watermark()) {
        offset = offset.max(log.log_start_offset());
        let bytes = match log.read_bytes(offset, 1 << 20) {
            Ok(bytes) => bytes,
            // The log's bounds moved under the read: take them again.
            Err(ferry_log::LogError::OffsetOutOfRange { start, end, .. }) if offset < start || offset > end => continue,
            Err(e) => return Err(e.to_string()),
        };
        if bytes.is_empty() {
            break;
        }
        for (header, raw) in batch::split(&bytes).map_err(|e| e.to_string())? {
            if header.base_offset >= to {
                return Ok(out);
            }
            if header.base_offset >= offset {
                let payload = records_payload(raw, MAX_DECOMPRESSED).map_err(|e| e.to_string())?;
                for record in parse_records(&payload, header.records_count as usize).map_err(|e| e.to_string())? {
                    let value = record.value.ok_or("a raft log record without a value")?;
                    let entry = serde_json::from_slice(value).map_err(|e| format!("offset {offset}: {e}"))?;
                    out.push((header.base_offset, entry));
                }
            }
            offset = header.next_offset();
        }
    }
    Ok(out)
}

/// One entry as one batch of one record.
fn encode(entry: &Entry<TypeConfig>) -> Result<Vec<u8>, String> {
    let value = serde_json::to_vec(entry).map_err(|e| e.to_string())?;
    let record =
        NewRecord { key: None, value: Some(&value), headers: Vec::new(), timestamp: ferry_util::time::now_ms() };
    build_batch(&[record], Compression::None, -1, -1, -1).map_err(|e| e.to_string())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let from = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        let wanted: Vec<(u64, u64)> = {
            let st = lock(&self.inner.state);
            st.offsets.range(from..to).map(|(&i, &o)| (i, o)).collect()
        };
        let (Some(&(_, first)), Some(&(_, last))) = (wanted.first(), wanted.last()) else { return Ok(Vec::new()) };
        let entries = read_range(&self.inner.log, first, last + 1)
            .map_err(|e| StorageError::from(StorageIOError::read_logs(AnyError::error(e))))?;
        // Keep what the map names: a truncation or purge may have raced the read.
        let mut out = Vec::with_capacity(wanted.len());
        let mut want = wanted.iter().peekable();
        for (offset, entry) in entries {
            while want.next_if(|(_, o)| *o < offset).is_some() {}
            if want.next_if(|(i, o)| *o == offset && *i == entry.log_id.index).is_some() {
                out.push(entry);
            }
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let st = lock(&self.inner.state);
        let last_purged_log_id = st.raft.last_purged;
        Ok(LogState { last_purged_log_id, last_log_id: st.last_log_id.max(last_purged_log_id) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> StorageResult<()> {
        let state = {
            let mut st = lock(&self.inner.state);
            st.raft.vote = Some(*vote);
            st.raft.clone()
        };
        self.store_state(state, StorageIOError::write_vote).await
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<u64>>> {
        Ok(lock(&self.inner.state).raft.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> StorageResult<()> {
        let state = {
            let mut st = lock(&self.inner.state);
            st.raft.committed = committed;
            st.raft.clone()
        };
        self.store_state(state, StorageIOError::write).await?;
        self.inner.committed_index.store(committed.map_or(0, |c| c.index), Ordering::Release);
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<u64>>> {
        Ok(lock(&self.inner.state).raft.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let write_err = |e: String| -> StorageError<u64> { StorageIOError::write_logs(AnyError::error(e)).into() };
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let mut bytes = Vec::new();
        for entry in &entries {
            bytes.extend_from_slice(&encode(entry).map_err(write_err)?);
        }
        let log = &self.inner.log;
        let info = {
            let mut st = lock(&self.inner.state);
            if let Some(last) = st.last_log_id.filter(|l| l.index >= first.log_id.index) {
                return Err(write_err(format!("entry {} does not follow {last}", first.log_id)));
            }
            let info = log.append(&bytes).map_err(|e| write_err(e.to_string()))?;
            for (i, entry) in entries.iter().enumerate() {
                st.offsets.insert(entry.log_id.index, info.base_offset + i as u64);
            }
            st.last_log_id = Some(last.log_id);
            info
        };
        log.on_durable(info.last_offset + 1, move |r| {
            callback.log_io_completed(r.map_err(io::Error::other));
        });
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        let Some(offset) = lock(&self.inner.state).offsets.range(log_id.index..).next().map(|(_, &o)| o) else {
            return Ok(());
        };
        self.blocking(move |log| log.truncate_to(offset)).await?;
        let mut st = lock(&self.inner.state);
        st.offsets.split_off(&log_id.index);
        let last = match st.offsets.last_key_value() {
            Some((_, &o)) => read_range(&self.inner.log, o, o + 1)
                .map_err(|e| StorageIOError::read_logs(AnyError::error(e)))?
                .pop()
                .map(|(_, e)| e.log_id),
            None => None,
        };
        st.last_log_id = last.or(st.raft.last_purged);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        // The purge point is recorded first: entries a crash leaves behind
        // it are skipped at open.
        let state = {
            let mut st = lock(&self.inner.state);
            if st.raft.last_purged >= Some(log_id) {
                return Ok(());
            }
            st.raft.last_purged = Some(log_id);
            st.raft.clone()
        };
        self.store_state(state, StorageIOError::write_logs).await?;
        let before = {
            let mut st = lock(&self.inner.state);
            st.offsets = st.offsets.split_off(&(log_id.index + 1));
            if st.last_log_id < Some(log_id) {
                st.last_log_id = Some(log_id);
            }
            st.offsets.first_key_value().map_or_else(|| self.inner.log.next_offset(), |(_, &o)| o)
        };
        self.blocking(move |log| log.delete_records_before(before)).await?;
        Ok(())
    }
}
