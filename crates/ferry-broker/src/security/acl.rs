//! Kafka's ACL model: a binding grants or denies one principal, from one
//! host, one operation on the resources a pattern names. Kafka's numeric
//! codes are kept so the wire APIs (CreateAcls, DescribeAcls, DeleteAcls)
//! convert one to one. The resource types past Kafka's (vhost, queue,
//! exchange, MQTT topic) are how the AMQP and MQTT permissions fit the
//! same model (docs/security.md); they have no Kafka code.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::mqtt_filter::{self, MqttIdentity};
use super::principal::Principal;
use super::regex;

/// The literal name of the one cluster resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// A literal pattern with this name matches every resource of its type.
pub const WILDCARD: &str = "*";

/// What kind of thing a resource is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResourceType {
    /// A Kafka topic (and the same log seen by the other protocols).
    Topic,
    /// A consumer group.
    Group,
    /// The cluster (`kafka-cluster`).
    Cluster,
    /// A transactional id.
    TransactionalId,
    /// An AMQP virtual host (name: the vhost).
    Vhost,
    /// An AMQP queue (name: `vhost/queue`).
    Queue,
    /// An AMQP exchange (name: `vhost/exchange`).
    Exchange,
    /// An MQTT topic name or filter.
    MqttTopic,
}

impl ResourceType {
    /// Kafka's code, for the types Kafka has.
    pub fn kafka_code(self) -> Option<i8> {
        match self {
            ResourceType::Topic => Some(2),
            ResourceType::Group => Some(3),
            ResourceType::Cluster => Some(4),
            ResourceType::TransactionalId => Some(5),
            _ => None,
        }
    }

    /// The type of a Kafka code (not ANY).
    pub fn from_kafka_code(code: i8) -> Option<ResourceType> {
        match code {
            2 => Some(ResourceType::Topic),
            3 => Some(ResourceType::Group),
            4 => Some(ResourceType::Cluster),
            5 => Some(ResourceType::TransactionalId),
            _ => None,
        }
    }

    /// The code in CreateAcls / DescribeAcls / DeleteAcls: Kafka's, or
    /// for the types Kafka has not Ferry's own (64 vhost, 65 queue, 66
    /// exchange, 67 MQTT topic), which only Ferry's CLI sends.
    pub fn wire_code(self) -> i8 {
        match self {
            ResourceType::Vhost => 64,
            ResourceType::Queue => 65,
            ResourceType::Exchange => 66,
            ResourceType::MqttTopic => 67,
            t => t.kafka_code().unwrap_or(0),
        }
    }

    /// The type of a [`ResourceType::wire_code`].
    pub fn from_wire_code(code: i8) -> Option<ResourceType> {
        match code {
            64 => Some(ResourceType::Vhost),
            65 => Some(ResourceType::Queue),
            66 => Some(ResourceType::Exchange),
            67 => Some(ResourceType::MqttTopic),
            c => ResourceType::from_kafka_code(c),
        }
    }

    /// Every type with its own wire code past Kafka's.
    pub const FERRY_TYPES: [ResourceType; 4] =
        [ResourceType::Vhost, ResourceType::Queue, ResourceType::Exchange, ResourceType::MqttTopic];

    /// The type of a [`ResourceType::name`].
    pub fn from_name(name: &str) -> Option<ResourceType> {
        [
            ResourceType::Topic,
            ResourceType::Group,
            ResourceType::Cluster,
            ResourceType::TransactionalId,
            ResourceType::Vhost,
            ResourceType::Queue,
            ResourceType::Exchange,
            ResourceType::MqttTopic,
        ]
        .into_iter()
        .find(|t| t.name() == name)
    }

    /// Lower-case name, as the CLI and HTTP API spell it.
    pub fn name(self) -> &'static str {
        match self {
            ResourceType::Topic => "topic",
            ResourceType::Group => "group",
            ResourceType::Cluster => "cluster",
            ResourceType::TransactionalId => "transactional-id",
            ResourceType::Vhost => "vhost",
            ResourceType::Queue => "queue",
            ResourceType::Exchange => "exchange",
            ResourceType::MqttTopic => "mqtt-topic",
        }
    }
}

/// How a binding's name matches resource names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PatternType {
    /// The exact name; `*` matches every name.
    Literal,
    /// Every name starting with it.
    Prefixed,
    /// RabbitMQ's permission regex subset ([`regex::pattern_matches`]) over
    /// the whole name (`vhost/queue`): the imported RabbitMQ permissions
    /// that are neither a name nor a prefix. No Kafka code.
    Regex,
    /// An MQTT topic filter (`+`, `#`) with `%u` / `%c` substituted at the
    /// check ([`mqtt_filter`]); for `MqttTopic` resources. No Kafka code.
    MqttFilter,
}

impl PatternType {
    /// Kafka's code: 3 literal, 4 prefixed; 0 (UNKNOWN) for the types
    /// Kafka has not.
    pub fn kafka_code(self) -> i8 {
        match self {
            PatternType::Literal => 3,
            PatternType::Prefixed => 4,
            PatternType::Regex | PatternType::MqttFilter => 0,
        }
    }

    /// The code in the ACL APIs: Kafka's, or Ferry's own (64 regex, 65
    /// MQTT filter), which only Ferry's CLI sends.
    pub fn wire_code(self) -> i8 {
        match self {
            PatternType::Regex => 64,
            PatternType::MqttFilter => 65,
            t => t.kafka_code(),
        }
    }

    /// The pattern type of a [`PatternType::wire_code`].
    pub fn from_wire_code(code: i8) -> Option<PatternType> {
        match code {
            64 => Some(PatternType::Regex),
            65 => Some(PatternType::MqttFilter),
            c => PatternType::from_kafka_code(c),
        }
    }

    /// The CLI's and HTTP API's spelling.
    pub fn name(self) -> &'static str {
        match self {
            PatternType::Literal => "literal",
            PatternType::Prefixed => "prefixed",
            PatternType::Regex => "regex",
            PatternType::MqttFilter => "mqtt-filter",
        }
    }

    /// The pattern type of a name ([`PatternType::name`], case ignored).
    pub fn from_name(name: &str) -> Option<PatternType> {
        [PatternType::Literal, PatternType::Prefixed, PatternType::Regex, PatternType::MqttFilter].into_iter().find(
            |t| {
                t.name().eq_ignore_ascii_case(name)
                    || (name.eq_ignore_ascii_case("mqtt_filter") && *t == PatternType::MqttFilter)
            },
        )
    }

    /// The pattern type of a Kafka code (not ANY or MATCH).
    pub fn from_kafka_code(code: i8) -> Option<PatternType> {
        match code {
            3 => Some(PatternType::Literal),
            4 => Some(PatternType::Prefixed),
            _ => None,
        }
    }
}

/// An operation on a resource.
#[allow(missing_docs)] // Kafka's operation names say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Operation {
    /// Every operation (in a binding only).
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
    CreateTokens,
    DescribeTokens,
}

impl Operation {
    const CODES: [(Operation, i8, &'static str); 13] = [
        (Operation::All, 2, "all"),
        (Operation::Read, 3, "read"),
        (Operation::Write, 4, "write"),
        (Operation::Create, 5, "create"),
        (Operation::Delete, 6, "delete"),
        (Operation::Alter, 7, "alter"),
        (Operation::Describe, 8, "describe"),
        (Operation::ClusterAction, 9, "cluster_action"),
        (Operation::DescribeConfigs, 10, "describe_configs"),
        (Operation::AlterConfigs, 11, "alter_configs"),
        (Operation::IdempotentWrite, 12, "idempotent_write"),
        (Operation::CreateTokens, 13, "create_tokens"),
        (Operation::DescribeTokens, 14, "describe_tokens"),
    ];

    /// Kafka's code.
    pub fn kafka_code(self) -> i8 {
        Self::CODES.iter().find(|(o, ..)| *o == self).map_or(0, |(_, c, _)| *c)
    }

    /// The operation of a Kafka code (not ANY).
    pub fn from_kafka_code(code: i8) -> Option<Operation> {
        Self::CODES.iter().find(|(_, c, _)| *c == code).map(|(o, ..)| *o)
    }

    /// rpk's spelling (`describe_configs`); `-` and case are ignored.
    pub fn from_name(name: &str) -> Option<Operation> {
        let name = name.to_ascii_lowercase().replace('-', "_");
        let name = match name.as_str() {
            "describeconfigs" => "describe_configs",
            "alterconfigs" => "alter_configs",
            "idempotentwrite" => "idempotent_write",
            "clusteraction" => "cluster_action",
            n => n,
        };
        Self::CODES.iter().find(|(.., n)| *n == name).map(|(o, ..)| *o)
    }

    /// rpk's spelling.
    pub fn name(self) -> &'static str {
        Self::CODES.iter().find(|(o, ..)| *o == self).map_or("unknown", |(.., n)| *n)
    }

    /// Whether an ALLOW binding for `self` grants `wanted`: itself, `All`,
    /// and Kafka's implied operations (Describe by Read, Write, Delete and
    /// Alter; DescribeConfigs by AlterConfigs).
    pub fn allow_implies(self, wanted: Operation) -> bool {
        self == wanted
            || self == Operation::All
            || (wanted == Operation::Describe
                && matches!(self, Operation::Read | Operation::Write | Operation::Delete | Operation::Alter))
            || (wanted == Operation::DescribeConfigs && self == Operation::AlterConfigs)
    }

    /// Whether a DENY binding for `self` refuses `wanted`: itself and
    /// `All` only (a denied Read does not deny Describe, as in Kafka).
    pub fn deny_implies(self, wanted: Operation) -> bool {
        self == wanted || self == Operation::All
    }
}

/// Allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// Refuses; wins over any allow.
    Deny,
    /// Grants.
    Allow,
}

impl Permission {
    /// Kafka's code: 2 deny, 3 allow.
    pub fn kafka_code(self) -> i8 {
        match self {
            Permission::Deny => 2,
            Permission::Allow => 3,
        }
    }

    /// The permission of a Kafka code (not ANY).
    pub fn from_kafka_code(code: i8) -> Option<Permission> {
        match code {
            2 => Some(Permission::Deny),
            3 => Some(Permission::Allow),
            _ => None,
        }
    }
}

/// The resources a binding applies to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ResourcePattern {
    /// Resource type.
    pub resource_type: ResourceType,
    /// The name, prefix, or `*`.
    pub name: String,
    /// Literal or prefixed.
    pub pattern_type: PatternType,
}

impl ResourcePattern {
    /// Whether the pattern covers the resource `name` of `resource_type`
    /// (an MQTT filter with `%u` / `%c` covers nothing here: see
    /// [`ResourcePattern::matches_for`]).
    pub fn matches(&self, resource_type: ResourceType, name: &str) -> bool {
        self.matches_for(resource_type, name, None)
    }

    /// [`ResourcePattern::matches`], with `%u` / `%c` of an MQTT filter
    /// taken from `who`. For an MQTT filter, `name` is a topic name or a
    /// subscription filter, covered when every topic it matches is.
    pub fn matches_for(&self, resource_type: ResourceType, name: &str, who: Option<&MqttIdentity<'_>>) -> bool {
        self.resource_type == resource_type
            && match self.pattern_type {
                PatternType::Literal => self.name == name || self.name == WILDCARD,
                PatternType::Prefixed => name.starts_with(&self.name),
                PatternType::Regex => regex::pattern_matches(&self.name, name),
                PatternType::MqttFilter => {
                    mqtt_filter::substitute(&self.name, who).is_some_and(|p| mqtt_filter::covers(&p, name))
                }
            }
    }
}

/// Who may (not) do what from where.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclEntry {
    /// `User:alice`, or `User:*` for every user.
    pub principal: Principal,
    /// A client IP address, or `*` for any.
    pub host: String,
    /// The operation (`All` for every one).
    pub operation: Operation,
    /// Allow or deny.
    pub permission: Permission,
}

impl AclEntry {
    /// Whether the entry is about `principal` connecting from `host`.
    pub fn applies_to(&self, principal: &Principal, host: &str) -> bool {
        (self.principal == *principal || self.principal.is_wildcard()) && (self.host == WILDCARD || self.host == host)
    }
}

/// One ACL: an entry on a pattern.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    /// The resources.
    pub pattern: ResourcePattern,
    /// Who, where, what, allow or deny.
    pub entry: AclEntry,
}

/// How a filter matches the pattern of a binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatternFilter {
    /// Any pattern type (with the filter's name, if one, exactly).
    Any,
    /// The bindings that apply to the named resource: literal equal,
    /// literal `*`, prefixes of it (Kafka's MATCH).
    Match,
    /// Exactly this pattern type.
    Exact(PatternType),
}

/// DescribeAcls' and DeleteAcls' filter; `None` matches anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclFilter {
    /// Resource type.
    pub resource_type: Option<ResourceType>,
    /// Resource name.
    pub name: Option<String>,
    /// Pattern type.
    pub pattern: PatternFilter,
    /// Principal.
    pub principal: Option<Principal>,
    /// Host.
    pub host: Option<String>,
    /// Operation (`Some(All)` matches only bindings for `All`).
    pub operation: Option<Operation>,
    /// Permission.
    pub permission: Option<Permission>,
}

impl AclFilter {
    /// A filter matching every binding.
    pub fn any() -> AclFilter {
        AclFilter {
            resource_type: None,
            name: None,
            pattern: PatternFilter::Any,
            principal: None,
            host: None,
            operation: None,
            permission: None,
        }
    }

    /// Whether `b` passes the filter.
    pub fn matches(&self, b: &AclBinding) -> bool {
        let p = &b.pattern;
        let name_ok = match (&self.pattern, &self.name) {
            // The type is checked below; here only whether the pattern covers the name.
            (PatternFilter::Match, Some(name)) => p.matches(p.resource_type, name),
            (PatternFilter::Exact(t), name) => p.pattern_type == *t && name.as_ref().is_none_or(|n| *n == p.name),
            (_, name) => name.as_ref().is_none_or(|n| *n == p.name),
        };
        name_ok
            && self.resource_type.is_none_or(|t| t == p.resource_type)
            && self.principal.as_ref().is_none_or(|x| *x == b.entry.principal)
            && self.host.as_ref().is_none_or(|h| *h == b.entry.host)
            && self.operation.is_none_or(|o| o == b.entry.operation)
            && self.permission.is_none_or(|x| x == b.entry.permission)
    }
}

/// Every ACL of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclSet {
    bindings: BTreeSet<AclBinding>,
}

impl AclSet {
    /// Adds a binding (`false`: it was there).
    pub fn insert(&mut self, b: AclBinding) -> bool {
        self.bindings.insert(b)
    }

    /// Whether the binding is there.
    pub fn contains(&self, b: &AclBinding) -> bool {
        self.bindings.contains(b)
    }

    /// Removes a binding (`false`: it was not there).
    pub fn remove(&mut self, b: &AclBinding) -> bool {
        self.bindings.remove(b)
    }

    /// Every binding, in a stable order.
    pub fn iter(&self) -> impl Iterator<Item = &AclBinding> {
        self.bindings.iter()
    }

    /// The bindings passing `filter`.
    pub fn matching<'a>(&'a self, filter: &'a AclFilter) -> impl Iterator<Item = &'a AclBinding> {
        self.bindings.iter().filter(move |b| filter.matches(b))
    }

    /// How many bindings there are.
    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    /// The bindings whose pattern covers the resource.
    pub fn on_resource<'a>(
        &'a self,
        resource_type: ResourceType,
        name: &'a str,
    ) -> impl Iterator<Item = &'a AclBinding> {
        self.on_resource_for(resource_type, name, None)
    }

    /// [`AclSet::on_resource`] for an MQTT client (`%u` / `%c`).
    pub fn on_resource_for<'a>(
        &'a self,
        resource_type: ResourceType,
        name: &'a str,
        who: Option<&'a MqttIdentity<'a>>,
    ) -> impl Iterator<Item = &'a AclBinding> {
        self.bindings.iter().filter(move |b| b.pattern.matches_for(resource_type, name, who))
    }

    /// Whether some binding is about resources of `resource_type`.
    pub fn has_type(&self, resource_type: ResourceType) -> bool {
        self.bindings.iter().any(|b| b.pattern.resource_type == resource_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(t: ResourceType, name: &str, pt: PatternType, who: &str, op: Operation, perm: Permission) -> AclBinding {
        AclBinding {
            pattern: ResourcePattern { resource_type: t, name: name.into(), pattern_type: pt },
            entry: AclEntry {
                principal: Principal::parse(who).unwrap(),
                host: "*".into(),
                operation: op,
                permission: perm,
            },
        }
    }

    #[test]
    fn patterns_literal_prefixed_wildcard() {
        let lit = ResourcePattern {
            resource_type: ResourceType::Topic,
            name: "orders".into(),
            pattern_type: PatternType::Literal,
        };
        assert!(lit.matches(ResourceType::Topic, "orders"));
        assert!(!lit.matches(ResourceType::Topic, "orders-eu"));
        assert!(!lit.matches(ResourceType::Group, "orders"));
        let pre = ResourcePattern { pattern_type: PatternType::Prefixed, ..lit.clone() };
        assert!(pre.matches(ResourceType::Topic, "orders") && pre.matches(ResourceType::Topic, "orders-eu"));
        assert!(!pre.matches(ResourceType::Topic, "order"));
        let star = ResourcePattern { name: "*".into(), ..lit.clone() };
        assert!(star.matches(ResourceType::Topic, "anything"));
        // A prefixed "*" is the prefix "*", not a wildcard.
        let pre_star = ResourcePattern { name: "*".into(), ..pre };
        assert!(!pre_star.matches(ResourceType::Topic, "anything") && pre_star.matches(ResourceType::Topic, "*x"));
        let re = ResourcePattern {
            resource_type: ResourceType::Queue,
            name: "^v/app-|^v/.*-tmp$".into(),
            pattern_type: PatternType::Regex,
        };
        assert!(re.matches(ResourceType::Queue, "v/app-1") && re.matches(ResourceType::Queue, "v/x-tmp"));
        assert!(!re.matches(ResourceType::Queue, "w/app-1") && !re.matches(ResourceType::Queue, "v/x-tmp2"));
        let mq = ResourcePattern {
            resource_type: ResourceType::MqttTopic,
            name: "users/%u/#".into(),
            pattern_type: PatternType::MqttFilter,
        };
        let who = MqttIdentity { user: Some("ann"), client_id: "c1" };
        assert!(mq.matches_for(ResourceType::MqttTopic, "users/ann/x", Some(&who)));
        assert!(!mq.matches_for(ResourceType::MqttTopic, "users/bob/x", Some(&who)));
        assert!(!mq.matches(ResourceType::MqttTopic, "users/%u/x"), "no identity: a %u pattern matches nothing");
        for t in [PatternType::Literal, PatternType::Prefixed, PatternType::Regex, PatternType::MqttFilter] {
            assert_eq!(PatternType::from_name(t.name()), Some(t));
        }
    }

    #[test]
    fn implied_operations() {
        use Operation::*;
        for op in [Read, Write, Delete, Alter, All, Describe] {
            assert!(op.allow_implies(Describe), "{op:?}");
        }
        assert!(!Create.allow_implies(Describe));
        assert!(AlterConfigs.allow_implies(DescribeConfigs) && !DescribeConfigs.allow_implies(AlterConfigs));
        assert!(!Read.allow_implies(Write));
        assert!(!Read.deny_implies(Describe) && All.deny_implies(Describe) && Write.deny_implies(Write));
    }

    #[test]
    fn codes_and_names_round_trip() {
        for (op, code, name) in Operation::CODES {
            assert_eq!(Operation::from_kafka_code(code), Some(op));
            assert_eq!(Operation::from_name(name), Some(op));
            assert_eq!(op.name(), name);
        }
        assert_eq!(Operation::from_name("DescribeConfigs"), Some(Operation::DescribeConfigs));
        assert_eq!(Operation::from_kafka_code(1), None, "ANY is a filter, not an operation");
        for t in [ResourceType::Topic, ResourceType::Group, ResourceType::Cluster, ResourceType::TransactionalId] {
            assert_eq!(ResourceType::from_kafka_code(t.kafka_code().unwrap()), Some(t));
        }
        assert_eq!(ResourceType::Queue.kafka_code(), None);
    }

    #[test]
    fn filters_any_match_exact() {
        use Operation::*;
        let mut set = AclSet::default();
        let a = binding(ResourceType::Topic, "orders", PatternType::Literal, "User:a", Read, Permission::Allow);
        let b = binding(ResourceType::Topic, "ord", PatternType::Prefixed, "User:b", Write, Permission::Allow);
        let c = binding(ResourceType::Topic, "*", PatternType::Literal, "User:c", Read, Permission::Deny);
        let d = binding(ResourceType::Group, "orders", PatternType::Literal, "User:a", Read, Permission::Allow);
        for x in [&a, &b, &c, &d] {
            assert!(set.insert(x.clone()));
        }
        assert!(!set.insert(a.clone()));
        let count = |f: &AclFilter| set.matching(f).count();
        assert_eq!(count(&AclFilter::any()), 4);
        let topic = AclFilter { resource_type: Some(ResourceType::Topic), ..AclFilter::any() };
        assert_eq!(count(&topic), 3);
        let named = AclFilter { name: Some("orders".into()), ..topic.clone() };
        assert_eq!(count(&named), 1, "ANY pattern type: the exact name only");
        let matching = AclFilter { pattern: PatternFilter::Match, ..named.clone() };
        assert_eq!(count(&matching), 3, "MATCH: literal, prefix and wildcard");
        let prefixed = AclFilter { pattern: PatternFilter::Exact(PatternType::Prefixed), ..topic.clone() };
        assert_eq!(set.matching(&prefixed).next(), Some(&b));
        let denies = AclFilter { permission: Some(Permission::Deny), ..AclFilter::any() };
        assert_eq!(set.matching(&denies).next(), Some(&c));
        let who = AclFilter { principal: Some(Principal::user("a")), operation: Some(Read), ..AclFilter::any() };
        assert_eq!(count(&who), 2);
        assert!(set.remove(&a) && !set.remove(&a));
        assert_eq!(set.len(), 3);
    }
}
