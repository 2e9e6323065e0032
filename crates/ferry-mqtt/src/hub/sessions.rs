//! The session registry: sessions by client id, attached to at most one
//! connection (a new one takes over, on this node or, through the cluster
//! metadata, on another), persistent when their expiry is not 0 (recorded
//! in the metadata with their subscriptions; QoS 1/2 messages in a queue
//! each, replicated in a cluster; unreleased inbound QoS 2 ids in a
//! node-local store), and ended when their expiry runs out.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ferry_broker::BrokerError;
use ferry_broker::metadata::{MQTT_VHOST, MqttRecord, WillDef};
use ferry_broker::stored::StoredRecord;
use ferry_util::sync::lock;
use ferry_util::time::now_ms;
use tokio::sync::oneshot;

use super::{Hub, SessionQueue};
use crate::message::Message;
use crate::packet::{Version, reason};
use crate::session::{Delivery, Online, Session, SessionState};

/// Header of a queued delivery: the subscription identifier it carries.
const SUBSCRIPTION_ID: &str = "mqtt.subscription_id";
/// Header of a queued delivery: sent before, so DUP on the next attempt.
const DUP: &str = "mqtt.dup";

impl Hub {
    /// Restores persistent sessions from the metadata with their unreleased
    /// QoS 2 ids, and removes local queues no session of this node owns.
    pub(super) fn restore_sessions(&self) -> Result<(), BrokerError> {
        self.sync_sessions(true);
        let image = self.broker.metadata();
        let me = self.broker.node_id();
        let used: HashSet<u64> =
            image.mqtt.sessions.values().filter(|s| s.node == me).filter_map(|s| s.local_queue).collect();
        for (client_id, rec) in self.qos2.select(|_, _| true) {
            let session = lock(&self.sessions).get(client_id.as_str()).cloned();
            match session {
                Some(s) => {
                    let ids = rec.value.unwrap_or_default();
                    s.lock().incoming_qos2 = ids.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
                }
                None => drop(self.qos2.put(&client_id, None)?),
            }
        }
        for (client_id, rec) in self.released.select(|_, _| true) {
            let session = lock(&self.sessions).get(client_id.as_str()).cloned();
            match session {
                Some(s) => s.lock().releasing = decode_released(&rec.value.unwrap_or_default()),
                None => drop(self.released.put(&client_id, None)?),
            }
        }
        let mut max_id = used.iter().copied().max().unwrap_or(0);
        for id in self.queues.ids()? {
            max_id = max_id.max(id);
            // Only once the image has something: an empty one may not have
            // caught up yet.
            if image.applied_index > 0 && !used.contains(&id) {
                self.queues.remove(id)?;
            }
        }
        self.next_queue_id.store(max_id + 1, Ordering::Relaxed);
        Ok(())
    }

    /// Sessions known (online and offline).
    pub fn session_count(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Attaches a new connection to `client_id`'s session, taking it over
    /// from a connection that holds it (here, or on another node through
    /// the metadata); a persistent session records the connection's `will`
    /// with it. Returns the session, whether it existed, the
    /// connection's generation and its takeover signal.
    pub async fn attach(
        &self,
        client_id: &Arc<str>,
        clean_start: bool,
        expiry: u32,
        version: Version,
        will: Option<WillDef>,
    ) -> Result<(Arc<Session>, bool, u64, oneshot::Receiver<u8>), BrokerError> {
        self.sync_sessions(false);
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
                let _ = k.send(reason::SESSION_TAKEN_OVER);
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
            self.remove_session(old).await?;
        }
        let me = self.broker.node_id();
        let mut resumed = existing.filter(|_| !clean_start);
        if let Some(s) = resumed.clone()
            && expiry > 0
            && s.lock().recorded
        {
            // Recorded as attached here before the connection goes online
            // (a node still holding the client's old connection drops it),
            // and taken as the metadata has it: this node's copy may not
            // have seen the last changes made through another node.
            // With the connection's will: no moment where it is attached
            // here and its will unknown to the other nodes.
            let attach = MqttRecord::Attach { client_id: client_id.to_string(), node: me, expiry, will: will.clone() };
            match self.broker.submit_mqtt(attach).await {
                Ok(()) => {
                    if let Some(def) = self.broker.metadata().mqtt.sessions.get(&**client_id) {
                        self.refresh(&s, def);
                    }
                }
                Err(BrokerError::ResourceNotFound(_)) => {
                    // Ended meanwhile (expired, or a clean start elsewhere).
                    self.drop_session(&s)?;
                    resumed = None;
                }
                Err(e) => return Err(e),
            }
        }
        let present = resumed.is_some();
        let session = if let Some(s) = resumed {
            let mut st = s.lock();
            st.version = version;
            if !st.recorded {
                st.expiry = expiry;
            }
            drop(st);
            s
        } else {
            let id = self.next_queue_id.fetch_add(1, Ordering::Relaxed);
            let s = Arc::new(Session::new(client_id.clone(), version, id, expiry));
            if expiry > 0 && self.replicated_sessions() {
                // A new name per session: a new session never meets an
                // earlier one's offsets.
                s.lock().replicated = Some(queue_name(client_id));
            }
            s
        };
        let (unrecorded, ending) = {
            let st = session.lock();
            (expiry > 0 && !st.recorded, expiry == 0 && st.recorded)
        };
        if unrecorded {
            session.lock().will.clone_from(&will);
            let def = session.lock().definition(me, None, self.config.max_queued_messages);
            self.broker.submit_mqtt(MqttRecord::PutSession { client_id: client_id.to_string(), session: def }).await?;
            session.lock().recorded = true;
        } else if ending {
            // Resumed with expiry 0: it ends with this connection.
            self.forget(client_id);
            let mut st = session.lock();
            st.recorded = false;
            st.expiry = 0;
        }
        lock(&self.sessions).insert(client_id.clone(), session.clone());
        let (tx, rx) = oneshot::channel();
        let generation = {
            let mut st = session.lock();
            st.generation += 1;
            st.online = Some(Online { generation: st.generation, kick: Some(tx) });
            st.disconnected_at = None;
            st.generation
        };
        Ok((session, present, generation, rx))
    }

    /// Whether new persistent sessions get a replicated queue: when the
    /// cluster has more than one node or voter (as AMQP's default queue
    /// type); a single node keeps its sessions' queues on its own disk.
    pub(super) fn replicated_sessions(&self) -> bool {
        self.broker.metadata().nodes.len() > 1 || self.broker.controller_status().voters.len() > 1
    }

    /// Detaches connection `generation`: a session with expiry 0 ends; a
    /// persistent one keeps its unacknowledged and pending QoS 1/2
    /// messages in its durable queue (`unacked` are the connection's
    /// in-flight messages that did not come from the queue).
    pub fn detach(self: &Arc<Self>, session: &Arc<Session>, generation: u64, unacked: Vec<Delivery>) {
        let (end, record) = {
            let mut st = session.lock();
            let current = st.online.as_ref().is_some_and(|o| o.generation == generation);
            if current {
                st.online = None;
                st.disconnected_at = Some(Instant::now());
                // Published (or dropped) by this node: the record's goes with the detach.
                st.will = None;
            }
            let mut spill: Vec<Delivery> = unacked;
            spill.extend(st.pending.drain(..));
            if st.expiry == 0 {
                (true, None)
            } else {
                let records: Vec<StoredRecord> =
                    spill.iter().filter(|d| d.qos > 0 && d.queue_offset.is_none()).map(delivery_record).collect();
                if !records.is_empty() {
                    let limit = self.config.max_queued_messages;
                    if let Err(e) = self.queue_of(&mut st).and_then(|q| q.push(&records, limit, None)) {
                        tracing::warn!(client = %session.client_id, error = %e, "could not queue messages");
                    }
                }
                // Ignored if another node took the session over meanwhile.
                let record = (current && st.recorded).then(|| MqttRecord::Detach {
                    client_id: session.client_id.to_string(),
                    node: self.broker.node_id(),
                    at: now_ms(),
                });
                (false, record)
            }
        };
        if end {
            match self.drop_session(session) {
                Ok(true) => self.forget(&session.client_id),
                Ok(false) => {}
                Err(e) => tracing::warn!(client = %session.client_id, error = %e, "could not remove session"),
            }
        }
        if let Some(record) = record {
            // When it ended, for its expiry on any node.
            let broker = self.broker.clone();
            spawn(async move {
                if let Err(e) = broker.submit_mqtt(record).await {
                    tracing::warn!(error = %e, "could not record a session's disconnection");
                }
            });
        }
        session.detached.notify_waiters();
    }

    /// The session's durable queue, opened on first use.
    pub fn queue_of(&self, st: &mut SessionState) -> Result<SessionQueue, BrokerError> {
        if let Some(q) = &st.queue {
            return Ok(q.clone());
        }
        let q = match &st.replicated {
            Some(name) => SessionQueue::Replicated(self.broker.quorum_client(MQTT_VHOST, name)),
            None => SessionQueue::Local(self.queues.open(st.queue_id)?),
        };
        st.queue = Some(q.clone());
        Ok(q)
    }

    /// Ends a session: subscriptions, queue and persisted state go (the
    /// metadata's record and a replicated queue with it).
    async fn remove_session(&self, session: &Arc<Session>) -> Result<(), BrokerError> {
        let recorded = self.drop_session(session)?;
        if recorded {
            self.broker.submit_mqtt(MqttRecord::DeleteSession { client_id: session.client_id.to_string() }).await?;
        }
        Ok(())
    }

    /// Forgets a session here (its record is another node's or already
    /// gone); returns whether it was recorded.
    pub(super) fn drop_session(&self, session: &Arc<Session>) -> Result<bool, BrokerError> {
        {
            let mut map = lock(&self.sessions);
            if map.get(&session.client_id).is_some_and(|s| Arc::ptr_eq(s, session)) {
                map.remove(&session.client_id);
            }
        }
        let (queue_id, local, recorded) = {
            let mut st = session.lock();
            for full in st.subscriptions.keys() {
                self.unindex(&session.client_id, full);
            }
            st.subscriptions.clear();
            st.pending.clear();
            st.queue = None;
            (st.queue_id, st.replicated.is_none(), std::mem::take(&mut st.recorded))
        };
        if self.qos2.get(&session.client_id).is_some() {
            let _ = self.qos2.put(&session.client_id, None)?;
        }
        if self.released.get(&session.client_id).is_some() {
            let _ = self.released.put(&session.client_id, None)?;
        }
        if local && self.queues.ids()?.contains(&queue_id) {
            self.queues.remove(queue_id)?;
        }
        Ok(recorded)
    }

    /// Deletes `client_id`'s record, in the background.
    fn forget(&self, client_id: &str) {
        let broker = self.broker.clone();
        let record = MqttRecord::DeleteSession { client_id: client_id.to_string() };
        spawn(async move {
            if let Err(e) = broker.submit_mqtt(record).await {
                tracing::warn!(error = %e, "could not delete a session's record");
            }
        });
    }

    /// Records the session's subscriptions and expiry in the cluster
    /// metadata (persistent sessions); resolves once this node's image has
    /// them.
    pub async fn persist(&self, session: &Session) -> Result<(), BrokerError> {
        let def = {
            let st = session.lock();
            if st.expiry == 0 || !st.recorded {
                return Ok(());
            }
            st.definition(self.broker.node_id(), None, self.config.max_queued_messages)
        };
        self.broker.submit_mqtt(MqttRecord::PutSession { client_id: session.client_id.to_string(), session: def }).await
    }

    /// Ends offline sessions past their expiry (and takes in the metadata's
    /// changes first). A session's expiry is carried out by the node it
    /// was last attached to, or, if that node is gone, by the live node
    /// with the lowest id.
    pub fn expire_sessions(self: &Arc<Self>) {
        self.sync_sessions(true);
        let image = self.broker.metadata();
        let me = self.broker.node_id();
        let first_live = image.live_nodes().map(|n| n.id).min();
        let ours = |client: &str| match image.mqtt.sessions.get(client) {
            None => true,
            Some(def) => {
                def.node == me || (!image.live_nodes().any(|n| n.id == def.node) && first_live.is_none_or(|n| n == me))
            }
        };
        let orphans = self.orphans(&image);
        let now = Instant::now();
        let expired: Vec<Arc<Session>> = lock(&self.sessions)
            .values()
            .filter(|s| {
                let st = s.lock();
                let since = st.disconnected_at.or_else(|| orphans.get(&*s.client_id).copied());
                st.online.is_none()
                    && st.expiry != u32::MAX
                    && since.is_some_and(|t| now.duration_since(t) >= Duration::from_secs(st.expiry.into()))
            })
            .filter(|s| ours(&s.client_id))
            .cloned()
            .collect();
        for s in expired {
            tracing::debug!(client = %s.client_id, "session expired");
            let hub = self.clone();
            spawn(async move {
                if let Err(e) = hub.remove_session(&s).await {
                    tracing::warn!(client = %s.client_id, error = %e, "could not remove expired session");
                }
            });
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

/// A new replicated session queue's name: the client id (cut to fit an
/// AMQP queue name) and a random suffix.
fn queue_name(client_id: &str) -> String {
    let mut cut = client_id.len().min(200);
    while !client_id.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}~{}", &client_id[..cut], uuid_suffix())
}

/// 64 random bits in hex (not cryptographic: only unique).
fn uuid_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    format!("{:016x}", h.finish())
}

/// Runs `f` on the current runtime (none: a unit test's synchronous caller,
/// which then does without it).
pub(super) fn spawn(f: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Ok(h) = tokio::runtime::Handle::try_current() {
        h.spawn(f);
    } else {
        tracing::warn!("no runtime for a session's background work");
    }
}

/// The stored form of a delivery in a session queue: the message's record
/// with the delivery's QoS and retain flag, its subscription identifiers
/// (a header each) and DUP flag as headers.
pub(super) fn delivery_record(d: &Delivery) -> StoredRecord {
    let mut m = (*d.msg).clone();
    m.qos = d.qos;
    m.retain = d.retain;
    let mut r = m.to_record();
    for id in &d.subscription_ids {
        r.headers.push((SUBSCRIPTION_ID.into(), id.to_be_bytes().to_vec()));
    }
    if d.dup {
        r.headers.push((DUP.into(), vec![1]));
    }
    r
}

/// The stored form of released outbound QoS 2 ids: per id, the id (u16)
/// and its message's queue offset (u64, `u64::MAX` for none), big-endian.
pub(super) fn encode_released(ids: &[(u16, Option<u64>)]) -> Vec<u8> {
    let mut v = Vec::with_capacity(ids.len() * 10);
    for (pid, offset) in ids {
        v.extend_from_slice(&pid.to_be_bytes());
        v.extend_from_slice(&offset.unwrap_or(u64::MAX).to_be_bytes());
    }
    v
}

/// Reads [`encode_released`]'s form back (a torn tail is ignored).
pub(super) fn decode_released(v: &[u8]) -> Vec<(u16, Option<u64>)> {
    v.chunks_exact(10)
        .map(|c| {
            let pid = u16::from_be_bytes([c[0], c[1]]);
            let offset = u64::from_be_bytes(c[2..10].try_into().unwrap_or([0xff; 8]));
            (pid, (offset != u64::MAX).then_some(offset))
        })
        .filter(|(pid, _)| *pid != 0)
        .collect()
}

/// A delivery read back from a session queue.
pub fn delivery_from_record(offset: u64, r: StoredRecord) -> Option<Delivery> {
    let subscription_ids = r
        .headers
        .iter()
        .filter(|(k, _)| k == SUBSCRIPTION_ID)
        .filter_map(|(_, v)| <[u8; 4]>::try_from(v.as_slice()).ok())
        .map(u32::from_be_bytes)
        .collect();
    let dup = r.headers.iter().any(|(k, _)| k == DUP);
    let m = Message::from_record(r)?;
    Some(Delivery { qos: m.qos, retain: m.retain, msg: Arc::new(m), subscription_ids, queue_offset: Some(offset), dup })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_ids_round_trip_and_a_torn_tail_is_ignored() {
        let ids = vec![(1, Some(0)), (65535, Some(u64::MAX - 1)), (7, None)];
        let v = encode_released(&ids);
        assert_eq!(v.len(), 30);
        assert_eq!(decode_released(&v), ids);
        assert_eq!(decode_released(&v[..25]), ids[..2]);
        // Id 0 is not a packet id: never taken from a damaged record.
        assert_eq!(decode_released(&encode_released(&[(0, Some(3))])), vec![]);
    }
}
