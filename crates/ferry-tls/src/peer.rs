//! TLS between cluster nodes: every node presents the node certificate
//! (`--tls-cert`) on both sides and asks its peer for one, verified
//! against `--tls-client-ca`, or without it against the CA certificates
//! that follow the leaf in `--tls-cert` (a self-signed leaf alone trusts
//! itself). A node dialing a peer checks the certificate names the host it
//! dialed (the address in `--controller-quorum` or the peer's registered
//! cluster address).

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::server::provider;
use crate::{PrincipalMapper, TlsError, TlsFiles, TlsServer, pem};

/// Both sides of the cluster port's TLS.
#[derive(Clone)]
pub struct PeerTls {
    /// Accepts peers (client certificates required).
    pub server: Arc<TlsServer>,
    connector: TlsConnector,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls").field("server", &self.server).finish_non_exhaustive()
    }
}

impl PeerTls {
    /// Loads the node certificate and the peers' trust anchors.
    pub fn new(files: &TlsFiles) -> Result<PeerTls, TlsError> {
        let chain = pem::load_certs(&files.cert)?;
        let roots = if let Some(ca) = &files.client_ca {
            pem::roots(ca)?
        } else {
            // The chain's CAs; a lone self-signed leaf is its own anchor.
            let anchors = if chain.len() > 1 { &chain[1..] } else { &chain[..] };
            let mut roots = rustls::RootCertStore::empty();
            for c in anchors {
                roots.add(c.clone()).map_err(|e| TlsError::Rustls(format!("{}: {e}", files.cert.display())))?;
            }
            roots
        };
        let server =
            Arc::new(TlsServer::with_client_roots(files.clone(), PrincipalMapper::default(), Some(roots.clone()))?);
        let key = pem::load_key(&files.key)?;
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| TlsError::Rustls(format!("{}: {e}", files.key.display())))?;
        Ok(PeerTls { server, connector: TlsConnector::from(Arc::new(client)) })
    }

    /// The TLS handshake to the peer at `addr` (`host:port`) over `tcp`.
    pub async fn connect(&self, addr: &str, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
        self.connector.connect(name, tcp).await
    }
}
