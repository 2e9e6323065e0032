//! Which nodes the leader has heard from, and when. Kept in memory only:
//! a new leader starts by counting every registered node as seen at its
//! election, which gives every node one full session timeout to find it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_broker::metadata::MetadataImage;
use uuid::Uuid;

/// The last sign of life of one node.
#[derive(Clone, Copy, Debug)]
struct Seen {
    incarnation: Uuid,
    at: Instant,
}

/// Last-seen times of every node, by id.
#[derive(Debug, Default)]
pub(super) struct Liveness {
    seen: BTreeMap<i32, Seen>,
}

impl Liveness {
    /// Every node of `image` counted as seen at `now`.
    pub(super) fn new(image: &MetadataImage, now: Instant) -> Self {
        let seen = image.nodes.values().map(|n| (n.id, Seen { incarnation: n.incarnation, at: now })).collect();
        Liveness { seen }
    }

    /// Records a sign of life of `node` in `incarnation`.
    pub(super) fn saw(&mut self, node: i32, incarnation: Uuid, now: Instant) {
        self.seen.insert(node, Seen { incarnation, at: now });
    }

    /// A heartbeat: accepted (and counted) only from the registered,
    /// unfenced incarnation of a known node.
    pub(super) fn heartbeat(&mut self, image: &MetadataImage, node: i32, incarnation: Uuid, now: Instant) -> bool {
        let current = image.nodes.get(&node).is_some_and(|n| n.incarnation == incarnation && !n.fenced);
        if current {
            self.saw(node, incarnation, now);
        }
        current
    }

    /// Whether `node` is held by another incarnation that is registered,
    /// unfenced and was heard from within `timeout` of `now`: then a
    /// registration in `incarnation` is a second process with the same id.
    pub(super) fn held_by_other(
        &self,
        image: &MetadataImage,
        node: i32,
        incarnation: Uuid,
        now: Instant,
        timeout: Duration,
    ) -> bool {
        let Some(registered) = image.nodes.get(&node) else { return false };
        if registered.fenced || registered.incarnation == incarnation {
            return false;
        }
        self.seen
            .get(&node)
            .is_some_and(|s| s.incarnation == registered.incarnation && now.saturating_duration_since(s.at) <= timeout)
    }

    /// The leader could hear no one until `now` (its process was paused,
    /// or it could not confirm its leadership): silence before `now` says
    /// nothing about the nodes, so every node's session starts again now.
    pub(super) fn restart_sessions(&mut self, now: Instant) {
        for s in self.seen.values_mut() {
            s.at = s.at.max(now);
        }
    }

    /// Unfenced nodes of `image` not heard from for more than `timeout`
    /// at `now`, in id order. A node the leader never saw (registered
    /// before it was elected but after `new`, which the serial controller
    /// rules out) starts its grace period now.
    pub(super) fn silent(&mut self, image: &MetadataImage, now: Instant, timeout: Duration) -> Vec<i32> {
        let mut silent = Vec::new();
        for node in image.live_nodes() {
            let seen = *self.seen.entry(node.id).or_insert(Seen { incarnation: node.incarnation, at: now });
            if now.saturating_duration_since(seen.at) > timeout {
                silent.push(node.id);
            }
        }
        silent
    }
}
