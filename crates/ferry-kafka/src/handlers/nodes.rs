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
/// included even before its registration is applied, or while it is fenced.
pub fn live_brokers(c: &Call, image: &MetadataImage) -> Vec<Endpoint> {
    let advertised = Endpoint {
        node_id: c.ctx.broker.node_id(),
        host: c.ctx.config.advertised_host.clone(),
        port: c.ctx.config.advertised_port,
        rack: None,
    };
    brokers_answering(image, &c.ctx.config.listener_key, advertised)
}

/// [`live_brokers`] as answered by the node whose own endpoint is `me`
/// (its listener's advertised address). The answering node is always in
/// the list: a client that reached it must be able to reach it again. A
/// list without it (this node fenced in its image, and at the time every
/// other node too: chaos seeds 7 and 9, docs/reliability.md Found 14) made
/// librdkafka 2.12 decommission every broker it knew, its bootstrap
/// brokers included, and then wait forever with "no usable brokers".
fn brokers_answering(image: &MetadataImage, listener_key: &str, me: Endpoint) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = image.live_nodes().filter_map(|n| Endpoint::of(n, listener_key)).collect();
    if !out.iter().any(|e| e.node_id == me.node_id) {
        // Registered (maybe fenced): its registered endpoint; else the listener's.
        let registered = image.nodes.get(&me.node_id).and_then(|n| Endpoint::of(n, listener_key));
        out.push(registered.unwrap_or(me));
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

#[cfg(test)]
mod tests {
    use ferry_broker::metadata::{MetadataImage, MetadataRecord, NodeInfo, listener};

    use super::{Endpoint, brokers_answering};

    fn image(nodes: &[(i32, bool)]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for (i, (id, fenced)) in nodes.iter().enumerate() {
            let node = NodeInfo {
                id: *id,
                incarnation: uuid::Uuid::nil(),
                listeners: [(listener::KAFKA.to_string(), format!("10.0.0.{id}:9092"))].into(),
                rack: None,
                voter: true,
                fenced: false,
            };
            let index = i as u64 * 2 + 1;
            image.apply(index, &MetadataRecord::RegisterNode(node)).unwrap();
            if *fenced {
                image.apply(index + 1, &MetadataRecord::FenceNode { node_id: *id }).unwrap();
            }
        }
        image
    }

    fn me(id: i32) -> Endpoint {
        Endpoint { node_id: id, host: "advertised".into(), port: 19092, rack: None }
    }

    fn ids(out: &[Endpoint]) -> Vec<(i32, String)> {
        out.iter().map(|e| (e.node_id, e.host.clone())).collect()
    }

    /// The answering node is always listed, so a client never learns a
    /// broker list without the broker it is talking to; fenced others are not.
    #[test]
    fn the_answering_node_is_listed_even_when_its_image_fences_everyone() {
        let all_fenced = image(&[(1, true), (2, true), (3, true)]);
        assert_eq!(ids(&brokers_answering(&all_fenced, listener::KAFKA, me(2))), [(2, "10.0.0.2".into())]);
        let me_fenced = image(&[(1, false), (2, true), (3, true)]);
        assert_eq!(
            ids(&brokers_answering(&me_fenced, listener::KAFKA, me(2))),
            [(1, "10.0.0.1".into()), (2, "10.0.0.2".into())]
        );
        let healthy = image(&[(1, false), (2, false), (3, true)]);
        assert_eq!(
            ids(&brokers_answering(&healthy, listener::KAFKA, me(1))),
            [(1, "10.0.0.1".into()), (2, "10.0.0.2".into())]
        );
        // Not registered yet: the listener's advertised address.
        let before = image(&[(1, false)]);
        assert_eq!(
            ids(&brokers_answering(&before, listener::KAFKA, me(4))),
            [(1, "10.0.0.1".into()), (4, "advertised".into())]
        );
    }
}
