//! Sessions: what outlives a connection. Subscriptions, messages waiting
//! to be sent, QoS 2 packet ids awaiting PUBREL, and, for persistent
//! sessions, a durable queue (ferry-broker's record queue) for QoS 1/2
//! messages that arrive while the client is away or were unacknowledged
//! when it left; it remembers each acknowledgement, in any order.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ferry_broker::metadata::{MqttSession, MqttSubscription, Qos2State, WillDef};
use ferry_util::sync::lock;
use serde::Deserialize;
use tokio::sync::{Notify, oneshot};

use crate::hub::SessionQueue;
use crate::message::Message;
use crate::packet::{SubOptions, Version};

/// A message on its way to one subscriber.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The message, shared with every other subscriber it goes to.
    pub msg: Arc<Message>,
    /// min(published QoS, subscription QoS).
    pub qos: u8,
    /// The RETAIN flag as sent: set for retained messages sent at
    /// subscribe, and for live ones under retain-as-published.
    pub retain: bool,
    /// The identifiers of the subscriptions it matched (MQTT 5).
    pub subscription_ids: Vec<u32>,
    /// Offset in the session's durable queue, for messages read from it.
    pub queue_offset: Option<u64>,
    /// Sent before (restored from the queue after a disconnect).
    pub dup: bool,
}

/// The options a subscription (as the session keeps and the metadata
/// records it) gives the codec.
pub fn sub_options(s: &MqttSubscription) -> SubOptions {
    SubOptions {
        qos: s.qos.min(2),
        no_local: s.no_local,
        retain_as_published: s.retain_as_published,
        retain_handling: s.retain_handling,
    }
}

/// A session's persisted state as older versions kept it in their
/// node-local session store (imported into the metadata once).
#[derive(Debug, Deserialize)]
pub struct SessionRecord {
    /// Which durable queue in the session queue store is the session's.
    pub queue_id: u64,
    /// Seconds; `u32::MAX` never expires.
    pub expiry: u32,
    /// Subscriptions, sorted by filter.
    pub subscriptions: Vec<MqttSubscription>,
}

/// The connection a session is attached to.
pub struct Online {
    /// The connection's generation (see [`SessionState::generation`]).
    pub generation: u64,
    /// Tells the connection to close with this MQTT 5 reason (takeover).
    pub kick: Option<oneshot::Sender<u8>>,
}

/// A session's mutable state, behind [`Session::lock`].
pub struct SessionState {
    /// Protocol version of the last connection.
    pub version: Version,
    /// The session's node-local queue in the session queue store.
    pub queue_id: u64,
    /// Its replicated queue (a cluster's session) instead, by name.
    pub replicated: Option<String>,
    /// The cluster metadata holds it (a persistent session).
    pub recorded: bool,
    /// Its connection's will as recorded in the metadata.
    pub will: Option<WillDef>,
    /// Session expiry in seconds (0 ends with the connection; `u32::MAX`
    /// never expires).
    pub expiry: u32,
    /// Subscriptions by filter as subscribed.
    pub subscriptions: HashMap<Arc<str>, MqttSubscription>,
    /// Messages for the online connection, in order.
    pub pending: VecDeque<Delivery>,
    /// The connection attached, if any.
    pub online: Option<Online>,
    /// When the last connection ended (the expiry counts from here).
    pub disconnected_at: Option<Instant>,
    /// Opened on first use.
    pub queue: Option<SessionQueue>,
    /// QoS 2 packet ids received and not yet released (PUBREL).
    pub incoming_qos2: HashSet<u16>,
    /// Bumped by every connect: a delayed will checks it is still current.
    pub generation: u64,
    /// Messages dropped because the queue was full, or QoS 0 while offline.
    pub dropped: u64,
    /// Outbound QoS 2 ids whose PUBREL was sent and not completed when the
    /// last connection ended (or the broker stopped), with their message's
    /// queue offset: PUBREL is sent again on reconnect.
    pub releasing: Vec<(u16, Option<u64>)>,
    /// A replicated session's outbound QoS 2 ids released and awaiting
    /// PUBCOMP as last recorded in the metadata (with the inbound ids).
    pub released_recorded: Vec<(u16, Option<u64>)>,
    /// When the connection last took a message from `pending`: a session
    /// that stopped taking any is stuck, not slow (no backpressure for it).
    pub drained_at: Option<Instant>,
}

/// What outlives a connection, for one client id.
pub struct Session {
    /// The client id it belongs to.
    pub client_id: Arc<str>,
    /// Everything that changes, under one lock ([`Session::lock`]).
    pub state: Mutex<SessionState>,
    /// Wakes the online connection when `pending` or the queue grew.
    pub wake: Notify,
    /// Signalled when a connection detaches (takeover waits for it).
    pub detached: Notify,
}

impl Session {
    /// A new session with nothing in it, not attached.
    pub fn new(client_id: Arc<str>, version: Version, queue_id: u64, expiry: u32) -> Session {
        Session {
            client_id,
            state: Mutex::new(SessionState {
                version,
                queue_id,
                replicated: None,
                recorded: false,
                will: None,
                expiry,
                subscriptions: HashMap::new(),
                pending: VecDeque::new(),
                online: None,
                disconnected_at: None,
                queue: None,
                incoming_qos2: HashSet::new(),
                generation: 0,
                dropped: 0,
                releasing: Vec::new(),
                released_recorded: Vec::new(),
                drained_at: None,
            }),
            wake: Notify::new(),
            detached: Notify::new(),
        }
    }

    /// Locks the session's state (even after a panicking holder).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, SessionState> {
        lock(&self.state)
    }
}

impl SessionState {
    /// Subscriptions in the metadata's form, sorted by filter.
    pub fn subscription_defs(&self) -> Vec<MqttSubscription> {
        let mut subs: Vec<MqttSubscription> = self.subscriptions.values().cloned().collect();
        subs.sort_by(|a, b| a.filter.cmp(&b.filter));
        subs
    }

    /// What the cluster metadata keeps of it, attached to `node` (and
    /// disconnected since `disconnected_at`, wall-clock ms), its queue
    /// holding at most `queue_limit` messages.
    pub fn definition(&self, node: i32, disconnected_at: Option<i64>, queue_limit: u64) -> MqttSession {
        MqttSession {
            queue_limit: Some(queue_limit),
            will: self.will.clone(),
            node,
            expiry: self.expiry,
            disconnected_at,
            subscriptions: self.subscription_defs(),
            queue: self.replicated.clone(),
            local_queue: self.replicated.is_none().then_some(self.queue_id),
            // Recorded apart (`MqttRecord::Qos2`), kept by a `PutSession`.
            qos2: Qos2State::default(),
        }
    }
}
