//! Leader elections across `ferry serve` processes (issue #15, phase 2):
//! automatic leader balancing brings leadership back to a restarted
//! preferred replica, and eligible leader replicas (KIP-966) let a
//! partition whose last in-sync replica died come back on another replica
//! without losing an acknowledged record.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_client::{Client, ClientConfig, Record};
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::producer::FutureRecord;

use crate::cluster_support::{CLUSTER_WAIT, Cluster, create_topic_eventually, metadata_of};
use crate::support::{Broker, admin, consume_all, eventually_within, producer};

/// Test timings plus a leader balance check every second.
const BALANCING_TOML: &str = "[cluster]\nheartbeat_interval_ms = 200\nsession_timeout_ms = 2000\n\
                              leader_imbalance_check_interval_seconds = 1\n";

/// A partition's leader, replicas and ISR.
type Placement = (i32, Vec<i32>, Vec<i32>);

/// [`Placement`] of each partition of `topic` as node `b` answers.
fn partitions(b: &Broker, topic: &str) -> Option<BTreeMap<i32, Placement>> {
    let md = metadata_of(b, &[topic]).ok()?;
    let t = md.topics.into_iter().find(|t| t.name == topic && t.error == 0)?;
    Some(t.partitions.into_iter().map(|p| (p.partition, (p.leader, p.replicas, p.isr))).collect())
}

/// The epochs of the "leading" lines for partition 0 of `topic` in a
/// node's log.
fn leading_epochs(log: &str, topic: &str) -> Vec<i32> {
    let needle = format!("topic={topic} partition=0 ");
    log.lines()
        .filter(|l| l.contains(" leading ") && l.contains(&needle))
        .filter_map(|l| l.split("epoch=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect()
}

/// A ferry client of node `b` on a thread of its own, running `call`.
fn with_client<T: Send + 'static>(b: &Broker, call: fn(Client) -> futures_like::BoxFuture<T>) -> T {
    let bootstrap = b.bootstrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let client = Client::connect(&bootstrap, ClientConfig::new("elections-test", Duration::from_secs(10)))
                .await
                .expect("connect");
            call(client).await
        })
    })
    .join()
    .expect("client thread")
}

mod futures_like {
    pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;
}

/// Produces `values` with an acks=all librdkafka producer through node
/// `b` to partition 0 of `topic`; every one must be acknowledged.
fn produce_acked(b: &Broker, topic: &str, values: std::ops::Range<u32>) -> Vec<(i64, u32)> {
    let p = producer(b, &[("acks", "all"), ("enable.idempotence", "true"), ("linger.ms", "2")]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut deliveries = Vec::new();
        for i in values {
            let v = i.to_string();
            let record = FutureRecord::to(topic).partition(0).key(&v).payload(&v);
            deliveries.push((i, p.send_result(record).map_err(|(e, _)| e).expect("enqueue")));
        }
        let mut acked = Vec::new();
        for (i, d) in deliveries {
            let d = d.await.expect("delivery").unwrap_or_else(|(e, _)| panic!("record {i}: {e}"));
            acked.push((d.offset, i));
        }
        acked
    })
}

#[test]
fn leadership_returns_to_a_restarted_preferred_replica() {
    const TOPIC: &str = "balanced";
    let mut c = Cluster::prepare(3);
    c.set_toml(BALANCING_TOML);
    c.start_all();
    for id in c.ids() {
        c.wait_for_brokers(id, &[1, 2, 3]);
    }
    create_topic_eventually(c.node(1), TOPIC, 3, 3);
    let mut before = None;
    eventually_within("preferred leaders for every partition", CLUSTER_WAIT, || {
        before = partitions(c.node(1), TOPIC)
            .filter(|p| p.len() == 3 && p.values().all(|(leader, replicas, _)| replicas.first() == Some(leader)));
        before.is_some()
    });
    // Three replicas: min.insync.replicas is 2 by default, and says so.
    // Asked of node 1, whose image holds the topic (checked above).
    let configs = with_client(c.node(1), |client| Box::pin(async move { client.describe_topic_configs(TOPIC).await }));
    let min_isr = configs.expect("DescribeConfigs").into_iter().find(|e| e.name == "min.insync.replicas").unwrap();
    assert_eq!((min_isr.value.as_deref(), min_isr.source), (Some("2"), "DEFAULT"));
    let victim = before.unwrap()[&0].0;
    let survivor = c.ids().into_iter().find(|id| *id != victim).unwrap();
    let acked = produce_acked(c.node(victim), TOPIC, 0..200);
    // The last epoch the victim led partition 0 in, and where its log is.
    let before_kill = c.node(victim).log_text();
    let led = leading_epochs(&before_kill, TOPIC).into_iter().max().expect("the victim logged its leadership");

    c.kill9(victim);
    eventually_within("partition 0 led elsewhere", CLUSTER_WAIT, || {
        partitions(c.node(survivor), TOPIC).is_some_and(|p| p[&0].0 != victim && p[&0].0 > 0)
    });
    c.restart(victim);
    // It catches up, rejoins the ISR, and the next balance check (every
    // second here) hands its preferred partitions back.
    let mut after = None;
    eventually_within("leadership back on the restarted preferred replica", CLUSTER_WAIT, || {
        after = partitions(c.node(survivor), TOPIC);
        after.as_ref().is_some_and(|p| p.values().all(|(leader, replicas, _)| replicas.first() == Some(leader)))
    });
    assert_eq!(after.unwrap()[&0].0, victim);
    // Fenced until caught up (docs/reliability.md, Found 3): the restarted
    // process never led partition 0 in the epoch it led before the kill
    // (its replayed metadata still says so), only in newer ones.
    let restarted = c.node(victim).log_text();
    let since = restarted.get(before_kill.len()..).unwrap_or_default();
    let stale: Vec<i32> = leading_epochs(since, TOPIC).into_iter().filter(|e| *e <= led).collect();
    assert!(stale.is_empty(), "restarted node {victim} led in stale epochs {stale:?} (before: {led})");
    let got = consume_all(c.node(survivor), TOPIC, 1, acked.len());
    let got: Vec<(i64, u32)> =
        got.into_iter().map(|(_, offset, _, v)| (offset, std::str::from_utf8(&v).unwrap().parse().unwrap())).collect();
    assert_eq!(got, acked);
}

#[test]
fn an_eligible_replica_brings_back_a_partition_whose_isr_died() {
    const TOPIC: &str = "elr";
    // Voters 1-3 keep the controller quorum; the topic lives on 1, 4 and 5
    // so that all three of its replicas can die while the quorum lives.
    let mut c = Cluster::start(3);
    c.add_broker(4);
    c.add_broker(5);
    for id in [1, 2] {
        c.wait_for_brokers(id, &[1, 2, 3, 4, 5]);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let assignment: &[&[i32]] = &[&[1, 4, 5]];
        let topic = NewTopic::new(TOPIC, 1, TopicReplication::Variable(assignment));
        let r = admin(c.node(1)).create_topics(&[topic], &AdminOptions::new()).await.expect("create_topics");
        r[0].as_ref().expect("topic created");
    });
    eventually_within("node 1 leading with every replica in sync", CLUSTER_WAIT, || {
        partitions(c.node(2), TOPIC).is_some_and(|p| p[&0].0 == 1 && p[&0].2.len() == 3)
    });
    // min.insync.replicas defaults to 2 on three replicas.
    let acked = produce_acked(c.node(1), TOPIC, 0..300);

    // Both followers die: the ISR is the leader alone, below 2, so acks=all
    // is refused and the followers that left are eligible leader replicas.
    c.kill9(4);
    c.kill9(5);
    eventually_within("the ISR down to the leader", CLUSTER_WAIT, || {
        partitions(c.node(2), TOPIC).is_some_and(|p| p[&0].2 == vec![1])
    });
    let refused = with_client(c.node(1), |client| {
        Box::pin(async move {
            let r = Record { key: None, value: Some(b"late".to_vec()), headers: Vec::new(), timestamp: 0 };
            client.produce(TOPIC, 0, &[r], -1, ferry_client::Compression::None).await
        })
    });
    assert_eq!(refused.map_err(|e| e.code()), Err(Some(19)), "NOT_ENOUGH_REPLICAS");
    let elr = with_client(c.node(2), |client| Box::pin(async move { client.eligible_leader_replicas(TOPIC).await }));
    let elr = elr.expect("DescribeTopicPartitions").remove(&0).unwrap_or_default();
    assert!(!elr.is_empty() && elr.iter().all(|n| [4, 5].contains(n)), "ELR {elr:?}");

    // The leader dies too: no replica is in sync, none leads.
    c.kill9(1);
    eventually_within("partition 0 without a leader", CLUSTER_WAIT, || {
        partitions(c.node(2), TOPIC).is_some_and(|p| p[&0].0 == -1 && p[&0].2.is_empty())
    });
    // One eligible replica restarts (its acknowledged data was fsynced, so
    // kill -9 took none of it): it leads.
    let back = elr[0];
    c.restart(back);
    eventually_within("the eligible replica leading", CLUSTER_WAIT, || {
        partitions(c.node(2), TOPIC).is_some_and(|p| p[&0].0 == back)
    });
    // Alone it is below min.insync.replicas: the high watermark waits for
    // a second replica, which node 1 becomes once it has caught up.
    c.restart(1);
    eventually_within("two replicas in sync again", CLUSTER_WAIT, || {
        partitions(c.node(2), TOPIC).is_some_and(|p| p[&0].0 == back && p[&0].2.len() >= 2)
    });
    let got = consume_all(c.node(back), TOPIC, 1, acked.len());
    let got: Vec<(i64, u32)> =
        got.into_iter().map(|(_, offset, _, v)| (offset, std::str::from_utf8(&v).unwrap().parse().unwrap())).collect();
    assert_eq!(got, acked, "every acknowledged record, at its offset, once");
}
