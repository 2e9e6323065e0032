//! MQTT messages routed to the other nodes' connected subscribers
//! ([`PeerRequest::MqttRoute`], issue #17): one ordered sender per peer,
//! so the messages of one publisher arrive in publish order, batching what
//! queued up while the previous call was out. Bounded: past
//! [`MAX_QUEUED`] messages waiting for a slow or unreachable peer, new ones
//! are dropped for it (its clean sessions' QoS 0/1 copies are at most once
//! across nodes; persistent sessions' QoS 1/2 copies go through their
//! replicated queues, never this way).

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ferry_util::sync::lock;
use tokio::sync::mpsc;

use crate::broker::Broker;
use crate::metadata::PeerRequest;

/// Messages waiting for one peer.
const MAX_QUEUED: usize = 16 * 1024;
/// Messages per call.
const BATCH: usize = 256;

/// Senders by peer node id.
pub(crate) type PeerRoutes = HashMap<i32, mpsc::Sender<(String, Option<String>)>>;

impl Broker {
    /// Hands an MQTT message (the front-end's encoding) to the connected
    /// subscribers of every other live node, without waiting.
    pub fn route_mqtt_to_peers(self: &Arc<Self>, message: &[u8], origin: Option<&str>) {
        let me = self.node_id();
        let image = self.metadata();
        let mut peers = image.live_nodes().map(|n| n.id).filter(|id| *id != me).peekable();
        if peers.peek().is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let encoded = B64.encode(message);
        let mut routes = lock(&self.mqtt_peer_routes);
        for node in peers {
            let tx = routes.entry(node).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(MAX_QUEUED);
                runtime.spawn(send_to(Arc::downgrade(self), node, rx));
                tx
            });
            if tx.try_send((encoded.clone(), origin.map(String::from))).is_err() {
                tracing::debug!(node, "MQTT routing to a peer is behind; message dropped for it");
            }
        }
    }
}

/// Sends what `rx` gets to `node`, in order, batching.
async fn send_to(broker: std::sync::Weak<Broker>, node: i32, mut rx: mpsc::Receiver<(String, Option<String>)>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let Some(controller) = broker.upgrade().and_then(|b| b.controller.get().cloned()) else { return };
        let messages = std::mem::take(&mut batch);
        if let Err(e) = controller.call_peer(node, PeerRequest::MqttRoute { messages }).await {
            tracing::debug!(node, error = %e, "routing MQTT messages to a peer failed");
        }
    }
}
