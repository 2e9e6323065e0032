//! Metadata, from the cluster's metadata image: the live brokers, the
//! controller, and per partition its leader, epoch, replicas and ISR.
//! Missing topics are auto-created through the controller first (if the
//! request and the broker allow it).

use std::collections::BTreeMap;
use std::sync::Arc;

use ferry_broker::BrokerError;
use ferry_broker::metadata::{MetadataImage, TopicInfo};
use ferry_broker::security::{Operation, ResourceType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{ApiKey, BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::Call;
use super::nodes::live_brokers;
use crate::errors::{denied_code, error_code};
use crate::response::{Reply, Response, encode};

pub fn handle(c: &Call, req: MetadataRequest) -> Reply {
    // Auto-creation: v4+ asks explicitly; older versions always allow it.
    let auto_create = (c.version < 4 || req.allow_auto_topic_creation) && c.ctx.broker.config().auto_create_topics;
    let image = c.ctx.broker.metadata();
    let missing: Vec<String> = match &req.topics {
        Some(list) if auto_create => list
            .iter()
            .filter_map(|t| t.name.as_ref())
            .filter(|n| image.topic(n).is_none())
            // Kafka creates only what the client may see and create.
            .filter(|n| {
                c.allowed(Operation::Describe, ResourceType::Topic, n)
                    && (c.allowed_cluster(Operation::Create) || c.allowed(Operation::Create, ResourceType::Topic, n))
            })
            .map(|n| n.to_string())
            .collect(),
        _ => Vec::new(),
    };
    if missing.is_empty() {
        return Reply::Ready(respond(c, req, &BTreeMap::new()));
    }
    let c = c.clone();
    Reply::Inline(Box::pin(async move {
        let mut failed = BTreeMap::new();
        for name in missing {
            if let Err(e) = c.ctx.broker.ensure_topic(&name).await {
                // A controller that cannot answer now: retriable, as for a
                // topic whose leader is not elected yet.
                let code = match e {
                    BrokerError::ControllerUnavailable(_) => ResponseError::LeaderNotAvailable.code(),
                    e => error_code(&e),
                };
                failed.insert(name, code);
            }
        }
        respond(&c, req, &failed)
    }))
}

/// The response, as of the image now; `failed`: topics whose creation failed.
fn respond(c: &Call, req: MetadataRequest, failed: &BTreeMap<String, i16>) -> Response {
    let broker = &c.ctx.broker;
    let v = c.version;
    let image = broker.metadata();
    let topics = match req.topics {
        // v0 has no null: an empty list means all topics there.
        Some(list) if !(v == 0 && list.is_empty()) => list
            .into_iter()
            .map(|t| match t.name {
                // Unauthorized topics answer TOPIC_AUTHORIZATION_FAILED,
                // whether they exist or not (existence is not revealed).
                Some(name) if !c.allowed(Operation::Describe, ResourceType::Topic, &name) => {
                    error_entry(&name, denied_code(ResourceType::Topic))
                }
                Some(name) => match (failed.get(name.as_str()), image.topic(&name)) {
                    (Some(code), _) => error_entry(&name, *code),
                    (None, Some(info)) => topic_entry(c, &image, info),
                    (None, None) => {
                        let e = ferry_broker::validate_topic_name(&name)
                            .err()
                            .unwrap_or(BrokerError::UnknownTopicOrPartition);
                        error_entry(&name, error_code(&e))
                    }
                },
                None => match image.topic_by_id(t.topic_id) {
                    Some(info) if !c.allowed(Operation::Describe, ResourceType::Topic, &info.name) => {
                        MetadataResponseTopic::default()
                            .with_error_code(denied_code(ResourceType::Topic))
                            .with_topic_id(t.topic_id)
                    }
                    Some(info) => topic_entry(c, &image, info),
                    None => MetadataResponseTopic::default()
                        .with_error_code(ResponseError::UnknownTopicId.code())
                        .with_topic_id(t.topic_id),
                },
            })
            .collect(),
        // All topics: those the client may describe (Kafka omits the rest).
        _ => image
            .topics
            .values()
            .filter(|t| c.allowed(Operation::Describe, ResourceType::Topic, &t.name))
            .map(|t| topic_entry(c, &image, t))
            .collect(),
    };
    let brokers = live_brokers(c, &image)
        .into_iter()
        .map(|e| {
            let mut b = MetadataResponseBroker::default()
                .with_node_id(BrokerId(e.node_id))
                .with_host(StrBytes::from_string(e.host))
                .with_port(e.port);
            if v >= 1 {
                b.rack = e.rack.map(StrBytes::from_string);
            }
            b
        })
        .collect();
    let mut resp = MetadataResponse::default().with_brokers(brokers).with_topics(topics);
    if v >= 1 {
        resp.controller_id = BrokerId(broker.controller_status().leader.unwrap_or(-1));
    }
    if v >= 2 {
        resp.cluster_id = Some(StrBytes::from_string(broker.current_cluster_id()));
    }
    encode(ApiKey::Metadata, v, c.correlation_id, &resp)
}

fn error_entry(name: &str, code: i16) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
        .with_error_code(code)
}

fn topic_entry(c: &Call, image: &MetadataImage, topic: &Arc<TopicInfo>) -> MetadataResponseTopic {
    let v = c.version;
    let mut entry =
        MetadataResponseTopic::default().with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))));
    if v >= 10 {
        entry.topic_id = topic.id;
    }
    if v >= 1 {
        entry.is_internal = topic.internal;
    }
    let ids = |nodes: &[i32]| nodes.iter().map(|n| BrokerId(*n)).collect::<Vec<_>>();
    entry.partitions = (0..)
        .zip(&topic.partitions)
        .map(|(i, info)| {
            let mut p = MetadataResponsePartition::default()
                .with_partition_index(i)
                .with_leader_id(BrokerId(info.leader))
                .with_replica_nodes(ids(&info.replicas))
                .with_isr_nodes(ids(&info.isr));
            if info.leader < 0 {
                p.error_code = ResponseError::LeaderNotAvailable.code();
            }
            if v >= 5 {
                let offline: Vec<i32> =
                    info.replicas.iter().copied().filter(|r| image.nodes.get(r).is_none_or(|n| n.fenced)).collect();
                p.offline_replicas = ids(&offline);
            }
            if v >= 7 {
                p.leader_epoch = info.leader_epoch;
            }
            p
        })
        .collect();
    entry
}
