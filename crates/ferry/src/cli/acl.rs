//! `ferry acl add|list|remove`: Kafka ACLs through CreateAcls,
//! DescribeAcls and DeleteAcls, with rpk's flags:
//! `ferry acl add --allow-principal User:alice --operation read --topic orders`.
//! AMQP and MQTT resources (`--vhost`, `--queue`, `--exchange`,
//! `--mqtt-topic`) travel with Ferry's own codes past Kafka's (see
//! `ResourceType::wire_code`).

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use ferry_broker::security::acl::CLUSTER_NAME;
use ferry_broker::security::{Operation, PatternType, Permission, Principal, ResourceType};
use ferry_client::check;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

use super::output::{json, table};
use super::{ClientArgs, Format};

#[derive(Debug, Subcommand)]
pub enum AclVerb {
    /// Add ACLs: every principal x host x operation x resource given.
    Add(AclFlags),
    /// List ACLs (all, or those on the resources given).
    List(AclFlags),
    /// Remove exactly the ACLs the flags describe (as `add` would create).
    Remove(AclFlags),
}

#[derive(Debug, Args)]
pub struct AclCmd {
    #[command(subcommand)]
    pub verb: AclVerb,
    #[command(flatten)]
    pub conn: ClientArgs,
}

#[derive(Debug, Args, Default)]
pub struct AclFlags {
    /// Principals to allow (User:name, User:* for everyone).
    #[arg(long, value_delimiter = ',')]
    pub allow_principal: Vec<String>,
    /// Principals to deny.
    #[arg(long, value_delimiter = ',')]
    pub deny_principal: Vec<String>,
    /// Hosts (client IP addresses) allowed principals may connect from (default *).
    #[arg(long, value_delimiter = ',')]
    pub allow_host: Vec<String>,
    /// Hosts denied principals are denied from (default *).
    #[arg(long, value_delimiter = ',')]
    pub deny_host: Vec<String>,
    /// Operations: all, read, write, create, delete, alter, describe,
    /// describe_configs, alter_configs, idempotent_write, cluster_action.
    #[arg(long, value_delimiter = ',')]
    pub operation: Vec<String>,
    /// Topics.
    #[arg(long, value_delimiter = ',')]
    pub topic: Vec<String>,
    /// Consumer groups.
    #[arg(long, value_delimiter = ',')]
    pub group: Vec<String>,
    /// Transactional ids.
    #[arg(long, value_delimiter = ',')]
    pub transactional_id: Vec<String>,
    /// The cluster.
    #[arg(long)]
    pub cluster: bool,
    /// AMQP virtual hosts (`describe` lets a user open one).
    #[arg(long, value_delimiter = ',')]
    pub vhost: Vec<String>,
    /// AMQP / STOMP / Redis queues, as VHOST/QUEUE (`//orders` is
    /// `orders` in the vhost `/`).
    #[arg(long, value_delimiter = ',')]
    pub queue: Vec<String>,
    /// AMQP exchanges, as VHOST/EXCHANGE.
    #[arg(long, value_delimiter = ',')]
    pub exchange: Vec<String>,
    /// MQTT topics or filters (with --resource-pattern-type mqtt-filter:
    /// `+`, `#`, `%u`, `%c`).
    #[arg(long, value_delimiter = ',')]
    pub mqtt_topic: Vec<String>,
    /// literal (default), prefixed, regex (queues, exchanges: RabbitMQ's
    /// permission regex over VHOST/NAME) or mqtt-filter (MQTT topics);
    /// `list` also takes any and match.
    #[arg(long, default_value = "literal")]
    pub resource_pattern_type: String,
}

/// (type, name) of every resource named by the flags.
fn resources(f: &AclFlags) -> Vec<(ResourceType, String)> {
    let mut out: Vec<(ResourceType, String)> = Vec::new();
    out.extend(f.topic.iter().map(|t| (ResourceType::Topic, t.clone())));
    out.extend(f.group.iter().map(|g| (ResourceType::Group, g.clone())));
    out.extend(f.transactional_id.iter().map(|t| (ResourceType::TransactionalId, t.clone())));
    if f.cluster {
        out.push((ResourceType::Cluster, CLUSTER_NAME.to_string()));
    }
    out.extend(f.vhost.iter().map(|v| (ResourceType::Vhost, v.clone())));
    out.extend(f.queue.iter().map(|q| (ResourceType::Queue, q.clone())));
    out.extend(f.exchange.iter().map(|x| (ResourceType::Exchange, x.clone())));
    out.extend(f.mqtt_topic.iter().map(|t| (ResourceType::MqttTopic, t.clone())));
    out
}

fn pattern_code(name: &str, for_list: bool) -> anyhow::Result<i8> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "any" if for_list => 1,
        "match" if for_list => 2,
        other => match PatternType::from_name(other) {
            Some(t) => t.wire_code(),
            None => bail!("--resource-pattern-type {other:?}: literal, prefixed, regex or mqtt-filter"),
        },
    })
}

/// (principal, host, permission) of every entry the flags name.
fn entries(f: &AclFlags) -> anyhow::Result<Vec<(String, String, Permission)>> {
    let mut out = Vec::new();
    for (principals, hosts, permission) in
        [(&f.allow_principal, &f.allow_host, Permission::Allow), (&f.deny_principal, &f.deny_host, Permission::Deny)]
    {
        let hosts = if hosts.is_empty() { vec!["*".to_string()] } else { hosts.clone() };
        for p in principals {
            Principal::parse(p).map_err(anyhow::Error::msg)?;
            for h in &hosts {
                out.push((p.clone(), h.clone(), permission));
            }
        }
    }
    Ok(out)
}

fn operations(f: &AclFlags) -> anyhow::Result<Vec<Operation>> {
    f.operation.iter().map(|o| Operation::from_name(o).with_context(|| format!("unknown operation {o:?}"))).collect()
}

pub async fn run(cmd: AclCmd) -> anyhow::Result<()> {
    let client = cmd.conn.connect().await?;
    let conn = client.any();
    match &cmd.verb {
        AclVerb::Add(f) | AclVerb::Remove(f) => {
            let (res, ents, ops) = (resources(f), entries(f)?, operations(f)?);
            if res.is_empty() || ents.is_empty() || ops.is_empty() {
                bail!(
                    "name a resource (--topic, --group, --transactional-id, --cluster, --vhost, --queue, --exchange, \
                     --mqtt-topic), a principal and an operation"
                );
            }
            let pattern = pattern_code(&f.resource_pattern_type, false)?;
            let mut creations = Vec::new();
            for (rt, name) in &res {
                for (principal, host, permission) in &ents {
                    for op in &ops {
                        creations.push(
                            AclCreation::default()
                                .with_resource_type(rt.wire_code())
                                .with_resource_name(StrBytes::from_string(name.clone()))
                                .with_resource_pattern_type(pattern)
                                .with_principal(StrBytes::from_string(principal.clone()))
                                .with_host(StrBytes::from_string(host.clone()))
                                .with_operation(op.kafka_code())
                                .with_permission_type(permission.kafka_code()),
                        );
                    }
                }
            }
            let count = creations.len();
            if matches!(cmd.verb, AclVerb::Add(_)) {
                let r = conn.send(CreateAclsRequest::default().with_creations(creations), 3).await?;
                for res in r.results {
                    let m = res.error_message.map(|m| m.to_string()).unwrap_or_default();
                    check(res.error_code, || format!("CreateAcls {m}"))?;
                }
                say!("{count} ACL(s) added");
            } else {
                let filters = creations
                    .into_iter()
                    .map(|c| {
                        DeleteAclsFilter::default()
                            .with_resource_type_filter(c.resource_type)
                            .with_resource_name_filter(Some(c.resource_name))
                            .with_pattern_type_filter(c.resource_pattern_type)
                            .with_principal_filter(Some(c.principal))
                            .with_host_filter(Some(c.host))
                            .with_operation(c.operation)
                            .with_permission_type(c.permission_type)
                    })
                    .collect();
                let r = conn.send(DeleteAclsRequest::default().with_filters(filters), 3).await?;
                let mut removed = 0;
                for res in r.filter_results {
                    let m = res.error_message.map(|m| m.to_string()).unwrap_or_default();
                    check(res.error_code, || format!("DeleteAcls {m}"))?;
                    removed += res.matching_acls.len();
                }
                say!("{removed} ACL(s) removed");
            }
        }
        AclVerb::List(f) => {
            let res = resources(f);
            let pattern = if f.resource_pattern_type == "literal" && res.is_empty() {
                1
            } else {
                pattern_code(&f.resource_pattern_type, true)?
            };
            // ANY lists Kafka's types; Ferry's own are listed by naming them.
            let filters: Vec<(i8, Option<String>)> = if res.is_empty() {
                std::iter::once((1, None))
                    .chain(ResourceType::FERRY_TYPES.iter().map(|t| (t.wire_code(), None)))
                    .collect()
            } else {
                res.into_iter().map(|(t, n)| (t.wire_code(), Some(n))).collect()
            };
            let mut rows = Vec::new();
            for (rt, name) in filters {
                let req = DescribeAclsRequest::default()
                    .with_resource_type_filter(rt)
                    .with_resource_name_filter(name.map(StrBytes::from_string))
                    .with_pattern_type_filter(pattern)
                    .with_principal_filter(None)
                    .with_host_filter(None)
                    .with_operation(1)
                    .with_permission_type(1);
                let r = conn.send(req, 3).await?;
                let m = r.error_message.map(|m| m.to_string()).unwrap_or_default();
                check(r.error_code, || format!("DescribeAcls {m}"))?;
                for res in r.resources {
                    for a in res.acls {
                        rows.push(vec![
                            a.principal.to_string(),
                            a.host.to_string(),
                            ResourceType::from_wire_code(res.resource_type).map_or("?", ResourceType::name).into(),
                            res.resource_name.to_string(),
                            PatternType::from_wire_code(res.pattern_type).map_or("?", PatternType::name).into(),
                            Operation::from_kafka_code(a.operation).map_or("?", Operation::name).into(),
                            if a.permission_type == Permission::Allow.kafka_code() { "allow" } else { "deny" }.into(),
                        ]);
                    }
                }
            }
            match cmd.conn.format {
                Format::Json => json(&json!(
                    rows.iter()
                        .map(|r| json!({
                            "principal": r[0], "host": r[1], "resource_type": r[2], "resource_name": r[3],
                            "pattern_type": r[4], "operation": r[5], "permission": r[6],
                        }))
                        .collect::<Vec<_>>()
                )),
                Format::Table => table(
                    &["PRINCIPAL", "HOST", "RESOURCE-TYPE", "RESOURCE-NAME", "PATTERN", "OPERATION", "PERMISSION"],
                    rows,
                ),
            }
        }
    }
    Ok(())
}
