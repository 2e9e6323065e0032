//! Serving the cluster port: one task per connection reads requests and
//! runs each in a task of its own (so a slow snapshot chunk does not hold
//! up heartbeats), answering through one writer per connection. A frame
//! that cannot be read or decoded closes its connection, and only it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ferry_broker::metadata::MetadataError;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};

use super::frame::read_frame;
use super::message::{Request, Response, decode_request, encode_response};

/// Requests one connection may have in flight.
const IN_FLIGHT: usize = 64;

/// A boxed future a [`Service`] answers with.
pub type ServiceFuture = Pin<Box<dyn Future<Output = Response> + Send + 'static>>;

/// What answers requests on the cluster port.
pub trait Service: Send + Sync + 'static {
    /// This node's id (for refusals).
    fn node_id(&self) -> i32;
    /// This node's quorum fingerprint; requests with another are refused.
    fn quorum(&self) -> &str;
    /// Answers `request` from node `from`.
    fn call(self: Arc<Self>, from: i32, request: Request) -> ServiceFuture;
}

/// Accepts connections on `listener` and serves them until `stop` turns
/// true (then every connection is closed too).
pub async fn serve<S: Service>(listener: TcpListener, service: Arc<S>, stop: watch::Receiver<bool>) {
    let mut stopped = stop.clone();
    loop {
        tokio::select! {
            () = stopped_signal(&mut stopped) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    tracing::debug!(%peer, "cluster connection");
                    tokio::spawn(connection(stream, service.clone(), stop.clone()));
                }
                Err(e) => {
                    // Out of descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "cluster port accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped_signal(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn connection<S: Service>(stream: TcpStream, service: Arc<S>, mut stop: watch::Receiver<bool>) {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(IN_FLIGHT);
    let write_task = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let frame = tokio::select! {
            () = stopped_signal(&mut stop) => break,
            frame = read_frame(&mut reader) => frame,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "bad frame on the cluster port; closing the connection");
                break;
            }
        };
        let (from, quorum, request) = match decode_request(&frame) {
            Ok(decoded) => decoded,
            Err(e) => {
                tracing::warn!(%peer, kind = frame.kind, error = %e, "bad request on the cluster port; closing the connection");
                break;
            }
        };
        let Ok(permit) = slots.clone().acquire_owned().await else { break };
        let tx = tx.clone();
        let correlation = frame.correlation;
        let response = if quorum == service.quorum() {
            None
        } else {
            Some(Response::Refused(MetadataError::QuorumMismatch(format!(
                "node {from} has controller quorum '{quorum}', node {} has '{}'",
                service.node_id(),
                service.quorum()
            ))))
        };
        let service = service.clone();
        tokio::spawn(async move {
            let response = match response {
                Some(refused) => refused,
                None => service.call(from, request).await,
            };
            match encode_response(correlation, &response).map(|f| f.encode()) {
                Ok(Some(bytes)) => {
                    let _ = tx.send(bytes).await;
                }
                Ok(None) => tracing::warn!(correlation, "response too large for one frame"),
                Err(e) => tracing::warn!(correlation, error = %e, "response not encodable"),
            }
            drop(permit);
        });
    }
    // Closing the write half (and dropping the read half) closes the socket.
    write_task.abort();
}
