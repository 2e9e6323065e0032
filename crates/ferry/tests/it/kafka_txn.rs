//! Exactly-once with librdkafka: transactions (commit, abort, fencing,
//! timeouts), read_committed readers, a consume-transform-produce loop
//! killed mid-transaction, the broker killed with kill -9 mid-transaction,
//! and idempotent retries provoked by a proxy that drops produce responses.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::support::{Broker, config, create_topic, free_port};

type TxnProducer = ThreadedProducer<DefaultProducerContext>;

const T: Duration = Duration::from_secs(30);

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

fn txn_producer(b: &Broker, id: &str, timeout_ms: u32) -> TxnProducer {
    let p: TxnProducer = config(b)
        .set("transactional.id", id)
        .set("transaction.timeout.ms", timeout_ms.to_string())
        .set("linger.ms", "2")
        .create()
        .expect("transactional producer");
    p.init_transactions(T).expect("init_transactions");
    p
}

fn send(p: &TxnProducer, topic: &str, values: impl IntoIterator<Item = String>) {
    for v in values {
        p.send(BaseRecord::to(topic).key(&v).payload(&v)).expect("enqueue");
    }
}

/// Every value in `topic` (partitions 0..n) under an isolation level, read
/// from the beginning until nothing arrives for a while after `expected`.
fn read_values(b: &Broker, topic: &str, partitions: i32, committed: bool, expected: usize) -> Vec<String> {
    let consumer: BaseConsumer = config(b)
        .set("group.id", "txn-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", if committed { "read_committed" } else { "read_uncommitted" })
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(m) => {
                let m = m.expect("consume");
                out.push(String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap());
                quiet_since = Instant::now();
            }
            None if out.len() >= expected && quiet_since.elapsed() > Duration::from_millis(1500) => break,
            None => {}
        }
    }
    out
}

fn range(prefix: &str, n: usize) -> impl Iterator<Item = String> + '_ {
    (0..n).map(move |i| format!("{prefix}-{i}"))
}

#[test]
fn aborted_transactions_are_invisible_to_read_committed_and_open_ones_hold_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    block_on(create_topic(&broker, "txn", 2, &[]));
    let p = txn_producer(&broker, "app-1", 60_000);
    p.begin_transaction().unwrap();
    send(&p, "txn", range("c1", 100));
    p.commit_transaction(T).unwrap();
    p.begin_transaction().unwrap();
    send(&p, "txn", range("ab", 100));
    p.flush(T).unwrap(); // written, then aborted
    p.abort_transaction(T).unwrap();
    p.begin_transaction().unwrap();
    send(&p, "txn", range("c2", 50));
    p.commit_transaction(T).unwrap();
    // An open transaction: its records are written but not yet decided.
    p.begin_transaction().unwrap();
    send(&p, "txn", range("open", 20));
    p.flush(T).unwrap();

    let committed = read_values(&broker, "txn", 2, true, 150);
    let mut expected: Vec<String> = range("c1", 100).chain(range("c2", 50)).collect();
    let mut got = committed.clone();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "read_committed sees committed records only, and not past the open transaction");
    let all = read_values(&broker, "txn", 2, false, 270);
    assert_eq!(all.len(), 270, "read_uncommitted sees aborted and open records too");

    p.commit_transaction(T).unwrap();
    let after = read_values(&broker, "txn", 2, true, 170);
    assert_eq!(after.len(), 170);
    assert_eq!(after.iter().filter(|v| v.starts_with("open-")).count(), 20);
    assert!(!after.iter().any(|v| v.starts_with("ab-")));
}

#[test]
fn a_second_producer_with_the_same_id_fences_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    block_on(create_topic(&broker, "fence", 1, &[]));
    let p1 = txn_producer(&broker, "app-f", 60_000);
    p1.begin_transaction().unwrap();
    send(&p1, "fence", range("zombie", 10));
    p1.flush(T).unwrap();
    // The new instance aborts the old one's transaction and fences it.
    let p2 = txn_producer(&broker, "app-f", 60_000);
    p1.commit_transaction(T).expect_err("the fenced producer cannot commit");
    p2.begin_transaction().unwrap();
    send(&p2, "fence", range("live", 10));
    p2.commit_transaction(T).unwrap();
    let got = read_values(&broker, "fence", 1, true, 10);
    assert_eq!(got, range("live", 10).collect::<Vec<_>>());
}

#[test]
fn a_hanging_transaction_times_out_and_is_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    block_on(create_topic(&broker, "hang", 1, &[]));
    let p = txn_producer(&broker, "app-h", 2_000);
    p.begin_transaction().unwrap();
    send(&p, "hang", range("hung", 5));
    p.flush(T).unwrap();
    // The producer goes silent; the coordinator aborts after 2 s, and
    // read_committed readers move on to what others commit.
    let other = txn_producer(&broker, "app-h2", 60_000);
    other.begin_transaction().unwrap();
    send(&other, "hang", range("later", 5));
    other.commit_transaction(T).unwrap();
    let got = read_values(&broker, "hang", 1, true, 5);
    assert_eq!(got, range("later", 5).collect::<Vec<_>>());
    assert!(p.commit_transaction(T).is_err(), "the timed-out transaction was aborted and its producer fenced");
}

#[test]
fn transactions_survive_a_broker_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path());
    block_on(create_topic(&broker, "crash", 1, &[]));
    {
        let p = txn_producer(&broker, "app-k", 3_000);
        p.begin_transaction().unwrap();
        send(&p, "crash", range("kept", 30));
        p.commit_transaction(T).unwrap();
        p.begin_transaction().unwrap();
        send(&p, "crash", range("aborted", 30));
        p.flush(T).unwrap();
        p.abort_transaction(T).unwrap();
        p.begin_transaction().unwrap();
        send(&p, "crash", range("open", 30));
        p.flush(T).unwrap();
        broker.kill9();
        // The producer dies with the broker's connection.
    }
    broker.start_again();
    // Committed and aborted outcomes survived; the open transaction is
    // aborted by its timeout, so read_committed readers are not stuck.
    let p = txn_producer(&broker, "app-k2", 60_000);
    p.begin_transaction().unwrap();
    send(&p, "crash", range("after", 10));
    p.commit_transaction(T).unwrap();
    let got = read_values(&broker, "crash", 1, true, 40);
    let expected: Vec<String> = range("kept", 30).chain(range("after", 10)).collect();
    assert_eq!(got, expected);
    assert_eq!(read_values(&broker, "crash", 1, false, 100).len(), 100);
}

/// A consume-transform-produce worker: reads `ctp-in` in group `ctp`,
/// writes `out-<value>` to `ctp-out` and the input offsets in the same
/// transaction. The test below runs it in a child process (itself, by name),
/// so that it can be killed with SIGKILL.
fn ctp_worker(bootstrap: String) {
    let stall_after: usize = std::env::var("FERRY_CTP_STALL_AFTER").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let total: usize = std::env::var("FERRY_CTP_TOTAL").unwrap().parse().unwrap();
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", &bootstrap).set("broker.address.family", "v4");
    let consumer: BaseConsumer = c
        .clone()
        .set("group.id", "ctp")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    consumer.subscribe(&["ctp-in"]).unwrap();
    let producer: TxnProducer = c
        .set("transactional.id", "ctp-worker")
        .set("transaction.timeout.ms", "60000")
        .set("linger.ms", "2")
        .create()
        .unwrap();
    producer.init_transactions(T).unwrap();
    let mut transactions = 0;
    let mut done = 0;
    loop {
        let mut batch = Vec::new();
        let deadline = Instant::now() + Duration::from_millis(300);
        while batch.len() < 50 && Instant::now() < deadline {
            if let Some(m) = consumer.poll(Duration::from_millis(50)) {
                let m = m.unwrap();
                batch.push((m.partition(), m.offset(), m.payload().unwrap().to_vec()));
            }
        }
        if batch.is_empty() {
            continue;
        }
        producer.begin_transaction().unwrap();
        let mut next: HashMap<i32, i64> = HashMap::new();
        for (partition, offset, value) in &batch {
            let out = format!("out-{}", String::from_utf8_lossy(value));
            producer.send(BaseRecord::to("ctp-out").key(&out).payload(&out)).unwrap();
            next.insert(*partition, offset + 1);
        }
        if stall_after > 0 && transactions == stall_after {
            producer.flush(T).unwrap();
            println!("ctp: stalled mid-transaction");
            std::io::stdout().flush().unwrap();
            std::thread::sleep(Duration::from_secs(600));
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &next {
            tpl.add_partition_offset("ctp-in", *p, Offset::Offset(*o)).unwrap();
        }
        producer.send_offsets_to_transaction(&tpl, &consumer.group_metadata().unwrap(), T).unwrap();
        producer.commit_transaction(T).unwrap();
        transactions += 1;
        done += batch.len();
        println!("ctp: committed {transactions} ({done} records)");
        std::io::stdout().flush().unwrap();
        // Finished when the group's committed offsets cover the input.
        let committed = consumer.committed(T).unwrap();
        let sum: i64 = committed.elements().iter().map(|e| e.offset().to_raw().unwrap_or(0).max(0)).sum();
        if sum as usize >= total {
            println!("ctp: done");
            return;
        }
    }
}

fn spawn_worker(broker: &Broker, stall_after: usize, total: usize) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([CTP_TEST, "--exact", "--nocapture", "--test-threads", "1"])
        .env("FERRY_CTP_BOOTSTRAP", broker.bootstrap())
        .env("FERRY_CTP_STALL_AFTER", stall_after.to_string())
        .env("FERRY_CTP_TOTAL", total.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn worker")
}

/// Waits for a worker's stdout line starting with `want`.
fn wait_for(child: &mut std::process::Child, want: &str) {
    let out = child.stdout.as_mut().unwrap();
    let mut lines = BufReader::new(out).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        match lines.next() {
            Some(Ok(line)) if line.starts_with(want) => return,
            Some(Ok(_)) => {}
            _ => break,
        }
    }
    panic!("worker never printed {want:?}");
}

/// The test's name: it runs itself as the worker child process.
const CTP_TEST: &str = "kafka_txn::consume_transform_produce_is_exactly_once_across_a_kill";

#[test]
fn consume_transform_produce_is_exactly_once_across_a_kill() {
    // In the child process (started below with FERRY_CTP_BOOTSTRAP set),
    // this test is the worker.
    const N: usize = 2_000;
    if let Ok(bootstrap) = std::env::var("FERRY_CTP_BOOTSTRAP") {
        return ctp_worker(bootstrap);
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    block_on(create_topic(&broker, "ctp-in", 3, &[]));
    block_on(create_topic(&broker, "ctp-out", 3, &[]));
    block_on(crate::support::produce_values(&broker, "ctp-in", 0..N as u32));

    // The first worker commits a few transactions, then is killed with
    // SIGKILL in the middle of one (its output written, not committed).
    let mut first = spawn_worker(&broker, 5, N);
    wait_for(&mut first, "ctp: stalled mid-transaction");
    first.kill().unwrap();
    first.wait().unwrap();
    // Its replacement fences it, aborts the open transaction, and resumes
    // from the offsets committed with the last transaction.
    let mut second = spawn_worker(&broker, 0, N);
    wait_for(&mut second, "ctp: done");
    assert!(second.wait().unwrap().success());

    let out = read_values(&broker, "ctp-out", 3, true, N);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for v in &out {
        *counts.entry(v.clone()).or_default() += 1;
    }
    let dupes: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dupes.is_empty(), "duplicates in read_committed output: {:?}", &dupes[..dupes.len().min(5)]);
    assert_eq!(counts.len(), N, "every input record has exactly one result");
    assert!((0..N).all(|i| counts.contains_key(&format!("out-{i}"))));
    // The killed transaction's records are in the log, but aborted.
    assert!(read_values(&broker, "ctp-out", 3, false, N).len() > N);
}

/// A TCP proxy that forwards Kafka traffic but, for the first `drops`
/// produce responses it sees (one in `every`), drops the response and
/// closes the connection, so the client must retry a request the broker
/// already applied.
struct DroppingProxy {
    port: u16,
    dropped: Arc<AtomicUsize>,
}

impl DroppingProxy {
    fn start(port: u16, upstream: u16, drops: usize, every: usize) -> DroppingProxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let dropped = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(AtomicUsize::new(0));
        let d = dropped.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                let produce_ids = Arc::new(Mutex::new(std::collections::HashSet::new()));
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let ids = produce_ids.clone();
                std::thread::spawn(move || forward_requests(client, server, ids));
                let (d, seen) = (d.clone(), seen.clone());
                std::thread::spawn(move || {
                    forward_responses(s2, c2, produce_ids, |_| {
                        let n = seen.fetch_add(1, Ordering::SeqCst);
                        n % every == every - 1 && d.fetch_add(1, Ordering::SeqCst) < drops
                    });
                });
            }
        });
        DroppingProxy { port, dropped }
    }
}

fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut frame = vec![0u8; i32::from_be_bytes(len).max(0) as usize];
    s.read_exact(&mut frame).ok()?;
    Some(frame)
}

fn write_frame(s: &mut TcpStream, frame: &[u8]) -> bool {
    s.write_all(&(frame.len() as i32).to_be_bytes()).and_then(|()| s.write_all(frame)).is_ok()
}

/// Client -> broker: remembers the correlation ids of Produce requests.
fn forward_requests(mut client: TcpStream, mut server: TcpStream, ids: Arc<Mutex<std::collections::HashSet<i32>>>) {
    while let Some(frame) = read_frame(&mut client) {
        if frame.len() >= 8 && i16::from_be_bytes([frame[0], frame[1]]) == 0 {
            ids.lock().unwrap().insert(i32::from_be_bytes(frame[4..8].try_into().unwrap()));
        }
        if !write_frame(&mut server, &frame) {
            break;
        }
    }
    let _ = server.shutdown(std::net::Shutdown::Both);
}

/// Broker -> client: drops a produce response when `drop` says so, and
/// then the connection.
fn forward_responses(
    mut server: TcpStream,
    mut client: TcpStream,
    ids: Arc<Mutex<std::collections::HashSet<i32>>>,
    mut drop: impl FnMut(i32) -> bool,
) {
    while let Some(frame) = read_frame(&mut server) {
        let correlation = frame.get(..4).map_or(-1, |b| i32::from_be_bytes(b.try_into().unwrap()));
        if ids.lock().unwrap().remove(&correlation) && drop(correlation) {
            break;
        }
        if !write_frame(&mut client, &frame) {
            break;
        }
    }
    let _ = client.shutdown(std::net::Shutdown::Both);
    let _ = server.shutdown(std::net::Shutdown::Both);
}

#[test]
fn retries_after_lost_produce_responses_are_not_duplicated() {
    const N: usize = 5_000;
    let dir = tempfile::tempdir().unwrap();
    // Clients reach the broker only through the proxy: it is the
    // advertised address.
    let proxy_port = free_port();
    let advertised = format!("127.0.0.1:{proxy_port}");
    let broker = Broker::start_with(dir.path(), &["--advertised-kafka", &advertised]);
    let proxy = DroppingProxy::start(proxy_port, broker.port, 4, 7);
    block_on(create_topic(&broker, "dedup", 1, &[]));

    let p: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{}", proxy.port))
        .set("broker.address.family", "v4")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("batch.num.messages", "100")
        .set("retry.backoff.ms", "50")
        .create()
        .unwrap();
    for i in 0..N {
        let v = i.to_string();
        // The local queue may fill while the proxy cuts connections.
        loop {
            match p.send(BaseRecord::to("dedup").key(&v).payload(&v)) {
                Ok(()) => break,
                Err((_, r)) => {
                    drop(r);
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    p.flush(Duration::from_secs(60)).unwrap();
    assert!(proxy.dropped.load(Ordering::SeqCst) >= 4, "the proxy dropped responses");

    let got = read_values(&broker, "dedup", 1, false, N);
    let expected: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(got.len(), N, "no record lost or duplicated");
    assert_eq!(got, expected, "and the order is kept");
}
