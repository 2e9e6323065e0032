//! The cluster as this node sees it: `GET /v1/cluster` (nodes, the
//! controller quorum, partitions and leaders per node) and the cluster
//! metric families, both read from `Broker::metadata()` and
//! `Broker::controller_status()`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use ferry_broker::Broker;
use ferry_broker::metadata::{ControllerStatus, MetadataImage, NodeInfo};
use ferry_broker::metrics::{Labels, family, gauge};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use serde_json::{Value, json};

/// Replicas and leaderships a node holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Load {
    replicas: usize,
    leaders: usize,
}

/// Replicas and leaderships per node id, over every partition of `image`.
fn load(image: &MetadataImage) -> BTreeMap<i32, Load> {
    let mut load: BTreeMap<i32, Load> = BTreeMap::new();
    for p in image.topics.values().flat_map(|t| &t.partitions) {
        for r in &p.replicas {
            load.entry(*r).or_default().replicas += 1;
        }
        if p.leader >= 0 {
            load.entry(p.leader).or_default().leaders += 1;
        }
    }
    load
}

/// The body of `GET /v1/cluster`.
pub(crate) fn cluster_json(broker: &Broker) -> Value {
    let image = broker.metadata();
    let status = broker.controller_status();
    let load = load(&image);
    let node = |n: &NodeInfo| {
        let l = load.get(&n.id).copied().unwrap_or_default();
        json!({
            "id": n.id,
            "incarnation": n.incarnation.to_string(),
            "rack": n.rack,
            "voter": n.voter,
            "fenced": n.fenced,
            "decommissioning": image.decommissioning.contains(&n.id),
            "listeners": n.listeners,
            "replicas": l.replicas,
            "leaders": l.leaders,
        })
    };
    let partitions: usize = image.topics.values().map(|t| t.partitions.len()).sum();
    let leaderless = image.topics.values().flat_map(|t| &t.partitions).filter(|p| p.leader < 0).count();
    json!({
        "cluster_id": image.cluster_id.as_deref().unwrap_or(broker.cluster_id()),
        "node_id": broker.node_id(),
        "topics": broker.topics().len(),
        "groups": broker.groups().list().len(),
        "controller": {
            "leader": status.leader,
            "term": status.term,
            "commit_index": status.commit_index,
            "applied_index": status.applied_index,
            "voters": status.voters,
            "observers": status.observers,
            "waiting": status.waiting,
        },
        "metadata": {
            "applied_index": image.applied_index,
            "topics": image.topics.len(),
            "partitions": partitions,
            "leaderless_partitions": leaderless,
        },
        "nodes": image.nodes.values().map(node).collect::<Vec<_>>(),
    })
}

/// The cluster metric families, read from the broker at every scrape. It
/// holds the broker weakly: the broker's registry holds the collector.
pub(crate) struct ClusterCollector(pub(crate) Weak<Broker>);

impl ClusterCollector {
    /// Registers the cluster families with `broker`'s metrics.
    pub(crate) fn register(broker: &Arc<Broker>) {
        broker.metrics().register_collector("cluster", Arc::new(ClusterCollector(Arc::downgrade(broker))));
    }
}

impl std::fmt::Debug for ClusterCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterCollector")
    }
}

impl Collector for ClusterCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(broker) = self.0.upgrade() else { return Ok(()) };
        families(&mut e, &broker.controller_status(), &broker.metadata())
    }
}

fn families(
    e: &mut DescriptorEncoder,
    status: &ControllerStatus,
    image: &MetadataImage,
) -> Result<(), std::fmt::Error> {
    let one = |v: i64| [(Labels::new(), gauge(v))];
    let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    family(
        e,
        "ferry_controller_leader",
        "Node id of the controller quorum's leader as this node knows it (-1: none)",
        one(i64::from(status.leader.unwrap_or(-1))),
    )?;
    family(e, "ferry_raft_term", "The metadata log's Raft term", one(clamp(status.term)))?;
    family(
        e,
        "ferry_raft_commit_index",
        "The last metadata log index known committed",
        one(clamp(status.commit_index)),
    )?;
    family(
        e,
        "ferry_raft_applied_index",
        "The last metadata log index applied to this node's image",
        one(clamp(status.applied_index)),
    )?;
    let fenced = image.nodes.values().filter(|n| n.fenced).count();
    let live = image.nodes.len() - fenced;
    let count = |n: usize| gauge(i64::try_from(n).unwrap_or(i64::MAX));
    family(
        e,
        "ferry_cluster_nodes",
        "Registered nodes, live or fenced",
        [
            (vec![("state", Cow::Borrowed("live"))], count(live)),
            (vec![("state", Cow::Borrowed("fenced"))], count(fenced)),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_broker::metadata::{Controller, ControllerFuture, ControllerReply, ControllerRequest, MetadataRecord};
    use ferry_broker::{BrokerConfig, metadata::MetadataError};
    use uuid::Uuid;

    /// A controller that only reports a fixed status.
    struct Fixed(ControllerStatus);

    impl Controller for Fixed {
        fn submit(&self, _: ControllerRequest) -> ControllerFuture<ControllerReply> {
            Box::pin(async { Err(MetadataError::Unavailable("test".into())) })
        }

        fn status(&self) -> ControllerStatus {
            self.0.clone()
        }

        fn call_peer(&self, _: i32, _: ferry_broker::metadata::PeerRequest) -> ferry_broker::metadata::PeerFuture {
            Box::pin(async { Err(ferry_broker::metadata::PeerError::Unavailable("test".into())) })
        }
    }

    fn node(id: i32, rack: Option<&str>) -> NodeInfo {
        NodeInfo {
            id,
            incarnation: Uuid::from_u128(id as u128),
            listeners: [("kafka".to_string(), format!("127.0.0.1:{}", 9090 + id))].into(),
            rack: rack.map(str::to_string),
            voter: id <= 2,
            fenced: false,
        }
    }

    /// A broker with three nodes (3 fenced), a topic of 3 partitions and a
    /// controller status.
    fn broker(dir: &std::path::Path, waiting: Option<&str>) -> Arc<Broker> {
        let broker = Broker::open(BrokerConfig { data_dir: dir.to_path_buf(), ..BrokerConfig::default() }).unwrap();
        let mut image = MetadataImage::default();
        let topic = Uuid::from_u128(7);
        let records = [
            MetadataRecord::InitCluster { cluster_id: "c-1".into() },
            MetadataRecord::RegisterNode(node(1, Some("a"))),
            MetadataRecord::RegisterNode(node(2, Some("b"))),
            MetadataRecord::RegisterNode(node(3, None)),
            MetadataRecord::CreateTopic {
                name: "t".into(),
                id: topic,
                internal: false,
                configs: BTreeMap::new(),
                replicas: vec![vec![1, 2], vec![2, 3], vec![3, 1]],
            },
            MetadataRecord::FenceNode { node_id: 3 },
            MetadataRecord::PartitionChange {
                topic_id: topic,
                partition: 2,
                leader: -1,
                isr: vec![3],
                replicas: None,
                elr: None,
            },
        ];
        image.apply_batch(12, &records).unwrap();
        broker.apply_image(Arc::new(image));
        broker.set_controller(Arc::new(Fixed(ControllerStatus {
            node_id: 1,
            leader: Some(2),
            term: 5,
            commit_index: 12,
            applied_index: 11,
            voters: vec![1, 2],
            observers: vec![3],
            waiting: waiting.map(str::to_string),
        })));
        broker
    }

    #[test]
    fn cluster_json_reports_nodes_quorum_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let v = cluster_json(&broker(dir.path(), None));
        assert_eq!(v["cluster_id"], "c-1");
        assert_eq!(v["controller"]["leader"], 2);
        assert_eq!(v["controller"]["term"], 5);
        assert_eq!(v["controller"]["voters"], json!([1, 2]));
        assert_eq!(v["metadata"]["partitions"], 3);
        assert_eq!(v["metadata"]["leaderless_partitions"], 1);
        let nodes = v["nodes"].as_array().unwrap();
        let summary: Vec<(i64, bool, i64, i64)> = nodes
            .iter()
            .map(|n| {
                let i = |k: &str| n[k].as_i64().unwrap();
                (i("id"), n["fenced"].as_bool().unwrap(), i("replicas"), i("leaders"))
            })
            .collect();
        assert_eq!(summary, vec![(1, false, 2, 1), (2, false, 2, 1), (3, true, 2, 0)]);
        assert_eq!(nodes[0]["rack"], "a");
        assert_eq!(nodes[0]["listeners"]["kafka"], "127.0.0.1:9091");
    }

    #[test]
    fn metrics_carry_the_quorum_and_node_states() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path(), None);
        ClusterCollector::register(&broker);
        let text = broker.encode_metrics();
        for line in [
            "ferry_controller_leader 2",
            "ferry_raft_term 5",
            "ferry_raft_commit_index 12",
            "ferry_raft_applied_index 11",
            "ferry_cluster_nodes{state=\"live\"} 2",
            "ferry_cluster_nodes{state=\"fenced\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }
    }
}
