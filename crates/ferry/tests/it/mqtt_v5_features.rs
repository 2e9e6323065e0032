//! MQTT features end to end with rumqttc: ACLs (v5 reason 0x87, 3.1.1
//! acknowledge-and-drop), will delay, message expiry, retain handling,
//! topic aliases from the client, and the per-session queue limit.

use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    Filter, LastWill, LastWillProperties, Packet, PubAckReason, PubRecReason, PublishProperties, RetainForwardRule,
    SubscribeReasonCode,
};

use crate::mqtt_v5::{client, client_with_task, expect, next_publish, quiet};
use crate::support::Broker;

fn topic(p: &rumqttc::v5::mqttbytes::v5::Publish) -> String {
    String::from_utf8_lossy(&p.topic).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_denies_publish_and_subscribe_with_reason_0x87() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start_with_toml(
        dir.path(),
        "[[mqtt.users]]\nname = \"alice\"\npassword = \"secret\"\n\
         [[mqtt.users]]\nname = \"bob\"\npassword = \"pw\"\n\
         [[mqtt.acl]]\nuser = \"alice\"\npattern = \"alice/#\"\naccess = \"readwrite\"\n\
         [[mqtt.acl]]\nuser = \"*\"\npattern = \"public/#\"\naccess = \"read\"\n\
         [[mqtt.acl]]\nuser = \"bob\"\npattern = \"public/#\"\naccess = \"write\"\n",
    );
    let (alice, mut rx) = client(b.mqtt_port, "alice-1", |o| {
        o.set_credentials("alice", "secret");
    })
    .await;
    alice.subscribe_many(["alice/#", "public/#", "secret/#"].map(|f| Filter::new(f, QoS::AtLeastOnce))).await.unwrap();
    let Packet::SubAck(ack) = expect(&mut rx, |p| matches!(p, Packet::SubAck(_))).await else { unreachable!() };
    assert_eq!(
        ack.return_codes,
        [
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::NotAuthorized
        ]
    );
    // Read-only for alice: her publish there is refused with 0x87 and not routed.
    alice.publish("public/news", QoS::AtLeastOnce, false, "no").await.unwrap();
    let Packet::PubAck(ack) = expect(&mut rx, |p| matches!(p, Packet::PubAck(_))).await else { unreachable!() };
    assert_eq!(ack.reason, PubAckReason::NotAuthorized);
    alice.publish("secret/x", QoS::ExactlyOnce, false, "no").await.unwrap();
    let Packet::PubRec(rec) = expect(&mut rx, |p| matches!(p, Packet::PubRec(_))).await else { unreachable!() };
    assert_eq!(rec.reason, PubRecReason::NotAuthorized);
    alice.publish("alice/x", QoS::AtLeastOnce, false, "mine").await.unwrap();
    let p = next_publish(&mut rx).await;
    assert_eq!((topic(&p).as_str(), &p.payload[..]), ("alice/x", &b"mine"[..]));

    // bob may write public/# and nothing else; a 3.1.1 client has no way to
    // hear "no", so its refused publish is acknowledged and dropped.
    let (bob, mut brx) = crate::mqtt_clients::client(b.mqtt_port, "bob-1", true, |o| {
        o.set_credentials("bob", "pw");
    })
    .await;
    bob.publish("alice/x", rumqttc::QoS::AtLeastOnce, false, "intruder").await.unwrap();
    crate::mqtt_clients::expect(&mut brx, |p| matches!(p, rumqttc::Packet::PubAck(_))).await;
    bob.publish("public/news", rumqttc::QoS::AtLeastOnce, false, "hello").await.unwrap();
    let p = next_publish(&mut rx).await;
    assert_eq!((topic(&p).as_str(), &p.payload[..]), ("public/news", &b"hello"[..]));
    quiet(&mut rx, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_delay_publishes_late_and_a_reconnect_cancels_it() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (watcher, mut wrx) = client(b.mqtt_port, "watcher", |_| {}).await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await.unwrap();
    expect(&mut wrx, |p| matches!(p, Packet::SubAck(_))).await;
    let with_will = |id: &'static str, delay: u32| {
        move |o: &mut rumqttc::v5::MqttOptions| {
            let props = LastWillProperties {
                delay_interval: Some(delay),
                payload_format_indicator: None,
                message_expiry_interval: None,
                content_type: None,
                response_topic: None,
                correlation_data: None,
                user_properties: Vec::new(),
            };
            o.set_last_will(LastWill::new(format!("wills/{id}"), "gone", QoS::AtLeastOnce, false, Some(props)));
            o.set_clean_start(false).set_session_expiry_interval(Some(60));
        }
    };
    // Vanishes: the will comes after its 2 s delay, not before.
    let (_dev, _rx, task) = client_with_task(b.mqtt_port, "late", with_will("late", 2)).await;
    let gone = Instant::now();
    task.abort();
    let p = next_publish(&mut wrx).await;
    assert_eq!(topic(&p), "wills/late");
    let waited = gone.elapsed();
    assert!(waited >= Duration::from_millis(1500), "will after {waited:?}");
    // Vanishes and comes back within the delay: no will at all.
    let (_dev, _rx, task) = client_with_task(b.mqtt_port, "back", with_will("back", 2)).await;
    task.abort();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_dev, _rx) = client(b.mqtt_port, "back", |o| {
        o.set_clean_start(false).set_session_expiry_interval(Some(60));
    })
    .await;
    quiet(&mut wrx, 3000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_are_not_delivered_from_queues_or_the_retained_store() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let persistent = |o: &mut rumqttc::v5::MqttOptions| {
        o.set_clean_start(false).set_session_expiry_interval(Some(600));
    };
    let (sub, mut srx) = client(b.mqtt_port, "sleepy", persistent).await;
    sub.subscribe("exp/#", QoS::AtLeastOnce).await.unwrap();
    expect(&mut srx, |p| matches!(p, Packet::SubAck(_))).await;
    sub.disconnect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (publ, mut prx) = client(b.mqtt_port, "pub", |_| {}).await;
    for (t, expiry, retain) in [("exp/short", 1, false), ("exp/long", 60, false), ("exp/retained", 1, true)] {
        let props = PublishProperties { message_expiry_interval: Some(expiry), ..Default::default() };
        publ.publish_with_properties(t, QoS::AtLeastOnce, retain, t, props).await.unwrap();
        expect(&mut prx, |p| matches!(p, Packet::PubAck(_))).await;
    }
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (_sub, mut srx) = client(b.mqtt_port, "sleepy", persistent).await;
    let p = next_publish(&mut srx).await;
    assert_eq!(topic(&p), "exp/long");
    // What is left of the interval travels on.
    let left = p.properties.and_then(|p| p.message_expiry_interval);
    assert!(left.is_some_and(|s| (55..=59).contains(&s)), "{left:?}");
    quiet(&mut srx, 300).await;
    let (late, mut lrx) = client(b.mqtt_port, "late", |_| {}).await;
    late.subscribe("exp/#", QoS::AtLeastOnce).await.unwrap();
    expect(&mut lrx, |p| matches!(p, Packet::SubAck(_))).await;
    quiet(&mut lrx, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_handling_1_sends_only_on_a_new_subscription_and_2_never() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (publ, mut prx) = client(b.mqtt_port, "pub", |_| {}).await;
    publ.publish("rh/a", QoS::AtLeastOnce, true, "kept").await.unwrap();
    expect(&mut prx, |p| matches!(p, Packet::PubAck(_))).await;
    let (sub, mut rx) = client(b.mqtt_port, "sub", |_| {}).await;
    let subscribe = |filter: &str, rule: RetainForwardRule| {
        let mut f = Filter::new(filter, QoS::AtLeastOnce);
        f.retain_forward_rule = rule;
        sub.subscribe_many([f])
    };
    subscribe("rh/a", RetainForwardRule::OnNewSubscribe).await.unwrap();
    expect(&mut rx, |p| matches!(p, Packet::SubAck(_))).await;
    let p = next_publish(&mut rx).await;
    assert!(p.retain && topic(&p) == "rh/a");
    // The same subscription again: 1 sends nothing, 0 sends it again.
    subscribe("rh/a", RetainForwardRule::OnNewSubscribe).await.unwrap();
    expect(&mut rx, |p| matches!(p, Packet::SubAck(_))).await;
    quiet(&mut rx, 300).await;
    subscribe("rh/a", RetainForwardRule::OnEverySubscribe).await.unwrap();
    expect(&mut rx, |p| matches!(p, Packet::SubAck(_))).await;
    assert_eq!(topic(&next_publish(&mut rx).await), "rh/a");
    // 2: never, not even for a new subscription.
    subscribe("rh/+", RetainForwardRule::Never).await.unwrap();
    expect(&mut rx, |p| matches!(p, Packet::SubAck(_))).await;
    quiet(&mut rx, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_aliases_from_a_client_are_resolved_for_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (sub, mut srx) = client(b.mqtt_port, "sub", |_| {}).await;
    sub.subscribe("alias/#", QoS::AtLeastOnce).await.unwrap();
    expect(&mut srx, |p| matches!(p, Packet::SubAck(_))).await;
    let (publ, mut prx) = client(b.mqtt_port, "pub", |_| {}).await;
    let alias = |a: u16| PublishProperties { topic_alias: Some(a), ..Default::default() };
    publ.publish_with_properties("alias/one", QoS::AtLeastOnce, false, "1", alias(1)).await.unwrap();
    publ.publish_with_properties("alias/two", QoS::AtLeastOnce, false, "2", alias(2)).await.unwrap();
    publ.publish_with_properties("", QoS::AtLeastOnce, false, "3", alias(1)).await.unwrap();
    // Re-pointed alias.
    publ.publish_with_properties("alias/three", QoS::AtLeastOnce, false, "4", alias(2)).await.unwrap();
    publ.publish_with_properties("", QoS::AtLeastOnce, false, "5", alias(2)).await.unwrap();
    for _ in 0..5 {
        expect(&mut prx, |p| matches!(p, Packet::PubAck(_))).await;
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        let p = next_publish(&mut srx).await;
        // Ferry sends no aliases of its own: every publish names its topic.
        assert_eq!(p.properties.as_ref().and_then(|p| p.topic_alias), None);
        got.push((topic(&p), String::from_utf8_lossy(&p.payload).into_owned()));
    }
    let want: Vec<(String, String)> =
        [("alias/one", "1"), ("alias/two", "2"), ("alias/one", "3"), ("alias/three", "4"), ("alias/three", "5")]
            .map(|(t, v)| (t.to_string(), v.to_string()))
            .into();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_session_queue_drops_the_newest_messages() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start_with_toml(dir.path(), "[mqtt]\nmax_queued_messages = 3\n");
    let persistent = |o: &mut rumqttc::v5::MqttOptions| {
        o.set_clean_start(false).set_session_expiry_interval(Some(600));
    };
    let (sub, mut srx) = client(b.mqtt_port, "slow", persistent).await;
    sub.subscribe("full/#", QoS::AtLeastOnce).await.unwrap();
    expect(&mut srx, |p| matches!(p, Packet::SubAck(_))).await;
    sub.disconnect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (publ, mut prx) = client(b.mqtt_port, "pub", |_| {}).await;
    for i in 0..6 {
        publ.publish(format!("full/{i}"), QoS::AtLeastOnce, false, i.to_string()).await.unwrap();
        // The publisher is not told: its message was accepted, one subscriber had no room.
        let Packet::PubAck(ack) = expect(&mut prx, |p| matches!(p, Packet::PubAck(_))).await else { unreachable!() };
        assert_eq!(ack.reason, PubAckReason::Success);
    }
    let (_sub, mut srx) = client(b.mqtt_port, "slow", persistent).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(String::from_utf8_lossy(&next_publish(&mut srx).await.payload).into_owned());
    }
    assert_eq!(got, ["0", "1", "2"]);
    quiet(&mut srx, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_topic_aliases_are_resolved_by_rumqttc() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (sub, mut srx) = client(b.mqtt_port, "alias-sub", |o| {
        o.set_topic_alias_max(Some(10));
    })
    .await;
    sub.subscribe("out/#", QoS::AtLeastOnce).await.unwrap();
    expect(&mut srx, |p| matches!(p, Packet::SubAck(_))).await;
    let (publ, mut prx) = client(b.mqtt_port, "alias-pub", |_| {}).await;
    let sent = [("out/x", "1"), ("out/x", "2"), ("out/y", "3"), ("out/x", "4"), ("out/y", "5")];
    for (t, v) in sent {
        publ.publish(t, QoS::AtLeastOnce, false, v).await.unwrap();
        expect(&mut prx, |p| matches!(p, Packet::PubAck(_))).await;
    }
    // rumqttc 0.25 accepts the aliases (an unknown one would be a protocol
    // error, ending its connection) but hands the application the PUBLISH as
    // received, before its own resolution: the empty topic is resolved here
    // from the alias property, as its users do.
    let mut aliases = std::collections::HashMap::new();
    let mut got = Vec::new();
    for _ in 0..sent.len() {
        let p = next_publish(&mut srx).await;
        let alias = p.properties.as_ref().and_then(|p| p.topic_alias);
        let mut t = topic(&p);
        match alias {
            Some(a) if t.is_empty() => t = aliases.get(&a).cloned().unwrap_or_default(),
            Some(a) => {
                aliases.insert(a, t.clone());
            }
            None => {}
        }
        got.push((t, String::from_utf8_lossy(&p.payload).into_owned(), alias));
    }
    // Each topic keeps the alias it got on first use.
    let want: Vec<(String, String, Option<u16>)> =
        [("out/x", "1", 1), ("out/x", "2", 1), ("out/y", "3", 2), ("out/x", "4", 1), ("out/y", "5", 2)]
            .map(|(t, v, a)| (t.to_string(), v.to_string(), Some(a)))
            .to_vec();
    assert_eq!(got, want);
    quiet(&mut srx, 300).await;
}

/// The bytes of outbound PUBLISHes to a raw MQTT 5 client that allows
/// `alias_max` topic aliases, for messages published to t/a, t/a, t/b.
async fn raw_publishes_with_alias_max(b: &Broker, alias_max: u8) -> Vec<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn frame(s: &mut tokio::net::TcpStream) -> Vec<u8> {
        let mut head = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut head)).await.unwrap().unwrap();
        assert!(head[1] < 0x80, "short packets only");
        let mut body = vec![0u8; usize::from(head[1])];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut body)).await.unwrap().unwrap();
        [&head[..], &body].concat()
    }
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", b.mqtt_port)).await.unwrap();
    // CONNECT 5.0, clean start, Topic Alias Maximum = alias_max, client id "raw".
    let connect =
        [0x10, 19, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 3, 0x22, 0, alias_max, 0, 3, b'r', b'a', b'w'];
    s.write_all(&connect).await.unwrap();
    assert_eq!(frame(&mut s).await[0], 0x20);
    // SUBSCRIBE t/# at QoS 0.
    s.write_all(&[0x82, 9, 0, 1, 0, 0, 3, b't', b'/', b'#', 0]).await.unwrap();
    assert_eq!(frame(&mut s).await[0], 0x90);
    let (publ, mut prx) = client(b.mqtt_port, "raw-pub", |_| {}).await;
    for (t, v) in [("t/a", "x"), ("t/a", "y"), ("t/b", "z")] {
        publ.publish(t, QoS::AtLeastOnce, false, v).await.unwrap();
        expect(&mut prx, |p| matches!(p, Packet::PubAck(_))).await;
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(frame(&mut s).await);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_topic_aliases_on_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    // First use: topic + Topic Alias (0x23) 1; then an empty topic + alias
    // 1; a second topic gets alias 2.
    let got = raw_publishes_with_alias_max(&b, 10).await;
    assert_eq!(got[0], [0x30, 10, 0, 3, b't', b'/', b'a', 3, 0x23, 0, 1, b'x']);
    assert_eq!(got[1], [0x30, 7, 0, 0, 3, 0x23, 0, 1, b'y']);
    assert_eq!(got[2], [0x30, 10, 0, 3, b't', b'/', b'b', 3, 0x23, 0, 2, b'z']);
    drop(b);
    // One alias allowed: once it is taken, other topics go by name only.
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let got = raw_publishes_with_alias_max(&b, 1).await;
    assert_eq!(got[1], [0x30, 7, 0, 0, 3, 0x23, 0, 1, b'y']);
    assert_eq!(got[2], [0x30, 7, 0, 3, b't', b'/', b'b', 0, b'z']);
    drop(b);
    // Switched off: names only.
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start_with_toml(dir.path(), "[mqtt]\noutbound_topic_aliases = false\n");
    let got = raw_publishes_with_alias_max(&b, 10).await;
    assert_eq!(got[1], [0x30, 7, 0, 3, b't', b'/', b'a', 0, b'y']);
}
