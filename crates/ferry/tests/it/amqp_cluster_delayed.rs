//! Delayed messages in a cluster (issue #17, phase 2c): an
//! `x-delayed-message` exchange's pending messages wait in the vhost's
//! replicated delay queue, so a delay accepted by one node survives the
//! death of that node and of the delay queue's leader; the next leader
//! routes each message at its due time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Consumer};

use crate::amqp_support::{connect, persistent, publish};
use crate::cluster_support::{CLUSTER_WAIT, Cluster, metadata_of};
use crate::support::watchdog;

/// The partition topics of quorum queues, as node `via` lists them.
fn queue_topics(c: &Cluster, via: i32) -> BTreeSet<String> {
    metadata_of(c.node(via), &["*"])
        .map(|md| md.topics.into_iter().map(|t| t.name).filter(|n| n.starts_with("__amqp_queue.")).collect())
        .unwrap_or_default()
}

/// The leader of `topic`'s partition as node `via` answers Metadata.
fn leader_of(c: &Cluster, via: i32, topic: &str) -> Option<i32> {
    let md = metadata_of(c.node(via), &[topic]).ok()?;
    let t = md.topics.iter().find(|t| t.name == topic && t.error == 0)?;
    t.partitions.first().map(|p| p.leader).filter(|l| *l >= 0)
}

fn delayed_props(ms: i64) -> lapin::BasicProperties {
    let mut h = FieldTable::default();
    h.insert("x-delay".into(), AMQPValue::LongLongInt(ms));
    persistent().with_headers(h)
}

async fn setup(ch: &Channel) {
    let mut args = FieldTable::default();
    args.insert("x-delayed-type".into(), AMQPValue::LongString("direct".into()));
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    ch.exchange_declare("later".into(), lapin::ExchangeKind::Custom("x-delayed-message".into()), durable, args)
        .await
        .expect("delayed exchange");
    let opts = QueueDeclareOptions { durable: true, ..Default::default() };
    ch.queue_declare("inbox".into(), opts, FieldTable::default()).await.expect("queue");
    ch.queue_bind("inbox".into(), "later".into(), "k".into(), QueueBindOptions::default(), FieldTable::default())
        .await
        .expect("bind");
}

async fn next_within(c: &mut Consumer, within: Duration) -> lapin::message::Delivery {
    tokio::time::timeout(within, c.next())
        .await
        .expect("a delivery in time")
        .expect("consumer stream open")
        .expect("delivery")
}

/// lapin publishes delayed messages with confirms through node 1 and
/// through a node not leading the delay queue (due in 6-8 s); the node
/// leading the delay queue is killed with SIGKILL before any is due. A consumer on a surviving node receives every one, none
/// before its due time, none twice. Clients the delay queue itself is
/// hidden from: declaring it is refused (403).
#[test]
fn delayed_messages_survive_the_death_of_their_nodes() {
    let _guard =
        watchdog("amqp_cluster_delayed::delayed_messages_survive_the_death_of_their_nodes", Duration::from_secs(300));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut c = Cluster::start(3);
    for id in c.ids() {
        c.wait_for_brokers(id, &[1, 2, 3]);
    }
    let before = queue_topics(&c, 1);
    let (conn1, ch1) = rt.block_on(async {
        let conn1 = connect(c.node(1)).await;
        let ch1 = conn1.create_channel().await.unwrap();
        setup(&ch1).await;
        ch1.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        // A short delay, routed while every node is up, consumed on node 2.
        let start = Instant::now();
        publish(&ch1, "later", "k", b"warm-up", delayed_props(300)).await;
        let conn2 = connect(c.node(2)).await;
        let ch2 = conn2.create_channel().await.unwrap();
        let mut cons = ch2
            .basic_consume("inbox".into(), "w".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .unwrap();
        let d = next_within(&mut cons, Duration::from_secs(30)).await;
        assert_eq!(d.data, b"warm-up");
        assert!(start.elapsed() >= Duration::from_millis(300), "routed before its delay");
        d.ack(BasicAckOptions::default()).await.unwrap();
        ch2.close(200, "done".into()).await.unwrap();
        // The delay queue is the broker's: a client may not declare it.
        let bad = conn1.create_channel().await.unwrap();
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        let err = bad.queue_declare("amq.ferry.delayed".into(), passive, FieldTable::default()).await.unwrap_err();
        assert_eq!(crate::amqp_support::reply_code(&err), Some(403), "{err}");
        (conn1, ch1)
    });
    // The topics made since: the inbox's and the delay queue's (the later one).
    let made: Vec<String> = queue_topics(&c, 1).difference(&before).cloned().collect();
    assert_eq!(made.len(), 2, "the inbox and the delay queue: {made:?}");
    let index = |t: &String| t.rsplit('.').next().and_then(|i| i.parse::<u64>().ok()).unwrap_or(0);
    let delay_topic = made.iter().max_by_key(|t| index(t)).unwrap().clone();

    // 20 delayed messages, all confirmed: 10 through node 1, 10 through
    // a node that does not lead the delay queue (forwarded to its leader).
    let leader = leader_of(&c, 1, &delay_topic).expect("the delay queue's leader");
    let other = c.ids().into_iter().find(|id| *id != leader && *id != 1).unwrap();
    let mut due: BTreeMap<String, Instant> = BTreeMap::new();
    let first_due = rt.block_on(async {
        let conn = connect(c.node(other)).await;
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let start = Instant::now();
        for i in 0..20u64 {
            let ms = 6000 + 100 * i;
            let body = format!("d{i}");
            let sent = Instant::now();
            let through = if i < 10 { &ch1 } else { &ch };
            publish(through, "later", "k", body.as_bytes(), delayed_props(ms as i64)).await;
            due.insert(body, sent + Duration::from_millis(ms));
        }
        start + Duration::from_millis(6000)
    });
    assert_eq!(leader_of(&c, 1, &delay_topic), Some(leader), "the delay queue's leader moved");
    assert!(Instant::now() < first_due, "the kill must come before the first message is due");
    c.kill9(leader);
    drop((conn1, ch1));
    let survivor = c.ids().into_iter().find(|id| *id != leader).unwrap();
    rt.block_on(async {
        let deadline = Instant::now() + CLUSTER_WAIT;
        let conn = loop {
            let conn = connect(c.node(survivor)).await;
            // The inbox may have been led by the dead node too: retried.
            if conn.create_channel().await.is_ok() {
                break conn;
            }
            assert!(Instant::now() < deadline, "node {survivor} never answered");
        };
        let ch = conn.create_channel().await.unwrap();
        let mut cons = ch
            .basic_consume("inbox".into(), "c".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .expect("consume through a survivor");
        let mut seen = BTreeSet::new();
        while seen.len() < due.len() {
            let d = next_within(&mut cons, CLUSTER_WAIT).await;
            let body = String::from_utf8(d.data.clone()).unwrap();
            let at = *due.get(&body).unwrap_or_else(|| panic!("unexpected {body}"));
            // The broker's clock starts the delay at its publish, which
            // the client's `sent` precedes.
            assert!(Instant::now() + Duration::from_millis(50) >= at, "{body} routed before its due time");
            assert!(seen.insert(body.clone()), "{body} delivered twice");
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
        // Nothing more (no message routed twice).
        if let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(2), cons.next()).await {
            panic!("unexpected delivery {:?}", String::from_utf8_lossy(&d.data));
        }
    });
}
