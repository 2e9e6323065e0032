//! Classic queues served through every node (issue #17, phase 2c): a
//! classic queue lives on the node that declared it (its record names that
//! node); a client on any other node reaches it, the node forwarding over
//! the cluster port. It is not replicated: while its node is down,
//! publishes routed to it are nacked and a declare, consume or get answers
//! 404, as RabbitMQ answers for a classic queue whose node is down; its
//! consumers on other nodes wait and resume once the node is back.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Consumer};

use crate::amqp_support::{connect, persistent, publish, reply_code};
use crate::cluster_support::{CLUSTER_WAIT, Cluster};
use crate::support::watchdog;

const QUEUE: &str = "held-by-2";

fn classic() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-queue-type".into(), AMQPValue::LongString("classic".into()));
    t
}

/// The next delivery within `within`.
async fn next_within(c: &mut Consumer, within: Duration) -> lapin::message::Delivery {
    tokio::time::timeout(within, c.next())
        .await
        .expect("a delivery in time")
        .expect("consumer stream open")
        .expect("delivery")
}

/// Passive declare of the queue on a fresh channel of `conn`: its message
/// count, or the reply code it was refused with.
async fn passive(conn: &lapin::Connection) -> Result<u32, Option<u16>> {
    let ch = conn.create_channel().await.expect("channel");
    let opts = QueueDeclareOptions { passive: true, ..Default::default() };
    ch.queue_declare(QUEUE.into(), opts, FieldTable::default())
        .await
        .map(|ok| ok.message_count())
        .map_err(|e| reply_code(&e))
}

/// Publishes `body` with confirms through `ch`: true if confirmed, false if nacked.
async fn confirmed(ch: &Channel, body: &str) -> bool {
    let confirm = ch
        .basic_publish("".into(), QUEUE.into(), BasicPublishOptions::default(), body.as_bytes(), persistent())
        .await
        .expect("basic.publish")
        .await
        .expect("confirm");
    !confirm.is_nack()
}

/// Node 2 declares a classic queue; lapin on node 1 publishes with
/// confirms, a consumer on node 3 acknowledges some deliveries and hands
/// some back, node 1 gets one with basic.get; both other nodes count the
/// queue as node 2 does. Node 2 is killed with SIGKILL: node 1's
/// publishes are nacked and its passive declare answers 404; the consumer
/// on node 3 is not cancelled. Node 2 restarts: every confirmed message
/// not acknowledged reaches the consumer on node 3, those out at the kill
/// flagged redelivered, none acknowledged comes back; publishes through
/// node 1 are confirmed again. Deleting the queue through node 3 removes
/// it from node 2.
#[test]
fn a_classic_queue_is_served_through_every_node() {
    let _guard =
        watchdog("amqp_cluster_classic::a_classic_queue_is_served_through_every_node", Duration::from_secs(300));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut c = Cluster::start(3);
    for id in c.ids() {
        c.wait_for_brokers(id, &[1, 2, 3]);
    }
    let wait = Duration::from_secs(30);
    let (conn1, ch1, conn3, cch, mut cons) = rt.block_on(async {
        let conn2 = connect(c.node(2)).await;
        let ch2 = conn2.create_channel().await.unwrap();
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        ch2.queue_declare(QUEUE.into(), durable, classic()).await.expect("classic queue on node 2");
        // Node 1 declares it again (the same settings: no error) and publishes.
        let conn1 = connect(c.node(1)).await;
        let ch1 = conn1.create_channel().await.unwrap();
        ch1.queue_declare(QUEUE.into(), durable, classic()).await.expect("redeclared through node 1");
        ch1.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        for i in 0..20 {
            publish(&ch1, "", QUEUE, format!("m{i}").as_bytes(), persistent()).await;
        }
        // Every node counts the queue as its holder does.
        for id in [1, 2, 3] {
            let conn = connect(c.node(id)).await;
            assert_eq!(passive(&conn).await, Ok(20), "node {id}'s count");
        }
        // An inequivalent redeclaration is refused through another node too.
        let bad = conn1.create_channel().await.unwrap();
        let mut quorum = FieldTable::default();
        quorum.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        let err = bad.queue_declare(QUEUE.into(), durable, quorum).await.unwrap_err();
        assert_eq!(reply_code(&err), Some(406), "{err}");
        // basic.get through node 1.
        let got = ch1.basic_get(QUEUE.into(), BasicGetOptions { no_ack: true }).await.expect("basic.get");
        assert_eq!(got.map(|m| String::from_utf8_lossy(&m.delivery.data).into_owned()).as_deref(), Some("m0"));
        let conn3 = connect(c.node(3)).await;
        let cch = conn3.create_channel().await.unwrap();
        cch.basic_qos(10, BasicQosOptions::default()).await.unwrap();
        let cons = cch
            .basic_consume(QUEUE.into(), "c3".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .expect("basic.consume through node 3");
        (conn1, ch1, conn3, cch, cons)
    });
    let mut sent: BTreeSet<String> = (0..20).map(|i| format!("m{i}")).collect();
    let mut acked: BTreeSet<String> = BTreeSet::from(["m0".to_string()]);
    let mut out_at_kill = BTreeSet::new();
    rt.block_on(async {
        // m1..m10 arrive (prefetch 10): m1..m5 acknowledged, m6 handed back
        // (it comes again, flagged), the rest stays out with the consumer.
        for i in 1..=10 {
            let d = next_within(&mut cons, wait).await;
            let body = String::from_utf8(d.data.clone()).unwrap();
            assert_eq!(body, format!("m{i}"), "in order");
            assert!(!d.redelivered);
            match i {
                1..=5 => {
                    d.ack(BasicAckOptions::default()).await.unwrap();
                    acked.insert(body);
                }
                6 => {
                    d.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.unwrap();
                }
                _ => {
                    out_at_kill.insert(body);
                }
            }
        }
        // The handed-back m6 comes again, flagged (after what the
        // consumer's freed prefetch let through meanwhile: acknowledged).
        loop {
            let d = next_within(&mut cons, wait).await;
            let body = String::from_utf8(d.data.clone()).unwrap();
            assert!(!acked.contains(&body), "{body} was acknowledged and came back");
            if body == "m6" {
                assert!(d.redelivered, "a handed-back message is flagged");
                out_at_kill.insert(body);
                break;
            }
            assert!(!d.redelivered, "{body} was never handed back");
            // Acknowledged, so the prefetch has room for m6.
            d.ack(BasicAckOptions::default()).await.unwrap();
            acked.insert(body);
        }
    });

    // The holder dies: publishes through node 1 are refused, not lost.
    c.kill9(2);
    rt.block_on(async {
        let deadline = Instant::now() + CLUSTER_WAIT;
        loop {
            match passive(&conn1).await {
                Err(Some(404)) => break,
                other => {
                    assert!(Instant::now() < deadline, "node 1 never saw the holder down: {other:?}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        assert!(!confirmed(&ch1, "while-down").await, "a publish to a queue whose node is down is nacked");
        assert!(cch.status().connected(), "the consumer on node 3 is not cancelled");
    });

    c.restart(2);
    rt.block_on(async {
        // Publishes through node 1 are confirmed again once node 2 is back.
        let deadline = Instant::now() + CLUSTER_WAIT;
        let mut n = 0;
        loop {
            let body = format!("after-{n}");
            if confirmed(&ch1, &body).await {
                sent.insert(body);
                break;
            }
            assert!(Instant::now() < deadline, "publishes through node 1 never confirmed after the restart");
            n += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The consumer on node 3 gets everything not acknowledged.
        let expected: BTreeSet<String> = sent.difference(&acked).cloned().collect();
        let mut seen = BTreeSet::new();
        while seen != expected {
            let d = next_within(&mut cons, CLUSTER_WAIT).await;
            let body = String::from_utf8(d.data.clone()).unwrap();
            assert!(!acked.contains(&body), "{body} was acknowledged and came back");
            assert!(expected.contains(&body), "{body} was never confirmed");
            if out_at_kill.contains(&body) {
                assert!(d.redelivered, "{body} was out when the holder died: it must come back flagged");
            }
            d.ack(BasicAckOptions::default()).await.unwrap();
            acked.insert(body.clone());
            seen.insert(body);
        }
        // Deleted through node 3: gone from node 2 as well.
        let dch = conn3.create_channel().await.unwrap();
        dch.queue_delete(QUEUE.into(), QueueDeleteOptions::default()).await.expect("delete through node 3");
        let conn2 = connect(c.node(2)).await;
        let deadline = Instant::now() + wait;
        while passive(&conn2).await != Err(Some(404)) {
            assert!(Instant::now() < deadline, "node 2 still has the queue deleted through node 3");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    drop((conn1, conn3));
}

/// Dead letters follow forwarding too: node 2's classic queue dead-letters
/// (through the default exchange) into a classic queue held by node 1; a
/// client on node 3 rejects the message and finds the dead letter.
#[test]
fn dead_letters_reach_a_queue_held_by_another_node() {
    let _guard =
        watchdog("amqp_cluster_classic::dead_letters_reach_a_queue_held_by_another_node", Duration::from_secs(180));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let c = Cluster::start(3);
    for id in c.ids() {
        c.wait_for_brokers(id, &[1, 2, 3]);
    }
    rt.block_on(async {
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        let conn1 = connect(c.node(1)).await;
        let ch1 = conn1.create_channel().await.unwrap();
        ch1.queue_declare("dead".into(), durable, classic()).await.expect("dead, held by node 1");
        let conn2 = connect(c.node(2)).await;
        let ch2 = conn2.create_channel().await.unwrap();
        let mut args = classic();
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
        args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString("dead".into()));
        ch2.queue_declare("work".into(), durable, args).await.expect("work, held by node 2");
        let conn3 = connect(c.node(3)).await;
        let ch3 = conn3.create_channel().await.unwrap();
        ch3.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        publish(&ch3, "", "work", b"doomed", persistent()).await;
        let m = ch3
            .basic_get("work".into(), BasicGetOptions { no_ack: false })
            .await
            .expect("basic.get through node 3")
            .expect("the message");
        m.delivery.reject(BasicRejectOptions { requeue: false }).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = ch3.basic_get("dead".into(), BasicGetOptions { no_ack: true }).await.expect("basic.get");
            if let Some(m) = got {
                assert_eq!(m.delivery.data, b"doomed");
                break;
            }
            assert!(Instant::now() < deadline, "the dead letter never reached node 1's queue");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop((conn1, conn2, conn3));
    });
}
