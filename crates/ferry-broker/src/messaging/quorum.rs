//! Quorum queues (issue #17): a durable queue whose messages and cursor
//! are one replicated partition, declared through the controller
//! ([`crate::metadata::AmqpRecord::DeclareQueue`] with
//! [`QueueKind::Quorum`]). The node leading the partition serves the queue,
//! and the queue follows the leadership as the coordinators do: after each
//! image, a queue whose partition this node now leads (in a leader epoch
//! it has not opened it in) is opened, its cursor rebuilt from the
//! partition's log ([`Queue::open_replicated`]); one it no longer leads,
//! or that was deleted, is closed (marked deleted: consumers holding the
//! `Queue` itself stop; AMQP consumers go through the node's
//! `QuorumClient`, which moves them to the next leader).
//! docs/cluster.md, "Queues in a cluster".

use std::collections::BTreeMap;
use std::sync::Arc;

use ferry_util::sync::lock;

use crate::broker::Broker;
use crate::error::BrokerError;
use crate::messaging::{MessagingError, Queue, QueueSpec};
use crate::metadata::{MetadataImage, QueueKind};

/// The quorum queues this node serves: (vhost, name) -> (leader epoch, queue).
pub(crate) type QuorumQueues = BTreeMap<(String, String), (i32, Arc<Queue>)>;

impl Broker {
    /// The quorum queue `name` of `vhost`, if this node leads its
    /// partition (otherwise the caller forwards to the leader).
    pub fn quorum_queue(&self, vhost: &str, name: &str) -> Option<Arc<Queue>> {
        lock(&self.quorum_queues).get(&(vhost.to_string(), name.to_string())).map(|(_, q)| q.clone())
    }

    /// Opens the quorum queues this node leads now and closes the others
    /// (called by `apply_image` with the image about to be published).
    pub(crate) fn sync_quorum_queues(&self, image: &MetadataImage) {
        let mut served = lock(&self.quorum_queues);
        let mut keep = BTreeMap::new();
        for (vhost, defs) in image.amqp.iter() {
            for (name, def) in &defs.queues {
                let QueueKind::Quorum { topic_id } = def.kind else { continue };
                let leading = image
                    .topic_by_id(topic_id)
                    .and_then(|info| self.topic(&info.name))
                    .and_then(|t| t.partition(0))
                    .and_then(|p| p.leader_state())
                    .map(|s| s.leader_epoch);
                let Some(epoch) = leading else { continue };
                let key = (vhost.clone(), name.clone());
                match served.remove(&key) {
                    Some((e, q)) if e == epoch => {
                        keep.insert(key, (e, q));
                    }
                    old => {
                        if let Some((_, q)) = old {
                            q.mark_deleted();
                        }
                        match open_in(self, image, vhost, name) {
                            Ok(q) => {
                                tracing::info!(vhost = %vhost, queue = %name, leader_epoch = epoch, "serving quorum queue");
                                keep.insert(key, (epoch, q));
                            }
                            Err(e) => {
                                tracing::error!(vhost = %vhost, queue = %name, error = %e, "cannot open quorum queue");
                            }
                        }
                    }
                }
            }
        }
        // Led elsewhere now, or deleted: consumers here stop.
        for (_, (_, q)) in std::mem::replace(&mut *served, keep) {
            q.mark_deleted();
        }
    }

    /// Links `q` to its vhost, open on this node, if it has none yet: a
    /// queue served here only to other nodes' clients (forwarded) is never
    /// looked up through a vhost here, and without one it would
    /// dead-letter without the front-end's `x-death` hook (or not at
    /// all) and drop its `x-retry-delays` retries.
    pub(crate) fn link_vhost(&self, vhost: &str, q: &Queue) {
        if q.has_vhost() {
            return;
        }
        if let Some(v) = self.vhosts.get().and_then(std::sync::Weak::upgrade).and_then(|v| v.get_open(vhost)) {
            q.set_vhost(v.weak_self());
        }
    }

    /// Snapshot records and trimming for the quorum queues served here
    /// (the housekeeping tick).
    pub(crate) fn maintain_quorum_queues(&self) {
        self.expire_queue_sessions();
        self.free_idle_quorum_clients(crate::messaging::quorum_client::IDLE);
        let queues: Vec<(String, Arc<Queue>)> =
            lock(&self.quorum_queues).iter().map(|((vhost, _), (_, q))| (vhost.clone(), q.clone())).collect();
        for (vhost, q) in queues {
            // Expired messages dead-letter through it.
            self.link_vhost(&vhost, &q);
            if let Err(e) = q.sweep().and_then(|()| q.maintain(false)) {
                tracing::warn!(queue = %q.name(), error = %e, "quorum queue maintenance failed");
            }
        }
    }
}

/// Opens quorum queue `name` of `vhost` as `image` declares it, on this
/// node, which must lead the queue's partition (otherwise
/// `NotLeaderOrFollower`), replaying the partition's log. Only
/// `sync_quorum_queues` calls it: one queue per leadership.
fn open_in(broker: &Broker, image: &MetadataImage, vhost: &str, name: &str) -> Result<Arc<Queue>, MessagingError> {
    let not_found = || MessagingError::NotFound(format!("no queue '{name}' in vhost '{vhost}'"));
    let def = image.amqp.get(vhost).and_then(|d| d.queues.get(name)).ok_or_else(not_found)?;
    let QueueKind::Quorum { topic_id } = def.kind else {
        return Err(MessagingError::PreconditionFailed(format!("queue '{name}' in vhost '{vhost}' is classic")));
    };
    let info = image.topic_by_id(topic_id).ok_or_else(not_found)?;
    let partition = broker
        .topic(&info.name)
        .and_then(|t| t.partition(0))
        .ok_or(MessagingError::Internal(BrokerError::NotLeaderOrFollower))?;
    if partition.leader_state().is_none() {
        return Err(MessagingError::Internal(BrokerError::NotLeaderOrFollower));
    }
    let spec = QueueSpec {
        name: name.to_string(),
        durable: true,
        exclusive_owner: None,
        auto_delete: def.auto_delete,
        arguments: def.arguments.0.clone(),
    };
    Queue::open_replicated(spec, partition)
}

#[cfg(test)]
pub(super) mod tests {
    use bytes::Bytes;

    use std::sync::Arc;

    use crate::broker::{Broker, BrokerConfig};
    use crate::messaging::{Headers, Message, Published};
    use crate::metadata::{AmqpRequest, Arguments, ControllerRequest, MetadataRecord, QueueKind, QueueType};

    /// Message `m{i}` for the queue `orders` (also the forwarding tests').
    pub(in crate::messaging) fn message(i: u32) -> Message {
        Message {
            exchange: String::new(),
            routing_key: "orders".into(),
            properties: Bytes::new(),
            body: Bytes::from(format!("m{i}")),
            persistent: true,
            headers: Headers::new(),
            expires_at: None,
            priority: 0,
            deliver_at: None,
            retry_queue: None,
            retries: 0,
        }
    }

    /// A quorum queue follows its partition's leadership: served while
    /// this node leads, closed when it stops, served again from the
    /// partition's log in the next leader epoch. Across each takeover
    /// acknowledged messages never come back, messages out with consumers
    /// come back flagged redelivered, a returned message keeps its delivery
    /// count, and the partition holds the cursor (no cursor files).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_leader_serves_the_queue_from_the_partition_log() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(BrokerConfig { data_dir: dir.path().to_path_buf(), ..Default::default() }).unwrap();
        let controller = crate::testing::install(&broker);
        crate::testing::declare_quorum(&broker, "orders").await;
        let classic = ControllerRequest::Amqp(AmqpRequest::DeclareQueue {
            vhost: "/".into(),
            name: "local".into(),
            auto_delete: false,
            arguments: Arguments::default(),
            queue_type: QueueType::Classic,
        });
        broker.submit_change(classic).await.unwrap();
        assert!(broker.quorum_queue("/", "local").is_none(), "a classic queue is no quorum queue");
        assert!(broker.quorum_queue("/", "nope").is_none());
        let QueueKind::Quorum { topic_id } = broker.metadata().amqp["/"].queues["orders"].kind else {
            panic!("not a quorum queue")
        };
        // Leadership moves away and back: a new leader epoch, a new leader's replay.
        let takeover = || {
            let lead = |leader| MetadataRecord::PartitionChange {
                topic_id,
                partition: 0,
                leader,
                isr: vec![broker.node_id()],
                replicas: None,
                elr: None,
            };
            controller.apply(vec![lead(-1)]).unwrap();
            assert!(broker.quorum_queue("/", "orders").is_none(), "not served without the leadership");
            controller.apply(vec![lead(broker.node_id())]).unwrap();
            broker.quorum_queue("/", "orders").unwrap()
        };

        let q = broker.quorum_queue("/", "orders").unwrap();
        assert!(q.is_replicated());
        for i in 0..10 {
            let Published::Stored(offset) = q.publish(&message(i)).unwrap() else { panic!("refused") };
            let (tx, rx) = tokio::sync::oneshot::channel();
            q.on_durable(offset, move |ok| {
                let _ = tx.send(ok);
            });
            assert!(rx.await.unwrap(), "confirmed once the ISR has it");
        }
        assert_eq!(q.ready_count(), 10);
        let mut taken = Vec::new();
        for _ in 0..6 {
            taken.push(q.take(None).unwrap().unwrap());
        }
        let body = |d: &crate::messaging::Delivery| String::from_utf8(d.message.body.to_vec()).unwrap();
        assert_eq!(taken.iter().map(body).collect::<Vec<_>>(), ["m0", "m1", "m2", "m3", "m4", "m5"]);
        assert!(taken.iter().all(|d| !d.redelivered && d.delivery_count == 1));
        q.ack(&[taken[0].message.offset, taken[1].message.offset, taken[2].message.offset]).unwrap();
        // m3 handed back and taken again: its second delivery.
        q.requeue(&[taken[3].message.offset]).unwrap();
        let again = q.take(None).unwrap().unwrap();
        assert_eq!((body(&again).as_str(), again.redelivered, again.delivery_count), ("m3", true, 2));
        // Nothing under the queue's own directory besides the partition's files.
        assert!(!q.dir().join("cursor.json").exists() && !q.dir().join("cursor.journal").exists());
        let old = q;

        // The next leader (here: the same node, in a new leader epoch).
        let q = takeover();
        assert!(old.is_deleted() && old.take(None).unwrap().is_none(), "the deposed queue stops serving");
        assert_eq!(q.ready_count(), 7, "m3..m9: the acknowledged m0..m2 are gone");
        let mut after = Vec::new();
        while let Some(d) = q.take(None).unwrap() {
            after.push(d);
        }
        let got: Vec<String> = after.iter().map(body).collect();
        assert_eq!(got, ["m3", "m4", "m5", "m6", "m7", "m8", "m9"], "returned first, then in log order");
        // m3 comes back with the count its return recorded, plus this delivery.
        assert_eq!((after[0].redelivered, after[0].delivery_count), (true, 2));
        // m4 and m5 were out with a consumer of the old leader: flagged.
        assert!(after[1].redelivered && after[2].redelivered);
        let offsets: Vec<u64> = after.iter().map(|d| d.message.offset).collect();
        q.ack(&offsets).unwrap();
        q.maintain(true).unwrap();

        // Everything acknowledged: a third leader has nothing to deliver,
        // and the log's acknowledged prefix is gone up to the snapshot.
        let q = takeover();
        assert_eq!(q.ready_count(), 0);
        assert!(q.take(None).unwrap().is_none());
        assert!(q.log().log_start_offset() > 0, "acknowledged prefix trimmed");
    }

    /// A quorum queue with a length limit takes its messages one at a
    /// time (the limit is checked under the cursor's lock), and those go
    /// through the partition too: refused once this node stops leading. Before, they went to the log
    /// directly, so a deposed leader still stored them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_length_limited_quorum_queue_appends_through_its_partition() {
        use crate::messaging::HeaderValue;
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(BrokerConfig { data_dir: dir.path().to_path_buf(), ..Default::default() }).unwrap();
        let controller = crate::testing::install(&broker);
        let declare = ControllerRequest::Amqp(AmqpRequest::DeclareQueue {
            vhost: "/".into(),
            name: "orders".into(),
            auto_delete: false,
            arguments: Arguments([("x-max-length".to_string(), HeaderValue::Int(3))].into()),
            queue_type: QueueType::Quorum { group_size: None },
        });
        broker.submit_change(declare).await.unwrap();
        let QueueKind::Quorum { topic_id } = broker.metadata().amqp["/"].queues["orders"].kind else {
            panic!("not a quorum queue")
        };
        let q = broker.quorum_queue("/", "orders").unwrap();
        assert!(q.args.limited());
        for i in 0..4 {
            assert!(matches!(q.publish(&message(i)).unwrap(), Published::Stored(_)));
        }

        let end = q.log().next_offset();
        controller
            .apply(vec![MetadataRecord::PartitionChange {
                topic_id,
                partition: 0,
                leader: -1,
                isr: vec![broker.node_id()],
                replicas: None,
                elr: None,
            }])
            .unwrap();
        assert!(q.publish(&message(9)).is_err(), "a deposed leader refuses");
        assert_eq!(q.log().next_offset(), end, "and stores nothing");
    }

    /// Deliveries over several delivered-mark windows, then a snapshot
    /// record and a trimmed log: the next leader still flags every
    /// delivery left unacknowledged (the marks are recorded ahead and the
    /// snapshot carries the highest), and only those.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delivered_marks_cover_every_delivery_across_windows_and_snapshots() {
        const N: u32 = 3000;
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(BrokerConfig { data_dir: dir.path().to_path_buf(), ..Default::default() }).unwrap();
        let controller = crate::testing::install(&broker);
        crate::testing::declare_quorum(&broker, "big").await;
        let q = broker.quorum_queue("/", "big").unwrap();
        let mut last = 0;
        for i in 0..N {
            let Published::Stored(offset) = q.publish(&message(i)).unwrap() else { panic!("refused") };
            last = offset;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        q.on_durable(last, move |ok| {
            let _ = tx.send(ok);
        });
        assert!(rx.await.unwrap());
        // 2500 out over two and a half windows; the first 2000 acknowledged.
        let mut out = Vec::new();
        for _ in 0..2500 {
            out.push(q.take(None).unwrap().unwrap());
        }
        let acked: Vec<u64> = out[..2000].iter().map(|d| d.message.offset).collect();
        q.ack(&acked).unwrap();
        q.maintain(true).unwrap();
        let start = q.log().log_start_offset();
        assert!(start > 0, "trimmed up to the snapshot record");
        let QueueKind::Quorum { topic_id } = broker.metadata().amqp["/"].queues["big"].kind else {
            panic!("not a quorum queue")
        };
        let lead = |leader| MetadataRecord::PartitionChange {
            topic_id,
            partition: 0,
            leader,
            isr: vec![broker.node_id()],
            replicas: None,
            elr: None,
        };
        controller.apply(vec![lead(-1)]).unwrap();
        controller.apply(vec![lead(broker.node_id())]).unwrap();
        let q = broker.quorum_queue("/", "big").unwrap();
        let mut after = Vec::new();
        while let Some(d) = q.take(None).unwrap() {
            after.push(d);
        }
        assert_eq!(after.len(), (N - 2000) as usize);
        for d in &after[..500] {
            assert!(d.redelivered, "offset {} was out: flagged", d.message.offset);
        }
        assert_eq!(after[0].message.offset, out[2000].message.offset);
    }

    /// Through a vhost, as the AMQP front-end calls it: `x-queue-type:
    /// quorum` (or, in a cluster of more than one node, no type) declares a
    /// quorum queue through the controller, which the vhost then finds,
    /// routes to and deletes (with its partition); classic declarations
    /// keep node-local queues, declared in the metadata too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_vhost_declares_routes_to_and_deletes_quorum_queues() {
        use crate::messaging::{HeaderValue, Hooks, QueueSpec, Vhosts};
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(BrokerConfig { data_dir: dir.path().to_path_buf(), ..Default::default() }).unwrap();
        let controller = crate::testing::install(&broker);
        let hooks = Hooks { broker: Some(broker.clone()), ..Default::default() };
        let vhosts = Vhosts::open(dir.path(), Default::default(), &["/".to_string()], hooks).unwrap();
        let vhost = vhosts.get("/").unwrap();
        let spec = |name: &str, queue_type: &str| QueueSpec {
            name: name.into(),
            durable: true,
            exclusive_owner: None,
            auto_delete: false,
            arguments: [("x-queue-type".to_string(), HeaderValue::Str(queue_type.into()))].into(),
        };
        // A single node: without `x-queue-type`, classic (held by this node,
        // as before, but declared in the metadata); asked for, quorum.
        let mut plain_spec = spec("solo", "classic");
        plain_spec.arguments.clear();
        let single = vhost.declare_queue(plain_spec, false, 1).unwrap();
        assert!(!single.is_replicated());
        let node = broker.node_id();
        assert_eq!(broker.metadata().amqp["/"].queues["solo"].kind, QueueKind::Classic { node });
        assert!(vhost.declare_queue(spec("one", "quorum"), false, 1).unwrap().is_replicated());

        // A second node registers: quorum queues are the default now.
        let mut second = controller.node("127.0.0.1:9093");
        second.id = broker.node_id() + 1;
        controller.apply(vec![MetadataRecord::RegisterNode(second)]).unwrap();
        let mut unnamed_type = spec("by-default", "classic");
        unnamed_type.arguments.clear();
        assert!(vhost.declare_queue(unnamed_type, false, 1).unwrap().is_replicated());
        let q = vhost.declare_queue(spec("orders", "quorum"), false, 1).unwrap();
        assert!(q.is_replicated());
        assert!(matches!(broker.metadata().amqp["/"].queues["orders"].kind, QueueKind::Quorum { .. }));
        assert!(!vhost.declare_queue(spec("plain", "classic"), false, 1).unwrap().is_replicated());
        // Redeclared as classic: refused (406), as RabbitMQ.
        let err = vhost.declare_queue(spec("orders", "classic"), false, 1).unwrap_err();
        assert!(matches!(err, crate::messaging::MessagingError::PreconditionFailed(_)), "{err:?}");
        let bad = vhost.declare_queue(spec("x", "stream"), false, 1).unwrap_err();
        assert!(matches!(bad, crate::messaging::MessagingError::PreconditionFailed(_)), "{bad:?}");
        // Passive declares and the default exchange find it.
        assert!(Arc::ptr_eq(&vhost.declare_queue(spec("orders", "quorum"), true, 1).unwrap(), &q));
        let routed = vhost.route("", "orders", &Headers::new()).unwrap();
        assert_eq!(routed.len(), 1);
        let Published::Stored(offset) = routed[0].publish(&message(1)).unwrap() else { panic!("refused") };
        let (tx, rx) = tokio::sync::oneshot::channel();
        routed[0].on_durable(offset, move |ok| {
            let _ = tx.send(ok);
        });
        assert!(rx.await.unwrap());
        let d = q.take(None).unwrap().unwrap();
        assert_eq!(&d.message.body[..], b"m1");
        q.ack(&[d.message.offset]).unwrap();

        // Deleting it deletes the metadata and its partition's topic.
        let QueueKind::Quorum { topic_id } = broker.metadata().amqp["/"].queues["orders"].kind else {
            panic!("not a quorum queue")
        };
        vhost.delete_queue("orders", false, false, 1).unwrap();
        assert!(q.is_deleted());
        assert!(broker.metadata().topic_by_id(topic_id).is_none());
        assert!(vhost.queue("orders").is_none());
        assert!(vhost.queue("plain").is_some() && vhost.queue("solo").is_some(), "classic queues stay");
        vhosts.shutdown();
    }

    /// A broker with its test controller and vhost "/", `others` more
    /// nodes registered (the ids after this one's), and quorum queue
    /// `orders` declared through the vhost: the leader tests' setting.
    struct Orders {
        _dir: tempfile::TempDir,
        broker: Arc<Broker>,
        controller: Arc<crate::testing::TestController>,
        vhosts: Arc<crate::messaging::Vhosts>,
        vhost: Arc<crate::messaging::Vhost>,
        h: crate::messaging::QueueHandle,
        topic_id: uuid::Uuid,
    }

    fn orders(others: i32) -> Orders {
        use crate::messaging::{HeaderValue, Hooks, QueueSpec, Vhosts};
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(BrokerConfig { data_dir: dir.path().to_path_buf(), ..Default::default() }).unwrap();
        let controller = crate::testing::install(&broker);
        let hooks = Hooks { broker: Some(broker.clone()), ..Default::default() };
        let vhosts = Vhosts::open(dir.path(), Default::default(), &["/".to_string()], hooks).unwrap();
        let vhost = vhosts.get("/").unwrap();
        for id in 1..=others {
            let mut other = controller.node("127.0.0.1:9093");
            other.id = broker.node_id() + id;
            controller.apply(vec![MetadataRecord::RegisterNode(other)]).unwrap();
        }
        let spec = QueueSpec {
            name: "orders".into(),
            durable: true,
            exclusive_owner: None,
            auto_delete: false,
            arguments: [("x-queue-type".to_string(), HeaderValue::Str("quorum".into()))].into(),
        };
        let h = vhost.declare_queue_handle(spec, false, 1).unwrap();
        let QueueKind::Quorum { topic_id } = broker.metadata().amqp["/"].queues["orders"].kind else {
            panic!("not a quorum queue")
        };
        Orders { _dir: dir, broker, controller, vhosts, vhost, h, topic_id }
    }

    /// The bodies of the messages ready in the `orders` led here, taken.
    pub(crate) fn ready_bodies(broker: &Broker) -> Vec<String> {
        let q = broker.quorum_queue("/", "orders").unwrap();
        let mut bodies = Vec::new();
        while let Some(d) = q.take(None).unwrap() {
            bodies.push(String::from_utf8(d.message.body.to_vec()).unwrap());
        }
        bodies
    }

    /// A forwarded ack (`Queue::ack_anywhere`) settles a message this
    /// leader has not handed out yet (an ack re-sent to a new leader after
    /// a takeover), and the periodic sweep then drops that settled head
    /// without expiring the message behind it (it used to take the next
    /// message as "expired": lost). The vhost answers a quorum queue with a
    /// handle that reaches it wherever it is led.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forwarded_acks_settle_undelivered_messages_and_the_sweep_keeps_the_next() {
        use crate::messaging::{HandlePublished, QueueHandle};
        let Orders { _dir, broker, vhosts, vhost, h, .. } = orders(1);
        assert!(matches!(h, QueueHandle::Quorum(_)), "a quorum queue is reached through its client");
        assert!(matches!(vhost.queue_handle("orders"), Some(QueueHandle::Quorum(_))));
        for i in 0..3 {
            let HandlePublished::Stored(wait) = h.publish(&message(i)).unwrap() else { panic!("not stored") };
            let (tx, rx) = tokio::sync::oneshot::channel();
            wait.on_done(move |ok| {
                let _ = tx.send(ok);
            });
            assert!(rx.await.unwrap(), "confirmed once the ISR has it");
        }
        assert_eq!(h.counts(), (3, 0));
        let q = broker.quorum_queue("/", "orders").unwrap();
        assert_eq!(q.ready_count(), 3, "led here: stored by the local queue");
        let offsets: Vec<u64> = (0..3).map(|_| q.take(None).unwrap().unwrap().message.offset).collect();
        q.requeue(&offsets).unwrap();
        q.ack_anywhere(&offsets[..1]).unwrap();
        q.sweep().unwrap();
        let d = q.take(None).unwrap().unwrap();
        assert_eq!(&d.message.body[..], b"m1", "the acknowledged head is gone, the next is not expired");
        assert_eq!(&q.take(None).unwrap().unwrap().message.body[..], b"m2");
        assert!(q.take(None).unwrap().is_none());
        vhosts.shutdown();
    }

    /// Found 13 (chaos seed 19, FailedWriteVisible): a persistent message
    /// published here while this node leads is stored, and the leadership
    /// ends before the ISR has it (here: a second ISR member that never
    /// fetches). The record survives in the next leader's log (here: the
    /// same log in the next leader epoch), so the publish is not nacked:
    /// it is retried with its publisher id, which the next leader finds in
    /// its log, and confirmed once, stored once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_local_publish_outliving_its_leadership_is_confirmed_by_the_next_and_stored_once() {
        use crate::messaging::remote_queue::tests::takeover;
        use crate::messaging::{HandlePublished, QueueHandle};
        let Orders { _dir, broker, controller, vhosts, h, topic_id, .. } = orders(1);
        assert!(matches!(h, QueueHandle::Quorum(_)));
        let both = vec![broker.node_id(), broker.node_id() + 1];
        controller
            .apply(vec![MetadataRecord::PartitionChange {
                topic_id,
                partition: 0,
                leader: broker.node_id(),
                isr: both.clone(),
                replicas: Some(both),
                elr: None,
            }])
            .unwrap();
        assert!(broker.quorum_queue("/", "orders").is_some(), "led here");

        let HandlePublished::Stored(wait) = h.publish(&message(0)).unwrap() else { panic!("not stored") };
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        wait.on_done(move |ok| {
            let _ = tx.send(ok);
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(rx.try_recv().is_err(), "not confirmed while the second ISR member lacks it");
        takeover(&broker, &controller, vec![broker.node_id()]);
        let confirmed = tokio::time::timeout(std::time::Duration::from_secs(20), rx).await;
        assert!(matches!(confirmed, Ok(Ok(true))), "confirmed by the next leadership, not nacked: {confirmed:?}");
        let bodies = ready_bodies(&broker);
        assert_eq!(bodies, ["m0"], "stored once");
        vhosts.shutdown();
    }

    /// Acks before confirms (docs/cluster.md) on the leader's own node: an
    /// ack whose cursor record the ISR lacks (a second ISR member that
    /// never fetches) holds the confirm of a later publish, a transient one
    /// too (otherwise confirmed at once), until the record is on the ISR
    /// (here: the ISR shrinks to this node). A confirm seen before a kill
    /// -9 so never leaves an earlier ack behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_confirm_on_the_leader_waits_for_an_earlier_ack_on_the_isr() {
        use crate::messaging::{HandlePublished, QueueHandle};
        let Orders { _dir, broker, controller, vhosts, h, topic_id, .. } = orders(1);
        let me = broker.node_id();
        let QueueHandle::Quorum(client) = &h else { panic!("a quorum queue is reached through its client") };
        let lead = |isr: Vec<i32>| MetadataRecord::PartitionChange {
            topic_id,
            partition: 0,
            leader: me,
            isr: isr.clone(),
            replicas: Some(isr),
            elr: None,
        };
        controller.apply(vec![lead(vec![me])]).unwrap();
        let confirmed = |wait: crate::messaging::PublishWait| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            wait.on_done(move |ok| {
                let _ = tx.send(ok);
            });
            rx
        };
        let HandlePublished::Stored(wait) = h.publish(&message(0)).unwrap() else { panic!("not stored") };
        assert!(confirmed(wait).await.unwrap(), "m0 confirmed");
        let (d, _) = client.get().unwrap().expect("m0 delivered");

        // The second replica joins the ISR and never fetches; m0 is acked.
        controller.apply(vec![lead(vec![me, me + 1])]).unwrap();
        client.settle(&[d.message.offset], &[], &[]);
        let transient = Message { persistent: false, ..message(1) };
        let HandlePublished::Stored(wait) = h.publish(&transient).unwrap() else {
            panic!("a transient publish after an unanswered ack was confirmed at once")
        };
        let mut m1 = confirmed(wait);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(m1.try_recv().is_err(), "m1 not confirmed while the ISR lacks the ack before it");

        // The ISR has everything (here: it shrinks to this node): the ack, then m1.
        controller.apply(vec![lead(vec![me])]).unwrap();
        let m1 = tokio::time::timeout(std::time::Duration::from_secs(20), m1).await;
        assert!(matches!(m1, Ok(Ok(true))), "m1 confirmed once the ack is on the ISR: {m1:?}");
        let bodies = ready_bodies(&broker);
        assert_eq!(bodies, ["m1"], "m0 acknowledged");
        vhosts.shutdown();
    }

    /// The lost QoS 2 message of issue #17 (an MQTT session queue led by
    /// the publisher's node): a persistent publish on the leader while the
    /// ISR is below min.insync.replicas (two followers fenced under load)
    /// was refused at once, which the MQTT front-end took for a full queue
    /// and dropped after acknowledging it. It now waits in the publish
    /// pipeline, in order, and is stored once the ISR allows: one copy,
    /// confirmed, nothing refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_local_publish_refused_for_too_few_in_sync_replicas_waits_for_them() {
        use crate::messaging::{HandlePublished, QueueHandle};
        let Orders { _dir, broker, controller, vhosts, h, topic_id, .. } = orders(2);
        let me = broker.node_id();
        assert!(matches!(h, QueueHandle::Quorum(_)));
        let lead = |replicas: Vec<i32>| MetadataRecord::PartitionChange {
            topic_id,
            partition: 0,
            leader: me,
            isr: vec![me],
            replicas: Some(replicas),
            elr: None,
        };
        // Three replicas (min.insync.replicas 2), the followers out of the ISR.
        controller.apply(vec![lead(vec![me, me + 1, me + 2])]).unwrap();
        let q = broker.quorum_queue("/", "orders").expect("led here");

        let mut waits = Vec::new();
        for i in 0..2 {
            let HandlePublished::Stored(wait) = h.publish(&message(i)).unwrap() else {
                panic!("m{i} refused while the ISR is short: a publisher would take it for stored or dropped")
            };
            let (tx, rx) = tokio::sync::oneshot::channel();
            wait.on_done(move |ok| {
                let _ = tx.send(ok);
            });
            waits.push(rx);
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(q.ready_count(), 0, "nothing stored while the ISR is short");
        assert!(waits[0].try_recv().is_err(), "not confirmed while the ISR is short");

        // The ISR is enough again (here: the replicas shrink to this node).
        controller.apply(vec![lead(vec![me])]).unwrap();
        for (i, rx) in waits.into_iter().enumerate() {
            let confirmed = tokio::time::timeout(std::time::Duration::from_secs(20), rx).await;
            assert!(matches!(confirmed, Ok(Ok(true))), "m{i} confirmed once stored: {confirmed:?}");
        }
        let bodies = ready_bodies(&broker);
        assert_eq!(bodies, ["m0", "m1"], "stored once each, in order");
        vhosts.shutdown();
    }
}
