//! The records changing the AMQP definitions, and their apply.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::definitions::exchange_dest;
use super::{BindingDef, ExchangeDef, MetadataError, QueueDef, QueueKind, VhostDefinitions};
use crate::messaging::Destination;

/// A change to the AMQP definitions (inside [`MetadataRecord::Amqp`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AmqpRecord {
    /// A new exchange (the same declaration again changes nothing).
    DeclareExchange {
        /// Vhost.
        vhost: String,
        /// The exchange.
        exchange: ExchangeDef,
    },
    /// Deletes an exchange with every binding from or to it.
    DeleteExchange {
        /// Vhost.
        vhost: String,
        /// Exchange name.
        name: String,
    },
    /// Adds a binding (present already: nothing changes).
    Bind {
        /// Vhost.
        vhost: String,
        /// The binding.
        binding: BindingDef,
    },
    /// Removes a binding (absent: nothing changes).
    Unbind {
        /// Vhost.
        vhost: String,
        /// The binding.
        binding: BindingDef,
    },
    /// A new durable queue; a quorum queue's topic is created in the same entry, before.
    DeclareQueue {
        /// Vhost.
        vhost: String,
        /// The queue.
        queue: QueueDef,
    },
    /// Deletes a queue with every binding to it (a quorum queue's topic is
    /// deleted by its own record in the same entry).
    DeleteQueue {
        /// Vhost.
        vhost: String,
        /// Queue name.
        name: String,
    },
    /// A new vhost (present already: nothing changes).
    CreateVhost {
        /// Vhost name.
        name: String,
    },
    /// Deletes a vhost with its exchanges, bindings and queues (its quorum
    /// queues' topics are deleted by their own records in the same entry).
    DeleteVhost {
        /// Vhost name.
        name: String,
    },
}

/// Applies `record` to the vhost map (the image's `amqp`) and the vhosts
/// (the image's `vhosts`; a new one gets `generation`). An error leaves
/// them unchanged.
pub(in crate::metadata) fn apply(
    amqp: &mut Arc<BTreeMap<String, VhostDefinitions>>,
    vhosts: &mut Arc<BTreeMap<String, u64>>,
    generation: u64,
    topic_exists: impl Fn(Uuid) -> bool,
    record: &AmqpRecord,
) -> Result<(), MetadataError> {
    let vhost = match record {
        AmqpRecord::CreateVhost { name } => {
            if !vhosts.contains_key(name) {
                Arc::make_mut(vhosts).insert(name.clone(), generation);
            }
            return Ok(());
        }
        AmqpRecord::DeleteVhost { name } => {
            if !vhosts.contains_key(name) {
                return Err(MetadataError::ResourceNotFound(format!("no vhost '{name}'")));
            }
            Arc::make_mut(vhosts).remove(name);
            if amqp.contains_key(name) {
                Arc::make_mut(amqp).remove(name);
            }
            return Ok(());
        }
        AmqpRecord::DeclareExchange { vhost, .. }
        | AmqpRecord::DeleteExchange { vhost, .. }
        | AmqpRecord::Bind { vhost, .. }
        | AmqpRecord::Unbind { vhost, .. }
        | AmqpRecord::DeclareQueue { vhost, .. }
        | AmqpRecord::DeleteQueue { vhost, .. } => vhost.clone(),
    };
    let cur = amqp.get(&vhost).cloned().unwrap_or_default();
    let mut defs = cur;
    match record {
        AmqpRecord::DeclareExchange { exchange, .. } => match defs.exchanges.get(&exchange.name) {
            Some(cur) if cur == exchange => return Ok(()),
            Some(_) => {
                return Err(MetadataError::InvalidRequest(format!("exchange '{}' exists", exchange.name)));
            }
            None => {
                defs.exchanges.insert(exchange.name.clone(), exchange.clone());
            }
        },
        AmqpRecord::DeleteExchange { name, .. } => {
            if defs.exchanges.remove(name).is_none() {
                return Err(MetadataError::ResourceNotFound(format!("no exchange '{name}' in vhost '{vhost}'")));
            }
            let dest = exchange_dest(name);
            defs.bindings.retain(|b| b.source != *name && b.destination != dest);
        }
        AmqpRecord::Bind { binding, .. } => {
            if binding.source.is_empty()
                || !defs.has_exchange(&binding.source)
                || !defs.has_destination(&binding.destination)
            {
                return Err(MetadataError::ResourceNotFound(format!("binding {binding:?} has a missing end")));
            }
            if defs.bindings.contains(binding) {
                return Ok(());
            }
            defs.bindings.push(binding.clone());
        }
        AmqpRecord::Unbind { binding, .. } => {
            let before = defs.bindings.len();
            defs.bindings.retain(|b| b != binding);
            if defs.bindings.len() == before {
                return Ok(());
            }
        }
        AmqpRecord::DeclareQueue { queue, .. } => {
            if let Some(cur) = defs.queues.get(&queue.name) {
                return if cur == queue {
                    Ok(())
                } else {
                    Err(MetadataError::InvalidRequest(format!("queue '{}' exists", queue.name)))
                };
            }
            if let QueueKind::Quorum { topic_id } = queue.kind
                && !topic_exists(topic_id)
            {
                return Err(MetadataError::UnknownTopicId(topic_id));
            }
            defs.queues.insert(queue.name.clone(), queue.clone());
        }
        AmqpRecord::DeleteQueue { name, .. } => {
            if defs.queues.remove(name).is_none() {
                return Err(MetadataError::ResourceNotFound(format!("no queue '{name}' in vhost '{vhost}'")));
            }
            let dest = Destination::Queue(name.clone());
            defs.bindings.retain(|b| b.destination != dest);
        }
        AmqpRecord::CreateVhost { .. } | AmqpRecord::DeleteVhost { .. } => return Ok(()),
    }
    let map = Arc::make_mut(amqp);
    if defs == VhostDefinitions::default() {
        map.remove(&vhost);
    } else {
        map.insert(vhost, defs);
    }
    Ok(())
}
