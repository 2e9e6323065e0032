//! Settings of the MQTT front-end.

use std::sync::Arc;

/// One user of `[[mqtt.users]]`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// User name the client sends in CONNECT.
    pub name: String,
    /// Password, compared with the CONNECT password as plain text.
    pub password: String,
}

/// What an ACL entry allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Subscribe and receive.
    Read,
    /// Publish.
    Write,
    /// Both.
    Readwrite,
}

/// One `[[mqtt.acl]]` entry: `user` ("*" for everyone, anonymous included)
/// may use topics matching `pattern` (`%u` and `%c` stand for the user name
/// and client id).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclEntry {
    /// User name the entry applies to; "*" for everyone.
    pub user: String,
    /// Topic filter (`+` and `#` wildcards, `%u` and `%c` substituted).
    pub pattern: String,
    /// What the entry allows on matching topics.
    pub access: Access,
}

/// `[[mqtt.kafka_bridge]]`: MQTT publishes matching `filter` are appended
/// to Kafka topic `topic` (key = MQTT topic, value = payload), on Kafka's
/// default partition for the key.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToKafka {
    /// MQTT topic filter selecting the publishes to forward.
    pub filter: String,
    /// Kafka topic the records are appended to.
    pub topic: String,
}

/// `[[mqtt.from_kafka]]`: committed records appended to Kafka topic `topic`
/// from now on are published to MQTT topic `mqtt_topic` (`{key}` = the
/// record key, `{topic}` = the Kafka topic), at `qos`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FromKafka {
    /// Kafka topic to tail.
    pub topic: String,
    /// MQTT topic to publish to, with `{key}` and `{topic}` substituted.
    pub mqtt_topic: String,
    /// QoS of the MQTT publishes, 0 to 2 (default 0).
    #[serde(default)]
    pub qos: u8,
}

/// Settings of the MQTT front-end (`[mqtt]`).
#[derive(Clone, Debug)]
pub struct MqttConfig {
    /// Largest packet accepted (and announced in CONNACK), whole packet.
    pub max_packet_size: usize,
    /// Receive Maximum announced to MQTT 5 clients: QoS 2 publishes a
    /// client may have unreleased at once.
    pub receive_maximum: u16,
    /// QoS 1/2 messages in flight to a client that announces no Receive
    /// Maximum (3.1.1 clients), like mosquitto's max_inflight_messages.
    pub max_inflight: u16,
    /// Messages queued per session (online or offline) before new ones are
    /// dropped and counted, like mosquitto's max_queued_messages.
    pub max_queued_messages: u64,
    /// Topic aliases a client may set (MQTT 5 Topic Alias Maximum).
    pub topic_alias_maximum: u16,
    /// Use topic aliases on PUBLISHes to MQTT 5 clients that accept them
    /// (their CONNECT's Topic Alias Maximum), a new one on each topic's
    /// first use while they last.
    pub outbound_topic_aliases: bool,
    /// Longest session expiry granted, seconds; 3.1.1 persistent sessions
    /// (clean session 0) get this.
    pub max_session_expiry: u32,
    /// Longest keepalive a client may use, seconds (mosquitto's
    /// max_keepalive); 0: no limit. An MQTT 5 client asking more (or 0) is
    /// told this value in CONNACK's Server Keep Alive; a 3.1.1 client asking
    /// more is refused (see connection/connect.rs).
    pub max_keep_alive: u16,
    /// Logins and topic ACLs on the broker's user store and authorizer
    /// (`[[mqtt.users]]` / `[[mqtt.acl]]` are imported into them);
    /// `None`: everyone and every topic (tests of this crate).
    pub gate: Option<Arc<ferry_broker::security::Gatekeeper>>,
    /// MQTT -> Kafka bridges.
    pub to_kafka: Arc<Vec<ToKafka>>,
    /// Kafka -> MQTT bridges.
    pub from_kafka: Arc<Vec<FromKafka>>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            max_packet_size: 1 << 20,
            receive_maximum: 100,
            max_inflight: 20,
            max_queued_messages: 1000,
            topic_alias_maximum: 100,
            outbound_topic_aliases: true,
            max_session_expiry: u32::MAX,
            max_keep_alive: u16::MAX,
            gate: None,
            to_kafka: Arc::new(Vec::new()),
            from_kafka: Arc::new(Vec::new()),
        }
    }
}
