//! A long-polling fetch holds up neither other connections nor the order of
//! responses on its own connection, and wakes when data arrives.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ferry_log::compression::Compression;
use ferry_log::records::{NewRecord, build_batch};

use crate::support::{Broker, create_topic};

fn send(s: &mut TcpStream, key: i16, version: i16, correlation: i32, body: &[u8]) {
    let mut frame = Vec::new();
    frame.extend_from_slice(&key.to_be_bytes());
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(&correlation.to_be_bytes());
    frame.extend_from_slice(&(-1i16).to_be_bytes());
    frame.extend_from_slice(body);
    s.write_all(&(frame.len() as i32).to_be_bytes()).unwrap();
    s.write_all(&frame).unwrap();
}

/// Reads one response; returns (correlation id, body).
fn receive(s: &mut TcpStream) -> (i32, Vec<u8>) {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut resp = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut resp).unwrap();
    (i32::from_be_bytes(resp[..4].try_into().unwrap()), resp[4..].to_vec())
}

fn topic_partition(body: &mut Vec<u8>, topic: &str) {
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&(topic.len() as i16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&0i32.to_be_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_keeps_order_and_blocks_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    create_topic(&broker, "lp", 1, &[]).await;
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", broker.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    };
    let (mut a, mut b) = (connect(), connect());

    // A: Fetch v4 from the empty partition, waiting up to 30 s for 1 byte,
    // then an ApiVersions pipelined behind it.
    let mut fetch = Vec::new();
    fetch.extend_from_slice(&(-1i32).to_be_bytes()); // replica id
    fetch.extend_from_slice(&30_000i32.to_be_bytes()); // max wait
    fetch.extend_from_slice(&1i32.to_be_bytes()); // min bytes
    fetch.extend_from_slice(&(1i32 << 20).to_be_bytes()); // max bytes
    fetch.push(0); // isolation level
    topic_partition(&mut fetch, "lp");
    fetch.extend_from_slice(&0i64.to_be_bytes()); // fetch offset
    fetch.extend_from_slice(&(1i32 << 20).to_be_bytes()); // partition max bytes
    send(&mut a, 1, 4, 1, &fetch);
    send(&mut a, 18, 0, 2, &[]);

    // B is served while A's fetch waits.
    send(&mut b, 18, 0, 10, &[]);
    assert_eq!(receive(&mut b).0, 10);
    // A's ApiVersions waits behind its fetch: nothing to read on A yet.
    a.set_nonblocking(true).unwrap();
    let mut probe = [0u8; 1];
    assert_eq!(a.read(&mut probe).unwrap_err().kind(), ErrorKind::WouldBlock);
    a.set_nonblocking(false).unwrap();

    // B produces: A's fetch wakes with the record, then its ApiVersions answer follows.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let rec = NewRecord { key: None, value: Some(b"wake"), headers: vec![], timestamp: now };
    let records = build_batch(&[rec], Compression::None, -1, -1, -1).unwrap();
    let mut produce = Vec::new();
    produce.extend_from_slice(&(-1i16).to_be_bytes());
    produce.extend_from_slice(&(-1i16).to_be_bytes()); // acks=all
    produce.extend_from_slice(&5000i32.to_be_bytes());
    topic_partition(&mut produce, "lp");
    produce.extend_from_slice(&(records.len() as i32).to_be_bytes());
    produce.extend_from_slice(&records);
    send(&mut b, 0, 3, 11, &produce);
    assert_eq!(receive(&mut b).0, 11);

    let (correlation, body) = receive(&mut a);
    assert_eq!(correlation, 1, "the fetch answers first");
    assert!(body.windows(4).any(|w| w == b"wake"), "the fetch carries the new record");
    assert_eq!(receive(&mut a).0, 2, "then the request pipelined behind it");
}
