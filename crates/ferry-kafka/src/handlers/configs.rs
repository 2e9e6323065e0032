//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics and
//! the broker. Broker-level values are the run-time defaults of topic
//! configs, under their broker names (`log.retention.ms` ...).

use std::collections::BTreeMap;

use ferry_broker::BrokerError;
use ferry_broker::topic_config::{self, BrokerDefaults, ConfigDef, ConfigSource, ConfigType, TOPIC_CONFIGS};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{Call, reassign};
use crate::errors::{denied_code, error_code, error_message};
use crate::response::Reply;
use ferry_broker::security::acl::CLUSTER_NAME;
use ferry_broker::security::{Operation, ResourceType};

const TOPIC: i8 = 2;
const BROKER: i8 = 4;

/// One effective config value.
pub struct Entry {
    pub def: &'static ConfigDef,
    pub value: String,
    pub source: ConfigSource,
    /// The built-in default for this topic (it can depend on the
    /// replication factor: `min.insync.replicas`).
    pub default: &'static str,
}

/// Every topic config's effective value for the given overrides, on a
/// topic of `replication_factor` replicas (`None`: broker level).
pub fn config_entries(
    broker: &BrokerDefaults,
    topic: &BTreeMap<String, String>,
    replication_factor: Option<usize>,
) -> Vec<Entry> {
    TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let (value, source) = topic_config::effective(def, broker, topic, replication_factor);
            let default = topic_config::builtin_default(def, replication_factor);
            Entry { def, value: value.to_string(), source, default }
        })
        .collect()
}

/// Kafka's ConfigSource codes.
pub fn source_code(source: ConfigSource) -> i8 {
    match source {
        ConfigSource::Topic => 1,
        ConfigSource::DynamicBroker => 3,
        ConfigSource::StaticBroker => 4,
        ConfigSource::Default => 5,
    }
}

fn type_code(kind: ConfigType) -> i8 {
    match kind {
        ConfigType::Boolean => 1,
        ConfigType::String => 2,
        ConfigType::Int => 3,
        ConfigType::Long => 5,
        ConfigType::List => 7,
    }
}

/// The denial code if the client may not do `op` on the configs of the
/// resource: a topic's are the topic's, a broker's are the cluster's.
fn refused(c: &Call, resource_type: i8, name: &str, op: Operation) -> Option<i16> {
    let (rt, name) = match resource_type {
        TOPIC => (ResourceType::Topic, name),
        _ => (ResourceType::Cluster, CLUSTER_NAME),
    };
    (!c.allowed(op, rt, name)).then(|| denied_code(rt))
}

pub fn describe(c: &Call, req: DescribeConfigsRequest) -> Reply {
    let broker = &c.ctx.broker;
    let v = c.version;
    let defaults = broker.defaults();
    let image = broker.metadata();
    let results = req
        .resources
        .into_iter()
        .map(|res| {
            let mut r = DescribeConfigsResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            if let Some(code) = refused(c, res.resource_type, &res.resource_name, Operation::DescribeConfigs) {
                r.error_code = code;
                return r;
            }
            // Null or empty: every config (as Kafka's ConfigHelper).
            let wanted = |name: &str| {
                res.configuration_keys.as_ref().is_none_or(|k| k.is_empty() || k.iter().any(|x| &**x == name))
            };
            let entries: Vec<(String, Entry, bool)> = match res.resource_type {
                TOPIC => {
                    if let Some(t) = image.topic(&res.resource_name) {
                        config_entries(&defaults, &t.configs, Some(t.replication_factor()))
                            .into_iter()
                            .map(|e| (e.def.name.to_string(), e, false))
                            .collect()
                    } else {
                        r.error_code = ResponseError::UnknownTopicOrPartition.code();
                        Vec::new()
                    }
                }
                BROKER if is_this_broker(c, &res.resource_name) => config_entries(&defaults, &BTreeMap::new(), None)
                    .into_iter()
                    .map(|e| (e.def.broker_name.to_string(), e, false))
                    .collect(),
                // Another registered node: only its node configs (below).
                BROKER if reassign::decommissioning(c, &res.resource_name).is_some() => Vec::new(),
                _ => {
                    r.error_code = ResponseError::InvalidRequest.code();
                    Vec::new()
                }
            };
            r.configs = entries
                .into_iter()
                .filter(|(name, _, _)| wanted(name))
                .map(|(name, e, read_only)| {
                    let source = source_code(e.source);
                    let mut out = DescribeConfigsResourceResult::default()
                        .with_name(StrBytes::from_string(name))
                        .with_value(Some(StrBytes::from_string(e.value.clone())))
                        .with_read_only(read_only)
                        .with_config_source(source);
                    if req.include_synonyms {
                        out.synonyms = synonyms(&e, &defaults);
                    }
                    if v >= 3 {
                        out.config_type = type_code(e.def.kind);
                        if req.include_documentation {
                            out.documentation = Some(StrBytes::from_static_str(e.def.doc));
                        }
                    }
                    out
                })
                .collect();
            if res.resource_type == BROKER
                && wanted(reassign::DECOMMISSION)
                && let Some(leaving) = reassign::decommissioning(c, &res.resource_name)
            {
                r.configs.push(
                    DescribeConfigsResourceResult::default()
                        .with_name(StrBytes::from_static_str(reassign::DECOMMISSION))
                        .with_value(Some(StrBytes::from_static_str(if leaving { "true" } else { "false" })))
                        .with_config_source(if leaving { 2 } else { 5 }),
                );
            }
            r
        })
        .collect();
    c.reply(ApiKey::DescribeConfigs, &DescribeConfigsResponse::default().with_results(results))
}

/// Where else the value could come from, most specific first.
fn synonyms(e: &Entry, defaults: &BrokerDefaults) -> Vec<DescribeConfigsSynonym> {
    let mut out = Vec::new();
    if e.source == ConfigSource::Topic {
        out.push((e.def.name, e.value.clone(), 1));
    }
    if let Some(v) = defaults.dynamic.get(e.def.name) {
        out.push((e.def.broker_name, v.clone(), 3));
    }
    if let Some(v) = defaults.fixed.get(e.def.name) {
        out.push((e.def.broker_name, v.clone(), 4));
    }
    out.push((e.def.broker_name, e.default.to_string(), 5));
    out.into_iter()
        .map(|(n, v, s)| {
            DescribeConfigsSynonym::default()
                .with_name(StrBytes::from_static_str(n))
                .with_value(Some(StrBytes::from_string(v)))
                .with_source(s)
        })
        .collect()
}

fn is_this_broker(c: &Call, name: &str) -> bool {
    name.is_empty() || name.parse::<i32>().ok() == Some(c.ctx.broker.node_id())
}

/// Broker config names to topic config names; unknown ones are refused.
fn broker_to_topic_names(configs: BTreeMap<String, String>) -> ferry_broker::Result<BTreeMap<String, String>> {
    configs
        .into_iter()
        .map(|(k, v)| match topic_config::find_broker(&k) {
            Some(def) => Ok((def.name.to_string(), v)),
            None => Err(BrokerError::InvalidConfig(format!("unknown or read-only broker config {k}"))),
        })
        .collect()
}

/// Applies a whole new set of values to a resource, through the controller.
async fn apply(
    c: &Call,
    resource_type: i8,
    name: &str,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> ferry_broker::Result<()> {
    let broker = &c.ctx.broker;
    match resource_type {
        TOPIC => broker.set_topic_configs(name, configs, validate_only).await,
        BROKER if is_this_broker(c, name) => {
            broker.set_dynamic_defaults(broker_to_topic_names(configs)?, validate_only).await
        }
        _ => Err(BrokerError::InvalidConfig(format!("resource type {resource_type} {name:?} cannot be altered"))),
    }
}

/// The current values set on a resource, under the names the request uses.
fn current(c: &Call, resource_type: i8, name: &str) -> ferry_broker::Result<BTreeMap<String, String>> {
    let broker = &c.ctx.broker;
    match resource_type {
        TOPIC => broker.metadata().topic(name).map(|t| t.configs.clone()).ok_or(BrokerError::UnknownTopicOrPartition),
        BROKER if is_this_broker(c, name) => Ok(broker
            .defaults()
            .dynamic
            .into_iter()
            .filter_map(|(k, v)| Some((topic_config::find(&k)?.broker_name.to_string(), v)))
            .collect()),
        _ => Err(BrokerError::InvalidConfig(format!("resource type {resource_type} {name:?} cannot be altered"))),
    }
}

fn result(
    res_type: i8,
    name: StrBytes,
    outcome: ferry_broker::Result<()>,
) -> alter_configs_response::AlterConfigsResourceResponse {
    let mut r = alter_configs_response::AlterConfigsResourceResponse::default()
        .with_resource_type(res_type)
        .with_resource_name(name);
    if let Err(e) = outcome {
        r.error_code = error_code(&e);
        r.error_message = Some(error_message(&e));
    }
    r
}

/// AlterConfigs: the given values replace everything set on the resource.
pub async fn alter(c: Call, req: AlterConfigsRequest) -> Reply {
    let mut responses = Vec::with_capacity(req.resources.len());
    for res in req.resources {
        let configs =
            res.configs.iter().filter_map(|x| Some((x.name.to_string(), x.value.as_ref()?.to_string()))).collect();
        if let Some(code) = refused(&c, res.resource_type, &res.resource_name, Operation::AlterConfigs) {
            let r = result(res.resource_type, res.resource_name, Ok(()));
            responses.push(r.with_error_code(code));
            continue;
        }
        let outcome = apply(&c, res.resource_type, &res.resource_name, configs, req.validate_only).await;
        responses.push(result(res.resource_type, res.resource_name, outcome));
    }
    c.reply(ApiKey::AlterConfigs, &AlterConfigsResponse::default().with_responses(responses))
}

/// IncrementalAlterConfigs: SET, DELETE, APPEND and SUBTRACT on single values.
pub async fn incremental_alter(c: Call, req: IncrementalAlterConfigsRequest) -> Reply {
    let mut responses = Vec::with_capacity(req.resources.len());
    for res in req.resources {
        // BROKER resources (node.decommission too) check Alter-configs on the Cluster.
        if let Some(code) = refused(&c, res.resource_type, &res.resource_name, Operation::AlterConfigs) {
            responses.push(
                incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_error_code(code)
                    .with_resource_type(res.resource_type)
                    .with_resource_name(res.resource_name),
            );
            continue;
        }
        if reassign::is_decommission(res.resource_type, &res.configs) {
            let outcome = reassign::decommission(&c, &res.resource_name, &res.configs, req.validate_only).await;
            let r = result(res.resource_type, res.resource_name, outcome);
            responses.push(
                incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_error_code(r.error_code)
                    .with_error_message(r.error_message)
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name),
            );
            continue;
        }
        let changed = current(&c, res.resource_type, &res.resource_name).and_then(|mut configs| {
            for op in &res.configs {
                let name = op.name.to_string();
                let value = op.value.as_ref().map(std::string::ToString::to_string);
                match (op.config_operation, value) {
                    (0, Some(v)) => {
                        configs.insert(name, v);
                    }
                    (1, _) => {
                        configs.remove(&name);
                    }
                    (2 | 3, Some(v)) => {
                        let def = topic_config::find(&name).or_else(|| topic_config::find_broker(&name));
                        if def.is_none_or(|d| d.kind != ConfigType::List) {
                            return Err(BrokerError::InvalidConfig(format!("{name} is not a list")));
                        }
                        let default = def.map_or("", |d| d.default).to_string();
                        let existing = configs.get(&name).cloned().unwrap_or(default);
                        let mut items: Vec<String> =
                            existing.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
                        for item in v.split(',').map(str::trim) {
                            if op.config_operation == 2 && !items.iter().any(|i| i == item) {
                                items.push(item.to_string());
                            } else if op.config_operation == 3 {
                                items.retain(|i| i != item);
                            }
                        }
                        configs.insert(name, items.join(","));
                    }
                    _ => {
                        return Err(BrokerError::InvalidConfig(format!(
                            "bad operation {} on {name}",
                            op.config_operation
                        )));
                    }
                }
            }
            Ok(configs)
        });
        let outcome = match changed {
            Ok(configs) => apply(&c, res.resource_type, &res.resource_name, configs, req.validate_only).await,
            Err(e) => Err(e),
        };
        let r = result(res.resource_type, res.resource_name, outcome);
        responses.push(
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(r.error_code)
                .with_error_message(r.error_message)
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name),
        );
    }
    c.reply(ApiKey::IncrementalAlterConfigs, &IncrementalAlterConfigsResponse::default().with_responses(responses))
}
