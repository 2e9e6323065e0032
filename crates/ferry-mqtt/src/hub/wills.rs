//! Wills in a cluster (issue #17): the node holding a connection publishes
//! its will as on a single node; the will is also recorded in the cluster
//! metadata, so that if the node dies with the client connected, another
//! node publishes it: the live node with the lowest id.
//! - A persistent session's will is recorded with the session, by the
//!   `Attach` (or the new session's record) of its connection, and
//!   published once the will delay (capped by the session expiry) has
//!   passed since the node was noticed gone, unless the client reconnected
//!   somewhere meanwhile. The session is then recorded as ended
//!   (`Detach`), which clears the will.
//! - A clean session's (expiry 0: not a session of the metadata) is
//!   recorded apart, per client and node, with its connection's id
//!   (`CleanWill`), cleared when the connection ends; published as soon as
//!   its node is noticed gone (its session ended with the connection), then
//!   cleared.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ferry_broker::BrokerError;
use ferry_broker::metadata::{MetadataImage, MqttRecord, WillDef};
use ferry_util::sync::lock;
use ferry_util::time::now_ms;

use super::Hub;
use super::packed::{pack, unpack};
use super::sessions::spawn;
use crate::message::Message;
use crate::packet::Will;

/// The will of a connection as the metadata keeps it: the message, packed
/// (published as `client_id`), its delay and message expiry.
pub fn will_def(client_id: &Arc<str>, will: &Will) -> WillDef {
    let msg = Message {
        topic: will.topic.clone(),
        payload: will.payload.clone(),
        qos: will.qos,
        retain: will.retain,
        props: will.props.clone(),
        expires_at: None,
        origin: Some(client_id.clone()),
        timestamp: now_ms(),
    };
    WillDef { data: B64.encode(pack(&msg.to_record())), delay: will.delay, expiry: will.props.message_expiry }
}

impl Hub {
    /// Records the will of a clean session's connection here, for another
    /// node to publish should this one die; returns the connection's id
    /// (for [`Hub::clear_clean_will`]). A persistent session's is recorded
    /// by its attach.
    /// On a single node (no other node to publish it) nothing is recorded.
    pub async fn record_clean_will(&self, client_id: &str, will: WillDef) -> Result<Option<u64>, BrokerError> {
        if !self.replicated_sessions() {
            return Ok(None);
        }
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let record = MqttRecord::CleanWill {
            client_id: client_id.to_string(),
            node: self.broker.node_id(),
            conn,
            will: Some(will),
        };
        self.broker.submit_mqtt(record).await.map(|()| Some(conn))
    }

    /// The clean session's connection `conn` here ended (its will published
    /// or dropped here): its record goes, in the background.
    pub fn clear_clean_will(&self, client_id: &str, conn: u64) {
        let record =
            MqttRecord::CleanWill { client_id: client_id.to_string(), node: self.broker.node_id(), conn, will: None };
        let broker = self.broker.clone();
        spawn(async move {
            if let Err(e) = broker.submit_mqtt(record).await {
                tracing::warn!(error = %e, "could not clear a connection's will");
            }
        });
    }

    /// Sessions of `image` whose node is gone while their client was
    /// connected to it, with when this node noticed; publishes their wills
    /// when due (the live node with the lowest id only).
    pub(super) fn orphans(self: &Arc<Self>, image: &MetadataImage) -> HashMap<String, Instant> {
        let live: HashSet<i32> = image.live_nodes().map(|n| n.id).collect();
        let now = Instant::now();
        let mut orphans = lock(&self.orphans);
        orphans.retain(|id, _| {
            image.mqtt.sessions.get(id).is_some_and(|d| d.disconnected_at.is_none() && !live.contains(&d.node))
        });
        for (id, def) in &image.mqtt.sessions {
            if def.disconnected_at.is_none() && !live.contains(&def.node) {
                orphans.entry(id.clone()).or_insert((now, false));
            }
        }
        let firing = live.iter().min() == Some(&self.broker.node_id());
        let mut due = Vec::new();
        for (id, (since, fired)) in orphans.iter_mut() {
            let Some(def) = image.mqtt.sessions.get(id) else { continue };
            let Some(will) = def.will.as_ref().filter(|_| firing && !*fired) else { continue };
            if now.duration_since(*since) >= Duration::from_secs(will.delay.min(def.expiry).into()) {
                *fired = true;
                due.push((id.clone(), def.node, will.clone()));
            }
        }
        let noticed = orphans.iter().map(|(id, (since, _))| (id.clone(), *since)).collect();
        drop(orphans);
        for (client_id, node, will) in due {
            let ended = MqttRecord::Detach { client_id: client_id.clone(), node, at: now_ms() };
            self.publish_orphaned_will(client_id, node, &will, ended);
        }
        // Clean sessions' wills of dead nodes: due at once, each once.
        let mut fired = lock(&self.clean_wills_fired);
        fired.retain(|(id, node, conn)| {
            image.mqtt.clean_wills.get(id).and_then(|w| w.get(node)).is_some_and(|w| w.conn == *conn)
        });
        let mut due = Vec::new();
        for (id, wills) in image.mqtt.clean_wills.iter().filter(|_| firing) {
            for (node, w) in wills.iter().filter(|(node, _)| !live.contains(node)) {
                if fired.insert((id.clone(), *node, w.conn)) {
                    due.push((id.clone(), *node, w.clone()));
                }
            }
        }
        drop(fired);
        for (client_id, node, w) in due {
            let ended = MqttRecord::CleanWill { client_id: client_id.clone(), node, conn: w.conn, will: None };
            self.publish_orphaned_will(client_id, node, &w.will, ended);
        }
        noticed
    }

    /// Publishes the will of `client_id`'s connection on dead node `node`,
    /// then records `ended` (the will is gone).
    fn publish_orphaned_will(self: &Arc<Self>, client_id: String, node: i32, will: &WillDef, ended: MqttRecord) {
        let msg = B64.decode(&will.data).ok().and_then(|b| unpack(&b)).and_then(Message::from_record);
        let Some(mut msg) = msg else {
            tracing::warn!(client = %client_id, "undecodable will in the metadata");
            return;
        };
        let now = now_ms();
        msg.origin = Some(client_id.as_str().into());
        msg.timestamp = now;
        msg.expires_at = will.expiry.map(|s| now + i64::from(s) * 1000);
        tracing::info!(client = %client_id, node, topic = %msg.topic, "publishing the will of a session whose node died");
        let waits = match self.publish(Arc::new(msg)) {
            Ok(routed) => routed.waits,
            Err(e) => {
                tracing::warn!(client = %client_id, error = %e, "will not published");
                Vec::new()
            }
        };
        let broker = self.broker.clone();
        spawn(async move {
            for w in waits {
                if let Err(e) = w.wait().await {
                    tracing::warn!(client = %client_id, error = %e, "will not stored");
                }
            }
            if let Err(e) = broker.submit_mqtt(ended).await {
                tracing::warn!(client = %client_id, error = %e, "could not record a session's end");
            }
        });
    }
}
