//! Sessions: what outlives a connection. Subscriptions, messages waiting
//! to be sent, QoS 2 packet ids awaiting PUBREL, and, for persistent
//! sessions, a durable queue (ferry-broker's record queue) for QoS 1/2
//! messages that arrive while the client is away or were unacknowledged
//! when it left; it remembers each acknowledgement, in any order.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ferry_broker::queue::RecordQueue;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot};

use crate::message::Message;
use crate::packet::{SubOptions, Version};

/// A message on its way to one subscriber.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub msg: Arc<Message>,
    /// min(published QoS, subscription QoS).
    pub qos: u8,
    pub retain: bool,
    pub subscription_id: Option<u32>,
    /// Offset in the session's durable queue, for messages read from it.
    pub queue_offset: Option<u64>,
    /// Sent before (restored from the queue after a disconnect).
    pub dup: bool,
}

/// A subscription as the session keeps (and persists) it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SubRecord {
    /// The filter as subscribed, `$share/group/` prefix included.
    pub filter: String,
    pub qos: u8,
    #[serde(default)]
    pub no_local: bool,
    #[serde(default)]
    pub retain_as_published: bool,
    #[serde(default)]
    pub retain_handling: u8,
    #[serde(default)]
    pub id: Option<u32>,
}

impl SubRecord {
    pub fn options(&self) -> SubOptions {
        SubOptions {
            qos: self.qos,
            no_local: self.no_local,
            retain_as_published: self.retain_as_published,
            retain_handling: self.retain_handling,
        }
    }
}

/// A session's persisted state (the value in the session store).
#[derive(Debug, Serialize, Deserialize)]
pub struct SessionRecord {
    pub queue_id: u64,
    /// Seconds; `u32::MAX` never expires.
    pub expiry: u32,
    pub subscriptions: Vec<SubRecord>,
}

/// The connection a session is attached to.
pub struct Online {
    pub generation: u64,
    /// Tells the connection to close with this MQTT 5 reason (takeover).
    pub kick: Option<oneshot::Sender<u8>>,
}

pub struct SessionState {
    pub version: Version,
    pub queue_id: u64,
    pub expiry: u32,
    pub subscriptions: HashMap<Arc<str>, SubRecord>,
    /// Messages for the online connection, in order.
    pub pending: VecDeque<Delivery>,
    pub online: Option<Online>,
    pub disconnected_at: Option<Instant>,
    /// Opened on first use.
    pub queue: Option<Arc<RecordQueue>>,
    /// QoS 2 packet ids received and not yet released (PUBREL).
    pub incoming_qos2: HashSet<u16>,
    /// Bumped by every connect: a delayed will checks it is still current.
    pub generation: u64,
    /// Messages dropped because the queue was full, or QoS 0 while offline.
    pub dropped: u64,
    /// Outbound QoS 2 ids whose PUBREL was sent and not completed when the
    /// last connection ended (in memory): sent again on reconnect.
    pub releasing: Vec<u16>,
    /// When the connection last took a message from `pending`: a session
    /// that stopped taking any is stuck, not slow (no backpressure for it).
    pub drained_at: Option<Instant>,
}

pub struct Session {
    pub client_id: Arc<str>,
    pub state: Mutex<SessionState>,
    /// Wakes the online connection when `pending` or the queue grew.
    pub wake: Notify,
    /// Signalled when a connection detaches (takeover waits for it).
    pub detached: Notify,
}

impl Session {
    pub fn new(client_id: Arc<str>, version: Version, queue_id: u64, expiry: u32) -> Session {
        Session {
            client_id,
            state: Mutex::new(SessionState {
                version,
                queue_id,
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
                drained_at: None,
            }),
            wake: Notify::new(),
            detached: Notify::new(),
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SessionState {
    pub fn record(&self) -> SessionRecord {
        let mut subscriptions: Vec<SubRecord> = self.subscriptions.values().cloned().collect();
        subscriptions.sort_by(|a, b| a.filter.cmp(&b.filter));
        SessionRecord { queue_id: self.queue_id, expiry: self.expiry, subscriptions }
    }
}
