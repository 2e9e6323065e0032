//! The publish pipeline against a real leader: node 2's client forwards
//! to node 1's broker through a peer link that round-trips every call
//! through JSON (as the cluster port does) and can delay ISR waits, lose
//! an answer, or move the leadership between two appends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::broker::{Broker, BrokerConfig};
use crate::messaging::quorum::tests::message;
use crate::messaging::remote_queue::tests::{leading_orders, takeover};
use crate::metadata::{
    Controller, ControllerFuture, ControllerReply, ControllerRequest, ControllerStatus, MetadataRecord, PeerError,
    PeerFuture, PeerReply, PeerRequest,
};
use crate::testing::TestController;

/// What the link does to node 2's calls.
#[derive(Default)]
pub(super) struct Faults {
    /// Each ISR wait reaches the leader this late (batches pile up).
    pub commit_delay: Duration,
    /// The answer of this publish call (0 = first) is lost after the
    /// leader carried it out.
    pub lose_publish: Option<usize>,
    /// After this publish call is carried out, the leadership moves away
    /// and back (a new leadership over the same log).
    pub takeover_after: Option<usize>,
    /// Each settlement reaches the leader this late.
    pub settle_delay: Duration,
    /// The answer of this publish call comes back this late.
    pub slow_publish: Option<(usize, Duration)>,
}

/// Node 2's controller: its peer calls reach node 1's broker.
struct Link {
    leader: Arc<Broker>,
    controller: Arc<TestController>,
    faults: Faults,
    publishes: Arc<AtomicUsize>,
    /// ISR waits out now, and the most at once.
    commits: Arc<(AtomicUsize, AtomicUsize)>,
    /// Calls the leader refused with NotLeaderOrFollower.
    refused: Arc<AtomicUsize>,
    /// Settlements the leader answered.
    settled: Arc<AtomicUsize>,
}

impl Controller for Link {
    fn submit(&self, _request: ControllerRequest) -> ControllerFuture<ControllerReply> {
        crate::testing::no_submit()
    }

    fn status(&self) -> ControllerStatus {
        crate::testing::node2_status()
    }

    fn call_peer(&self, _node: i32, request: PeerRequest) -> PeerFuture {
        let wire = serde_json::to_string(&request).expect("a request encodes");
        let request: PeerRequest = serde_json::from_str(&wire).expect("a request decodes");
        let (leader, controller) = (self.leader.clone(), self.controller.clone());
        let (commits, refused) = (self.commits.clone(), self.refused.clone());
        let publish =
            matches!(request, PeerRequest::QueuePublish { .. }).then(|| self.publishes.fetch_add(1, Ordering::SeqCst));
        let commit = matches!(request, PeerRequest::QueueCommitted { .. });
        let settle = matches!(request, PeerRequest::QueueSettle { .. });
        let (delay, lose, move_after) =
            (self.faults.commit_delay, self.faults.lose_publish, self.faults.takeover_after);
        let (settle_delay, settled) = (self.faults.settle_delay, self.settled.clone());
        let slow = self.faults.slow_publish.filter(|(n, _)| publish == Some(*n)).map(|(_, d)| d);
        Box::pin(async move {
            if commit {
                let out = commits.0.fetch_add(1, Ordering::SeqCst) + 1;
                commits.1.fetch_max(out, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
            }
            if settle {
                tokio::time::sleep(settle_delay).await;
            }
            let reply = leader.clone().serve_peer(request).await;
            if settle && reply.is_ok() {
                settled.fetch_add(1, Ordering::SeqCst);
            }
            if commit {
                commits.0.fetch_sub(1, Ordering::SeqCst);
            }
            if matches!(reply, Err(PeerError::NotLeaderOrFollower)) {
                refused.fetch_add(1, Ordering::SeqCst);
            }
            if publish.is_some() && publish == move_after {
                takeover(&leader, &controller, vec![leader.node_id()]);
            }
            if let Some(delay) = slow {
                tokio::time::sleep(delay).await;
            }
            if publish.is_some() && publish == lose {
                return Err(PeerError::Unavailable("connection reset (test)".into()));
            }
            let wire = serde_json::to_string(&reply).expect("a reply encodes");
            serde_json::from_str::<Result<PeerReply, PeerError>>(&wire).expect("a reply decodes")
        })
    }
}

pub(super) struct Setup {
    pub leader: Arc<Broker>,
    pub controller: Arc<TestController>,
    pub two: Arc<Broker>,
    commits: Arc<(AtomicUsize, AtomicUsize)>,
    refused: Arc<AtomicUsize>,
    settled: Arc<AtomicUsize>,
    publishes: Arc<AtomicUsize>,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

/// Node 1 leads `orders`; node 2 sees the same metadata and reaches node
/// 1 through a [`Link`] with `faults`.
pub(super) async fn setup(faults: Faults) -> Setup {
    let (one_dir, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (leader, controller) = leading_orders(&one_dir).await;
    let config = BrokerConfig { data_dir: dir.path().to_path_buf(), node_id: 2, ..Default::default() };
    let two = Broker::open(config).unwrap();
    let commits = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    let refused = Arc::new(AtomicUsize::new(0));
    let settled = Arc::new(AtomicUsize::new(0));
    let publishes = Arc::new(AtomicUsize::new(0));
    two.set_controller(Arc::new(Link {
        leader: leader.clone(),
        controller: controller.clone(),
        faults,
        publishes: publishes.clone(),
        commits: commits.clone(),
        refused: refused.clone(),
        settled: settled.clone(),
    }));
    let s = Setup { leader, controller, two, commits, refused, settled, publishes, _dirs: (one_dir, dir) };
    s.sync_two();
    assert!(s.two.quorum_queue("/", "orders").is_none(), "led by node 1, not here");
    s
}

impl Setup {
    /// Node 2 gets the controller's latest image (with node 2 in it).
    pub(super) fn sync_two(&self) {
        let mut image = self.controller.image();
        let mut node = self.controller.node("127.0.0.1:9093");
        node.id = 2;
        image.apply_batch(image.applied_index + 1, &[MetadataRecord::RegisterNode(node)]).unwrap();
        self.two.apply_image(Arc::new(image));
    }
}

/// Publishes `n` messages through node 2's client at once; the confirms,
/// in publish order.
async fn publish_all(two: &Arc<Broker>, n: u32) -> Vec<bool> {
    let client = two.quorum_client("/", "orders");
    let confirms = Arc::new(Mutex::new(vec![None; n as usize]));
    for i in 0..n {
        let confirms = confirms.clone();
        let done = Box::new(move |ok| confirms.lock().unwrap()[i as usize] = Some(ok));
        assert!(client.publish(&message(i), Some(done)).unwrap().is_none(), "forwarded");
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        while confirms.lock().unwrap().iter().any(Option::is_none) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every publish answered");
    confirms.lock().unwrap().iter().map(|c| c.unwrap_or(false)).collect()
}

/// The queue's messages on the leader, in log order.
fn bodies(leader: &Broker) -> Vec<String> {
    let q = leader.quorum_queue("/", "orders").unwrap();
    let mut bodies = Vec::new();
    while let Some(d) = q.take(None).unwrap() {
        bodies.push(String::from_utf8(d.message.body.to_vec()).unwrap());
    }
    bodies
}

fn expected(n: u32) -> Vec<String> {
    (0..n).map(|i| format!("m{i}")).collect()
}

/// Batches pipeline: the next one is appended while earlier ones wait for
/// the ISR (several waits out at once), and every message is confirmed
/// and stored once, in publish order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_wait_for_the_isr_together_and_keep_their_order() {
    let s = setup(Faults { commit_delay: Duration::from_millis(200), ..Faults::default() }).await;
    assert!(publish_all(&s.two, 700).await.iter().all(|ok| *ok), "all confirmed");
    assert!(s.commits.1.load(Ordering::SeqCst) >= 2, "ISR waits overlapped: {:?}", s.commits.1);
    assert_eq!(bodies(&s.leader), expected(700));
}

/// The answer of an appended batch is lost (a torn connection): the
/// pipeline sends its window again with the same ids; the leader answers
/// from its log, so nothing is stored twice and the order holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_append_answer_is_sent_again_and_stored_once() {
    let faults = Faults { commit_delay: Duration::from_millis(100), lose_publish: Some(1), ..Faults::default() };
    let s = setup(faults).await;
    assert!(publish_all(&s.two, 700).await.iter().all(|ok| *ok), "all confirmed");
    assert_eq!(bodies(&s.leader), expected(700), "each message once, in order");
}

/// The leadership changes between two appends of a pipeline: the ISR
/// waits of the old leadership and the next batch (appended `after` it)
/// are refused, the window is sent again to the new leadership, which
/// answers what its log holds; every message is confirmed, stored once, in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_change_mid_pipeline_resends_the_window_in_order() {
    let faults = Faults { commit_delay: Duration::from_millis(200), takeover_after: Some(1), ..Faults::default() };
    let s = setup(faults).await;
    assert!(publish_all(&s.two, 700).await.iter().all(|ok| *ok), "all confirmed");
    assert!(s.refused.load(Ordering::SeqCst) >= 1, "the old leadership's calls were refused");
    assert_eq!(bodies(&s.leader), expected(700), "each message once, in order");
}

/// Issue #17's acknowledged message that came back: node 2's consumer acks
/// m0, then m1 is published through the same client. The ack travels in
/// the settlement pipeline (here: slowed down), the publish in the publish
/// pipeline; m1's confirm used to come first, so a kill -9 of the leader
/// right after it could lose the ack. The confirm now comes only once the
/// leader answered the ack (its cursor record on the ISR).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_after_an_ack_waits_for_the_ack_on_the_isr() {
    let s = setup(Faults { settle_delay: Duration::from_millis(500), ..Faults::default() }).await;
    assert_eq!(publish_all(&s.two, 1).await, [true]);
    let client = s.two.quorum_client("/", "orders");
    let (d, _) = client.get().unwrap().expect("m0 delivered through node 2");
    client.settle(&[d.message.offset], &[], &[]);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let settled = s.settled.clone();
    let done = Box::new(move |ok| {
        let _ = tx.send((ok, settled.load(Ordering::SeqCst)));
    });
    assert!(client.publish(&message(1), Some(done)).unwrap().is_none(), "forwarded");
    let (ok, answered) = tokio::time::timeout(Duration::from_secs(20), rx).await.expect("m1 answered").unwrap();
    assert!(ok, "m1 confirmed");
    assert_eq!(answered, 1, "m1 confirmed before the ack made before it was answered");
    assert_eq!(bodies(&s.leader), ["m1"], "m0 acknowledged on the leader");
}

/// A batch on the ISR is confirmed while the pipeline still waits for the
/// next batch's append answer (here 3 s late), not after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_batch_is_confirmed_while_the_next_append_is_out() {
    let faults = Faults {
        commit_delay: Duration::from_millis(300),
        slow_publish: Some((1, Duration::from_secs(3))),
        ..Faults::default()
    };
    let s = setup(faults).await;
    let client = s.two.quorum_client("/", "orders");
    let confirms = Arc::new(Mutex::new(Vec::new()));
    let start = tokio::time::Instant::now();
    let confirm = |i: u32| {
        let confirms = confirms.clone();
        Box::new(move |ok| confirms.lock().unwrap().push((i, ok, start.elapsed())))
    };
    assert!(client.publish(&message(0), Some(confirm(0))).unwrap().is_none(), "forwarded");
    tokio::time::timeout(Duration::from_secs(10), async {
        while s.publishes.load(Ordering::SeqCst) < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("m0 sent");
    assert!(client.publish(&message(1), Some(confirm(1))).unwrap().is_none(), "forwarded");
    tokio::time::timeout(Duration::from_secs(20), async {
        while confirms.lock().unwrap().len() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("both answered");
    let confirms = confirms.lock().unwrap().clone();
    assert_eq!(confirms.iter().map(|(i, ok, _)| (*i, *ok)).collect::<Vec<_>>(), [(0, true), (1, true)]);
    assert!(confirms[0].2 < Duration::from_secs(2), "m0 confirmed before m1's append answer: {confirms:?}");
    assert!(confirms[1].2 >= Duration::from_secs(3), "m1 after its slow answer: {confirms:?}");
    assert_eq!(bodies(&s.leader), expected(2));
}
