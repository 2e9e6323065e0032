//! The state machine: the [`MetadataImage`] built by applying the log, and
//! its snapshots. Every new image is handed to the broker (on a blocking
//! thread: it may create directories) before it is published to this
//! node's watchers, so whoever sees index N applied also finds the broker
//! at N.
//!
//! A snapshot is `<data>/cluster/snapshot.json`: the image with the last
//! log id and membership it reflects, written with `write_atomic`. Sent to
//! a follower, the same bytes are installed there.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ferry_broker::metadata::{MetadataError, MetadataImage};
use ferry_util::sync::lock;
use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::TypeConfig;
use crate::error::ClusterError;

type StorageResult<T> = Result<T, StorageError<u64>>;

/// Receives every new image (called on a blocking thread).
pub type ImageSink = Arc<dyn Fn(Arc<MetadataImage>) + Send + Sync>;

/// What a snapshot holds, as JSON.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    last_log_id: Option<LogId<u64>>,
    last_membership: StoredMembership<u64, BasicNode>,
    snapshot_id: String,
    image: MetadataImage,
}

impl SnapshotFile {
    fn meta(&self) -> SnapshotMeta<u64, BasicNode> {
        SnapshotMeta {
            last_log_id: self.last_log_id,
            last_membership: self.last_membership.clone(),
            snapshot_id: self.snapshot_id.clone(),
        }
    }
}

/// The latest snapshot (meta and bytes), as on disk; shared with the
/// snapshot builder, which runs apart from the state machine.
type Current = Arc<Mutex<Option<(SnapshotMeta<u64, BasicNode>, Arc<Vec<u8>>)>>>;

/// Writes `bytes` as the snapshot file and makes it the current snapshot,
/// unless a newer one is there already (a build racing an install).
/// Blocking.
fn store_snapshot(
    path: &Path,
    current: &Current,
    meta: SnapshotMeta<u64, BasicNode>,
    bytes: Arc<Vec<u8>>,
) -> std::io::Result<bool> {
    let mut slot = lock(current);
    if slot.as_ref().is_some_and(|(m, _)| m.last_log_id > meta.last_log_id) {
        return Ok(false);
    }
    ferry_util::fs::write_atomic(path, &bytes, true)?;
    *slot = Some((meta, bytes));
    Ok(true)
}

/// The metadata state machine of one node.
pub struct StateMachine {
    path: PathBuf,
    image: Arc<MetadataImage>,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    current: Current,
    sink: ImageSink,
    published: watch::Sender<Arc<MetadataImage>>,
}

impl StateMachine {
    /// Opens the state machine whose snapshot is `path` (loading it if
    /// present) and hands its image to `sink`. Returns the watch every new
    /// image is published on. Blocking.
    pub fn open(
        path: &Path,
        sink: ImageSink,
    ) -> Result<(StateMachine, watch::Receiver<Arc<MetadataImage>>), ClusterError> {
        let mut sm = StateMachine {
            path: path.to_path_buf(),
            image: Arc::new(MetadataImage::default()),
            last_applied: None,
            membership: StoredMembership::default(),
            current: Arc::new(Mutex::new(None)),
            sink,
            published: watch::Sender::new(Arc::new(MetadataImage::default())),
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                let file: SnapshotFile = serde_json::from_slice(&bytes)
                    .map_err(|e| ClusterError::Storage(format!("{}: {e}", path.display())))?;
                *lock(&sm.current) = Some((file.meta(), Arc::new(bytes)));
                sm.last_applied = file.last_log_id;
                sm.membership = file.last_membership;
                sm.image = Arc::new(file.image);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        (sm.sink)(sm.image.clone());
        sm.published.send_replace(sm.image.clone());
        let rx = sm.published.subscribe();
        Ok((sm, rx))
    }

    /// Hands `image` to the broker, then to this node's watchers.
    async fn publish(&mut self, image: MetadataImage) -> StorageResult<()> {
        let image = Arc::new(image);
        self.image = image.clone();
        let sink = self.sink.clone();
        let handed = image.clone();
        tokio::task::spawn_blocking(move || sink(handed))
            .await
            .map_err(|e| StorageIOError::write_state_machine(AnyError::new(&e)))?;
        self.published.send_replace(image);
        Ok(())
    }
}

/// Builds a snapshot of the state as it was when the builder was made.
pub struct SnapshotBuilder {
    path: PathBuf,
    current: Current,
    file: SnapshotFile,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let meta = self.file.meta();
        let bytes = serde_json::to_vec(&self.file)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), AnyError::new(&e)))?;
        let (path, current) = (self.path.clone(), self.current.clone());
        let (stored_meta, written) = (meta.clone(), Arc::new(bytes.clone()));
        tokio::task::spawn_blocking(move || store_snapshot(&path, &current, stored_meta, written))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), AnyError::new(&e)))?
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), AnyError::new(&e)))?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>)> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Result<(), MetadataError>>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut image = (*self.image).clone();
        let mut replies = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            let reply = match entry.payload {
                EntryPayload::Normal(records) => image.apply_batch(index, &records),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    image.applied_index = index;
                    Ok(())
                }
                EntryPayload::Blank => {
                    image.applied_index = index;
                    Ok(())
                }
            };
            if let Err(e) = &reply {
                tracing::debug!(index, error = %e, "metadata entry refused by the image");
            }
            self.last_applied = Some(entry.log_id);
            replies.push(reply);
        }
        if !replies.is_empty() {
            self.publish(image).await?;
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let id = self.last_applied.map_or_else(|| "0-0".to_string(), |l| format!("{}-{}", l.leader_id.term, l.index));
        SnapshotBuilder {
            path: self.path.clone(),
            current: self.current.clone(),
            file: SnapshotFile {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
                snapshot_id: format!("{id}-{}", uuid::Uuid::new_v4().simple()),
                image: (*self.image).clone(),
            },
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let err = |e: &dyn std::error::Error| StorageIOError::read_snapshot(Some(meta.signature()), AnyError::error(e));
        let bytes = snapshot.into_inner();
        let file: SnapshotFile = serde_json::from_slice(&bytes).map_err(|e| err(&e))?;
        let (path, current, stored_meta) = (self.path.clone(), self.current.clone(), meta.clone());
        let bytes = Arc::new(bytes);
        tokio::task::spawn_blocking(move || store_snapshot(&path, &current, stored_meta, bytes))
            .await
            .map_err(|e| err(&e))?
            .map_err(|e| err(&e))?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        let mut image = file.image;
        image.applied_index = meta.last_log_id.map_or(0, |l| l.index);
        self.publish(image).await
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        Ok(lock(&self.current).as_ref().map(|(meta, bytes)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(bytes.as_ref().clone())),
        }))
    }
}
