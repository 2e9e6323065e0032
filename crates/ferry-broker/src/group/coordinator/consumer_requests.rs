//! KIP-848 requests (ConsumerGroupHeartbeat) on the coordinator; the group
//! logic is `group::consumer`. Members are not stored: after a move the
//! new coordinator fences them (see docs/cluster.md).

use std::time::{Duration, Instant};

use ferry_util::sync::lock;

use super::GroupCoordinator;
use crate::group::GroupError;
use crate::group::consumer::{ConsumerGroup, Heartbeat, HeartbeatResult, Topics};

impl GroupCoordinator {
    /// A KIP-848 heartbeat; `topics` shows the group the topics it may subscribe to.
    /// Refused while a classic group of that name has members.
    pub fn consumer_heartbeat(
        &self,
        group: &str,
        hb: Heartbeat,
        topics: &Topics,
    ) -> std::result::Result<HeartbeatResult, GroupError> {
        if lock(&self.groups).get(group).is_some_and(|g| !g.members.is_empty()) {
            // A classic group of that name is active.
            return Err(GroupError::InconsistentGroupProtocol);
        }
        let mut groups = lock(&self.consumer_groups);
        if !self.parts.serves(group) {
            return Err(GroupError::NotCoordinator);
        }
        let g = groups.entry(group.to_string()).or_insert_with(|| ConsumerGroup::new(group, 0));
        g.heartbeat(hb, Instant::now(), topics)
    }

    /// The heartbeat interval KIP-848 members are told to keep.
    pub fn consumer_heartbeat_interval(&self) -> Duration {
        self.config.consumer_heartbeat_interval
    }

    /// Runs `f` on a KIP-848 group, if it exists.
    pub fn with_consumer_group<R>(&self, group: &str, f: impl FnOnce(&ConsumerGroup) -> R) -> Option<R> {
        lock(&self.consumer_groups).get(group).map(f)
    }

    /// Expires silent KIP-848 members and has the groups follow topics
    /// being created and growing.
    pub fn expire_consumer_members(&self, topics: &Topics) {
        let now = Instant::now();
        for g in lock(&self.consumer_groups).values_mut() {
            g.expire(now, self.config.consumer_session_timeout, topics);
        }
    }
}
