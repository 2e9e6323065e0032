//! Users, virtual hosts, permissions and resource alarms.

use std::time::Duration;

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

use crate::amqp_support::*;
use crate::support::Broker;

const USERS: &str = r#"
[amqp]
vhosts = ["other"]
[[amqp.users]]
name = "app"
password = "pw"
[amqp.users.permissions."/"]
configure = "^app-.*"
[[amqp.users]]
name = "reader"
password = "r"
[amqp.users.permissions.other]
configure = ""
write = ""
read = ".*"
"#;

async fn connect_as(b: &Broker, user: &str, vhost: &str, mechanism: &str) -> lapin::Result<Connection> {
    let uri = format!("amqp://{user}@127.0.0.1:{}/{vhost}?auth_mechanism={mechanism}", b.amqp_port);
    Connection::connect(&uri, ConnectionProperties::default()).await
}

#[tokio::test]
async fn users_vhosts_and_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start_with_toml(dir.path(), USERS);
    // PLAIN and AMQPLAIN both log in.
    let app = connect_as(&b, "app:pw", "%2f", "plain").await.expect("app logs in");
    connect_as(&b, "app:pw", "%2f", "amqplain").await.expect("AMQPLAIN works too");
    // Wrong password, unknown user, and guest (not configured here) are refused.
    for who in ["app:nope", "nobody:x", "guest:guest"] {
        let err = connect_as(&b, who, "%2f", "plain").await.err().unwrap_or_else(|| panic!("{who} got in"));
        assert!(reply_code(&err).is_none_or(|c| c == 403), "{who}: {err}");
    }
    // No permissions on the vhost: 530 at connection.open.
    let Err(err) = connect_as(&b, "app:pw", "other", "plain").await else { panic!("app has no access to 'other'") };
    assert!(reply_code(&err).is_none_or(|c| c == 530), "{err}");
    // Unknown vhost.
    assert!(connect_as(&b, "app:pw", "nowhere", "plain").await.is_err());

    // configure = ^app-.*
    let ch = app.create_channel().await.unwrap();
    declare(&ch, "app-jobs", false).await;
    let err = ch.queue_declare("jobs".into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap_err();
    assert_eq!(reply_code(&err), Some(403));

    // read-only on 'other': may not declare or publish.
    let reader = connect_as(&b, "reader:r", "other", "plain").await.expect("reader logs in");
    let ch = reader.create_channel().await.unwrap();
    let err = ch.queue_declare("q".into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap_err();
    assert_eq!(reply_code(&err), Some(403));
    let ch = reader.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let r =
        ch.basic_publish("".into(), "q".into(), BasicPublishOptions::default(), b"x", BasicProperties::default()).await;
    let refused = match r {
        Ok(c) => c.await.is_err() || !ch.status().connected(),
        Err(_) => true,
    };
    assert!(refused);
}

#[tokio::test]
async fn a_resource_alarm_blocks_publishers_only() {
    let dir = tempfile::tempdir().unwrap();
    // More free disk than any machine has: the alarm is on from the start.
    let b = Broker::start_with_toml(dir.path(), "[amqp]\ndisk_free_limit_bytes = 18446744073709551615\n");
    let (other, och) = channel(&b).await;
    declare(&och, "blocked", true).await;
    let (publisher, ch) = channel(&b).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let confirm = ch
        .basic_publish("".into(), "blocked".into(), BasicPublishOptions::default(), b"x", persistent())
        .await
        .unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(1500), confirm).await.is_err(), "no confirm while blocked");
    assert!(publisher.status().blocked(), "connection.blocked received");
    // A connection that does not publish is served.
    assert_eq!(ready(&och, "blocked").await, 0);
    assert!(other.status().connected() && !other.status().blocked());
}
