//! Streams: a stream is a Ferry topic with one partition (created by the
//! first XADD; of an existing topic with more, partition 0 is the
//! stream), so Kafka clients read it as a topic and XREAD reads what Kafka
//! producers wrote ([`log`] says how records and entries map).
//!
//! A consumer group is one of the broker's group cursors over the
//! partition ([`ferry_broker::queue::group_cursor`]: the acknowledgement
//! cursor AMQP queues use, with per-entry acks and deliveries out),
//! stored under `<data>/internal/redis-groups/`.
//!
//! Beside the log, each stream has the ids XDEL removed from the middle of
//! the log (an append-only log cannot drop them; reads skip them), in
//! `<data>/redis-streams/<stream>.json`, rewritten (fsynced) at most every
//! [`SAVE_INTERVAL`] when it changed, and at shutdown.

pub mod appender;
pub mod id;
pub mod log;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ferry_broker::queue::{GroupCursor, GroupCursorStore};
use ferry_broker::{Broker, BrokerError, Partition};
use serde::{Deserialize, Serialize};

use self::appender::Appender;
use self::id::StreamId;

/// How often changed stream state is written.
pub const SAVE_INTERVAL: Duration = Duration::from_millis(200);

/// A stream's state beside its log.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// Ids removed by XDEL and still in the log.
    pub deleted: BTreeSet<StreamId>,
    /// The largest id XDEL or a trim removed.
    pub max_deleted: StreamId,
    /// The id of the last entry, once looked up (not saved: the log has it).
    #[serde(skip)]
    pub last_id: Option<StreamId>,
    /// The offset after the entry `last_id` is known for: a log that
    /// reaches past it had records appended by another protocol.
    #[serde(skip)]
    pub last_end: u64,
}

/// One stream's state, locked per command.
pub struct Stream {
    /// The stream's key (its topic's name).
    pub name: String,
    state: Mutex<State>,
    dirty: AtomicBool,
    /// XADD's group commit, for the partition it was started on.
    appender: Mutex<Option<(Arc<Partition>, Arc<Appender>)>>,
}

impl Stream {
    /// Locks the state; the caller marks it changed with [`Stream::changed`].
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The state changed: the next periodic save writes it.
    pub fn changed(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    /// The appending task for partition `p` (a new one if the topic was
    /// created again since).
    pub fn appender(self: &Arc<Self>, p: &Arc<Partition>) -> Arc<Appender> {
        let mut slot = self.appender.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*slot {
            Some((on, a)) if Arc::ptr_eq(on, p) => a.clone(),
            _ => {
                let a = Arc::new(Appender::start(p.clone(), Arc::downgrade(self)));
                *slot = Some((p.clone(), a.clone()));
                a
            }
        }
    }
}

impl State {
    /// The last entry's id (0-0 for an empty stream): read from the log
    /// the first time and whenever another protocol appended since, never
    /// lower than before.
    pub fn last_id(&mut self, p: &Partition) -> Result<StreamId, BrokerError> {
        let end = p.last_stable_offset();
        if let Some(id) = self.last_id
            && end <= self.last_end
        {
            return Ok(id);
        }
        let read = log::last_entry(p)?.map_or(StreamId::MIN, |e| e.id);
        let id = read.max(self.last_id.unwrap_or(StreamId::MIN)).max(self.max_deleted);
        self.last_id = Some(id);
        self.last_end = self.last_end.max(end);
        Ok(id)
    }

    /// XADD gave out `id` (its entry is queued for appending).
    pub fn assigned(&mut self, id: StreamId) {
        self.last_id = Some(id);
    }

    /// XADD's entries are in the log up to `offset`: a log end past it
    /// means another protocol appended.
    pub fn appended(&mut self, offset: u64) {
        self.last_end = self.last_end.max(offset + 1);
    }

    /// Forgets XDEL'd ids below the log start (trimmed away for good).
    pub fn prune_deleted(&mut self, first_kept: Option<StreamId>) {
        match first_kept {
            Some(first) => self.deleted = self.deleted.split_off(&first),
            None => self.deleted.clear(),
        }
    }
}

/// Every stream this node has served since start.
pub struct Streams {
    dir: PathBuf,
    broker: Arc<Broker>,
    map: Mutex<HashMap<String, Arc<Stream>>>,
    /// One stream creation at a time (see [`Streams::partition_or_create`]).
    creating: tokio::sync::Mutex<()>,
    /// The consumer groups of every stream.
    pub groups: GroupCursorStore,
}

impl Streams {
    /// Opens the state directory and the group store.
    pub fn open(dir: PathBuf, broker: Arc<Broker>) -> Result<Arc<Streams>, BrokerError> {
        std::fs::create_dir_all(&dir)?;
        let groups = broker.group_cursor_store("redis-groups")?;
        Ok(Arc::new(Streams {
            dir,
            broker,
            map: Mutex::new(HashMap::new()),
            creating: tokio::sync::Mutex::new(()),
            groups,
        }))
    }

    fn topic_of(&self, p: &Partition) -> Result<Arc<ferry_broker::Topic>, BrokerError> {
        self.broker.topic(&p.topic).ok_or(BrokerError::UnknownTopicOrPartition)
    }

    /// Group `name` of the stream in `p`, if it exists.
    pub fn group(&self, p: &Partition, name: &str) -> Result<Option<Arc<GroupCursor>>, BrokerError> {
        self.groups.open(&*self.topic_of(p)?, p, name)
    }

    /// Creates group `name` reading from offset `from`; `None` if it exists.
    pub fn create_group(&self, p: &Partition, name: &str, from: u64) -> Result<Option<Arc<GroupCursor>>, BrokerError> {
        self.groups.create(&*self.topic_of(p)?, p, name, from)
    }

    /// Deletes group `name`; false if there was none.
    pub fn remove_group(&self, p: &Partition, name: &str) -> Result<bool, BrokerError> {
        self.groups.remove(&*self.topic_of(p)?, p, name)
    }

    /// The stream's groups, sorted by name.
    pub fn group_names(&self, p: &Partition) -> Result<Vec<String>, BrokerError> {
        self.groups.names(&*self.topic_of(p)?, p)
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Stream>>> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn path(&self, name: &str) -> PathBuf {
        // Topic names are [a-zA-Z0-9._-], never "." or "..": safe file names.
        self.dir.join(format!("{name}.json"))
    }

    /// The state of stream `name`, recovered from its file on first use.
    pub fn get(&self, name: &str) -> Arc<Stream> {
        let mut map = self.map();
        if let Some(s) = map.get(name) {
            return s.clone();
        }
        let state = match std::fs::read(self.path(name)) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(stream = name, error = %e, "unreadable redis stream state, starting empty");
                State::default()
            }),
            Err(_) => State::default(),
        };
        let s = Arc::new(Stream {
            name: name.to_string(),
            state: Mutex::new(state),
            dirty: AtomicBool::new(false),
            appender: Mutex::new(None),
        });
        map.insert(name.to_string(), s.clone());
        s
    }

    /// The stream's partition; `None` if its topic does not exist here, or
    /// not yet: the broker hosts a new topic before it opens its partition
    /// (a concurrent XADD creating the stream), and a stream's only
    /// partition is placed wherever its topic is hosted.
    pub fn partition(&self, name: &str) -> Result<Option<Arc<Partition>>, BrokerError> {
        Ok(self.broker.topic(name).and_then(|t| t.partition(0)))
    }

    /// The stream's partition, its topic created (one partition) if missing,
    /// once usable (see [`Streams::led`]). Creators take turns: the first
    /// drops the state an earlier stream of this name left (its file)
    /// before the topic exists, so no XADD can use the new topic with that
    /// state; the others then find the topic in the image (the creation
    /// returns once it is applied here) and only wait for it.
    pub async fn partition_or_create(&self, name: &str) -> Result<Arc<Partition>, BrokerError> {
        if self.partition(name)?.is_none() {
            ferry_broker::validate_topic_name(name)?;
            let _creating = self.creating.lock().await;
            if self.broker.metadata().topic(name).is_none() {
                self.forget(name);
                match self.broker.create_topic(name, Some(1), &BTreeMap::new(), false).await {
                    Ok(_) | Err(BrokerError::TopicExists(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        self.led(name).await
    }

    /// The stream's partition for a write, once this node leads it. A
    /// topic created an instant ago (by this connection or a concurrent
    /// XADD) is hosted here before this node takes up its leadership (the
    /// broker publishes the image last), so a write then would be refused:
    /// wait for the leadership, bounded (1 s was too short on a loaded
    /// 2-core machine). A partition the published image gives to another
    /// node (or to none) is returned at once: the write gets the broker's
    /// refusal.
    pub async fn led(&self, name: &str) -> Result<Arc<Partition>, BrokerError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let found = self.partition(name);
            if let Ok(Some(p)) = &found
                && p.leader_state().is_some()
            {
                return Ok(p.clone());
            }
            if self.led_elsewhere(name) || std::time::Instant::now() >= deadline {
                return found.and_then(|p| p.ok_or(BrokerError::NotLeaderOrFollower));
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Whether the published image gives the stream's partition to
    /// another node, or to none.
    fn led_elsewhere(&self, name: &str) -> bool {
        self.broker.metadata().partition(name, 0).is_some_and(|p| p.leader != self.broker.config().node_id)
    }

    /// Drops the stream's state and its groups (DEL, before its topic
    /// goes; or a new topic of the same name).
    pub fn forget(&self, name: &str) {
        if let Some(t) = self.broker.topic(name)
            && let Err(e) = self.groups.remove_topic(&t)
        {
            tracing::warn!(stream = name, error = %e, "deleting a stream's consumer groups failed");
        }
        self.map().remove(name);
        let _ = std::fs::remove_file(self.path(name));
    }

    /// Writes the stream's state now.
    pub fn save(&self, s: &Stream, sync: bool) -> std::io::Result<()> {
        s.dirty.store(false, Ordering::Release);
        let bytes = serde_json::to_vec(&*s.lock()).map_err(std::io::Error::other)?;
        let path = self.path(&s.name);
        let tmp = path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            if sync {
                f.sync_all()?;
            }
        }
        std::fs::rename(&tmp, &path)?;
        if sync {
            std::fs::File::open(&self.dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Writes every changed stream's state.
    pub fn save_all(&self, sync: bool) -> std::io::Result<()> {
        let streams: Vec<Arc<Stream>> = self.map().values().cloned().collect();
        for s in streams {
            if s.dirty.load(Ordering::Acquire) {
                self.save(&s, sync)?;
            }
        }
        Ok(())
    }

    /// Saves changed state every [`SAVE_INTERVAL`], fsynced, off the runtime's workers.
    pub async fn save_periodically(streams: Arc<Streams>) {
        loop {
            tokio::time::sleep(SAVE_INTERVAL).await;
            let s = streams.clone();
            match tokio::task::spawn_blocking(move || s.save_all(true)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "saving redis stream state failed"),
                Err(_) => return,
            }
        }
    }
}
