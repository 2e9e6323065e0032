//! PUBLISH to the client: what the session has (its durable queue first,
//! then messages routed meanwhile) goes out while the in-flight window (the
//! client's receive maximum) allows, and the client's PUBACK, PUBREC and
//! PUBCOMP close the exchanges and acknowledge the queue.

use std::sync::Arc;

use super::Conn;
use super::out_aliases::AliasUse;
use crate::hub::delivery_from_record;
use crate::packet::{Packet, Publish, reason};
use crate::session::Delivery;
use ferry_util::time::now_ms;

/// A PUBLISH sent with QoS 1 or 2 and not yet completed.
pub(super) struct InFlight {
    pub(super) d: Delivery,
    /// PUBREC received (QoS 2): only PUBCOMP is awaited.
    pub(super) released: bool,
}

impl Conn {
    /// Moves deliveries into the output while the in-flight window allows:
    /// the durable queue's first, then messages routed meanwhile.
    pub(super) fn fill(&mut self) {
        let now = now_ms();
        while self.inflight.len() + self.releasing.len() < self.window {
            let Some(d) = self.parked.take().or_else(|| self.next_delivery()) else { break };
            if d.msg.expired(now) {
                self.acked(d.queue_offset);
                continue;
            }
            if !self.deliver(d, now) {
                break;
            }
        }
    }

    fn next_delivery(&mut self) -> Option<Delivery> {
        while let Some(q) = self.queue.as_ref().filter(|_| !self.queue_unreadable) {
            match q.take() {
                Ok(Some(t)) => match delivery_from_record(t.offset, t.record) {
                    Some(mut d) => {
                        d.dup |= t.redelivered;
                        return Some(d);
                    }
                    // Not a message: nothing to send, never again.
                    None => self.acked(Some(t.offset)),
                },
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(client = %self.client_id, error = %e, "session queue unreadable; skipping it");
                    self.queue_unreadable = true;
                }
            }
        }
        let mut st = self.session.lock();
        let d = st.pending.pop_front();
        if d.is_some() {
            st.drained_at = Some(std::time::Instant::now());
        }
        d
    }

    /// Sends `d`; false when its packet id is still taken (it is parked
    /// until that exchange completes).
    fn deliver(&mut self, d: Delivery, now: i64) -> bool {
        let pid = match (d.qos, d.queue_offset) {
            (0, _) => None,
            (_, Some(o)) => {
                let pid = pid_for(o);
                if self.releasing.get(&pid) == Some(&Some(o)) {
                    // PUBREC'd before a restart that lost the queue's
                    // acknowledgement: the client has it, PUBREL is out.
                    self.acked(Some(o));
                    return true;
                }
                if self.inflight.contains_key(&pid) || self.releasing.contains_key(&pid) {
                    self.parked = Some(d);
                    return false;
                }
                Some(pid)
            }
            (_, None) => Some(self.alloc_pid()),
        };
        let alias = self.out_aliases.pick(&d.msg.topic);
        let mut props = d.msg.props.clone();
        props.topic_alias = alias.property();
        props.subscription_ids = d.subscription_ids.clone();
        props.message_expiry = d.msg.remaining_expiry(now);
        let publish = Publish {
            dup: d.dup && d.qos > 0,
            qos: d.qos,
            retain: d.retain,
            topic: match alias {
                AliasUse::Alias(_) => Arc::from(""),
                AliasUse::Name | AliasUse::Assign(_) => d.msg.topic.clone(),
            },
            pid,
            payload: d.msg.payload.clone(),
            props,
        };
        let start = self.out.len();
        self.send(Packet::Publish(Box::new(publish)));
        if self.out.len() - start > self.client_max_packet {
            // Larger than the client accepts: MQTT 5 says drop it.
            self.out.truncate(start);
            self.acked(d.queue_offset);
            return true;
        }
        if let AliasUse::Assign(a) = alias {
            self.out_aliases.assigned(d.msg.topic.clone(), a);
        }
        self.hub.stats.sent(d.qos);
        match pid {
            Some(pid) => {
                self.inflight.insert(pid, InFlight { d, released: false });
            }
            None => self.acked(d.queue_offset),
        }
        true
    }

    fn alloc_pid(&mut self) -> u16 {
        loop {
            self.next_pid = self.next_pid.wrapping_add(1);
            if self.next_pid != 0
                && !self.inflight.contains_key(&self.next_pid)
                && !self.releasing.contains_key(&self.next_pid)
            {
                return self.next_pid;
            }
        }
    }

    /// PUBACK: a QoS 1 delivery is done.
    pub(super) fn on_puback(&mut self, pid: u16) {
        if self.inflight.get(&pid).is_some_and(|f| f.d.qos == 1)
            && let Some(f) = self.inflight.remove(&pid)
        {
            self.acked(f.d.queue_offset);
        }
    }

    /// PUBREC: a QoS 2 delivery arrived (or was refused); PUBREL follows.
    pub(super) async fn on_pubrec(&mut self, pid: u16, code: u8) {
        match self.inflight.get_mut(&pid) {
            Some(f) if f.d.qos == 2 && f.released => self.send(Packet::Pubrel { pid, code: 0 }),
            Some(f) if f.d.qos == 2 => {
                let offset = f.d.queue_offset;
                let refused = code >= 0x80;
                if refused {
                    // The client refused it: the exchange ends here.
                    self.inflight.remove(&pid);
                    self.acked(offset);
                    return;
                }
                f.released = true;
                // Once PUBREL is out the PUBLISH must never be sent again,
                // and PUBREL must be, after a crash too: the released id
                // (with its queue offset) is on disk first, then the
                // queue's acknowledgement.
                self.persist_released().await;
                self.acked(offset);
                if offset.is_some() {
                    self.acks_durable().await;
                }
                self.send(Packet::Pubrel { pid, code: 0 });
            }
            _ => self.send(Packet::Pubrel { pid, code: reason::PACKET_ID_NOT_FOUND }),
        }
    }

    /// PUBCOMP: a QoS 2 delivery is done (this connection's, or one an
    /// earlier connection released).
    pub(super) async fn on_pubcomp(&mut self, pid: u16) {
        let done = if self.inflight.get(&pid).is_some_and(|f| f.released) {
            self.inflight.remove(&pid).is_some()
        } else {
            self.releasing.remove(&pid).is_some()
        };
        if done {
            // A node-local write is not awaited: a release forgotten by a
            // crash is only sent again, and the client answers it with
            // PUBCOMP. A replicated session's record is (the next one,
            // adding an id, must not land before it).
            let written = self.hub.persist_released(&self.session, &self.released_ids());
            match written {
                Ok(w @ crate::hub::Wait::Metadata(_)) => {
                    if let Err(e) = w.wait().await {
                        tracing::warn!(client = %self.client_id, error = %e, "could not record released QoS 2 ids");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(client = %self.client_id, error = %e, "could not persist released QoS 2 ids"),
            }
        }
    }

    /// Outbound QoS 2 ids released (PUBREL sent) and awaiting PUBCOMP,
    /// with the queue offset of their message.
    pub(super) fn released_ids(&self) -> Vec<(u16, Option<u64>)> {
        self.inflight
            .iter()
            .filter(|(_, f)| f.released)
            .map(|(pid, f)| (*pid, f.d.queue_offset))
            .chain(self.releasing.iter().map(|(pid, o)| (*pid, *o)))
            .collect()
    }

    async fn persist_released(&self) {
        let r = match self.hub.persist_released(&self.session, &self.released_ids()) {
            Ok(w) => w.wait().await,
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            tracing::warn!(client = %self.client_id, error = %e, "could not persist released QoS 2 ids");
        }
    }

    async fn acks_durable(&mut self) {
        self.commit_acks();
        if let Some(q) = &self.queue
            && let Err(e) = q.acks_durable().await
        {
            tracing::warn!(client = %self.client_id, error = %e, "session queue acknowledgements not durable");
        }
    }

    /// A queued message was delivered (or is dropped): its queue cursor
    /// remembers it, whatever the order, once [`Conn::commit_acks`] runs.
    pub(super) fn acked(&mut self, offset: Option<u64>) {
        if let (Some(o), Some(_)) = (offset, &self.queue) {
            self.acks.push(o);
        }
    }

    /// Journals the acknowledgements gathered since the last call in one
    /// write (the connection's loop calls it once per read).
    pub(super) fn commit_acks(&mut self) {
        let Some(q) = &self.queue else { return };
        if self.acks.is_empty() {
            return;
        }
        if let Err(e) = q.ack(&self.acks) {
            tracing::warn!(client = %self.client_id, error = %e, "could not acknowledge in the session queue");
        }
        self.acks.clear();
    }
}

/// The packet id of the queued message at `offset`: derived from the
/// offset, so a resend after a reconnect or a restart goes out under the
/// id the client saw first (MQTT 3.1.1 and 5.0 section 4.4).
pub(super) fn pid_for(offset: u64) -> u16 {
    (offset % u64::from(u16::MAX)) as u16 + 1
}
