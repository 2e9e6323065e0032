//! The classic protocol's requests (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup) on the coordinator; the group logic is `group::classic`.

use std::time::Instant;

use ferry_util::sync::lock;
use ferry_util::time::now_ms_u64;
use tokio::sync::oneshot;

use super::GroupCoordinator;
use crate::group::GroupError;
use crate::group::classic::{ClassicGroup, Join, JoinResult, SyncResult};

impl GroupCoordinator {
    /// Runs `f` on the group (created if missing), persisting a generation
    /// change; `None` if this node does not serve the group (checked under
    /// the groups lock, so an unload cannot miss a group created here).
    fn with_group<R>(&self, id: &str, f: impl FnOnce(&mut ClassicGroup) -> R) -> Option<R> {
        let mut groups = lock(&self.groups);
        if !self.parts.serves(id) {
            return None;
        }
        let g = groups.entry(id.to_string()).or_insert_with(|| ClassicGroup::new(id, 0, None, now_ms_u64()));
        let generation = g.generation;
        let r = f(g);
        if g.generation != generation {
            self.persist_generation(g);
        }
        Some(r)
    }

    /// Handles a JoinGroup, creating the classic group if missing; joins whose
    /// session timeout is outside the configured bounds get INVALID_SESSION_TIMEOUT.
    pub fn join(&self, group: &str, j: Join) -> oneshot::Receiver<JoinResult> {
        if j.session_timeout < self.config.min_session_timeout || j.session_timeout > self.config.max_session_timeout {
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(JoinResult {
                error: Some(GroupError::InvalidSessionTimeout),
                generation: -1,
                ..Default::default()
            });
            return rx;
        }
        let delay = self.config.initial_rebalance_delay;
        self.with_group(group, |g| g.join(j, Instant::now(), delay)).unwrap_or_else(|| {
            let (tx, rx) = oneshot::channel();
            let _ =
                tx.send(JoinResult { error: Some(GroupError::NotCoordinator), generation: -1, ..Default::default() });
            rx
        })
    }

    /// Handles a SyncGroup; the answer arrives once the leader's assignment has.
    pub fn sync(
        &self,
        group: &str,
        member: &str,
        generation: i32,
        assignments: Vec<(String, Vec<u8>)>,
    ) -> oneshot::Receiver<SyncResult> {
        self.with_group(group, |g| g.sync(member, generation, assignments, Instant::now())).unwrap_or_else(|| {
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(SyncResult { error: Some(GroupError::NotCoordinator), ..Default::default() });
            rx
        })
    }

    /// Handles a classic Heartbeat; `None` means the member is in good standing.
    pub fn heartbeat(&self, group: &str, member: &str, generation: i32) -> Option<GroupError> {
        match lock(&self.groups).get_mut(group) {
            Some(g) => g.heartbeat(member, generation, Instant::now()),
            None if !self.parts.serves(group) => Some(GroupError::NotCoordinator),
            None => Some(GroupError::UnknownMemberId),
        }
    }

    /// Handles a LeaveGroup of one member, by member id or static instance id.
    pub fn leave(&self, group: &str, member: &str, instance: Option<&str>) -> Option<GroupError> {
        let mut groups = lock(&self.groups);
        let Some(g) = groups.get_mut(group) else {
            return Some(if self.parts.serves(group) {
                GroupError::UnknownMemberId
            } else {
                GroupError::NotCoordinator
            });
        };
        let generation = g.generation;
        let r = g.leave(member, instance, Instant::now());
        if g.generation != generation {
            self.persist_generation(g);
        }
        r
    }
}
