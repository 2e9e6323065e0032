//! `x-retry-delays` in a cluster (issue #17): a quorum queue's rejected
//! message waits for its retry in the vhost's replicated delay queue, not
//! in the queue leader's node-local store, so the leader's death does not
//! lose it.

use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};

use crate::amqp_support::{connect, persistent, publish};
use crate::cluster_support::{CLUSTER_WAIT, Cluster, metadata_of};
use crate::support::watchdog;

/// The leader of the only quorum queue partition made since `before`.
fn queue_leader(c: &Cluster, via: i32, before: &[String]) -> (String, i32) {
    let md = metadata_of(c.node(via), &["*"]).expect("metadata");
    let t = md
        .topics
        .iter()
        .find(|t| t.name.starts_with("__amqp_queue.") && !before.contains(&t.name))
        .expect("the queue's partition");
    (t.name.clone(), t.partitions[0].leader)
}

/// The `count` of the first `x-death` entry, and its reason.
fn death(d: &lapin::message::Delivery) -> (i64, String) {
    let h = d.properties.headers().clone().expect("headers");
    let Some(AMQPValue::FieldArray(deaths)) = h.inner().get("x-death") else { panic!("no x-death: {h:?}") };
    let AMQPValue::FieldTable(t) = &deaths.as_slice()[0] else { panic!("bad x-death") };
    let Some(AMQPValue::LongLongInt(count)) = t.inner().get("count") else { panic!("no count") };
    let reason = match t.inner().get("reason") {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        other => panic!("reason {other:?}"),
    };
    (*count, reason)
}

/// Three `ferry serve`; a quorum queue with `x-retry-delays` "5000,300";
/// lapin publishes with confirms and consumes with manual acks through a
/// node that does not lead the queue, and rejects the message (the reject
/// is forwarded to the leader, which has no client of its own). The
/// queue's leader is killed with SIGKILL before the retry is due: the
/// retry arrives from the next leader, not before its delay, with
/// `x-death` count 1 (reason rejected); rejected again, it comes back
/// once more with count 2.
#[test]
fn a_retry_survives_the_death_of_the_queue_leader() {
    let _guard =
        watchdog("amqp_cluster_retry::a_retry_survives_the_death_of_the_queue_leader", Duration::from_secs(300));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut c = Cluster::start(3);
    for id in c.ids() {
        c.wait_for_brokers(id, &[1, 2, 3]);
    }
    let before: Vec<String> = metadata_of(c.node(1), &["*"]).unwrap().topics.into_iter().map(|t| t.name).collect();
    rt.block_on(async {
        let conn = connect(c.node(1)).await;
        let ch = conn.create_channel().await.unwrap();
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        args.insert("x-retry-delays".into(), AMQPValue::LongString("5000,300".into()));
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        ch.queue_declare("work".into(), durable, args).await.expect("declare");
        conn.close(200, "".into()).await.unwrap();
    });
    let (_, leader) = queue_leader(&c, 1, &before);
    let client = c.ids().into_iter().find(|id| *id != leader).unwrap();

    let (conn, mut cons, rejected_at) = rt.block_on(async {
        let conn = connect(c.node(client)).await;
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        publish(&ch, "", "work", b"flaky", persistent()).await;
        let mut cons = ch
            .basic_consume("work".into(), "w".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .unwrap();
        let d = tokio::time::timeout(CLUSTER_WAIT, cons.next()).await.expect("first delivery").unwrap().unwrap();
        assert_eq!(d.data, b"flaky");
        d.nack(BasicNackOptions { requeue: false, ..Default::default() }).await.unwrap();
        (conn, cons, Instant::now())
    });
    // The retry reaches the delay queue's ISR within moments; the kill
    // comes well before it is due.
    std::thread::sleep(Duration::from_millis(1500));
    c.kill9(leader);
    rt.block_on(async {
        let d = tokio::time::timeout(CLUSTER_WAIT, cons.next())
            .await
            .expect("the retry after the leader's death")
            .expect("consumer open")
            .expect("delivery");
        assert_eq!(d.data, b"flaky");
        assert!(rejected_at.elapsed() >= Duration::from_millis(4900), "the retry came before its delay");
        assert_eq!(death(&d), (1, "rejected".to_string()));
        d.nack(BasicNackOptions { requeue: false, ..Default::default() }).await.unwrap();
        let d = tokio::time::timeout(CLUSTER_WAIT, cons.next()).await.expect("the second retry").unwrap().unwrap();
        assert_eq!(death(&d), (2, "rejected".to_string()));
        d.ack(BasicAckOptions::default()).await.unwrap();
        // Nothing more.
        if let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(2), cons.next()).await {
            panic!("unexpected delivery {:?} redelivered={}", String::from_utf8_lossy(&d.data), d.redelivered);
        }
        drop(conn);
    });
}
