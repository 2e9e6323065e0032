//! PUBLISH from the client: topic aliases, authorization, routing through
//! the hub, and the QoS 1/2 acknowledgements (PUBACK, PUBREC, then PUBREL
//! and PUBCOMP for exactly once), held back briefly while congested
//! subscribers drain.

use std::sync::Arc;
use std::time::Duration;

use crate::topic_tree;
use ferry_util::time::now_ms;
use tokio::time::Instant;

use super::{Conn, Violation, violation};
use crate::auth;
use crate::message::Message;
use crate::packet::{Packet, Publish, Version, reason};
use crate::session::Session;

/// Longest a publisher's PUBACK/PUBREC waits for congested subscribers'
/// queues to drain: bounds how much one stuck subscriber slows a publisher.
const MAX_ACK_HOLD: Duration = Duration::from_millis(20);

/// A publisher's acknowledgement held back while subscribers drain.
pub(super) struct HeldAck {
    packet: Packet,
    until: Instant,
    waiting_on: Vec<Arc<Session>>,
}

impl Conn {
    pub(super) async fn on_publish(&mut self, mut p: Publish) -> Result<(), Violation> {
        if let Some(alias) = p.props.topic_alias.take() {
            if alias == 0 || alias > self.hub.config.topic_alias_maximum {
                return Err(violation(reason::TOPIC_ALIAS_INVALID, format!("topic alias {alias}")));
            }
            if p.topic.is_empty() {
                match self.aliases.get(&alias) {
                    Some(t) => p.topic = t.clone(),
                    None => return Err(violation(reason::PROTOCOL_ERROR, format!("unknown topic alias {alias}"))),
                }
            } else {
                self.aliases.insert(alias, p.topic.clone());
            }
        }
        if !topic_tree::valid_name(&p.topic) {
            return Err(violation(reason::TOPIC_NAME_INVALID, format!("topic name {:?}", p.topic)));
        }
        if !p.props.subscription_ids.is_empty() {
            return Err(violation(reason::PROTOCOL_ERROR, "subscription identifier from a client"));
        }
        self.hub.stats.received(p.qos);
        let pid = p.pid.unwrap_or(0);
        if !auth::may_publish(&self.hub.config, self.username.as_deref(), &self.client_id, self.peer, &p.topic) {
            // 3.1.1 has no way to say no: acknowledge and drop, as mosquitto does.
            let code = if self.version == Version::V5 { reason::NOT_AUTHORIZED } else { reason::SUCCESS };
            match p.qos {
                1 => self.send(Packet::Puback { pid, code }),
                2 => self.send(Packet::Pubrec { pid, code }),
                _ => {}
            }
            return Ok(());
        }
        if p.qos == 2 {
            let mut st = self.session.lock();
            if st.incoming_qos2.contains(&pid) {
                // A resend of one already routed: exactly once.
                drop(st);
                self.send(Packet::Pubrec { pid, code: 0 });
                return Ok(());
            }
            if st.incoming_qos2.len() >= usize::from(self.hub.config.receive_maximum) {
                return Err(violation(reason::RECEIVE_MAXIMUM_EXCEEDED, "too many unreleased QoS 2 publishes"));
            }
            st.incoming_qos2.insert(pid);
        }
        let qos2_state = (p.qos == 2).then(|| self.hub.persist_qos2(&self.session));
        let now = now_ms();
        let msg = Arc::new(Message {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            expires_at: p.props.message_expiry.map(|s| now + i64::from(s) * 1000),
            props: p.props,
            origin: Some(self.client_id.clone()),
            timestamp: now,
        });
        let mut congested = Vec::new();
        let code = match self.hub.publish(msg) {
            Ok(routed) => {
                congested = routed.congested;
                let mut code = reason::SUCCESS;
                for w in routed.waits {
                    if let Err(e) = w.wait().await {
                        tracing::warn!(client = %self.client_id, error = %e, "publish not stored");
                        code = reason::UNSPECIFIED;
                    }
                }
                code
            }
            Err(e) => {
                tracing::warn!(client = %self.client_id, error = %e, "publish failed");
                reason::UNSPECIFIED
            }
        };
        if let Some(d) = qos2_state {
            self.wait_persisted(d).await;
        }
        let ack = match p.qos {
            1 => Packet::Puback { pid, code },
            2 => Packet::Pubrec { pid, code },
            _ => return Ok(()),
        };
        if congested.is_empty() && self.held.is_empty() {
            self.send(ack);
        } else {
            // Backpressure: a publisher faster than a subscriber drains
            // gets its acknowledgements a little later (at most
            // MAX_ACK_HOLD), so its in-flight window, not the subscriber's
            // queue, absorbs the difference. Acks keep their order.
            self.held.push_back(HeldAck { packet: ack, until: Instant::now() + MAX_ACK_HOLD, waiting_on: congested });
        }
        Ok(())
    }

    /// PUBREL: the client releases a QoS 2 publish; PUBCOMP ends it.
    pub(super) async fn on_pubrel(&mut self, pid: u16) {
        let known = self.session.lock().incoming_qos2.remove(&pid);
        if known {
            // Durable before PUBCOMP: a restart must not take a new
            // publish with this id for a resend.
            self.wait_persisted(self.hub.persist_qos2(&self.session)).await;
        }
        let code = if known { 0 } else { reason::PACKET_ID_NOT_FOUND };
        self.send(Packet::Pubcomp { pid, code });
    }

    /// Sends held acknowledgements whose subscribers drained or whose hold
    /// ran out, in order.
    pub(super) fn release_held(&mut self) {
        let now = Instant::now();
        while let Some(h) = self.held.front_mut() {
            let hub = &self.hub;
            h.waiting_on.retain(|s| !hub.drained(s));
            if !h.waiting_on.is_empty() && now < h.until {
                break;
            }
            if let Some(h) = self.held.pop_front() {
                self.send(h.packet);
            }
        }
    }
}
