//! The leader side with a real single-node quorum: heartbeats are counted
//! while a decision holds its turn (Found 14).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_broker::metadata::listener;
use ferry_broker::{Broker, BrokerConfig};
use ferry_util::sync::lock;

use crate::ClusterConfig;
use crate::node::ClusterNode;

fn config(data: &std::path::Path) -> ClusterConfig {
    ClusterConfig {
        node_id: 7,
        data_dir: data.to_path_buf(),
        cluster_listen: "127.0.0.1:0".into(),
        quorum: Vec::new(),
        rack: None,
        listeners: BTreeMap::from([(listener::KAFKA.to_string(), "127.0.0.1:19097".to_string())]),
        heartbeat_interval: Duration::from_millis(100),
        session_timeout: Duration::from_secs(2),
        dead_node_grace: Duration::from_secs(1),
        default_partitions: 1,
        default_replication_factor: None,
        max_partitions_per_topic: 100,
        replication: crate::replication::ReplicationConfig::default(),
        leader_balance: crate::controller::LeaderBalanceConfig::default(),
        tls: None,
        dial_via: BTreeMap::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_are_counted_while_a_decision_holds_its_turn() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let broker =
        Broker::open(BrokerConfig { node_id: 7, data_dir: dir.path().to_path_buf(), ..Default::default() }).unwrap();
    let cluster =
        tokio::time::timeout(Duration::from_secs(60), ClusterNode::start(cfg, broker.clone())).await.unwrap().unwrap();
    let node = cluster.node.clone();
    // A decision whose commit takes longer than a session (a slow quorum):
    // it holds its turn for 3 s.
    let turn = tokio::time::timeout(Duration::from_secs(30), node.leading.turn.lock()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Meanwhile the node's heartbeat loop (every 100 ms) was answered and
    // counted: it was heard within the last second. (Through the decisions'
    // lock, as before the fix, it would be silent for 3 s.)
    let image = node.image();
    let quiet = {
        let mut state = lock(&node.leading.state);
        let s = state.as_mut().expect("the controller of the term");
        s.controller.quiet(&image, Instant::now(), Duration::from_secs(1))
    };
    assert_eq!(quiet, Vec::<i32>::new(), "heard while the turn was held");
    drop(turn);
    // Ticks resume and fence no one.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(node.image().nodes.values().all(|n| !n.fenced));
    cluster.shutdown().await;
    broker.shutdown();
}
