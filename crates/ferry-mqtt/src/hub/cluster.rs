//! The hub in a cluster (issue #17): persistent sessions follow the
//! metadata, and messages reach the subscribers of other nodes.
//!
//! - Every node holds every persistent session of the metadata (offline
//!   where its client is not connected here), indexed with its
//!   subscriptions, so a publish on any node puts its QoS 1/2 copies into
//!   the session's (replicated) queue, wherever the client is.
//! - A session recorded as attached to another node is taken from a
//!   connection holding it here (the client reconnected there); one no
//!   longer recorded (ended elsewhere) is dropped here.
//! - What the publishing node cannot queue, its connected subscribers on
//!   other nodes (clean sessions, QoS 0 copies), goes to those nodes
//!   (`PeerRequest::MqttRoute`), which hand it only to such sessions.
//!
//! A single node is a cluster of one: the same records, nobody to route to.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_broker::metadata::{MqttSession, MqttSubscription};
use ferry_util::sync::lock;
use ferry_util::time::now_ms;

use super::Hub;
use super::packed::{pack, unpack};
use crate::message::Message;
use crate::packet::{Version, reason};
use crate::session::{Delivery, Session};

impl Hub {
    /// Brings the sessions in line with the metadata: at once if `full`,
    /// else only if the image's MQTT part changed since the last time.
    pub(super) fn sync_sessions(&self, full: bool) {
        let image = self.broker.metadata();
        {
            let mut synced = lock(&self.synced);
            if !full && Arc::ptr_eq(&synced, &image.mqtt) {
                return;
            }
            *synced = image.mqtt.clone();
        }
        let me = self.broker.node_id();
        for (client_id, def) in &image.mqtt.sessions {
            let local = lock(&self.sessions).get(client_id.as_str()).cloned();
            match local {
                None => {
                    let client_id: Arc<str> = client_id.as_str().into();
                    let s = Arc::new(Session::new(client_id.clone(), Version::V5, 0, def.expiry));
                    self.refresh(&s, def);
                    lock(&self.sessions).entry(client_id).or_insert(s);
                }
                Some(s) => {
                    let online = s.lock().online.is_some();
                    if online {
                        if def.node != me {
                            tracing::debug!(client = %client_id, node = def.node, "session taken over on another node");
                            kick(&s);
                        }
                    } else {
                        self.refresh(&s, def);
                    }
                }
            }
        }
        // Ended on another node (a clean start, its expiry).
        let gone: Vec<Arc<Session>> = lock(&self.sessions)
            .iter()
            .filter(|(id, s)| s.lock().recorded && !image.mqtt.sessions.contains_key(&***id))
            .map(|(_, s)| s.clone())
            .collect();
        for s in gone {
            if s.lock().online.is_some() {
                kick(&s);
            } else if let Err(e) = self.drop_session(&s) {
                tracing::warn!(client = %s.client_id, error = %e, "could not drop an ended session");
            }
        }
    }

    /// Makes offline session `s` what the metadata says.
    pub(super) fn refresh(&self, s: &Arc<Session>, def: &MqttSession) {
        let mut st = s.lock();
        st.recorded = true;
        st.expiry = def.expiry;
        if st.replicated != def.queue || (def.queue.is_none() && def.local_queue != Some(st.queue_id)) {
            st.replicated = def.queue.clone();
            st.queue_id = def.local_queue.unwrap_or(st.queue_id);
            st.queue = None;
        }
        st.will = def.will.clone();
        if def.queue.is_some() {
            // A replicated session's QoS 2 exchanges are the metadata's
            // (recorded by whichever node held its connection last).
            st.incoming_qos2 = def.qos2.received.iter().copied().collect();
            st.releasing.clone_from(&def.qos2.released);
            st.released_recorded.clone_from(&def.qos2.released);
        }
        // Ended at the recorded time; still connected to another node:
        // none (if that node died, `orphans` counts from when it was noticed).
        st.disconnected_at = def.disconnected_at.map(|t| {
            let ago = Duration::from_millis(u64::try_from(now_ms() - t).unwrap_or(0));
            Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
        });
        if st.subscription_defs() == def.subscriptions {
            return;
        }
        // Only what changed: routing reads the index without the session's
        // lock, so a subscription kept must never leave it, even for a
        // moment (a publish then would miss this session).
        let wanted: HashMap<Arc<str>, MqttSubscription> = def
            .subscriptions
            .iter()
            .map(|sub| (sub.filter.as_str().into(), MqttSubscription { qos: sub.qos.min(2), ..sub.clone() }))
            .collect();
        for full in st.subscriptions.keys().filter(|f| !wanted.contains_key(*f)) {
            self.unindex(&s.client_id, full);
        }
        for (full, sub) in &wanted {
            if st.subscriptions.get(full) != Some(sub) {
                self.index(&s.client_id, sub);
            }
        }
        st.subscriptions = wanted;
    }

    /// Sends `msg` to the other nodes' connected subscribers.
    pub(super) fn route_to_peers(&self, msg: &Message) {
        if self.broker.metadata().nodes.len() < 2 {
            return;
        }
        self.broker.route_mqtt_to_peers(pack(&msg.to_record()).into(), msg.origin.as_deref());
    }

    /// A message published on another node: to the sessions here that node
    /// could not queue for (connected, and a clean session or a QoS 0
    /// copy).
    pub fn route_from_peer(&self, message: &[u8], origin: Option<&str>) {
        let Some(mut msg) = unpack(message).and_then(Message::from_record) else {
            tracing::warn!("undecodable MQTT message from a peer");
            return;
        };
        msg.origin = origin.map(Arc::from);
        let msg = Arc::new(msg);
        self.sync_sessions(false);
        for t in self.targets(&msg) {
            let qos = msg.qos.min(t.qos);
            let queued_by_publisher = {
                let st = t.session.lock();
                (qos > 0 && st.expiry > 0) || st.online.is_none()
            };
            if queued_by_publisher {
                continue;
            }
            let d = Delivery {
                msg: msg.clone(),
                qos,
                retain: t.rap && msg.retain,
                subscription_ids: t.ids,
                queue_offset: None,
                dup: false,
            };
            if let Err(e) = self.enqueue(&t.session, d) {
                tracing::warn!(client = %t.session.client_id, error = %e, "could not hand over a routed message");
            }
        }
    }
}

/// Tells the connection holding `s` it was taken over.
fn kick(s: &Session) {
    if let Some(k) = s.lock().online.as_mut().and_then(|o| o.kick.take()) {
        let _ = k.send(reason::SESSION_TAKEN_OVER);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use ferry_broker::BrokerConfig;
    use ferry_broker::metadata::{MqttRecord, MqttSubscription};

    use super::*;
    use crate::config::MqttConfig;
    use crate::hub::SessionQueue;

    fn message(topic: &str, qos: u8) -> Arc<Message> {
        Message::plain(topic, Bytes::from_static(b"m"), qos)
    }

    /// A session's subscriptions changed through another node: the ones it
    /// keeps stay indexed throughout, so a publish routed meanwhile on
    /// another thread always finds them (the index was emptied and filled
    /// again: a publish in between matched nothing, the copy lost).
    #[test]
    fn subscriptions_kept_by_a_change_elsewhere_are_never_missing() {
        let dir = tempfile::tempdir().unwrap();
        let broker =
            ferry_broker::testing::open(BrokerConfig { data_dir: dir.path().to_path_buf(), ..Default::default() })
                .unwrap();
        let hub = Hub::open(broker.clone(), MqttConfig::default()).unwrap();
        let sub = |filter: &str| MqttSubscription { filter: filter.into(), qos: 0, ..Default::default() };
        let def = |subs: Vec<MqttSubscription>| MqttSession {
            node: broker.node_id() + 1,
            expiry: 60,
            subscriptions: subs,
            local_queue: Some(7),
            ..Default::default()
        };
        let (one, two) = (def(vec![sub("t/#")]), def(vec![sub("t/#"), sub("u/#")]));
        let s = Arc::new(Session::new("far".into(), Version::V5, 7, 60));
        hub.refresh(&s, &one);
        lock(&hub.sessions).insert("far".into(), s.clone());
        let stop = std::sync::atomic::AtomicBool::new(false);
        let missed = std::thread::scope(|scope| {
            let router = scope.spawn(|| {
                let mut missed = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if hub.targets(&message("t/x", 0)).is_empty() {
                        missed += 1;
                    }
                }
                missed
            });
            for i in 0..20_000 {
                hub.refresh(&s, if i % 2 == 0 { &two } else { &one });
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            router.join().unwrap()
        });
        assert_eq!(missed, 0, "publishes that found no subscription while t/# was kept");
        assert_eq!(hub.targets(&message("u/x", 0)).len(), 0, "u/# gone with the last change");
        broker.shutdown();
    }

    /// A session recorded through another node is held here (routed to,
    /// resumable with its subscriptions); a takeover elsewhere closes the
    /// connection here and a late detach from here changes nothing; an end
    /// elsewhere drops it here.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sessions_follow_the_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let broker =
            ferry_broker::testing::open(BrokerConfig { data_dir: dir.path().to_path_buf(), ..Default::default() })
                .unwrap();
        let hub = Hub::open(broker.clone(), MqttConfig::default()).unwrap();
        let me = broker.node_id();
        let far = MqttSession {
            node: me + 1,
            expiry: 60,
            disconnected_at: None,
            subscriptions: vec![MqttSubscription { filter: "t/#".into(), qos: 1, ..Default::default() }],
            queue: None,
            local_queue: Some(77),
            queue_limit: None,
            will: None,
            qos2: Default::default(),
        };
        broker.submit_mqtt(MqttRecord::PutSession { client_id: "far".into(), session: far }).await.unwrap();
        let routed = hub.publish(message("t/x", 1)).unwrap();
        assert_eq!((routed.matched, routed.waits.len()), (1, 1), "into the session's queue");
        assert_eq!(hub.publish(message("u", 1)).unwrap().matched, 0);

        let id: Arc<str> = "far".into();
        let (session, present, generation, mut kick) = hub.attach(&id, false, 30, Version::V5, None).await.unwrap();
        assert!(present);
        let def = broker.metadata().mqtt.sessions["far"].clone();
        assert_eq!((def.node, def.expiry, def.subscriptions.len()), (me, 30, 1));
        assert_eq!(session.lock().subscriptions.len(), 1);
        let SessionQueue::Local(q) = hub.queue_of(&mut session.lock()).unwrap() else { panic!("a local queue") };
        assert_eq!(q.written_len(), 1, "the message routed before the attach waits in the queue");

        let takeover = MqttRecord::Attach { client_id: "far".into(), node: me + 1, expiry: 30, will: None };
        broker.submit_mqtt(takeover).await.unwrap();
        hub.sync_sessions(true);
        assert_eq!(kick.try_recv(), Ok(reason::SESSION_TAKEN_OVER));
        hub.detach(&session, generation, Vec::new());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let def = broker.metadata().mqtt.sessions["far"].clone();
        assert_eq!((def.node, def.disconnected_at), (me + 1, None), "a late detach changes nothing");

        broker.submit_mqtt(MqttRecord::DeleteSession { client_id: "far".into() }).await.unwrap();
        hub.sync_sessions(true);
        assert_eq!(hub.session_count(), 0);
        assert_eq!(hub.publish(message("t/x", 1)).unwrap().matched, 0);
        broker.shutdown();
    }
}
