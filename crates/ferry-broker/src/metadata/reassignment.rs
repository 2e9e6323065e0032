//! Partition reassignment (KIP-455), the rules both controllers share.
//!
//! A reassignment to `target` sets the partition's replicas to target ∪
//! original (target first), naming the `adding` (target − original) and
//! `removing` (original − target) replicas. The new replicas are hosted by
//! every node's reconcile and catch up through the ordinary replica
//! fetchers; their leader adds them to the ISR (AlterPartition) once they
//! have caught up. When every adding replica is in the ISR the controller
//! completes it: replicas = target, ISR = ISR − removing, and a new leader
//! from the target (first in target order, in the ISR and unfenced) if
//! the leader is being removed. A reassignment that only removes
//! replicas completes at once. Cancelling reverts to the original
//! replicas. A new target while one is in progress starts from the
//! original replicas again, as Kafka does.

use super::{MetadataError, MetadataImage, MetadataRecord, PartitionInfo};

/// The record that starts, changes or cancels (`target` = `None`) the
/// reassignment of `topic`-`partition`, or `None` when nothing changes
/// (the target is the current replica list). A reassignment that can
/// complete at once (it adds nothing) is returned completed.
pub fn reassign(
    image: &MetadataImage,
    topic: &str,
    partition: i32,
    target: Option<&[i32]>,
) -> Result<Option<MetadataRecord>, MetadataError> {
    let t = image.topic(topic).ok_or_else(|| MetadataError::UnknownTopic(topic.to_string()))?;
    let p = usize::try_from(partition)
        .ok()
        .and_then(|i| t.partitions.get(i))
        .ok_or(MetadataError::UnknownPartition(t.id, partition))?;
    let original = p.original_replicas();
    let Some(target) = target else {
        if !p.reassigning() {
            return Err(MetadataError::NoReassignmentInProgress(format!("{topic}-{partition}")));
        }
        return revert(image, t.id, partition, p, &original).map(Some);
    };
    check_target(image, p, target)?;
    if !p.reassigning() && p.replicas == target {
        return Ok(None);
    }
    if p.reassigning() && original == target {
        return revert(image, t.id, partition, p, &original).map(Some);
    }
    let mut replicas = target.to_vec();
    replicas.extend(original.iter().copied().filter(|r| !target.contains(r)));
    let adding: Vec<i32> = target.iter().copied().filter(|r| !original.contains(r)).collect();
    let removing: Vec<i32> = original.iter().copied().filter(|r| !target.contains(r)).collect();
    // Replicas a previous target added and this one drops leave the ISR.
    let isr: Vec<i32> = p.isr.iter().copied().filter(|r| replicas.contains(r)).collect();
    let leader = if replicas.contains(&p.leader) { p.leader } else { elect(image, &replicas, &isr) };
    let started =
        PartitionInfo { replicas, isr, leader, adding_replicas: adding, removing_replicas: removing, ..p.clone() };
    Ok(Some(completion(image, t.id, partition, &started).unwrap_or_else(|| record(t.id, partition, &started))))
}

/// The record completing the reassignment of partition `partition` of
/// topic `topic_id` if it can complete now: every adding replica in the
/// ISR, an ISR left once the removing replicas go, and a leader in the
/// target (the current one, or an unfenced ISR member).
pub fn complete(image: &MetadataImage, topic_id: uuid::Uuid, partition: i32) -> Option<MetadataRecord> {
    let t = image.topic_by_id(topic_id)?;
    let p = t.partitions.get(usize::try_from(partition).ok()?)?;
    completion(image, topic_id, partition, p)
}

/// Completion records for every reassignment that can complete now.
pub fn complete_all(image: &MetadataImage) -> Vec<MetadataRecord> {
    image
        .topics
        .values()
        .flat_map(|t| {
            (0..).zip(&t.partitions).filter(|(_, p)| p.reassigning()).filter_map(|(i, p)| completion(image, t.id, i, p))
        })
        .collect()
}

fn completion(
    image: &MetadataImage,
    topic_id: uuid::Uuid,
    partition: i32,
    p: &PartitionInfo,
) -> Option<MetadataRecord> {
    if !p.reassigning() || !p.adding_replicas.iter().all(|r| p.isr.contains(r)) {
        return None;
    }
    let target = p.target_replicas();
    // The ISR in target order, so the next election prefers the target's order.
    let isr: Vec<i32> = target.iter().copied().filter(|r| p.isr.contains(r)).collect();
    if isr.is_empty() {
        return None;
    }
    let live = |n: &i32| image.nodes.get(n).is_some_and(|node| !node.fenced);
    let leader = if target.contains(&p.leader) && live(&p.leader) { p.leader } else { elect(image, &target, &isr) };
    if leader < 0 {
        return None;
    }
    let done = PartitionInfo {
        replicas: target,
        isr,
        leader,
        adding_replicas: Vec::new(),
        removing_replicas: Vec::new(),
        ..p.clone()
    };
    Some(record(topic_id, partition, &done))
}

/// Back to the original replicas: the ISR keeps only them; the leader
/// stays if it is one of them, else the first original replica in the ISR.
fn revert(
    image: &MetadataImage,
    topic_id: uuid::Uuid,
    partition: i32,
    p: &PartitionInfo,
    original: &[i32],
) -> Result<MetadataRecord, MetadataError> {
    let isr: Vec<i32> = p.isr.iter().copied().filter(|r| original.contains(r)).collect();
    if isr.is_empty() {
        return Err(MetadataError::InvalidReplicaAssignment(format!(
            "cancelling would leave partition {partition} without an in-sync replica; reassign it instead"
        )));
    }
    let leader = if original.contains(&p.leader) { p.leader } else { elect(image, original, &isr) };
    let reverted = PartitionInfo {
        replicas: original.to_vec(),
        isr,
        leader,
        adding_replicas: Vec::new(),
        removing_replicas: Vec::new(),
        ..p.clone()
    };
    Ok(record(topic_id, partition, &reverted))
}

/// A target Kafka accepts: not empty, no node twice, every node
/// registered, and no node being decommissioned unless it already holds
/// the partition.
fn check_target(image: &MetadataImage, p: &PartitionInfo, target: &[i32]) -> Result<(), MetadataError> {
    let bad = |why: String| Err(MetadataError::InvalidReplicaAssignment(why));
    if target.is_empty() {
        return bad("the target has no replicas".into());
    }
    for (i, node) in target.iter().enumerate() {
        if target[..i].contains(node) {
            return bad(format!("node {node} appears twice"));
        }
        if !image.nodes.contains_key(node) {
            return bad(format!("node {node} is not registered"));
        }
        if image.decommissioning.contains(node) && !p.original_replicas().contains(node) {
            return bad(format!("node {node} is being decommissioned"));
        }
    }
    Ok(())
}

/// The first of `candidates` in the ISR on an unfenced node, else -1
/// (clean election only).
fn elect(image: &MetadataImage, candidates: &[i32], isr: &[i32]) -> i32 {
    candidates
        .iter()
        .copied()
        .find(|n| isr.contains(n) && image.nodes.get(n).is_some_and(|node| !node.fenced))
        .unwrap_or(-1)
}

fn record(topic_id: uuid::Uuid, partition: i32, p: &PartitionInfo) -> MetadataRecord {
    MetadataRecord::PartitionReassignment {
        topic_id,
        partition,
        replicas: p.replicas.clone(),
        adding_replicas: p.adding_replicas.clone(),
        removing_replicas: p.removing_replicas.clone(),
        leader: p.leader,
        isr: p.isr.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use uuid::Uuid;

    use super::*;
    use crate::metadata::NodeInfo;

    fn image() -> (MetadataImage, Uuid) {
        let mut image = MetadataImage::default();
        let id = Uuid::from_u128(7);
        let node = |id| NodeInfo {
            id,
            incarnation: Uuid::from_u128(id as u128),
            listeners: BTreeMap::new(),
            rack: None,
            voter: true,
            fenced: false,
        };
        let mut records: Vec<MetadataRecord> = (1..=4).map(|n| MetadataRecord::RegisterNode(node(n))).collect();
        records.push(MetadataRecord::CreateTopic {
            name: "t".into(),
            id,
            internal: false,
            configs: BTreeMap::new(),
            replicas: vec![vec![1, 2, 3]],
        });
        image.apply_batch(1, &records).unwrap();
        (image, id)
    }

    fn apply(image: &mut MetadataImage, record: MetadataRecord) -> PartitionInfo {
        let index = image.applied_index + 1;
        image.apply(index, &record).unwrap();
        image.partition("t", 0).unwrap().clone()
    }

    #[test]
    fn a_move_adds_first_and_completes_once_the_new_replica_is_in_sync() {
        let (mut image, id) = image();
        let start = reassign(&image, "t", 0, Some(&[2, 3, 4])).unwrap().unwrap();
        let p = apply(&mut image, start);
        assert_eq!(
            (p.replicas.clone(), p.adding_replicas.clone(), p.removing_replicas.clone()),
            (vec![2, 3, 4, 1], vec![4], vec![1])
        );
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (1, 0, 1), "adding replicas keeps the leader epoch");
        assert!(complete(&image, id, 0).is_none(), "4 is not in the ISR yet");
        assert!(complete_all(&image).is_empty());
        // The leader adds 4 to the ISR.
        let expand = crate::metadata::alter_partition(&image, 1, id, 0, 0, 1, &[1, 2, 3, 4]).unwrap();
        apply(&mut image, expand);
        let done = complete(&image, id, 0).unwrap();
        assert_eq!(complete_all(&image), vec![done.clone()]);
        let p = apply(&mut image, done);
        assert_eq!((p.replicas.clone(), p.isr.clone(), p.leader), (vec![2, 3, 4], vec![2, 3, 4], 2));
        assert!(!p.reassigning());
        assert_eq!((p.leader_epoch, p.partition_epoch), (1, 3));
    }

    #[test]
    fn cancelling_reverts_and_bad_targets_are_refused() {
        let (mut image, _) = image();
        assert!(matches!(reassign(&image, "t", 0, None), Err(MetadataError::NoReassignmentInProgress(_))));
        assert!(matches!(reassign(&image, "x", 0, Some(&[1])), Err(MetadataError::UnknownTopic(_))));
        assert!(matches!(reassign(&image, "t", 1, Some(&[1])), Err(MetadataError::UnknownPartition(..))));
        for bad in [&[][..], &[1, 1, 2], &[1, 2, 9]] {
            assert!(
                matches!(reassign(&image, "t", 0, Some(bad)), Err(MetadataError::InvalidReplicaAssignment(_))),
                "{bad:?}"
            );
        }
        assert_eq!(reassign(&image, "t", 0, Some(&[1, 2, 3])).unwrap(), None, "already there");
        let before = image.partition("t", 0).unwrap().clone();
        let start = reassign(&image, "t", 0, Some(&[1, 2, 4])).unwrap().unwrap();
        apply(&mut image, start);
        let cancel = reassign(&image, "t", 0, None).unwrap().unwrap();
        let p = apply(&mut image, cancel);
        assert_eq!((p.replicas.clone(), p.isr.clone(), p.leader), (before.replicas, before.isr, 1));
        assert!(!p.reassigning());
        assert_eq!(p.leader_epoch, 1, "dropping the added replica bumps the leader epoch");
        // A decommissioning node is no target.
        apply(&mut image, MetadataRecord::DecommissionNode { node_id: 4 });
        assert!(reassign(&image, "t", 0, Some(&[1, 2, 4])).is_err());
    }

    #[test]
    fn removing_only_completes_at_once_and_moves_the_leader() {
        let (mut image, _) = image();
        let r = reassign(&image, "t", 0, Some(&[3, 2])).unwrap().unwrap();
        let p = apply(&mut image, r);
        assert_eq!((p.replicas.clone(), p.isr.clone(), p.leader, p.leader_epoch), (vec![3, 2], vec![3, 2], 3, 1));
        assert!(!p.reassigning());
        // A reorder changes only the order.
        let r = reassign(&image, "t", 0, Some(&[2, 3])).unwrap().unwrap();
        let p = apply(&mut image, r);
        assert_eq!((p.replicas.clone(), p.leader, p.leader_epoch), (vec![2, 3], 3, 1));
    }
}
