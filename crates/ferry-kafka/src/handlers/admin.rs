//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions,
//! DeleteRecords.

use std::collections::BTreeMap;

use ferry_broker::{BrokerError, CreatedTopic, NewTopic};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::Call;
use super::configs::{config_entries, source_code};
use crate::errors::{denied_code, error_code, error_message};
use crate::response::Reply;
use ferry_broker::security::{Operation, ResourceType};

/// CreateTopics: each topic through the controller, in request order.
pub async fn create_topics(c: Call, req: CreateTopicsRequest) -> Reply {
    let broker = &c.ctx.broker;
    let v = c.version;
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let mut r = CreatableTopicResult::default().with_name(t.name.clone());
        // Create on the cluster or on the topic (Kafka's rule).
        if !c.allowed_cluster(Operation::Create) && !c.allowed(Operation::Create, ResourceType::Topic, &t.name) {
            r.error_code = denied_code(ResourceType::Topic);
            if v >= 5 {
                r.num_partitions = -1;
                r.replication_factor = -1;
            }
            topics.push(r);
            continue;
        }
        match create_one(&c, &t, req.validate_only).await {
            Ok((created, overrides)) => {
                if v >= 5 {
                    r.num_partitions = created.partitions();
                    r.replication_factor = created.replication_factor();
                    r.configs = Some(
                        config_entries(
                            &broker.defaults(),
                            &overrides,
                            usize::try_from(created.replication_factor()).ok(),
                        )
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
                    r.topic_id = created.id;
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
        topics.push(r);
    }
    c.reply(ApiKey::CreateTopics, &CreateTopicsResponse::default().with_topics(topics))
}

async fn create_one(
    c: &Call,
    t: &create_topics_request::CreatableTopic,
    validate_only: bool,
) -> ferry_broker::Result<(CreatedTopic, BTreeMap<String, String>)> {
    let mut topic = NewTopic::new(t.name.to_string());
    if t.assignments.is_empty() {
        topic.partitions = (t.num_partitions != -1).then_some(t.num_partitions);
        topic.replication_factor = (t.replication_factor != -1).then_some(t.replication_factor);
    } else {
        if t.num_partitions != -1 || t.replication_factor != -1 {
            return Err(BrokerError::InvalidReplicaAssignment(
                "assignments need num_partitions = replication_factor = -1".into(),
            ));
        }
        let mut assignment = t.assignments.clone();
        assignment.sort_by_key(|a| a.partition_index);
        if assignment.iter().zip(0..).any(|(a, i)| a.partition_index != i) {
            return Err(BrokerError::InvalidReplicaAssignment("partitions must be numbered 0 to n-1".into()));
        }
        topic.assignment = Some(assignment.iter().map(|a| a.broker_ids.iter().map(|b| b.0).collect()).collect());
    }
    topic.configs =
        t.configs.iter().filter_map(|cfg| Some((cfg.name.to_string(), cfg.value.as_ref()?.to_string()))).collect();
    let overrides = topic.configs.clone();
    let created = c.ctx.broker.create_topic_as(topic, validate_only).await?;
    Ok((created, overrides))
}

/// DeleteTopics: each topic through the controller.
pub async fn delete_topics(c: Call, req: DeleteTopicsRequest) -> Reply {
    let broker = &c.ctx.broker;
    let v = c.version;
    // v6 names topics by name or id; older versions by name only.
    let wanted: Vec<(Option<TopicName>, uuid::Uuid)> = if v >= 6 {
        req.topics.into_iter().map(|t| (t.name, t.topic_id)).collect()
    } else {
        req.topic_names.into_iter().map(|n| (Some(n), uuid::Uuid::nil())).collect()
    };
    let mut responses = Vec::with_capacity(wanted.len());
    for (name, id) in wanted {
        let image = broker.metadata();
        let topic = match &name {
            Some(n) => image.topic(n),
            None => image.topic_by_id(id),
        };
        let mut r = DeletableTopicResult::default().with_name(name.clone());
        let denied = match (topic, &name) {
            (Some(t), _) => !c.allowed(Operation::Delete, ResourceType::Topic, &t.name),
            (None, Some(n)) => !c.allowed(Operation::Delete, ResourceType::Topic, n),
            (None, None) => false,
        };
        if denied {
            r.error_code = denied_code(ResourceType::Topic);
            if v >= 6 {
                r.topic_id = id;
            }
        } else if let Some(t) = topic {
            if v >= 6 {
                r.topic_id = t.id;
                r.name = Some(TopicName(StrBytes::from_string(t.name.clone())));
            }
            if let Err(e) = broker.delete_topic(&t.name).await {
                r.error_code = error_code(&e);
                if v >= 5 {
                    r.error_message = Some(error_message(&e));
                }
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
        responses.push(r);
    }
    c.reply(ApiKey::DeleteTopics, &DeleteTopicsResponse::default().with_responses(responses))
}

/// CreatePartitions: each topic through the controller.
pub async fn create_partitions(c: Call, req: CreatePartitionsRequest) -> Reply {
    let broker = &c.ctx.broker;
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let mut r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        let assignment = t
            .assignments
            .as_ref()
            .filter(|a| !a.is_empty())
            .map(|a| a.iter().map(|p| p.broker_ids.iter().map(|b| b.0).collect()).collect());
        if !c.allowed(Operation::Alter, ResourceType::Topic, &t.name) {
            r.error_code = denied_code(ResourceType::Topic);
        } else if let Err(e) = broker.create_partitions(&t.name, t.count, assignment, req.validate_only).await {
            r.error_code = error_code(&e);
            r.error_message = Some(error_message(&e));
        }
        results.push(r);
    }
    c.reply(ApiKey::CreatePartitions, &CreatePartitionsResponse::default().with_results(results))
}

/// DeleteRecords: each partition by its leader, here or forwarded to the
/// leading node (Kafka's admin clients route to leaders themselves; a
/// request that reaches another node is carried out all the same).
pub async fn delete_records(c: Call, req: DeleteRecordsRequest) -> Reply {
    let broker = &c.ctx.broker;
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let mut r = DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
            if !c.allowed(Operation::Delete, ResourceType::Topic, &t.name) {
                r.error_code = denied_code(ResourceType::Topic);
                r.low_watermark = -1;
                partitions.push(r);
                continue;
            }
            match broker.delete_records(&t.name, p.partition_index, p.offset).await {
                Ok(low) => r.low_watermark = low,
                Err(e) => {
                    r.error_code = error_code(&e);
                    r.low_watermark = -1;
                }
            }
            partitions.push(r);
        }
        topics.push(DeleteRecordsTopicResult::default().with_name(t.name).with_partitions(partitions));
    }
    c.reply(ApiKey::DeleteRecords, &DeleteRecordsResponse::default().with_topics(topics))
}
