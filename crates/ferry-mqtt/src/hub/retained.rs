//! Retained messages: the last message published with RETAIN per topic, in
//! a compacted store keyed by topic (an empty payload removes it), handed to
//! new subscriptions whose filter matches.

use std::sync::Arc;

use crate::topic_tree;
use ferry_broker::BrokerError;
use ferry_broker::stored::Durable;
use ferry_util::time::now_ms;

use super::Hub;
use crate::message::Message;

impl Hub {
    /// Retained messages matching `filter` (expired ones left out).
    pub fn retained_for(&self, filter: &str) -> Vec<Arc<Message>> {
        let now = now_ms();
        self.retained
            .select(|topic, _| topic_tree::matches(filter, topic))
            .into_iter()
            .filter_map(|(_, r)| Message::from_record(r))
            .filter(|m| !m.expired(now))
            .map(Arc::new)
            .collect()
    }

    /// Stores `msg` as its topic's retained message (an empty payload
    /// clears it); the publisher's acknowledgement waits for the result.
    pub(super) fn retain(&self, msg: &Message) -> Result<Durable, BrokerError> {
        if msg.payload.is_empty() {
            self.retained.put(&msg.topic, None)
        } else {
            self.retained.put(&msg.topic, Some(msg.to_record()))
        }
    }

    /// Retained messages held, for /metrics.
    pub(super) fn retained_count(&self) -> usize {
        self.retained.len()
    }
}
