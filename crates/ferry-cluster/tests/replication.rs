//! Replicated partitions with three cluster nodes in one process (issue
//! #15): a topic of replication factor 3 replicates, acks=all waits for the
//! ISR, a stopped follower leaves the ISR and rejoins after it restarts and
//! catches up, and the leader's loss elects an ISR member that has every
//! acknowledged record.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ferry_broker::metadata::{Controller, ControllerRequest};
use ferry_broker::{Acks, Partition};
use ferry_cluster::ClusterConfig;
use ferry_cluster::replication::ReplicationConfig;
use ferry_records::compression::Compression;
use ferry_records::records::{NewRecord, build_batch, parse_records, records_payload};

mod support;
use support::{Member, PATIENCE, eventually, free_addr};

/// The support configuration with a quick ISR: a stopped follower leaves
/// it within seconds.
fn config(id: i32, data: &Path, listen: &str, quorum: &[(i32, String)]) -> ClusterConfig {
    ClusterConfig {
        replication: ReplicationConfig {
            lag_time_max: Duration::from_secs(2),
            fetch_max_wait: Duration::from_millis(200),
            isr_check_interval: Duration::from_millis(100),
            isr_retry: Duration::from_secs(1),
            ..ReplicationConfig::default()
        },
        ..support::config(id, data, listen, quorum, 29090)
    }
}

fn partition(m: &Member) -> Option<Arc<Partition>> {
    m.broker.topic("r").and_then(|t| t.partition(0))
}

async fn start(config: ClusterConfig) -> Member {
    support::start(config).await.unwrap()
}

async fn bounded<T>(f: impl Future<Output = T>) -> T {
    support::bounded(Duration::from_secs(240), f).await
}

fn record(value: &str) -> Vec<u8> {
    let r =
        NewRecord { key: None, value: Some(value.as_bytes()), headers: vec![], timestamp: ferry_util::time::now_ms() };
    build_batch(&[r], Compression::None, -1, -1, -1).unwrap()
}

/// Every value readable from `p` (up to its high watermark), in order.
fn values(p: &Partition) -> Vec<String> {
    let mut out = Vec::new();
    let mut offset = p.log_start_offset();
    while let Some(slice) = p.read(offset, 1 << 20).unwrap() {
        let bytes = slice.to_vec().unwrap();
        for (h, b) in ferry_records::batch::split(&bytes).unwrap() {
            let payload = records_payload(b, 1 << 30).unwrap();
            for r in parse_records(&payload, h.records_count as usize).unwrap() {
                out.push(String::from_utf8_lossy(r.value.unwrap()).into_owned());
            }
        }
        offset = slice.end_offset;
    }
    out
}

/// The partition's ISR and leader in `m`'s image.
fn isr_and_leader(m: &Member) -> (Vec<i32>, i32) {
    let image = m.broker.metadata();
    let p = image.partition("r", 0).unwrap();
    let mut isr = p.isr.clone();
    isr.sort_unstable();
    (isr, p.leader)
}

/// Produces `values` with acks=all through the leader among `members`;
/// each returns once acknowledged. Returns the offsets.
async fn produce_all(leader: &Member, values: &[String]) -> Vec<u64> {
    let p = partition(leader).unwrap();
    let mut offsets = Vec::new();
    for v in values {
        let appended = p.append(&record(v), Acks::All).unwrap();
        let Ok(acked) = tokio::time::timeout(PATIENCE, appended.acknowledged()).await else {
            panic!("{v} not acknowledged: hw {}, leader view {:?}", p.high_watermark(), p.leader_state());
        };
        let info = acked.unwrap();
        offsets.push(info.base_offset);
    }
    offsets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_replicate_to_the_isr_and_survive_follower_and_leader_loss() {
    bounded(replicate()).await;
}

async fn replicate() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let quorum: Vec<(i32, String)> = (1..=3).map(|id| (id, free_addr())).collect();
    let starts: Vec<_> = quorum
        .iter()
        .map(|(id, addr)| tokio::spawn(start(config(*id, dirs[*id as usize - 1].path(), addr, &quorum))))
        .collect();
    let mut members = Vec::new();
    for s in starts {
        members.push(s.await.unwrap());
    }
    for m in &members {
        eventually("three live nodes", || (m.broker.metadata().live_nodes().count() == 3).then_some(())).await;
    }
    let create = ControllerRequest::CreateTopic {
        name: "r".into(),
        partitions: Some(1),
        replication_factor: None,
        assignment: None,
        // The default flush policy: fsync before acknowledging.
        configs: BTreeMap::new(),
        validate_only: false,
    };
    members[0].node.submit(create).await.unwrap();
    for m in &members {
        eventually("the partition on every node", || partition(m).map(|_| ())).await;
    }
    let (isr, leader) = isr_and_leader(&members[0]);
    assert_eq!(isr, vec![1, 2, 3], "default replication factor: three with three nodes");

    // acks=all: acknowledged only once every ISR member has it on disk.
    let first: Vec<String> = (0..20).map(|i| format!("a{i}")).collect();
    let li = members.iter().position(|m| m.id() == leader).unwrap();
    let offsets = produce_all(&members[li], &first).await;
    assert_eq!(offsets, (0..20).collect::<Vec<u64>>());
    for m in members.iter().filter(|m| m.id() != leader) {
        let p = partition(m).unwrap();
        assert!(p.local_acked_end() >= 20, "follower {} acknowledged only {}", m.id(), p.local_acked_end());
        assert!(p.follower_state().is_some());
    }
    assert_eq!(values(&partition(&members[li]).unwrap()), first);
    // Followers learn the high watermark and hold the leader's bytes.
    for m in members.iter().filter(|m| m.id() != leader) {
        let p = partition(m).unwrap();
        eventually("the follower's high watermark", || (p.high_watermark() == 20).then_some(())).await;
        assert_eq!(values(&p), first);
        assert_eq!(p.latest_epoch(), partition(&members[li]).unwrap().latest_epoch());
    }

    // A follower stops: it leaves the ISR, and acks=all goes on with two.
    let fi = members.iter().position(|m| m.id() != leader).unwrap();
    let stopped = members.remove(fi).stop().await;
    let li = members.iter().position(|m| m.id() == leader).unwrap();
    eventually("the ISR without the stopped follower", || (isr_and_leader(&members[li]).0.len() == 2).then_some(()))
        .await;
    let second: Vec<String> = (0..20).map(|i| format!("b{i}")).collect();
    produce_all(&members[li], &second).await;

    // It comes back, catches up and rejoins the ISR.
    members.push(start(stopped).await);
    let back = members.last().unwrap();
    eventually("the follower back in the ISR", || (isr_and_leader(back).0 == vec![1, 2, 3]).then_some(())).await;
    let p = partition(back).unwrap();
    eventually("the restarted follower caught up", || (p.high_watermark() == 40).then_some(())).await;
    let expected: Vec<String> = first.iter().chain(&second).cloned().collect();
    assert_eq!(values(&p), expected);
    drop(p);

    // The leader dies: an ISR member leads, with every acknowledged record.
    let li = members.iter().position(|m| m.id() == leader).unwrap();
    members.remove(li).stop().await;
    let survivor = &members[0];
    let new_leader = eventually("a new leader", || {
        let (_, l) = isr_and_leader(survivor);
        (l != leader && l >= 0).then_some(l)
    })
    .await;
    let nl = members.iter().position(|m| m.id() == new_leader).unwrap();
    let p = partition(&members[nl]).unwrap();
    eventually("the new leader's view", || p.leader_state().map(|_| ())).await;
    let third: Vec<String> = (0..5).map(|i| format!("c{i}")).collect();
    produce_all(&members[nl], &third).await;
    let all: Vec<String> = expected.iter().chain(&third).cloned().collect();
    eventually("every acknowledged record on the new leader", || (values(&p) == all).then_some(())).await;
    let other = partition(members.iter().find(|m| m.id() != new_leader).unwrap()).unwrap();
    eventually("and on the other survivor", || (values(&other) == all).then_some(())).await;
    drop((p, other));
    for m in members {
        m.stop().await;
    }
}
