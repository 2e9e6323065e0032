//! The end of a connection: the client's DISCONNECT (which may change the
//! session expiry and drops the will unless it asks for it), handing the
//! session back to the hub, and publishing the will, now or after its delay.

use std::sync::Arc;
use std::time::Duration;

use ferry_util::time::now_ms;

use super::{Conn, End, Violation, violation};
use crate::auth;
use crate::hub::Hub;
use crate::message::Message;
use crate::packet::{Will, reason};
use crate::session::{Delivery, Session};

impl Conn {
    /// DISCONNECT from the client: always a reason to stop, with the
    /// client's code (0, or 0x04 to have the will published), or a
    /// protocol error for a session expiry raised from 0.
    pub(super) async fn on_disconnect(&mut self, code: u8, session_expiry: Option<u32>) -> Violation {
        if let Some(e) = session_expiry {
            if self.expiry == 0 && e > 0 {
                return violation(reason::PROTOCOL_ERROR, "session expiry set after 0");
            }
            self.expiry = e.min(self.hub.config.max_session_expiry);
            self.session.lock().expiry = self.expiry;
            self.persist().await;
        }
        if code != reason::DISCONNECT_WITH_WILL {
            self.will = None;
        }
        violation(code.min(reason::DISCONNECT_WITH_WILL), "")
    }

    /// The connection is gone: hand unacknowledged messages back to the
    /// session and publish the will if the end was abnormal.
    pub(super) fn finish(mut self, end: End) {
        self.commit_acks();
        // PUBRELs still awaiting PUBCOMP are sent again on reconnect.
        self.session.lock().releasing = self.released_ids();
        let unacked: Vec<Delivery> = std::mem::take(&mut self.inflight)
            .into_values()
            .filter(|f| !f.released)
            .map(|f| Delivery { dup: true, ..f.d })
            .chain(self.parked.take())
            .collect();
        if let Some(q) = self.queue.take() {
            // Queued messages out with the client go back to the queue.
            let out: Vec<u64> = unacked.iter().filter_map(|d| d.queue_offset).collect();
            q.close(&out);
        }
        self.hub.detach(&self.session, self.generation, unacked);
        if let Some(conn) = self.clean_will {
            // Published (or dropped) here, now.
            self.hub.clear_clean_will(&self.session.client_id, conn);
        }
        let will = match end {
            End::Abnormal => self.will.take(),
            End::Normal | End::Shutdown => None,
        };
        if let Some(w) = will {
            publish_will(
                self.hub.clone(),
                self.session.clone(),
                self.generation,
                w,
                self.expiry,
                self.username,
                self.peer,
            );
        }
    }
}

/// Publishes a will now, or after its delay (capped by the session expiry)
/// unless the client reconnected meanwhile.
fn publish_will(
    hub: Arc<Hub>,
    session: Arc<Session>,
    generation: u64,
    w: Will,
    expiry: u32,
    user: Option<Arc<str>>,
    peer: std::net::IpAddr,
) {
    let client_id = session.client_id.clone();
    let go = move || {
        if !auth::may_publish(&hub.config, user.as_deref(), &client_id, peer, &w.topic) {
            return;
        }
        let now = now_ms();
        let msg = Message {
            topic: w.topic,
            payload: w.payload,
            qos: w.qos,
            retain: w.retain,
            expires_at: w.props.message_expiry.map(|s| now + i64::from(s) * 1000),
            props: w.props,
            origin: Some(client_id.clone()),
            timestamp: now,
        };
        if let Err(e) = hub.publish(Arc::new(msg)) {
            tracing::warn!(client = %client_id, error = %e, "will not published");
        }
    };
    let delay = w.delay.min(expiry);
    if delay == 0 {
        go();
    } else {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(delay.into())).await;
            if session.lock().generation == generation {
                go();
            }
        });
    }
}
