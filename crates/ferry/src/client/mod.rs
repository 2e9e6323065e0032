//! A small async Kafka client on the `kafka-protocol` codec, for the CLI
//! and `ferry bench`. It speaks the Kafka protocol to any compatible broker
//! (so `ferry` works against Kafka and Redpanda too): connections per
//! broker, request versions from ApiVersions, partition leaders from
//! Metadata, group coordinators from FindCoordinator. Record batches are
//! built and parsed with `ferry_records::records`.

mod admin;
pub mod conn;
pub mod data;
mod groups;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

pub use conn::Connection;
pub use data::{FetchedRecord, Record};
pub use groups::GroupMembership;

#[derive(Clone, Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("connection to {0} failed: {1}")]
    Io(String, String),
    #[error("no answer from {0} in time")]
    Timeout(String),
    #[error("connection to {0} closed")]
    Closed(String),
    #[error("malformed response: {0}")]
    Decode(String),
    #[error("cannot encode request: {0}")]
    Encode(String),
    #[error("the broker does not support API {0} in a version this client speaks")]
    Unsupported(i16),
    #[error("{context}: {}", describe_code(*.code))]
    Kafka { code: i16, context: String },
    #[error("{0}")]
    Other(String),
}

/// Kafka's name for an error code (UNKNOWN_TOPIC_OR_PARTITION) and the code.
pub fn describe_code(code: i16) -> String {
    match kafka_protocol::error::ResponseError::try_from_code(code) {
        Some(e) => {
            let mut name = String::new();
            for (i, ch) in format!("{e:?}").chars().enumerate() {
                if ch.is_ascii_uppercase() && i > 0 {
                    name.push('_');
                }
                name.push(ch.to_ascii_uppercase());
            }
            format!("{name} (Kafka error {code})")
        }
        None => format!("Kafka error {code}"),
    }
}

/// Fails with the Kafka error behind a non-zero code.
pub fn check(code: i16, context: impl FnOnce() -> String) -> Result<(), ClientError> {
    if code == 0 { Ok(()) } else { Err(ClientError::Kafka { code, context: context() }) }
}

/// Partitions of a topic, as Metadata tells them.
#[derive(Clone, Debug)]
pub struct TopicMetadata {
    pub name: String,
    pub id: String,
    pub error: i16,
    /// (partition, leader node id, error code), by partition.
    pub partitions: Vec<(i32, i32, i16)>,
}

/// Brokers and topics of the cluster.
#[derive(Clone, Debug)]
pub struct ClusterMetadata {
    pub cluster_id: Option<String>,
    pub controller_id: i32,
    /// (node id, host, port).
    pub brokers: Vec<(i32, String, i32)>,
    pub topics: Vec<TopicMetadata>,
}

/// Connections to the brokers of one cluster.
pub struct Client {
    bootstrap: Arc<Connection>,
    /// node id -> address, from the last Metadata answer.
    brokers: Mutex<HashMap<i32, String>>,
    conns: tokio::sync::Mutex<HashMap<i32, Arc<Connection>>>,
    timeout: Duration,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Client {
    /// Connects to the first reachable of the comma-separated `brokers`.
    pub async fn connect(brokers: &str, timeout: Duration) -> Result<Client, ClientError> {
        let mut last = ClientError::Other("no broker address given".into());
        for addr in brokers.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            match Connection::connect(addr, timeout).await {
                Ok(c) => {
                    let client = Client {
                        bootstrap: Arc::new(c),
                        brokers: Mutex::new(HashMap::new()),
                        conns: tokio::sync::Mutex::new(HashMap::new()),
                        timeout,
                    };
                    client.metadata(Some(&[])).await?;
                    return Ok(client);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The bootstrap connection (any broker answers admin requests on one node).
    pub fn any(&self) -> &Arc<Connection> {
        &self.bootstrap
    }

    /// A connection to broker `node`, opened on first use.
    pub async fn node(&self, node: i32) -> Result<Arc<Connection>, ClientError> {
        let mut conns = self.conns.lock().await;
        if let Some(c) = conns.get(&node) {
            return Ok(c.clone());
        }
        let addr = lock(&self.brokers).get(&node).cloned();
        let conn = match addr {
            Some(a) if a == self.bootstrap.addr => self.bootstrap.clone(),
            Some(a) => Arc::new(Connection::connect(&a, self.timeout).await?),
            None => return Err(ClientError::Other(format!("unknown broker id {node}"))),
        };
        conns.insert(node, conn.clone());
        Ok(conn)
    }

    /// A new connection of its own to broker `node` (a benchmark producer's).
    pub async fn dedicated(&self, node: i32) -> Result<Connection, ClientError> {
        let addr = lock(&self.brokers).get(&node).cloned();
        let addr = addr.ok_or_else(|| ClientError::Other(format!("unknown broker id {node}")))?;
        Connection::connect(&addr, self.timeout).await
    }

    /// Metadata of `topics` (`None`: all topics; `Some(&[])`: brokers only).
    pub async fn metadata(&self, topics: Option<&[String]>) -> Result<ClusterMetadata, ClientError> {
        let req = MetadataRequest::default().with_allow_auto_topic_creation(false).with_topics(topics.map(|ts| {
            ts.iter()
                .map(|t| MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(t.clone())))))
                .collect()
        }));
        let resp: MetadataResponse = self.bootstrap.send(req, 12).await?;
        let brokers: Vec<(i32, String, i32)> =
            resp.brokers.iter().map(|b| (b.node_id.0, b.host.to_string(), b.port)).collect();
        {
            let mut known = lock(&self.brokers);
            for (id, host, port) in &brokers {
                known.insert(*id, format!("{host}:{port}"));
            }
        }
        let topics = resp
            .topics
            .iter()
            .map(|t| TopicMetadata {
                name: t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
                id: t.topic_id.to_string(),
                error: t.error_code,
                partitions: {
                    let mut p: Vec<_> =
                        t.partitions.iter().map(|p| (p.partition_index, p.leader_id.0, p.error_code)).collect();
                    p.sort();
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

    /// Metadata of one existing topic.
    pub async fn topic(&self, name: &str) -> Result<TopicMetadata, ClientError> {
        let md = self.metadata(Some(&[name.to_string()])).await?;
        let t = md.topics.into_iter().next().ok_or_else(|| ClientError::Other(format!("topic {name}: no metadata")))?;
        check(t.error, || format!("topic {name}"))?;
        Ok(t)
    }
}
