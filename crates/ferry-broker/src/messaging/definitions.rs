//! A vhost's definitions as cluster metadata (issue #17): exchanges,
//! bindings and durable, non-exclusive queues are records of the
//! controller's log (`MetadataImage::amqp`), so every node routes a publish
//! the same way. A single node is a cluster of one: the same path.
//!
//! - A vhost's routing [`Table`] is rebuilt from the image whenever the
//!   image's AMQP part changed (checked by pointer on each use: images share
//!   it while it is unchanged), plus the node-local bindings: bindings to
//!   exclusive or non-durable queues, which live on one node (as RabbitMQ's
//!   exclusive queues) and are routed only by it.
//! - A classic durable queue's record names the node holding its log; that
//!   node opens it at start from the image and closes it once the record is
//!   gone (deleted through another node).
//! - [`import`]: a `definitions.json` written before definitions were
//!   metadata is imported once at start (then renamed
//!   `definitions.json.imported`), so an upgraded node keeps its
//!   exchanges, bindings and queues.
//!
//! docs/cluster.md, "Queues in a cluster".

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::MessagingError;
use super::exchange::{Binding, Destination, Exchange, ExchangeKind, Headers};
use crate::metadata::{
    AmqpRequest, Arguments, BindingDef, ControllerRequest, ExchangeDef, QueueKind, QueueType, VhostDefinitions,
    is_builtin_exchange,
};
use crate::{Broker, BrokerError};

type Result<T, E = MessagingError> = std::result::Result<T, E>;

/// The image's AMQP part: definitions by vhost.
pub(super) type AmqpDefs = Arc<BTreeMap<String, VhostDefinitions>>;

/// The exchanges every vhost has.
fn builtin_exchanges() -> impl Iterator<Item = Exchange> {
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
}

/// The routing table of one vhost: exchanges with their bindings.
pub(super) struct Table {
    /// Built-in, declared (the image's) exchanges, each with the image's
    /// bindings and then this node's local ones.
    pub(super) exchanges: BTreeMap<String, Exchange>,
    /// The image's AMQP part this table was built from (held, so its
    /// address is never reused while it is compared against).
    from: AmqpDefs,
    /// Bindings to node-local queues: (source exchange, binding).
    local: Vec<(String, Binding)>,
}

impl Table {
    pub(super) fn new() -> Table {
        let mut t = Table { exchanges: BTreeMap::new(), from: Arc::default(), local: Vec::new() };
        t.rebuild("", Arc::default());
        t
    }

    /// Whether the table was built from `amqp`.
    pub(super) fn built_from(&self, amqp: &AmqpDefs) -> bool {
        Arc::ptr_eq(&self.from, amqp)
    }

    /// This vhost's definitions in the image the table was built from.
    pub(super) fn defs<'a>(&'a self, vhost: &str) -> Option<&'a VhostDefinitions> {
        self.from.get(vhost)
    }

    /// Rebuilds the exchanges from `from`'s definitions of `vhost` and the
    /// local bindings (those from exchanges that are gone are dropped).
    pub(super) fn rebuild(&mut self, vhost: &str, from: AmqpDefs) {
        let mut exchanges: BTreeMap<String, Exchange> = builtin_exchanges().map(|e| (e.name.clone(), e)).collect();
        if let Some(defs) = from.get(vhost) {
            for def in defs.exchanges.values() {
                exchanges.insert(def.name.clone(), exchange_of(def));
            }
            for b in &defs.bindings {
                if let Some(e) = exchanges.get_mut(&b.source) {
                    e.bindings.push(Binding {
                        destination: b.destination.clone(),
                        routing_key: b.routing_key.clone(),
                        arguments: b.arguments.0.clone(),
                    });
                }
            }
        }
        self.local.retain(|(source, _)| exchanges.contains_key(source));
        for (source, b) in &self.local {
            if let Some(e) = exchanges.get_mut(source) {
                e.bindings.push(b.clone());
            }
        }
        self.exchanges = exchanges;
        self.from = from;
    }

    /// Adds a local binding (present already: nothing changes).
    pub(super) fn add_local(&mut self, source: &str, binding: Binding) {
        let Some(e) = self.exchanges.get_mut(source) else { return };
        if e.bindings.contains(&binding) {
            return;
        }
        e.bindings.push(binding.clone());
        self.local.push((source.to_string(), binding));
    }

    /// Removes a local binding; whether it was there.
    pub(super) fn remove_local(&mut self, source: &str, binding: &Binding) -> bool {
        let before = self.local.len();
        self.local.retain(|(s, b)| !(s == source && b == binding));
        if let Some(e) = self.exchanges.get_mut(source) {
            e.bindings.retain(|b| b != binding);
        }
        self.local.len() != before
    }

    /// Removes the local bindings to `dest` (or, an exchange, from it too);
    /// returns the auto-delete exchanges left without any binding.
    pub(super) fn drop_local(&mut self, dest: &Destination) -> Vec<String> {
        let from_it = |s: &str| matches!(dest, Destination::Exchange(x) if x == s);
        let gone: Vec<(String, Binding)> =
            self.local.iter().filter(|(s, b)| b.destination == *dest || from_it(s)).cloned().collect();
        let mut emptied = Vec::new();
        for (source, b) in &gone {
            self.remove_local(source, b);
            if let Some(e) = self.exchanges.get(source)
                && e.auto_delete
                && e.bindings.is_empty()
                && !emptied.contains(source)
            {
                emptied.push(source.clone());
            }
        }
        emptied
    }

    /// Whether `name` has bindings from or to it.
    pub(super) fn in_use(&self, name: &str) -> bool {
        let dest = Destination::Exchange(name.to_string());
        self.exchanges.get(name).is_some_and(|e| !e.bindings.is_empty())
            || self.exchanges.values().any(|e| e.bindings.iter().any(|b| b.destination == dest))
    }
}

/// An image exchange as the router uses it (bindings added apart).
fn exchange_of(def: &ExchangeDef) -> Exchange {
    Exchange {
        name: def.name.clone(),
        kind: def.kind,
        durable: def.durable,
        auto_delete: def.auto_delete,
        internal: def.internal,
        arguments: def.arguments.0.clone(),
        bindings: Vec::new(),
        delayed: def.delayed,
    }
}

/// A declared exchange as the controller records it.
pub(super) fn def_of(ex: &Exchange) -> ExchangeDef {
    ExchangeDef {
        name: ex.name.clone(),
        kind: ex.kind,
        durable: ex.durable,
        auto_delete: ex.auto_delete,
        internal: ex.internal,
        delayed: ex.delayed,
        arguments: Arguments(ex.arguments.clone()),
    }
}

/// A binding as the controller records it.
pub(super) fn binding_def(source: &str, binding: &Binding) -> BindingDef {
    BindingDef {
        source: source.to_string(),
        destination: binding.destination.clone(),
        routing_key: binding.routing_key.clone(),
        arguments: Arguments(binding.arguments.clone()),
    }
}

/// The definitions file of a vhost before definitions were metadata.
#[derive(Default, Serialize, Deserialize)]
pub(super) struct LegacyDefinitions {
    pub(super) exchanges: Vec<Exchange>,
    pub(super) queues: Vec<LegacyQueue>,
}

/// A durable queue in [`LegacyDefinitions`].
#[derive(Serialize, Deserialize)]
pub(super) struct LegacyQueue {
    pub(super) name: String,
    pub(super) auto_delete: bool,
    pub(super) arguments: Headers,
}

/// The legacy file's name in a vhost's directory.
pub(super) const LEGACY_FILE: &str = "definitions.json";

/// Carries out an AMQP definitions change through the controller; the
/// call returns once this node's image has it. Refusals become AMQP's
/// codes: 406 (inequivalent, in use), 404 (a missing end).
pub(super) fn submit(broker: Option<&Arc<Broker>>, request: AmqpRequest) -> Result<()> {
    let broker = broker.ok_or(MessagingError::Internal(BrokerError::ControllerUnavailable(
        "no broker: AMQP definitions need the cluster metadata".into(),
    )))?;
    broker.submit_change_blocking(ControllerRequest::Amqp(request)).map_err(|e| match e {
        BrokerError::InvalidRequest(m) => MessagingError::PreconditionFailed(m),
        BrokerError::ResourceNotFound(m) => MessagingError::NotFound(m),
        other => MessagingError::Internal(other),
    })
}

/// Imports `dir`'s legacy `definitions.json` of vhost `vhost` into the
/// metadata (exchanges, then queues as classic queues held by this node,
/// then bindings), and renames it so this happens once. What the metadata
/// refuses (another node declared the same name differently) is logged and
/// left out. A crash half-way imports again at the next start: every
/// request is idempotent.
pub(super) fn import(broker: &Arc<Broker>, vhost: &str, dir: &Path) -> Result<()> {
    let path = dir.join(LEGACY_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let old: LegacyDefinitions =
        serde_json::from_slice(&bytes).map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
    let warn = |what: String, e: MessagingError| {
        tracing::warn!(vhost = %vhost, error = %e, "{what} of {} not imported", path.display());
    };
    let vh = || vhost.to_string();
    for ex in old.exchanges.iter().filter(|e| !is_builtin_exchange(&e.name)) {
        if let Err(e) = submit(Some(broker), AmqpRequest::DeclareExchange { vhost: vh(), exchange: def_of(ex) }) {
            warn(format!("exchange '{}'", ex.name), e);
        }
    }
    let node = broker.node_id();
    for q in &old.queues {
        let request = AmqpRequest::DeclareQueue {
            vhost: vh(),
            name: q.name.clone(),
            auto_delete: q.auto_delete,
            arguments: Arguments(q.arguments.clone()),
            queue_type: QueueType::Classic,
        };
        if let Err(e) = submit(Some(broker), request) {
            warn(format!("queue '{}'", q.name), e);
            continue;
        }
        let kind = broker.metadata().amqp.get(vhost).and_then(|d| d.queues.get(&q.name)).map(|q| q.kind);
        if kind != Some(QueueKind::Classic { node }) {
            let e = MessagingError::PreconditionFailed(format!("declared as {kind:?} already"));
            warn(format!("queue '{}' (its messages here are dropped)", q.name), e);
        }
    }
    for ex in &old.exchanges {
        for b in &ex.bindings {
            if let Err(e) = submit(Some(broker), AmqpRequest::Bind { vhost: vh(), binding: binding_def(&ex.name, b) }) {
                warn(format!("binding {} -> {:?}", ex.name, b.destination), e);
            }
        }
    }
    std::fs::rename(&path, dir.join(format!("{LEGACY_FILE}.imported")))?;
    tracing::info!(
        vhost = %vhost,
        exchanges = old.exchanges.len(),
        queues = old.queues.len(),
        "imported the node-local AMQP definitions into the cluster metadata"
    );
    Ok(())
}

/// The queue type of a declaration without `x-queue-type`: the configured
/// one, else quorum when the cluster has more than one voter or registered
/// node, else classic (a single node keeps node-local queues).
pub(super) fn default_queue_type(broker: Option<&Arc<Broker>>, configured: Option<QueueType>) -> QueueType {
    if let Some(t) = configured {
        return t;
    }
    let Some(broker) = broker else { return QueueType::Classic };
    let many = broker.metadata().nodes.len() > 1 || broker.controller_status().voters.len() > 1;
    if many { QueueType::Quorum { group_size: None } } else { QueueType::Classic }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(dest: Destination, key: &str) -> Binding {
        Binding { destination: dest, routing_key: key.into(), arguments: Headers::new() }
    }

    /// The table follows the image's definitions and keeps local bindings
    /// while their source exchange exists.
    #[test]
    fn the_table_merges_image_and_local_bindings() {
        let mut defs = VhostDefinitions::default();
        let mut logs = def_of(&Exchange {
            name: "logs".into(),
            kind: ExchangeKind::Fanout,
            durable: false,
            auto_delete: true,
            internal: false,
            arguments: Headers::new(),
            bindings: Vec::new(),
            delayed: false,
        });
        logs.auto_delete = true;
        defs.exchanges.insert("logs".into(), logs);
        defs.bindings.push(binding_def("logs", &binding(Destination::Queue("kept".into()), "")));
        let image: AmqpDefs = Arc::new([("/".to_string(), defs)].into());
        let mut t = Table::new();
        assert!(!t.built_from(&image));
        t.rebuild("/", image.clone());
        assert!(t.built_from(&image));
        assert!(t.exchanges.contains_key("amq.topic") && t.exchanges.contains_key(""));
        assert_eq!(t.exchanges["logs"].bindings.len(), 1);
        let mine = binding(Destination::Queue("amq.gen-1".into()), "");
        t.add_local("logs", mine.clone());
        t.add_local("logs", mine.clone());
        t.add_local("nope", mine.clone());
        assert_eq!(t.exchanges["logs"].bindings.len(), 2);
        assert!(t.in_use("logs"));
        // Rebuilt from another image: local bindings stay while `logs` exists.
        let mut other = image.as_ref().clone();
        other.get_mut("/").unwrap().bindings.clear();
        t.rebuild("/", Arc::new(other.clone()));
        assert_eq!(t.exchanges["logs"].bindings, vec![mine.clone()]);
        // The local queue goes: `logs` (auto-delete) is left without bindings.
        assert_eq!(t.drop_local(&Destination::Queue("amq.gen-1".into())), vec!["logs".to_string()]);
        assert!(!t.in_use("logs"));
        t.add_local("logs", mine.clone());
        // `logs` deleted in the image: its local bindings go too.
        other.get_mut("/").unwrap().exchanges.clear();
        t.rebuild("/", Arc::new(other));
        assert!(!t.exchanges.contains_key("logs"));
        t.rebuild("/", image);
        assert_eq!(t.exchanges["logs"].bindings.len(), 1, "the local binding did not come back");
        assert!(!t.remove_local("logs", &mine));
    }

    mod through_a_vhost {
        use std::sync::Arc;

        use bytes::Bytes;

        use crate::broker::{Broker, BrokerConfig};
        use crate::messaging::{
            Destination, Exchange, ExchangeKind, Headers, Hooks, Message, MessagingError, QueueSpec, Vhost, Vhosts,
        };
        use crate::metadata::{AmqpRequest, ControllerRequest, QueueKind};

        fn exchange(name: &str, kind: ExchangeKind, durable: bool) -> Exchange {
            Exchange {
                name: name.into(),
                kind,
                durable,
                auto_delete: false,
                internal: false,
                arguments: Headers::new(),
                bindings: Vec::new(),
                delayed: false,
            }
        }

        fn spec(name: &str, durable: bool, owner: Option<u64>) -> QueueSpec {
            QueueSpec {
                name: name.into(),
                durable,
                exclusive_owner: owner,
                auto_delete: false,
                arguments: Headers::new(),
            }
        }

        fn message(key: &str, body: &str) -> Message {
            Message {
                exchange: String::new(),
                routing_key: key.into(),
                properties: Bytes::new(),
                body: Bytes::from(body.to_string()),
                persistent: true,
                headers: Headers::new(),
                expires_at: None,
                priority: 0,
                deliver_at: None,
                retry_queue: None,
                retries: 0,
            }
        }

        fn routed(vhost: &Vhost, exchange: &str, key: &str) -> Vec<String> {
            let mut names: Vec<String> =
                vhost.route(exchange, key, &Headers::new()).unwrap().iter().map(|q| q.name().to_string()).collect();
            names.sort();
            names
        }

        fn open(dir: &std::path::Path, broker: &Arc<Broker>) -> Arc<Vhosts> {
            let hooks = Hooks { broker: Some(broker.clone()), ..Default::default() };
            Vhosts::open(dir, Default::default(), &["/".to_string()], hooks).unwrap()
        }

        /// Exchanges and bindings are metadata on a single node too: the
        /// checks answer as before (406, 403, 404), an exchange's deletion
        /// takes its bindings with it, bindings to exclusive queues stay
        /// local, and a reopened vhost (a restart) routes the same way.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn exchanges_and_bindings_live_in_the_metadata() {
            let dir = tempfile::tempdir().unwrap();
            let broker =
                Broker::open(BrokerConfig { data_dir: dir.path().to_path_buf(), ..Default::default() }).unwrap();
            crate::testing::install(&broker);
            let vhosts = open(dir.path(), &broker);
            let vhost = vhosts.get("/").unwrap();
            vhost.declare_exchange(exchange("logs", ExchangeKind::Topic, true), false).unwrap();
            vhost.declare_exchange(exchange("fan", ExchangeKind::Fanout, false), false).unwrap();
            vhost.declare_exchange(exchange("logs", ExchangeKind::Topic, true), false).unwrap();
            assert!(vhost.declare_exchange(exchange("logs", ExchangeKind::Topic, true), true).is_ok(), "passive");
            let image = broker.metadata();
            assert_eq!(image.amqp["/"].exchanges.len(), 2, "transient exchanges are metadata too");
            let err = vhost.declare_exchange(exchange("logs", ExchangeKind::Direct, true), false).unwrap_err();
            assert!(matches!(err, MessagingError::PreconditionFailed(_)), "{err:?}");
            let err = vhost.declare_exchange(exchange("amq.mine", ExchangeKind::Direct, true), false).unwrap_err();
            assert!(matches!(err, MessagingError::AccessRefused(_)), "{err:?}");
            let err = vhost.declare_exchange(exchange("nope", ExchangeKind::Direct, true), true).unwrap_err();
            assert!(matches!(err, MessagingError::NotFound(_)), "{err:?}");
            assert!(matches!(vhost.delete_exchange("amq.topic", false), Err(MessagingError::AccessRefused(_))));

            let q = vhost.declare_queue(spec("kept", true, None), false, 1).unwrap();
            vhost.declare_queue(spec("mine", false, Some(7)), false, 7).unwrap();
            vhost.bind("logs", Destination::Queue("kept".into()), "a.*", Headers::new(), 1).unwrap();
            vhost.bind("logs", Destination::Queue("mine".into()), "#", Headers::new(), 7).unwrap();
            vhost.bind("logs", Destination::Exchange("fan".into()), "b.#", Headers::new(), 1).unwrap();
            vhost.bind("fan", Destination::Queue("kept".into()), "", Headers::new(), 1).unwrap();
            let err = vhost.bind("logs", Destination::Queue("mine".into()), "x", Headers::new(), 8).unwrap_err();
            assert!(matches!(err, MessagingError::ResourceLocked(_)), "{err:?}");
            let err = vhost.bind("logs", Destination::Queue("none".into()), "x", Headers::new(), 1).unwrap_err();
            assert!(matches!(err, MessagingError::NotFound(_)), "{err:?}");
            let defs = broker.metadata().amqp["/"].clone();
            assert_eq!(defs.bindings.len(), 3, "the exclusive queue's binding is this node's: {defs:?}");
            assert_eq!(defs.queues["kept"].kind, QueueKind::Classic { node: broker.node_id() });
            assert!(!defs.queues.contains_key("mine"));
            assert_eq!(routed(&vhost, "logs", "a.x"), ["kept", "mine"]);
            assert_eq!(routed(&vhost, "logs", "b.x"), ["kept", "mine"]);
            assert_eq!(routed(&vhost, "logs", "c"), ["mine"]);
            assert!(matches!(vhost.delete_exchange("fan", true), Err(MessagingError::PreconditionFailed(_))));

            // Deleting `fan` drops logs -> fan and fan -> kept with it.
            vhost.delete_exchange("fan", false).unwrap();
            let defs = broker.metadata().amqp["/"].clone();
            assert_eq!(defs.bindings.len(), 1, "{defs:?}");
            assert_eq!(routed(&vhost, "logs", "b.x"), ["mine"]);
            q.publish(&message("k", "before")).unwrap();
            q.maintain(true).unwrap();

            // A restart: exchanges, bindings and the classic queue come back from the metadata.
            vhosts.shutdown();
            drop((vhost, q, vhosts));
            let vhosts = open(dir.path(), &broker);
            let vhost = vhosts.get("/").unwrap();
            assert!(vhost.queue("mine").is_none(), "the exclusive queue is gone");
            assert_eq!(routed(&vhost, "logs", "a.b"), ["kept"]);
            let q = vhost.queue("kept").unwrap();
            assert_eq!(&q.take(None).unwrap().unwrap().message.body[..], b"before");
            vhost.unbind("logs", Destination::Queue("kept".into()), "a.*", &Headers::new(), 1).unwrap();
            assert!(routed(&vhost, "logs", "a.b").is_empty());
            assert!(broker.metadata().amqp["/"].bindings.is_empty());
            vhosts.shutdown();
        }

        /// A classic queue deleted through another node (its record gone)
        /// is closed by the node holding it; a transient or exclusive
        /// declaration of a name the cluster's metadata has is refused.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_classic_queue_follows_its_record() {
            let dir = tempfile::tempdir().unwrap();
            let broker =
                Broker::open(BrokerConfig { data_dir: dir.path().to_path_buf(), ..Default::default() }).unwrap();
            crate::testing::install(&broker);
            let vhosts = open(dir.path(), &broker);
            let vhost = vhosts.get("/").unwrap();
            let q = vhost.declare_queue(spec("jobs", true, None), false, 1).unwrap();
            vhost.bind("amq.direct", Destination::Queue("jobs".into()), "j", Headers::new(), 1).unwrap();
            let qdir = q.dir().to_path_buf();
            // A durable queue of the metadata (as if held by another node:
            // not open here): a transient queue of that name is refused
            // (406), as an exclusive one (405).
            let elsewhere = ControllerRequest::Amqp(AmqpRequest::DeclareQueue {
                vhost: "/".into(),
                name: "theirs".into(),
                auto_delete: false,
                arguments: crate::metadata::Arguments::default(),
                queue_type: crate::metadata::QueueType::Classic,
            });
            broker.submit_change(elsewhere).await.unwrap();
            let err = vhost.declare_queue(spec("theirs", false, None), false, 1).unwrap_err();
            assert!(matches!(err, MessagingError::PreconditionFailed(_)), "{err:?}");
            let err = vhost.declare_queue(spec("theirs", true, Some(1)), false, 1).unwrap_err();
            assert!(matches!(err, MessagingError::ResourceLocked(_)), "{err:?}");
            let delete = ControllerRequest::Amqp(AmqpRequest::DeleteQueue { vhost: "/".into(), name: "jobs".into() });
            broker.submit_change(delete).await.unwrap();
            assert!(routed(&vhost, "amq.direct", "j").is_empty(), "its binding went with the record");
            vhost.maintain(false);
            assert!(q.is_deleted() && vhost.queue("jobs").is_none() && !qdir.exists());
            vhosts.shutdown();
        }

        /// A `definitions.json` of an older version is imported once: its
        /// exchanges, queues (classic, held here, with their messages) and
        /// bindings become metadata.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn an_old_definitions_file_is_imported_once() {
            let dir = tempfile::tempdir().unwrap();
            let vdir = dir.path().join("queues").join("%2F");
            std::fs::create_dir_all(vdir.join("q")).unwrap();
            let old = r#"{
              "exchanges": [
                {"name": "", "kind": "Direct", "durable": true, "auto_delete": false, "internal": false,
                 "arguments": {}, "bindings": []},
                {"name": "amq.topic", "kind": "Topic", "durable": true, "auto_delete": false, "internal": false,
                 "arguments": {}, "bindings": [
                   {"destination": {"Queue": "orders"}, "routing_key": "o.#", "arguments": {}}]},
                {"name": "events", "kind": "Fanout", "durable": true, "auto_delete": false, "internal": false,
                 "arguments": {"alternate-exchange": {"Str": "amq.topic"}}, "bindings": [
                   {"destination": {"Queue": "orders"}, "routing_key": "", "arguments": {}},
                   {"destination": {"Queue": "gone"}, "routing_key": "", "arguments": {}}]}
              ],
              "queues": [
                {"name": "orders", "auto_delete": false, "arguments": {"x-max-length": {"Int": 100}}}
              ]
            }"#;
            std::fs::write(vdir.join("definitions.json"), old).unwrap();
            let broker =
                Broker::open(BrokerConfig { data_dir: dir.path().to_path_buf(), ..Default::default() }).unwrap();
            crate::testing::install(&broker);
            let vhosts = open(dir.path(), &broker);
            let vhost = vhosts.get("/").unwrap();
            let defs = broker.metadata().amqp["/"].clone();
            assert_eq!(defs.exchanges.keys().collect::<Vec<_>>(), ["events"]);
            assert_eq!(defs.queues["orders"].kind, QueueKind::Classic { node: broker.node_id() });
            assert_eq!(defs.bindings.len(), 2, "the binding to a missing queue is left out: {defs:?}");
            assert!(!vdir.join("definitions.json").exists() && vdir.join("definitions.json.imported").exists());
            assert_eq!(routed(&vhost, "events", ""), ["orders"]);
            assert_eq!(routed(&vhost, "amq.topic", "o.1"), ["orders"]);
            vhost.queue("orders").unwrap().publish(&message("o", "m")).unwrap();
            vhosts.shutdown();
            drop((vhost, vhosts));
            // Opened again: nothing imported twice, the queue's messages kept.
            let vhosts = open(dir.path(), &broker);
            let vhost = vhosts.get("/").unwrap();
            assert_eq!(broker.metadata().amqp["/"].bindings.len(), 2);
            assert_eq!(vhost.queue("orders").unwrap().ready_count(), 1);
            vhosts.shutdown();
        }
    }
}
