//! MQTT on a three-node cluster (issue #17): rumqttc subscribers with
//! persistent sessions (QoS 1 and QoS 2) on node 1, a clean-session
//! subscriber on node 2, a publisher on node 3. Messages cross nodes; node
//! 1 is killed with SIGKILL; what is published meanwhile through node 3
//! reaches the persistent sessions when their clients reconnect to node 2
//! (session present), QoS 2 exactly once; the will of a client whose node
//! died is published by another node (a persistent session's and a clean
//! session's); retained messages are the same on every node.

use std::collections::BTreeMap;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

use crate::cluster_support::Cluster;
use crate::mqtt_clients::{client, expect};
use crate::support::watchdog;

/// A connected client with a persistent session (no reconnects) and
/// whether its session was present. A refused or dropped connection is
/// tried again (30 s at most): a node answers "server unavailable" while
/// the cluster metadata cannot record the session (an election under load).
async fn resume(port: u16, id: &str, will: Option<LastWill>) -> (AsyncClient, mpsc::UnboundedReceiver<Packet>, bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_clean_session(false).set_keep_alive(Duration::from_secs(30));
        if let Some(w) = will.clone() {
            opts.set_last_will(w);
        }
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
        if let Ok(Some(Packet::ConnAck(ack))) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await
            && ack.code == rumqttc::ConnectReturnCode::Success
        {
            return (c, rx, ack.session_present);
        }
        assert!(tokio::time::Instant::now() < deadline, "{id} could not connect through port {port}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn subscribe(c: &AsyncClient, rx: &mut mpsc::UnboundedReceiver<Packet>, filter: &str, qos: QoS) {
    c.subscribe(filter, qos).await.unwrap();
    expect(rx, |p| matches!(p, Packet::SubAck(_))).await;
}

/// Publishes `payloads` on `topic` at `qos` and waits until each is
/// acknowledged (PUBACK, or PUBCOMP for QoS 2).
async fn publish_all(
    c: &AsyncClient,
    rx: &mut mpsc::UnboundedReceiver<Packet>,
    topic: &str,
    qos: QoS,
    payloads: &[String],
) {
    for p in payloads {
        c.publish(topic, qos, false, p.clone()).await.unwrap();
    }
    let mut acked = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acked < payloads.len() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Packet::PubAck(_))) if qos == QoS::AtLeastOnce => acked += 1,
            Ok(Some(Packet::PubComp(_))) if qos == QoS::ExactlyOnce => acked += 1,
            Ok(Some(_)) => {}
            Ok(None) => panic!("the publisher's connection closed"),
            Err(_) => panic!("{acked} of {} publishes acknowledged in 60 s", payloads.len()),
        }
    }
}

/// Payloads received until `want` are all in (20 s at most), then for a
/// further 1.5 s, with how often each came.
async fn received(rx: &mut mpsc::UnboundedReceiver<Packet>, want: &[String]) -> BTreeMap<String, usize> {
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    let complete = |got: &BTreeMap<String, usize>| want.iter().all(|w| got.contains_key(w));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut settle: Option<tokio::time::Instant> = None;
    loop {
        let until = settle.unwrap_or(deadline);
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Some(Packet::Publish(p))) => {
                *got.entry(String::from_utf8_lossy(&p.payload).into_owned()).or_default() += 1;
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
        if settle.is_none() && complete(&got) {
            settle = Some(tokio::time::Instant::now() + Duration::from_millis(1500));
        }
    }
    got
}

/// The first retained message a new subscription to `r/#` through `port`
/// gets. Another node's image has a retained message a moment after the
/// publisher's PUBACK (its Raft apply), so a subscription finding none is
/// tried again (10 s at most).
async fn retained(port: u16, id: &str) -> (String, String, QoS, bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (c, mut rx) = client(port, id, true, |_| {}).await;
        subscribe(&c, &mut rx, "r/#", QoS::AtLeastOnce).await;
        if let Ok(Some(Packet::Publish(p))) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            return (p.topic.clone(), String::from_utf8_lossy(&p.payload).into_owned(), p.qos, p.retain);
        }
        let _ = c.disconnect().await;
        assert!(tokio::time::Instant::now() < deadline, "no retained message through port {port}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_sessions_resume_on_another_node_after_a_kill() {
    let _guard = watchdog("mqtt_cluster", Duration::from_secs(240));
    let mut c = Cluster::start(3);
    c.wait_for_brokers(1, &[1, 2, 3]);
    let port = |c: &Cluster, id: i32| c.node(id).mqtt_port;

    let will = LastWill::new("w/q1", "q1 gone", QoS::AtLeastOnce, false);
    let (q1, mut r1, _) = resume(port(&c, 1), "q1", Some(will)).await;
    subscribe(&q1, &mut r1, "t/#", QoS::AtLeastOnce).await;
    let (q2, mut r2, _) = resume(port(&c, 1), "q2", None).await;
    subscribe(&q2, &mut r2, "t/#", QoS::ExactlyOnce).await;
    let (clean, mut rc) = client(port(&c, 2), "clean", true, |_| {}).await;
    // A clean session with a will on node 1: recorded apart, published by
    // a surviving node too.
    let (_c1, _) = client(port(&c, 1), "c1", true, |o| {
        o.set_last_will(LastWill::new("w/c1", "c1 gone", QoS::AtLeastOnce, false));
    })
    .await;
    subscribe(&clean, &mut rc, "t/#", QoS::AtLeastOnce).await;
    let (publisher, mut rp) = client(port(&c, 3), "pub", true, |_| {}).await;
    let (watcher, mut rw) = client(port(&c, 3), "watcher", true, |_| {}).await;
    subscribe(&watcher, &mut rw, "w/#", QoS::AtLeastOnce).await;

    // A retained message through node 3, seen from node 2.
    publisher.publish("r/cfg", QoS::AtLeastOnce, true, "v1").await.unwrap();
    expect(&mut rp, |p| matches!(p, Packet::PubAck(_))).await;
    assert_eq!(retained(port(&c, 2), "late").await, ("r/cfg".into(), "v1".into(), QoS::AtLeastOnce, true));

    // Live: every subscriber gets what node 3 takes, across nodes.
    let live: Vec<String> = (0..10).map(|i| format!("live-{i}")).collect();
    publish_all(&publisher, &mut rp, "t/a", QoS::ExactlyOnce, &live).await;
    let once: BTreeMap<String, usize> = live.iter().map(|p| (p.clone(), 1)).collect();
    assert_eq!(received(&mut r2, &live).await, once, "QoS 2 on node 1, exactly once");
    let got = received(&mut r1, &live).await;
    assert!(live.iter().all(|p| got.contains_key(p)), "QoS 1 on node 1: {got:?}");
    let got = received(&mut rc, &live).await;
    assert!(live.iter().all(|p| got.contains_key(p)), "clean session on node 2: {got:?}");

    // Node 1 dies with the persistent sessions' clients connected to it.
    c.kill9(1);
    let dead: Vec<String> = (0..20).map(|i| format!("dead-{i}")).collect();
    let (half1, half2) = dead.split_at(10);
    publish_all(&publisher, &mut rp, "t/b", QoS::AtLeastOnce, half1).await;
    publish_all(&publisher, &mut rp, "t/b", QoS::ExactlyOnce, half2).await;
    let got = received(&mut rc, &dead).await;
    assert!(dead.iter().all(|p| got.contains_key(p)), "clean session on node 2: {got:?}");

    // q1's and c1's wills: published by a surviving node, since their
    // node died with them, once each.
    let wills = ["q1 gone".to_string(), "c1 gone".to_string()];
    let got = received(&mut rw, &wills).await;
    assert!(wills.iter().all(|w| got.get(w) == Some(&1)), "{got:?}");

    // Their clients come back through node 2: nothing lost, QoS 2 once.
    let (_q2, mut r2, present) = resume(port(&c, 2), "q2", None).await;
    assert!(present, "q2's session resumed on node 2");
    let got = received(&mut r2, &dead).await;
    let once: BTreeMap<String, usize> = dead.iter().map(|p| (p.clone(), 1)).collect();
    assert_eq!(got, once, "every message published meanwhile, exactly once, nothing from before");
    let (_q1, mut r1, present) = resume(port(&c, 2), "q1", None).await;
    assert!(present, "q1's session resumed on node 2");
    let got = received(&mut r1, &dead).await;
    assert!(dead.iter().all(|p| got.contains_key(p)), "QoS 1: every message published meanwhile: {got:?}");

    // The retained message from node 3's view too, after the kill.
    assert_eq!(retained(port(&c, 3), "late3").await, ("r/cfg".into(), "v1".into(), QoS::AtLeastOnce, true));
}
