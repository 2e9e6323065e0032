//! The cluster's nodes (DescribeCluster) and its controller quorum
//! (DescribeQuorum on the `__cluster_metadata` log).

use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::{DescribeClusterRequest, DescribeQuorumRequest};

use crate::client::Client;
use crate::error::{ClientError, check_with_message};
use crate::topic_name;

/// The metadata log DescribeQuorum asks about.
const METADATA_TOPIC: &str = "__cluster_metadata";

/// One node as DescribeCluster reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ClusterNode {
    /// The node id.
    pub id: i32,
    /// The advertised Kafka host.
    pub host: String,
    /// The advertised Kafka port.
    pub port: i32,
    /// The node's rack, if it has one.
    pub rack: Option<String>,
    /// Whether the node is fenced (known from DescribeCluster v2 on; false before).
    pub fenced: bool,
}

/// The cluster as DescribeCluster reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ClusterDescription {
    /// The cluster id.
    pub cluster_id: String,
    /// The controller's node id (-1: none).
    pub controller_id: i32,
    /// Every node, fenced ones included where the broker can say.
    pub nodes: Vec<ClusterNode>,
}

/// A member of the controller quorum as DescribeQuorum reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct QuorumReplica {
    /// The node id.
    pub id: i32,
    /// Its metadata log end offset (-1: unknown).
    pub log_end_offset: i64,
    /// When the leader last heard a fetch from it, ms since the epoch (-1: unknown).
    pub last_fetch_ms: i64,
    /// When it was last caught up, ms since the epoch (-1: unknown).
    pub last_caught_up_ms: i64,
}

/// The controller quorum as DescribeQuorum reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct QuorumDescription {
    /// The leader's node id (-1: none known).
    pub leader: i32,
    /// The leader epoch (the Raft term).
    pub epoch: i32,
    /// The metadata log's high watermark (the commit index).
    pub high_watermark: i64,
    /// Voters.
    pub voters: Vec<QuorumReplica>,
    /// Nodes that follow the log without voting.
    pub observers: Vec<QuorumReplica>,
}

impl Client {
    /// The cluster's nodes (DescribeCluster; fenced nodes included from v2).
    pub async fn describe_cluster(&self) -> Result<ClusterDescription, ClientError> {
        let conn = self.any();
        let v = conn.version::<DescribeClusterRequest>(2)?;
        // v2 added the flag; an older version cannot carry it.
        let req = DescribeClusterRequest::default().with_include_fenced_brokers(v >= 2);
        let resp = conn.send_version(req, v).await?;
        check_with_message(resp.error_code, resp.error_message.as_ref(), || "describing the cluster".into())?;
        Ok(ClusterDescription {
            cluster_id: resp.cluster_id.to_string(),
            controller_id: resp.controller_id.0,
            nodes: resp
                .brokers
                .iter()
                .map(|b| ClusterNode {
                    id: b.broker_id.0,
                    host: b.host.to_string(),
                    port: b.port,
                    rack: b.rack.as_ref().map(ToString::to_string),
                    fenced: b.is_fenced,
                })
                .collect(),
        })
    }

    /// The controller quorum of the metadata log (DescribeQuorum).
    pub async fn describe_quorum(&self) -> Result<QuorumDescription, ClientError> {
        let req = DescribeQuorumRequest::default().with_topics(vec![
            TopicData::default()
                .with_topic_name(topic_name(METADATA_TOPIC))
                .with_partitions(vec![PartitionData::default().with_partition_index(0)]),
        ]);
        let resp = self.any().send(req, 2).await?;
        check_with_message(resp.error_code, resp.error_message.as_ref(), || "describing the quorum".into())?;
        let p = resp
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or_else(|| ClientError::Decode("DescribeQuorum: no partition".into()))?;
        check_with_message(p.error_code, p.error_message.as_ref(), || "describing the quorum".into())?;
        let replicas = |rs: &[kafka_protocol::messages::describe_quorum_response::ReplicaState]| {
            rs.iter()
                .map(|r| QuorumReplica {
                    id: r.replica_id.0,
                    log_end_offset: r.log_end_offset,
                    last_fetch_ms: r.last_fetch_timestamp,
                    last_caught_up_ms: r.last_caught_up_timestamp,
                })
                .collect()
        };
        Ok(QuorumDescription {
            leader: p.leader_id.0,
            epoch: p.leader_epoch,
            high_watermark: p.high_watermark,
            voters: replicas(&p.current_voters),
            observers: replicas(&p.observers),
        })
    }
}
