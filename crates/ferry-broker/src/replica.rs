//! A replicated partition's role and, on its leader, what the leader knows
//! of each follower: the in-sync replica set (ISR) rules and the high
//! watermark (Kafka's `Partition`/`Replica` state, issue #15).
//!
//! Pure and deterministic: the clock is an argument, so the ISR and high
//! watermark rules are tested without nodes. [`crate::Partition`] holds one
//! [`Role`] behind a lock and applies what these functions decide.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metadata::PartitionInfo;

/// What a follower last told the leader, and when it was last caught up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowerProgress {
    /// The follower's log end offset (its fetch offset).
    pub log_end: u64,
    /// Offsets below this are acknowledged on the follower: on disk under
    /// the topic's flush policy (its log's readable end).
    pub acked_end: u64,
    /// Wall-clock ms when the follower last had everything the leader had
    /// (Kafka's lastCaughtUpTimeMs).
    pub caught_up_ms: u64,
    /// The leader's log end at the follower's previous fetch, and when.
    last_fetch_leader_end: u64,
    last_fetch_ms: u64,
    /// Whether it fetched in this leadership (only then may it join the ISR).
    fetched: bool,
}

/// The leader's view of one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderState {
    /// This node.
    pub node: i32,
    /// The leader epoch this node leads in.
    pub leader_epoch: i32,
    /// The partition epoch of the image the ISR came from (AlterPartition
    /// carries it; the controller refuses a stale one).
    pub partition_epoch: i32,
    /// All replicas.
    pub replicas: Vec<i32>,
    /// The committed ISR (from the image).
    pub isr: Vec<i32>,
    /// The members of every ISR change sent to the controller since the
    /// last image (any of them may have been committed), with when the
    /// last one was sent. The high watermark counts them too (Kafka's
    /// "maximal ISR"), so an expansion in flight cannot commit too early.
    pub pending_isr: Option<(Vec<i32>, u64)>,
    /// The local log end when this node became leader: a follower must
    /// reach it before it may rejoin the ISR (it then holds this epoch's
    /// start).
    pub epoch_start: u64,
    /// Progress of every other replica.
    pub followers: BTreeMap<i32, FollowerProgress>,
    /// The topic's effective `min.insync.replicas` (set from the topic's
    /// settings with every placement; 1 until then).
    pub min_insync_replicas: usize,
}

/// How this node takes part in a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// This node leads the partition.
    Leader(LeaderState),
    /// This node copies the partition from `leader`.
    Follower(FollowerState),
}

/// A follower's view of one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowerState {
    /// The leader's node id (-1: none).
    pub leader: i32,
    /// The leader epoch the follower fetches in.
    pub leader_epoch: i32,
    /// Whether the log was truncated to the end of its last epoch on the
    /// leader (OffsetsForLeaderEpoch) since this leader epoch began;
    /// fetching starts only then.
    pub truncated: bool,
}

/// The ISR size a partition's high watermark needs to advance (KIP-966's
/// strict min ISR), and below which replicas leaving the ISR become
/// eligible leader replicas: `min.insync.replicas`, but never more than
/// the `replicas` there are (a topic configured above its replication
/// factor refuses acks=all, as Kafka does, yet stays readable). The
/// leader and the controller use this one rule, so they agree.
pub fn required_isr(min_insync_replicas: usize, replicas: usize) -> usize {
    min_insync_replicas.min(replicas).max(1)
}

impl LeaderState {
    /// Leadership from `info` starting now, with the local log ending at
    /// `log_end`. Every follower counts as caught up now (Kafka does the
    /// same), so none drops out of the ISR before it has had the lag time.
    pub fn new(node: i32, info: &PartitionInfo, log_end: u64, now_ms: u64) -> LeaderState {
        let followers = info
            .replicas
            .iter()
            .filter(|&&r| r != node)
            .map(|&r| (r, FollowerProgress { caught_up_ms: now_ms, last_fetch_ms: now_ms, ..Default::default() }))
            .collect();
        LeaderState {
            node,
            leader_epoch: info.leader_epoch,
            partition_epoch: info.partition_epoch,
            replicas: info.replicas.clone(),
            isr: info.isr.clone(),
            pending_isr: None,
            epoch_start: log_end,
            followers,
            min_insync_replicas: 1,
        }
    }

    /// A newer image of the same leadership: ISR, replicas, partition epoch.
    /// A pending change is settled once the image moves past it.
    pub fn update(&mut self, info: &PartitionInfo, now_ms: u64) {
        if info.partition_epoch != self.partition_epoch {
            self.pending_isr = None;
        }
        self.partition_epoch = info.partition_epoch;
        self.isr.clone_from(&info.isr);
        self.replicas.clone_from(&info.replicas);
        for &r in self.replicas.iter().filter(|&&r| r != self.node) {
            self.followers.entry(r).or_insert(FollowerProgress {
                caught_up_ms: now_ms,
                last_fetch_ms: now_ms,
                ..Default::default()
            });
        }
        let replicas = &self.replicas;
        self.followers.retain(|r, _| replicas.contains(r));
    }

    /// A fetch from `follower` at `fetch_offset` (its log end), reporting
    /// `acked_end`, while the leader's log ends at `leader_end`. Kafka's
    /// rule for lastCaughtUpTime: caught up now if it asked for the log
    /// end; caught up at its previous fetch if it asked for what was the
    /// end then. Returns false for a node that is not a replica.
    pub fn record_fetch(
        &mut self,
        follower: i32,
        fetch_offset: u64,
        acked_end: u64,
        leader_end: u64,
        now_ms: u64,
    ) -> bool {
        let Some(p) = self.followers.get_mut(&follower) else { return false };
        if fetch_offset >= leader_end {
            p.caught_up_ms = p.caught_up_ms.max(now_ms);
        } else if fetch_offset >= p.last_fetch_leader_end {
            p.caught_up_ms = p.caught_up_ms.max(p.last_fetch_ms);
        }
        p.last_fetch_leader_end = leader_end;
        p.last_fetch_ms = now_ms;
        p.fetched = true;
        p.log_end = fetch_offset;
        p.acked_end = acked_end.min(fetch_offset);
        true
    }

    /// The ISR the high watermark and acks=all count: the committed one
    /// plus any member of a change in flight.
    pub fn maximal_isr(&self) -> Vec<i32> {
        let mut all = self.isr.clone();
        if let Some((pending, _)) = &self.pending_isr {
            all.extend(pending.iter().filter(|r| !self.isr.contains(r)));
        }
        all
    }

    /// The high watermark: the smallest acknowledged end over the maximal
    /// ISR, the leader's own (`local_acked`) included. `None` (it must not
    /// advance) while the committed ISR is smaller than
    /// [`required_isr`] (KIP-966's strict min ISR): then every replica that
    /// left the ISR meanwhile holds everything below the high watermark,
    /// which is what makes it an eligible leader replica.
    pub fn high_watermark(&self, local_acked: u64) -> Option<u64> {
        if self.isr.len() < required_isr(self.min_insync_replicas, self.replicas.len()) {
            return None;
        }
        let hw = self
            .maximal_isr()
            .iter()
            .map(|r| if *r == self.node { local_acked } else { self.followers.get(r).map_or(0, |p| p.acked_end) })
            .min()
            .unwrap_or(local_acked);
        Some(hw)
    }

    /// The ISR the leader should ask the controller for, if it differs:
    /// followers not caught up within `lag_max_ms` leave; followers whose
    /// log reaches the high watermark `hw` and this epoch's start join.
    /// Only a follower that fetched in this leadership and is caught up
    /// (within `lag_max_ms`) joins, so a silent one never does, and only
    /// an `eligible` one (not fenced: the controller would refuse it, and
    /// the high watermark would wait for it meanwhile; KIP-841).
    /// `None` while a change is in flight (one at a time, as Kafka) unless
    /// it has waited `retry_ms` (then it is asked again).
    pub fn isr_change(
        &self,
        now_ms: u64,
        lag_max_ms: u64,
        hw: u64,
        retry_ms: u64,
        eligible: &dyn Fn(i32) -> bool,
    ) -> Option<Vec<i32>> {
        if let Some((_, sent)) = &self.pending_isr
            && now_ms.saturating_sub(*sent) < retry_ms
        {
            return None;
        }
        let mut next: Vec<i32> = self
            .isr
            .iter()
            .copied()
            .filter(|r| {
                *r == self.node
                    || self.followers.get(r).is_some_and(|p| now_ms.saturating_sub(p.caught_up_ms) <= lag_max_ms)
            })
            .collect();
        if !next.contains(&self.node) {
            next.push(self.node);
        }
        for (&r, p) in &self.followers {
            let caught_up = p.fetched && now_ms.saturating_sub(p.caught_up_ms) <= lag_max_ms;
            if !next.contains(&r) && caught_up && p.log_end >= hw && p.log_end >= self.epoch_start && eligible(r) {
                next.push(r);
            }
        }
        // Replica order, so equal sets compare equal.
        next.sort_by_key(|r| self.replicas.iter().position(|x| x == r).unwrap_or(usize::MAX));
        let mut current = self.isr.clone();
        current.sort_by_key(|r| self.replicas.iter().position(|x| x == r).unwrap_or(usize::MAX));
        (next != current).then_some(next)
    }
}

impl LeaderState {
    /// The ISR change to send now ([`LeaderState::isr_change`]), marked in
    /// flight.
    ///
    /// A change sent earlier may have been committed without this node
    /// knowing yet (its answer lost or late, the image not here yet), so
    /// its members keep counting for the high watermark until an image
    /// with a newer partition epoch settles it ([`LeaderState::update`]):
    /// every ISR the controller may hold is counted. Once it has been in
    /// flight for `retry_ms`, the change wanted now is sent; if none is
    /// (the earlier one is no longer wanted: say it named a follower the
    /// controller refused, fenced since), the committed ISR is asked for
    /// again, so that the image moves on either way: applied, it settles
    /// the change; refused as stale, the earlier one was applied and its
    /// image is on its way. (Dropping the change instead let the high
    /// watermark pass a follower the controller had put in the ISR: found
    /// by the replication simulation, seed 236.)
    pub fn next_isr_change(
        &mut self,
        now_ms: u64,
        lag_max_ms: u64,
        hw: u64,
        retry_ms: u64,
        eligible: &dyn Fn(i32) -> bool,
    ) -> Option<Vec<i32>> {
        let retry_due = self.pending_isr.as_ref().is_some_and(|(_, sent)| now_ms.saturating_sub(*sent) >= retry_ms);
        let isr = match self.isr_change(now_ms, lag_max_ms, hw, retry_ms, eligible) {
            Some(isr) => isr,
            None if retry_due => {
                let mut isr = self.isr.clone();
                isr.sort_by_key(|r| self.replicas.iter().position(|x| x == r).unwrap_or(usize::MAX));
                isr
            }
            None => return None,
        };
        let mut counted = self.pending_isr.take().map(|(p, _)| p).unwrap_or_default();
        for r in &isr {
            if !counted.contains(r) {
                counted.push(*r);
            }
        }
        self.pending_isr = Some((counted, now_ms));
        Some(isr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: fn(i32) -> bool = |_| true;

    fn info(replicas: &[i32], isr: &[i32]) -> PartitionInfo {
        PartitionInfo {
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader: replicas[0],
            leader_epoch: 4,
            partition_epoch: 9,
            elr: Vec::new(),
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        }
    }

    #[test]
    fn high_watermark_is_the_smallest_acknowledged_end_in_the_isr() {
        let mut s = LeaderState::new(1, &info(&[1, 2, 3], &[1, 2, 3]), 10, 0);
        assert_eq!(s.high_watermark(10), Some(0), "followers have acknowledged nothing yet");
        s.record_fetch(2, 10, 8, 10, 5);
        s.record_fetch(3, 10, 10, 10, 5);
        assert_eq!(s.high_watermark(10), Some(8));
        assert_eq!(s.high_watermark(6), Some(6), "the leader's own durable end counts");
        // Acknowledged past its fetch offset is not believed.
        s.record_fetch(2, 9, 50, 10, 6);
        assert_eq!(s.followers[&2].acked_end, 9);
        // Out of the ISR, a follower no longer holds the watermark back.
        s.update(&PartitionInfo { isr: vec![1, 3], partition_epoch: 10, ..info(&[1, 2, 3], &[1, 3]) }, 7);
        assert_eq!(s.high_watermark(10), Some(10));
        // An expansion in flight counts its new member at once.
        s.pending_isr = Some((vec![1, 2, 3], 7));
        assert_eq!(s.high_watermark(10), Some(9));
        assert_eq!(s.maximal_isr(), vec![1, 3, 2]);
    }

    #[test]
    fn the_high_watermark_stands_still_below_the_min_isr() {
        let mut s = LeaderState::new(1, &info(&[1, 2, 3], &[1, 2, 3]), 0, 0);
        s.min_insync_replicas = 2;
        s.record_fetch(2, 10, 10, 10, 1);
        s.record_fetch(3, 10, 10, 10, 1);
        assert_eq!(s.high_watermark(10), Some(10));
        s.update(&PartitionInfo { isr: vec![1, 3], partition_epoch: 10, ..info(&[1, 2, 3], &[1, 3]) }, 2);
        assert_eq!(s.high_watermark(12), Some(10), "two in sync: it moves with them");
        // The leader alone: nothing advances, whatever it holds (KIP-966),
        // so 3, leaving now, holds everything below the high watermark.
        s.update(&PartitionInfo { isr: vec![1], partition_epoch: 11, ..info(&[1, 2, 3], &[1]) }, 3);
        assert_eq!(s.high_watermark(20), None);
        // An expansion in flight does not count until it is committed.
        s.pending_isr = Some((vec![1, 2], 4));
        assert_eq!(s.high_watermark(20), None);
        // The requirement never exceeds the replicas there are.
        assert_eq!((required_isr(2, 1), required_isr(2, 3), required_isr(1, 3), required_isr(0, 0)), (1, 2, 1, 1));
        let mut single = LeaderState::new(1, &info(&[1], &[1]), 0, 0);
        single.min_insync_replicas = 2;
        assert_eq!(single.high_watermark(5), Some(5));
    }

    #[test]
    fn a_follower_that_stops_fetching_leaves_the_isr_after_the_lag_time() {
        let mut s = LeaderState::new(1, &info(&[1, 2, 3], &[1, 2, 3]), 0, 1_000);
        // Follower 3 keeps up; follower 2 stops.
        s.record_fetch(2, 0, 0, 0, 1_100);
        for t in (1_200..=40_000).step_by(500) {
            s.record_fetch(3, 0, 0, 0, t);
        }
        assert_eq!(s.isr_change(31_000, 30_000, 0, 5_000, &ALL), None, "2 was caught up at 1100: not yet");
        assert_eq!(s.isr_change(31_101, 30_000, 0, 5_000, &ALL), Some(vec![1, 3]));
        // A follower that fetches but never reaches the end also goes.
        let mut s = LeaderState::new(1, &info(&[1, 2], &[1, 2]), 100, 0);
        for (i, t) in (1_000..=40_000u64).step_by(1_000).enumerate() {
            // The leader grows by 10 per second; the follower by 5.
            let leader_end = 100 + 10 * i as u64;
            s.record_fetch(2, 5 * i as u64, 0, leader_end, t);
        }
        assert_eq!(s.isr_change(40_000, 30_000, 0, 5_000, &ALL), Some(vec![1]));
    }

    #[test]
    fn a_follower_rejoins_once_it_reaches_the_high_watermark_and_the_epoch_start() {
        let mut s = LeaderState::new(1, &info(&[1, 2, 3], &[1, 3]), 50, 0);
        s.record_fetch(3, 60, 60, 60, 10);
        s.record_fetch(2, 40, 40, 60, 10);
        let hw = s.high_watermark(60).unwrap();
        assert_eq!(hw, 60);
        assert_eq!(s.isr_change(20, 30_000, hw, 5_000, &ALL), None, "2 is behind the high watermark");
        s.record_fetch(2, 60, 60, 60, 20);
        assert_eq!(s.isr_change(21, 30_000, hw, 5_000, &|r| r != 2), None, "not while 2 is fenced");
        assert_eq!(s.isr_change(21, 30_000, hw, 5_000, &ALL), Some(vec![1, 2, 3]));
        // One change at a time: while it is in flight, nothing new is asked
        // until the retry time passes.
        s.pending_isr = Some((vec![1, 2, 3], 21));
        assert_eq!(s.isr_change(22, 30_000, hw, 5_000, &ALL), None);
        assert_eq!(s.isr_change(5_021, 30_000, hw, 5_000, &ALL), Some(vec![1, 2, 3]));
        // The image with the change settles it.
        s.update(&PartitionInfo { partition_epoch: 10, ..info(&[1, 2, 3], &[1, 2, 3]) }, 30);
        assert_eq!((s.pending_isr.clone(), s.isr_change(31, 30_000, hw, 5_000, &ALL)), (None, None));
        // A follower below this epoch's start stays out even at the HW.
        let mut s = LeaderState::new(1, &info(&[1, 2], &[1]), 50, 0);
        s.record_fetch(2, 30, 30, 50, 1);
        assert_eq!(s.isr_change(2, 30_000, 30, 5_000, &ALL), None);
    }

    #[test]
    fn a_refused_expansion_stops_holding_the_high_watermark_back() {
        // Follower 2 was caught up when it stopped (a controlled shutdown
        // fenced it and the image took it out of the ISR): the leader asks
        // to add it back, which the controller refuses.
        let mut s = LeaderState::new(1, &info(&[1, 2, 3], &[1, 2, 3]), 0, 0);
        s.record_fetch(2, 20, 20, 20, 100);
        s.record_fetch(3, 20, 20, 20, 100);
        s.update(&PartitionInfo { isr: vec![1, 3], partition_epoch: 10, ..info(&[1, 2, 3], &[1, 3]) }, 150);
        assert_eq!(s.next_isr_change(200, 2_000, 20, 1_000, &ALL), Some(vec![1, 2, 3]));
        s.record_fetch(3, 25, 25, 25, 300);
        assert_eq!(s.high_watermark(25), Some(20), "the change in flight holds it at 2's end");
        assert_eq!(s.next_isr_change(900, 2_000, 20, 1_000, &ALL), None, "in flight");
        // Past the retry, 2 has not been caught up for the lag time: the
        // change is no longer wanted. It may have been committed all the
        // same (its answer lost), so 2 still counts while the leader asks
        // for the committed ISR again, to learn which.
        s.record_fetch(3, 25, 25, 25, 3_000);
        assert_eq!(s.next_isr_change(3_000, 2_000, 20, 1_000, &ALL), Some(vec![1, 3]));
        assert_eq!(s.high_watermark(25), Some(20), "2 may be in the committed ISR");
        // The image with that change (a newer partition epoch) settles it.
        s.update(&PartitionInfo { isr: vec![1, 3], partition_epoch: 11, ..info(&[1, 2, 3], &[1, 3]) }, 3_100);
        assert_eq!((s.pending_isr.clone(), s.high_watermark(25)), (None, Some(25)));
    }

    /// Found by the replication simulation (seed 236): the controller
    /// committed an expansion whose answer the leader never saw; the
    /// follower then stopped fetching. The leader must keep counting it
    /// until the image tells, or it acknowledges records the new ISR
    /// member lacks (and the controller may elect that member).
    #[test]
    fn an_expansion_in_flight_counts_until_the_image_settles_it() {
        let mut s = LeaderState::new(1, &info(&[1, 2, 3], &[1, 3]), 0, 0);
        s.min_insync_replicas = 2;
        s.record_fetch(2, 0, 0, 0, 100);
        s.record_fetch(3, 0, 0, 0, 100);
        assert_eq!(s.next_isr_change(200, 2_000, 0, 1_500, &ALL), Some(vec![1, 2, 3]));
        // The leader writes 3 records; 3 copies them, 2 never fetches again.
        for t in (300..=6_000).step_by(300) {
            s.record_fetch(3, 3, 3, 3, t);
            let hw = s.high_watermark(3).unwrap();
            assert_eq!(hw, 0, "at {t} ms: 2 may be in the ISR");
            let _ = s.next_isr_change(t, 2_000, hw, 1_500, &ALL);
        }
        // Its image arrives: 2 is in the ISR. The leader then shrinks it
        // the ordinary way (2 lags), and only that image frees the HW.
        s.update(&PartitionInfo { partition_epoch: 10, ..info(&[1, 2, 3], &[1, 2, 3]) }, 6_100);
        assert_eq!(s.high_watermark(3), Some(0));
        assert_eq!(s.next_isr_change(6_200, 2_000, 0, 1_500, &ALL), Some(vec![1, 3]));
        s.update(&PartitionInfo { partition_epoch: 11, ..info(&[1, 2, 3], &[1, 3]) }, 6_300);
        assert_eq!(s.high_watermark(3), Some(3));
    }

    #[test]
    fn fetches_from_strangers_are_ignored_and_replicas_follow_the_image() {
        let mut s = LeaderState::new(1, &info(&[1, 2], &[1, 2]), 0, 0);
        assert!(!s.record_fetch(7, 5, 5, 5, 1));
        s.update(&PartitionInfo { partition_epoch: 11, ..info(&[1, 3], &[1]) }, 2);
        assert_eq!(s.followers.keys().copied().collect::<Vec<_>>(), vec![3]);
        assert_eq!(s.isr_change(3, 30_000, 0, 5_000, &ALL), None, "3 has not fetched yet");
        assert!(s.record_fetch(3, 0, 0, 0, 4));
        assert_eq!(s.isr_change(5, 30_000, 0, 5_000, &ALL), Some(vec![1, 3]), "3 is at the (empty) log's end");
    }
}
