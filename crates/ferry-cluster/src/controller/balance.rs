//! Preferred leaders: automatic leader balancing (Kafka's
//! `auto.leader.rebalance.enable`) and the ElectLeaders request.
//!
//! A partition's preferred leader is its first replica; placement spreads
//! those evenly, so leadership is balanced while preferred replicas lead.
//! After a failover the survivors lead more than their share. Every check
//! interval, each node whose preferred partitions are led elsewhere for
//! more than `leader.imbalance.per.broker.percentage` of them gets back
//! the ones where it is in the ISR and unfenced (Kafka's per-broker
//! imbalance ratio). Leadership moves only to an ISR member, so balancing
//! is a clean election and loses nothing.

use std::collections::{BTreeMap, BTreeSet};

use ferry_broker::metadata::{ElectionError, ElectionResult, ElectionType, MetadataError, MetadataRecord};

use super::ControllerConfig;
use super::draft::Draft;
use super::election::{elect, partition_index, required_isr, to_preferred};

/// Nodes whose share of preferred partitions led by someone else is above
/// `max_percent`.
fn imbalanced(draft: &Draft, max_percent: u32) -> BTreeSet<i32> {
    let mut counts: BTreeMap<i32, (u64, u64)> = BTreeMap::new();
    for topic in draft.image().topics.values() {
        for p in &topic.partitions {
            if let Some(&preferred) = p.replicas.first() {
                let (total, elsewhere) = counts.entry(preferred).or_default();
                *total += 1;
                *elsewhere += u64::from(p.leader != preferred);
            }
        }
    }
    counts
        .into_iter()
        .filter(|(_, (total, elsewhere))| elsewhere * 100 > total * u64::from(max_percent))
        .map(|(n, _)| n)
        .collect()
}

/// Adds to `draft` the moves back to preferred leaders that balancing calls for.
pub(super) fn rebalance(draft: &mut Draft, max_percent: u32) {
    let nodes = imbalanced(draft, max_percent);
    if nodes.is_empty() {
        return;
    }
    let image = draft.image();
    let mut moves = Vec::new();
    for topic in image.topics.values() {
        for (index, p) in topic.partitions.iter().enumerate() {
            if p.replicas.first().is_some_and(|n| nodes.contains(n)) {
                match to_preferred(image, topic, index) {
                    Ok(Some(record)) => moves.push(record),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(topic = %topic.name, partition = index, error = %e, "leader balancing"),
                }
            }
        }
    }
    if !moves.is_empty() {
        tracing::info!(nodes = ?nodes, partitions = moves.len(), "moving leadership back to preferred replicas");
    }
    for record in moves {
        if let Err(e) = draft.push(record) {
            tracing::warn!(error = %e, "leader balancing move refused");
        }
    }
}

/// ElectLeaders for `partitions` (`None`: all, reporting only those that
/// needed an election): the records go to `draft`, the outcomes back.
pub(super) fn elect_leaders(
    config: &ControllerConfig,
    draft: &mut Draft,
    election: ElectionType,
    partitions: Option<&[(String, i32)]>,
) -> Result<Vec<ElectionResult>, MetadataError> {
    let every = partitions.is_none();
    let all: Vec<(String, i32)> = if every {
        draft
            .image()
            .topics
            .values()
            .flat_map(|t| (0..t.partitions.len()).filter_map(|i| Some((t.name.clone(), partition_index(i).ok()?))))
            .collect()
    } else {
        Vec::new()
    };
    let wanted = partitions.unwrap_or(&all);
    let mut results = Vec::with_capacity(wanted.len());
    for (name, partition) in wanted {
        let error = elect_one(config, draft, election, name, *partition)?;
        if !(every && error == Some(ElectionError::ElectionNotNeeded)) {
            results.push(ElectionResult { topic: name.clone(), partition: *partition, error });
        }
    }
    Ok(results)
}

fn elect_one(
    config: &ControllerConfig,
    draft: &mut Draft,
    election: ElectionType,
    name: &str,
    partition: i32,
) -> Result<Option<ElectionError>, MetadataError> {
    let image = draft.image();
    let found = image.topic(name).and_then(|t| Some((t, usize::try_from(partition).ok()?)));
    let Some((topic, index, p)) = found.and_then(|(t, i)| Some((t, i, t.partitions.get(i)?))) else {
        return Ok(Some(ElectionError::UnknownTopicOrPartition));
    };
    let record = match election {
        ElectionType::Preferred => {
            if p.replicas.first() == Some(&p.leader) {
                return Ok(Some(ElectionError::ElectionNotNeeded));
            }
            match to_preferred(image, topic, index)? {
                Some(record) => record,
                None => return Ok(Some(ElectionError::PreferredLeaderNotAvailable)),
            }
        }
        ElectionType::Unclean => {
            if p.leader != -1 {
                return Ok(Some(ElectionError::ElectionNotNeeded));
            }
            // Unclean election is off by design: only eligible replicas.
            let (leader, isr, elr) = elect(image, p, &p.isr, &p.elr, required_isr(config, image, topic, p));
            if leader == -1 {
                return Ok(Some(ElectionError::EligibleLeadersNotAvailable));
            }
            MetadataRecord::PartitionChange {
                topic_id: topic.id,
                partition,
                leader,
                isr,
                replicas: None,
                elr: Some(elr),
            }
        }
    };
    draft.push(record)?;
    Ok(None)
}
