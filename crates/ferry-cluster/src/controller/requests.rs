//! Carrying out the broker's requests: validation (Kafka's order and
//! errors), placement, and the records of each change.

use std::collections::BTreeMap;

use ferry_broker::metadata::{ControllerReply, ControllerRequest, MetadataError, MetadataImage, MetadataRecord};
use uuid::Uuid;

use super::ControllerConfig;
use super::balance;
use super::decommission;
use super::draft::Draft;
use super::election::{self, partition_index};
use super::placement::{NodeOrder, stable_hash, validate_assignment};

/// Adds the records of `request` from node `from` to `draft`, returning the
/// reply. A refused request adds nothing.
pub(super) fn carry_out(
    config: &ControllerConfig,
    draft: &mut Draft,
    from: i32,
    request: &ControllerRequest,
) -> Result<ControllerReply, MetadataError> {
    match request {
        ControllerRequest::CreateTopic { name, partitions, replication_factor, assignment, configs, .. } => {
            let spec = TopicSpec {
                name,
                partitions: partitions.filter(|p| *p != -1),
                replication_factor: replication_factor.filter(|r| *r != -1),
                assignment: assignment.as_deref(),
                internal: false,
                configs,
            };
            create_topic(config, draft, &spec)
        }
        ControllerRequest::DeleteTopic { name } => {
            let topic = draft.image().topic(name).ok_or_else(|| MetadataError::UnknownTopic(name.clone()))?;
            if topic.internal {
                return Err(MetadataError::InvalidTopic(format!("{name} is internal and cannot be deleted")));
            }
            let id = topic.id;
            draft.push(MetadataRecord::DeleteTopic { id })?;
            Ok(ControllerReply::Done)
        }
        ControllerRequest::CreatePartitions { name, total, assignment, .. } => {
            create_partitions(config, draft, name, *total, assignment.as_deref())
        }
        ControllerRequest::SetTopicConfigs { name, configs } => {
            let id = draft.image().topic(name).ok_or_else(|| MetadataError::UnknownTopic(name.clone()))?.id;
            draft.push(MetadataRecord::SetTopicConfigs { id, configs: configs.clone() })?;
            Ok(ControllerReply::Done)
        }
        ControllerRequest::SetBrokerDefaults { configs } => {
            draft.push(MetadataRecord::SetBrokerDefaults { configs: configs.clone() })?;
            Ok(ControllerReply::Done)
        }
        ControllerRequest::ShutdownNode { incarnation } => {
            let node = draft.image().nodes.get(&from).ok_or(MetadataError::UnknownNode(from))?;
            // Already fenced, or a previous life asking late: nothing to do.
            if node.incarnation == *incarnation && !node.fenced {
                election::fence(config, draft, &[from])?;
                tracing::info!(node = from, "controlled shutdown: fencing the node");
            }
            Ok(ControllerReply::Done)
        }
        ControllerRequest::AllocateProducerIds => {
            if !draft.image().nodes.contains_key(&from) {
                return Err(MetadataError::UnknownNode(from));
            }
            // The node commits one request at a time and waits for its
            // apply, so the image already counts every block handed out
            // before: `next_producer_id` is free.
            let first = draft.image().next_producer_id;
            let count = config.producer_id_block.max(1);
            draft.push(MetadataRecord::ProducerIds { node_id: from, first, count })?;
            Ok(ControllerReply::ProducerIds { first, count })
        }
        ControllerRequest::AlterPartition { topic_id, partition, leader_epoch, partition_epoch, isr } => {
            let record = ferry_broker::metadata::alter_partition(
                draft.image(),
                from,
                *topic_id,
                *partition,
                *leader_epoch,
                *partition_epoch,
                isr,
            )?;
            let record = election::with_elr(config, draft.image(), record)?;
            draft.push(record)?;
            // The ISR that grew may complete a reassignment.
            if let Some(done) = ferry_broker::metadata::complete_reassignment(draft.image(), *topic_id, *partition) {
                draft.push(done)?;
            }
            Ok(ControllerReply::Done)
        }
        ControllerRequest::AlterReassignment { topic, partition, replicas } => {
            if let Some(record) =
                ferry_broker::metadata::reassign(draft.image(), topic, *partition, replicas.as_deref())?
            {
                draft.push(record)?;
            }
            Ok(ControllerReply::Done)
        }
        ControllerRequest::UpsertScramCredential { .. }
        | ControllerRequest::DeleteScramCredential { .. }
        | ControllerRequest::CreateAcls { .. }
        | ControllerRequest::DeleteAcls { .. } => {
            let records = ferry_broker::metadata::security_change(draft.image(), request).unwrap_or(Ok(Vec::new()))?;
            for record in records {
                draft.push(record)?;
            }
            Ok(ControllerReply::Done)
        }
        ControllerRequest::Amqp(_) | ControllerRequest::Mqtt(_) => {
            let image = draft.image().clone();
            // A quorum queue's topic is placed as any topic, in a scratch
            // draft whose records go first into the entry.
            let mut make_topic = |name: &str, group_size: Option<usize>| {
                let mut scratch = Draft::new(&image);
                let live = NodeOrder::live(&image).len();
                // RabbitMQ caps the initial group size at the cluster's size.
                let rf = group_size.map(|g| i16::try_from(g.min(live).max(1)).unwrap_or(i16::MAX));
                let configs = BTreeMap::new();
                let spec = TopicSpec {
                    name,
                    partitions: Some(1),
                    replication_factor: rf,
                    assignment: None,
                    internal: true,
                    configs: &configs,
                };
                match create_topic(config, &mut scratch, &spec)? {
                    ControllerReply::TopicCreated { id, .. } => Ok((id, scratch.into_records())),
                    other => Err(MetadataError::InvalidRequest(format!("unexpected reply {other:?}"))),
                }
            };
            let records = match request {
                ControllerRequest::Mqtt(r) => ferry_broker::metadata::mqtt_change(&image, from, r, &mut make_topic)?,
                ControllerRequest::Amqp(r) => ferry_broker::metadata::amqp_change(&image, from, r, &mut make_topic)?,
                _ => Vec::new(),
            };
            for record in records {
                draft.push(record)?;
            }
            Ok(ControllerReply::Done)
        }
        ControllerRequest::DecommissionNode { node_id } => {
            decommission::start(draft, *node_id)?;
            Ok(ControllerReply::Done)
        }
        ControllerRequest::RecommissionNode { node_id } => {
            if let Some(record) = ferry_broker::metadata::recommission(draft.image(), *node_id)? {
                draft.push(record)?;
                tracing::info!(node = node_id, "decommission called off");
            }
            Ok(ControllerReply::Done)
        }
        ControllerRequest::UnregisterNode { node_id } => {
            draft.push(ferry_broker::metadata::unregister(draft.image(), *node_id)?)?;
            tracing::info!(node = node_id, "node unregistered");
            Ok(ControllerReply::Done)
        }
        ControllerRequest::ElectLeaders { election, partitions } => {
            let results = balance::elect_leaders(config, draft, *election, partitions.as_deref())?;
            Ok(ControllerReply::Elections(results))
        }
    }
}

/// A topic to create, its counts already defaulted where the client sent -1.
pub(super) struct TopicSpec<'a> {
    /// Topic name.
    pub(super) name: &'a str,
    /// Partitions, `None`: `num.partitions`.
    pub(super) partitions: Option<i32>,
    /// Replicas per partition, `None`: the default.
    pub(super) replication_factor: Option<i16>,
    /// The client's assignment, if any.
    pub(super) assignment: Option<&'a [Vec<i32>]>,
    /// `__consumer_offsets` and `__transaction_state`.
    pub(super) internal: bool,
    /// Config overrides.
    pub(super) configs: &'a BTreeMap<String, String>,
}

/// CreateTopics for one topic.
pub(super) fn create_topic(
    config: &ControllerConfig,
    draft: &mut Draft,
    spec: &TopicSpec<'_>,
) -> Result<ControllerReply, MetadataError> {
    let image = draft.image();
    if image.topic(spec.name).is_some() {
        return Err(MetadataError::TopicExists(spec.name.to_string()));
    }
    let replicas = if let Some(assignment) = spec.assignment {
        check_partition_count(config, assignment.len())?;
        if spec.partitions.is_some_and(|p| usize::try_from(p).ok() != Some(assignment.len())) {
            return Err(MetadataError::InvalidReplicaAssignment(format!(
                "{} partitions requested but {} assigned",
                spec.partitions.unwrap_or_default(),
                assignment.len()
            )));
        }
        let rf = validate_assignment(image, assignment, None)?;
        if spec.replication_factor.is_some_and(|r| usize::try_from(r).ok() != Some(rf)) {
            return Err(MetadataError::InvalidReplicaAssignment(format!(
                "replication factor {} requested but {rf} assigned",
                spec.replication_factor.unwrap_or_default()
            )));
        }
        assignment.to_vec()
    } else {
        let count = spec.partitions.unwrap_or(config.default_partitions);
        let count = check_partition_count(config, usize::try_from(count).unwrap_or(0))?;
        let order = NodeOrder::live(image);
        let rf = replication_factor(config, spec.replication_factor, order.len())?;
        order.place(spec.name, 0, count, rf, None)
    };
    let id = new_topic_id(image, spec.name);
    draft.push(MetadataRecord::CreateTopic {
        name: spec.name.to_string(),
        id,
        internal: spec.internal,
        configs: spec.configs.clone(),
        replicas: replicas.clone(),
    })?;
    lead_with_live_replicas(draft, id, 0, &replicas)?;
    Ok(ControllerReply::TopicCreated { id, replicas })
}

/// CreatePartitions for one topic: only grows, new partitions continue the
/// topic's placement pattern (or take the client's assignment).
fn create_partitions(
    config: &ControllerConfig,
    draft: &mut Draft,
    name: &str,
    total: i32,
    assignment: Option<&[Vec<i32>]>,
) -> Result<ControllerReply, MetadataError> {
    let image = draft.image();
    let topic = image.topic(name).ok_or_else(|| MetadataError::UnknownTopic(name.to_string()))?;
    if topic.internal {
        // The partition count of a coordinator topic picks each group's
        // coordinator; changing it would move every group.
        return Err(MetadataError::InvalidTopic(format!("{name} is internal; its partition count is fixed")));
    }
    let current = topic.partitions.len();
    let wanted = usize::try_from(total).unwrap_or(0);
    if wanted <= current {
        return Err(MetadataError::InvalidPartitions(format!(
            "topic {name} has {current} partitions; {total} would not grow it"
        )));
    }
    check_partition_count(config, wanted)?;
    let topic_rf = topic.partitions.first().map_or(1, |p| p.replicas.len());
    let replicas = if let Some(assignment) = assignment {
        if assignment.len() != wanted - current {
            return Err(MetadataError::InvalidReplicaAssignment(format!(
                "{} partitions assigned but {} are new",
                assignment.len(),
                wanted - current
            )));
        }
        validate_assignment(image, assignment, Some(topic_rf))?;
        assignment.to_vec()
    } else {
        let order = NodeOrder::live(image);
        if topic_rf > order.len() {
            return Err(MetadataError::InvalidReplicationFactor(format!(
                "topic {name} has {topic_rf} replicas per partition but only {} nodes are live",
                order.len()
            )));
        }
        let start = topic.partitions.first().and_then(|p| p.replicas.first()).and_then(|n| order.position(*n));
        order.place(name, current, wanted - current, topic_rf, start)
    };
    let id = topic.id;
    draft.push(MetadataRecord::CreatePartitions { id, replicas: replicas.clone() })?;
    lead_with_live_replicas(draft, id, current, &replicas)?;
    Ok(ControllerReply::Done)
}

/// A new partition starts led by its first replica with every replica in
/// sync. Where the client's assignment puts a fenced node first, the
/// partition starts instead with its unfenced replicas as ISR and the
/// first of them as leader (as Kafka does); none unfenced is refused.
fn lead_with_live_replicas(
    draft: &mut Draft,
    topic_id: Uuid,
    first: usize,
    replicas: &[Vec<i32>],
) -> Result<(), MetadataError> {
    for (i, r) in replicas.iter().enumerate() {
        let live: Vec<i32> =
            r.iter().copied().filter(|n| draft.image().nodes.get(n).is_some_and(|node| !node.fenced)).collect();
        if live.len() == r.len() {
            continue;
        }
        let partition = partition_index(first + i)?;
        let Some(&leader) = live.first() else {
            return Err(MetadataError::InvalidReplicaAssignment(format!(
                "every replica of partition {partition} is on a fenced node"
            )));
        };
        draft.push(MetadataRecord::PartitionChange {
            topic_id,
            partition,
            leader,
            isr: live,
            replicas: None,
            elr: None,
        })?;
    }
    Ok(())
}

/// `count` if 1 ≤ count ≤ max_partitions_per_topic.
fn check_partition_count(config: &ControllerConfig, count: usize) -> Result<usize, MetadataError> {
    let max = usize::try_from(config.max_partitions_per_topic).unwrap_or(0);
    if count < 1 || count > max {
        return Err(MetadataError::InvalidPartitions(format!("{count} partitions (1 to {max} allowed)")));
    }
    Ok(count)
}

/// The replication factor of a new topic over `live` unfenced nodes:
/// requested, else `default.replication.factor`, else 3 when 3 or more
/// nodes are live, else the live count; 1 ≤ rf ≤ live. The one rule for
/// CreateTopics without a factor, auto-created topics (they come through
/// CreateTopic without one) and the internal topics.
pub(super) fn replication_factor(
    config: &ControllerConfig,
    requested: Option<i16>,
    live: usize,
) -> Result<usize, MetadataError> {
    let rf = match requested.or(config.default_replication_factor) {
        Some(rf) => i64::from(rf),
        None => i64::try_from(live.min(3)).unwrap_or(3),
    };
    if rf < 1 || usize::try_from(rf).map_or(true, |rf| rf > live) {
        return Err(MetadataError::InvalidReplicationFactor(format!(
            "replication factor {rf} with {live} live nodes (1 to {live} allowed)"
        )));
    }
    Ok(usize::try_from(rf).unwrap_or(1))
}

/// A topic id derived from the cluster id, the name and the log position
/// (deterministic, and different for a topic re-created later), made
/// unique against the image.
fn new_topic_id(image: &MetadataImage, name: &str) -> Uuid {
    let cluster = image.cluster_id.as_deref().unwrap_or_default().as_bytes();
    let index = image.applied_index.to_be_bytes();
    let mut attempt: u64 = 0;
    loop {
        let salt = attempt.to_be_bytes();
        let hi = stable_hash(&[cluster, name.as_bytes(), &index, &salt, b"hi"]);
        let lo = stable_hash(&[cluster, name.as_bytes(), &index, &salt, b"lo"]);
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&hi.to_be_bytes());
        bytes[8..].copy_from_slice(&lo.to_be_bytes());
        let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
        if !image.topic_ids.contains_key(&id) {
            return id;
        }
        attempt += 1;
    }
}
