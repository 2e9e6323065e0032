//! Several listening sockets, each plain or TLS, accepted as one stream of
//! connections; the TLS handshake is left to the connection's own task
//! ([`Accepted::handshake`]) so a slow one holds up nobody else.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::{MaybeTls, TlsServer};

/// One accepted TCP connection, before any TLS handshake.
pub struct Accepted {
    /// The socket.
    pub tcp: TcpStream,
    /// The client's address.
    pub peer: SocketAddr,
    /// The listener's TLS, if it is a TLS listener.
    pub tls: Option<Arc<TlsServer>>,
    /// The tag the listener was given (e.g. "websocket").
    pub tag: usize,
}

impl Accepted {
    /// The stream to serve (after the TLS handshake on a TLS listener,
    /// bounded by [`crate::HANDSHAKE_TIMEOUT`]) and the client
    /// certificate's principal, if any.
    pub async fn handshake(self) -> std::io::Result<(MaybeTls, Option<String>)> {
        let _ = self.tcp.set_nodelay(true);
        match self.tls {
            None => Ok((MaybeTls::Plain(self.tcp), None)),
            Some(tls) => {
                let s = tls.accept(self.tcp).await?;
                let principal = tls.peer_principal(&s);
                Ok((s, principal))
            }
        }
    }
}

/// The listeners' accept loops; dropping it stops them.
pub struct AcceptAll {
    rx: mpsc::Receiver<std::io::Result<Accepted>>,
    _loops: JoinSet<()>,
}

impl AcceptAll {
    /// Starts accepting on every `(listener, tls, tag)` (needs a runtime).
    pub fn new(listeners: Vec<(TcpListener, Option<Arc<TlsServer>>, usize)>) -> AcceptAll {
        let (tx, rx) = mpsc::channel(64);
        let mut loops = JoinSet::new();
        for (listener, tls, tag) in listeners {
            let tx = tx.clone();
            loops.spawn(async move {
                loop {
                    let next = listener.accept().await.map(|(tcp, peer)| Accepted { tcp, peer, tls: tls.clone(), tag });
                    let failed = next.is_err();
                    if tx.send(next).await.is_err() {
                        return;
                    }
                    if failed {
                        // Out of descriptors and the like: let it pass.
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            });
        }
        AcceptAll { rx, _loops: loops }
    }

    /// The next connection (or accept error); `None` with no listeners.
    pub async fn next(&mut self) -> Option<std::io::Result<Accepted>> {
        self.rx.recv().await
    }
}
