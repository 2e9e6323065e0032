//! MQTT 5 with rumqttc's v5 client: user properties, response topic and
//! correlation data, subscription identifiers, no-local, retain as
//! published, shared subscriptions, message expiry, session takeover.

use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Disconnect, Filter, Packet, PublishProperties, SubscribeProperties};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions, StateError};
use tokio::sync::mpsc;

use crate::support::Broker;

pub async fn client(
    port: u16,
    id: &str,
    tune: impl FnOnce(&mut MqttOptions),
) -> (AsyncClient, mpsc::UnboundedReceiver<Packet>) {
    let (c, rx, _) = client_with_task(port, id, tune).await;
    (c, rx)
}

/// [`client`], and the handle of its event loop task: aborting it drops
/// the connection without DISCONNECT (dropping the client does not).
pub async fn client_with_task(
    port: u16,
    id: &str,
    tune: impl FnOnce(&mut MqttOptions),
) -> (AsyncClient, mpsc::UnboundedReceiver<Packet>, tokio::task::AbortHandle) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    tune(&mut opts);
    let (c, mut el) = AsyncClient::new(opts, 100);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(p)) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                // rumqttc reports a server DISCONNECT as an error.
                Err(ConnectionError::MqttState(StateError::ServerDisconnect { reason_code, .. })) => {
                    let _ = tx.send(Packet::Disconnect(Disconnect::new(reason_code)));
                    return;
                }
                Err(_) => return,
            }
        }
    });
    expect(&mut rx, |p| matches!(p, Packet::ConnAck(_))).await;
    (c, rx, task.abort_handle())
}

pub async fn expect(rx: &mut mpsc::UnboundedReceiver<Packet>, want: impl Fn(&Packet) -> bool) -> Packet {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(p)) if want(&p) => return p,
            Ok(Some(_)) => {}
            Ok(None) => panic!("connection closed while waiting"),
            Err(_) => panic!("timed out waiting for a packet"),
        }
    }
}

pub async fn next_publish(rx: &mut mpsc::UnboundedReceiver<Packet>) -> rumqttc::v5::mqttbytes::v5::Publish {
    match expect(rx, |p| matches!(p, Packet::Publish(_))).await {
        Packet::Publish(p) => p,
        _ => unreachable!(),
    }
}

pub async fn quiet(rx: &mut mpsc::UnboundedReceiver<Packet>, ms: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
    while let Ok(Some(p)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        assert!(!matches!(p, Packet::Publish(_)), "unexpected {p:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_subscription_options_and_shared_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (me, mut rx) = client(b.mqtt_port, "me", |_| {}).await;
    // No local + retain as published + a subscription identifier.
    let mut f = Filter::new("req/#", QoS::AtLeastOnce);
    f.nolocal = true;
    f.preserve_retain = true;
    let props = SubscribeProperties { id: Some(42), user_properties: vec![] };
    me.subscribe_many_with_properties([f], props).await.unwrap();
    expect(&mut rx, |p| matches!(p, Packet::SubAck(_))).await;
    me.publish("req/mine", QoS::AtLeastOnce, false, "own").await.unwrap();
    quiet(&mut rx, 300).await;

    let (other, mut orx) = client(b.mqtt_port, "other", |_| {}).await;
    let props = PublishProperties {
        response_topic: Some("resp/other".into()),
        correlation_data: Some(b"corr-1".to_vec().into()),
        user_properties: vec![("k".into(), "v".into())],
        content_type: Some("text/plain".into()),
        message_expiry_interval: Some(60),
        ..Default::default()
    };
    other.publish_with_properties("req/x", QoS::AtLeastOnce, true, "hello", props).await.unwrap();
    expect(&mut orx, |p| matches!(p, Packet::PubAck(_))).await;
    let p = next_publish(&mut rx).await;
    assert!(p.retain, "retain as published");
    let props = p.properties.unwrap();
    assert_eq!(props.subscription_identifiers, vec![42]);
    assert_eq!(props.response_topic.as_deref(), Some("resp/other"));
    assert_eq!(props.correlation_data.as_deref(), Some(&b"corr-1"[..]));
    assert_eq!(props.user_properties, vec![("k".to_string(), "v".to_string())]);
    assert_eq!(props.content_type.as_deref(), Some("text/plain"));
    assert!(props.message_expiry_interval.is_some_and(|s| (58..=60).contains(&s)));

    // Shared subscription: two members, each message to exactly one.
    let (m1, mut r1) = client(b.mqtt_port, "m1", |_| {}).await;
    let (m2, mut r2) = client(b.mqtt_port, "m2", |_| {}).await;
    for (m, r) in [(&m1, &mut r1), (&m2, &mut r2)] {
        m.subscribe("$share/g/jobs/+", QoS::AtLeastOnce).await.unwrap();
        expect(r, |p| matches!(p, Packet::SubAck(_))).await;
    }
    for i in 0..10 {
        other.publish(format!("jobs/{i}"), QoS::AtLeastOnce, false, i.to_string()).await.unwrap();
    }
    let (mut n1, mut n2) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while n1 + n2 < 10 && tokio::time::Instant::now() < deadline {
        tokio::select! {
            Some(Packet::Publish(_)) = r1.recv() => n1 += 1,
            Some(Packet::Publish(_)) = r2.recv() => n2 += 1,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    assert_eq!(n1 + n2, 10);
    assert!(n1 > 0 && n2 > 0, "round robin: {n1} and {n2}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_subscriptions_share_a_copy_per_qos_carrying_all_their_identifiers() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (me, mut rx) = client(b.mqtt_port, "overlap", |_| {}).await;
    for (filter, id, qos) in [("a/#", 1, QoS::AtMostOnce), ("a/b", 2, QoS::AtLeastOnce), ("a/+", 3, QoS::AtMostOnce)] {
        let props = SubscribeProperties { id: Some(id), user_properties: vec![] };
        me.subscribe_many_with_properties([Filter::new(filter, qos)], props).await.unwrap();
        expect(&mut rx, |p| matches!(p, Packet::SubAck(_))).await;
    }
    let (other, mut orx) = client(b.mqtt_port, "overlap-pub", |_| {}).await;
    other.publish("a/b", QoS::AtLeastOnce, false, "both").await.unwrap();
    expect(&mut orx, |p| matches!(p, Packet::PubAck(_))).await;
    // MQTT 5 §3.3.4: one copy per QoS, carrying the identifiers of all the
    // subscriptions at that QoS.
    let mut got: Vec<(Vec<usize>, QoS)> = Vec::new();
    for _ in 0..2 {
        let p = next_publish(&mut rx).await;
        assert_eq!(&p.payload[..], b"both");
        let mut ids = p.properties.map(|pr| pr.subscription_identifiers).unwrap_or_default();
        ids.sort_unstable();
        got.push((ids, p.qos));
    }
    got.sort_by_key(|(ids, _)| ids.clone());
    assert_eq!(got, vec![(vec![1, 3], QoS::AtMostOnce), (vec![2], QoS::AtLeastOnce)]);
    quiet(&mut rx, 300).await;
    // Only one identifier matches: one copy.
    other.publish("a/c/d", QoS::AtLeastOnce, false, "one").await.unwrap();
    let p = next_publish(&mut rx).await;
    assert_eq!(p.properties.map(|pr| pr.subscription_identifiers).unwrap_or_default(), vec![1]);
    quiet(&mut rx, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_subscriptions_at_one_qos_get_one_publish_with_both_identifiers() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (me, mut rx) = client(b.mqtt_port, "ids", |_| {}).await;
    for (filter, id, qos) in [
        ("s/#", 1, QoS::AtLeastOnce),
        ("s/+", 2, QoS::AtLeastOnce),
        ("d/#", 1, QoS::AtMostOnce),
        ("d/+", 2, QoS::AtLeastOnce),
    ] {
        let props = SubscribeProperties { id: Some(id), user_properties: vec![] };
        me.subscribe_many_with_properties([Filter::new(filter, qos)], props).await.unwrap();
        expect(&mut rx, |p| matches!(p, Packet::SubAck(_))).await;
    }
    let (other, mut orx) = client(b.mqtt_port, "ids-pub", |_| {}).await;
    other.publish("s/x", QoS::AtLeastOnce, false, "same").await.unwrap();
    expect(&mut orx, |p| matches!(p, Packet::PubAck(_))).await;
    let p = next_publish(&mut rx).await;
    assert_eq!(p.qos, QoS::AtLeastOnce);
    let mut ids = p.properties.map(|pr| pr.subscription_identifiers).unwrap_or_default();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2]);
    quiet(&mut rx, 300).await;
    // Different QoS: a copy each, with its own identifier.
    other.publish("d/x", QoS::AtLeastOnce, false, "diff").await.unwrap();
    expect(&mut orx, |p| matches!(p, Packet::PubAck(_))).await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let p = next_publish(&mut rx).await;
        got.push((p.properties.map(|pr| pr.subscription_identifiers).unwrap_or_default(), p.qos));
    }
    got.sort_by_key(|(ids, _)| ids.clone());
    assert_eq!(got, vec![(vec![1], QoS::AtMostOnce), (vec![2], QoS::AtLeastOnce)]);
    quiet(&mut rx, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_disconnects_the_old_connection_with_reason_0x8e() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (_first, mut frx) = client(b.mqtt_port, "same", |_| {}).await;
    let (_second, _srx) = client(b.mqtt_port, "same", |_| {}).await;
    let p = expect(&mut frx, |p| matches!(p, Packet::Disconnect(_))).await;
    let Packet::Disconnect(d) = p else { unreachable!() };
    assert_eq!(d.reason_code, rumqttc::v5::mqttbytes::v5::DisconnectReasonCode::SessionTakenOver);
}
