//! TLS listeners (issue #18): AMQPS beside plain AMQP with the EXTERNAL
//! mechanism, MQTTS with rumqttc and certificate login, untrusted and
//! garbage handshakes, a certificate reload picked up by new connections
//! while an old one keeps working, and the refused start without a
//! certificate, STOMP over wss:// at /stomp on the MQTT WebSocket, HTTPS
//! and STOMP WebSocket listeners. Certificates are made here with rcgen.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferry_amqp::frame::{self, FrameReader};
use ferry_tls::rustls;
use ferry_tls::rustls::pki_types::pem::PemObject;
use ferry_tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use ferry_tls::tokio_rustls::{TlsConnector, client::TlsStream};
use lapin::protocol::{AMQPClass, channel, connection, parse_class};
use lapin::types::{FieldTable, LongString};
use rumqttc::{QoS, SubscribeReasonCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use crate::mqtt_clients::expect;
use crate::support::{Broker, free_port};

pub(crate) struct Ca {
    pub(crate) cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

pub(crate) fn ca(name: &str) -> Ca {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    Ca { cert, issuer: rcgen::Issuer::new(p, key) }
}

/// (cert PEM, key PEM) for `cn` (O=Ferry), valid for 127.0.0.1, signed by `ca`.
pub(crate) fn leaf(ca: &Ca, cn: &str) -> (String, String) {
    let mut p = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.distinguished_name.push(rcgen::DnType::OrganizationName, "Ferry");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A server CA and certificate, a client CA, in files under `dir`.
pub(crate) struct Pki {
    pub(crate) server_ca: Ca,
    pub(crate) client_ca: Ca,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) client_ca_file: PathBuf,
}

impl Pki {
    pub(crate) fn new(dir: &Path) -> Pki {
        let (server_ca, client_ca) = (ca("ferry test server ca"), ca("ferry test client ca"));
        let (cert_pem, key_pem) = leaf(&server_ca, "broker");
        let (cert, key, client_ca_file) = (dir.join("cert.pem"), dir.join("key.pem"), dir.join("client-ca.pem"));
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        std::fs::write(&client_ca_file, client_ca.cert.pem()).unwrap();
        Pki { server_ca, client_ca, cert, key, client_ca_file }
    }

    /// The server CA certificate (what clients trust), PEM.
    pub(crate) fn server_ca_pem(&self) -> String {
        self.server_ca.cert.pem()
    }

    /// The flags for mutual TLS with names mapped from `CN`.
    pub(crate) fn flags(&self) -> Vec<String> {
        [
            "--tls-cert",
            self.cert.to_str().unwrap(),
            "--tls-key",
            self.key.to_str().unwrap(),
            "--tls-client-ca",
            self.client_ca_file.to_str().unwrap(),
            "--tls-principal-mapping",
            "RULE:^O=Ferry,CN=(.*)$/$1/L",
        ]
        .map(String::from)
        .to_vec()
    }

    /// A client config trusting the server CA, presenting `identity`.
    pub(crate) fn client(&self, identity: Option<(String, String)>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.server_ca.cert.der().clone()).unwrap();
        let b = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        Arc::new(match identity {
            Some((cert, key)) => b
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => b.with_no_client_auth(),
        })
    }
}

pub(crate) async fn tls_connect(config: Arc<rustls::ClientConfig>, port: u16) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    tokio::time::timeout(Duration::from_secs(10), TlsConnector::from(config).connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))?
}

fn method(ch: u16, m: AMQPClass) -> Bytes {
    let mut b = BytesMut::new();
    frame::put_method(&mut b, ch, &m).unwrap();
    b.freeze()
}

/// An AMQP connection driven frame by frame over any stream.
struct RawAmqp<S> {
    rd: FrameReader<ReadHalf<S>>,
    wr: WriteHalf<S>,
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite> RawAmqp<S> {
    async fn method(&mut self) -> std::io::Result<(u16, AMQPClass)> {
        loop {
            let f = tokio::time::timeout(Duration::from_secs(10), self.rd.next(0))
                .await
                .map_err(|_| std::io::Error::other("no frame within 10 s"))?
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            if f.kind == frame::FRAME_METHOD {
                return Ok((f.channel, parse_class(&f.payload[..]).unwrap().1));
            }
        }
    }

    async fn send(&mut self, m: AMQPClass, ch: u16) {
        self.wr.write_all(&method(ch, m)).await.unwrap();
    }

    /// Header, start (returns the mechanisms offered).
    async fn start(stream: S) -> std::io::Result<(RawAmqp<S>, String)> {
        let (rd, mut wr) = tokio::io::split(stream);
        wr.write_all(frame::PROTOCOL_HEADER).await?;
        let mut raw = RawAmqp { rd: FrameReader::new(rd), wr };
        match raw.method().await? {
            (0, AMQPClass::Connection(connection::AMQPMethod::Start(s))) => {
                let mechanisms = s.mechanisms.to_string();
                Ok((raw, mechanisms))
            }
            other => panic!("expected connection.start, got {other:?}"),
        }
    }

    /// start-ok with `mechanism`, tune, open "/": the first method after start-ok.
    async fn login(&mut self, mechanism: &str, response: &str) -> AMQPClass {
        let ok = connection::StartOk {
            client_properties: FieldTable::default(),
            mechanism: mechanism.into(),
            response: LongString::from(response),
            locale: "en_US".into(),
        };
        self.send(AMQPClass::Connection(connection::AMQPMethod::StartOk(ok)), 0).await;
        let m = self.method().await.unwrap().1;
        if !matches!(m, AMQPClass::Connection(connection::AMQPMethod::Tune(_))) {
            return m;
        }
        let tune = connection::TuneOk { channel_max: 16, frame_max: 131072, heartbeat: 0 };
        self.send(AMQPClass::Connection(connection::AMQPMethod::TuneOk(tune)), 0).await;
        let open = connection::Open { virtual_host: "/".into() };
        self.send(AMQPClass::Connection(connection::AMQPMethod::Open(open)), 0).await;
        self.method().await.unwrap().1
    }

    /// channel.open -> channel.open-ok: the connection still works.
    async fn works(&mut self, id: u16) {
        self.send(AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})), id).await;
        assert!(
            matches!(self.method().await.unwrap(), (c, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))) if c == id)
        );
    }
}

const USERS: &str = "[[amqp.users]]\nname = \"alice\"\npassword = \"alice-pw\"\n\
                     [amqp.users.permissions.\"/\"]\n\
                     [[mqtt.users]]\nname = \"someone\"\npassword = \"secret\"\n\
                     [[mqtt.acl]]\nuser = \"bob\"\npattern = \"bob/#\"\naccess = \"readwrite\"\n";

/// A broker with plain and TLS listeners side by side (the TLS one first
/// in each list, so it listens once the plain port answers).
fn broker(dir: &Path, pki: &Pki, amqps: u16, mqtts: u16) -> Broker {
    let mut b = Broker::prepare(&dir.join("data"), &[], USERS);
    let mut args = pki.flags();
    args.extend([
        "--amqp-listen".into(),
        format!("tls://127.0.0.1:{amqps},127.0.0.1:{}", b.amqp_port),
        "--mqtt-listen".into(),
        format!("tls://127.0.0.1:{mqtts},127.0.0.1:{}", b.mqtt_port),
    ]);
    b.args = args;
    b.spawn();
    b
}

#[tokio::test]
async fn amqps_external_login_beside_plain_and_hostile_handshakes() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let amqps = free_port();
    let b = broker(dir.path(), &pki, amqps, free_port());

    // A client certificate for alice: EXTERNAL offered and accepted.
    let alice = pki.client(Some(leaf(&pki.client_ca, "Alice")));
    let (mut raw, mechanisms) = RawAmqp::start(tls_connect(alice.clone(), amqps).await.unwrap()).await.unwrap();
    assert_eq!(mechanisms, "PLAIN AMQPLAIN EXTERNAL");
    let opened = raw.login("EXTERNAL", "").await;
    assert!(matches!(opened, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))), "{opened:?}");
    raw.works(1).await;

    // A certificate for a name with no AMQP user: EXTERNAL is refused (403).
    let carol = pki.client(Some(leaf(&pki.client_ca, "carol")));
    let (mut refused, _) = RawAmqp::start(tls_connect(carol, amqps).await.unwrap()).await.unwrap();
    let close = refused.login("EXTERNAL", "").await;
    assert!(
        matches!(close, AMQPClass::Connection(connection::AMQPMethod::Close(ref c)) if c.reply_code == 403),
        "{close:?}"
    );

    // The plain listener offers no EXTERNAL and still takes lapin clients.
    let (_plain, mechanisms) =
        RawAmqp::start(TcpStream::connect(("127.0.0.1", b.amqp_port)).await.unwrap()).await.unwrap();
    assert_eq!(mechanisms, "PLAIN AMQPLAIN");
    let conn = lapin::Connection::connect(
        &format!("amqp://alice:alice-pw@127.0.0.1:{}/%2f", b.amqp_port),
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();

    // An untrusted client certificate, and none at all: no AMQP spoken.
    let rogue = pki.client(Some(leaf(&ca("rogue ca"), "alice")));
    let untrusted = async { RawAmqp::start(tls_connect(rogue, amqps).await?).await };
    assert!(untrusted.await.is_err());
    let anonymous = async { RawAmqp::start(tls_connect(pki.client(None), amqps).await?).await };
    assert!(anonymous.await.is_err());

    // Garbage instead of a ClientHello, and a peer that stalls mid-handshake:
    // each closes (or holds) only its own connection.
    let mut junk = TcpStream::connect(("127.0.0.1", amqps)).await.unwrap();
    junk.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8]).await.unwrap();
    junk.write_all(&[0u8; 4096]).await.unwrap_or(());
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), junk.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "the garbage connection was not closed");
    let _stalled = TcpStream::connect(("127.0.0.1", amqps)).await.unwrap();
    raw.works(2).await;
    let (mut again, _) = RawAmqp::start(tls_connect(alice, amqps).await.unwrap()).await.unwrap();
    assert!(matches!(again.login("EXTERNAL", "").await, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))));
    assert!(conn.create_channel().await.is_ok());
}

/// rumqttc over TLS with a client certificate.
async fn mqtts_client(
    pki: &Pki,
    port: u16,
    id: &str,
    identity: Option<(String, String)>,
) -> (rumqttc::AsyncClient, tokio::sync::mpsc::UnboundedReceiver<rumqttc::Packet>, tokio::sync::oneshot::Receiver<String>)
{
    let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(pki.client(identity))));
    let (c, mut el) = rumqttc::AsyncClient::new(opts, 100);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (err_tx, err_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(p)) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = err_tx.send(e.to_string());
                    return;
                }
            }
        }
    });
    (c, rx, err_rx)
}

#[tokio::test]
async fn mqtts_certificate_login_uses_the_mapped_name() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let mqtts = free_port();
    let b = broker(dir.path(), &pki, free_port(), mqtts);

    // No username: the certificate's mapped name, bob, is the user, and
    // the ACL for bob applies (bob/# allowed, elsewhere refused).
    let (c, mut rx, _err) = mqtts_client(&pki, mqtts, "bob-1", Some(leaf(&pki.client_ca, "Bob"))).await;
    expect(&mut rx, |p| matches!(p, rumqttc::Packet::ConnAck(a) if a.code == rumqttc::ConnectReturnCode::Success))
        .await;
    c.subscribe("bob/#", QoS::AtLeastOnce).await.unwrap();
    c.subscribe("other/#", QoS::AtLeastOnce).await.unwrap();
    let granted = expect(&mut rx, |p| matches!(p, rumqttc::Packet::SubAck(_))).await;
    let refused = expect(&mut rx, |p| matches!(p, rumqttc::Packet::SubAck(_))).await;
    let codes = |p: rumqttc::Packet| match p {
        rumqttc::Packet::SubAck(s) => s.return_codes,
        _ => unreachable!(),
    };
    assert_eq!(codes(granted), [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    assert_eq!(codes(refused), [SubscribeReasonCode::Failure]);
    c.publish("bob/t", QoS::AtLeastOnce, false, "over tls").await.unwrap();
    let got = expect(&mut rx, |p| matches!(p, rumqttc::Packet::Publish(_))).await;
    assert!(matches!(got, rumqttc::Packet::Publish(p) if p.payload.as_ref() == b"over tls"));

    // An untrusted certificate: the handshake fails, no CONNACK.
    let (_c2, mut rx2, err) = mqtts_client(&pki, mqtts, "rogue", Some(leaf(&ca("rogue ca"), "bob"))).await;
    let e = tokio::time::timeout(Duration::from_secs(10), err).await.unwrap().unwrap();
    assert!(rx2.try_recv().is_err(), "a CONNACK over an untrusted certificate ({e})");

    // The plain listener beside it takes password logins (the helper
    // waits for a successful CONNACK).
    let _plain = crate::mqtt_clients::client(b.mqtt_port, "plain", true, |o| {
        o.set_credentials("someone", "secret");
    })
    .await;
}

#[tokio::test]
async fn certificate_reload_reaches_new_connections_only() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let amqps = free_port();
    let _b = broker(dir.path(), &pki, amqps, free_port());
    let alice = pki.client(Some(leaf(&pki.client_ca, "alice")));
    let presented = |s: &TlsStream<TcpStream>| s.get_ref().1.peer_certificates().unwrap()[0].to_vec();

    let old_stream = tls_connect(alice.clone(), amqps).await.unwrap();
    let first = presented(&old_stream);
    let (mut old, _) = RawAmqp::start(old_stream).await.unwrap();
    assert!(matches!(old.login("EXTERNAL", "").await, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))));

    // New files (key first, then the certificate: a pair that does not
    // match is never used). The broker polls every 2 s.
    let (cert, key) = leaf(&pki.server_ca, "broker-renewed");
    std::fs::write(&pki.key, key).unwrap();
    std::fs::write(&pki.cert, cert).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        // A fresh client config each time: no resumed session.
        let fresh = pki.client(Some(leaf(&pki.client_ca, "alice")));
        let s = tls_connect(fresh, amqps).await.unwrap();
        if presented(&s) != first {
            let (mut new, _) = RawAmqp::start(s).await.unwrap();
            assert!(matches!(
                new.login("EXTERNAL", "").await,
                AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))
            ));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the renewed certificate was never presented");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The connection made before the reload keeps working.
    old.works(1).await;
    old.works(2).await;
}

#[test]
fn a_tls_listener_without_a_certificate_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Broker::prepare(dir.path(), &[], "");
    b.args = vec!["--amqp-listen".into(), format!("tls://127.0.0.1:{}", b.amqp_port)];
    let (status, stderr) = b.run_to_exit(Duration::from_secs(30));
    assert!(!status.success());
    assert!(stderr.contains("--amqp-listen tls://127.0.0.1:") && stderr.contains("--tls-cert"), "{stderr}");
}

#[test]
fn https_admin_api_with_curl() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let mut b = Broker::prepare(&dir.path().join("data"), &[], "");
    let mut args = pki.flags();
    args.extend(["--http-listen".into(), format!("tls://127.0.0.1:{}", b.http_port)]);
    b.args = args;
    b.spawn();
    let ca = dir.path().join("server-ca.pem");
    std::fs::write(&ca, pki.server_ca.cert.pem()).unwrap();
    let (cert, key) = leaf(&pki.client_ca, "ops");
    let (cert_file, key_file) = (dir.path().join("ops.pem"), dir.path().join("ops.key"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let url = format!("https://127.0.0.1:{}/v1/health", b.http_port);
    let curl = |extra: &[&std::ffi::OsStr]| {
        std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(extra)
            .arg(&url)
            .output()
            .expect("curl")
    };
    let ok = curl(&[
        "--cacert".as_ref(),
        ca.as_os_str(),
        "--cert".as_ref(),
        cert_file.as_os_str(),
        "--key".as_ref(),
        key_file.as_os_str(),
    ]);
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "200", "{}", String::from_utf8_lossy(&ok.stderr));
    // Without the CA the server is not trusted; without a client certificate
    // the server refuses the handshake.
    assert!(!curl(&[]).status.success());
    assert!(!curl(&["--cacert".as_ref(), ca.as_os_str()]).status.success());
    // A stalled handshake does not hold up the next request.
    let _stalled = std::net::TcpStream::connect(("127.0.0.1", b.http_port)).unwrap();
    let again = curl(&[
        "--cacert".as_ref(),
        ca.as_os_str(),
        "--cert".as_ref(),
        cert_file.as_os_str(),
        "--key".as_ref(),
        key_file.as_os_str(),
    ]);
    assert_eq!(String::from_utf8_lossy(&again.stdout), "200");
}

/// Reads from `s` until `want` shows up (10 s at most).
async fn read_until<S: tokio::io::AsyncRead + Unpin>(s: &mut S, want: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !got.windows(want.len()).any(|w| w == want) {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf)).await.expect("answer within 10 s").unwrap();
        assert!(n > 0, "closed before {:?}: {:?}", String::from_utf8_lossy(want), String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    got
}

#[tokio::test]
async fn stomp_and_redis_over_tls_beside_plain() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (stomps, rediss) = (free_port(), free_port());
    let mut b = Broker::prepare(&dir.path().join("data"), &[], "");
    let mut args = pki.flags();
    args.extend([
        "--stomp-listen".into(),
        format!("tls://127.0.0.1:{stomps},127.0.0.1:{}", b.stomp_port),
        "--redis-listen".into(),
        format!("tls://127.0.0.1:{rediss},127.0.0.1:{}", b.redis_port),
    ]);
    b.args = args;
    b.spawn();
    let client = pki.client(Some(leaf(&pki.client_ca, "app")));

    let mut stomp = tls_connect(client.clone(), stomps).await.unwrap();
    stomp.write_all(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\0").await.unwrap();
    read_until(&mut stomp, b"CONNECTED").await;
    let mut redis = tls_connect(client, rediss).await.unwrap();
    redis.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
    read_until(&mut redis, b"+PONG\r\n").await;

    // The plain listeners beside them.
    let mut plain = TcpStream::connect(("127.0.0.1", b.redis_port)).await.unwrap();
    plain.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
    read_until(&mut plain, b"+PONG\r\n").await;
    let mut plain = TcpStream::connect(("127.0.0.1", b.stomp_port)).await.unwrap();
    plain.write_all(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\0").await.unwrap();
    read_until(&mut plain, b"CONNECTED").await;

    // Untrusted client certificates are refused on both.
    let rogue = pki.client(Some(leaf(&ca("rogue ca"), "app")));
    for port in [stomps, rediss] {
        let r = async {
            let mut s = tls_connect(rogue.clone(), port).await?;
            s.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
            let mut buf = [0u8; 16];
            match s.read(&mut buf).await? {
                0 => Err(std::io::Error::other("closed")),
                _ => Ok(()),
            }
        };
        assert!(r.await.is_err(), "port {port} took an untrusted certificate");
    }
}

/// STOMP over wss:// at /stomp on the TLS MQTT WebSocket listener, on the
/// HTTPS listener (whose guest login, loopback only, needs the peer
/// address there too) and on STOMP's own wss:// listener, to a TCP client.
#[test]
fn stomp_over_wss_on_the_mqtt_websocket_https_and_stomp_ws_listeners() {
    use std::io::Write;

    use crate::stomp_ws::{ws_frame, ws_stomp_frame, ws_upgrade};
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let stomp_wss = free_port();
    let mut b = Broker::prepare(&dir.path().join("data"), &[], "");
    let mut args = pki.flags();
    args.extend([
        "--mqtt-ws-listen".into(),
        format!("wss://127.0.0.1:{}", b.mqtt_ws_port),
        "--http-listen".into(),
        format!("tls://127.0.0.1:{}", b.http_port),
        "--stomp-ws-listen".into(),
        format!("wss://127.0.0.1:{stomp_wss}"),
    ]);
    b.args = args;
    b.spawn();
    let mut tcp = crate::stomp_support::Stomp::connect(&b);
    tcp.subscribe("t", "/queue/over-wss", &[]);
    let client = pki.client(Some(leaf(&pki.client_ca, "app")));
    for (port, what) in [(b.mqtt_ws_port, "mqtt wss"), (b.http_port, "https"), (stomp_wss, "stomp wss")] {
        let sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut s = rustls::StreamOwned::new(rustls::ClientConnection::new(client.clone(), name).unwrap(), sock);
        ws_upgrade(&mut s);
        s.write_all(&ws_frame(1, b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\0")).unwrap();
        let (mut data, mut dec) =
            (BytesMut::new(), ferry_stomp::codec::Decoder::new(ferry_stomp::Version::V1_2, Default::default()));
        assert_eq!(ws_stomp_frame(&mut s, &mut data, &mut dec).command, "CONNECTED", "{what}");
        let send = format!("SEND\ndestination:/queue/over-wss\nreceipt:r\n\nvia {what}\0");
        s.write_all(&ws_frame(1, send.as_bytes())).unwrap();
        assert_eq!(ws_stomp_frame(&mut s, &mut data, &mut dec).header("receipt-id"), Some("r"), "{what}");
        assert_eq!(tcp.message().body, format!("via {what}").as_bytes(), "{what}");
    }
}
