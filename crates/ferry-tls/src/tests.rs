//! Handshakes against a real listener: reload, mutual TLS, garbage.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{MaybeTls, PrincipalMapper, TlsFiles, TlsServer};

struct Ca {
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    Ca { cert, issuer: rcgen::Issuer::new(p, key) }
}

/// (cert PEM, key PEM) for `cn`, signed by `ca`.
fn leaf(ca: &Ca, cn: &str) -> (String, String) {
    let mut p = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.distinguished_name.push(rcgen::DnType::OrganizationName, "Ferry");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn client(ca: &Ca, identity: Option<(String, String)>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => {
            let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
            b.with_client_auth_cert(chain, PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap()).unwrap()
        }
        None => b.with_no_client_auth(),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

use rustls::pki_types::pem::PemObject;

/// An echo server: each accepted TLS connection reports its principal,
/// then echoes.
async fn echo(
    server: Arc<TlsServer>,
) -> (std::net::SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Result<Option<String>, String>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = l.accept().await.unwrap();
            let (server, tx) = (server.clone(), tx.clone());
            tokio::spawn(async move {
                match server.accept(tcp).await {
                    Ok(mut s) => {
                        let _ = tx.send(Ok(server.peer_principal(&s)));
                        let mut buf = [0u8; 64];
                        while let Ok(n) = s.read(&mut buf).await {
                            if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            });
        }
    });
    (addr, rx)
}

async fn roundtrip(s: &mut tokio_rustls::client::TlsStream<TcpStream>) {
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"ping");
}

fn presented(s: &tokio_rustls::client::TlsStream<TcpStream>) -> Vec<u8> {
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn reload_on_file_change_keeps_old_connections() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("test ca");
    let (c1, k1) = leaf(&ca, "first");
    let files =
        TlsFiles { cert: write(dir.path(), "c.pem", &c1), key: write(dir.path(), "k.pem", &k1), client_ca: None };
    let server = Arc::new(TlsServer::new(files.clone(), PrincipalMapper::default()).unwrap());
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    server.spawn_reloader(stop);
    let (addr, _rx) = echo(server.clone()).await;
    let name = ServerName::try_from("localhost").unwrap();
    let mut old = client(&ca, None).connect(name.clone(), TcpStream::connect(addr).await.unwrap()).await.unwrap();
    let first = presented(&old);
    roundtrip(&mut old).await;

    // A key that does not match the certificate is refused; the old pair stays.
    let (c2, k2) = leaf(&ca, "second");
    std::fs::write(&files.cert, &c2).unwrap();
    assert!(server.reload().is_err());
    assert!(server.current_cert() == first, "a mismatched pair replaced the certificate");
    // The key arrives: the poller picks the pair up within a few seconds.
    std::fs::write(&files.key, &k2).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.current_cert() == first {
        assert!(tokio::time::Instant::now() < deadline, "certificate not reloaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A fresh client: one that resumes its TLS session keeps the identity
    // of that session, which is the old certificate.
    let mut new = client(&ca, None).connect(name, TcpStream::connect(addr).await.unwrap()).await.unwrap();
    assert!(presented(&new) != first, "the new connection still sees the old certificate");
    assert_eq!(crate::subject_dn(&presented(&new)).unwrap(), "O=Ferry,CN=second");
    roundtrip(&mut new).await;
    roundtrip(&mut old).await;
}

#[tokio::test]
async fn mutual_tls_maps_trusted_and_refuses_untrusted() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = ca("server ca");
    let client_ca = ca("client ca");
    let rogue_ca = ca("rogue ca");
    let (c, k) = leaf(&server_ca, "broker");
    let files = TlsFiles {
        cert: write(dir.path(), "c.pem", &c),
        key: write(dir.path(), "k.pem", &k),
        client_ca: Some(write(dir.path(), "ca.pem", &client_ca.cert.pem())),
    };
    let mapper = PrincipalMapper::parse("RULE:^O=Ferry,CN=(.*)$/$1/L").unwrap();
    let server = Arc::new(TlsServer::new(files, mapper).unwrap());
    let (addr, mut rx) = echo(server).await;
    let name = ServerName::try_from("localhost").unwrap();

    let good = client(&server_ca, Some(leaf(&client_ca, "Alice")));
    let mut s = good.connect(name.clone(), TcpStream::connect(addr).await.unwrap()).await.unwrap();
    roundtrip(&mut s).await;
    assert_eq!(rx.recv().await.unwrap(), Ok(Some("alice".to_string())));

    // Signed by a CA the broker does not trust: the handshake fails.
    let rogue = client(&server_ca, Some(leaf(&rogue_ca, "mallory")));
    let r = async {
        let mut s = rogue.connect(name.clone(), TcpStream::connect(addr).await?).await?;
        // TLS 1.3: the client learns of the rejection on its first read.
        s.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await?;
        std::io::Result::Ok(())
    };
    assert!(tokio::time::timeout(Duration::from_secs(5), r).await.unwrap().is_err());
    assert!(rx.recv().await.unwrap().is_err());
    // No certificate at all: refused too.
    let anonymous = client(&server_ca, None);
    let r = async {
        let mut s = anonymous.connect(name.clone(), TcpStream::connect(addr).await?).await?;
        s.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await?;
        std::io::Result::Ok(())
    };
    assert!(tokio::time::timeout(Duration::from_secs(5), r).await.unwrap().is_err());
    assert!(rx.recv().await.unwrap().is_err());
    // The listener still serves trusted clients.
    let mut s = good.connect(name, TcpStream::connect(addr).await.unwrap()).await.unwrap();
    roundtrip(&mut s).await;
}

#[tokio::test]
async fn garbage_handshake_fails_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("ca");
    let (c, k) = leaf(&ca, "broker");
    let files = TlsFiles { cert: write(dir.path(), "c.pem", &c), key: write(dir.path(), "k.pem", &k), client_ca: None };
    let server = Arc::new(TlsServer::new(files, PrincipalMapper::default()).unwrap());
    let (addr, mut rx) = echo(server).await;
    let mut junk = TcpStream::connect(addr).await.unwrap();
    junk.write_all(b"AMQP\x00\x00\x09\x01 this is not a ClientHello").await.unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap().is_err());
    let mut buf = Vec::new();
    // The server closes the garbage connection (an alert, then EOF).
    tokio::time::timeout(Duration::from_secs(5), junk.read_to_end(&mut buf)).await.unwrap().ok();
    let connector = client(&ca, None);
    let mut s = connector
        .connect(ServerName::try_from("localhost").unwrap(), TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    roundtrip(&mut s).await;
    assert!(matches!(rx.recv().await.unwrap(), Ok(None)));
}

#[test]
fn missing_or_mismatched_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("ca");
    let (c, _) = leaf(&ca, "a");
    let (_, k) = leaf(&ca, "b");
    let files = TlsFiles { cert: dir.path().join("nope.pem"), key: write(dir.path(), "k.pem", &k), client_ca: None };
    let e = TlsServer::new(files, PrincipalMapper::default()).unwrap_err().to_string();
    assert!(e.contains("nope.pem"), "{e}");
    let files = TlsFiles { cert: write(dir.path(), "c.pem", &c), key: write(dir.path(), "k.pem", &k), client_ca: None };
    let e = TlsServer::new(files, PrincipalMapper::default()).unwrap_err().to_string();
    assert!(e.contains("does not match"), "{e}");
    let files = TlsFiles { cert: write(dir.path(), "empty.pem", ""), key: dir.path().join("k.pem"), client_ca: None };
    assert!(TlsServer::new(files, PrincipalMapper::default()).unwrap_err().to_string().contains("empty.pem"));
}

#[test]
fn maybe_tls_is_plain_for_tcp() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let s = MaybeTls::Plain(c);
        assert!(!s.is_tls());
        assert!(s.tcp().peer_addr().is_ok());
    });
}

#[tokio::test]
async fn the_server_picks_aes_128_gcm_over_a_client_preferring_aes_256() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("ca");
    let (c, k) = leaf(&ca, "broker");
    let files = TlsFiles { cert: write(dir.path(), "c.pem", &c), key: write(dir.path(), "k.pem", &k), client_ca: None };
    let server = Arc::new(TlsServer::new(files, PrincipalMapper::default()).unwrap());
    let (addr, _rx) = echo(server).await;
    // rustls' default order puts AES-256-GCM first, as OpenSSL's does.
    let mut s = client(&ca, None)
        .connect(ServerName::try_from("localhost").unwrap(), TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    roundtrip(&mut s).await;
    let suite = s.get_ref().1.negotiated_cipher_suite().unwrap().suite();
    assert_eq!(suite, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
}

/// (cert PEM, key PEM) for `cn`, signed by `ca`, as a chain file with `ca`.
fn chained(ca: &Ca, cn: &str) -> (String, String) {
    let (cert, key) = leaf(ca, cn);
    (format!("{cert}{}", ca.cert.pem()), key)
}

#[tokio::test]
async fn a_reloaded_peer_dials_with_the_new_certificate_and_anchors() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (ca("old ca"), ca("new ca"));
    // The accepting node already runs on the new CA and trusts both.
    let (bc, bk) = chained(&new_ca, "node b");
    let b_files = TlsFiles {
        cert: write(dir.path(), "b.pem", &bc),
        key: write(dir.path(), "b.key", &bk),
        client_ca: Some(write(dir.path(), "b-ca.pem", &format!("{}{}", old_ca.cert.pem(), new_ca.cert.pem()))),
    };
    let b = crate::PeerTls::new(&b_files).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let server = b.server.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = l.accept().await.unwrap();
            let (server, seen_tx) = (server.clone(), seen_tx.clone());
            tokio::spawn(async move {
                if let Ok(MaybeTls::Tls(mut s)) = server.accept(tcp).await {
                    let leaf = s.get_ref().1.peer_certificates().unwrap()[0].to_vec();
                    let _ = seen_tx.send(crate::subject_dn(&leaf).unwrap());
                    let mut buf = [0u8; 4];
                    if s.read_exact(&mut buf).await.is_ok() {
                        let _ = s.write_all(&buf).await;
                    }
                }
            });
        }
    });
    // The dialing node still has the old CA only: it cannot trust node b.
    let (ac, ak) = chained(&old_ca, "node a");
    let a_files = TlsFiles {
        cert: write(dir.path(), "a.pem", &ac),
        key: write(dir.path(), "a.key", &ak),
        client_ca: Some(write(dir.path(), "a-ca.pem", &old_ca.cert.pem())),
    };
    let a = crate::PeerTls::new(&a_files).unwrap();
    let addr = format!("localhost:{port}");
    let dial = || async { a.connect(&addr, TcpStream::connect(("127.0.0.1", port)).await.unwrap()).await };
    assert!(dial().await.is_err(), "node b's certificate is not trusted yet");

    // Renewed on disk (new certificate, key and CA), then reloaded.
    let (ac2, ak2) = chained(&new_ca, "node a renewed");
    std::fs::write(&a_files.key, &ak2).unwrap();
    std::fs::write(&a_files.cert, &ac2).unwrap();
    std::fs::write(a_files.client_ca.as_ref().unwrap(), new_ca.cert.pem()).unwrap();
    a.server.reload().unwrap();
    let mut s = dial().await.expect("the reloaded anchors trust node b");
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"ping");
    let presented = tokio::time::timeout(Duration::from_secs(5), seen.recv()).await.unwrap().unwrap();
    assert_eq!(presented, "O=Ferry,CN=node a renewed", "the dialing side still presents its old certificate");

    // A broken CA file is refused and leaves the working setup in place.
    std::fs::write(a_files.client_ca.as_ref().unwrap(), "not a certificate").unwrap();
    assert!(a.server.reload().is_err());
    assert!(dial().await.is_ok(), "a failed reload changed what the dialer trusts");
}
