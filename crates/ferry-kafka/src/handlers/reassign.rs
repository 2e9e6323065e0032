//! Partition reassignment and node removal: AlterPartitionReassignments
//! (KIP-455, v0-1), ListPartitionReassignments (v0) and UnregisterBroker
//! (v0). Reassignments are carried out by the controller, one partition
//! per change, in request order; the list comes from this node's image.
//!
//! Decommissioning has no Kafka API. As Kafka cordons a broker's log
//! directories with a broker config (KIP-1066, `cordoned.log.dirs`),
//! Ferry takes a node config, `node.decommission`, on the node's BROKER
//! resource (named by its id): IncrementalAlterConfigs SET `true` starts
//! it, SET `false` or DELETE calls it off, DescribeConfigs shows it for
//! every registered node.

use ferry_broker::BrokerError;
use ferry_broker::security::{Operation, ResourceType};
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::Call;
use crate::errors::{denied_code, error_code, error_message};
use crate::response::Reply;

/// The top-level code and message of a refused cluster operation (these
/// APIs authorize the whole request on the Cluster, as Kafka).
fn cluster_refused(c: &Call, op: Operation) -> Option<(i16, Option<StrBytes>)> {
    (!c.allowed_cluster(op))
        .then(|| (denied_code(ResourceType::Cluster), Some(StrBytes::from_static_str("Cluster authorization failed."))))
}

/// AlterPartitionReassignments (Alter on the Cluster): each partition
/// through the controller; a null replica list cancels. v1's
/// `allow_replication_factor_change = false` (KIP-860) refuses targets of
/// another size.
pub async fn alter(c: Call, req: AlterPartitionReassignmentsRequest) -> Reply {
    let broker = &c.ctx.broker;
    let allow_rf_change = c.version < 1 || req.allow_replication_factor_change;
    if let Some((code, message)) = cluster_refused(&c, Operation::Alter) {
        let mut resp = AlterPartitionReassignmentsResponse::default().with_error_code(code).with_error_message(message);
        if c.version >= 1 {
            resp.allow_replication_factor_change = allow_rf_change;
        }
        return c.reply(ApiKey::AlterPartitionReassignments, &resp);
    }
    let mut responses = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let target: Option<Vec<i32>> = p.replicas.map(|r| r.iter().map(|b| b.0).collect());
            let outcome = match (&target, broker.metadata().partition(&t.name, p.partition_index)) {
                (Some(target), Some(current))
                    if !allow_rf_change && target.len() != current.original_replicas().len() =>
                {
                    Err(BrokerError::InvalidReplicationFactor(format!(
                        "{} replicas instead of {}, and the request does not allow changing the replication factor",
                        target.len(),
                        current.original_replicas().len()
                    )))
                }
                _ => broker.alter_reassignment(&t.name, p.partition_index, target).await,
            };
            let mut r = ReassignablePartitionResponse::default().with_partition_index(p.partition_index);
            if let Err(e) = outcome {
                r.error_code = error_code(&e);
                r.error_message = Some(error_message(&e));
            }
            partitions.push(r);
        }
        responses.push(ReassignableTopicResponse::default().with_name(t.name).with_partitions(partitions));
    }
    let mut resp = AlterPartitionReassignmentsResponse::default().with_responses(responses);
    if c.version >= 1 {
        resp.allow_replication_factor_change = allow_rf_change;
    }
    c.reply(ApiKey::AlterPartitionReassignments, &resp)
}

/// ListPartitionReassignments (Describe on the Cluster): the
/// reassignments in progress, of the named partitions or of all (null
/// topics).
pub fn list(c: &Call, req: ListPartitionReassignmentsRequest) -> Reply {
    if let Some((code, message)) = cluster_refused(c, Operation::Describe) {
        let resp = ListPartitionReassignmentsResponse::default().with_error_code(code).with_error_message(message);
        return c.reply(ApiKey::ListPartitionReassignments, &resp);
    }
    let wanted: Option<Vec<(String, Vec<i32>)>> =
        req.topics.map(|ts| ts.into_iter().map(|t| (t.name.to_string(), t.partition_indexes)).collect());
    let mut topics: Vec<OngoingTopicReassignment> = Vec::new();
    for r in c.ctx.broker.reassignments(wanted.as_deref()) {
        let ids = |v: &[i32]| v.iter().map(|n| BrokerId(*n)).collect::<Vec<_>>();
        let partition = OngoingPartitionReassignment::default()
            .with_partition_index(r.partition)
            .with_replicas(ids(&r.replicas))
            .with_adding_replicas(ids(&r.adding))
            .with_removing_replicas(ids(&r.removing));
        match topics.last_mut() {
            Some(t) if t.name.to_string() == r.topic => t.partitions.push(partition),
            _ => topics.push(
                OngoingTopicReassignment::default()
                    .with_name(TopicName(StrBytes::from_string(r.topic)))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    c.reply(ApiKey::ListPartitionReassignments, &ListPartitionReassignmentsResponse::default().with_topics(topics))
}

/// UnregisterBroker (Alter on the Cluster): removes a stopped node that
/// holds no replicas from the metadata (BROKER_ID_NOT_REGISTERED for an
/// unknown id, INVALID_REQUEST while it runs or holds replicas).
pub async fn unregister_broker(c: Call, req: UnregisterBrokerRequest) -> Reply {
    let mut resp = UnregisterBrokerResponse::default();
    if let Some((code, message)) = cluster_refused(&c, Operation::Alter) {
        resp.error_code = code;
        resp.error_message = message;
        return c.reply(ApiKey::UnregisterBroker, &resp);
    }
    if let Err(e) = c.ctx.broker.unregister_node(req.broker_id.0).await {
        resp.error_code = error_code(&e);
        resp.error_message = Some(error_message(&e));
    }
    c.reply(ApiKey::UnregisterBroker, &resp)
}

/// The node config that starts a decommission (see the module docs).
pub const DECOMMISSION: &str = "node.decommission";

/// Whether an IncrementalAlterConfigs resource is a decommission.
pub fn is_decommission(resource_type: i8, ops: &[incremental_alter_configs_request::AlterableConfig]) -> bool {
    resource_type == BROKER_RESOURCE && ops.iter().any(|op| &*op.name == DECOMMISSION)
}

const BROKER_RESOURCE: i8 = 4;

/// IncrementalAlterConfigs on node `name`'s BROKER resource with
/// `node.decommission`, alone: SET `true` starts a decommission, SET
/// `false` or DELETE calls it off.
pub async fn decommission(
    c: &Call,
    name: &str,
    ops: &[incremental_alter_configs_request::AlterableConfig],
    validate_only: bool,
) -> ferry_broker::Result<()> {
    let node: i32 = name.parse().map_err(|_| {
        BrokerError::InvalidConfig(format!("{DECOMMISSION} needs the node id as resource name, not {name:?}"))
    })?;
    let leave = match ops {
        [op] if op.config_operation == 0 && op.value.as_deref() == Some("true") => true,
        [op] if op.config_operation == 0 && op.value.as_deref() == Some("false") => false,
        [op] if op.config_operation == 1 => false,
        _ => {
            return Err(BrokerError::InvalidConfig(format!(
                "{DECOMMISSION} takes SET true, SET false or DELETE, alone"
            )));
        }
    };
    if !c.ctx.broker.metadata().nodes.contains_key(&node) {
        return Err(BrokerError::NodeNotRegistered(node));
    }
    if validate_only {
        return Ok(());
    }
    if leave { c.ctx.broker.decommission_node(node).await } else { c.ctx.broker.recommission_node(node).await }
}

/// `node.decommission` of the node a BROKER resource names (empty: this
/// node), if it is registered: `Some(true)` while it is decommissioning.
pub fn decommissioning(c: &Call, name: &str) -> Option<bool> {
    let node = if name.is_empty() { c.ctx.broker.node_id() } else { name.parse().ok()? };
    let image = c.ctx.broker.metadata();
    image.nodes.contains_key(&node).then(|| image.decommissioning.contains(&node))
}
