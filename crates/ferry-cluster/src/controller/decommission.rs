//! Moving replicas off decommissioning nodes, and completing
//! reassignments, as time passes (the controller's tick) and as ISRs grow.
//!
//! Each replica on a leaving node is replaced, in place in the replica
//! list (so preferred leaders stay spread), by a live node that is not
//! leaving and does not hold the partition: with racks on every node, one
//! in the leaving node's rack first, else one in a rack the partition
//! does not use yet, else any; among those the node holding the fewest
//! replicas (the pending moves counted), then placement order. A
//! reassignment in progress whose target holds the node (adding or
//! keeping it) is retargeted the same way; a partition with no candidate
//! node (every live node holds it) waits until a node joins.

use std::collections::BTreeMap;

use ferry_broker::metadata::{MetadataError, MetadataImage, complete_reassignments, reassign};

use super::draft::Draft;
use super::placement::NodeOrder;

/// Whether a tick has anything to do here: a node is leaving, or a
/// reassignment is in progress.
pub(super) fn due(image: &MetadataImage) -> bool {
    !image.decommissioning.is_empty()
        || image.topics.values().any(|t| t.partitions.iter().any(ferry_broker::metadata::PartitionInfo::reassigning))
}

/// Completes every reassignment that can complete, then starts the moves
/// off every decommissioning node that can start now (in that order: a
/// completion can free a node to move to; a move that can complete at
/// once is returned completed).
pub(super) fn progress(draft: &mut Draft) {
    for record in complete_reassignments(draft.image()) {
        let shown = format!("{record:?}");
        match draft.push(record) {
            Ok(()) => tracing::info!(record = %shown, "reassignment complete"),
            Err(e) => tracing::warn!(record = %shown, error = %e, "reassignment completion refused"),
        }
    }
    let leaving: Vec<i32> = draft.image().decommissioning.iter().copied().collect();
    for node in leaving {
        move_off(draft, node);
    }
}

/// Retargets each partition whose target still holds `node` (no
/// reassignment, or one keeping or adding it) to a replacement.
fn move_off(draft: &mut Draft, node: i32) {
    let waiting: Vec<(String, i32, Vec<i32>, Vec<i32>)> = draft
        .image()
        .partitions_on(node)
        .filter(|(_, _, p)| !p.removing_replicas.contains(&node))
        .map(|(t, i, p)| (t.name.clone(), i, p.replicas.clone(), p.target_replicas()))
        .collect();
    for (topic, partition, replicas, current_target) in waiting {
        let Some(replacement) = replacement(draft.image(), node, &replicas) else {
            tracing::debug!(%topic, partition, node, "no node to move the replica to yet");
            continue;
        };
        let target: Vec<i32> = current_target.iter().map(|r| if *r == node { replacement } else { *r }).collect();
        let started = reassign(draft.image(), &topic, partition, Some(&target))
            .and_then(|record| record.map_or(Ok(()), |r| draft.push(r)));
        match started {
            Ok(()) => {
                tracing::info!(%topic, partition, from = node, to = replacement, "moving a replica off a decommissioning node");
            }
            Err(e) => tracing::warn!(%topic, partition, node, error = %e, "cannot move replica"),
        }
    }
}

/// The node to take over `node`'s replica of a partition on `replicas`.
fn replacement(image: &MetadataImage, node: i32, replicas: &[i32]) -> Option<i32> {
    let order = NodeOrder::live(image);
    let candidates: Vec<i32> = order.ids().iter().copied().filter(|n| !replicas.contains(n)).collect();
    if candidates.is_empty() {
        return None;
    }
    let rack = |n: i32| image.nodes.get(&n).and_then(|i| i.rack.clone());
    let preferred: Vec<i32> = if order.rack_aware() {
        let same_rack: Vec<i32> = candidates.iter().copied().filter(|c| rack(*c) == rack(node)).collect();
        let used: Vec<Option<String>> = replicas.iter().filter(|r| **r != node).map(|r| rack(*r)).collect();
        let new_rack: Vec<i32> = candidates.iter().copied().filter(|c| !used.contains(&rack(*c))).collect();
        if !same_rack.is_empty() {
            same_rack
        } else if !new_rack.is_empty() {
            new_rack
        } else {
            candidates
        }
    } else {
        candidates
    };
    let load = load(image);
    preferred.into_iter().min_by_key(|n| (load.get(n).copied().unwrap_or(0), order.position(*n)))
}

/// Replicas per node, reassignments in progress included.
fn load(image: &MetadataImage) -> BTreeMap<i32, usize> {
    let mut load = BTreeMap::new();
    for p in image.topics.values().flat_map(|t| &t.partitions) {
        for r in &p.replicas {
            *load.entry(*r).or_default() += 1;
        }
    }
    load
}

/// Errors a decommission request itself can have (the moves never fail it).
pub(super) fn start(draft: &mut Draft, node: i32) -> Result<(), MetadataError> {
    if let Some(record) = ferry_broker::metadata::decommission(draft.image(), node)? {
        draft.push(record)?;
        tracing::info!(node, "decommissioning node");
    }
    progress(draft);
    Ok(())
}
