//! Malformed packets and protocol violations on raw sockets: each gets the
//! connection closed (MQTT 5: after a DISCONNECT with the right reason
//! code), and a well-behaved client keeps being served throughout.

use std::time::Duration;

use rumqttc::{Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::mqtt_clients::{client, expect, publishes};
use crate::support::Broker;

/// MQTT 5 CONNECT, clean start, keepalive `ka`, client id "raw".
fn connect_v5(ka: u16) -> Vec<u8> {
    let mut v = vec![0x10, 16, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02];
    v.extend_from_slice(&ka.to_be_bytes());
    v.extend_from_slice(&[0, 0, 3, b'r', b'a', b'w']);
    // remaining length: 2+4 name, 1 level, 1 flags, 2 ka, 1 props, 2+3 id = 16
    v
}

/// Sends `connect` then `bad`; returns everything the broker sent back
/// until it closed the connection.
async fn exchange(port: u16, connect: &[u8], bad: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(connect).await.unwrap();
    let _ = s.write_all(bad).await;
    let mut got = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    assert!(r.is_ok(), "the broker did not close the connection");
    got
}

/// The reason code of the DISCONNECT after the CONNACK, if any.
fn disconnect_reason(got: &[u8]) -> Option<u8> {
    let connack_len = 2 + usize::from(*got.get(1)?);
    let rest = got.get(connack_len..)?;
    (rest.first() == Some(&0xe0)).then(|| rest.get(2).copied().unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn violations_disconnect_with_their_reason_and_others_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (good, mut grx) = client(b.mqtt_port, "good", true, |_| {}).await;
    good.subscribe("t", QoS::AtLeastOnce).await.unwrap();
    expect(&mut grx, |p| matches!(p, Packet::SubAck(_))).await;
    let cases: Vec<(&str, Vec<u8>, u8)> = vec![
        ("second CONNECT", connect_v5(30), 0x82),
        ("reserved flag bits on SUBSCRIBE", vec![0x80, 0x07, 0, 1, 0, 0, 1, b't', 0], 0x81),
        ("bad UTF-8 topic", vec![0x30, 0x05, 0, 2, 0xc3, 0x28, 0], 0x81),
        ("remaining length past the limit", vec![0x30, 0xff, 0xff, 0xff, 0x7f], 0x95),
        ("remaining length of five bytes", vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x01], 0x81),
        ("QoS 3", vec![0x36, 0x05, 0, 1, b't', 0, 1], 0x81),
        ("wildcard in a topic name", vec![0x30, 0x04, 0, 1, b'#', 0], 0x90),
        ("topic alias 0", vec![0x30, 0x07, 0, 1, b't', 3, 0x23, 0, 0], 0x94),
        ("PUBREL with flags 0", vec![0x60, 0x02, 0, 1], 0x81),
    ];
    for (what, bad, code) in cases {
        let got = exchange(b.mqtt_port, &connect_v5(30), &bad).await;
        assert_eq!(got.first(), Some(&0x20), "{what}: CONNACK first");
        assert_eq!(disconnect_reason(&got), Some(code), "{what}: {got:02x?}");
        good.publish("t", QoS::AtLeastOnce, false, what).await.unwrap();
        assert_eq!(publishes(&mut grx, 1).await[0].1, what, "the good client still works after: {what}");
    }
    // 3.1.1 just closes: no DISCONNECT from a server in that version.
    let v311 = [0x10, 0x0f, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30, 0, 3, b'r', b'a', b'w'];
    let got = exchange(b.mqtt_port, &v311, &v311).await;
    assert_eq!(got, vec![0x20, 0x02, 0x00, 0x00]);
    // Garbage instead of CONNECT, and an unknown protocol level.
    let got = exchange(b.mqtt_port, &[0x30, 0x02, 0, 0], &[]).await;
    assert!(got.is_empty());
    let v9 = [0x10, 0x0c, 0, 4, b'M', b'Q', b'T', b'T', 9, 0x02, 0, 30, 0, 0];
    assert_eq!(exchange(b.mqtt_port, &v9, &[]).await, vec![0x20, 0x02, 0x00, 0x01]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_dropped_after_one_and_a_half_keepalives() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let start = std::time::Instant::now();
    let got = exchange(b.mqtt_port, &connect_v5(1), &[]).await;
    let waited = start.elapsed();
    assert_eq!(disconnect_reason(&got), Some(0x8d), "{got:02x?}");
    assert!(waited >= Duration::from_millis(1400), "closed after {waited:?}");
}
