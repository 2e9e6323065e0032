//! AMQP on a three-node cluster (issue #17).
//!
//! Quorum queues (phase 1): lapin
//! declares `x-queue-type: quorum`, publishes with confirms and consumes
//! with manual acks on the node that leads the queue's partition; that
//! node is killed with SIGKILL (twice, restarting it each time). Every
//! confirmed message is delivered by the next leader, none acknowledged
//! comes back, and the deliveries that were out when the leader died come
//! back flagged redelivered. That test's clients follow the leader
//! themselves; `any_node_serves_a_quorum_queue_across_leader_kills`'
//! stay on their nodes, which forward to the leader (phase 2b).
//!
//! Definitions (phase 2a): an exchange and bindings declared through one
//! node are cluster metadata: every node knows the exchange, the node
//! serving a queue routes to it whichever node bound it, and a restart of
//! the whole cluster keeps them.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, Consumer};

use crate::amqp_support::{connect, get, next, persistent, publish, reply_code};
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

fn classic() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-queue-type".into(), AMQPValue::LongString("classic".into()));
    t
}

/// Passive-declares exchange `name` on node `id` until it is there.
async fn exchange_known(c: &Cluster, id: i32, name: &str) {
    let deadline = Instant::now() + CLUSTER_WAIT;
    let conn = connect(c.node(id)).await;
    loop {
        let ch = conn.create_channel().await.expect("channel");
        let passive = ExchangeDeclareOptions { passive: true, ..Default::default() };
        match ch.exchange_declare(name.into(), lapin::ExchangeKind::Topic, passive, FieldTable::default()).await {
            Ok(()) => return,
            Err(e) => {
                assert_eq!(reply_code(&e), Some(404), "passive declare of {name} on node {id}: {e}");
                assert!(Instant::now() < deadline, "node {id} never learnt exchange {name}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The node leading queue `ROUTED`'s partition (as node `via` sees it), a
/// live one among `live`.
fn routed_leader(c: &Cluster, live: &[i32]) -> i32 {
    let mut leader = 0;
    eventually_within("a leader for the quorum queue", CLUSTER_WAIT, || {
        live.iter().any(|via| match queue_partition(c, *via) {
            Some((l, _)) if live.contains(&l) => {
                leader = l;
                true
            }
            _ => false,
        })
    });
    leader
}

/// Publishes with confirms to `events` on node `id` (retried while the
/// node's queue leadership settles, and while a restarted cluster's quorum
/// queue has too few in-sync replicas: such a publish is nacked) and gets
/// the message from `queue`.
async fn routed_through(c: &Cluster, id: i32, queue: &str, key: &str, body: &str) {
    let deadline = Instant::now() + CLUSTER_WAIT;
    let conn = connect(c.node(id)).await;
    loop {
        let ch = conn.create_channel().await.expect("channel");
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let confirm = ch
            .basic_publish("events".into(), key.into(), BasicPublishOptions::default(), body.as_bytes(), persistent())
            .await
            .expect("basic.publish")
            .await
            .expect("confirm");
        if confirm.is_nack() {
            assert!(Instant::now() < deadline, "{body} to {queue} on node {id}: nacked until the deadline");
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let got = ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await;
        if let Ok(Some(m)) = got {
            assert_eq!(String::from_utf8_lossy(&m.delivery.data), body, "{queue} on node {id}");
            return;
        }
        assert!(Instant::now() < deadline, "{body} was never routed to {queue} on node {id}: {got:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn exchanges_and_bindings_are_cluster_metadata() {
    const ROUTED: &str = "routed";
    let _guard = watchdog("amqp_cluster::exchanges_and_bindings_are_cluster_metadata", Duration::from_secs(240));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut c = Cluster::start(3);
    for id in c.ids() {
        c.wait_for_brokers(id, &[1, 2, 3]);
    }
    let all = c.ids();
    rt.block_on(async {
        // On node 1: a topic exchange, a quorum queue (wherever it is led;
        // the declaration is answered by its leader only, phase 1) and a
        // classic queue (held by node 1), and a binding of the quorum queue.
        let conn = connect(c.node(1)).await;
        let ch = conn.create_channel().await.unwrap();
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        ch.exchange_declare("events".into(), lapin::ExchangeKind::Topic, durable, FieldTable::default()).await.unwrap();
        let opts = QueueDeclareOptions { durable: true, ..Default::default() };
        ch.queue_declare("held-by-1".into(), opts, classic()).await.expect("classic queue");
        // Without x-queue-type: quorum in a cluster ([amqp] default_queue_type unset).
        let (_conn, ch) = match ch.queue_declare(ROUTED.into(), opts, FieldTable::default()).await {
            Ok(_) => (conn, ch),
            Err(e) => {
                // 541 closes the connection: a new one.
                assert_eq!(reply_code(&e), Some(541), "declared, but led elsewhere: {e}");
                let conn = connect(c.node(1)).await;
                let ch = conn.create_channel().await.unwrap();
                (conn, ch)
            }
        };
        ch.queue_bind(ROUTED.into(), "events".into(), "e.#".into(), QueueBindOptions::default(), FieldTable::default())
            .await
            .expect("a binding to a quorum queue led anywhere");
        // An inequivalent redeclaration is refused on another node too.
        let conn2 = connect(c.node(2)).await;
        let ch2 = conn2.create_channel().await.unwrap();
        exchange_known(&c, 2, "events").await;
        let err = ch2
            .exchange_declare("events".into(), lapin::ExchangeKind::Fanout, durable, FieldTable::default())
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), Some(406), "{err}");
        // Node 2 binds node 1's classic queue: node 1 routes to it.
        let ch2 = conn2.create_channel().await.unwrap();
        ch2.queue_bind(
            "held-by-1".into(),
            "events".into(),
            "c.*".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("a binding through another node");
        for id in &all {
            exchange_known(&c, *id, "events").await;
        }
        let leader = routed_leader(&c, &all);
        routed_through(&c, leader, ROUTED, "e.a.b", "before").await;
        routed_through(&c, 1, "held-by-1", "c.x", "classic").await;
        // Not matching the binding: not routed.
        let lch = connect(c.node(leader)).await.create_channel().await.unwrap();
        lch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        publish(&lch, "events", "other", b"nowhere", persistent()).await;
        assert_eq!(get(&lch, ROUTED).await, None);
    });

    // The whole cluster restarts: the definitions are in its metadata log.
    c.stop_all();
    c.start_all();
    for id in c.ids() {
        c.wait_for_brokers(id, &[1, 2, 3]);
    }
    rt.block_on(async {
        for id in &all {
            exchange_known(&c, *id, "events").await;
        }
        let leader = routed_leader(&c, &all);
        routed_through(&c, leader, ROUTED, "e.after", "after").await;
        routed_through(&c, 1, "held-by-1", "c.y", "classic after").await;
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
