//! AlterPartition (KIP-497): a partition leader asks the controller to
//! change the partition's ISR. The request carries the leader epoch and
//! partition epoch the leader saw, so a change based on an outdated view
//! (a newer leader, or an ISR changed meanwhile) is refused rather than
//! applied over newer state.

use uuid::Uuid;

use super::{MetadataError, MetadataImage, MetadataRecord};

/// Checks an ISR change from node `from` against `image` and returns the
/// record that makes it. Refused: a partition `from` does not lead in
/// `leader_epoch`, a `partition_epoch` other than the image's, an ISR
/// without the leader or with a non-replica, or one adding a fenced node.
pub fn alter_partition(
    image: &MetadataImage,
    from: i32,
    topic_id: Uuid,
    partition: i32,
    leader_epoch: i32,
    partition_epoch: i32,
    isr: &[i32],
) -> Result<MetadataRecord, MetadataError> {
    let topic = image.topic_by_id(topic_id).ok_or(MetadataError::UnknownTopicId(topic_id))?;
    let p = usize::try_from(partition)
        .ok()
        .and_then(|i| topic.partitions.get(i))
        .ok_or(MetadataError::UnknownPartition(topic_id, partition))?;
    if p.leader != from || p.leader_epoch != leader_epoch {
        return Err(MetadataError::StaleEpoch(format!(
            "node {from} in leader epoch {leader_epoch} does not lead {}-{partition} (leader {}, epoch {})",
            topic.name, p.leader, p.leader_epoch
        )));
    }
    if p.partition_epoch != partition_epoch {
        return Err(MetadataError::StaleEpoch(format!(
            "partition epoch {partition_epoch} of {}-{partition} is not the current {}",
            topic.name, p.partition_epoch
        )));
    }
    let mut seen = Vec::with_capacity(isr.len());
    for &r in isr {
        if !p.replicas.contains(&r) || seen.contains(&r) {
            return Err(MetadataError::InvalidReplicaAssignment(format!(
                "ISR member {r} is not a replica, or repeated"
            )));
        }
        let fenced = image.nodes.get(&r).is_none_or(|n| n.fenced);
        if fenced && !p.isr.contains(&r) {
            return Err(MetadataError::InvalidReplicaAssignment(format!("node {r} is fenced and cannot join the ISR")));
        }
        seen.push(r);
    }
    if !isr.contains(&from) {
        return Err(MetadataError::InvalidReplicaAssignment("the ISR must hold its leader".into()));
    }
    Ok(MetadataRecord::PartitionChange {
        topic_id,
        partition,
        leader: from,
        isr: isr.to_vec(),
        replicas: None,
        elr: None,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::metadata::NodeInfo;

    fn image() -> (MetadataImage, Uuid) {
        let mut image = MetadataImage::default();
        let id = Uuid::new_v4();
        let node = |id| NodeInfo {
            id,
            incarnation: Uuid::new_v4(),
            listeners: BTreeMap::new(),
            rack: None,
            voter: true,
            fenced: false,
        };
        let records = vec![
            MetadataRecord::RegisterNode(node(1)),
            MetadataRecord::RegisterNode(node(2)),
            MetadataRecord::RegisterNode(node(3)),
            MetadataRecord::CreateTopic {
                name: "t".into(),
                id,
                internal: false,
                configs: BTreeMap::new(),
                replicas: vec![vec![1, 2, 3]],
            },
        ];
        image.apply_batch(1, &records).unwrap();
        (image, id)
    }

    #[test]
    fn only_the_leader_with_current_epochs_changes_the_isr() {
        let (mut image, id) = image();
        let shrink = alter_partition(&image, 1, id, 0, 0, 0, &[1, 3]).unwrap();
        image.apply(2, &shrink).unwrap();
        let p = image.partition("t", 0).unwrap().clone();
        assert_eq!((p.isr.clone(), p.leader_epoch, p.partition_epoch), (vec![1, 3], 0, 1));
        // The same request again is stale now; so is one from a follower.
        assert!(matches!(alter_partition(&image, 1, id, 0, 0, 0, &[1]), Err(MetadataError::StaleEpoch(_))));
        assert!(matches!(alter_partition(&image, 2, id, 0, 0, 1, &[2]), Err(MetadataError::StaleEpoch(_))));
        assert!(matches!(alter_partition(&image, 1, id, 0, 1, 1, &[1]), Err(MetadataError::StaleEpoch(_))));
        // Bad ISRs.
        assert!(alter_partition(&image, 1, id, 0, 0, 1, &[3]).is_err(), "without its leader");
        assert!(alter_partition(&image, 1, id, 0, 0, 1, &[1, 4]).is_err(), "not a replica");
        assert!(alter_partition(&image, 1, id, 0, 0, 1, &[1, 1]).is_err(), "repeated");
        assert!(alter_partition(&image, 1, id, 1, 0, 1, &[1]).is_err(), "no such partition");
        // A fenced node may not join, though it may stay.
        image.apply(3, &MetadataRecord::FenceNode { node_id: 2 }).unwrap();
        assert!(alter_partition(&image, 1, id, 0, 0, 1, &[1, 2, 3]).is_err());
        image.apply(4, &MetadataRecord::FenceNode { node_id: 3 }).unwrap();
        assert!(alter_partition(&image, 1, id, 0, 0, 1, &[1, 3]).is_ok());
    }
}
