//! Eligible leader replicas (KIP-966), ElectLeaders and leader balancing,
//! one rule per test.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_broker::metadata::{
    ControllerReply, ControllerRequest, ElectionError, ElectionResult, ElectionType, MetadataRecord, PartitionInfo,
};
use uuid::Uuid;

use super::tests::{Cluster, config, create, node};
use super::{ControllerConfig, LeaderBalanceConfig};

/// Node `n` shuts down: fenced at once (its incarnation is `n`, as
/// `Cluster::new` registers it, or `incarnation`).
fn fence(c: &mut Cluster, n: i32) {
    let incarnation = c.image.nodes[&n].incarnation;
    let (records, _) = c.controller.handle(&c.image, n, &ControllerRequest::ShutdownNode { incarnation }).unwrap();
    c.commit(&records);
}

/// Node `n` starts again as `incarnation`, its data directory naming `previous`.
fn register(c: &mut Cluster, n: i32, incarnation: u128, previous: Option<u128>, at: u64) {
    let records = c.controller.register(&c.image, node(n, incarnation, None), previous.map(Uuid::from_u128), c.at(at));
    let records = records.unwrap();
    c.commit(&records);
}

fn part(c: &Cluster, topic: &str, index: i32) -> PartitionInfo {
    c.image.partition(topic, index).unwrap().clone()
}

/// (leader, ISR, ELR)
fn state(c: &Cluster, topic: &str, index: i32) -> (i32, Vec<i32>, Vec<i32>) {
    let p = part(c, topic, index);
    (p.leader, p.isr, p.elr)
}

fn alter(c: &mut Cluster, topic: &str, index: i32, isr: &[i32]) {
    let p = part(c, topic, index);
    let request = ControllerRequest::AlterPartition {
        topic_id: c.image.topic(topic).unwrap().id,
        partition: index,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
        isr: isr.to_vec(),
    };
    let (records, _) = c.controller.handle(&c.image, p.leader, &request).unwrap();
    c.commit(&records);
}

fn rf3(c: &mut Cluster, name: &str, configs: &[(&str, &str)]) {
    let request = ControllerRequest::CreateTopic {
        name: name.into(),
        partitions: None,
        replication_factor: None,
        assignment: Some(vec![vec![1, 2, 3]]),
        configs: configs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect(),
        validate_only: false,
    };
    c.request(request).unwrap();
}

#[test]
fn replicas_leaving_an_isr_below_min_isr_become_eligible_and_lead_when_it_is_gone() {
    let mut c = Cluster::new(&[1, 2, 3]);
    rf3(&mut c, "t", &[]);
    // Default min.insync.replicas on RF 3 is 2: losing 2 leaves {1,3}, enough.
    fence(&mut c, 2);
    assert_eq!(state(&c, "t", 0), (1, vec![1, 3], vec![]));
    // Losing 3 too: the ISR is below 2, so 3 (which has every acknowledged
    // record: the high watermark stops now) is eligible; 2 is not.
    fence(&mut c, 3);
    assert_eq!(state(&c, "t", 0), (1, vec![1], vec![3]));
    // The last ISR member goes: the ISR empties, and it is eligible too.
    fence(&mut c, 1);
    assert_eq!(state(&c, "t", 0), (-1, vec![], vec![1, 3]));
    // 2 comes back: it is in neither set, so it does not lead (no unclean election).
    register(&mut c, 2, 22, Some(2), 1);
    assert_eq!(state(&c, "t", 0), (-1, vec![], vec![1, 3]));
    // 3 restarts after kill -9 (same data directory): it leads alone.
    register(&mut c, 3, 33, Some(3), 2);
    let p = part(&c, "t", 0);
    assert_eq!((p.leader, p.isr.clone(), p.elr.clone()), (3, vec![3], vec![1]));
    assert_eq!(p.leader_epoch, 2, "1 -> none -> 3");
    // 2 catches up and joins: the ISR reaches 2, the high watermark may
    // move without 1, so the ELR empties.
    alter(&mut c, "t", 0, &[3, 2]);
    assert_eq!(state(&c, "t", 0), (3, vec![3, 2], vec![]));
}

#[test]
fn replicas_fenced_together_are_all_eligible() {
    let mut c = Cluster::new(&[1, 2, 3]);
    rf3(&mut c, "t", &[]);
    // 2 and 3 fall silent together: both left while the ISR went below 2.
    assert!(c.controller.heartbeat(&c.image, 1, Uuid::from_u128(1), c.at(5)));
    let records = c.controller.tick(&c.image, c.at(7));
    c.commit(&records);
    assert_eq!(state(&c, "t", 0), (1, vec![1], vec![2, 3]));
    // The leader goes too; the first live eligible replica in replica order leads.
    fence(&mut c, 1);
    register(&mut c, 3, 33, Some(3), 8);
    assert_eq!(state(&c, "t", 0), (3, vec![3], vec![1, 2]));
    register(&mut c, 2, 22, Some(2), 8);
    assert_eq!(state(&c, "t", 0), (3, vec![3], vec![1, 2]), "a leader exists: 2 waits to rejoin by replication");
}

#[test]
fn the_leaders_isr_shrink_below_min_isr_makes_the_leaver_eligible() {
    let mut c = Cluster::new(&[1, 2, 3]);
    rf3(&mut c, "t", &[]);
    alter(&mut c, "t", 0, &[1, 2]);
    assert_eq!(state(&c, "t", 0), (1, vec![1, 2], vec![]));
    alter(&mut c, "t", 0, &[1]);
    assert_eq!(state(&c, "t", 0), (1, vec![1], vec![2]));
    // 3 joins back: 2 stays out of the ISR and, the ISR being 2 again, out of the ELR.
    alter(&mut c, "t", 0, &[1, 3]);
    assert_eq!(state(&c, "t", 0), (1, vec![1, 3], vec![]));
}

#[test]
fn min_insync_replicas_from_any_layer_decides_the_elr() {
    // Topic override of 1: the leader alone moves the high watermark, so
    // only the last ISR member is eligible when it goes.
    let mut c = Cluster::new(&[1, 2, 3]);
    rf3(&mut c, "one", &[("min.insync.replicas", "1")]);
    rf3(&mut c, "three", &[("min.insync.replicas", "3")]);
    fence(&mut c, 3);
    assert_eq!(state(&c, "one", 0), (1, vec![1, 2], vec![]));
    assert_eq!(state(&c, "three", 0), (1, vec![1, 2], vec![3]), "below 3 at once");
    fence(&mut c, 2);
    assert_eq!(state(&c, "one", 0), (1, vec![1], vec![]));
    assert_eq!(state(&c, "three", 0), (1, vec![1], vec![2, 3]));
    fence(&mut c, 1);
    assert_eq!(state(&c, "one", 0), (-1, vec![], vec![1]));
    // The dynamic cluster default and the controller's config file count too.
    let mut c = Cluster::new(&[1, 2, 3]);
    let one = BTreeMap::from([("min.insync.replicas".to_string(), "1".to_string())]);
    c.request(ControllerRequest::SetBrokerDefaults { configs: one.clone() }).unwrap();
    rf3(&mut c, "t", &[]);
    fence(&mut c, 3);
    fence(&mut c, 2);
    assert_eq!(state(&c, "t", 0), (1, vec![1], vec![]));
    let mut c = Cluster::with_config(&[1, 2, 3], ControllerConfig { topic_defaults: one, ..config() });
    rf3(&mut c, "t", &[]);
    fence(&mut c, 3);
    fence(&mut c, 2);
    assert_eq!(state(&c, "t", 0), (1, vec![1], vec![]));
}

#[test]
fn a_node_back_with_an_unknown_history_is_no_longer_eligible() {
    let mut c = Cluster::new(&[1, 2, 3]);
    rf3(&mut c, "t", &[]);
    fence(&mut c, 2);
    fence(&mut c, 3);
    fence(&mut c, 1);
    assert_eq!(state(&c, "t", 0), (-1, vec![], vec![1, 3]));
    // 3 comes back with a new data directory (no previous incarnation):
    // its log may lack acknowledged records, so it must not lead.
    register(&mut c, 3, 33, None, 1);
    assert_eq!(state(&c, "t", 0), (-1, vec![], vec![1]));
    assert!(!c.image.nodes[&3].fenced);
    // 1 comes back with its own data: it leads.
    register(&mut c, 1, 11, Some(1), 2);
    assert_eq!(state(&c, "t", 0), (1, vec![1], vec![]));

    // A live node silent past the session timeout, replaced by a process
    // with another history: the old incarnation is fenced first (its
    // leaderships move), then the new one registers, eligible for nothing.
    let mut c = Cluster::new(&[1, 2, 3]);
    rf3(&mut c, "t", &[]);
    let records = c.controller.register(&c.image, node(1, 77, None), None, c.at(10)).unwrap();
    assert!(matches!(records.first(), Some(MetadataRecord::FenceNode { node_id: 1 })), "{records:?}");
    c.commit(&records);
    let p = part(&c, "t", 0);
    assert_eq!((p.leader, p.isr.clone(), p.elr.clone()), (2, vec![2, 3], vec![]));
    assert_eq!(c.image.nodes[&1].incarnation, Uuid::from_u128(77));
}

#[test]
fn elect_leaders_moves_to_preferred_replicas_and_never_elects_uncleanly() {
    use ElectionType::{Preferred, Unclean};
    let mut c = Cluster::new(&[1, 2, 3]);
    rf3(&mut c, "t", &[]);
    c.request(create("solo", Some(1), None, Some(vec![vec![2]]))).unwrap();
    let elect = |c: &mut Cluster, election, partitions: Option<Vec<(&str, i32)>>| {
        let partitions = partitions.map(|v| v.into_iter().map(|(t, p)| (t.to_string(), p)).collect());
        match c.request(ControllerRequest::ElectLeaders { election, partitions }).unwrap() {
            ControllerReply::Elections(r) => r,
            other => panic!("{other:?}"),
        }
    };
    let result = |topic: &str, partition, error| ElectionResult { topic: topic.into(), partition, error };
    assert_eq!(
        elect(&mut c, Preferred, Some(vec![("t", 0), ("t", 1), ("nope", 0)])),
        vec![
            result("t", 0, Some(ElectionError::ElectionNotNeeded)),
            result("t", 1, Some(ElectionError::UnknownTopicOrPartition)),
            result("nope", 0, Some(ElectionError::UnknownTopicOrPartition)),
        ]
    );
    // 1 fails over to 2, then comes back into the ISR.
    fence(&mut c, 1);
    assert_eq!(state(&c, "t", 0).0, 2);
    assert_eq!(
        elect(&mut c, Preferred, Some(vec![("t", 0)])),
        vec![result("t", 0, Some(ElectionError::PreferredLeaderNotAvailable))],
        "fenced and out of the ISR"
    );
    register(&mut c, 1, 11, Some(1), 1);
    assert_eq!(
        elect(&mut c, Preferred, Some(vec![("t", 0)])),
        vec![result("t", 0, Some(ElectionError::PreferredLeaderNotAvailable))],
        "not in the ISR yet"
    );
    alter(&mut c, "t", 0, &[2, 3, 1]);
    let epoch = part(&c, "t", 0).leader_epoch;
    // With no partitions named, only those that needed an election answer.
    assert_eq!(elect(&mut c, Preferred, None), vec![result("t", 0, None)]);
    let p = part(&c, "t", 0);
    assert_eq!((p.leader, p.leader_epoch), (1, epoch + 1));
    // UNCLEAN: not needed where a leader exists; where none does, only an
    // eligible replica may lead, else ELIGIBLE_LEADERS_NOT_AVAILABLE.
    assert_eq!(
        elect(&mut c, Unclean, Some(vec![("t", 0)])),
        vec![result("t", 0, Some(ElectionError::ElectionNotNeeded))]
    );
    fence(&mut c, 2);
    assert_eq!(state(&c, "solo", 0), (-1, vec![], vec![2]));
    assert_eq!(
        elect(&mut c, Unclean, Some(vec![("solo", 0)])),
        vec![result("solo", 0, Some(ElectionError::EligibleLeadersNotAvailable))]
    );
    assert_eq!(state(&c, "solo", 0), (-1, vec![], vec![2]), "nothing changed");
}

fn balancing(interval_secs: u64) -> ControllerConfig {
    ControllerConfig {
        leader_balance: LeaderBalanceConfig {
            enabled: true,
            check_interval: Duration::from_secs(interval_secs),
            max_imbalance_percent: 10,
        },
        ..config()
    }
}

/// Heartbeats from every unfenced node at `at`, then a tick; the records.
fn tick(c: &mut Cluster, at: u64) -> Vec<MetadataRecord> {
    for n in c.image.live_nodes().map(|n| (n.id, n.incarnation)).collect::<Vec<_>>() {
        assert!(c.controller.heartbeat(&c.image, n.0, n.1, c.at(at)));
    }
    let records = c.controller.tick(&c.image, c.at(at));
    c.commit(&records);
    records
}

#[test]
fn leadership_returns_to_preferred_replicas_every_check_interval() {
    let mut c = Cluster::with_config(&[1, 2, 3], balancing(60));
    c.request(create("t", Some(9), Some(3), None)).unwrap();
    let led_by = |c: &Cluster, n| c.image.topic("t").unwrap().partitions.iter().filter(|p| p.leader == n).count();
    assert_eq!(led_by(&c, 1), 3);
    fence(&mut c, 1);
    assert_eq!(led_by(&c, 1), 0);
    register(&mut c, 1, 11, Some(1), 1);
    // Back in every ISR (replication would do this), not leading yet.
    for i in 0..9 {
        let mut isr = part(&c, "t", i).isr;
        isr.push(1);
        alter(&mut c, "t", i, &isr);
    }
    assert!(tick(&mut c, 30).is_empty(), "before the check interval nothing moves");
    let moved = tick(&mut c, 60);
    assert_eq!(moved.len(), 3, "{moved:?}");
    assert_eq!(led_by(&c, 1), 3);
    assert!(c.image.topic("t").unwrap().partitions.iter().all(|p| p.leader == p.replicas[0]));
    assert!(tick(&mut c, 120).is_empty(), "balanced: nothing to do");
}

#[test]
fn balancing_leaves_a_small_imbalance_and_ineligible_preferred_replicas_alone() {
    // Node 1 prefers 28 partitions (20 of t, the 8 internal ones): one led
    // elsewhere is under 10%, three are over.
    let mut c = Cluster::with_config(&[1, 2], balancing(1));
    let assignment: Vec<Vec<i32>> = (0..20).map(|_| vec![1, 2]).collect();
    c.request(create("t", None, None, Some(assignment))).unwrap();
    alter(&mut c, "t", 0, &[1]);
    let id = c.image.topic("t").unwrap().id;
    let p = part(&c, "t", 0);
    c.commit(&[MetadataRecord::PartitionChange {
        topic_id: id,
        partition: 0,
        leader: 2,
        isr: vec![2, 1],
        replicas: None,
        elr: None,
    }]);
    assert_eq!(part(&c, "t", 0).leader_epoch, p.leader_epoch + 1);
    assert!(tick(&mut c, 2).is_empty(), "1 of 28 is within the allowed imbalance");
    // Three off: they go back, but only where 1 is in the ISR.
    for i in [1, 2] {
        c.commit(&[MetadataRecord::PartitionChange {
            topic_id: id,
            partition: i,
            leader: 2,
            isr: vec![2],
            replicas: None,
            elr: None,
        }]);
    }
    let moved = tick(&mut c, 4);
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!((state(&c, "t", 0).0, state(&c, "t", 1).0, state(&c, "t", 2).0), (1, 2, 2));
    // Turned off, it never moves anything.
    let mut off = Cluster::with_config(&[1, 2], config());
    off.request(create("t", None, None, Some(vec![vec![1, 2]]))).unwrap();
    fence(&mut off, 1);
    register(&mut off, 1, 11, Some(1), 1);
    alter(&mut off, "t", 0, &[2, 1]);
    assert!(tick(&mut off, 1000).is_empty());
}
