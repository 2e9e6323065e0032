//! One user store and one authorizer for AMQP, MQTT, STOMP and Redis
//! (issue #18, docs/security.md): users made with `ferry user create`,
//! permissions as ACLs made with `ferry acl add` (vhosts, queues,
//! exchanges, MQTT topic filters), checked with real clients: lapin, rumqttc
//! over TLS, the redis crate, a STOMP socket. Wrong passwords get each
//! protocol's refusal and the broker keeps serving.

use std::path::Path;
use std::time::Duration;

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rumqttc::{QoS, SubscribeReasonCode};

use crate::mqtt_clients::expect;
use crate::security::{as_admin, ferry};
use crate::stomp_support::Stomp;
use crate::support::{Broker, free_port};
use crate::tls::{Pki, leaf};

/// Users created before the first start (imported into the store).
fn bootstrap_users(dir: &Path, users: &[(&str, &str)]) {
    for (user, pw) in users {
        let data = dir.to_str().unwrap();
        let (code, out, err) = ferry(&["user", "create", user, "--password", pw, "--data-dir", data]);
        assert_eq!(code, 0, "{out}{err}");
    }
}

/// A broker with a SASL listener (for the CLI) and `admin` as super user.
fn secured_broker(dir: &Path, args: &[&str], toml: &str) -> Broker {
    secured_broker_with(dir, toml, |_| args.iter().map(ToString::to_string).collect())
}

/// [`secured_broker`] with flags that know the broker's ports.
fn secured_broker_with(dir: &Path, toml: &str, args: impl FnOnce(&Broker) -> Vec<String>) -> Broker {
    let mut b = Broker::prepare(dir, &[], toml).with_sasl_listener();
    b.args = ["--super-users", "User:admin"].map(String::from).to_vec();
    let more = args(&b);
    b.args.extend(more);
    b.log = Some(dir.join("broker.log"));
    b.spawn();
    b
}

async fn amqp(b: &Broker, user: &str, vhost: &str) -> lapin::Result<Connection> {
    let uri = format!("amqp://{user}@127.0.0.1:{}/{vhost}", b.amqp_port);
    Connection::connect(&uri, ConnectionProperties::default()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn amqp_user_limited_to_one_vhost_and_write_only() {
    let dir = tempfile::tempdir().unwrap();
    bootstrap_users(dir.path(), &[("admin", "admin-secret"), ("writer", "w-secret")]);
    let b = secured_broker(dir.path(), &[], "[amqp]\nvhosts = [\"v1\", \"v2\"]\n");
    as_admin(&b, &["acl", "add", "--allow-principal", "User:writer", "--operation", "describe", "--vhost", "v1"]);
    as_admin(
        &b,
        &["acl", "add", "--allow-principal", "User:writer", "--operation", "write", "--exchange", "v1/amq.default"],
    );
    let listed = as_admin(&b, &["acl", "list"]);
    assert!(listed.contains("vhost") && listed.contains("v1/amq.default"), "{listed}");

    // The super user sets up the queue.
    let admin = amqp(&b, "admin:admin-secret", "v1").await.expect("a super user opens any vhost");
    let ach = admin.create_channel().await.unwrap();
    ach.queue_declare("jobs".into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();

    // Publish: allowed (confirmed).
    let writer = amqp(&b, "writer:w-secret", "v1").await.expect("writer opens v1");
    let ch = writer.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let confirm = ch
        .basic_publish("".into(), "jobs".into(), BasicPublishOptions::default(), b"job-1", BasicProperties::default())
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack(), "{confirm:?}");
    // Consume: 403 ACCESS_REFUSED, the channel closes.
    let e = ch
        .basic_consume("jobs".into(), "c".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect_err("read is not granted");
    assert!(e.to_string().contains("ACCESS_REFUSED") || e.to_string().contains("403"), "{e}");
    // Declaring (configure) is refused too.
    let ch2 = writer.create_channel().await.unwrap();
    let e = ch2.queue_declare("mine".into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap_err();
    assert!(e.to_string().contains("ACCESS_REFUSED") || e.to_string().contains("403"), "{e}");
    // Another vhost: refused at connection.open.
    assert!(amqp(&b, "writer:w-secret", "v2").await.is_err(), "v2 is not granted");
    // A wrong password: refused at login, and the broker keeps serving.
    assert!(amqp(&b, "writer:nope", "v1").await.is_err());
    assert!(amqp(&b, "nobody:w-secret", "v1").await.is_err());
    let got = ach.basic_get("jobs".into(), BasicGetOptions { no_ack: true }).await.unwrap().expect("the job arrived");
    assert_eq!(got.delivery.data, b"job-1");
    // Removing the vhost ACL (DeleteAcls with Ferry's resource codes) closes the vhost.
    as_admin(&b, &["acl", "remove", "--allow-principal", "User:writer", "--operation", "describe", "--vhost", "v1"]);
    assert!(amqp(&b, "writer:w-secret", "v1").await.is_err(), "the vhost ACL is gone");
    let listed = as_admin(&b, &["acl", "list", "--vhost", "v1"]);
    assert!(!listed.contains("User:writer"), "{listed}");
    let log = std::fs::read_to_string(dir.path().join("broker.log")).unwrap_or_default();
    assert!(!log.contains("w-secret") && !log.contains("nope"), "passwords never reach the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtt_topic_acl_with_user_substitution_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    bootstrap_users(dir.path(), &[("admin", "admin-secret"), ("ann", "ann-secret")]);
    let pki = Pki::new(dir.path());
    let mqtts = free_port();
    let b = secured_broker_with(dir.path(), "", |b| {
        let mut args = pki.flags();
        args.extend(["--mqtt-listen".to_string(), format!("tls://127.0.0.1:{mqtts},127.0.0.1:{}", b.mqtt_port)]);
        args
    });
    as_admin(
        &b,
        &[
            "acl",
            "add",
            "--allow-principal",
            "User:*",
            "--operation",
            "all",
            "--mqtt-topic",
            "users/%u/#",
            "--resource-pattern-type",
            "mqtt-filter",
        ],
    );

    // Password logins over mutual TLS (a username given: the password counts).
    let opts = |id: &str, user: &str, pw: &str| {
        let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", mqtts);
        o.set_keep_alive(Duration::from_secs(30)).set_credentials(user, pw);
        o.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(
            pki.client(Some(leaf(&pki.client_ca, id))),
        )));
        o
    };
    let spawn = |opts: rumqttc::MqttOptions| {
        let (c, mut el) = rumqttc::AsyncClient::new(opts, 100);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(ev) = el.poll().await {
                if let rumqttc::Event::Incoming(p) = ev
                    && tx.send(p).is_err()
                {
                    return;
                }
            }
        });
        (c, rx)
    };
    let ok =
        |p: &rumqttc::Packet| matches!(p, rumqttc::Packet::ConnAck(a) if a.code == rumqttc::ConnectReturnCode::Success);
    // The super user watches everything.
    let (admin, mut admin_rx) = spawn(opts("admin-1", "admin", "admin-secret"));
    expect(&mut admin_rx, ok).await;
    admin.subscribe("users/#", QoS::AtLeastOnce).await.unwrap();
    expect(&mut admin_rx, |p| matches!(p, rumqttc::Packet::SubAck(_))).await;

    let (ann, mut rx) = spawn(opts("ann-1", "ann", "ann-secret"));
    expect(&mut rx, ok).await;
    ann.subscribe("users/ann/#", QoS::AtLeastOnce).await.unwrap();
    ann.subscribe("users/bob/#", QoS::AtLeastOnce).await.unwrap();
    let codes = |p: rumqttc::Packet| match p {
        rumqttc::Packet::SubAck(s) => s.return_codes,
        other => panic!("{other:?}"),
    };
    let first = codes(expect(&mut rx, |p| matches!(p, rumqttc::Packet::SubAck(_))).await);
    let second = codes(expect(&mut rx, |p| matches!(p, rumqttc::Packet::SubAck(_))).await);
    assert_eq!(first, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    assert_eq!(second, [SubscribeReasonCode::Failure], "3.1.1: 0x80 for a filter the ACL does not cover");
    // A publish outside the ACL is acknowledged (3.1.1 cannot say no) and dropped.
    ann.publish("users/bob/x", QoS::AtLeastOnce, false, "not yours").await.unwrap();
    ann.publish("users/ann/x", QoS::AtLeastOnce, false, "mine").await.unwrap();
    let got = expect(&mut admin_rx, |p| matches!(p, rumqttc::Packet::Publish(_))).await;
    assert!(matches!(&got, rumqttc::Packet::Publish(p) if p.topic == "users/ann/x"), "bob's was dropped: {got:?}");
    let own = expect(&mut rx, |p| matches!(p, rumqttc::Packet::Publish(_))).await;
    assert!(matches!(&own, rumqttc::Packet::Publish(p) if p.payload.as_ref() == b"mine"));

    // A wrong password: CONNACK "bad user name or password".
    let (_bad, mut bad_rx) = spawn(opts("ann-2", "ann", "wrong"));
    let refused = tokio::time::timeout(Duration::from_secs(10), bad_rx.recv()).await.unwrap();
    assert!(
        !matches!(&refused, Some(rumqttc::Packet::ConnAck(a)) if a.code == rumqttc::ConnectReturnCode::Success),
        "{refused:?}"
    );
    // Still serving.
    ann.publish("users/ann/y", QoS::AtLeastOnce, false, "again").await.unwrap();
    expect(&mut rx, |p| matches!(p, rumqttc::Packet::Publish(p) if p.topic == "users/ann/y")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stomp_and_redis_logins_on_store_users() {
    let dir = tempfile::tempdir().unwrap();
    bootstrap_users(dir.path(), &[("admin", "admin-secret"), ("app", "app-secret"), ("nobody", "n-secret")]);
    let b = secured_broker(dir.path(), &[], "");
    // app may open "/" and use the queue "app-list" (read and write), nothing else.
    as_admin(&b, &["acl", "add", "--allow-principal", "User:app", "--operation", "describe", "--vhost", "/"]);
    as_admin(
        &b,
        &["acl", "add", "--allow-principal", "User:app", "--operation", "read,write,create", "--queue", "//app-list"],
    );

    // STOMP: the right password connects, a wrong one gets ERROR, a user
    // without the vhost gets ERROR.
    let mut s = Stomp::open(&b);
    s.frame("CONNECT", &[("accept-version", "1.2"), ("host", "/"), ("login", "app"), ("passcode", "app-secret")], b"");
    let f = s.recv();
    assert_eq!(f.command, "CONNECTED", "{f:?}");
    s.frame("DISCONNECT", &[("receipt", "bye")], b"");
    for (user, pass) in [("app", "wrong"), ("nobody", "n-secret"), ("ghost", "x")] {
        let mut c = Stomp::open(&b);
        c.frame("CONNECT", &[("accept-version", "1.2"), ("host", "/"), ("login", user), ("passcode", pass)], b"");
        let f = c.error_then_close();
        assert!(String::from_utf8_lossy(&f.body).contains("login refused"), "{f:?}");
    }

    // Redis: AUTH with store users; the ACLs decide per key.
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", b.redis_port)).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let e = redis::cmd("AUTH").arg("app").arg("wrong").query_async::<()>(&mut c).await.unwrap_err();
    assert!(e.to_string().contains("WRONGPASS"), "{e}");
    let () = redis::cmd("AUTH").arg("app").arg("app-secret").query_async(&mut c).await.unwrap();
    let n: i64 = redis::cmd("RPUSH").arg("app-list").arg("a").query_async(&mut c).await.unwrap();
    assert_eq!(n, 1);
    let e = redis::cmd("RPUSH").arg("other-list").arg("a").query_async::<i64>(&mut c).await.unwrap_err();
    assert!(e.to_string().to_uppercase().contains("NOPERM"), "{e}");
    let v: Option<String> = redis::cmd("LPOP").arg("app-list").query_async(&mut c).await.unwrap();
    assert_eq!(v.as_deref(), Some("a"));
    // The broker is healthy: a fresh connection works.
    let mut c2 = client.get_multiplexed_async_connection().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut c2).await.unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn https_admin_api_asks_for_a_super_user() {
    let dir = tempfile::tempdir().unwrap();
    bootstrap_users(dir.path(), &[("admin", "admin-secret"), ("app", "app-secret")]);
    let pki = Pki::new(dir.path());
    let b = secured_broker_with(dir.path(), "", |b| {
        let mut args = pki.flags();
        args.extend(["--http-listen".to_string(), format!("tls://127.0.0.1:{}", b.http_port)]);
        args
    });
    let ca = dir.path().join("server-ca.pem");
    std::fs::write(&ca, pki.server_ca_pem()).unwrap();
    let (cert, key) = leaf(&pki.client_ca, "curl");
    let (cert_file, key_file) = (dir.path().join("curl.pem"), dir.path().join("curl.key"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    // (status, body) of curl over mutual TLS with `extra` arguments.
    let curl = |path: &str, extra: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
            .arg("--cacert")
            .arg(&ca)
            .arg("--cert")
            .arg(&cert_file)
            .arg("--key")
            .arg(&key_file)
            .args(extra)
            .arg(format!("https://127.0.0.1:{}{path}", b.http_port))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.to_string(), body.to_string())
    };
    assert_eq!(curl("/v1/health", &[]).0, "200", "probes need no login");
    assert_eq!(curl("/v1/users", &[]).0, "401", "no credentials");
    assert_eq!(curl("/v1/users", &["-u", "admin:wrong"]).0, "401");
    assert_eq!(curl("/v1/users", &["-u", "app:app-secret"]).0, "403", "not a super user");
    let (code, users) = curl("/v1/users", &["-u", "admin:admin-secret"]);
    assert_eq!(code, "200", "{users}");
    assert!(users.contains("\"app\"") && !users.contains("secret"), "{users}");
    // Users and ACLs, as `ferry user` / `ferry acl`.
    let json = ["-H", "content-type: application/json"];
    let post = |path: &str, body: &str| {
        let mut args = vec!["-u", "admin:admin-secret", "-X", "POST", "-d", body];
        args.extend(json);
        curl(path, &args).0
    };
    assert_eq!(post("/v1/users", r#"{"name":"ops","password":"ops-secret"}"#), "201");
    assert_eq!(post("/v1/users", r#"{"name":"ops","password":"again"}"#), "409");
    let acl = r#"{"principal":"User:ops","operation":"read","resource_type":"mqtt-topic","resource_name":"ops/#","pattern_type":"mqtt-filter"}"#;
    assert_eq!(post("/v1/acls", acl), "201");
    let (_, acls) = curl("/v1/acls", &["-u", "admin:admin-secret"]);
    assert!(acls.contains("\"ops/#\"") && acls.contains("mqtt-filter"), "{acls}");
    let del = ["-u", "admin:admin-secret", "-X", "DELETE", "-d", acl, "-H", "content-type: application/json"];
    assert_eq!(curl("/v1/acls", &del).0, "204");
    assert_eq!(curl("/v1/acls", &del).0, "404");
    let pw = ["-u", "admin:admin-secret", "-X", "PUT", "-d", r#"{"password":"new-secret"}"#];
    assert_eq!(curl("/v1/users/ops/password", &pw).0, "204");
    assert_eq!(curl("/v1/users/ops", &["-u", "admin:admin-secret", "-X", "DELETE"]).0, "204");
    let (_, users) = curl("/v1/users", &["-u", "admin:admin-secret"]);
    assert!(!users.contains("\"ops\""), "{users}");
}

/// Vhosts through the admin API when security is on (docs/cluster.md,
/// "Vhosts as records"): only a super user may create or delete one
/// (`ferry vhost` with HTTP basic authentication: 401 without a login,
/// 403 for another user); a new vhost admits no one else until an ACL
/// grants it; deleting it closes its connections and drops that ACL.
#[tokio::test(flavor = "multi_thread")]
async fn vhosts_are_made_by_super_users_and_open_to_no_one_else_by_default() {
    let dir = tempfile::tempdir().unwrap();
    bootstrap_users(dir.path(), &[("admin", "admin-secret"), ("writer", "w-secret")]);
    let b = secured_broker(dir.path(), &[], "");
    let http = format!("127.0.0.1:{}", b.http_port);
    let vhost = |login: Option<(&str, &str)>, args: &[&str]| {
        let mut all = vec!["vhost"];
        all.extend(args);
        all.extend(["--http", &http]);
        if let Some((user, pw)) = login {
            all.extend(["--user", user, "--password", pw]);
        }
        ferry(&all)
    };
    let (code, _, err) = vhost(None, &["add", "v3"]);
    assert!(code != 0 && err.contains("401"), "{err}");
    let (code, _, err) = vhost(Some(("writer", "w-secret")), &["add", "v3"]);
    assert!(code != 0 && err.contains("403"), "{err}");
    let (code, out, err) = vhost(Some(("admin", "admin-secret")), &["add", "v3"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("created vhost v3"), "{out}");
    let (_, out, _) = vhost(Some(("admin", "admin-secret")), &["list"]);
    assert!(out.lines().any(|l| l.trim() == "v3"), "{out}");

    assert!(amqp(&b, "writer:w-secret", "v3").await.is_err(), "a new vhost is open to no one but super users");
    as_admin(&b, &["acl", "add", "--allow-principal", "User:writer", "--operation", "describe", "--vhost", "v3"]);
    let conn = amqp(&b, "writer:w-secret", "v3").await.expect("granted");
    let (code, out, err) = vhost(Some(("admin", "admin-secret")), &["delete", "v3"]);
    assert_eq!(code, 0, "{out}{err}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while conn.status().connected() {
        assert!(std::time::Instant::now() < deadline, "the connection to the deleted vhost stayed open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed = as_admin(&b, &["acl", "list", "--vhost", "v3"]);
    assert!(!listed.contains("User:writer"), "the vhost's ACL went with it: {listed}");
    // Created again, it admits no one but super users again.
    let (code, out, err) = vhost(Some(("admin", "admin-secret")), &["add", "v3"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(amqp(&b, "writer:w-secret", "v3").await.is_err());
}
