//! Routing a published message: the retained store, the Kafka topics of
//! matching bridge rules, and a copy for every matching subscription,
//! queued on its session (durably for a persistent session's QoS 1/2).
//! Routing only pushes to queues; a subscriber's connection drains its
//! own. A publisher's acknowledgement waits for what was stored, and a
//! little for subscribers that are behind (congested).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::topic_tree;
use ferry_broker::stored::Durable;
use ferry_broker::{Appended, BrokerError};
use tokio::sync::oneshot;

use super::sessions::delivery_record;
use super::staged::{BatchStore, Staged};
use super::{Hub, Queued, SessionQueue};
use crate::message::Message;
use crate::session::{Delivery, Session, SessionState};

/// A session whose connection took nothing from its queue for this long is
/// stalled (see [`Hub::drained`]).
const STALL: Duration = Duration::from_millis(100);

/// Something a publisher waits for before its acknowledgement.
pub enum Wait {
    /// A write to a node-local session queue.
    Durable(Durable),
    /// An append to a Kafka topic (bridge rule), acknowledged as acks=all.
    Kafka(Appended),
    /// A replicated session queue's answer: on its ISR (true) or not.
    Replicated(oneshot::Receiver<bool>),
    /// A change to the cluster metadata (a retained message).
    Metadata(Pin<Box<dyn Future<Output = Result<(), BrokerError>> + Send>>),
    /// A batch of staged appends to a node-local session queue.
    Batch(Arc<BatchStore>),
}

impl Wait {
    /// Resolves once the write is stored, or with why it was not.
    pub async fn wait(self) -> Result<(), BrokerError> {
        match self {
            Wait::Durable(d) => d.wait().await,
            Wait::Kafka(a) => a.acknowledged().await.map(|_| ()),
            Wait::Replicated(rx) => match rx.await {
                Ok(true) => Ok(()),
                _ => Err(BrokerError::ControllerUnavailable("session queue did not store the message".into())),
            },
            Wait::Metadata(f) => f.await,
            Wait::Batch(b) => std::future::poll_fn(|cx| b.poll(cx)).await,
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

impl Hub {
    /// Routes a message: retained store, subscribers, Kafka bridge rules.
    pub fn publish(&self, msg: Arc<Message>) -> Result<Routed, BrokerError> {
        self.publish_staged(msg, None)
    }

    /// [`Hub::publish`], staging the copies for node-local session queues
    /// in `staged` (the caller commits them before it waits).
    pub fn publish_staged(&self, msg: Arc<Message>, mut staged: Option<&mut Staged>) -> Result<Routed, BrokerError> {
        self.sync_sessions(false);
        let mut waits = Vec::new();
        if msg.retain {
            waits.push(self.retain(&msg)?);
        }
        self.route_to_peers(&msg);
        for rule in self.config.to_kafka.iter().filter(|r| topic_tree::matches(&r.filter, &msg.topic)) {
            let mut record = msg.to_record();
            record.headers.retain(|(k, _)| k != "mqtt.qos" && k != "mqtt.retain");
            waits.push(Wait::Kafka(self.broker.append_record(&rule.topic, &record)?));
        }
        let targets = self.targets(&msg);
        let matched = targets.len();
        let mut congested = Vec::new();
        let high = self.congestion_high();
        for t in targets {
            let d = Delivery {
                msg: msg.clone(),
                qos: msg.qos.min(t.qos),
                retain: t.rap && msg.retain,
                subscription_ids: t.ids,
                queue_offset: None,
                dup: false,
            };
            if let Some(w) = self.enqueue_staged(&t.session, d, staged.as_deref_mut())? {
                waits.push(w);
            }
            if msg.origin.as_deref() != Some(&*t.session.client_id) && self.is_congested(&t.session.lock(), high) {
                congested.push(t.session);
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
    fn is_congested(&self, st: &SessionState, mark: u64) -> bool {
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
    pub fn enqueue(&self, session: &Arc<Session>, d: Delivery) -> Result<Option<Wait>, BrokerError> {
        self.enqueue_staged(session, d, None)
    }

    /// [`Hub::enqueue`], staging a copy for a node-local session queue in
    /// `staged` if given.
    fn enqueue_staged(
        &self,
        session: &Arc<Session>,
        d: Delivery,
        staged: Option<&mut Staged>,
    ) -> Result<Option<Wait>, BrokerError> {
        let mut st = session.lock();
        let limit = self.config.max_queued_messages;
        if d.qos > 0 && st.expiry > 0 {
            let q = self.queue_of(&mut st)?;
            let wake = st.online.is_some().then(|| session.clone());
            if let (Some(staged), SessionQueue::Local(local)) = (staged, &q) {
                let store = staged.stage(local, delivery_record(&d), limit, wake);
                if store.is_none() {
                    st.dropped += 1;
                    self.stats.dropped();
                }
                return Ok(store.map(Wait::Batch));
            }
            return Ok(match q.push(&[delivery_record(&d)], limit, wake)?.pop() {
                Some(Queued::Stored(w)) => Some(w),
                Some(Queued::Full) | None => {
                    st.dropped += 1;
                    self.stats.dropped();
                    None
                }
            });
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
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use crate::metrics::MqttGauges;
    use bytes::Bytes;
    use ferry_broker::BrokerConfig;

    use super::*;
    use crate::config::MqttConfig;
    use crate::hub::SessionQueue;
    use crate::packet::Version;
    use ferry_broker::metadata::MqttSubscription;

    fn message(i: u32, qos: u8) -> Arc<Message> {
        Message::plain("t/x", i.to_string(), qos)
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_newest_messages_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let broker =
            ferry_broker::testing::open(BrokerConfig { data_dir: dir.path().to_path_buf(), ..Default::default() })
                .unwrap();
        let hub = Hub::open(broker.clone(), MqttConfig { max_queued_messages: 2, ..Default::default() }).unwrap();
        let id: Arc<str> = "s".into();
        let (session, present, generation, _kick) = hub.attach(&id, false, 100, Version::V5, None).await.unwrap();
        assert!(!present);
        hub.subscribe(&session, MqttSubscription { filter: "t/#".into(), qos: 1, ..MqttSubscription::default() });
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
        let SessionQueue::Local(q) = hub.queue_of(&mut session.lock()).unwrap() else {
            panic!("a single node's queue")
        };
        q.flush().unwrap();
        let kept: Vec<Vec<u8>> = q.read(0, 1 << 20).unwrap().into_iter().filter_map(|(_, r)| r.value).collect();
        assert_eq!(kept, [b"0".to_vec(), b"1".to_vec()]);
        broker.shutdown();
    }

    #[tokio::test]
    async fn a_long_in_memory_queue_marks_its_session_congested_until_it_drains() {
        let dir = tempfile::tempdir().unwrap();
        let broker =
            ferry_broker::testing::open(BrokerConfig { data_dir: dir.path().to_path_buf(), ..Default::default() })
                .unwrap();
        let hub = Hub::open(broker.clone(), MqttConfig::default()).unwrap();
        assert_eq!(hub.congestion_high(), 256);
        let id: Arc<str> = "slow".into();
        let (session, _, _, _kick) = hub.attach(&id, true, 0, Version::V5, None).await.unwrap();
        hub.subscribe(&session, MqttSubscription { filter: "t/#".into(), qos: 1, ..MqttSubscription::default() });
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
