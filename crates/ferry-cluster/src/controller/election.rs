//! Leadership, ISR and eligible leader replicas (KIP-966) as nodes are
//! fenced, come back, or an election is asked for.
//!
//! The rule:
//! - Fencing a node removes it from every ISR, even the last member's.
//! - A partition's ELR follows its ISR ([`next_elr`]): while the ISR has
//!   at least the topic's required size ([`required_isr`]) the ELR is
//!   empty (the high watermark may advance without the others); when it
//!   has fewer, members leaving it join the ELR. The leader's high
//!   watermark does not move while the ISR is below that size
//!   (`LeaderState::high_watermark`), so an ELR member holds every record
//!   below it: followers acknowledge only fsynced offsets, so that record
//!   was on its disk when it left the ISR, and kill -9 does not take it
//!   back.
//! - The leader ([`elect`]): the current one while it is in the ISR and
//!   unfenced; else the first unfenced ISR member in replica order; else
//!   the first unfenced ELR member in replica order, which becomes the ISR
//!   alone; else none (leader -1, LEADER_NOT_AVAILABLE). No unclean
//!   election: a replica that is in neither set never leads.
//! - A node that registers again leads the leaderless partitions it is
//!   now eligible for. A registration that does not name the registered
//!   incarnation as its previous life (a new data directory, or an
//!   unknown history) is not the same data: the old incarnation is fenced
//!   if it was not, and the node leaves every ELR, before it registers.

use std::collections::BTreeSet;

use ferry_broker::metadata::{MetadataError, MetadataImage, MetadataRecord, PartitionInfo, TopicInfo};
use ferry_broker::topic_config::{self, BrokerDefaults};
use uuid::Uuid;

use super::ControllerConfig;
use super::draft::Draft;

/// The ISR size below which `p`'s high watermark stands still and leaving
/// replicas become eligible: the topic's effective `min.insync.replicas`
/// (the controller's config file defaults stand for the static broker
/// layer), capped by the partition's replicas, as the leader computes it.
pub(super) fn required_isr(
    config: &ControllerConfig,
    image: &MetadataImage,
    topic: &TopicInfo,
    p: &PartitionInfo,
) -> usize {
    let defaults = BrokerDefaults { dynamic: image.broker_defaults.clone(), fixed: config.topic_defaults.clone() };
    let min = topic_config::min_insync_replicas(&defaults, &topic.configs, topic.replication_factor());
    ferry_broker::replica::required_isr(min, p.replicas.len())
}

/// The ELR of `p` once its ISR is `isr`: empty if `isr` has `required`
/// members or more; else the old ELR and the old ISR members, without the
/// new ISR's, in replica order.
pub(super) fn next_elr(p: &PartitionInfo, isr: &[i32], required: usize) -> Vec<i32> {
    if isr.len() >= required {
        return Vec::new();
    }
    p.replicas.iter().copied().filter(|r| !isr.contains(r) && (p.elr.contains(r) || p.isr.contains(r))).collect()
}

/// Whether `node` is registered and unfenced in `image`.
fn live(image: &MetadataImage, node: i32) -> bool {
    image.nodes.get(&node).is_some_and(|n| !n.fenced)
}

/// The leader `p` gets with ISR `isr` and ELR `elr`, and the ISR and ELR
/// that go with it (see the module docs). A leader elected from the ELR is
/// the ISR alone; the rest of the ELR stays eligible only while that is
/// below `required` (else the high watermark may move without them).
pub(super) fn elect(
    image: &MetadataImage,
    p: &PartitionInfo,
    isr: &[i32],
    elr: &[i32],
    required: usize,
) -> (i32, Vec<i32>, Vec<i32>) {
    let in_isr = |n: &i32| isr.contains(n) && live(image, *n);
    if in_isr(&p.leader) {
        return (p.leader, isr.to_vec(), elr.to_vec());
    }
    if let Some(leader) = p.replicas.iter().chain(isr).copied().find(in_isr) {
        return (leader, isr.to_vec(), elr.to_vec());
    }
    let eligible = |n: &i32| elr.contains(n) && live(image, *n);
    match p.replicas.iter().chain(elr).copied().find(eligible) {
        Some(leader) => {
            let rest = if required > 1 { elr.iter().copied().filter(|n| *n != leader).collect() } else { Vec::new() };
            (leader, vec![leader], rest)
        }
        None => (-1, isr.to_vec(), elr.to_vec()),
    }
}

/// The record that moves partition `index` of `topic` from `p` to the
/// given leader, ISR and ELR, if anything changes.
fn change(
    topic: &TopicInfo,
    index: usize,
    p: &PartitionInfo,
    (leader, isr, elr): (i32, Vec<i32>, Vec<i32>),
) -> Result<Option<MetadataRecord>, MetadataError> {
    if leader == p.leader && isr == p.isr && elr == p.elr {
        return Ok(None);
    }
    Ok(Some(MetadataRecord::PartitionChange {
        topic_id: topic.id,
        partition: partition_index(index)?,
        leader,
        isr,
        replicas: None,
        elr: Some(elr),
    }))
}

/// Fences `nodes` and moves the leadership, ISR and ELR membership they held.
pub(super) fn fence(config: &ControllerConfig, draft: &mut Draft, nodes: &[i32]) -> Result<(), MetadataError> {
    let fenced: BTreeSet<i32> = nodes.iter().copied().collect();
    for node_id in &fenced {
        draft.push(MetadataRecord::FenceNode { node_id: *node_id })?;
    }
    let image = draft.image();
    let mut changes = Vec::new();
    for topic in image.topics.values() {
        for (index, p) in topic.partitions.iter().enumerate() {
            if !fenced.contains(&p.leader) && !p.isr.iter().any(|n| fenced.contains(n)) {
                continue;
            }
            let isr: Vec<i32> = p.isr.iter().copied().filter(|n| live(image, *n)).collect();
            let required = required_isr(config, image, topic, p);
            let elr = next_elr(p, &isr, required);
            changes.extend(change(topic, index, p, elect(image, p, &isr, &elr, required))?);
        }
    }
    for change in changes {
        draft.push(change)?;
    }
    Ok(())
}

/// Gives `node` (registered again, unfenced) the leadership of every
/// leaderless partition it is now eligible for (ISR, else ELR).
pub(super) fn restore(config: &ControllerConfig, draft: &mut Draft, node: i32) -> Result<(), MetadataError> {
    let image = draft.image();
    let mut changes = Vec::new();
    for topic in image.topics.values() {
        for (index, p) in topic.partitions.iter().enumerate() {
            if p.leader == -1 && (p.isr.contains(&node) || p.elr.contains(&node)) {
                let required = required_isr(config, image, topic, p);
                changes.extend(change(topic, index, p, elect(image, p, &p.isr, &p.elr, required))?);
            }
        }
    }
    for change in changes {
        draft.push(change)?;
    }
    Ok(())
}

/// Before node `id` registers as `incarnation` with `previous` as its last
/// life: if that is not the registered incarnation (nor a retry of it), the
/// node's data is not known to be what the ISR and ELR counted, so the old
/// incarnation is fenced (if it was not) and the node leaves every ELR.
pub(super) fn forget_unknown_history(
    config: &ControllerConfig,
    draft: &mut Draft,
    id: i32,
    incarnation: Uuid,
    previous: Option<Uuid>,
) -> Result<(), MetadataError> {
    let Some(registered) = draft.image().nodes.get(&id) else { return Ok(()) };
    if registered.incarnation == incarnation || previous == Some(registered.incarnation) {
        return Ok(());
    }
    if !registered.fenced {
        fence(config, draft, &[id])?;
    }
    let image = draft.image();
    let mut changes = Vec::new();
    for topic in image.topics.values() {
        for (index, p) in topic.partitions.iter().enumerate() {
            if p.elr.contains(&id) {
                let elr: Vec<i32> = p.elr.iter().copied().filter(|n| *n != id).collect();
                changes.extend(change(topic, index, p, (p.leader, p.isr.clone(), elr))?);
            }
        }
    }
    if !changes.is_empty() {
        tracing::warn!(
            node = id,
            partitions = changes.len(),
            "node registers with an unknown history: no longer an eligible leader"
        );
    }
    for change in changes {
        draft.push(change)?;
    }
    Ok(())
}

/// Empties the ELR of every partition whose ISR now meets *required*, as
/// the ELR rule would on its next ISR change. A reassignment can lower
/// *required* without touching those partitions: the replication factor
/// (partition 0's replica count) sets the `min.insync.replicas` default,
/// and the leader moves the high watermark by the new value at once, so
/// an ELR member left behind could lack acknowledged records. Run on any
/// change holding a `PartitionReassignment`, in the same Raft entry.
pub(super) fn clear_stale_elrs(config: &ControllerConfig, draft: &mut Draft) -> Result<(), MetadataError> {
    if !draft.records().iter().any(|r| matches!(r, MetadataRecord::PartitionReassignment { .. })) {
        return Ok(());
    }
    let image = draft.image();
    let mut changes = Vec::new();
    for topic in image.topics.values() {
        for (index, p) in topic.partitions.iter().enumerate() {
            if !p.elr.is_empty() && p.isr.len() >= required_isr(config, image, topic, p) {
                changes.extend(change(topic, index, p, (p.leader, p.isr.clone(), Vec::new()))?);
            }
        }
    }
    for record in changes {
        draft.push(record)?;
    }
    Ok(())
}

/// The ELR that goes with an ISR change the partition's leader asked for
/// (AlterPartition): the record with its ELR set.
pub(super) fn with_elr(
    config: &ControllerConfig,
    image: &MetadataImage,
    record: MetadataRecord,
) -> Result<MetadataRecord, MetadataError> {
    let MetadataRecord::PartitionChange { topic_id, partition, leader, isr, replicas, .. } = record else {
        return Ok(record);
    };
    let topic = image.topic_by_id(topic_id).ok_or(MetadataError::UnknownTopicId(topic_id))?;
    let p = usize::try_from(partition)
        .ok()
        .and_then(|i| topic.partitions.get(i))
        .ok_or(MetadataError::UnknownPartition(topic_id, partition))?;
    let elr = next_elr(p, &isr, required_isr(config, image, topic, p));
    Ok(MetadataRecord::PartitionChange { topic_id, partition, leader, isr, replicas, elr: Some(elr) })
}

/// Moves partition `index` of `topic` to its preferred replica (the first)
/// if that is in the ISR and unfenced: the record, or `None`.
pub(super) fn to_preferred(
    image: &MetadataImage,
    topic: &TopicInfo,
    index: usize,
) -> Result<Option<MetadataRecord>, MetadataError> {
    let Some(p) = topic.partitions.get(index) else { return Ok(None) };
    let Some(&preferred) = p.replicas.first() else { return Ok(None) };
    if p.leader == preferred || !p.isr.contains(&preferred) || !live(image, preferred) {
        return Ok(None);
    }
    change(topic, index, p, (preferred, p.isr.clone(), p.elr.clone()))
}

/// A partition's index as records carry it.
pub(super) fn partition_index(index: usize) -> Result<i32, MetadataError> {
    i32::try_from(index).map_err(|_| MetadataError::InvalidPartitions(format!("partition index {index}")))
}
