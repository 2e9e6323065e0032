//! An exclusive consume through a node that does not lead the quorum
//! queue, while the leader is dead or paused and not fenced yet (issue
//! #17). Its exclusivity is the leader's to grant, so the consume waits
//! for a leader's word, but never as long as the cluster port's 10 s call
//! timeout, which clients give up before (docs/reliability.md, Found 15:
//! a consume answered after its client gave up can keep its consumer
//! alive). Within a bound the leader move is ridden through; past it the
//! consume fails as a timed-out RabbitMQ consume does (541), and no
//! consumer is left registered for it.

use std::time::{Duration, Instant};

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Consumer};

use crate::amqp_support::{connect, next, persistent, publish, reply_code};
use crate::cluster_support::{CLUSTER_WAIT, Cluster, metadata_of};
use crate::support::{eventually_within, watchdog};

const QUEUE: &str = "excl";
/// A client's own bound on basic.consume (the chaos harness gives up after
/// 10 s, as long as the cluster port waits for a silent node).
const CLIENT_WAIT: Duration = Duration::from_millis(9500);

/// (leader, ISR) of the queue's partition, as node `via` answers Metadata.
fn leadership(c: &Cluster, via: i32) -> Option<(i32, Vec<i32>)> {
    let md = metadata_of(c.node(via), &["*"]).ok()?;
    let t = md.topics.iter().find(|t| t.name.starts_with("__amqp_queue.") && t.error == 0)?;
    let p = t.partitions.first()?;
    (p.leader > 0).then(|| (p.leader, p.isr.clone()))
}

/// The queue's leader once all three replicas are in sync.
fn leader_in_sync(c: &Cluster) -> i32 {
    let mut leader = 0;
    eventually_within("the queue led with three in sync", CLUSTER_WAIT, || {
        leadership(c, c.ids()[0]).or_else(|| leadership(c, c.ids()[2])).is_some_and(|(l, isr)| {
            leader = l;
            isr.len() == 3
        })
    });
    leader
}

/// Node `via` names a leader other than `old`.
fn wait_for_move(c: &Cluster, via: i32, old: i32) {
    eventually_within("a new leader for the queue", CLUSTER_WAIT, || leadership(c, via).is_some_and(|(l, _)| l != old));
}

fn started(toml: &str) -> Cluster {
    let mut c = Cluster::prepare(3);
    c.set_toml(toml);
    c.start_all();
    for id in c.ids() {
        c.wait_for_brokers(id, &[1, 2, 3]);
    }
    c
}

/// Declares the quorum queue through node 1 and has its leader serve it
/// (a confirmed publish, read back).
async fn declare(c: &Cluster) {
    let conn = connect(c.node(1)).await;
    let ch = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    let opts = QueueDeclareOptions { durable: true, ..Default::default() };
    ch.queue_declare(QUEUE.into(), opts, args).await.expect("declare the quorum queue");
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    publish(&ch, "", QUEUE, b"warm-up", persistent()).await;
    let got = ch.basic_get(QUEUE.into(), BasicGetOptions { no_ack: true }).await.expect("basic.get");
    assert!(got.is_some(), "the warm-up message");
    let _ = conn.close(200, "done".into()).await;
}

fn exclusive() -> BasicConsumeOptions {
    BasicConsumeOptions { exclusive: true, ..Default::default() }
}

/// basic.consume under the client's own bound.
async fn consume(ch: &Channel, tag: &str, opts: BasicConsumeOptions) -> Result<Consumer, lapin::Error> {
    let started = Instant::now();
    let answer =
        tokio::time::timeout(CLIENT_WAIT, ch.basic_consume(QUEUE.into(), tag.into(), opts, FieldTable::default()))
            .await
            .unwrap_or_else(|_| {
                panic!("basic.consume '{tag}' unanswered after {CLIENT_WAIT:?}: a client gives up here")
            });
    eprintln!("consume {tag}: {:?} after {:?}", answer.as_ref().err(), started.elapsed());
    answer
}

/// Consumers the queue's leader counts, asked through node `via`.
async fn consumers_via(c: &Cluster, via: i32) -> u32 {
    let conn = connect(c.node(via)).await;
    let ch = conn.create_channel().await.unwrap();
    let opts = QueueDeclareOptions { passive: true, ..Default::default() };
    let n =
        ch.queue_declare(QUEUE.into(), opts, FieldTable::default()).await.expect("passive declare").consumer_count();
    let _ = conn.close(200, "done".into()).await;
    n
}

/// The queue's leader is paused (SIGSTOP), then, back in sync, the next
/// one killed (SIGKILL); each time right after, an exclusive consume
/// through another node is answered before a client gives up, by the next
/// leader (the paused one is fenced after the 2 s test session timeout,
/// the killed one after the dead-node grace): a consume through the third
/// node is refused (403: the new leader holds the exclusive consumer), and
/// messages published there reach the exclusive consumer.
#[test]
fn an_exclusive_consume_rides_through_a_paused_or_killed_leader() {
    let _guard = watchdog("amqp_cluster_exclusive::an_exclusive_consume_rides_through", Duration::from_secs(300));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut c = started(crate::cluster_support::CLUSTER_TOML);
    rt.block_on(declare(&c));
    for (round, kill) in [(0, false), (1, true)] {
        let leader = leader_in_sync(&c);
        let others: Vec<i32> = c.ids().into_iter().filter(|id| *id != leader).collect();
        let (x, y) = (others[0], others[1]);
        let conn_x = rt.block_on(connect(c.node(x)));
        let conn_y = rt.block_on(connect(c.node(y)));
        if kill {
            c.kill9(leader);
        } else {
            c.pause(leader);
        }
        let fault = if kill { "killed" } else { "paused" };
        let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        eprintln!(
            "round {round}: leader {leader} {fault} at {:.3} s; exclusive consume through {x}",
            at.as_secs_f64() % 60.0
        );
        rt.block_on(async {
            let ch_x = conn_x.create_channel().await.unwrap();
            let tag = format!("x{round}");
            let mut mine = consume(&ch_x, &tag, exclusive()).await.unwrap_or_else(|e| {
                panic!("the exclusive consume through node {x} failed while leader {leader} was {fault}: {e}")
            });
            // Node y knows the next leader, which holds the exclusive consumer.
            wait_for_move(&c, y, leader);
            let ch_y = conn_y.create_channel().await.unwrap();
            let refused = consume(&ch_y, &format!("y{round}"), BasicConsumeOptions::default())
                .await
                .expect_err("a consumer beside the exclusive one");
            assert_eq!(reply_code(&refused), Some(403), "{refused}");
            let pch = conn_y.create_channel().await.unwrap();
            pch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
            for i in 0..5 {
                publish(&pch, "", QUEUE, format!("r{round}-m{i}").as_bytes(), persistent()).await;
            }
            for i in 0..5 {
                let d = next(&mut mine).await;
                assert_eq!(String::from_utf8_lossy(&d.data), format!("r{round}-m{i}"));
                d.ack(BasicAckOptions::default()).await.unwrap();
            }
            ch_x.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await.unwrap();
            let _ = conn_x.close(200, "done".into()).await;
            let _ = conn_y.close(200, "done".into()).await;
        });
        if kill {
            c.restart(leader);
        } else {
            c.resume(leader);
        }
    }
}

/// The queue's leader is paused with a session timeout (15 s) far past
/// the consume's bound, so nothing fences it while the consume waits: an
/// exclusive consume through another node fails (541, "timeout occurred
/// during consume operation", as RabbitMQ answers) before its client gives
/// up. The leader is resumed and carries out the registration that waited
/// in its socket, and the cancel sent after it: no consumer is left
/// registered (counted 0), and an exclusive consume through the third
/// node gets the queue's messages.
#[test]
fn an_exclusive_consume_that_times_out_leaves_no_consumer_behind() {
    let _guard = watchdog("amqp_cluster_exclusive::an_exclusive_consume_that_times_out", Duration::from_secs(300));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut c = started("[cluster]\nheartbeat_interval_ms = 200\nsession_timeout_ms = 15000\n");
    rt.block_on(declare(&c));
    let leader = leader_in_sync(&c);
    let others: Vec<i32> = c.ids().into_iter().filter(|id| *id != leader).collect();
    let (x, y) = (others[0], others[1]);
    let conn_x = rt.block_on(connect(c.node(x)));
    c.pause(leader);
    rt.block_on(async {
        let ch_x = conn_x.create_channel().await.unwrap();
        let err = consume(&ch_x, "x", exclusive()).await.expect_err("no leader answered the exclusive consume");
        assert_eq!(reply_code(&err), Some(541), "{err}");
        assert!(err.to_string().contains("timeout occurred during consume operation"), "{err}");
    });
    c.resume(leader);
    rt.block_on(async {
        // The resumed leader answers again; its late registration and the
        // cancel have both reached it by the time a count goes through.
        let deadline = Instant::now() + CLUSTER_WAIT;
        loop {
            let n = consumers_via(&c, y).await;
            if n == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "{n} consumers left behind the failed consume");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(consumers_via(&c, y).await, 0, "a consumer registered after the consume failed");
        let conn_y = connect(c.node(y)).await;
        let ch_y = conn_y.create_channel().await.unwrap();
        let mut mine = consume(&ch_y, "y", exclusive()).await.expect("the queue is free for an exclusive consumer");
        let pch = conn_y.create_channel().await.unwrap();
        pch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        for i in 0..3 {
            publish(&pch, "", QUEUE, format!("m{i}").as_bytes(), persistent()).await;
        }
        for i in 0..3 {
            let d = next(&mut mine).await;
            assert_eq!(String::from_utf8_lossy(&d.data), format!("m{i}"));
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
        let _ = conn_y.close(200, "done".into()).await;
    });
}
