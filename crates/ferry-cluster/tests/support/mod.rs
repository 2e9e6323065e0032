//! What the in-process cluster tests share: node configurations on
//! 127.0.0.1, starting and stopping a node (its broker and cluster node),
//! and bounded waits.
#![allow(dead_code)] // each test binary uses its own part of it

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_broker::metadata::listener;
use ferry_broker::{Broker, BrokerConfig};
use ferry_cluster::replication::ReplicationConfig;
use ferry_cluster::{ClusterConfig, ClusterError, ClusterNode};

/// Longest any awaited condition may take.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub fn free_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
}

/// Node `id`'s configuration; its advertised Kafka port is `kafka_base + id`
/// (advertised only: these tests serve no Kafka listener).
pub fn config(id: i32, data: &Path, listen: &str, quorum: &[(i32, String)], kafka_base: u16) -> ClusterConfig {
    ClusterConfig {
        node_id: id,
        data_dir: data.to_path_buf(),
        cluster_listen: listen.to_string(),
        quorum: quorum.to_vec(),
        rack: None,
        listeners: BTreeMap::from([(listener::KAFKA.to_string(), format!("127.0.0.1:{}", i32::from(kafka_base) + id))]),
        heartbeat_interval: Duration::from_millis(200),
        session_timeout: Duration::from_secs(2),
        dead_node_grace: Duration::from_secs(1),
        default_partitions: 1,
        default_replication_factor: None,
        max_partitions_per_topic: 1000,
        replication: ReplicationConfig::default(),
        leader_balance: ferry_cluster::controller::LeaderBalanceConfig::default(),
        tls: None,
        dial_via: BTreeMap::new(),
    }
}

pub struct Member {
    pub config: ClusterConfig,
    pub broker: Arc<Broker>,
    pub node: Arc<ClusterNode>,
}

impl Member {
    pub fn id(&self) -> i32 {
        self.config.node_id
    }

    /// Stops the node; its configuration restarts it on the same directory.
    pub async fn stop(self) -> ClusterConfig {
        self.node.shutdown().await;
        self.broker.shutdown();
        self.config
    }
}

pub async fn start(config: ClusterConfig) -> Result<Member, ClusterError> {
    let broker =
        Broker::open(BrokerConfig { node_id: config.node_id, data_dir: config.data_dir.clone(), ..Default::default() })
            .unwrap();
    let node = ClusterNode::start(config.clone(), broker.clone()).await?;
    Ok(Member { config, broker, node })
}

/// Polls `check` until it yields, for at most [`PATIENCE`].
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {PATIENCE:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `f`, or a failed test after `limit`.
pub async fn bounded<T>(limit: Duration, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, f).await.expect("the test ran out of time")
}
