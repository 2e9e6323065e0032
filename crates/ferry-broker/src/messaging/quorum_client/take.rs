//! A remote take whose deliveries are never stranded. A take long-polls
//! the queue's leader, which hands the deliveries to this node's session
//! as soon as it answers. If the consumer goes away while the call is out
//! (basic.cancel and closed channels abort the consumer's task, dropping
//! its future), or between the answer and its buffering, nobody would
//! deliver or settle them: the session keeps them (renewed while this
//! node holds deliveries) until the node dies. So the call runs in a task
//! of its own, and what it brings back for a consumer that is gone is
//! handed back to the queue (requeued, like a closed channel's deliveries).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::task::JoinHandle;

use super::QuorumClient;
use crate::metadata::{PeerError, PeerReply, PeerRequest, WireDelivery};

/// A take on its way; dropped before it finished, it hands back what the
/// leader answers.
struct InFlight {
    client: Arc<QuorumClient>,
    call: Option<JoinHandle<Result<PeerReply, PeerError>>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some(call) = self.call.take() else { return };
        let client = self.client.clone();
        // The consumer's runtime is still running (only its task ended).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Ok(Ok(PeerReply::QueueDeliveries { deliveries, .. })) = call.await {
                    client.hand_back(&deliveries);
                }
            });
        }
    }
}

impl QuorumClient {
    /// Sends `take` (a [`PeerRequest::QueueTake`]) to `node` and returns
    /// its answer; if the caller stops waiting first, the deliveries go
    /// back to the queue when the answer comes.
    pub(super) async fn take_from(self: &Arc<Self>, node: i32, take: PeerRequest) -> Result<PeerReply, PeerError> {
        let client = self.clone();
        let call = tokio::spawn(async move { client.call(node, take).await });
        let mut in_flight = InFlight { client: self.clone(), call: Some(call) };
        let answer = match in_flight.call.as_mut() {
            Some(call) => call.await,
            None => return Err(PeerError::Unavailable("take not started".into())),
        };
        in_flight.call = None;
        answer.unwrap_or_else(|e| Err(PeerError::Unavailable(format!("take task ended: {e}"))))
    }

    /// Deliveries taken for a consumer that is gone: back to the queue
    /// through the settlement pipeline (counted as held until answered).
    pub(super) fn hand_back(self: &Arc<Self>, deliveries: &[WireDelivery]) {
        if deliveries.is_empty() {
            return;
        }
        self.unsettled.fetch_add(deliveries.len() as i64, Ordering::Relaxed);
        let offsets: Vec<u64> = deliveries.iter().map(|d| d.offset).collect();
        self.settle(&[], &offsets, &[]);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::Notify;

    use crate::broker::{Broker, BrokerConfig};
    use crate::messaging::MessagingError;
    use crate::messaging::consumer::Credit;
    use crate::messaging::queue::Published;
    use crate::messaging::quorum::tests::message;
    use crate::metadata::{
        Controller, ControllerFuture, ControllerReply, ControllerRequest, ControllerStatus, MetadataRecord, PeerFuture,
        PeerRequest,
    };

    /// What goes wrong on node 2's link to node 1.
    #[derive(Clone, Copy, Default)]
    struct Faults {
        /// Every take's answer is lost after the leader carried it out.
        lose_takes: bool,
        /// Consumer registrations reach the leader only this late (a dead
        /// leader, not fenced yet).
        hang_registrations: Option<Duration>,
        /// This many cancels are lost before they reach the leader.
        lost_cancels: usize,
    }

    /// Node 2's controller: its peer calls reach node 1's broker, and a
    /// take's answer comes back only after `delay` (the take is out).
    struct Routed {
        leader: Arc<Broker>,
        delay: Duration,
        answered: Arc<Notify>,
        faults: Faults,
        /// Cancels lost so far.
        cancels_lost: std::sync::atomic::AtomicUsize,
    }

    impl Controller for Routed {
        fn submit(&self, _request: ControllerRequest) -> ControllerFuture<ControllerReply> {
            crate::testing::no_submit()
        }

        fn status(&self) -> ControllerStatus {
            crate::testing::node2_status()
        }

        fn call_peer(&self, _node: i32, request: PeerRequest) -> PeerFuture {
            let (leader, delay, answered, lose) =
                (self.leader.clone(), self.delay, self.answered.clone(), self.faults.lose_takes);
            let hang = self
                .faults
                .hang_registrations
                .filter(|_| matches!(request, PeerRequest::QueueConsume { cancel: false, .. }));
            if matches!(request, PeerRequest::QueueConsume { cancel: true, .. })
                && self.cancels_lost.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < self.faults.lost_cancels
            {
                return Box::pin(async {
                    Err(crate::metadata::PeerError::Unavailable("connection reset (test)".into()))
                });
            }
            Box::pin(async move {
                if let Some(hang) = hang {
                    tokio::time::sleep(hang).await;
                }
                let take = matches!(request, PeerRequest::QueueTake { max, .. } if max > 0);
                let reply = leader.serve_peer(request).await;
                if take {
                    tokio::time::sleep(delay).await;
                    answered.notify_one();
                    if lose {
                        return Err(crate::metadata::PeerError::Unavailable("connection reset (test)".into()));
                    }
                }
                reply
            })
        }
    }

    /// Node 1 leading `orders` with three messages on its ISR, and node 2
    /// reaching it through a [`Routed`] link.
    async fn two_nodes(
        dir: &tempfile::TempDir,
        delay: Duration,
        faults: Faults,
    ) -> (Arc<Broker>, Arc<Broker>, Arc<Notify>) {
        let one = Broker::open(BrokerConfig { data_dir: dir.path().join("one"), ..Default::default() }).unwrap();
        let controller = crate::testing::install(&one);
        crate::testing::declare_quorum(&one, "orders").await;
        let q = one.quorum_queue("/", "orders").unwrap();
        for i in 0..3 {
            let Published::Stored(offset) = q.publish(&message(i)).unwrap() else { panic!("refused") };
            let (tx, rx) = tokio::sync::oneshot::channel();
            q.on_durable(offset, move |ok| {
                let _ = tx.send(ok);
            });
            assert!(rx.await.unwrap());
        }

        // Node 2 sees the same metadata (the queue led by node 1) and
        // reaches node 1 through its peer link.
        let config = BrokerConfig { data_dir: dir.path().join("two"), node_id: 2, ..Default::default() };
        let two = Broker::open(config).unwrap();
        let answered = Arc::new(Notify::new());
        let routed =
            Routed { leader: one.clone(), delay, answered: answered.clone(), faults, cancels_lost: Default::default() };
        two.set_controller(Arc::new(routed));
        // Both know node 2 (node 1 does not take its sessions for a dead
        // node's).
        let mut node = controller.node("127.0.0.1:9093");
        node.id = 2;
        controller.apply(vec![MetadataRecord::RegisterNode(node)]).unwrap();
        two.apply_image(Arc::new(controller.image()));
        assert!(two.quorum_queue("/", "orders").is_none(), "led by node 1, not here");
        (one, two, answered)
    }

    async fn eventually_ready(q: &crate::messaging::Queue, n: u64, within: Duration) {
        tokio::time::timeout(within, async {
            while q.ready_count() < n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the deliveries handed back to the queue");
    }

    /// A consumer on node 2 is cancelled (its task aborted, then removed)
    /// while its take from the leader on node 1 is out: what node 1 handed
    /// out for it goes back to the queue (redelivered, flagged) instead of
    /// staying with node 2's session.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_take_out_when_its_consumer_is_cancelled_hands_its_deliveries_back() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two, answered) = two_nodes(&dir, Duration::from_millis(500), Faults::default()).await;
        let q = one.quorum_queue("/", "orders").unwrap();
        let client = two.quorum_client("/", "orders");
        let consumer = client.add_consumer(false, 10).expect("a consumer");
        let feed = {
            let (client, consumer) = (client.clone(), consumer.clone());
            tokio::spawn(async move {
                let credit = Notify::new();
                let _ = client.next_delivery(&consumer, &credit, || Credit::Yes).await;
            })
        };
        // The take reached node 1 (everything is out with node 2's session)
        // but its answer has not come back: the consumer is cancelled.
        tokio::time::timeout(Duration::from_secs(10), async {
            while q.ready_count() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the take reached the leader");
        feed.abort();
        let _ = feed.await;
        client.remove_consumer(&consumer);
        tokio::time::timeout(Duration::from_secs(10), answered.notified()).await.expect("the take answered");

        // The answer is handed back: the three messages are ready again on
        // the leader, flagged redelivered.
        eventually_ready(&q, 3, Duration::from_secs(10)).await;
        let again = q.take(None).unwrap().unwrap();
        assert_eq!((&again.message.body[..], again.redelivered), (&b"m0"[..], true));
        assert_eq!(q.consumer_count(), 0, "the cancelled consumer is not registered again");
    }

    /// A consumer's take was answered by the leader but the answer was
    /// lost (a torn connection), and the consumer is removed before a
    /// retry gets it: the cancel names the unanswered take, and the leader
    /// hands its deliveries back at once instead of keeping them with
    /// node 2's session until it expires (30 s silent).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_consumer_removed_after_a_lost_take_answer_hands_its_deliveries_back() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two, answered) =
            two_nodes(&dir, Duration::ZERO, Faults { lose_takes: true, ..Faults::default() }).await;
        let q = one.quorum_queue("/", "orders").unwrap();
        let client = two.quorum_client("/", "orders");
        let consumer = client.add_consumer(false, 10).expect("a consumer");
        let feed = {
            let (client, consumer) = (client.clone(), consumer.clone());
            tokio::spawn(async move {
                let credit = Notify::new();
                let _ = client.next_delivery(&consumer, &credit, || Credit::Yes).await;
            })
        };
        tokio::time::timeout(Duration::from_secs(10), answered.notified()).await.expect("a take answered and lost");
        assert_eq!(q.ready_count(), 0, "out with node 2's session");
        feed.abort();
        let _ = feed.await;
        client.remove_consumer(&consumer);
        eventually_ready(&q, 3, Duration::from_secs(5)).await;
        let again = q.take(None).unwrap().unwrap();
        assert_eq!((&again.message.body[..], again.redelivered), (&b"m0"[..], true));
        assert_eq!(q.consumer_count(), 0, "the consumer is gone from the leader");
    }

    /// A consume through node 2 while the leader answers no registration
    /// (dead and not fenced yet: the cluster port waits 10 s) is answered
    /// within `REGISTER_WAIT`, not when the call times out (Found 15: the
    /// harness's client gave up first and lapin kept the consumer alive).
    /// The consumer registers with its first take and gets the messages.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_consume_does_not_wait_for_a_silent_leader() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two, _answered) = two_nodes(&dir, Duration::ZERO, hang_registrations(Duration::from_secs(40))).await;
        let client = two.quorum_client("/", "orders");
        let adding = {
            let client = client.clone();
            tokio::task::spawn_blocking(move || client.add_consumer(false, 10))
        };
        let consumer = tokio::time::timeout(Duration::from_secs(30), adding)
            .await
            .expect("the consume answered without the leader's word")
            .unwrap()
            .expect("a consumer");
        let credit = Notify::new();
        let d = tokio::time::timeout(Duration::from_secs(10), client.next_delivery(&consumer, &credit, || Credit::Yes))
            .await
            .expect("a delivery")
            .expect("the consumer goes on");
        assert_eq!(&d.message.body[..], b"m0");
        assert_eq!(one.quorum_queue("/", "orders").unwrap().consumer_count(), 1, "registered by its take");
    }

    fn hang_registrations(hang: Duration) -> Faults {
        Faults { hang_registrations: Some(hang), ..Faults::default() }
    }

    /// An exclusive consume through node 2 while the leader answers no
    /// registration (dead and not fenced yet) needs the leader's word, so
    /// it fails after `EXCLUSIVE_WAIT` as a timed-out consume (541), not
    /// after the cluster port's 10 s, past clients' own timeouts. Its
    /// cancel goes after it, and the registration, reaching the leader
    /// later, registers nothing: no consumer is left behind a consume that
    /// failed (Found 15).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_exclusive_consume_is_refused_in_time_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let hang = super::super::register::EXCLUSIVE_WAIT + Duration::from_secs(3);
        let (one, two, _answered) = two_nodes(&dir, Duration::ZERO, hang_registrations(hang)).await;
        let q = one.quorum_queue("/", "orders").unwrap();
        let client = two.quorum_client("/", "orders");
        let started = tokio::time::Instant::now();
        let adding = {
            let client = client.clone();
            tokio::task::spawn_blocking(move || client.add_consumer(true, 10))
        };
        let err = adding.await.unwrap().expect_err("no leader registered the exclusive consumer");
        assert!(started.elapsed() < hang, "answered before the registration reached the leader");
        assert!(
            matches!(&err, MessagingError::Internal(_)) && err.to_string().contains("timeout occurred during consume"),
            "{err}"
        );
        // The late registration arrives after the cancel: nothing registered.
        tokio::time::sleep(hang.saturating_sub(started.elapsed()) + Duration::from_secs(1)).await;
        assert_eq!(q.consumer_count(), 0, "a consumer left behind the failed consume");
        q.add_consumer(true).expect("the queue is free for an exclusive consumer");
    }

    /// A consumer through node 2 is removed (its channel closed) and its
    /// cancel is lost twice on the way to the leader (a torn cluster-port
    /// connection): it is sent again until the leader has it, so the
    /// leader stops counting the consumer (and would stop giving it an
    /// exclusive or single-active turn) instead of keeping it while node
    /// 2's session lives on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_cancel_is_sent_again_until_the_leader_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two, _answered) =
            two_nodes(&dir, Duration::ZERO, Faults { lost_cancels: 2, ..Faults::default() }).await;
        let q = one.quorum_queue("/", "orders").unwrap();
        let client = two.quorum_client("/", "orders");
        let consumer = client.add_consumer(false, 10).expect("a consumer");
        assert_eq!(q.consumer_count(), 1, "registered on the leader");
        client.remove_consumer(&consumer);
        tokio::time::timeout(Duration::from_secs(10), async {
            while q.consumer_count() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the leader forgot the consumer");
    }

    /// Node 2's image lags: it still names node 1's earlier leader epoch
    /// while node 1 leads again in a new one (away and back). What node 2
    /// takes from the new leadership is tagged with the old epoch; when its
    /// image catches up, the deliveries still buffered were dropped as the
    /// old leadership's, although the leader has them out with node 2's
    /// session, which every take renews: never handed out again. They are
    /// handed back now, and come again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deliveries_buffered_under_a_stale_leader_epoch_are_not_lost() {
        use crate::messaging::remote_queue::tests::takeover;
        let dir = tempfile::tempdir().unwrap();
        let one = Broker::open(BrokerConfig { data_dir: dir.path().join("one"), ..Default::default() }).unwrap();
        let controller = crate::testing::install(&one);
        crate::testing::declare_quorum(&one, "orders").await;
        let config = BrokerConfig { data_dir: dir.path().join("two"), node_id: 2, ..Default::default() };
        let two = Broker::open(config).unwrap();
        let answered = Arc::new(Notify::new());
        two.set_controller(Arc::new(Routed {
            leader: one.clone(),
            delay: Duration::ZERO,
            answered,
            faults: Faults::default(),
            cancels_lost: Default::default(),
        }));
        let image_of_two = || {
            let mut image = controller.image();
            let mut node = controller.node("127.0.0.1:9093");
            node.id = 2;
            image.apply_batch(image.applied_index + 1, &[MetadataRecord::RegisterNode(node)]).unwrap();
            Arc::new(image)
        };
        // Node 2 sees node 1 lead in the first epoch; node 1 moves on.
        two.apply_image(image_of_two());
        takeover(&one, &controller, vec![one.node_id()]);
        let q = one.quorum_queue("/", "orders").unwrap();
        for i in 0..3 {
            let Published::Stored(offset) = q.publish(&message(i)).unwrap() else { panic!("refused") };
            let (tx, rx) = tokio::sync::oneshot::channel();
            q.on_durable(offset, move |ok| {
                let _ = tx.send(ok);
            });
            assert!(rx.await.unwrap());
        }

        let client = two.quorum_client("/", "orders");
        let consumer = client.add_consumer(false, 10).expect("a consumer");
        let credit = Notify::new();
        let next = || async {
            tokio::time::timeout(Duration::from_secs(10), client.next_delivery(&consumer, &credit, || Credit::Yes))
                .await
                .expect("a delivery within 10 s")
                .expect("the consumer goes on")
        };
        // One take brings all three; the first is handed out.
        assert_eq!(&next().await.message.body[..], b"m0");
        assert_eq!(q.ready_count(), 0, "all three out with node 2's session");
        // Node 2's image catches up: the two still buffered come all the same.
        two.apply_image(image_of_two());
        let mut rest = [next().await, next().await];
        rest.sort_by_key(|d| d.message.offset);
        let bodies: Vec<&[u8]> = rest.iter().map(|d| &d.message.body[..]).collect();
        assert_eq!(bodies, [&b"m1"[..], &b"m2"[..]]);
    }
}
