//! Consumer groups of a topic partition: each is an acknowledgement cursor
//! ([`CursorLog`], the one under AMQP queues) over the partition's own
//! log, so a group reads what every protocol appended without a copy.
//! Redis stream groups are these (docs/protocols.md, "## Redis").
//!
//! - Durable: where the group reads on and what it acknowledged (the
//!   cursor's snapshot and journal, in
//!   `<data>/internal/<store>/<topic id>-<partition>/<hex of the group
//!   name>/`). Acknowledgements are journaled as they come (a kill -9
//!   loses none); a thread fsyncs grown journals every 500 ms.
//! - In memory: the deliveries out (owner, last delivery time and count)
//!   and the group's members. After a restart the deliveries that were out
//!   are read again from the floor like new ones, counted as second
//!   deliveries where they may have gone out before (at least once).
//! - The cursor never deletes from the log: the topic's retention does,
//!   and other readers and groups share it ([`Trim::Never`]).
//!
//! A directory named by the topic's id, not its name, is never taken for
//! the groups of a later topic of the same name.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crate::broker::Broker;
use crate::error::Result;
use crate::partition::Partition;
use crate::queue::cursor::Outstanding;
use crate::queue::cursor_log::{CursorLog, Snapshots, Tracked, Trim};
use crate::queue::cursor_store::Snapshot;
use crate::topic::Topic;

/// How often the store's thread fsyncs grown journals and folds them.
const MAINTAIN_EVERY: Duration = Duration::from_millis(500);

type Registry = Mutex<HashMap<PathBuf, Arc<GroupCursor>>>;

/// The consumer groups of every partition, in one directory.
pub struct GroupCursorStore {
    dir: PathBuf,
    /// Groups in use, by directory (shared: one lock per group).
    open: Arc<Registry>,
}

/// A delivery out with a consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The front-end's key of the record (a Redis entry id), ascending
    /// with offsets.
    pub key: u128,
    /// The record's offset.
    pub offset: u64,
    /// The consumer it was last delivered to.
    pub consumer: String,
    /// Wall-clock ms of its last delivery.
    pub delivered_ms: u64,
    /// Deliveries so far.
    pub count: u32,
}

/// A member of a group, as last seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Member {
    /// Wall-clock ms of its last command.
    pub seen_ms: u64,
    /// Wall-clock ms of its last delivery or claim.
    pub active_ms: Option<u64>,
}

/// How a claim rewrites a delivery.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClaimOpts {
    /// The delivery time to record instead of now.
    pub delivered_ms: Option<u64>,
    /// The delivery count to record.
    pub count: Option<u32>,
    /// Leave the delivery count as it is (otherwise a claim is a delivery).
    pub keep_count: bool,
}

#[derive(Clone, Debug)]
struct Owner {
    offset: u64,
    consumer: String,
    delivered_ms: u64,
}

/// What a group keeps in memory beside its cursor.
#[derive(Default)]
struct InFlight {
    /// Deliveries out, by the front-end's key (so a client's ids find them
    /// without a log search); their counts are the cursor's.
    owners: BTreeMap<u128, Owner>,
    members: BTreeMap<String, Member>,
    /// First deliveries since open.
    delivered: u64,
}

/// One consumer group of one partition.
pub struct GroupCursor {
    name: String,
    cursor: CursorLog<InFlight>,
    /// Deleted: the maintenance thread leaves it alone.
    removed: AtomicBool,
}

impl Broker {
    /// The group cursor store `<data>/internal/<name>`.
    pub fn group_cursor_store(&self, name: &str) -> Result<GroupCursorStore> {
        let dir = self.config().data_dir.join("internal").join(name);
        std::fs::create_dir_all(&dir)?;
        let open: Arc<Registry> = Arc::default();
        let weak = Arc::downgrade(&open);
        std::thread::Builder::new().name("ferry-group-cursors".into()).spawn(move || maintain_loop(&weak))?;
        Ok(GroupCursorStore { dir, open })
    }
}

fn maintain_loop(open: &Weak<Registry>) {
    loop {
        std::thread::sleep(MAINTAIN_EVERY);
        let Some(open) = open.upgrade() else { return };
        if let Err(e) = maintain_all(&open, false) {
            tracing::warn!(error = %e, "group cursor maintenance failed");
        }
    }
}

fn maintain_all(open: &Registry, sync: bool) -> Result<()> {
    let groups: Vec<Arc<GroupCursor>> =
        open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect();
    for g in groups {
        if !g.removed.load(Ordering::Acquire) {
            g.cursor.maintain(sync)?;
        }
    }
    Ok(())
}

/// A group name as a directory name: its bytes in hex (any name is safe).
fn dir_name(group: &str) -> String {
    group.bytes().map(|b| format!("{b:02x}")).collect()
}

fn group_name(dir: &str) -> Option<String> {
    if !dir.len().is_multiple_of(2) || !dir.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..dir.len()).step_by(2).map(|i| u8::from_str_radix(&dir[i..i + 2], 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

impl GroupCursorStore {
    fn registry(&self) -> MutexGuard<'_, HashMap<PathBuf, Arc<GroupCursor>>> {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn partition_dir(&self, topic: &Topic, p: &Partition) -> PathBuf {
        self.dir.join(format!("{}-{}", topic.id, p.index))
    }

    fn open_at(&self, dir: &Path, group: &str, p: &Partition) -> Result<Arc<GroupCursor>> {
        let cursor = CursorLog::open(dir, p.log().clone(), Snapshots::Synced, Trim::Never, InFlight::default())?;
        Ok(Arc::new(GroupCursor { name: group.to_string(), cursor, removed: AtomicBool::new(false) }))
    }

    /// Creates group `group` of `p` reading from offset `from`; `None` if
    /// it exists. On disk (fsynced) when this returns.
    pub fn create(&self, topic: &Topic, p: &Partition, group: &str, from: u64) -> Result<Option<Arc<GroupCursor>>> {
        let parent = self.partition_dir(topic, p);
        let dir = parent.join(dir_name(group));
        let mut open = self.registry();
        if open.contains_key(&dir) || dir.exists() {
            return Ok(None);
        }
        // Built aside and renamed in: a crash leaves a whole group or none.
        std::fs::create_dir_all(&parent)?;
        let tmp = parent.join(format!(".new-{}", dir_name(group)));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        let snap = Snapshot { floor: from, ..Snapshot::default() };
        let bytes = serde_json::to_vec(&snap).map_err(std::io::Error::other)?;
        ferry_util::fs::write_atomic(&tmp.join("cursor.json"), &bytes, true)?;
        std::fs::rename(&tmp, &dir)?;
        std::fs::File::open(&parent)?.sync_all()?;
        let g = self.open_at(&dir, group, p)?;
        open.insert(dir, g.clone());
        Ok(Some(g))
    }

    /// Group `group` of `p`; `None` if there is none.
    pub fn open(&self, topic: &Topic, p: &Partition, group: &str) -> Result<Option<Arc<GroupCursor>>> {
        let dir = self.partition_dir(topic, p).join(dir_name(group));
        let mut open = self.registry();
        if let Some(g) = open.get(&dir) {
            return Ok(Some(g.clone()));
        }
        if !dir.join("cursor.json").exists() {
            return Ok(None);
        }
        let g = self.open_at(&dir, group, p)?;
        open.insert(dir, g.clone());
        Ok(Some(g))
    }

    /// Deletes group `group` of `p`; false if there was none.
    pub fn remove(&self, topic: &Topic, p: &Partition, group: &str) -> Result<bool> {
        let dir = self.partition_dir(topic, p).join(dir_name(group));
        let mut open = self.registry();
        if let Some(g) = open.remove(&dir) {
            g.removed.store(true, Ordering::Release);
        }
        if !dir.exists() {
            return Ok(false);
        }
        remove_dir(&dir)?;
        Ok(true)
    }

    /// Deletes every group of every partition of `topic` (the topic goes).
    pub fn remove_topic(&self, topic: &Topic) -> Result<()> {
        let prefix = format!("{}-", topic.id);
        let mut open = self.registry();
        open.retain(|dir, g| {
            let ours =
                dir.parent().and_then(|d| d.file_name()).is_some_and(|n| n.to_string_lossy().starts_with(&prefix));
            if ours {
                g.removed.store(true, Ordering::Release);
            }
            !ours
        });
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                remove_dir(&entry.path())?;
            }
        }
        Ok(())
    }

    /// The names of the groups of `p`, sorted.
    pub fn names(&self, topic: &Topic, p: &Partition) -> Result<Vec<String>> {
        let dir = self.partition_dir(topic, p);
        let mut names = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
            Err(e) => return Err(e.into()),
        };
        for entry in entries {
            let file = entry?.file_name();
            if let Some(name) = group_name(&file.to_string_lossy()) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Persists every open group, fsynced (shutdown, tests).
    pub fn flush(&self) -> Result<()> {
        maintain_all(&self.open, true)
    }
}

/// Renames `dir` aside, then deletes it: a crash leaves no half group.
fn remove_dir(dir: &Path) -> Result<()> {
    let Some(name) = dir.file_name() else { return Ok(()) };
    let trash = dir.with_file_name(format!(".trash-{}", name.to_string_lossy()));
    std::fs::rename(dir, &trash)?;
    std::fs::remove_dir_all(&trash)?;
    Ok(())
}

impl GroupCursor {
    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Locks the group for one command's reads and changes.
    pub fn lock(&self) -> GroupState<'_> {
        let mut t = self.cursor.lock();
        // Records the topic's retention removed are nobody's any more.
        t.cursor.skip_to(self.cursor.log().log_start_offset());
        GroupState { t }
    }
}

/// A locked group (see [`GroupCursor::lock`]).
pub struct GroupState<'a> {
    t: MutexGuard<'a, Tracked<InFlight>>,
}

impl GroupState<'_> {
    /// Where reads of new records go on: the first offset never delivered.
    pub fn next(&self) -> u64 {
        self.t.cursor.next()
    }

    /// Every offset below this is acknowledged.
    pub fn floor(&self) -> u64 {
        self.t.cursor.floor()
    }

    /// Whether a read of new records passes over `offset`: acknowledged,
    /// or out with a consumer already.
    pub fn passes_over(&self, offset: u64) -> bool {
        self.t.cursor.is_acked(offset) || self.t.cursor.outstanding(offset).is_some()
    }

    /// Notes that `consumer` issued a command at `now`; true if it is new.
    pub fn touch(&mut self, consumer: &str, now: u64) -> bool {
        if let Some(m) = self.t.extra.members.get_mut(consumer) {
            m.seen_ms = now;
            return false;
        }
        self.t.extra.members.insert(consumer.to_string(), Member { seen_ms: now, active_ms: None });
        true
    }

    fn active(&mut self, consumer: &str, now: u64) {
        if let Some(m) = self.t.extra.members.get_mut(consumer) {
            m.active_ms = Some(now);
        }
    }

    fn give(&mut self, key: u128, offset: u64, consumer: &str, now: u64, count: u32) {
        self.t.cursor.deliver(offset, Outstanding { count, size: 0 });
        self.t.extra.owners.insert(key, Owner { offset, consumer: consumer.to_string(), delivered_ms: now });
    }

    /// The new records `(offset, key)` (ascending, from
    /// [`GroupState::next`] on) went to `consumer`; with `noack` they
    /// count as acknowledged.
    pub fn deliver_new(&mut self, consumer: &str, records: &[(u64, u128)], now: u64, noack: bool) -> Result<()> {
        let Some(&(last, _)) = records.last() else { return Ok(()) };
        self.active(consumer, now);
        self.t.cursor.taken_through(last);
        self.t.extra.delivered += records.len() as u64;
        if noack {
            let offsets: Vec<u64> = records.iter().map(|r| r.0).collect();
            return self.t.ack(&offsets);
        }
        for &(offset, key) in records {
            let before = self.t.cursor.maybe_delivered_before(offset);
            self.t.note_delivered(offset)?;
            self.give(key, offset, consumer, now, if before { 2 } else { 1 });
        }
        Ok(())
    }

    /// Deliveries handed back (their consumer was removed), lowest first,
    /// at most `max`, with their counts so far, taken off the handed-back
    /// set: give each to [`GroupState::redeliver`] or
    /// [`GroupState::ack_unread`].
    pub fn take_requeued(&mut self, max: usize) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some((o, d)) = self.t.cursor.pop_requeued() else { break };
            out.push((o, d.count));
        }
        out
    }

    /// A handed-back record, whose last count was `count`, went to
    /// `consumer` again.
    pub fn redeliver(&mut self, consumer: &str, offset: u64, key: u128, count: u32, now: u64) {
        self.active(consumer, now);
        self.give(key, offset, consumer, now, count.saturating_add(1));
    }

    /// Acknowledges the deliveries out among `keys` (journaled); returns
    /// how many there were.
    pub fn ack(&mut self, keys: &[u128]) -> Result<usize> {
        let offsets: Vec<u64> = keys.iter().filter_map(|k| self.t.extra.owners.remove(k)).map(|o| o.offset).collect();
        self.t.settle(&offsets)
    }

    /// Acknowledges the record at `offset` (key `key`) whether or not it
    /// was delivered: no consumer is to get it (gone from the stream).
    pub fn ack_unread(&mut self, offset: u64, key: u128) -> Result<()> {
        self.t.extra.owners.remove(&key);
        self.t.cursor.settle(&[offset]);
        self.t.cursor.forget_requeued(offset);
        self.t.ack(&[offset])
    }

    fn delivery(&self, key: u128, owner: &Owner) -> Delivery {
        Delivery {
            key,
            offset: owner.offset,
            consumer: owner.consumer.clone(),
            delivered_ms: owner.delivered_ms,
            count: self.t.cursor.outstanding(owner.offset).map_or(0, |o| o.count),
        }
    }

    /// Deliveries out with keys in `[from, to]`, ascending.
    pub fn pending(&self, from: u128, to: u128) -> impl Iterator<Item = Delivery> + '_ {
        // BTreeMap::range refuses a reversed range: an empty one instead.
        let end = to.max(from);
        self.t.extra.owners.range(from..=end).filter(move |(k, _)| **k <= to).map(|(&k, owner)| self.delivery(k, owner))
    }

    /// The delivery of key `key` if it is out.
    pub fn pending_at(&self, key: u128) -> Option<Delivery> {
        self.t.extra.owners.get(&key).map(|owner| self.delivery(key, owner))
    }

    /// Deliveries out, in all.
    pub fn pending_len(&self) -> usize {
        self.t.extra.owners.len()
    }

    /// Deliveries out per consumer.
    pub fn pending_counts(&self) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for owner in self.t.extra.owners.values() {
            *counts.entry(owner.consumer.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// The members, by name.
    pub fn members(&self) -> &BTreeMap<String, Member> {
        &self.t.extra.members
    }

    /// First deliveries since the group was opened (this process).
    pub fn delivered(&self) -> u64 {
        self.t.extra.delivered
    }

    /// Gives the delivery of key `key` to `consumer` if it has been out at
    /// least `min_idle` ms at `now`; returns it as it now is.
    pub fn claim(&mut self, key: u128, consumer: &str, min_idle: u64, now: u64, opts: ClaimOpts) -> Option<Delivery> {
        let owner = self.t.extra.owners.get(&key)?;
        if now.saturating_sub(owner.delivered_ms) < min_idle {
            return None;
        }
        let offset = owner.offset;
        let out = self.t.cursor.outstanding(offset).unwrap_or_default();
        let count = match opts.count {
            Some(n) => n,
            None if opts.keep_count => out.count,
            None => out.count.saturating_add(1),
        };
        self.give(key, offset, consumer, opts.delivered_ms.unwrap_or(now), count);
        self.active(consumer, now);
        self.pending_at(key)
    }

    /// Makes the record at `offset`, neither acknowledged nor out, a
    /// delivery to `consumer` not yet counted (a forced claim); false if
    /// it is acknowledged or out already.
    pub fn force(&mut self, offset: u64, key: u128, consumer: &str, now: u64) -> bool {
        if self.passes_over(offset) {
            return false;
        }
        self.t.cursor.forget_requeued(offset);
        self.give(key, offset, consumer, now, 0);
        true
    }

    /// Removes member `name`, handing its deliveries back (delivered
    /// again first); returns how many it had.
    pub fn remove_member(&mut self, name: &str) -> usize {
        self.t.extra.members.remove(name);
        let mine: Vec<(u128, u64)> =
            self.t.extra.owners.iter().filter(|(_, ow)| ow.consumer == name).map(|(&k, ow)| (k, ow.offset)).collect();
        for (key, offset) in &mine {
            self.t.extra.owners.remove(key);
            self.t.cursor.requeue(*offset);
        }
        mine.len()
    }

    /// Moves the group to `offset`: nothing below counts as unread, nothing
    /// at or above as acknowledged; deliveries out stay out. Fsynced.
    pub fn reposition(&mut self, offset: u64) -> Result<()> {
        self.t.reposition(offset)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{Acks, BrokerConfig};

    async fn topic(dir: &Path) -> (Arc<Broker>, Arc<Topic>, Arc<Partition>) {
        let b = crate::testing::open(BrokerConfig { data_dir: dir.to_path_buf(), ..Default::default() }).unwrap();
        b.create_topic("s", Some(1), &BTreeMap::new(), false).await.unwrap();
        let t = b.topic("s").unwrap();
        let p = t.partition(0).unwrap();
        for i in 0..10u32 {
            let r = crate::stored::StoredRecord { value: Some(i.to_string().into_bytes()), ..Default::default() };
            let batch = crate::stored::encode_batch(&[r]).unwrap();
            p.append(&batch, Acks::All).unwrap().acknowledged().await.unwrap();
        }
        (b, t, p)
    }

    #[tokio::test]
    async fn groups_deliver_ack_claim_and_survive_a_kill() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (b, t, p) = topic(dir.path()).await;
            let store = b.group_cursor_store("groups").unwrap();
            let g = store.create(&t, &p, "g 1", 2).unwrap().unwrap();
            assert!(store.create(&t, &p, "g 1", 0).unwrap().is_none(), "exists");
            store.create(&t, &p, "other", 0).unwrap().unwrap();
            assert_eq!(store.names(&t, &p).unwrap(), ["g 1", "other"]);
            let mut s = g.lock();
            assert_eq!(s.next(), 2);
            assert!(s.touch("a", 100));
            // Keys are the front-end's: here ten times the offset.
            s.deliver_new("a", &[(2, 20), (3, 30), (4, 40)], 100, false).unwrap();
            s.deliver_new("a", &[(5, 50)], 100, true).unwrap();
            assert_eq!(s.next(), 6);
            assert!(s.passes_over(3) && s.passes_over(5) && !s.passes_over(6));
            assert_eq!(s.pending(0, u128::MAX).map(|d| d.offset).collect::<Vec<_>>(), [2, 3, 4]);
            assert_eq!(s.pending(30, 40).map(|d| d.key).collect::<Vec<_>>(), [30, 40]);
            assert_eq!(s.pending(40, 30).count(), 0);
            assert_eq!(s.ack(&[30, 90]).unwrap(), 1);
            // Claims need idle time and count deliveries.
            assert!(s.claim(20, "b", 500, 200, ClaimOpts::default()).is_none());
            let d = s.claim(20, "b", 500, 700, ClaimOpts::default()).unwrap();
            assert_eq!((d.consumer.as_str(), d.count, d.delivered_ms), ("b", 2, 700));
            let kept = ClaimOpts { keep_count: true, ..ClaimOpts::default() };
            assert_eq!(s.claim(40, "a", 0, 700, kept).unwrap().count, 1);
            assert_eq!(s.pending_counts(), BTreeMap::from([("a".to_string(), 1), ("b".to_string(), 1)]));
            // A removed member's deliveries come back first.
            assert_eq!(s.remove_member("b"), 1);
            assert_eq!(s.take_requeued(10), [(2, 2)]);
            s.redeliver("a", 2, 20, 2, 800);
            assert_eq!(s.pending_at(20).unwrap().count, 3);
            assert!(s.force(7, 70, "a", 900) && !s.force(7, 70, "a", 900) && !s.force(3, 30, "a", 900));
            s.ack_unread(8, 80).unwrap();
            assert!(s.passes_over(8));
            drop(s);
            // No shutdown: as after a kill -9, only the journal has the acks.
        }
        let (b, t, p) = {
            let b = crate::testing::open(BrokerConfig { data_dir: dir.path().to_path_buf(), ..Default::default() })
                .unwrap();
            let t = b.topic("s").unwrap();
            let p = t.partition(0).unwrap();
            (b, t, p)
        };
        let store = b.group_cursor_store("groups").unwrap();
        let g = store.open(&t, &p, "g 1").unwrap().unwrap();
        let mut s = g.lock();
        // Out before the crash: read again from the floor, 3 and 5 were acknowledged.
        assert_eq!((s.floor(), s.next(), s.pending_len()), (2, 2, 0));
        assert!(s.passes_over(3) && s.passes_over(5) && s.passes_over(8) && !s.passes_over(2) && !s.passes_over(4));
        s.deliver_new("a", &[(2, 20)], 1000, false).unwrap();
        assert_eq!(s.pending_at(20).unwrap().count, 2, "may have gone out before the restart");
        s.reposition(8).unwrap();
        assert_eq!((s.next(), s.floor()), (8, 8));
        drop(s);
        assert!(store.remove(&t, &p, "g 1").unwrap());
        assert!(store.open(&t, &p, "g 1").unwrap().is_none());
        assert_eq!(store.names(&t, &p).unwrap(), ["other"]);
        store.remove_topic(&t).unwrap();
        assert!(store.names(&t, &p).unwrap().is_empty());
        b.shutdown();
    }

    #[test]
    fn group_names_round_trip_through_directory_names() {
        for name in ["g", "a b/..", "ü"] {
            assert_eq!(group_name(&dir_name(name)).as_deref(), Some(name));
        }
        assert_eq!(group_name(".trash-00"), None);
        assert_eq!(group_name("0"), None);
    }
}
