//! `ferry serve` settings: built-in defaults, then the TOML file
//! (`--config`), then `FERRY_*` environment variables, then flags.

pub mod access;
mod cluster;
mod tls;

pub use tls::TlsSettings;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use ferry_broker::metadata::listener;

/// The TOML file. Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub node_id: Option<i32>,
    #[serde(default)]
    pub kafka: KafkaSection,
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub http: HttpSection,
    #[serde(default)]
    pub mqtt: MqttSection,
    #[serde(default)]
    pub amqp: AmqpSection,
    #[serde(default)]
    pub cluster: cluster::ClusterSection,
    #[serde(default)]
    pub stomp: StompSection,
    #[serde(default)]
    pub redis: RedisSection,
    #[serde(default)]
    pub security: SecuritySection,
    #[serde(default)]
    pub tls: tls::TlsSection,
    /// Broker-wide topic config defaults, with Kafka's topic config names
    /// (`"flush.messages" = "9223372036854775807"`).
    #[serde(default)]
    pub topic_defaults: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    /// `NAME://HOST:PORT,...` or `HOST:PORT` (see docs/security.md).
    pub listen: Option<String>,
    pub advertised: Option<String>,
    pub auto_create_topics: Option<bool>,
    pub num_partitions: Option<i32>,
    pub max_request_bytes: Option<usize>,
    /// `producer.id.expiration.ms`.
    pub producer_id_expiration_ms: Option<u64>,
    pub max_partitions_per_topic: Option<i32>,
    /// `group.initial.rebalance.delay.ms`.
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// `offsets.retention.minutes`.
    pub offsets_retention_minutes: Option<u64>,
    /// `group.consumer.heartbeat.interval.ms` (KIP-848 groups).
    pub group_consumer_heartbeat_interval_ms: Option<u64>,
    /// `group.consumer.session.timeout.ms` (KIP-848 groups).
    pub group_consumer_session_timeout_ms: Option<u64>,
    /// `transaction.max.timeout.ms`.
    pub transaction_max_timeout_ms: Option<i32>,
    /// `transactional.id.expiration.ms`.
    pub transactional_id_expiration_ms: Option<u64>,
}

/// `[mqtt]`; see docs/configuration.md.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    /// `"off"` disables the listener.
    pub listen: Option<String>,
    pub ws_listen: Option<String>,
    pub max_packet_size: Option<usize>,
    pub receive_maximum: Option<u16>,
    pub max_inflight_messages: Option<u16>,
    pub max_queued_messages: Option<u64>,
    pub topic_alias_maximum: Option<u16>,
    pub outbound_topic_aliases: Option<bool>,
    pub max_session_expiry_secs: Option<u32>,
    /// mosquitto's name; `max_keepalive_secs` is the name Ferry used first.
    #[serde(alias = "max_keepalive_secs")]
    pub max_keepalive: Option<u16>,
    #[serde(default)]
    pub users: Vec<ferry_mqtt::config::User>,
    #[serde(default)]
    pub acl: Vec<ferry_mqtt::config::AclEntry>,
    #[serde(default)]
    pub kafka_bridge: Vec<ferry_mqtt::config::ToKafka>,
    #[serde(default)]
    pub from_kafka: Vec<ferry_mqtt::config::FromKafka>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Address of the HTTP admin API and /metrics (`tls://` for HTTPS).
    pub listen: Option<String>,
}

/// `[amqp]`: the AMQP 0-9-1 listener, users and virtual hosts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSection {
    /// `HOST:PORT`, `tls://HOST:PORT`, comma-separated; `"off"`: none.
    pub listen: Option<String>,
    pub frame_max: Option<u32>,
    pub channel_max: Option<u16>,
    /// Heartbeat interval offered to clients, seconds.
    pub heartbeat: Option<u16>,
    pub max_message_bytes: Option<usize>,
    /// Publishers are blocked below this much free disk space (bytes).
    pub disk_free_limit_bytes: Option<u64>,
    /// Publishers are blocked above this resident memory (bytes; default
    /// 40 % of the machine's memory).
    pub memory_limit_bytes: Option<u64>,
    /// Virtual hosts besides "/".
    #[serde(default)]
    pub vhosts: Vec<String>,
    /// Users; when none are given, `guest`/`guest` (loopback only) on "/".
    #[serde(default)]
    pub users: Vec<AmqpUser>,
    /// Type of queues declared without `x-queue-type`: "quorum" or
    /// "classic" (default: quorum in a cluster of more than one node).
    pub default_queue_type: Option<String>,
}

/// `[stomp]`: the STOMP listener (users are the `[amqp]` ones); see
/// docs/configuration.md.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StompSection {
    /// `"off"` disables the listener.
    pub listen: Option<String>,
    /// STOMP over WebSocket (path `/stomp`); off unless given.
    pub ws_listen: Option<String>,
    /// Heart-beats offered, ms: [server sends every, client must send every].
    pub heartbeat_ms: Option<[u32; 2]>,
    /// Vhost for a CONNECT whose `host` names none.
    pub default_vhost: Option<String>,
    /// Login used when CONNECT has none (default guest/guest); `""` refuses such a CONNECT.
    pub default_login: Option<String>,
    pub default_passcode: Option<String>,
    pub max_body_bytes: Option<usize>,
    pub max_headers: Option<usize>,
    pub max_header_line_bytes: Option<usize>,
}

/// `[redis]`: the Redis listener (users are the `[amqp]` ones); see
/// docs/configuration.md.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSection {
    /// `"off"` disables the listener.
    pub listen: Option<String>,
    /// The vhost whose queues lists are (default "/").
    pub vhost: Option<String>,
    /// User a connection acts as before AUTH (default guest/guest); `""`
    /// makes every command but AUTH/HELLO answer -NOAUTH.
    pub default_user: Option<String>,
    pub default_password: Option<String>,
    pub max_bulk_bytes: Option<usize>,
    pub max_array_len: Option<usize>,
    pub max_inline_bytes: Option<usize>,
    /// Pub/sub messages queued for a subscriber before it is disconnected.
    pub pubsub_buffer: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpUser {
    pub name: String,
    pub password: String,
    /// Only from loopback addresses (default: true for `guest`, else false).
    pub loopback_only: Option<bool>,
    /// vhost -> permissions (RabbitMQ regular-expression subset).
    #[serde(default)]
    pub permissions: BTreeMap<String, AmqpPermissions>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpPermissions {
    #[serde(default = "match_all")]
    pub configure: String,
    #[serde(default = "match_all")]
    pub write: String,
    #[serde(default = "match_all")]
    pub read: String,
}

fn match_all() -> String {
    ".*".to_string()
}

/// `[security]`: SASL mechanisms, super users, anonymous access; see
/// docs/security.md.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySection {
    /// e.g. `"SCRAM-SHA-512,SCRAM-SHA-256,PLAIN"`.
    pub sasl_mechanisms: Option<String>,
    /// e.g. `["User:admin"]`.
    pub super_users: Option<Vec<String>>,
    pub allow_anonymous: Option<bool>,
    /// Kafka's `allow.everyone.if.no.acl.found` (default false).
    pub allow_everyone_if_no_acl_found: Option<bool>,
    /// The JWKS file OAUTHBEARER tokens are checked against.
    pub sasl_oauthbearer_jwks: Option<PathBuf>,
    /// The `iss` every OAUTHBEARER token must carry (unchecked when unset).
    pub sasl_oauthbearer_issuer: Option<String>,
    /// The `aud` every OAUTHBEARER token must name (unchecked when unset).
    pub sasl_oauthbearer_audience: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    pub max_open_segments: Option<usize>,
    pub checkpoint_interval_ms: Option<u64>,
    pub checkpoint_bytes: Option<u64>,
    pub checkpoint_max_age_ms: Option<u64>,
    pub cleaner_interval_ms: Option<u64>,
}

/// Flags, each also settable as an environment variable.
#[derive(Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML config file.
    #[arg(long, env = "FERRY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where all data lives.
    #[arg(long, env = "FERRY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Kafka listeners: a comma-separated list of NAME://HOST:PORT, NAME one
    /// of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL (SSL and SASL_SSL use
    /// --tls-cert); a bare HOST:PORT is PLAINTEXT.
    #[arg(long, env = "FERRY_KAFKA_LISTEN")]
    pub kafka_listen: Option<String>,
    /// HOST:PORT Kafka clients are told to connect to (default: the listener).
    #[arg(long, env = "FERRY_ADVERTISED_KAFKA")]
    pub advertised_kafka: Option<String>,
    /// HTTP listener: REST admin API, /v1/health and Prometheus /metrics
    /// (`tls://HOST:PORT` for HTTPS).
    #[arg(long, env = "FERRY_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// This broker's node id.
    #[arg(long, env = "FERRY_NODE_ID")]
    pub node_id: Option<i32>,
    /// MQTT listeners: HOST:PORT or tls://HOST:PORT (MQTTS), comma-separated
    /// (default 127.0.0.1:1883; "off" disables them).
    #[arg(long, env = "FERRY_MQTT_LISTEN")]
    pub mqtt_listen: Option<String>,
    /// MQTT over WebSocket listeners (path /mqtt): HOST:PORT or wss://HOST:PORT,
    /// comma-separated (off by default).
    #[arg(long, env = "FERRY_MQTT_WS_LISTEN")]
    pub mqtt_ws_listen: Option<String>,
    /// AMQP 0-9-1 listeners: HOST:PORT or tls://HOST:PORT (AMQPS), comma-separated.
    #[arg(long, env = "FERRY_AMQP_LISTEN")]
    pub amqp_listen: Option<String>,
    /// Type of AMQP queues declared without x-queue-type: quorum or classic
    /// (default: quorum when the cluster has more than one node, else classic).
    #[arg(long, env = "FERRY_AMQP_DEFAULT_QUEUE_TYPE")]
    pub amqp_default_queue_type: Option<String>,
    #[command(flatten)]
    pub cluster: cluster::ClusterArgs,
    #[command(flatten)]
    pub tls: tls::TlsArgs,
    /// STOMP listener address (default 127.0.0.1:61613; "off" disables it).
    #[arg(long, env = "FERRY_STOMP_LISTEN")]
    pub stomp_listen: Option<String>,
    /// STOMP over WebSocket listener address (path /stomp; off by default).
    #[arg(long, env = "FERRY_STOMP_WS_LISTEN")]
    pub stomp_ws_listen: Option<String>,
    /// Redis (RESP2/RESP3) listener address (default 127.0.0.1:6379; "off" disables it).
    #[arg(long, env = "FERRY_REDIS_LISTEN")]
    pub redis_listen: Option<String>,
    /// SASL mechanisms SASL listeners offer (default SCRAM-SHA-512,SCRAM-SHA-256,PLAIN;
    /// OAUTHBEARER when listed, with --sasl-oauthbearer-jwks).
    #[arg(long, env = "FERRY_SASL_MECHANISMS")]
    pub sasl_mechanisms: Option<String>,
    /// JWKS file (JSON) whose RS256/ES256 keys OAUTHBEARER tokens must be signed with.
    #[arg(long, env = "FERRY_SASL_OAUTHBEARER_JWKS")]
    pub sasl_oauthbearer_jwks: Option<PathBuf>,
    /// The issuer (`iss`) OAUTHBEARER tokens must carry.
    #[arg(long, env = "FERRY_SASL_OAUTHBEARER_ISSUER")]
    pub sasl_oauthbearer_issuer: Option<String>,
    /// The audience (`aud`) OAUTHBEARER tokens must name.
    #[arg(long, env = "FERRY_SASL_OAUTHBEARER_AUDIENCE")]
    pub sasl_oauthbearer_audience: Option<String>,
    /// Principals allowed everything, comma-separated (User:admin,...).
    #[arg(long, env = "FERRY_SUPER_USERS")]
    pub super_users: Option<String>,
    /// Let listeners without authentication bind non-loopback addresses.
    #[arg(long, env = "FERRY_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,
}

/// Authentication and authorization, resolved.
#[derive(Debug, Clone)]
pub struct SecuritySettings {
    /// Offered on SASL listeners, in order.
    pub sasl_mechanisms: Vec<ferry_kafka::SaslMechanism>,
    /// The authorizer's settings.
    pub authorizer: ferry_broker::security::AuthorizerConfig,
    /// The JWKS of OAUTHBEARER, loaded; set when the mechanisms include it.
    pub oauth: Option<std::sync::Arc<ferry_broker::security::JwksFile>>,
}

/// Everything `serve` needs, resolved.
#[derive(Debug)]
pub struct Settings {
    pub broker: ferry_broker::BrokerConfig,
    /// Settings of the first Kafka listener (the others differ in protocol,
    /// advertised address and listener key).
    pub kafka: ferry_kafka::KafkaConfig,
    /// Every Kafka listener with its advertised `host:port`.
    pub kafka_listeners: Vec<(ferry_kafka::ListenerSpec, String)>,
    /// `Some` when any Kafka listener authenticates (SASL, or SSL with
    /// client certificates): authorization is on.
    pub security: Option<SecuritySettings>,
    /// Every AMQP listener (plain and AMQPS).
    pub amqp_listen: Vec<ferry_tls::Listen>,
    pub amqp: ferry_amqp::AmqpConfig,
    /// `[amqp] default_queue_type`; `None`: by the cluster's size.
    pub amqp_default_queue_type: Option<ferry_broker::metadata::QueueType>,
    /// The HTTP admin API (HTTPS with `tls://`).
    pub http_listen: ferry_tls::Listen,
    /// MQTT listeners (plain and MQTTS); empty: none.
    pub mqtt_listen: Vec<ferry_tls::Listen>,
    /// MQTT over WebSocket listeners (ws and wss).
    pub mqtt_ws_listen: Vec<ferry_tls::Listen>,
    /// The certificate for TLS listeners; `None`: no TLS configured.
    pub tls: Option<TlsSettings>,
    pub mqtt: ferry_mqtt::MqttConfig,
    /// The cluster node: port, quorum, and the listeners it advertises.
    pub cluster: ferry_cluster::ClusterConfig,
    /// STOMP listeners (plain and TLS); empty: none.
    pub stomp_listen: Vec<ferry_tls::Listen>,
    pub stomp_ws_listen: Vec<ferry_tls::Listen>,
    pub stomp: ferry_stomp::StompConfig,
    /// Redis listeners (plain and TLS); empty: none.
    pub redis_listen: Vec<ferry_tls::Listen>,
    pub redis: ferry_redis::RedisConfig,
    /// Logins and permissions of the other protocols (one user store).
    pub access: access::AccessSettings,
}

impl Settings {
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<Settings> {
        let file: FileConfig = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let listen_spec =
            args.kafka_listen.clone().or(file.kafka.listen.clone()).unwrap_or_else(|| "127.0.0.1:9092".to_string());
        let specs = ferry_kafka::ListenerSpec::parse_list(&listen_spec).map_err(anyhow::Error::msg)?;
        let tls = tls::resolve(&args.tls, file.tls)?;
        let security = security_settings(args, &file.security, &specs, tls.as_ref())?;
        let kafka_listen = specs[0].addr;
        let advertised =
            args.advertised_kafka.clone().or(file.kafka.advertised).unwrap_or_else(|| kafka_listen.to_string());
        // The first listener advertises `--advertised-kafka`; the others
        // their own address.
        let kafka_listeners: Vec<(ferry_kafka::ListenerSpec, String)> = specs
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), if i == 0 { advertised.clone() } else { l.addr.to_string() }))
            .collect();
        let Some((host, port)) = advertised.rsplit_once(':') else {
            bail!("advertised address {advertised:?} is not HOST:PORT")
        };
        let port: i32 = port.parse().with_context(|| format!("advertised port in {advertised:?}"))?;
        let defaults = ferry_kafka::KafkaConfig::default();
        let mut engine = ferry_log::EngineConfig::default();
        if let Some(n) = file.storage.max_open_segments {
            engine.max_open_segments = n;
        }
        if let Some(ms) = file.storage.checkpoint_interval_ms {
            engine.checkpoint_interval = Duration::from_millis(ms);
        }
        if let Some(n) = file.storage.checkpoint_bytes {
            engine.checkpoint_bytes = n;
        }
        if let Some(ms) = file.storage.checkpoint_max_age_ms {
            engine.checkpoint_max_age = Duration::from_millis(ms);
        }
        if let Some(ms) = file.storage.cleaner_interval_ms {
            engine.cleaner_interval = Duration::from_millis(ms);
        }
        let amqp_listen = tls::listeners(
            args.amqp_listen.clone().or(file.amqp.listen.clone()),
            &[ferry_tls::Listen { addr: SocketAddr::from(([127, 0, 0, 1], 5672)), tls: false }],
            "AMQP listener",
        )?;
        let amqp_default_queue_type =
            default_queue_type(args.amqp_default_queue_type.as_deref().or(file.amqp.default_queue_type.as_deref()))?;
        let amqp = amqp_config(file.amqp)?;
        let stomp_listen = tls::listeners(
            args.stomp_listen.clone().or(file.stomp.listen.clone()),
            &[ferry_tls::Listen { addr: SocketAddr::from(([127, 0, 0, 1], 61613)), tls: false }],
            "STOMP listener",
        )?;
        let stomp_ws_listen = tls::listeners(
            args.stomp_ws_listen.clone().or(file.stomp.ws_listen.clone()),
            &[],
            "STOMP WebSocket listener",
        )?;
        let stomp = stomp_config(file.stomp);
        let redis_listen = tls::listeners(
            args.redis_listen.clone().or(file.redis.listen.clone()),
            &[ferry_tls::Listen { addr: SocketAddr::from(([127, 0, 0, 1], 6379)), tls: false }],
            "Redis listener",
        )?;
        let redis = redis_config(file.redis);
        let m = file.mqtt;
        let mqtt_listen = tls::listeners(
            args.mqtt_listen.clone().or(m.listen),
            &[ferry_tls::Listen { addr: SocketAddr::from(([127, 0, 0, 1], 1883)), tls: false }],
            "MQTT listener",
        )?;
        let mqtt_ws_listen =
            tls::listeners(args.mqtt_ws_listen.clone().or(m.ws_listen), &[], "MQTT WebSocket listener")?;
        tls::check(
            tls.as_ref(),
            &[
                (&amqp_listen, "--amqp-listen"),
                (&mqtt_listen, "--mqtt-listen"),
                (&mqtt_ws_listen, "--mqtt-ws-listen"),
                (&stomp_listen, "--stomp-listen"),
                (&stomp_ws_listen, "--stomp-ws-listen"),
                (&redis_listen, "--redis-listen"),
            ],
        )?;
        let (mqtt_users, mqtt_acl) = (m.users, m.acl);
        let md = ferry_mqtt::MqttConfig::default();
        let mqtt = ferry_mqtt::MqttConfig {
            max_packet_size: m.max_packet_size.unwrap_or(md.max_packet_size),
            receive_maximum: m.receive_maximum.unwrap_or(md.receive_maximum).max(1),
            max_inflight: m.max_inflight_messages.unwrap_or(md.max_inflight).max(1),
            max_queued_messages: m.max_queued_messages.unwrap_or(md.max_queued_messages),
            topic_alias_maximum: m.topic_alias_maximum.unwrap_or(md.topic_alias_maximum),
            outbound_topic_aliases: m.outbound_topic_aliases.unwrap_or(md.outbound_topic_aliases),
            max_session_expiry: m.max_session_expiry_secs.unwrap_or(md.max_session_expiry),
            max_keep_alive: m.max_keepalive.unwrap_or(md.max_keep_alive),
            gate: None,
            to_kafka: std::sync::Arc::new(m.kafka_bridge),
            from_kafka: std::sync::Arc::new(m.from_kafka),
        };
        let node_id = args.node_id.or(file.node_id).unwrap_or(1);
        let data_dir = args.data_dir.clone().or(file.data_dir).unwrap_or_else(|| PathBuf::from("data"));
        let default_partitions = file.kafka.num_partitions.unwrap_or(1);
        let max_partitions_per_topic = file.kafka.max_partitions_per_topic.unwrap_or(10_000);
        let http_listen = match args.http_listen.clone().or(file.http.listen) {
            Some(v) => ferry_tls::Listen::parse(&v).with_context(|| format!("HTTP listener address {v:?}"))?,
            None => ferry_tls::Listen { addr: SocketAddr::from(([127, 0, 0, 1], 9644)), tls: false },
        };
        tls::check(tls.as_ref(), &[(std::slice::from_ref(&http_listen), "--http-listen")])?;
        let mut listeners = BTreeMap::from([
            (listener::KAFKA.to_string(), advertised.clone()),
            (listener::HTTP.to_string(), http_listen.to_string()),
        ]);
        // The first of each protocol's listeners (with its tls:// scheme).
        if let Some(amqp) = amqp_listen.first() {
            listeners.insert(listener::AMQP.to_string(), amqp.to_string());
        }
        if let Some(mqtt) = mqtt_listen.first() {
            listeners.insert(listener::MQTT.to_string(), mqtt.to_string());
        }
        for (spec, advertised) in &kafka_listeners {
            listeners.insert(kafka_listener_key(spec), advertised.clone());
        }
        let cluster = cluster::resolve(
            &args.cluster,
            file.cluster,
            cluster::NodeFacts {
                tls: tls.as_ref().map(|t| &t.files),
                node_id,
                data_dir: &data_dir,
                listeners,
                default_partitions,
                max_partitions_per_topic,
            },
        )?;
        Ok(Settings {
            cluster,
            stomp_listen,
            stomp_ws_listen,
            stomp,
            redis_listen,
            redis,
            amqp_listen,
            amqp,
            amqp_default_queue_type,
            mqtt_listen,
            mqtt_ws_listen,
            mqtt,
            tls,
            broker: ferry_broker::BrokerConfig {
                node_id,
                data_dir,
                auto_create_topics: file.kafka.auto_create_topics.unwrap_or(true),
                default_partitions,
                topic_defaults: file.topic_defaults,
                producer_id_expiration_ms: file.kafka.producer_id_expiration_ms.unwrap_or(86_400_000),
                max_partitions_per_topic,
                groups: {
                    let mut g = ferry_broker::group::CoordinatorConfig::default();
                    if let Some(ms) = file.kafka.group_initial_rebalance_delay_ms {
                        g.initial_rebalance_delay = Duration::from_millis(ms);
                    }
                    if let Some(min) = file.kafka.offsets_retention_minutes {
                        g.offsets_retention_ms = min * 60_000;
                    }
                    if let Some(ms) = file.kafka.group_consumer_heartbeat_interval_ms {
                        g.consumer_heartbeat_interval = Duration::from_millis(ms);
                    }
                    if let Some(ms) = file.kafka.group_consumer_session_timeout_ms {
                        g.consumer_session_timeout = Duration::from_millis(ms);
                    }
                    g
                },
                txns: {
                    let mut t = ferry_broker::txn::TxnConfig::default();
                    if let Some(ms) = file.kafka.transaction_max_timeout_ms {
                        t.max_timeout_ms = ms;
                    }
                    if let Some(ms) = file.kafka.transactional_id_expiration_ms {
                        t.id_expiration_ms = ms;
                    }
                    t
                },
                engine,
            },
            kafka_listeners,
            access: access::AccessSettings {
                super_users: access::super_users(args.super_users.as_ref(), file.security.super_users.as_ref())?,
                allow_anonymous: args.allow_anonymous || file.security.allow_anonymous.unwrap_or(false),
                mqtt_users,
                mqtt_acl,
            },
            security,
            http_listen,
            kafka: ferry_kafka::KafkaConfig {
                advertised_host: host.trim_start_matches('[').trim_end_matches(']').to_string(),
                advertised_port: port,
                max_request_bytes: file.kafka.max_request_bytes.unwrap_or(defaults.max_request_bytes),
                protocol: specs[0].protocol,
                listener_key: kafka_listener_key(&specs[0]),
                ..defaults
            },
        })
    }
}

/// Where a Kafka listener's advertised address is registered in the
/// node's listeners: `kafka.<PROTOCOL>` (the first also as `kafka`).
pub fn kafka_listener_key(spec: &ferry_kafka::ListenerSpec) -> String {
    format!("{}.{}", listener::KAFKA, spec.protocol.name())
}

/// The security settings, `None` without any authenticating listener
/// (SASL, or SSL with `--tls-client-ca`). Refuses SSL and SASL_SSL
/// listeners without a certificate and, without `--allow-anonymous`,
/// listeners without authentication on non-loopback addresses.
fn security_settings(
    args: &ServeArgs,
    file: &SecuritySection,
    specs: &[ferry_kafka::ListenerSpec],
    tls: Option<&TlsSettings>,
) -> anyhow::Result<Option<SecuritySettings>> {
    if tls.is_none()
        && let Some(l) = specs.iter().find(|l| l.protocol.tls())
    {
        bail!("Kafka listener {l} is a TLS listener: give --tls-cert and --tls-key (or [tls] cert and key)");
    }
    // An SSL listener that asks for client certificates authenticates
    // every client (the certificate is the login).
    let client_certs = tls.is_some_and(|t| t.files.client_ca.is_some());
    let authenticates = |l: &&ferry_kafka::ListenerSpec| {
        l.protocol.sasl() || (l.protocol == ferry_kafka::SecurityProtocol::Ssl && client_certs)
    };
    let allow_anonymous = args.allow_anonymous || file.allow_anonymous.unwrap_or(false);
    if !allow_anonymous && let Some(l) = specs.iter().find(|l| !authenticates(l) && !l.addr.ip().is_loopback()) {
        bail!(
            "Kafka listener {l} accepts clients without authentication on a non-loopback address; \
             use SASL_PLAINTEXT:// or SASL_SSL://, SSL:// with --tls-client-ca, bind a loopback address, \
             or pass --allow-anonymous"
        );
    }
    if !specs.iter().any(|l| authenticates(&l)) {
        return Ok(None);
    }
    let mechanisms = args.sasl_mechanisms.clone().or(file.sasl_mechanisms.clone());
    let sasl_mechanisms = match mechanisms {
        None => ferry_kafka::SaslMechanism::DEFAULT.to_vec(),
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(|m| ferry_kafka::SaslMechanism::from_name(m).with_context(|| format!("unknown SASL mechanism {m:?}")))
            .collect::<anyhow::Result<Vec<_>>>()?,
    };
    if sasl_mechanisms.is_empty() {
        bail!("--sasl-mechanisms names none");
    }
    let oauth = if sasl_mechanisms.contains(&ferry_kafka::SaslMechanism::OAuthBearer) {
        let Some(jwks) = args.sasl_oauthbearer_jwks.clone().or(file.sasl_oauthbearer_jwks.clone()) else {
            bail!("OAUTHBEARER needs --sasl-oauthbearer-jwks (or [security] sasl_oauthbearer_jwks)");
        };
        let issuer = args.sasl_oauthbearer_issuer.clone().or(file.sasl_oauthbearer_issuer.clone());
        let audience = args.sasl_oauthbearer_audience.clone().or(file.sasl_oauthbearer_audience.clone());
        let v = ferry_broker::security::JwksFile::load(&jwks, issuer, audience).context("--sasl-oauthbearer-jwks")?;
        Some(std::sync::Arc::new(v))
    } else {
        None
    };
    let super_users: Vec<String> = match &args.super_users {
        Some(list) => list.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
        None => file.super_users.clone().unwrap_or_default(),
    };
    let super_users = super_users
        .iter()
        .map(|p| ferry_broker::security::Principal::parse(p).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<_>>()?;
    Ok(Some(SecuritySettings {
        sasl_mechanisms,
        authorizer: ferry_broker::security::AuthorizerConfig {
            super_users,
            allow_everyone_if_no_acl_found: file.allow_everyone_if_no_acl_found.unwrap_or(false),
        },
        oauth,
    }))
}

fn stomp_config(s: StompSection) -> ferry_stomp::StompConfig {
    let d = ferry_stomp::StompConfig::default();
    let login = match (s.default_login, s.default_passcode) {
        (None, _) => d.default_login.clone(),
        (Some(l), _) if l.is_empty() => None,
        (Some(l), p) => Some((l, p.unwrap_or_default())),
    };
    ferry_stomp::StompConfig {
        heartbeat: s.heartbeat_ms.map_or(d.heartbeat, |[a, b]| (a, b)),
        default_vhost: s.default_vhost.unwrap_or(d.default_vhost.clone()),
        default_login: login,
        limits: ferry_stomp::Limits {
            max_body: s.max_body_bytes.unwrap_or(d.limits.max_body),
            max_headers: s.max_headers.unwrap_or(d.limits.max_headers),
            max_header_line: s.max_header_line_bytes.unwrap_or(d.limits.max_header_line),
        },
        ..d
    }
}

fn redis_config(s: RedisSection) -> ferry_redis::RedisConfig {
    let d = ferry_redis::RedisConfig::default();
    let login = match (s.default_user, s.default_password) {
        (None, _) => d.default_login.clone(),
        (Some(u), _) if u.is_empty() => None,
        (Some(u), p) => Some((u, p.unwrap_or_default())),
    };
    ferry_redis::RedisConfig {
        vhost: s.vhost.unwrap_or(d.vhost.clone()),
        default_login: login,
        limits: ferry_redis::Limits {
            max_bulk: s.max_bulk_bytes.unwrap_or(d.limits.max_bulk),
            max_array: s.max_array_len.unwrap_or(d.limits.max_array),
            max_inline: s.max_inline_bytes.unwrap_or(d.limits.max_inline),
            ..d.limits
        },
        pubsub_buffer: s.pubsub_buffer.unwrap_or(d.pubsub_buffer),
    }
}

/// `--amqp-default-queue-type` / `[amqp] default_queue_type`.
fn default_queue_type(value: Option<&str>) -> anyhow::Result<Option<ferry_broker::metadata::QueueType>> {
    use ferry_broker::metadata::QueueType;
    Ok(match value {
        None => None,
        Some("quorum") => Some(QueueType::Quorum { group_size: None }),
        Some("classic") => Some(QueueType::Classic),
        Some(other) => bail!("amqp.default_queue_type must be quorum or classic, not {other:?}"),
    })
}

fn amqp_config(section: AmqpSection) -> anyhow::Result<ferry_amqp::AmqpConfig> {
    let defaults = ferry_amqp::AmqpConfig::default();
    let mut vhosts = vec!["/".to_string()];
    for v in section.vhosts {
        if !vhosts.contains(&v) {
            vhosts.push(v);
        }
    }
    let users = if section.users.is_empty() {
        defaults.users.clone()
    } else {
        section
            .users
            .into_iter()
            .map(|u| {
                for v in u.permissions.keys() {
                    if !vhosts.contains(v) {
                        bail!("user {:?} has permissions on unknown vhost {v:?}", u.name);
                    }
                }
                Ok(ferry_amqp::User {
                    loopback_only: u.loopback_only.unwrap_or(u.name == "guest"),
                    name: u.name,
                    password: u.password,
                    permissions: u
                        .permissions
                        .into_iter()
                        .map(|(v, p)| {
                            (v, ferry_amqp::Permissions { configure: p.configure, write: p.write, read: p.read })
                        })
                        .collect(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let frame_max = section.frame_max.unwrap_or(defaults.frame_max);
    if frame_max < 4096 {
        bail!("amqp.frame_max must be at least 4096");
    }
    Ok(ferry_amqp::AmqpConfig {
        users,
        vhosts,
        frame_max,
        channel_max: section.channel_max.unwrap_or(defaults.channel_max),
        heartbeat: section.heartbeat.unwrap_or(defaults.heartbeat),
        max_message_bytes: section.max_message_bytes.unwrap_or(defaults.max_message_bytes),
        disk_free_limit: section.disk_free_limit_bytes.unwrap_or(defaults.disk_free_limit),
        memory_limit: section.memory_limit_bytes.or(defaults.memory_limit),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_means_a_working_single_node() {
        let s = Settings::resolve(&ServeArgs::default()).unwrap();
        assert_eq!(s.kafka_listeners[0].0.addr.to_string(), "127.0.0.1:9092");
        assert_eq!(s.broker.data_dir, PathBuf::from("data"));
        assert_eq!(s.http_listen.to_string(), "127.0.0.1:9644");
        assert_eq!((s.kafka.advertised_host.as_str(), s.kafka.advertised_port), ("127.0.0.1", 9092));
        assert_eq!(s.mqtt_listen.iter().map(ToString::to_string).collect::<Vec<_>>(), ["127.0.0.1:1883"]);
        assert!(s.mqtt_ws_listen.is_empty());
        assert_eq!(s.amqp_listen.iter().map(ToString::to_string).collect::<Vec<_>>(), ["127.0.0.1:5672"]);
        assert!(s.tls.is_none());
        assert_eq!(s.amqp.users, vec![ferry_amqp::User::guest()]);
        assert_eq!(s.amqp.vhosts, vec!["/".to_string()]);
        assert_eq!(s.stomp_listen.iter().map(ToString::to_string).collect::<Vec<_>>(), ["127.0.0.1:61613"]);
        assert!(s.stomp_ws_listen.is_empty());
        assert_eq!(s.redis_listen.iter().map(ToString::to_string).collect::<Vec<_>>(), ["127.0.0.1:6379"]);
    }

    #[test]
    fn redis_section_and_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        std::fs::write(
            &path,
            "[redis]\nlisten = \"127.0.0.1:16379\"\ndefault_user = \"\"\nmax_bulk_bytes = 1024\npubsub_buffer = 7\n",
        )
        .unwrap();
        let mut args = ServeArgs { config: Some(path), ..Default::default() };
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(s.redis_listen[0].addr.port(), 16379);
        assert_eq!(s.redis.default_login, None);
        assert_eq!((s.redis.limits.max_bulk, s.redis.pubsub_buffer), (1024, 7));
        args.redis_listen = Some("off".into());
        assert!(Settings::resolve(&args).unwrap().redis_listen.is_empty());
        args.redis_listen = Some("127.0.0.1:6380".into());
        assert_eq!(Settings::resolve(&args).unwrap().redis_listen[0].addr.port(), 6380);
    }

    #[test]
    fn stomp_section_and_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        std::fs::write(
            &path,
            "[stomp]\nlisten = \"127.0.0.1:61999\"\nws_listen = \"127.0.0.1:15674\"\nheartbeat_ms = [500, 0]\ndefault_login = \"\"\nmax_headers = 8\n",
        )
        .unwrap();
        let mut args = ServeArgs { config: Some(path), ..Default::default() };
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(s.stomp_listen[0].addr.port(), 61999);
        assert_eq!(s.stomp_ws_listen[0].addr.port(), 15674);
        assert_eq!(s.stomp.heartbeat, (500, 0));
        assert_eq!(s.stomp.default_login, None);
        assert_eq!(s.stomp.limits.max_headers, 8);
        args.stomp_listen = Some("off".into());
        assert!(Settings::resolve(&args).unwrap().stomp_listen.is_empty());
    }

    #[test]
    fn mqtt_section_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        std::fs::write(
            &path,
            "[mqtt]\nlisten = \"127.0.0.1:1999\"\nmax_queued_messages = 5\n\
             [[mqtt.users]]\nname = \"u\"\npassword = \"p\"\n\
             [[mqtt.acl]]\nuser = \"u\"\npattern = \"a/#\"\naccess = \"readwrite\"\n\
             [[mqtt.kafka_bridge]]\nfilter = \"sensors/#\"\ntopic = \"sensors\"\n",
        )
        .unwrap();
        let mut args = ServeArgs { config: Some(path), ..Default::default() };
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(s.mqtt_listen[0].addr.port(), 1999);
        assert_eq!(s.mqtt.max_queued_messages, 5);
        assert_eq!((s.access.mqtt_users.len(), s.access.mqtt_acl.len(), s.mqtt.to_kafka.len()), (1, 1, 1));
        args.mqtt_listen = Some("off".into());
        assert!(Settings::resolve(&args).unwrap().mqtt_listen.is_empty());
    }

    #[test]
    fn tls_listeners_need_a_certificate() {
        let mut args = ServeArgs {
            amqp_listen: Some("127.0.0.1:5672,tls://127.0.0.1:5671".into()),
            mqtt_ws_listen: Some("wss://127.0.0.1:8443".into()),
            ..Default::default()
        };
        let e = format!("{:#}", Settings::resolve(&args).unwrap_err());
        assert!(e.contains("--amqp-listen tls://127.0.0.1:5671") && e.contains("--tls-cert"), "{e}");
        args.tls.tls_cert = Some("c.pem".into());
        assert!(format!("{:#}", Settings::resolve(&args).unwrap_err()).contains("--tls-cert needs --tls-key"));
        args.tls.tls_key = Some("k.pem".into());
        args.tls.tls_principal_mapping = Some("RULE:^CN=(.*)$/$1/L,DEFAULT".into());
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(s.amqp_listen.iter().map(|l| l.tls).collect::<Vec<_>>(), [false, true]);
        assert!(s.mqtt_ws_listen[0].tls);
        let tls = s.tls.unwrap();
        assert_eq!(tls.files.cert, std::path::PathBuf::from("c.pem"));
        assert_eq!(tls.mapper.map("CN=Ann").as_deref(), Some("ann"));
        args.tls.tls_principal_mapping = Some("RULE:broken".into());
        assert!(Settings::resolve(&args).is_err());
    }

    #[test]
    fn tls_section_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        std::fs::write(
            &path,
            "[tls]\ncert = \"/etc/ferry/c.pem\"\nkey = \"/etc/ferry/k.pem\"\nclient_ca = \"/etc/ferry/ca.pem\"\n\
             [amqp]\nlisten = \"tls://127.0.0.1:5671\"\n",
        )
        .unwrap();
        let s = Settings::resolve(&ServeArgs { config: Some(path), ..Default::default() }).unwrap();
        assert!(s.amqp_listen[0].tls && s.amqp_listen[0].addr.port() == 5671);
        assert_eq!(s.tls.unwrap().files.client_ca, Some(std::path::PathBuf::from("/etc/ferry/ca.pem")));
    }

    #[test]
    fn mqtt_max_keepalive_defaults_to_65535_and_keeps_its_first_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        std::fs::write(&path, "").unwrap();
        let args = ServeArgs { config: Some(path.clone()), ..Default::default() };
        assert_eq!(Settings::resolve(&args).unwrap().mqtt.max_keep_alive, 65535);
        std::fs::write(&path, "[mqtt]\nmax_keepalive = 60\n").unwrap();
        assert_eq!(Settings::resolve(&args).unwrap().mqtt.max_keep_alive, 60);
        std::fs::write(&path, "[mqtt]\nmax_keepalive_secs = 0\n").unwrap();
        assert_eq!(Settings::resolve(&args).unwrap().mqtt.max_keep_alive, 0);
    }

    #[test]
    fn amqp_users_and_vhosts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        std::fs::write(
            &path,
            "[amqp]\nlisten = \"127.0.0.1:5673\"\nvhosts = [\"orders\"]\n\
             [[amqp.users]]\nname = \"app\"\npassword = \"pw\"\n\
             [amqp.users.permissions.orders]\nconfigure = \"^app-.*\"\n",
        )
        .unwrap();
        let args = ServeArgs { config: Some(path.clone()), ..Default::default() };
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(s.amqp_listen[0].addr.port(), 5673);
        assert_eq!(s.amqp.vhosts, vec!["/".to_string(), "orders".to_string()]);
        let app = &s.amqp.users[0];
        assert!(!app.loopback_only);
        assert_eq!(app.permissions["orders"].configure, "^app-.*");
        assert_eq!(app.permissions["orders"].read, ".*");
        std::fs::write(&path, "[[amqp.users]]\nname = \"x\"\npassword = \"y\"\n[amqp.users.permissions.nope]\n")
            .unwrap();
        assert!(Settings::resolve(&args).is_err(), "permissions on an unknown vhost are refused");
    }

    #[test]
    fn amqp_default_queue_type() {
        use ferry_broker::metadata::QueueType;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        let args = ServeArgs { config: Some(path.clone()), ..Default::default() };
        std::fs::write(&path, "[amqp]\n").unwrap();
        assert_eq!(Settings::resolve(&args).unwrap().amqp_default_queue_type, None, "by the cluster's size");
        std::fs::write(&path, "[amqp]\ndefault_queue_type = \"classic\"\n").unwrap();
        assert_eq!(Settings::resolve(&args).unwrap().amqp_default_queue_type, Some(QueueType::Classic));
        let flag = ServeArgs { amqp_default_queue_type: Some("quorum".into()), ..args };
        assert_eq!(
            Settings::resolve(&flag).unwrap().amqp_default_queue_type,
            Some(QueueType::Quorum { group_size: None }),
            "the flag beats the file"
        );
        std::fs::write(&path, "[amqp]\ndefault_queue_type = \"stream\"\n").unwrap();
        let args = ServeArgs { config: Some(path), ..Default::default() };
        assert!(Settings::resolve(&args).is_err());
    }

    #[test]
    fn flags_beat_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        std::fs::write(
            &path,
            "data_dir = \"/srv/ferry\"\n[kafka]\nlisten = \"127.0.0.1:9000\"\n[http]\nlisten = \"127.0.0.1:9700\"\n[topic_defaults]\n\"flush.ms\" = \"100\"\n",
        )
        .unwrap();
        let args =
            ServeArgs { config: Some(path.clone()), kafka_listen: Some("127.0.0.1:9100".into()), ..Default::default() };
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(s.broker.data_dir, PathBuf::from("/srv/ferry"));
        assert_eq!(s.kafka_listeners[0].0.addr.port(), 9100);
        assert_eq!(s.kafka.advertised_port, 9100);
        assert_eq!(s.http_listen.addr.port(), 9700);
        assert_eq!(s.broker.topic_defaults.get("flush.ms").map(String::as_str), Some("100"));
        std::fs::write(&path, "bogus = 1\n").unwrap();
        assert!(Settings::resolve(&args).is_err(), "unknown keys are refused");
    }

    #[test]
    fn cluster_section_and_listeners() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        std::fs::write(
            &path,
            "node_id = 2\n[cluster]\nlisten = \"127.0.0.1:9193\"\n\
             controller_quorum = \"1@127.0.0.1:9192,2@127.0.0.1:9193\"\nrack = \"r2\"\n\
             heartbeat_interval_ms = 300\nsession_timeout_ms = 2000\ndefault_replication_factor = 2\n\
             dial_via = { \"127.0.0.1:9192\" = \"127.0.0.1:40001\" }\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            advertised_kafka: Some("k2.example:19092".into()),
            ..Default::default()
        };
        let c = Settings::resolve(&args).unwrap().cluster;
        assert_eq!((c.node_id, c.cluster_listen.as_str(), c.rack.as_deref()), (2, "127.0.0.1:9193", Some("r2")));
        assert_eq!(c.voters().len(), 2);
        assert_eq!(c.session_timeout, Duration::from_secs(2));
        assert_eq!(c.default_replication_factor, Some(2));
        assert_eq!(c.dial_via.get("127.0.0.1:9192").map(String::as_str), Some("127.0.0.1:40001"));
        assert_eq!(c.listeners[listener::KAFKA], "k2.example:19092");
        assert_eq!(c.listeners[listener::AMQP], "127.0.0.1:5672");
        assert_eq!(c.listeners[listener::MQTT], "127.0.0.1:1883");
        assert_eq!(c.listeners[listener::HTTP], "127.0.0.1:9644");
        assert_eq!(c.listeners[listener::CLUSTER], "127.0.0.1:9193");
        // The quorum places node 2 elsewhere than where it listens.
        let moved = ServeArgs {
            cluster: cluster::ClusterArgs {
                cluster_listen: Some(ferry_tls::Listen::parse("127.0.0.1:9200").unwrap()),
                ..Default::default()
            },
            ..args
        };
        let e = format!("{:#}", Settings::resolve(&moved).unwrap_err());
        assert!(e.contains("127.0.0.1:9193") && e.contains("127.0.0.1:9200"), "{e}");
    }

    #[test]
    fn kafka_listeners_and_security() {
        let mut args = ServeArgs {
            kafka_listen: Some("PLAINTEXT://127.0.0.1:9092,SASL_PLAINTEXT://127.0.0.1:9093".into()),
            super_users: Some("User:admin, User:ops".into()),
            ..Default::default()
        };
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(s.kafka_listeners.len(), 2);
        assert_eq!(s.kafka_listeners[0].0.addr.port(), 9092);
        let sec = s.security.expect("a SASL listener turns authorization on");
        assert_eq!(sec.sasl_mechanisms, ferry_kafka::SaslMechanism::DEFAULT.to_vec());
        assert_eq!(sec.authorizer.super_users.len(), 2);
        assert_eq!(s.cluster.listeners["kafka.SASL_PLAINTEXT"], "127.0.0.1:9093");
        assert_eq!(s.cluster.listeners[listener::KAFKA], "127.0.0.1:9092");
        args.sasl_mechanisms = Some("PLAIN".into());
        assert_eq!(
            Settings::resolve(&args).unwrap().security.unwrap().sasl_mechanisms,
            vec![ferry_kafka::SaslMechanism::Plain]
        );
        args.sasl_mechanisms = Some("GSSAPI".into());
        assert!(Settings::resolve(&args).is_err());
        // OAUTHBEARER only with a JWKS, which is read at start.
        args.sasl_mechanisms = Some("SCRAM-SHA-512,OAUTHBEARER".into());
        assert!(format!("{:#}", Settings::resolve(&args).unwrap_err()).contains("--sasl-oauthbearer-jwks"));
        let dir = tempfile::tempdir().unwrap();
        let jwks = dir.path().join("jwks.json");
        args.sasl_oauthbearer_jwks = Some(jwks.clone());
        assert!(Settings::resolve(&args).is_err(), "a missing JWKS file refuses the start");
        // 32 zero bytes each (base64url): a well-formed key, never used here.
        let (x, y) = ("A".repeat(43), "A".repeat(43));
        std::fs::write(&jwks, format!(r#"{{"keys":[{{"kty":"EC","crv":"P-256","x":"{x}","y":"{y}"}}]}}"#)).unwrap();
        let sec = Settings::resolve(&args).unwrap().security.unwrap();
        assert!(sec.oauth.is_some() && sec.sasl_mechanisms.contains(&ferry_kafka::SaslMechanism::OAuthBearer));
        args.sasl_mechanisms = None;
        assert!(Settings::resolve(&args).unwrap().security.unwrap().oauth.is_none(), "not listed: not offered");
        // Without a SASL listener: no authorizer, as before.
        let plain = ServeArgs { kafka_listen: Some("127.0.0.1:9092".into()), ..Default::default() };
        assert!(Settings::resolve(&plain).unwrap().security.is_none());
        // TLS listeners need the certificate.
        let mut tls = ServeArgs { kafka_listen: Some("SASL_SSL://127.0.0.1:9094".into()), ..Default::default() };
        assert!(format!("{:#}", Settings::resolve(&tls).unwrap_err()).contains("--tls-cert"));
        tls.tls.tls_cert = Some("cert.pem".into());
        tls.tls.tls_key = Some("key.pem".into());
        let s = Settings::resolve(&tls).unwrap();
        assert!(s.security.is_some(), "SASL_SSL turns authorization on");
        assert_eq!(s.cluster.listeners["kafka.SASL_SSL"], "127.0.0.1:9094");
        // SSL off loopback: anonymous without client certificates, an
        // authenticated listener with them.
        tls.kafka_listen = Some("SSL://0.0.0.0:9094".into());
        assert!(format!("{:#}", Settings::resolve(&tls).unwrap_err()).contains("--allow-anonymous"));
        tls.tls.tls_client_ca = Some("ca.pem".into());
        assert!(Settings::resolve(&tls).unwrap().security.is_some(), "SSL with client certificates authenticates");
        // Safe by default: no anonymous listener off loopback.
        let open = ServeArgs { kafka_listen: Some("0.0.0.0:9092".into()), ..Default::default() };
        assert!(format!("{:#}", Settings::resolve(&open).unwrap_err()).contains("--allow-anonymous"));
        let allowed = ServeArgs { allow_anonymous: true, ..open };
        assert!(Settings::resolve(&allowed).is_ok());
        let sasl_outside =
            ServeArgs { kafka_listen: Some("SASL_PLAINTEXT://0.0.0.0:9093".into()), ..Default::default() };
        assert!(Settings::resolve(&sasl_outside).is_ok());
    }

    #[test]
    fn security_section() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        std::fs::write(
            &path,
            "[kafka]\nlisten = \"SASL_PLAINTEXT://127.0.0.1:9093\"\n\
             [security]\nsasl_mechanisms = \"SCRAM-SHA-256\"\nsuper_users = [\"User:root\"]\n\
             allow_everyone_if_no_acl_found = true\n",
        )
        .unwrap();
        let s = Settings::resolve(&ServeArgs { config: Some(path), ..Default::default() }).unwrap();
        let sec = s.security.unwrap();
        assert_eq!(sec.sasl_mechanisms.len(), 1);
        assert!(sec.authorizer.allow_everyone_if_no_acl_found);
        assert!(sec.authorizer.super_users.contains(&ferry_broker::security::Principal::user("root")));
        assert_eq!(s.kafka.protocol, ferry_kafka::SecurityProtocol::SaslPlaintext);
    }
}
