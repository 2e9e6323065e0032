//! The coordinator over a broker's `__transaction_state` partitions.

use super::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex as StdMutex;

use crate::broker::{Broker, BrokerConfig};
use crate::metadata::TXN_TOPIC;
use crate::producer::ProducerIds;
use crate::testing::INTERNAL_PARTITIONS;

/// (topic, partition, producer id, epoch, commit, coordinator epoch).
type Marker = (String, i32, i64, i16, bool, i32);
type GroupCommit = (String, Vec<(String, i32, Committed)>);

/// Records what the coordinator asked for.
#[derive(Default)]
struct Recorder {
    markers: StdMutex<Vec<Marker>>,
    offsets: StdMutex<Vec<GroupCommit>>,
}

impl TxnEffects for Recorder {
    fn write_marker(&self, topic: &str, partition: i32, pid: i64, epoch: i16, commit: bool, ce: i32) -> Result<()> {
        self.markers.lock().unwrap().push((topic.to_string(), partition, pid, epoch, commit, ce));
        Ok(())
    }
    fn commit_offsets(&self, group: &str, offsets: Vec<(String, i32, Committed)>) -> Result<()> {
        self.offsets.lock().unwrap().push((group.to_string(), offsets));
        Ok(())
    }
}

fn committed(offset: i64) -> Committed {
    Committed { offset, leader_epoch: -1, metadata: None, commit_ms: 0 }
}

/// A broker whose `__transaction_state` partitions are served by a
/// coordinator the test drives (with its own effects and ticks), not
/// by the broker's own (whose housekeeping would tick it).
fn open_with(dir: &Path, config: TxnConfig) -> (Arc<Broker>, TxnCoordinator) {
    let b = crate::testing::open(BrokerConfig { data_dir: dir.to_path_buf(), ..BrokerConfig::default() }).unwrap();
    let c = TxnCoordinator::open(config);
    for index in (0..).take(INTERNAL_PARTITIONS) {
        b.txns().unload(index);
        load(&b, &c, index);
    }
    (b, c)
}

fn load(b: &Broker, c: &TxnCoordinator, index: i32) {
    let p = b.topic(TXN_TOPIC).unwrap().partition(index).unwrap();
    let epoch = p.leader_state().unwrap().leader_epoch;
    c.load(index, INTERNAL_PARTITIONS, p, epoch).unwrap();
}

fn open(dir: &Path) -> (Arc<Broker>, TxnCoordinator) {
    open_with(dir, TxnConfig::default())
}

/// The coordinator epoch markers for `id` carry: the leader epoch of
/// its `__transaction_state` partition.
fn ce(b: &Broker, id: &str) -> i32 {
    let index = crate::metadata::coordinator_partition(id, INTERNAL_PARTITIONS).unwrap();
    b.topic(TXN_TOPIC).unwrap().partition(index).unwrap().leader_state().unwrap().leader_epoch
}

fn close(b: Arc<Broker>) {
    b.shutdown();
}

/// A state write refused (too few in-sync replicas) changes nothing:
/// the client's retry writes the change, and a coordinator loaded
/// from the log afterwards (a move) knows every partition of the
/// transaction. Memory used to change first, so the retry wrote
/// nothing and the moved coordinator left a partition hanging.
#[test]
fn a_refused_state_write_changes_nothing_and_its_retry_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let ids = ProducerIds::default();
    ids.add_block(0, 1000);
    let fx = Recorder::default();
    let (b, c) = open(dir.path());
    let (pid, epoch) = c.init_producer("t1", 60_000, None, &ids, &fx).unwrap();
    c.add_partitions("t1", pid, epoch, &[("a".to_string(), 0)]).unwrap();
    let index = crate::metadata::coordinator_partition("t1", INTERNAL_PARTITIONS).unwrap();
    let p = b.topic(TXN_TOPIC).unwrap().partition(index).unwrap();
    let min_isr = |n: usize| p.settings.write().unwrap().min_insync_replicas = n;
    min_isr(2);
    let more = [("b".to_string(), 1)];
    assert_eq!(c.add_partitions("t1", pid, epoch, &more), Err(TxnError::CoordinatorNotAvailable));
    assert_eq!(c.verify_produce("t1", pid, epoch, "b", 1), Err(TxnError::InvalidTxnState));
    assert_eq!(c.init_producer("t1", 60_000, None, &ids, &fx), Err(TxnError::CoordinatorNotAvailable));
    assert_eq!(c.describe("t1").unwrap().producer_epoch, epoch);
    min_isr(1);
    c.add_partitions("t1", pid, epoch, &more).unwrap();
    // The coordinator moves: a new one loads the log.
    c.unload(index);
    load(&b, &c, index);
    let m = c.describe("t1").unwrap();
    assert_eq!(m.state, TxnState::Ongoing);
    assert!(m.partitions.contains(&("b".to_string(), 1)), "{:?}", m.partitions);
    c.end("t1", pid, epoch, false, &fx).unwrap();
    assert_eq!(fx.markers.lock().unwrap().len(), 2, "a marker for each partition");
    close(b);
}

/// A transaction with staged offsets (TxnOffsetCommit) moves to another
/// coordinator before its EndTxn: the new one, loaded from the log, knows
/// the producer, its partitions and its offsets, and commits them all.
/// The stored record could not hold the offsets (JSON maps need string
/// keys; they were keyed by (topic, partition)), so it was written as a
/// tombstone: the moved coordinator did not know the id and answered
/// EndTxn with INVALID_PRODUCER_ID_MAPPING (docs/reliability.md, Found 1).
#[test]
fn a_moved_coordinator_commits_a_transaction_with_staged_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let ids = ProducerIds::default();
    ids.add_block(0, 1000);
    let fx = Recorder::default();
    let (b, c) = open(dir.path());
    let (pid, epoch) = c.init_producer("t1", 60_000, None, &ids, &fx).unwrap();
    c.add_partitions("t1", pid, epoch, &[("out".to_string(), 2)]).unwrap();
    c.add_offsets("t1", pid, epoch, "g").unwrap();
    let staged = vec![("in".to_string(), 0, committed(5)), ("in".to_string(), 1, committed(7))];
    c.stage_offsets("t1", pid, epoch, "g", staged).unwrap();
    // The coordinator moves: a new one loads the log.
    let index = crate::metadata::coordinator_partition("t1", INTERNAL_PARTITIONS).unwrap();
    c.unload(index);
    let moved = TxnCoordinator::open(TxnConfig::default());
    load(&b, &moved, index);
    let m = moved.describe("t1").expect("the moved coordinator knows the transactional id");
    assert_eq!((m.producer_id, m.producer_epoch, m.state), (pid, epoch, TxnState::Ongoing));
    assert!(m.partitions.contains(&("out".to_string(), 2)), "{:?}", m.partitions);
    moved.verify_produce("t1", pid, epoch, "out", 2).unwrap();
    moved.end("t1", pid, epoch, true, &fx).unwrap();
    assert_eq!(*fx.markers.lock().unwrap(), vec![("out".into(), 2, pid, epoch, true, ce(&b, "t1"))]);
    let commits = fx.offsets.lock().unwrap();
    assert_eq!(commits.len(), 1, "the input offsets are committed with the transaction");
    let got: Vec<(String, i32, i64)> = commits[0].1.iter().map(|(t, p, c)| (t.clone(), *p, c.offset)).collect();
    assert_eq!((commits[0].0.as_str(), got), ("g", vec![("in".into(), 0, 5), ("in".into(), 1, 7)]));
    drop(commits);
    // Reopened after the commit, it is still known (the Complete record).
    drop((c, moved));
    close(b);
    let (_b, c) = open(dir.path());
    assert_eq!(c.describe("t1").map(|m| (m.producer_id, m.state)), Some((pid, TxnState::CompleteCommit)));
}

#[test]
fn commit_writes_markers_then_offsets_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let ids = ProducerIds::default();
    ids.add_block(0, 1000);
    let fx = Recorder::default();
    let (b, c) = open(dir.path());
    let (pid, epoch) = c.init_producer("t1", 60_000, None, &ids, &fx).unwrap();
    let parts = vec![("a".to_string(), 0), ("b".to_string(), 1)];
    c.add_partitions("t1", pid, epoch, &parts).unwrap();
    // Offsets need AddOffsetsToTxn first.
    let early = c.stage_offsets("t1", pid, epoch, "g", vec![("in".into(), 0, committed(5))]);
    assert_eq!(early, Err(TxnError::InvalidTxnState));
    c.add_offsets("t1", pid, epoch, "g").unwrap();
    c.stage_offsets("t1", pid, epoch, "g", vec![("in".into(), 0, committed(5))]).unwrap();
    assert_eq!(c.describe("t1").unwrap().state, TxnState::Ongoing);
    c.verify_produce("t1", pid, epoch, "a", 0).unwrap();
    assert_eq!(c.verify_produce("t1", pid, epoch, "c", 0), Err(TxnError::InvalidTxnState));
    assert_eq!(c.end("t1", pid, epoch - 1, true, &fx), Err(TxnError::ProducerFenced));
    c.end("t1", pid, epoch, true, &fx).unwrap();
    assert_eq!(
        *fx.markers.lock().unwrap(),
        vec![("a".into(), 0, pid, epoch, true, ce(&b, "t1")), ("b".into(), 1, pid, epoch, true, ce(&b, "t1"))]
    );
    assert_eq!(fx.offsets.lock().unwrap()[0].0, "g");
    // A retried commit succeeds; an abort now does not fit.
    c.end("t1", pid, epoch, true, &fx).unwrap();
    assert_eq!(c.end("t1", pid, epoch, false, &fx), Err(TxnError::InvalidTxnState));
    drop(c);
    close(b);
    let (_b, c) = open(dir.path());
    let m = c.describe("t1").unwrap();
    assert_eq!((m.state, m.producer_id, m.partitions.len()), (TxnState::CompleteCommit, pid, 0));
}

#[test]
fn a_new_instance_fences_the_old_and_aborts_its_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let ids = ProducerIds::default();
    ids.add_block(0, 1000);
    let fx = Recorder::default();
    let (b, c) = open(dir.path());
    let (pid, e0) = c.init_producer("t", 60_000, None, &ids, &fx).unwrap();
    c.add_partitions("t", pid, e0, &[("a".to_string(), 0)]).unwrap();
    let (pid2, e1) = c.init_producer("t", 60_000, None, &ids, &fx).unwrap();
    assert_eq!(pid2, pid);
    assert!(e1 > e0 + 1, "the abort fenced with one bump, the new instance got another");
    assert_eq!(*fx.markers.lock().unwrap(), vec![("a".into(), 0, pid, e0 + 1, false, ce(&b, "t"))]);
    assert_eq!(c.add_partitions("t", pid, e0, &[("a".to_string(), 0)]), Err(TxnError::ProducerFenced));
    assert_eq!(c.init_producer("t", 0, None, &ids, &fx), Err(TxnError::InvalidTransactionTimeout));
    assert_eq!(c.init_producer("t", 1000, Some((pid, e0)), &ids, &fx), Err(TxnError::ProducerFenced));
}

#[test]
fn idle_transactional_ids_expire_but_open_transactions_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let ids = ProducerIds::default();
    ids.add_block(0, 1000);
    let fx = Recorder::default();
    let config = TxnConfig { id_expiration_ms: 0, ..TxnConfig::default() };
    let (b, c) = open_with(dir.path(), config.clone());
    c.init_producer("idle", 60_000, None, &ids, &fx).unwrap();
    let (pid, epoch) = c.init_producer("busy", 60_000, None, &ids, &fx).unwrap();
    c.add_partitions("busy", pid, epoch, &[("a".to_string(), 0)]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    c.tick(&fx);
    assert!(c.describe("idle").is_none());
    assert!(c.describe("busy").is_some());
    drop(c);
    close(b);
    let (_b, c) = open_with(dir.path(), config);
    assert!(c.describe("idle").is_none(), "the expiry is durable");
}

#[test]
fn timed_out_and_prepared_transactions_are_finished_by_the_ticker() {
    let dir = tempfile::tempdir().unwrap();
    let ids = ProducerIds::default();
    ids.add_block(0, 1000);
    let fx = Recorder::default();
    let (b, c) = open(dir.path());
    let (pid, epoch) = c.init_producer("t", 1, None, &ids, &fx).unwrap();
    c.add_partitions("t", pid, epoch, &[("a".to_string(), 0)]).unwrap();
    // Left in PrepareCommit, as by a crash between the two writes.
    let (pid2, epoch2) = c.init_producer("u", 60_000, None, &ids, &fx).unwrap();
    c.add_partitions("u", pid2, epoch2, &[("b".to_string(), 0)]).unwrap();
    {
        let mut txns = lock(&c.txns);
        c.begin_end(&mut txns, "u", true, false).unwrap();
    }
    drop(c);
    close(b);
    let (b, c) = open(dir.path());
    std::thread::sleep(std::time::Duration::from_millis(5));
    c.tick(&fx);
    let markers = fx.markers.lock().unwrap().clone();
    assert!(markers.contains(&("a".into(), 0, pid, epoch + 1, false, ce(&b, "t"))), "{markers:?}");
    assert!(markers.contains(&("b".into(), 0, pid2, epoch2, true, ce(&b, "u"))), "{markers:?}");
    assert_eq!(c.describe("t").unwrap().state, TxnState::CompleteAbort);
    assert_eq!(c.describe("u").unwrap().state, TxnState::CompleteCommit);
    assert_eq!(c.end("t", pid, epoch, true, &fx), Err(TxnError::ProducerFenced));
}

#[test]
fn a_new_coordinator_loads_open_and_half_ended_transactions_and_finishes_them() {
    let dir = tempfile::tempdir().unwrap();
    let ids = ProducerIds::default();
    ids.add_block(0, 1000);
    let fx = Recorder::default();
    let (b, old) = open(dir.path());
    let (pid, epoch) = old.init_producer("open", 60_000, None, &ids, &fx).unwrap();
    old.add_partitions("open", pid, epoch, &[("a".to_string(), 0)]).unwrap();
    let (pid2, epoch2) = old.init_producer("ending", 60_000, None, &ids, &fx).unwrap();
    old.add_partitions("ending", pid2, epoch2, &[("b".to_string(), 0)]).unwrap();
    {
        // The old coordinator dies between PrepareCommit and its markers.
        let mut txns = lock(&old.txns);
        old.begin_end(&mut txns, "ending", true, false).unwrap();
    }
    // It loses its partitions: its ids are no longer served there.
    for index in (0..).take(INTERNAL_PARTITIONS) {
        old.unload(index);
    }
    assert!(old.describe("open").is_none() && !old.serves("open"));
    assert_eq!(old.add_partitions("open", pid, epoch, &[]), Err(TxnError::NotCoordinator));
    assert_eq!(old.init_producer("new", 60_000, None, &ids, &fx), Err(TxnError::NotCoordinator));
    assert_eq!(old.end("open", pid, epoch, true, &fx), Err(TxnError::NotCoordinator));

    // Another coordinator loads the same partitions (as a new leader).
    let new = TxnCoordinator::open(TxnConfig::default());
    for index in (0..).take(INTERNAL_PARTITIONS) {
        load(&b, &new, index);
    }
    let m = new.describe("open").unwrap();
    assert_eq!((m.state, m.producer_epoch, m.partitions.len()), (TxnState::Ongoing, epoch, 1));
    new.verify_produce("open", pid, epoch, "a", 0).unwrap();
    assert_eq!(new.describe("ending").unwrap().state, TxnState::PrepareCommit);
    // The half-ended one is finished by re-sending its markers; the
    // open one carries on under the new coordinator.
    new.tick(&fx);
    assert_eq!(new.describe("ending").unwrap().state, TxnState::CompleteCommit);
    assert!(fx.markers.lock().unwrap().contains(&("b".into(), 0, pid2, epoch2, true, ce(&b, "ending"))));
    new.end("open", pid, epoch, false, &fx).unwrap();
    assert!(fx.markers.lock().unwrap().contains(&("a".into(), 0, pid, epoch, false, ce(&b, "open"))));
    assert_eq!(new.describe("open").unwrap().state, TxnState::CompleteAbort);
}

#[test]
fn a_deposed_coordinators_markers_are_refused_once_its_successor_wrote_one() {
    let dir = tempfile::tempdir().unwrap();
    let ids = ProducerIds::default();
    ids.add_block(0, 1000);
    let fx = Recorder::default();
    let (b, old) = open(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(b.create_topic("d", Some(1), &BTreeMap::new(), false)).unwrap();
    let data = b.topic("d").unwrap().partition(0).unwrap();
    let (pid, epoch) = old.init_producer("x", 60_000, None, &ids, &fx).unwrap();
    old.add_partitions("x", pid, epoch, &[("d".to_string(), 0)]).unwrap();
    let loaded = ce(&b, "x");
    assert_eq!(
        old.loaded_epoch(crate::metadata::coordinator_partition("x", INTERNAL_PARTITIONS).unwrap()),
        Some(loaded)
    );

    // A successor loads the same `__transaction_state` partitions one
    // leader epoch later (as after a leader change; the old one has
    // not heard yet) and commits, through the partition leader (here,
    // this broker's own `TxnEffects`).
    let new = TxnCoordinator::open(TxnConfig::default());
    for index in (0..).take(INTERNAL_PARTITIONS) {
        let p = b.topic(TXN_TOPIC).unwrap().partition(index).unwrap();
        new.load(index, INTERNAL_PARTITIONS, p, loaded + 1).unwrap();
    }
    new.end("x", pid, epoch, true, &*b).unwrap();
    assert_eq!(data.log_end_offset(), 1, "the commit marker");

    // The deposed coordinator tries to abort it: the leader refuses its
    // marker (TRANSACTION_COORDINATOR_FENCED), it answers NOT_COORDINATOR.
    assert_eq!(old.end("x", pid, epoch, false, &*b), Err(TxnError::NotCoordinator));
    assert_eq!(data.log_end_offset(), 1, "no abort marker after the commit");
    let refused = TxnEffects::write_marker(&*b, "d", 0, pid, epoch, false, loaded);
    assert!(matches!(refused, Err(BrokerError::Txn(TxnError::CoordinatorFenced))), "{refused:?}");
    // The successor's retry (same coordinator epoch) and a newer one pass.
    TxnEffects::write_marker(&*b, "d", 0, pid, epoch, true, loaded + 1).unwrap();
    TxnEffects::write_marker(&*b, "d", 0, pid, epoch, true, loaded + 2).unwrap();
    assert_eq!(data.log_end_offset(), 3);
    // The epoch is part of the producer state a restart rebuilds from
    // the markers themselves (no snapshot left).
    let log_dir = data.log().dir().to_path_buf();
    drop((old, new, data));
    close(b);
    std::fs::remove_file(log_dir.join("producers.json")).unwrap();
    let (b, _c) = open(dir.path());
    let refused = TxnEffects::write_marker(&*b, "d", 0, pid, epoch, false, loaded + 1);
    assert!(matches!(refused, Err(BrokerError::Txn(TxnError::CoordinatorFenced))), "{refused:?}");
    TxnEffects::write_marker(&*b, "d", 0, pid, epoch, false, loaded + 2).unwrap();
}
