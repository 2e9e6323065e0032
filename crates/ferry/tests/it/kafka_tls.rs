//! Kafka over TLS (issue #18) with librdkafka: SASL_SSL with SCRAM-SHA-512
//! (produce and consume, the fetch data read and written through TLS),
//! SSL with a client certificate whose mapped principal the ACLs name, an
//! untrusted certificate refused while the broker keeps serving, a
//! garbage handshake closing only its own connection, and OAUTHBEARER with
//! ES256 tokens signed here (valid, expired, signed by a stranger's key).
//! Certificates are made with rcgen (the helpers of `tls.rs`).

use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::Producer;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::security::{Errors, as_admin, code_of, consume_one, ferry, produce, producer};
use crate::support::{Broker, free_port};
use crate::tls::{Pki, ca, leaf};

/// Users made before the first start (`ferry user create --data-dir`).
fn users(dir: &Path, users: &[(&str, &str)]) {
    for (user, pw) in users {
        let (code, out, err) = ferry(&["user", "create", user, "--password", pw, "--data-dir", dir.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}{err}");
    }
}

/// A broker whose Kafka listeners are `tls` (started first, so they listen
/// once the plain ones answer), PLAINTEXT on `port` and SASL_PLAINTEXT on
/// `sasl_port` (the admin CLI's way in).
fn broker(dir: &Path, tls: &str, mut flags: Vec<String>) -> Broker {
    let mut b = Broker::prepare(dir, &[], "").with_sasl_listener();
    let listen = format!("{tls},PLAINTEXT://127.0.0.1:{},SASL_PLAINTEXT://127.0.0.1:{}", b.port, b.sasl_port.unwrap());
    flags.extend(["--kafka-listen".into(), listen, "--super-users".into(), "User:admin".into()]);
    b.args = flags;
    b.log = Some(dir.join("broker.log"));
    b.spawn();
    b
}

/// librdkafka over TLS to `port`, trusting the test server CA.
fn tls_config(dir: &Path, pki: &Pki, port: u16, protocol: &str) -> ClientConfig {
    let ca = dir.join("server-ca.pem");
    std::fs::write(&ca, pki.server_ca.cert.pem()).unwrap();
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", format!("127.0.0.1:{port}"))
        .set("broker.address.family", "v4")
        .set("security.protocol", protocol)
        .set("ssl.ca.location", ca.to_str().unwrap());
    c
}

/// Adds a client certificate (written under `dir` as `name`.pem/.key).
fn with_cert(c: &ClientConfig, dir: &Path, name: &str, (cert, key): (String, String)) -> ClientConfig {
    let (cert_file, key_file) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let mut c = c.clone();
    c.set("ssl.certificate.location", cert_file.to_str().unwrap()).set("ssl.key.location", key_file.to_str().unwrap());
    c
}

/// Garbage instead of a ClientHello: that connection closes within 10 s.
async fn garbage_handshake_closes(port: u16) {
    let mut junk = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    junk.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8]).await.unwrap();
    junk.write_all(&[0u8; 4096]).await.unwrap_or(());
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), junk.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "the garbage connection was not closed");
}

#[tokio::test(flavor = "multi_thread")]
async fn sasl_ssl_scram_produce_and_consume() {
    let dir = tempfile::tempdir().unwrap();
    users(dir.path(), &[("admin", "admin-secret"), ("alice", "alice-secret")]);
    let pki = Pki::new(dir.path());
    let sasl_ssl = free_port();
    let tls_flags =
        vec!["--tls-cert".into(), pki.cert.display().to_string(), "--tls-key".into(), pki.key.display().to_string()];
    let b = broker(dir.path(), &format!("SASL_SSL://127.0.0.1:{sasl_ssl}"), tls_flags);
    as_admin(&b, &["topic", "create", "secure"]);
    as_admin(&b, &["acl", "add", "--allow-principal", "User:alice", "--operation", "write,read", "--topic", "secure"]);
    as_admin(&b, &["acl", "add", "--allow-principal", "User:alice", "--operation", "read", "--group", "g-tls"]);

    let alice = {
        let mut c = tls_config(dir.path(), &pki, sasl_ssl, "SASL_SSL");
        c.set("sasl.mechanism", "SCRAM-SHA-512").set("sasl.username", "alice").set("sasl.password", "alice-secret");
        c
    };
    // The SASL_SSL listener advertises itself, not the plain listeners.
    let p = producer(&alice);
    let md = p.client().fetch_metadata(Some("secure"), Duration::from_secs(10)).expect("metadata over SASL_SSL");
    let ports: Vec<i32> = md.brokers().iter().map(rdkafka::metadata::MetadataBroker::port).collect();
    assert_eq!(ports, [i32::from(sasl_ssl)], "the client's own listener is advertised");

    // 300 records of 1 KiB: fetches of several hundred KiB, read from the
    // segment and written through TLS (no sendfile).
    let value = |i: usize| format!("{i:06}-{}", "x".repeat(1017));
    for i in 0..300 {
        produce(&p, "secure", &value(i)).await.expect("alice writes over SASL_SSL");
    }
    let consumer: BaseConsumer = alice
        .clone()
        .set("group.id", "g-tls")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "1048576")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("secure", 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let (mut got, deadline) = (0, Instant::now() + Duration::from_secs(60));
    while got < 300 {
        assert!(Instant::now() < deadline, "only {got} of 300 records in 60 s");
        if let Some(m) = consumer.poll(Duration::from_millis(500)) {
            let m = m.expect("consume over SASL_SSL");
            assert_eq!(m.payload().unwrap(), value(got).as_bytes(), "record {got}");
            got += 1;
        }
    }

    // A wrong password fails with the client's authentication error.
    let errors = Errors::default();
    let mut wrong = alice.clone();
    wrong.set("sasl.password", "nope");
    let c: BaseConsumer<Errors> = wrong.create_with_context(errors.clone()).unwrap();
    assert!(c.fetch_metadata(None, Duration::from_secs(5)).is_err());
    let deadline = Instant::now() + Duration::from_secs(10);
    while errors.0.lock().unwrap().is_empty() && Instant::now() < deadline {
        let _ = c.poll(Duration::from_millis(100));
    }
    let seen = errors.0.lock().unwrap().clone();
    assert!(seen.iter().any(|(code, _)| *code == Some(RDKafkaErrorCode::Authentication)), "{seen:?}");
    // A garbage handshake closes only its connection; alice still writes.
    garbage_handshake_closes(sasl_ssl).await;
    produce(&p, "secure", "after").await.expect("alice still writes");
    drop((p, consumer, c));
    let mut b = b;
    b.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn ssl_client_certificate_is_the_principal() {
    let dir = tempfile::tempdir().unwrap();
    users(dir.path(), &[("admin", "admin-secret")]);
    let pki = Pki::new(dir.path());
    let ssl = free_port();
    // Mutual TLS; `O=Ferry,CN=Alice` maps to `alice`.
    let b = broker(dir.path(), &format!("SSL://127.0.0.1:{ssl}"), pki.flags());
    for t in ["mine", "theirs"] {
        as_admin(&b, &["topic", "create", t]);
    }
    as_admin(&b, &["acl", "add", "--allow-principal", "User:alice", "--operation", "write,read", "--topic", "mine"]);
    as_admin(&b, &["acl", "add", "--allow-principal", "User:alice", "--operation", "read", "--group", "g-cert"]);

    let base = tls_config(dir.path(), &pki, ssl, "SSL");
    let alice = with_cert(&base, dir.path(), "alice", leaf(&pki.client_ca, "Alice"));
    let p = producer(&alice);
    produce(&p, "mine", "by certificate").await.expect("User:alice writes mine");
    let e = produce(&p, "theirs", "x").await.unwrap_err();
    assert_eq!(code_of(&e), Some(RDKafkaErrorCode::TopicAuthorizationFailed), "{e}");
    assert_eq!(consume_one(&alice, "g-cert", "mine").expect("User:alice reads mine"), "by certificate");
    // Another certificate of the same CA is another principal (bob: no ACL).
    let bob = with_cert(&base, dir.path(), "bob", leaf(&pki.client_ca, "Bob"));
    let e = produce(&producer(&bob), "mine", "x").await.unwrap_err();
    assert_eq!(code_of(&e), Some(RDKafkaErrorCode::TopicAuthorizationFailed), "{e}");

    // An untrusted certificate: librdkafka reports the failed handshake,
    // nothing is written, and the broker keeps serving alice.
    let rogue = with_cert(&base, dir.path(), "rogue", leaf(&ca("rogue ca"), "Alice"));
    let errors = Errors::default();
    let c: BaseConsumer<Errors> = rogue.create_with_context(errors.clone()).unwrap();
    assert!(c.fetch_metadata(None, Duration::from_secs(5)).is_err(), "an untrusted certificate got metadata");
    let deadline = Instant::now() + Duration::from_secs(10);
    while errors.0.lock().unwrap().is_empty() && Instant::now() < deadline {
        let _ = c.poll(Duration::from_millis(100));
    }
    let seen = errors.0.lock().unwrap().clone();
    assert!(!seen.is_empty(), "no error reported for an untrusted certificate");
    // No certificate at all: refused the same way.
    let errors = Errors::default();
    let c2: BaseConsumer<Errors> = base.create_with_context(errors.clone()).unwrap();
    assert!(c2.fetch_metadata(None, Duration::from_secs(5)).is_err(), "no certificate got metadata");
    garbage_handshake_closes(ssl).await;
    produce(&p, "mine", "still").await.expect("alice still writes after the refusals");
    drop((p, c, c2));
    let mut b = b;
    b.stop();
}

/// OAUTHBEARER tokens for librdkafka: `ClientContext::generate_oauth_token`
/// hands over a JWT signed here (librdkafka's own `sasl.oauthbearer.config`
/// tokens are unsigned, which Ferry refuses).
struct OAuth {
    token: String,
    errors: Errors,
}

impl rdkafka::client::ClientContext for OAuth {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        // librdkafka wants a lifetime in the future even for a token the
        // broker will find expired: that check is the broker's.
        let in_an_hour = (unix_now() + 3600) * 1000;
        Ok(rdkafka::client::OAuthToken {
            token: self.token.clone(),
            principal_name: "x".into(),
            lifetime_ms: in_an_hour,
        })
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.errors.0.lock().unwrap().push((error.rdkafka_error_code(), reason.to_string()));
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A P-256 key, its JWKS entry (`kid`), and ES256 tokens signed with it.
struct Signer(ring::signature::EcdsaKeyPair);

impl Signer {
    fn new() -> Signer {
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        let rng = ring::rand::SystemRandom::new();
        let pk8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        Signer(EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pk8.as_ref(), &rng).unwrap())
    }

    fn jwk(&self, kid: &str) -> serde_json::Value {
        use base64::Engine;
        use ring::signature::KeyPair;
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let p = self.0.public_key().as_ref();
        serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b.encode(&p[1..33]), "y": b.encode(&p[33..65])})
    }

    fn token(&self, kid: &str, sub: &str, exp: i64) -> String {
        use base64::Engine;
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let part = |v: serde_json::Value| b.encode(serde_json::to_vec(&v).unwrap());
        let claims = serde_json::json!({"sub": sub, "exp": exp, "iat": unix_now(), "aud": "ferry"});
        let signed = format!("{}.{}", part(serde_json::json!({"alg": "ES256", "kid": kid})), part(claims));
        let sig = self.0.sign(&ring::rand::SystemRandom::new(), signed.as_bytes()).unwrap();
        format!("{signed}.{}", b.encode(sig.as_ref()))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn oauthbearer_tokens_signed_by_the_jwks() {
    let dir = tempfile::tempdir().unwrap();
    users(dir.path(), &[("admin", "admin-secret")]);
    let pki = Pki::new(dir.path());
    let (issuer, stranger) = (Signer::new(), Signer::new());
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, serde_json::json!({"keys": [issuer.jwk("k1")]}).to_string()).unwrap();
    let sasl_ssl = free_port();
    let flags = [
        "--tls-cert",
        pki.cert.to_str().unwrap(),
        "--tls-key",
        pki.key.to_str().unwrap(),
        "--sasl-mechanisms",
        "SCRAM-SHA-512,OAUTHBEARER",
        "--sasl-oauthbearer-jwks",
        jwks.to_str().unwrap(),
        "--sasl-oauthbearer-audience",
        "ferry",
    ]
    .map(String::from)
    .to_vec();
    let b = broker(dir.path(), &format!("SASL_SSL://127.0.0.1:{sasl_ssl}"), flags);
    as_admin(&b, &["topic", "create", "tokens"]);
    as_admin(&b, &["acl", "add", "--allow-principal", "User:carol", "--operation", "write", "--topic", "tokens"]);

    let mut config = tls_config(dir.path(), &pki, sasl_ssl, "SASL_SSL");
    config.set("sasl.mechanism", "OAUTHBEARER").set("message.timeout.ms", "10000");
    let with_token = |token: String| {
        let errors = Errors::default();
        let p: rdkafka::producer::FutureProducer<OAuth> =
            config.create_with_context(OAuth { token, errors: errors.clone() }).expect("producer");
        (p, errors)
    };
    // A token signed by the JWKS key: User:carol (its sub) writes.
    let (p, _) = with_token(issuer.token("k1", "carol", unix_now() + 600));
    produce(&p, "tokens", "by token").await.expect("carol writes with a valid token");
    // Another subject has no ACL: authenticated, then refused the topic.
    let (p2, _) = with_token(issuer.token("k1", "dave", unix_now() + 600));
    let e = produce(&p2, "tokens", "x").await.unwrap_err();
    assert_eq!(code_of(&e), Some(RDKafkaErrorCode::TopicAuthorizationFailed), "{e}");
    // Expired, and signed by a key outside the JWKS: authentication errors.
    for (what, token) in [
        ("expired", issuer.token("k1", "carol", unix_now() - 600)),
        ("wrong key", stranger.token("k1", "carol", unix_now() + 600)),
    ] {
        let (bad, errors) = with_token(token);
        assert!(produce(&bad, "tokens", "x").await.is_err(), "{what} token wrote");
        let seen = errors.0.lock().unwrap().clone();
        assert!(
            seen.iter().any(|(code, reason)| *code == Some(RDKafkaErrorCode::Authentication)
                && reason.contains("SASL authentication error")),
            "{what}: {seen:?}"
        );
    }
    produce(&p, "tokens", "still").await.expect("the valid token's producer still writes");
    let log = std::fs::read_to_string(dir.path().join("broker.log")).unwrap_or_default();
    assert!(log.contains("JWT expired") && log.contains("signature"), "{log}");
    drop((p, p2));

    // The identity provider rotates its key: the file is read again (file
    // change, polled every 2 s) and a token of the new key logs in without
    // a restart.
    std::fs::write(&jwks, serde_json::json!({"keys": [stranger.jwk("k2")]}).to_string()).unwrap();
    let mut rotated = false;
    for _ in 0..5 {
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        let (p3, _) = with_token(stranger.token("k2", "carol", unix_now() + 600));
        if produce(&p3, "tokens", "rotated").await.is_ok() {
            rotated = true;
            break;
        }
    }
    assert!(rotated, "a token of the rotated-in key was never accepted");
    let (old_key, _) = with_token(issuer.token("k1", "carol", unix_now() + 600));
    assert!(produce(&old_key, "tokens", "x").await.is_err(), "a key removed from the JWKS still logs in");
    let mut b = b;
    b.stop();
}
