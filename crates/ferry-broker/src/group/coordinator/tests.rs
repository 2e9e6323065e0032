//! The coordinator over a broker's `__consumer_offsets` partitions: reopen,
//! expiry, moves of a partition's leadership.

use std::path::Path;

use super::*;
use crate::broker::{Broker, BrokerConfig};
use crate::group::classic::Join;
use crate::group::consumer::{Heartbeat, Topics};
use crate::metadata::{GROUP_TOPIC, MetadataRecord, coordinator_partition};
use crate::testing::{INTERNAL_PARTITIONS, TestController};

fn open(dir: &Path, retention_ms: u64) -> (Arc<Broker>, Arc<TestController>) {
    let groups = CoordinatorConfig {
        initial_rebalance_delay: Duration::ZERO,
        offsets_retention_ms: retention_ms,
        ..CoordinatorConfig::default()
    };
    let b = Broker::open(BrokerConfig { data_dir: dir.to_path_buf(), groups, ..BrokerConfig::default() }).unwrap();
    let controller = crate::testing::install(&b);
    (b, controller)
}

fn committed(offset: i64) -> Committed {
    Committed { offset, leader_epoch: -1, metadata: Some("m".into()), commit_ms: now_ms_u64() }
}

fn join(member: &str) -> Join {
    Join {
        member_id: member.into(),
        instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout: Duration::from_secs(10),
        rebalance_timeout: Duration::from_secs(10),
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), vec![1])],
        require_known_member_id: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_and_generations_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _) = open(dir.path(), u64::MAX);
    let c = b.groups().clone();
    let joined = c.join("g", join("")).await.unwrap();
    assert_eq!((joined.error, joined.generation), (None, 1));
    let written = c.commit("g", &joined.member_id, 1, vec![("t".into(), 0, committed(42))]).unwrap();
    written.acknowledged().await.unwrap();
    // A stale generation is refused; a simple consumer may not commit
    // into a group with members.
    assert_eq!(c.commit("g", &joined.member_id, 0, vec![]).err(), Some(GroupError::IllegalGeneration));
    assert_eq!(c.commit("g", "", -1, vec![]).err(), Some(GroupError::UnknownMemberId));
    assert_eq!(c.delete_group("g"), Err(GroupError::NonEmptyGroup));
    b.shutdown();
    drop((c, b));
    let (b, _) = open(dir.path(), u64::MAX);
    let c = b.groups().clone();
    assert_eq!(c.committed("g").get(&("t".to_string(), 0)).map(|x| x.offset), Some(42));
    // The generation goes on from where it was.
    let rejoined = c.join("g", join("")).await.unwrap();
    assert_eq!(rejoined.generation, 2);
    assert_eq!(c.leave("g", &rejoined.member_id, None), None);
    c.delete_group("g").unwrap();
    assert_eq!(c.delete_group("g"), Err(GroupError::GroupIdNotFound));
    b.shutdown();
    drop((c, b));
    let (b, _) = open(dir.path(), u64::MAX);
    assert!(b.groups().committed("g").is_empty(), "deleted groups stay deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_of_empty_groups_expire() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _) = open(dir.path(), 0);
    let c = b.groups().clone();
    c.commit("simple", "", -1, vec![("t".into(), 0, committed(7))]).unwrap();
    let joined = c.join("busy", join("")).await.unwrap();
    c.commit("busy", &joined.member_id, joined.generation, vec![("t".into(), 0, committed(9))]).unwrap();
    std::thread::sleep(Duration::from_millis(10));
    c.tick();
    assert!(c.committed("simple").is_empty(), "an empty group's offsets expire");
    assert_eq!(c.committed("busy").len(), 1, "a group with members keeps its offsets");
}

/// Moves the leadership of `group`'s `__consumer_offsets` partition
/// (-1: none), as the controller does when its leader dies.
fn lead(controller: &TestController, group: &str, leader: i32) {
    let image = controller.image();
    let topic = image.topic(GROUP_TOPIC).unwrap();
    let partition = coordinator_partition(group, INTERNAL_PARTITIONS).unwrap();
    let isr = if leader < 0 { vec![] } else { vec![leader] };
    controller
        .apply(vec![MetadataRecord::PartitionChange {
            topic_id: topic.id,
            partition,
            leader,
            isr,
            replicas: None,
            elr: None,
        }])
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_unload_with_leadership_and_reload_from_the_partition() {
    let dir = tempfile::tempdir().unwrap();
    let (b, controller) = open(dir.path(), u64::MAX);
    let c = b.groups().clone();
    // Two groups on different partitions.
    let other = (0..100)
        .map(|i| format!("other-{i}"))
        .find(|g| coordinator_partition(g, INTERNAL_PARTITIONS) != coordinator_partition("g", INTERNAL_PARTITIONS))
        .unwrap();
    let joined = c.join("g", join("")).await.unwrap();
    c.commit("g", &joined.member_id, 1, vec![("t".into(), 0, committed(5))]).unwrap().acknowledged().await.unwrap();
    c.commit(&other, "", -1, vec![("t".into(), 0, committed(8))]).unwrap().acknowledged().await.unwrap();
    let heartbeat_rx = c.sync("g", &joined.member_id, 1, vec![]);
    assert_eq!(heartbeat_rx.await.unwrap().error, None);

    // The partition loses its leader: the group leaves memory and every
    // request for it is refused with NOT_COORDINATOR; the other stays.
    tokio::task::block_in_place(|| lead(&controller, "g", -1));
    assert!(!c.serves("g") && c.serves(&other));
    assert!(!b.coordinates(crate::metadata::CoordinatorKind::Group, "g"));
    assert!(c.committed("g").is_empty() && c.describe("g").is_none());
    assert_eq!(c.heartbeat("g", &joined.member_id, 1), Some(GroupError::NotCoordinator));
    assert_eq!(c.commit("g", "", -1, vec![]).err(), Some(GroupError::NotCoordinator));
    assert_eq!(c.join("g", join("")).await.unwrap().error, Some(GroupError::NotCoordinator));
    assert_eq!(c.committed(&other).len(), 1);

    // Led here again (a new leader epoch): reloaded from the partition,
    // offsets and generation as committed.
    tokio::task::block_in_place(|| lead(&controller, "g", 1));
    assert!(c.serves("g") && b.coordinates(crate::metadata::CoordinatorKind::Group, "g"));
    assert_eq!(c.committed("g").get(&("t".to_string(), 0)).map(|x| x.offset), Some(5));
    assert_eq!(c.describe("g").unwrap().generation, 1);
    assert_eq!(c.heartbeat("g", &joined.member_id, 1), Some(GroupError::UnknownMemberId), "members rejoin");
    assert_eq!(c.join("g", join("")).await.unwrap().generation, 2);
}

fn hb(member: &str, epoch: i32) -> Heartbeat {
    Heartbeat {
        member_id: member.into(),
        member_epoch: epoch,
        instance_id: None,
        rack_id: None,
        client_id: "c".into(),
        client_host: "h".into(),
        subscribed: (epoch == 0).then(|| vec!["t".to_string()]),
        regex: None,
        owned: Some(vec![]),
        server_assignor: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip_848_members_are_fenced_by_a_new_coordinator_and_rejoin() {
    let dir = tempfile::tempdir().unwrap();
    let (b, controller) = open(dir.path(), u64::MAX);
    let c = b.groups().clone();
    let four = |_: &str| 4;
    let no_names = Vec::new;
    let topics = Topics { partitions: &four, names: &no_names };
    let a = c.consumer_heartbeat("g", hb("a", 0), &topics).unwrap();
    let a = c.consumer_heartbeat("g", hb("a", a.member_epoch), &topics).unwrap();
    let epoch = a.member_epoch;
    assert!(epoch > 0);
    c.commit("g", "a", epoch, vec![("t".into(), 0, committed(5))]).unwrap().acknowledged().await.unwrap();

    // The coordinator moves away and back (a new leader epoch): members
    // are not stored, so the new term fences every one of them.
    tokio::task::block_in_place(|| lead(&controller, "g", -1));
    assert_eq!(c.consumer_heartbeat("g", hb("a", epoch), &topics).err(), Some(GroupError::NotCoordinator));
    tokio::task::block_in_place(|| lead(&controller, "g", 1));
    assert!(c.with_consumer_group("g", |_| ()).is_none(), "no KIP-848 state survives the move");
    // UNKNOWN_MEMBER_ID: the client drops its partitions and rejoins
    // with epoch 0; a commit from its old term is refused meanwhile.
    assert_eq!(c.consumer_heartbeat("g", hb("a", epoch), &topics).err(), Some(GroupError::UnknownMemberId));
    assert!(c.commit("g", "a", epoch, vec![("t".into(), 0, committed(99))]).is_err());
    let b2 = c.consumer_heartbeat("g", hb("b", 0), &topics).unwrap();
    assert_eq!(
        c.commit("g", "a", epoch, vec![("t".into(), 0, committed(99))]).err(),
        Some(GroupError::UnknownMemberId)
    );
    let a = c.consumer_heartbeat("g", hb("a", 0), &topics).unwrap();
    assert!(a.member_epoch > 0 && b2.member_epoch > 0);
    // The committed offsets are the old term's, untouched by the stale commits.
    assert_eq!(c.committed("g").get(&("t".to_string(), 0)).map(|x| x.offset), Some(5));
    // The rejoined members share the partitions again.
    let mut owned = std::collections::BTreeSet::new();
    for _ in 0..4 {
        for m in ["a", "b"] {
            let e = c.with_consumer_group("g", |g| g.members[m].epoch).unwrap();
            let r = c.consumer_heartbeat("g", hb(m, e), &topics).unwrap();
            if let Some(assigned) = r.assignment {
                owned.retain(|(member, _)| *member != m);
                owned.extend(assigned.into_iter().map(|p| (m, p)));
            }
        }
    }
    let partitions: std::collections::BTreeSet<_> = owned.iter().map(|(_, p)| p.clone()).collect();
    assert_eq!((owned.len(), partitions.len()), (4, 4), "each partition owned once: {owned:?}");
}
