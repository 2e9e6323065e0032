//! Groups as the admin requests see them: ListGroups, DescribeGroups,
//! DeleteGroups, and the counts the other front-ends ask for.

use ferry_util::sync::lock;

use super::{GroupCoordinator, Key};
use crate::group::GroupError;
use crate::group::classic::ClassicGroupState;

/// A member as DescribeGroups shows it.
pub struct MemberDescription {
    /// The member id the coordinator assigned.
    pub member_id: String,
    /// The group instance id of a static member.
    pub instance_id: Option<String>,
    /// The client id from the member's request header.
    pub client_id: String,
    /// The address the member connected from.
    pub client_host: String,
    /// The member's metadata for the group's chosen protocol; empty if none.
    pub metadata: Vec<u8>,
    /// The member's assignment from the last SyncGroup.
    pub assignment: Vec<u8>,
}

/// A classic group as DescribeGroups shows it.
pub struct GroupDescription {
    /// The group's state; DescribeGroups reports its name.
    pub state: ClassicGroupState,
    /// The protocol type; empty if the group has none.
    pub protocol_type: String,
    /// The chosen protocol (assignor); empty if none was chosen.
    pub protocol: String,
    /// The current generation; 0 before the first completed rebalance.
    pub generation: i32,
    /// The members, in member id order.
    pub members: Vec<MemberDescription>,
}

impl GroupCoordinator {
    /// (group id, protocol type, state name, group type) of every group.
    pub fn list(&self) -> Vec<(String, String, &'static str, &'static str)> {
        let mut out: Vec<_> = lock(&self.groups)
            .values()
            .map(|g| (g.id.clone(), g.protocol_type.clone().unwrap_or_default(), g.state.name(), "classic"))
            .collect();
        out.extend(
            lock(&self.consumer_groups).values().map(|g| (g.id.clone(), "consumer".to_string(), g.state(), "consumer")),
        );
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Describes a classic group; `None` if there is none of that name.
    pub fn describe(&self, group: &str) -> Option<GroupDescription> {
        let groups = lock(&self.groups);
        let g = groups.get(group)?;
        Some(GroupDescription {
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: g.protocol.clone().unwrap_or_default(),
            generation: g.generation,
            members: g
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m
                        .protocols
                        .iter()
                        .find(|(n, _)| Some(n) == g.protocol.as_ref())
                        .map(|(_, d)| d.clone())
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    /// Deletes an empty group and its offsets.
    pub fn delete_group(&self, group: &str) -> std::result::Result<(), GroupError> {
        let mut groups = lock(&self.groups);
        if !self.parts.serves(group) {
            return Err(GroupError::NotCoordinator);
        }
        let known = groups.contains_key(group) || lock(&self.offsets).contains_key(group);
        if !known {
            return Err(GroupError::GroupIdNotFound);
        }
        if groups.get(group).is_some_and(|g| !g.members.is_empty()) {
            return Err(GroupError::NonEmptyGroup);
        }
        groups.remove(group);
        drop(groups);
        let offsets = lock(&self.offsets).remove(group).unwrap_or_default();
        let mut tombstones: Vec<(Key, Option<Vec<u8>>)> = offsets
            .into_keys()
            .map(|(topic, partition)| (Key::Offset { group: group.to_string(), topic, partition }, None))
            .collect();
        tombstones.push((Key::Group { group: group.to_string() }, None));
        self.write(group, &tombstones)?;
        Ok(())
    }

    /// Members of a group now (classic or KIP-848).
    pub fn member_count(&self, group: &str) -> usize {
        if let Some(n) = lock(&self.consumer_groups).get(group).map(|g| g.members.len()) {
            return n;
        }
        lock(&self.groups).get(group).map_or(0, |g| g.members.len())
    }

    /// Whether a group exists (has state or offsets).
    pub fn exists(&self, group: &str) -> bool {
        if lock(&self.consumer_groups).contains_key(group) {
            return true;
        }
        lock(&self.groups).contains_key(group) || lock(&self.offsets).contains_key(group)
    }
}
