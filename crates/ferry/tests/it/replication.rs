//! Replicated partitions across `ferry serve` processes (issue #15): an
//! idempotent acks=all librdkafka producer writes to a topic of
//! replication factor 3 while the leader of a partition is killed with
//! SIGKILL; every acknowledged record is read back once, in order per
//! partition.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::producer::FutureRecord;

use crate::cluster_support::{CLUSTER_WAIT, Cluster, create_topic_eventually, metadata_of};
use crate::support::{consume_all, eventually_within, producer};

const TOPIC: &str = "replicated";
const PARTITIONS: i32 = 3;

/// Leader of each partition of [`TOPIC`] as node `via` answers.
fn leaders(c: &Cluster, via: i32) -> Option<BTreeMap<i32, i32>> {
    let md = metadata_of(c.node(via), &[TOPIC]).ok()?;
    let t = md.topics.first().filter(|t| t.error == 0)?;
    let map: BTreeMap<i32, i32> = t.partitions.iter().map(|p| (p.partition, p.leader)).collect();
    (map.len() == PARTITIONS as usize && map.values().all(|l| *l > 0)).then_some(map)
}

#[test]
fn acknowledged_records_survive_a_killed_leader() {
    let mut c = Cluster::start(3);
    for id in c.ids() {
        c.wait_for_brokers(id, &[1, 2, 3]);
    }
    create_topic_eventually(c.node(1), TOPIC, PARTITIONS, 3);
    let mut before = None;
    eventually_within("leaders for every partition", CLUSTER_WAIT, || {
        before = leaders(&c, 1);
        before.is_some()
    });
    let victim = before.unwrap()[&0];
    let survivor = c.ids().into_iter().find(|id| *id != victim).unwrap();

    let p = producer(
        c.node(survivor),
        &[("acks", "all"), ("enable.idempotence", "true"), ("linger.ms", "5"), ("message.timeout.ms", "60000")],
    );
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let count = 3000u32;
    let acknowledged: Vec<(i32, i64, u32)> = runtime.block_on(async {
        let mut deliveries = Vec::new();
        for i in 0..count {
            let v = i.to_string();
            let record = FutureRecord::to(TOPIC).partition(i as i32 % PARTITIONS).key(&v).payload(&v);
            deliveries.push((i, p.send_result(record).map_err(|(e, _)| e).expect("enqueue")));
            if i == count / 3 {
                // Let some of it be acknowledged, then kill the leader of
                // partition 0 while more is in flight.
                tokio::time::sleep(Duration::from_millis(300)).await;
                c.kill9(victim);
            } else if i % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let mut out = Vec::new();
        for (i, d) in deliveries {
            // Failover takes seconds; the producer retries well within
            // its message timeout, so every record is acknowledged.
            let d = d.await.expect("delivery").unwrap_or_else(|(e, _)| panic!("record {i}: {e}"));
            out.push((d.partition, d.offset, i));
        }
        out
    });
    eventually_within("a new leader for partition 0", CLUSTER_WAIT, || {
        leaders(&c, survivor).is_some_and(|l| l[&0] != victim)
    });

    let got = consume_all(c.node(survivor), TOPIC, PARTITIONS, acknowledged.len());
    let got: Vec<(i32, i64, u32)> = got
        .into_iter()
        .map(|(partition, offset, _, value)| (partition, offset, std::str::from_utf8(&value).unwrap().parse().unwrap()))
        .collect();
    // Exactly the acknowledged records, once each, at the offsets the
    // producer was told, and in send order within each partition.
    let mut sorted_got = got.clone();
    sorted_got.sort_unstable();
    let mut sorted_acked = acknowledged.clone();
    sorted_acked.sort_unstable();
    assert_eq!(sorted_got, sorted_acked);
    let mut last: BTreeMap<i32, u32> = BTreeMap::new();
    for (partition, _, value) in sorted_got {
        if let Some(prev) = last.insert(partition, value) {
            assert!(prev < value, "partition {partition}: {value} after {prev}");
        }
    }
    c.restart(victim);
    c.wait_for_brokers(survivor, &[1, 2, 3]);
}
