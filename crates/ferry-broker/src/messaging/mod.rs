//! Queues, exchanges and bindings: the protocol-neutral half of AMQP-style
//! messaging (DESIGN §1: a queue is a log plus a durable cursor).
//!
//! Exchanges, bindings and durable queues are cluster metadata
//! (`definitions.rs`). Layout under the data directory:
//! - `queues/<vhost>/definitions.json.imported`: a vhost's definitions as
//!   an older version kept them, imported once into the metadata;
//! - `queues/<vhost>/q/<queue>/`: a durable queue's log and its cursor files;
//! - `queues-transient/`: logs of non-durable queues, wiped at start.
//!
//! Names are percent-encoded into directory names.

pub mod access;
pub mod args;
pub mod consumer;
mod definitions;
mod delayed;
mod delayed_replicated;
pub mod exchange;
mod forwarding;
pub mod kafka_link;
pub mod message;
pub(crate) mod peer_routes;
pub(crate) mod publish_ids;
pub mod queue;
pub mod queue_handle;
pub(crate) mod quorum;
pub mod quorum_client;
pub(crate) mod remote_queue;
mod vhost;
mod vhost_records;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockWriteGuard};
use std::time::Duration;

use ferry_log::{EngineConfig, LogManager};

pub use args::{Overflow, QueueArgs};
pub use delayed_replicated::DELAY_QUEUE;
pub use exchange::{Binding, Destination, Exchange, ExchangeKind, HeaderValue, Headers};
pub use kafka_link::Hooks;
pub use message::{Message, StoredMessage};
pub use queue::{Delivery, Letter, Published, Queue, QueueSpec};
pub use queue_handle::{HandleConsumer, HandlePublished, Outcome, PublishWait, QueueHandle};
pub use vhost::{MAX_MESSAGE_BYTES, Vhost};

/// Why a messaging operation was refused. Front-ends map these to their
/// protocol's codes (AMQP: 404, 406, 405, 403, 503, 541).
#[derive(Debug, thiserror::Error)]
pub enum MessagingError {
    /// A named vhost, exchange, queue or topic does not exist.
    #[error("NOT_FOUND - {0}")]
    NotFound(String),
    /// A redeclaration with other settings, or arguments or a state that forbid the operation.
    #[error("PRECONDITION_FAILED - {0}")]
    PreconditionFailed(String),
    /// An exclusive queue owned by another connection.
    #[error("RESOURCE_LOCKED - {0}")]
    ResourceLocked(String),
    /// An operation not permitted on this object (e.g. the default exchange).
    #[error("ACCESS_REFUSED - {0}")]
    AccessRefused(String),
    /// A request that is invalid in itself.
    #[error("COMMAND_INVALID - {0}")]
    CommandInvalid(String),
    /// A storage or broker failure, not the client's fault.
    #[error("INTERNAL_ERROR - {0}")]
    Internal(#[from] crate::BrokerError),
}

impl From<std::io::Error> for MessagingError {
    fn from(e: std::io::Error) -> Self {
        MessagingError::Internal(e.into())
    }
}

impl From<ferry_log::LogError> for MessagingError {
    fn from(e: ferry_log::LogError) -> Self {
        MessagingError::Internal(e.into())
    }
}

/// What a dead-lettered message's protocol properties must record (AMQP:
/// the `x-death` header).
#[derive(Clone, Debug)]
pub struct Death<'a> {
    /// The queue the message left.
    pub queue: &'a str,
    /// Why, in RabbitMQ's words: "rejected", "expired", "maxlen" or "delivery_limit".
    pub reason: &'static str,
    /// The exchange the message was first published to.
    pub exchange: &'a str,
    /// The routing key the message was first published with.
    pub routing_key: &'a str,
    /// Wall-clock seconds.
    pub time: i64,
}

/// Rewrites a message's encoded properties for dead-lettering; returns the
/// new properties and the headers to route them by. Supplied by the
/// front-end that owns the property encoding; without one the properties
/// are kept as they are.
pub type DeathHook = Arc<dyn Fn(&[u8], &Death<'_>) -> (bytes::Bytes, Headers) + Send + Sync>;

/// All virtual hosts, their queue logs, and the thread that persists
/// cursors and reclaims acknowledged log prefixes.
pub struct Vhosts {
    vhosts: RwLock<BTreeMap<String, Arc<Vhost>>>,
    logs: Arc<LogManager>,
    /// `queues/` and `queues-transient/` under the data directory.
    root: PathBuf,
    transient: PathBuf,
    hooks: Hooks,
    /// The image's vhosts `vhosts` was last synced with (held, so its
    /// address is not reused); `None`: not yet (or no broker).
    synced: Mutex<Option<Arc<BTreeMap<String, u64>>>>,
}

fn wr<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Vhosts {
    /// Opens the vhosts under `data_dir`, recovering durable queues;
    /// non-durable queues from before are gone. With a broker, the vhosts
    /// are the cluster's records: `names` (the config's) are created if
    /// this node never created them, and the vhosts follow the image from
    /// then on (`vhost_records.rs`); without one, they are `names`.
    pub fn open(
        data_dir: &Path,
        engine: EngineConfig,
        names: &[String],
        hooks: Hooks,
    ) -> Result<Arc<Vhosts>, MessagingError> {
        let root = data_dir.join("queues");
        let transient = data_dir.join("queues-transient");
        let _ = std::fs::remove_dir_all(&transient);
        std::fs::create_dir_all(&root)?;
        let logs = Arc::new(LogManager::new(engine));
        let names: Vec<(String, u64)> = match &hooks.broker {
            Some(broker) => {
                vhost_records::create_configured(broker, &root, names)?;
                let live = broker.metadata().vhosts.clone();
                vhost_records::remove_deleted_dirs(&root, &transient, &live);
                live.iter().map(|(n, g)| (n.clone(), *g)).collect()
            }
            None => names.iter().map(|n| (n.clone(), 0)).collect(),
        };
        let vhosts = Arc::new(Vhosts {
            vhosts: RwLock::new(BTreeMap::new()),
            logs,
            root,
            transient,
            hooks: hooks.clone(),
            synced: Mutex::new(None),
        });
        for (name, generation) in &names {
            let vhost = vhosts.open_vhost(name, *generation)?;
            wr(&vhosts.vhosts).insert(name.clone(), vhost);
        }
        if let Some(b) = &hooks.broker {
            // Forwarded calls reach the classic queues held here through it.
            let _ = b.vhosts.set(Arc::downgrade(&vhosts));
        }
        // The delayed-message timer: due messages are routed within a few ms.
        let weak = Arc::downgrade(&vhosts);
        std::thread::Builder::new().name("ferry-delays".into()).spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(5));
                let Some(v) = weak.upgrade() else { return };
                // Due times are whole ms stamped from a clock read that
                // dropped the fraction; a message is due once its ms has
                // wholly passed, so it never comes before its delay.
                let now = ferry_util::time::now_ms() - 1;
                for vhost in v.all() {
                    vhost.fire_delayed(now);
                    vhost.fire_replicated_delays(now);
                }
            }
        })?;
        // Queues fed from Kafka topics: woken by the partitions they read
        // when their high watermark moves; the timeout catches new
        // partitions and topics created later.
        let weak = Arc::downgrade(&vhosts);
        std::thread::Builder::new().name("ferry-kafka-feed".into()).spawn(move || {
            let signal = Arc::new(crate::Signal::default());
            loop {
                signal.wait(Duration::from_millis(100));
                let Some(v) = weak.upgrade() else { return };
                for vhost in v.all() {
                    vhost.pump_feeds(&signal);
                }
            }
        })?;
        let weak = Arc::downgrade(&vhosts);
        std::thread::Builder::new().name("ferry-queues".into()).spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(500));
                let Some(v) = weak.upgrade() else { return };
                v.maintain(false);
            }
        })?;
        Ok(vhosts)
    }

    /// The virtual host `name`; `None` if the broker does not serve it
    /// (it does not exist, or was deleted).
    pub fn get(&self, name: &str) -> Option<Arc<Vhost>> {
        self.sync_with_image();
        self.vhosts.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(name).cloned()
    }

    /// The vhost `name` if it is open here, without looking at the image
    /// (callers inside an image's apply).
    pub(crate) fn get_open(&self, name: &str) -> Option<Arc<Vhost>> {
        self.vhosts.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(name).cloned()
    }

    /// The names of the vhosts open here.
    pub fn names(&self) -> Vec<String> {
        self.vhosts.read().unwrap_or_else(std::sync::PoisonError::into_inner).keys().cloned().collect()
    }

    pub(crate) fn all(&self) -> Vec<Arc<Vhost>> {
        self.vhosts.read().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect()
    }

    fn maintain(&self, sync: bool) {
        self.sync_with_image();
        for v in self.all() {
            v.maintain(sync);
        }
    }

    /// Persists every cursor (fsynced) and closes the logs.
    pub fn shutdown(&self) {
        self.maintain(true);
        self.logs.shutdown();
    }
}

/// Percent-encodes a name into one safe path component.
pub(crate) fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    for (i, b) in name.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && i > 0);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() { "%".to_string() } else { out }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_become_safe_components() {
        assert_eq!(super::encode_name("/"), "%2F");
        assert_eq!(super::encode_name("task_queue"), "task_queue");
        assert_eq!(super::encode_name(".."), "%2E.");
        assert_eq!(super::encode_name("a b/c"), "a%20b%2Fc");
        assert_eq!(super::encode_name(""), "%");
    }
}
