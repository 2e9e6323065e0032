//! A virtual host: its exchanges (with their bindings) and queues. The
//! exchanges, bindings and durable queues are cluster metadata
//! (`definitions.rs`); exclusive and non-durable queues, and bindings to
//! them, are this node's alone.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use ferry_log::{FlushPolicy, LogConfig, LogManager};
use ferry_util::sync::lock;

use super::args::QueueArgs;
use super::definitions::{self, Table};
use super::delayed::DelayStore;
use super::delayed_replicated::DelayTimer;
use super::exchange::{Binding, Destination, Exchange, ExchangeKind, Headers};
use super::kafka_link::{Feed, Hooks};
use super::message::Message;
use super::queue::{Queue, QueueSpec};
use super::{MessagingError, encode_name};
use crate::metadata::{AmqpRequest, Arguments, QueueKind, QueueType};
use ferry_util::time::now_ms;

type Result<T, E = MessagingError> = std::result::Result<T, E>;

/// Largest message a queue log accepts (RabbitMQ's default max_message_size
/// is 128 MiB), plus room for the record framing.
pub const MAX_MESSAGE_BYTES: usize = 128 << 20;

/// One virtual host: its exchanges, bindings and queues, each queue on its
/// own log.
pub struct Vhost {
    /// Virtual host name, e.g. `/`.
    pub name: String,
    dir: PathBuf,
    transient_dir: PathBuf,
    logs: Arc<LogManager>,
    /// Exchanges and bindings, rebuilt from the image as it changes.
    table: RwLock<Table>,
    /// This node's queues: classic durable ones the image places here,
    /// exclusive and non-durable ones.
    queues: RwLock<BTreeMap<String, Arc<Queue>>>,
    /// Serialises changes of definitions.
    admin: Mutex<()>,
    pub(super) hooks: Hooks,
    /// Messages waiting for their `x-delay`.
    pub(super) delays: DelayStore,
    /// The delay queue's due index, while this node leads it (a cluster's
    /// delayed messages, `delayed_replicated.rs`).
    pub(super) replicated_delays: DelayTimer,
    /// Queues fed from Kafka topics.
    feeds: Mutex<Vec<Feed>>,
    /// This vhost, for the quorum queues it hands out (dead-lettering).
    me: std::sync::OnceLock<std::sync::Weak<Vhost>>,
    /// Turns true once the vhost is deleted (its connections close).
    deleted: tokio::sync::watch::Sender<bool>,
    /// The image's generation of the vhost this one was opened for (0:
    /// no broker): one deleted and created again is another.
    pub(super) generation: u64,
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

impl Vhost {
    pub(crate) fn open(
        name: &str,
        generation: u64,
        dir: &Path,
        transient_dir: &Path,
        logs: Arc<LogManager>,
        hooks: Hooks,
    ) -> Result<Arc<Vhost>> {
        fs::create_dir_all(dir.join("q"))?;
        // Definitions written before they were cluster metadata: imported once.
        if let Some(broker) = &hooks.broker {
            definitions::import(broker, name, dir)?;
        }
        // The classic durable queues the image places on this node.
        let mut queues = BTreeMap::new();
        if let Some(broker) = &hooks.broker {
            let image = broker.metadata();
            let node = broker.node_id();
            for q in image.amqp.get(name).map(|d| d.queues.values()).into_iter().flatten() {
                if q.kind != (QueueKind::Classic { node }) {
                    continue;
                }
                let spec = QueueSpec {
                    name: q.name.clone(),
                    durable: true,
                    exclusive_owner: None,
                    auto_delete: q.auto_delete,
                    arguments: q.arguments.0.clone(),
                };
                let qdir = dir.join("q").join(encode_name(&spec.name));
                let log = logs.open(&qdir, queue_log_config())?;
                queues.insert(spec.name.clone(), Queue::open(spec, &qdir, log)?);
            }
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
        let delay_dir = dir.join("delayed");
        fs::create_dir_all(&delay_dir)?;
        let delays = DelayStore::open(&delay_dir, logs.open(&delay_dir, queue_log_config())?)?;
        let vhost = Arc::new(Vhost {
            delays,
            replicated_delays: DelayTimer::default(),
            name: name.to_string(),
            dir: dir.to_path_buf(),
            transient_dir: transient_dir.to_path_buf(),
            logs,
            table: RwLock::new(Table::new()),
            queues: RwLock::new(queues),
            admin: Mutex::new(()),
            hooks,
            feeds: Mutex::new(Vec::new()),
            me: std::sync::OnceLock::new(),
            deleted: tokio::sync::watch::Sender::new(false),
            generation,
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

    /// Turns true when the vhost is deleted: a connection to it closes
    /// (AMQP: connection.close 320, as RabbitMQ closes them).
    pub fn deleted(&self) -> tokio::sync::watch::Receiver<bool> {
        self.deleted.subscribe()
    }

    /// Whether the vhost was deleted.
    pub fn is_deleted(&self) -> bool {
        *self.deleted.borrow()
    }

    fn check_live(&self) -> Result<()> {
        if self.is_deleted() {
            return Err(MessagingError::NotFound(format!("vhost '{}' is deleted", self.name)));
        }
        Ok(())
    }

    /// Tells the vhost's connections it is deleted.
    pub(super) fn announce_deleted(&self) {
        self.deleted.send_replace(true);
    }

    /// The vhost was deleted (its definitions and quorum queues went with
    /// its record): tells its connections, stops this node's queues and
    /// removes their files.
    pub(super) fn close_deleted(&self) {
        self.announce_deleted();
        let _a = self.admin();
        let queues: Vec<Arc<Queue>> = std::mem::take(&mut *wr(&self.queues)).into_values().collect();
        for q in queues {
            q.mark_deleted();
            let _ = q.log().close();
        }
        lock(&self.feeds).clear();
        self.delays.close();
        let _ = fs::remove_dir_all(&self.dir);
        let _ = fs::remove_dir_all(&self.transient_dir);
    }

    fn admin(&self) -> MutexGuard<'_, ()> {
        match self.admin.try_lock() {
            Ok(guard) => return guard,
            Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {}
        }
        // The holder may be waiting for the controller, whose work needs
        // this runtime's workers: wait off the worker, or every worker
        // could end up blocked here (many clients declaring at once).
        let wait = || self.admin.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        }
    }

    /// The routing table, rebuilt first if the image's definitions changed
    /// since it was built.
    fn table(&self) -> RwLockReadGuard<'_, Table> {
        let Some(broker) = &self.hooks.broker else { return rd(&self.table) };
        {
            let image = ferry_util::sync::read(&broker.metadata);
            let t = rd(&self.table);
            if t.built_from(&image.amqp) {
                return t;
            }
        }
        let amqp = broker.metadata().amqp.clone();
        {
            let mut t = wr(&self.table);
            if !t.built_from(&amqp) {
                t.rebuild(&self.name, amqp);
            }
        }
        rd(&self.table)
    }

    /// [`Vhost::table`] for a local change.
    fn table_mut(&self) -> RwLockWriteGuard<'_, Table> {
        drop(self.table());
        wr(&self.table)
    }

    /// Submits a definitions change to the controller.
    fn submit(&self, request: AmqpRequest) -> Result<()> {
        definitions::submit(self.hooks.broker.as_ref(), request)
    }

    /// Deletes the auto-delete exchanges `names` (left without local
    /// bindings) if the cluster has no binding from or to them either.
    fn delete_emptied(&self, names: Vec<String>) {
        for name in names {
            let request = AmqpRequest::DeleteExchange { vhost: self.name.clone(), name: name.clone(), if_unused: true };
            if let Err(e) = self.submit(request) {
                tracing::debug!(vhost = %self.name, exchange = %name, error = %e, "auto-delete exchange kept");
            }
        }
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
        self.check_live()?;
        if let Some(cur) = self.table().exchanges.get(&ex.name) {
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
        // Every exchange is metadata, durable or not: a client may publish
        // through any node (docs/cluster.md).
        self.submit(AmqpRequest::DeclareExchange { vhost: self.name.clone(), exchange: definitions::def_of(&ex) })
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
        let mut table = self.table_mut();
        if !table.exchanges.contains_key(name) {
            return Ok(());
        }
        if if_unused && table.in_use(name) {
            return Err(MessagingError::PreconditionFailed(format!(
                "exchange '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        let emptied = table.drop_local(&Destination::Exchange(name.to_string()));
        drop(table);
        self.submit(AmqpRequest::DeleteExchange { vhost: self.name.clone(), name: name.to_string(), if_unused })?;
        self.delete_emptied(emptied.into_iter().filter(|x| x != name).collect());
        Ok(())
    }

    /// An exchange's type, and whether it is internal (clients may not
    /// publish to it) and delayed (`x-delayed-message`).
    pub fn exchange_info(&self, name: &str) -> Result<(ExchangeKind, bool, bool)> {
        self.table()
            .exchanges
            .get(name)
            .map(|e| (e.kind, e.internal, e.delayed))
            .ok_or_else(|| self.not_found_exchange(name))
    }

    /// Checks that a binding's destination exists (and may be bound by
    /// `owner`); whether the binding is cluster metadata (not a binding to
    /// one of this node's exclusive or non-durable queues).
    fn check_destination(&self, dest: &Destination, owner: u64) -> Result<bool> {
        match dest {
            Destination::Queue(q) => {
                super::queue_handle::check_not_internal(q)?;
                if self.table().defs(&self.name).is_some_and(|d| d.queues.contains_key(q)) {
                    return Ok(true);
                }
                let queue = rd(&self.queues).get(q).cloned().ok_or_else(|| self.not_found_queue(q))?;
                self.check_owner(&queue, owner)?;
                Ok(false)
            }
            Destination::Exchange(x) => {
                if x.is_empty() {
                    return Err(default_exchange_refused(&self.name));
                }
                if !self.table().exchanges.contains_key(x) {
                    return Err(self.not_found_exchange(x));
                }
                Ok(true)
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
        if !self.table().exchanges.contains_key(source) {
            return Err(self.not_found_exchange(source));
        }
        let shared = self.check_destination(&destination, owner)?;
        let binding = Binding { destination, routing_key: key.to_string(), arguments };
        if shared {
            let binding = definitions::binding_def(source, &binding);
            return self.submit(AmqpRequest::Bind { vhost: self.name.clone(), binding });
        }
        let mut table = self.table_mut();
        if !table.exchanges.contains_key(source) {
            return Err(self.not_found_exchange(source));
        }
        table.add_local(source, binding);
        Ok(())
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
        let shared = self.check_destination(&destination, owner)?;
        if !self.table().exchanges.contains_key(source) {
            return Err(self.not_found_exchange(source));
        }
        let binding = Binding { destination, routing_key: key.to_string(), arguments: arguments.clone() };
        if shared {
            let binding = definitions::binding_def(source, &binding);
            return self.submit(AmqpRequest::Unbind { vhost: self.name.clone(), binding });
        }
        let mut table = self.table_mut();
        let emptied = table.remove_local(source, &binding)
            && table.exchanges.get(source).is_some_and(|e| e.auto_delete && e.bindings.is_empty());
        drop(table);
        if emptied {
            self.delete_emptied(vec![source.to_string()]);
        }
        Ok(())
    }

    /// The queue named `name`, if declared: a queue of this node, or a
    /// quorum queue whose partition this node leads.
    pub fn queue(&self, name: &str) -> Option<Arc<Queue>> {
        rd(&self.queues).get(name).cloned().or_else(|| self.served_quorum_queue(name))
    }

    /// This node's own queue `name` (classic, exclusive or transient).
    pub(crate) fn held_queue(&self, name: &str) -> Option<Arc<Queue>> {
        rd(&self.queues).get(name).cloned()
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

    /// Declares a durable, non-exclusive queue through the controller:
    /// classic (held by this node) or quorum, by `x-queue-type` or the
    /// default. Returns it if this node holds or serves it.
    fn declare_shared(self: &Arc<Self>, spec: QueueSpec) -> Result<Arc<Queue>> {
        let bad = |e: String| {
            MessagingError::PreconditionFailed(format!("{e} for queue '{}' in vhost '{}'", spec.name, self.name))
        };
        let broker = self.hooks.broker.as_ref();
        let default = definitions::default_queue_type(broker, self.hooks.default_queue_type);
        let queue_type = QueueType::from_arguments(&spec.arguments, default).map_err(bad)?;
        let kind_now = || {
            broker
                .and_then(|b| b.metadata().amqp.get(&self.name).and_then(|d| d.queues.get(&spec.name)).map(|q| q.kind))
        };
        let existed = kind_now().is_some();
        self.submit(AmqpRequest::DeclareQueue {
            vhost: self.name.clone(),
            name: spec.name.clone(),
            auto_delete: spec.auto_delete,
            arguments: Arguments(spec.arguments.clone()),
            queue_type,
        })?;
        let me = broker.map(|b| b.node_id());
        match kind_now() {
            Some(QueueKind::Quorum { .. }) => {
                // Led by another node: `declare_queue_handle` answers with a
                // forwarding handle (issue #17).
                let q = self
                    .served_quorum_queue(&spec.name)
                    .ok_or(MessagingError::Internal(crate::BrokerError::NotLeaderOrFollower))?;
                q.touch();
                Ok(q)
            }
            Some(QueueKind::Classic { node }) if Some(node) == me => self.open_local(spec, !existed),
            // Held by another node, or deleted meanwhile.
            _ => Err(MessagingError::Internal(crate::BrokerError::NotLeaderOrFollower)),
        }
    }

    /// Opens a queue of this node and registers it; `fresh`: a new queue
    /// (whatever its directory holds is from an earlier one).
    fn open_local(self: &Arc<Self>, spec: QueueSpec, fresh: bool) -> Result<Arc<Queue>> {
        let qdir = if spec.durable {
            self.dir.join("q").join(encode_name(&spec.name))
        } else {
            self.transient_dir.join(encode_name(&spec.name))
        };
        if fresh {
            let _ = fs::remove_dir_all(&qdir);
        }
        fs::create_dir_all(&qdir)?;
        let log = self.logs.open(&qdir, queue_log_config())?;
        let q = Queue::open(spec, &qdir, log)?;
        q.set_vhost(Arc::downgrade(self));
        if let Some(f) = Feed::open(&self.hooks, &q) {
            lock(&self.feeds).push(f);
        }
        wr(&self.queues).insert(q.spec.name.clone(), q.clone());
        Ok(q)
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
        self.check_live()?;
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
        if spec.name.starts_with("amq.") && !spec.name.starts_with("amq.gen-") {
            return Err(MessagingError::AccessRefused(format!(
                "queue name '{}' contains reserved prefix 'amq.*'",
                spec.name
            )));
        }
        QueueArgs::parse(&spec.arguments).map_err(|e| {
            MessagingError::PreconditionFailed(format!("{e} for queue '{}' in vhost '{}'", spec.name, self.name))
        })?;
        if spec.durable && spec.exclusive_owner.is_none() {
            return self.declare_shared(spec);
        }
        // A durable queue of the cluster by that name (held by another
        // node): an exclusive or transient one would shadow it here.
        if self.table().defs(&self.name).is_some_and(|d| d.queues.contains_key(&spec.name)) {
            let (vhost, name) = (&self.name, &spec.name);
            if spec.exclusive_owner.is_some() {
                return Err(MessagingError::ResourceLocked(format!(
                    "cannot obtain exclusive access to locked queue '{name}' in vhost '{vhost}'"
                )));
            }
            return Err(MessagingError::PreconditionFailed(format!(
                "inequivalent arg 'durable' for queue '{name}' in vhost '{vhost}': received 'false' but current is 'true'"
            )));
        }
        self.open_local(spec, true)
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
        let shared = q.spec.durable && q.spec.exclusive_owner.is_none();
        if shared {
            // Metadata: the controller deletes it with its bindings (and a
            // quorum queue's partition, whose log is not this vhost's).
            self.submit(AmqpRequest::DeleteQueue { vhost: self.name.clone(), name: q.name().to_string() })?;
        }
        if q.is_replicated() {
            q.mark_deleted();
            return Ok(());
        }
        self.close_local(q);
        Ok(())
    }

    /// Closes and removes one of this node's queues with its local
    /// bindings (and auto-delete exchanges they leave empty). Caller holds
    /// `admin`.
    fn close_local(&self, q: &Arc<Queue>) {
        wr(&self.queues).remove(q.name());
        let emptied = self.table_mut().drop_local(&Destination::Queue(q.name().to_string()));
        self.delete_emptied(emptied);
        q.mark_deleted();
        let _ = q.log().close();
        let _ = fs::remove_dir_all(q.dir());
    }

    /// Closes this node's classic queues whose record is gone (deleted
    /// through another node).
    fn close_unplaced(&self) {
        let Some(broker) = &self.hooks.broker else { return };
        let _a = self.admin();
        let image = broker.metadata();
        let placed = |name: &str| {
            image
                .amqp
                .get(&self.name)
                .and_then(|d| d.queues.get(name))
                .is_some_and(|q| q.kind == QueueKind::Classic { node: broker.node_id() })
        };
        let gone: Vec<Arc<Queue>> = rd(&self.queues)
            .values()
            .filter(|q| q.spec.durable && q.spec.exclusive_owner.is_none() && !placed(q.name()))
            .cloned()
            .collect();
        for q in gone {
            tracing::info!(vhost = %self.name, queue = %q.name(), "queue deleted through another node");
            self.close_local(&q);
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
        let table = self.table();
        if !table.exchanges.contains_key(exchange) {
            return Err(self.not_found_exchange(exchange));
        }
        let mut seen = BTreeSet::new();
        walk(&table.exchanges, exchange, routing_key, headers, &mut seen, &mut names, &mut topics);
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
        self.close_unplaced();
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
