//! `max_keepalive`: an MQTT 5 client asking for more is told the maximum in
//! CONNACK's Server Keep Alive and held to it; a 3.1.1 client asking for
//! more is refused (return code 2), as mosquitto does.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnAck, Packet};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::mqtt_v5::{expect, next_publish};
use crate::support::Broker;

/// An MQTT 5 client asking for keepalive `secs`: its CONNACK, and the
/// packets that follow (the event loop keeps running, pinging as told).
async fn connect_v5(port: u16, id: &str, secs: u64) -> (ConnAck, AsyncClient, mpsc::UnboundedReceiver<Packet>) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(secs));
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
    match expect(&mut rx, |p| matches!(p, Packet::ConnAck(_))).await {
        Packet::ConnAck(ack) => (ack, c, rx),
        _ => unreachable!(),
    }
}

fn server_keep_alive(ack: &ConnAck) -> Option<u16> {
    ack.properties.as_ref().and_then(|p| p.server_keep_alive)
}

/// A raw MQTT 5 CONNECT (clean start, client id "raw") asking keepalive `secs`.
fn raw_connect(secs: u16) -> Vec<u8> {
    let mut v = vec![0x10, 16, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02];
    v.extend_from_slice(&secs.to_be_bytes());
    v.extend_from_slice(&[0, 0, 3, b'r', b'a', b'w']);
    v
}

/// Connects raw, asking keepalive `secs`, then stays silent: what the
/// broker sent until it closed the connection (20 s at most), and when.
async fn silent_client(port: u16, secs: u16) -> (Vec<u8>, Duration) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&raw_connect(secs)).await.unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the broker did not close the silent connection");
    (got, start.elapsed())
}

/// Decodes the CONNACK at the start of `got`, and what follows it.
fn split_connack(got: &[u8]) -> (ConnAck, BytesMut) {
    let mut buf = BytesMut::from(got);
    match Packet::read(&mut buf, None) {
        Ok(Packet::ConnAck(ack)) => (ack, buf),
        other => panic!("expected a CONNACK: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_connack_lowers_the_keepalive_to_max_keepalive_and_the_broker_holds_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start_with_toml(dir.path(), "[mqtt]\nmax_keepalive = 5\n");

    // The broker enforces the maximum, not what the client asked: a raw
    // client asking 60 s and then silent is dropped after 1.5 x 5 s, with
    // DISCONNECT 0x8D (keep alive timeout).
    let silent = tokio::spawn(silent_client(b.mqtt_port, 60));

    // Within the maximum: no Server Keep Alive.
    let (ack, _c, _rx) = connect_v5(b.mqtt_port, "within", 5).await;
    assert_eq!(server_keep_alive(&ack), None);

    // Above it: told the maximum; rumqttc then pings at that pace, so the
    // connection outlives 1.5x the maximum.
    let (ack, c, mut rx) = connect_v5(b.mqtt_port, "above", 60).await;
    assert_eq!(server_keep_alive(&ack), Some(5));
    c.subscribe("k", QoS::AtLeastOnce).await.unwrap();
    expect(&mut rx, |p| matches!(p, Packet::SubAck(_))).await;
    tokio::time::sleep(Duration::from_secs(9)).await;
    c.publish("k", QoS::AtLeastOnce, false, "still here").await.unwrap();
    assert_eq!(next_publish(&mut rx).await.payload, "still here");

    let (got, waited) = silent.await.unwrap();
    let (ack, rest) = split_connack(&got);
    assert_eq!(server_keep_alive(&ack), Some(5));
    assert!(waited >= Duration::from_millis(7400), "closed after {waited:?}");
    // DISCONNECT (0xe0), remaining length, reason code.
    assert_eq!((rest.first(), rest.get(2)), (Some(&0xe0), Some(&0x8d)), "{got:02x?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_max_keepalive_lowers_only_keepalive_zero() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (ack, _c, _rx) = connect_v5(b.mqtt_port, "long", 65535).await;
    assert_eq!(server_keep_alive(&ack), None);
    // Keepalive 0 (never time out) becomes 65535 s, as with mosquitto.
    let mut s = TcpStream::connect(("127.0.0.1", b.mqtt_port)).await.unwrap();
    s.write_all(&raw_connect(0)).await.unwrap();
    let mut got = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut got)).await.expect("a CONNACK").unwrap();
    let (ack, _) = split_connack(&got[..n]);
    assert_eq!(server_keep_alive(&ack), Some(65535));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt311_clients_asking_more_than_max_keepalive_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start_with_toml(dir.path(), "[mqtt]\nmax_keepalive = 30\n");
    let connect = |secs: u64| {
        let mut opts = rumqttc::MqttOptions::new("v311", "127.0.0.1", b.mqtt_port);
        opts.set_keep_alive(Duration::from_secs(secs));
        let (_c, mut el) = rumqttc::AsyncClient::new(opts, 10);
        async move {
            let first = tokio::time::timeout(Duration::from_secs(10), el.poll()).await;
            match first.expect("an answer within 10 s") {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(a))) => Ok(a.code),
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => Err(code),
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    assert_eq!(connect(60).await, Err(rumqttc::ConnectReturnCode::BadClientId));
    assert_eq!(connect(30).await, Ok(rumqttc::ConnectReturnCode::Success));
    // Keepalive 0 (never ping) is let in: 3.1.1 cannot be told a value.
    assert_eq!(connect(0).await, Ok(rumqttc::ConnectReturnCode::Success));
}
