//! Consumer groups on the classic protocol: FindCoordinator, JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup, ListGroups, DescribeGroups,
//! DeleteGroups. A group is served by the node leading its partition of
//! `__consumer_offsets` (others answer NOT_COORDINATOR, see coordinator.rs).

use std::time::Duration;

use bytes::Bytes;
use ferry_broker::group::Join;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use ferry_broker::metadata::CoordinatorKind;
use kafka_protocol::error::ResponseError;

use super::Call;
use super::coordinator::{coordinates, not_coordinator};
use super::nodes::endpoint;
use crate::errors::{counted_code, denied_code, group_error_code};
use crate::response::{Reply, encode};
use ferry_broker::security::{Operation, ResourceType};

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// FindCoordinator: the leader of the key's partition of
/// `__consumer_offsets` (groups) or `__transaction_state` (transactional
/// ids), from the image; COORDINATOR_NOT_AVAILABLE while it has none.
pub fn find_coordinator(c: &Call, req: FindCoordinatorRequest) -> Reply {
    let image = c.ctx.broker.metadata();
    let kind = match req.key_type {
        0 => Some(CoordinatorKind::Group),
        1 => Some(CoordinatorKind::Transaction),
        _ => None,
    };
    // (error, node id, host, port) for one key.
    let find = |key: &str| -> (i16, i32, String, i32) {
        let Some(kind) = kind else {
            return (counted_code(ResponseError::InvalidRequest.code()), -1, String::new(), -1);
        };
        let resource = match kind {
            CoordinatorKind::Group => ResourceType::Group,
            CoordinatorKind::Transaction => ResourceType::TransactionalId,
        };
        if !c.allowed(Operation::Describe, resource, key) {
            return (denied_code(resource), -1, String::new(), -1);
        }
        let node = image.coordinator(kind, key).and_then(|n| endpoint(c, &image, n.id));
        match node {
            Some(e) => (0, e.node_id, e.host, e.port),
            None => (counted_code(ResponseError::CoordinatorNotAvailable.code()), -1, String::new(), -1),
        }
    };
    let mut r = FindCoordinatorResponse::default();
    if c.version >= 4 {
        r.coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let (error, node, host, port) = find(&key);
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(node))
                    .with_host(s(host))
                    .with_port(port)
                    .with_error_code(error)
            })
            .collect();
    } else {
        let (error, node, host, port) = find(&req.key);
        r.error_code = error;
        r.node_id = BrokerId(node);
        r.host = s(host);
        r.port = port;
    }
    c.reply(ApiKey::FindCoordinator, &r)
}

pub fn join_group(c: &Call, req: JoinGroupRequest) -> Reply {
    let v = c.version;
    if !c.allowed(Operation::Read, ResourceType::Group, &req.group_id) {
        let r = JoinGroupResponse::default()
            .with_error_code(denied_code(ResourceType::Group))
            .with_generation_id(-1)
            .with_protocol_name(Some(s(String::new())));
        return c.reply(ApiKey::JoinGroup, &r);
    }
    let join = Join {
        member_id: req.member_id.to_string(),
        instance_id: if v >= 5 { req.group_instance_id.map(|i| i.to_string()) } else { None },
        client_id: c.client_id.clone(),
        client_host: c.peer.clone(),
        session_timeout: Duration::from_millis(req.session_timeout_ms.max(0) as u64),
        // v0 has no rebalance timeout: it is the session timeout there.
        rebalance_timeout: Duration::from_millis(
            (if v >= 1 { req.rebalance_timeout_ms } else { req.session_timeout_ms }).max(0) as u64,
        ),
        protocol_type: req.protocol_type.to_string(),
        protocols: req.protocols.iter().map(|p| (p.name.to_string(), p.metadata.to_vec())).collect(),
        require_known_member_id: v >= 4,
    };
    let rx = c.ctx.broker.groups().join(&req.group_id, join);
    let (version, correlation_id) = (c.version, c.correlation_id);
    Reply::Later(Box::pin(async move {
        let result = rx.await.unwrap_or_default();
        let mut r = JoinGroupResponse::default()
            .with_error_code(result.error.map_or(0, group_error_code))
            .with_generation_id(result.generation)
            .with_leader(s(result.leader))
            .with_member_id(s(result.member_id))
            .with_protocol_name(Some(s(result.protocol.unwrap_or_default())));
        if version >= 7 {
            r.protocol_type = result.protocol_type.map(s);
        }
        r.members = result
            .members
            .into_iter()
            .map(|(id, instance, meta)| {
                let mut m = JoinGroupResponseMember::default().with_member_id(s(id)).with_metadata(Bytes::from(meta));
                if version >= 5 {
                    m.group_instance_id = instance.map(s);
                }
                m
            })
            .collect();
        encode(ApiKey::JoinGroup, version, correlation_id, &r)
    }))
}

pub fn sync_group(c: &Call, req: SyncGroupRequest) -> Reply {
    if !c.allowed(Operation::Read, ResourceType::Group, &req.group_id) {
        return c
            .reply(ApiKey::SyncGroup, &SyncGroupResponse::default().with_error_code(denied_code(ResourceType::Group)));
    }
    let assignments = req.assignments.iter().map(|a| (a.member_id.to_string(), a.assignment.to_vec())).collect();
    let rx = c.ctx.broker.groups().sync(&req.group_id, &req.member_id, req.generation_id, assignments);
    let (version, correlation_id) = (c.version, c.correlation_id);
    Reply::Later(Box::pin(async move {
        let result = rx.await.unwrap_or_default();
        let mut r = SyncGroupResponse::default()
            .with_error_code(result.error.map_or(0, group_error_code))
            .with_assignment(Bytes::from(result.assignment));
        if version >= 5 {
            r.protocol_type = result.protocol_type.map(s);
            r.protocol_name = result.protocol.map(s);
        }
        encode(ApiKey::SyncGroup, version, correlation_id, &r)
    }))
}

pub fn heartbeat(c: &Call, req: HeartbeatRequest) -> Reply {
    if !c.allowed(Operation::Read, ResourceType::Group, &req.group_id) {
        return c
            .reply(ApiKey::Heartbeat, &HeartbeatResponse::default().with_error_code(denied_code(ResourceType::Group)));
    }
    let e = c.ctx.broker.groups().heartbeat(&req.group_id, &req.member_id, req.generation_id);
    c.reply(ApiKey::Heartbeat, &HeartbeatResponse::default().with_error_code(e.map_or(0, group_error_code)))
}

pub fn leave_group(c: &Call, req: LeaveGroupRequest) -> Reply {
    let groups = c.ctx.broker.groups();
    let mut r = LeaveGroupResponse::default();
    if !c.allowed(Operation::Read, ResourceType::Group, &req.group_id) {
        r.error_code = denied_code(ResourceType::Group);
        return c.reply(ApiKey::LeaveGroup, &r);
    }
    if c.version >= 3 {
        r.members = req
            .members
            .into_iter()
            .map(|m| {
                let e = groups.leave(&req.group_id, &m.member_id, m.group_instance_id.as_deref());
                MemberResponse::default()
                    .with_member_id(m.member_id)
                    .with_group_instance_id(m.group_instance_id)
                    .with_error_code(e.map_or(0, group_error_code))
            })
            .collect();
    } else {
        r.error_code = groups.leave(&req.group_id, &req.member_id, None).map_or(0, group_error_code);
    }
    c.reply(ApiKey::LeaveGroup, &r)
}

pub fn list_groups(c: &Call, req: ListGroupsRequest) -> Reply {
    let groups = c
        .ctx
        .broker
        .groups()
        .list()
        .into_iter()
        // Describe on the cluster lists every group, else those the client may describe.
        .filter(|(id, ..)| {
            c.allowed_cluster(Operation::Describe) || c.allowed(Operation::Describe, ResourceType::Group, id)
        })
        .filter(|(_, _, state, _)| {
            req.states_filter.is_empty() || req.states_filter.iter().any(|f| f.eq_ignore_ascii_case(state))
        })
        .filter(|(_, _, _, kind)| {
            req.types_filter.is_empty() || req.types_filter.iter().any(|t| t.eq_ignore_ascii_case(kind))
        })
        .map(|(id, protocol_type, state, kind)| {
            let mut g = ListedGroup::default().with_group_id(GroupId(s(id))).with_protocol_type(s(protocol_type));
            if c.version >= 4 {
                g.group_state = s(state);
            }
            if c.version >= 5 {
                g.group_type = s(kind);
            }
            g
        })
        .collect();
    c.reply(ApiKey::ListGroups, &ListGroupsResponse::default().with_groups(groups))
}

pub fn describe_groups(c: &Call, req: DescribeGroupsRequest) -> Reply {
    let coordinator = c.ctx.broker.groups();
    let groups = req
        .groups
        .into_iter()
        .map(|id| {
            let mut g = DescribedGroup::default().with_group_id(id.clone());
            if !c.allowed(Operation::Describe, ResourceType::Group, &id) {
                g.error_code = denied_code(ResourceType::Group);
                return g;
            }
            if !coordinates(c, CoordinatorKind::Group, &id) {
                g.error_code = not_coordinator();
                return g;
            }
            match coordinator.describe(&id) {
                Some(d) => {
                    g.group_state = s(d.state.name());
                    g.protocol_type = s(d.protocol_type);
                    g.protocol_data = s(d.protocol);
                    g.members = d
                        .members
                        .into_iter()
                        .map(|m| {
                            let mut x = DescribedGroupMember::default()
                                .with_member_id(s(m.member_id))
                                .with_client_id(s(m.client_id))
                                .with_client_host(s(m.client_host))
                                .with_member_metadata(Bytes::from(m.metadata))
                                .with_member_assignment(Bytes::from(m.assignment));
                            if c.version >= 4 {
                                x.group_instance_id = m.instance_id.map(s);
                            }
                            x
                        })
                        .collect();
                }
                // Kafka describes an unknown group as Dead, without an error.
                None => g.group_state = s("Dead"),
            }
            g
        })
        .collect();
    c.reply(ApiKey::DescribeGroups, &DescribeGroupsResponse::default().with_groups(groups))
}

pub fn delete_groups(c: &Call, req: DeleteGroupsRequest) -> Reply {
    let coordinator = c.ctx.broker.groups();
    let results = req
        .groups_names
        .into_iter()
        .map(|id| {
            let e = if !c.allowed(Operation::Delete, ResourceType::Group, &id) {
                denied_code(ResourceType::Group)
            } else if coordinates(c, CoordinatorKind::Group, &id) {
                coordinator.delete_group(&id).err().map_or(0, group_error_code)
            } else {
                not_coordinator()
            };
            DeletableGroupResult::default().with_group_id(id).with_error_code(e)
        })
        .collect();
    c.reply(ApiKey::DeleteGroups, &DeleteGroupsResponse::default().with_results(results))
}

/// ConsumerGroupHeartbeat (KIP-848): join, heartbeat, leave, and the
/// server-computed assignment, by topic id.
pub fn consumer_group_heartbeat(c: &Call, req: ConsumerGroupHeartbeatRequest) -> Reply {
    if !c.allowed(Operation::Read, ResourceType::Group, &req.group_id) {
        let r = ConsumerGroupHeartbeatResponse::default().with_error_code(denied_code(ResourceType::Group));
        return c.reply(ApiKey::ConsumerGroupHeartbeat, &r);
    }
    let broker = &c.ctx.broker;
    let image = broker.metadata();
    let owned = req.topic_partitions.map(|tps| {
        tps.iter()
            .filter_map(|tp| image.topic_by_id(tp.topic_id).map(|t| (t.name.clone(), tp.partitions.clone())))
            .flat_map(|(name, ps)| ps.into_iter().map(move |p| (name.clone(), p)))
            .collect()
    });
    let hb = ferry_broker::group::Heartbeat {
        member_id: req.member_id.to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.map(|i| i.to_string()),
        rack_id: req.rack_id.map(|r| r.to_string()),
        client_id: c.client_id.clone(),
        client_host: c.peer.clone(),
        subscribed: req.subscribed_topic_names.map(|ts| ts.into_iter().map(|t| t.to_string()).collect()),
        regex: req.subscribed_topic_regex.map(|r| r.to_string()),
        owned,
        server_assignor: req.server_assignor.map(|a| a.to_string()),
    };
    let groups = broker.groups();
    let mut r = ConsumerGroupHeartbeatResponse::default()
        .with_heartbeat_interval_ms(groups.consumer_heartbeat_interval().as_millis() as i32);
    match broker.with_group_topics(|topics| groups.consumer_heartbeat(&req.group_id, hb, topics)) {
        Ok(res) => {
            r.member_id = Some(s(res.member_id));
            r.member_epoch = res.member_epoch;
            r.assignment = res.assignment.map(|parts| {
                let mut by_topic: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
                for (t, p) in parts {
                    by_topic.entry(t).or_default().push(p);
                }
                consumer_group_heartbeat_response::Assignment::default().with_topic_partitions(
                    by_topic
                        .into_iter()
                        .filter_map(|(t, ps)| {
                            let id = image.topic(&t)?.id;
                            Some(
                                consumer_group_heartbeat_response::TopicPartitions::default()
                                    .with_topic_id(id)
                                    .with_partitions(ps),
                            )
                        })
                        .collect(),
                )
            });
        }
        Err(e) => r.error_code = group_error_code(e),
    }
    c.reply(ApiKey::ConsumerGroupHeartbeat, &r)
}

/// ConsumerGroupDescribe (KIP-848 groups).
pub fn consumer_group_describe(c: &Call, req: ConsumerGroupDescribeRequest) -> Reply {
    use consumer_group_describe_response as d;
    let broker = &c.ctx.broker;
    let image = broker.metadata();
    let assignment = |parts: &std::collections::BTreeSet<(String, i32)>| {
        let mut by_topic: std::collections::BTreeMap<&String, Vec<i32>> = Default::default();
        for (t, p) in parts {
            by_topic.entry(t).or_default().push(*p);
        }
        d::Assignment::default().with_topic_partitions(
            by_topic
                .into_iter()
                .filter_map(|(t, ps)| {
                    let id = image.topic(t)?.id;
                    Some(
                        d::TopicPartitions::default()
                            .with_topic_id(id)
                            .with_topic_name(TopicName(s(t.clone())))
                            .with_partitions(ps),
                    )
                })
                .collect(),
        )
    };
    let groups = req
        .group_ids
        .into_iter()
        .map(|id| {
            if !coordinates(c, CoordinatorKind::Group, &id) {
                return d::DescribedGroup::default().with_group_id(id).with_error_code(not_coordinator());
            }
            let described = broker.groups().with_consumer_group(&id, |g| {
                d::DescribedGroup::default()
                    .with_group_id(id.clone())
                    .with_group_state(s(g.state()))
                    .with_group_epoch(g.epoch)
                    .with_assignment_epoch(g.epoch)
                    .with_assignor_name(s(g.assignor.name()))
                    .with_members(
                        g.members
                            .values()
                            .map(|m| {
                                d::Member::default()
                                    .with_member_id(s(m.id.clone()))
                                    .with_instance_id(m.instance_id.clone().map(s))
                                    .with_rack_id(m.rack_id.clone().map(s))
                                    .with_member_epoch(m.epoch)
                                    .with_client_id(s(m.client_id.clone()))
                                    .with_client_host(s(m.client_host.clone()))
                                    .with_subscribed_topic_names(
                                        m.subscribed.iter().map(|t| TopicName(s(t.clone()))).collect(),
                                    )
                                    .with_subscribed_topic_regex(m.regex.as_ref().map(|r| s(r.pattern.clone())))
                                    .with_assignment(assignment(&m.assigned))
                                    .with_target_assignment(assignment(&m.target))
                            })
                            .collect(),
                    )
            });
            described.unwrap_or_else(|| {
                d::DescribedGroup::default()
                    .with_group_id(id)
                    .with_error_code(kafka_protocol::error::ResponseError::GroupIdNotFound.code())
            })
        })
        .collect();
    c.reply(ApiKey::ConsumerGroupDescribe, &ConsumerGroupDescribeResponse::default().with_groups(groups))
}
