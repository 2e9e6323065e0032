//! SASL and ACLs with real clients: librdkafka (rdkafka) over
//! SASL_PLAINTEXT with SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN, users
//! created before the first start (`ferry user create --data-dir`) and
//! online, ACLs added with `ferry acl add` by a super user.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::support::Broker;

/// Runs the CLI; (exit code, stdout, stderr).
pub(crate) fn ferry(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env("FERRY_LOG", "warn")
        .env_remove("FERRY_BROKERS")
        .env_remove("FERRY_SASL_USER")
        .env_remove("FERRY_SASL_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .expect("run ferry");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The CLI as the super user `admin` over SASL SCRAM-SHA-512.
pub(crate) fn as_admin(b: &Broker, args: &[&str]) -> String {
    let brokers = b.sasl_bootstrap();
    let mut all = args.to_vec();
    all.extend([
        "--brokers",
        &brokers,
        "--user",
        "admin",
        "--sasl-mechanism",
        "SCRAM-SHA-512",
        "--timeout-ms",
        "10000",
    ]);
    // `ferry user` takes the login's password as --sasl-password.
    all.extend(["--sasl-password", "admin-secret"]);
    let (code, out, err) = ferry(&all);
    assert_eq!(code, 0, "ferry {args:?}: {out}{err}");
    out
}

fn sasl_config(b: &Broker, mechanism: &str, user: &str, password: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", b.sasl_bootstrap())
        .set("broker.address.family", "v4")
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanism", mechanism)
        .set("sasl.username", user)
        .set("sasl.password", password);
    c
}

pub(crate) fn producer(c: &ClientConfig) -> FutureProducer {
    c.clone().set("message.timeout.ms", "10000").create().expect("producer")
}

pub(crate) async fn produce<C: ClientContext + 'static>(
    p: &FutureProducer<C>,
    topic: &str,
    value: &str,
) -> Result<(), KafkaError> {
    p.send(FutureRecord::<(), str>::to(topic).payload(value), Duration::from_secs(10))
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
}

/// Consumes from `topic` in `group` until a record or an error arrives.
pub(crate) fn consume_one(c: &ClientConfig, group: &str, topic: &str) -> Result<String, KafkaError> {
    let consumer: BaseConsumer = c
        .clone()
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                use rdkafka::Message;
                return Ok(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
            }
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    panic!("neither a record nor an error from {topic} in 30 s");
}

/// The errors librdkafka reports (its authentication failures come here).
#[derive(Clone, Default)]
pub(crate) struct Errors(pub(crate) Arc<Mutex<Vec<Reported>>>);

/// An error code and librdkafka's reason.
pub(crate) type Reported = (Option<RDKafkaErrorCode>, String);

impl ClientContext for Errors {
    fn error(&self, error: KafkaError, reason: &str) {
        self.0.lock().unwrap().push((error.rdkafka_error_code(), reason.to_string()));
    }
}

impl ConsumerContext for Errors {}

pub(crate) fn code_of(e: &KafkaError) -> Option<RDKafkaErrorCode> {
    e.rdkafka_error_code()
}

#[tokio::test(flavor = "multi_thread")]
async fn sasl_logins_and_acls_with_librdkafka() {
    let dir = tempfile::tempdir().unwrap();
    // Users before the first start, as `kafka-storage format --add-scram`.
    for (user, pw) in [("admin", "admin-secret"), ("alice", "alice-secret")] {
        let data = dir.path().to_str().unwrap();
        let (code, out, err) = ferry(&["user", "create", user, "--password", pw, "--data-dir", data]);
        assert_eq!(code, 0, "{out}{err}");
    }
    let file = std::fs::read_to_string(dir.path().join("bootstrap-users.json")).unwrap();
    assert!(!file.contains("alice-secret"), "only SCRAM credentials are written");
    let mut b = Broker::prepare(dir.path(), &["--super-users", "User:admin"], "").with_sasl_listener();
    b.log = Some(dir.path().join("broker.log"));
    b.spawn();

    // Online: the super user creates bob over SCRAM (AlterUserScramCredentials).
    as_admin(&b, &["user", "create", "bob", "--password", "bob-secret"]);
    let users = as_admin(&b, &["user", "list"]);
    for u in ["admin", "alice", "bob"] {
        assert!(users.contains(u), "{users}");
    }
    as_admin(&b, &["topic", "create", "orders"]);
    as_admin(&b, &["topic", "create", "logs-app"]);
    as_admin(&b, &["topic", "create", "secret"]);

    // alice: write (not read) orders, read the logs- prefix, group g1.
    as_admin(&b, &["acl", "add", "--allow-principal", "User:alice", "--operation", "write", "--topic", "orders"]);
    as_admin(
        &b,
        &[
            "acl",
            "add",
            "--allow-principal",
            "User:alice",
            "--operation",
            "read",
            "--topic",
            "logs-",
            "--resource-pattern-type",
            "prefixed",
        ],
    );
    as_admin(&b, &["acl", "add", "--allow-principal", "User:alice", "--operation", "read", "--group", "g1"]);
    // bob: read every topic but secret (deny beats allow), group gb.
    as_admin(&b, &["acl", "add", "--allow-principal", "User:bob", "--operation", "read", "--topic", "*"]);
    as_admin(&b, &["acl", "add", "--deny-principal", "User:bob", "--operation", "read", "--topic", "secret"]);
    as_admin(&b, &["acl", "add", "--allow-principal", "User:bob", "--operation", "read", "--group", "gb"]);
    let listed = as_admin(&b, &["acl", "list"]);
    assert!(listed.contains("logs-") && listed.contains("prefixed") && listed.contains("deny"), "{listed}");

    let admin = sasl_config(&b, "SCRAM-SHA-512", "admin", "admin-secret");
    let alice = sasl_config(&b, "SCRAM-SHA-512", "alice", "alice-secret");
    let alice_256 = sasl_config(&b, "SCRAM-SHA-256", "alice", "alice-secret");
    let alice_plain = sasl_config(&b, "PLAIN", "alice", "alice-secret");
    let bob = sasl_config(&b, "SCRAM-SHA-512", "bob", "bob-secret");

    // SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN logins all produce.
    for (c, v) in [(&alice, "o1"), (&alice_256, "o2"), (&alice_plain, "o3")] {
        produce(&producer(c), "orders", v).await.expect("alice may write orders");
    }
    // ... but alice may not read orders (group allowed, topic not).
    let e = consume_one(&alice, "g1", "orders").unwrap_err();
    assert_eq!(code_of(&e), Some(RDKafkaErrorCode::TopicAuthorizationFailed), "{e}");
    // A prefixed ACL: alice reads logs-app.
    produce(&producer(&admin), "logs-app", "hello").await.expect("super user writes");
    assert_eq!(consume_one(&alice, "g1", "logs-app").expect("alice reads logs-"), "hello");
    // A group ACL: alice in another group is refused.
    let e = consume_one(&alice, "g2", "logs-app").unwrap_err();
    assert_eq!(code_of(&e), Some(RDKafkaErrorCode::GroupAuthorizationFailed), "{e}");
    // Deny beats allow: bob reads orders, not secret.
    assert_eq!(consume_one(&bob, "gb", "orders").expect("bob reads orders"), "o1");
    produce(&producer(&admin), "secret", "s").await.expect("super user writes");
    let e = consume_one(&bob, "gb", "secret").unwrap_err();
    assert_eq!(code_of(&e), Some(RDKafkaErrorCode::TopicAuthorizationFailed), "{e}");
    // bob has no write ACL.
    let e = produce(&producer(&bob), "orders", "x").await.unwrap_err();
    assert_eq!(code_of(&e), Some(RDKafkaErrorCode::TopicAuthorizationFailed), "{e}");

    // Idempotent producers need Write on some topic (KIP-679): alice has it.
    let idem = alice.clone().set("enable.idempotence", "true").set("message.timeout.ms", "10000").create().unwrap();
    produce(&idem, "orders", "idempotent").await.expect("alice's idempotent producer");
    // Transactions need Write on the transactional id.
    let txn_config = alice.clone().set("transactional.id", "tx-alice").set("message.timeout.ms", "10000").clone();
    let txn: FutureProducer = txn_config.create().unwrap();
    let e = txn.init_transactions(Duration::from_secs(10)).unwrap_err();
    assert_eq!(code_of(&e), Some(RDKafkaErrorCode::TransactionalIdAuthorizationFailed), "{e}");
    drop(txn);
    as_admin(
        &b,
        &["acl", "add", "--allow-principal", "User:alice", "--operation", "write", "--transactional-id", "tx-alice"],
    );
    let txn: FutureProducer = txn_config.create().unwrap();
    txn.init_transactions(Duration::from_secs(10)).expect("init_transactions with the ACL");
    txn.begin_transaction().unwrap();
    produce(&txn, "orders", "in-txn").await.expect("transactional produce");
    txn.commit_transaction(Duration::from_secs(10)).expect("commit");

    // A wrong password, or an unknown user, fails with the client's
    // authentication error...
    for (mechanism, user, password) in [("SCRAM-SHA-512", "alice", "nope"), ("PLAIN", "mallory", "x")] {
        let errors = Errors::default();
        let consumer: BaseConsumer<Errors> =
            sasl_config(&b, mechanism, user, password).create_with_context(errors.clone()).expect("consumer");
        assert!(consumer.fetch_metadata(None, Duration::from_secs(5)).is_err());
        // Error events are served by poll.
        let deadline = Instant::now() + Duration::from_secs(10);
        while errors.0.lock().unwrap().is_empty() && Instant::now() < deadline {
            let _ = consumer.poll(Duration::from_millis(100));
        }
        let seen = errors.0.lock().unwrap().clone();
        assert!(
            seen.iter().any(|(code, reason)| *code == Some(RDKafkaErrorCode::Authentication)
                && reason.contains("SASL authentication error")),
            "{mechanism} {user}: {seen:?}"
        );
    }
    // ... and the broker keeps serving the others.
    produce(&producer(&alice), "orders", "after").await.expect("alice still writes");
    let log = std::fs::read_to_string(dir.path().join("broker.log")).unwrap_or_default();
    assert!(log.contains("SASL authentication failed"), "{log}");
    assert!(!log.contains("alice-secret") && !log.contains("nope"), "no secret in the log");

    // The PLAINTEXT listener: User:ANONYMOUS, which no ACL allows.
    let anon = crate::support::producer(&b, &[("message.timeout.ms", "10000")]);
    let e = produce(&anon, "orders", "x").await.unwrap_err();
    assert_eq!(code_of(&e), Some(RDKafkaErrorCode::TopicAuthorizationFailed), "{e}");
    // Removing alice's write ACL takes her write away.
    as_admin(&b, &["acl", "remove", "--allow-principal", "User:alice", "--operation", "write", "--topic", "orders"]);
    let e = produce(&producer(&alice), "orders", "x").await.unwrap_err();
    assert_eq!(code_of(&e), Some(RDKafkaErrorCode::TopicAuthorizationFailed), "{e}");

    // The cluster operations need Alter (Describe to list) on the Cluster,
    // which alice lacks: ElectLeaders, reassignments, decommission (a
    // BROKER config) and UnregisterBroker are refused; the super user may.
    let brokers = b.sasl_bootstrap();
    let login = ["--brokers", &brokers, "--user", "alice", "--sasl-mechanism", "SCRAM-SHA-512"];
    let login = [&login[..], &["--sasl-password", "alice-secret", "--timeout-ms", "10000"]].concat();
    for args in [
        // logs-app: alice may describe it (she reads logs-*), not move it.
        vec!["topic", "elect-leaders", "logs-app"],
        vec!["topic", "elect-leaders"],
        vec!["topic", "reassign", "logs-app", "--partition", "0", "--replicas", "1"],
        vec!["topic", "reassignments"],
        vec!["node", "decommission", "1", "--no-wait"],
        vec!["node", "remove", "1"],
    ] {
        let (code, out, err) = ferry(&[&args[..], &login[..]].concat());
        assert_ne!(code, 0, "alice: ferry {args:?}: {out}{err}");
        assert!(format!("{out}{err}").contains("CLUSTER_AUTHORIZATION_FAILED"), "alice: ferry {args:?}: {out}{err}");
    }
    as_admin(&b, &["topic", "reassignments"]);
    let elected = as_admin(&b, &["topic", "elect-leaders", "logs-app"]);
    assert!(!elected.contains("AUTHORIZATION"), "{elected}");
    b.stop();
}

#[test]
fn a_sasl_listener_refuses_requests_before_the_login() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::prepare(dir.path(), &[], "").with_sasl_listener();
    let mut b = b;
    b.spawn();
    // A Metadata v1 request before any SASL exchange: the broker closes.
    let mut s = std::net::TcpStream::connect(b.sasl_bootstrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body: &[u8] = &[0, 3, 0, 1, 0, 0, 0, 7, 0, 0, 0xff, 0xff, 0xff, 0xff];
    s.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).unwrap_or(0), 0, "closed without an answer");
    // An oversized SASL token: closed too, the broker keeps serving.
    let mut s = std::net::TcpStream::connect(b.sasl_bootstrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&(10_000_000u32).to_be_bytes()).unwrap();
    assert_eq!(s.read(&mut buf).unwrap_or(0), 0);
    let consumer: BaseConsumer = crate::support::config(&b).create().unwrap();
    assert!(consumer.fetch_metadata(None, Duration::from_secs(10)).is_ok(), "the plaintext listener still serves");
    b.stop();
}

/// Three nodes, each with a PLAINTEXT and a SASL_PLAINTEXT listener: a
/// user and an ACL made through node 1 work on node 3 (they are cluster
/// metadata), and a client of node 3's SASL listener is sent to the other
/// nodes' SASL listeners (each listener advertises its own addresses).
#[tokio::test(flavor = "multi_thread")]
async fn users_and_acls_are_cluster_wide() {
    use crate::cluster_support::Cluster;
    let mut c = Cluster::prepare(3);
    for id in c.ids() {
        let b = c.node_mut(id);
        b.sasl_port = Some(crate::support::free_port());
        // Anonymous clients of the plain listeners administer.
        b.args.extend(["--super-users".to_string(), "User:ANONYMOUS".to_string()]);
    }
    c.start_all();
    c.wait_for_brokers(1, &[1, 2, 3]);
    let one = c.node(1).bootstrap();
    for args in [
        vec!["user", "create", "carol", "--password", "carol-secret"],
        vec!["topic", "create", "shared", "--partitions", "3"],
        vec!["acl", "add", "--allow-principal", "User:carol", "--operation", "write", "--topic", "shared"],
    ] {
        let mut all = args.clone();
        all.extend(["--brokers", &one, "--timeout-ms", "20000"]);
        let (code, out, err) = ferry(&all);
        assert_eq!(code, 0, "ferry {args:?}: {out}{err}");
    }
    let sasl_ports: std::collections::BTreeSet<i32> =
        c.ids().iter().map(|id| i32::from(c.node(*id).sasl_port.unwrap())).collect();
    let carol = sasl_config(c.node(3), "SCRAM-SHA-256", "carol", "carol-secret");
    // Node 3 applies the metadata a moment after node 1 answered.
    let deadline = Instant::now() + Duration::from_secs(30);
    let md = loop {
        let consumer: BaseConsumer = carol.create().unwrap();
        match consumer.fetch_metadata(Some("shared"), Duration::from_secs(5)) {
            Ok(md) => break md,
            Err(e) => assert!(Instant::now() < deadline, "carol on node 3: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let advertised: std::collections::BTreeSet<i32> =
        md.brokers().iter().map(rdkafka::metadata::MetadataBroker::port).collect();
    assert_eq!(advertised, sasl_ports, "node 3's SASL listener advertises every node's SASL listener");
    let p = producer(&carol);
    for i in 0..6 {
        produce(&p, "shared", &format!("v{i}")).await.expect("carol writes through every partition leader");
    }
    c.stop_all();
}

/// One request in Kafka's framing: SaslHandshake v1 (key 17) or
/// SaslAuthenticate v1 (key 36), both non-flexible, header v1 without a
/// client id.
fn sasl_frame(key: i16, correlation: i32, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&key.to_be_bytes());
    f.extend_from_slice(&1i16.to_be_bytes());
    f.extend_from_slice(&correlation.to_be_bytes());
    f.extend_from_slice(&(-1i16).to_be_bytes());
    f.extend_from_slice(body);
    let mut out = (f.len() as u32).to_be_bytes().to_vec();
    out.extend(f);
    out
}

/// Sends a request and reads its response body (after the correlation id).
fn sasl_call(s: &mut std::net::TcpStream, key: i16, correlation: i32, body: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Write};
    s.write_all(&sasl_frame(key, correlation, body))?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut resp = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut resp)?;
    assert_eq!(&resp[..4], &correlation.to_be_bytes());
    Ok(resp[4..].to_vec())
}

/// A SaslAuthenticate v1 body: the token as BYTES.
fn auth_bytes(token: &[u8]) -> Vec<u8> {
    let mut b = (token.len() as i32).to_be_bytes().to_vec();
    b.extend_from_slice(token);
    b
}

/// Handshake for SCRAM-SHA-256 and send client-first; the server-first.
fn scram_first(s: &mut std::net::TcpStream, user: &str) -> String {
    let mech = b"SCRAM-SHA-256";
    let mut hs = (mech.len() as i16).to_be_bytes().to_vec();
    hs.extend_from_slice(mech);
    let r = sasl_call(s, 17, 1, &hs).unwrap();
    assert_eq!(&r[..2], &[0, 0], "handshake accepted");
    let r = sasl_call(s, 36, 2, &auth_bytes(format!("n,,n={user},r=clientnonce123").as_bytes())).unwrap();
    assert_eq!(&r[..2], &[0, 0], "client-first accepted");
    // error_message (nullable string), then auth_bytes.
    let msg_len = i16::from_be_bytes([r[2], r[3]]).max(0) as usize;
    let at = 4 + msg_len;
    let n = i32::from_be_bytes([r[at], r[at + 1], r[at + 2], r[at + 3]]) as usize;
    String::from_utf8(r[at + 4..at + 4 + n].to_vec()).unwrap()
}

/// Hostile SASL on the wire (issue #18): an exchange cut after the
/// server-first, and a client-final whose nonce is not the server's; each
/// closes only its own connection (the forged one with
/// SASL_AUTHENTICATION_FAILED first), and the broker keeps logging in
/// honest clients.
#[test]
fn a_cut_or_forged_scram_exchange_closes_only_that_connection() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let (code, out, err) = ferry(&["user", "create", "alice", "--password", "alice-secret", "--data-dir", data]);
    assert_eq!(code, 0, "{out}{err}");
    let mut b = Broker::prepare(dir.path(), &[], "").with_sasl_listener();
    b.spawn();
    let connect = || {
        let s = std::net::TcpStream::connect(b.sasl_bootstrap()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s
    };

    // Cut in the middle: client-first sent, server-first read, then gone.
    let mut cut = connect();
    assert!(scram_first(&mut cut, "alice").starts_with("r=clientnonce123"));
    drop(cut);

    // A client-final with a nonce that is not the server's.
    let mut forged = connect();
    let server_first = scram_first(&mut forged, "alice");
    assert!(server_first.contains(",s=") && server_first.contains(",i="), "{server_first}");
    let final_msg = "c=biws,r=clientnonce123forged,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let r = sasl_call(&mut forged, 36, 3, &auth_bytes(final_msg.as_bytes())).unwrap();
    assert_eq!(i16::from_be_bytes([r[0], r[1]]), 58, "SASL_AUTHENTICATION_FAILED");
    let mut rest = [0u8; 16];
    assert_eq!(forged.read(&mut rest).unwrap_or(0), 0, "the forged exchange's connection is closed");

    // Honest clients still log in and work.
    let consumer: BaseConsumer = sasl_config(&b, "SCRAM-SHA-256", "alice", "alice-secret").create().unwrap();
    assert!(consumer.fetch_metadata(None, Duration::from_secs(15)).is_ok(), "a SCRAM login after the hostile ones");
    b.stop();
}
