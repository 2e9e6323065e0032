//! Replication under faults across `ferry serve` processes (issue #15):
//! a follower paused with SIGSTOP leaves the ISR after the lag time and
//! rejoins; acks=all with min.insync.replicas=2 goes on with one node
//! paused and stops with two; a leader paused until it is fenced
//! acknowledges nothing that is lost and drops its stale tail.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde_json::Value;

use crate::cluster_support::{CLUSTER_WAIT, Cluster, controller_leader, create_topic_eventually_with, metadata_of};
use crate::support::{Broker, config, eventually_within, http_json, producer};

/// Partition 0 of `topic` as node `b` describes it (`GET /v1/topics`).
fn partition0(b: &Broker, topic: &str) -> Option<Value> {
    let (status, v) = http_json(b, "GET", &format!("/v1/topics/{topic}"), None);
    (status == 200).then(|| v["partitions"][0].clone())
}

/// The sorted ISR and the leader of partition 0 of `topic`, as `b` knows them.
fn isr_and_leader(b: &Broker, topic: &str) -> Option<(Vec<i32>, i32)> {
    let p = partition0(b, topic)?;
    let mut isr: Vec<i32> = serde_json::from_value(p["isr"].clone()).ok()?;
    isr.sort_unstable();
    let leader = p["leader"].as_i64().and_then(|l| i32::try_from(l).ok())?;
    (leader > 0).then_some((isr, leader))
}

/// Partition 0's (high watermark, log end) on node `b`.
fn offsets(b: &Broker, topic: &str) -> Option<(u64, u64)> {
    let p = partition0(b, topic)?;
    Some((p["high_watermark"].as_u64()?, p["log_end_offset"].as_u64()?))
}

/// Sends `values` to partition 0 and waits for each delivery: the values
/// acknowledged, and the first error seen (if any).
fn send(p: &FutureProducer, topic: &str, values: impl IntoIterator<Item = u32>) -> (Vec<u32>, Option<String>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut pending = Vec::new();
        for v in values {
            let s = v.to_string();
            let record = FutureRecord::to(topic).partition(0).key(&s).payload(&s);
            pending.push((v, p.send_result(record).map_err(|(e, _)| e).expect("enqueue")));
        }
        let (mut acked, mut error) = (Vec::new(), None);
        for (v, d) in pending {
            match d.await.expect("delivery future") {
                Ok(_) => acked.push(v),
                Err((e, _)) => {
                    error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        (acked, error)
    })
}

/// Every value in partition 0 of `topic`, read through node `b` (the
/// leader) from the start to its high watermark, in offset order.
fn read_back(b: &Broker, topic: &str) -> Vec<u32> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    let consumer: BaseConsumer =
        config(b).set("group.id", "unused-assign-only").set("enable.auto.commit", "false").create().expect("consumer");
    let (_, high) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(10)).expect("watermarks");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut next = 0;
    while next < high {
        assert!(Instant::now() < deadline, "read {} records of {topic}, high watermark {high}", out.len());
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.expect("consume");
            out.push(std::str::from_utf8(m.payload().unwrap()).unwrap().parse().unwrap());
            next = m.offset() + 1;
        }
    }
    out
}

/// Every node of `c` but `not`.
fn others(c: &Cluster, not: &[i32]) -> Vec<i32> {
    c.ids().into_iter().filter(|id| !not.contains(id)).collect()
}

/// A three-node cluster with `extra` cluster settings and a one-partition
/// RF 3 topic with min.insync.replicas=2; returns the partition leader.
fn cluster_with_topic(extra: &str, topic: &str) -> (Cluster, i32) {
    let mut c = Cluster::prepare(3);
    c.set_toml(&format!("[cluster]\nheartbeat_interval_ms = 200\n{extra}"));
    c.start_all();
    for id in c.ids() {
        c.wait_for_brokers(id, &[1, 2, 3]);
    }
    create_topic_eventually_with(c.node(1), topic, 1, 3, &[("min.insync.replicas", "2")]);
    let mut leader = 0;
    eventually_within("a leader with the full ISR", CLUSTER_WAIT, || {
        isr_and_leader(c.node(1), topic).is_some_and(|(isr, l)| {
            leader = l;
            isr == [1, 2, 3]
        })
    });
    (c, leader)
}

#[test]
fn a_paused_follower_leaves_the_isr_after_the_lag_time_and_rejoins() {
    const TOPIC: &str = "lagging";
    // The lag time (1 s) well below the session timeout (30 s): the
    // follower leaves by the leader's AlterPartition, not by fencing.
    let (mut c, leader) = cluster_with_topic("session_timeout_ms = 30000\nreplica_lag_time_max_ms = 1000\n", TOPIC);
    let controller = controller_leader(c.node(leader));
    let follower = others(&c, &[leader]).into_iter().find(|id| Some(*id) != controller).unwrap();
    let p = producer(c.node(leader), &[("acks", "all"), ("linger.ms", "1")]);
    assert_eq!(send(&p, TOPIC, 0..10), ((0..10).collect(), None));

    c.pause(follower);
    let paused_at = Instant::now();
    let rest: Vec<i32> = others(&c, &[follower]);
    eventually_within("the ISR without the paused follower", Duration::from_secs(20), || {
        isr_and_leader(c.node(leader), TOPIC).is_some_and(|(isr, _)| isr == rest)
    });
    assert!(paused_at.elapsed() < Duration::from_secs(20));
    // Not fenced: the node is still a live broker (its session lasts 30 s).
    let md = metadata_of(c.node(leader), &[]).unwrap();
    assert!(md.brokers.iter().any(|b| b.node_id == follower), "node {follower} was fenced, not dropped for lag");
    // acks=all goes on with the two left.
    assert_eq!(send(&p, TOPIC, 10..20), ((10..20).collect(), None));

    c.resume(follower);
    eventually_within("the follower back in the ISR", CLUSTER_WAIT, || {
        isr_and_leader(c.node(leader), TOPIC).is_some_and(|(isr, _)| isr == [1, 2, 3])
    });
    eventually_within("the follower caught up", CLUSTER_WAIT, || {
        offsets(c.node(follower), TOPIC) == offsets(c.node(leader), TOPIC)
    });
    assert_eq!(read_back(c.node(leader), TOPIC), (0..20).collect::<Vec<u32>>());
}

#[test]
fn acks_all_with_min_insync_two_goes_on_with_one_node_paused_and_stops_with_two() {
    const TOPIC: &str = "min-insync";
    let (mut c, leader) = cluster_with_topic("session_timeout_ms = 2000\nreplica_lag_time_max_ms = 1000\n", TOPIC);
    let followers = others(&c, &[leader]);
    // Idempotent: a produce request timed out while the ISR shrinks is
    // retried, and only idempotence keeps the retry from landing twice.
    let idempotent = [("acks", "all"), ("enable.idempotence", "true"), ("linger.ms", "1")];
    let mut config = idempotent.to_vec();
    config.push(("message.timeout.ms", "30000"));
    let p = producer(c.node(leader), &config);
    assert_eq!(send(&p, TOPIC, 0..10), ((0..10).collect(), None));

    // One follower paused: fenced after 2 s, out of the ISR; two remain.
    c.pause(followers[0]);
    assert_eq!(send(&p, TOPIC, 10..20), ((10..20).collect(), None));
    let isr: Vec<i32> = others(&c, &[followers[0]]);
    eventually_within("the ISR of two", CLUSTER_WAIT, || {
        isr_and_leader(c.node(leader), TOPIC).is_some_and(|(i, _)| i == isr)
    });

    // Both paused: with two of three voters gone there is no controller
    // majority, so the ISR cannot shrink below {leader, paused follower};
    // acks=all waits for the paused follower and times out. (Had the ISR
    // shrunk to the leader alone, the answer would be NOT_ENOUGH_REPLICAS.)
    c.pause(followers[1]);
    let refused = producer(
        c.node(leader),
        &[("acks", "all"), ("linger.ms", "1"), ("message.timeout.ms", "5000"), ("request.timeout.ms", "3000")],
    );
    let (acked, error) = send(&refused, TOPIC, 1000..1005);
    assert!(acked.is_empty(), "acknowledged with one node of three running: {acked:?}");
    let error = error.expect("an error for every record");
    eprintln!("acks=all with two of three nodes paused: librdkafka reports {error:?}");
    assert!(
        ["timed out", "NotEnoughReplicas", "Not enough in-sync replicas"].iter().any(|e| error.contains(e)),
        "unexpected error {error}"
    );

    // Both back: acks=all works again.
    c.resume(followers[0]);
    c.resume(followers[1]);
    let mut config = idempotent.to_vec();
    config.push(("message.timeout.ms", "60000"));
    let p2 = producer(c.node(leader), &config);
    assert_eq!(send(&p2, TOPIC, 20..30), ((20..30).collect(), None));
    // Everything acknowledged is there, in order (the refused records may
    // be too: written, just never acknowledged).
    let got: Vec<u32> = read_back(c.node(leader), TOPIC).into_iter().filter(|v| *v < 1000).collect();
    assert_eq!(got, (0..30).collect::<Vec<u32>>());
}

#[test]
fn a_fenced_old_leader_acknowledges_nothing_that_is_lost_and_truncates_its_stale_tail() {
    const TOPIC: &str = "fenced";
    let (mut c, old) = cluster_with_topic("session_timeout_ms = 2000\nreplica_lag_time_max_ms = 1000\n", TOPIC);
    let survivor = others(&c, &[old])[0];
    let idempotent = [("acks", "all"), ("enable.idempotence", "true"), ("linger.ms", "1")];
    // Pinned to the old leader: its only bootstrap, connected before the pause.
    let mut pinned_config = idempotent.to_vec();
    pinned_config.extend([("message.timeout.ms", "6000"), ("request.timeout.ms", "3000")]);
    let pinned = producer(c.node(old), &pinned_config);
    let (mut acknowledged, error) = send(&pinned, TOPIC, 0..10);
    assert_eq!((acknowledged.len(), error), (10, None));

    c.pause(old);
    // Sent while the old leader is paused: they wait in its socket.
    let pinned_thread = std::thread::spawn(move || send(&pinned, TOPIC, 100..110));
    let mut leader = 0;
    eventually_within("a new leader", CLUSTER_WAIT, || {
        isr_and_leader(c.node(survivor), TOPIC).is_some_and(|(isr, l)| {
            leader = l;
            l != old && !isr.contains(&old)
        })
    });
    // Made only now, through a survivor that no longer lists the fenced
    // node: an idempotent producer's first InitProducerId sent to the
    // paused node would wait out librdkafka's 60 s socket timeout.
    let mut main_config = idempotent.to_vec();
    main_config.push(("message.timeout.ms", "60000"));
    let main = producer(c.node(survivor), &main_config);
    let (acked, error) = send(&main, TOPIC, 200..210);
    assert_eq!((acked.len(), error), (10, None), "the new leader acknowledges");
    acknowledged.extend(acked);
    c.resume(old);
    let (acked, error) = pinned_thread.join().unwrap();
    eprintln!("sent to the paused old leader: {} acknowledged, first error {error:?}", acked.len());
    acknowledged.extend(acked);

    // The old leader follows, without the tail it may have written while
    // deposed: its log ends where the leader's does, at the high watermark.
    eventually_within("the old leader back in the ISR", CLUSTER_WAIT, || {
        isr_and_leader(c.node(leader), TOPIC).is_some_and(|(isr, _)| isr == [1, 2, 3])
    });
    eventually_within("every replica's log equal to the leader's", CLUSTER_WAIT, || {
        let want = offsets(c.node(leader), TOPIC);
        want.is_some_and(|(hw, end)| hw == end) && c.ids().into_iter().all(|id| offsets(c.node(id), TOPIC) == want)
    });
    // Every acknowledged record is there once; nothing appears twice.
    let got = read_back(c.node(leader), TOPIC);
    let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
    for v in &got {
        *counts.entry(*v).or_default() += 1;
    }
    for v in &acknowledged {
        assert_eq!(counts.get(v), Some(&1), "acknowledged record {v}: read {got:?}");
    }
    assert!(counts.values().all(|n| *n == 1), "a record read twice: {got:?}");
}

#[test]
fn a_deposed_leader_holding_an_unreplicated_tail_truncates_it_when_it_returns() {
    const TOPIC: &str = "stale-tail";
    // Lag time far above the pauses: the paused followers stay in the ISR,
    // so the acks=1 records are written but cannot be committed.
    let toml = "session_timeout_ms = 2000\nreplica_lag_time_max_ms = 10000\nauto_leader_rebalance_enable = false\n";
    let (mut c, old) = cluster_with_topic(toml, TOPIC);
    let followers = others(&c, &[old]);
    let all = producer(c.node(old), &[("acks", "all"), ("linger.ms", "1")]);
    assert_eq!(send(&all, TOPIC, 0..10), ((0..10).collect(), None));
    eventually_within("every replica at 10", CLUSTER_WAIT, || {
        c.ids().into_iter().all(|id| offsets(c.node(id), TOPIC) == Some((10, 10)))
    });
    let one = producer(c.node(old), &[("acks", "1"), ("linger.ms", "1"), ("message.timeout.ms", "5000")]);
    one.client().fetch_metadata(Some(TOPIC), Duration::from_secs(10)).expect("metadata");

    // Both followers stopped, for less than the session timeout. Their
    // fetches already at the leader are answered (empty) within the 500 ms
    // replica fetch wait before anything is written.
    let paused_at = Instant::now();
    for f in &followers {
        c.pause(*f);
    }
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(send(&one, TOPIC, 1000..1005), ((1000..1005).collect(), None), "acks=1 on the leader alone");
    let (hw, end) = offsets(c.node(old), TOPIC).expect("the leader's offsets");
    assert_eq!((hw, end), (10, 15), "the leader holds a tail past its high watermark");
    c.pause(old);
    for f in &followers {
        c.resume(*f);
    }
    assert!(paused_at.elapsed() < Duration::from_secs(2), "the followers were paused past the session timeout");

    // The old leader is fenced; a follower leads in a new epoch.
    let mut leader = 0;
    eventually_within("a new leader", CLUSTER_WAIT, || {
        isr_and_leader(c.node(followers[0]), TOPIC).is_some_and(|(isr, l)| {
            leader = l;
            l != old && !isr.contains(&old)
        })
    });
    let main = producer(c.node(leader), &[("acks", "all"), ("linger.ms", "1"), ("message.timeout.ms", "60000")]);
    assert_eq!(send(&main, TOPIC, 200..210), ((200..210).collect(), None), "the new leader acknowledges");

    // Back, the old leader follows: its tail at 10..15 is cut (the end of
    // its epoch on the new leader is 10), then it copies the new records.
    c.resume(old);
    eventually_within("the old leader back in the ISR", CLUSTER_WAIT, || {
        isr_and_leader(c.node(leader), TOPIC).is_some_and(|(isr, _)| isr == [1, 2, 3])
    });
    eventually_within("every replica's log equal to the leader's", CLUSTER_WAIT, || {
        c.ids().into_iter().all(|id| offsets(c.node(id), TOPIC) == Some((20, 20)))
    });
    let want: Vec<u32> = (0..10).chain(200..210).collect();
    assert_eq!(read_back(c.node(leader), TOPIC), want);
    // No replica keeps the acks=1 records: every node's segment files of
    // the topic (uncompressed batches: the values are there as text) hold
    // the acks=all ones and none of those.
    for id in c.ids() {
        let bytes = segment_bytes(c.node(id).data_dir(), TOPIC);
        let has = |v: u32| {
            let text = v.to_string();
            bytes.windows(text.len()).any(|w| w == text.as_bytes())
        };
        assert!((200..210).all(has), "node {id} lacks an acks=all record");
        let kept: Vec<u32> = (1000..1005).filter(|v| has(*v)).collect();
        assert!(kept.is_empty(), "node {id} still holds acks=1 records {kept:?}");
    }
}

/// The bytes of every segment file (`*.log`) under a directory of `dir`
/// whose name starts with `topic`.
fn segment_bytes(dir: &std::path::Path, topic: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), false)];
    while let Some((d, in_topic)) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                stack.push((path, in_topic || name.starts_with(topic)));
            } else if in_topic && name.ends_with(".log") {
                out.extend(std::fs::read(&path).unwrap_or_default());
            }
        }
    }
    out
}
