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

/// Leader of each partition of `topic` as node `via` answers (`None`
/// until every partition has one).
fn leaders_of_topic(c: &Cluster, via: i32, topic: &str, partitions: usize) -> Option<BTreeMap<i32, i32>> {
    let md = metadata_of(c.node(via), &[topic]).ok()?;
    let t = md.topics.first().filter(|t| t.error == 0)?;
    let map: BTreeMap<i32, i32> = t.partitions.iter().map(|p| (p.partition, p.leader)).collect();
    (map.len() == partitions && map.values().all(|l| *l > 0)).then_some(map)
}

#[test]
fn acknowledged_records_survive_ten_leader_kills_with_a_group_consuming_throughout() {
    use rdkafka::Message;
    use rdkafka::consumer::Consumer;
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    const CHURN: &str = "churn";
    const PARTS: i32 = 6;
    const KILLS: usize = 10;
    let started = Instant::now();
    let mut c = Cluster::start(3);
    for id in c.ids() {
        c.wait_for_brokers(id, &[1, 2, 3]);
    }
    create_topic_eventually(c.node(1), CHURN, PARTS, 3);
    eventually_within("leaders for every partition", CLUSTER_WAIT, || {
        leaders_of_topic(&c, 1, CHURN, PARTS as usize).is_some()
    });
    let everyone = c.ids().iter().map(|id| c.node(*id).bootstrap()).collect::<Vec<_>>().join(",");

    // The group consumes in a thread of its own the whole time: every
    // (partition, offset) -> value it sees (a record read again after a
    // rebalance must be the same record).
    let seen: Arc<Mutex<BTreeMap<(i32, i64), u32>>> = Arc::default();
    let (stop, read_during_kills) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let consumer = crate::support::group_consumer(
        c.node(1),
        "churn-group",
        CHURN,
        &[("bootstrap.servers", everyone.as_str()), ("enable.auto.commit", "true"), ("auto.commit.interval.ms", "200")],
    );
    let reader = {
        let (seen, stop) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                // Coordinator and leader moves show up as errors; it goes on.
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                    let v: u32 = std::str::from_utf8(m.payload().unwrap()).unwrap().parse().unwrap();
                    let before = seen.lock().unwrap().insert((m.partition(), m.offset()), v);
                    assert!(
                        before.is_none_or(|b| b == v),
                        "{}:{} read as {before:?} and {v}",
                        m.partition(),
                        m.offset()
                    );
                }
            }
            consumer.unsubscribe();
        })
    };

    let p = producer(
        c.node(1),
        &[
            ("bootstrap.servers", everyone.as_str()),
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("linger.ms", "2"),
            ("message.timeout.ms", "60000"),
        ],
    );
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut deliveries = Vec::new();
    let mut next = 0u32;
    let mut send_for = |ms: u64, deliveries: &mut Vec<_>| {
        let until = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < until {
            for _ in 0..10 {
                let v = next.to_string();
                let record = FutureRecord::to(CHURN).key(&v).payload(&v);
                deliveries.push((next, p.send_result(record).map_err(|(e, _)| e).expect("enqueue")));
                next += 1;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    send_for(1000, &mut deliveries);
    for kill in 0..KILLS {
        let survivor = c.ids()[(kill + 1) % 3];
        let Some(leaders) = leaders_of_topic(&c, survivor, CHURN, PARTS as usize) else {
            panic!("no leaders known to node {survivor} before kill {kill}");
        };
        let victim = leaders[&(kill as i32 % PARTS)];
        c.kill9(victim);
        let alive = c.ids().into_iter().find(|id| *id != victim).unwrap();
        // Keep producing while the partition fails over.
        send_for(1500, &mut deliveries);
        eventually_within("leaders without the killed node", CLUSTER_WAIT, || {
            leaders_of_topic(&c, alive, CHURN, PARTS as usize).is_some_and(|l| l.values().all(|n| *n != victim))
        });
        c.restart(victim);
        send_for(1000, &mut deliveries);
        c.wait_for_brokers(alive, &[1, 2, 3]);
        if kill == KILLS / 2 {
            read_during_kills.store(seen.lock().unwrap().len(), Ordering::Release);
        }
    }
    let acknowledged: Vec<(i32, i64, u32)> = runtime.block_on(async {
        let mut out = Vec::new();
        for (v, d) in deliveries {
            let d = d.await.expect("delivery").unwrap_or_else(|(e, _)| panic!("record {v}: {e}"));
            out.push((d.partition, d.offset, v));
        }
        out
    });
    assert!(read_during_kills.load(Ordering::Acquire) > 0, "the group read nothing while leaders were killed");

    // The group reads every acknowledged record at the offset the producer
    // was told; the log holds each value once, in send order per partition.
    eventually_within("the group to read every acknowledged record", CLUSTER_WAIT, || {
        let seen = seen.lock().unwrap();
        acknowledged.iter().all(|(p, o, _)| seen.contains_key(&(*p, *o)))
    });
    stop.store(true, Ordering::Release);
    reader.join().unwrap();
    let seen = seen.lock().unwrap();
    for (p, o, v) in &acknowledged {
        assert_eq!(seen.get(&(*p, *o)), Some(v), "acknowledged {v} at {p}:{o}");
    }
    let mut values = BTreeSet::new();
    let mut last: BTreeMap<i32, u32> = BTreeMap::new();
    for (&(p, _), &v) in seen.iter() {
        assert!(values.insert(v), "{v} is in the log twice");
        if let Some(prev) = last.insert(p, v) {
            assert!(prev < v, "partition {p}: {v} after {prev}");
        }
    }
    eprintln!(
        "{} records acknowledged across {KILLS} leader kills, {} read by the group, in {:?}",
        acknowledged.len(),
        seen.len(),
        started.elapsed()
    );
}
