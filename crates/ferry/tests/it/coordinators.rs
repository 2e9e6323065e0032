//! Coordinators move with their internal partitions (issue #15): on a
//! three-node cluster, the node coordinating a consumer group, then the one
//! coordinating a transactional id, is killed with SIGKILL; the group
//! resumes through the new coordinator from its committed offsets, and a
//! librdkafka consume-transform-produce loop stays exactly-once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use ferry_broker::metadata::{GROUP_TOPIC, TXN_TOPIC, coordinator_partition};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::cluster_support::{CLUSTER_WAIT, Cluster, create_topic_eventually, metadata_of};
use crate::support::{Broker, config, eventually_within, produce_values, watchdog};

/// Partitions of the internal topics on a `ferry serve` cluster.
const INTERNAL_PARTITIONS: usize = 50;
/// How long one client call may take, failover included.
const T: Duration = Duration::from_secs(60);

/// The node leading `key`'s partition of `topic` (its coordinator), as
/// node `via` answers Metadata; `None` while it has no leader.
fn coordinator(c: &Cluster, via: i32, topic: &str, key: &str) -> Option<i32> {
    let index = coordinator_partition(key, INTERNAL_PARTITIONS)?;
    let md = metadata_of(c.node(via), &[topic]).ok()?;
    let t = md.topics.iter().find(|t| t.name == topic && t.error == 0)?;
    t.partitions.iter().find(|p| p.partition == index).map(|p| p.leader).filter(|l| *l > 0)
}

/// A three-node cluster with every node registered, the internal topics
/// led, and `topics` (3 partitions, replication factor 3) created.
fn cluster(topics: &[&str]) -> Cluster {
    let c = Cluster::start(3);
    for id in c.ids() {
        c.wait_for_brokers(id, &[1, 2, 3]);
    }
    for t in topics {
        create_topic_eventually(c.node(1), t, 3, 3);
    }
    c
}

/// Waits until `key`'s coordinator, as every node in `via` sees it, is a
/// node other than `not`, and returns it.
fn wait_for_coordinator(c: &Cluster, via: &[i32], topic: &str, key: &str, not: Option<i32>) -> i32 {
    let mut found = None;
    eventually_within(&format!("a coordinator for {key}"), CLUSTER_WAIT, || {
        let seen: BTreeSet<Option<i32>> = via.iter().map(|v| coordinator(c, *v, topic, key)).collect();
        found = seen.into_iter().next().flatten().filter(|n| Some(*n) != not);
        found.is_some() && via.iter().all(|v| coordinator(c, *v, topic, key) == found)
    });
    found.unwrap()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// Polls until `until` holds or the time is up; every record goes to `seen`
/// as (partition, offset).
fn consume(
    consumer: &BaseConsumer,
    seen: &mut Vec<(i32, i64)>,
    limit: Duration,
    mut until: impl FnMut(&[(i32, i64)]) -> bool,
) {
    let deadline = Instant::now() + limit;
    while !until(seen) {
        assert!(Instant::now() < deadline, "consumed {} records, then stalled", seen.len());
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            match m {
                Ok(m) => seen.push((m.partition(), m.offset())),
                // Transient while the coordinator or a leader moves.
                Err(e) => eprintln!("consumer: {e}"),
            }
        }
    }
}

/// Commits the consumer's positions synchronously, retrying while the
/// group's coordinator moves (after a move, the new coordinator does not
/// know the member: UNKNOWN_MEMBER_ID, then the assignment is lost until it
/// rejoined); records polled meanwhile go to `seen`. Returns what was
/// committed.
fn commit(consumer: &BaseConsumer, seen: &mut Vec<(i32, i64)>) -> BTreeMap<i32, i64> {
    let deadline = Instant::now() + T;
    loop {
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "commit kept failing: {e}");
                eprintln!("commit: {e}");
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                    seen.push((m.partition(), m.offset()));
                }
            }
        }
    }
    let positions = consumer.position().unwrap();
    positions
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_group_resumes_from_its_committed_offsets_after_its_coordinator_is_killed() {
    group_resumes_after_its_coordinator_is_killed("classic", "coord-in", "coord-group");
}

/// The same with a KIP-848 group (librdkafka's `group.protocol=consumer`):
/// the new coordinator does not know the member (members and assignments
/// are not stored) and answers its heartbeat UNKNOWN_MEMBER_ID; the client
/// drops its partitions, rejoins with member epoch 0, and resumes from
/// the committed offsets.
#[test]
fn a_kip_848_group_rejoins_and_resumes_after_its_coordinator_is_killed() {
    group_resumes_after_its_coordinator_is_killed("consumer", "coord848-in", "coord848-group");
}

fn group_resumes_after_its_coordinator_is_killed(protocol: &str, topic: &str, group: &str) {
    const N: u32 = 600;
    let mut c = cluster(&[topic]);
    let victim = wait_for_coordinator(&c, &[1, 2, 3], GROUP_TOPIC, group, None);
    let survivor = c.ids().into_iter().find(|id| *id != victim).unwrap();
    block_on(produce_values(c.node(survivor), topic, 0..N));

    let mut consumer_config = config(c.node(survivor));
    consumer_config
        .set("group.id", group)
        .set("group.protocol", protocol)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    if protocol == "classic" {
        // KIP-848 members take both from the broker.
        consumer_config.set("session.timeout.ms", "10000").set("heartbeat.interval.ms", "500");
    }
    let consumer: BaseConsumer = consumer_config.create().unwrap();
    consumer.subscribe(&[topic]).unwrap();
    // A third consumed and committed; then an uncommitted tail.
    let mut seen = Vec::new();
    consume(&consumer, &mut seen, T, |s| s.len() >= N as usize / 3);
    let committed = commit(&consumer, &mut seen);
    consume(&consumer, &mut seen, T, |s| s.len() >= N as usize / 2);
    let before_kill = seen.len();

    c.kill9(victim);
    // The group's partition gets a new leader, which loads it. The member
    // (fetching from the data partitions' leaders meanwhile) learns of the
    // move at its next commit: the new coordinator does not know it
    // (members are not stored), so it rejoins and, assigned its partitions
    // again, resumes from the committed offsets.
    let new = wait_for_coordinator(&c, &[survivor], GROUP_TOPIC, group, Some(victim));
    assert_ne!(new, victim);
    let ends: BTreeMap<i32, i64> = count_per_partition(&c, survivor, topic);
    commit(&consumer, &mut seen);
    consume(&consumer, &mut seen, Duration::from_secs(120), |s| {
        let distinct: BTreeSet<&(i32, i64)> = s.iter().collect();
        distinct.len() >= N as usize
    });
    // A partition resumed from its committed offset may still be reading
    // its tail again: on until nothing more comes.
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(2) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            seen.push((m.partition(), m.offset()));
            quiet_since = Instant::now();
        }
    }
    commit(&consumer, &mut seen);
    // Read back from the new coordinator (OffsetFetch).
    let committed_now: BTreeMap<i32, i64> = consumer
        .committed(T)
        .unwrap()
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect();
    assert_eq!(committed_now, ends, "everything is committed through the new coordinator");

    // None skipped; read twice only from the uncommitted tail.
    let mut counts: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    for r in &seen {
        *counts.entry(*r).or_default() += 1;
    }
    let expected: BTreeSet<(i32, i64)> = ends.iter().flat_map(|(p, end)| (0..*end).map(move |o| (*p, o))).collect();
    assert_eq!(counts.keys().copied().collect::<BTreeSet<_>>(), expected, "every record consumed");
    for ((p, o), n) in &counts {
        if *n > 1 {
            let from = committed.get(p).copied().unwrap_or(0);
            assert!(*o >= from, "{p}:{o} consumed {n} times, though committed up to {from} before the kill");
        }
    }
    assert!(seen.len() > before_kill, "the group went on after the kill");
    drop(consumer);
    c.restart(victim);
    c.wait_for_brokers(survivor, &[1, 2, 3]);
}

/// Records per partition of `topic` (its high watermarks), via `via`;
/// asked again while a partition has no leader (the killed node led it).
fn count_per_partition(c: &Cluster, via: i32, topic: &str) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = config(c.node(via)).set("group.id", "coord-probe").create().unwrap();
    let mut ends = BTreeMap::new();
    eventually_within(&format!("high watermarks of {topic}"), CLUSTER_WAIT, || {
        for p in 0..3 {
            match consumer.fetch_watermarks(topic, p, Duration::from_secs(5)) {
                Ok((_, high)) => ends.insert(p, high),
                Err(e) => {
                    eprintln!("watermarks of {topic}/{p}: {e}");
                    return false;
                }
            };
        }
        true
    });
    ends
}

type TxnProducer = ThreadedProducer<DefaultProducerContext>;

/// What to do after a transactional call failed: retry it, or abort the
/// transaction and start it over from the committed offsets.
fn retry_or_abort(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(t) if t.is_retriable() => true,
        KafkaError::Transaction(t) if t.txn_requires_abort() => false,
        e => panic!("transaction failed for good: {e}"),
    }
}

/// Runs `f` until it succeeds or needs an abort (false).
fn until_done(what: &str, mut f: impl FnMut() -> Result<(), KafkaError>) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match f() {
            Ok(()) => return true,
            Err(e) => {
                eprintln!("{what}: {e}");
                if !retry_or_abort(&e) {
                    return false;
                }
                assert!(Instant::now() < deadline, "{what} kept failing: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// Moves the consumer back to the group's committed offsets (after an
/// aborted transaction, its records will be processed again).
fn rewind(consumer: &BaseConsumer, topic: &str) {
    let committed = consumer.committed(T).unwrap();
    for e in committed.elements() {
        let offset = match e.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            _ => Offset::Beginning,
        };
        consumer.seek(topic, e.partition(), offset, T).unwrap();
    }
}

#[test]
fn consume_transform_produce_stays_exactly_once_when_the_transaction_coordinator_is_killed() {
    const IN: &str = "ctp-coord-in";
    const OUT: &str = "ctp-coord-out";
    const ID: &str = "ctp-coord-app";
    const N: usize = 600;
    let _watchdog =
        watchdog("consume-transform-produce with a killed transaction coordinator", Duration::from_secs(400));
    let mut c = cluster(&[IN, OUT]);
    let victim = wait_for_coordinator(&c, &[1, 2, 3], TXN_TOPIC, ID, None);
    let survivor = c.ids().into_iter().find(|id| *id != victim).unwrap();
    // The group's coordinator stays up: librdkafka's
    // send_offsets_to_transaction waits forever on a group coordinator it
    // cached that then left the metadata (librdkafka #5456, #5511); the
    // group coordinator's death is the group test's subject.
    let group = (0..100)
        .map(|i| format!("ctp-coord-{i}"))
        .find(|g| wait_for_coordinator(&c, &[1, 2, 3], GROUP_TOPIC, g, None) != victim)
        .expect("a group coordinated by another node");
    block_on(produce_values(c.node(survivor), IN, 0..N as u32));

    let consumer: BaseConsumer = config(c.node(survivor))
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .unwrap();
    consumer.subscribe(&[IN]).unwrap();
    let producer: TxnProducer = config(c.node(survivor))
        .set("transactional.id", ID)
        .set("transaction.timeout.ms", "60000")
        .set("linger.ms", "2")
        .create()
        .unwrap();
    producer.init_transactions(T).unwrap();

    let deadline = Instant::now() + Duration::from_secs(240);
    let (mut transactions, mut killed, mut aborts) = (0, false, 0);
    loop {
        assert!(Instant::now() < deadline, "{transactions} transactions, then stalled");
        let mut batch = Vec::new();
        while batch.len() < 25 {
            match consumer.poll(Duration::from_millis(if batch.is_empty() { 500 } else { 20 })) {
                Some(Ok(m)) => batch.push((m.partition(), m.offset(), m.payload().unwrap_or_default().to_vec())),
                Some(Err(e)) => eprintln!("consumer: {e}"),
                None => break,
            }
        }
        if batch.is_empty() {
            let committed = consumer.committed(T).unwrap();
            let sum: i64 = committed.elements().iter().map(|e| e.offset().to_raw().unwrap_or(0).max(0)).sum();
            if sum as usize >= N {
                break;
            }
            continue;
        }
        producer.begin_transaction().unwrap();
        let mut next: HashMap<i32, i64> = HashMap::new();
        for (partition, offset, value) in &batch {
            let out = format!("out-{}", String::from_utf8_lossy(value));
            producer.send(BaseRecord::to(OUT).key(&out).payload(&out)).unwrap();
            next.insert(*partition, offset + 1);
        }
        if transactions == 5 && !killed {
            // Mid-transaction: its records written and its partitions
            // added, not yet ended, when the coordinator dies.
            producer.flush(T).unwrap();
            c.kill9(victim);
            killed = true;
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &next {
            tpl.add_partition_offset(IN, *p, Offset::Offset(*o)).unwrap();
        }
        let metadata = consumer.group_metadata().unwrap();
        let done =
            until_done("send_offsets_to_transaction", || producer.send_offsets_to_transaction(&tpl, &metadata, T))
                && until_done("commit_transaction", || producer.commit_transaction(T));
        if done {
            transactions += 1;
        } else {
            aborts += 1;
            until_done("abort_transaction", || producer.abort_transaction(T));
            rewind(&consumer, IN);
        }
    }
    assert!(killed, "the coordinator was killed mid-transaction");
    let new = wait_for_coordinator(&c, &[survivor], TXN_TOPIC, ID, Some(victim));
    eprintln!("{transactions} transactions, {aborts} aborted; coordinator {victim} -> {new}");

    let out = read_committed(c.node(survivor), OUT, N);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for v in &out {
        *counts.entry(v.clone()).or_default() += 1;
    }
    let dupes: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dupes.is_empty(), "duplicates under read_committed: {:?}", &dupes[..dupes.len().min(5)]);
    assert_eq!(counts.len(), N, "every input has exactly one output");
    assert!((0..N).all(|i| counts.contains_key(&format!("out-{i}"))));
    drop((consumer, producer));
    c.restart(victim);
    c.wait_for_brokers(survivor, &[1, 2, 3]);
}

/// Every value of `topic` (3 partitions) under read_committed, from the
/// beginning, until nothing more arrives for a while after `expected`.
fn read_committed(b: &Broker, topic: &str, expected: usize) -> Vec<String> {
    let consumer: BaseConsumer = config(b)
        .set("group.id", "ctp-coord-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                out.push(String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap());
                quiet_since = Instant::now();
            }
            Some(Err(e)) => eprintln!("reader: {e}"),
            None if out.len() >= expected && quiet_since.elapsed() > Duration::from_millis(1500) => break,
            None => {}
        }
    }
    out
}
