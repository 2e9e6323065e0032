//! What the handlers tell clients about nodes and leaders, all from the
//! metadata image: the live brokers with their Kafka endpoints, and the
//! current leader of a partition this node does not lead (KIP-951 hints).

use ferry_broker::metadata::{MetadataImage, NodeInfo};

use super::Call;

/// A broker as clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

impl Endpoint {
    fn of(node: &NodeInfo, listener_key: &str) -> Option<Endpoint> {
        let (host, port) = node.kafka_endpoint_on(listener_key)?;
        Some(Endpoint { node_id: node.id, host, port, rack: node.rack.clone() })
    }
}

/// A node's Kafka endpoint, if it is live and has one. This node falls
/// back to the listener's advertised address until its registration is in
/// the image (a client reaching us must be able to reach us again).
pub fn endpoint(c: &Call, image: &MetadataImage, node_id: i32) -> Option<Endpoint> {
    match image.nodes.get(&node_id) {
        Some(n) if !n.fenced => Endpoint::of(n, &c.ctx.config.listener_key),
        Some(_) => None,
        None if node_id == c.ctx.broker.node_id() => Some(Endpoint {
            node_id,
            host: c.ctx.config.advertised_host.clone(),
            port: c.ctx.config.advertised_port,
            rack: None,
        }),
        None => None,
    }
}

/// Every live (unfenced) node with a Kafka endpoint, by id; this node
/// included even before its registration is applied.
pub fn live_brokers(c: &Call, image: &MetadataImage) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> =
        image.live_nodes().filter_map(|n| Endpoint::of(n, &c.ctx.config.listener_key)).collect();
    let me = c.ctx.broker.node_id();
    if !image.nodes.contains_key(&me)
        && let Some(e) = endpoint(c, image, me)
    {
        out.push(e);
        out.sort_by_key(|e| e.node_id);
    }
    out
}

/// (leader id, leader epoch) of a partition, for NOT_LEADER_OR_FOLLOWER
/// answers; `None` for an unknown partition.
pub fn current_leader(image: &MetadataImage, topic: &str, partition: i32) -> Option<(i32, i32)> {
    image.partition(topic, partition).map(|p| (p.leader, p.leader_epoch))
}

/// The endpoints of `leaders` (deduplicated, live only), for a response's
/// `node_endpoints`.
pub fn endpoints_of(c: &Call, image: &MetadataImage, leaders: impl IntoIterator<Item = i32>) -> Vec<Endpoint> {
    let mut ids: Vec<i32> = leaders.into_iter().filter(|l| *l >= 0).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter().filter_map(|id| endpoint(c, image, id)).collect()
}
