//! Committed offsets: OffsetCommit, OffsetFetch, OffsetDelete.

use std::collections::{BTreeMap, HashSet};

use ferry_broker::group::Committed;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};

use ferry_broker::metadata::CoordinatorKind;

use super::Call;
use super::coordinator::{coordinates, not_coordinator};
use crate::errors::{denied_code, group_error_code};
use crate::response::{Reply, encode};
use ferry_broker::security::{Operation, ResourceType};

/// The offsets of an (Txn)OffsetCommit request, given as (topic, partition,
/// offset, leader epoch, metadata): those of known partitions to commit,
/// and UNKNOWN_TOPIC_OR_PARTITION for the rest.
pub(super) type Commits = (Vec<(String, i32, Committed)>, BTreeMap<(String, i32), i16>);

pub(super) fn to_commit<'a>(
    broker: &ferry_broker::Broker,
    partitions: impl Iterator<Item = (&'a str, i32, i64, i32, Option<&'a str>)>,
) -> Commits {
    let now = ferry_util::time::now_ms_u64();
    let mut valid = Vec::new();
    let mut errors = BTreeMap::new();
    let image = broker.metadata();
    for (topic, partition, offset, leader_epoch, metadata) in partitions {
        if image.partition(topic, partition).is_none() {
            errors.insert((topic.to_string(), partition), ResponseError::UnknownTopicOrPartition.code());
            continue;
        }
        let committed = Committed { offset, leader_epoch, metadata: metadata.map(str::to_string), commit_ms: now };
        valid.push((topic.to_string(), partition, committed));
    }
    (valid, errors)
}

pub fn offset_commit(c: &Call, req: OffsetCommitRequest) -> Reply {
    let broker = &c.ctx.broker;
    // Committing needs Read on the group (else every partition fails) and
    // on each topic (else that topic's partitions fail).
    let group_denied = !c.allowed(Operation::Read, ResourceType::Group, &req.group_id);
    let denied: HashSet<String> = req
        .topics
        .iter()
        .filter(|t| group_denied || !c.allowed(Operation::Read, ResourceType::Topic, &t.name))
        .map(|t| t.name.to_string())
        .collect();
    // Partitions of unknown topics fail alone; the rest are committed together.
    let (valid, mut errors) = to_commit(
        broker,
        req.topics.iter().filter(|t| !denied.contains(t.name.as_str())).flat_map(|t| {
            t.partitions.iter().map(|p| {
                let epoch = if c.version >= 6 { p.committed_leader_epoch } else { -1 };
                (t.name.as_str(), p.partition_index, p.committed_offset, epoch, p.committed_metadata.as_deref())
            })
        }),
    );
    let code = denied_code(if group_denied { ResourceType::Group } else { ResourceType::Topic });
    for t in req.topics.iter().filter(|t| denied.contains(t.name.as_str())) {
        for p in &t.partitions {
            errors.insert((t.name.to_string(), p.partition_index), code);
        }
    }
    let outcome = if valid.is_empty() {
        Ok(None)
    } else {
        broker.groups().commit(&req.group_id, &req.member_id, req.generation_id_or_member_epoch, valid).map(Some)
    };
    let (version, correlation_id) = (c.version, c.correlation_id);
    Reply::Later(Box::pin(async move {
        // One error for the whole commit (group state, or the write not
        // reaching the ISR), else per partition. Answered once the
        // `__consumer_offsets` ISR has the records.
        let shared = match outcome {
            Err(e) => Some(group_error_code(e)),
            Ok(Some(written)) => written.acknowledged().await.err().map(group_error_code),
            Ok(None) => None,
        };
        let topics = req
            .topics
            .into_iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let own = errors.get(&(t.name.to_string(), p.partition_index)).copied();
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(own.or(shared).unwrap_or(0))
                    })
                    .collect();
                OffsetCommitResponseTopic::default().with_name(t.name).with_partitions(partitions)
            })
            .collect();
        encode(ApiKey::OffsetCommit, version, correlation_id, &OffsetCommitResponse::default().with_topics(topics))
    }))
}

/// A topic's partitions with their committed offsets (None: none committed).
type TopicOffsets = (TopicName, Vec<(i32, Option<Committed>)>);

/// Committed offsets for the requested topics (None: all the group has).
/// Topics the client may not describe are left out (Kafka answers them
/// TOPIC_AUTHORIZATION_FAILED per partition; leaving them out tells as
/// little).
fn fetch_group(c: &Call, group: &str, topics: Option<Vec<(TopicName, Vec<i32>)>>) -> Vec<TopicOffsets> {
    let committed = c.ctx.broker.groups().committed(group);
    let visible = |t: &str| c.allowed(Operation::Describe, ResourceType::Topic, t);
    if let Some(ts) = topics {
        ts.into_iter()
            .filter(|(name, _)| visible(name))
            .map(|(name, parts)| {
                let parts = parts.into_iter().map(|p| (p, committed.get(&(name.to_string(), p)).cloned())).collect();
                (name, parts)
            })
            .collect()
    } else {
        let mut by_topic: BTreeMap<String, Vec<(i32, Option<Committed>)>> = BTreeMap::new();
        for ((t, p), offset) in committed {
            if visible(&t) {
                by_topic.entry(t).or_default().push((p, Some(offset)));
            }
        }
        by_topic.into_iter().map(|(t, ps)| (TopicName(StrBytes::from_string(t)), ps)).collect()
    }
}

pub fn offset_fetch(c: &Call, req: OffsetFetchRequest) -> Reply {
    let v = c.version;
    let epoch = |e: i32| if v >= 5 { e } else { -1 };
    let mut r = OffsetFetchResponse::default();
    if v >= 8 {
        r.groups = req
            .groups
            .into_iter()
            .map(|g| {
                if !c.allowed(Operation::Describe, ResourceType::Group, &g.group_id) {
                    return OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id)
                        .with_error_code(denied_code(ResourceType::Group));
                }
                if !coordinates(c, CoordinatorKind::Group, &g.group_id) {
                    return OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id)
                        .with_error_code(not_coordinator());
                }
                let topics = g.topics.map(|ts| ts.into_iter().map(|t| (t.name, t.partition_indexes)).collect());
                let topics = fetch_group(c, &g.group_id, topics)
                    .into_iter()
                    .map(|(name, parts)| {
                        let partitions = parts
                            .into_iter()
                            .map(|(p, off)| {
                                let (o, e, m) = off
                                    .map_or((-1, -1, Some(String::new())), |x| (x.offset, x.leader_epoch, x.metadata));
                                OffsetFetchResponsePartitions::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(o)
                                    .with_committed_leader_epoch(epoch(e))
                                    .with_metadata(m.map(StrBytes::from_string))
                            })
                            .collect();
                        OffsetFetchResponseTopics::default().with_name(name).with_partitions(partitions)
                    })
                    .collect();
                OffsetFetchResponseGroup::default().with_group_id(g.group_id).with_topics(topics)
            })
            .collect();
    } else if !c.allowed(Operation::Describe, ResourceType::Group, &req.group_id) {
        r.error_code = denied_code(ResourceType::Group);
    } else {
        let topics = req.topics.map(|ts| ts.into_iter().map(|t| (t.name, t.partition_indexes)).collect());
        r.topics = fetch_group(c, &req.group_id, topics)
            .into_iter()
            .map(|(name, parts)| {
                let partitions = parts
                    .into_iter()
                    .map(|(p, off)| {
                        let (o, e, m) =
                            off.map_or((-1, -1, Some(String::new())), |x| (x.offset, x.leader_epoch, x.metadata));
                        OffsetFetchResponsePartition::default()
                            .with_partition_index(p)
                            .with_committed_offset(o)
                            .with_committed_leader_epoch(epoch(e))
                            .with_metadata(m.map(StrBytes::from_string))
                    })
                    .collect();
                OffsetFetchResponseTopic::default().with_name(name).with_partitions(partitions)
            })
            .collect();
    }
    c.reply(ApiKey::OffsetFetch, &r)
}

/// OffsetDelete: refused (GROUP_SUBSCRIBED_TO_TOPIC) for topics a member of
/// the group is assigned, as Kafka refuses them for subscribed topics.
pub fn offset_delete(c: &Call, req: OffsetDeleteRequest) -> Reply {
    let coordinator = c.ctx.broker.groups();
    let mut r = OffsetDeleteResponse::default();
    if !c.allowed(Operation::Delete, ResourceType::Group, &req.group_id) {
        r.error_code = denied_code(ResourceType::Group);
        return c.reply(ApiKey::OffsetDelete, &r);
    }
    let Some(desc) = coordinator.describe(&req.group_id).filter(|_| coordinator.exists(&req.group_id)) else {
        r.error_code = ResponseError::GroupIdNotFound.code();
        return c.reply(ApiKey::OffsetDelete, &r);
    };
    let assigned: HashSet<String> = desc
        .members
        .iter()
        .filter_map(|m| {
            let mut b = bytes::Bytes::from(m.assignment.clone());
            let version = if b.len() >= 2 { i16::from_be_bytes([b[0], b[1]]) } else { return None };
            let _ = bytes::Buf::get_i16(&mut b);
            ConsumerProtocolAssignment::decode(&mut b, version).ok()
        })
        .flat_map(|a| a.assigned_partitions.into_iter().map(|tp| tp.topic.to_string()))
        .collect();
    let mut doomed = Vec::new();
    r.topics = req
        .topics
        .into_iter()
        .map(|t| {
            let subscribed = assigned.contains(t.name.as_str());
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    if !subscribed {
                        doomed.push((t.name.to_string(), p.partition_index));
                    }
                    let code = if subscribed { ResponseError::GroupSubscribedToTopic.code() } else { 0 };
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetDeleteResponseTopic::default().with_name(t.name).with_partitions(partitions)
        })
        .collect();
    if coordinator.delete_offsets(&req.group_id, &doomed).is_err() {
        r.error_code = ResponseError::CoordinatorNotAvailable.code();
    }
    c.reply(ApiKey::OffsetDelete, &r)
}
