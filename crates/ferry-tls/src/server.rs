//! The TLS side of every listener: one certificate, an optional client CA,
//! reload on SIGHUP or file change, the handshake under a timeout.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::resolver::ReloadingResolver;
use crate::{MaybeTls, PrincipalMapper, TlsError, pem};

/// A handshake that has not finished by then closes that connection.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the files' modification times are checked.
const POLL_EVERY: Duration = Duration::from_secs(2);

/// The PEM files (`--tls-cert`, `--tls-key`, `--tls-client-ca`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key of the leaf.
    pub key: PathBuf,
    /// CA certificates client certificates must chain to; set: every TLS
    /// client must present one (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// TLS for every listener of the process.
pub struct TlsServer {
    files: TlsFiles,
    resolver: Arc<ReloadingResolver>,
    acceptor: TlsAcceptor,
    mapper: PrincipalMapper,
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certified_key(files: &TlsFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = pem::load_certs(&files.cert)?;
    let key = pem::load_key(&files.key)?;
    let signer = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Rustls(format!("{}: {e}", files.key.display())))?;
    let ck = CertifiedKey::new(chain, signer);
    // A half-written pair (new cert, old key) must not replace a good one.
    ck.keys_match().map_err(|e| {
        TlsError::Rustls(format!("{} does not match {}: {e}", files.key.display(), files.cert.display()))
    })?;
    Ok(Arc::new(ck))
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer").field("files", &self.files).field("mapper", &self.mapper).finish_non_exhaustive()
    }
}

impl TlsServer {
    /// Loads the files; an error names the file at fault.
    pub fn new(files: TlsFiles, mapper: PrincipalMapper) -> Result<TlsServer, TlsError> {
        let roots = match &files.client_ca {
            Some(ca) => Some(pem::roots(ca)?),
            None => None,
        };
        TlsServer::with_client_roots(files, mapper, roots)
    }

    /// As [`TlsServer::new`], with the client CAs given (`None`: no client
    /// certificates asked for) instead of read from `files.client_ca`.
    pub fn with_client_roots(
        files: TlsFiles,
        mapper: PrincipalMapper,
        roots: Option<rustls::RootCertStore>,
    ) -> Result<TlsServer, TlsError> {
        let resolver = Arc::new(ReloadingResolver::new(certified_key(&files)?));
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let builder = match roots {
            Some(roots) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                    .build()
                    .map_err(|e| TlsError::Rustls(format!("client CA: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder.with_cert_resolver(resolver.clone());
        Ok(TlsServer { files, resolver, acceptor: TlsAcceptor::from(Arc::new(config)), mapper })
    }

    /// The files this server reads.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Reads the certificate and key again; new handshakes use them, open
    /// connections are untouched. On error the old pair stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.resolver.set(certified_key(&self.files)?);
        Ok(())
    }

    /// The leaf certificate new handshakes present (DER).
    pub fn current_cert(&self) -> Vec<u8> {
        self.resolver.get().cert.first().map(|c| c.to_vec()).unwrap_or_default()
    }

    /// Runs the TLS handshake on an accepted connection, bounded by
    /// [`HANDSHAKE_TIMEOUT`]: garbage or a stalled peer fails only this
    /// connection.
    pub async fn accept(&self, tcp: TcpStream) -> std::io::Result<MaybeTls> {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => Ok(MaybeTls::Tls(Box::new(tls))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "tls handshake timed out")),
        }
    }

    /// The principal of a connection's client certificate, mapped by the
    /// configured rules; `None` for plain connections, no certificate, or
    /// no matching rule.
    pub fn peer_principal(&self, stream: &MaybeTls) -> Option<String> {
        let MaybeTls::Tls(tls) = stream else { return None };
        let leaf = tls.get_ref().1.peer_certificates()?.first()?;
        self.mapper.map(&crate::subject_dn(leaf)?)
    }

    /// Reloads on SIGHUP and when a file's modification time changes,
    /// until `stop` turns true. Needs a tokio runtime.
    pub fn spawn_reloader(self: &Arc<Self>, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "no SIGHUP handler: certificates reload on file change only");
                    None
                }
            };
            let mut seen = this.mtimes();
            let mut tick = tokio::time::interval(POLL_EVERY);
            loop {
                let why = tokio::select! {
                    _ = tick.tick() => {
                        let now = this.mtimes();
                        if now == seen { continue }
                        seen = now;
                        "file change"
                    }
                    Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
                    _ = stop.changed() => return,
                };
                match this.reload() {
                    Ok(()) => {
                        tracing::info!(reason = why, cert = %this.files.cert.display(), "tls certificate reloaded");
                    }
                    Err(e) => {
                        tracing::warn!(reason = why, error = %e, "tls certificate reload failed; keeping the old one");
                    }
                }
            }
        })
    }

    fn mtimes(&self) -> [Option<SystemTime>; 2] {
        let m = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        [m(&self.files.cert), m(&self.files.key)]
    }
}
