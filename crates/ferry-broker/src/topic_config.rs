//! Topic configs: Kafka's names, types and defaults, and how they map onto
//! the storage engine's [`LogConfig`].
//!
//! A topic stores only the values set on it; everything else comes from the
//! broker-wide default (the `log.*` synonym, settable at run time) and then
//! from the built-in default below.

use std::collections::BTreeMap;

use ferry_log::{CleanupPolicy, FlushPolicy, LogConfig, TimestampType};
use ferry_records::compression::Compression;

use crate::error::{BrokerError, Result};

/// The type of a config value, as Kafka's DescribeConfigs reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigType {
    /// `true` or `false`.
    Boolean,
    /// Free text or one of the listed choices.
    String,
    /// A 32-bit integer.
    Int,
    /// A 64-bit integer.
    Long,
    /// A comma-separated list.
    List,
}

/// Where an effective value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    /// Set on the topic.
    Topic,
    /// The broker-wide default, set at run time (AlterConfigs on the broker).
    DynamicBroker,
    /// The broker-wide default from the config file.
    StaticBroker,
    /// The built-in default.
    Default,
}

/// One topic config: its name, the broker-wide synonym, type, default and
/// the smallest accepted value for numbers.
pub struct ConfigDef {
    /// Topic config name, e.g. `retention.ms`.
    pub name: &'static str,
    /// Name of the broker-wide default, e.g. `log.retention.ms`.
    pub broker_name: &'static str,
    /// Type reported by DescribeConfigs and used to validate values.
    pub kind: ConfigType,
    /// Built-in default, as Kafka writes it.
    pub default: &'static str,
    /// Smallest accepted value for `Int` and `Long` configs.
    pub min: i64,
    /// Accepted values for enumerations (empty: any).
    pub choices: &'static [&'static str],
    /// One-line description, answered in DescribeConfigs.
    pub doc: &'static str,
}

const MAX: &str = "9223372036854775807";

/// Every topic config Ferry understands. Defaults are Kafka's, except the
/// flush settings: Ferry fsyncs every acknowledged write by default.
pub const TOPIC_CONFIGS: &[ConfigDef] = &[
    def(
        "cleanup.policy",
        "log.cleanup.policy",
        ConfigType::List,
        "delete",
        0,
        &["delete", "compact"],
        "delete and/or compact old segments",
    ),
    def(
        "compression.type",
        "compression.type",
        ConfigType::String,
        "producer",
        0,
        &["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"],
        "codec of stored batches; producer: as the producer compressed them, others: the broker recompresses \
         batches in another codec",
    ),
    def(
        "delete.retention.ms",
        "log.cleaner.delete.retention.ms",
        ConfigType::Long,
        "86400000",
        0,
        &[],
        "how long compaction keeps tombstones",
    ),
    def(
        "flush.messages",
        "log.flush.interval.messages",
        ConfigType::Long,
        "1",
        1,
        &[],
        "fsync after this many messages (1: every write, before acknowledging acks=all)",
    ),
    def("flush.ms", "log.flush.interval.ms", ConfigType::Long, MAX, 0, &[], "fsync at most this long after a write"),
    def(
        "index.interval.bytes",
        "log.index.interval.bytes",
        ConfigType::Int,
        "4096",
        0,
        &[],
        "bytes between offset index entries",
    ),
    def("max.message.bytes", "message.max.bytes", ConfigType::Int, "1048588", 0, &[], "largest record batch accepted"),
    def(
        "message.downconversion.enable",
        "log.message.downconversion.enable",
        ConfigType::Boolean,
        "true",
        0,
        &["true", "false"],
        "accepted for old clients and ignored: Ferry serves v2 batches only and never down-converts (removed in \
         Kafka 4.0)",
    ),
    def(
        "message.format.version",
        "log.message.format.version",
        ConfigType::String,
        "3.0-IV1",
        0,
        &[],
        "accepted for old clients and ignored: Ferry stores v2 batches only (ignored since Kafka 3.0, removed in 4.0)",
    ),
    def(
        "message.timestamp.after.max.ms",
        "log.message.timestamp.after.max.ms",
        ConfigType::Long,
        "3600000",
        0,
        &[],
        "how far in the future a CreateTime timestamp may be",
    ),
    def(
        "message.timestamp.before.max.ms",
        "log.message.timestamp.before.max.ms",
        ConfigType::Long,
        MAX,
        0,
        &[],
        "how far in the past a CreateTime timestamp may be",
    ),
    def(
        "message.timestamp.difference.max.ms",
        "log.message.timestamp.difference.max.ms",
        ConfigType::Long,
        MAX,
        0,
        &[],
        "accepted for old clients and ignored: use message.timestamp.before.max.ms and \
         message.timestamp.after.max.ms (deprecated since Kafka 3.6, removed in 4.0)",
    ),
    def(
        "message.timestamp.type",
        "log.message.timestamp.type",
        ConfigType::String,
        "CreateTime",
        0,
        &["CreateTime", "LogAppendTime"],
        "whose clock timestamps records",
    ),
    def(
        "min.insync.replicas",
        "min.insync.replicas",
        ConfigType::Int,
        "1",
        1,
        &[],
        "replicas that must have an acks=all write, and the ISR size the high watermark needs to advance \
         (default: 2 on topics with 3 or more replicas, else 1)",
    ),
    def(
        "retention.bytes",
        "log.retention.bytes",
        ConfigType::Long,
        "-1",
        -1,
        &[],
        "delete old segments beyond this size (-1: no limit)",
    ),
    def(
        "retention.ms",
        "log.retention.ms",
        ConfigType::Long,
        "604800000",
        -1,
        &[],
        "delete segments older than this (-1: forever)",
    ),
    def("segment.bytes", "log.segment.bytes", ConfigType::Int, "1073741824", 14, &[], "segment file size"),
    def("segment.ms", "log.roll.ms", ConfigType::Long, "604800000", 1, &[], "roll a segment after this long"),
];

#[allow(clippy::too_many_arguments)]
const fn def(
    name: &'static str,
    broker_name: &'static str,
    kind: ConfigType,
    default: &'static str,
    min: i64,
    choices: &'static [&'static str],
    doc: &'static str,
) -> ConfigDef {
    ConfigDef { name, broker_name, kind, default, min, choices, doc }
}

/// The topic config named `name` (e.g. `retention.ms`).
pub fn find(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// The topic config whose broker-wide default is named `name` (e.g. `log.retention.ms`).
pub fn find_broker(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.broker_name == name)
}

/// Checks one value against its definition.
pub fn validate(def: &ConfigDef, value: &str) -> Result<()> {
    let bad = |why: &str| Err(BrokerError::InvalidConfig(format!("{}={value}: {why}", def.name)));
    match def.kind {
        ConfigType::Int | ConfigType::Long => match value.trim().parse::<i64>() {
            Ok(v) if v < def.min => bad(&format!("must be at least {}", def.min)),
            Ok(v) if def.kind == ConfigType::Int && v > i64::from(i32::MAX) => bad("must fit an int"),
            Ok(_) => Ok(()),
            Err(_) => bad("not a number"),
        },
        ConfigType::List => {
            let items: Vec<&str> = value.split(',').map(str::trim).collect();
            if items.is_empty() || items.iter().any(|i| !def.choices.contains(i)) {
                bad(&format!("must be a list of {:?}", def.choices))
            } else {
                Ok(())
            }
        }
        ConfigType::String | ConfigType::Boolean => {
            if def.choices.is_empty() || def.choices.contains(&value) {
                Ok(())
            } else {
                bad(&format!("must be one of {:?}", def.choices))
            }
        }
    }
}

/// Checks a set of topic overrides.
pub fn validate_all(overrides: &BTreeMap<String, String>) -> Result<()> {
    for (name, value) in overrides {
        let def = find(name).ok_or_else(|| BrokerError::InvalidConfig(format!("unknown topic config {name}")))?;
        validate(def, value)?;
    }
    Ok(())
}

/// Broker-wide defaults in two layers, keyed by topic config name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BrokerDefaults {
    /// Set at run time (AlterConfigs on the broker); wins over `fixed`.
    pub dynamic: BTreeMap<String, String>,
    /// From the config file.
    pub fixed: BTreeMap<String, String>,
}

/// The built-in default of `def` on a topic of `replication_factor`
/// replicas (`None`: no topic, e.g. the broker-level view). Only
/// `min.insync.replicas` depends on it: 2 with 3 or more replicas, else 1,
/// so that RF 3 keeps an acknowledged record on two nodes by default.
pub fn builtin_default(def: &'static ConfigDef, replication_factor: Option<usize>) -> &'static str {
    match (def.name, replication_factor) {
        ("min.insync.replicas", Some(rf)) if rf >= 3 => "2",
        _ => def.default,
    }
}

/// The effective value of `def` for a topic of `replication_factor`
/// replicas, and where it came from: the topic's override, the dynamic
/// broker default, the static one, else the built-in default.
pub fn effective<'a>(
    def: &'static ConfigDef,
    broker: &'a BrokerDefaults,
    topic: &'a BTreeMap<String, String>,
    replication_factor: Option<usize>,
) -> (&'a str, ConfigSource) {
    if let Some(v) = topic.get(def.name) {
        (v, ConfigSource::Topic)
    } else if let Some(v) = broker.dynamic.get(def.name) {
        (v, ConfigSource::DynamicBroker)
    } else if let Some(v) = broker.fixed.get(def.name) {
        (v, ConfigSource::StaticBroker)
    } else {
        (builtin_default(def, replication_factor), ConfigSource::Default)
    }
}

/// The effective `min.insync.replicas` of a topic with `replication_factor`
/// replicas (see [`builtin_default`]): the one function the leader's
/// acks=all and high-watermark rules, DescribeConfigs and the controller's
/// eligible leader replicas all use.
pub fn min_insync_replicas(
    broker: &BrokerDefaults,
    topic: &BTreeMap<String, String>,
    replication_factor: usize,
) -> usize {
    find("min.insync.replicas")
        .and_then(|def| effective(def, broker, topic, Some(replication_factor)).0.trim().parse::<usize>().ok())
        .unwrap_or(1)
        .max(1)
}

/// Everything a partition needs to know about its topic's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicSettings {
    /// Settings of the partition's log.
    pub log: LogConfig,
    /// `min.insync.replicas`: in-sync replicas an acks=all produce needs.
    pub min_insync_replicas: usize,
    /// `message.timestamp.before.max.ms`: how far in the past a CreateTime
    /// timestamp may be, in ms.
    pub timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`: how far in the future a CreateTime
    /// timestamp may be, in ms.
    pub timestamp_after_max_ms: i64,
    /// `compression.type`: the codec every stored batch has, or `None`
    /// (`producer`) to store batches as sent.
    pub compression: Option<Compression>,
}

/// Resolves topic overrides over broker defaults (both keyed by topic
/// config names) into settings, for a topic of `replication_factor`
/// replicas. Values were validated when set.
pub fn resolve(broker: &BrokerDefaults, topic: &BTreeMap<String, String>, replication_factor: usize) -> TopicSettings {
    let get = |name: &str| find(name).map_or("", |d| effective(d, broker, topic, Some(replication_factor)).0);
    let long = |name: &str| get(name).trim().parse::<i64>().unwrap_or(i64::MAX);
    let positive = |v: i64| (v >= 0).then_some(v as u64);
    let policy = get("cleanup.policy");
    let flush_messages = long("flush.messages");
    let flush_ms = long("flush.ms");
    let flush = if flush_messages <= 1 || flush_ms == 0 {
        FlushPolicy::Always
    } else if flush_messages == i64::MAX && flush_ms == i64::MAX {
        FlushPolicy::Os
    } else {
        FlushPolicy::Interval { ms: flush_ms as u64, messages: flush_messages as u64 }
    };
    TopicSettings {
        log: LogConfig {
            segment_bytes: long("segment.bytes").max(14) as u64,
            segment_ms: long("segment.ms").max(1) as u64,
            index_interval_bytes: long("index.interval.bytes").max(0) as u64,
            max_message_bytes: long("max.message.bytes").max(0) as usize,
            timestamp_type: if get("message.timestamp.type") == "LogAppendTime" {
                TimestampType::LogAppendTime
            } else {
                TimestampType::CreateTime
            },
            retention_ms: positive(long("retention.ms")),
            retention_bytes: positive(long("retention.bytes")),
            cleanup_policy: CleanupPolicy { delete: policy.contains("delete"), compact: policy.contains("compact") },
            delete_retention_ms: long("delete.retention.ms").max(0) as u64,
            flush,
        },
        min_insync_replicas: min_insync_replicas(broker, topic, replication_factor),
        timestamp_before_max_ms: long("message.timestamp.before.max.ms"),
        timestamp_after_max_ms: long("message.timestamp.after.max.ms"),
        compression: match get("compression.type") {
            "uncompressed" => Some(Compression::None),
            "gzip" => Some(Compression::Gzip),
            "snappy" => Some(Compression::Snappy),
            "lz4" => Some(Compression::Lz4),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_kafkas_except_flush() {
        let s = resolve(&BrokerDefaults::default(), &BTreeMap::new(), 1);
        assert_eq!(s.log.retention_ms, Some(604_800_000));
        assert_eq!(s.log.segment_bytes, 1 << 30);
        assert_eq!(s.log.flush, FlushPolicy::Always);
        assert_eq!(s.log.cleanup_policy, CleanupPolicy::DELETE);
        assert_eq!(s.compression, None, "producer");
    }

    #[test]
    fn compression_types_name_codecs() {
        for (name, codec) in [
            ("producer", None),
            ("uncompressed", Some(Compression::None)),
            ("gzip", Some(Compression::Gzip)),
            ("snappy", Some(Compression::Snappy)),
            ("lz4", Some(Compression::Lz4)),
            ("zstd", Some(Compression::Zstd)),
        ] {
            let topic = map(&[("compression.type", name)]);
            assert!(validate_all(&topic).is_ok(), "{name}");
            assert_eq!(resolve(&BrokerDefaults::default(), &topic, 1).compression, codec, "{name}");
        }
        // The broker-wide default applies to topics without their own.
        let broker = BrokerDefaults { dynamic: map(&[("compression.type", "zstd")]), fixed: BTreeMap::new() };
        assert_eq!(resolve(&broker, &BTreeMap::new(), 1).compression, Some(Compression::Zstd));
    }

    #[test]
    fn legacy_configs_are_accepted_and_change_nothing() {
        let legacy = map(&[
            ("message.format.version", "2.8-IV1"),
            ("message.downconversion.enable", "false"),
            ("message.timestamp.difference.max.ms", "1000"),
        ]);
        assert!(validate_all(&legacy).is_ok());
        assert_eq!(
            resolve(&BrokerDefaults::default(), &legacy, 1),
            resolve(&BrokerDefaults::default(), &BTreeMap::new(), 1)
        );
    }

    #[test]
    fn topic_overrides_beat_broker_defaults() {
        let broker = BrokerDefaults {
            dynamic: map(&[("retention.ms", "1000")]),
            fixed: map(&[("flush.messages", MAX), ("retention.ms", "5")]),
        };
        let topic = map(&[("retention.ms", "-1"), ("cleanup.policy", "compact,delete")]);
        let s = resolve(&broker, &topic, 1);
        assert_eq!(s.log.retention_ms, None);
        assert_eq!(s.log.flush, FlushPolicy::Os);
        assert_eq!(s.log.cleanup_policy, CleanupPolicy::COMPACT_DELETE);
        let s = resolve(&broker, &map(&[("flush.ms", "50")]), 1);
        assert_eq!(s.log.flush, FlushPolicy::Interval { ms: 50, messages: i64::MAX as u64 });
    }

    #[test]
    fn min_insync_replicas_defaults_to_two_on_three_replicas() {
        let none = BTreeMap::new();
        let def = find("min.insync.replicas").unwrap();
        for (rf, expected) in [(1, 1), (2, 1), (3, 2), (5, 2)] {
            let broker = BrokerDefaults::default();
            assert_eq!(min_insync_replicas(&broker, &none, rf), expected, "rf {rf}");
            assert_eq!(resolve(&broker, &none, rf).min_insync_replicas, expected);
            let shown = expected.to_string();
            assert_eq!(effective(def, &broker, &none, Some(rf)), (shown.as_str(), ConfigSource::Default));
        }
        assert_eq!(effective(def, &BrokerDefaults::default(), &none, None), ("1", ConfigSource::Default));
        // Any configured value wins, whatever the replication factor.
        let fixed = BrokerDefaults { dynamic: BTreeMap::new(), fixed: map(&[("min.insync.replicas", "1")]) };
        assert_eq!(min_insync_replicas(&fixed, &none, 3), 1);
        assert_eq!(effective(def, &fixed, &none, Some(3)), ("1", ConfigSource::StaticBroker));
        let dynamic = BrokerDefaults { dynamic: map(&[("min.insync.replicas", "3")]), fixed: fixed.fixed.clone() };
        assert_eq!((min_insync_replicas(&dynamic, &none, 1), min_insync_replicas(&dynamic, &none, 3)), (3, 3));
        let topic = map(&[("min.insync.replicas", "1")]);
        assert_eq!(min_insync_replicas(&dynamic, &topic, 3), 1);
        assert_eq!(effective(def, &dynamic, &topic, Some(3)), ("1", ConfigSource::Topic));
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(validate_all(&map(&[("retention.ms", "soon")])).is_err());
        assert!(validate_all(&map(&[("segment.bytes", "3")])).is_err());
        assert!(validate_all(&map(&[("segment.bytes", "99999999999")])).is_err());
        assert!(validate_all(&map(&[("cleanup.policy", "delete,shred")])).is_err());
        assert!(validate_all(&map(&[("message.timestamp.type", "Whenever")])).is_err());
        assert!(validate_all(&map(&[("no.such.config", "1")])).is_err());
        assert!(validate_all(&map(&[("compression.type", "brotli")])).is_err());
        assert!(validate_all(&map(&[("message.downconversion.enable", "maybe")])).is_err());
        assert!(validate_all(&map(&[("cleanup.policy", "compact, delete"), ("retention.ms", "-1")])).is_ok());
    }
}
