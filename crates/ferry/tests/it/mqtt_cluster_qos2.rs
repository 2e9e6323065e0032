//! QoS 2 exchanges half done survive the death of the client's node
//! (issue #17): raw MQTT 3.1.1 clients with persistent sessions stop at
//! the exact step, node 1 is killed with SIGKILL, they resume on node 2.
//! - A publisher that got PUBREC and resends its PUBLISH (DUP) to node 2
//!   gets PUBREC again without the message being routed a second time,
//!   then PUBCOMP for its PUBREL.
//! - A subscriber that PUBREC'd a message and got PUBREL gets that PUBREL
//!   again on node 2 (never the message), and new messages after it.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cluster_support::Cluster;
use crate::support::watchdog;

/// CONNECT: MQTT 3.1.1, clean session 0, keepalive 60, client id `id`.
fn connect_packet(id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x00, 0, 60];
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id.as_bytes());
    let mut p = vec![0x10, body.len() as u8];
    p.extend_from_slice(&body);
    p
}

/// A persistent session's connection through `port` and whether its
/// session was present; a refusal (server unavailable while the metadata
/// cannot record the session: an election after the kill) is tried again,
/// for 30 s at most.
async fn connect(port: u16, id: &str) -> (TcpStream, bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await {
            s.write_all(&connect_packet(id)).await.unwrap();
            if let Some((0x20, ack)) = packet(&mut s).await
                && ack[1] == 0
            {
                return (s, ack[0] & 1 == 1);
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "{id} could not connect through port {port}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The next packet (first byte, body), `None` if the connection closed;
/// 10 s at most.
async fn packet(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut first = [0u8; 1];
        s.read_exact(&mut first).await.ok()?;
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.ok()?;
            len |= usize::from(b[0] & 0x7f) << shift;
            shift += 7;
            if b[0] & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.ok()?;
        Some((first[0], body))
    })
    .await
    .unwrap_or(None)
}

async fn expect(s: &mut TcpStream, what: &str) -> (u8, Vec<u8>) {
    packet(s).await.unwrap_or_else(|| panic!("{what}: the connection closed or stayed silent"))
}

/// PUBLISH QoS 2 to `topic` with packet id `pid`.
fn publish(dup: bool, topic: &str, pid: u16, payload: &[u8]) -> Vec<u8> {
    let len = 2 + topic.len() + 2 + payload.len();
    let mut p = vec![if dup { 0x3c } else { 0x34 }, len as u8];
    p.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    p.extend_from_slice(topic.as_bytes());
    p.extend_from_slice(&pid.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// A PUBLISH's (packet id, payload); topics here are `rel/x`.
fn published(body: &[u8]) -> (u16, Vec<u8>) {
    let topic = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let at = 2 + topic;
    (u16::from_be_bytes([body[at], body[at + 1]]), body[at + 2..].to_vec())
}

fn ack(kind: u8, pid: u16) -> Vec<u8> {
    let p = pid.to_be_bytes();
    vec![kind, 2, p[0], p[1]]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_exchanges_half_done_resume_on_another_node_after_a_kill() {
    let _guard = watchdog("mqtt_cluster_qos2", Duration::from_secs(240));
    let mut c = Cluster::start(3);
    c.wait_for_brokers(1, &[1, 2, 3]);
    let (one, two) = (c.node(1).mqtt_port, c.node(2).mqtt_port);

    // The subscriber "rel" (QoS 2) and the publisher "pub2", both on node 1.
    let (mut sub, _) = connect(one, "rel").await;
    sub.write_all(&[0x82, 10, 0, 1, 0, 5, b'r', b'e', b'l', b'/', b'#', 2]).await.unwrap();
    assert_eq!(expect(&mut sub, "SUBACK").await, (0x90, vec![0, 1, 2]));
    let (mut publ, _) = connect(one, "pub2").await;
    publ.write_all(&publish(false, "rel/x", 7, b"once")).await.unwrap();
    assert_eq!(expect(&mut publ, "PUBREC").await, (0x50, vec![0, 7]));

    // The subscriber gets it, PUBRECs it and gets PUBREL; neither client
    // goes further before node 1 dies.
    let (kind, body) = expect(&mut sub, "PUBLISH once").await;
    assert_eq!(kind, 0x34, "QoS 2, first delivery");
    let (pid, payload) = published(&body);
    assert_eq!(payload, b"once");
    sub.write_all(&ack(0x50, pid)).await.unwrap();
    assert_eq!(expect(&mut sub, "PUBREL").await, (0x62, pid.to_be_bytes().to_vec()));
    c.kill9(1);

    // The publisher never saw PUBREC (as far as node 2 can tell) and sends
    // "once" again: acknowledged, not routed again; then released.
    let (mut publ, present) = connect(two, "pub2").await;
    assert!(present, "pub2's session resumed on node 2");
    publ.write_all(&publish(true, "rel/x", 7, b"once")).await.unwrap();
    assert_eq!(expect(&mut publ, "PUBREC for the resend").await, (0x50, vec![0, 7]));
    publ.write_all(&ack(0x62, 7)).await.unwrap();
    assert_eq!(expect(&mut publ, "PUBCOMP").await, (0x70, vec![0, 7]));

    // The subscriber on node 2: its PUBREL again first, never "once" again.
    let (mut sub, present) = connect(two, "rel").await;
    assert!(present, "rel's session resumed on node 2");
    assert_eq!(expect(&mut sub, "PUBREL again").await, (0x62, pid.to_be_bytes().to_vec()));
    sub.write_all(&ack(0x70, pid)).await.unwrap();
    publ.write_all(&publish(false, "rel/x", 8, b"after")).await.unwrap();
    assert_eq!(expect(&mut publ, "PUBREC for after").await, (0x50, vec![0, 8]));
    let (kind, body) = expect(&mut sub, "PUBLISH after").await;
    assert_eq!((kind, published(&body).1), (0x34, b"after".to_vec()), "the next message, not \"once\" again");
}
