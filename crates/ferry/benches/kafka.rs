//! Kafka-protocol benchmark: the release `ferry` binary on 127.0.0.1, driven
//! by librdkafka (the rdkafka crate) in this process.
//!
//! `cargo bench -p ferry --bench kafka [-- --json] [-- --records N --rate R --seconds S]`
//!
//! Measured, in this order, against one broker with a fresh data directory:
//! 1. the loopback TCP limit: one std TCP sender/receiver pair pushing the
//!    same bytes as one produce case in 1 MiB writes (best of 3);
//! 2. produce throughput, 1 KiB records, acks=1 and acks=all, 1 and 6
//!    partitions: time from the first send to the last delivery report;
//! 3. consume throughput: the 6-partition acks=1 topic read back with
//!    assigned partitions (no consumer group);
//! 4. end-to-end latency at a fixed rate (default 50,000 records/s), acks=1
//!    and acks=all: each record carries the time it was due to be sent
//!    (monotonic clock, this process); a consumer tailing the topic takes
//!    its receive time minus that.
//!
//! `sync` runs between phases so one phase's page-cache writeback does not
//! land in the next. Broker and benchmark CPU time per phase come from
//! /proc. The run is bounded: every wait has a deadline, and the broker is
//! stopped (SIGTERM) and its data directory removed at the end.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const RECORD: usize = 1024;
const MIB: f64 = 1024.0 * 1024.0;

struct Options {
    json: bool,
    /// Records per produce case (each case also stops sending after `CAP`).
    records: u64,
    /// Latency runs: records per second and measured seconds.
    rate: u64,
    seconds: f64,
}

/// A produce case stops queueing new records after this long.
const CAP: Duration = Duration::from_secs(8);
/// Latency runs: this long at the target rate before measuring starts.
const WARMUP: Duration = Duration::from_millis(1000);

fn main() {
    let opts = parse_args();
    let tick = clock_ticks();
    let base = std::env::var_os("FERRY_BENCH_DIR").unwrap_or_else(|| env!("CARGO_TARGET_TMPDIR").into());
    std::fs::create_dir_all(&base).expect("benchmark scratch directory");
    let dir = tempfile::Builder::new().prefix("kafka-bench-").tempdir_in(&base).expect("temp dir");
    let fstype = filesystem(dir.path());
    let mut broker = Broker::start(dir.path());
    let bootstrap = broker.bootstrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
    let mut report = Report::default();
    eprintln!(
        "kafka bench: ferry pid {} on {bootstrap}, data in {} ({fstype}), {} CPUs",
        broker.pid(),
        dir.path().display(),
        cpus()
    );

    // 1. Loopback limit.
    let loop_bytes = opts.records * RECORD as u64;
    let loopback = (0..3).map(|_| loopback_mib_s(loop_bytes)).fold(0.0, f64::max);
    report.loopback = loopback;
    eprintln!("loopback TCP: {loopback:.0} MiB/s ({:.0} MiB per run, best of 3)", loop_bytes as f64 / MIB);

    // 2. Produce.
    for (acks, parts) in [("1", 1), ("1", 6), ("all", 1), ("all", 6)] {
        let topic = format!("produce-p{parts}-acks{acks}");
        runtime.block_on(create_topic(&bootstrap, &topic, parts));
        sync();
        let cpu = Cpu::start(broker.pid(), tick);
        let r = produce(&bootstrap, &topic, acks, opts.records);
        let (broker_cpu, bench_cpu) = cpu.stop();
        let mib_s = r.bytes as f64 / MIB / r.secs;
        eprintln!(
            "produce {parts} partition(s) acks={acks}: {} records in {:.2}s, {mib_s:.1} MiB/s, {:.0} rec/s, {:.0}% of \
             loopback, broker CPU {:.0}%, bench CPU {:.0}%",
            r.records,
            r.secs,
            r.records as f64 / r.secs,
            100.0 * mib_s / loopback,
            broker_cpu,
            bench_cpu
        );
        report.produce.push(ProduceRow { topic, acks, parts, run: r, broker_cpu, bench_cpu });
    }

    // 3. Consume the 6-partition acks=1 topic.
    let source = report.produce.iter().find(|p| p.parts == 6 && p.acks == "1").expect("the p6 acks=1 case");
    sync();
    let cpu = Cpu::start(broker.pid(), tick);
    let c = consume(&bootstrap, &source.topic, 6, source.run.records);
    let (broker_cpu, bench_cpu) = cpu.stop();
    eprintln!(
        "consume 6 partitions: {} records in {:.2}s, {:.1} MiB/s, broker CPU {:.0}%, bench CPU {:.0}%",
        c.records,
        c.secs,
        c.bytes as f64 / MIB / c.secs,
        broker_cpu,
        bench_cpu
    );
    report.consume = Some((source.topic.clone(), c, broker_cpu, bench_cpu));

    // 4. End-to-end latency at a fixed rate.
    for acks in ["1", "all"] {
        let topic = format!("latency-acks{acks}");
        runtime.block_on(create_topic(&bootstrap, &topic, 6));
        sync();
        let cpu = Cpu::start(broker.pid(), tick);
        let l = latency(&bootstrap, &topic, 6, acks, opts.rate, opts.seconds);
        let (broker_cpu, bench_cpu) = cpu.stop();
        eprintln!(
            "latency acks={acks} at {} rec/s: e2e p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} ms; ack p50 {:.2} p99 \
             {:.2} ms; broker CPU {:.0}%",
            opts.rate,
            ms(l.e2e.p50),
            ms(l.e2e.p99),
            ms(l.e2e.p999),
            ms(l.e2e.max),
            ms(l.ack.p50),
            ms(l.ack.p99),
            broker_cpu
        );
        report.latency.push(LatencyRow { acks, run: l, broker_cpu, bench_cpu });
    }

    broker.stop();
    drop(dir);
    if opts.json {
        println!("{}", report.json(&opts, &fstype));
    } else {
        report.print(&opts, &fstype);
    }
}

fn parse_args() -> Options {
    let mut o = Options { json: false, records: 500_000, rate: 50_000, seconds: 5.0 };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> f64 {
            args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{what} needs a number"))
        };
        match a.as_str() {
            "--json" => o.json = true,
            "--records" => o.records = num("--records") as u64,
            "--rate" => o.rate = num("--rate") as u64,
            "--seconds" => o.seconds = num("--seconds"),
            _ => {} // `cargo bench` passes --bench; filters mean nothing here
        }
    }
    assert!(o.records > 0 && o.rate > 0 && o.seconds > 0.0, "--records, --rate and --seconds must be positive");
    o
}

// ---------------------------------------------------------------- broker --

/// The release `ferry` binary, serving Kafka on a free loopback port.
struct Broker {
    child: Option<Child>,
    port: u16,
}

impl Broker {
    fn start(data: &Path) -> Broker {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["serve", "--data-dir"])
            .arg(data)
            .args(["--kafka-listen", &format!("127.0.0.1:{port}")])
            .env("FERRY_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ferry");
        // Wait for the ready line, then keep draining the broker's log,
        // echoing only warnings and errors.
        let stderr = child.stderr.take().expect("piped stderr");
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut ready = Some(ready_tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("kafka listener ready") {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                } else if line.contains("WARN") || line.contains("ERROR") {
                    eprintln!("[ferry] {line}");
                }
            }
        });
        let mut b = Broker { child: Some(child), port };
        if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
            b.stop();
            panic!("ferry did not log \"kafka listener ready\" within 30 s");
        }
        b
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGTERM, then up to 30 s for a clean exit, then SIGKILL.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() {
                        eprintln!("ferry exited with {status}");
                    }
                    return;
                }
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    eprintln!("ferry did not stop within 30 s of SIGTERM; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn client_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap).set("broker.address.family", "v4");
    c
}

async fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap).create().expect("admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let r = admin.create_topics(&[topic], &opts).await.expect("create_topics");
    r[0].as_ref().unwrap_or_else(|(t, e)| panic!("creating {t}: {e}"));
}

// -------------------------------------------------------------- loopback --

/// One std TCP connection on 127.0.0.1 carrying `bytes` in 1 MiB writes,
/// timed from the first write to the receiver reading end-of-stream.
fn loopback_mib_s(bytes: u64) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let receiver = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf) {
                Ok(0) => return (total, Instant::now()),
                Ok(n) => total += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("loopback read: {e}"),
            }
        }
    });
    let mut s = TcpStream::connect(addr).expect("connect");
    let chunk = vec![0x5au8; 1 << 20];
    let start = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        s.write_all(&chunk[..n]).expect("loopback write");
        left -= n as u64;
    }
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let (got, end) = receiver.join().expect("receiver");
    assert_eq!(got, bytes);
    got as f64 / MIB / end.duration_since(start).as_secs_f64()
}

// --------------------------------------------------------------- produce --

/// Counts delivery reports; optionally records each record's ack latency
/// (delivery time minus the time stamped in its first 8 bytes).
struct Counting {
    epoch: Instant,
    delivered: AtomicU64,
    failed: AtomicU64,
    last: Mutex<Option<Instant>>,
    first_error: Mutex<Option<String>>,
    ack_nanos: Option<Mutex<Vec<u64>>>,
    /// Only records with a sequence number (bytes 8..16) from here on count
    /// towards `ack_nanos`.
    ack_from_seq: u64,
}

impl Counting {
    /// `ack_from_seq`: Some(n) records ack latencies of sequence numbers n
    /// and up.
    fn new(epoch: Instant, ack_from_seq: Option<u64>) -> Counting {
        Counting {
            epoch,
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last: Mutex::new(None),
            first_error: Mutex::new(None),
            ack_nanos: ack_from_seq.map(|_| Mutex::new(Vec::new())),
            ack_from_seq: ack_from_seq.unwrap_or(0),
        }
    }

    fn done(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }
}

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let now = Instant::now();
        match result {
            Ok(m) => {
                if let Some(lat) = &self.ack_nanos {
                    let payload = m.payload().unwrap_or_default();
                    if seq_of(payload) >= self.ack_from_seq {
                        let at = now.duration_since(self.epoch).as_nanos() as u64;
                        lock(lat).push(at.saturating_sub(stamp_of(payload)));
                    }
                }
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                lock(&self.first_error).get_or_insert_with(|| e.to_string());
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        *lock(&self.last) = Some(now);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn producer(bootstrap: &str, acks: &str, ctx: Counting, extra: &[(&str, &str)]) -> ThreadedProducer<Counting> {
    let mut c = client_config(bootstrap);
    c.set("acks", acks)
        .set("enable.idempotence", "false")
        .set("compression.type", "none")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("batch.num.messages", "100000")
        .set("queue.buffering.max.messages", "2000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "60000");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create_with_context(ctx).expect("producer")
}

/// Queues one record, waiting while the producer's queue is full.
fn send(p: &ThreadedProducer<Counting>, topic: &str, payload: &[u8]) {
    let mut record = BaseRecord::to(topic).payload(payload);
    loop {
        match p.send::<(), [u8]>(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_micros(200));
            }
            Err((e, _)) => panic!("producing to {topic}: {e}"),
        }
    }
}

/// Waits for every queued record's delivery report (bounded).
fn await_deliveries(ctx: &Counting, sent: u64, topic: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while ctx.done() < sent {
        assert!(Instant::now() < deadline, "{topic}: only {} of {sent} deliveries after 90 s", ctx.done());
        std::thread::sleep(Duration::from_millis(1));
    }
    let failed = ctx.failed.load(Ordering::Relaxed);
    assert_eq!(failed, 0, "{topic}: {failed} deliveries failed, first: {:?}", lock(&ctx.first_error));
}

#[derive(Clone, Copy)]
struct Throughput {
    records: u64,
    bytes: u64,
    secs: f64,
}

/// Up to `records` 1 KiB records, as fast as the producer takes them; time
/// from the first send to the last delivery report.
fn produce(bootstrap: &str, topic: &str, acks: &str, records: u64) -> Throughput {
    let p = producer(bootstrap, acks, Counting::new(Instant::now(), None), &[]);
    // Metadata first, so connection set-up is not timed.
    p.client().fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
    let payload = filler();
    let start = Instant::now();
    let mut sent = 0;
    while sent < records && start.elapsed() < CAP {
        send(&p, topic, &payload);
        sent += 1;
    }
    let ctx = p.context();
    await_deliveries(ctx, sent, topic);
    let end = lock(&ctx.last).expect("a delivery");
    Throughput { records: sent, bytes: sent * RECORD as u64, secs: end.duration_since(start).as_secs_f64() }
}

fn filler() -> Vec<u8> {
    (0..RECORD).map(|i| (i * 31 % 251) as u8).collect()
}

// --------------------------------------------------------------- consume --

fn consumer(bootstrap: &str, topic: &str, partitions: i32, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut c = client_config(bootstrap);
    // Assigned partitions only: the group id is never used (no commits).
    c.set("group.id", "ferry-bench-unused")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    let consumer: BaseConsumer = c.create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    consumer
}

/// Reads `expected` records from the start of every partition; time from
/// assignment to the last record.
fn consume(bootstrap: &str, topic: &str, partitions: i32, expected: u64) -> Throughput {
    let start = Instant::now();
    let c = consumer(bootstrap, topic, partitions, &[]);
    let deadline = start + Duration::from_secs(60);
    let (mut records, mut bytes) = (0u64, 0u64);
    while records < expected && Instant::now() < deadline {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                records += 1;
                bytes += m.payload_len() as u64;
            }
            Some(Err(e)) => panic!("consuming {topic}: {e}"),
            None => {}
        }
    }
    assert_eq!(records, expected, "{topic}: records missing after 60 s");
    Throughput { records, bytes, secs: start.elapsed().as_secs_f64() }
}

// --------------------------------------------------------------- latency --

#[derive(Clone, Copy, Default)]
struct Percentiles {
    n: usize,
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

impl Percentiles {
    fn of(mut v: Vec<u64>) -> Percentiles {
        if v.is_empty() {
            return Percentiles::default();
        }
        v.sort_unstable();
        let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Percentiles { n: v.len(), p50: at(0.50), p99: at(0.99), p999: at(0.999), max: v[v.len() - 1] }
    }
}

struct Latency {
    /// Records sent per second over the whole run, as achieved.
    achieved_rate: f64,
    /// Measured records (after the warm-up) that never arrived.
    missing: u64,
    /// Consumer receive time minus due time.
    e2e: Percentiles,
    /// Delivery report time minus due time (the produce acknowledgement).
    ack: Percentiles,
}

/// Bytes 0..8 of a latency record: when it was due, in nanoseconds since
/// the run's epoch.
fn stamp_of(payload: &[u8]) -> u64 {
    payload.get(..8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
}

/// Bytes 8..16 of a latency record: its sequence number.
fn seq_of(payload: &[u8]) -> u64 {
    payload.get(8..16).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
}

/// `rate` records/s for the warm-up plus `seconds`, each stamped with the
/// time it was due (so a stalled sender counts against latency), while a
/// consumer tails the topic.
fn latency(bootstrap: &str, topic: &str, partitions: i32, acks: &str, rate: u64, seconds: f64) -> Latency {
    let epoch = Instant::now();
    let warmup = (WARMUP.as_secs_f64() * rate as f64) as u64;
    let total = warmup + (seconds * rate as f64) as u64;
    let nodelay = ("socket.nagle.disable", "true");
    let p = producer(bootstrap, acks, Counting::new(epoch, Some(warmup)), &[("linger.ms", "1"), nodelay]);
    p.client().fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
    let c = consumer(bootstrap, topic, partitions, &[("fetch.wait.max.ms", "5"), ("fetch.min.bytes", "1"), nodelay]);
    let stop = Arc::new(AtomicU64::new(0));
    let tail = {
        let (topic, stop) = (topic.to_string(), stop.clone());
        std::thread::spawn(move || {
            let mut lat = Vec::with_capacity(total as usize);
            let mut seen = 0u64;
            while seen < total {
                let stop_at = stop.load(Ordering::Relaxed);
                if stop_at != 0 && epoch.elapsed().as_nanos() as u64 > stop_at {
                    break;
                }
                match c.poll(Duration::from_millis(10)) {
                    Some(Ok(m)) => {
                        let now = epoch.elapsed().as_nanos() as u64;
                        let payload = m.payload().unwrap_or_default();
                        if seq_of(payload) >= warmup {
                            lat.push(now.saturating_sub(stamp_of(payload)));
                        }
                        seen += 1;
                    }
                    Some(Err(e)) => panic!("tailing {topic}: {e}"),
                    None => {}
                }
            }
            lat
        })
    };
    // Let the consumer's first fetch go out before the clock starts.
    std::thread::sleep(Duration::from_millis(300));
    let mut payload = filler();
    let interval = 1e9 / rate as f64;
    let start = epoch.elapsed().as_nanos() as f64;
    let mut i = 0u64;
    while i < total {
        let now = epoch.elapsed().as_nanos() as f64;
        let due = (((now - start) / interval) as u64 + 1).min(total);
        while i < due {
            let due_at = (start + i as f64 * interval) as u64;
            payload[..8].copy_from_slice(&due_at.to_le_bytes());
            payload[8..16].copy_from_slice(&i.to_le_bytes());
            send(&p, topic, &payload);
            i += 1;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    let achieved_rate = total as f64 * 1e9 / (epoch.elapsed().as_nanos() as f64 - start);
    let ctx = p.context();
    await_deliveries(ctx, total, topic);
    stop.store(epoch.elapsed().as_nanos() as u64 + 10_000_000_000, Ordering::Relaxed);
    let e2e = tail.join().expect("tail thread");
    let ack: Vec<u64> = std::mem::take(&mut *lock(ctx.ack_nanos.as_ref().expect("ack latencies")));
    let missing = (total - warmup).saturating_sub(e2e.len() as u64);
    Latency { achieved_rate, missing, e2e: Percentiles::of(e2e), ack: Percentiles::of(ack) }
}

fn ms(nanos: u64) -> f64 {
    nanos as f64 / 1e6
}

// ------------------------------------------------------------ machine --

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn filesystem(dir: &Path) -> String {
    Command::new("df")
        .args(["--output=fstype"])
        .arg(dir)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().nth(1).map(|l| l.trim().to_string()))
        .unwrap_or_else(|| "unknown fs".into())
}

/// Flushes dirty pages so the next phase starts clean.
fn sync() {
    let _ = Command::new("sync").status();
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// user+system CPU seconds of a process, from /proc/PID/stat.
fn cpu_secs(pid: &str, tick: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    // After the command name: state is field 3, utime 14, stime 15.
    let get = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (get(14) + get(15)) / tick
}

/// CPU use of the broker and of this process over a phase, in percent of
/// one core.
struct Cpu {
    pid: String,
    tick: f64,
    at: Instant,
    broker: f64,
    bench: f64,
}

impl Cpu {
    fn start(pid: u32, tick: f64) -> Cpu {
        let pid = pid.to_string();
        Cpu { broker: cpu_secs(&pid, tick), bench: cpu_secs("self", tick), pid, tick, at: Instant::now() }
    }

    fn stop(self) -> (f64, f64) {
        let wall = self.at.elapsed().as_secs_f64();
        let broker = cpu_secs(&self.pid, self.tick) - self.broker;
        let bench = cpu_secs("self", self.tick) - self.bench;
        (100.0 * broker / wall, 100.0 * bench / wall)
    }
}

// ---------------------------------------------------------------- report --

struct ProduceRow {
    topic: String,
    acks: &'static str,
    parts: i32,
    run: Throughput,
    broker_cpu: f64,
    bench_cpu: f64,
}

struct LatencyRow {
    acks: &'static str,
    run: Latency,
    broker_cpu: f64,
    bench_cpu: f64,
}

#[derive(Default)]
struct Report {
    loopback: f64,
    produce: Vec<ProduceRow>,
    consume: Option<(String, Throughput, f64, f64)>,
    latency: Vec<LatencyRow>,
}

impl Report {
    fn print(&self, opts: &Options, fstype: &str) {
        println!();
        println!("Kafka benchmark: ferry (release) on 127.0.0.1, {} CPUs, data on {fstype}", cpus());
        println!("1 KiB records, no compression, librdkafka {}", rdkafka::util::get_rdkafka_version().1);
        println!("MiB/s = record payload MiB per second; CPU = % of one core over the phase");
        println!();
        println!(
            "{:<28} {:>9} {:>8} {:>10} {:>10} {:>8} {:>8}",
            "", "records", "MiB/s", "records/s", "% loopback", "broker", "bench"
        );
        println!(
            "{:<28} {:>9} {:>8.0} {:>10} {:>10} {:>8} {:>8}",
            "loopback TCP (1 MiB writes)", "", self.loopback, "", "100%", "", ""
        );
        for r in &self.produce {
            let mib_s = r.run.bytes as f64 / MIB / r.run.secs;
            println!(
                "{:<28} {:>9} {:>8.1} {:>10.0} {:>9.0}% {:>7.0}% {:>7.0}%",
                format!("produce p{} acks={}", r.parts, r.acks),
                r.run.records,
                mib_s,
                r.run.records as f64 / r.run.secs,
                100.0 * mib_s / self.loopback,
                r.broker_cpu,
                r.bench_cpu
            );
        }
        if let Some((_, c, broker, bench)) = &self.consume {
            let mib_s = c.bytes as f64 / MIB / c.secs;
            println!(
                "{:<28} {:>9} {:>8.1} {:>10.0} {:>9.0}% {:>7.0}% {:>7.0}%",
                "consume p6 (assigned)",
                c.records,
                mib_s,
                c.records as f64 / c.secs,
                100.0 * mib_s / self.loopback,
                broker,
                bench
            );
        }
        println!();
        println!(
            "end-to-end latency, {} rec/s target, {:.0} s measured after {:.0} s warm-up, 6 partitions, linger.ms=1 (ms)",
            opts.rate,
            opts.seconds,
            WARMUP.as_secs_f64()
        );
        println!(
            "{:<10} {:>9} {:>8} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>7} {:>7}",
            "", "rate", "samples", "p50", "p99", "p99.9", "max", "ack p50", "ack p99", "broker", "bench"
        );
        for l in &self.latency {
            let (e, a) = (l.run.e2e, l.run.ack);
            println!(
                "{:<10} {:>9.0} {:>8} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>8.2} {:>8.2} {:>6.0}% {:>6.0}%",
                format!("acks={}", l.acks),
                l.run.achieved_rate,
                e.n,
                ms(e.p50),
                ms(e.p99),
                ms(e.p999),
                ms(e.max),
                ms(a.p50),
                ms(a.p99),
                l.broker_cpu,
                l.bench_cpu
            );
            if l.run.missing > 0 {
                println!("           {} measured records never reached the consumer", l.run.missing);
            }
        }
    }

    fn json(&self, opts: &Options, fstype: &str) -> String {
        let produce: Vec<String> = self
            .produce
            .iter()
            .map(|r| {
                let mib_s = r.run.bytes as f64 / MIB / r.run.secs;
                format!(
                    "{{\"partitions\":{},\"acks\":\"{}\",\"records\":{},\"seconds\":{:.3},\"mib_per_s\":{:.1},\
                     \"records_per_s\":{:.0},\"loopback_ratio\":{:.3},\"broker_cpu_pct\":{:.0},\"bench_cpu_pct\":{:.0}}}",
                    r.parts,
                    r.acks,
                    r.run.records,
                    r.run.secs,
                    mib_s,
                    r.run.records as f64 / r.run.secs,
                    mib_s / self.loopback,
                    r.broker_cpu,
                    r.bench_cpu
                )
            })
            .collect();
        let consume = self.consume.as_ref().map_or("null".to_string(), |(topic, c, broker, bench)| {
            format!(
                "{{\"topic\":\"{topic}\",\"records\":{},\"seconds\":{:.3},\"mib_per_s\":{:.1},\"broker_cpu_pct\":{broker:.0},\
                 \"bench_cpu_pct\":{bench:.0}}}",
                c.records,
                c.secs,
                c.bytes as f64 / MIB / c.secs
            )
        });
        let pct = |p: &Percentiles| {
            format!(
                "{{\"n\":{},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3},\"max_ms\":{:.3}}}",
                p.n,
                ms(p.p50),
                ms(p.p99),
                ms(p.p999),
                ms(p.max)
            )
        };
        let latency: Vec<String> = self
            .latency
            .iter()
            .map(|l| {
                format!(
                    "{{\"acks\":\"{}\",\"target_rate\":{},\"achieved_rate\":{:.0},\"missing\":{},\"end_to_end\":{},\
                     \"ack\":{},\"broker_cpu_pct\":{:.0},\"bench_cpu_pct\":{:.0}}}",
                    l.acks,
                    opts.rate,
                    l.run.achieved_rate,
                    l.run.missing,
                    pct(&l.run.e2e),
                    pct(&l.run.ack),
                    l.broker_cpu,
                    l.bench_cpu
                )
            })
            .collect();
        format!(
            "{{\"cpus\":{},\"filesystem\":\"{fstype}\",\"record_bytes\":{RECORD},\"loopback_mib_per_s\":{:.0},\
             \"produce\":[{}],\"consume\":{consume},\"latency\":[{}]}}",
            cpus(),
            self.loopback,
            produce.join(","),
            latency.join(",")
        )
    }
}
