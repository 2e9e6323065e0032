//! Wills in a cluster (issue #17): the node holding a persistent session's
//! connection publishes its will as on a single node; the will is also
//! recorded with the session (`SetWill`), so that if the node dies with the
//! client connected, another node publishes it: the live node with the
//! lowest id, once the will delay (capped by the session expiry) has passed
//! since it noticed the node gone, unless the client reconnected somewhere
//! meanwhile. The session is then recorded as ended (`Detach`), which
//! clears the will. Clean sessions (expiry 0) are not recorded: their wills
//! die with their node.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
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
use crate::session::Session;

impl Hub {
    /// Records the will of `session`'s connection here (persistent
    /// sessions), for another node to publish should this one die.
    pub async fn record_will(&self, session: &Session, will: &Will) -> Result<(), BrokerError> {
        if session.lock().expiry == 0 || !session.lock().recorded {
            return Ok(());
        }
        let msg = Message {
            topic: will.topic.clone(),
            payload: will.payload.clone(),
            qos: will.qos,
            retain: will.retain,
            props: will.props.clone(),
            expires_at: None,
            origin: Some(session.client_id.clone()),
            timestamp: now_ms(),
        };
        let def =
            WillDef { data: B64.encode(pack(&msg.to_record())), delay: will.delay, expiry: will.props.message_expiry };
        session.lock().will = Some(def.clone());
        let record =
            MqttRecord::SetWill { client_id: session.client_id.to_string(), node: self.broker.node_id(), will: def };
        self.broker.submit_mqtt(record).await
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
            self.publish_orphaned_will(client_id, node, &will);
        }
        noticed
    }

    fn publish_orphaned_will(self: &Arc<Self>, client_id: String, node: i32, will: &WillDef) {
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
            let ended = MqttRecord::Detach { client_id: client_id.clone(), node, at: now };
            if let Err(e) = broker.submit_mqtt(ended).await {
                tracing::warn!(client = %client_id, error = %e, "could not record a session's end");
            }
        });
    }
}
