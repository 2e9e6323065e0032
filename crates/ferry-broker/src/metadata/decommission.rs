//! A node leaving the cluster: decommission (no new replicas on it, its
//! replicas moved away by the controller) and then unregistration
//! (Kafka's UnregisterBroker) once it is stopped and holds nothing. The
//! checks both controllers share.

use super::{MetadataError, MetadataImage, MetadataRecord};

/// The record that starts decommissioning `node`, or `None` if it already is.
pub fn decommission(image: &MetadataImage, node: i32) -> Result<Option<MetadataRecord>, MetadataError> {
    if !image.nodes.contains_key(&node) {
        return Err(MetadataError::UnknownNode(node));
    }
    Ok((!image.decommissioning.contains(&node)).then_some(MetadataRecord::DecommissionNode { node_id: node }))
}

/// The record that calls off `node`'s decommission, or `None` if it is
/// not being decommissioned.
pub fn recommission(image: &MetadataImage, node: i32) -> Result<Option<MetadataRecord>, MetadataError> {
    if !image.nodes.contains_key(&node) {
        return Err(MetadataError::UnknownNode(node));
    }
    Ok(image.decommissioning.contains(&node).then_some(MetadataRecord::RecommissionNode { node_id: node }))
}

/// The record that removes `node` from the metadata. Refused while the node
/// runs (it would register again) or holds replicas (they would be lost
/// from their partitions without a reassignment).
pub fn unregister(image: &MetadataImage, node: i32) -> Result<MetadataRecord, MetadataError> {
    let info = image.nodes.get(&node).ok_or(MetadataError::UnknownNode(node))?;
    if !info.fenced {
        return Err(MetadataError::NodeInUse(format!("node {node} is running; stop it first")));
    }
    let held = image.partitions_on(node).count();
    if held > 0 {
        return Err(MetadataError::NodeInUse(format!(
            "node {node} still holds {held} replicas; decommission it and wait until it holds none"
        )));
    }
    Ok(MetadataRecord::UnregisterNode { node_id: node })
}
