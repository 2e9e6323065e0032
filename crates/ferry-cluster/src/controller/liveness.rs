//! Which nodes the leader has heard from, and when; and which were found
//! gone (their process dead: the cluster port refused or reset a
//! connection). Kept in memory only: a new leader starts by counting every
//! registered node as seen at its election, which gives every node one
//! full session timeout to find it (but not a node its own probes found
//! gone, before the election too).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_broker::metadata::MetadataImage;
use uuid::Uuid;

/// The last sign of life of one node.
#[derive(Clone, Copy, Debug)]
struct Seen {
    incarnation: Uuid,
    at: Instant,
    /// Heard from (a heartbeat, a registration), not only assumed alive
    /// at this leader's election.
    heard: bool,
}

/// What probes of a node's cluster port found: its process gone (the
/// connection refused or reset) from `first` to `last`, with no answer
/// in between. Probes that got no answer in time (a paused or cut-off
/// node) are not findings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gone {
    /// The node.
    pub node: i32,
    /// The incarnation registered when it was probed.
    pub incarnation: Uuid,
    /// The first probe that found it gone.
    pub first: Instant,
    /// The latest.
    pub last: Instant,
}

/// Last-seen times of every node, by id, and probe findings.
#[derive(Debug, Default)]
pub(super) struct Liveness {
    seen: BTreeMap<i32, Seen>,
    gone: BTreeMap<i32, Gone>,
}

impl Liveness {
    /// Every node of `image` counted as seen at `now`.
    pub(super) fn new(image: &MetadataImage, now: Instant) -> Self {
        let seen =
            image.nodes.values().map(|n| (n.id, Seen { incarnation: n.incarnation, at: now, heard: false })).collect();
        Liveness { seen, gone: BTreeMap::new() }
    }

    /// Records a sign of life of `node` in `incarnation`.
    pub(super) fn saw(&mut self, node: i32, incarnation: Uuid, now: Instant) {
        self.seen.insert(node, Seen { incarnation, at: now, heard: true });
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

    /// Replaces the probe findings with `found` (the leader's node keeps
    /// them, from before its election too).
    pub(super) fn found(&mut self, found: impl IntoIterator<Item = Gone>) {
        self.gone = found.into_iter().map(|g| (g.node, g)).collect();
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
            let seen =
                *self.seen.entry(node.id).or_insert(Seen { incarnation: node.incarnation, at: now, heard: false });
            if now.saturating_duration_since(seen.at) > timeout {
                silent.push(node.id);
            }
        }
        silent
    }

    /// How long ago `node` was last heard from (or assumed alive) at `now`.
    pub(super) fn silent_for(&self, node: i32, now: Instant) -> Option<Duration> {
        self.seen.get(&node).map(|s| now.saturating_duration_since(s.at))
    }

    /// Unfenced nodes of `image` whose process is known gone: probes found
    /// it gone, with no answer in between, from before or at its last
    /// heartbeat (if that came after the first finding: a heartbeat sent
    /// before the death and counted late) until at least `grace` after
    /// (one refused connection is not enough: the port may have been
    /// between two processes). In id order.
    pub(super) fn dead(&self, image: &MetadataImage, grace: Duration) -> Vec<i32> {
        image
            .live_nodes()
            .filter(|n| {
                let Some(g) = self.gone.get(&n.id) else { return false };
                let heard = self.seen.get(&n.id).filter(|s| s.heard && s.incarnation == n.incarnation);
                let since = heard.map_or(g.first, |s| s.at.max(g.first));
                g.incarnation == n.incarnation && g.last.saturating_duration_since(since) >= grace
            })
            .map(|n| n.id)
            .collect()
    }
}
