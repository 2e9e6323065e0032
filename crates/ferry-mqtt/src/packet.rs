//! Ferry's own MQTT packet types, the same for 3.1.1 and 5.0, and their
//! conversion to and from the codec's (`mqtt-proto`). Nothing outside this
//! module names the codec crate, so swapping it touches this file only.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use mqtt_proto::{Pid, QoS, QosPid, TopicFilter, TopicName, v3, v5};

/// Protocol level negotiated by CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// 3.1 (level 3) and 3.1.1 (level 4).
    V3,
    /// 5.0 (level 5).
    V5,
}

/// MQTT 5 reason codes Ferry sends (3.1.1 maps them to its return codes).
pub mod reason {
    /// Success, normal disconnection, or granted QoS 0.
    pub const SUCCESS: u8 = 0x00;
    /// PUBACK/PUBREC: accepted, but no subscriber matched.
    pub const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
    /// UNSUBACK: the filter was not subscribed.
    pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
    /// DISCONNECT from the client: close, but publish the will.
    pub const DISCONNECT_WITH_WILL: u8 = 0x04;
    /// Unspecified error.
    pub const UNSPECIFIED: u8 = 0x80;
    /// The packet could not be parsed.
    pub const MALFORMED: u8 = 0x81;
    /// The packet is well-formed but breaks the protocol.
    pub const PROTOCOL_ERROR: u8 = 0x82;
    /// CONNACK: protocol level not supported (3.1.1 return code 1).
    pub const UNSUPPORTED_VERSION: u8 = 0x84;
    /// CONNACK: client identifier refused (3.1.1 return code 2).
    pub const CLIENT_ID_NOT_VALID: u8 = 0x85;
    /// CONNACK: wrong user name or password (3.1.1 return code 4).
    pub const BAD_USER_OR_PASSWORD: u8 = 0x86;
    /// Not authorized (3.1.1 CONNACK return code 5).
    pub const NOT_AUTHORIZED: u8 = 0x87;
    /// CONNACK: the server cannot serve now (3.1.1 return code 3).
    pub const SERVER_UNAVAILABLE: u8 = 0x88;
    /// DISCONNECT: the broker is shutting down.
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
    /// CONNACK: the authentication method is not supported.
    pub const BAD_AUTHENTICATION_METHOD: u8 = 0x8C;
    /// DISCONNECT: nothing received within 1.5 times the keep alive.
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    /// DISCONNECT: another connection took over the client id.
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
    /// SUBACK/UNSUBACK: the topic filter is malformed.
    pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
    /// The PUBLISH topic name is malformed (e.g. contains wildcards).
    pub const TOPIC_NAME_INVALID: u8 = 0x90;
    /// PUBREC/PUBREL/PUBCOMP: the packet identifier is not in flight.
    pub const PACKET_ID_NOT_FOUND: u8 = 0x92;
    /// DISCONNECT: the client has more QoS > 0 publishes in flight than allowed.
    pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
    /// DISCONNECT: topic alias 0, above the maximum, or unknown.
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    /// The packet exceeds the maximum packet size.
    pub const PACKET_TOO_LARGE: u8 = 0x95;
    /// An implementation limit was reached (e.g. queue full).
    pub const QUOTA_EXCEEDED: u8 = 0x97;
    /// The payload is marked UTF-8 but is not.
    pub const PAYLOAD_FORMAT_INVALID: u8 = 0x99;
    /// SUBACK: `$share/` filters are not supported.
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0x9E;
}

/// Properties a PUBLISH (or a will) carries from publisher to subscriber.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishProps {
    /// Payload format indicator (MQTT 5 3.3.2.3.2): `Some(true)` = UTF-8 text.
    pub payload_utf8: Option<bool>,
    /// Message expiry interval, seconds (3.3.2.3.3); `None` = never expires.
    pub message_expiry: Option<u32>,
    /// Topic alias (3.3.2.3.4); a PUBLISH with an alias may carry an empty topic.
    pub topic_alias: Option<u16>,
    /// Topic for a request/response reply (3.3.2.3.5).
    pub response_topic: Option<Arc<str>>,
    /// Opaque data linking a response to its request (3.3.2.3.6).
    pub correlation_data: Option<Bytes>,
    /// User properties as (name, value) pairs, in wire order; names may repeat.
    pub user_properties: Vec<(Arc<str>, Arc<str>)>,
    /// Subscription identifiers of the matching subscriptions (3.3.2.3.8),
    /// each its own property on the wire.
    pub subscription_ids: Vec<u32>,
    /// MIME type of the payload (3.3.2.3.9).
    pub content_type: Option<Arc<str>>,
}

/// A PUBLISH packet, either direction (MQTT 5 3.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    /// DUP flag: a redelivery of an earlier attempt (QoS > 0 only).
    pub dup: bool,
    /// QoS level, 0 to 2.
    pub qos: u8,
    /// RETAIN flag: store as the topic's retained message (inbound), or the
    /// message is a retained one (outbound).
    pub retain: bool,
    /// Topic name, no wildcards; empty when a topic alias stands in for it.
    pub topic: Arc<str>,
    /// Packet identifier. Present for QoS 1 and 2.
    pub pid: Option<u16>,
    /// Application payload.
    pub payload: Bytes,
    /// MQTT 5 properties (all empty under 3.1.1).
    pub props: PublishProps,
}

/// The will message of a CONNECT, published if the connection ends without
/// a normal DISCONNECT (MQTT 5 3.1.2.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Will {
    /// Topic the will is published to.
    pub topic: Arc<str>,
    /// Will payload.
    pub payload: Bytes,
    /// QoS level the will is published with, 0 to 2.
    pub qos: u8,
    /// Publish the will as a retained message.
    pub retain: bool,
    /// Will delay interval, seconds (MQTT 5).
    pub delay: u32,
    /// Will properties (MQTT 5).
    pub props: PublishProps,
}

/// A CONNECT packet (MQTT 5 3.1, 3.1.1 3.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect {
    /// Protocol level asked for.
    pub version: Version,
    /// Clean start (MQTT 5) / clean session (3.1.1): discard any stored session.
    pub clean_start: bool,
    /// Keep alive, seconds (0: none).
    pub keep_alive: u16,
    /// Client identifier; empty asks the server to assign one.
    pub client_id: Arc<str>,
    /// User name, if the client sent one.
    pub username: Option<Arc<str>>,
    /// Password, if the client sent one (binary data in MQTT 5).
    pub password: Option<Bytes>,
    /// The will message, if any.
    pub will: Option<Will>,
    /// Seconds (MQTT 5; 3.1.1 sessions are mapped by the caller).
    pub session_expiry: Option<u32>,
    /// Receive maximum: QoS > 0 publishes the client accepts in flight at once.
    pub receive_max: Option<u16>,
    /// Largest packet the client accepts, in bytes.
    pub max_packet_size: Option<u32>,
    /// Highest topic alias the client accepts from the server.
    pub topic_alias_max: Option<u16>,
    /// Enhanced authentication method (MQTT 5 3.1.2.11.9); Ferry refuses it.
    pub auth_method: Option<Arc<str>>,
}

/// A CONNACK packet; the MQTT 5 properties are left out under 3.1.1.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Connack {
    /// The server resumed a stored session.
    pub session_present: bool,
    /// Reason code ([`reason`]); mapped to a return code under 3.1.1.
    pub code: u8,
    /// Session expiry interval the server uses, seconds, if not the client's.
    pub session_expiry: Option<u32>,
    /// QoS > 0 publishes the server accepts in flight at once.
    pub receive_max: Option<u16>,
    /// Highest QoS the server supports (`None`: 2).
    pub max_qos: Option<u8>,
    /// Largest packet the server accepts, in bytes.
    pub max_packet_size: Option<u32>,
    /// The client id the server assigned, when the client sent an empty one.
    pub assigned_client_id: Option<Arc<str>>,
    /// Highest topic alias the server accepts from the client.
    pub topic_alias_max: Option<u16>,
    /// Human-readable detail of `code`.
    pub reason_string: Option<Arc<str>>,
    /// Keep alive the client must use instead of its own, seconds.
    pub server_keep_alive: Option<u16>,
}

/// Subscription options of one SUBSCRIBE filter (MQTT 5 3.8.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubOptions {
    /// Maximum QoS the subscriber accepts, 0 to 2.
    pub qos: u8,
    /// Don't forward messages this connection published itself.
    pub no_local: bool,
    /// Keep the RETAIN flag as published instead of clearing it on live messages.
    pub retain_as_published: bool,
    /// 0 send retained at subscribe, 1 only for a new subscription, 2 never.
    pub retain_handling: u8,
}

/// (packet type, name) of the control packets a client sends, for the
/// request metrics (`ferry_requests_total{protocol="mqtt", api="PUBLISH"}`).
pub const TYPE_NAMES: &[(usize, &str)] = &[
    (1, "CONNECT"),
    (3, "PUBLISH"),
    (4, "PUBACK"),
    (5, "PUBREC"),
    (6, "PUBREL"),
    (7, "PUBCOMP"),
    (8, "SUBSCRIBE"),
    (10, "UNSUBSCRIBE"),
    (12, "PINGREQ"),
    (14, "DISCONNECT"),
    (15, "AUTH"),
];

/// The name of control packet type `kind` (the first byte's high nibble),
/// as in [`TYPE_NAMES`]; `"UNKNOWN"` for one a client does not send.
pub fn type_name(kind: usize) -> &'static str {
    TYPE_NAMES.iter().find(|(k, _)| *k == kind).map_or("UNKNOWN", |(_, name)| name)
}

/// One MQTT control packet, either direction. `pid` is the packet
/// identifier; `code` a reason code ([`reason`], `SUCCESS` under 3.1.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    /// Client opens a session.
    Connect(Box<Connect>),
    /// Server answers a CONNECT.
    Connack(Connack),
    /// An application message.
    Publish(Box<Publish>),
    /// QoS 1 acknowledgement.
    Puback {
        /// Identifier of the acknowledged PUBLISH.
        pid: u16,
        /// Reason code.
        code: u8,
    },
    /// QoS 2, step 1: publish received.
    Pubrec {
        /// Identifier of the received PUBLISH.
        pid: u16,
        /// Reason code.
        code: u8,
    },
    /// QoS 2, step 2: publish release.
    Pubrel {
        /// Identifier of the released PUBLISH.
        pid: u16,
        /// Reason code.
        code: u8,
    },
    /// QoS 2, step 3: publish complete.
    Pubcomp {
        /// Identifier of the completed PUBLISH.
        pid: u16,
        /// Reason code.
        code: u8,
    },
    /// Client subscribes to topic filters.
    Subscribe {
        /// Packet identifier, echoed by the SUBACK.
        pid: u16,
        /// Subscription identifier (MQTT 5), tagged onto matching publishes.
        subscription_id: Option<u32>,
        /// Topic filters with their options, in request order.
        filters: Vec<(Arc<str>, SubOptions)>,
    },
    /// Server answers a SUBSCRIBE.
    Suback {
        /// Identifier of the SUBSCRIBE.
        pid: u16,
        /// One per filter, in order: the granted QoS or an error reason code.
        codes: Vec<u8>,
    },
    /// Client unsubscribes from topic filters.
    Unsubscribe {
        /// Packet identifier, echoed by the UNSUBACK.
        pid: u16,
        /// Topic filters to remove.
        filters: Vec<Arc<str>>,
    },
    /// Server answers an UNSUBSCRIBE.
    Unsuback {
        /// Identifier of the UNSUBSCRIBE.
        pid: u16,
        /// One reason code per filter, in order (MQTT 5 only on the wire).
        codes: Vec<u8>,
    },
    /// Client keep-alive ping.
    Pingreq,
    /// Server answers a PINGREQ.
    Pingresp,
    /// Either side closes the connection.
    Disconnect {
        /// Reason code.
        code: u8,
        /// New session expiry interval, seconds (client to server, MQTT 5).
        session_expiry: Option<u32>,
        /// Human-readable reason string (MQTT 5).
        reason: Option<Arc<str>>,
    },
    /// Enhanced authentication exchange (MQTT 5); Ferry refuses it.
    Auth,
}

/// Why a frame could not be decoded, with the MQTT 5 reason code to
/// disconnect with.
#[derive(Debug, thiserror::Error)]
#[error("{detail} (reason 0x{code:02x})")]
pub struct DecodeError {
    /// Reason code to disconnect with.
    pub code: u8,
    /// What was wrong, for the log.
    pub detail: String,
}

impl DecodeError {
    /// The bytes do not parse (`MALFORMED`).
    pub fn malformed(detail: impl Into<String>) -> Self {
        DecodeError { code: reason::MALFORMED, detail: detail.into() }
    }
    /// The packet parses but breaks the protocol (`PROTOCOL_ERROR`).
    pub fn protocol(detail: impl Into<String>) -> Self {
        DecodeError { code: reason::PROTOCOL_ERROR, detail: detail.into() }
    }
}

/// The protocol level a CONNECT frame asks for (`None`: not a CONNECT or
/// too short to tell). Protocol name length 4 ("MQTT") or 6 ("MQIsdp").
pub fn connect_version(frame: &[u8]) -> Option<u8> {
    let body = frame.get(crate::codec::header_len(frame)?..)?;
    let name_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    body.get(2 + name_len).copied()
}

/// Decodes one whole frame (fixed header included).
pub fn decode(frame: &[u8], version: Version) -> Result<Packet, DecodeError> {
    // The codec accepts DUP on QoS 0, which both versions forbid.
    if frame.first().is_some_and(|b| b >> 4 == 3 && b & 0b1000 != 0 && b & 0b0110 == 0) {
        return Err(DecodeError::malformed("DUP set on a QoS 0 PUBLISH"));
    }
    match version {
        Version::V3 => match v3::Packet::decode(frame) {
            Ok(Some(p)) => from_v3(p),
            Ok(None) => Err(DecodeError::malformed("truncated packet")),
            Err(e) => Err(DecodeError::malformed(e.to_string())),
        },
        Version::V5 => match v5::Packet::decode(frame) {
            Ok(Some(p)) => from_v5(p),
            Ok(None) => Err(DecodeError::malformed("truncated packet")),
            Err(v5::ErrorV5::Common(mqtt_proto::Error::InvalidProtocol(..)))
            | Err(v5::ErrorV5::Common(mqtt_proto::Error::UnexpectedProtocol(_))) => {
                Err(DecodeError { code: reason::UNSUPPORTED_VERSION, detail: "unsupported protocol".into() })
            }
            Err(v5::ErrorV5::Common(mqtt_proto::Error::InvalidTopicName(_))) => {
                Err(DecodeError { code: reason::TOPIC_NAME_INVALID, detail: "invalid topic name".into() })
            }
            Err(v5::ErrorV5::InvalidPayloadFormat) => {
                Err(DecodeError { code: reason::PAYLOAD_FORMAT_INVALID, detail: "payload is not UTF-8".into() })
            }
            Err(e @ (v5::ErrorV5::DuplicatedProperty(_) | v5::ErrorV5::InvalidProperty(..))) => {
                Err(DecodeError::protocol(e.to_string()))
            }
            Err(e) => Err(DecodeError::malformed(e.to_string())),
        },
    }
}

fn qos_u8(q: QoS) -> u8 {
    q as u8
}

fn qos_of(q: u8) -> QoS {
    match q {
        0 => QoS::Level0,
        1 => QoS::Level1,
        _ => QoS::Level2,
    }
}

fn split_qos_pid(q: QosPid) -> (u8, Option<u16>) {
    match q {
        QosPid::Level0 => (0, None),
        QosPid::Level1(p) => (1, Some(p.value())),
        QosPid::Level2(p) => (2, Some(p.value())),
    }
}

fn pid(p: u16) -> Pid {
    // Ferry never allocates 0; a zero can only come from a bug.
    Pid::try_from(p).unwrap_or_else(|_| Pid::default())
}

fn props_from_v5(p: v5::PublishProperties) -> PublishProps {
    PublishProps {
        payload_utf8: p.payload_is_utf8,
        message_expiry: p.message_expiry_interval,
        topic_alias: p.topic_alias,
        response_topic: p.response_topic.map(|t| Arc::from(&*t)),
        correlation_data: p.correlation_data,
        user_properties: p.user_properties.into_iter().map(|u| (u.name, u.value)).collect(),
        subscription_ids: p.subscription_id.map(mqtt_proto::v5::VarByteInt::value).into_iter().collect(),
        content_type: p.content_type,
    }
}

fn from_v3(p: v3::Packet) -> Result<Packet, DecodeError> {
    Ok(match p {
        v3::Packet::Connect(c) => Packet::Connect(Box::new(Connect {
            version: Version::V3,
            clean_start: c.clean_session,
            keep_alive: c.keep_alive,
            client_id: c.client_id,
            username: c.username,
            password: c.password,
            will: c.last_will.map(|w| Will {
                topic: Arc::from(&*w.topic_name),
                payload: w.message,
                qos: qos_u8(w.qos),
                retain: w.retain,
                delay: 0,
                props: PublishProps::default(),
            }),
            session_expiry: None,
            receive_max: None,
            max_packet_size: None,
            topic_alias_max: None,
            auth_method: None,
        })),
        v3::Packet::Publish(p) => {
            let (qos, pid) = split_qos_pid(p.qos_pid);
            Packet::Publish(Box::new(Publish {
                dup: p.dup,
                qos,
                retain: p.retain,
                topic: Arc::from(&*p.topic_name),
                pid,
                payload: p.payload,
                props: PublishProps::default(),
            }))
        }
        v3::Packet::Puback(p) => Packet::Puback { pid: p.value(), code: 0 },
        v3::Packet::Pubrec(p) => Packet::Pubrec { pid: p.value(), code: 0 },
        v3::Packet::Pubrel(p) => Packet::Pubrel { pid: p.value(), code: 0 },
        v3::Packet::Pubcomp(p) => Packet::Pubcomp { pid: p.value(), code: 0 },
        v3::Packet::Subscribe(s) => Packet::Subscribe {
            pid: s.pid.value(),
            subscription_id: None,
            filters: s
                .topics
                .into_iter()
                .map(|(f, q)| {
                    let opts =
                        SubOptions { qos: qos_u8(q), no_local: false, retain_as_published: false, retain_handling: 0 };
                    (Arc::from(&*f), opts)
                })
                .collect(),
        },
        v3::Packet::Unsubscribe(u) => {
            Packet::Unsubscribe { pid: u.pid.value(), filters: u.topics.into_iter().map(|f| Arc::from(&*f)).collect() }
        }
        v3::Packet::Pingreq => Packet::Pingreq,
        v3::Packet::Disconnect => Packet::Disconnect { code: 0, session_expiry: None, reason: None },
        v3::Packet::Connack(_) | v3::Packet::Suback(_) | v3::Packet::Unsuback(_) | v3::Packet::Pingresp => {
            return Err(DecodeError::protocol("a server-to-client packet from a client"));
        }
    })
}

fn from_v5(p: v5::Packet) -> Result<Packet, DecodeError> {
    Ok(match p {
        v5::Packet::Connect(c) => Packet::Connect(Box::new(Connect {
            version: Version::V5,
            clean_start: c.clean_start,
            keep_alive: c.keep_alive,
            client_id: c.client_id,
            username: c.username,
            password: c.password,
            will: c.last_will.map(|w| {
                let wp = w.properties;
                Will {
                    topic: Arc::from(&*w.topic_name),
                    payload: w.payload,
                    qos: qos_u8(w.qos),
                    retain: w.retain,
                    delay: wp.delay_interval.unwrap_or(0),
                    props: PublishProps {
                        payload_utf8: wp.payload_is_utf8,
                        message_expiry: wp.message_expiry_interval,
                        topic_alias: None,
                        response_topic: wp.response_topic.map(|t| Arc::from(&*t)),
                        correlation_data: wp.correlation_data,
                        user_properties: wp.user_properties.into_iter().map(|u| (u.name, u.value)).collect(),
                        subscription_ids: Vec::new(),
                        content_type: wp.content_type,
                    },
                }
            }),
            session_expiry: c.properties.session_expiry_interval,
            receive_max: c.properties.receive_max,
            max_packet_size: c.properties.max_packet_size,
            topic_alias_max: c.properties.topic_alias_max,
            auth_method: c.properties.auth_method,
        })),
        v5::Packet::Publish(p) => {
            let (qos, pid) = split_qos_pid(p.qos_pid);
            Packet::Publish(Box::new(Publish {
                dup: p.dup,
                qos,
                retain: p.retain,
                topic: Arc::from(&*p.topic_name),
                pid,
                payload: p.payload,
                props: props_from_v5(p.properties),
            }))
        }
        v5::Packet::Puback(p) => Packet::Puback { pid: p.pid.value(), code: p.reason_code as u8 },
        v5::Packet::Pubrec(p) => Packet::Pubrec { pid: p.pid.value(), code: p.reason_code as u8 },
        v5::Packet::Pubrel(p) => Packet::Pubrel { pid: p.pid.value(), code: p.reason_code as u8 },
        v5::Packet::Pubcomp(p) => Packet::Pubcomp { pid: p.pid.value(), code: p.reason_code as u8 },
        v5::Packet::Subscribe(s) => Packet::Subscribe {
            pid: s.pid.value(),
            subscription_id: s.properties.subscription_id.map(mqtt_proto::v5::VarByteInt::value),
            filters: s
                .topics
                .into_iter()
                .map(|(f, o)| {
                    let opts = SubOptions {
                        qos: qos_u8(o.max_qos),
                        no_local: o.no_local,
                        retain_as_published: o.retain_as_published,
                        retain_handling: o.retain_handling as u8,
                    };
                    (Arc::from(&*f), opts)
                })
                .collect(),
        },
        v5::Packet::Unsubscribe(u) => {
            Packet::Unsubscribe { pid: u.pid.value(), filters: u.topics.into_iter().map(|f| Arc::from(&*f)).collect() }
        }
        v5::Packet::Pingreq => Packet::Pingreq,
        v5::Packet::Disconnect(d) => Packet::Disconnect {
            code: d.reason_code as u8,
            session_expiry: d.properties.session_expiry_interval,
            reason: d.properties.reason_string,
        },
        v5::Packet::Auth(_) => Packet::Auth,
        v5::Packet::Connack(_) | v5::Packet::Suback(_) | v5::Packet::Unsuback(_) | v5::Packet::Pingresp => {
            return Err(DecodeError::protocol("a server-to-client packet from a client"));
        }
    })
}

/// Encodes `packet` for `version` onto `out`. Fails only on values the
/// wire cannot carry (a topic past 64 KiB, say).
pub fn encode(packet: &Packet, version: Version, out: &mut BytesMut) -> Result<(), String> {
    if let (Version::V3, Packet::Suback { pid, codes }) = (version, packet) {
        // mqtt-proto 0.4.0 writes a refused subscription as 3 (its enum
        // index), which clients reject; MQTT 3.1.1 §3.9.3 says 0x80.
        out.put_u8(0x90);
        put_varint(out, 2 + codes.len())?;
        out.put_u16(*pid);
        for &c in codes {
            out.put_u8(if c <= 2 { c } else { 0x80 });
        }
        return Ok(());
    }
    let bytes = match version {
        Version::V3 => to_v3(packet)?.encode().map_err(|e| e.to_string())?,
        Version::V5 => to_v5(packet)?.encode().map_err(|e| e.to_string())?,
    };
    match packet {
        Packet::Publish(p) if version == Version::V5 && p.props.subscription_ids.len() > 1 => {
            put_more_subscription_ids(bytes.as_ref(), p, out)?;
        }
        _ => out.put_slice(bytes.as_ref()),
    }
    Ok(())
}

/// The subscription identifier property (MQTT 5 §2.2.2.2).
const SUBSCRIPTION_ID_PROPERTY: u8 = 0x0B;

/// Copies the codec's encoding of `p` (which carries its first subscription
/// identifier only: mqtt-proto's PublishProperties holds one) onto `out`
/// with the other identifiers appended to its properties, the property and
/// remaining lengths grown to match.
fn put_more_subscription_ids(encoded: &[u8], p: &Publish, out: &mut BytesMut) -> Result<(), String> {
    let malformed = || "PUBLISH encoding not as expected".to_string();
    let (remaining, n) = crate::codec::read_varint(encoded.get(1..).ok_or_else(malformed)?).ok_or_else(malformed)?;
    let header = 1 + n;
    // Topic (length-prefixed), packet id for QoS 1 and 2, then the properties.
    let props_at = header + 2 + p.topic.len() + if p.qos > 0 { 2 } else { 0 };
    let (props_len, m) =
        crate::codec::read_varint(encoded.get(props_at..).ok_or_else(malformed)?).ok_or_else(malformed)?;
    let props_end = props_at + m + props_len;
    let props = encoded.get(props_at + m..props_end).ok_or_else(malformed)?;
    let mut extra = BytesMut::new();
    for &id in p.props.subscription_ids.iter().skip(1) {
        extra.put_u8(SUBSCRIPTION_ID_PROPERTY);
        put_varint(&mut extra, id as usize)?;
    }
    let new_props_len = props_len + extra.len();
    let mut new_props_len_bytes = BytesMut::new();
    put_varint(&mut new_props_len_bytes, new_props_len)?;
    let new_remaining = remaining - m - props_len + new_props_len_bytes.len() + new_props_len;
    out.put_u8(encoded[0]);
    put_varint(out, new_remaining)?;
    out.put_slice(&encoded[header..props_at]);
    out.put_slice(&new_props_len_bytes);
    out.put_slice(props);
    out.put_slice(&extra);
    out.put_slice(&encoded[props_end..]);
    Ok(())
}

fn put_varint(out: &mut BytesMut, mut value: usize) -> Result<(), String> {
    if value > 268_435_455 {
        return Err(format!("{value} does not fit a variable byte integer"));
    }
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.put_u8(byte);
            return Ok(());
        }
        out.put_u8(byte | 0x80);
    }
}

fn topic_name(t: &str) -> Result<TopicName, String> {
    TopicName::try_from(t).map_err(|e| e.to_string())
}

fn to_v3(p: &Packet) -> Result<v3::Packet, String> {
    Ok(match p {
        Packet::Connack(c) => v3::Packet::Connack(v3::Connack::new(
            c.session_present,
            match c.code {
                0 => v3::ConnectReturnCode::Accepted,
                reason::UNSUPPORTED_VERSION => v3::ConnectReturnCode::UnacceptableProtocolVersion,
                reason::CLIENT_ID_NOT_VALID => v3::ConnectReturnCode::IdentifierRejected,
                reason::BAD_USER_OR_PASSWORD => v3::ConnectReturnCode::BadUserNameOrPassword,
                reason::NOT_AUTHORIZED => v3::ConnectReturnCode::NotAuthorized,
                _ => v3::ConnectReturnCode::ServerUnavailable,
            },
        )),
        Packet::Publish(p) => v3::Packet::Publish(v3::Publish {
            dup: p.dup,
            retain: p.retain,
            qos_pid: qos_pid(p.qos, p.pid),
            topic_name: topic_name(&p.topic)?,
            payload: p.payload.clone(),
        }),
        Packet::Puback { pid: p, .. } => v3::Packet::Puback(pid(*p)),
        Packet::Pubrec { pid: p, .. } => v3::Packet::Pubrec(pid(*p)),
        Packet::Pubrel { pid: p, .. } => v3::Packet::Pubrel(pid(*p)),
        Packet::Pubcomp { pid: p, .. } => v3::Packet::Pubcomp(pid(*p)),
        Packet::Suback { pid: p, codes } => v3::Packet::Suback(v3::Suback::new(
            pid(*p),
            codes
                .iter()
                .map(|c| match c {
                    0 => v3::SubscribeReturnCode::MaxLevel0,
                    1 => v3::SubscribeReturnCode::MaxLevel1,
                    2 => v3::SubscribeReturnCode::MaxLevel2,
                    _ => v3::SubscribeReturnCode::Failure,
                })
                .collect(),
        )),
        Packet::Unsuback { pid: p, .. } => v3::Packet::Unsuback(pid(*p)),
        Packet::Pingresp => v3::Packet::Pingresp,
        Packet::Pingreq => v3::Packet::Pingreq,
        Packet::Disconnect { .. } => v3::Packet::Disconnect,
        other => return Err(format!("{other:?} is not sent by a server")),
    })
}

fn qos_pid(qos: u8, p: Option<u16>) -> QosPid {
    match (qos, p) {
        (1, Some(p)) => QosPid::Level1(pid(p)),
        (2, Some(p)) => QosPid::Level2(pid(p)),
        _ => QosPid::Level0,
    }
}

fn to_v5(p: &Packet) -> Result<v5::Packet, String> {
    Ok(match p {
        Packet::Connack(c) => {
            let code = match c.code {
                0x00 => v5::ConnectReasonCode::Success,
                0x81 => v5::ConnectReasonCode::MalformedPacket,
                0x82 => v5::ConnectReasonCode::ProtocolError,
                0x84 => v5::ConnectReasonCode::UnsupportedProtocolVersion,
                0x85 => v5::ConnectReasonCode::ClientIdentifierNotValid,
                0x86 => v5::ConnectReasonCode::BadUserNameOrPassword,
                0x87 => v5::ConnectReasonCode::NotAuthorized,
                0x8C => v5::ConnectReasonCode::BadAuthMethod,
                0x95 => v5::ConnectReasonCode::PacketTooLarge,
                _ => v5::ConnectReasonCode::UnspecifiedError,
            };
            let mut ack = v5::Connack::new(c.session_present, code);
            let props = &mut ack.properties;
            props.session_expiry_interval = c.session_expiry;
            props.receive_max = c.receive_max;
            props.max_qos = c.max_qos.map(qos_of);
            props.max_packet_size = c.max_packet_size;
            props.assigned_client_id = c.assigned_client_id.clone();
            props.topic_alias_max = c.topic_alias_max;
            props.reason_string = c.reason_string.clone();
            props.server_keep_alive = c.server_keep_alive;
            props.retain_available = Some(true);
            props.wildcard_subscription_available = Some(true);
            props.subscription_id_available = Some(true);
            props.shared_subscription_available = Some(true);
            v5::Packet::Connack(ack)
        }
        Packet::Publish(p) => {
            let mut out = v5::Publish::new(qos_pid(p.qos, p.pid), topic_name(&p.topic)?, p.payload.clone());
            out.dup = p.dup;
            out.retain = p.retain;
            let pr = &p.props;
            out.properties = v5::PublishProperties {
                payload_is_utf8: pr.payload_utf8,
                message_expiry_interval: pr.message_expiry,
                topic_alias: pr.topic_alias,
                response_topic: match &pr.response_topic {
                    Some(t) => Some(topic_name(t)?),
                    None => None,
                },
                correlation_data: pr.correlation_data.clone(),
                user_properties: pr
                    .user_properties
                    .iter()
                    .map(|(n, v)| v5::UserProperty { name: n.clone(), value: v.clone() })
                    .collect(),
                // The codec carries one identifier; `encode` adds the others.
                subscription_id: match pr.subscription_ids.first() {
                    Some(&i) => Some(v5::VarByteInt::try_from(i).map_err(|e| e.to_string())?),
                    None => None,
                },
                content_type: pr.content_type.clone(),
            };
            v5::Packet::Publish(out)
        }
        Packet::Puback { pid: p, code } => v5::Packet::Puback(v5::Puback::new(
            pid(*p),
            match *code {
                0x00 => v5::PubackReasonCode::Success,
                0x10 => v5::PubackReasonCode::NoMatchingSubscribers,
                0x87 => v5::PubackReasonCode::NotAuthorized,
                0x90 => v5::PubackReasonCode::TopicNameInvalid,
                0x97 => v5::PubackReasonCode::QuotaExceeded,
                0x99 => v5::PubackReasonCode::PayloadFormatInvalid,
                _ => v5::PubackReasonCode::UnspecifiedError,
            },
        )),
        Packet::Pubrec { pid: p, code } => v5::Packet::Pubrec(v5::Pubrec::new(
            pid(*p),
            match *code {
                0x00 => v5::PubrecReasonCode::Success,
                0x10 => v5::PubrecReasonCode::NoMatchingSubscribers,
                0x87 => v5::PubrecReasonCode::NotAuthorized,
                0x90 => v5::PubrecReasonCode::TopicNameInvalid,
                0x97 => v5::PubrecReasonCode::QuotaExceeded,
                0x99 => v5::PubrecReasonCode::PayloadFormatInvalid,
                _ => v5::PubrecReasonCode::UnspecifiedError,
            },
        )),
        Packet::Pubrel { pid: p, code } => v5::Packet::Pubrel(v5::Pubrel::new(
            pid(*p),
            if *code == 0 { v5::PubrelReasonCode::Success } else { v5::PubrelReasonCode::PacketIdentifierNotFound },
        )),
        Packet::Pubcomp { pid: p, code } => v5::Packet::Pubcomp(v5::Pubcomp::new(
            pid(*p),
            if *code == 0 { v5::PubcompReasonCode::Success } else { v5::PubcompReasonCode::PacketIdentifierNotFound },
        )),
        Packet::Suback { pid: p, codes } => v5::Packet::Suback(v5::Suback::new(
            pid(*p),
            codes
                .iter()
                .map(|c| match *c {
                    0 => v5::SubscribeReasonCode::GrantedQoS0,
                    1 => v5::SubscribeReasonCode::GrantedQoS1,
                    2 => v5::SubscribeReasonCode::GrantedQoS2,
                    0x87 => v5::SubscribeReasonCode::NotAuthorized,
                    0x8F => v5::SubscribeReasonCode::TopicFilterInvalid,
                    0x97 => v5::SubscribeReasonCode::QuotaExceeded,
                    0x9E => v5::SubscribeReasonCode::SharedSubscriptionNotSupported,
                    _ => v5::SubscribeReasonCode::UnspecifiedError,
                })
                .collect(),
        )),
        Packet::Unsuback { pid: p, codes } => v5::Packet::Unsuback(v5::Unsuback::new(
            pid(*p),
            codes
                .iter()
                .map(|c| match *c {
                    0x00 => v5::UnsubscribeReasonCode::Success,
                    0x11 => v5::UnsubscribeReasonCode::NoSubscriptionExisted,
                    0x87 => v5::UnsubscribeReasonCode::NotAuthorized,
                    0x8F => v5::UnsubscribeReasonCode::TopicFilterInvalid,
                    _ => v5::UnsubscribeReasonCode::UnspecifiedError,
                })
                .collect(),
        )),
        Packet::Pingresp => v5::Packet::Pingresp,
        Packet::Pingreq => v5::Packet::Pingreq,
        Packet::Disconnect { code, reason: why, .. } => {
            let code = match *code {
                0x00 => v5::DisconnectReasonCode::NormalDisconnect,
                0x81 => v5::DisconnectReasonCode::MalformedPacket,
                0x82 => v5::DisconnectReasonCode::ProtocolError,
                0x87 => v5::DisconnectReasonCode::NotAuthorized,
                0x8B => v5::DisconnectReasonCode::ServerShuttingDown,
                0x8D => v5::DisconnectReasonCode::KeepAliveTimeout,
                0x8E => v5::DisconnectReasonCode::SessionTakenOver,
                0x8F => v5::DisconnectReasonCode::TopicFilterInvalid,
                0x90 => v5::DisconnectReasonCode::TopicNameInvalid,
                0x93 => v5::DisconnectReasonCode::ReceiveMaximumExceeded,
                0x94 => v5::DisconnectReasonCode::TopicAliasInvalid,
                0x95 => v5::DisconnectReasonCode::PacketTooLarge,
                0x97 => v5::DisconnectReasonCode::QuotaExceeded,
                0x99 => v5::DisconnectReasonCode::PayloadFormatInvalid,
                0x9E => v5::DisconnectReasonCode::SharedSubscriptionNotSupported,
                _ => v5::DisconnectReasonCode::UnspecifiedError,
            };
            let mut d = v5::Disconnect::new(code);
            d.properties.reason_string = why.clone();
            v5::Packet::Disconnect(d)
        }
        other => return Err(format!("{other:?} is not sent by a server")),
    })
}

/// Encodes a client-side packet (tests and fuzzing build inputs with it).
pub fn encode_client(packet: &Packet, version: Version) -> Result<Vec<u8>, String> {
    let bytes = match (packet, version) {
        (Packet::Connect(c), Version::V3) => {
            let mut out = v3::Connect::new(c.client_id.clone(), c.keep_alive);
            out.clean_session = c.clean_start;
            out.username = c.username.clone();
            out.password = c.password.clone();
            v3::Packet::Connect(out).encode().map_err(|e| e.to_string())?
        }
        (Packet::Connect(c), Version::V5) => {
            let mut out = v5::Connect::new(c.client_id.clone(), c.keep_alive);
            out.clean_start = c.clean_start;
            out.username = c.username.clone();
            out.password = c.password.clone();
            out.properties.session_expiry_interval = c.session_expiry;
            v5::Packet::Connect(out).encode().map_err(|e| e.to_string())?
        }
        (Packet::Subscribe { pid: p, filters, .. }, Version::V5) => {
            let topics = filters
                .iter()
                .map(|(f, o)| {
                    let mut opts = v5::SubscriptionOptions::new(qos_of(o.qos));
                    opts.no_local = o.no_local;
                    Ok((TopicFilter::try_from(&**f).map_err(|e| e.to_string())?, opts))
                })
                .collect::<Result<Vec<_>, String>>()?;
            v5::Packet::Subscribe(v5::Subscribe::new(pid(*p), topics)).encode().map_err(|e| e.to_string())?
        }
        (p, Version::V3) => to_v3(p)?.encode().map_err(|e| e.to_string())?,
        (p, Version::V5) => to_v5(p)?.encode().map_err(|e| e.to_string())?,
    };
    Ok(bytes.as_ref().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_suback_refusal_is_0x80() {
        let mut out = BytesMut::new();
        let ack = Packet::Suback { pid: 7, codes: vec![1, reason::NOT_AUTHORIZED, 0, 2] };
        encode(&ack, Version::V3, &mut out).unwrap();
        assert_eq!(&out[..], &[0x90, 6, 0, 7, 1, 0x80, 0, 2]);
        // mqtt-proto reads it back (it accepts 0x80 as Failure).
        let decoded = v3::Packet::decode(&out[..]).unwrap().unwrap();
        assert!(matches!(decoded, v3::Packet::Suback(s) if s.topics[1] == v3::SubscribeReturnCode::Failure));
    }

    fn publish(qos: u8) -> Publish {
        Publish {
            dup: false,
            qos,
            retain: true,
            topic: "a/b".into(),
            pid: (qos > 0).then_some(7),
            payload: Bytes::from_static(b"hello"),
            props: PublishProps::default(),
        }
    }

    #[test]
    fn publishes_round_trip_in_both_versions() {
        for version in [Version::V3, Version::V5] {
            for qos in 0..=2 {
                let mut p = publish(qos);
                if version == Version::V5 {
                    p.props.user_properties = vec![("k".into(), "v".into())];
                    p.props.message_expiry = Some(30);
                    p.props.response_topic = Some("reply/to".into());
                    p.props.correlation_data = Some(Bytes::from_static(b"id"));
                    p.props.content_type = Some("text/plain".into());
                }
                let packet = Packet::Publish(Box::new(p));
                let mut out = BytesMut::new();
                encode(&packet, version, &mut out).unwrap();
                assert_eq!(decode(&out, version).unwrap(), packet);
            }
        }
    }

    #[test]
    fn several_subscription_ids_go_out_as_one_property_each() {
        for qos in 0..=2 {
            let mut p = publish(qos);
            p.props.user_properties = vec![("k".into(), "v".into())];
            let mut one = BytesMut::new();
            p.props.subscription_ids = vec![1];
            encode(&Packet::Publish(Box::new(p.clone())), Version::V5, &mut one).unwrap();
            let mut three = BytesMut::new();
            p.props.subscription_ids = vec![1, 300, 7];
            encode(&Packet::Publish(Box::new(p)), Version::V5, &mut three).unwrap();
            // Same packet plus the properties 0x0B 300 and 0x0B 7 after the
            // codec's own, lengths grown by their 5 bytes.
            let props_at = 2 + 2 + 3 + if qos > 0 { 2 } else { 0 };
            let props_len = usize::from(one[props_at]);
            let mut expected = one.to_vec();
            expected[1] += 5;
            expected[props_at] += 5;
            let end = props_at + 1 + props_len;
            expected.splice(end..end, [0x0B, 0xAC, 0x02, 0x0B, 0x07]);
            assert_eq!(three.to_vec(), expected, "qos {qos}");
            assert_eq!(&three[props_at + 1..props_at + 3], &[0x0B, 0x01]);
        }
    }

    #[test]
    fn packet_types_have_the_names_the_metrics_and_spans_use() {
        assert_eq!(type_name(3), "PUBLISH");
        assert_eq!(type_name(12), "PINGREQ");
        // Server-only and invalid types: no name of their own.
        assert_eq!(type_name(2), "UNKNOWN");
        assert_eq!(type_name(usize::MAX), "UNKNOWN");
    }

    #[test]
    fn connect_version_reads_the_protocol_level() {
        let c = Connect {
            version: Version::V5,
            clean_start: true,
            keep_alive: 30,
            client_id: "c".into(),
            username: None,
            password: None,
            will: None,
            session_expiry: Some(60),
            receive_max: None,
            max_packet_size: None,
            topic_alias_max: None,
            auth_method: None,
        };
        let v5 = encode_client(&Packet::Connect(Box::new(c.clone())), Version::V5).unwrap();
        assert_eq!(connect_version(&v5), Some(5));
        let Packet::Connect(back) = decode(&v5, Version::V5).unwrap() else { panic!() };
        assert_eq!(back.session_expiry, Some(60));
        let v3 = encode_client(&Packet::Connect(Box::new(c)), Version::V3).unwrap();
        assert_eq!(connect_version(&v3), Some(4));
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        // Reserved flag bits on SUBSCRIBE, QoS 3, DUP on QoS 0, bad UTF-8.
        for frame in [
            &[0x80, 0x06, 0, 1, 0, 1, b'a', 0][..],
            &[0x36, 0x05, 0, 1, b'a', 0, 1][..],
            &[0x38, 0x03, 0, 1, b'a'][..],
            &[0x30, 0x04, 0, 2, 0xff, 0xfe][..],
            &[0xf2, 0x00][..],
        ] {
            assert!(decode(frame, Version::V3).is_err(), "{frame:?}");
            assert!(decode(frame, Version::V5).is_err(), "{frame:?}");
        }
    }
}
