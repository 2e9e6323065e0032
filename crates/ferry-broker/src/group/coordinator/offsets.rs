//! Committed offsets: OffsetCommit (checked against the group's members),
//! offsets written for a committed transaction, OffsetFetch and
//! OffsetDelete. Every write is an acks=all append to the group's
//! partition, answered once the ISR has it.

use std::collections::BTreeMap;

use ferry_util::sync::lock;
use ferry_util::time::now_ms_u64;
use serde::{Deserialize, Serialize};

use super::{GroupCoordinator, Key};
use crate::error::{BrokerError, Result};
use crate::group::GroupError;
use crate::group::classic::ClassicGroup;
use crate::partition::Appended;

/// A committed offset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// The next offset the group will consume.
    pub offset: i64,
    /// The leader epoch of the committed record; -1 if the client did not say.
    pub leader_epoch: i32,
    /// The client's free-form metadata string.
    pub metadata: Option<String>,
    /// Wall-clock ms of the commit.
    pub commit_ms: u64,
}

/// A group's committed offsets by (topic, partition).
pub type GroupOffsets = BTreeMap<(String, i32), Committed>;

/// A write to `__consumer_offsets` that happened and is waiting for the
/// ISR; answer the client once it resolves.
pub struct OffsetsWritten(Appended);

impl OffsetsWritten {
    /// Resolves once every ISR member has the records. Losing the
    /// partition's leadership meanwhile is NOT_COORDINATOR.
    pub async fn acknowledged(self) -> std::result::Result<(), GroupError> {
        self.0.acknowledged().await.map(|_| ()).map_err(ack_error)
    }

    /// [`OffsetsWritten::acknowledged`] for a blocking thread.
    pub fn acknowledged_blocking(self) -> std::result::Result<(), GroupError> {
        self.0.acknowledged_blocking().map(|_| ()).map_err(ack_error)
    }
}

fn ack_error(e: BrokerError) -> GroupError {
    match e {
        BrokerError::NotLeaderOrFollower | BrokerError::Log(ferry_log::LogError::Unavailable(_)) => {
            GroupError::NotCoordinator
        }
        e => {
            tracing::warn!(error = %e, "offsets write failed");
            GroupError::CoordinatorNotAvailable
        }
    }
}

impl GroupCoordinator {
    /// Commits offsets: checks the member and generation and writes them
    /// to the group's partition; answer once the write is acknowledged.
    pub fn commit(
        &self,
        group: &str,
        member: &str,
        generation: i32,
        offsets: Vec<(String, i32, Committed)>,
    ) -> std::result::Result<OffsetsWritten, GroupError> {
        self.check_member(group, member, generation)?;
        self.store_offsets(group, offsets)
    }

    /// Checks that `member` of `generation` may commit for `group` (a
    /// generation below 0 commits from outside any group, which creates it).
    pub fn check_member(&self, group: &str, member: &str, generation: i32) -> std::result::Result<(), GroupError> {
        let consumer_group = lock(&self.consumer_groups)
            .get(group)
            .filter(|g| !g.members.is_empty())
            .map(|g| g.check_commit(member, generation));
        if let Some(check) = consumer_group {
            if let Some(e) = check {
                return Err(e);
            }
        } else {
            // Lock order everywhere: groups, then offsets.
            let mut groups = lock(&self.groups);
            match groups.get(group) {
                Some(g) => {
                    if let Some(e) = g.check_commit(member, generation) {
                        return Err(e);
                    }
                }
                // A group member commits for a group this broker never saw.
                None if !self.parts.serves(group) => return Err(GroupError::NotCoordinator),
                None if generation >= 0 => return Err(GroupError::IllegalGeneration),
                None => {
                    groups.insert(group.to_string(), ClassicGroup::new(group, 0, None, now_ms_u64()));
                }
            }
        }
        Ok(())
    }

    /// Writes offsets without a membership check (a committed transaction's
    /// offsets, checked when they were sent); answer once the write is
    /// acknowledged.
    pub fn store_offsets(
        &self,
        group: &str,
        offsets: Vec<(String, i32, Committed)>,
    ) -> std::result::Result<OffsetsWritten, GroupError> {
        let records: Vec<(Key, Option<Vec<u8>>)> = offsets
            .iter()
            .map(|(t, p, c)| {
                (Key::Offset { group: group.to_string(), topic: t.clone(), partition: *p }, serde_json::to_vec(c).ok())
            })
            .collect();
        // Under the offsets lock, so the map and the log agree on the order
        // of concurrent commits.
        let mut all = lock(&self.offsets);
        let written = self.write(group, &records)?;
        let map = all.entry(group.to_string()).or_default();
        for (t, p, c) in offsets {
            map.insert((t, p), c);
        }
        Ok(OffsetsWritten(written))
    }

    /// All committed offsets of a group; empty if it has none.
    pub fn committed(&self, group: &str) -> GroupOffsets {
        lock(&self.offsets).get(group).cloned().unwrap_or_default()
    }

    /// Deletes some offsets of a group (OffsetDelete); the caller refuses
    /// topics the group is consuming.
    pub fn delete_offsets(&self, group: &str, partitions: &[(String, i32)]) -> Result<()> {
        if !self.parts.serves(group) {
            return Err(GroupError::NotCoordinator.into());
        }
        let mut all = lock(&self.offsets);
        let Some(map) = all.get_mut(group) else { return Ok(()) };
        let mut tombstones = Vec::new();
        for (t, p) in partitions {
            if map.remove(&(t.clone(), *p)).is_some() {
                tombstones.push((Key::Offset { group: group.to_string(), topic: t.clone(), partition: *p }, None));
            }
        }
        drop(all);
        if !tombstones.is_empty() {
            self.write(group, &tombstones)?;
        }
        Ok(())
    }
}
