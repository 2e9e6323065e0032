//! The TLS side of every listener: one certificate, an optional client CA,
//! reload on SIGHUP or file change, the handshake under a timeout.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::resolver::ReloadingResolver;
use crate::{MaybeTls, PrincipalMapper, TlsError, pem};

/// A handshake that has not finished by then closes that connection.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the files' modification times are checked.
const POLL_EVERY: Duration = ferry_util::reload::POLL_EVERY;

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

/// Whose certificates a [`TlsServer`] accepts from clients (and, for the
/// cluster port, from the peers it dials).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trust {
    /// `files.client_ca` if set, else no client certificates asked for.
    ClientCa,
    /// `files.client_ca` if set, else the CA certificates that follow the
    /// leaf in `files.cert` (a lone self-signed leaf trusts itself): the
    /// cluster port, where both sides present the node certificate.
    Peers,
}

/// What the files said at the last (re)load.
struct Loaded {
    acceptor: TlsAcceptor,
    /// The dialing side (cluster peers only): the same key and anchors.
    connector: Option<TlsConnector>,
}

/// TLS for every listener of the process.
pub struct TlsServer {
    files: TlsFiles,
    trust: Trust,
    resolver: Arc<ReloadingResolver>,
    loaded: RwLock<Arc<Loaded>>,
    mapper: PrincipalMapper,
}

/// Bytes of ciphertext read from the socket at once under rustls, which
/// itself asks for at most a record (usually 4 KiB) per read: with this
/// buffer a 1 MiB produce request takes ~16 reads instead of ~256.
pub(crate) const READ_BUFFER: usize = 64 * 1024;

/// The *ring* provider with the AES-128-GCM suites first. The server picks
/// by its own order (`ignore_client_order`): OpenSSL clients (librdkafka,
/// kcat, Python) list AES-256-GCM first, which costs both sides 14 AES
/// rounds per block instead of 10 for no practical gain in security;
/// ChaCha20 stays last (slower than AES with AES-NI, which servers have).
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    let rank = |s: &rustls::SupportedCipherSuite| {
        let name = format!("{:?}", s.suite());
        if name.contains("AES_128_GCM") {
            0
        } else if name.contains("AES_256_GCM") {
            1
        } else {
            2
        }
    };
    p.cipher_suites.sort_by_key(rank);
    Arc::new(p)
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

/// The anchors client (peer) certificates must chain to; `None`: none asked for.
fn roots(files: &TlsFiles, trust: Trust, key: &CertifiedKey) -> Result<Option<Arc<RootCertStore>>, TlsError> {
    if let Some(ca) = &files.client_ca {
        return Ok(Some(Arc::new(pem::roots(ca)?)));
    }
    if trust == Trust::ClientCa {
        return Ok(None);
    }
    // The chain's CAs; a lone self-signed leaf is its own anchor.
    let anchors = if key.cert.len() > 1 { &key.cert[1..] } else { &key.cert[..] };
    let mut roots = RootCertStore::empty();
    for c in anchors {
        roots.add(c.clone()).map_err(|e| TlsError::Rustls(format!("{}: {e}", files.cert.display())))?;
    }
    Ok(Some(Arc::new(roots)))
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer").field("files", &self.files).field("mapper", &self.mapper).finish_non_exhaustive()
    }
}

impl TlsServer {
    /// Loads the files; an error names the file at fault.
    pub fn new(files: TlsFiles, mapper: PrincipalMapper) -> Result<TlsServer, TlsError> {
        TlsServer::with_trust(files, mapper, Trust::ClientCa)
    }

    pub(crate) fn with_trust(files: TlsFiles, mapper: PrincipalMapper, trust: Trust) -> Result<TlsServer, TlsError> {
        let key = certified_key(&files)?;
        let resolver = Arc::new(ReloadingResolver::new(key.clone()));
        let loaded = TlsServer::build(&files, trust, &resolver, &key)?;
        Ok(TlsServer { files, trust, resolver, loaded: RwLock::new(Arc::new(loaded)), mapper })
    }

    /// The rustls configurations for `key` and the anchors the files name now.
    fn build(
        files: &TlsFiles,
        trust: Trust,
        resolver: &Arc<ReloadingResolver>,
        key: &CertifiedKey,
    ) -> Result<Loaded, TlsError> {
        let roots = roots(files, trust, key)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let builder = match &roots {
            Some(roots) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                    .build()
                    .map_err(|e| TlsError::Rustls(format!("client CA: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(resolver.clone());
        config.ignore_client_order = true;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let connector = match (trust, roots) {
            (Trust::Peers, Some(roots)) => {
                let client = ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| TlsError::Rustls(e.to_string()))?
                    .with_root_certificates(roots)
                    .with_client_cert_resolver(resolver.clone());
                Some(TlsConnector::from(Arc::new(client)))
            }
            _ => None,
        };
        Ok(Loaded { acceptor, connector })
    }

    fn loaded(&self) -> Arc<Loaded> {
        self.loaded.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The dialing side's connector (cluster peers only): the key and
    /// anchors of the last successful (re)load.
    pub(crate) fn connector(&self) -> Option<TlsConnector> {
        self.loaded().connector.clone()
    }

    /// The files this server reads.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Reads the certificate, key and client CA again; new handshakes
    /// (accepted and, on the cluster port, dialed) use them, open
    /// connections are untouched. On any error everything stays as it was.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = certified_key(&self.files)?;
        let loaded = TlsServer::build(&self.files, self.trust, &self.resolver, &key)?;
        self.resolver.set(key);
        *self.loaded.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(loaded);
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
        let acceptor = self.loaded().acceptor.clone();
        let io = BufReader::with_capacity(READ_BUFFER, tcp);
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
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

    /// Reloads on SIGHUP and when a file's modification time changes
    /// (certificate, key, client CA), until `stop` turns true. Needs a
    /// tokio runtime.
    pub fn spawn_reloader(self: &Arc<Self>, stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        let mut files = vec![self.files.cert.clone(), self.files.key.clone()];
        files.extend(self.files.client_ca.clone());
        ferry_util::reload::spawn_reloader("tls certificate", files, POLL_EVERY, stop, move || {
            this.reload().map_err(|e| e.to_string())
        })
    }
}
