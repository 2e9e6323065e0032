//! The MQTT broker state shared by every connection: sessions by client id,
//! the subscription index, retained messages, and routing a published
//! message to its subscribers (and to Kafka topics by bridge rules).
//!
//! Lock order: the session map, then a session, then the subscription tree.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ferry_broker::kv_store::KvStore;
use ferry_broker::metrics::ProtocolMetrics;
use ferry_broker::queue::{RecordQueue, RecordQueueStore};
use ferry_broker::stored::{Durable, StoredRecord};
use ferry_broker::{Appended, Broker, BrokerError};
use tokio::sync::oneshot;

use crate::config::MqttConfig;
use crate::message::{Message, now_ms};
use crate::metrics::{MqttGauges, MqttStats};
use crate::packet::{SubOptions, Version};
use crate::session::{Delivery, Online, Session, SessionRecord, SubRecord};
use crate::topic_tree::{self, TopicTree};

const SUBSCRIPTION_ID: &str = "mqtt.subscription_id";
/// A session whose connection took nothing from its queue for this long is
/// stalled (see [`Hub::drained`]).
const STALL: Duration = Duration::from_millis(100);
const DUP: &str = "mqtt.dup";

#[derive(Clone)]
struct SubEntry {
    opts: SubOptions,
    id: Option<u32>,
    /// Shared subscription group, and the full filter naming the group.
    share: Option<Arc<str>>,
}

/// Subscriptions keyed by (client id, filter as subscribed).
type SubscriptionIndex = TopicTree<(Arc<str>, Arc<str>), SubEntry>;

/// Something a publisher waits for before its acknowledgement.
pub enum Wait {
    Durable(Durable),
    Kafka(Appended),
}

impl Wait {
    pub async fn wait(self) -> Result<(), BrokerError> {
        match self {
            Wait::Durable(d) => d.wait().await,
            Wait::Kafka(a) => a.acknowledged().await.map(|_| ()),
        }
    }
}

/// What routing a message did.
pub struct Routed {
    /// Sessions it went to.
    pub matched: usize,
    /// What to wait for before acknowledging the publisher.
    pub waits: Vec<Wait>,
    /// Sessions (other than the publisher's) whose in-memory queue is past
    /// the high-water mark: the publisher's acknowledgement waits a little
    /// for them to drain ([`Hub::drained`]).
    pub congested: Vec<Arc<Session>>,
}

/// Splits `$share/group/filter` into (group, filter).
pub fn split_shared(filter: &str) -> Option<(&str, &str)> {
    filter.strip_prefix("$share/")?.split_once('/')
}

pub struct Hub {
    pub broker: Arc<Broker>,
    pub config: MqttConfig,
    sessions: Mutex<HashMap<Arc<str>, Arc<Session>>>,
    tree: RwLock<SubscriptionIndex>,
    shared_next: Mutex<HashMap<Arc<str>, usize>>,
    retained: Arc<KvStore>,
    store: Arc<KvStore>,
    /// QoS 2 packet ids received and not yet released, per persistent
    /// session (value: the ids, u16 big-endian), so a restart keeps
    /// exactly-once for exchanges half done.
    qos2: Arc<KvStore>,
    queues: RecordQueueStore,
    next_queue_id: AtomicU64,
    /// Messages received, sent and dropped (queue limit reached, or QoS 0
    /// for an offline session); sessions, subscriptions and retained
    /// messages are read off the hub when /metrics is scraped.
    pub stats: Arc<MqttStats>,
    /// Connections and packets, for /metrics.
    pub protocol: Arc<ProtocolMetrics>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    /// Opens the stores (`<data>/internal/mqtt/...`) and restores persistent
    /// sessions with their subscriptions.
    pub fn open(broker: Arc<Broker>, config: MqttConfig) -> Result<Arc<Hub>, BrokerError> {
        let retained = broker.kv_store("mqtt/retained")?;
        let store = broker.kv_store("mqtt/session-state")?;
        let qos2 = broker.kv_store("mqtt/qos2-received")?;
        let queues = broker.record_queue_store("mqtt/sessions")?;
        let stats = MqttStats::register(broker.metrics());
        let protocol = broker.metrics().register(ProtocolMetrics::new("mqtt", crate::packet::TYPE_NAMES, None));
        let hub = Hub {
            broker,
            config,
            sessions: Mutex::new(HashMap::new()),
            tree: RwLock::new(TopicTree::default()),
            shared_next: Mutex::new(HashMap::new()),
            retained,
            store,
            qos2,
            queues,
            next_queue_id: AtomicU64::new(1),
            stats,
            protocol,
        };
        let mut max_id = 0;
        let mut used = std::collections::HashSet::new();
        for (client_id, rec) in hub.store.select(|_, _| true) {
            let Some(record) = rec.value.as_deref().and_then(|v| serde_json::from_slice::<SessionRecord>(v).ok())
            else {
                continue;
            };
            max_id = max_id.max(record.queue_id);
            used.insert(record.queue_id);
            let client_id: Arc<str> = client_id.into();
            let session = Arc::new(Session::new(client_id.clone(), Version::V5, record.queue_id, record.expiry));
            {
                let mut st = session.lock();
                // The expiry countdown restarts with the broker.
                st.disconnected_at = Some(Instant::now());
                for sub in record.subscriptions {
                    hub.index(&client_id, &sub);
                    st.subscriptions.insert(sub.filter.as_str().into(), sub);
                }
            }
            lock(&hub.sessions).insert(client_id, session);
        }
        for (client_id, rec) in hub.qos2.select(|_, _| true) {
            let session = lock(&hub.sessions).get(client_id.as_str()).cloned();
            match session {
                Some(s) => {
                    let ids = rec.value.unwrap_or_default();
                    s.lock().incoming_qos2 = ids.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
                }
                None => drop(hub.qos2.put(&client_id, None)?),
            }
        }
        for id in hub.queues.ids()? {
            max_id = max_id.max(id);
            if !used.contains(&id) {
                hub.queues.remove(id)?;
            }
        }
        hub.next_queue_id.store(max_id + 1, Ordering::Relaxed);
        let hub = Arc::new(hub);
        let weak = Arc::downgrade(&hub);
        hub.stats.set_gauges(Box::new(move || weak.upgrade().map(|h| h.gauges()).unwrap_or_default()));
        Ok(hub)
    }

    /// Sessions by state, subscriptions and retained messages, for /metrics.
    fn gauges(&self) -> MqttGauges {
        let sessions: Vec<Arc<Session>> = lock(&self.sessions).values().cloned().collect();
        let mut g = MqttGauges { retained: self.retained.len() as u64, ..MqttGauges::default() };
        for s in sessions {
            let st = s.lock();
            if st.online.is_some() {
                g.sessions_connected += 1;
            } else {
                g.sessions_offline += 1;
            }
            g.subscriptions += st.subscriptions.len() as u64;
        }
        g
    }

    fn index(&self, client_id: &Arc<str>, sub: &SubRecord) {
        let full: Arc<str> = sub.filter.as_str().into();
        let (share, filter) = match split_shared(&sub.filter) {
            Some((group, filter)) => (Some(Arc::from(group)), filter),
            None => (None, sub.filter.as_str()),
        };
        let entry = SubEntry { opts: sub.options(), id: sub.id, share };
        self.tree.write().unwrap_or_else(|p| p.into_inner()).insert(filter, (client_id.clone(), full), entry);
    }

    fn unindex(&self, client_id: &Arc<str>, full: &str) {
        let filter = split_shared(full).map_or(full, |(_, f)| f);
        self.tree.write().unwrap_or_else(|p| p.into_inner()).remove(filter, &(client_id.clone(), full.into()));
    }

    /// Sessions known (online and offline).
    pub fn session_count(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Attaches a new connection to `client_id`'s session, taking it over
    /// from a connection that holds it. Returns the session, whether it
    /// existed, the connection's generation and its takeover signal.
    pub async fn attach(
        &self,
        client_id: &Arc<str>,
        clean_start: bool,
        expiry: u32,
        version: Version,
    ) -> Result<(Arc<Session>, bool, u64, oneshot::Receiver<u8>), BrokerError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let Some(old) = lock(&self.sessions).get(client_id).cloned() else { break };
            let kick = {
                let mut st = old.lock();
                match st.online.as_mut() {
                    Some(o) => Some(o.kick.take()),
                    None => None,
                }
            };
            let Some(kick) = kick else { break };
            if let Some(k) = kick {
                let _ = k.send(crate::packet::reason::SESSION_TAKEN_OVER);
            }
            tracing::debug!(client = %client_id, "waiting for the old connection to let go");
            if Instant::now() > deadline {
                // The old connection never let go: take the session anyway.
                old.lock().online = None;
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), old.detached.notified()).await;
        }
        let existing = lock(&self.sessions).get(client_id).cloned();
        if let Some(old) = &existing
            && clean_start
        {
            self.remove_session(old)?;
        }
        let (session, present) = match existing.filter(|_| !clean_start) {
            Some(s) => (s, true),
            None => {
                let id = self.next_queue_id.fetch_add(1, Ordering::Relaxed);
                let s = Arc::new(Session::new(client_id.clone(), version, id, expiry));
                lock(&self.sessions).insert(client_id.clone(), s.clone());
                (s, false)
            }
        };
        let (tx, rx) = oneshot::channel();
        let (generation, persist) = {
            let mut st = session.lock();
            st.generation += 1;
            st.online = Some(Online { generation: st.generation, kick: Some(tx) });
            st.disconnected_at = None;
            st.version = version;
            let changed = st.expiry != expiry;
            st.expiry = expiry;
            (st.generation, expiry > 0 && (changed || !present))
        };
        if persist {
            self.persist(&session)?.wait().await?;
        }
        Ok((session, present, generation, rx))
    }

    /// Detaches connection `generation`: a session with expiry 0 ends; a
    /// persistent one keeps its unacknowledged and pending QoS 1/2
    /// messages in its durable queue (`unacked` are the connection's
    /// in-flight messages that did not come from the queue).
    pub fn detach(&self, session: &Arc<Session>, generation: u64, unacked: Vec<Delivery>) {
        let end = {
            let mut st = session.lock();
            if st.online.as_ref().is_some_and(|o| o.generation == generation) {
                st.online = None;
                st.disconnected_at = Some(Instant::now());
            }
            let mut spill: Vec<Delivery> = unacked;
            spill.extend(st.pending.drain(..));
            if st.expiry == 0 {
                true
            } else {
                let records: Vec<StoredRecord> =
                    spill.iter().filter(|d| d.qos > 0 && d.queue_offset.is_none()).map(delivery_record).collect();
                if !records.is_empty() {
                    match self.queue_of(&mut st) {
                        Ok(q) => {
                            if let Err(e) = q.append(&records) {
                                tracing::warn!(client = %session.client_id, error = %e, "could not queue messages");
                            }
                        }
                        Err(e) => tracing::warn!(client = %session.client_id, error = %e, "could not open queue"),
                    }
                }
                false
            }
        };
        if end && let Err(e) = self.remove_session(session) {
            tracing::warn!(client = %session.client_id, error = %e, "could not remove session");
        }
        session.detached.notify_waiters();
    }

    /// The session's durable queue, opened on first use.
    pub fn queue_of(&self, st: &mut crate::session::SessionState) -> Result<Arc<RecordQueue>, BrokerError> {
        if let Some(q) = &st.queue {
            return Ok(q.clone());
        }
        let q = self.queues.open(st.queue_id)?;
        st.queue = Some(q.clone());
        Ok(q)
    }

    /// Ends a session: subscriptions, queue and persisted state go.
    fn remove_session(&self, session: &Arc<Session>) -> Result<(), BrokerError> {
        {
            let mut map = lock(&self.sessions);
            if map.get(&session.client_id).is_some_and(|s| Arc::ptr_eq(s, session)) {
                map.remove(&session.client_id);
            }
        }
        let (queue_id, had_queue) = {
            let mut st = session.lock();
            for full in st.subscriptions.keys() {
                self.unindex(&session.client_id, full);
            }
            st.subscriptions.clear();
            st.pending.clear();
            let had = st.queue.take().is_some();
            (st.queue_id, had)
        };
        let _ = self.store.put(&session.client_id, None)?;
        if self.qos2.get(&session.client_id).is_some() {
            let _ = self.qos2.put(&session.client_id, None)?;
        }
        if had_queue || self.queues.ids()?.contains(&queue_id) {
            self.queues.remove(queue_id)?;
        }
        Ok(())
    }

    /// Writes the session's subscriptions and expiry (persistent sessions).
    pub fn persist(&self, session: &Session) -> Result<Durable, BrokerError> {
        let record = {
            let st = session.lock();
            if st.expiry == 0 {
                return Ok(Durable::ready());
            }
            st.record()
        };
        let value = serde_json::to_vec(&record).map_err(|e| std::io::Error::other(e.to_string()))?;
        self.store.put(&session.client_id, Some(StoredRecord { value: Some(value), ..Default::default() }))
    }

    /// Writes the session's unreleased inbound QoS 2 packet ids (persistent
    /// sessions); PUBREC and PUBCOMP wait for it.
    pub fn persist_qos2(&self, session: &Session) -> Result<Durable, BrokerError> {
        let value = {
            let st = session.lock();
            if st.expiry == 0 {
                return Ok(Durable::ready());
            }
            let mut ids: Vec<u16> = st.incoming_qos2.iter().copied().collect();
            ids.sort_unstable();
            ids.iter().flat_map(|id| id.to_be_bytes()).collect::<Vec<u8>>()
        };
        if value.is_empty() {
            if self.qos2.get(&session.client_id).is_none() {
                return Ok(Durable::ready());
            }
            return self.qos2.put(&session.client_id, None);
        }
        self.qos2.put(&session.client_id, Some(StoredRecord { value: Some(value), ..Default::default() }))
    }

    /// Adds or replaces a subscription; returns whether it existed.
    pub fn subscribe(&self, session: &Session, sub: SubRecord) -> bool {
        let mut st = session.lock();
        self.index(&session.client_id, &sub);
        st.subscriptions.insert(sub.filter.as_str().into(), sub).is_some()
    }

    /// Removes a subscription; returns whether it existed.
    pub fn unsubscribe(&self, session: &Session, filter: &str) -> bool {
        let mut st = session.lock();
        let existed = st.subscriptions.remove(filter).is_some();
        if existed {
            self.unindex(&session.client_id, filter);
        }
        existed
    }

    /// Retained messages matching `filter` (expired ones left out).
    pub fn retained_for(&self, filter: &str) -> Vec<Arc<Message>> {
        let now = now_ms();
        self.retained
            .select(|topic, _| topic_tree::matches(filter, topic))
            .into_iter()
            .filter_map(|(_, r)| Message::from_record(r))
            .filter(|m| !m.expired(now))
            .map(Arc::new)
            .collect()
    }

    /// Routes a message: retained store, subscribers, Kafka bridge rules.
    pub fn publish(&self, msg: Arc<Message>) -> Result<Routed, BrokerError> {
        let mut waits = Vec::new();
        if msg.retain {
            if msg.payload.is_empty() {
                waits.push(Wait::Durable(self.retained.put(&msg.topic, None)?));
            } else {
                waits.push(Wait::Durable(self.retained.put(&msg.topic, Some(msg.to_record()))?));
            }
        }
        for rule in self.config.to_kafka.iter().filter(|r| topic_tree::matches(&r.filter, &msg.topic)) {
            let mut record = msg.to_record();
            record.headers.retain(|(k, _)| k != "mqtt.qos" && k != "mqtt.retain");
            waits.push(Wait::Kafka(self.broker.append_record(&rule.topic, &record)?));
        }
        let mut direct: HashMap<Arc<str>, Copies> = HashMap::new();
        let mut shared: HashMap<Arc<str>, Vec<(Arc<str>, SubEntry)>> = HashMap::new();
        self.tree.read().unwrap_or_else(|p| p.into_inner()).for_each_match(&msg.topic, |(client, full), e| {
            if e.share.is_some() {
                shared.entry(full.clone()).or_default().push((client.clone(), e.clone()));
            } else if !(e.opts.no_local && msg.origin.as_deref() == Some(&**client)) {
                direct.entry(client.clone()).or_default().add(e.opts.qos, e.id, e.opts.retain_as_published);
            }
        });
        let mut targets: Vec<(Arc<str>, u8, Option<u32>, bool)> = Vec::with_capacity(direct.len());
        for (client, copies) in direct {
            targets.extend(copies.into_copies().map(|c| (client.clone(), c.qos, c.id, c.rap)));
        }
        let sessions = lock(&self.sessions);
        for (full, mut members) in shared {
            members.sort_by(|a, b| a.0.cmp(&b.0));
            let start = {
                let mut next = lock(&self.shared_next);
                let n = next.entry(full).or_insert(0);
                *n = n.wrapping_add(1);
                *n
            };
            // Round robin, preferring members that are connected.
            let online = |c: &Arc<str>| sessions.get(c).is_some_and(|s| s.lock().online.is_some());
            let len = members.len();
            let pick = (0..len).map(|i| (start + i) % len).find(|&i| online(&members[i].0)).unwrap_or(start % len);
            let (client, e) = &members[pick];
            targets.push((client.clone(), e.opts.qos, e.id, e.opts.retain_as_published));
        }
        let found: Vec<(Arc<Session>, u8, Option<u32>, bool)> = targets
            .into_iter()
            .filter_map(|(c, q, id, rap)| sessions.get(&c).map(|s| (s.clone(), q, id, rap)))
            .collect();
        drop(sessions);
        let matched = found.len();
        let mut congested = Vec::new();
        let high = self.congestion_high();
        for (session, sub_qos, id, rap) in found {
            let d = Delivery {
                msg: msg.clone(),
                qos: msg.qos.min(sub_qos),
                retain: rap && msg.retain,
                subscription_id: id,
                queue_offset: None,
                dup: false,
            };
            if let Some(w) = self.enqueue(&session, d)? {
                waits.push(Wait::Durable(w));
            }
            if msg.origin.as_deref() != Some(&*session.client_id) && self.is_congested(&session.lock(), high) {
                congested.push(session);
            }
        }
        Ok(Routed { matched, waits, congested })
    }

    /// The in-memory queue length past which a session counts as congested:
    /// 256 messages (a few ms of delivery), or half the queue limit if that
    /// is lower, so publishers are slowed before messages are dropped.
    pub fn congestion_high(&self) -> u64 {
        (self.config.max_queued_messages / 2).clamp(1, 256)
    }

    /// Congested: a long in-memory queue that its connection is draining
    /// (took a message within `STALL`). A subscriber that stopped reading or
    /// acknowledging is left to its queue limit instead, so it cannot slow
    /// publishers down.
    fn is_congested(&self, st: &crate::session::SessionState, mark: u64) -> bool {
        st.pending.len() as u64 >= mark && st.drained_at.is_some_and(|t| t.elapsed() < STALL)
    }

    /// Whether a congested session's queue is back under half the mark (or
    /// its connection stalled).
    pub fn drained(&self, session: &Session) -> bool {
        !self.is_congested(&session.lock(), self.congestion_high() / 2 + 1)
    }

    /// Hands a delivery to a session. QoS 1/2 for a persistent session go
    /// to its durable queue, connected or not, so a crash loses nothing a
    /// publisher was told is stored; the connection is woken once the
    /// message is on disk (it reads only durable records). QoS 0, and
    /// everything for a session that ends with its connection, stay in
    /// memory, for a connected session only.
    pub fn enqueue(&self, session: &Arc<Session>, d: Delivery) -> Result<Option<Durable>, BrokerError> {
        let mut st = session.lock();
        let limit = self.config.max_queued_messages;
        if d.qos > 0 && st.expiry > 0 {
            let q = self.queue_of(&mut st)?;
            if q.written_len() >= limit {
                st.dropped += 1;
                self.stats.dropped();
                return Ok(None);
            }
            let (end, durable) = q.append(&[delivery_record(&d)])?;
            if st.online.is_some() {
                let s = session.clone();
                q.on_durable(end, move || s.wake.notify_one());
            }
            return Ok(Some(durable));
        }
        if st.online.is_none() || st.pending.len() as u64 >= limit {
            st.dropped += 1;
            self.stats.dropped();
            return Ok(None);
        }
        st.pending.push_back(d);
        drop(st);
        session.wake.notify_one();
        Ok(None)
    }

    /// Ends offline sessions past their expiry.
    pub fn expire_sessions(&self) {
        let now = Instant::now();
        let expired: Vec<Arc<Session>> = lock(&self.sessions)
            .values()
            .filter(|s| {
                let st = s.lock();
                st.online.is_none()
                    && st.expiry != u32::MAX
                    && st
                        .disconnected_at
                        .is_some_and(|t| now.duration_since(t) >= Duration::from_secs(st.expiry.into()))
            })
            .cloned()
            .collect();
        for s in expired {
            tracing::debug!(client = %s.client_id, "session expired");
            if let Err(e) = self.remove_session(&s) {
                tracing::warn!(client = %s.client_id, error = %e, "could not remove expired session");
            }
        }
    }

    /// Flushes every session queue (clean shutdown).
    pub fn flush_queues(&self) {
        let sessions: Vec<Arc<Session>> = lock(&self.sessions).values().cloned().collect();
        for s in sessions {
            if let Some(q) = s.lock().queue.clone()
                && let Err(e) = q.flush()
            {
                tracing::warn!(client = %s.client_id, error = %e, "could not flush session queue");
            }
        }
    }
}

/// The stored form of a delivery in a session queue.
/// One client's subscriptions matching a message, as the copies it gets.
/// Merged into one copy (the highest QoS, retain-as-published if any asks
/// for it) unless they carry different subscription identifiers: the codec
/// sends one identifier per PUBLISH, so then each identifier gets a copy of
/// its own, as MQTT 5 §3.3.4 allows ("further copies of the message, one
/// for each additional matching subscription", each with the identifier of
/// its subscription).
#[derive(Default)]
struct Copies {
    first: MsgCopy,
    /// Copies for further identifiers (rarely any: no allocation then).
    more: Vec<MsgCopy>,
}

#[derive(Clone, Copy, Default)]
struct MsgCopy {
    qos: u8,
    id: Option<u32>,
    rap: bool,
}

impl Copies {
    fn add(&mut self, qos: u8, id: Option<u32>, rap: bool) {
        let distinct = |c: &MsgCopy| matches!((c.id, id), (Some(a), Some(b)) if a != b);
        let c = if distinct(&self.first) {
            match self.more.iter().position(|c| c.id == id) {
                Some(i) => &mut self.more[i],
                None => {
                    self.more.push(MsgCopy { qos: 0, id, rap: false });
                    self.more.last_mut().expect("just pushed")
                }
            }
        } else {
            &mut self.first
        };
        c.qos = c.qos.max(qos);
        c.id = c.id.or(id);
        c.rap |= rap;
    }

    fn into_copies(self) -> impl Iterator<Item = MsgCopy> {
        std::iter::once(self.first).chain(self.more)
    }
}

fn delivery_record(d: &Delivery) -> StoredRecord {
    let mut m = (*d.msg).clone();
    m.qos = d.qos;
    m.retain = d.retain;
    let mut r = m.to_record();
    if let Some(id) = d.subscription_id {
        r.headers.push((SUBSCRIPTION_ID.into(), id.to_be_bytes().to_vec()));
    }
    if d.dup {
        r.headers.push((DUP.into(), vec![1]));
    }
    r
}

/// A delivery read back from a session queue.
pub fn delivery_from_record(offset: u64, r: StoredRecord) -> Option<Delivery> {
    let subscription_id = r
        .headers
        .iter()
        .find(|(k, _)| k == SUBSCRIPTION_ID)
        .and_then(|(_, v)| <[u8; 4]>::try_from(v.as_slice()).ok())
        .map(u32::from_be_bytes);
    let dup = r.headers.iter().any(|(k, _)| k == DUP);
    let m = Message::from_record(r)?;
    Some(Delivery { qos: m.qos, retain: m.retain, msg: Arc::new(m), subscription_id, queue_offset: Some(offset), dup })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ferry_broker::BrokerConfig;

    fn message(i: u32, qos: u8) -> Arc<Message> {
        Arc::new(Message {
            topic: "t/x".into(),
            payload: Bytes::from(i.to_string()),
            qos,
            retain: false,
            props: Default::default(),
            expires_at: None,
            origin: None,
            timestamp: now_ms(),
        })
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_newest_messages_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(BrokerConfig { data_dir: dir.path().to_path_buf(), ..Default::default() }).unwrap();
        let hub = Hub::open(broker.clone(), MqttConfig { max_queued_messages: 2, ..Default::default() }).unwrap();
        let id: Arc<str> = "s".into();
        let (session, present, generation, _kick) = hub.attach(&id, false, 100, Version::V5).await.unwrap();
        assert!(!present);
        hub.subscribe(&session, SubRecord { filter: "t/#".into(), qos: 1, ..SubRecord::default() });
        // QoS 1 goes to the durable queue, connected or not: two fit, the third is dropped.
        for i in 0..3 {
            assert_eq!(hub.publish(message(i, 1)).unwrap().matched, 1);
        }
        assert_eq!((session.lock().dropped, hub.stats.dropped_count()), (1, 1));
        // QoS 0 for a connected session: memory, with the same limit.
        for i in 3..6 {
            hub.publish(message(i, 0)).unwrap();
        }
        let pending: Vec<Bytes> = session.lock().pending.iter().map(|d| d.msg.payload.clone()).collect();
        assert_eq!(pending, ["3", "4"]);
        assert_eq!((session.lock().dropped, hub.stats.dropped_count()), (2, 2));
        // Offline: QoS 0 is dropped, and the full queue takes no QoS 1.
        hub.detach(&session, generation, Vec::new());
        hub.publish(message(6, 1)).unwrap();
        hub.publish(message(7, 0)).unwrap();
        assert_eq!((session.lock().dropped, hub.stats.dropped_count()), (4, 4));
        let offline = MqttGauges { sessions_offline: 1, subscriptions: 1, ..MqttGauges::default() };
        assert_eq!(hub.gauges(), offline);
        let q = hub.queue_of(&mut session.lock()).unwrap();
        q.flush().unwrap();
        let kept: Vec<Vec<u8>> = q.read(0, 1 << 20).unwrap().into_iter().filter_map(|(_, r)| r.value).collect();
        assert_eq!(kept, [b"0".to_vec(), b"1".to_vec()]);
        broker.shutdown();
    }

    #[tokio::test]
    async fn a_long_in_memory_queue_marks_its_session_congested_until_it_drains() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(BrokerConfig { data_dir: dir.path().to_path_buf(), ..Default::default() }).unwrap();
        let hub = Hub::open(broker.clone(), MqttConfig::default()).unwrap();
        assert_eq!(hub.congestion_high(), 256);
        let id: Arc<str> = "slow".into();
        let (session, _, _, _kick) = hub.attach(&id, true, 0, Version::V5).await.unwrap();
        hub.subscribe(&session, SubRecord { filter: "t/#".into(), qos: 1, ..SubRecord::default() });
        // A connection that is taking messages.
        session.lock().drained_at = Some(Instant::now());
        for i in 0..255 {
            assert!(hub.publish(message(i, 1)).unwrap().congested.is_empty());
        }
        let routed = hub.publish(message(255, 1)).unwrap();
        assert_eq!(routed.congested.len(), 1);
        assert!(!hub.drained(&session));
        // Its own messages never hold a publisher back.
        let mut own = (*message(256, 1)).clone();
        own.origin = Some(id.clone());
        assert!(hub.publish(Arc::new(own)).unwrap().congested.is_empty());
        session.lock().pending.truncate(129);
        assert!(!hub.drained(&session));
        session.lock().pending.truncate(128);
        assert!(hub.drained(&session));
        // Stalled (took nothing for 100 ms): not congested, however long its queue.
        for i in 0..200 {
            hub.publish(message(300 + i, 1)).unwrap();
        }
        assert!(!hub.drained(&session));
        session.lock().drained_at = Instant::now().checked_sub(Duration::from_millis(150));
        assert!(hub.drained(&session));
        assert!(hub.publish(message(999, 1)).unwrap().congested.is_empty());
        broker.shutdown();
    }
}
