//! Importing what an older version kept in node-local stores (persistent
//! sessions' subscriptions and expiry, retained messages) into the cluster
//! metadata, once, at start, as AMQP's `definitions.json` is imported. A
//! session keeps its node-local queue (recorded as this node's), so its
//! queued messages stay where they are. Every record is idempotent: a
//! start that crashed half-way imports again; the old entries are removed
//! only once the metadata has them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ferry_broker::BrokerError;
use ferry_broker::metadata::{MAX_RETAINED_BYTES, MqttRecord, MqttSession, RetainedMessage};

use super::Hub;
use super::packed::pack;
use crate::message::Message;
use crate::session::SessionRecord;

impl Hub {
    /// Imports `<data>/internal/mqtt/{session-state,retained}` if they hold
    /// anything, then empties them.
    pub(super) fn import_old_stores(&self) -> Result<(), BrokerError> {
        let me = self.broker.node_id();
        let store = self.broker.kv_store("mqtt/session-state")?;
        let sessions = store.select(|_, _| true);
        for (client_id, rec) in &sessions {
            let Some(old) = rec.value.as_deref().and_then(|v| serde_json::from_slice::<SessionRecord>(v).ok()) else {
                continue;
            };
            let session = MqttSession {
                node: me,
                expiry: old.expiry,
                disconnected_at: Some(ferry_util::time::now_ms()),
                subscriptions: old.subscriptions,
                queue: None,
                local_queue: Some(old.queue_id),
                queue_limit: None,
                will: None,
                qos2: Default::default(),
            };
            self.broker.submit_mqtt_blocking(MqttRecord::PutSession { client_id: client_id.clone(), session })?;
        }
        let retained = self.broker.kv_store("mqtt/retained")?;
        let messages = retained.select(|_, _| true);
        for (topic, rec) in &messages {
            let Some(message) = retained_message(rec.clone()) else {
                tracing::warn!(topic = %topic, "retained message left out of the import (unreadable or too large)");
                continue;
            };
            self.broker.submit_mqtt_blocking(MqttRecord::Retain { topic: topic.clone(), message: Some(message) })?;
        }
        for (client_id, _) in &sessions {
            drop(store.put(client_id, None)?);
        }
        for (topic, _) in &messages {
            drop(retained.put(topic, None)?);
        }
        if !sessions.is_empty() || !messages.is_empty() {
            tracing::info!(
                sessions = sessions.len(),
                retained = messages.len(),
                "imported the node-local MQTT sessions and retained messages into the cluster metadata"
            );
        }
        Ok(())
    }
}

/// The metadata's form of a retained message stored as `record`; `None`
/// for one that is not a message or is over [`MAX_RETAINED_BYTES`].
pub(super) fn retained_message(record: ferry_broker::stored::StoredRecord) -> Option<RetainedMessage> {
    let m = Message::from_record(record)?;
    let packed = pack(&m.to_record());
    (packed.len() <= MAX_RETAINED_BYTES).then(|| RetainedMessage { data: B64.encode(packed), expires_at: m.expires_at })
}
