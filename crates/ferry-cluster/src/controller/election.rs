//! Leadership moves when nodes are fenced or come back.
//!
//! The rule (Kafka's KRaft rule before eligible leader replicas, KIP-966,
//! which come with replication in #15):
//! - Fencing a node removes it from the ISR of every partition whose ISR
//!   has another member; where it is the last member, the ISR keeps it, so
//!   the partition remembers who holds its latest data.
//! - A partition whose leader is fenced gets as leader the first replica,
//!   in replica order, that is in the new ISR and unfenced; if there is
//!   none, leader -1 (LEADER_NOT_AVAILABLE): no unclean election.
//! - A node that registers again leads every leaderless partition whose
//!   ISR contains it (it was the last in-sync replica). A node removed from
//!   an ISR comes back into it only through replication (#15).

use std::collections::BTreeSet;

use ferry_broker::metadata::{MetadataError, MetadataImage, MetadataRecord, PartitionInfo};

use super::draft::Draft;

/// Fences `nodes` and moves the leadership and ISR membership they held.
pub(super) fn fence(draft: &mut Draft, nodes: &[i32]) -> Result<(), MetadataError> {
    let fenced: BTreeSet<i32> = nodes.iter().copied().collect();
    for node_id in &fenced {
        draft.push(MetadataRecord::FenceNode { node_id: *node_id })?;
    }
    let mut changes = Vec::new();
    for topic in draft.image().topics.values() {
        for (index, p) in topic.partitions.iter().enumerate() {
            if !fenced.contains(&p.leader) && !p.isr.iter().any(|n| fenced.contains(n)) {
                continue;
            }
            let mut isr: Vec<i32> = p.isr.iter().copied().filter(|n| !fenced.contains(n)).collect();
            if isr.is_empty() {
                isr.clone_from(&p.isr);
            }
            let leader = elect(draft.image(), p, &isr);
            if leader != p.leader || isr != p.isr {
                changes.push(MetadataRecord::PartitionChange {
                    topic_id: topic.id,
                    partition: partition_index(index)?,
                    leader,
                    isr,
                    replicas: None,
                });
            }
        }
    }
    for change in changes {
        draft.push(change)?;
    }
    Ok(())
}

/// Gives `node` (registered again, unfenced) the leadership of every
/// leaderless partition whose ISR contains it.
pub(super) fn restore(draft: &mut Draft, node: i32) -> Result<(), MetadataError> {
    let mut changes = Vec::new();
    for topic in draft.image().topics.values() {
        for (index, p) in topic.partitions.iter().enumerate() {
            if p.leader == -1 && p.isr.contains(&node) {
                changes.push(MetadataRecord::PartitionChange {
                    topic_id: topic.id,
                    partition: partition_index(index)?,
                    leader: node,
                    isr: p.isr.clone(),
                    replicas: None,
                });
            }
        }
    }
    for change in changes {
        draft.push(change)?;
    }
    Ok(())
}

/// The leader `p` gets with ISR `isr`: its leader if still eligible, else
/// the first eligible replica, else -1.
fn elect(image: &MetadataImage, p: &PartitionInfo, isr: &[i32]) -> i32 {
    let eligible = |n: &i32| isr.contains(n) && image.nodes.get(n).is_some_and(|node| !node.fenced);
    if eligible(&p.leader) {
        return p.leader;
    }
    p.replicas.iter().chain(isr).copied().find(eligible).unwrap_or(-1)
}

/// A partition's index as records carry it.
pub(super) fn partition_index(index: usize) -> Result<i32, MetadataError> {
    i32::try_from(index).map_err(|_| MetadataError::InvalidPartitions(format!("partition index {index}")))
}
