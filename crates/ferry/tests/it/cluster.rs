//! Several `ferry serve` processes as one cluster (issue #14), driven by
//! librdkafka and the ferry client: placement, failover of the controller,
//! broker-only nodes, a full restart, and the starts the cluster refuses.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::producer::FutureRecord;

use crate::cluster_support::{
    CLUSTER_WAIT, Cluster, broker_ids, create_topic_at, create_topic_eventually, leaders_of, metadata_of,
};
use crate::support::{Broker, consume_all, eventually_within, group_consumer, http, producer};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Waits until node `b` has the topic with a leader for each partition;
/// returns how many partitions each node leads.
fn wait_for_leaders(b: &Broker, topic: &str) -> BTreeMap<i32, usize> {
    let mut leaders = None;
    eventually_within(&format!("leaders of {topic} at {}", b.bootstrap()), CLUSTER_WAIT, || {
        leaders = leaders_of(b, topic);
        leaders.is_some()
    });
    leaders.unwrap()
}

/// Produces `count` records through bootstrap `b`: record `i` (payload
/// `i`) to partition `i % partitions`, idempotently. Returns
/// (partition, offset, value) of each.
fn produce_numbered(b: &Broker, topic: &str, partitions: i32, count: u32) -> Vec<(i32, i64, u32)> {
    let p = producer(b, &[("acks", "all"), ("enable.idempotence", "true"), ("linger.ms", "5")]);
    runtime().block_on(async {
        let mut deliveries = Vec::new();
        for i in 0..count {
            let v = i.to_string();
            let partition = i as i32 % partitions;
            let record = FutureRecord::to(topic).partition(partition).key(&v).payload(&v);
            deliveries.push((i, p.send_result(record).map_err(|(e, _)| e).expect("enqueue")));
        }
        let mut out = Vec::new();
        for (i, d) in deliveries {
            let d = d.await.expect("delivery").unwrap_or_else(|(e, _)| panic!("record {i}: {e}"));
            out.push((d.partition, d.offset, i));
        }
        out
    })
}

/// Checks `got` (partition, offset, value) holds exactly `sent`, each
/// partition's records in the order they were sent.
fn assert_same_records(mut got: Vec<(i32, i64, u32)>, mut sent: Vec<(i32, i64, u32)>) {
    got.sort_unstable();
    sent.sort_unstable();
    assert_eq!(got, sent);
    let mut last: BTreeMap<i32, u32> = BTreeMap::new();
    for (partition, _, value) in &got {
        if let Some(prev) = last.insert(*partition, *value) {
            assert!(prev < *value, "partition {partition}: {value} after {prev}");
        }
    }
}

fn value(m: &impl Message) -> u32 {
    std::str::from_utf8(m.payload().unwrap()).unwrap().parse().unwrap()
}

#[test]
fn three_nodes_share_partitions_and_serve_clients() {
    let c = Cluster::start(3);
    for id in c.ids() {
        c.wait_for_brokers(id, &[1, 2, 3]);
    }
    create_topic_eventually(c.node(1), "spread", 12, 1);
    // Every node answers the same placement: four leaders each.
    for id in c.ids() {
        assert_eq!(wait_for_leaders(c.node(id), "spread"), BTreeMap::from([(1, 4), (2, 4), (3, 4)]), "via {id}");
    }

    // librdkafka, bootstrapped on node 2, produces to each partition's leader.
    let sent = produce_numbered(c.node(2), "spread", 12, 600);
    // A group consumer bootstrapped on node 3 gets them all, in order.
    let consumer = group_consumer(c.node(3), "spread-group", "spread", &[]);
    let mut got = Vec::new();
    let deadline = Instant::now() + CLUSTER_WAIT;
    while got.len() < sent.len() {
        assert!(Instant::now() < deadline, "consumed {} of {}", got.len(), sent.len());
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.expect("consume");
            got.push((m.partition(), m.offset(), value(&m)));
        }
    }
    assert_same_records(got, sent);
}

/// (leader, leader epoch) of each partition of `topic`, as node `b` sees it.
fn leadership(b: &Broker, topic: &str) -> Vec<(i32, i32)> {
    let md = metadata_of(b, &[topic]).unwrap();
    md.topics[0].partitions.iter().map(|p| (p.leader, p.leader_epoch)).collect()
}

/// A session timeout longer than the restart test: a killed node that is
/// back was let in by naming its previous incarnation, not because its old
/// session had expired (which would also have fenced it first). Dead nodes
/// are not fenced early either (`dead_node_grace_ms` at the timeout).
const LONG_SESSION_TOML: &str =
    "[cluster]\nheartbeat_interval_ms = 200\nsession_timeout_ms = 60000\ndead_node_grace_ms = 60000\n";

#[test]
fn the_controller_fails_over_and_the_killed_node_catches_up() {
    let mut c = Cluster::prepare(3);
    c.set_toml(LONG_SESSION_TOML);
    c.start_all();
    c.wait_for_brokers(1, &[1, 2, 3]);
    create_topic_eventually(c.node(1), "before-kill", 6, 1);
    let before = wait_for_leaders(c.node(1), "before-kill");
    assert_eq!(before.len(), 3, "every node leads some: {before:?}");
    let leadership_before = leadership(c.node(1), "before-kill");
    let old = c.wait_for_leader(1, None);
    let killed_at = Instant::now();
    c.kill9(old);
    let survivor = c.ids().into_iter().find(|id| *id != old).unwrap();
    let new = c.wait_for_leader(survivor, Some(old));
    assert_ne!(new, old);
    // Admin works through a surviving node.
    create_topic_eventually(c.node(survivor), "after-failover", 3, 1);
    let md = metadata_of(c.node(survivor), &["after-failover"]).unwrap();
    assert_eq!(md.topics[0].partitions.len(), 3);

    // The killed node comes back, rejoins and catches up on what it missed.
    // It registers at once, replacing its previous incarnation: before the
    // old session could have expired, never refused as a duplicate, never
    // fenced (its partitions keep their leader and leader epoch).
    c.restart(old);
    assert!(killed_at.elapsed() < Duration::from_secs(60), "registered within the old session");
    assert!(!c.node(old).log_text().contains("already registered"), "{}", c.node(old).log_tail());
    for id in c.ids() {
        assert_eq!(leadership(c.node(id), "before-kill"), leadership_before, "via {id}");
    }
    eventually_within("the restarted node to see the new topic", CLUSTER_WAIT, || {
        metadata_of(c.node(old), &["after-failover"])
            .is_ok_and(|md| md.topics.first().is_some_and(|t| t.error == 0 && t.partitions.len() == 3))
    });
    c.wait_for_brokers(old, &[1, 2, 3]);
    assert!(c.wait_for_leader(old, None) >= 1);
}

#[test]
fn a_stopped_node_hands_its_leaderships_over_at_once() {
    let mut c = Cluster::prepare(3);
    c.set_toml(LONG_SESSION_TOML);
    c.start_all();
    for id in c.ids() {
        c.wait_for_brokers(id, &[1, 2, 3]);
    }
    create_topic_eventually(c.node(1), "handover", 6, 3);
    create_topic_eventually(c.node(1), "alone", 3, 1);
    assert!(wait_for_leaders(c.node(1), "handover").contains_key(&3));
    wait_for_leaders(c.node(1), "alone");
    let on_three = |b: &Broker| {
        let md = metadata_of(b, &["alone"]).unwrap();
        md.topics[0].partitions.iter().find(|p| p.replicas == vec![3]).map(|p| p.leader)
    };
    assert_eq!(on_three(c.node(1)), Some(3));

    // SIGTERM: the node asks the controller to fence it as it stops, so it
    // is gone from Metadata and leads nothing long before its 60 s session
    // could expire.
    let stopped_at = Instant::now();
    c.stop(3);
    assert!(c.node(3).log_text().contains("fenced by the controller"), "{}", c.node(3).log_tail());
    c.wait_for_brokers(1, &[1, 2]);
    eventually_within("node 3's leaderships to move", CLUSTER_WAIT, || {
        leaders_of(c.node(2), "handover").is_some_and(|l| l.keys().all(|n| *n != 3)) && on_three(c.node(2)) == Some(-1)
    });
    assert!(stopped_at.elapsed() < Duration::from_secs(60), "fenced within the session timeout");

    // Back, it leads its single-replica partition again.
    c.restart(3);
    c.wait_for_brokers(1, &[1, 2, 3]);
    eventually_within("node 3 to lead its partition again", CLUSTER_WAIT, || on_three(c.node(1)) == Some(3));
}

#[test]
fn a_broker_only_node_joins_and_takes_partitions() {
    let mut c = Cluster::start(3);
    c.wait_for_brokers(1, &[1, 2, 3]);
    c.add_broker(4);
    c.wait_for_brokers(1, &[1, 2, 3, 4]);
    c.wait_for_brokers(4, &[1, 2, 3, 4]);
    create_topic_eventually(c.node(1), "four", 8, 1);
    let leaders = wait_for_leaders(c.node(4), "four");
    assert_eq!(leaders, BTreeMap::from([(1, 2), (2, 2), (3, 2), (4, 2)]));

    // A partition node 4 leads takes records through node 1's bootstrap
    // and serves them from node 4.
    let md = metadata_of(c.node(4), &["four"]).unwrap();
    let mine = md.topics[0].partitions.iter().find(|p| p.leader == 4).unwrap().partition;
    let p = producer(c.node(1), &[("acks", "all")]);
    runtime().block_on(async {
        for i in 0..10 {
            let v = format!("n4-{i}");
            let record = FutureRecord::to("four").partition(mine).key(&v).payload(&v);
            p.send(record, Duration::from_secs(30)).await.unwrap();
        }
    });
    let got = consume_all(c.node(4), "four", 8, 10);
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|(partition, ..)| *partition == mine));
    let values: Vec<String> = got.iter().map(|(.., v)| String::from_utf8(v.clone()).unwrap()).collect();
    assert_eq!(values, (0..10).map(|i| format!("n4-{i}")).collect::<Vec<_>>());
}

#[test]
fn a_full_restart_keeps_topics_ids_and_data() {
    let mut c = Cluster::start(3);
    c.wait_for_brokers(1, &[1, 2, 3]);
    create_topic_eventually(c.node(1), "durable", 6, 1);
    wait_for_leaders(c.node(1), "durable");
    let sent = produce_numbered(c.node(1), "durable", 6, 60);
    let ids = |b: &Broker| {
        let md = metadata_of(b, &["*"]).unwrap();
        let topics: BTreeMap<String, String> = md.topics.iter().map(|t| (t.name.clone(), t.id.clone())).collect();
        (md.cluster_id, topics)
    };
    let before = ids(c.node(1));
    assert!(before.1.contains_key("durable"));

    c.stop_all();
    c.start_all();
    for id in c.ids() {
        c.wait_for_brokers(id, &[1, 2, 3]);
    }
    wait_for_leaders(c.node(2), "durable");
    assert_eq!(ids(c.node(2)), before, "cluster id and topic ids survive");
    let got = consume_all(c.node(2), "durable", 6, sent.len());
    let got = got.into_iter().map(|(p, o, _, v)| (p, o, std::str::from_utf8(&v).unwrap().parse().unwrap())).collect();
    assert_same_records(got, sent);
}

#[test]
fn starts_the_cluster_must_refuse_exit_with_a_clear_error() {
    let mut c = Cluster::start(3);
    c.wait_for_brokers(1, &[1, 2, 3]);
    c.add_broker(4);
    c.wait_for_brokers(1, &[1, 2, 3, 4]);

    // A second node 4 while the first one runs.
    let quorum = c.quorum.clone();
    let (status, stderr) = c.outsider(4, "second-4", &quorum).run_to_exit(CLUSTER_WAIT);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("node id 4") && stderr.contains("already registered"), "{stderr}");
    assert!(c.node_mut(4).running(), "the first node 4 keeps running");

    // A node whose quorum names only two of the three voters.
    let partial = quorum.split(',').take(2).collect::<Vec<_>>().join(",");
    let (status, stderr) = c.outsider(5, "partial-5", &partial).run_to_exit(CLUSTER_WAIT);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.to_lowercase().contains("quorum mismatch"), "{stderr}");
    let md = metadata_of(c.node(1), &[]).unwrap();
    assert_eq!(broker_ids(&md), vec![1, 2, 3, 4], "the refused node did not join");

    // A quorum that does not parse, or that puts this node elsewhere.
    let (status, stderr) = c.outsider(6, "bad-6", "1@nowhere").run_to_exit(Duration::from_secs(30));
    assert!(!status.success());
    assert!(stderr.contains("--controller-quorum") && stderr.contains("ID@HOST:PORT"), "{stderr}");
    let elsewhere = format!("{quorum},7@127.0.0.1:1");
    let mut seven = c.outsider(7, "elsewhere-7", &elsewhere);
    let (status, stderr) = seven.run_to_exit(Duration::from_secs(30));
    assert!(!status.success());
    let listen = format!("127.0.0.1:{}", seven.cluster_port);
    assert!(stderr.contains("node 7 at 127.0.0.1:1,") && stderr.contains(&listen), "{stderr}");
}

#[test]
fn a_second_process_on_a_data_directory_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let first = Broker::start(dir.path());
    let (status, stderr) = Broker::prepare(dir.path(), &[], "").run_to_exit(Duration::from_secs(30));
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("in use by another ferry process"), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", first.pid().unwrap())), "{stderr}");
    let md = metadata_of(&first, &[]).unwrap();
    assert_eq!(broker_ids(&md).len(), 1, "the first process still serves");
}

#[test]
fn a_lone_voter_waits_for_its_quorum_then_serves() {
    let mut c = Cluster::prepare(3);
    c.launch_waiting(1);
    let lone = c.node(1);
    eventually_within("/v1/health to say it waits for the quorum", CLUSTER_WAIT, || {
        let (status, body) = http(lone, "GET", "/v1/health", None);
        status == 503 && body.to_lowercase().contains("waiting")
    });
    eventually_within("the log to say it waits for the quorum", CLUSTER_WAIT, || {
        lone.log_text().contains("waiting for quorum")
    });
    assert!(TcpStream::connect(("127.0.0.1", lone.port)).is_err(), "Kafka clients wait for the quorum");
    assert!(c.node_mut(1).running());

    c.start_all();
    let lone = c.node(1);
    eventually_within("/v1/health to be ready", CLUSTER_WAIT, || http(lone, "GET", "/v1/health", None).0 == 200);
    c.wait_for_brokers(1, &[1, 2, 3]);
    create_topic_at(c.node(1), "after-waiting", 1, 1).unwrap();
}

#[test]
fn a_node_waiting_for_its_quorum_stops_cleanly() {
    let mut c = Cluster::prepare(3);
    c.launch_waiting(2);
    eventually_within("node 2 to wait for its quorum", CLUSTER_WAIT, || {
        let (status, body) = http(c.node(2), "GET", "/v1/health", None);
        status == 503 && body.contains("waiting")
    });
    // SIGTERM while joining: exit status 0, data closed.
    c.stop(2);
    assert!(c.node(2).log_text().contains("stopped"), "{}", c.node(2).log_tail());
}
