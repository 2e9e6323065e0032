//! Metadata, from the cluster's metadata image: the live brokers, the
//! controller, and per partition its leader, epoch, replicas and ISR.
//! Missing topics are auto-created through the controller first (if the
//! request and the broker allow it). DescribeTopicPartitions (KIP-966's
//! view) adds each partition's eligible leader replicas, page by page.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferry_broker::BrokerError;
use ferry_broker::metadata::{MetadataImage, TopicInfo};
use ferry_broker::security::{Operation, ResourceType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, MetadataRequest,
    MetadataResponse, TopicName,
};
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

/// Most partitions one DescribeTopicPartitions answer carries (Kafka's
/// `max.request.partition.size.limit` default).
const PARTITIONS_PER_PAGE: usize = 2000;

/// DescribeTopicPartitions v0: the named topics (none: all), sorted by
/// name, from the request's cursor, at most `response_partition_limit`
/// partitions (capped), with a cursor to the rest. Unknown names answer
/// UNKNOWN_TOPIC_OR_PARTITION.
pub fn describe_topic_partitions(c: &Call, req: DescribeTopicPartitionsRequest) -> Reply {
    let image = c.ctx.broker.metadata();
    // All topics: only those the client may describe (as Metadata); named
    // ones it may not: TOPIC_AUTHORIZATION_FAILED, known or not (as Kafka).
    let mut names: Vec<String> = if req.topics.is_empty() {
        image.topics.keys().filter(|n| c.allowed(Operation::Describe, ResourceType::Topic, n)).cloned().collect()
    } else {
        req.topics.iter().map(|t| t.name.to_string()).collect()
    };
    names.sort();
    names.dedup();
    let (from_topic, from_partition) =
        req.cursor.as_ref().map_or((String::new(), 0), |c| (c.topic_name.to_string(), c.partition_index.max(0)));
    let limit = usize::try_from(req.response_partition_limit).unwrap_or(0).clamp(1, PARTITIONS_PER_PAGE);
    let ids = |nodes: &[i32]| nodes.iter().map(|n| BrokerId(*n)).collect::<Vec<_>>();
    let mut resp = DescribeTopicPartitionsResponse::default();
    let mut left = limit;
    for name in names.into_iter().filter(|n| *n >= from_topic) {
        let topic_name = TopicName(StrBytes::from_string(name.clone()));
        if !c.allowed(Operation::Describe, ResourceType::Topic, &name) {
            resp.topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_name(Some(topic_name))
                    .with_error_code(denied_code(ResourceType::Topic)),
            );
            continue;
        }
        let Some(topic) = image.topic(&name) else {
            resp.topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_name(Some(topic_name))
                    .with_error_code(ResponseError::UnknownTopicOrPartition.code()),
            );
            continue;
        };
        let first = if name == from_topic { usize::try_from(from_partition).unwrap_or(0) } else { 0 };
        let mut entry = DescribeTopicPartitionsResponseTopic::default()
            .with_name(Some(topic_name.clone()))
            .with_topic_id(topic.id)
            .with_is_internal(topic.internal);
        for (i, info) in topic.partitions.iter().enumerate().skip(first) {
            if left == 0 {
                let index = i32::try_from(i).unwrap_or(i32::MAX);
                resp.next_cursor = Some(Cursor::default().with_topic_name(topic_name).with_partition_index(index));
                break;
            }
            left -= 1;
            let offline: Vec<i32> =
                info.replicas.iter().copied().filter(|r| image.nodes.get(r).is_none_or(|n| n.fenced)).collect();
            let mut p = DescribeTopicPartitionsResponsePartition::default()
                .with_partition_index(i32::try_from(i).unwrap_or(i32::MAX))
                .with_leader_id(BrokerId(info.leader))
                .with_leader_epoch(info.leader_epoch)
                .with_replica_nodes(ids(&info.replicas))
                .with_isr_nodes(ids(&info.isr))
                .with_eligible_leader_replicas(Some(ids(&info.elr)))
                .with_last_known_elr(Some(Vec::new()))
                .with_offline_replicas(ids(&offline));
            if info.leader < 0 {
                p.error_code = ResponseError::LeaderNotAvailable.code();
            }
            entry.partitions.push(p);
        }
        resp.topics.push(entry);
        if resp.next_cursor.is_some() {
            break;
        }
    }
    c.reply(ApiKey::DescribeTopicPartitions, &resp)
}
