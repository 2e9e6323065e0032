//! Consumer groups: coordinator lookup, listing, describing, committed
//! offsets, deletion, and a simple classic-protocol member (range assignor)
//! for `ferry consume --group`.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::{self, ConsumerProtocolAssignment};
use kafka_protocol::messages::consumer_protocol_subscription::ConsumerProtocolSubscription;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId,
    HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest,
    SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::{Client, ClientError, Connection, check};

const MEMBER_ID_REQUIRED: i16 = 79;
const REBALANCE_IN_PROGRESS: i16 = 27;
const GROUP_ID_NOT_FOUND: i16 = 69;

/// A group member as DescribeGroups shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GroupMember {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    /// topic -> partitions (consumer-protocol groups).
    pub assignment: BTreeMap<String, Vec<i32>>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct GroupDescription {
    pub group: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<GroupMember>,
}

/// A committed offset with the partition's end and the lag between them.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GroupOffset {
    pub topic: String,
    pub partition: i32,
    pub committed: i64,
    pub log_end: i64,
    pub lag: i64,
}

fn group_id(g: &str) -> GroupId {
    GroupId(StrBytes::from_string(g.to_string()))
}

fn topic_name(t: &str) -> TopicName {
    TopicName(StrBytes::from_string(t.to_string()))
}

/// Consumer-protocol bytes: a version, then the message at that version.
fn encode_versioned<M: Encodable>(m: &M, version: i16) -> Result<Bytes, ClientError> {
    let mut b = BytesMut::new();
    b.put_i16(version);
    m.encode(&mut b, version).map_err(|e| ClientError::Encode(e.to_string()))?;
    Ok(b.freeze())
}

fn decode_versioned<M: Decodable>(mut b: Bytes, max: i16) -> Result<M, ClientError> {
    if b.len() < 2 {
        return Err(ClientError::Decode("consumer protocol data too short".into()));
    }
    let v = b.get_i16().clamp(0, max);
    M::decode(&mut b, v).map_err(|e| ClientError::Decode(e.to_string()))
}

/// topic -> partitions of a consumer-protocol assignment (empty if none).
pub fn decode_assignment(b: &Bytes) -> BTreeMap<String, Vec<i32>> {
    if b.is_empty() {
        return BTreeMap::new();
    }
    decode_versioned::<ConsumerProtocolAssignment>(b.clone(), 3)
        .map(|a| a.assigned_partitions.into_iter().map(|tp| (tp.topic.0.to_string(), tp.partitions)).collect())
        .unwrap_or_default()
}

/// Kafka's range assignor: per topic, members in id order each take a
/// contiguous range, the first ones one partition more.
pub fn range_assign(
    subscriptions: &BTreeMap<String, Vec<String>>,
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, BTreeMap<String, Vec<i32>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<i32>>> =
        subscriptions.keys().map(|m| (m.clone(), BTreeMap::new())).collect();
    for (topic, &count) in partitions {
        let members: Vec<&String> = subscriptions.iter().filter(|(_, t)| t.contains(topic)).map(|(m, _)| m).collect();
        if members.is_empty() || count <= 0 {
            continue;
        }
        let n = members.len() as i32;
        let (per, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, m) in (0i32..).zip(members) {
            let take = per + i32::from(i < extra);
            if take > 0 {
                out.entry(m.clone()).or_default().insert(topic.clone(), (next..next + take).collect());
            }
            next += take;
        }
    }
    out
}

impl Client {
    /// The coordinator's connection for `group`.
    pub async fn coordinator(&self, group: &str) -> Result<Arc<Connection>, ClientError> {
        let req = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.to_string())).with_key_type(0);
        let resp = self.any().send(req, 3).await?;
        check(resp.error_code, || format!("finding the coordinator of group {group}"))?;
        let addr = format!("{}:{}", resp.host, resp.port);
        if addr == self.any().addr {
            return Ok(self.any().clone());
        }
        self.node(resp.node_id.0).await
    }

    /// (group, protocol type, state) of every group.
    pub async fn list_groups(&self) -> Result<Vec<(String, String, String)>, ClientError> {
        let resp = self.any().send(ListGroupsRequest::default(), 4).await?;
        check(resp.error_code, || "listing groups".into())?;
        let mut groups: Vec<_> = resp
            .groups
            .iter()
            .map(|g| (g.group_id.0.to_string(), g.protocol_type.to_string(), g.group_state.to_string()))
            .collect();
        groups.sort();
        Ok(groups)
    }

    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription, ClientError> {
        let conn = self.coordinator(group).await?;
        let resp = conn.send(DescribeGroupsRequest::default().with_groups(vec![group_id(group)]), 5).await?;
        let g = resp.groups.first().ok_or_else(|| ClientError::Decode("DescribeGroups: no result".into()))?;
        check(g.error_code, || format!("describing group {group}"))?;
        if &*g.group_state == "Dead"
            && let Some(d) = self.describe_consumer_group(&conn, group).await?
        {
            return Ok(d);
        }
        let consumer = g.protocol_type.is_empty() || &*g.protocol_type == "consumer";
        Ok(GroupDescription {
            group: group.to_string(),
            state: g.group_state.to_string(),
            protocol_type: g.protocol_type.to_string(),
            protocol: g.protocol_data.to_string(),
            members: g
                .members
                .iter()
                .map(|m| GroupMember {
                    member_id: m.member_id.to_string(),
                    client_id: m.client_id.to_string(),
                    client_host: m.client_host.to_string(),
                    assignment: if consumer { decode_assignment(&m.member_assignment) } else { BTreeMap::new() },
                })
                .collect(),
        })
    }

    /// A KIP-848 group (ConsumerGroupDescribe), which DescribeGroups shows
    /// as Dead; `None` if the broker has no such group or API.
    async fn describe_consumer_group(
        &self,
        conn: &Connection,
        group: &str,
    ) -> Result<Option<GroupDescription>, ClientError> {
        let req = ConsumerGroupDescribeRequest::default().with_group_ids(vec![group_id(group)]);
        let resp = match conn.send(req, 0).await {
            Ok(r) => r,
            Err(ClientError::Unsupported(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(g) = resp.groups.first().filter(|g| g.error_code == 0 && &*g.group_state != "Dead") else {
            return Ok(None);
        };
        Ok(Some(GroupDescription {
            group: group.to_string(),
            state: g.group_state.to_string(),
            protocol_type: "consumer".into(),
            protocol: g.assignor_name.to_string(),
            members: g
                .members
                .iter()
                .map(|m| GroupMember {
                    member_id: m.member_id.to_string(),
                    client_id: m.client_id.to_string(),
                    client_host: m.client_host.to_string(),
                    assignment: m
                        .assignment
                        .topic_partitions
                        .iter()
                        .map(|tp| (tp.topic_name.0.to_string(), tp.partitions.clone()))
                        .collect(),
                })
                .collect(),
        }))
    }

    /// Committed offsets of a group: topic -> partition -> offset.
    pub async fn committed(&self, group: &str) -> Result<BTreeMap<String, BTreeMap<i32, i64>>, ClientError> {
        let conn = self.coordinator(group).await?;
        let resp = conn.send(OffsetFetchRequest::default().with_group_id(group_id(group)).with_topics(None), 7).await?;
        check(resp.error_code, || format!("fetching offsets of group {group}"))?;
        let mut out: BTreeMap<String, BTreeMap<i32, i64>> = BTreeMap::new();
        for t in &resp.topics {
            for p in &t.partitions {
                check(p.error_code, || format!("offset of {}/{}", t.name.0, p.partition_index))?;
                if p.committed_offset >= 0 {
                    out.entry(t.name.0.to_string()).or_default().insert(p.partition_index, p.committed_offset);
                }
            }
        }
        Ok(out)
    }

    /// Committed offsets with each partition's log end and the lag.
    pub async fn group_lag(&self, group: &str) -> Result<Vec<GroupOffset>, ClientError> {
        let mut out = Vec::new();
        for (topic, offsets) in self.committed(group).await? {
            let parts: Vec<i32> = offsets.keys().copied().collect();
            let ends = self.list_offsets(&topic, &parts, -1).await.unwrap_or_default();
            for (partition, committed) in offsets {
                let log_end = ends.get(&partition).copied().unwrap_or(-1);
                let lag = if log_end >= 0 { (log_end - committed).max(0) } else { -1 };
                out.push(GroupOffset { topic: topic.clone(), partition, committed, log_end, lag });
            }
        }
        Ok(out)
    }

    /// Commits offsets as `member` of `generation` (-1 and "": a client that
    /// is not a group member, e.g. a reset while the group is empty).
    pub async fn commit(
        &self,
        group: &str,
        generation: i32,
        member: &str,
        offsets: &[(String, i32, i64)],
    ) -> Result<(), ClientError> {
        let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for (t, p, o) in offsets {
            topics.entry(t).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(*p)
                    .with_committed_offset(*o)
                    .with_committed_leader_epoch(-1),
            );
        }
        let req = OffsetCommitRequest::default()
            .with_group_id(group_id(group))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(StrBytes::from_string(member.to_string()))
            .with_retention_time_ms(-1)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| OffsetCommitRequestTopic::default().with_name(topic_name(t)).with_partitions(ps))
                    .collect(),
            );
        let conn = self.coordinator(group).await?;
        let resp = conn.send(req, 8).await?;
        for t in &resp.topics {
            for p in &t.partitions {
                check(p.error_code, || format!("committing {}/{} for group {group}", t.name.0, p.partition_index))?;
            }
        }
        Ok(())
    }

    pub async fn delete_group(&self, group: &str) -> Result<(), ClientError> {
        let conn = self.coordinator(group).await?;
        let resp = conn.send(DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]), 2).await?;
        let r = resp.results.first().ok_or_else(|| ClientError::Decode("DeleteGroups: no result".into()))?;
        check(r.error_code, || format!("deleting group {group}"))
    }

    /// Joins `group` as a consumer of `topics` (classic protocol, range
    /// assignor) and returns the membership with this member's partitions.
    pub async fn join_group(&self, group: &str, topics: &[String]) -> Result<GroupMembership, ClientError> {
        let conn = self.coordinator(group).await?;
        let subscription = ConsumerProtocolSubscription::default()
            .with_topics(topics.iter().map(|t| StrBytes::from_string(t.clone())).collect());
        let metadata = encode_versioned(&subscription, 0)?;
        let mut member_id = String::new();
        for _ in 0..20 {
            let req = JoinGroupRequest::default()
                .with_group_id(group_id(group))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(30_000)
                .with_member_id(StrBytes::from_string(member_id.clone()))
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![
                    JoinGroupRequestProtocol::default()
                        .with_name(StrBytes::from_static_str("range"))
                        .with_metadata(metadata.clone()),
                ]);
            let join = conn.send(req, 7).await?;
            if join.error_code == MEMBER_ID_REQUIRED {
                member_id = join.member_id.to_string();
                continue;
            }
            check(join.error_code, || format!("joining group {group}"))?;
            member_id = join.member_id.to_string();
            let assignments =
                if join.leader == join.member_id { self.assign(&join.members).await? } else { Vec::new() };
            let sync = SyncGroupRequest::default()
                .with_group_id(group_id(group))
                .with_generation_id(join.generation_id)
                .with_member_id(join.member_id.clone())
                .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
                .with_protocol_name(join.protocol_name.clone())
                .with_assignments(assignments);
            let synced = conn.send(sync, 5).await?;
            if synced.error_code == REBALANCE_IN_PROGRESS {
                continue;
            }
            check(synced.error_code, || format!("syncing group {group}"))?;
            return Ok(GroupMembership {
                group: group.to_string(),
                member_id,
                generation: join.generation_id,
                conn,
                assignment: decode_assignment(&synced.assignment),
            });
        }
        Err(ClientError::Other(format!("group {group} kept rebalancing")))
    }

    /// The leader's job: range-assign the members' subscribed topics.
    async fn assign(
        &self,
        members: &[kafka_protocol::messages::join_group_response::JoinGroupResponseMember],
    ) -> Result<Vec<SyncGroupRequestAssignment>, ClientError> {
        let mut subscriptions = BTreeMap::new();
        for m in members {
            let s: ConsumerProtocolSubscription = decode_versioned(m.metadata.clone(), 3)?;
            subscriptions.insert(m.member_id.to_string(), s.topics.iter().map(|t| t.to_string()).collect::<Vec<_>>());
        }
        let mut wanted: Vec<String> = subscriptions.values().flatten().cloned().collect();
        wanted.sort();
        wanted.dedup();
        let md = self.metadata(Some(&wanted)).await?;
        let partitions: BTreeMap<String, i32> =
            md.topics.iter().filter(|t| t.error == 0).map(|t| (t.name.clone(), t.partitions.len() as i32)).collect();
        range_assign(&subscriptions, &partitions)
            .into_iter()
            .map(|(member, topics)| {
                let a = ConsumerProtocolAssignment::default().with_assigned_partitions(
                    topics
                        .into_iter()
                        .map(|(t, ps)| {
                            consumer_protocol_assignment::TopicPartition::default()
                                .with_topic(topic_name(&t))
                                .with_partitions(ps)
                        })
                        .collect(),
                );
                Ok(SyncGroupRequestAssignment::default()
                    .with_member_id(StrBytes::from_string(member))
                    .with_assignment(encode_versioned(&a, 0)?))
            })
            .collect()
    }
}

/// This process as a member of a group.
pub struct GroupMembership {
    pub group: String,
    pub member_id: String,
    pub generation: i32,
    conn: Arc<Connection>,
    /// topic -> partitions assigned to this member.
    pub assignment: BTreeMap<String, Vec<i32>>,
}

impl GroupMembership {
    /// Heartbeats; `Ok(false)` when the group rebalances (join again).
    pub async fn heartbeat(&self) -> Result<bool, ClientError> {
        let req = HeartbeatRequest::default()
            .with_group_id(group_id(&self.group))
            .with_generation_id(self.generation)
            .with_member_id(StrBytes::from_string(self.member_id.clone()));
        let resp = self.conn.send(req, 4).await?;
        match resp.error_code {
            0 => Ok(true),
            REBALANCE_IN_PROGRESS => Ok(false),
            code => Err(ClientError::Kafka { code, context: format!("heartbeat in group {}", self.group) }),
        }
    }

    /// Leaves the group so that others take over at once.
    pub async fn leave(&self) -> Result<(), ClientError> {
        let v = self.conn.version::<LeaveGroupRequest>(4)?;
        let me = StrBytes::from_string(self.member_id.clone());
        let mut req = LeaveGroupRequest::default().with_group_id(group_id(&self.group));
        // v3 replaced the member id with a list of members.
        if v >= 3 {
            req.members = vec![MemberIdentity::default().with_member_id(me)];
        } else {
            req.member_id = me;
        }
        let resp = self.conn.send_version(req, v).await?;
        let code =
            if resp.error_code != 0 { resp.error_code } else { resp.members.first().map_or(0, |m| m.error_code) };
        match code {
            0 | GROUP_ID_NOT_FOUND => Ok(()),
            code => Err(ClientError::Kafka { code, context: format!("leaving group {}", self.group) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_assignor_splits_like_kafka() {
        let subs: BTreeMap<String, Vec<String>> =
            [("a".to_string(), vec!["t".to_string(), "u".to_string()]), ("b".to_string(), vec!["t".to_string()])]
                .into();
        let parts: BTreeMap<String, i32> = [("t".to_string(), 5), ("u".to_string(), 2)].into();
        let a = range_assign(&subs, &parts);
        assert_eq!(a["a"]["t"], [0, 1, 2]);
        assert_eq!(a["b"]["t"], [3, 4]);
        assert_eq!(a["a"]["u"], [0, 1]);
        assert!(!a["b"].contains_key("u"));
    }

    #[test]
    fn assignments_round_trip() {
        let a = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            consumer_protocol_assignment::TopicPartition::default()
                .with_topic(topic_name("t"))
                .with_partitions(vec![1, 2]),
        ]);
        let bytes = encode_versioned(&a, 0).unwrap();
        assert_eq!(decode_assignment(&bytes)["t"], [1, 2]);
        assert!(decode_assignment(&Bytes::from_static(&[0, 0, 0])).is_empty(), "garbage decodes to nothing");
    }
}
