//! Metadata: this node is the leader and only replica of every partition.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{ApiKey, BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::Call;
use crate::errors::error_code;
use crate::response::Reply;

pub fn handle(c: &Call, req: MetadataRequest) -> Reply {
    let broker = &c.ctx.broker;
    let v = c.version;
    // Auto-creation: v4+ asks explicitly; older versions always allow it.
    let auto_create = v < 4 || req.allow_auto_topic_creation;
    let topics = match req.topics {
        // v0 has no null: an empty list means all topics there.
        Some(list) if !(v == 0 && list.is_empty()) => list
            .into_iter()
            .map(|t| match t.name {
                Some(name) => {
                    let found = if auto_create { broker.topic_or_create(&name) } else { lookup(c, &name) };
                    topic_entry(c, &name, found.map_err(|e| error_code(&e)))
                }
                None => match broker.topic_by_id(t.topic_id) {
                    Some(topic) => topic_entry(c, &topic.name.clone(), Ok(topic)),
                    None => MetadataResponseTopic::default()
                        .with_error_code(ResponseError::UnknownTopicId.code())
                        .with_topic_id(t.topic_id),
                },
            })
            .collect(),
        _ => broker.topics().into_iter().map(|t| topic_entry(c, &t.name.clone(), Ok(t))).collect(),
    };
    let node = MetadataResponseBroker::default()
        .with_node_id(BrokerId(broker.node_id()))
        .with_host(StrBytes::from_string(c.ctx.config.advertised_host.clone()))
        .with_port(c.ctx.config.advertised_port);
    let mut resp = MetadataResponse::default().with_brokers(vec![node]).with_topics(topics);
    if v >= 1 {
        resp.controller_id = BrokerId(broker.node_id());
    }
    if v >= 2 {
        resp.cluster_id = Some(StrBytes::from_string(broker.cluster_id().to_string()));
    }
    c.reply(ApiKey::Metadata, &resp)
}

fn lookup(c: &Call, name: &str) -> ferry_broker::Result<std::sync::Arc<ferry_broker::Topic>> {
    ferry_broker::validate_topic_name(name)?;
    c.ctx.broker.topic(name).ok_or(ferry_broker::BrokerError::UnknownTopicOrPartition)
}

fn topic_entry(c: &Call, name: &str, topic: Result<std::sync::Arc<ferry_broker::Topic>, i16>) -> MetadataResponseTopic {
    let v = c.version;
    let node = BrokerId(c.ctx.broker.node_id());
    let mut entry =
        MetadataResponseTopic::default().with_name(Some(TopicName(StrBytes::from_string(name.to_string()))));
    match topic {
        Err(code) => entry.error_code = code,
        Ok(topic) => {
            if v >= 10 {
                entry.topic_id = topic.id;
            }
            entry.partitions = (0..topic.partition_count() as i32)
                .map(|i| {
                    let mut p = MetadataResponsePartition::default()
                        .with_partition_index(i)
                        .with_leader_id(node)
                        .with_replica_nodes(vec![node])
                        .with_isr_nodes(vec![node]);
                    if v >= 7 {
                        p.leader_epoch = 0;
                    }
                    p
                })
                .collect();
        }
    }
    entry
}
