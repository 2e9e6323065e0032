//! Requests, registration, heartbeats and fencing, one rule per test.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_broker::metadata::{
    ControllerReply, ControllerRequest, MetadataError, MetadataImage, MetadataRecord, NodeInfo,
};
use uuid::Uuid;

use super::{CONSUMER_OFFSETS, ControllerConfig, LeaderBalanceConfig, QuorumController, TRANSACTION_STATE};

pub(super) fn config() -> ControllerConfig {
    ControllerConfig {
        session_timeout: Duration::from_secs(6),
        dead_node_grace: Duration::from_secs(1),
        default_partitions: 3,
        default_replication_factor: None,
        max_partitions_per_topic: 100,
        internal_topic_partitions: 4,
        producer_id_block: 1000,
        topic_defaults: BTreeMap::new(),
        // Off unless a test turns it on: balancing moves leaders on ticks.
        leader_balance: LeaderBalanceConfig { enabled: false, ..LeaderBalanceConfig::default() },
    }
}

pub(super) fn node(id: i32, incarnation: u128, rack: Option<&str>) -> NodeInfo {
    NodeInfo {
        id,
        incarnation: Uuid::from_u128(incarnation),
        listeners: BTreeMap::from([("kafka".to_string(), format!("127.0.0.1:{}", 9090 + id))]),
        rack: rack.map(str::to_string),
        voter: id <= 3,
        fenced: false,
    }
}

/// A cluster at log index `image.applied_index`, driven like the node does.
pub(super) struct Cluster {
    pub(super) image: MetadataImage,
    pub(super) controller: QuorumController,
    pub(super) t0: Instant,
}

impl Cluster {
    pub(super) fn new(nodes: &[i32]) -> Self {
        Self::with_config(nodes, config())
    }

    pub(super) fn with_config(nodes: &[i32], config: ControllerConfig) -> Self {
        let t0 = Instant::now();
        let mut c = Cluster {
            image: MetadataImage::default(),
            controller: QuorumController::new(config, &MetadataImage::default(), t0),
            t0,
        };
        let boot = c.controller.bootstrap("c1".into(), Vec::new());
        c.commit(&boot);
        for id in nodes {
            let records = c.controller.register(&c.image, node(*id, *id as u128, None), None, t0).unwrap();
            c.commit(&records);
        }
        c
    }

    pub(super) fn at(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }

    pub(super) fn commit(&mut self, records: &[MetadataRecord]) {
        let index = self.image.applied_index + 1;
        self.image.apply_batch(index, records).unwrap();
    }

    pub(super) fn request(&mut self, request: ControllerRequest) -> Result<ControllerReply, MetadataError> {
        let (records, reply) = self.controller.handle(&self.image, 1, &request)?;
        self.commit(&records);
        Ok(reply)
    }
}

pub(super) fn create(
    name: &str,
    partitions: Option<i32>,
    rf: Option<i16>,
    assignment: Option<Vec<Vec<i32>>>,
) -> ControllerRequest {
    ControllerRequest::CreateTopic {
        name: name.into(),
        partitions,
        replication_factor: rf,
        assignment,
        configs: BTreeMap::new(),
        validate_only: false,
    }
}

#[test]
fn bootstrap_keeps_the_cluster_id_and_imports_each_topic_once() {
    let c = QuorumController::new(config(), &MetadataImage::default(), Instant::now());
    let topic = |id: u128| MetadataRecord::CreateTopic {
        name: "t".into(),
        id: Uuid::from_u128(id),
        internal: false,
        configs: BTreeMap::new(),
        replicas: vec![vec![1]],
    };
    let records = c.bootstrap("old-id".into(), vec![topic(1), topic(2)]);
    assert_eq!(records, vec![MetadataRecord::InitCluster { cluster_id: "old-id".into() }, topic(1)]);
}

#[test]
fn internal_topics_come_with_the_first_registration() {
    let c = Cluster::new(&[1]);
    for name in [CONSUMER_OFFSETS, TRANSACTION_STATE] {
        let t = c.image.topic(name).unwrap();
        assert!(t.internal);
        assert_eq!(t.configs.get("cleanup.policy").map(String::as_str), Some("compact"));
        assert_eq!(t.partitions.len(), 4);
        assert!(t.partitions.iter().all(|p| p.replicas == vec![1] && p.leader == 1));
    }
    // With a configured replication factor of 2, they wait for the second node.
    let t0 = Instant::now();
    let mut image = MetadataImage::default();
    let mut ctl =
        QuorumController::new(ControllerConfig { default_replication_factor: Some(2), ..config() }, &image, t0);
    image.apply_batch(1, &ctl.register(&image, node(1, 1, None), None, t0).unwrap()).unwrap();
    assert!(image.topic(CONSUMER_OFFSETS).is_none());
    image.apply_batch(2, &ctl.register(&image, node(2, 2, None), None, t0).unwrap()).unwrap();
    let t = image.topic(CONSUMER_OFFSETS).unwrap();
    assert!(t.partitions.iter().all(|p| p.replicas.len() == 2));
    // Told of 3 voters, they wait for the third node and spread over all.
    let mut image = MetadataImage::default();
    let mut ctl = QuorumController::new(config(), &image, t0).with_voters(3);
    for id in 1..=3 {
        assert!(image.topic(TRANSACTION_STATE).is_none());
        let records = ctl.register(&image, node(id, id as u128, None), None, t0).unwrap();
        image.apply_batch(id as u64, &records).unwrap();
    }
    let t = image.topic(TRANSACTION_STATE).unwrap();
    assert!(t.partitions.iter().all(|p| p.replicas.len() == 3));
    let leaders: std::collections::BTreeSet<i32> = t.partitions.iter().map(|p| p.leader).collect();
    assert_eq!(leaders.len(), 3, "coordinators spread over the nodes");
}

#[test]
fn create_topic_places_replicas_and_validates() {
    let mut c = Cluster::new(&[1, 2, 3]);
    let ControllerReply::TopicCreated { id, replicas } = c.request(create("t", Some(12), None, None)).unwrap() else {
        panic!("not a topic reply");
    };
    assert_eq!(replicas.len(), 12);
    assert!(replicas.iter().all(|r| r.len() == 3), "default RF is min(3, live nodes)");
    let t = c.image.topic("t").unwrap();
    assert_eq!(t.id, id);
    for n in 1..=3 {
        assert_eq!(t.partitions.iter().filter(|p| p.leader == n).count(), 4);
    }
    // Defaults: num.partitions.
    c.request(create("d", None, Some(-1), None)).unwrap();
    assert_eq!(c.image.topic("d").unwrap().partitions.len(), 3);

    let err = |c: &mut Cluster, r| c.request(r).unwrap_err();
    assert!(matches!(err(&mut c, create("t", Some(1), None, None)), MetadataError::TopicExists(_)));
    for p in [0, -2, 101] {
        assert!(matches!(err(&mut c, create("x", Some(p), None, None)), MetadataError::InvalidPartitions(_)), "{p}");
    }
    for rf in [0, 4, -3] {
        let e = err(&mut c, create("x", Some(1), Some(rf), None));
        assert!(matches!(e, MetadataError::InvalidReplicationFactor(_)), "{rf}");
    }
    for a in [vec![vec![1, 9]], vec![vec![2, 2]], vec![vec![1, 2], vec![3]], vec![vec![]]] {
        let e = err(&mut c, create("x", None, None, Some(a.clone())));
        assert!(matches!(e, MetadataError::InvalidReplicaAssignment(_)), "{a:?}");
    }
    let e = err(&mut c, create("x", Some(2), None, Some(vec![vec![1]])));
    assert!(matches!(e, MetadataError::InvalidReplicaAssignment(_)));
    assert!(c.image.topic("x").is_none());

    c.request(create("x", None, None, Some(vec![vec![3, 1], vec![2, 3]]))).unwrap();
    let x = c.image.topic("x").unwrap();
    assert_eq!((x.partitions[0].leader, x.partitions[1].replicas.clone()), (3, vec![2, 3]));
}

#[test]
fn validate_only_changes_nothing_but_answers() {
    let mut c = Cluster::new(&[1, 2]);
    let request = ControllerRequest::CreateTopic {
        name: "v".into(),
        partitions: Some(2),
        replication_factor: Some(2),
        assignment: None,
        configs: BTreeMap::new(),
        validate_only: true,
    };
    let (records, reply) = c.controller.handle(&c.image, 1, &request).unwrap();
    assert!(records.is_empty());
    assert!(matches!(reply, ControllerReply::TopicCreated { replicas, .. } if replicas.len() == 2));
    let grow = ControllerRequest::CreatePartitions {
        name: CONSUMER_OFFSETS.into(),
        total: 9,
        assignment: None,
        validate_only: true,
    };
    assert!(matches!(c.controller.handle(&c.image, 1, &grow), Err(MetadataError::InvalidTopic(_))));
}

#[test]
fn an_assignment_naming_a_fenced_node_first_starts_with_a_live_leader() {
    let mut c = Cluster::new(&[1, 2, 3]);
    let records = c.controller.tick(&c.image, c.at(7));
    c.commit(&records);
    assert!(c.image.nodes.values().all(|n| n.fenced));
    // Bring 2 back only.
    let records = c.controller.register(&c.image, node(2, 22, None), None, c.at(8)).unwrap();
    c.commit(&records);
    c.request(create("a", None, None, Some(vec![vec![1, 2]]))).unwrap();
    let p = c.image.partition("a", 0).unwrap();
    assert_eq!((p.leader, p.isr.clone(), p.replicas.clone()), (2, vec![2], vec![1, 2]));
    let e = c.request(create("b", None, None, Some(vec![vec![1, 3]]))).unwrap_err();
    assert!(matches!(e, MetadataError::InvalidReplicaAssignment(_)));
}

#[test]
fn delete_configs_and_producer_ids() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.request(create("t", Some(2), Some(2), None)).unwrap();
    let configs = BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]);
    c.request(ControllerRequest::SetTopicConfigs { name: "t".into(), configs: configs.clone() }).unwrap();
    assert_eq!(c.image.topic("t").unwrap().configs, configs);
    c.request(ControllerRequest::SetBrokerDefaults { configs: configs.clone() }).unwrap();
    assert_eq!(c.image.broker_defaults, configs);
    let unknown = c.request(ControllerRequest::SetTopicConfigs { name: "nope".into(), configs });
    assert!(matches!(unknown, Err(MetadataError::UnknownTopic(_))));

    let e = c.request(ControllerRequest::DeleteTopic { name: CONSUMER_OFFSETS.into() }).unwrap_err();
    assert!(matches!(e, MetadataError::InvalidTopic(_)));
    assert!(matches!(
        c.request(ControllerRequest::DeleteTopic { name: "nope".into() }),
        Err(MetadataError::UnknownTopic(_))
    ));
    let old = c.image.topic("t").unwrap().id;
    c.request(ControllerRequest::DeleteTopic { name: "t".into() }).unwrap();
    assert!(c.image.topic("t").is_none());
    // A re-created topic gets a new id.
    c.request(create("t", Some(1), None, None)).unwrap();
    assert_ne!(c.image.topic("t").unwrap().id, old);

    let a = c.request(ControllerRequest::AllocateProducerIds).unwrap();
    let b = c.request(ControllerRequest::AllocateProducerIds).unwrap();
    assert_eq!(a, ControllerReply::ProducerIds { first: 0, count: 1000 });
    assert_eq!(b, ControllerReply::ProducerIds { first: 1000, count: 1000 });
    assert_eq!(c.image.next_producer_id, 2000);
    let stranger = c.controller.handle(&c.image, 42, &ControllerRequest::AllocateProducerIds);
    assert!(matches!(stranger, Err(MetadataError::UnknownNode(42))));
}

#[test]
fn create_partitions_only_grows_and_continues_the_pattern() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.request(create("t", Some(3), Some(2), None)).unwrap();
    let grow = |total, assignment| ControllerRequest::CreatePartitions {
        name: "t".into(),
        total,
        assignment,
        validate_only: false,
    };
    for total in [3, 2, 101] {
        assert!(matches!(c.request(grow(total, None)), Err(MetadataError::InvalidPartitions(_))), "{total}");
    }
    assert!(matches!(c.request(grow(4, Some(vec![vec![1]]))), Err(MetadataError::InvalidReplicaAssignment(_))));
    assert!(matches!(c.request(grow(5, Some(vec![vec![1, 2]]))), Err(MetadataError::InvalidReplicaAssignment(_))));
    let missing =
        ControllerRequest::CreatePartitions { name: "u".into(), total: 4, assignment: None, validate_only: false };
    assert!(matches!(c.request(missing), Err(MetadataError::UnknownTopic(_))));
    c.request(grow(12, None)).unwrap();
    let t = c.image.topic("t").unwrap();
    assert_eq!(t.partitions.len(), 12);
    for n in 1..=3 {
        assert_eq!(t.partitions.iter().filter(|p| p.leader == n).count(), 4, "continued pattern keeps leaders even");
    }
    assert!(t.partitions.iter().all(|p| p.replicas.len() == 2 && p.replicas[0] != p.replicas[1]));
    c.request(grow(13, Some(vec![vec![3, 1]]))).unwrap();
    assert_eq!(c.image.partition("t", 12).unwrap().replicas, vec![3, 1]);
}

#[test]
fn heartbeats_answer_for_the_current_incarnation_only() {
    let mut c = Cluster::new(&[1, 2]);
    let t = c.at(1);
    assert!(c.controller.heartbeat(&c.image, 1, Uuid::from_u128(1), t));
    assert!(!c.controller.heartbeat(&c.image, 1, Uuid::from_u128(99), t), "stale incarnation");
    assert!(!c.controller.heartbeat(&c.image, 7, Uuid::from_u128(7), t), "unknown node");
    // Node 2 goes silent and is fenced; its heartbeat is then refused.
    for s in [3, 6] {
        assert!(c.controller.heartbeat(&c.image, 1, Uuid::from_u128(1), c.at(s)));
        assert!(c.controller.tick(&c.image, c.at(s)).is_empty());
    }
    let records = c.controller.tick(&c.image, c.at(7));
    assert_eq!(records.first(), Some(&MetadataRecord::FenceNode { node_id: 2 }));
    c.commit(&records);
    assert!(!c.controller.heartbeat(&c.image, 2, Uuid::from_u128(2), c.at(7)));
    assert!(c.image.nodes[&2].fenced && !c.image.nodes[&1].fenced);
}

/// A controller leader that could hear no one for longer than a session
/// (its process paused, its quorum out of reach: chaos seed 9, where such
/// a leader fenced nodes 1, 2 and 3 at once on its first tick, Found 14)
/// starts every session again instead of fencing everyone; a node that
/// then stays silent for a whole session is fenced as before.
#[test]
fn a_controller_that_heard_no_one_starts_every_session_again() {
    let mut c = Cluster::new(&[1, 2, 3]);
    for n in 1..=3 {
        assert!(c.controller.heartbeat(&c.image, n, Uuid::from_u128(n as u128), c.at(1)));
    }
    // Deaf from 1 s to 9 s (the session is 6 s): without the restart this
    // tick fences all three.
    let mut deaf = Cluster::new(&[1, 2, 3]);
    for n in 1..=3 {
        assert!(deaf.controller.heartbeat(&deaf.image, n, Uuid::from_u128(n as u128), deaf.at(1)));
    }
    assert_eq!(deaf.controller.tick(&deaf.image, deaf.at(9)).iter().filter(|r| fence(r)).count(), 3);

    assert_eq!(c.controller.hearing(c.at(9)), Some(Duration::from_secs(9)));
    assert!(c.controller.tick(&c.image, c.at(9)).is_empty(), "no one fenced for the controller's own silence");
    // Nodes 1 and 2 heartbeat again, node 3 stays silent a whole session.
    for s in [11, 14] {
        for n in 1..=2 {
            assert!(c.controller.heartbeat(&c.image, n, Uuid::from_u128(n as u128), c.at(s)));
        }
        assert!(c.controller.tick(&c.image, c.at(s)).is_empty());
    }
    let records = c.controller.tick(&c.image, c.at(16));
    assert_eq!(records.iter().filter(|r| fence(r)).collect::<Vec<_>>(), [&MetadataRecord::FenceNode { node_id: 3 }]);
}

#[test]
fn a_heartbeat_after_a_deaf_stretch_starts_every_session_again_before_it_counts() {
    // The leader heard no one from 0 s to 9 s (paused, its quorum out of
    // reach). The first thing it hears is node 2's heartbeat: sessions
    // restart before it is counted, so nodes 1 and 3, whose heartbeats
    // are still on their way, are not fenced by the next tick.
    let mut c = Cluster::new(&[1, 2, 3]);
    assert_eq!(c.controller.hearing(c.at(9)), Some(Duration::from_secs(9)));
    assert!(c.controller.heartbeat(&c.image, 2, Uuid::from_u128(2), c.at(9)));
    assert!(c.controller.tick(&c.image, c.at(9)).is_empty());
    // Hearing again within half a session restarts nothing.
    assert_eq!(c.controller.hearing(c.at(11)), None);
    assert_eq!(c.controller.tick(&c.image, c.at(16)).iter().filter(|r| fence(r)).count(), 3);
}

#[test]
fn heartbeats_heard_without_confirmed_leadership_keep_nodes_in_and_the_silent_one_out() {
    // The leader confirms its leadership only at 1 s (its quorum round
    // trips then fail or queue), yet heartbeats reach it every second:
    // they count (liveness is the leader's own soft state), no session
    // restarts, and only the node that falls silent is fenced.
    let mut c = Cluster::new(&[1, 2, 3]);
    assert_eq!(c.controller.hearing(c.at(1)), None);
    for s in 2..=13 {
        for n in 1..=3 {
            if n == 3 && s > 7 {
                continue;
            }
            if n != 1 {
                assert_eq!(c.controller.hearing(c.at(s)), None);
            }
            assert!(c.controller.heartbeat(&c.image, n, Uuid::from_u128(n as u128), c.at(s)));
        }
        assert!(c.controller.tick(&c.image, c.at(s)).is_empty(), "no one fenced at {s} s");
    }
    let records = c.controller.tick(&c.image, c.at(13) + Duration::from_millis(500));
    assert_eq!(records.iter().filter(|r| fence(r)).collect::<Vec<_>>(), [&MetadataRecord::FenceNode { node_id: 3 }]);
}

fn fence(r: &MetadataRecord) -> bool {
    matches!(r, MetadataRecord::FenceNode { .. })
}

#[test]
fn a_live_id_cannot_be_registered_twice() {
    let mut c = Cluster::new(&[1, 2]);
    let imposter = node(2, 77, None);
    assert_eq!(
        c.controller.register(&c.image, imposter.clone(), None, c.at(3)),
        Err(MetadataError::DuplicateNodeId(2))
    );
    // The same incarnation may register again (a retry).
    assert!(c.controller.register(&c.image, node(2, 2, None), None, c.at(3)).is_ok());
    // Once the holder has been silent past the timeout, the id is free.
    assert!(c.controller.register(&c.image, imposter, None, c.at(10)).is_ok());
}

#[test]
fn a_restart_naming_the_live_incarnation_replaces_it_at_once() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.request(create("kept", Some(6), Some(1), None)).unwrap();
    let before = c.image.topic("kept").unwrap().clone();
    // Node 2 was killed and restarts long before its session expires.
    let restarted = node(2, 202, None);
    let records = c.controller.register(&c.image, restarted, Some(Uuid::from_u128(2)), c.at(1)).unwrap();
    c.commit(&records);
    let n2 = &c.image.nodes[&2];
    assert_eq!((n2.incarnation, n2.fenced), (Uuid::from_u128(202), false));
    assert_eq!(c.image.topic("kept").unwrap().partitions, before.partitions, "no leader moved");
    assert!(c.controller.heartbeat(&c.image, 2, Uuid::from_u128(202), c.at(2)));
    assert!(!c.controller.heartbeat(&c.image, 2, Uuid::from_u128(2), c.at(2)), "the old life is gone");
    // The new incarnation is live now: a process naming one that is not
    // registered (another data directory, or an older life) is refused.
    for previous in [None, Some(Uuid::from_u128(2)), Some(Uuid::from_u128(5))] {
        let impostor = node(2, 303, None);
        assert_eq!(
            c.controller.register(&c.image, impostor, previous, c.at(3)),
            Err(MetadataError::DuplicateNodeId(2)),
            "previous {previous:?}"
        );
    }
}

#[test]
fn a_controlled_shutdown_fences_the_node_at_once() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.request(create("moving", Some(6), Some(3), None)).unwrap();
    c.request(create("single", Some(3), Some(1), None)).unwrap();
    let before = c.image.clone();
    let shutdown = |incarnation: u128| ControllerRequest::ShutdownNode { incarnation: Uuid::from_u128(incarnation) };
    // A request from an earlier life of node 2 changes nothing.
    let (records, reply) = c.controller.handle(&c.image, 2, &shutdown(99)).unwrap();
    assert_eq!((records, reply), (Vec::new(), ControllerReply::Done));
    // Node 2 shuts down at t=1, long before its session could expire.
    let (records, _) = c.controller.handle(&c.image, 2, &shutdown(2)).unwrap();
    assert_eq!(records.first(), Some(&MetadataRecord::FenceNode { node_id: 2 }));
    c.commit(&records);
    assert!(c.image.nodes[&2].fenced);
    assert_eq!(c.image.live_nodes().map(|n| n.id).collect::<Vec<_>>(), vec![1, 3]);
    for (i, p) in c.image.topic("moving").unwrap().partitions.iter().enumerate() {
        let old = &before.topic("moving").unwrap().partitions[i];
        assert!(p.leader != 2 && p.leader != -1 && !p.isr.contains(&2), "{p:?}");
        assert_eq!(p.leader == old.leader, old.leader != 2);
    }
    for p in &c.image.topic("single").unwrap().partitions {
        assert_eq!(p.leader == -1, p.replicas == vec![2], "{p:?}");
    }
    assert!(!c.controller.heartbeat(&c.image, 2, Uuid::from_u128(2), c.at(1)));
    // Asking again is harmless; a node the cluster does not know is refused.
    assert!(c.controller.handle(&c.image, 2, &shutdown(2)).unwrap().0.is_empty());
    assert_eq!(c.controller.handle(&c.image, 9, &shutdown(9)), Err(MetadataError::UnknownNode(9)));
    // Nobody else is fenced when the tick comes.
    assert!(c.controller.tick(&c.image, c.at(2)).is_empty());
}

#[test]
fn fencing_moves_leaders_and_a_returning_node_takes_its_leaderless_partitions() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.request(create("r3", Some(6), Some(3), None)).unwrap();
    c.request(create("r1", Some(6), Some(1), None)).unwrap();
    let before = c.image.clone();
    // Nodes 1 and 3 keep heartbeating; 2 goes silent.
    for n in [1, 3] {
        assert!(c.controller.heartbeat(&c.image, n, Uuid::from_u128(n as u128), c.at(5)));
    }
    let records = c.controller.tick(&c.image, c.at(7));
    c.commit(&records);
    assert!(c.image.nodes[&2].fenced);
    for (i, p) in c.image.topic("r3").unwrap().partitions.iter().enumerate() {
        let old = &before.topic("r3").unwrap().partitions[i];
        assert_ne!(p.leader, 2);
        assert!(!p.isr.contains(&2), "a fenced follower leaves the ISR");
        assert_eq!(p.leader_epoch, old.leader_epoch + i32::from(old.leader == 2));
        if old.leader == 2 {
            // The first in-sync live replica in replica order.
            assert_eq!(p.leader, *old.replicas.iter().find(|n| **n != 2).unwrap());
        }
    }
    let r1 = c.image.topic("r1").unwrap();
    let orphaned: Vec<_> = r1.partitions.iter().filter(|p| p.replicas == vec![2]).collect();
    assert_eq!(orphaned.len(), 2);
    assert!(
        orphaned.iter().all(|p| p.leader == -1 && p.isr.is_empty() && p.elr == vec![2]),
        "the last ISR member becomes an eligible leader replica: {orphaned:?}"
    );
    // With 2 of 3 still in sync, nobody joined an ELR.
    assert!(c.image.topic("r3").unwrap().partitions.iter().all(|p| p.elr.is_empty() && p.isr.len() == 2));

    // Node 2 restarts (new incarnation, same data): it leads its leaderless partitions again.
    let records = c.controller.register(&c.image, node(2, 222, None), Some(Uuid::from_u128(2)), c.at(8)).unwrap();
    c.commit(&records);
    let r1 = c.image.topic("r1").unwrap();
    assert!(
        r1.partitions
            .iter()
            .filter(|p| p.replicas == vec![2])
            .all(|p| p.leader == 2 && p.leader_epoch == 2 && p.isr == vec![2] && p.elr.is_empty())
    );
    assert!(c.controller.heartbeat(&c.image, 2, Uuid::from_u128(222), c.at(9)));
    assert!(c.image.topic("r3").unwrap().partitions.iter().all(|p| !p.isr.contains(&2)));
}

#[test]
fn a_new_leader_gives_every_node_a_full_session_timeout() {
    let mut c = Cluster::new(&[1, 2]);
    // Elected at t=20 after nobody was heard from for a long time.
    c.controller = QuorumController::new(config(), &c.image, c.at(20));
    assert!(c.controller.tick(&c.image, c.at(26)).is_empty());
    let records = c.controller.tick(&c.image, c.at(27));
    assert_eq!(records.iter().filter(|r| matches!(r, MetadataRecord::FenceNode { .. })).count(), 2, "{records:?}");
}

#[test]
fn the_default_replication_factor_follows_the_live_nodes() {
    let rf = |c: &mut Cluster, name: &str| {
        let Ok(ControllerReply::TopicCreated { replicas, .. }) = c.request(create(name, Some(1), None, None)) else {
            panic!("{name} not created");
        };
        replicas[0].len()
    };
    let mut c = Cluster::new(&[1, 2]);
    assert_eq!(rf(&mut c, "two"), 2, "fewer than 3 nodes: all of them");
    let mut c = Cluster::new(&[1, 2, 3, 4]);
    assert_eq!(rf(&mut c, "four"), 3, "3 or more nodes: 3");
    // Fenced nodes do not count.
    let records = c.controller.tick(&c.image, c.at(7));
    c.commit(&records);
    let records = c.controller.register(&c.image, node(1, 11, None), Some(Uuid::from_u128(1)), c.at(8)).unwrap();
    c.commit(&records);
    let records = c.controller.register(&c.image, node(2, 22, None), Some(Uuid::from_u128(2)), c.at(8)).unwrap();
    c.commit(&records);
    assert_eq!(rf(&mut c, "two-live"), 2);
    // default.replication.factor wins, within the live nodes.
    let mut c = Cluster::with_config(&[1, 2, 3], ControllerConfig { default_replication_factor: Some(1), ..config() });
    assert_eq!(rf(&mut c, "one"), 1);
    let mut c = Cluster::with_config(&[1, 2], ControllerConfig { default_replication_factor: Some(3), ..config() });
    assert!(matches!(c.request(create("x", Some(1), None, None)), Err(MetadataError::InvalidReplicationFactor(_))));
}

impl Cluster {
    /// The leader of `topic`-`partition` adds every replica to the ISR, as
    /// it does once they have caught up (AlterPartition).
    fn all_in_sync(&mut self, topic: &str, partition: i32) {
        let t = self.image.topic(topic).unwrap();
        let p = t.partitions[usize::try_from(partition).unwrap()].clone();
        let request = ControllerRequest::AlterPartition {
            topic_id: t.id,
            partition,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            isr: p.replicas.clone(),
        };
        let (records, _) = self.controller.handle(&self.image, p.leader, &request).unwrap();
        self.commit(&records);
    }

    fn reassign(&mut self, topic: &str, partition: i32, replicas: Option<Vec<i32>>) -> Result<(), MetadataError> {
        self.request(ControllerRequest::AlterReassignment { topic: topic.into(), partition, replicas }).map(|_| ())
    }
}

#[test]
fn a_reassignment_completes_once_the_new_replicas_are_in_sync() {
    let mut c = Cluster::new(&[1, 2, 3, 4]);
    c.request(create("t", None, None, Some(vec![vec![1, 2, 3], vec![1, 2, 3]]))).unwrap();
    c.reassign("t", 0, Some(vec![2, 3, 4])).unwrap();
    let p = c.image.partition("t", 0).unwrap().clone();
    assert_eq!((p.replicas, p.adding_replicas, p.removing_replicas), (vec![2, 3, 4, 1], vec![4], vec![1]));
    assert_eq!((p.leader, p.leader_epoch), (1, 0));
    // Time passes; nothing completes until node 4 is in sync.
    assert!(c.controller.tick(&c.image, c.at(1)).is_empty());
    c.all_in_sync("t", 0);
    let p = c.image.partition("t", 0).unwrap().clone();
    assert_eq!((p.replicas.clone(), p.isr.clone(), p.leader, p.leader_epoch), (vec![2, 3, 4], vec![2, 3, 4], 2, 1));
    assert!(!p.reassigning());
    // Cancelling: back to the original replicas; nothing to cancel then.
    c.reassign("t", 1, Some(vec![4, 2, 3])).unwrap();
    assert_eq!(c.image.partition("t", 1).unwrap().leader, 1, "the old leader leads until the move completes");
    c.reassign("t", 1, None).unwrap();
    let p = c.image.partition("t", 1).unwrap();
    // As Kafka's revert: the replicas minus the adding ones, in their order.
    assert_eq!((p.replicas.clone(), p.isr.clone(), p.leader), (vec![2, 3, 1], vec![1, 2, 3], 1));
    assert!(!p.reassigning());
    assert!(matches!(c.reassign("t", 1, None), Err(MetadataError::NoReassignmentInProgress(_))));
    // Bad targets change nothing.
    let before = c.image.topics.clone();
    for bad in [vec![1, 2, 9], vec![1, 1, 2], vec![]] {
        assert!(matches!(c.reassign("t", 1, Some(bad)), Err(MetadataError::InvalidReplicaAssignment(_))));
    }
    assert!(matches!(c.reassign("t", 5, Some(vec![1])), Err(MetadataError::UnknownPartition(..))));
    assert!(matches!(c.reassign("nope", 0, Some(vec![1])), Err(MetadataError::UnknownTopic(_))));
    assert_eq!(c.image.topics, before);
}

#[test]
fn decommission_moves_every_replica_off_and_the_node_can_then_be_removed() {
    let mut c = Cluster::new(&[1, 2, 3, 4]);
    c.request(create("t", Some(8), Some(3), None)).unwrap();
    let on_4 = |c: &Cluster| c.image.partitions_on(4).count();
    assert!(on_4(&c) > 0);
    c.request(ControllerRequest::DecommissionNode { node_id: 4 }).unwrap();
    assert!(c.image.decommissioning.contains(&4));
    for (t, i, p) in c.image.partitions_on(4) {
        assert!(t.internal || p.removing_replicas == vec![4], "{}-{i}: {p:?}", t.name);
        assert_eq!(p.adding_replicas.len(), usize::from(!t.internal), "{}-{i}: {p:?}", t.name);
    }
    // New topics keep off it; so do explicit targets.
    c.request(create("new", Some(6), Some(3), None)).unwrap();
    assert!(c.image.topic("new").unwrap().partitions.iter().all(|p| !p.replicas.contains(&4)));
    assert!(c.reassign("new", 0, Some(vec![1, 2, 4])).is_err());
    // The new replicas catch up; the moves complete and node 4 holds nothing.
    for i in 0..8 {
        if c.image.partition("t", i).unwrap().reassigning() {
            c.all_in_sync("t", i);
        }
    }
    assert_eq!(on_4(&c), 0);
    assert!(c.image.topic("t").unwrap().partitions.iter().all(|p| p.replicas.len() == 3 && p.leader != 4));
    // Removing it: refused while it runs, done once it is fenced.
    let unregister = ControllerRequest::UnregisterNode { node_id: 4 };
    assert!(matches!(c.request(unregister.clone()), Err(MetadataError::NodeInUse(_))));
    for n in 1..=3 {
        assert!(c.controller.heartbeat(&c.image, n, Uuid::from_u128(n as u128), c.at(5)));
    }
    let records = c.controller.tick(&c.image, c.at(7));
    c.commit(&records);
    c.request(unregister.clone()).unwrap();
    assert!(!c.image.nodes.contains_key(&4) && !c.image.decommissioning.contains(&4));
    assert!(matches!(c.request(unregister), Err(MetadataError::UnknownNode(4))));
}

#[test]
fn a_fenced_node_holding_replicas_cannot_be_removed_and_moves_wait_for_a_free_node() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.request(create("t", Some(3), Some(3), None)).unwrap();
    c.request(ControllerRequest::DecommissionNode { node_id: 3 }).unwrap();
    // Every live node holds every partition: nowhere to move to yet.
    assert!(c.image.topic("t").unwrap().partitions.iter().all(|p| !p.reassigning()));
    for n in [1, 2] {
        assert!(c.controller.heartbeat(&c.image, n, Uuid::from_u128(n as u128), c.at(5)));
    }
    let records = c.controller.tick(&c.image, c.at(7));
    c.commit(&records);
    assert!(c.image.nodes[&3].fenced);
    let e = c.request(ControllerRequest::UnregisterNode { node_id: 3 }).unwrap_err();
    assert!(matches!(e, MetadataError::NodeInUse(_)), "{e}");
    // A fifth node joins: the next tick starts the moves onto it.
    let records = c.controller.register(&c.image, node(5, 5, None), None, c.at(8)).unwrap();
    c.commit(&records);
    let records = c.controller.tick(&c.image, c.at(8));
    c.commit(&records);
    assert!(c.image.topic("t").unwrap().partitions.iter().all(|p| p.adding_replicas == vec![5]));
}

#[test]
fn a_leaving_node_is_replaced_from_its_own_rack_first() {
    let t0 = Instant::now();
    let mut image = MetadataImage::default();
    let mut ctl = QuorumController::new(config(), &image, t0);
    for (id, rack) in [(1, "a"), (2, "b"), (3, "c"), (4, "a"), (5, "b")] {
        let records = ctl.register(&image, node(id, id as u128, Some(rack)), None, t0).unwrap();
        image.apply_batch(image.applied_index + 1, &records).unwrap();
    }
    let mut run = |image: &mut MetadataImage, request: ControllerRequest| {
        let (records, _) = ctl.handle(image, 1, &request).unwrap();
        image.apply_batch(image.applied_index + 1, &records).unwrap();
    };
    let create = create("t", None, None, Some(vec![vec![1, 2, 3]]));
    run(&mut image, create);
    run(&mut image, ControllerRequest::DecommissionNode { node_id: 1 });
    assert_eq!(image.partition("t", 0).unwrap().adding_replicas, vec![4], "node 4 shares node 1's rack");
}

#[test]
fn a_decommission_can_be_called_off() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.request(ControllerRequest::DecommissionNode { node_id: 3 }).unwrap();
    assert!(matches!(c.request(create("t", Some(1), Some(3), None)), Err(MetadataError::InvalidReplicationFactor(_))));
    c.request(ControllerRequest::RecommissionNode { node_id: 3 }).unwrap();
    assert!(c.image.decommissioning.is_empty());
    c.request(create("t", Some(1), Some(3), None)).unwrap();
    // Again, or for a node not leaving: nothing to do; unknown: refused.
    let (records, _) = c.controller.handle(&c.image, 1, &ControllerRequest::RecommissionNode { node_id: 3 }).unwrap();
    assert!(records.is_empty());
    assert!(matches!(
        c.request(ControllerRequest::RecommissionNode { node_id: 9 }),
        Err(MetadataError::UnknownNode(9))
    ));
}

#[test]
fn a_reassignment_that_lowers_min_insync_clears_the_eligible_replicas_it_leaves_stale() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.request(create("t", None, None, Some(vec![vec![1, 2, 3], vec![1, 2, 3]]))).unwrap();
    // Partition 1's ISR shrinks below the default min ISR (2 with 3 replicas).
    let t = c.image.topic("t").unwrap().clone();
    let p = &t.partitions[1];
    let shrink = ControllerRequest::AlterPartition {
        topic_id: t.id,
        partition: 1,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
        isr: vec![1],
    };
    let (records, _) = c.controller.handle(&c.image, 1, &shrink).unwrap();
    c.commit(&records);
    assert_eq!(c.image.partition("t", 1).unwrap().elr, vec![2, 3]);
    // A reorder of partition 0 keeps the replication factor: nothing else changes.
    c.request(ControllerRequest::AlterReassignment { topic: "t".into(), partition: 0, replicas: Some(vec![2, 1, 3]) })
        .unwrap();
    assert_eq!(c.image.partition("t", 1).unwrap().elr, vec![2, 3]);
    // Partition 0 down to 2 replicas: the default min ISR becomes 1, which
    // partition 1's ISR meets, so its leader moves the high watermark alone
    // and the ELR (which would miss those records) goes in the same entry.
    let (records, _) = c
        .controller
        .handle(
            &c.image,
            1,
            &ControllerRequest::AlterReassignment { topic: "t".into(), partition: 0, replicas: Some(vec![2, 1]) },
        )
        .unwrap();
    assert!(records.iter().any(|r| matches!(r, MetadataRecord::PartitionReassignment { .. })), "{records:?}");
    c.commit(&records);
    let p = c.image.partition("t", 1).unwrap();
    assert_eq!((p.isr.clone(), p.elr.clone(), p.leader), (vec![1], Vec::new(), 1));
}

#[test]
fn users_and_acls_are_controller_requests() {
    use ferry_broker::security::*;
    let mut c = Cluster::new(&[1]);
    let cred = ScramCredential::new(ScramMechanism::Sha512, "pw", 4096);
    let upsert = |user: &str, credential: ScramCredential| ControllerRequest::UpsertScramCredential {
        user: user.into(),
        credential,
    };
    c.request(upsert("alice", cred.clone())).unwrap();
    assert_eq!(c.image.users["alice"][&ScramMechanism::Sha512], cred);
    // Refused: an empty name, too few iterations, keys of the wrong length.
    assert!(matches!(c.request(upsert("", cred.clone())), Err(MetadataError::InvalidRequest(_))));
    let weak = ScramCredential::new(ScramMechanism::Sha512, "pw", 1000);
    assert!(matches!(c.request(upsert("bob", weak)), Err(MetadataError::InvalidRequest(_))));
    let mut cut = cred.clone();
    cut.stored_key.truncate(8);
    assert!(matches!(c.request(upsert("bob", cut)), Err(MetadataError::InvalidRequest(_))));
    let delete = |m| ControllerRequest::DeleteScramCredential { user: "alice".into(), mechanism: m };
    assert!(matches!(c.request(delete(ScramMechanism::Sha256)), Err(MetadataError::ResourceNotFound(_))));
    c.request(delete(ScramMechanism::Sha512)).unwrap();
    assert!(c.image.users.is_empty());

    let binding = AclBinding {
        pattern: ResourcePattern {
            resource_type: ResourceType::Topic,
            name: "t".into(),
            pattern_type: PatternType::Prefixed,
        },
        entry: AclEntry {
            principal: Principal::user("alice"),
            host: "*".into(),
            operation: Operation::Read,
            permission: Permission::Allow,
        },
    };
    // Creating twice adds one binding; deleting an absent one is no error.
    for _ in 0..2 {
        c.request(ControllerRequest::CreateAcls { bindings: vec![binding.clone()] }).unwrap();
    }
    assert_eq!(c.image.acls.len(), 1);
    c.request(ControllerRequest::DeleteAcls { bindings: vec![binding.clone()] }).unwrap();
    c.request(ControllerRequest::DeleteAcls { bindings: vec![binding] }).unwrap();
    assert!(c.image.acls.is_empty());
}

#[test]
fn amqp_definitions_place_a_quorum_queue_as_a_replicated_topic() {
    use ferry_broker::messaging::{Destination, ExchangeKind, HeaderValue};
    use ferry_broker::metadata::{AmqpRequest, Arguments, BindingDef, ExchangeDef, QueueKind, QueueType};
    let mut c = Cluster::new(&[1, 2, 3]);
    let declare = |name: &str, queue_type| {
        ControllerRequest::Amqp(AmqpRequest::DeclareQueue {
            vhost: "/".into(),
            name: name.into(),
            auto_delete: false,
            arguments: Arguments::default(),
            queue_type,
        })
    };
    // Nothing is declared in a vhost that does not exist.
    assert!(matches!(c.request(declare("orders", QueueType::Classic)), Err(MetadataError::ResourceNotFound(_))));
    c.request(ControllerRequest::Amqp(AmqpRequest::CreateVhost { name: "/".into() })).unwrap();
    // Default group size: three replicas on three live nodes, one partition, led and in sync.
    c.request(declare("orders", QueueType::Quorum { group_size: None })).unwrap();
    let QueueKind::Quorum { topic_id } = c.image.amqp["/"].queues["orders"].kind else { panic!("not quorum") };
    let t = c.image.topic_by_id(topic_id).unwrap().clone();
    assert!(t.internal && t.partitions.len() == 1, "{t:?}");
    let p = &t.partitions[0];
    assert_eq!((p.replicas.len(), p.isr.len()), (3, 3));
    assert!(p.replicas.contains(&p.leader));
    // A group size above the cluster's is capped at it (RabbitMQ's rule); 1 is one replica.
    c.request(declare("big", QueueType::Quorum { group_size: Some(7) })).unwrap();
    c.request(declare("one", QueueType::Quorum { group_size: Some(1) })).unwrap();
    let replicas = |c: &Cluster, q: &str| {
        let QueueKind::Quorum { topic_id } = c.image.amqp["/"].queues[q].kind else { panic!("not quorum") };
        c.image.topic_by_id(topic_id).unwrap().partitions[0].replicas.len()
    };
    assert_eq!((replicas(&c, "big"), replicas(&c, "one")), (3, 1));
    // A classic queue lives on the node that declared it (here the caller, node 1).
    c.request(declare("local", QueueType::Classic)).unwrap();
    assert_eq!(c.image.amqp["/"].queues["local"].kind, QueueKind::Classic { node: 1 });
    // The same declaration again changes nothing; another type is refused.
    c.request(declare("orders", QueueType::Quorum { group_size: None })).unwrap();
    assert_eq!(c.image.topics.len(), 2 + 3, "no second topic");
    assert!(matches!(c.request(declare("orders", QueueType::Classic)), Err(MetadataError::InvalidRequest(_))));

    // Exchanges and bindings route the same on every node: they are in the image.
    let exchange = ExchangeDef {
        name: "tasks".into(),
        kind: ExchangeKind::Direct,
        durable: true,
        auto_delete: false,
        internal: false,
        delayed: false,
        arguments: Arguments([("alternate-exchange".to_string(), HeaderValue::Str("amq.fanout".into()))].into()),
    };
    c.request(ControllerRequest::Amqp(AmqpRequest::DeclareExchange { vhost: "/".into(), exchange })).unwrap();
    let binding = BindingDef {
        source: "tasks".into(),
        destination: Destination::Queue("orders".into()),
        routing_key: "new".into(),
        arguments: Arguments::default(),
    };
    c.request(ControllerRequest::Amqp(AmqpRequest::Bind { vhost: "/".into(), binding: binding.clone() })).unwrap();
    assert_eq!(c.image.amqp["/"].bindings, vec![binding]);
    // Deleting the queue deletes its topic and its bindings in one entry.
    c.request(ControllerRequest::Amqp(AmqpRequest::DeleteQueue { vhost: "/".into(), name: "orders".into() })).unwrap();
    assert!(c.image.topic_by_id(topic_id).is_none());
    assert!(c.image.amqp["/"].bindings.is_empty() && !c.image.amqp["/"].queues.contains_key("orders"));
    assert!(c.image.amqp["/"].exchanges.contains_key("tasks"));
}
