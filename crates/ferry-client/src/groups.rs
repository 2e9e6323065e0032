//! Consumer groups seen from outside: coordinator lookup, listing,
//! describing (classic and KIP-848 consumer groups), committed offsets and
//! lag, commits, deletion.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest,
    ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest,
};
use kafka_protocol::protocol::StrBytes;

use crate::client::Client;
use crate::conn::Connection;
use crate::consumer_protocol::decode_assignment;
use crate::error::{ClientError, check};
use crate::offsets::LATEST;
use crate::{group_id, topic_name};

/// The name and state of a group, as ListGroups gives them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupListing {
    /// The group's id.
    pub group: String,
    /// `consumer` for consumer groups; empty for groups used only to commit offsets.
    pub protocol_type: String,
    /// Kafka's state name (Empty, Stable, ...).
    pub state: String,
}

/// A group member as DescribeGroups shows it.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct GroupMember {
    /// The member id the coordinator gave.
    pub member_id: String,
    /// The client id the member connected with.
    pub client_id: String,
    /// The member's address as the coordinator saw it.
    pub client_host: String,
    /// topic -> partitions (consumer-protocol groups).
    pub assignment: BTreeMap<String, Vec<i32>>,
}

/// A group's state and members.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct GroupDescription {
    /// The group's id.
    pub group: String,
    /// Kafka's state name (Empty, Stable, Dead for an unknown group, ...).
    pub state: String,
    /// `consumer` for consumer groups.
    pub protocol_type: String,
    /// The chosen assignor (or protocol) name.
    pub protocol: String,
    /// The members.
    pub members: Vec<GroupMember>,
}

/// A committed offset with the partition's end and the lag between them.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct GroupOffset {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The group's committed offset.
    pub committed: i64,
    /// The partition's log end offset (-1: unknown).
    pub log_end: i64,
    /// `log_end - committed`, never negative (-1: unknown).
    pub lag: i64,
}

impl Client {
    /// The coordinator's connection for `group`.
    pub async fn coordinator(&self, group: &str) -> Result<Arc<Connection>, ClientError> {
        let req = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.to_string())).with_key_type(0);
        let resp = self.any().send(req, 3).await?;
        check(resp.error_code, || format!("finding the coordinator of group {group}"))?;
        let addr = format!("{}:{}", resp.host, resp.port);
        if addr == self.any().addr() {
            return Ok(self.any().clone());
        }
        self.node(resp.node_id.0).await
    }

    /// Every group, by id.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, ClientError> {
        let resp = self.any().send(ListGroupsRequest::default(), 4).await?;
        check(resp.error_code, || "listing groups".into())?;
        let mut groups: Vec<_> = resp
            .groups
            .iter()
            .map(|g| GroupListing {
                group: g.group_id.0.to_string(),
                protocol_type: g.protocol_type.to_string(),
                state: g.group_state.to_string(),
            })
            .collect();
        groups.sort();
        Ok(groups)
    }

    /// A group's state and members (a KIP-848 consumer group through
    /// ConsumerGroupDescribe).
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
            let ends = self.list_offsets(&topic, &parts, LATEST).await.unwrap_or_default();
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

    /// Deletes an empty group and its committed offsets.
    pub async fn delete_group(&self, group: &str) -> Result<(), ClientError> {
        let conn = self.coordinator(group).await?;
        let resp = conn.send(DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]), 2).await?;
        let r = resp.results.first().ok_or_else(|| ClientError::Decode("DeleteGroups: no result".into()))?;
        check(r.error_code, || format!("deleting group {group}"))
    }
}
