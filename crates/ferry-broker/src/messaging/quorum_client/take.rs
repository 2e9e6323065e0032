//! A remote take whose deliveries are never stranded. A take long-polls
//! the queue's leader, which hands the deliveries to this node's session
//! as soon as it answers. If the consumer goes away while the call is out
//! (basic.cancel and closed channels abort the consumer's task, dropping
//! its future), or between the answer and its buffering, nobody would
//! deliver or settle them: the session keeps them (renewed while this
//! node holds deliveries) until the node dies. So the call runs in a task
//! of its own, and what it brings back for a consumer that is gone is
//! handed back to the queue (requeued, like a closed channel's deliveries).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::task::JoinHandle;

use super::QuorumClient;
use crate::metadata::{PeerError, PeerReply, PeerRequest, WireDelivery};

/// A take on its way; dropped before it finished, it hands back what the
/// leader answers.
struct InFlight {
    client: Arc<QuorumClient>,
    call: Option<JoinHandle<Result<PeerReply, PeerError>>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some(call) = self.call.take() else { return };
        let client = self.client.clone();
        // The consumer's runtime is still running (only its task ended).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Ok(Ok(PeerReply::QueueDeliveries { deliveries, .. })) = call.await {
                    client.hand_back(&deliveries);
                }
            });
        }
    }
}

impl QuorumClient {
    /// Sends `take` (a [`PeerRequest::QueueTake`]) to `node` and returns
    /// its answer; if the caller stops waiting first, the deliveries go
    /// back to the queue when the answer comes.
    pub(super) async fn take_from(self: &Arc<Self>, node: i32, take: PeerRequest) -> Result<PeerReply, PeerError> {
        let client = self.clone();
        let call = tokio::spawn(async move { client.call(node, take).await });
        let mut in_flight = InFlight { client: self.clone(), call: Some(call) };
        let answer = match in_flight.call.as_mut() {
            Some(call) => call.await,
            None => return Err(PeerError::Unavailable("take not started".into())),
        };
        in_flight.call = None;
        answer.unwrap_or_else(|e| Err(PeerError::Unavailable(format!("take task ended: {e}"))))
    }

    /// Deliveries taken for a consumer that is gone: back to the queue
    /// through the settlement pipeline (counted as held until answered).
    pub(super) fn hand_back(self: &Arc<Self>, deliveries: &[WireDelivery]) {
        if deliveries.is_empty() {
            return;
        }
        self.unsettled.fetch_add(deliveries.len() as i64, Ordering::Relaxed);
        let offsets: Vec<u64> = deliveries.iter().map(|d| d.offset).collect();
        self.settle(&[], &offsets, &[]);
    }
}
