//! AMQP definitions as cluster metadata (issue #17): exchanges, bindings
//! and durable queue declarations, so every node routes the same way. The
//! records ([`AmqpRecord`]) build [`MetadataImage::amqp`]; the requests
//! ([`AmqpRequest`]) are checked and turned into records by one function,
//! [`amqp_change`], which the quorum controller (`ferry-cluster`) and the
//! test controller share. docs/cluster.md, "Queues in a cluster".
//!
//! Exclusive queues and bindings to them stay node-local (one connection,
//! so one node): they are never here.

mod arguments;
mod definitions;
mod record;
mod request;
#[cfg(test)]
mod tests;

pub use arguments::Arguments;
pub use definitions::{BindingDef, ExchangeDef, QueueDef, QueueKind, VhostDefinitions};
pub use record::AmqpRecord;
pub(super) use record::apply;
pub use request::{AmqpRequest, QueueTopicMaker, QueueType, amqp_change};

use super::MetadataError;

/// Prefix of the internal topics holding quorum queues.
pub const QUEUE_TOPIC_PREFIX: &str = "__amqp_queue.";

/// The broker's own quorum queue of a vhost's delayed messages (issue
/// #17): the one `amq.*` queue the controller accepts; no client may
/// declare it (the vhosts refuse it before they ask the controller).
pub const DELAY_QUEUE: &str = "amq.ferry.delayed";

/// Longest exchange, queue or vhost name (AMQP's short string).
const MAX_NAME: usize = 255;

/// The exchanges every vhost has without a declaration.
const BUILTIN_EXCHANGES: [&str; 6] = ["", "amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match"];

/// Whether `name` is one of the exchanges every vhost has.
pub fn is_builtin_exchange(name: &str) -> bool {
    BUILTIN_EXCHANGES.contains(&name)
}

/// The internal topic of quorum queue `name` in `vhost`, declared by the
/// entry at `index`: unique (one queue per entry), deterministic, and a
/// valid topic name whatever the queue's name is.
pub fn queue_topic_name(vhost: &str, name: &str, index: u64) -> String {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in vhost.bytes().chain([0]).chain(name.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{QUEUE_TOPIC_PREFIX}{h:016x}.{index}")
}

pub(super) fn check_name(what: &str, name: &str) -> Result<(), MetadataError> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(MetadataError::InvalidRequest(format!("invalid {what} name {name:?}")));
    }
    Ok(())
}
