//! Idempotent producers: retries are deduplicated, sequence gaps and old
//! epochs refused, and the state survives kill -9.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ferry_log::compression::Compression;
use ferry_log::records::{NewRecord, build_batch};
use rdkafka::producer::FutureRecord;

use crate::support::{Broker, consume_all, create_topic, producer};

fn batch(pid: i64, epoch: i16, seq: i32, value: &str) -> Vec<u8> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let r = NewRecord { key: None, value: Some(value.as_bytes()), headers: vec![], timestamp: now };
    build_batch(&[r], Compression::None, pid, epoch, seq).unwrap()
}

/// Produce v3 (acks=all) of one batch to partition 0; returns (error code, base offset).
fn produce(s: &mut TcpStream, topic: &str, records: &[u8]) -> (i16, i64) {
    let mut body = Vec::new();
    body.extend_from_slice(&(-1i16).to_be_bytes());
    body.extend_from_slice(&(-1i16).to_be_bytes());
    body.extend_from_slice(&5000i32.to_be_bytes());
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&(topic.len() as i16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&0i32.to_be_bytes());
    body.extend_from_slice(&(records.len() as i32).to_be_bytes());
    body.extend_from_slice(records);
    let resp = request(s, 0, 3, &body);
    let at = 4 + 2 + topic.len() + 4 + 4;
    (
        i16::from_be_bytes(resp[at..at + 2].try_into().unwrap()),
        i64::from_be_bytes(resp[at + 2..at + 10].try_into().unwrap()),
    )
}

/// InitProducerId v0 for an idempotent producer; returns (producer id, epoch).
fn init_producer_id(s: &mut TcpStream) -> (i64, i16) {
    let mut body = (-1i16).to_be_bytes().to_vec(); // transactional id: null
    body.extend_from_slice(&60000i32.to_be_bytes());
    let r = request(s, 22, 0, &body);
    assert_eq!(i16::from_be_bytes(r[4..6].try_into().unwrap()), 0);
    (i64::from_be_bytes(r[6..14].try_into().unwrap()), i16::from_be_bytes(r[14..16].try_into().unwrap()))
}

fn request(s: &mut TcpStream, key: i16, version: i16, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&key.to_be_bytes());
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(&1i32.to_be_bytes());
    frame.extend_from_slice(&(-1i16).to_be_bytes());
    frame.extend_from_slice(body);
    s.write_all(&(frame.len() as i32).to_be_bytes()).unwrap();
    s.write_all(&frame).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut resp = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut resp).unwrap();
    resp[4..].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_deduplicated_and_state_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path());
    create_topic(&broker, "idem", 1, &[]).await;
    let connect = |b: &Broker| {
        let s = TcpStream::connect(("127.0.0.1", b.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    let mut s = connect(&broker);
    let (pid, epoch) = init_producer_id(&mut s);
    assert!(pid >= 0 && epoch == 0);
    assert_eq!(produce(&mut s, "idem", &batch(pid, 0, 0, "a")), (0, 0));
    assert_eq!(produce(&mut s, "idem", &batch(pid, 0, 1, "b")), (0, 1));
    // A retry of the last batch: same offset, not appended again.
    assert_eq!(produce(&mut s, "idem", &batch(pid, 0, 1, "b")), (0, 1));
    // A gap: OUT_OF_ORDER_SEQUENCE_NUMBER (45).
    assert_eq!(produce(&mut s, "idem", &batch(pid, 0, 5, "x")).0, 45);
    // A newer epoch restarts at 0; then the old epoch is fenced (47).
    assert_eq!(produce(&mut s, "idem", &batch(pid, 1, 0, "c")), (0, 2));
    assert_eq!(produce(&mut s, "idem", &batch(pid, 0, 2, "y")).0, 47);

    // kill -9: the state comes back from the log (no snapshot was written).
    broker.kill9();
    broker.start_again();
    let mut s = connect(&broker);
    assert_eq!(produce(&mut s, "idem", &batch(pid, 1, 0, "c")), (0, 2), "retry after a crash is still a duplicate");
    assert_eq!(produce(&mut s, "idem", &batch(pid, 1, 2, "z")).0, 45);
    assert_eq!(produce(&mut s, "idem", &batch(pid, 1, 1, "d")), (0, 3));
    // And after a clean restart (from the snapshot).
    broker.restart();
    let mut s = connect(&broker);
    assert_eq!(produce(&mut s, "idem", &batch(pid, 1, 1, "d")), (0, 3));
    let (pid2, _) = init_producer_id(&mut s);
    assert!(pid2 > pid, "producer ids are not reused after restarts");
    let values: Vec<_> = consume_all(&broker, "idem", 1, 4).into_iter().map(|r| r.3).collect();
    assert_eq!(values, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]);
}

/// librdkafka with enable.idempotence=true.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_idempotent_producer_works() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    create_topic(&broker, "idem-rd", 3, &[]).await;
    let p = producer(&broker, &[("enable.idempotence", "true"), ("linger.ms", "2")]);
    let mut deliveries = Vec::new();
    for i in 0..20_000 {
        let v = format!("{i}");
        deliveries.push(p.send_result(FutureRecord::to("idem-rd").key(&v).payload(&v)).unwrap());
    }
    for d in deliveries {
        d.await.unwrap().unwrap();
    }
    let got = consume_all(&broker, "idem-rd", 3, 20_000);
    let mut values: Vec<u32> = got.iter().map(|r| std::str::from_utf8(&r.3).unwrap().parse().unwrap()).collect();
    values.sort_unstable();
    values.dedup();
    assert_eq!(values.len(), 20_000);
}
