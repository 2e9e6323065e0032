//! STOMP over WebSocket at path /stomp (on `--stomp-ws-listen`, on the
//! MQTT WebSocket listener beside /mqtt, on the HTTP listener) with a raw
//! RFC 6455 client: frames in text and binary messages, to and from a TCP
//! STOMP client.

use std::time::Duration;

use crate::stomp_support::Stomp;
use crate::support::{self, Broker};

/// One masked client WebSocket frame (FIN set).
pub(crate) fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut out = vec![0x80 | opcode];
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

/// Reads server frames until the STOMP decoder has a frame (heart-beats skipped).
pub(crate) fn ws_stomp_frame(
    s: &mut impl std::io::Read,
    data: &mut bytes::BytesMut,
    dec: &mut ferry_stomp::codec::Decoder,
) -> ferry_stomp::Frame {
    loop {
        while let Some(item) = dec.decode(data).expect("valid STOMP inside the WebSocket") {
            if let ferry_stomp::codec::Item::Frame(f) = item {
                return f;
            }
        }
        let mut h = [0u8; 2];
        s.read_exact(&mut h).expect("a WebSocket frame within 10 s");
        assert_eq!(h[0] & 0x0f, 2, "binary frames");
        assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
        let len = match h[1] {
            126 => {
                let mut l = [0u8; 2];
                s.read_exact(&mut l).unwrap();
                usize::from(u16::from_be_bytes(l))
            }
            127 => {
                let mut l = [0u8; 8];
                s.read_exact(&mut l).unwrap();
                u64::from_be_bytes(l) as usize
            }
            n => usize::from(n),
        };
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).unwrap();
        data.extend_from_slice(&payload);
    }
}

#[test]
fn stomp_over_websocket_in_text_frames() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let ws_port = support::free_port();
    let b = Broker::start_with(dir.path(), &["--stomp-ws-listen", &format!("127.0.0.1:{ws_port}")]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", ws_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"GET /stomp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v10.stomp, v11.stomp, v12.stomp\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("Sec-WebSocket-Protocol: v12.stomp\r\n"), "{head}");
    // stomp.js style: one frame per text message.
    s.write_all(&ws_frame(1, b"CONNECT\naccept-version:1.2\nhost:/\n\n\0")).unwrap();
    let (mut data, mut dec) =
        (bytes::BytesMut::new(), ferry_stomp::codec::Decoder::new(ferry_stomp::Version::V1_2, Default::default()));
    assert_eq!(ws_stomp_frame(&mut s, &mut data, &mut dec).command, "CONNECTED");
    s.write_all(&ws_frame(1, b"SUBSCRIBE\nid:0\ndestination:/queue/wsq\nreceipt:r1\n\n\0")).unwrap();
    assert_eq!(ws_stomp_frame(&mut s, &mut data, &mut dec).header("receipt-id"), Some("r1"));
    // A TCP client sends; the WebSocket client receives.
    let mut tcp = Stomp::connect(&b);
    tcp.send("/queue/wsq", b"over the web", &[]);
    let m = ws_stomp_frame(&mut s, &mut data, &mut dec);
    assert_eq!((m.command.as_str(), &m.body[..]), ("MESSAGE", &b"over the web"[..]));
    // And the other way, in a binary message.
    tcp.subscribe("t", "/queue/back", &[]);
    s.write_all(&ws_frame(2, b"SEND\ndestination:/queue/back\ncontent-length:4\n\nb\0ck\0")).unwrap();
    assert_eq!(&tcp.message().body[..], b"b\0ck");
    // Anything but /stomp is refused.
    let mut other = std::net::TcpStream::connect(("127.0.0.1", ws_port)).unwrap();
    other.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    other.write_all(b"GET /mqtt HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n").unwrap();
    let mut answer = String::new();
    other.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
}

/// Opens a WebSocket on `port` at /stomp; returns the socket once the 101
/// answer (which must agree on v12.stomp) is read.
fn ws_connect(port: u16) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    ws_upgrade(&mut s);
    s
}

/// The opening handshake at /stomp on `s` (plain or TLS): sends the
/// request and reads the 101 answer, which must agree on v12.stomp.
pub(crate) fn ws_upgrade(s: &mut (impl std::io::Read + std::io::Write)) {
    s.write_all(
        b"GET /stomp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v11.stomp, v12.stomp\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "{head}");
    assert!(head.contains("sec-websocket-protocol: v12.stomp\r\n"), "{head}");
}

/// The same STOMP front-end answers at /stomp on the MQTT WebSocket
/// listener (MQTT still at /mqtt) and on the HTTP listener.
#[test]
fn stomp_at_its_path_on_the_mqtt_websocket_and_http_listeners() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut tcp = Stomp::connect(&b);
    tcp.subscribe("t", "/queue/shared-ws", &[]);
    for (port, what) in [(b.mqtt_ws_port, "mqtt websocket"), (b.http_port, "http")] {
        let mut s = ws_connect(port);
        s.write_all(&ws_frame(1, b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\0")).unwrap();
        let (mut data, mut dec) =
            (bytes::BytesMut::new(), ferry_stomp::codec::Decoder::new(ferry_stomp::Version::V1_2, Default::default()));
        assert_eq!(ws_stomp_frame(&mut s, &mut data, &mut dec).command, "CONNECTED", "{what}");
        let send = format!("SEND\ndestination:/queue/shared-ws\nreceipt:r\n\nvia {what}\0");
        s.write_all(&ws_frame(1, send.as_bytes())).unwrap();
        assert_eq!(ws_stomp_frame(&mut s, &mut data, &mut dec).header("receipt-id"), Some("r"), "{what}");
        assert_eq!(tcp.message().body, format!("via {what}").as_bytes(), "{what}");
    }
    // MQTT keeps its path on the shared listener: a CONNECT over /mqtt gets a CONNACK.
    let mut m = std::net::TcpStream::connect(("127.0.0.1", b.mqtt_ws_port)).unwrap();
    m.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    m.write_all(
        b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
    )
    .unwrap();
    let connect = [0x10, 0x0d, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 30, 0, 1, b'c'];
    m.write_all(&ws_frame(2, &connect)).unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.windows(2).any(|w| w == [0x20, 0x02]) {
        std::io::Read::read_exact(&mut m, &mut byte).expect("a CONNACK over /mqtt");
        got.push(byte[0]);
    }
}

/// Bad input over WebSocket: garbage STOMP inside a valid message gets an
/// ERROR frame and a close; a broken WebSocket frame (unmasked, as only a
/// server may send) and a message with a gigantic length close the
/// connection. Other clients, over WebSocket and TCP, go on.
#[test]
fn bad_input_over_websocket_closes_only_that_connection() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut healthy = ws_connect(b.mqtt_ws_port);
    healthy.write_all(&ws_frame(1, b"CONNECT\naccept-version:1.2\nhost:/\n\n\0")).unwrap();
    let (mut data, mut dec) =
        (bytes::BytesMut::new(), ferry_stomp::codec::Decoder::new(ferry_stomp::Version::V1_2, Default::default()));
    assert_eq!(ws_stomp_frame(&mut healthy, &mut data, &mut dec).command, "CONNECTED");

    // Reads what the server still sends until it closes (bounded by the read timeout).
    let until_closed = |s: &mut std::net::TcpStream| {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return (got, true),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => return (got, false),
            }
        }
    };
    // Not STOMP at all, after a good CONNECT.
    let mut garbage = ws_connect(b.mqtt_ws_port);
    garbage.write_all(&ws_frame(1, b"CONNECT\naccept-version:1.2\nhost:/\n\n\0")).unwrap();
    garbage.write_all(&ws_frame(2, b"\xff\xfe\x00GARBAGE\nno-colon-here\n\n\0")).unwrap();
    let (got, closed) = until_closed(&mut garbage);
    assert!(closed, "closed after the ERROR frame");
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("CONNECTED") && text.contains("ERROR"), "{text}");
    // An unmasked client frame breaks RFC 6455.
    let mut unmasked = ws_connect(b.mqtt_ws_port);
    unmasked.write_all(&[0x82, 0x05, b'h', b'e', b'l', b'l', b'o']).unwrap();
    assert!(until_closed(&mut unmasked).1, "an unmasked frame closes the connection");
    // A frame claiming 2^62 bytes.
    let mut huge = ws_connect(b.mqtt_ws_port);
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&(1u64 << 62).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    huge.write_all(&frame).unwrap();
    assert!(until_closed(&mut huge).1, "a gigantic length closes the connection");

    // The others are still served.
    healthy.write_all(&ws_frame(1, b"SEND\ndestination:/queue/after-garbage\nreceipt:ok\n\nstill\0")).unwrap();
    assert_eq!(ws_stomp_frame(&mut healthy, &mut data, &mut dec).header("receipt-id"), Some("ok"));
    let mut tcp = Stomp::connect(&b);
    tcp.subscribe("a", "/queue/after-garbage", &[]);
    assert_eq!(&tcp.message().body[..], b"still");
}
