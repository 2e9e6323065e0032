//! Topic administration: CreateTopics, DeleteTopics, DescribeConfigs,
//! IncrementalAlterConfigs, ElectLeaders.

use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::{
    CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest, ElectLeadersRequest,
    IncrementalAlterConfigsRequest,
};
use kafka_protocol::protocol::StrBytes;

use crate::client::Client;
use crate::error::{ClientError, check_with_message};
use crate::topic_name;

/// DescribeConfigs' and IncrementalAlterConfigs' resource type of a topic.
const TOPIC_RESOURCE: i8 = 2;
/// How long the controller may take to create or delete a topic.
const ADMIN_TIMEOUT_MS: i32 = 30_000;

/// One config of a topic as DescribeConfigs reports it.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ConfigEntry {
    /// The config's name (e.g. `retention.ms`).
    pub name: String,
    /// Its value (`None`: null or sensitive).
    pub value: Option<String>,
    /// Kafka's config source name (TOPIC, DEFAULT, ...).
    pub source: &'static str,
    /// Whether the broker refuses to change it.
    pub read_only: bool,
}

fn source_name(code: i8) -> &'static str {
    match code {
        1 => "TOPIC",
        2 => "DYNAMIC_BROKER",
        3 => "DYNAMIC_DEFAULT_BROKER",
        4 => "STATIC_BROKER",
        5 => "DEFAULT",
        6 => "DYNAMIC_BROKER_LOGGER",
        _ => "UNKNOWN",
    }
}

/// One partition's ElectLeaders outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ElectionOutcome {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// Kafka's error code: 0 elected, 84 ELECTION_NOT_NEEDED, 80
    /// PREFERRED_LEADER_NOT_AVAILABLE, 83 ELIGIBLE_LEADERS_NOT_AVAILABLE, ...
    pub error: i16,
}

impl Client {
    /// ElectLeaders (v2): preferred-leader elections, or with `unclean`
    /// leaders for leaderless partitions (a Ferry broker still elects only
    /// eligible replicas). `partitions`: `(topic, partition)` pairs, `None`
    /// for every partition (the answer then lists only those that needed
    /// an election).
    pub async fn elect_leaders(
        &self,
        unclean: bool,
        partitions: Option<&[(String, i32)]>,
    ) -> Result<Vec<ElectionOutcome>, ClientError> {
        let topics = partitions.map(|pairs| {
            let mut by_topic: std::collections::BTreeMap<&str, Vec<i32>> = std::collections::BTreeMap::new();
            for (topic, partition) in pairs {
                by_topic.entry(topic).or_default().push(*partition);
            }
            by_topic
                .into_iter()
                .map(|(t, p)| TopicPartitions::default().with_topic(topic_name(t)).with_partitions(p))
                .collect()
        });
        let req = ElectLeadersRequest::default()
            .with_election_type(i8::from(unclean))
            .with_topic_partitions(topics)
            .with_timeout_ms(ADMIN_TIMEOUT_MS);
        let resp = self.any().send(req, 2).await?;
        crate::error::check(resp.error_code, || "electing leaders".to_string())?;
        Ok(resp
            .replica_election_results
            .iter()
            .flat_map(|t| {
                t.partition_result.iter().map(|p| ElectionOutcome {
                    topic: t.topic.to_string(),
                    partition: p.partition_id,
                    error: p.error_code,
                })
            })
            .collect())
    }

    /// Creates a topic; `partitions`/`replication` of -1 leave them to the broker.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication: i16,
        configs: &[(String, String)],
    ) -> Result<(), ClientError> {
        let topic = CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(partitions)
            .with_replication_factor(replication)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(k.clone()))
                            .with_value(Some(StrBytes::from_string(v.clone())))
                    })
                    .collect(),
            );
        let req = CreateTopicsRequest::default().with_topics(vec![topic]).with_timeout_ms(ADMIN_TIMEOUT_MS);
        let resp = self.any().send(req, 7).await?;
        let r = resp.topics.first().ok_or_else(|| ClientError::Decode("CreateTopics: no result".into()))?;
        check_with_message(r.error_code, r.error_message.as_ref(), || format!("creating topic {name}"))
    }

    /// Deletes a topic and its data.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let req =
            DeleteTopicsRequest::default().with_topic_names(vec![topic_name(name)]).with_timeout_ms(ADMIN_TIMEOUT_MS);
        let resp = self.any().send(req, 5).await?;
        let r = resp.responses.first().ok_or_else(|| ClientError::Decode("DeleteTopics: no result".into()))?;
        check_with_message(r.error_code, r.error_message.as_ref(), || format!("deleting topic {name}"))
    }

    /// Every config of a topic.
    pub async fn describe_topic_configs(&self, name: &str) -> Result<Vec<ConfigEntry>, ClientError> {
        let res = DescribeConfigsResource::default()
            .with_resource_type(TOPIC_RESOURCE)
            .with_resource_name(StrBytes::from_string(name.to_string()))
            .with_configuration_keys(None);
        let req = DescribeConfigsRequest::default().with_resources(vec![res]);
        let resp = self.any().send(req, 4).await?;
        let r = resp.results.first().ok_or_else(|| ClientError::Decode("DescribeConfigs: no result".into()))?;
        check_with_message(r.error_code, r.error_message.as_ref(), || format!("describing configs of {name}"))?;
        Ok(r.configs
            .iter()
            .map(|c| ConfigEntry {
                name: c.name.to_string(),
                value: c.value.as_ref().map(std::string::ToString::to_string),
                source: source_name(c.config_source),
                read_only: c.read_only,
            })
            .collect())
    }

    /// Sets and removes topic config overrides (IncrementalAlterConfigs).
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        set: &[(String, String)],
        delete: &[String],
    ) -> Result<(), ClientError> {
        let mut configs: Vec<AlterableConfig> = set
            .iter()
            .map(|(k, v)| {
                AlterableConfig::default()
                    .with_name(StrBytes::from_string(k.clone()))
                    .with_config_operation(0)
                    .with_value(Some(StrBytes::from_string(v.clone())))
            })
            .collect();
        configs.extend(
            delete.iter().map(|k| {
                AlterableConfig::default().with_name(StrBytes::from_string(k.clone())).with_config_operation(1)
            }),
        );
        let res = AlterConfigsResource::default()
            .with_resource_type(TOPIC_RESOURCE)
            .with_resource_name(StrBytes::from_string(name.to_string()))
            .with_configs(configs);
        let req = IncrementalAlterConfigsRequest::default().with_resources(vec![res]);
        let resp = self.any().send(req, 1).await?;
        let r =
            resp.responses.first().ok_or_else(|| ClientError::Decode("IncrementalAlterConfigs: no result".into()))?;
        check_with_message(r.error_code, r.error_message.as_ref(), || format!("altering configs of {name}"))
    }
}
