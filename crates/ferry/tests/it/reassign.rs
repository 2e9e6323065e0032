//! Partition reassignment and node decommission across `ferry serve`
//! processes (issue #15): a partition moves to a new broker while an
//! idempotent acks=all librdkafka producer writes, and every acknowledged
//! record is read back from the new replicas after the old leader is
//! killed; a node is decommissioned, stopped and removed; bad
//! reassignments get Kafka's errors and change nothing.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferry_client::{Client, ClientConfig, ClientError};
use rdkafka::producer::FutureRecord;
use serde_json::Value;

use crate::cluster_support::{CLUSTER_WAIT, Cluster, create_topic_eventually, metadata_of};
use crate::support::{Broker, consume_all, eventually_within, http_json, producer};

const PARTITIONS: i32 = 3;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;
const BROKER_ID_NOT_REGISTERED: i16 = 102;
const INVALID_REQUEST: i16 = 42;

/// Runs the `ferry` CLI against `b`: (exit code, stdout, stderr).
fn ferry(b: &Broker, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .args(["--brokers", &b.bootstrap(), "--timeout-ms", "15000"])
        .env_remove("FERRY_BROKERS")
        .env("FERRY_LOG", "warn")
        .output()
        .expect("run ferry");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ferry_ok(b: &Broker, args: &[&str]) -> String {
    let (code, stdout, stderr) = ferry(b, args);
    assert_eq!(code, 0, "ferry {args:?}: {stderr}");
    stdout
}

/// Replicas of each partition of `topic` as node `b` answers Metadata.
fn replicas(b: &Broker, topic: &str) -> Option<BTreeMap<i32, Vec<i32>>> {
    let md = metadata_of(b, &[topic]).ok()?;
    let t = md.topics.first().filter(|t| t.error == 0)?;
    Some(t.partitions.iter().map(|p| (p.partition, p.replicas.clone())).collect())
}

/// Every partition (internal topics included) with `node` among its replicas.
fn held_by(b: &Broker, node: i32) -> Option<Vec<String>> {
    let md = metadata_of(b, &["*"]).ok()?;
    Some(
        md.topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t, p)))
            .filter(|(_, p)| p.replicas.contains(&node))
            .map(|(t, p)| format!("{}-{}", t.name, p.partition))
            .collect(),
    )
}

/// Runs `f` with a ferry-client connected to `b`, on a runtime of its own.
fn with_client<T: Send + 'static>(
    b: &Broker,
    f: impl FnOnce(Client) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>> + Send + 'static,
) -> T {
    let bootstrap = b.bootstrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let client = Client::connect(&bootstrap, ClientConfig::new("reassign-test", Duration::from_secs(15)))
                .await
                .expect("connect");
            f(client).await
        })
    })
    .join()
    .expect("client thread")
}

#[test]
fn a_partition_moves_to_a_new_broker_under_load_and_keeps_every_acknowledged_record() {
    const TOPIC: &str = "moving";
    let mut c = Cluster::start(3);
    for id in c.ids() {
        c.wait_for_brokers(id, &[1, 2, 3]);
    }
    // Created before node 4 exists: every partition on 1, 2 and 3.
    create_topic_eventually(c.node(1), TOPIC, PARTITIONS, 3);
    eventually_within("the topic known to nodes 1-3", CLUSTER_WAIT, || {
        c.ids().iter().all(|id| replicas(c.node(*id), TOPIC).is_some_and(|r| r.len() == PARTITIONS as usize))
    });
    c.add_broker(4);
    c.wait_for_brokers(2, &[1, 2, 3, 4]);

    // An idempotent acks=all producer writes the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let p = producer(
        c.node(2),
        &[("acks", "all"), ("enable.idempotence", "true"), ("linger.ms", "5"), ("message.timeout.ms", "90000")],
    );
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let mut deliveries = Vec::new();
                let mut i = 0u32;
                while !stop.load(Ordering::Acquire) {
                    let v = i.to_string();
                    let record = FutureRecord::to(TOPIC).partition(i as i32 % PARTITIONS).key(&v).payload(&v);
                    deliveries.push((i, p.send_result(record).map_err(|(e, _)| e).expect("enqueue")));
                    i += 1;
                    if i.is_multiple_of(20) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                let mut acked = Vec::new();
                for (i, d) in deliveries {
                    let d = d.await.expect("delivery").unwrap_or_else(|(e, _)| panic!("record {i}: {e}"));
                    acked.push((d.partition, d.offset, i));
                }
                acked
            })
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    for p in 0..PARTITIONS {
        let out =
            ferry_ok(c.node(3), &["topic", "reassign", TOPIC, "--partition", &p.to_string(), "--replicas", "2,3,4"]);
        assert!(out.contains("reassigning"), "{out}");
    }
    let want: BTreeMap<i32, Vec<i32>> = (0..PARTITIONS).map(|p| (p, vec![2, 3, 4])).collect();
    eventually_within("every partition on 2, 3, 4 with no move left", CLUSTER_WAIT, || {
        replicas(c.node(2), TOPIC).as_ref() == Some(&want)
            && ferry_ok(c.node(2), &["topic", "reassignments", "--format", "json"]).contains("\"reassignments\":[]")
    });
    // Node 1's replicas were deleted with the move.
    let dir = c.node(1).data_dir().join("topics").join(TOPIC);
    eventually_within("node 1's copy deleted", CLUSTER_WAIT, || !dir.exists());
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Release);
    let acknowledged = writer.join().expect("writer");
    assert!(acknowledged.len() > 100, "only {} records written", acknowledged.len());

    // Every acknowledged record is on the new replicas: node 1 is gone.
    c.kill9(1);
    // Once it is fenced, clients are no longer offered it.
    c.wait_for_brokers(4, &[2, 3, 4]);
    let got = consume_all(c.node(4), TOPIC, PARTITIONS, acknowledged.len());
    let mut got: Vec<(i32, i64, u32)> = got
        .into_iter()
        .map(|(partition, offset, _, value)| (partition, offset, std::str::from_utf8(&value).unwrap().parse().unwrap()))
        .collect();
    got.sort_unstable();
    let mut acked = acknowledged;
    acked.sort_unstable();
    assert_eq!(got, acked, "exactly the acknowledged records, at their offsets");
    let mut last: BTreeMap<i32, u32> = BTreeMap::new();
    for (partition, _, value) in got {
        if let Some(prev) = last.insert(partition, value) {
            assert!(prev < value, "partition {partition}: {value} after {prev}");
        }
    }
}

#[test]
fn a_decommissioned_node_is_emptied_and_removed_and_bad_reassignments_change_nothing() {
    const TOPIC: &str = "spread";
    let mut c = Cluster::start(3);
    for id in c.ids() {
        c.wait_for_brokers(id, &[1, 2, 3]);
    }
    c.add_broker(4);
    c.wait_for_brokers(1, &[1, 2, 3, 4]);
    create_topic_eventually(c.node(1), TOPIC, 8, 3);
    eventually_within("the topic known to every node", CLUSTER_WAIT, || {
        c.ids().iter().all(|id| replicas(c.node(*id), TOPIC).is_some())
    });
    let before = replicas(c.node(1), TOPIC).unwrap();

    // Bad input: Kafka's errors, nothing changed.
    let errors = with_client(c.node(2), |client| {
        Box::pin(async move {
            let code = |r: Result<(), ClientError>| r.err().and_then(|e| e.code());
            vec![
                code(client.alter_partition_reassignment(TOPIC, 0, Some(&[1, 2, 9])).await),
                code(client.alter_partition_reassignment(TOPIC, 0, Some(&[1, 1, 2])).await),
                code(client.alter_partition_reassignment(TOPIC, 0, Some(&[])).await),
                code(client.alter_partition_reassignment(TOPIC, 99, Some(&[1, 2, 3])).await),
                code(client.alter_partition_reassignment("no-such-topic", 0, Some(&[1, 2, 3])).await),
                code(client.alter_partition_reassignment(TOPIC, 0, None).await),
                code(client.unregister_node(9).await),
                code(client.unregister_node(4).await),
            ]
        })
    });
    assert_eq!(
        errors,
        [
            INVALID_REPLICA_ASSIGNMENT,
            INVALID_REPLICA_ASSIGNMENT,
            INVALID_REPLICA_ASSIGNMENT,
            UNKNOWN_TOPIC_OR_PARTITION,
            UNKNOWN_TOPIC_OR_PARTITION,
            NO_REASSIGNMENT_IN_PROGRESS,
            BROKER_ID_NOT_REGISTERED,
            INVALID_REQUEST,
        ]
        .map(Some)
    );
    let (code, _, stderr) = ferry(c.node(1), &["topic", "reassign", TOPIC, "--partition", "0", "--replicas", "1,2,9"]);
    assert!(code != 0 && stderr.contains("INVALID_REPLICA_ASSIGNMENT"), "{stderr}");
    // The same over HTTP.
    let (status, body) =
        http_json(c.node(3), "POST", "/v1/topics/spread/partitions/0/reassignment", Some(r#"{"replicas":[1,1,2]}"#));
    assert_eq!(status, 400, "{body}");
    let (status, body) =
        http_json(c.node(3), "POST", "/v1/topics/spread/partitions/0/reassignment", Some(r#"{"replicas":null}"#));
    assert_eq!(status, 409, "{body}");
    assert_eq!(http_json(c.node(3), "POST", "/v1/nodes/9/decommission", None).0, 404);
    assert_eq!(http_json(c.node(3), "DELETE", "/v1/nodes/4", None).0, 409, "node 4 runs");
    assert_eq!(replicas(c.node(1), TOPIC).unwrap(), before);
    assert!(ferry_ok(c.node(1), &["topic", "reassignments", "--format", "json"]).contains("\"reassignments\":[]"));
    assert_eq!(http_json(c.node(2), "GET", "/v1/reassignments", None).1["reassignments"], serde_json::json!([]));

    // Started and called off: nothing moves for good (moves that started
    // run on, so only the flag is checked).
    ferry_ok(c.node(1), &["node", "decommission", "4", "--no-wait"]);
    let leaving = |c: &Cluster, id: i32| {
        let (_, cluster) = http_json(c.node(1), "GET", "/v1/cluster", None);
        cluster["nodes"].as_array().unwrap().iter().any(|n| n["id"] == id && n["decommissioning"] == true)
    };
    assert!(leaving(&c, 4));
    ferry_ok(c.node(1), &["node", "decommission", "4", "--cancel"]);
    assert!(!leaving(&c, 4));

    // Decommission node 3: the command waits until nothing is left on it.
    assert!(held_by(c.node(1), 3).is_some_and(|h| !h.is_empty()));
    let out = ferry_ok(c.node(1), &["node", "decommission", "3", "--wait-secs", "120"]);
    assert!(out.contains("node 3 holds no replicas: it can be stopped"), "{out}");
    assert_eq!(held_by(c.node(1), 3), Some(Vec::new()));
    let after = replicas(c.node(1), TOPIC).unwrap();
    assert!(after.values().all(|r| r.len() == 3 && !r.contains(&3)), "{after:?}");
    let status: Value = serde_json::from_str(&ferry_ok(c.node(1), &["cluster", "status", "--format", "json"])).unwrap();
    let node3 = status["nodes"].as_array().unwrap().iter().find(|n| n["id"] == 3).cloned().unwrap();
    assert_eq!((node3["decommissioning"].clone(), node3["replicas"].clone()), (Value::Bool(true), 0.into()));
    assert!(leaving(&c, 3));
    // A new topic keeps off it.
    create_topic_eventually(c.node(1), "later", 6, 3);
    eventually_within("the new topic placed", CLUSTER_WAIT, || replicas(c.node(1), "later").is_some());
    assert!(replicas(c.node(1), "later").unwrap().values().all(|r| !r.contains(&3)));

    // Stopped, it can be removed.
    let (code, _, stderr) = ferry(c.node(1), &["node", "remove", "3"]);
    assert!(code != 0 && stderr.contains("INVALID_REQUEST"), "refused while it runs: {stderr}");
    c.stop(3);
    let out = ferry_ok(c.node(1), &["node", "remove", "3"]);
    assert!(out.contains("removed node 3"), "{out}");
    // Every node's image drops it (node 1 answered once its own had).
    eventually_within("node 3 gone from node 2's /v1/cluster", CLUSTER_WAIT, || {
        let (_, cluster) = http_json(c.node(2), "GET", "/v1/cluster", None);
        cluster["nodes"].as_array().is_some_and(|nodes| nodes.iter().all(|n| n["id"] != 3))
    });
    c.wait_for_brokers(2, &[1, 2, 4]);
}
