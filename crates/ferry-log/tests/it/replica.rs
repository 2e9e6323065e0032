//! Follower appends (`append_replicated`) and the leader epoch cache.

use ferry_log::{EpochEntry, LogError};
use ferry_records::batch::{BatchHeader, split};
use proptest::prelude::*;

use crate::{manager, open, read_all, small_config, value_batch};

fn entry(epoch: i32, start_offset: u64) -> EpochEntry {
    EpochEntry { epoch, start_offset }
}

/// Everything in `log` as stored, from its start.
fn all_bytes(log: &ferry_log::Log) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while let Some(slice) = log.read(offset, 1 << 20).unwrap() {
        out.extend(slice.to_vec().unwrap());
        offset = slice.end_offset;
    }
    out
}

#[test]
fn leader_stamps_epochs_and_a_follower_copies_bytes_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager();
    let leader = open(&m, &dir.path().join("leader"), small_config());
    leader.append_as_leader(&value_batch("a", 1), 3).unwrap();
    leader.append_as_leader(&value_batch("b", 2), 3).unwrap();
    leader.append_as_leader(&value_batch("c", 3), 5).unwrap();
    assert_eq!(leader.epoch_entries(), vec![entry(3, 0), entry(5, 2)]);
    let bytes = all_bytes(&leader);
    let epochs: Vec<i32> = split(&bytes).unwrap().iter().map(|(h, _)| h.partition_leader_epoch).collect();
    assert_eq!(epochs, [3, 3, 5]);

    let follower = open(&m, &dir.path().join("follower"), small_config());
    let info = follower.append_replicated(&bytes).unwrap();
    assert_eq!((info.base_offset, info.last_offset, info.records), (0, 2, 3));
    assert_eq!(all_bytes(&follower), bytes);
    assert_eq!(follower.epoch_entries(), leader.epoch_entries());
    assert_eq!(follower.end_offset_for_epoch(3), Some((3, 2)));
    assert_eq!(follower.end_offset_for_epoch(5), Some((5, 3)));
    assert_eq!(follower.end_offset_for_epoch(4), Some((3, 2)));
    assert_eq!(follower.end_offset_for_epoch(6), None);
}

#[test]
fn replicated_offsets_must_continue_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager();
    let leader = open(&m, &dir.path().join("leader"), small_config());
    for v in ["a", "b", "c", "d"] {
        leader.append_as_leader(&value_batch(v, 1), 1).unwrap();
    }
    let bytes = all_bytes(&leader);
    let batches: Vec<&[u8]> = split(&bytes).unwrap().into_iter().map(|(_, b)| b).collect();
    let follower = open(&m, &dir.path().join("follower"), small_config());
    follower.append_replicated(batches[0]).unwrap();
    // A batch already held is refused, and so is one out of order.
    assert!(matches!(follower.append_replicated(batches[0]), Err(LogError::UnexpectedOffset { expected: 1, got: 0 })));
    let mut backwards = batches[2].to_vec();
    backwards.extend_from_slice(batches[1]);
    assert!(matches!(follower.append_replicated(&backwards), Err(LogError::UnexpectedOffset { .. })));
    assert_eq!(follower.next_offset(), 1);
    // A gap (the leader's log was compacted) is taken as it is.
    follower.append_replicated(batches[3]).unwrap();
    assert_eq!(follower.next_offset(), 4);
    let offsets: Vec<u64> = read_all(&follower).into_iter().map(|r| r.0).collect();
    assert_eq!(offsets, [0, 3]);
    // A damaged batch is refused whole.
    let mut bad = batches[3].to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(matches!(follower.append_replicated(&bad), Err(LogError::CorruptBatch(_))));
}

#[test]
fn truncation_and_restart_keep_the_epoch_cache_with_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager();
    let log = open(&m, dir.path(), small_config());
    for (i, epoch) in [1, 1, 2, 2, 4].into_iter().enumerate() {
        log.append_as_leader(&value_batch(&format!("r{i}"), 1), epoch).unwrap();
    }
    assert_eq!(log.epoch_entries(), vec![entry(1, 0), entry(2, 2), entry(4, 4)]);
    assert_eq!(log.truncate_to(3).unwrap(), 3);
    assert_eq!(log.epoch_entries(), vec![entry(1, 0), entry(2, 2)]);
    assert_eq!(log.end_offset_for_epoch(2), Some((2, 3)));
    // A new leader's first append after the truncation.
    log.append_as_leader(&value_batch("x", 1), 6).unwrap();
    log.close().unwrap();
    drop(log);
    let m = manager();
    let log = open(&m, dir.path(), small_config());
    assert_eq!(log.epoch_entries(), vec![entry(1, 0), entry(2, 2), entry(6, 3)]);
    assert_eq!(log.latest_epoch(), Some(6));
    // DeleteRecords moves the first entry's start with the log start.
    log.delete_records_before(1).unwrap();
    assert_eq!(log.epoch_entries()[0], entry(1, 1));
    // Truncating to the very start empties the cache.
    log.truncate_to(0).unwrap();
    assert_eq!(log.epoch_entries(), vec![]);
    assert_eq!(log.end_offset_for_epoch(1), None);
}

/// A leader that records its epoch and is deposed before it appends leaves
/// that epoch at its log end. As a follower it must drop it when told to
/// truncate there (found by the replication simulation, seed 16): else its
/// OffsetsForLeaderEpoch question names that epoch forever.
#[test]
fn truncating_to_the_log_end_drops_an_epoch_that_starts_there() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager();
    let log = open(&m, dir.path(), small_config());
    for v in ["a", "b"] {
        log.append_as_leader(&value_batch(v, 1), 0).unwrap();
    }
    log.assign_epoch(3).unwrap();
    assert_eq!(log.epoch_entries(), vec![entry(0, 0), entry(3, 2)]);
    assert_eq!(log.truncate_to(5).unwrap(), 2, "nothing past the end to cut");
    assert_eq!(log.epoch_entries(), vec![entry(0, 0)]);
    assert_eq!(log.latest_epoch(), Some(0));
    assert_eq!(log.next_offset(), 2);
}

#[test]
fn plain_appends_leave_epochs_alone() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager();
    let log = open(&m, dir.path(), small_config());
    let sent = value_batch("a", 1);
    log.append(&sent).unwrap();
    assert_eq!(log.epoch_entries(), vec![]);
    let stored = all_bytes(&log);
    assert_eq!(BatchHeader::parse(&stored).unwrap().partition_leader_epoch, -1);
}

#[test]
fn a_leader_reads_for_followers_up_to_its_log_end_before_the_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager();
    let config = ferry_log::LogConfig { flush: ferry_log::FlushPolicy::Always, ..small_config() };
    let log = open(&m, dir.path(), config);
    for i in 0..20u64 {
        log.append_as_leader(&value_batch(&format!("v{i}"), 1), 0).unwrap();
        // Right after the append, whether or not the flusher got to it:
        // the batch is there for a follower, and readers still stop at
        // the durable end.
        let slice = log.read_written(i, 1 << 20).unwrap().expect("the batch just written");
        let got = split(&slice.to_vec().unwrap()).unwrap().into_iter().map(|(h, _)| h.base_offset).collect::<Vec<_>>();
        assert_eq!(got, [i]);
        assert!(log.high_watermark() <= log.durable_offset());
    }
    // From the start, across segments, everything written comes back.
    let mut offset = 0;
    let mut bytes = Vec::new();
    while let Some(slice) = log.read_written(offset, 300).unwrap() {
        bytes.extend(slice.to_vec().unwrap());
        offset = split(&bytes).unwrap().last().unwrap().0.next_offset();
    }
    assert_eq!(offset, 20);
    assert_eq!(log.read_written(20, 100).unwrap().map(|s| s.len), None, "at the log end: nothing");
    assert!(matches!(log.read_written(21, 100), Err(LogError::OffsetOutOfRange { .. })));
    log.flush_to(20).unwrap();
    assert_eq!(all_bytes(&log), bytes, "the same bytes readers get once durable");
}

#[test]
fn restart_at_empties_the_log_and_continues_from_a_later_offset() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager();
    let leader = open(&m, &dir.path().join("leader"), small_config());
    for i in 0..12 {
        leader.append_as_leader(&value_batch(&format!("r{i}"), 1), 2).unwrap();
    }
    leader.delete_records_before(10).unwrap();
    let tail = all_bytes(&leader);
    assert_eq!(split(&tail).unwrap()[0].0.base_offset, 10);

    // A follower that has 0..4 (epoch 1) while the leader starts at 10.
    let follower = open(&m, &dir.path().join("follower"), small_config());
    for i in 0..4 {
        follower.append_as_leader(&value_batch(&format!("old{i}"), 1), 1).unwrap();
    }
    follower.restart_at(10).unwrap();
    assert_eq!((follower.log_start_offset(), follower.next_offset(), follower.high_watermark()), (10, 10, 10));
    assert_eq!(follower.epoch_entries(), vec![]);
    assert_eq!(read_all(&follower), vec![]);
    follower.append_replicated(&tail).unwrap();
    assert_eq!(all_bytes(&follower), tail);
    assert_eq!(follower.epoch_entries(), vec![entry(2, 10)]);
    follower.close().unwrap();
    drop(follower);
    // It survives a restart as it is.
    let m = manager();
    let follower = open(&m, &dir.path().join("follower"), small_config());
    assert_eq!((follower.log_start_offset(), follower.next_offset()), (10, 12));
    assert_eq!(all_bytes(&follower), tail);
    let values: Vec<String> = read_all(&follower).into_iter().filter_map(|r| r.2).collect();
    assert_eq!(values, ["r10", "r11"]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// A follower that copies the leader's log in arbitrary chunks, losing
    /// its tail now and then (truncation to a point it then fetches again),
    /// ends byte-identical to the leader with the same epoch cache, and
    /// answers OffsetsForLeaderEpoch like the leader for every epoch.
    #[test]
    fn follower_converges_on_the_leader(
        epochs in prop::collection::vec(0i32..4, 1..30),
        chunks in prop::collection::vec(1usize..6, 1..30),
        cuts in prop::collection::vec(any::<bool>(), 1..30),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let m = manager();
        let leader = open(&m, &dir.path().join("leader"), small_config());
        let mut epoch = 0;
        for (i, bump) in epochs.iter().enumerate() {
            epoch += bump;
            leader.append_as_leader(&value_batch(&format!("v{i}"), 1), epoch).unwrap();
        }
        let follower = open(&m, &dir.path().join("follower"), small_config());
        let mut i = 0;
        while follower.next_offset() < leader.next_offset() {
            let cut = cuts[i % cuts.len()] && follower.next_offset() > 0;
            // A step that loses a batch fetches one more than it lost, so
            // every step makes progress (else cuts=[true], chunks=[1] loops).
            let n = chunks[i % chunks.len()] + usize::from(cut);
            if cut {
                let to = follower.next_offset() - 1;
                follower.truncate_to(to).unwrap();
            }
            let mut buf = Vec::new();
            let mut at = follower.next_offset();
            for _ in 0..n {
                let Some(s) = leader.read(at, 1).unwrap() else { break };
                buf.extend(s.to_vec().unwrap());
                at = s.end_offset;
            }
            follower.append_replicated(&buf).unwrap();
            i += 1;
        }
        prop_assert_eq!(all_bytes(&follower), all_bytes(&leader));
        prop_assert_eq!(follower.epoch_entries(), leader.epoch_entries());
        for e in -1..=epoch + 1 {
            prop_assert_eq!(follower.end_offset_for_epoch(e), leader.end_offset_for_epoch(e));
        }
    }
}
