//! What the cluster knows of a vhost: exchanges, bindings, durable queues.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Arguments, is_builtin_exchange};
use crate::messaging::{Destination, ExchangeKind};

/// An exchange as the cluster knows it (its bindings are kept apart).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeDef {
    /// Exchange name.
    pub name: String,
    /// How bindings are matched.
    pub kind: ExchangeKind,
    /// Survives a restart of the whole cluster.
    pub durable: bool,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Only other exchanges may route to it.
    pub internal: bool,
    /// An `x-delayed-message` exchange.
    pub delayed: bool,
    /// Declaration arguments (`alternate-exchange`, ...).
    pub arguments: Arguments,
}

/// One binding: messages of `source` matching it go to `destination`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingDef {
    /// The exchange the binding belongs to.
    pub source: String,
    /// Where matching messages go.
    pub destination: Destination,
    /// Key or pattern.
    pub routing_key: String,
    /// Binding arguments (`x-match` and headers for headers exchanges).
    pub arguments: Arguments,
}

/// Where a queue's messages and cursor live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueKind {
    /// On one node's disk (the declaring node); other nodes forward to it.
    Classic {
        /// The node holding the queue.
        node: i32,
    },
    /// A replicated one-partition internal topic; its leader serves the queue.
    Quorum {
        /// The topic's id.
        topic_id: Uuid,
    },
}

/// A durable, non-exclusive queue's declaration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDef {
    /// Queue name.
    pub name: String,
    /// Deleted once its last consumer goes.
    pub auto_delete: bool,
    /// The declare's arguments, as given.
    pub arguments: Arguments,
    /// Classic or quorum, and where.
    pub kind: QueueKind,
}

/// One vhost's definitions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostDefinitions {
    /// Declared exchanges by name (the built-in ones are implicit).
    pub exchanges: BTreeMap<String, ExchangeDef>,
    /// Bindings in creation order.
    pub bindings: Vec<BindingDef>,
    /// Durable, non-exclusive queues by name.
    pub queues: BTreeMap<String, QueueDef>,
}

impl VhostDefinitions {
    /// Whether the exchange exists (declared or built in).
    pub fn has_exchange(&self, name: &str) -> bool {
        is_builtin_exchange(name) || self.exchanges.contains_key(name)
    }

    pub(super) fn has_destination(&self, d: &Destination) -> bool {
        match d {
            Destination::Queue(q) => self.queues.contains_key(q),
            Destination::Exchange(x) => !x.is_empty() && self.has_exchange(x),
            // Topics are created by the broker before it binds.
            Destination::Topic(_) => true,
        }
    }

    /// Bindings whose source or destination is the exchange `name`.
    pub(super) fn touching_exchange<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a BindingDef> + 'a {
        self.bindings.iter().filter(move |b| b.source == name || b.destination == exchange_dest(name))
    }
}

pub(super) fn exchange_dest(name: &str) -> Destination {
    Destination::Exchange(name.to_string())
}
