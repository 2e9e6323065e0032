//! Moving replicas: AlterPartitionReassignments, ListPartitionReassignments
//! (KIP-455), node decommission (Ferry's `node.decommission` node config,
//! set through IncrementalAlterConfigs in the way of Kafka's KIP-1066
//! cordoning) and UnregisterBroker.

use kafka_protocol::messages::alter_partition_reassignments_request::{ReassignablePartition, ReassignableTopic};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, DescribeConfigsRequest, IncrementalAlterConfigsRequest,
    ListPartitionReassignmentsRequest, UnregisterBrokerRequest,
};
use kafka_protocol::protocol::StrBytes;

use crate::client::Client;
use crate::error::{ClientError, check_with_message};
use crate::topic_name;

/// DescribeConfigs' and IncrementalAlterConfigs' resource type of a broker.
const BROKER_RESOURCE: i8 = 4;
/// The node config that starts a decommission.
const DECOMMISSION: &str = "node.decommission";
/// How long the controller may take.
const ADMIN_TIMEOUT_MS: i32 = 30_000;

/// One partition's reassignment in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PartitionReassignment {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// All replicas, the target first.
    pub replicas: Vec<i32>,
    /// Replicas being added.
    pub adding: Vec<i32>,
    /// Replicas being removed.
    pub removing: Vec<i32>,
}

impl Client {
    /// Reassigns `topic`-`partition` to `replicas` (in preferred order), or
    /// cancels its reassignment (`None`).
    pub async fn alter_partition_reassignment(
        &self,
        topic: &str,
        partition: i32,
        replicas: Option<&[i32]>,
    ) -> Result<(), ClientError> {
        let p = ReassignablePartition::default()
            .with_partition_index(partition)
            .with_replicas(replicas.map(|r| r.iter().map(|n| BrokerId(*n)).collect()));
        let t = ReassignableTopic::default().with_name(topic_name(topic)).with_partitions(vec![p]);
        let req = AlterPartitionReassignmentsRequest::default().with_timeout_ms(ADMIN_TIMEOUT_MS).with_topics(vec![t]);
        let resp = self.any().send(req, 0).await?;
        check_with_message(resp.error_code, resp.error_message.as_ref(), || "reassigning".to_string())?;
        let r = resp
            .responses
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or_else(|| ClientError::Decode("AlterPartitionReassignments: no result".into()))?;
        check_with_message(r.error_code, r.error_message.as_ref(), || format!("reassigning {topic}-{partition}"))
    }

    /// Every reassignment in progress.
    pub async fn list_partition_reassignments(&self) -> Result<Vec<PartitionReassignment>, ClientError> {
        let req = ListPartitionReassignmentsRequest::default().with_timeout_ms(ADMIN_TIMEOUT_MS).with_topics(None);
        let resp = self.any().send(req, 0).await?;
        check_with_message(resp.error_code, resp.error_message.as_ref(), || "listing reassignments".to_string())?;
        let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<_>>();
        Ok(resp
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| PartitionReassignment {
                    topic: t.name.to_string(),
                    partition: p.partition_index,
                    replicas: ids(&p.replicas),
                    adding: ids(&p.adding_replicas),
                    removing: ids(&p.removing_replicas),
                })
            })
            .collect())
    }

    /// Starts decommissioning `node` (`leave`): no new replicas go to it
    /// and the controller moves its replicas to other nodes; or calls it
    /// off (`!leave`).
    pub async fn decommission_node(&self, node: i32, leave: bool) -> Result<(), ClientError> {
        let op = AlterableConfig::default()
            .with_name(StrBytes::from_static_str(DECOMMISSION))
            .with_config_operation(0)
            .with_value(Some(StrBytes::from_static_str(if leave { "true" } else { "false" })));
        let res = AlterConfigsResource::default()
            .with_resource_type(BROKER_RESOURCE)
            .with_resource_name(StrBytes::from_string(node.to_string()))
            .with_configs(vec![op]);
        let resp = self.any().send(IncrementalAlterConfigsRequest::default().with_resources(vec![res]), 1).await?;
        let r =
            resp.responses.first().ok_or_else(|| ClientError::Decode("IncrementalAlterConfigs: no result".into()))?;
        check_with_message(r.error_code, r.error_message.as_ref(), || format!("decommissioning node {node}"))
    }

    /// Which of `nodes` are being decommissioned (`None`: the broker does
    /// not say, e.g. it is not a Ferry node or the node is unknown).
    pub async fn decommissioning(&self, nodes: &[i32]) -> Result<Vec<(i32, Option<bool>)>, ClientError> {
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let resources = nodes
            .iter()
            .map(|n| {
                DescribeConfigsResource::default()
                    .with_resource_type(BROKER_RESOURCE)
                    .with_resource_name(StrBytes::from_string(n.to_string()))
                    .with_configuration_keys(Some(vec![StrBytes::from_static_str(DECOMMISSION)]))
            })
            .collect();
        let resp = self.any().send(DescribeConfigsRequest::default().with_resources(resources), 4).await?;
        Ok(nodes
            .iter()
            .map(|n| {
                let state = resp
                    .results
                    .iter()
                    .find(|r| r.resource_name.to_string() == n.to_string() && r.error_code == 0)
                    .and_then(|r| r.configs.iter().find(|c| &*c.name == DECOMMISSION))
                    .and_then(|c| c.value.as_ref())
                    .map(|v| &**v == "true");
                (*n, state)
            })
            .collect())
    }

    /// Removes a stopped node holding no replicas from the cluster's
    /// metadata (UnregisterBroker).
    pub async fn unregister_node(&self, node: i32) -> Result<(), ClientError> {
        let resp = self.any().send(UnregisterBrokerRequest::default().with_broker_id(BrokerId(node)), 0).await?;
        check_with_message(resp.error_code, resp.error_message.as_ref(), || format!("removing node {node}"))
    }
}
