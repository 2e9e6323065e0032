//! A classic-protocol consumer group member: join (and, as the leader,
//! range-assign), heartbeat, leave.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, SyncGroupRequest};
use kafka_protocol::protocol::StrBytes;

use crate::assignor::{RANGE, range_assign};
use crate::client::Client;
use crate::conn::Connection;
use crate::consumer_protocol::{decode_assignment, decode_subscription, encode_assignment, encode_subscription};
use crate::error::{ClientError, check};
use crate::group_id;

const REBALANCE_IN_PROGRESS: i16 = 27;
const GROUP_ID_NOT_FOUND: i16 = 69;
const MEMBER_ID_REQUIRED: i16 = 79;

/// Join attempts before giving up on a group that keeps rebalancing.
const JOIN_ATTEMPTS: usize = 20;
/// The member's session timeout: the coordinator drops it after this long
/// without a heartbeat.
const SESSION_TIMEOUT_MS: i32 = 10_000;
/// How long the coordinator waits for members to rejoin in a rebalance.
const REBALANCE_TIMEOUT_MS: i32 = 30_000;

/// This process as a member of a group.
pub struct GroupMembership {
    /// The group's id.
    pub group: String,
    /// The member id the coordinator gave.
    pub member_id: String,
    /// The generation joined.
    pub generation: i32,
    conn: Arc<Connection>,
    /// topic -> partitions assigned to this member.
    pub assignment: BTreeMap<String, Vec<i32>>,
}

impl Client {
    /// Joins `group` as a consumer of `topics` (classic protocol, range
    /// assignor) and returns the membership with this member's partitions.
    pub async fn join_group(&self, group: &str, topics: &[String]) -> Result<GroupMembership, ClientError> {
        let conn = self.coordinator(group).await?;
        let metadata = encode_subscription(topics)?;
        let mut member_id = String::new();
        for _ in 0..JOIN_ATTEMPTS {
            let req = JoinGroupRequest::default()
                .with_group_id(group_id(group))
                .with_session_timeout_ms(SESSION_TIMEOUT_MS)
                .with_rebalance_timeout_ms(REBALANCE_TIMEOUT_MS)
                .with_member_id(StrBytes::from_string(member_id.clone()))
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![
                    JoinGroupRequestProtocol::default()
                        .with_name(StrBytes::from_static_str(RANGE))
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
        Err(ClientError::KeptRebalancing(group.to_string()))
    }

    /// The leader's job: range-assign the members' subscribed topics.
    async fn assign(
        &self,
        members: &[JoinGroupResponseMember],
    ) -> Result<Vec<SyncGroupRequestAssignment>, ClientError> {
        let mut subscriptions = BTreeMap::new();
        for m in members {
            subscriptions.insert(m.member_id.to_string(), decode_subscription(&m.metadata)?);
        }
        let mut wanted: Vec<String> = subscriptions.values().flatten().cloned().collect();
        wanted.sort();
        wanted.dedup();
        let md = self.metadata(Some(&wanted)).await?;
        let partitions: BTreeMap<String, i32> = md
            .topics
            .iter()
            .filter(|t| t.error == 0)
            .map(|t| (t.name.clone(), i32::try_from(t.partitions.len()).unwrap_or(i32::MAX)))
            .collect();
        range_assign(&subscriptions, &partitions)
            .into_iter()
            .map(|(member, topics)| {
                Ok(SyncGroupRequestAssignment::default()
                    .with_member_id(StrBytes::from_string(member))
                    .with_assignment(encode_assignment(&topics)?))
            })
            .collect()
    }
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
