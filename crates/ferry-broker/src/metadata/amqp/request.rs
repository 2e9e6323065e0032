//! Requests to change the AMQP definitions, checked and turned into
//! records by [`amqp_change`].

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::arguments::same_value;
use super::{
    AmqpRecord, Arguments, BindingDef, ExchangeDef, QueueDef, QueueKind, VhostDefinitions, check_name,
    is_builtin_exchange, queue_topic_name,
};
use crate::messaging::{Destination, Headers};
use crate::metadata::{MQTT_VHOST, MetadataError, MetadataImage, MetadataRecord};
use crate::security::{PatternType, ResourceType};

/// The queue type a declaration asks for (`x-queue-type`, or the broker's
/// default), resolved by the broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueType {
    /// One node's disk.
    Classic,
    /// Replicated.
    Quorum {
        /// `x-quorum-initial-group-size`; `None`: the replication factor rule.
        group_size: Option<u16>,
    },
}

impl QueueType {
    /// The type `arguments` ask for (`x-queue-type`,
    /// `x-quorum-initial-group-size`), else `default`; the error names the
    /// offending argument.
    pub fn from_arguments(arguments: &Headers, default: QueueType) -> Result<QueueType, String> {
        let group_size = match arguments.get("x-quorum-initial-group-size") {
            None => None,
            Some(v) => Some(
                v.as_int()
                    .and_then(|i| u16::try_from(i).ok())
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| format!("invalid arg 'x-quorum-initial-group-size': {v:?}"))?,
            ),
        };
        match arguments.get("x-queue-type") {
            None => Ok(match default {
                QueueType::Quorum { .. } => QueueType::Quorum { group_size },
                QueueType::Classic => QueueType::Classic,
            }),
            Some(v) => match v.as_str() {
                Some("classic") => Ok(QueueType::Classic),
                Some("quorum") => Ok(QueueType::Quorum { group_size }),
                _ => Err(format!("invalid arg 'x-queue-type': {v:?} (classic or quorum)")),
            },
        }
    }
}

/// A request to change the AMQP definitions (inside `ControllerRequest::Amqp`).
/// The broker has checked permissions, passive declares and runtime
/// conditions (a queue's consumers, `if-empty`) before it sends one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AmqpRequest {
    /// exchange.declare (not passive).
    DeclareExchange {
        /// Vhost.
        vhost: String,
        /// The exchange.
        exchange: ExchangeDef,
    },
    /// exchange.delete.
    DeleteExchange {
        /// Vhost.
        vhost: String,
        /// Exchange name.
        name: String,
        /// Refuse if it has bindings from or to it.
        if_unused: bool,
    },
    /// queue.bind / exchange.bind.
    Bind {
        /// Vhost.
        vhost: String,
        /// The binding.
        binding: BindingDef,
    },
    /// queue.unbind / exchange.unbind.
    Unbind {
        /// Vhost.
        vhost: String,
        /// The binding.
        binding: BindingDef,
    },
    /// queue.declare of a durable, non-exclusive queue (not passive).
    DeclareQueue {
        /// Vhost.
        vhost: String,
        /// Queue name (a server-named queue is named by the broker).
        name: String,
        /// Deleted once its last consumer goes.
        auto_delete: bool,
        /// The declare's arguments.
        arguments: Arguments,
        /// The type resolved from the arguments and the broker's default.
        queue_type: QueueType,
    },
    /// queue.delete.
    DeleteQueue {
        /// Vhost.
        vhost: String,
        /// Queue name.
        name: String,
    },
    /// Creates a vhost (RabbitMQ's `PUT /api/vhosts/{name}`; present
    /// already: nothing changes).
    CreateVhost {
        /// Vhost name.
        name: String,
    },
    /// Deletes a vhost with everything in it: exchanges, bindings, queues
    /// (quorum queues' partitions too) and the ACL that lets users open it.
    DeleteVhost {
        /// Vhost name.
        name: String,
    },
}

/// Refuses a change that creates something in a vhost that does not exist
/// (deleted meanwhile through another node): what a vhost holds goes with
/// it, and must not reappear if a vhost of that name is created again.
fn check_vhost(image: &MetadataImage, vhost: &str) -> Result<(), MetadataError> {
    if vhost == MQTT_VHOST || image.vhosts.contains_key(vhost) {
        return Ok(());
    }
    Err(MetadataError::ResourceNotFound(format!("no vhost '{vhost}'")))
}

/// How a quorum queue's topic is made: the caller places it (the quorum
/// controller with its placement, the test controller on itself) and
/// returns the topic's id with the records that create it.
pub type QueueTopicMaker<'a> =
    dyn FnMut(&str, Option<usize>) -> Result<(Uuid, Vec<MetadataRecord>), MetadataError> + 'a;

/// The records carrying out `request` from node `from` against `image`,
/// in order (a quorum queue's topic first). An empty list: nothing to
/// change (a declaration repeated, an absent binding removed).
pub fn amqp_change(
    image: &MetadataImage,
    from: i32,
    request: &AmqpRequest,
    make_topic: &mut QueueTopicMaker<'_>,
) -> Result<Vec<MetadataRecord>, MetadataError> {
    let empty = VhostDefinitions::default();
    let rec = |r: AmqpRecord| MetadataRecord::Amqp(r);
    match request {
        AmqpRequest::DeclareExchange { vhost, exchange } => {
            check_name("vhost", vhost)?;
            check_name("exchange", &exchange.name)?;
            check_vhost(image, vhost)?;
            if exchange.name.starts_with("amq.") {
                return Err(MetadataError::InvalidRequest(format!(
                    "exchange name '{}' contains reserved prefix 'amq.*'",
                    exchange.name
                )));
            }
            let defs = image.amqp.get(vhost).unwrap_or(&empty);
            match defs.exchanges.get(&exchange.name) {
                Some(cur) if cur == exchange => Ok(Vec::new()),
                Some(_) => Err(MetadataError::InvalidRequest(format!(
                    "inequivalent arguments for exchange '{}' in vhost '{vhost}'",
                    exchange.name
                ))),
                None => Ok(vec![rec(AmqpRecord::DeclareExchange { vhost: vhost.clone(), exchange: exchange.clone() })]),
            }
        }
        AmqpRequest::DeleteExchange { vhost, name, if_unused } => {
            if is_builtin_exchange(name) {
                return Err(MetadataError::InvalidRequest(format!(
                    "operation not permitted on exchange '{name}' in vhost '{vhost}'"
                )));
            }
            let defs = image.amqp.get(vhost).unwrap_or(&empty);
            if !defs.exchanges.contains_key(name) {
                return Ok(Vec::new());
            }
            if *if_unused && defs.touching_exchange(name).next().is_some() {
                return Err(MetadataError::InvalidRequest(format!("exchange '{name}' in vhost '{vhost}' in use")));
            }
            let mut records = vec![rec(AmqpRecord::DeleteExchange { vhost: vhost.clone(), name: name.clone() })];
            // Auto-delete exchanges whose last binding went with it.
            let gone: Vec<BindingDef> = defs.touching_exchange(name).cloned().collect();
            records.extend(
                emptied_auto_delete(defs, &gone, Some(name))
                    .map(|x| rec(AmqpRecord::DeleteExchange { vhost: vhost.clone(), name: x })),
            );
            Ok(records)
        }
        AmqpRequest::Bind { vhost, binding } => {
            check_vhost(image, vhost)?;
            let defs = image.amqp.get(vhost).unwrap_or(&empty);
            if binding.source.is_empty() {
                return Err(MetadataError::InvalidRequest(format!(
                    "operation not permitted on the default exchange in vhost '{vhost}'"
                )));
            }
            if !defs.has_exchange(&binding.source) {
                return Err(MetadataError::ResourceNotFound(format!(
                    "no exchange '{}' in vhost '{vhost}'",
                    binding.source
                )));
            }
            if !defs.has_destination(&binding.destination) {
                return Err(MetadataError::ResourceNotFound(format!(
                    "no {:?} in vhost '{vhost}'",
                    binding.destination
                )));
            }
            if defs.bindings.contains(binding) {
                return Ok(Vec::new());
            }
            Ok(vec![rec(AmqpRecord::Bind { vhost: vhost.clone(), binding: binding.clone() })])
        }
        AmqpRequest::Unbind { vhost, binding } => {
            let defs = image.amqp.get(vhost).unwrap_or(&empty);
            if !defs.bindings.contains(binding) {
                return Ok(Vec::new());
            }
            let mut records = vec![rec(AmqpRecord::Unbind { vhost: vhost.clone(), binding: binding.clone() })];
            records.extend(
                emptied_auto_delete(defs, std::slice::from_ref(binding), None)
                    .map(|x| rec(AmqpRecord::DeleteExchange { vhost: vhost.clone(), name: x })),
            );
            Ok(records)
        }
        AmqpRequest::DeclareQueue { vhost, name, auto_delete, arguments, queue_type } => {
            check_name("vhost", vhost)?;
            check_name("queue", name)?;
            check_vhost(image, vhost)?;
            if name.starts_with("amq.") && !name.starts_with("amq.gen-") && name != super::DELAY_QUEUE {
                return Err(MetadataError::InvalidRequest(format!(
                    "queue name '{name}' contains reserved prefix 'amq.*'"
                )));
            }
            let defs = image.amqp.get(vhost).unwrap_or(&empty);
            if let Some(cur) = defs.queues.get(name) {
                let same_type = matches!(
                    (cur.kind, queue_type),
                    (QueueKind::Classic { .. }, QueueType::Classic)
                        | (QueueKind::Quorum { .. }, QueueType::Quorum { .. })
                );
                // As a single node: every x- argument given must match.
                let same_args = arguments
                    .0
                    .iter()
                    .filter(|(k, _)| k.starts_with("x-"))
                    .all(|(k, v)| cur.arguments.0.get(k).is_some_and(|c| same_value(c, v)));
                if !same_type || !same_args || cur.auto_delete != *auto_delete {
                    return Err(MetadataError::InvalidRequest(format!(
                        "inequivalent arguments for queue '{name}' in vhost '{vhost}'"
                    )));
                }
                return Ok(Vec::new());
            }
            let (kind, mut records) = match queue_type {
                QueueType::Classic => (QueueKind::Classic { node: from }, Vec::new()),
                QueueType::Quorum { group_size } => {
                    let topic = queue_topic_name(vhost, name, image.applied_index + 1);
                    let (topic_id, records) = make_topic(&topic, group_size.map(usize::from))?;
                    (QueueKind::Quorum { topic_id }, records)
                }
            };
            let queue = QueueDef { name: name.clone(), auto_delete: *auto_delete, arguments: arguments.clone(), kind };
            records.push(rec(AmqpRecord::DeclareQueue { vhost: vhost.clone(), queue }));
            Ok(records)
        }
        AmqpRequest::DeleteQueue { vhost, name } => {
            let defs = image.amqp.get(vhost).unwrap_or(&empty);
            let Some(q) = defs.queues.get(name) else { return Ok(Vec::new()) };
            let mut records = vec![rec(AmqpRecord::DeleteQueue { vhost: vhost.clone(), name: name.clone() })];
            if let QueueKind::Quorum { topic_id } = q.kind
                && image.topic_by_id(topic_id).is_some()
            {
                records.push(MetadataRecord::DeleteTopic { id: topic_id });
            }
            let dest = Destination::Queue(name.clone());
            let gone: Vec<BindingDef> = defs.bindings.iter().filter(|b| b.destination == dest).cloned().collect();
            records.extend(
                emptied_auto_delete(defs, &gone, None)
                    .map(|x| rec(AmqpRecord::DeleteExchange { vhost: vhost.clone(), name: x })),
            );
            Ok(records)
        }
        AmqpRequest::CreateVhost { name } => {
            check_name("vhost", name)?;
            if name == MQTT_VHOST {
                return Err(MetadataError::InvalidRequest(format!("vhost name '{name}' is reserved")));
            }
            if image.vhosts.contains_key(name) {
                return Ok(Vec::new());
            }
            Ok(vec![rec(AmqpRecord::CreateVhost { name: name.clone() })])
        }
        AmqpRequest::DeleteVhost { name } => {
            if !image.vhosts.contains_key(name) {
                return Err(MetadataError::ResourceNotFound(format!("no vhost '{name}'")));
            }
            let mut records = vec![rec(AmqpRecord::DeleteVhost { name: name.clone() })];
            let defs = image.amqp.get(name).unwrap_or(&empty);
            for q in defs.queues.values() {
                if let QueueKind::Quorum { topic_id } = q.kind
                    && image.topic_by_id(topic_id).is_some()
                {
                    records.push(MetadataRecord::DeleteTopic { id: topic_id });
                }
            }
            // RabbitMQ drops a vhost's permissions with it: a vhost created
            // again by that name is open to no one until granted again.
            records.extend(
                image
                    .acls
                    .iter()
                    .filter(|b| {
                        b.pattern.resource_type == ResourceType::Vhost
                            && b.pattern.pattern_type == PatternType::Literal
                            && b.pattern.name == *name
                    })
                    .map(|b| MetadataRecord::DeleteAcl(b.clone())),
            );
            Ok(records)
        }
    }
}

/// Auto-delete exchanges (other than `except`) that had bindings and have
/// none once `gone` are removed, as RabbitMQ deletes them.
fn emptied_auto_delete<'a>(
    defs: &'a VhostDefinitions,
    gone: &'a [BindingDef],
    except: Option<&'a str>,
) -> impl Iterator<Item = String> + 'a {
    defs.exchanges
        .values()
        .filter(move |x| {
            x.auto_delete
                && except != Some(x.name.as_str())
                && gone.iter().any(|b| b.source == x.name)
                && defs.bindings.iter().filter(|b| b.source == x.name).all(|b| gone.contains(b))
        })
        .map(|x| x.name.clone())
}
