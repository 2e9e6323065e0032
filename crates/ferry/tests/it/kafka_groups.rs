//! Consumer groups with librdkafka consumers that subscribe().

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::support::{Broker, create_topic, group_consumer, produce_values, value_of};

fn poll_until(
    c: &BaseConsumer,
    deadline: Duration,
    mut done: impl FnMut(Option<rdkafka::message::BorrowedMessage<'_>>) -> bool,
) {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        let m = c.poll(Duration::from_millis(100)).map(|r| r.expect("consume"));
        if done(m) {
            return;
        }
    }
    panic!("condition not reached within {deadline:?}");
}

/// shared/seeds/000: group `test-group`, auto-commit off, subscribe
/// `my-topic`, a synchronous commit after every record. A consumer stopped
/// anywhere and started again resumes right after the last committed record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_000_sync_commit_per_record_resumes_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path());
    produce_values(&broker, "my-topic", 0..100).await;
    let no_auto = [("enable.auto.commit", "false")];
    let mut seen = Vec::new();
    {
        let c = group_consumer(&broker, "test-group", "my-topic", &no_auto);
        poll_until(&c, Duration::from_secs(30), |m| {
            if let Some(m) = m {
                seen.push(value_of(&m));
                c.commit_message(&m, CommitMode::Sync).unwrap();
            }
            seen.len() == 37
        });
    }
    // The broker restarts too: committed offsets are durable.
    broker.restart();
    let c = group_consumer(&broker, "test-group", "my-topic", &no_auto);
    let mut first = None;
    poll_until(&c, Duration::from_secs(30), |m| {
        if let Some(m) = m {
            first.get_or_insert(m.offset());
            seen.push(value_of(&m));
            c.commit_message(&m, CommitMode::Sync).unwrap();
        }
        seen.len() == 100
    });
    assert_eq!(first, Some(37), "resumed right after the last committed record");
    assert_eq!(seen, (0..100).collect::<Vec<_>>());
}

/// shared/seeds/002: auto-commit every 1000 ms, group `test`, topic `test`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_002_auto_commit() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    produce_values(&broker, "test", 0..50).await;
    let auto = [("enable.auto.commit", "true"), ("auto.commit.interval.ms", "1000")];
    {
        let c = group_consumer(&broker, "test", "test", &auto);
        let mut n = 0;
        poll_until(&c, Duration::from_secs(30), |m| {
            n += usize::from(m.is_some());
            n == 50
        });
        // The auto-commit lands: the group's committed offset reaches 50.
        poll_until(&c, Duration::from_secs(10), |_| {
            let committed = c.committed(Duration::from_secs(5)).unwrap();
            committed.elements().iter().any(|e| e.offset() == Offset::Offset(50))
        });
    }
    produce_values(&broker, "test", 50..55).await;
    let c = group_consumer(&broker, "test", "test", &auto);
    let mut got = Vec::new();
    poll_until(&c, Duration::from_secs(30), |m| {
        if let Some(m) = m {
            got.push(value_of(&m));
        }
        got.len() == 5
    });
    assert_eq!(got, (50..55).collect::<Vec<_>>(), "only what was not committed yet");
}

/// Two groups on one topic each read everything (publish/subscribe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_groups_each_read_everything() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    create_topic(&broker, "fanout", 3, &[]).await;
    produce_values(&broker, "fanout", 0..300).await;
    for group in ["g1", "g2"] {
        let c = group_consumer(&broker, group, "fanout", &[]);
        let mut got = BTreeSet::new();
        poll_until(&c, Duration::from_secs(30), |m| {
            if let Some(m) = m {
                got.insert(value_of(&m));
            }
            got.len() == 300
        });
    }
}

/// A consumer that polls on its own thread, recording what it got and its
/// assignment size, committing after every record.
struct Member {
    stop: Arc<AtomicBool>,
    assigned: Arc<Mutex<usize>>,
    got: Arc<Mutex<BTreeSet<u32>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Member {
    fn start(broker: &Broker, group: &str, topic: &str, assignor: &str) -> Member {
        let c = group_consumer(
            broker,
            group,
            topic,
            &[("partition.assignment.strategy", assignor), ("enable.auto.commit", "false")],
        );
        let (stop, assigned, got) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(0)), Arc::default());
        let thread = {
            let (stop, assigned, got): (_, _, Arc<Mutex<BTreeSet<u32>>>) =
                (stop.clone(), assigned.clone(), Arc::clone(&got));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                        got.lock().unwrap().insert(value_of(&m));
                        let _ = c.commit_message(&m, CommitMode::Sync);
                    }
                    *assigned.lock().unwrap() = c.assignment().map_or(0, |a| a.count());
                }
            })
        };
        Member { stop, assigned, got, thread: Some(thread) }
    }

    fn assigned(&self) -> usize {
        *self.assigned.lock().unwrap()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn wait_for(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// 3 consumers on 6 partitions get 2 each; one killed with SIGKILL (no
/// LeaveGroup) loses its partitions to the others after the session timeout
/// and no record is lost; a fourth member joining rebalances again. For each
/// of the range, roundrobin and cooperative-sticky assignors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_share_partitions_and_survive_a_killed_member() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    for assignor in ["range", "roundrobin", "cooperative-sticky"] {
        let topic = format!("shared-{assignor}");
        let group = format!("group-{assignor}");
        create_topic(&broker, &topic, 6, &[]).await;
        produce_values(&broker, &topic, 0..600).await;
        let a = Member::start(&broker, &group, &topic, assignor);
        let b = Member::start(&broker, &group, &topic, assignor);
        // The third member is a separate process, so it can die without a LeaveGroup.
        let mut kcat = Command::new("kcat")
            // -u: unbuffered, so every record kcat consumed (and may have
            // auto-committed) is on the pipe before the SIGKILL below;
            // block-buffered output would die with it.
            .args(["-b", &broker.bootstrap(), "-G", &group, &topic, "-q", "-u", "-f", "%s\n"])
            .args(["-X", &format!("partition.assignment.strategy={assignor}")])
            .args([
                "-X",
                "session.timeout.ms=6000",
                "-X",
                "heartbeat.interval.ms=500",
                "-X",
                "auto.offset.reset=earliest",
            ])
            .args(["-X", "enable.auto.commit=true", "-X", "auto.commit.interval.ms=100"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("kcat (installed by scripts/test.sh)");
        let kcat_out = kcat.stdout.take().unwrap();
        let kcat_got: Arc<Mutex<BTreeSet<u32>>> = Arc::default();
        let reader = {
            let kcat_got = kcat_got.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(kcat_out).lines().map_while(Result::ok) {
                    if let Ok(v) = line.trim().parse() {
                        kcat_got.lock().unwrap().insert(v);
                    }
                }
            })
        };
        wait_for(&format!("{assignor}: 2 partitions each"), Duration::from_secs(60), || {
            a.assigned() == 2 && b.assigned() == 2
        });
        kcat.kill().unwrap(); // SIGKILL
        kcat.wait().unwrap();
        reader.join().unwrap();
        wait_for(&format!("{assignor}: the dead member's partitions moved"), Duration::from_secs(60), || {
            a.assigned() == 3 && b.assigned() == 3
        });
        let all = || {
            let mut s = a.got.lock().unwrap().clone();
            s.extend(b.got.lock().unwrap().iter());
            s.extend(kcat_got.lock().unwrap().iter());
            s
        };
        let end = Instant::now() + Duration::from_secs(60);
        while all().len() < 600 {
            if Instant::now() > end {
                let missing: Vec<u32> = (0..600).filter(|v| !all().contains(v)).collect();
                panic!("{assignor}: {} records never consumed: {missing:?}", missing.len());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let c = Member::start(&broker, &group, &topic, assignor);
        wait_for(&format!("{assignor}: a fourth member rebalances"), Duration::from_secs(60), || {
            a.assigned() == 2 && b.assigned() == 2 && c.assigned() == 2
        });
    }
}

/// Committed offsets outlive a broker restart, and the members find their
/// way back into the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_recovers_after_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path());
    create_topic(&broker, "restart", 2, &[]).await;
    produce_values(&broker, "restart", 0..100).await;
    let m = Member::start(&broker, "restarters", "restart", "range");
    wait_for("first 100", Duration::from_secs(60), || m.got.lock().unwrap().len() == 100);
    broker.restart();
    produce_values(&broker, "restart", 100..200).await;
    wait_for("the rest after the restart", Duration::from_secs(60), || m.got.lock().unwrap().len() == 200);
    drop(m);
    // A new member resumes from the committed offsets: nothing is left to read.
    let c = group_consumer(&broker, "restarters", "restart", &[]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition("restart", 0);
    tpl.add_partition("restart", 1);
    let committed = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    let total: i64 = committed.elements().iter().map(|e| e.offset().to_raw().unwrap_or(0)).sum();
    assert_eq!(total, 200);
}

/// The next-generation protocol (KIP-848) with librdkafka's
/// `group.protocol=consumer`: the broker assigns, two members split four
/// partitions, and when one leaves the other takes everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip_848_consumer_protocol() {
    for assignor in ["uniform", "range"] {
        kip_848_with(assignor).await;
    }
}

async fn kip_848_with(assignor: &str) {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    create_topic(&broker, "next-gen", 4, &[]).await;
    produce_values(&broker, "next-gen", 0..400).await;
    let start = |b: &Broker| {
        let mut c = crate::support::config(b);
        c.set("group.id", "kip848")
            .set("group.protocol", "consumer")
            .set("group.remote.assignor", assignor)
            .set("auto.offset.reset", "earliest");
        let consumer: BaseConsumer = c.create().expect("consumer");
        consumer.subscribe(&["next-gen"]).unwrap();
        consumer
    };
    let (a, b) = (start(&broker), start(&broker));
    let mut got = BTreeSet::new();
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        for c in [&a, &b] {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
                got.insert(value_of(&m));
            }
        }
        let sizes = (a.assignment().map_or(0, |x| x.count()), b.assignment().map_or(0, |x| x.count()));
        if sizes == (2, 2) && got.len() == 400 {
            break;
        }
        assert!(Instant::now() < end, "no 2/2 split with every record consumed: {sizes:?}, {} records", got.len());
    }
    drop(b); // leaves the group
    let end = Instant::now() + Duration::from_secs(60);
    while a.assignment().map_or(0, |x| x.count()) != 4 {
        let _ = a.poll(Duration::from_millis(50));
        assert!(Instant::now() < end, "the remaining member did not get all partitions");
    }
}

/// KIP-848 regular-expression subscription (librdkafka sends `^`-topics as
/// `subscribed_topic_regex`): the broker matches whole topic names, leaves
/// others out, and assigns a matching topic created later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip_848_regex_subscription_follows_new_topics() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    create_topic(&broker, "rx-a", 2, &[]).await;
    create_topic(&broker, "other-rx-a", 1, &[]).await;
    produce_values(&broker, "rx-a", 0..100).await;
    produce_values(&broker, "other-rx-a", 5000..5010).await;
    let mut c = crate::support::config(&broker);
    c.set("group.id", "kip848-regex")
        .set("group.protocol", "consumer")
        .set("auto.offset.reset", "earliest")
        .set("topic.metadata.refresh.interval.ms", "1000");
    let consumer: BaseConsumer = c.create().expect("consumer");
    consumer.subscribe(&["^rx-.*"]).unwrap();
    let mut got = BTreeSet::new();
    let mut poll_until = |want: usize, what: &str| {
        let end = Instant::now() + Duration::from_secs(60);
        while got.len() < want {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                assert_eq!(&m.topic()[..3], "rx-", "a topic the regex does not match: {}", m.topic());
                got.insert(value_of(&m));
            }
            assert!(Instant::now() < end, "{what}: {} of {want} records", got.len());
        }
    };
    poll_until(100, "the matching topic");
    create_topic(&broker, "rx-b", 1, &[]).await;
    produce_values(&broker, "rx-b", 1000..1050).await;
    poll_until(150, "a matching topic created after subscribing");
    assert_eq!(consumer.assignment().unwrap().count(), 3);
}

/// Static membership (KIP-345): a member with `group.instance.id` that
/// restarts within its session timeout gets its partitions back without a
/// rebalance, so the other member keeps its own throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_member_restart_does_not_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    create_topic(&broker, "static", 6, &[]).await;
    let member = |instance: &str| {
        group_consumer(
            &broker,
            "statics",
            "static",
            &[("group.instance.id", instance), ("session.timeout.ms", "30000"), ("enable.auto.commit", "false")],
        )
    };
    let count = |c: &BaseConsumer| c.assignment().map_or(0, |a| a.count());
    let (a, b) = (member("a"), member("b"));
    let end = Instant::now() + Duration::from_secs(60);
    while !(count(&a) == 3 && count(&b) == 3) {
        let _ = a.poll(Duration::from_millis(50));
        let _ = b.poll(Duration::from_millis(50));
        assert!(Instant::now() < end, "no 3/3 split");
    }
    let b_parts = b.assignment().unwrap();
    drop(a); // a static member leaves no LeaveGroup behind
    let a = member("a");
    let end = Instant::now() + Duration::from_secs(30);
    while count(&a) != 3 {
        let _ = a.poll(Duration::from_millis(50));
        let _ = b.poll(Duration::from_millis(50));
        assert_eq!(b.assignment().unwrap(), b_parts, "the other member was rebalanced");
        assert!(Instant::now() < end, "the restarted static member did not get its partitions back");
    }
}

/// A consumer that assigns partitions itself (no membership) commits and
/// reads back offsets in its group (generation -1, OffsetCommit/OffsetFetch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assign_only_consumers_commit_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    create_topic(&broker, "manual", 2, &[]).await;
    produce_values(&broker, "manual", 0..20).await;
    let consumer: BaseConsumer = crate::support::config(&broker)
        .set("group.id", "manual-group")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("manual", 0, Offset::Offset(7)).unwrap();
    tpl.add_partition_offset("manual", 1, Offset::Offset(3)).unwrap();
    consumer.commit(&tpl, CommitMode::Sync).unwrap();
    let mut query = TopicPartitionList::new();
    query.add_partition("manual", 0);
    query.add_partition("manual", 1);
    let got = consumer.committed_offsets(query, Duration::from_secs(10)).unwrap();
    assert_eq!(got.find_partition("manual", 0).unwrap().offset(), Offset::Offset(7));
    assert_eq!(got.find_partition("manual", 1).unwrap().offset(), Offset::Offset(3));
}
