//! Fencing a dead node early: probes that found its process gone, at
//! least `dead_node_grace` apart, with no answer in between and no
//! heartbeat since the first, fence it before the session timeout; a node
//! that is silent but not found gone (paused, cut off) waits out the
//! session timeout.

use std::time::{Duration, Instant};

use ferry_broker::metadata::MetadataRecord;
use uuid::Uuid;

use super::tests::{Cluster, config, create, node};
use super::{ControllerConfig, Gone, QuorumController};

fn ms(c: &Cluster, ms: u64) -> Instant {
    c.t0 + Duration::from_millis(ms)
}

fn fenced(records: &[MetadataRecord]) -> Vec<i32> {
    records
        .iter()
        .filter_map(|r| match r {
            MetadataRecord::FenceNode { node_id } => Some(*node_id),
            _ => None,
        })
        .collect()
}

/// Nodes 1 and 3 heartbeat `at_ms` after the start.
fn others_beat(c: &mut Cluster, at_ms: u64) {
    let at = ms(c, at_ms);
    for n in [1, 3] {
        assert!(c.controller.heartbeat(&c.image, n, Uuid::from_u128(n as u128), at));
    }
}

/// Node `node` (incarnation `inc`) found gone from `first` to `last` ms.
fn gone(c: &Cluster, node: i32, inc: u128, first: u64, last: u64) -> Gone {
    Gone { node, incarnation: Uuid::from_u128(inc), first: ms(c, first), last: ms(c, last) }
}

#[test]
fn a_node_found_gone_a_grace_apart_is_fenced_and_its_leaderships_move() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.request(create("q", Some(3), Some(3), None)).unwrap();
    let before = c.image.topic("q").unwrap().clone();
    // Its last heartbeat at 0.1 s; killed at 0.2 s: its port refuses from then on.
    assert!(c.controller.heartbeat(&c.image, 2, Uuid::from_u128(2), ms(&c, 100)));
    c.controller.found_gone([gone(&c, 2, 2, 300, 300)]);
    others_beat(&mut c, 800);
    assert!(c.controller.tick(&c.image, ms(&c, 800)).is_empty(), "one refusal is not enough");
    c.controller.found_gone([gone(&c, 2, 2, 300, 1_000)]);
    assert!(c.controller.tick(&c.image, ms(&c, 1_100)).is_empty(), "0.7 s apart: still in its grace");
    c.controller.found_gone([gone(&c, 2, 2, 300, 1_300)]);
    let records = c.controller.tick(&c.image, ms(&c, 1_300));
    assert_eq!(fenced(&records), vec![2], "1 s apart, 1.3 s into a 6 s session");
    c.commit(&records);
    for (p, old) in c.image.topic("q").unwrap().partitions.iter().zip(&before.partitions) {
        assert!(p.leader != 2 && p.leader != -1 && !p.isr.contains(&2), "{p:?}");
        assert_eq!(p.leader_epoch, old.leader_epoch + i32::from(old.leader == 2), "a clean election, new epoch");
    }
    // Findings about the fenced node change nothing more.
    c.controller.found_gone([gone(&c, 2, 2, 300, 2_300)]);
    assert!(fenced(&c.controller.tick(&c.image, ms(&c, 2_300))).is_empty());
}

#[test]
fn the_grace_counts_from_the_last_heartbeat_if_it_came_after_the_first_finding() {
    let mut c = Cluster::new(&[1, 2, 3]);
    // Refused from 0.1 s, yet a heartbeat counted at 0.6 s (sent before
    // the death, or the port was between two processes).
    assert!(c.controller.heartbeat(&c.image, 2, Uuid::from_u128(2), ms(&c, 600)));
    c.controller.found_gone([gone(&c, 2, 2, 100, 1_200)]);
    others_beat(&mut c, 1_200);
    assert!(fenced(&c.controller.tick(&c.image, ms(&c, 1_200))).is_empty(), "0.6 s after the heartbeat");
    c.controller.found_gone([gone(&c, 2, 2, 100, 1_600)]);
    assert_eq!(fenced(&c.controller.tick(&c.image, ms(&c, 1_600))), vec![2], "a grace after it");
}

#[test]
fn an_answer_in_between_starts_the_findings_again() {
    let mut c = Cluster::new(&[1, 2, 3]);
    // The prober found it gone at 0.1 s, then it answered: the prober's
    // next finding starts a new span at 1.7 s.
    c.controller.found_gone([gone(&c, 2, 2, 100, 100)]);
    assert!(fenced(&c.controller.tick(&c.image, ms(&c, 100))).is_empty());
    c.controller.found_gone([]);
    c.controller.found_gone([gone(&c, 2, 2, 1_700, 2_300)]);
    others_beat(&mut c, 2_300);
    assert!(fenced(&c.controller.tick(&c.image, ms(&c, 2_300))).is_empty(), "0.6 s apart");
    c.controller.found_gone([gone(&c, 2, 2, 1_700, 2_700)]);
    assert_eq!(fenced(&c.controller.tick(&c.image, ms(&c, 2_700))), vec![2]);
}

#[test]
fn a_paused_node_is_fenced_by_its_session_timeout_only() {
    // A paused process's port accepts but never answers: its probes time
    // out and find nothing. Only the session timeout fences it.
    let mut c = Cluster::new(&[1, 2, 3]);
    for s in 1..=6 {
        others_beat(&mut c, s * 1_000);
        c.controller.found_gone([]);
        assert!(fenced(&c.controller.tick(&c.image, c.at(s))).is_empty(), "at {s} s");
    }
    others_beat(&mut c, 6_100);
    assert_eq!(fenced(&c.controller.tick(&c.image, ms(&c, 6_100))), vec![2]);
}

#[test]
fn findings_about_an_earlier_life_are_ignored() {
    let mut c = Cluster::new(&[1, 2, 3]);
    let old = Uuid::from_u128(2);
    // Refused from 0.1 s; node 2 restarts and registers in place of its old life.
    let records = c.controller.register(&c.image, node(2, 202, None), Some(old), ms(&c, 500)).unwrap();
    c.commit(&records);
    c.controller.found_gone([gone(&c, 2, 2, 100, 1_200)]);
    others_beat(&mut c, 1_200);
    assert!(fenced(&c.controller.tick(&c.image, ms(&c, 1_200))).is_empty());
    // The new life found gone from 1.4 s (after its registration): fenced a grace later.
    c.controller.found_gone([gone(&c, 2, 202, 1_400, 2_000)]);
    assert!(fenced(&c.controller.tick(&c.image, ms(&c, 2_000))).is_empty());
    c.controller.found_gone([gone(&c, 2, 202, 1_400, 2_400)]);
    assert_eq!(fenced(&c.controller.tick(&c.image, ms(&c, 2_400))), vec![2]);
}

#[test]
fn a_new_leader_acts_on_what_its_node_found_before_the_election() {
    // Node 1 found node 2 (the old leader) gone from 0.1 s; elected at 1.2 s,
    // it counts node 2 as seen then, but not as heard from: fenced at once.
    let mut c = Cluster::new(&[1, 2, 3]);
    c.controller = QuorumController::new(config(), &c.image, ms(&c, 1_200));
    c.controller.found_gone([gone(&c, 2, 2, 100, 1_150)]);
    assert_eq!(fenced(&c.controller.tick(&c.image, ms(&c, 1_200))), vec![2]);
}

#[test]
fn a_grace_at_the_session_timeout_turns_early_fencing_off() {
    let cfg = ControllerConfig { dead_node_grace: Duration::from_secs(6), ..config() };
    let mut c = Cluster::with_config(&[1, 2, 3], cfg);
    for s in 1..=6 {
        c.controller.found_gone([gone(&c, 2, 2, 100, s * 1_000)]);
        others_beat(&mut c, s * 1_000);
        assert!(fenced(&c.controller.tick(&c.image, c.at(s))).is_empty(), "at {s} s");
    }
    others_beat(&mut c, 6_100);
    assert_eq!(fenced(&c.controller.tick(&c.image, ms(&c, 6_100))), vec![2], "by its session timeout");
}

#[test]
fn quiet_nodes_are_the_ones_not_heard_from() {
    let mut c = Cluster::new(&[1, 2, 3]);
    others_beat(&mut c, 1_000);
    assert_eq!(c.controller.quiet(&c.image, ms(&c, 1_600), Duration::from_millis(1_500)), vec![2]);
    assert!(c.controller.quiet(&c.image, ms(&c, 1_400), Duration::from_millis(1_500)).is_empty());
}
