//! Metadata: the cluster's brokers, its topics and their partition leaders.

use std::sync::Arc;

use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{DescribeTopicPartitionsRequest, MetadataRequest, MetadataResponse};

use crate::client::Client;
use crate::conn::Connection;
use crate::error::{ClientError, check};
use crate::topic_name;

/// Preferred Metadata version (v12: topic ids, no topic-authorized fields).
const METADATA_VERSION: i16 = 12;

/// One broker of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerMetadata {
    /// The broker's node id.
    pub node_id: i32,
    /// The host clients should connect to.
    pub host: String,
    /// The port clients should connect to.
    pub port: i32,
}

/// One partition of a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionMetadata {
    /// The partition index.
    pub partition: i32,
    /// The leader's node id (-1: none).
    pub leader: i32,
    /// The leader epoch (-1: unknown).
    pub leader_epoch: i32,
    /// Node ids of the replicas.
    pub replicas: Vec<i32>,
    /// Node ids of the in-sync replicas.
    pub isr: Vec<i32>,
    /// The partition's Kafka error code (0: none).
    pub error: i16,
}

/// Partitions of a topic, as Metadata tells them.
#[derive(Clone, Debug)]
pub struct TopicMetadata {
    /// The topic's name.
    pub name: String,
    /// The topic id (a UUID; all zeros if the broker has none).
    pub id: String,
    /// The topic's Kafka error code (0: none).
    pub error: i16,
    /// The partitions, by index.
    pub partitions: Vec<PartitionMetadata>,
}

impl TopicMetadata {
    /// Partition `partition`, if the topic has it.
    pub fn partition(&self, partition: i32) -> Option<&PartitionMetadata> {
        self.partitions.iter().find(|p| p.partition == partition)
    }
}

/// Brokers and topics of the cluster.
#[derive(Clone, Debug)]
pub struct ClusterMetadata {
    /// The cluster id, if the broker reports one.
    pub cluster_id: Option<String>,
    /// The controller's node id (-1: none).
    pub controller_id: i32,
    /// The brokers.
    pub brokers: Vec<BrokerMetadata>,
    /// The topics asked for (or all of them).
    pub topics: Vec<TopicMetadata>,
}

impl Client {
    /// Metadata of `topics` (`None`: all topics; `Some(&[])`: brokers only).
    /// Also refreshes the broker addresses [`Client::node`] connects to.
    pub async fn metadata(&self, topics: Option<&[String]>) -> Result<ClusterMetadata, ClientError> {
        let req = MetadataRequest::default().with_allow_auto_topic_creation(false).with_topics(
            topics
                .map(|ts| ts.iter().map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t)))).collect()),
        );
        let resp: MetadataResponse = self.any().send(req, METADATA_VERSION).await?;
        let brokers: Vec<BrokerMetadata> = resp
            .brokers
            .iter()
            .map(|b| BrokerMetadata { node_id: b.node_id.0, host: b.host.to_string(), port: b.port })
            .collect();
        self.learn_brokers(brokers.iter().map(|b| (b.node_id, format!("{}:{}", b.host, b.port))));
        let topics = resp
            .topics
            .iter()
            .map(|t| TopicMetadata {
                name: t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
                id: t.topic_id.to_string(),
                error: t.error_code,
                partitions: {
                    let mut p: Vec<_> = t
                        .partitions
                        .iter()
                        .map(|p| PartitionMetadata {
                            partition: p.partition_index,
                            leader: p.leader_id.0,
                            leader_epoch: p.leader_epoch,
                            replicas: p.replica_nodes.iter().map(|n| n.0).collect(),
                            isr: p.isr_nodes.iter().map(|n| n.0).collect(),
                            error: p.error_code,
                        })
                        .collect();
                    p.sort_by_key(|p| p.partition);
                    p
                },
            })
            .collect();
        Ok(ClusterMetadata {
            cluster_id: resp.cluster_id.map(|c| c.to_string()),
            controller_id: resp.controller_id.0,
            brokers,
            topics,
        })
    }

    /// The eligible leader replicas (KIP-966) of each partition of `topic`,
    /// by DescribeTopicPartitions (v0, page by page); partitions without
    /// any are left out.
    pub async fn eligible_leader_replicas(
        &self,
        topic: &str,
    ) -> Result<std::collections::BTreeMap<i32, Vec<i32>>, ClientError> {
        let mut out = std::collections::BTreeMap::new();
        let mut cursor: Option<Cursor> = None;
        // Bounded: a broker that keeps answering with a cursor cannot loop us.
        for _ in 0..1000 {
            let req = DescribeTopicPartitionsRequest::default()
                .with_topics(vec![TopicRequest::default().with_name(topic_name(topic))])
                .with_response_partition_limit(2000)
                .with_cursor(cursor.take());
            let resp = self.any().send(req, 0).await?;
            for t in &resp.topics {
                check(t.error_code, || format!("topic {topic}"))?;
                for p in &t.partitions {
                    let elr: Vec<i32> = p.eligible_leader_replicas.iter().flatten().map(|n| n.0).collect();
                    if !elr.is_empty() {
                        out.insert(p.partition_index, elr);
                    }
                }
            }
            match resp.next_cursor {
                Some(next) => {
                    cursor = Some(
                        Cursor::default().with_topic_name(next.topic_name).with_partition_index(next.partition_index),
                    );
                }
                None => return Ok(out),
            }
        }
        Err(ClientError::Decode("DescribeTopicPartitions: too many pages".into()))
    }

    /// Metadata of one existing topic.
    pub async fn topic(&self, name: &str) -> Result<TopicMetadata, ClientError> {
        let md = self.metadata(Some(&[name.to_string()])).await?;
        let t = md.topics.into_iter().next().ok_or_else(|| ClientError::NoMetadata(name.to_string()))?;
        check(t.error, || format!("topic {name}"))?;
        Ok(t)
    }

    /// The leader's connection for a partition.
    pub async fn leader(&self, topic: &str, partition: i32) -> Result<Arc<Connection>, ClientError> {
        let t = self.topic(topic).await?;
        let p = t
            .partition(partition)
            .ok_or_else(|| ClientError::UnknownPartition { topic: topic.to_string(), partition })?;
        check(p.error, || format!("partition {topic}/{partition}"))?;
        self.node(p.leader).await
    }
}
