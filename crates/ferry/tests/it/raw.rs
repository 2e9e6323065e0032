//! Kafka requests as raw bytes, for tests that need exact frames (bad
//! input, sequence numbers, pipelining) rather than a client's choices.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ferry_records::compression::Compression;
use ferry_records::records::{NewRecord, build_batch};

pub fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Sends a request with header v1 (key, version, correlation id, client id "test").
pub fn send(s: &mut TcpStream, key: i16, version: i16, correlation: i32, body: &[u8]) {
    let mut frame = Vec::new();
    frame.extend_from_slice(&key.to_be_bytes());
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(&correlation.to_be_bytes());
    string(&mut frame, "test");
    frame.extend_from_slice(body);
    s.write_all(&(frame.len() as i32).to_be_bytes()).unwrap();
    s.write_all(&frame).unwrap();
}

/// Reads one response: (correlation id, body after it).
pub fn receive(s: &mut TcpStream) -> (i32, Vec<u8>) {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut resp = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut resp).unwrap();
    (i32::from_be_bytes(resp[..4].try_into().unwrap()), resp[4..].to_vec())
}

/// `send` then `receive`, checking the correlation id.
pub fn request(s: &mut TcpStream, key: i16, version: i16, correlation: i32, body: &[u8]) -> Vec<u8> {
    send(s, key, version, correlation, body);
    let (got, body) = receive(s);
    assert_eq!(got, correlation);
    body
}

/// True once the broker has closed this connection.
pub fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

pub fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// One topic with one partition, as Produce and Fetch v3/v4 list them.
pub fn topic_partition(out: &mut Vec<u8>, topic: &str, partition: i32) {
    out.extend_from_slice(&1i32.to_be_bytes());
    string(out, topic);
    out.extend_from_slice(&1i32.to_be_bytes());
    out.extend_from_slice(&partition.to_be_bytes());
}

/// A Produce v3 body for one partition.
pub fn produce_v3(topic: &str, partition: i32, acks: i16, records: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(-1i16).to_be_bytes()); // transactional id: null
    b.extend_from_slice(&acks.to_be_bytes());
    b.extend_from_slice(&5000i32.to_be_bytes());
    topic_partition(&mut b, topic, partition);
    b.extend_from_slice(&(records.len() as i32).to_be_bytes());
    b.extend_from_slice(records);
    b
}

/// (error code, base offset) of the single partition of a Produce v3 response.
pub fn produce_result(resp: &[u8], topic: &str) -> (i16, i64) {
    let at = 4 + 2 + topic.len() + 4 + 4;
    (
        i16::from_be_bytes(resp[at..at + 2].try_into().unwrap()),
        i64::from_be_bytes(resp[at + 2..at + 10].try_into().unwrap()),
    )
}

/// A one-record batch stamped now, from an (idempotent if `pid` >= 0) producer.
pub fn batch(value: &str, pid: i64, epoch: i16, seq: i32) -> Vec<u8> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let r = NewRecord { key: None, value: Some(value.as_bytes()), headers: vec![], timestamp: now };
    build_batch(&[r], Compression::None, pid, epoch, seq).unwrap()
}
