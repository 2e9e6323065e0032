//! MQTT state as cluster metadata (issue #17): persistent sessions (their
//! subscriptions, expiry and the quorum queue holding their QoS 1/2
//! messages) and retained messages, so every node routes to every
//! persistent session and answers a subscription with the same retained
//! messages, and a client resumes its session on any node. The records
//! ([`MqttRecord`]) build [`MetadataImage::mqtt`]; [`mqtt_change`] checks a
//! request (a record) and adds the records of the session queue's
//! declaration or deletion (through [`amqp_change`]), in one Raft entry.
//! docs/cluster.md, "MQTT in a cluster".
//!
//! Message contents are the front-end's (opaque bytes, base64 here).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::amqp::{AmqpRequest, Arguments, QueueTopicMaker, QueueType, amqp_change};
use super::{MetadataError, MetadataImage, MetadataRecord};
use crate::messaging::HeaderValue;

/// The vhost holding MQTT session queues (quorum queues). No AMQP client
/// reaches it: it is no vhost record, and cannot be created as one.
pub const MQTT_VHOST: &str = "__mqtt";

/// Largest retained message (its front-end encoding) the metadata keeps:
/// retained messages ride in the Raft log and in every node's image.
pub const MAX_RETAINED_BYTES: usize = 64 * 1024;

/// Most subscriptions one session records.
pub const MAX_SUBSCRIPTIONS: usize = 1024;

/// One subscription of a persistent session (MQTT 5 options included).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MqttSubscription {
    /// The filter as subscribed, `$share/group/` prefix included.
    pub filter: String,
    /// Maximum QoS granted, 0 to 2.
    pub qos: u8,
    /// Don't send the subscriber's own publishes back to it.
    #[serde(default)]
    pub no_local: bool,
    /// Keep the RETAIN flag of live messages as published.
    #[serde(default)]
    pub retain_as_published: bool,
    /// 0 send retained messages at subscribe, 1 only for a new one, 2 never.
    #[serde(default)]
    pub retain_handling: u8,
    /// Subscription identifier (MQTT 5).
    #[serde(default)]
    pub id: Option<u32>,
}

/// A persistent session (session expiry above 0) as the cluster knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MqttSession {
    /// The node its client attached to last: a node holding the client's
    /// connection drops it when another node takes the session over.
    pub node: i32,
    /// Session expiry, seconds (`u32::MAX`: never).
    pub expiry: u32,
    /// Wall-clock ms its last connection ended; `None` while connected.
    #[serde(default)]
    pub disconnected_at: Option<i64>,
    /// Subscriptions, sorted by filter.
    pub subscriptions: Vec<MqttSubscription>,
    /// The quorum queue (in [`MQTT_VHOST`]) holding its QoS 1/2 messages;
    /// `None`: its messages stay on `node` (a single node's session).
    #[serde(default)]
    pub queue: Option<String>,
    /// Without `queue`: the id of its node-local queue on `node`.
    #[serde(default)]
    pub local_queue: Option<u64>,
    /// Most messages its queue holds (`x-max-length` with
    /// `reject-publish`: a message past it is dropped for the session).
    #[serde(default)]
    pub queue_limit: Option<u64>,
    /// The will of its connection on `node`: published by another node if
    /// `node` dies with the client connected.
    #[serde(default)]
    pub will: Option<WillDef>,
    /// Its QoS 2 exchanges half done (a replicated session's: a node
    /// taking the session over carries them on).
    #[serde(default)]
    pub qos2: Qos2State,
}

/// A session's QoS 2 exchanges half done, as its node recorded them
/// (before PUBREC, PUBREL and PUBCOMP go out: docs/cluster.md).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Qos2State {
    /// Inbound packet ids received (their message routed) and not yet
    /// released: a resend is acknowledged, not routed again.
    #[serde(default)]
    pub received: Vec<u16>,
    /// Outbound packet ids released (PUBREL sent) and not yet completed,
    /// with their message's queue offset: PUBREL goes out again on resume.
    #[serde(default)]
    pub released: Vec<(u16, Option<u64>)>,
}

/// A connection's will as the metadata keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WillDef {
    /// The will message, base64 of the front-end's encoding.
    pub data: String,
    /// Will delay, seconds.
    pub delay: u32,
    /// Message expiry of the will once published, seconds.
    #[serde(default)]
    pub expiry: Option<u32>,
}

/// A retained message: the front-end's encoding of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetainedMessage {
    /// The message, base64 of the front-end's encoding.
    pub data: String,
    /// Wall-clock ms after which it is no longer handed out.
    #[serde(default)]
    pub expires_at: Option<i64>,
}

/// MQTT state in the image (shared by `Arc`: cloned on every apply).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MqttState {
    /// Persistent sessions by client id.
    pub sessions: BTreeMap<String, MqttSession>,
    /// Retained messages by topic.
    pub retained: BTreeMap<String, RetainedMessage>,
    /// Wills of clean sessions' connections (session expiry 0: not
    /// sessions of the metadata), by client id, then by the node holding
    /// the connection: published by another node if that node dies.
    #[serde(default)]
    pub clean_wills: BTreeMap<String, BTreeMap<i32, CleanWill>>,
}

/// The will of a clean session's connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanWill {
    /// The connection's id on its node (a later connection of the same
    /// client there replaces it; only its own clearing removes it).
    pub conn: u64,
    /// The will.
    pub will: WillDef,
}

/// A change to the MQTT state; also the request the broker sends
/// (`ControllerRequest::Mqtt`), checked by [`mqtt_change`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MqttRecord {
    /// Creates or replaces a persistent session. A request naming a queue
    /// the metadata does not declare yet declares it (quorum) in the same
    /// entry; one replacing another queue deletes the old one.
    PutSession {
        /// Client id.
        client_id: String,
        /// The session.
        session: MqttSession,
    },
    /// A client resumes its session on `node`, with session expiry
    /// `expiry`: the rest (subscriptions, queue) is kept as the metadata
    /// has it, whatever this node's image had seen. Refused
    /// (`ResourceNotFound`) if the session ended meanwhile.
    Attach {
        /// Client id.
        client_id: String,
        /// The node the client is connected to now.
        node: i32,
        /// Session expiry, seconds.
        expiry: u32,
        /// The new connection's will (recorded with the attach: no moment
        /// where the connection is attached and its will unknown).
        #[serde(default)]
        will: Option<WillDef>,
    },
    /// The will of the session's connection on `node` (after its
    /// `Attach`, which clears the previous connection's); nothing changes
    /// if the session is attached to another node now.
    SetWill {
        /// Client id.
        client_id: String,
        /// The node holding the connection.
        node: i32,
        /// The will.
        will: WillDef,
    },
    /// The session's connection on `node` ended at `at` (wall-clock ms;
    /// its will, if any, is that node's to publish, so it is cleared);
    /// nothing changes if the session is attached to another node now.
    Detach {
        /// Client id.
        client_id: String,
        /// The node whose connection ended.
        node: i32,
        /// When.
        at: i64,
    },
    /// The QoS 2 exchanges half done of the session's connection on
    /// `node`; nothing changes if the session is attached to another node.
    Qos2 {
        /// Client id.
        client_id: String,
        /// The node holding the connection.
        node: i32,
        /// The exchanges.
        state: Qos2State,
    },
    /// Ends a session (clean start, expiry); its queue is deleted in the
    /// same entry. Absent: nothing changes.
    DeleteSession {
        /// Client id.
        client_id: String,
    },
    /// Sets (`Some`) or clears the will of a clean session's connection
    /// on `node`.
    CleanWill {
        /// Client id.
        client_id: String,
        /// The node holding the connection.
        node: i32,
        /// The connection's id on its node.
        conn: u64,
        /// The will; `None` clears it if it is still connection `conn`'s
        /// (the connection ended, its will published or dropped by its
        /// node, or by another if that node died).
        will: Option<WillDef>,
    },
    /// Sets (`Some`) or clears a topic's retained message.
    Retain {
        /// Topic name.
        topic: String,
        /// The message; `None` clears it.
        message: Option<RetainedMessage>,
    },
}

/// The records carrying out `request` from node `from` against `image`, in
/// order (a queue's topic and declaration before the session naming it).
pub fn mqtt_change(
    image: &MetadataImage,
    from: i32,
    request: &MqttRecord,
    make_topic: &mut QueueTopicMaker<'_>,
) -> Result<Vec<MetadataRecord>, MetadataError> {
    let invalid = |why: String| Err(MetadataError::InvalidRequest(why));
    let declared = |q: &str| image.amqp.get(MQTT_VHOST).is_some_and(|d| d.queues.contains_key(q));
    let delete_queue = |q: &str, records: &mut Vec<MetadataRecord>| -> Result<(), MetadataError> {
        let request = AmqpRequest::DeleteQueue { vhost: MQTT_VHOST.into(), name: q.into() };
        records.extend(amqp_change(image, from, &request, &mut |_, _| {
            Err(MetadataError::InvalidRequest("no topic is made by a deletion".into()))
        })?);
        Ok(())
    };
    let mut records = Vec::new();
    match request {
        MqttRecord::PutSession { client_id, session } => {
            if client_id.is_empty() || client_id.len() > u16::MAX as usize {
                return invalid(format!("invalid MQTT client id of {} bytes", client_id.len()));
            }
            if session.subscriptions.len() > MAX_SUBSCRIPTIONS {
                return invalid(format!("{} subscriptions (at most {MAX_SUBSCRIPTIONS})", session.subscriptions.len()));
            }
            let old = image.mqtt.sessions.get(client_id);
            // Its QoS 2 exchanges are kept (`apply`): not a change.
            if old.is_some_and(|o| *o == MqttSession { qos2: o.qos2.clone(), ..session.clone() }) {
                return Ok(records);
            }
            if let Some(q) = old.and_then(|o| o.queue.as_deref())
                && session.queue.as_deref() != Some(q)
            {
                delete_queue(q, &mut records)?;
            }
            if let Some(q) = session.queue.as_deref()
                && !declared(q)
            {
                let mut arguments = Arguments::default();
                if let Some(limit) = session.queue_limit {
                    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                    arguments.0.insert("x-max-length".into(), HeaderValue::Int(limit));
                    arguments.0.insert("x-overflow".into(), HeaderValue::Str("reject-publish".into()));
                }
                let request = AmqpRequest::DeclareQueue {
                    vhost: MQTT_VHOST.into(),
                    name: q.into(),
                    auto_delete: false,
                    arguments,
                    queue_type: QueueType::Quorum { group_size: None },
                };
                records.extend(amqp_change(image, from, &request, make_topic)?);
            }
        }
        MqttRecord::Attach { client_id, will, .. } => {
            if !image.mqtt.sessions.contains_key(client_id) {
                return Err(MetadataError::ResourceNotFound(format!("no MQTT session {client_id}")));
            }
            if will.as_ref().is_some_and(|w| w.data.len() > MAX_RETAINED_BYTES.div_ceil(3) * 4) {
                return invalid(format!("will message over {MAX_RETAINED_BYTES} bytes"));
            }
        }
        MqttRecord::Qos2 { client_id, node, state } => {
            if image.mqtt.sessions.get(client_id).is_none_or(|s| s.node != *node || s.qos2 == *state) {
                return Ok(records);
            }
            if state.received.len() + state.released.len() > 2 * usize::from(u16::MAX) {
                return invalid("more QoS 2 exchanges than packet ids".into());
            }
        }
        MqttRecord::Detach { client_id, node, .. } | MqttRecord::SetWill { client_id, node, .. } => {
            if image.mqtt.sessions.get(client_id).is_none_or(|s| s.node != *node) {
                return Ok(records);
            }
            if let MqttRecord::SetWill { will, .. } = request
                && will.data.len() > MAX_RETAINED_BYTES.div_ceil(3) * 4
            {
                return invalid(format!("will message over {MAX_RETAINED_BYTES} bytes"));
            }
        }
        MqttRecord::CleanWill { client_id, node, conn, will } => {
            if client_id.is_empty() || client_id.len() > u16::MAX as usize {
                return invalid(format!("invalid MQTT client id of {} bytes", client_id.len()));
            }
            if will.as_ref().is_some_and(|w| w.data.len() > MAX_RETAINED_BYTES.div_ceil(3) * 4) {
                return invalid(format!("will message over {MAX_RETAINED_BYTES} bytes"));
            }
            let now = image.mqtt.clean_wills.get(client_id).and_then(|w| w.get(node));
            let unchanged = match will {
                Some(w) => now.is_some_and(|n| n.conn == *conn && n.will == *w),
                None => now.is_none_or(|n| n.conn != *conn),
            };
            if unchanged {
                return Ok(records);
            }
        }
        MqttRecord::DeleteSession { client_id } => {
            let Some(old) = image.mqtt.sessions.get(client_id) else { return Ok(records) };
            if let Some(q) = old.queue.as_deref() {
                delete_queue(q, &mut records)?;
            }
        }
        MqttRecord::Retain { topic, message } => {
            if topic.is_empty() || topic.len() > u16::MAX as usize {
                return invalid(format!("invalid MQTT topic of {} bytes", topic.len()));
            }
            if let Some(m) = message
                && m.data.len() > MAX_RETAINED_BYTES.div_ceil(3) * 4
            {
                return invalid(format!("retained message over {MAX_RETAINED_BYTES} bytes"));
            }
            if image.mqtt.retained.get(topic) == message.as_ref() {
                return Ok(records);
            }
        }
    }
    records.push(MetadataRecord::Mqtt(request.clone()));
    Ok(records)
}

/// Applies `record` to the image's MQTT state (never fails: every record
/// is a plain set or removal).
pub(super) fn apply(state: &mut Arc<MqttState>, record: &MqttRecord) {
    let s = Arc::make_mut(state);
    match record {
        MqttRecord::PutSession { client_id, session } => {
            // Subscriptions and expiry change; QoS 2 exchanges are `Qos2`'s.
            let qos2 = s.sessions.get(client_id).map(|old| old.qos2.clone()).unwrap_or_default();
            s.sessions.insert(client_id.clone(), MqttSession { qos2, ..session.clone() });
        }
        MqttRecord::Qos2 { client_id, node, state } => {
            if let Some(session) = s.sessions.get_mut(client_id).filter(|s| s.node == *node) {
                session.qos2 = state.clone();
            }
        }
        MqttRecord::Attach { client_id, node, expiry, will } => {
            if let Some(session) = s.sessions.get_mut(client_id) {
                session.node = *node;
                session.expiry = *expiry;
                session.disconnected_at = None;
                session.will.clone_from(will);
            }
        }
        MqttRecord::CleanWill { client_id, node, conn, will: Some(w) } => {
            let will = CleanWill { conn: *conn, will: w.clone() };
            s.clean_wills.entry(client_id.clone()).or_default().insert(*node, will);
        }
        MqttRecord::CleanWill { client_id, node, conn, will: None } => {
            if let Some(wills) = s.clean_wills.get_mut(client_id) {
                if wills.get(node).is_some_and(|w| w.conn == *conn) {
                    wills.remove(node);
                }
                if wills.is_empty() {
                    s.clean_wills.remove(client_id);
                }
            }
        }
        MqttRecord::SetWill { client_id, node, will } => {
            if let Some(session) = s.sessions.get_mut(client_id).filter(|s| s.node == *node) {
                session.will = Some(will.clone());
            }
        }
        MqttRecord::Detach { client_id, node, at } => {
            if let Some(session) = s.sessions.get_mut(client_id).filter(|s| s.node == *node) {
                session.disconnected_at = Some(*at);
                session.will = None;
            }
        }
        MqttRecord::DeleteSession { client_id } => {
            s.sessions.remove(client_id);
        }
        MqttRecord::Retain { topic, message: Some(m) } => {
            s.retained.insert(topic.clone(), m.clone());
        }
        MqttRecord::Retain { topic, message: None } => {
            s.retained.remove(topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    /// Applies what `mqtt_change` makes, as a controller would.
    fn change(image: &mut MetadataImage, request: MqttRecord) -> Result<usize, MetadataError> {
        let mut make_topic = |name: &str, _: Option<usize>| {
            let id = Uuid::new_v4();
            let create = MetadataRecord::CreateTopic {
                name: name.into(),
                id,
                internal: true,
                configs: BTreeMap::new(),
                replicas: vec![vec![1]],
            };
            Ok((id, vec![create]))
        };
        let records = mqtt_change(image, 1, &request, &mut make_topic)?;
        let n = records.len();
        image.apply_batch(image.applied_index + 1, &records)?;
        Ok(n)
    }

    fn session(queue: Option<&str>, filters: &[&str]) -> MqttSession {
        MqttSession {
            node: 1,
            expiry: 60,
            disconnected_at: None,
            subscriptions: filters
                .iter()
                .map(|f| MqttSubscription { filter: (*f).into(), qos: 1, ..Default::default() })
                .collect(),
            queue: queue.map(String::from),
            local_queue: None,
            queue_limit: Some(10),
            will: None,
            qos2: Qos2State::default(),
        }
    }

    fn queues(image: &MetadataImage) -> Vec<String> {
        image.amqp.get(MQTT_VHOST).map(|d| d.queues.keys().cloned().collect()).unwrap_or_default()
    }

    #[test]
    fn a_session_declares_its_queue_and_takes_it_away_when_it_ends() {
        let mut image = MetadataImage::default();
        let put = |s| MqttRecord::PutSession { client_id: "c".into(), session: s };
        // Topic, queue declaration, session: one entry.
        assert_eq!(change(&mut image, put(session(Some("q1"), &["a/#"]))).unwrap(), 3);
        assert_eq!(queues(&image), ["q1"]);
        let args = &image.amqp[MQTT_VHOST].queues["q1"].arguments.0;
        assert_eq!(args.get("x-max-length"), Some(&HeaderValue::Int(10)));
        assert_eq!(image.mqtt.sessions["c"].subscriptions[0].filter, "a/#");
        let topics = image.topics.len();
        // The same again changes nothing; a new subscription only the session.
        assert_eq!(change(&mut image, put(session(Some("q1"), &["a/#"]))).unwrap(), 0);
        assert_eq!(change(&mut image, put(session(Some("q1"), &["a/#", "b"]))).unwrap(), 1);
        assert_eq!(image.topics.len(), topics);
        // Another queue (a clean start): the old one and its topic go.
        change(&mut image, put(session(Some("q2"), &[]))).unwrap();
        assert_eq!(queues(&image), ["q2"]);
        assert_eq!(image.topics.len(), topics);
        change(&mut image, MqttRecord::DeleteSession { client_id: "c".into() }).unwrap();
        assert!(queues(&image).is_empty() && image.mqtt.sessions.is_empty() && image.topics.is_empty());
        // Absent: nothing to do, and nothing to attach to.
        assert_eq!(change(&mut image, MqttRecord::DeleteSession { client_id: "c".into() }).unwrap(), 0);
        let attach = |node| MqttRecord::Attach { client_id: "c".into(), node, expiry: 30, will: None };
        assert!(matches!(change(&mut image, attach(2)), Err(MetadataError::ResourceNotFound(_))));
        // Attached elsewhere: subscriptions and queue kept; a late detach
        // from the node it left changes nothing.
        change(&mut image, put(session(Some("q3"), &["k"]))).unwrap();
        change(&mut image, attach(2)).unwrap();
        let detach = |node| MqttRecord::Detach { client_id: "c".into(), node, at: 7 };
        assert_eq!(change(&mut image, detach(1)).unwrap(), 0);
        let s = &image.mqtt.sessions["c"];
        assert_eq!((s.node, s.expiry, s.disconnected_at, s.queue.as_deref()), (2, 30, None, Some("q3")));
        assert_eq!(s.subscriptions.len(), 1);
        // A will: set by the node holding the connection only, cleared by its detach.
        let will = WillDef { data: "AA==".into(), delay: 0, expiry: None };
        let set_will = |node| MqttRecord::SetWill { client_id: "c".into(), node, will: will.clone() };
        assert_eq!(change(&mut image, set_will(1)).unwrap(), 0);
        change(&mut image, set_will(2)).unwrap();
        assert_eq!(image.mqtt.sessions["c"].will, Some(will.clone()));
        change(&mut image, detach(2)).unwrap();
        assert_eq!(image.mqtt.sessions["c"].disconnected_at, Some(7));
        assert_eq!(image.mqtt.sessions["c"].will, None);
        change(&mut image, MqttRecord::DeleteSession { client_id: "c".into() }).unwrap();
        // QoS 2 exchanges: recorded by the node holding the connection
        // only, kept by a takeover (Attach) and by a new subscription.
        change(&mut image, put(session(Some("q3"), &["k"]))).unwrap();
        let state = Qos2State { received: vec![3, 9], released: vec![(7, Some(70))] };
        let qos2 = |node, state: &Qos2State| MqttRecord::Qos2 { client_id: "c".into(), node, state: state.clone() };
        assert_eq!(change(&mut image, qos2(2, &state)).unwrap(), 0, "not the session's node");
        assert_eq!(change(&mut image, qos2(1, &state)).unwrap(), 1);
        assert_eq!(change(&mut image, qos2(1, &state)).unwrap(), 0, "the same again");
        change(&mut image, put(MqttSession { node: 1, ..session(Some("q3"), &["k", "z"]) })).unwrap();
        change(&mut image, attach(2)).unwrap();
        let s = &image.mqtt.sessions["c"];
        assert_eq!((s.node, s.subscriptions.len(), &s.qos2), (2, 2, &state));
        assert_eq!(
            change(&mut image, put(MqttSession { node: 2, expiry: 30, ..session(Some("q3"), &["k", "z"]) })).unwrap(),
            0
        );
        change(&mut image, qos2(2, &Qos2State::default())).unwrap();
        assert_eq!(image.mqtt.sessions["c"].qos2, Qos2State::default());
        change(&mut image, MqttRecord::DeleteSession { client_id: "c".into() }).unwrap();
        // A single node's session names no queue.
        change(&mut image, put(session(None, &["x"]))).unwrap();
        assert!(queues(&image).is_empty() && image.mqtt.sessions.contains_key("c"));
    }

    #[test]
    fn wills_are_recorded_with_the_attach_and_per_node_for_clean_sessions() {
        let mut image = MetadataImage::default();
        let will = WillDef { data: "AA==".into(), delay: 5, expiry: None };
        change(&mut image, MqttRecord::PutSession { client_id: "p".into(), session: session(Some("q"), &[]) }).unwrap();
        let attach = MqttRecord::Attach { client_id: "p".into(), node: 2, expiry: 30, will: Some(will.clone()) };
        change(&mut image, attach).unwrap();
        assert_eq!((image.mqtt.sessions["p"].node, image.mqtt.sessions["p"].will.as_ref()), (2, Some(&will)));
        // Clean sessions: one will per (client, node), cleared by its node.
        let clean = |node, conn, w: Option<&WillDef>| MqttRecord::CleanWill {
            client_id: "c".into(),
            node,
            conn,
            will: w.cloned(),
        };
        assert_eq!(change(&mut image, clean(1, 10, Some(&will))).unwrap(), 1);
        assert_eq!(change(&mut image, clean(1, 10, Some(&will))).unwrap(), 0, "the same again");
        change(&mut image, clean(3, 30, Some(&will))).unwrap();
        // A later connection on node 1 replaces the first; the first's
        // clearing, landing late, leaves it.
        change(&mut image, clean(1, 11, Some(&will))).unwrap();
        assert_eq!(change(&mut image, clean(1, 10, None)).unwrap(), 0);
        change(&mut image, clean(1, 11, None)).unwrap();
        assert_eq!(image.mqtt.clean_wills["c"].keys().copied().collect::<Vec<_>>(), [3]);
        change(&mut image, clean(3, 30, None)).unwrap();
        assert!(image.mqtt.clean_wills.is_empty());
        assert_eq!(change(&mut image, clean(3, 30, None)).unwrap(), 0, "absent: nothing to clear");
        let big = WillDef { data: "A".repeat(MAX_RETAINED_BYTES / 3 * 4 + 8), delay: 0, expiry: None };
        assert!(matches!(change(&mut image, clean(1, 12, Some(&big))), Err(MetadataError::InvalidRequest(_))));
    }

    #[test]
    fn retained_messages_are_set_cleared_and_bounded() {
        let mut image = MetadataImage::default();
        let m = RetainedMessage { data: "AAAA".into(), expires_at: None };
        let retain = |m: Option<RetainedMessage>| MqttRecord::Retain { topic: "t".into(), message: m };
        assert_eq!(change(&mut image, retain(Some(m.clone()))).unwrap(), 1);
        assert_eq!(image.mqtt.retained["t"], m);
        assert_eq!(change(&mut image, retain(Some(m))).unwrap(), 0);
        change(&mut image, retain(None)).unwrap();
        assert!(image.mqtt.retained.is_empty());
        let big = RetainedMessage { data: "A".repeat(MAX_RETAINED_BYTES / 3 * 4 + 8), expires_at: None };
        assert!(matches!(change(&mut image, retain(Some(big))), Err(MetadataError::InvalidRequest(_))));
        let empty = MqttRecord::Retain { topic: String::new(), message: None };
        assert!(change(&mut image, empty).is_err());
    }
}
