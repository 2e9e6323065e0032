//! Retained messages: the last message published with RETAIN per topic
//! (an empty payload removes it), kept in the cluster metadata so every
//! node hands the same ones to new subscriptions whose filter matches.
//! They ride in the Raft log: one larger than
//! [`MAX_RETAINED_BYTES`](ferry_broker::metadata::MAX_RETAINED_BYTES)
//! (encoded) is refused.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ferry_broker::BrokerError;
use ferry_broker::metadata::MqttRecord;
use ferry_util::time::now_ms;

use super::Hub;
use super::import::retained_message;
use super::packed::unpack;
use super::routing::Wait;
use crate::message::Message;
use crate::topic_tree;

impl Hub {
    /// Retained messages matching `filter` (expired ones left out).
    pub fn retained_for(&self, filter: &str) -> Vec<Arc<Message>> {
        let now = now_ms();
        let image = self.broker.metadata();
        image
            .mqtt
            .retained
            .iter()
            .filter(|(topic, r)| topic_tree::matches(filter, topic) && r.expires_at.is_none_or(|t| t > now))
            .filter_map(|(_, r)| B64.decode(&r.data).ok())
            .filter_map(|b| unpack(&b).and_then(Message::from_record))
            .map(Arc::new)
            .collect()
    }

    /// Records `msg` as its topic's retained message (an empty payload
    /// clears it); the publisher's acknowledgement waits for the metadata.
    pub(super) fn retain(&self, msg: &Message) -> Result<Wait, BrokerError> {
        let message = if msg.payload.is_empty() {
            None
        } else {
            Some(retained_message(msg.to_record()).ok_or_else(|| {
                BrokerError::InvalidRequest(format!(
                    "retained message over {} bytes",
                    ferry_broker::metadata::MAX_RETAINED_BYTES
                ))
            })?)
        };
        let record = MqttRecord::Retain { topic: msg.topic.to_string(), message };
        let broker = self.broker.clone();
        Ok(Wait::Metadata(Box::pin(async move { broker.submit_mqtt(record).await })))
    }

    /// Retained messages held, for /metrics.
    pub(super) fn retained_count(&self) -> usize {
        self.broker.metadata().mqtt.retained.len()
    }
}
