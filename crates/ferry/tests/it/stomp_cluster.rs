//! STOMP in a cluster (issue #17, phase 2c): a STOMP client on any node
//! reaches a quorum queue led by another node, through the same
//! forwarding as AMQP's channels (the `QueueHandle`), and its
//! subscription outlives the leader's death.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::cluster_support::{CLUSTER_WAIT, Cluster, metadata_of};
use crate::stomp_support::Stomp;
use crate::support::watchdog;

/// The quorum queues' partition topics and their leaders, as node `via` answers Metadata.
fn queue_leader(c: &Cluster, via: i32) -> Option<i32> {
    let md = metadata_of(c.node(via), &["*"]).ok()?;
    let t = md.topics.iter().find(|t| t.name.starts_with("__amqp_queue."))?;
    t.partitions.first().map(|p| p.leader).filter(|l| *l >= 0)
}

/// The next MESSAGE's body, ack id and redelivered flag.
fn next_message(s: &mut Stomp) -> (String, String, bool) {
    let f = s.message();
    let body = String::from_utf8_lossy(&f.body).into_owned();
    let ack = f.header("ack").expect("an ack header (client-individual)").to_string();
    (body, ack, f.header("redelivered") == Some("true"))
}

/// Node 1 declares `/queue/tasks` (a quorum queue: the cluster's default
/// type) by a SEND; a STOMP client on a node that does not lead it sends
/// with receipts, another one on the third node subscribes with
/// `ack:client-individual`, acknowledges some deliveries and leaves some
/// out; the leader is killed with SIGKILL. Sends through the sending
/// node get their receipts once the next leader stored them; the
/// subscriber receives them and the deliveries it left out again, flagged
/// `redelivered:true`, and never one it acknowledged.
#[test]
fn stomp_clients_on_any_node_reach_a_quorum_queue() {
    let _guard = watchdog("stomp_cluster::stomp_clients_on_any_node_reach_a_quorum_queue", Duration::from_secs(300));
    let mut c = Cluster::start(3);
    for id in c.ids() {
        c.wait_for_brokers(id, &[1, 2, 3]);
    }
    let mut s1 = Stomp::connect(c.node(1));
    s1.send("/queue/tasks", b"first", &[("persistent", "true")]);
    let leader = {
        let deadline = Instant::now() + CLUSTER_WAIT;
        loop {
            if let Some(l) = queue_leader(&c, 1) {
                break l;
            }
            assert!(Instant::now() < deadline, "the queue's partition has no leader");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let others: Vec<i32> = c.ids().into_iter().filter(|id| *id != leader).collect();
    let (sender, receiver) = (others[0], others[1]);
    let mut tx = Stomp::connect(c.node(sender));
    let mut rx = Stomp::connect(c.node(receiver));
    rx.subscribe("s", "/queue/tasks", &[("ack", "client-individual"), ("prefetch-count", "20")]);
    for i in 0..9 {
        tx.send("/queue/tasks", format!("m{i}").as_bytes(), &[("persistent", "true")]);
    }
    let sent: BTreeSet<String> = std::iter::once("first".to_string()).chain((0..9).map(|i| format!("m{i}"))).collect();
    // All ten arrive on the third node: five acknowledged, five left out.
    let mut acked = BTreeSet::new();
    let mut out = BTreeSet::new();
    let mut got = BTreeSet::new();
    for i in 0..10 {
        let (body, ack, redelivered) = next_message(&mut rx);
        assert!(!redelivered, "{body}: first delivery");
        assert!(got.insert(body.clone()), "{body} twice");
        if i < 5 {
            rx.frame("ACK", &[("id", &ack), ("receipt", &format!("ack-{i}"))], b"");
            rx.receipt(&format!("ack-{i}"));
            acked.insert(body);
        } else {
            out.insert(body);
        }
    }
    assert_eq!(got, sent);
    // A send after the acks: its receipt means the leader's ISR has the ack
    // records before it (they are in the same log, in order).
    tx.send("/queue/tasks", b"barrier", &[("persistent", "true")]);
    let (body, ack, _) = next_message(&mut rx);
    assert_eq!(body, "barrier");
    rx.frame("ACK", &[("id", &ack)], b"");
    acked.insert(body);

    c.kill9(leader);
    // Sends through the surviving sender wait for the next leader.
    let mut after = BTreeSet::new();
    for i in 0..10 {
        let body = format!("after-{i}");
        tx.send("/queue/tasks", body.as_bytes(), &[("persistent", "true")]);
        after.insert(body);
    }
    // The subscriber gets the new ones and those out at the kill again,
    // flagged; nothing acknowledged comes back.
    let mut expected: BTreeSet<String> = out.union(&after).cloned().collect();
    while !expected.is_empty() {
        let (body, ack, redelivered) = next_message(&mut rx);
        assert!(!acked.contains(&body), "{body} was acknowledged and came back");
        if out.contains(&body) {
            assert!(redelivered, "{body} was out at the kill: redelivered:true");
        }
        if expected.remove(&body) {
            rx.frame("ACK", &[("id", &ack)], b"");
            acked.insert(body);
        }
    }
    rx.disconnect();
    tx.disconnect();
    drop(s1);
}
