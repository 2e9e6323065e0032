//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions,
//! DeleteRecords.

use std::collections::BTreeMap;

use ferry_broker::BrokerError;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::Call;
use super::configs::{config_entries, source_code};
use crate::errors::{error_code, error_message};
use crate::response::Reply;

pub fn create_topics(c: &Call, req: CreateTopicsRequest) -> Reply {
    let broker = &c.ctx.broker;
    let v = c.version;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let mut r = CreatableTopicResult::default().with_name(t.name.clone());
            match create_one(c, &t, req.validate_only) {
                Ok((topic, partitions)) => {
                    if v >= 5 {
                        r.num_partitions = partitions;
                        r.replication_factor = 1;
                        let overrides = topic.overrides();
                        r.configs = Some(
                            config_entries(&broker.defaults(), &overrides)
                                .into_iter()
                                .map(|e| {
                                    CreatableTopicConfigs::default()
                                        .with_name(StrBytes::from_static_str(e.def.name))
                                        .with_value(Some(StrBytes::from_string(e.value)))
                                        .with_config_source(source_code(e.source))
                                })
                                .collect(),
                        );
                    }
                    if v >= 7 {
                        r.topic_id = topic.id;
                    }
                }
                Err(e) => {
                    r.error_code = error_code(&e);
                    r.error_message = Some(error_message(&e));
                    if v >= 5 {
                        r.num_partitions = -1;
                        r.replication_factor = -1;
                    }
                }
            }
            r
        })
        .collect();
    c.reply(ApiKey::CreateTopics, &CreateTopicsResponse::default().with_topics(topics))
}

fn create_one(
    c: &Call,
    t: &create_topics_request::CreatableTopic,
    validate_only: bool,
) -> ferry_broker::Result<(std::sync::Arc<ferry_broker::Topic>, i32)> {
    let node = c.ctx.broker.node_id();
    let partitions = if t.assignments.is_empty() {
        if t.replication_factor != -1 && t.replication_factor != 1 {
            return Err(BrokerError::InvalidReplicationFactor(i32::from(t.replication_factor)));
        }
        (t.num_partitions != -1).then_some(t.num_partitions)
    } else {
        // Manual assignment: every replica must be this node.
        if t.num_partitions != -1 || t.replication_factor != -1 {
            return Err(BrokerError::InvalidPartitions(
                "assignments need num_partitions = replication_factor = -1".into(),
            ));
        }
        if t.assignments.iter().any(|a| a.broker_ids.iter().any(|b| b.0 != node) || a.broker_ids.len() > 1) {
            return Err(BrokerError::InvalidReplicationFactor(t.assignments[0].broker_ids.len() as i32));
        }
        Some(t.assignments.len() as i32)
    };
    let configs: BTreeMap<String, String> =
        t.configs.iter().filter_map(|cfg| Some((cfg.name.to_string(), cfg.value.as_ref()?.to_string()))).collect();
    let topic = c.ctx.broker.create_topic(&t.name, partitions, &configs, validate_only)?;
    let count = partitions.unwrap_or(c.ctx.broker.config().default_partitions);
    Ok((topic, count))
}

pub fn delete_topics(c: &Call, req: DeleteTopicsRequest) -> Reply {
    let broker = &c.ctx.broker;
    let v = c.version;
    // v6 names topics by name or id; older versions by name only.
    let wanted: Vec<(Option<TopicName>, uuid::Uuid)> = if v >= 6 {
        req.topics.into_iter().map(|t| (t.name, t.topic_id)).collect()
    } else {
        req.topic_names.into_iter().map(|n| (Some(n), uuid::Uuid::nil())).collect()
    };
    let responses = wanted
        .into_iter()
        .map(|(name, id)| {
            let topic = match &name {
                Some(n) => broker.topic(n),
                None => broker.topic_by_id(id),
            };
            let mut r = DeletableTopicResult::default().with_name(name.clone());
            if let Some(t) = topic {
                if v >= 6 {
                    r.topic_id = t.id;
                    r.name = Some(TopicName(StrBytes::from_string(t.name.clone())));
                }
                if let Err(e) = broker.delete_topic(&t.name) {
                    r.error_code = error_code(&e);
                }
            } else {
                r.error_code = if name.is_some() {
                    ResponseError::UnknownTopicOrPartition.code()
                } else {
                    ResponseError::UnknownTopicId.code()
                };
                if v >= 6 {
                    r.topic_id = id;
                }
            }
            r
        })
        .collect();
    c.reply(ApiKey::DeleteTopics, &DeleteTopicsResponse::default().with_responses(responses))
}

pub fn create_partitions(c: &Call, req: CreatePartitionsRequest) -> Reply {
    let broker = &c.ctx.broker;
    let results = req
        .topics
        .into_iter()
        .map(|t| {
            let mut r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            let node = broker.node_id();
            let bad_assignment = t
                .assignments
                .as_ref()
                .is_some_and(|a| a.iter().any(|p| p.broker_ids.len() != 1 || p.broker_ids[0].0 != node));
            let result = if bad_assignment {
                Err(BrokerError::InvalidPartitions("replicas can only be on this broker".into()))
            } else {
                broker.create_partitions(&t.name, t.count, req.validate_only)
            };
            if let Err(e) = result {
                r.error_code = error_code(&e);
                r.error_message = Some(error_message(&e));
            }
            r
        })
        .collect();
    c.reply(ApiKey::CreatePartitions, &CreatePartitionsResponse::default().with_results(results))
}

pub fn delete_records(c: &Call, req: DeleteRecordsRequest) -> Reply {
    let broker = &c.ctx.broker;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = broker.topic(&t.name);
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut r = DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
                    let Some(part) = topic.as_ref().and_then(|t| t.partition(p.partition_index)) else {
                        r.error_code = ResponseError::UnknownTopicOrPartition.code();
                        r.low_watermark = -1;
                        return r;
                    };
                    // -1: up to the high watermark.
                    let target =
                        if p.offset == -1 { Some(part.high_watermark()) } else { u64::try_from(p.offset).ok() };
                    match target.map(|o| part.delete_records_before(o)) {
                        Some(Ok(low)) => r.low_watermark = low as i64,
                        Some(Err(e)) => {
                            r.error_code = error_code(&e);
                            r.low_watermark = -1;
                        }
                        None => {
                            r.error_code = ResponseError::OffsetOutOfRange.code();
                            r.low_watermark = -1;
                        }
                    }
                    r
                })
                .collect();
            DeleteRecordsTopicResult::default().with_name(t.name).with_partitions(partitions)
        })
        .collect();
    c.reply(ApiKey::DeleteRecords, &DeleteRecordsResponse::default().with_topics(topics))
}
