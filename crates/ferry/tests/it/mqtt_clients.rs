//! MQTT 3.1.1 with rumqttc: QoS 0/1/2, wildcards, `$` topics, retained
//! messages across a restart, persistent sessions across kill -9, wills,
//! and the MQTT-to-Kafka bridge read back with librdkafka.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

use crate::support::{self, Broker};

/// A connected client whose incoming packets arrive on the receiver. The
/// event loop stops at the first error (no reconnects).
pub async fn client(
    port: u16,
    id: &str,
    clean: bool,
    tune: impl FnOnce(&mut MqttOptions),
) -> (AsyncClient, mpsc::UnboundedReceiver<Packet>) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_clean_session(clean).set_keep_alive(Duration::from_secs(30));
    tune(&mut opts);
    let (c, mut el) = AsyncClient::new(opts, 100);
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(ev) = el.poll().await {
            if let Event::Incoming(p) = ev
                && tx.send(p).is_err()
            {
                return;
            }
        }
    });
    expect(&mut rx, |p| matches!(p, Packet::ConnAck(_))).await;
    (c, rx)
}

/// Waits (10 s at most) for a packet `want` accepts, skipping others.
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

/// The next `n` publishes as (topic, payload, qos, retain).
pub async fn publishes(rx: &mut mpsc::UnboundedReceiver<Packet>, n: usize) -> Vec<(String, String, QoS, bool)> {
    let mut out = Vec::new();
    while out.len() < n {
        if let Packet::Publish(p) = expect(rx, |p| matches!(p, Packet::Publish(_))).await {
            out.push((p.topic.clone(), String::from_utf8_lossy(&p.payload).into_owned(), p.qos, p.retain));
        }
    }
    out
}

/// Nothing published arrives within `ms`.
pub async fn quiet(rx: &mut mpsc::UnboundedReceiver<Packet>, ms: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
    while let Ok(Some(p)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        assert!(!matches!(p, Packet::Publish(_)), "unexpected {p:?}");
    }
}

async fn subscribe(c: &AsyncClient, rx: &mut mpsc::UnboundedReceiver<Packet>, filter: &str, qos: QoS) {
    c.subscribe(filter, qos).await.unwrap();
    expect(rx, |p| matches!(p, Packet::SubAck(_))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_levels_wildcards_and_dollar_topics() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (sub, mut srx) = client(b.mqtt_port, "sub", true, |_| {}).await;
    subscribe(&sub, &mut srx, "a/+/c", QoS::ExactlyOnce).await;
    subscribe(&sub, &mut srx, "#", QoS::AtMostOnce).await;
    let (publ, mut prx) = client(b.mqtt_port, "pub", true, |_| {}).await;
    publ.publish("a/b/c", QoS::AtMostOnce, false, "zero").await.unwrap();
    publ.publish("a/b/c", QoS::AtLeastOnce, false, "one").await.unwrap();
    expect(&mut prx, |p| matches!(p, Packet::PubAck(_))).await;
    publ.publish("a/b/c", QoS::ExactlyOnce, false, "two").await.unwrap();
    expect(&mut prx, |p| matches!(p, Packet::PubComp(_))).await;
    publ.publish("$SYS/x", QoS::AtLeastOnce, false, "hidden").await.unwrap();
    publ.publish("x/y", QoS::AtLeastOnce, false, "other").await.unwrap();
    let mut got = publishes(&mut srx, 4).await;
    got.sort_by(|a, b| a.1.cmp(&b.1));
    // Overlapping subscriptions: one copy, at the highest granted QoS.
    assert_eq!(
        got,
        vec![
            ("a/b/c".into(), "one".into(), QoS::AtLeastOnce, false),
            ("x/y".into(), "other".into(), QoS::AtMostOnce, false),
            ("a/b/c".into(), "two".into(), QoS::ExactlyOnce, false),
            ("a/b/c".into(), "zero".into(), QoS::AtMostOnce, false),
        ]
    );
    quiet(&mut srx, 300).await; // "$SYS/x" matched neither "#" nor "a/+/c"
    sub.unsubscribe("#").await.unwrap();
    expect(&mut srx, |p| matches!(p, Packet::UnsubAck(_))).await;
    publ.publish("x/y", QoS::AtLeastOnce, false, "gone").await.unwrap();
    quiet(&mut srx, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_survive_a_restart_and_empty_payload_clears() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Broker::start(dir.path());
    {
        let (publ, mut prx) = client(b.mqtt_port, "pub", true, |_| {}).await;
        for (t, v) in [("r/1", "one"), ("r/2", "two"), ("r/3", "three")] {
            publ.publish(t, QoS::AtLeastOnce, true, v).await.unwrap();
            expect(&mut prx, |p| matches!(p, Packet::PubAck(_))).await;
        }
        publ.publish("r/2", QoS::AtLeastOnce, true, "").await.unwrap();
        expect(&mut prx, |p| matches!(p, Packet::PubAck(_))).await;
    }
    b.kill9();
    b.start_again();
    let (sub, mut srx) = client(b.mqtt_port, "sub", true, |_| {}).await;
    subscribe(&sub, &mut srx, "r/+", QoS::AtLeastOnce).await;
    let mut got = publishes(&mut srx, 2).await;
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            ("r/1".into(), "one".into(), QoS::AtLeastOnce, true),
            ("r/3".into(), "three".into(), QoS::AtLeastOnce, true)
        ]
    );
    quiet(&mut srx, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_keeps_subscriptions_and_queued_messages_across_kill9() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Broker::start(dir.path());
    {
        let (sub, mut srx) = client(b.mqtt_port, "keeper", false, |_| {}).await;
        subscribe(&sub, &mut srx, "q/#", QoS::ExactlyOnce).await;
        sub.disconnect().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (publ, mut prx) = client(b.mqtt_port, "pub", true, |_| {}).await;
    for i in 0..5 {
        publ.publish(format!("q/{i}"), QoS::AtLeastOnce, false, i.to_string()).await.unwrap();
        expect(&mut prx, |p| matches!(p, Packet::PubAck(_))).await;
    }
    // Not queued for an offline session: QoS 0.
    publ.publish("q/x", QoS::AtMostOnce, false, "qos0").await.unwrap();
    publ.publish("q/9", QoS::ExactlyOnce, false, "9").await.unwrap();
    expect(&mut prx, |p| matches!(p, Packet::PubComp(_))).await;
    // Acknowledged means durable: a crash loses none of them.
    b.kill9();
    b.start_again();
    let (_sub, mut srx) = client(b.mqtt_port, "keeper", false, |_| {}).await;
    let got = publishes(&mut srx, 6).await;
    let values: Vec<&str> = got.iter().map(|g| g.1.as_str()).collect();
    assert_eq!(values, ["0", "1", "2", "3", "4", "9"]);
    assert_eq!(got[5].2, QoS::ExactlyOnce);
    // Delivered and acknowledged: not sent again after another restart.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(_sub);
    b.restart();
    let (sub, mut srx) = client(b.mqtt_port, "keeper", false, |_| {}).await;
    quiet(&mut srx, 500).await;
    // The subscription itself survived both restarts.
    let (publ, mut prx) = client(b.mqtt_port, "pub", true, |_| {}).await;
    publ.publish("q/10", QoS::AtLeastOnce, false, "10").await.unwrap();
    expect(&mut prx, |p| matches!(p, Packet::PubAck(_))).await;
    assert_eq!(publishes(&mut srx, 1).await[0].1, "10");
    // A clean session discards it all.
    drop(sub);
    let (_clean, mut crx) = client(b.mqtt_port, "keeper", true, |_| {}).await;
    publ.publish("q/11", QoS::AtLeastOnce, false, "11").await.unwrap();
    quiet(&mut crx, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_of_qos1_publishes_is_acknowledged_in_order_once_stored() {
    // The publisher's PUBLISHes share fsyncs (their PUBACKs wait in order
    // while the connection reads on); acknowledged still means durable.
    let dir = tempfile::tempdir().unwrap();
    let mut b = Broker::start(dir.path());
    {
        let (sub, mut srx) = client(b.mqtt_port, "keeper", false, |_| {}).await;
        subscribe(&sub, &mut srx, "w/#", QoS::AtLeastOnce).await;
        sub.disconnect().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (publ, mut prx) = client(b.mqtt_port, "pub", true, |o| {
        o.set_inflight(100);
    })
    .await;
    let n = 300;
    let sender = tokio::spawn(async move {
        for i in 0..n {
            publ.publish(format!("w/{}", i % 3), QoS::AtLeastOnce, false, i.to_string()).await.unwrap();
        }
        publ
    });
    let mut acked = Vec::new();
    while acked.len() < n {
        if let Packet::PubAck(a) = expect(&mut prx, |p| matches!(p, Packet::PubAck(_))).await {
            acked.push(a.pkid);
        }
    }
    let _publ = sender.await.unwrap();
    // In the order of the PUBLISHes (rumqttc 0.25 numbers them 1 to its
    // in-flight limit, then starts over).
    let want: Vec<u16> = (0..n).map(|i| (i % 100 + 1) as u16).collect();
    assert_eq!(acked, want, "PUBACKs out of order");
    b.kill9();
    b.start_again();
    let (_sub, mut srx) = client(b.mqtt_port, "keeper", false, |_| {}).await;
    let got = publishes(&mut srx, n).await;
    let values: Vec<String> = got.into_iter().map(|g| g.1).collect();
    let sent: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    assert_eq!(values, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_published_on_abnormal_disconnect_only() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (sub, mut srx) = client(b.mqtt_port, "watcher", true, |_| {}).await;
    subscribe(&sub, &mut srx, "wills/#", QoS::AtLeastOnce).await;
    let will = |o: &mut MqttOptions| {
        o.set_last_will(LastWill::new("wills/dev", "gone", QoS::AtLeastOnce, false));
    };
    let (polite, _prx) = client(b.mqtt_port, "polite", true, will).await;
    polite.disconnect().await.unwrap();
    quiet(&mut srx, 500).await;
    // A raw 3.1.1 CONNECT with a QoS 1 will, then the socket just closes.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", b.mqtt_port)).await.unwrap();
        let mut connect = vec![0x10, 33, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x0e, 0, 30, 0, 4];
        connect.extend_from_slice(b"rude");
        connect.extend_from_slice(&[0, 9]);
        connect.extend_from_slice(b"wills/dev");
        connect.extend_from_slice(&[0, 4]);
        connect.extend_from_slice(b"gone");
        s.write_all(&connect).await.unwrap();
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack).await.unwrap();
        assert_eq!(ack, [0x20, 2, 0, 0]);
    }
    let got = publishes(&mut srx, 1).await;
    assert_eq!(got[0].0, "wills/dev");
    assert_eq!(got[0].1, "gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_publishes_reach_kafka_consumers_through_a_bridge_rule() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start_with_toml(
        dir.path(),
        "[[mqtt.kafka_bridge]]\nfilter = \"sensors/#\"\ntopic = \"sensors\"\n\
         [[mqtt.from_kafka]]\ntopic = \"alerts\"\nmqtt_topic = \"alerts/{key}\"\nqos = 1\n",
    );
    let (c, mut rx) = client(b.mqtt_port, "dev", true, |_| {}).await;
    subscribe(&c, &mut rx, "alerts/#", QoS::AtLeastOnce).await;
    for (t, v) in [("sensors/t1", "21.5"), ("sensors/t2", "19.0"), ("other/t3", "x")] {
        c.publish(t, QoS::AtLeastOnce, false, v).await.unwrap();
        expect(&mut rx, |p| matches!(p, Packet::PubAck(_))).await;
    }
    let got = support::consume_all(&b, "sensors", 1, 2);
    let kv: Vec<(String, String)> =
        got.into_iter().map(|(_, _, k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap())).collect();
    assert_eq!(kv, vec![("sensors/t1".into(), "21.5".into()), ("sensors/t2".into(), "19.0".into())]);
    // Kafka to MQTT: a record on "alerts" keyed "fire" reaches alerts/fire.
    let p = support::producer(&b, &[("acks", "all")]);
    p.send(rdkafka::producer::FutureRecord::to("alerts").key("fire").payload("evacuate"), Duration::from_secs(10))
        .await
        .unwrap();
    let got = publishes(&mut rx, 1).await;
    assert_eq!((got[0].0.as_str(), got[0].1.as_str(), got[0].2), ("alerts/fire", "evacuate", QoS::AtLeastOnce));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_loses_nothing_in_flight_or_pending_for_a_connected_persistent_session() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Broker::start(dir.path());
    // Connected, acknowledging by hand: two of 30 QoS 1 messages get PUBACK;
    // 18 more are in flight (window 20) and 10 wait behind the window.
    let (sub, mut srx) = client(b.mqtt_port, "holder", false, |o| {
        o.set_manual_acks(true);
    })
    .await;
    subscribe(&sub, &mut srx, "held/#", QoS::AtLeastOnce).await;
    let (publ, mut prx) = client(b.mqtt_port, "pub", true, |_| {}).await;
    for i in 0..30 {
        publ.publish(format!("held/{i}"), QoS::AtLeastOnce, false, i.to_string()).await.unwrap();
        expect(&mut prx, |p| matches!(p, Packet::PubAck(_))).await;
    }
    let mut first = Vec::new();
    while first.len() < 20 {
        if let Packet::Publish(p) = expect(&mut srx, |p| matches!(p, Packet::Publish(_))).await {
            first.push(p);
        }
    }
    let values: Vec<String> = first.iter().map(|p| String::from_utf8_lossy(&p.payload).into_owned()).collect();
    assert_eq!(values, (0..20).map(|i| i.to_string()).collect::<Vec<_>>());
    sub.ack(&first[0]).await.unwrap();
    sub.ack(&first[1]).await.unwrap();
    // The acknowledged cursor moves durably when PUBACK arrives; give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.kill9();
    b.start_again();
    let (_sub, mut srx) = client(b.mqtt_port, "holder", false, |_| {}).await;
    let got = publishes(&mut srx, 28).await;
    let values: Vec<&str> = got.iter().map(|g| g.1.as_str()).collect();
    assert_eq!(values, (2..30).map(|i| i.to_string()).collect::<Vec<_>>());
    quiet(&mut srx, 300).await;
}

/// The next `n` publishes as rumqttc packets (to acknowledge by hand).
async fn publish_packets(rx: &mut mpsc::UnboundedReceiver<Packet>, n: usize) -> Vec<rumqttc::Publish> {
    let mut out = Vec::new();
    while out.len() < n {
        if let Packet::Publish(p) = expect(rx, |p| matches!(p, Packet::Publish(_))).await {
            out.push(p);
        }
    }
    out
}

fn payloads(ps: &[rumqttc::Publish]) -> Vec<String> {
    ps.iter().map(|p| String::from_utf8_lossy(&p.payload).into_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_pubacks_are_remembered_across_a_reconnect_and_kill9() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Broker::start(dir.path());
    {
        let (sub, mut srx) = client(b.mqtt_port, "picky", false, |_| {}).await;
        subscribe(&sub, &mut srx, "ooo/#", QoS::AtLeastOnce).await;
        sub.disconnect().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Five QoS 1 messages queue up while the session is offline.
    let (publ, mut prx) = client(b.mqtt_port, "pub", true, |_| {}).await;
    for i in 0..5 {
        publ.publish(format!("ooo/{i}"), QoS::AtLeastOnce, false, i.to_string()).await.unwrap();
        expect(&mut prx, |p| matches!(p, Packet::PubAck(_))).await;
    }
    drop(publ);
    let manual = |o: &mut rumqttc::MqttOptions| {
        o.set_manual_acks(true);
    };
    // Back online: PUBACK for 1 and 3 only (later ones, not the first).
    let (sub, mut srx) = client(b.mqtt_port, "picky", false, manual).await;
    let got = publish_packets(&mut srx, 5).await;
    assert_eq!(payloads(&got), ["0", "1", "2", "3", "4"]);
    sub.ack(&got[1]).await.unwrap();
    sub.ack(&got[3]).await.unwrap();
    // The broker handles a connection's packets in order: once SUBACK is
    // back, both PUBACKs were processed.
    subscribe(&sub, &mut srx, "other/#", QoS::AtMostOnce).await;
    sub.disconnect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(sub);
    // Reconnect: only the unacknowledged ones come again, flagged DUP.
    let (sub, mut srx) = client(b.mqtt_port, "picky", false, manual).await;
    let again = publish_packets(&mut srx, 3).await;
    assert_eq!(payloads(&again), ["0", "2", "4"]);
    assert!(again.iter().all(|p| p.dup), "redeliveries carry DUP");
    quiet(&mut srx, 300).await;
    // Acknowledge the middle one, then crash while connected.
    sub.ack(&again[1]).await.unwrap();
    subscribe(&sub, &mut srx, "other2/#", QoS::AtMostOnce).await;
    b.kill9();
    drop(sub);
    b.start_again();
    let (sub, mut srx) = client(b.mqtt_port, "picky", false, |_| {}).await;
    let last = publish_packets(&mut srx, 2).await;
    assert_eq!(payloads(&last), ["0", "4"]);
    quiet(&mut srx, 500).await;
    // All acknowledged now (automatic acks): nothing after a clean restart.
    subscribe(&sub, &mut srx, "other3/#", QoS::AtMostOnce).await;
    drop(sub);
    b.restart();
    let (_sub, mut srx) = client(b.mqtt_port, "picky", false, |_| {}).await;
    quiet(&mut srx, 500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_done_inbound_qos2_exchange_survives_kill9_exactly_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn raw(port: u16) -> tokio::net::TcpStream {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        // 3.1.1, clean session 0, keepalive 60, id "q2".
        s.write_all(&[0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x00, 0, 60, 0, 2, b'q', b'2']).await.unwrap();
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack).await.unwrap();
        assert_eq!(ack[0], 0x20);
        s
    }
    async fn send_expect(s: &mut tokio::net::TcpStream, packet: &[u8], want: [u8; 4]) {
        s.write_all(packet).await.unwrap();
        let mut got = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut got)).await.unwrap().unwrap();
        assert_eq!(got, want);
    }
    let publish = |dup: bool, payload: &[u8]| {
        let mut p = vec![if dup { 0x3c } else { 0x34 }, (2 + 4 + 2 + payload.len()) as u8, 0, 4];
        p.extend_from_slice(b"q2/t");
        p.extend_from_slice(&[0, 7]);
        p.extend_from_slice(payload);
        p
    };
    let dir = tempfile::tempdir().unwrap();
    let mut b = Broker::start(dir.path());
    let (sub, mut srx) = client(b.mqtt_port, "q2sub", false, |_| {}).await;
    subscribe(&sub, &mut srx, "q2/#", QoS::ExactlyOnce).await;
    let mut s = raw(b.mqtt_port).await;
    send_expect(&mut s, &publish(false, b"once"), [0x50, 2, 0, 7]).await;
    assert_eq!(publishes(&mut srx, 1).await[0].1, "once");
    // The subscriber's side of "once" ends (PUBREL in, PUBCOMP out) and it
    // disconnects: the broker handles its PUBCOMP before the DISCONNECT, so
    // no PUBREL is resent after the restart (a fresh rumqttc state drops
    // its connection on one it does not know; a fixed sleep was too short
    // under load).
    expect(&mut srx, |p| matches!(p, Packet::PubRel(_))).await;
    sub.disconnect().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async { while srx.recv().await.is_some() {} })
        .await
        .expect("the subscriber's connection ends after its DISCONNECT");
    // The broker crashes before the publisher's PUBREL: the id is still
    // awaiting release after the restart.
    b.kill9();
    drop(sub);
    b.start_again();
    let (_sub, mut srx) = client(b.mqtt_port, "q2sub", false, |_| {}).await;
    let mut s = raw(b.mqtt_port).await;
    send_expect(&mut s, &publish(true, b"once"), [0x50, 2, 0, 7]).await;
    quiet(&mut srx, 500).await; // not routed twice
    send_expect(&mut s, &[0x62, 2, 0, 7], [0x70, 2, 0, 7]).await;
    // Released: the id is free for a new message.
    send_expect(&mut s, &publish(false, b"again"), [0x50, 2, 0, 7]).await;
    assert_eq!(publishes(&mut srx, 1).await[0].1, "again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_gets_its_unacknowledged_pubrel_again() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn read_n(s: &mut tokio::net::TcpStream, n: usize) -> Vec<u8> {
        let mut got = vec![0u8; n];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut got)).await.unwrap().unwrap();
        got
    }
    // 3.1.1, clean session 0, id "rel".
    let connect = [0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x00, 0, 60, 0, 3, b'r', b'e', b'l'];
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", b.mqtt_port)).await.unwrap();
    s.write_all(&connect).await.unwrap();
    assert_eq!(read_n(&mut s, 4).await, [0x20, 2, 0, 0]);
    s.write_all(&[0x82, 10, 0, 1, 0, 5, b'r', b'e', b'l', b'/', b'#', 2]).await.unwrap();
    assert_eq!(read_n(&mut s, 5).await, [0x90, 3, 0, 1, 2]);
    let (publ, mut prx) = client(b.mqtt_port, "pub", true, |_| {}).await;
    publ.publish("rel/x", QoS::ExactlyOnce, false, "m").await.unwrap();
    expect(&mut prx, |p| matches!(p, Packet::PubComp(_))).await;
    // PUBLISH QoS 2: topic "rel/x", packet id, payload "m".
    let p = read_n(&mut s, 2 + 2 + 5 + 2 + 1).await;
    assert_eq!(&p[..9], &[0x34, 10, 0, 5, b'r', b'e', b'l', b'/', b'x']);
    let pid = [p[9], p[10]];
    s.write_all(&[0x50, 2, pid[0], pid[1]]).await.unwrap();
    assert_eq!(read_n(&mut s, 4).await, [0x62, 2, pid[0], pid[1]]);
    // Gone before PUBCOMP; back again: session present, the same PUBREL first.
    drop(s);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", b.mqtt_port)).await.unwrap();
    s.write_all(&connect).await.unwrap();
    assert_eq!(read_n(&mut s, 4).await, [0x20, 2, 1, 0]);
    assert_eq!(read_n(&mut s, 4).await, [0x62, 2, pid[0], pid[1]]);
    s.write_all(&[0x70, 2, pid[0], pid[1]]).await.unwrap();
    // The message itself is not sent again; a new one is.
    publ.publish("rel/y", QoS::AtLeastOnce, false, "n").await.unwrap();
    let p = read_n(&mut s, 2 + 2 + 5 + 2 + 1).await;
    assert_eq!(&p[..9], &[0x32, 10, 0, 5, b'r', b'e', b'l', b'/', b'y']);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_subscriber_does_not_slow_a_publisher() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    // Never acknowledges: 20 in flight, the rest queue in its session.
    let (stuck, mut srx) = client(b.mqtt_port, "stuck", true, |o| {
        o.set_manual_acks(true);
    })
    .await;
    subscribe(&stuck, &mut srx, "flood/#", QoS::AtLeastOnce).await;
    let (publ, mut prx) = client(b.mqtt_port, "pub", true, |_| {}).await;
    // It stops taking messages once its window is full, so it is stalled,
    // not slow: the publisher's acks are not held for it (past the queue
    // limit, 1,000, messages for it are dropped).
    let started = std::time::Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..1200 {
        let sent = std::time::Instant::now();
        publ.publish(format!("flood/{i}"), QoS::AtLeastOnce, false, "x").await.unwrap();
        expect(&mut prx, |p| matches!(p, Packet::PubAck(_))).await;
        slowest = slowest.max(sent.elapsed());
    }
    assert!(slowest < Duration::from_millis(500), "slowest PUBACK {slowest:?}");
    // Held for it at 20 ms each, 1,200 publishes would take over 18 s.
    assert!(started.elapsed() < Duration::from_secs(8), "1,200 publishes took {:?}", started.elapsed());
    // The stuck subscriber got its window's worth and nothing was lost for others.
    let (fresh, mut frx) = client(b.mqtt_port, "fresh", true, |_| {}).await;
    subscribe(&fresh, &mut frx, "flood/#", QoS::AtLeastOnce).await;
    publ.publish("flood/last", QoS::AtLeastOnce, false, "last").await.unwrap();
    assert_eq!(publishes(&mut frx, 1).await[0].1, "last");
}
