//! SASL on the wire against a SASL_PLAINTEXT listener: SCRAM over
//! SaslAuthenticate (v1 handshake), PLAIN as raw tokens (v0 handshake), and
//! hostile exchanges (wrong nonce, cut in the middle, oversized token,
//! requests before the login) closing only their own connection.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::{Bytes, BytesMut};
use ferry_broker::BrokerConfig;
use ferry_broker::security::{Authorizer, AuthorizerConfig, LoginLimiter, Principal, ScramCredential, ScramMechanism};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn listener(dir: &std::path::Path) -> u16 {
    let broker =
        ferry_broker::testing::open(BrokerConfig { data_dir: dir.to_path_buf(), ..BrokerConfig::default() }).unwrap();
    broker.create_topic("t", Some(1), &BTreeMap::new(), false).await.unwrap();
    for m in ScramMechanism::ALL {
        broker.upsert_scram_credential("u", ScramCredential::new(m, "pw", 4096)).await.unwrap();
    }
    let config = AuthorizerConfig { super_users: [Principal::user("u")].into(), ..Default::default() };
    let security = ferry_kafka::KafkaSecurity {
        authorizer: Arc::new(Authorizer::new(config, broker.clone())),
        mechanisms: ferry_kafka::SaslMechanism::DEFAULT.to_vec(),
        limiter: LoginLimiter::new(),
        oauth: None,
    };
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    let config = ferry_kafka::KafkaConfig {
        advertised_port: i32::from(port),
        protocol: ferry_kafka::SecurityProtocol::SaslPlaintext,
        security: Some(Arc::new(security)),
        login_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let ctx = Arc::new(ferry_kafka::Ctx { broker, config });
    let (stop, rx) = tokio::sync::watch::channel(false);
    std::mem::forget(stop);
    tokio::spawn(ferry_kafka::serve(socket, ctx, rx));
    port
}

async fn send<R: Encodable>(s: &mut TcpStream, key: ApiKey, v: i16, body: &R) {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(v)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("t")));
    let mut buf = BytesMut::new();
    header.encode(&mut buf, key.request_header_version(v)).unwrap();
    body.encode(&mut buf, v).unwrap();
    s.write_all(&(buf.len() as i32).to_be_bytes()).await.unwrap();
    s.write_all(&buf).await.unwrap();
}

/// The next frame's bytes; `None` when the broker closed the connection.
async fn read_frame(s: &mut TcpStream) -> Option<Bytes> {
    let len = tokio::time::timeout(Duration::from_secs(10), s.read_i32()).await.expect("answer in time").ok()?;
    let mut body = BytesMut::zeroed(len as usize);
    s.read_exact(&mut body).await.ok()?;
    Some(body.freeze())
}

async fn recv<R: Decodable>(s: &mut TcpStream, key: ApiKey, v: i16) -> Option<R> {
    let mut body = read_frame(s).await?;
    ResponseHeader::decode(&mut body, key.response_header_version(v)).unwrap();
    Some(R::decode(&mut body, v).unwrap())
}

async fn handshake(s: &mut TcpStream, mechanism: &'static str, v: i16) -> SaslHandshakeResponse {
    send(
        s,
        ApiKey::SaslHandshake,
        v,
        &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism)),
    )
    .await;
    recv(s, ApiKey::SaslHandshake, v).await.expect("handshake answer")
}

async fn authenticate(s: &mut TcpStream, token: Vec<u8>) -> Option<SaslAuthenticateResponse> {
    send(s, ApiKey::SaslAuthenticate, 2, &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token))).await;
    recv(s, ApiKey::SaslAuthenticate, 2).await
}

async fn metadata_works(s: &mut TcpStream) -> bool {
    send(s, ApiKey::Metadata, 1, &MetadataRequest::default().with_topics(None)).await;
    recv::<MetadataResponse>(s, ApiKey::Metadata, 1).await.is_some_and(|r| !r.topics.is_empty())
}

/// client-final for `server_first`, with the proof of `password`.
fn client_final(m: ScramMechanism, password: &str, bare: &str, server_first: &str, nonce: Option<&str>) -> Vec<u8> {
    let attr = |k: &str| server_first.split(',').find_map(|a| a.strip_prefix(k)).unwrap().to_string();
    let (r, salt, i) = (attr("r="), B64.decode(attr("s=")).unwrap(), attr("i=").parse().unwrap());
    let salted = m.salted_password(password.as_bytes(), &salt, i);
    let client_key = m.hmac(&salted, b"Client Key");
    let without_proof = format!("c=biws,r={}", nonce.unwrap_or(&r));
    let sig = m.hmac(&m.hash(&client_key), format!("{bare},{server_first},{without_proof}").as_bytes());
    let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
    format!("{without_proof},p={}", B64.encode(proof)).into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn scram_plain_and_hostile_exchanges() {
    let dir = tempfile::tempdir().unwrap();
    let port = listener(dir.path()).await;
    let connect = || TcpStream::connect(("127.0.0.1", port));

    // SCRAM-SHA-512 over SaslAuthenticate, then requests are served.
    let mut s = connect().await.unwrap();
    let hs = handshake(&mut s, "SCRAM-SHA-512", 1).await;
    assert_eq!(hs.error_code, 0);
    assert_eq!(hs.mechanisms.len(), 3);
    let bare = "n=u,r=clientnonce";
    let first = authenticate(&mut s, format!("n,,{bare}").into_bytes()).await.unwrap();
    assert_eq!(first.error_code, 0);
    let first = String::from_utf8(first.auth_bytes.to_vec()).unwrap();
    let last = authenticate(&mut s, client_final(ScramMechanism::Sha512, "pw", bare, &first, None)).await.unwrap();
    assert_eq!((last.error_code, last.session_lifetime_ms), (0, 0));
    assert!(last.auth_bytes.starts_with(b"v="));
    assert!(metadata_works(&mut s).await);
    // A second handshake after the login: refused and closed.
    send(
        &mut s,
        ApiKey::SaslHandshake,
        1,
        &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
    )
    .await;
    let again: SaslHandshakeResponse = recv(&mut s, ApiKey::SaslHandshake, 1).await.unwrap();
    assert_eq!(again.error_code, 34);
    assert!(read_frame(&mut s).await.is_none());

    // PLAIN after a v0 handshake: raw tokens both ways.
    let mut s = connect().await.unwrap();
    assert_eq!(handshake(&mut s, "PLAIN", 0).await.error_code, 0);
    let token = b"\0u\0pw\0xx"; // four fields: malformed
    s.write_all(&(token.len() as i32).to_be_bytes()).await.unwrap();
    s.write_all(token).await.unwrap();
    assert!(read_frame(&mut s).await.is_none(), "a bad raw token closes");
    let mut s = connect().await.unwrap();
    assert_eq!(handshake(&mut s, "PLAIN", 0).await.error_code, 0);
    s.write_all(&5i32.to_be_bytes()).await.unwrap();
    s.write_all(b"\0u\0pw").await.unwrap();
    assert_eq!(read_frame(&mut s).await.map(|b| b.len()), Some(0), "an empty raw answer");
    assert!(metadata_works(&mut s).await);

    // A wrong nonce in client-final: SASL_AUTHENTICATION_FAILED, closed.
    let mut s = connect().await.unwrap();
    handshake(&mut s, "SCRAM-SHA-256", 1).await;
    let first = authenticate(&mut s, format!("n,,{bare}").into_bytes()).await.unwrap();
    let first = String::from_utf8(first.auth_bytes.to_vec()).unwrap();
    let wrong = client_final(ScramMechanism::Sha256, "pw", bare, &first, Some("clientnonceXXX"));
    let r = authenticate(&mut s, wrong).await.unwrap();
    assert_eq!(r.error_code, 58);
    assert!(r.error_message.unwrap().contains("nonce"));
    assert!(read_frame(&mut s).await.is_none());

    // Bad base64 in the proof, and a wrong password: refused the same way.
    for (password, proof_ok) in [("pw", false), ("nope", true)] {
        let mut s = connect().await.unwrap();
        handshake(&mut s, "SCRAM-SHA-256", 1).await;
        let first = authenticate(&mut s, format!("n,,{bare}").into_bytes()).await.unwrap();
        let first = String::from_utf8(first.auth_bytes.to_vec()).unwrap();
        let mut fin = client_final(ScramMechanism::Sha256, password, bare, &first, None);
        if !proof_ok {
            fin.extend_from_slice(b"!!");
        }
        assert_eq!(authenticate(&mut s, fin).await.unwrap().error_code, 58);
        assert!(read_frame(&mut s).await.is_none());
    }

    // Cut in the middle: client-first, then the client goes away.
    let mut s = connect().await.unwrap();
    handshake(&mut s, "SCRAM-SHA-256", 1).await;
    authenticate(&mut s, format!("n,,{bare}").into_bytes()).await.unwrap();
    drop(s);
    // An unknown mechanism, a request before the login, an oversized token:
    // each closes its own connection.
    let mut s = connect().await.unwrap();
    assert_eq!(handshake(&mut s, "GSSAPI", 1).await.error_code, 33);
    assert!(read_frame(&mut s).await.is_none());
    let mut s = connect().await.unwrap();
    send(&mut s, ApiKey::Metadata, 1, &MetadataRequest::default().with_topics(None)).await;
    assert!(read_frame(&mut s).await.is_none());
    let mut s = connect().await.unwrap();
    s.write_all(&(1i32 << 20).to_be_bytes()).await.unwrap();
    assert!(read_frame(&mut s).await.is_none());
    // ApiVersions is answered before the login.
    let mut s = connect().await.unwrap();
    send(
        &mut s,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("t"))
            .with_client_software_version(StrBytes::from_static_str("1")),
    )
    .await;
    let v: ApiVersionsResponse = recv(&mut s, ApiKey::ApiVersions, 3).await.unwrap();
    assert!(v.api_keys.iter().any(|k| k.api_key == ApiKey::SaslAuthenticate as i16));

    // Silence, or half a frame, before the login: closed at the login timeout.
    let started = std::time::Instant::now();
    let mut silent = connect().await.unwrap();
    let mut half = connect().await.unwrap();
    half.write_all(&100i32.to_be_bytes()).await.unwrap();
    half.write_all(b"abc").await.unwrap();
    assert!(read_frame(&mut silent).await.is_none() && read_frame(&mut half).await.is_none());
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());

    // The broker still serves a good login.
    let mut s = connect().await.unwrap();
    handshake(&mut s, "PLAIN", 1).await;
    assert_eq!(authenticate(&mut s, b"\0u\0pw".to_vec()).await.unwrap().error_code, 0);
    assert!(metadata_works(&mut s).await);
}
