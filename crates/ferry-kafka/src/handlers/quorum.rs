//! DescribeQuorum (API 55): the controller quorum of the metadata log, as
//! this node sees it (`Broker::controller_status`). Kafka answers only on
//! the quorum leader; Ferry answers on every node from its own view, so an
//! operator can ask any node (leader -1 while it knows none).

use ferry_broker::metadata::{ControllerStatus, MetadataImage, listener};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_quorum_response::{Listener, Node, PartitionData, ReplicaState, TopicData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::Call;
use crate::response::Reply;

/// The metadata log's name in DescribeQuorum (Kafka's `__cluster_metadata`).
pub const METADATA_TOPIC: &str = "__cluster_metadata";

pub fn describe_quorum(c: &Call, req: DescribeQuorumRequest) -> Reply {
    let resp = quorum_response(&c.ctx.broker.controller_status(), &c.ctx.broker.metadata(), &req, c.version);
    c.reply(ApiKey::DescribeQuorum, &resp)
}

/// The response to `req` at `version`, from `status` and the nodes' listeners in `image`.
fn quorum_response(
    status: &ControllerStatus,
    image: &MetadataImage,
    req: &DescribeQuorumRequest,
    version: i16,
) -> DescribeQuorumResponse {
    // As Kafka: exactly one topic with one partition.
    let [topic] = req.topics.as_slice() else {
        return DescribeQuorumResponse::default().with_error_code(ResponseError::InvalidRequest.code());
    };
    let [partition] = topic.partitions.as_slice() else {
        return DescribeQuorumResponse::default().with_error_code(ResponseError::InvalidRequest.code());
    };
    let mut data = PartitionData::default().with_partition_index(partition.partition_index);
    if &*topic.topic_name.0 != METADATA_TOPIC || partition.partition_index != 0 {
        data.error_code = ResponseError::UnknownTopicOrPartition.code();
        data.leader_id = BrokerId(-1);
        data.leader_epoch = -1;
        data.high_watermark = -1;
    } else {
        let replica = |id: i32| {
            // Only this node's own progress is known here.
            let log_end =
                if id == status.node_id { i64::try_from(status.applied_index).unwrap_or(i64::MAX) } else { -1 };
            ReplicaState::default()
                .with_replica_id(BrokerId(id))
                .with_log_end_offset(log_end)
                .with_last_fetch_timestamp(-1)
                .with_last_caught_up_timestamp(-1)
        };
        data.leader_id = BrokerId(status.leader.unwrap_or(-1));
        data.leader_epoch = i32::try_from(status.term).unwrap_or(i32::MAX);
        data.high_watermark = i64::try_from(status.commit_index).unwrap_or(i64::MAX);
        data.current_voters = status.voters.iter().map(|id| replica(*id)).collect();
        data.observers = status.observers.iter().map(|id| replica(*id)).collect();
    }
    let mut resp = DescribeQuorumResponse::default()
        .with_topics(vec![TopicData::default().with_topic_name(topic.topic_name.clone()).with_partitions(vec![data])]);
    if version >= 2 {
        resp.nodes = status.voters.iter().map(|id| voter_node(image, *id)).collect();
    }
    resp
}

/// A voter and its cluster listener, if it has registered one.
fn voter_node(image: &MetadataImage, id: i32) -> Node {
    let listeners = image
        .nodes
        .get(&id)
        .and_then(|n| n.listeners.get(listener::CLUSTER))
        .and_then(|addr| {
            let (host, port) = addr.rsplit_once(':')?;
            Some(
                Listener::default()
                    .with_name(StrBytes::from_static_str("CONTROLLER"))
                    .with_host(StrBytes::from_string(host.trim_matches(['[', ']']).to_string()))
                    .with_port(port.parse().ok()?),
            )
        })
        .into_iter()
        .collect();
    Node::default().with_node_id(BrokerId(id)).with_listeners(listeners)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_broker::metadata::{MetadataRecord, NodeInfo};
    use kafka_protocol::messages::describe_quorum_request::{PartitionData as Wanted, TopicData as WantedTopic};

    fn request(topic: &str, partitions: &[i32]) -> DescribeQuorumRequest {
        DescribeQuorumRequest::default().with_topics(vec![
            WantedTopic::default()
                .with_topic_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(partitions.iter().map(|p| Wanted::default().with_partition_index(*p)).collect()),
        ])
    }

    fn status() -> ControllerStatus {
        ControllerStatus {
            node_id: 2,
            leader: Some(1),
            term: 7,
            commit_index: 40,
            applied_index: 38,
            voters: vec![1, 2, 3],
            observers: vec![4],
            waiting: None,
        }
    }

    #[test]
    fn the_metadata_partition_reports_leader_term_and_voters() {
        let mut image = MetadataImage::default();
        let node = NodeInfo {
            id: 1,
            incarnation: uuid::Uuid::nil(),
            listeners: [(listener::CLUSTER.to_string(), "[::1]:9192".to_string())].into(),
            rack: None,
            voter: true,
            fenced: false,
        };
        image.apply(1, &MetadataRecord::RegisterNode(node)).unwrap();
        let resp = quorum_response(&status(), &image, &request(METADATA_TOPIC, &[0]), 2);
        assert_eq!(resp.error_code, 0);
        let p = &resp.topics[0].partitions[0];
        assert_eq!((p.error_code, p.leader_id.0, p.leader_epoch, p.high_watermark), (0, 1, 7, 40));
        let voters: Vec<(i32, i64)> = p.current_voters.iter().map(|r| (r.replica_id.0, r.log_end_offset)).collect();
        assert_eq!(voters, vec![(1, -1), (2, 38), (3, -1)], "only this node's own progress is known");
        assert_eq!(p.observers.iter().map(|r| r.replica_id.0).collect::<Vec<_>>(), vec![4]);
        assert_eq!(resp.nodes.len(), 3);
        let l = &resp.nodes[0].listeners[0];
        assert_eq!((&*l.host, l.port), ("::1", 9192));
        assert!(resp.nodes[1].listeners.is_empty(), "node 2 has not registered");
        // Older versions carry no node list.
        assert!(quorum_response(&status(), &image, &request(METADATA_TOPIC, &[0]), 1).nodes.is_empty());
    }

    #[test]
    fn no_leader_and_wrong_partitions() {
        let image = MetadataImage::default();
        let resp = quorum_response(&ControllerStatus::default(), &image, &request(METADATA_TOPIC, &[0]), 0);
        assert_eq!(resp.topics[0].partitions[0].leader_id.0, -1);
        let resp = quorum_response(&status(), &image, &request("t", &[0]), 0);
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        assert_eq!(resp.topics[0].partitions[0].error_code, unknown);
        assert_eq!(
            quorum_response(&status(), &image, &request(METADATA_TOPIC, &[1]), 0).topics[0].partitions[0].error_code,
            unknown
        );
        let invalid = ResponseError::InvalidRequest.code();
        assert_eq!(quorum_response(&status(), &image, &request(METADATA_TOPIC, &[0, 1]), 0).error_code, invalid);
        assert_eq!(quorum_response(&status(), &image, &DescribeQuorumRequest::default(), 0).error_code, invalid);
    }
}
