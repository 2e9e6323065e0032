//! PUBLISH from the client: topic aliases, authorization, routing through
//! the hub, and the QoS 1/2 acknowledgements (PUBACK, PUBREC, then PUBREL
//! and PUBCOMP for exactly once), held back briefly while congested
//! subscribers drain.
//!
//! A QoS 1 PUBLISH whose copies went to durable queues is acknowledged once
//! they are on disk, but the connection does not wait for that before
//! reading the next PUBLISH: the PUBACK waits in `held` (in order) with the
//! stores' completion, so the publishes of one connection share their
//! fsyncs (group commit) instead of taking one each, one after another.
//! The copies of one read's QoS 1 PUBLISHes for node-local session queues
//! are staged and appended as one batch per queue once the read is handled
//! (`Conn::commit_staged`), before anything waits for them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
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

/// Most acknowledgements one connection holds back: past it the connection
/// waits for the oldest message's store before reading on (a 3.1.1 client
/// has no receive maximum to hold it back).
const MAX_UNSTORED: usize = 1024;

/// Resolves to a PUBACK's reason code once the message's stores are durable.
/// In a mutex only to be `Sync` (the connection is shared across awaits);
/// it is only ever reached through `&mut`, never locked.
type Stored = std::sync::Mutex<Pin<Box<dyn Future<Output = u8> + Send>>>;

/// A publisher's acknowledgement held back while its message is stored or
/// subscribers drain.
pub(super) struct HeldAck {
    packet: Packet,
    /// Still being stored (QoS 1): sent once this resolves.
    stored: Option<Stored>,
    until: Instant,
    waiting_on: Vec<Arc<Session>>,
}

impl HeldAck {
    /// Whether the store finished, taking its reason code if it just did.
    fn poll_stored(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(f) = self.stored.as_mut() else { return Poll::Ready(()) };
        let f = f.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Poll::Ready(c) = f.as_mut().poll(cx) else { return Poll::Pending };
        self.stored = None;
        if let Packet::Puback { code, .. } = &mut self.packet {
            *code = c;
        }
        Poll::Ready(())
    }
}

/// Waits until the oldest held acknowledgement's store finishes (forever if
/// it has none: the caller's select then waits on its other branches).
/// Cancel-safe: the store stays in `held`.
pub(super) async fn oldest_stored(held: &mut std::collections::VecDeque<HeldAck>) {
    match held.front_mut() {
        Some(h) if h.stored.is_some() => std::future::poll_fn(|cx| h.poll_stored(cx)).await,
        _ => std::future::pending().await,
    }
}

/// Whether the oldest held acknowledgement waits only for subscribers
/// (its store is done), so a timer must look at it again.
pub(super) fn waits_on_subscribers(held: &std::collections::VecDeque<HeldAck>) -> bool {
    held.front().is_some_and(|h| h.stored.is_none())
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
            let st = self.session.lock();
            if st.incoming_qos2.contains(&pid) {
                // A resend of one already routed: exactly once.
                drop(st);
                self.send(Packet::Pubrec { pid, code: 0 });
                return Ok(());
            }
            if st.incoming_qos2.len() >= usize::from(self.hub.config.receive_maximum) {
                return Err(violation(reason::RECEIVE_MAXIMUM_EXCEEDED, "too many unreleased QoS 2 publishes"));
            }
        }
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
        let (mut code, mut congested, mut waits) = (reason::SUCCESS, Vec::new(), Vec::new());
        // QoS 0 and 2 must not overtake the QoS 1 messages staged before them.
        let staged = if p.qos == 1 {
            Some(&mut self.staged)
        } else {
            self.staged.commit();
            None
        };
        match self.hub.publish_staged(msg, staged) {
            Ok(routed) => (congested, waits) = (routed.congested, routed.waits),
            Err(e) => {
                tracing::warn!(client = %self.client_id, error = %e, "publish failed");
                code = reason::UNSPECIFIED;
            }
        }
        if p.qos == 1 && !waits.is_empty() {
            // Acknowledged once stored, in order; meanwhile read on.
            let client = self.client_id.clone();
            let stored: Stored = std::sync::Mutex::new(Box::pin(async move { stored_code(&client, waits).await }));
            self.held.push_back(HeldAck {
                packet: Packet::Puback { pid, code },
                stored: Some(stored),
                until: Instant::now() + MAX_ACK_HOLD,
                waiting_on: congested,
            });
            while self.held.len() > MAX_UNSTORED && self.held.front().is_some_and(|h| h.stored.is_some()) {
                self.staged.commit();
                oldest_stored(&mut self.held).await;
                self.release_held()?;
            }
            return Ok(());
        }
        if !waits.is_empty() {
            code = stored_code(&self.client_id, waits).await;
        }
        if p.qos == 2 && code < 0x80 {
            // The id is received only once the message is stored, and
            // recorded (persistent sessions) before PUBREC. Recorded
            // beside the routing, a death between the two could keep the
            // id of a message that was never stored: its resend would be
            // taken for a duplicate and acknowledged, the message lost.
            // In this order that moment can at worst route a resend again
            // (docs/protocols.md, "QoS 2 and a crash"). A refused message's
            // id is never received: PUBREC >= 0x80 ends the exchange
            // (MQTT 5 4.3.3), and a 3.1.1 client resends it.
            self.session.lock().incoming_qos2.insert(pid);
            self.wait_persisted(self.hub.persist_qos2(&self.session)).await;
        }
        let ack = match p.qos {
            1 => Packet::Puback { pid, code },
            2 => Packet::Pubrec { pid, code },
            _ => return Ok(()),
        };
        if congested.is_empty() && self.held.is_empty() {
            self.acknowledge(ack)?;
        } else {
            // Backpressure: a publisher faster than a subscriber drains
            // gets its acknowledgements a little later (at most
            // MAX_ACK_HOLD), so its in-flight window, not the subscriber's
            // queue, absorbs the difference. Acks keep their order.
            self.held.push_back(HeldAck {
                packet: ack,
                stored: None,
                until: Instant::now() + MAX_ACK_HOLD,
                waiting_on: congested,
            });
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

    /// Sends a publisher's PUBACK or PUBREC. MQTT 3.1.1 has no negative
    /// acknowledgement: a message that was not stored is not acknowledged
    /// at all, the connection closes, and the client sends it again (DUP)
    /// when it reconnects, instead of taking the message for stored.
    fn acknowledge(&mut self, ack: Packet) -> Result<(), Violation> {
        if self.version == Version::V3
            && let Packet::Puback { pid, code } | Packet::Pubrec { pid, code } = ack
            && code >= 0x80
        {
            // Its id was not received (`on_publish`): the resend is routed.
            return Err(violation(reason::UNSPECIFIED, format!("publish {pid} not stored")));
        }
        self.send(ack);
        Ok(())
    }

    /// Sends held acknowledgements whose messages are stored and whose
    /// subscribers drained (or whose hold ran out), in order.
    pub(super) fn release_held(&mut self) -> Result<(), Violation> {
        let now = Instant::now();
        let mut cx = Context::from_waker(Waker::noop());
        while let Some(h) = self.held.front_mut() {
            if h.poll_stored(&mut cx).is_pending() {
                break;
            }
            let hub = &self.hub;
            h.waiting_on.retain(|s| !hub.drained(s));
            if !h.waiting_on.is_empty() && now < h.until {
                break;
            }
            if let Some(h) = self.held.pop_front() {
                self.acknowledge(h.packet)?;
            }
        }
        Ok(())
    }
}

/// Waits for a message's stores; the reason code for its acknowledgement.
async fn stored_code(client: &str, waits: Vec<crate::hub::Wait>) -> u8 {
    let mut code = reason::SUCCESS;
    for w in waits {
        if let Err(e) = w.wait().await {
            tracing::warn!(client, error = %e, "publish not stored");
            code = reason::UNSPECIFIED;
        }
    }
    code
}
