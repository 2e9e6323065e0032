//! MQTT messages routed to the other nodes' connected subscribers
//! ([`PeerRequest::MqttRoute`], issue #17): one ordered sender per peer,
//! so the messages of one publisher arrive in publish order, batching what
//! queued up while the previous call was out. Bounded: past
//! [`MAX_QUEUED`] messages waiting for a slow or unreachable peer, new ones
//! are dropped for it (its clean sessions' QoS 0/1 copies are at most once
//! across nodes; persistent sessions' QoS 1/2 copies go through their
//! replicated queues, never this way). The messages travel raw beside
//! the call's JSON to nodes that read them so (`metadata::peer_blobs`),
//! as base64 to older ones.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use ferry_util::sync::lock;
use tokio::sync::mpsc;

use crate::broker::Broker;
use crate::metadata::{Blob, PeerRequest};

/// Messages waiting for one peer.
const MAX_QUEUED: usize = 16 * 1024;
/// Messages per call.
const BATCH: usize = 256;
/// How long a batch is tried on a peer that does not answer.
const RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// Senders by peer node id.
pub(crate) type PeerRoutes = HashMap<i32, mpsc::Sender<(Blob, Option<String>)>>;

impl Broker {
    /// Hands an MQTT message (the front-end's encoding) to the connected
    /// subscribers of every other live node, without waiting.
    pub fn route_mqtt_to_peers(self: &Arc<Self>, message: Bytes, origin: Option<&str>) {
        let me = self.node_id();
        let image = self.metadata();
        // Every registered node, fenced or not: a node fenced for missed
        // heartbeats (a pause, a loaded machine) may still hold clients;
        // one that is down only fails its own sender's calls.
        let mut peers = image.nodes.keys().copied().filter(|id| *id != me).peekable();
        if peers.peek().is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let message = Blob(message);
        let mut routes = lock(&self.mqtt_peer_routes);
        for node in peers {
            let tx = routes.entry(node).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(MAX_QUEUED);
                runtime.spawn(send_to(Arc::downgrade(self), node, rx));
                tx
            });
            if tx.try_send((message.clone(), origin.map(String::from))).is_err() {
                tracing::debug!(node, "MQTT routing to a peer is behind; message dropped for it");
            }
        }
    }
}

/// Sends what `rx` gets to `node`, in order, batching; a failed call is
/// tried again for up to [`RETRY_FOR`] (a retry after a call that reached
/// the peer but lost its answer hands the batch over twice: at least once),
/// then the batch is dropped for that node.
async fn send_to(broker: std::sync::Weak<Broker>, node: i32, mut rx: mpsc::Receiver<(Blob, Option<String>)>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let messages = std::mem::take(&mut batch);
        let deadline = tokio::time::Instant::now() + RETRY_FOR;
        loop {
            let Some(controller) = broker.upgrade().and_then(|b| b.controller.get().cloned()) else { return };
            let request = PeerRequest::MqttRoute { messages: messages.clone() };
            match controller.call_peer(node, request).await {
                Ok(_) => break,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    tracing::warn!(node, error = %e, messages = messages.len(), "MQTT messages not routed to a peer");
                    break;
                }
                Err(e) => {
                    tracing::debug!(node, error = %e, "routing MQTT messages to a peer failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}
