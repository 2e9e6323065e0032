//! A consumer group: where it has read to (the last delivered id and the
//! offset after it) and its pending entries list (PEL): entries delivered
//! and not yet acknowledged, each with its owner, last delivery time and
//! delivery count. This is the state of a queue cursor's in-flight
//! deliveries (DESIGN §1), kept per group; acknowledged entries simply
//! leave the PEL, as in Redis, since delivery follows the last delivered
//! id rather than an acknowledged floor.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::id::StreamId;

/// One pending entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The entry's record offset.
    pub offset: u64,
    /// The consumer it was last delivered to.
    pub consumer: String,
    /// Wall-clock ms of its last delivery.
    pub delivered_ms: u64,
    /// Deliveries so far.
    pub count: u64,
}

/// A consumer of a group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consumer {
    /// Wall-clock ms of its last command (XINFO's idle).
    pub seen_ms: u64,
    /// Wall-clock ms of its last successful read or claim (XINFO's inactive).
    pub active_ms: Option<u64>,
}

/// A consumer group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// The last id delivered with `>`.
    pub last_id: StreamId,
    /// Where `>` reads on: the offset after the last delivered entry.
    pub next_offset: u64,
    /// Entries delivered with `>` so far (XINFO's entries-read).
    pub entries_read: u64,
    /// Pending entries by id.
    pub pel: BTreeMap<StreamId, Pending>,
    /// Consumers by name.
    pub consumers: BTreeMap<String, Consumer>,
}

impl Group {
    /// A new group reading after `last_id`, i.e. from `next_offset`.
    pub fn new(last_id: StreamId, next_offset: u64) -> Group {
        Group { last_id, next_offset, ..Group::default() }
    }

    /// Notes that `name` issued a command now; creates it if new
    /// (returns true then).
    pub fn touch(&mut self, name: &str, now: u64) -> bool {
        let created = !self.consumers.contains_key(name);
        self.consumers.entry(name.to_string()).or_default().seen_ms = now;
        created
    }

    /// Records a `>` delivery of (id, offset) to `consumer`; with `noack`
    /// it is not kept pending.
    pub fn deliver_new(&mut self, consumer: &str, id: StreamId, offset: u64, now: u64, noack: bool) {
        self.last_id = self.last_id.max(id);
        self.next_offset = self.next_offset.max(offset + 1);
        self.entries_read += 1;
        if let Some(c) = self.consumers.get_mut(consumer) {
            c.active_ms = Some(now);
        }
        if !noack {
            self.pel.insert(id, Pending { offset, consumer: consumer.to_string(), delivered_ms: now, count: 1 });
        }
    }

    /// XACK: removes `ids` from the PEL; returns how many were pending.
    pub fn ack(&mut self, ids: &[StreamId]) -> usize {
        ids.iter().filter(|id| self.pel.remove(id).is_some()).count()
    }

    /// Pending entries of `consumer` with ids above `after`, at most `count`.
    pub fn pending_of(&self, consumer: &str, after: StreamId, count: usize) -> Vec<(StreamId, Pending)> {
        self.pel
            .range(after.next().unwrap_or(StreamId::MAX)..)
            .filter(|(_, p)| p.consumer == consumer)
            .take(count)
            .map(|(id, p)| (*id, p.clone()))
            .collect()
    }

    /// XCLAIM of one entry: gives it to `consumer` if it has been idle at
    /// least `min_idle` ms (or `force`); returns it as it now is.
    pub fn claim(
        &mut self,
        id: StreamId,
        consumer: &str,
        min_idle: u64,
        now: u64,
        opts: &ClaimOpts,
    ) -> Option<Pending> {
        let p = self.pel.get_mut(&id)?;
        if now.saturating_sub(p.delivered_ms) < min_idle {
            return None;
        }
        p.consumer = consumer.to_string();
        p.delivered_ms = opts.delivered_ms.unwrap_or(now);
        match opts.retry_count {
            Some(n) => p.count = n,
            None if !opts.just_id => p.count += 1,
            None => {}
        }
        let claimed = p.clone();
        if let Some(c) = self.consumers.get_mut(consumer) {
            c.active_ms = Some(now);
        }
        Some(claimed)
    }

    /// DELCONSUMER: drops `name` and its pending entries; returns how many it had.
    pub fn remove_consumer(&mut self, name: &str) -> usize {
        self.consumers.remove(name);
        let before = self.pel.len();
        self.pel.retain(|_, p| p.consumer != name);
        before - self.pel.len()
    }

    /// Pending entries per consumer.
    pub fn pending_counts(&self) -> BTreeMap<&str, u64> {
        let mut counts = BTreeMap::new();
        for p in self.pel.values() {
            *counts.entry(p.consumer.as_str()).or_insert(0) += 1;
        }
        counts
    }
}

/// XCLAIM's options.
#[derive(Clone, Debug, Default)]
pub struct ClaimOpts {
    /// IDLE / TIME: the delivery time to record instead of now.
    pub delivered_ms: Option<u64>,
    /// RETRYCOUNT: the delivery count to record.
    pub retry_count: Option<u64>,
    /// JUSTID: the delivery count is left as it is.
    pub just_id: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64) -> StreamId {
        StreamId { ms, seq: 0 }
    }

    #[test]
    fn deliveries_stay_pending_until_acked() {
        let mut g = Group::new(StreamId::MIN, 0);
        g.touch("a", 100);
        g.deliver_new("a", id(1), 0, 100, false);
        g.deliver_new("a", id(2), 1, 100, false);
        g.deliver_new("a", id(3), 2, 100, true);
        assert_eq!((g.last_id, g.next_offset, g.entries_read), (id(3), 3, 3));
        assert_eq!(g.pel.len(), 2, "NOACK deliveries are not pending");
        assert_eq!(g.pending_of("a", StreamId::MIN, 10).len(), 2);
        assert_eq!(g.pending_of("a", id(1), 10).len(), 1);
        assert_eq!(g.ack(&[id(1), id(9)]), 1);
        assert_eq!(g.pel.len(), 1);
    }

    #[test]
    fn claims_need_idle_time_and_count_deliveries() {
        let mut g = Group::new(StreamId::MIN, 0);
        g.deliver_new("dead", id(1), 0, 1_000, false);
        let opts = ClaimOpts::default();
        assert_eq!(g.claim(id(1), "b", 500, 1_200, &opts), None, "not idle long enough");
        let p = g.claim(id(1), "b", 500, 1_600, &opts).unwrap();
        assert_eq!((p.consumer.as_str(), p.count, p.delivered_ms), ("b", 2, 1_600));
        let just = ClaimOpts { just_id: true, ..ClaimOpts::default() };
        assert_eq!(g.claim(id(1), "c", 0, 1_700, &just).unwrap().count, 2);
        assert_eq!(g.remove_consumer("c"), 1);
        assert!(g.pel.is_empty());
    }
}
