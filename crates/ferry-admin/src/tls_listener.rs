//! HTTPS: an axum listener that hands over connections once their TLS
//! handshake is done. Handshakes run in their own tasks, so a stalled or
//! garbage one never holds up the accept loop.

use std::net::SocketAddr;
use std::sync::Arc;

use ferry_tls::{MaybeTls, TlsServer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// A TCP listener whose connections come out TLS-wrapped.
pub struct TlsListener {
    tcp: TcpListener,
    tls: Arc<TlsServer>,
    handshakes: JoinSet<Option<(MaybeTls, SocketAddr)>>,
}

impl TlsListener {
    /// Wraps `tcp`; every connection does the handshake of `tls` first.
    pub fn new(tcp: TcpListener, tls: Arc<TlsServer>) -> TlsListener {
        TlsListener { tcp, tls, handshakes: JoinSet::new() }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = MaybeTls;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let tls = self.tls.clone();
                        self.handshakes.spawn(async move {
                            match tls.accept(tcp).await {
                                Ok(s) => Some((s, peer)),
                                Err(e) => {
                                    tracing::debug!(%peer, error = %e, "https handshake failed");
                                    None
                                }
                            }
                        });
                    }
                    Err(e) => {
                        // As axum's own TcpListener: out of descriptors and
                        // the like pass; wait a little and go on.
                        tracing::warn!(error = %e, "http accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(ready)) = done {
                        return ready;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
