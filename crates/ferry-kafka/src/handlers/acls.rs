//! CreateAcls, DescribeAcls, DeleteAcls (Kafka's ACL model, stored in the
//! cluster metadata). Changing ACLs needs Alter on the cluster, listing
//! them Describe; a broker without an authorizer answers SECURITY_DISABLED,
//! as Kafka does.

use std::collections::BTreeMap;

use ferry_broker::security::acl::{CLUSTER_NAME, PatternFilter};
use ferry_broker::security::{
    AclBinding, AclEntry, AclFilter, Operation, PatternType, Permission, Principal, ResourcePattern, ResourceType,
};
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{DeleteAclsFilterResult, DeleteAclsMatchingAcl};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::Call;
use crate::errors::{counted_code, denied_code, error_code};
use crate::response::Reply;

fn text(s: impl Into<String>) -> Option<StrBytes> {
    Some(StrBytes::from_string(s.into()))
}

pub async fn create_acls(c: Call, req: CreateAclsRequest) -> Reply {
    let refuse = |code: i16, message: Option<StrBytes>| {
        let results = req
            .creations
            .iter()
            .map(|_| AclCreationResult::default().with_error_code(code).with_error_message(message.clone()))
            .collect();
        c.reply(ApiKey::CreateAcls, &CreateAclsResponse::default().with_results(results))
    };
    if !c.secured() {
        return refuse(counted_code(E::SecurityDisabled.code()), text("no authorizer is configured"));
    }
    if !c.allowed_cluster(Operation::Alter) {
        return refuse(denied_code(ResourceType::Cluster), None);
    }
    let parsed: Vec<Result<AclBinding, String>> = req.creations.iter().map(binding).collect();
    let valid: Vec<AclBinding> = parsed.iter().filter_map(|b| b.as_ref().ok().cloned()).collect();
    let stored = if valid.is_empty() { Ok(()) } else { c.ctx.broker.create_acls(valid).await };
    let results = parsed
        .into_iter()
        .map(|b| match (b, &stored) {
            (Err(m), _) => AclCreationResult::default()
                .with_error_code(counted_code(E::InvalidRequest.code()))
                .with_error_message(text(m)),
            (Ok(_), Err(e)) => {
                AclCreationResult::default().with_error_code(error_code(e)).with_error_message(text(e.to_string()))
            }
            (Ok(_), Ok(())) => AclCreationResult::default(),
        })
        .collect();
    c.reply(ApiKey::CreateAcls, &CreateAclsResponse::default().with_results(results))
}

/// A creation as a binding, or why it is invalid.
fn binding(a: &create_acls_request::AclCreation) -> Result<AclBinding, String> {
    let resource_type =
        ResourceType::from_wire_code(a.resource_type).ok_or(format!("invalid resource type {}", a.resource_type))?;
    let pattern_type = PatternType::from_wire_code(a.resource_pattern_type)
        .ok_or(format!("invalid pattern type {}", a.resource_pattern_type))?;
    let operation = Operation::from_kafka_code(a.operation).ok_or(format!("invalid operation {}", a.operation))?;
    let permission =
        Permission::from_kafka_code(a.permission_type).ok_or(format!("invalid permission {}", a.permission_type))?;
    let principal = Principal::parse(&a.principal).map_err(|e| e.to_string())?;
    if a.resource_name.is_empty() || a.host.is_empty() {
        return Err("empty resource name or host".into());
    }
    if resource_type == ResourceType::Cluster
        && (&*a.resource_name != CLUSTER_NAME || pattern_type != PatternType::Literal)
    {
        return Err(format!("the cluster resource is the literal {CLUSTER_NAME}"));
    }
    // Ferry's pattern types: MQTT filters name MQTT topics, regexes queues and exchanges.
    match pattern_type {
        PatternType::MqttFilter if resource_type != ResourceType::MqttTopic => {
            return Err("the mqtt-filter pattern type is for MQTT topics".into());
        }
        PatternType::Regex if !matches!(resource_type, ResourceType::Queue | ResourceType::Exchange) => {
            return Err("the regex pattern type is for queues and exchanges".into());
        }
        _ => {}
    }
    Ok(AclBinding {
        pattern: ResourcePattern { resource_type, name: a.resource_name.to_string(), pattern_type },
        entry: AclEntry { principal, host: a.host.to_string(), operation, permission },
    })
}

/// A Kafka filter (codes with ANY = 1) as ours.
fn filter(
    resource_type: i8,
    name: Option<&StrBytes>,
    pattern_type: i8,
    principal: Option<&StrBytes>,
    host: Option<&StrBytes>,
    operation: i8,
    permission: i8,
) -> Result<AclFilter, String> {
    fn any_or<T>(code: i8, what: &str) -> Result<Option<T>, String> {
        if code == 1 { Ok(None) } else { Err(format!("invalid {what} filter {code}")) }
    }
    Ok(AclFilter {
        resource_type: match ResourceType::from_wire_code(resource_type) {
            Some(t) => Some(t),
            None => any_or(resource_type, "resource type")?,
        },
        name: name.map(ToString::to_string),
        pattern: match pattern_type {
            1 => PatternFilter::Any,
            2 => PatternFilter::Match,
            code => PatternFilter::Exact(
                PatternType::from_wire_code(code).ok_or(format!("invalid pattern type filter {code}"))?,
            ),
        },
        principal: principal.map(|p| Principal::parse(p)).transpose().map_err(|e| e.to_string())?,
        host: host.map(ToString::to_string),
        operation: match Operation::from_kafka_code(operation) {
            Some(o) => Some(o),
            None => any_or(operation, "operation")?,
        },
        permission: match Permission::from_kafka_code(permission) {
            Some(p) => Some(p),
            None => any_or(permission, "permission")?,
        },
    })
}

pub fn describe_acls(c: &Call, req: DescribeAclsRequest) -> Reply {
    let answer = |code: i16, message: Option<StrBytes>, resources| {
        let body =
            DescribeAclsResponse::default().with_error_code(code).with_error_message(message).with_resources(resources);
        c.reply(ApiKey::DescribeAcls, &body)
    };
    if !c.secured() {
        return answer(counted_code(E::SecurityDisabled.code()), text("no authorizer is configured"), Vec::new());
    }
    if !c.allowed_cluster(Operation::Describe) {
        return answer(denied_code(ResourceType::Cluster), None, Vec::new());
    }
    let f = match filter(
        req.resource_type_filter,
        req.resource_name_filter.as_ref(),
        req.pattern_type_filter,
        req.principal_filter.as_ref(),
        req.host_filter.as_ref(),
        req.operation,
        req.permission_type,
    ) {
        Ok(f) => f,
        Err(m) => return answer(counted_code(E::InvalidRequest.code()), text(m), Vec::new()),
    };
    let acls = c.ctx.broker.metadata().acls.clone();
    let mut by_pattern: BTreeMap<&ResourcePattern, Vec<AclDescription>> = BTreeMap::new();
    for b in acls.matching(&f) {
        // Types without a Kafka code (AMQP, MQTT) are listed only to a
        // filter naming their type (Ferry's CLI), not to Kafka clients.
        if b.pattern.resource_type.kafka_code().is_none() && f.resource_type.is_none() {
            continue;
        }
        by_pattern.entry(&b.pattern).or_default().push(description(&b.entry));
    }
    let resources = by_pattern
        .into_iter()
        .map(|(p, acls)| {
            DescribeAclsResource::default()
                .with_resource_type(p.resource_type.wire_code())
                .with_resource_name(StrBytes::from_string(p.name.clone()))
                .with_pattern_type(p.pattern_type.wire_code())
                .with_acls(acls)
        })
        .collect();
    answer(0, None, resources)
}

fn description(e: &AclEntry) -> AclDescription {
    AclDescription::default()
        .with_principal(StrBytes::from_string(e.principal.to_string()))
        .with_host(StrBytes::from_string(e.host.clone()))
        .with_operation(e.operation.kafka_code())
        .with_permission_type(e.permission.kafka_code())
}

pub async fn delete_acls(c: Call, req: DeleteAclsRequest) -> Reply {
    let refuse = |code: i16, message: Option<StrBytes>| {
        let results = req
            .filters
            .iter()
            .map(|_| DeleteAclsFilterResult::default().with_error_code(code).with_error_message(message.clone()))
            .collect();
        c.reply(ApiKey::DeleteAcls, &DeleteAclsResponse::default().with_filter_results(results))
    };
    if !c.secured() {
        return refuse(counted_code(E::SecurityDisabled.code()), text("no authorizer is configured"));
    }
    if !c.allowed_cluster(Operation::Alter) {
        return refuse(denied_code(ResourceType::Cluster), None);
    }
    let acls = c.ctx.broker.metadata().acls.clone();
    let matched: Vec<Result<Vec<AclBinding>, String>> = req
        .filters
        .iter()
        .map(|f| {
            let f = filter(
                f.resource_type_filter,
                f.resource_name_filter.as_ref(),
                f.pattern_type_filter,
                f.principal_filter.as_ref(),
                f.host_filter.as_ref(),
                f.operation,
                f.permission_type,
            )?;
            // As DescribeAcls: AMQP and MQTT ACLs only for a filter naming their type.
            let listed = |b: &&AclBinding| b.pattern.resource_type.kafka_code().is_some() || f.resource_type.is_some();
            Ok(acls.matching(&f).filter(listed).cloned().collect())
        })
        .collect();
    let mut all: Vec<AclBinding> = matched.iter().filter_map(|m| m.as_ref().ok()).flatten().cloned().collect();
    all.sort();
    all.dedup();
    let stored = if all.is_empty() { Ok(()) } else { c.ctx.broker.delete_acls(all).await };
    let results = matched
        .into_iter()
        .map(|m| match (m, &stored) {
            (Err(msg), _) => DeleteAclsFilterResult::default()
                .with_error_code(counted_code(E::InvalidRequest.code()))
                .with_error_message(text(msg)),
            (Ok(_), Err(e)) => {
                DeleteAclsFilterResult::default().with_error_code(error_code(e)).with_error_message(text(e.to_string()))
            }
            (Ok(bindings), Ok(())) => DeleteAclsFilterResult::default().with_matching_acls(
                bindings
                    .iter()
                    .map(|b| {
                        DeleteAclsMatchingAcl::default()
                            .with_resource_type(b.pattern.resource_type.wire_code())
                            .with_resource_name(StrBytes::from_string(b.pattern.name.clone()))
                            .with_pattern_type(b.pattern.pattern_type.wire_code())
                            .with_principal(StrBytes::from_string(b.entry.principal.to_string()))
                            .with_host(StrBytes::from_string(b.entry.host.clone()))
                            .with_operation(b.entry.operation.kafka_code())
                            .with_permission_type(b.entry.permission.kafka_code())
                    })
                    .collect(),
            ),
        })
        .collect();
    c.reply(ApiKey::DeleteAcls, &DeleteAclsResponse::default().with_filter_results(results))
}
