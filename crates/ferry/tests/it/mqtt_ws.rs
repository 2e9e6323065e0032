//! MQTT over WebSocket (`--mqtt-ws-listen`, path /mqtt) with a raw
//! RFC 6455 client: MQTT packets split over frames and merged into one,
//! routed to and from a TCP client; bad handshakes get an HTTP status.

use std::time::Duration;

use rumqttc::{Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::mqtt_clients::{client, expect, publishes};
use crate::support::Broker;

/// Sends an opening handshake; returns the stream and the response head.
async fn handshake(port: u16, path: &str, protocol: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte)).await.unwrap().unwrap();
        if n == 0 {
            break;
        }
        head.push(byte[0]);
    }
    (s, String::from_utf8(head).unwrap())
}

/// One masked client frame.
fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Reads server frames until `n` payload bytes of binary data arrived.
async fn read_data(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut data = Vec::new();
    while data.len() < n {
        let mut h = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut h)).await.unwrap().unwrap();
        assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
        let len = match h[1] {
            126 => usize::from(s.read_u16().await.unwrap()),
            127 => s.read_u64().await.unwrap() as usize,
            n => usize::from(n),
        };
        let mut payload = vec![0; len];
        s.read_exact(&mut payload).await.unwrap();
        assert_eq!(h[0], 0x82, "a final binary frame");
        data.extend_from_slice(&payload);
    }
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_websocket_with_packets_split_and_merged_across_frames() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (mut ws, head) = handshake(b.mqtt_ws_port, "/mqtt", "mqtt").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), "{head}");
    assert!(head.contains("Sec-WebSocket-Protocol: mqtt\r\n"), "{head}");

    // CONNECT (3.1.1, clean, id "ws") and SUBSCRIBE ws/# QoS 1, cut into
    // frames at odd places, with a ping in between.
    let mut bytes = vec![0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 2, b'w', b's'];
    bytes.extend_from_slice(&[0x82, 9, 0, 1, 0, 4, b'w', b's', b'/', b'#', 1]);
    let mut wire = frame(2, false, &bytes[..3]);
    wire.extend(frame(0, false, &bytes[3..4]));
    wire.extend(frame(9, true, b"hi"));
    wire.extend(frame(0, true, &bytes[4..19]));
    wire.extend(frame(2, true, &bytes[19..]));
    for chunk in wire.chunks(5) {
        ws.write_all(chunk).await.unwrap();
        ws.flush().await.unwrap();
    }
    // The pong comes first (answered as soon as read), then CONNACK and SUBACK.
    let mut pong = [0u8; 4];
    ws.read_exact(&mut pong).await.unwrap();
    assert_eq!(pong, [0x8a, 2, b'h', b'i']);
    assert_eq!(read_data(&mut ws, 9).await, [0x20, 2, 0, 0, 0x90, 3, 0, 1, 1]);

    // A TCP client publishes to the WebSocket client and the other way round.
    let (tcp, mut trx) = client(b.mqtt_port, "tcp", true, |o| {
        o.set_max_packet_size(1 << 20, 1 << 20);
    })
    .await;
    tcp.subscribe("back/#", QoS::AtLeastOnce).await.unwrap();
    expect(&mut trx, |p| matches!(p, Packet::SubAck(_))).await;
    tcp.publish("ws/x", QoS::AtLeastOnce, false, "hello").await.unwrap();
    let publish = read_data(&mut ws, 2 + 2 + 4 + 2 + 5).await;
    assert_eq!(&publish[..8], &[0x32, 13, 0, 4, b'w', b's', b'/', b'x']);
    assert_eq!(&publish[10..], b"hello");
    // PUBACK and a QoS 0 PUBLISH in one frame.
    let mut both = vec![0x40, 2, publish[8], publish[9]];
    both.extend_from_slice(&[0x30, 8, 0, 4, b'b', b'a', b'c', b'k', b'!', b'!']);
    ws.write_all(&frame(2, true, &both)).await.unwrap();
    assert_eq!(publishes(&mut trx, 1).await, vec![("back".into(), "!!".into(), QoS::AtMostOnce, false)]);

    // A message larger than one frame (writes are cut at 64 KiB).
    let big = vec![b'z'; 100_000];
    tcp.publish("ws/big", QoS::AtMostOnce, false, big.clone()).await.unwrap();
    let p = read_data(&mut ws, 1 + 3 + 2 + 6 + big.len()).await;
    assert_eq!(&p[..12], &[0x30, 0xa8, 0x8d, 0x06, 0, 6, b'w', b's', b'/', b'b', b'i', b'g']);
    assert!(p[12..] == big[..]);

    // A close frame ends the connection with a close frame back.
    ws.write_all(&frame(8, true, &1000u16.to_be_bytes())).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), ws.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert_eq!(rest, [0x88, 2, 0x03, 0xe8]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_websocket_handshakes_get_an_http_error_and_others_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (tcp, mut trx) = client(b.mqtt_port, "bystander", true, |_| {}).await;
    let (_, head) = handshake(b.mqtt_ws_port, "/other", "mqtt").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (_, head) = handshake(b.mqtt_ws_port, "/mqtt", "chat").await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let mut s = TcpStream::connect(("127.0.0.1", b.mqtt_ws_port)).await.unwrap();
    s.write_all(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    // What counts is the response; the close after it may come as a reset.
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got).await;
    assert!(got.starts_with(b"HTTP/1.1 426"), "{}", String::from_utf8_lossy(&got));
    // Garbage that never ends a request: refused once past 8 KiB.
    let mut s = TcpStream::connect(("127.0.0.1", b.mqtt_ws_port)).await.unwrap();
    let _ = s.write_all(&[b'x'; 9000]).await;
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got).await;
    assert!(got.starts_with(b"HTTP/1.1 431"), "{}", String::from_utf8_lossy(&got));
    // A text frame after a good handshake: close 1003.
    let (mut ws, head) = handshake(b.mqtt_ws_port, "/mqtt", "mqtt").await;
    assert!(head.starts_with("HTTP/1.1 101"));
    ws.write_all(&frame(1, true, b"{}")).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), ws.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert_eq!(rest, [0x88, 2, 0x03, 0xeb]);
    tcp.publish("still/here", QoS::AtLeastOnce, false, "x").await.unwrap();
    expect(&mut trx, |p| matches!(p, Packet::PubAck(_))).await;
}
