//! TLS between cluster nodes: every node presents the node certificate
//! (`--tls-cert`) on both sides and asks its peer for one, verified
//! against `--tls-client-ca`, or without it against the CA certificates
//! that follow the leaf in `--tls-cert` (a self-signed leaf alone trusts
//! itself). A node dialing a peer checks the certificate names the host it
//! dialed (the address in `--controller-quorum` or the peer's registered
//! cluster address). Both sides follow reloads of the files
//! ([`TlsServer::reload`]): connections made after one use the new
//! certificate, key and anchors.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::server::{READ_BUFFER, Trust};
use crate::{PrincipalMapper, TlsError, TlsFiles, TlsServer};

/// Both sides of the cluster port's TLS.
#[derive(Clone, Debug)]
pub struct PeerTls {
    /// Accepts peers (client certificates required); its reload also
    /// renews what [`PeerTls::connect`] presents and trusts.
    pub server: Arc<TlsServer>,
}

impl PeerTls {
    /// Loads the node certificate and the peers' trust anchors.
    pub fn new(files: &TlsFiles) -> Result<PeerTls, TlsError> {
        let server = TlsServer::with_trust(files.clone(), PrincipalMapper::default(), Trust::Peers)?;
        Ok(PeerTls { server: Arc::new(server) })
    }

    /// The TLS handshake to the peer at `addr` (`host:port`) over `tcp`,
    /// with the certificate, key and anchors of the last (re)load.
    /// The socket is read through a buffer, as on the accepting side.
    pub async fn connect(&self, addr: &str, tcp: TcpStream) -> std::io::Result<TlsStream<BufReader<TcpStream>>> {
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
        let connector =
            self.server.connector().ok_or_else(|| std::io::Error::other("cluster TLS without peer anchors"))?;
        connector.connect(name, BufReader::with_capacity(READ_BUFFER, tcp)).await
    }
}
