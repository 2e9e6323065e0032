//! Consumers through other nodes registered on the queue's leader (issue
//! #17, phase 2c): the leader counts them, and `x-single-active-consumer`
//! and exclusive consume hold across nodes.

use std::time::{Duration, Instant};

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};

use crate::amqp_support::{connect, next, nothing_within, persistent, publish, reply_code};
use crate::cluster_support::{CLUSTER_WAIT, Cluster, metadata_of};
use crate::support::watchdog;

const QUEUE: &str = "sac";

/// The quorum queue partition's leader as node `via` answers Metadata.
fn queue_leader(c: &Cluster, via: i32) -> Option<i32> {
    let md = metadata_of(c.node(via), &["*"]).ok()?;
    let t = md.topics.iter().find(|t| t.name.starts_with("__amqp_queue."))?;
    t.partitions.first().map(|p| p.leader).filter(|l| *l >= 0)
}

/// Consumers the queue has, as node `id` reports them (passive declare).
async fn consumers_via(c: &Cluster, id: i32) -> u32 {
    let conn = connect(c.node(id)).await;
    let ch = conn.create_channel().await.unwrap();
    let opts = QueueDeclareOptions { passive: true, ..Default::default() };
    ch.queue_declare(QUEUE.into(), opts, FieldTable::default()).await.expect("passive declare").consumer_count()
}

/// A single-active-consumer quorum queue; consumer A on one node that
/// does not lead it, then B on the other: the leader (and every node)
/// counts two consumers, every message goes to A, none to B; an exclusive
/// consume through B's node is refused (403). A cancels: B takes over and
/// receives the next messages; one consumer is counted.
#[test]
fn remote_consumers_are_registered_on_the_leader() {
    let _guard =
        watchdog("amqp_cluster_consumers::remote_consumers_are_registered_on_the_leader", Duration::from_secs(240));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let c = Cluster::start(3);
    for id in c.ids() {
        c.wait_for_brokers(id, &[1, 2, 3]);
    }
    rt.block_on(async {
        let conn1 = connect(c.node(1)).await;
        let ch1 = conn1.create_channel().await.unwrap();
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        let opts = QueueDeclareOptions { durable: true, ..Default::default() };
        ch1.queue_declare(QUEUE.into(), opts, args).await.expect("declare");
        let deadline = Instant::now() + CLUSTER_WAIT;
        let leader = loop {
            if let Some(l) = queue_leader(&c, 1) {
                break l;
            }
            assert!(Instant::now() < deadline, "no leader for the queue");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let others: Vec<i32> = c.ids().into_iter().filter(|id| *id != leader).collect();
        let (x, y) = (others[0], others[1]);
        // The leader serves the queue (a confirmed publish) before the
        // consumers come, so each registers at its basic.consume, A first.
        let pch = conn1.create_channel().await.unwrap();
        pch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        publish(&pch, "", QUEUE, b"warm-up", persistent()).await;
        assert_eq!(crate::amqp_support::get(&ch1, QUEUE).await.as_deref(), Some("warm-up"));
        let conn_a = connect(c.node(x)).await;
        let ch_a = conn_a.create_channel().await.unwrap();
        ch_a.basic_qos(5, BasicQosOptions::default()).await.unwrap();
        let mut a = ch_a
            .basic_consume(QUEUE.into(), "a".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .expect("consumer A");
        let conn_b = connect(c.node(y)).await;
        let ch_b = conn_b.create_channel().await.unwrap();
        ch_b.basic_qos(5, BasicQosOptions::default()).await.unwrap();
        let mut b = ch_b
            .basic_consume(QUEUE.into(), "b".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .expect("consumer B");
        // Registered by basic.consume, or (a leader that did not serve the
        // just-declared queue yet) by the consumer's first take.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut counts = Vec::new();
            for id in c.ids() {
                counts.push(consumers_via(&c, id).await);
            }
            if counts == [2, 2, 2] {
                break;
            }
            assert!(Instant::now() < deadline, "counts {counts:?} (leader {leader}, A on {x}, B on {y})");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Every message to the active consumer, A.
        for i in 0..10 {
            publish(&pch, "", QUEUE, format!("m{i}").as_bytes(), persistent()).await;
        }
        for i in 0..10 {
            let d = next(&mut a).await;
            assert_eq!(String::from_utf8_lossy(&d.data), format!("m{i}"), "in order, to A");
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
        nothing_within(&mut b, 1000).await;
        // Exclusive consume beside consumers of other nodes: refused.
        let ch_x = conn_b.create_channel().await.unwrap();
        let exclusive = BasicConsumeOptions { exclusive: true, ..Default::default() };
        let err = ch_x.basic_consume(QUEUE.into(), "x".into(), exclusive, FieldTable::default()).await.unwrap_err();
        assert_eq!(reply_code(&err), Some(403), "{err}");
        // A leaves: B is the active consumer now.
        ch_a.basic_cancel("a".into(), BasicCancelOptions::default()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while consumers_via(&c, leader).await != 1 {
            assert!(Instant::now() < deadline, "A's cancel never reached the leader");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for i in 10..20 {
            publish(&pch, "", QUEUE, format!("m{i}").as_bytes(), persistent()).await;
        }
        for i in 10..20 {
            let d = next(&mut b).await;
            assert_eq!(String::from_utf8_lossy(&d.data), format!("m{i}"), "in order, to B");
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
        drop((conn_a, conn_b, conn1));
    });
}
