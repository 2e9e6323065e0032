//! Quorum queues on a three-node cluster (issue #17, phase 1): lapin
//! declares `x-queue-type: quorum`, publishes with confirms and consumes
//! with manual acks on the node that leads the queue's partition; that
//! node is killed with SIGKILL (twice, restarting it each time). Every
//! confirmed message is delivered by the next leader, none acknowledged
//! comes back, and the deliveries that were out when the leader died come
//! back flagged redelivered. The first test's clients follow the leader
//! themselves; the second's stay on their nodes, which forward (phase 2).

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
            // Any node accepts the declaration (it forwards to the leader);
            // this test's clients follow the leader themselves.
            if ch.queue_declare(QUEUE.into(), opts, quorum()).await.is_ok()
                && queue_partition(c, id).is_some_and(|(leader, _)| leader == id)
            {
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

/// The quorum queue `name`'s partition (leader, replicas, ISR), as node
/// `via` answers Metadata; `topic` is its partition topic.
fn queue_placement(c: &Cluster, via: i32, topic: &str) -> Option<(i32, Vec<i32>, Vec<i32>)> {
    let md = metadata_of(c.node(via), &[topic]).ok()?;
    let t = md.topics.iter().find(|t| t.name == topic && t.error == 0)?;
    let p = t.partitions.first()?;
    Some((p.leader, p.replicas.clone(), p.isr.clone()))
}

/// The partition topics of quorum queues, as node `via` lists them.
fn queue_topics(c: &Cluster, via: i32) -> BTreeSet<String> {
    metadata_of(c.node(via), &["*"])
        .map(|md| md.topics.into_iter().map(|t| t.name).filter(|n| n.starts_with("__amqp_queue.")).collect())
        .unwrap_or_default()
}

/// The next delivery within `within` (a leader move takes a session timeout).
async fn next_within(c: &mut Consumer, within: Duration) -> lapin::message::Delivery {
    use futures_lite::StreamExt;
    tokio::time::timeout(within, c.next())
        .await
        .expect("a delivery in time")
        .expect("consumer stream open")
        .expect("delivery")
}

/// Node 2 leads `topic` again (it is the first replica, so the preferred
/// leader): a preferred-leader election through node `via`.
fn elect_preferred(c: &Cluster, via: i32, topic: &str) {
    let bootstrap = c.node(via).bootstrap();
    let topic = topic.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let config = ferry_client::ClientConfig::new("fwd-test", Duration::from_secs(10));
            let client = ferry_client::Client::connect(&bootstrap, config).await.expect("connect");
            let _ = client.elect_leaders(false, Some(&[(topic, 0)])).await;
        });
    })
    .join()
    .expect("election thread");
}

/// Issue #17's test as written: a quorum queue led by node 2; lapin
/// publishes with confirms through node 1 and consumes with manual acks
/// on node 3, both forwarded by their nodes (no client follows the
/// leader). The leader is killed with SIGKILL three times, restarted and
/// made leader again (a preferred election: a leader move without a
/// death) in between. Every confirmed message is delivered, none
/// acknowledged comes back, the deliveries out at each kill come back
/// flagged redelivered, and the consumer is never cancelled.
#[test]
fn any_node_serves_a_quorum_queue_across_leader_kills() {
    let _guard = watchdog("amqp_cluster::any_node_serves_a_quorum_queue_across_leader_kills", Duration::from_secs(420));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut c = Cluster::start(3);
    for id in c.ids() {
        c.wait_for_brokers(id, &[1, 2, 3]);
    }
    let (pconn, pch) = rt.block_on(async {
        let conn = connect(c.node(1)).await;
        let ch = conn.create_channel().await.expect("channel");
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        (conn, ch)
    });
    // A queue whose partition node 2 leads and prefers (declared through
    // node 1: any node accepts a declaration now).
    let mut found = None;
    for i in 0..40 {
        let name = format!("fwd-{i}");
        let before = queue_topics(&c, 1);
        rt.block_on(async {
            let opts = QueueDeclareOptions { durable: true, ..Default::default() };
            pch.queue_declare(name.as_str().into(), opts, quorum()).await.expect("declare through node 1");
        });
        let topic = queue_topics(&c, 1).difference(&before).next().cloned().expect("the queue's topic");
        match queue_placement(&c, 1, &topic) {
            Some((2, replicas, _)) if replicas.first() == Some(&2) => {
                found = Some((name, topic));
                break;
            }
            _ => rt.block_on(async {
                pch.queue_delete(name.as_str().into(), QueueDeleteOptions::default()).await.expect("delete");
            }),
        }
    }
    let (queue, topic) = found.expect("a queue led by node 2");
    let (cconn, cch, mut cons) = rt.block_on(async {
        let conn = connect(c.node(3)).await;
        let ch = conn.create_channel().await.expect("channel");
        ch.basic_qos(20, BasicQosOptions::default()).await.unwrap();
        let opts = QueueDeclareOptions { passive: true, ..Default::default() };
        ch.queue_declare(queue.as_str().into(), opts, FieldTable::default()).await.expect("passive declare on node 3");
        let cons = ch
            .basic_consume(queue.as_str().into(), "fwd".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .expect("basic.consume on node 3");
        (conn, ch, cons)
    });
    let publish_batch = |bodies: Vec<String>| {
        rt.block_on(async {
            for b in &bodies {
                publish(&pch, "", &queue, b.as_bytes(), persistent()).await;
            }
        });
        bodies
    };
    let mut confirmed: BTreeSet<String> = BTreeSet::new();
    let mut acked: BTreeSet<String> = BTreeSet::new();
    let mut stale = Vec::new();
    let wait = Duration::from_secs(60);
    for round in 0..3 {
        // 10 messages, all delivered: 5 acknowledged, 5 out with the
        // consumer at the kill (none other out: nothing else is ready).
        confirmed.extend(publish_batch((0..10).map(|i| format!("r{round}-m{i}")).collect()));
        let mut out_at_kill = BTreeSet::new();
        rt.block_on(async {
            let mut got = 0;
            while got < 10 {
                let d = next_within(&mut cons, wait).await;
                let body = String::from_utf8(d.data.clone()).unwrap();
                assert!(!acked.contains(&body), "{body} was acknowledged and came back");
                assert!(confirmed.contains(&body), "{body} was never confirmed");
                if got < 5 {
                    d.ack(BasicAckOptions::default()).await.unwrap();
                    acked.insert(body);
                } else {
                    out_at_kill.insert(body);
                    stale.push(d);
                }
                got += 1;
            }
        });
        c.kill9(2);
        // Publishes through node 1 wait for the next leader, then confirm.
        confirmed.extend(publish_batch((10..30).map(|i| format!("r{round}-m{i}")).collect()));
        // Everything confirmed and not acknowledged arrives; the deliveries
        // out at the kill come back flagged.
        rt.block_on(async {
            let expected: BTreeSet<String> = confirmed.difference(&acked).cloned().collect();
            let mut seen = BTreeSet::new();
            while seen != expected {
                let Ok(d) = tokio::time::timeout(wait, next_within(&mut cons, wait * 2)).await else {
                    panic!("missing {:?}", expected.difference(&seen).collect::<Vec<_>>());
                };
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
            // The stale tags of redelivered messages: acknowledging them
            // again changes nothing (and frees the prefetch).
            for d in stale.drain(..) {
                d.ack(BasicAckOptions::default()).await.unwrap();
            }
        });
        // Node 2 back, in the ISR, and leading again (a leader move).
        c.restart(2);
        eventually_within("node 2 back in the queue's ISR", CLUSTER_WAIT, || {
            queue_placement(&c, 1, &topic).is_some_and(|(_, _, isr)| isr.len() == 3)
        });
        eventually_within("node 2 leads the queue again", CLUSTER_WAIT, || {
            elect_preferred(&c, 1, &topic);
            queue_placement(&c, 1, &topic).is_some_and(|(leader, _, _)| leader == 2)
        });
    }
    // After the last move: a final batch flows, nothing acknowledged comes back.
    let last = publish_batch((0..10).map(|i| format!("final-m{i}")).collect());
    confirmed.extend(last);
    rt.block_on(async {
        let expected: BTreeSet<String> = confirmed.difference(&acked).cloned().collect();
        let mut seen = BTreeSet::new();
        while seen != expected {
            let d = next_within(&mut cons, wait).await;
            let body = String::from_utf8(d.data.clone()).unwrap();
            assert!(!acked.contains(&body), "{body} was acknowledged and came back");
            d.ack(BasicAckOptions::default()).await.unwrap();
            acked.insert(body.clone());
            seen.insert(body);
        }
        assert_eq!(acked, confirmed, "every confirmed message delivered and acknowledged");
        // The consumer was never cancelled: the channel is still open.
        assert!(cch.status().connected(), "the consumer's channel stays open across leader moves");
    });
    drop((pconn, cconn));
}
