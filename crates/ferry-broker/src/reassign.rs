//! Moving replicas between nodes, as the front-ends ask for it:
//! AlterPartitionReassignments, ListPartitionReassignments, node
//! decommission and UnregisterBroker. The rules are the controller's
//! (`metadata::reassign`, `metadata::decommission`); this is the broker's
//! surface over them.

use crate::broker::Broker;
use crate::error::{BrokerError, Result};
use crate::metadata::ControllerRequest;

/// One partition's reassignment in progress, as ListPartitionReassignments
/// shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reassignment {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// All replicas (target first).
    pub replicas: Vec<i32>,
    /// Replicas being added.
    pub adding: Vec<i32>,
    /// Replicas being removed.
    pub removing: Vec<i32>,
}

impl Broker {
    /// Reassigns `topic`-`partition` to `replicas`, or cancels its
    /// reassignment (`None`), through the controller. Returns once the
    /// change is in this node's image; the reassignment then runs on.
    pub async fn alter_reassignment(&self, topic: &str, partition: i32, replicas: Option<Vec<i32>>) -> Result<()> {
        let image = self.metadata();
        if image.partition(topic, partition).is_none() {
            return Err(BrokerError::UnknownTopicOrPartition);
        }
        let request = ControllerRequest::AlterReassignment { topic: topic.to_string(), partition, replicas };
        self.submit(request).await.map(|_| ())
    }

    /// Reassignments in progress, of the partitions `wanted` names (topic,
    /// partitions) or of all, from this node's image. Unknown topics and
    /// partitions are left out, as Kafka does.
    pub fn reassignments(&self, wanted: Option<&[(String, Vec<i32>)]>) -> Vec<Reassignment> {
        let image = self.metadata();
        let mut out = Vec::new();
        for topic in image.topics.values() {
            let indexes: Option<&Vec<i32>> = match wanted {
                None => None,
                Some(w) => match w.iter().find(|(name, _)| *name == topic.name) {
                    Some((_, indexes)) => Some(indexes),
                    None => continue,
                },
            };
            for (i, p) in (0..).zip(&topic.partitions) {
                if !p.reassigning() || indexes.is_some_and(|w| !w.contains(&i)) {
                    continue;
                }
                out.push(Reassignment {
                    topic: topic.name.clone(),
                    partition: i,
                    replicas: p.replicas.clone(),
                    adding: p.adding_replicas.clone(),
                    removing: p.removing_replicas.clone(),
                });
            }
        }
        out
    }

    /// Starts decommissioning node `node` (idempotent).
    pub async fn decommission_node(&self, node: i32) -> Result<()> {
        if !self.metadata().nodes.contains_key(&node) {
            return Err(BrokerError::NodeNotRegistered(node));
        }
        self.submit(ControllerRequest::DecommissionNode { node_id: node }).await.map(|_| ())
    }

    /// Calls off node `node`'s decommission (idempotent).
    pub async fn recommission_node(&self, node: i32) -> Result<()> {
        if !self.metadata().nodes.contains_key(&node) {
            return Err(BrokerError::NodeNotRegistered(node));
        }
        self.submit(ControllerRequest::RecommissionNode { node_id: node }).await.map(|_| ())
    }

    /// Removes a stopped node holding no replicas from the metadata.
    pub async fn unregister_node(&self, node: i32) -> Result<()> {
        if !self.metadata().nodes.contains_key(&node) {
            return Err(BrokerError::NodeNotRegistered(node));
        }
        self.submit(ControllerRequest::UnregisterNode { node_id: node }).await.map(|_| ())
    }
}
