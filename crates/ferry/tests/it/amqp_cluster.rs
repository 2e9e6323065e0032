//! Quorum queues on a three-node cluster (issue #17, phase 1): lapin
//! declares `x-queue-type: quorum`, publishes with confirms and consumes
//! with manual acks on the node that leads the queue's partition; that
//! node is killed with SIGKILL (twice, restarting it each time). Every
//! confirmed message is delivered by the next leader, none acknowledged
//! comes back, and the deliveries that were out when the leader died come
//! back flagged redelivered. (Phase 1 has no forwarding yet: the clients
//! follow the leader themselves.)

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, Consumer};

use crate::amqp_support::{connect, next, persistent, publish};
use crate::cluster_support::{CLUSTER_WAIT, Cluster, metadata_of};
use crate::support::{eventually_within, watchdog};

const QUEUE: &str = "orders";

fn quorum() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    t
}

/// The queue partition's (leader, ISR) as node `via` answers Metadata.
fn queue_partition(c: &Cluster, via: i32) -> Option<(i32, Vec<i32>)> {
    let md = metadata_of(c.node(via), &["*"]).ok()?;
    let t = md.topics.iter().find(|t| t.name.starts_with("__amqp_queue."))?;
    let p = t.partitions.first()?;
    Some((p.leader, p.isr.clone()))
}

/// Connects to the node serving the queue (its partition's leader, not
/// `dead`) and declares the queue there: retried until a node accepts,
/// since leadership moves take a session timeout.
async fn serving(c: &Cluster, live: &[i32], dead: Option<i32>) -> (i32, Connection, Channel) {
    let deadline = Instant::now() + CLUSTER_WAIT;
    loop {
        assert!(Instant::now() < deadline, "no node serves the quorum queue");
        // The partition's leader once the queue exists; before, any node
        // (the first declaration creates it, wherever it is placed).
        let candidates: Vec<i32> = match queue_partition(c, live[0]) {
            Some((leader, _)) => vec![leader].into_iter().filter(|l| live.contains(l) && Some(*l) != dead).collect(),
            None => live.to_vec(),
        };
        for id in candidates {
            let conn = connect(c.node(id)).await;
            let ch = conn.create_channel().await.expect("channel");
            let opts = QueueDeclareOptions { durable: true, ..Default::default() };
            if ch.queue_declare(QUEUE.into(), opts, quorum()).await.is_ok() {
                return (id, conn, ch);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn consumer(ch: &Channel, tag: &str) -> Consumer {
    ch.basic_qos(10, BasicQosOptions::default()).await.unwrap();
    ch.basic_consume(QUEUE.into(), tag.into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("basic.consume")
}

/// Publishes `bodies` with confirms through `ch`.
async fn publish_all(ch: &Channel, bodies: impl Iterator<Item = String>) -> Vec<String> {
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let mut sent = Vec::new();
    for b in bodies {
        publish(ch, "", QUEUE, b.as_bytes(), persistent()).await;
        sent.push(b);
    }
    sent
}

/// Drains what the new leader must deliver: every confirmed message not
/// acknowledged, none acknowledged, those that were out with the killed
/// leader's consumer flagged redelivered; acknowledges each.
async fn drain(
    cons: &mut Consumer,
    confirmed: &BTreeSet<String>,
    acked: &mut BTreeSet<String>,
    out_at_kill: &BTreeSet<String>,
) {
    let expected: BTreeSet<String> = confirmed.difference(acked).cloned().collect();
    let mut seen = BTreeSet::new();
    while seen != expected {
        let d = next(cons).await;
        let body = String::from_utf8(d.data.clone()).unwrap();
        assert!(!acked.contains(&body), "{body} was acknowledged and came back");
        assert!(expected.contains(&body), "{body} was never confirmed");
        if out_at_kill.contains(&body) {
            assert!(d.redelivered, "{body} was out when its leader died: it must come back flagged");
        }
        d.ack(BasicAckOptions::default()).await.unwrap();
        acked.insert(body.clone());
        seen.insert(body);
    }
}

#[test]
fn a_quorum_queue_survives_its_leaders_sigkill() {
    let _guard = watchdog("amqp_cluster::a_quorum_queue_survives_its_leaders_sigkill", Duration::from_secs(300));
    // One runtime throughout: a connection stays open (its deliveries out)
    // until its node is killed, instead of closing when a runtime ends.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut c = Cluster::start(3);
    for id in c.ids() {
        c.wait_for_brokers(id, &[1, 2, 3]);
    }
    let mut acked: BTreeSet<String> = BTreeSet::new();
    let mut confirmed: BTreeSet<String> = BTreeSet::new();
    let mut out_at_kill: BTreeSet<String> = BTreeSet::new();
    let mut dead = None;
    for round in 0..2 {
        let live: Vec<i32> = c.ids().into_iter().filter(|id| Some(*id) != dead).collect();
        let (leader, conn) = rt.block_on(async {
            let (leader, conn, ch) = serving(&c, &live, dead).await;
            // Everything confirmed so far (after a kill: by the old
            // leader) is delivered here, except what was acknowledged.
            let cch = conn.create_channel().await.unwrap();
            let mut cons = consumer(&cch, "c").await;
            drain(&mut cons, &confirmed, &mut acked, &out_at_kill).await;
            // New messages: 10 go out, 5 are acknowledged, 5 stay out with
            // the consumer when the leader dies.
            confirmed.extend(publish_all(&ch, (0..20).map(|i| format!("r{round}-m{i}"))).await);
            let mut out = Vec::new();
            for _ in 0..10 {
                out.push(next(&mut cons).await);
            }
            out_at_kill.clear();
            for (i, d) in out.iter().enumerate() {
                let body = String::from_utf8(d.data.clone()).unwrap();
                if i < 5 {
                    d.ack(BasicAckOptions::default()).await.unwrap();
                    acked.insert(body);
                } else {
                    out_at_kill.insert(body);
                }
            }
            // A confirmed publish after the acks: its confirm means the
            // ISR has everything before it in the queue's log, the ack
            // records too.
            confirmed.extend(publish_all(&ch, std::iter::once(format!("r{round}-barrier"))).await);
            (leader, conn)
        });
        // The partition has three in-sync replicas before each kill.
        if let Some(prev) = dead {
            c.restart(prev);
            eventually_within("the restarted node back in the ISR", CLUSTER_WAIT, || {
                queue_partition(&c, leader).is_some_and(|(_, isr)| isr.len() == 3)
            });
        }
        c.kill9(leader);
        drop(conn);
        dead = Some(leader);
    }
    // The last leader's successor delivers the rest.
    let live: Vec<i32> = c.ids().into_iter().filter(|id| Some(*id) != dead).collect();
    rt.block_on(async {
        let (_, conn, _ch) = serving(&c, &live, dead).await;
        let cch = conn.create_channel().await.unwrap();
        let mut cons = consumer(&cch, "last").await;
        assert_eq!(confirmed.difference(&acked).count(), 5 + 10 + 1);
        drain(&mut cons, &confirmed, &mut acked, &out_at_kill).await;
    });
}
