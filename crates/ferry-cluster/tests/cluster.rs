//! Cluster nodes in one process, each with its own data directory and
//! broker, talking over 127.0.0.1: election, registration, controller
//! calls from any node, failover, restart and catch-up, a learner, and the
//! refusals (duplicate id, another quorum, bad frames).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use ferry_broker::metadata::{Controller, ControllerReply, ControllerRequest, MetadataError, listener};
use ferry_broker::{Broker, BrokerConfig};
use ferry_cluster::{ClusterConfig, ClusterError, ClusterNode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;
use support::{Member, PATIENCE, eventually, free_addr, start};

fn config(id: i32, data: &Path, listen: &str, quorum: &[(i32, String)]) -> ClusterConfig {
    support::config(id, data, listen, quorum, 19090)
}

async fn bounded<T>(f: impl Future<Output = T>) -> T {
    support::bounded(Duration::from_secs(180), f).await
}

fn create(name: &str) -> ControllerRequest {
    ControllerRequest::CreateTopic {
        name: name.into(),
        partitions: Some(3),
        replication_factor: None,
        assignment: None,
        configs: BTreeMap::new(),
        validate_only: false,
    }
}

/// Three voters, one per directory of `dirs`, started together; returns
/// once every node sees all three live.
async fn three_live_voters(dirs: &[tempfile::TempDir]) -> Vec<Member> {
    let quorum: Vec<(i32, String)> = (1..=3).map(|id| (id, free_addr())).collect();
    let starts: Vec<_> = quorum
        .iter()
        .map(|(id, addr)| tokio::spawn(start(config(*id, dirs[*id as usize - 1].path(), addr, &quorum))))
        .collect();
    let mut members = Vec::new();
    for s in starts {
        members.push(s.await.unwrap().unwrap());
    }
    for m in &members {
        eventually("three live nodes", || (m.broker.metadata().live_nodes().count() == 3).then_some(())).await;
    }
    members
}

/// The connection is closed by the peer (a read sees the end or an error).
async fn closed_by_peer(stream: &mut tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_three_voter_quorum_serves_fails_over_and_takes_nodes_back() {
    bounded(three_voters()).await;
}

async fn three_voters() {
    let dirs: Vec<tempfile::TempDir> = (0..6).map(|_| tempfile::tempdir().unwrap()).collect();
    let quorum: Vec<(i32, String)> = (1..=3).map(|id| (id, free_addr())).collect();
    let starts: Vec<_> = quorum
        .iter()
        .map(|(id, addr)| tokio::spawn(start(config(*id, dirs[*id as usize - 1].path(), addr, &quorum))))
        .collect();
    let mut members = Vec::new();
    for s in starts {
        members.push(s.await.unwrap().unwrap());
    }

    // A leader, known to all; every node registered in every image.
    let leader = eventually("a leader", || members[0].node.status().leader).await;
    for m in &members {
        eventually("the same leader everywhere", || (m.node.status().leader == Some(leader)).then_some(())).await;
        eventually("three live nodes", || (m.broker.metadata().live_nodes().count() == 3).then_some(())).await;
        assert_eq!(m.node.status().voters, vec![1, 2, 3]);
        assert!(m.broker.metadata().cluster_id.is_some());
    }

    // A topic created through a follower is in that follower's image on
    // return, and soon in every other.
    let follower = members.iter().find(|m| m.id() != leader).unwrap();
    let reply = follower.node.submit(create("orders")).await.unwrap();
    let ControllerReply::TopicCreated { replicas, .. } = reply else { panic!("{reply:?}") };
    assert_eq!(replicas.len(), 3);
    let topic = follower.broker.metadata().topic("orders").cloned().expect("applied before submit returned");
    assert_eq!(topic.partitions.iter().map(|p| p.replicas.clone()).collect::<Vec<_>>(), replicas);
    for m in &members {
        eventually("the topic everywhere", || m.broker.metadata().topic("orders").map(|_| ())).await;
    }
    assert_eq!(follower.node.submit(create("orders")).await, Err(MetadataError::TopicExists("orders".into())));

    // Bad frames close their connection; the node goes on serving.
    let leader_member = members.iter().find(|m| m.id() == leader).unwrap();
    let mut garbage = tokio::net::TcpStream::connect(leader_member.node.cluster_addr()).await.unwrap();
    garbage.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4]).await.unwrap();
    assert!(closed_by_peer(&mut garbage).await, "oversized frame");
    let mut bad_json = tokio::net::TcpStream::connect(leader_member.node.cluster_addr()).await.unwrap();
    let body = b"not json";
    let mut frame = (1 + 8 + body.len() as u32).to_be_bytes().to_vec();
    frame.push(2);
    frame.extend(7u64.to_be_bytes());
    frame.extend(body);
    bad_json.write_all(&frame).await.unwrap();
    assert!(closed_by_peer(&mut bad_json).await, "undecodable request");
    follower.node.submit(create("after-garbage")).await.unwrap();

    // The leader goes: another is elected and calls go on.
    let index = members.iter().position(|m| m.id() == leader).unwrap();
    let old = members.remove(index);
    let old_config = old.config.clone();
    old.stop().await;
    let new_leader = eventually("a new leader", || members[0].node.status().leader.filter(|l| *l != leader)).await;
    assert_ne!(new_leader, leader);
    members[1].node.submit(create("after-failover")).await.unwrap();

    // The old leader comes back from its data directory and catches up.
    let back = start(old_config).await.unwrap();
    eventually("the restarted node catches up", || {
        (*back.broker.metadata() == *members[0].broker.metadata()).then_some(())
    })
    .await;
    assert!(back.broker.metadata().topic("after-failover").is_some());
    members.push(back);

    // A broker-only node joins as a learner and gets the image.
    let learner = start(config(4, dirs[3].path(), &free_addr(), &quorum)).await.unwrap();
    let image = learner.broker.metadata();
    for t in ["orders", "after-garbage", "after-failover"] {
        assert!(image.topic(t).is_some(), "{t}");
    }
    assert!(image.nodes.get(&4).is_some_and(|n| !n.voter));
    eventually("4 is an observer", || members[0].node.status().observers.contains(&4).then_some(())).await;
    learner.node.submit(create("from-learner")).await.unwrap();
    assert!(learner.broker.metadata().topic("from-learner").is_some());

    // A second node 4 while the first is alive: refused.
    let twin = start(config(4, dirs[4].path(), &free_addr(), &quorum)).await;
    assert!(matches!(twin, Err(ClusterError::Metadata(MetadataError::DuplicateNodeId(4)))), "{:?}", twin.err());

    // A node configured with another quorum: refused, naming both.
    let other_quorum = quorum[..2].to_vec();
    let stranger = start(config(5, dirs[5].path(), &free_addr(), &other_quorum)).await;
    match stranger {
        Err(ClusterError::Metadata(MetadataError::QuorumMismatch(why))) => {
            assert!(why.contains(&quorum[2].1), "{why}");
        }
        other => panic!("{:?}", other.err()),
    }

    learner.stop().await;
    for m in members {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_is_a_quorum_of_one_and_keeps_its_metadata_across_restarts() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        // No quorum given and port 0: a quorum of one on whatever port.
        let cfg = config(7, dir.path(), "127.0.0.1:0", &[]);
        let node = start(cfg.clone()).await.unwrap();
        assert_ne!(node.node.cluster_addr(), "127.0.0.1:0");
        let status = node.node.status();
        assert_eq!((status.leader, status.voters.clone(), status.waiting.clone()), (Some(7), vec![7], None));
        node.node.submit(create("solo")).await.unwrap();
        let before = node.broker.metadata();
        assert!(before.topic("solo").is_some());
        node.stop().await;

        // Back from its data directory at once (a quorum of one knows its
        // old incarnation is gone): the same image, but for the new
        // incarnation's registration; no partition changed hands.
        let node = start(cfg).await.unwrap();
        let after = node.broker.metadata();
        assert_eq!(after.cluster_id, before.cluster_id);
        // Waiting out the old session would have fenced it: epochs would move.
        assert_eq!(after.topics, before.topics, "no fencing, no epoch moved");
        assert_ne!(after.nodes[&7].incarnation, before.nodes[&7].incarnation);
        assert!(after.applied_index > before.applied_index);
        node.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_after_the_log_was_purged_gets_the_snapshot() {
    bounded(async {
        let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
        let quorum = vec![(1, free_addr())];
        let voter = start(config(1, dirs[0].path(), &quorum[0].1, &quorum)).await.unwrap();
        for name in ["a", "b", "c"] {
            voter.node.submit(create(name)).await.unwrap();
        }
        let index = voter.node.snapshot_now().await.unwrap();
        assert!(index > 0);
        assert!(dirs[0].path().join("cluster/snapshot.json").exists());

        // Only the snapshot can bring the learner up to date now. (It
        // listens on port 0 and says so in its listeners, as the binary
        // does: it advertises the port it got.)
        let mut learner_config = config(2, dirs[1].path(), "127.0.0.1:0", &quorum);
        learner_config.listeners.insert(listener::CLUSTER.into(), "127.0.0.1:0".into());
        let learner = start(learner_config).await.unwrap();
        assert_ne!(learner.node.cluster_addr(), "127.0.0.1:0");
        eventually("the learner holds the voter's image", || {
            (*learner.broker.metadata() == *voter.broker.metadata()).then_some(())
        })
        .await;
        for name in ["a", "b", "c"] {
            assert!(learner.broker.metadata().topic(name).is_some(), "{name}");
        }
        assert!(dirs[1].path().join("cluster/snapshot.json").exists(), "installed snapshots are kept");
        learner.stop().await;
        voter.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_alone_waits_for_its_quorum_and_says_so() {
    bounded(async {
        let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let quorum: Vec<(i32, String)> = (1..=3).map(|id| (id, free_addr())).collect();
        let first = config(1, dirs[0].path(), &quorum[0].1, &quorum);
        let broker =
            Broker::open(BrokerConfig { node_id: 1, data_dir: first.data_dir.clone(), ..Default::default() }).unwrap();
        let starting = tokio::spawn(ClusterNode::start(first.clone(), broker.clone()));
        let why = eventually("node 1 says it waits", || broker.controller_status().waiting).await;
        assert!(why.contains("quorum"), "{why}");
        assert!(!starting.is_finished(), "start() returns only once registered");

        // The rest of the quorum comes up: everyone starts.
        let others: Vec<_> = quorum[1..]
            .iter()
            .map(|(id, addr)| tokio::spawn(start(config(*id, dirs[*id as usize - 1].path(), addr, &quorum))))
            .collect();
        let node = starting.await.unwrap().unwrap();
        assert_eq!(node.status().waiting, None);
        assert_eq!(broker.controller_status().node_id, 1);
        let mut members = vec![Member { config: first, broker, node }];
        for o in others {
            members.push(o.await.unwrap().unwrap());
        }
        for m in members {
            m.stop().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_start_stops_what_it_started() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        // A voter of a quorum whose other voters never come.
        let quorum = vec![(1, free_addr()), (2, free_addr())];
        let cfg = config(1, dir.path(), &quorum[0].1, &quorum);
        let broker =
            Broker::open(BrokerConfig { node_id: 1, data_dir: cfg.data_dir.clone(), ..Default::default() }).unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(500), ClusterNode::start(cfg.clone(), broker.clone()));
        assert!(waiting.await.is_err(), "no quorum: still starting");
        // The cluster port is let go, though the broker (which holds the
        // node as its controller) lives on: the node can start again there.
        eventually("the port is free again", || std::net::TcpListener::bind(&quorum[0].1).ok().map(|_| ())).await;
        broker.shutdown();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_deleted_while_a_node_was_down_leaves_no_directory_there() {
    bounded(deleted_while_down()).await;
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

async fn deleted_while_down() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut members = three_live_voters(&dirs).await;
    // Three partitions, one replica each: one on every node.
    members[0].node.submit(create("doomed")).await.unwrap();
    let three = members.pop().unwrap();
    let dir = three.config.data_dir.join("topics").join("doomed");
    eventually("node 3 hosts the topic", || dir.join("topic.json").exists().then_some(())).await;
    let three_config = three.config.clone();
    three.stop().await;

    members[0].node.submit(ControllerRequest::DeleteTopic { name: "doomed".into() }).await.unwrap();
    assert!(dir.exists(), "node 3 was down: its directory is still there");
    // A directory the metadata never places here at all (as a partition
    // moved away, or a crash mid-delete, leaves): the replayed log does
    // not name it, only the sweep after registration finds it.
    let ghost = three_config.data_dir.join("topics").join("ghost");
    copy_dir(&dir, &ghost);

    // Back, node 3 has neither directory once it serves.
    let back = start(three_config).await.unwrap();
    assert!(back.broker.metadata().topic("doomed").is_none());
    assert!(!dir.exists(), "the deleted topic's directory was trashed");
    assert!(!ghost.exists(), "the orphan directory was trashed");
    back.stop().await;
    for m in members {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_through_any_node_is_carried_out_by_the_leader() {
    bounded(delete_records_anywhere()).await;
}

async fn delete_records_anywhere() {
    use ferry_broker::Acks;
    use ferry_broker::metadata::PeerError;
    use ferry_records::compression::Compression;
    use ferry_records::records::{NewRecord, build_batch};

    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let members = three_live_voters(&dirs).await;
    members[0].node.submit(create("trimmed")).await.unwrap();
    let image = members[0].broker.metadata();
    let topic = image.topic("trimmed").unwrap().clone();
    // Five records in every partition, written on its leader.
    for (index, p) in topic.partitions.iter().enumerate() {
        let leader = members.iter().find(|m| m.id() == p.leader).unwrap();
        let part =
            eventually("the leader hosts it", || leader.broker.leader_partition("trimmed", index as i32).ok()).await;
        for i in 0..5u8 {
            let value = [i];
            let r = NewRecord { key: None, value: Some(&value), headers: vec![], timestamp: 0 };
            let batch = build_batch(&[r], Compression::None, -1, -1, -1).unwrap();
            part.append(&batch, Acks::All).unwrap().acknowledged().await.unwrap();
        }
    }
    // Through node 1, every partition: node 1's own and the others' (forwarded).
    let one = &members[0];
    for (index, p) in topic.partitions.iter().enumerate() {
        let low = one.broker.delete_records("trimmed", index as i32, 3).await.unwrap();
        assert_eq!(low, 3, "partition {index} led by node {}", p.leader);
        let leader = members.iter().find(|m| m.id() == p.leader).unwrap();
        assert_eq!(leader.broker.leader_partition("trimmed", index as i32).unwrap().log_start_offset(), 3);
    }
    // The leader's refusal comes back as its own error.
    let remote = topic.partitions.iter().position(|p| p.leader != 1).unwrap() as i32;
    let err = one.broker.delete_records("trimmed", remote, 99).await.unwrap_err();
    assert!(
        matches!(err, ferry_broker::BrokerError::Peer(PeerError::OffsetOutOfRange)),
        "past the high watermark: {err:?}"
    );
    // -1 means the high watermark, forwarded as well.
    assert_eq!(one.broker.delete_records("trimmed", remote, -1).await.unwrap(), 5);
    for m in members {
        m.stop().await;
    }
}
