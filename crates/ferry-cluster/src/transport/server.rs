//! Serving the cluster port: one task per connection reads requests and
//! runs each in a task of its own (so a slow snapshot chunk does not hold
//! up heartbeats), answering through one writer per connection. A frame
//! that cannot be read or decoded closes its connection, and only it.
//! Replica fetch data goes from the segment files with `sendfile`; over
//! cluster TLS (mutual: the peer must present a certificate the node's CA
//! signed) it is read and written through the encryption instead.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ferry_broker::metadata::MetadataError;
use ferry_tls::{MaybeTls, TlsServer};
use tokio::io::{AsyncRead, AsyncWriteExt, BufWriter, WriteHalf};
use tokio::net::TcpListener;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Semaphore, mpsc, watch};

use super::frame::read_frame;
use super::message::{Request, Response, answers_binary, decode_request, encode_response_chunks};
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
    /// A connection from node `from` ended by the peer (closed, reset or
    /// unreadable), not by this node stopping: the peer may be dead.
    fn disconnected(self: Arc<Self>, _from: i32) {}
}

/// Accepts connections on `listener` (over mutual TLS with `tls`) and
/// serves them until `stop` turns true (then every connection is closed too).
pub async fn serve<S: Service>(
    listener: TcpListener,
    tls: Option<Arc<TlsServer>>,
    service: Arc<S>,
    stop: watch::Receiver<bool>,
) {
    let mut stopped = stop.clone();
    loop {
        tokio::select! {
            () = stopped_signal(&mut stopped) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    tracing::debug!(%peer, "cluster connection");
                    let (service, stop, tls) = (service.clone(), stop.clone(), tls.clone());
                    tokio::spawn(async move {
                        // The handshake in the connection's own task: a bad
                        // or slow one holds up no other peer.
                        let stream = match tls {
                            None => MaybeTls::Plain(stream),
                            Some(tls) => match tls.accept(stream).await {
                                Ok(s) => s,
                                Err(e) => {
                                    tracing::warn!(%peer, error = %e, "cluster TLS handshake failed");
                                    return;
                                }
                            },
                        };
                        connection(stream, peer.to_string(), service, stop).await;
                    });
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

/// The writing side of a cluster connection.
enum Writer {
    /// Plain TCP: file ranges by `sendfile`.
    Plain(OwnedWriteHalf),
    /// TLS: file ranges read and written through the encryption.
    Tls(BufWriter<WriteHalf<MaybeTls>>),
}

async fn connection<S: Service>(stream: MaybeTls, peer: String, service: Arc<S>, mut stop: watch::Receiver<bool>) {
    let (mut reader, mut writer): (Box<dyn AsyncRead + Send + Unpin>, Writer) = match stream {
        MaybeTls::Plain(tcp) => {
            let (r, w) = tcp.into_split();
            (Box::new(r), Writer::Plain(w))
        }
        tls => {
            let (r, w) = tokio::io::split(tls);
            (Box::new(r), Writer::Tls(BufWriter::with_capacity(64 * 1024, w)))
        }
    };
    let (tx, mut rx) = mpsc::channel::<Vec<Chunk>>(IN_FLIGHT);
    let write_task = tokio::spawn(async move {
        while let Some(chunks) = rx.recv().await {
            if let Err(e) = write_chunks(&mut writer, &chunks, rx.is_empty()).await {
                tracing::debug!(error = %e, "cluster connection write failed");
                return;
            }
        }
    });
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    // The node at the other end, once a request named it.
    let mut peer_node = None;
    let mut stopping = false;
    loop {
        let frame = tokio::select! {
            () = stopped_signal(&mut stop) => {
                stopping = true;
                break;
            }
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
        peer_node = Some(from);
        let binary = answers_binary(&frame);
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
            match encode_response_chunks(correlation, &response, binary) {
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
    if let Some(from) = peer_node.filter(|_| !stopping) {
        service.disconnected(from);
    }
}

/// Writes one frame's chunks in order; a file range goes by `sendfile`
/// (plain) or is copied (TLS). `last`: nothing else is queued, so what TLS
/// buffered goes out now.
async fn write_chunks(writer: &mut Writer, chunks: &[Chunk], last: bool) -> std::io::Result<()> {
    match writer {
        Writer::Plain(w) => {
            for chunk in chunks {
                match chunk {
                    Chunk::Bytes(b) => w.write_all(b).await?,
                    Chunk::File(s) => ferry_tls::send_file(w.as_ref(), &s.file, s.position, s.len).await?,
                }
            }
        }
        Writer::Tls(w) => {
            for chunk in chunks {
                match chunk {
                    Chunk::Bytes(b) => w.write_all(b).await?,
                    Chunk::File(s) => ferry_tls::copy_file(w, &s.file, s.position, s.len).await?,
                }
            }
            if last {
                w.flush().await?;
            }
        }
    }
    Ok(())
}
