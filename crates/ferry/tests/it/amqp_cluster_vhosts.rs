//! Vhosts as cluster records (issue #17): created and deleted through any
//! node's HTTP admin API (RabbitMQ's `/api/vhosts`) or `ferry vhost`, and
//! every node follows; deleting one takes its queues and closes its
//! connections everywhere.

use std::time::{Duration, Instant};

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};
use serde_json::Value;

use crate::amqp_support::{persistent, publish, reply_code};
use crate::cluster_support::{CLUSTER_WAIT, Cluster, metadata_of};
use crate::stomp_support::Stomp;
use crate::support::{Broker, ferry_bin, http_json, watchdog};

fn uri(b: &Broker, vhost: &str) -> String {
    format!("amqp://guest:guest@127.0.0.1:{}/{vhost}", b.amqp_port)
}

/// The vhost names node `b` lists.
fn listed(b: &Broker) -> Vec<String> {
    let (status, v) = http_json(b, "GET", "/api/vhosts", None);
    assert_eq!(status, 200, "{v}");
    v.as_array().unwrap().iter().filter_map(|x| x["name"].as_str().map(str::to_string)).collect()
}

/// The quorum queues' partitions node `via` lists.
fn queue_topics(b: &Broker) -> Vec<String> {
    metadata_of(b, &["*"])
        .map(|md| md.topics.into_iter().map(|t| t.name).filter(|n| n.starts_with("__amqp_queue.")).collect())
        .unwrap_or_default()
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + CLUSTER_WAIT;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Connecting to `vhost` through `b` is refused as RabbitMQ refuses an
/// unknown vhost (connection.close 530 NOT_ALLOWED).
async fn refused(b: &Broker, vhost: &str) -> bool {
    match Connection::connect(&uri(b, vhost), ConnectionProperties::default()).await {
        Ok(c) => {
            let _ = c.close(200, "".into()).await;
            false
        }
        Err(e) => {
            assert_eq!(reply_code(&e), Some(530), "{e}");
            true
        }
    }
}

fn acl(b: &Broker, resource_type: &str, name: &str, pattern: &str, operation: &str) {
    let body = format!(
        r#"{{"principal": "User:guest", "operation": "{operation}", "resource_type": "{resource_type}",
            "resource_name": "{name}", "pattern_type": "{pattern}"}}"#
    );
    let (status, v) = http_json(b, "POST", "/v1/acls", Some(&body));
    assert_eq!(status, 201, "{v}");
}

/// Three `ferry serve`: node 1's HTTP creates a vhost (201, then 204);
/// every node lists it; guest may not open it until granted (safe by
/// default); a lapin client on node 3 declares a quorum queue in it and
/// publishes with confirms. Node 2 is killed with SIGKILL; the vhost is
/// deleted through node 1: node 3's AMQP connection is closed (320) and
/// its STOMP connection gets an ERROR frame, the
/// queue's partition is gone, connecting is refused (530) on nodes 1
/// and 3; node 2, restarted, lists the same vhosts, refuses the deleted
/// one and has removed its files. `ferry vhost` adds, lists and deletes.
#[test]
fn vhosts_are_cluster_records() {
    let _guard = watchdog("amqp_cluster_vhosts::vhosts_are_cluster_records", Duration::from_secs(300));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut c = Cluster::start(3);
    for id in c.ids() {
        c.wait_for_brokers(id, &[1, 2, 3]);
    }
    for id in c.ids() {
        assert_eq!(listed(c.node(id)), ["/"], "node {id}: the config's vhost, created at the first start");
    }
    let before = queue_topics(c.node(1));

    assert_eq!(http_json(c.node(1), "PUT", "/api/vhosts/orders", None).0, 201);
    assert_eq!(http_json(c.node(1), "PUT", "/api/vhosts/orders", Some("{\"description\": \"x\"}")).0, 204);
    assert_eq!(http_json(c.node(1), "GET", "/api/vhosts/orders", None).1["name"], "orders");
    assert_eq!(http_json(c.node(2), "PUT", "/api/vhosts/__mqtt", None).0, 400, "MQTT's vhost is reserved");
    for id in c.ids() {
        wait_until(&format!("node {id} to list the vhost"), || listed(c.node(id)) == ["/", "orders"]);
    }
    // No permission on a new vhost but a super user's (none here).
    assert!(rt.block_on(refused(c.node(3), "orders")), "guest opened a vhost it was not granted");
    acl(c.node(1), "vhost", "orders", "literal", "describe");
    acl(c.node(1), "queue", "orders/", "prefixed", "all");
    acl(c.node(1), "exchange", "orders/", "prefixed", "all");

    let conn = rt.block_on(async {
        let deadline = Instant::now() + CLUSTER_WAIT;
        let conn = loop {
            match Connection::connect(&uri(c.node(3), "orders"), ConnectionProperties::default()).await {
                Ok(conn) => break conn,
                // Node 3 applies the ACL a moment after node 1.
                Err(e) if Instant::now() < deadline => {
                    assert_eq!(reply_code(&e), Some(530), "{e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("node 3 never opened the vhost: {e}"),
            }
        };
        let ch = conn.create_channel().await.unwrap();
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        ch.queue_declare("jobs".into(), durable, args).await.expect("quorum queue in the new vhost");
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        for i in 0..10 {
            publish(&ch, "", "jobs", format!("m{i}").as_bytes(), persistent()).await;
        }
        let got = ch.basic_get("jobs".into(), BasicGetOptions { no_ack: true }).await.unwrap();
        assert_eq!(got.map(|m| m.delivery.data), Some(b"m0".to_vec()));
        conn
    });
    // A STOMP client of the vhost on node 3 too.
    let mut stomp = Stomp::connect_with(c.node(3), &[("accept-version", "1.2"), ("host", "orders")]);
    let made: Vec<String> = queue_topics(c.node(1)).into_iter().filter(|t| !before.contains(t)).collect();
    assert_eq!(made.len(), 1, "the quorum queue's partition: {made:?}");

    c.kill9(2);
    assert_eq!(http_json(c.node(1), "DELETE", "/api/vhosts/orders", None).0, 204);
    assert_eq!(http_json(c.node(1), "DELETE", "/api/vhosts/orders", None).0, 404);
    // Node 3 applies the deletion a moment after node 1 answered.
    wait_until("node 3 to drop the vhost", || http_json(c.node(3), "GET", "/api/vhosts/orders", None).0 == 404);
    rt.block_on(async {
        // Node 3 closes its connection to the deleted vhost.
        let deadline = Instant::now() + CLUSTER_WAIT;
        while conn.status().connected() {
            assert!(Instant::now() < deadline, "the connection to the deleted vhost stayed open");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // So is the STOMP one (an ERROR frame, then the end of the stream).
        let error = stomp.error_then_close();
        assert_eq!(error.header("message"), Some("not_found"), "{error:?}");
        assert!(String::from_utf8_lossy(&error.body).contains("vhost 'orders' is deleted"), "{error:?}");
        for id in [1, 3] {
            let deadline = Instant::now() + CLUSTER_WAIT;
            while !refused(c.node(id), "orders").await {
                assert!(Instant::now() < deadline, "node {id} still opens the deleted vhost");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    wait_until("the queue's partition to go", || queue_topics(c.node(1)).iter().all(|t| !made.contains(t)));

    c.restart(2);
    c.wait_for_brokers(2, &[1, 2, 3]);
    wait_until("node 2 to list the same vhosts", || listed(c.node(2)) == ["/"]);
    assert!(rt.block_on(refused(c.node(2), "orders")));
    assert!(!c.node(2).data_dir().join("queues/orders").exists(), "node 2 removed the deleted vhost's files");
    // The default vhost still works there.
    rt.block_on(async {
        let conn = Connection::connect(&uri(c.node(2), "%2f"), ConnectionProperties::default()).await.unwrap();
        conn.close(200, "".into()).await.unwrap();
    });

    // The CLI, through node 2's HTTP.
    let http = format!("127.0.0.1:{}", c.node(2).http_port);
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(ferry_bin()).arg("vhost").args(args).arg("--http").arg(&http).output();
        let out = out.expect("ferry vhost");
        assert!(out.status.success(), "ferry vhost {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(cli(&["add", "a/b"]).contains("created"));
    let list = cli(&["list", "--format", "json"]);
    let names: Vec<Value> = serde_json::from_str::<Value>(&list).unwrap().as_array().unwrap().clone();
    assert_eq!(names.iter().filter_map(|v| v["name"].as_str()).collect::<Vec<_>>(), ["/", "a/b"]);
    wait_until("node 1 to list the CLI's vhost", || listed(c.node(1)) == ["/", "a/b"]);
    cli(&["delete", "a/b"]);
    wait_until("node 3 to drop the CLI's vhost", || listed(c.node(3)) == ["/"]);
}
