//! KIP-890 part 1 across nodes: the leader of a data partition asks the
//! producer's transaction coordinator, on another node, before taking the
//! first transactional batch of a transaction, and refuses a batch for a
//! partition the transaction does not hold.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ferry_broker::metadata::{Controller, ControllerRequest, CoordinatorKind};
use ferry_broker::txn::TxnError;
use ferry_broker::{Acks, Broker, BrokerError, Partition, TxnBatch};
use ferry_cluster::ClusterConfig;
use ferry_records::batch::crc32c;
use ferry_records::compression::Compression;
use ferry_records::records::{NewRecord, build_batch};

mod support;
use support::{Member, eventually, free_addr, start};

fn config(id: i32, data: &Path, listen: &str, quorum: &[(i32, String)]) -> ClusterConfig {
    support::config(id, data, listen, quorum, 19390)
}

/// Where a batch header's CRC and attributes begin.
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;

/// A transactional batch of one record (the transactional attribute bit
/// set, the CRC over attributes onwards computed again).
fn txn_batch(pid: i64, epoch: i16, seq: i32) -> Vec<u8> {
    let record = NewRecord { key: None, value: Some(b"v"), headers: vec![], timestamp: 1_700_000_000_000 };
    let mut batch = build_batch(&[record], Compression::None, pid, epoch, seq).unwrap();
    batch[ATTRIBUTES_AT + 1] |= 1 << 4;
    let crc = crc32c(&batch[ATTRIBUTES_AT..]);
    batch[CRC_AT..ATTRIBUTES_AT].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// Runs the data leader's side of a produce for one batch: the check, the
/// coordinator's answer if needed, the append; returns whether the check
/// asked the coordinator and the outcome.
async fn produce(leader: &Broker, tid: &str, p: &Arc<Partition>, batch: &[u8]) -> (bool, Result<u64, BrokerError>) {
    let (asked, verified) = match leader.check_txn_batch(Some(tid), p, batch) {
        Err(e) => return (false, Err(e)),
        Ok(TxnBatch::Append) => panic!("the coordinator is not on this node"),
        Ok(TxnBatch::AppendVerified) => (false, Ok(())),
        Ok(TxnBatch::Verify(v)) => (true, leader.verify_txn_batches(tid, &[v]).await.pop().unwrap()),
    };
    let appended = verified.and_then(|()| p.append_checked(batch, Acks::All, true));
    let result = match appended {
        Ok(a) => tokio::time::timeout(Duration::from_secs(20), a.acknowledged())
            .await
            .expect("acknowledged in time")
            .map(|info| info.base_offset),
        Err(e) => Err(e),
    };
    (asked, result)
}

/// Runs blocking coordinator work (it waits for ISRs and peer calls).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_partition_leader_verifies_transactional_batches_with_a_remote_coordinator() {
    support::bounded(Duration::from_secs(180), verify()).await;
}

async fn verify() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let quorum: Vec<(i32, String)> = (1..=3).map(|id| (id, free_addr())).collect();
    let starts: Vec<_> = quorum
        .iter()
        .map(|(id, addr)| tokio::spawn(start(config(*id, dirs[*id as usize - 1].path(), addr, &quorum))))
        .collect();
    let mut members: Vec<Member> = Vec::new();
    for s in starts {
        members.push(s.await.unwrap().unwrap());
    }
    for m in &members {
        eventually("three live nodes", || (m.broker.metadata().live_nodes().count() == 3).then_some(())).await;
    }
    // Both partitions of "tx" on node 1 alone: node 1 is their leader.
    let create = ControllerRequest::CreateTopic {
        name: "tx".into(),
        partitions: None,
        replication_factor: None,
        assignment: Some(vec![vec![1], vec![1]]),
        configs: BTreeMap::new(),
        validate_only: false,
    };
    members[0].node.submit(create).await.unwrap();
    let leader = members.iter().find(|m| m.id() == 1).unwrap();
    let (p0, p1) = eventually("node 1 leads both partitions", || {
        Some((leader.broker.leader_partition("tx", 0).ok()?, leader.broker.leader_partition("tx", 1).ok()?))
    })
    .await;
    // A transactional id coordinated by another node, loaded there.
    let (tid, coordinator) = eventually("a transactional id coordinated by node 2 or 3", || {
        let image = leader.broker.metadata();
        (0..200).map(|i| format!("kip890-{i}")).find_map(|tid| {
            let node = image.coordinator(CoordinatorKind::Transaction, &tid)?.id;
            let m = members.iter().find(|m| m.id() == node && node != 1)?;
            m.broker.txns().serves(&tid).then(|| (tid, m.broker.clone()))
        })
    })
    .await;
    coordinator.reserve_producer_ids().await.unwrap();
    let (c, id) = (coordinator.clone(), tid.clone());
    let (pid, epoch) =
        blocking(move || c.txns().init_producer(&id, 60_000, None, c.producer_ids(), c.as_ref())).await.unwrap();
    let (c, id) = (coordinator.clone(), tid.clone());
    blocking(move || c.txns().add_partitions(&id, pid, epoch, &[("tx".to_string(), 0)])).await.unwrap();

    // Partition 1 is not in the transaction: refused, nothing written.
    let (asked, refused) = produce(&leader.broker, &tid, &p1, &txn_batch(pid, epoch, 0)).await;
    assert!(asked, "the first batch is verified with the coordinator");
    assert!(matches!(refused, Err(BrokerError::Txn(TxnError::InvalidTxnState))), "{refused:?}");
    assert_eq!(p1.last_stable_offset(), p1.high_watermark(), "no transaction opened on partition 1");
    assert_eq!(p1.high_watermark(), 0);

    // Partition 0 is: the first batch asks, the next one does not.
    let (asked, first) = produce(&leader.broker, &tid, &p0, &txn_batch(pid, epoch, 0)).await;
    assert!(asked);
    assert_eq!(first.unwrap(), 0);
    let (asked, second) = produce(&leader.broker, &tid, &p0, &txn_batch(pid, epoch, 1)).await;
    assert!(!asked, "a verified transaction needs no second round trip");
    assert_eq!(second.unwrap(), 1);
    assert!(p0.in_transaction(pid));

    // A stale epoch is fenced by the coordinator's answer.
    let (_, fenced) = produce(&leader.broker, &tid, &p1, &txn_batch(pid, epoch - 1, 0)).await;
    assert!(matches!(fenced, Err(BrokerError::InvalidProducerEpoch)), "{fenced:?}");

    // The commit's marker ends the verification: a batch after it, outside
    // any transaction, is verified again and refused.
    let (c, id) = (coordinator.clone(), tid.clone());
    blocking(move || c.txns().end(&id, pid, epoch, true, c.as_ref())).await.unwrap();
    assert!(!p0.in_transaction(pid), "the commit marker closed the transaction on partition 0");
    let (asked, after) = produce(&leader.broker, &tid, &p0, &txn_batch(pid, epoch, 2)).await;
    assert!(asked, "the marker ended the cached verification");
    assert!(matches!(after, Err(BrokerError::Txn(TxnError::InvalidTxnState))), "{after:?}");
    assert_eq!(p0.last_stable_offset(), p0.high_watermark(), "nothing left hanging on partition 0");

    for m in members {
        m.stop().await;
    }
}
