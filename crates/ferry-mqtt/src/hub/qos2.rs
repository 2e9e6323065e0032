//! A persistent session's QoS 2 exchanges half done: inbound packet ids
//! received (their message routed and stored) and not yet released, and
//! outbound ids released (PUBREL sent) and not yet completed. Written
//! before the packet that depends on them goes out (PUBREC, PUBCOMP,
//! PUBREL); an inbound id only after its message's stores answered, so
//! no id is ever recorded for a message that is not stored.
//!
//! A single node's session keeps them in this node's stores (a restart
//! carries them on). A replicated session (a cluster's) records them in
//! the cluster metadata with the session (`MqttRecord::Qos2`), so the
//! node its client resumes on after its node died carries them on: a
//! publisher's resend of a message routed before the death is
//! acknowledged, not routed again, and a subscriber gets PUBREL again for
//! what it PUBREC'd (docs/cluster.md, "MQTT in a cluster").

use ferry_broker::BrokerError;
use ferry_broker::metadata::{MqttRecord, Qos2State};
use ferry_broker::stored::{Durable, StoredRecord};
use tokio::sync::oneshot;

use super::sessions::{encode_released, spawn};
use super::{Hub, Wait};
use crate::session::Session;

impl Hub {
    /// Writes the session's unreleased inbound QoS 2 packet ids (persistent
    /// sessions); PUBREC and PUBCOMP wait for it. Started now, awaited
    /// through the `Wait`.
    pub fn persist_qos2(&self, session: &Session) -> Result<Wait, BrokerError> {
        let (replicated, value) = {
            let st = session.lock();
            if st.expiry == 0 {
                return Ok(Wait::Durable(Durable::ready()));
            }
            let mut ids: Vec<u16> = st.incoming_qos2.iter().copied().collect();
            ids.sort_unstable();
            (st.replicated.is_some() && st.recorded, ids.iter().flat_map(|id| id.to_be_bytes()).collect::<Vec<u8>>())
        };
        if replicated {
            return Ok(self.record_qos2(session));
        }
        if value.is_empty() {
            if self.qos2.get(&session.client_id).is_none() {
                return Ok(Wait::Durable(Durable::ready()));
            }
            return self.qos2.put(&session.client_id, None).map(Wait::Durable);
        }
        self.qos2
            .put(&session.client_id, Some(StoredRecord { value: Some(value), ..Default::default() }))
            .map(Wait::Durable)
    }

    /// Writes the session's outbound QoS 2 ids released and awaiting
    /// PUBCOMP (persistent sessions); PUBREL waits for it.
    pub fn persist_released(&self, session: &Session, ids: &[(u16, Option<u64>)]) -> Result<Wait, BrokerError> {
        {
            let mut st = session.lock();
            if st.expiry == 0 {
                return Ok(Wait::Durable(Durable::ready()));
            }
            if st.replicated.is_some() && st.recorded {
                st.released_recorded = ids.to_vec();
                drop(st);
                return Ok(self.record_qos2(session));
            }
        }
        if ids.is_empty() {
            if self.released.get(&session.client_id).is_none() {
                return Ok(Wait::Durable(Durable::ready()));
            }
            return self.released.put(&session.client_id, None).map(Wait::Durable);
        }
        let value = encode_released(ids);
        self.released
            .put(&session.client_id, Some(StoredRecord { value: Some(value), ..Default::default() }))
            .map(Wait::Durable)
    }

    /// Records a replicated session's exchanges as they are now, in the
    /// metadata (a change only while the session is attached here). The
    /// connection waits for each before its next, so they land in order.
    fn record_qos2(&self, session: &Session) -> Wait {
        let state = {
            let st = session.lock();
            let mut received: Vec<u16> = st.incoming_qos2.iter().copied().collect();
            received.sort_unstable();
            Qos2State { received, released: st.released_recorded.clone() }
        };
        let record = MqttRecord::Qos2 { client_id: session.client_id.to_string(), node: self.broker.node_id(), state };
        let (tx, rx) = oneshot::channel();
        let broker = self.broker.clone();
        spawn(async move {
            let _ = tx.send(broker.submit_mqtt(record).await);
        });
        Wait::Metadata(Box::pin(async move {
            rx.await.unwrap_or_else(|_| Err(BrokerError::ControllerUnavailable("QoS 2 state not recorded".into())))
        }))
    }
}
