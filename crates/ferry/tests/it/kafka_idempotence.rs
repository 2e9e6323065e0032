//! Idempotent producers: retries are deduplicated, sequence gaps and old
//! epochs refused, and the state survives kill -9.

use rdkafka::producer::FutureRecord;

use crate::raw::{connect, produce_result, produce_v3, request};
use crate::support::{Broker, consume_all, create_topic, producer};

fn batch(pid: i64, epoch: i16, seq: i32, value: &str) -> Vec<u8> {
    crate::raw::batch(value, pid, epoch, seq)
}

/// Produce v3 (acks=all) of one batch to partition 0: (error code, base offset).
fn produce(s: &mut std::net::TcpStream, topic: &str, records: &[u8]) -> (i16, i64) {
    produce_result(&request(s, 0, 3, 1, &produce_v3(topic, 0, -1, records)), topic)
}

/// InitProducerId v0 for an idempotent producer: (producer id, epoch).
fn init_producer_id(s: &mut std::net::TcpStream) -> (i64, i16) {
    let mut body = (-1i16).to_be_bytes().to_vec(); // transactional id: null
    body.extend_from_slice(&60000i32.to_be_bytes());
    let r = request(s, 22, 0, 2, &body);
    assert_eq!(i16::from_be_bytes(r[4..6].try_into().unwrap()), 0);
    (i64::from_be_bytes(r[6..14].try_into().unwrap()), i16::from_be_bytes(r[14..16].try_into().unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_deduplicated_and_state_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path());
    create_topic(&broker, "idem", 1, &[]).await;
    let mut s = connect(broker.port);
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
    let mut s = connect(broker.port);
    assert_eq!(produce(&mut s, "idem", &batch(pid, 1, 0, "c")), (0, 2), "retry after a crash is still a duplicate");
    assert_eq!(produce(&mut s, "idem", &batch(pid, 1, 2, "z")).0, 45);
    assert_eq!(produce(&mut s, "idem", &batch(pid, 1, 1, "d")), (0, 3));
    // And after a clean restart (from the snapshot).
    broker.restart();
    let mut s = connect(broker.port);
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
