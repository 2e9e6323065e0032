//! Serving the cluster port: one task per connection reads requests and
//! runs each in a task of its own (so a slow snapshot chunk does not hold
//! up heartbeats), answering through one writer per connection. A frame
//! that cannot be read or decoded closes its connection, and only it.
//! Replica fetch data goes from the segment files with `sendfile`.

use std::future::Future;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;

use ferry_broker::metadata::MetadataError;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};

use super::frame::read_frame;
use super::message::{Request, Response, decode_request, encode_response_chunks};
use crate::replication::Chunk;

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
    let (tx, mut rx) = mpsc::channel::<Vec<Chunk>>(IN_FLIGHT);
    let write_task = tokio::spawn(async move {
        while let Some(chunks) = rx.recv().await {
            if let Err(e) = write_chunks(&mut writer, &chunks).await {
                tracing::debug!(error = %e, "cluster connection write failed");
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
            match encode_response_chunks(correlation, &response) {
                Ok(Some(chunks)) => {
                    let _ = tx.send(chunks).await;
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

/// Writes one frame's chunks in order; a file range goes by `sendfile`.
async fn write_chunks(writer: &mut OwnedWriteHalf, chunks: &[Chunk]) -> std::io::Result<()> {
    for chunk in chunks {
        match chunk {
            Chunk::Bytes(b) => writer.write_all(b).await?,
            Chunk::File(slice) => send_file(writer.as_ref(), slice).await?,
        }
    }
    Ok(())
}

/// Sends a file range straight from the page cache to the socket.
async fn send_file(stream: &TcpStream, slice: &ferry_broker::ReadSlice) -> std::io::Result<()> {
    let mut offset = i64::try_from(slice.position).map_err(std::io::Error::other)?;
    let end = offset + i64::try_from(slice.len).map_err(std::io::Error::other)?;
    while offset < end {
        stream.writable().await?;
        let count = (end - offset) as usize;
        let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
            nix::sys::sendfile::sendfile64(stream.as_fd(), slice.file.as_fd(), Some(&mut offset), count)
                .map_err(std::io::Error::from)
        });
        match sent {
            // The file got shorter than promised (a truncation): the frame
            // cannot be completed, so the connection must go.
            Ok(0) => {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "segment shrank during sendfile"));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
