//! AMQP definitions as cluster metadata (issue #17): exchanges, bindings
//! and durable queue declarations, so every node routes the same way. The
//! records ([`AmqpRecord`]) build [`MetadataImage::amqp`]; the requests
//! ([`AmqpRequest`]) are checked and turned into records by one function,
//! [`amqp_change`], which the quorum controller (`ferry-cluster`) and the
//! test controller share. docs/cluster.md, "Queues in a cluster".
//!
//! Exclusive queues and bindings to them stay node-local (one connection,
//! so one node): they are never here.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{MetadataError, MetadataImage, MetadataRecord};
use crate::messaging::{Destination, ExchangeKind, HeaderValue, Headers};

/// Prefix of the internal topics holding quorum queues.
pub const QUEUE_TOPIC_PREFIX: &str = "__amqp_queue.";

/// Longest exchange, queue or vhost name (AMQP's short string).
const MAX_NAME: usize = 255;

/// The exchanges every vhost has without a declaration.
const BUILTIN_EXCHANGES: [&str; 6] = ["", "amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match"];

/// Whether `name` is one of the exchanges every vhost has.
pub fn is_builtin_exchange(name: &str) -> bool {
    BUILTIN_EXCHANGES.contains(&name)
}

/// Declaration or binding arguments. Equality compares floats by their
/// bits, so it is an equivalence (the image is `Eq`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Arguments(pub Headers);

impl PartialEq for Arguments {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self.0.iter().zip(&other.0).all(|((ka, va), (kb, vb))| ka == kb && same_value(va, vb))
    }
}

/// Value equality with floats compared by their bits.
fn same_value(a: &HeaderValue, b: &HeaderValue) -> bool {
    match (a, b) {
        (HeaderValue::Float(x), HeaderValue::Float(y)) => x.to_bits() == y.to_bits(),
        (a, b) => a == b,
    }
}

impl Eq for Arguments {}

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

    fn has_destination(&self, d: &Destination) -> bool {
        match d {
            Destination::Queue(q) => self.queues.contains_key(q),
            Destination::Exchange(x) => !x.is_empty() && self.has_exchange(x),
            // Topics are created by the broker before it binds.
            Destination::Topic(_) => true,
        }
    }

    /// Bindings whose source or destination is the exchange `name`.
    fn touching_exchange<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a BindingDef> + 'a {
        self.bindings.iter().filter(move |b| b.source == name || b.destination == exchange_dest(name))
    }
}

fn exchange_dest(name: &str) -> Destination {
    Destination::Exchange(name.to_string())
}

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
}

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
            if name.starts_with("amq.") && !name.starts_with("amq.gen-") {
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

fn check_name(what: &str, name: &str) -> Result<(), MetadataError> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(MetadataError::InvalidRequest(format!("invalid {what} name {name:?}")));
    }
    Ok(())
}

/// Applies `record` to the vhost map (the image's `amqp`). An error leaves
/// it unchanged.
pub(super) fn apply(
    amqp: &mut Arc<BTreeMap<String, VhostDefinitions>>,
    topic_exists: impl Fn(Uuid) -> bool,
    record: &AmqpRecord,
) -> Result<(), MetadataError> {
    let vhost_of = |r: &AmqpRecord| match r {
        AmqpRecord::DeclareExchange { vhost, .. }
        | AmqpRecord::DeleteExchange { vhost, .. }
        | AmqpRecord::Bind { vhost, .. }
        | AmqpRecord::Unbind { vhost, .. }
        | AmqpRecord::DeclareQueue { vhost, .. }
        | AmqpRecord::DeleteQueue { vhost, .. } => vhost.clone(),
    };
    let vhost = vhost_of(record);
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
    }
    let map = Arc::make_mut(amqp);
    if defs == VhostDefinitions::default() {
        map.remove(&vhost);
    } else {
        map.insert(vhost, defs);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(name: &str, auto_delete: bool) -> ExchangeDef {
        ExchangeDef {
            name: name.into(),
            kind: ExchangeKind::Topic,
            durable: true,
            auto_delete,
            internal: false,
            delayed: false,
            arguments: Arguments::default(),
        }
    }

    fn binding(source: &str, queue: &str, key: &str) -> BindingDef {
        BindingDef {
            source: source.into(),
            destination: Destination::Queue(queue.into()),
            routing_key: key.into(),
            arguments: Arguments::default(),
        }
    }

    fn declare_queue(name: &str, args: Headers, queue_type: QueueType) -> AmqpRequest {
        AmqpRequest::DeclareQueue {
            vhost: "/".into(),
            name: name.into(),
            auto_delete: false,
            arguments: Arguments(args),
            queue_type,
        }
    }

    /// Carries `request` out from node 1 and applies its records as one
    /// entry, as a controller does; quorum topics get one replica on node 1.
    fn commit(image: &mut MetadataImage, request: AmqpRequest) -> Result<Vec<MetadataRecord>, MetadataError> {
        let mut n = 0u128;
        let mut make_topic = |name: &str, _: Option<usize>| {
            n += 1;
            let id = Uuid::from_u128(u128::from(image.applied_index) * 100 + n);
            let create = MetadataRecord::CreateTopic {
                name: name.to_string(),
                id,
                internal: true,
                configs: BTreeMap::new(),
                replicas: vec![vec![1]],
            };
            Ok((id, vec![create]))
        };
        let records = amqp_change(image, 1, &request, &mut make_topic)?;
        let index = image.applied_index + 1;
        image.apply_batch(index, &records)?;
        Ok(records)
    }

    #[test]
    fn exchanges_bindings_and_queues_are_metadata() {
        let mut image = MetadataImage::default();
        let declare_x = |x: ExchangeDef| AmqpRequest::DeclareExchange { vhost: "/".into(), exchange: x };
        assert_eq!(commit(&mut image, declare_x(exchange("logs", true))).unwrap().len(), 1);
        // The same declaration again changes nothing; another is refused.
        assert!(commit(&mut image, declare_x(exchange("logs", true))).unwrap().is_empty());
        let mut other = exchange("logs", true);
        other.kind = ExchangeKind::Fanout;
        assert!(matches!(commit(&mut image, declare_x(other)), Err(MetadataError::InvalidRequest(_))));
        assert!(matches!(
            commit(&mut image, declare_x(exchange("amq.mine", false))),
            Err(MetadataError::InvalidRequest(_))
        ));

        let args: Headers = [("x-message-ttl".to_string(), HeaderValue::Int(60_000))].into();
        commit(&mut image, declare_queue("q1", args.clone(), QueueType::Classic)).unwrap();
        commit(&mut image, declare_queue("q2", Headers::new(), QueueType::Classic)).unwrap();
        assert_eq!(image.amqp["/"].queues["q1"].kind, QueueKind::Classic { node: 1 });
        // Redeclared: the same x- arguments pass, others and another type are refused.
        assert!(commit(&mut image, declare_queue("q1", args, QueueType::Classic)).unwrap().is_empty());
        let ttl: Headers = [("x-message-ttl".to_string(), HeaderValue::Int(1))].into();
        assert!(commit(&mut image, declare_queue("q1", ttl, QueueType::Classic)).is_err());
        let quorum = QueueType::Quorum { group_size: None };
        assert!(commit(&mut image, declare_queue("q1", Headers::new(), quorum)).is_err());

        let bind = |b: BindingDef| AmqpRequest::Bind { vhost: "/".into(), binding: b };
        commit(&mut image, bind(binding("logs", "q1", "a.*"))).unwrap();
        commit(&mut image, bind(binding("logs", "q2", "b.#"))).unwrap();
        commit(&mut image, bind(binding("amq.topic", "q1", "x"))).unwrap();
        assert!(commit(&mut image, bind(binding("logs", "q1", "a.*"))).unwrap().is_empty(), "bound already");
        assert!(matches!(commit(&mut image, bind(binding("nope", "q1", ""))), Err(MetadataError::ResourceNotFound(_))));
        assert!(matches!(
            commit(&mut image, bind(binding("logs", "nope", ""))),
            Err(MetadataError::ResourceNotFound(_))
        ));
        assert!(matches!(commit(&mut image, bind(binding("", "q1", "q1"))), Err(MetadataError::InvalidRequest(_))));
        assert_eq!(image.amqp["/"].bindings.len(), 3);

        // The image survives a snapshot round trip; an older one reads as empty.
        let json = serde_json::to_string(&image).unwrap();
        assert_eq!(serde_json::from_str::<MetadataImage>(&json).unwrap(), image);
        let mut old: serde_json::Value = serde_json::from_str(&json).unwrap();
        old.as_object_mut().unwrap().remove("amqp");
        assert!(serde_json::from_value::<MetadataImage>(old).unwrap().amqp.is_empty());

        // Deleting q1 drops its bindings; `logs` keeps q2's, so it stays.
        commit(&mut image, AmqpRequest::DeleteQueue { vhost: "/".into(), name: "q1".into() }).unwrap();
        let defs = &image.amqp["/"];
        assert_eq!(defs.bindings, vec![binding("logs", "q2", "b.#")]);
        assert!(defs.exchanges.contains_key("logs"));
        // Its last binding gone, the auto-delete exchange goes in the same entry.
        let records =
            commit(&mut image, AmqpRequest::Unbind { vhost: "/".into(), binding: binding("logs", "q2", "b.#") })
                .unwrap();
        assert_eq!(records.len(), 2, "{records:?}");
        assert!(!image.amqp["/"].exchanges.contains_key("logs"));
        // Absent things: deleting or unbinding them changes nothing.
        assert!(
            commit(&mut image, AmqpRequest::DeleteQueue { vhost: "/".into(), name: "q1".into() }).unwrap().is_empty()
        );
        let del_x = AmqpRequest::DeleteExchange { vhost: "/".into(), name: "logs".into(), if_unused: false };
        assert!(commit(&mut image, del_x).unwrap().is_empty());
        let del_builtin = AmqpRequest::DeleteExchange { vhost: "/".into(), name: "amq.topic".into(), if_unused: false };
        assert!(commit(&mut image, del_builtin).is_err());
        commit(&mut image, AmqpRequest::DeleteQueue { vhost: "/".into(), name: "q2".into() }).unwrap();
        assert!(image.amqp.is_empty(), "an empty vhost leaves no entry: {:?}", image.amqp);
    }

    #[test]
    fn an_exchange_in_use_is_kept_with_if_unused_and_its_bindings_go_with_it() {
        let mut image = MetadataImage::default();
        let declare_x = |x: ExchangeDef| AmqpRequest::DeclareExchange { vhost: "v".into(), exchange: x };
        commit(&mut image, declare_x(exchange("a", false))).unwrap();
        commit(&mut image, declare_x(exchange("b", true))).unwrap();
        let e2e = BindingDef {
            source: "b".into(),
            destination: Destination::Exchange("a".into()),
            routing_key: "#".into(),
            arguments: Arguments::default(),
        };
        commit(&mut image, AmqpRequest::Bind { vhost: "v".into(), binding: e2e }).unwrap();
        let delete = |if_unused| AmqpRequest::DeleteExchange { vhost: "v".into(), name: "a".into(), if_unused };
        assert!(matches!(commit(&mut image, delete(true)), Err(MetadataError::InvalidRequest(_))));
        // Deleting `a` drops b -> a, b's only binding: auto-delete `b` goes too.
        let records = commit(&mut image, delete(false)).unwrap();
        assert_eq!(records.len(), 2, "{records:?}");
        assert!(image.amqp.is_empty());
    }

    #[test]
    fn a_quorum_queue_is_declared_with_its_topic_in_one_entry() {
        let mut image = MetadataImage::default();
        let records =
            commit(&mut image, declare_queue("orders", Headers::new(), QueueType::Quorum { group_size: Some(3) }))
                .unwrap();
        let QueueKind::Quorum { topic_id } = image.amqp["/"].queues["orders"].kind else { panic!("not quorum") };
        let topic = image.topic_by_id(topic_id).unwrap();
        assert!(topic.internal && topic.name.starts_with(QUEUE_TOPIC_PREFIX), "{}", topic.name);
        assert_eq!(topic.name, queue_topic_name("/", "orders", 1));
        assert!(matches!(records[0], MetadataRecord::CreateTopic { .. }));
        // Deleting the queue deletes its topic in the same entry.
        let records =
            commit(&mut image, AmqpRequest::DeleteQueue { vhost: "/".into(), name: "orders".into() }).unwrap();
        assert!(records.contains(&MetadataRecord::DeleteTopic { id: topic_id }), "{records:?}");
        assert!(image.topics.is_empty() && image.amqp.is_empty());
        // A queue record naming a topic that does not exist is refused by the apply.
        let orphan = MetadataRecord::Amqp(AmqpRecord::DeclareQueue {
            vhost: "/".into(),
            queue: QueueDef {
                name: "x".into(),
                auto_delete: false,
                arguments: Arguments::default(),
                kind: QueueKind::Quorum { topic_id: Uuid::from_u128(7) },
            },
        });
        assert_eq!(image.apply(9, &orphan), Err(MetadataError::UnknownTopicId(Uuid::from_u128(7))));
        assert!(image.amqp.is_empty());
        // Topic names are valid whatever the queue's name, and distinct per entry.
        let name = queue_topic_name("/", "a queue/with ünïcode", 5);
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)), "{name}");
        assert_ne!(name, queue_topic_name("/", "a queue/with ünïcode", 6));
    }

    #[test]
    fn the_queue_type_comes_from_the_arguments_or_the_default() {
        let quorum = QueueType::Quorum { group_size: None };
        let args = |pairs: &[(&str, HeaderValue)]| -> Headers {
            pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
        };
        assert_eq!(QueueType::from_arguments(&Headers::new(), quorum), Ok(quorum));
        assert_eq!(QueueType::from_arguments(&Headers::new(), QueueType::Classic), Ok(QueueType::Classic));
        let classic = args(&[("x-queue-type", HeaderValue::Str("classic".into()))]);
        assert_eq!(QueueType::from_arguments(&classic, quorum), Ok(QueueType::Classic));
        let sized = args(&[
            ("x-queue-type", HeaderValue::Bytes(b"quorum".to_vec())),
            ("x-quorum-initial-group-size", HeaderValue::Int(5)),
        ]);
        assert_eq!(
            QueueType::from_arguments(&sized, QueueType::Classic),
            Ok(QueueType::Quorum { group_size: Some(5) })
        );
        for bad in [
            args(&[("x-queue-type", HeaderValue::Str("stream".into()))]),
            args(&[("x-queue-type", HeaderValue::Int(1))]),
            args(&[("x-quorum-initial-group-size", HeaderValue::Int(0))]),
            args(&[("x-quorum-initial-group-size", HeaderValue::Str("3".into()))]),
        ] {
            assert!(QueueType::from_arguments(&bad, quorum).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn arguments_compare_floats_by_bits() {
        let a = Arguments([("x".to_string(), HeaderValue::Float(f64::NAN))].into());
        assert_eq!(a, a.clone());
        let b = Arguments([("x".to_string(), HeaderValue::Float(1.0))].into());
        assert_ne!(a, b);
    }
}
