//! A virtual host: its exchanges (with their bindings) and queues, the
//! durable ones persisted in `definitions.json` and rebuilt at start.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use ferry_log::{FlushPolicy, LogConfig, LogManager};
use ferry_util::sync::lock;
use serde::{Deserialize, Serialize};

use super::args::QueueArgs;
use super::delayed::DelayStore;
use super::exchange::{Binding, Destination, Exchange, ExchangeKind, Headers};
use super::kafka_link::{Feed, Hooks};
use super::message::Message;
use super::queue::{Queue, QueueSpec};
use super::{MessagingError, encode_name};
use crate::metadata::{AmqpRequest, Arguments, ControllerRequest, QueueType};
use ferry_util::time::now_ms;

type Result<T, E = MessagingError> = std::result::Result<T, E>;

/// Largest message a queue log accepts (RabbitMQ's default max_message_size
/// is 128 MiB), plus room for the record framing.
pub const MAX_MESSAGE_BYTES: usize = 128 << 20;

#[derive(Default, Serialize, Deserialize)]
struct Definitions {
    exchanges: Vec<Exchange>,
    queues: Vec<QueueDef>,
}

#[derive(Serialize, Deserialize)]
struct QueueDef {
    name: String,
    auto_delete: bool,
    arguments: Headers,
}

/// One virtual host: its exchanges, bindings and queues, each queue on its
/// own log.
pub struct Vhost {
    /// Virtual host name, e.g. `/`.
    pub name: String,
    dir: PathBuf,
    transient_dir: PathBuf,
    logs: Arc<LogManager>,
    exchanges: RwLock<BTreeMap<String, Exchange>>,
    queues: RwLock<BTreeMap<String, Arc<Queue>>>,
    /// Serialises changes of definitions and the file that records them.
    admin: Mutex<()>,
    pub(super) hooks: Hooks,
    /// Messages waiting for their `x-delay`.
    pub(super) delays: DelayStore,
    /// Queues fed from Kafka topics.
    feeds: Mutex<Vec<Feed>>,
    /// This vhost, for the quorum queues it hands out (dead-lettering).
    me: std::sync::OnceLock<std::sync::Weak<Vhost>>,
}

fn rd<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}
fn wr<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn queue_log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 20,
        retention_ms: None,
        retention_bytes: None,
        max_message_bytes: MAX_MESSAGE_BYTES + (64 << 10),
        // Appends are readable at once (consumers need not wait for disk, as
        // with RabbitMQ); what must be on disk is waited for explicitly with
        // `Log::on_durable` (publisher confirms of persistent messages in
        // durable queues, tx.commit), so transient messages cost no fsync and
        // concurrent confirms share one (group commit).
        flush: FlushPolicy::Os,
        ..LogConfig::default()
    }
}

fn builtin_exchanges() -> Vec<Exchange> {
    [
        ("", ExchangeKind::Direct),
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
        ("amq.match", ExchangeKind::Headers),
    ]
    .into_iter()
    .map(|(name, kind)| Exchange {
        name: name.into(),
        kind,
        durable: true,
        auto_delete: false,
        internal: false,
        arguments: Headers::new(),
        bindings: Vec::new(),
        delayed: false,
    })
    .collect()
}

impl Vhost {
    pub(crate) fn open(
        name: &str,
        dir: &Path,
        transient_dir: &Path,
        logs: Arc<LogManager>,
        hooks: Hooks,
    ) -> Result<Arc<Vhost>> {
        fs::create_dir_all(dir.join("q"))?;
        let defs: Definitions = match fs::read(dir.join("definitions.json")) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| std::io::Error::other(format!("{}/definitions.json: {e}", dir.display())))?,
            Err(_) => Definitions::default(),
        };
        let mut exchanges: BTreeMap<String, Exchange> =
            defs.exchanges.into_iter().map(|e| (e.name.clone(), e)).collect();
        for e in builtin_exchanges() {
            exchanges.entry(e.name.clone()).or_insert(e);
        }
        let mut queues = BTreeMap::new();
        for q in defs.queues {
            let spec = QueueSpec {
                name: q.name,
                durable: true,
                exclusive_owner: None,
                auto_delete: q.auto_delete,
                arguments: q.arguments,
            };
            let qdir = dir.join("q").join(encode_name(&spec.name));
            let log = logs.open(&qdir, queue_log_config())?;
            queues.insert(spec.name.clone(), Queue::open(spec, &qdir, log)?);
        }
        // Directories of queues whose declaration or deletion was cut short.
        // (The delayed-message store lives beside `q/`, not in it.)
        let known: BTreeSet<String> = queues.keys().map(|n| encode_name(n)).collect();
        for entry in fs::read_dir(dir.join("q"))? {
            let entry = entry?;
            if !known.contains(&*entry.file_name().to_string_lossy()) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        // Bindings to queues that no longer exist are dropped.
        for e in exchanges.values_mut() {
            e.bindings.retain(|b| match &b.destination {
                Destination::Queue(q) => queues.contains_key(q),
                Destination::Exchange(_) | Destination::Topic(_) => true,
            });
        }
        let names: BTreeSet<String> = exchanges.keys().cloned().collect();
        for e in exchanges.values_mut() {
            e.bindings.retain(|b| match &b.destination {
                Destination::Exchange(x) => names.contains(x),
                Destination::Queue(_) | Destination::Topic(_) => true,
            });
        }
        let delay_dir = dir.join("delayed");
        fs::create_dir_all(&delay_dir)?;
        let delays = DelayStore::open(&delay_dir, logs.open(&delay_dir, queue_log_config())?)?;
        let vhost = Arc::new(Vhost {
            delays,
            name: name.to_string(),
            dir: dir.to_path_buf(),
            transient_dir: transient_dir.to_path_buf(),
            logs,
            exchanges: RwLock::new(exchanges),
            queues: RwLock::new(queues),
            admin: Mutex::new(()),
            hooks,
            feeds: Mutex::new(Vec::new()),
            me: std::sync::OnceLock::new(),
        });
        let _ = vhost.me.set(Arc::downgrade(&vhost));
        for q in rd(&vhost.queues).values() {
            q.set_vhost(Arc::downgrade(&vhost));
            if let Some(f) = Feed::open(&vhost.hooks, q) {
                lock(&vhost.feeds).push(f);
            }
        }
        Ok(vhost)
    }

    fn admin(&self) -> MutexGuard<'_, ()> {
        self.admin.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Rewrites definitions.json (atomically, fsynced). Caller holds `admin`.
    fn save(&self) -> Result<()> {
        let queues = rd(&self.queues);
        let durable_dest = |d: &Destination, ex: &BTreeMap<String, Exchange>| match d {
            Destination::Queue(q) => queues.get(q).is_some_and(|q| q.spec.durable),
            Destination::Exchange(x) => ex.get(x).is_some_and(|x| x.durable),
            Destination::Topic(_) => true,
        };
        let exchanges = rd(&self.exchanges);
        let defs = Definitions {
            exchanges: exchanges
                .values()
                .filter(|e| e.durable)
                .map(|e| {
                    let mut e = e.clone();
                    e.bindings.retain(|b| durable_dest(&b.destination, &exchanges));
                    e
                })
                .collect(),
            // Exclusive queues die with their connection, so never outlive a restart.
            queues: queues
                .values()
                .filter(|q| q.spec.durable && q.spec.exclusive_owner.is_none())
                .map(|q| QueueDef {
                    name: q.spec.name.clone(),
                    auto_delete: q.spec.auto_delete,
                    arguments: q.spec.arguments.clone(),
                })
                .collect(),
        };
        drop((exchanges, queues));
        let bytes = serde_json::to_vec_pretty(&defs).map_err(std::io::Error::other)?;
        ferry_util::fs::write_atomic(&self.dir.join("definitions.json"), &bytes, true)?;
        Ok(())
    }

    fn not_found_exchange(&self, name: &str) -> MessagingError {
        MessagingError::NotFound(format!("no exchange '{name}' in vhost '{}'", self.name))
    }

    pub(super) fn not_found_queue(&self, name: &str) -> MessagingError {
        MessagingError::NotFound(format!("no queue '{name}' in vhost '{}'", self.name))
    }

    /// Declares `ex` (or, `passive`, checks that it exists).
    pub fn declare_exchange(&self, ex: Exchange, passive: bool) -> Result<()> {
        let _a = self.admin();
        if let Some(cur) = rd(&self.exchanges).get(&ex.name) {
            if passive {
                return Ok(());
            }
            let vhost = &self.name;
            let name = &ex.name;
            let bad = |arg: &str, got: String, now: String| {
                MessagingError::PreconditionFailed(format!(
                    "inequivalent arg '{arg}' for exchange '{name}' in vhost '{vhost}': received '{got}' but current is '{now}'"
                ))
            };
            if cur.kind != ex.kind {
                return Err(bad("type", ex.kind.name().into(), cur.kind.name().into()));
            }
            if cur.durable != ex.durable {
                return Err(bad("durable", ex.durable.to_string(), cur.durable.to_string()));
            }
            if cur.auto_delete != ex.auto_delete {
                return Err(bad("auto_delete", ex.auto_delete.to_string(), cur.auto_delete.to_string()));
            }
            if cur.internal != ex.internal {
                return Err(bad("internal", ex.internal.to_string(), cur.internal.to_string()));
            }
            if cur.delayed != ex.delayed {
                return Err(bad("type", "x-delayed-message".into(), cur.kind.name().into()));
            }
            return Ok(());
        }
        if passive {
            return Err(self.not_found_exchange(&ex.name));
        }
        if ex.name.starts_with("amq.") {
            return Err(MessagingError::AccessRefused(format!(
                "exchange name '{}' contains reserved prefix 'amq.*'",
                ex.name
            )));
        }
        let durable = ex.durable;
        wr(&self.exchanges).insert(ex.name.clone(), Exchange { bindings: Vec::new(), ..ex });
        if durable { self.save() } else { Ok(()) }
    }

    /// Deletes an exchange and every binding from or to it. Deleting one
    /// that does not exist succeeds, as in RabbitMQ.
    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<()> {
        let _a = self.admin();
        if name.is_empty() || name.starts_with("amq.") {
            return Err(MessagingError::AccessRefused(format!(
                "operation not permitted on exchange '{name}' in vhost '{}'",
                self.name
            )));
        }
        let mut exchanges = wr(&self.exchanges);
        let Some(ex) = exchanges.get(name) else { return Ok(()) };
        let dest = Destination::Exchange(name.to_string());
        let used =
            !ex.bindings.is_empty() || exchanges.values().any(|e| e.bindings.iter().any(|b| b.destination == dest));
        if if_unused && used {
            return Err(MessagingError::PreconditionFailed(format!(
                "exchange '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        let durable = ex.durable;
        exchanges.remove(name);
        for e in exchanges.values_mut() {
            e.bindings.retain(|b| b.destination != dest);
        }
        drop(exchanges);
        if durable { self.save() } else { Ok(()) }
    }

    /// An exchange's type, and whether it is internal (clients may not
    /// publish to it) and delayed (`x-delayed-message`).
    pub fn exchange_info(&self, name: &str) -> Result<(ExchangeKind, bool, bool)> {
        rd(&self.exchanges)
            .get(name)
            .map(|e| (e.kind, e.internal, e.delayed))
            .ok_or_else(|| self.not_found_exchange(name))
    }

    /// Holds `m` (`deliver_at` set, `exchange` a delayed exchange) until it
    /// is due; returns its offset in the delay store.
    pub fn publish_delayed(&self, m: &Message) -> Result<u64> {
        Ok(self.delays.add(m)?)
    }

    /// Calls `done` once the delayed message at `offset` is on disk.
    pub fn delayed_on_durable(&self, offset: u64, done: impl FnOnce(bool) + Send + 'static) {
        self.delays.on_durable(offset, done);
    }

    /// Delayed messages not yet routed.
    pub fn delayed_pending(&self) -> usize {
        self.delays.pending()
    }

    fn check_destination(&self, dest: &Destination, owner: u64) -> Result<bool> {
        match dest {
            Destination::Queue(q) => {
                let queue = self.queue(q).ok_or_else(|| self.not_found_queue(q))?;
                self.check_owner(&queue, owner)?;
                Ok(queue.spec.durable)
            }
            Destination::Exchange(x) => {
                if x.is_empty() {
                    return Err(default_exchange_refused(&self.name));
                }
                rd(&self.exchanges).get(x).map(|e| e.durable).ok_or_else(|| self.not_found_exchange(x))
            }
            Destination::Topic(t) => {
                // Created if the broker auto-creates topics.
                let broker =
                    self.hooks.broker.as_ref().ok_or_else(|| MessagingError::NotFound(format!("no topic '{t}'")))?;
                broker.topic_or_create_blocking(t).map_err(|_| MessagingError::NotFound(format!("no topic '{t}'")))?;
                Ok(true)
            }
        }
    }

    /// Binds `destination` to `source` (idempotent).
    pub fn bind(
        &self,
        source: &str,
        destination: Destination,
        key: &str,
        arguments: Headers,
        owner: u64,
    ) -> Result<()> {
        let _a = self.admin();
        if source.is_empty() {
            return Err(default_exchange_refused(&self.name));
        }
        let dest_durable = self.check_destination(&destination, owner)?;
        let mut exchanges = wr(&self.exchanges);
        let ex = exchanges.get_mut(source).ok_or_else(|| self.not_found_exchange(source))?;
        let binding = Binding { destination, routing_key: key.to_string(), arguments };
        if ex.bindings.contains(&binding) {
            return Ok(());
        }
        ex.bindings.push(binding);
        let durable = ex.durable && dest_durable;
        drop(exchanges);
        if durable { self.save() } else { Ok(()) }
    }

    /// Removes a binding (absent bindings are fine; absent ends are not).
    pub fn unbind(
        &self,
        source: &str,
        destination: Destination,
        key: &str,
        arguments: &Headers,
        owner: u64,
    ) -> Result<()> {
        let _a = self.admin();
        if source.is_empty() {
            return Err(default_exchange_refused(&self.name));
        }
        self.check_destination(&destination, owner)?;
        let mut exchanges = wr(&self.exchanges);
        let ex = exchanges.get_mut(source).ok_or_else(|| self.not_found_exchange(source))?;
        let before = ex.bindings.len();
        ex.bindings.retain(|b| !(b.destination == destination && b.routing_key == key && &b.arguments == arguments));
        let changed = ex.bindings.len() != before;
        let auto_delete = ex.auto_delete && ex.bindings.is_empty();
        if changed && auto_delete {
            exchanges.remove(source);
        }
        drop(exchanges);
        if changed { self.save() } else { Ok(()) }
    }

    /// The queue named `name`, if declared: a queue of this node, or a
    /// quorum queue whose partition this node leads.
    pub fn queue(&self, name: &str) -> Option<Arc<Queue>> {
        rd(&self.queues).get(name).cloned().or_else(|| self.served_quorum_queue(name))
    }

    /// The quorum queue `name` if this node serves it (issue #17).
    fn served_quorum_queue(&self, name: &str) -> Option<Arc<Queue>> {
        let q = self.hooks.broker.as_ref()?.quorum_queue(&self.name, name)?;
        q.set_vhost(self.weak_self());
        Some(q)
    }

    pub(super) fn weak_self(&self) -> std::sync::Weak<Vhost> {
        self.me.get().cloned().unwrap_or_default()
    }

    /// The broker, when quorum queues apply: a cluster of more than one
    /// node (a single node keeps today's node-local queues, whatever
    /// `x-queue-type` says; docs/cluster.md "Queues in a cluster").
    fn quorum_broker(&self) -> Option<&Arc<crate::Broker>> {
        let broker = self.hooks.broker.as_ref()?;
        (broker.metadata().nodes.len() > 1).then_some(broker)
    }

    /// Declares a quorum queue through the controller and returns it if
    /// this node serves it; `None` for any other declaration.
    fn declare_quorum(&self, spec: &QueueSpec) -> Result<Option<Arc<Queue>>> {
        if !spec.durable || spec.exclusive_owner.is_some() {
            return Ok(None);
        }
        let Some(broker) = self.quorum_broker() else { return Ok(None) };
        let bad = |e: String| {
            MessagingError::PreconditionFailed(format!("{e} for queue '{}' in vhost '{}'", spec.name, self.name))
        };
        let queue_type = QueueType::from_arguments(&spec.arguments, QueueType::Classic).map_err(bad)?;
        if queue_type == QueueType::Classic {
            return Ok(None);
        }
        QueueArgs::parse(&spec.arguments).map_err(bad)?;
        let request = ControllerRequest::Amqp(AmqpRequest::DeclareQueue {
            vhost: self.name.clone(),
            name: spec.name.clone(),
            auto_delete: spec.auto_delete,
            arguments: Arguments(spec.arguments.clone()),
            queue_type,
        });
        broker.submit_change_blocking(request).map_err(|e| match e {
            crate::BrokerError::InvalidRequest(m) => MessagingError::PreconditionFailed(m),
            other => MessagingError::Internal(other),
        })?;
        // Led by another node: `declare_queue_handle` answers with a
        // forwarding handle (issue #17).
        let q = self
            .served_quorum_queue(&spec.name)
            .ok_or(MessagingError::Internal(crate::BrokerError::NotLeaderOrFollower))?;
        q.touch();
        Ok(Some(q))
    }

    /// Every queue, by name.
    pub fn queues(&self) -> Vec<Arc<Queue>> {
        rd(&self.queues).values().cloned().collect()
    }

    /// Refuses access to another connection's exclusive queue.
    pub fn check_owner(&self, q: &Queue, owner: u64) -> Result<()> {
        match q.spec.exclusive_owner {
            Some(o) if o != owner => Err(MessagingError::ResourceLocked(format!(
                "cannot obtain exclusive access to locked queue '{}' in vhost '{}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
                q.spec.name, self.name
            ))),
            _ => Ok(()),
        }
    }

    /// Looks a queue up for `owner`: 404 if absent, 405 if another
    /// connection's exclusive queue.
    pub fn queue_for(&self, name: &str, owner: u64) -> Result<Arc<Queue>> {
        let q = self.queue(name).ok_or_else(|| self.not_found_queue(name))?;
        self.check_owner(&q, owner)?;
        Ok(q)
    }

    /// Declares a queue (or, `passive`, finds it). `spec.exclusive_owner`
    /// is the declaring connection for exclusive queues; `owner` is always
    /// the declaring connection.
    pub fn declare_queue(self: &Arc<Self>, spec: QueueSpec, passive: bool, owner: u64) -> Result<Arc<Queue>> {
        let _a = self.admin();
        if let Some(q) = self.queue(&spec.name) {
            self.check_owner(&q, owner)?;
            q.touch();
            if passive {
                return Ok(q);
            }
            let (vhost, name) = (&self.name, &spec.name);
            let bad = |arg: &str, got: String, now: String| {
                MessagingError::PreconditionFailed(format!(
                    "inequivalent arg '{arg}' for queue '{name}' in vhost '{vhost}': received '{got}' but current is '{now}'"
                ))
            };
            let cur = &q.spec;
            if cur.durable != spec.durable {
                return Err(bad("durable", spec.durable.to_string(), cur.durable.to_string()));
            }
            if cur.exclusive_owner.is_some() != spec.exclusive_owner.is_some() {
                return Err(MessagingError::ResourceLocked(format!(
                    "cannot obtain exclusive access to locked queue '{name}' in vhost '{vhost}'"
                )));
            }
            if cur.auto_delete != spec.auto_delete {
                return Err(bad("auto_delete", spec.auto_delete.to_string(), cur.auto_delete.to_string()));
            }
            for (k, v) in &spec.arguments {
                if k.starts_with("x-") && cur.arguments.get(k) != Some(v) {
                    return Err(bad(k, format!("{v:?}"), format!("{:?}", cur.arguments.get(k))));
                }
            }
            return Ok(q);
        }
        if passive {
            return Err(self.not_found_queue(&spec.name));
        }
        if let Some(q) = self.declare_quorum(&spec)? {
            return Ok(q);
        }
        if spec.name.starts_with("amq.") && !spec.name.starts_with("amq.gen-") {
            return Err(MessagingError::AccessRefused(format!(
                "queue name '{}' contains reserved prefix 'amq.*'",
                spec.name
            )));
        }
        QueueArgs::parse(&spec.arguments).map_err(|e| {
            MessagingError::PreconditionFailed(format!("{e} for queue '{}' in vhost '{}'", spec.name, self.name))
        })?;
        let qdir = if spec.durable {
            self.dir.join("q").join(encode_name(&spec.name))
        } else {
            self.transient_dir.join(encode_name(&spec.name))
        };
        let _ = fs::remove_dir_all(&qdir);
        fs::create_dir_all(&qdir)?;
        let log = self.logs.open(&qdir, queue_log_config())?;
        let durable = spec.durable;
        let q = Queue::open(spec, &qdir, log)?;
        q.set_vhost(Arc::downgrade(self));
        if let Some(f) = Feed::open(&self.hooks, &q) {
            lock(&self.feeds).push(f);
        }
        wr(&self.queues).insert(q.spec.name.clone(), q.clone());
        if durable {
            self.save()?;
        }
        Ok(q)
    }

    /// Deletes a queue and its bindings; returns how many messages were
    /// ready in it. Deleting one that does not exist returns 0.
    pub fn delete_queue(&self, name: &str, if_unused: bool, if_empty: bool, owner: u64) -> Result<u64> {
        let _a = self.admin();
        let Some(q) = self.queue(name) else { return Ok(0) };
        self.check_owner(&q, owner)?;
        if if_unused && q.consumer_count() > 0 {
            return Err(MessagingError::PreconditionFailed(format!("queue '{name}' in vhost '{}' in use", self.name)));
        }
        let ready = q.ready_count();
        if if_empty && ready > 0 {
            return Err(MessagingError::PreconditionFailed(format!(
                "queue '{name}' in vhost '{}' is not empty",
                self.name
            )));
        }
        self.remove_queue(&q)?;
        Ok(ready)
    }

    /// Caller holds `admin`.
    fn remove_queue(&self, q: &Arc<Queue>) -> Result<()> {
        if q.is_replicated() {
            // A quorum queue is metadata: the controller deletes it with
            // its partition (the log is not this vhost's to close).
            let broker = self.hooks.broker.as_ref().ok_or_else(|| self.not_found_queue(q.name()))?;
            let request = ControllerRequest::Amqp(AmqpRequest::DeleteQueue {
                vhost: self.name.clone(),
                name: q.name().to_string(),
            });
            broker.submit_change_blocking(request)?;
            q.mark_deleted();
            self.drop_bindings_to(q.name());
            return self.save();
        }
        wr(&self.queues).remove(q.name());
        self.drop_bindings_to(q.name());
        q.mark_deleted();
        let _ = q.log().close();
        let _ = fs::remove_dir_all(q.dir());
        if q.spec.durable { self.save() } else { Ok(()) }
    }

    /// Removes every binding to queue `name`, and auto-delete exchanges
    /// left without bindings.
    fn drop_bindings_to(&self, name: &str) {
        let dest = Destination::Queue(name.to_string());
        let mut exchanges = wr(&self.exchanges);
        let mut emptied = Vec::new();
        for e in exchanges.values_mut() {
            let before = e.bindings.len();
            e.bindings.retain(|b| b.destination != dest);
            if e.auto_delete && before > 0 && e.bindings.is_empty() {
                emptied.push(e.name.clone());
            }
        }
        for name in emptied {
            exchanges.remove(&name);
        }
    }

    /// Deletes `q` if it is still registered (auto-delete, exclusive queues).
    pub fn delete_if_present(&self, q: &Arc<Queue>) -> Result<()> {
        let _a = self.admin();
        match self.queue(q.name()) {
            Some(cur) if Arc::ptr_eq(&cur, q) => self.remove_queue(q),
            _ => Ok(()),
        }
    }

    /// The queues a message published to `exchange` reaches: through
    /// bindings (following exchange-to-exchange bindings) and, where an
    /// exchange routes nowhere, its alternate exchange.
    pub fn route(&self, exchange: &str, routing_key: &str, headers: &Headers) -> Result<Vec<Arc<Queue>>> {
        Ok(self.route_all(exchange, routing_key, headers)?.0)
    }

    /// [`Vhost::route`], plus the Kafka topics the message reaches.
    pub fn route_all(
        &self,
        exchange: &str,
        routing_key: &str,
        headers: &Headers,
    ) -> Result<(Vec<Arc<Queue>>, Vec<String>)> {
        let (names, topics) = self.route_names(exchange, routing_key, headers)?;
        let queues = rd(&self.queues);
        let found =
            names.iter().filter_map(|n| queues.get(n).cloned().or_else(|| self.served_quorum_queue(n))).collect();
        Ok((found, topics))
    }

    /// The names of the queues, and the topics, a message published to
    /// `exchange` reaches (declared or not).
    pub(super) fn route_names(
        &self,
        exchange: &str,
        routing_key: &str,
        headers: &Headers,
    ) -> Result<(BTreeSet<String>, Vec<String>)> {
        let mut names = BTreeSet::new();
        let mut topics = BTreeSet::new();
        let exchanges = rd(&self.exchanges);
        if !exchanges.contains_key(exchange) {
            return Err(self.not_found_exchange(exchange));
        }
        let mut seen = BTreeSet::new();
        walk(&exchanges, exchange, routing_key, headers, &mut seen, &mut names, &mut topics);
        Ok((names, topics.into_iter().collect()))
    }

    /// Appends `m` to the Kafka topic `topic` (acks=all); the caller
    /// confirms once the append is acknowledged.
    pub fn publish_to_topic(&self, topic: &str, m: &Message) -> Result<crate::Appended> {
        super::kafka_link::publish_to_topic(&self.hooks, topic, m)
    }

    /// Moves new records of bridged topics into their queues; `signal` is
    /// raised when there is more.
    pub(crate) fn pump_feeds(&self, signal: &Arc<crate::Signal>) {
        let mut feeds = lock(&self.feeds);
        feeds.retain_mut(|f| f.pump(&self.hooks, signal));
    }

    pub(crate) fn maintain(&self, sync: bool) {
        let queues: Vec<Arc<Queue>> = rd(&self.queues).values().cloned().collect();
        let now = now_ms();
        for q in queues {
            if q.unused_expired(now) {
                tracing::debug!(queue = %q.name(), vhost = %self.name, "deleting queue unused past x-expires");
                if let Err(e) = self.delete_if_present(&q) {
                    tracing::warn!(queue = %q.name(), error = %e, "deleting an expired queue failed");
                }
                continue;
            }
            if let Err(e) = q.sweep().and_then(|()| q.maintain(sync)) {
                tracing::warn!(queue = %q.name(), vhost = %self.name, error = %e, "queue maintenance failed");
            }
        }
        if let Err(e) = self.delays.maintain(sync) {
            tracing::warn!(vhost = %self.name, error = %e, "delayed-message maintenance failed");
        }
    }
}

fn default_exchange_refused(vhost: &str) -> MessagingError {
    MessagingError::AccessRefused(format!("operation not permitted on the default exchange in vhost '{vhost}'"))
}

fn walk(
    exchanges: &BTreeMap<String, Exchange>,
    name: &str,
    key: &str,
    headers: &Headers,
    seen: &mut BTreeSet<String>,
    out: &mut BTreeSet<String>,
    topics: &mut BTreeSet<String>,
) {
    if !seen.insert(name.to_string()) {
        return;
    }
    let Some(ex) = exchanges.get(name) else { return };
    let before = out.len();
    let mut reached_exchange = false;
    if name.is_empty() {
        out.insert(key.to_string());
    }
    for b in &ex.bindings {
        if ex.matches(b, key, headers) {
            match &b.destination {
                Destination::Queue(q) => {
                    out.insert(q.clone());
                }
                Destination::Exchange(x) => {
                    reached_exchange = true;
                    walk(exchanges, x, key, headers, seen, out, topics);
                }
                Destination::Topic(t) => {
                    reached_exchange = true;
                    topics.insert(t.clone());
                }
            }
        }
    }
    if out.len() == before
        && !reached_exchange
        && let Some(alt) = ex.alternate()
    {
        walk(exchanges, alt, key, headers, seen, out, topics);
    }
}
