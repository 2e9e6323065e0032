//! Kafka-protocol benchmark: the release `ferry` binary on 127.0.0.1, driven
//! by librdkafka (the rdkafka crate) in this process.
//!
//! `cargo bench -p ferry --bench kafka [-- --json] [-- --records N --rate R --seconds S --latency-only --recompress --linger-ms L]`
//! (`FERRY_BIN=path` runs another broker build, e.g. to compare two in one sitting)
//!
//! Measured, in this order, against one broker with a fresh data directory
//! (under the target directory's tmp/, or `FERRY_BENCH_DIR`):
//! 1. the loopback TCP limit: one std TCP sender/receiver pair pushing the
//!    same bytes as one produce case in 1 MiB writes (best of 3);
//! 2. produce throughput, 1 KiB records, acks=1 and acks=all, 1 and 6
//!    partitions: time from the first send to the last delivery report;
//!    with `--recompress`, also 1 partition acks=1 ("produce p1 to lz4" ...) into topics whose
//!    `compression.type` is lz4, snappy, zstd and gzip (the producer sends
//!    uncompressed batches, so the broker compresses every one);
//! 3. consume throughput: the 6-partition acks=1 topic read back with
//!    assigned partitions (no consumer group);
//! 4. end-to-end latency at a fixed rate (default 50,000 records/s) into 6
//!    partitions, acks=1 and acks=all, plus acks=1 on a topic with
//!    `flush.messages` at its maximum (no fsync) as a diagnostic: each record
//!    carries the time it was due to be sent (monotonic clock, this
//!    process); a consumer tailing the topic takes its receive time minus
//!    that.
//!
//! `sync` runs before each phase so one phase's page-cache writeback does
//! not land in the next. CPU use per phase comes from /proc: the broker, this
//! process (the clients), and everything else on the machine. The run is
//! bounded: every wait has a deadline, and the broker is stopped (SIGTERM)
//! and its data directory removed at the end.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_util::sync::lock;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const RECORD: usize = 1024;
const MIB: f64 = 1024.0 * 1024.0;
/// A produce case stops queueing new records after this long.
const CAP: Duration = Duration::from_secs(8);
/// Latency runs: this long at the target rate before measuring starts.
const WARMUP: Duration = Duration::from_millis(1000);
/// Partitions of the latency topics.
const LATENCY_PARTITIONS: i32 = 6;
/// `flush.messages` that turns fsync off for a topic (i64::MAX).
const NO_FSYNC: &str = "9223372036854775807";

struct Options {
    json: bool,
    /// Records per produce case (each case also stops sending after `CAP`).
    records: u64,
    /// Latency runs: records per second and measured seconds.
    rate: u64,
    seconds: f64,
    /// Skip phases 1 to 3.
    latency_only: bool,
    /// Skip the page-cache warm-up before each produce phase.
    cold: bool,
    /// Also produce into topics whose `compression.type` makes the broker recompress.
    recompress: bool,
    /// The latency producer's `linger.ms` (1 by default; 0 for low rates,
    /// where a record would otherwise wait the linger out alone).
    linger_ms: u64,
}

fn main() {
    let opts = parse_args();
    let base = std::env::var_os("FERRY_BENCH_DIR").unwrap_or_else(|| env!("CARGO_TARGET_TMPDIR").into());
    std::fs::create_dir_all(&base).expect("benchmark scratch directory");
    let dir = tempfile::Builder::new().prefix("kafka-bench-").tempdir_in(&base).expect("temp dir");
    let mut report = Report { fstype: filesystem(dir.path()), load_before: loadavg(), ..Report::default() };
    let mut broker = Broker::start(dir.path());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
    eprintln!(
        "kafka bench: ferry pid {} on {}, data in {} ({}), {} CPUs, load average {}",
        broker.pid(),
        broker.bootstrap(),
        dir.path().display(),
        report.fstype,
        cpus(),
        report.load_before
    );
    if !opts.latency_only {
        throughput(&opts, &mut report, &broker, &runtime, dir.path().parent().unwrap_or(dir.path()));
    }
    latencies(&opts, &mut report, &broker, &runtime);
    broker.stop();
    drop(dir);
    if opts.json {
        println!("{}", report.json(&opts));
    } else {
        report.print(&opts);
    }
}

fn parse_args() -> Options {
    let mut o = Options {
        json: false,
        records: 2_000_000,
        rate: 50_000,
        seconds: 5.0,
        latency_only: false,
        cold: false,
        recompress: false,
        linger_ms: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> f64 {
            args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{what} needs a number"))
        };
        match a.as_str() {
            "--json" => o.json = true,
            "--latency-only" => o.latency_only = true,
            "--cold" => o.cold = true,
            "--recompress" => o.recompress = true,
            "--records" => o.records = num("--records") as u64,
            "--rate" => o.rate = num("--rate") as u64,
            "--seconds" => o.seconds = num("--seconds"),
            "--linger-ms" => o.linger_ms = num("--linger-ms") as u64,
            _ => {} // `cargo bench` passes --bench; filters mean nothing here
        }
    }
    assert!(o.records > 0 && o.rate > 0 && o.seconds > 0.0, "--records, --rate and --seconds must be positive");
    o
}

/// Phases 1 to 3: the loopback limit, produce, consume.
fn throughput(opts: &Options, report: &mut Report, broker: &Broker, runtime: &tokio::runtime::Runtime, dir: &Path) {
    let bootstrap = broker.bootstrap();
    let loop_bytes = opts.records * RECORD as u64;
    sync();
    let cpu = Cpu::start(broker.pid());
    let loopback = (0..3).map(|_| loopback_mib_s(loop_bytes)).fold(0.0, f64::max);
    report.loopback_cpu = cpu.stop();
    report.loopback = loopback;
    eprintln!("loopback TCP: {loopback:.0} MiB/s ({:.0} MiB per run, best of 3)", loop_bytes as f64 / MIB);

    let mut cases: Vec<(&str, i32, Option<&str>)> =
        vec![("1", 1, None), ("1", 6, None), ("all", 1, None), ("all", 6, None)];
    if opts.recompress {
        cases.extend(["lz4", "snappy", "zstd", "gzip"].map(|codec| ("1", 1, Some(codec))));
    }
    for (acks, partitions, codec) in cases {
        let (topic, label, configs) = match codec {
            None => (format!("produce-p{partitions}-acks{acks}"), format!("produce p{partitions} acks={acks}"), vec![]),
            Some(c) => (
                format!("produce-p{partitions}-acks{acks}-{c}"),
                format!("produce p{partitions} to {c}"),
                vec![("compression.type", c)],
            ),
        };
        runtime.block_on(create_topic(&bootstrap, &topic, partitions, &configs));
        sync();
        if !opts.cold {
            warm_page_cache(dir, loop_bytes);
        }
        let cpu = Cpu::start(broker.pid());
        let run = produce(&bootstrap, &topic, acks, opts.records);
        let row = ProduceRow { label, run, cpu: cpu.stop() };
        eprintln!("{}", row.line(loopback));
        report.produce.push(row);
    }

    // The 6-partition acks=1 topic, read back.
    let records = report.produce.iter().find(|r| r.label == "produce p6 acks=1").map_or(0, |r| r.run.records);
    sync();
    let cpu = Cpu::start(broker.pid());
    let run = consume(&bootstrap, "produce-p6-acks1", 6, records);
    let row = ProduceRow { label: "consume p6".into(), run, cpu: cpu.stop() };
    eprintln!("{}", row.line(loopback));
    report.consume = Some(row);
}

/// Phase 4: end-to-end latency at a fixed rate.
fn latencies(opts: &Options, report: &mut Report, broker: &Broker, runtime: &tokio::runtime::Runtime) {
    let bootstrap = broker.bootstrap();
    for (acks, fsync) in [("1", true), ("all", true), ("1", false)] {
        let topic = format!("latency-acks{acks}{}", if fsync { "" } else { "-nofsync" });
        let configs: &[(&str, &str)] = if fsync { &[] } else { &[("flush.messages", NO_FSYNC)] };
        runtime.block_on(create_topic(&bootstrap, &topic, LATENCY_PARTITIONS, configs));
        sync();
        let cpu = Cpu::start(broker.pid());
        let run = latency(&bootstrap, &topic, acks, opts.rate, opts.seconds, opts.linger_ms);
        let row = LatencyRow { acks, fsync, run, cpu: cpu.stop() };
        eprintln!("{}", row.line());
        report.latency.push(row);
    }
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
        let mut child = Command::new(ferry_bin())
            .args(["serve", "--data-dir"])
            .arg(data)
            .args(["--kafka-listen", &format!("127.0.0.1:{port}")])
            .args(["--http-listen", "127.0.0.1:0"])
            // Free ports only: the defaults may be taken by other brokers.
            .args(["--amqp-listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0"])
            .args(["--stomp-listen", "off", "--redis-listen", "off"])
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

async fn create_topic(bootstrap: &str, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap).create().expect("admin client");
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
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

/// Counts delivery reports and keeps the time of the last one; optionally
/// records each record's ack latency (delivery time minus the due time in
/// its first 8 bytes).
struct Counting {
    epoch: Instant,
    delivered: AtomicU64,
    failed: AtomicU64,
    /// Nanoseconds since `epoch` of the latest delivery report.
    last: AtomicU64,
    first_error: Mutex<Option<String>>,
    ack_nanos: Option<Mutex<Vec<u64>>>,
    /// Only records with a sequence number (bytes 8..16) from here on count
    /// towards `ack_nanos`.
    ack_from_seq: u64,
}

impl Counting {
    /// `ack_from_seq`: Some(n) records the ack latencies of sequence
    /// numbers n and up.
    fn new(epoch: Instant, ack_from_seq: Option<u64>) -> Counting {
        Counting {
            epoch,
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last: AtomicU64::new(0),
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
        let now = self.epoch.elapsed().as_nanos() as u64;
        match result {
            Ok(m) => {
                if let Some(lat) = &self.ack_nanos {
                    let payload = m.payload().unwrap_or_default();
                    if seq_of(payload) >= self.ack_from_seq {
                        lock(lat).push(now.saturating_sub(stamp_of(payload)));
                    }
                }
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                lock(&self.first_error).get_or_insert_with(|| e.to_string());
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.last.fetch_max(now, Ordering::Relaxed);
    }
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

/// Queues one record (no key: librdkafka's default partitioner), waiting
/// while the producer's queue is full.
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

impl Throughput {
    fn mib_s(&self) -> f64 {
        self.bytes as f64 / MIB / self.secs
    }

    fn records_s(&self) -> f64 {
        self.records as f64 / self.secs
    }
}

/// Up to `records` 1 KiB records, as fast as the producer takes them; time
/// from the first send to the last delivery report.
fn produce(bootstrap: &str, topic: &str, acks: &str, records: u64) -> Throughput {
    let epoch = Instant::now();
    let p = producer(bootstrap, acks, Counting::new(epoch, None), &[]);
    // Metadata first, so connection set-up is not timed.
    p.client().fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
    let payload = filler();
    let start = epoch.elapsed();
    let mut sent = 0;
    while sent < records && (sent % 4096 != 0 || epoch.elapsed() - start < CAP) {
        send(&p, topic, &payload);
        sent += 1;
    }
    let ctx = p.context();
    await_deliveries(ctx, sent, topic);
    let end = Duration::from_nanos(ctx.last.load(Ordering::Relaxed));
    Throughput { records: sent, bytes: sent * RECORD as u64, secs: (end - start).as_secs_f64() }
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

    fn json(&self) -> String {
        format!(
            "{{\"n\":{},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3},\"max_ms\":{:.3}}}",
            self.n,
            ms(self.p50),
            ms(self.p99),
            ms(self.p999),
            ms(self.max)
        )
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
/// time it was due (so a stalled sender counts against latency, no
/// coordinated omission), while a consumer tails the topic. Latency-minded
/// client settings: linger.ms=`linger_ms`, Nagle off, fetch.wait.max.ms=5,
/// fetch.min.bytes=1.
fn latency(bootstrap: &str, topic: &str, acks: &str, rate: u64, seconds: f64, linger_ms: u64) -> Latency {
    let epoch = Instant::now();
    let warmup = (WARMUP.as_secs_f64() * rate as f64) as u64;
    let total = warmup + (seconds * rate as f64) as u64;
    let nodelay = ("socket.nagle.disable", "true");
    let linger = linger_ms.to_string();
    let p = producer(bootstrap, acks, Counting::new(epoch, Some(warmup)), &[("linger.ms", &linger), nodelay]);
    p.client().fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
    let tuning = [("fetch.wait.max.ms", "5"), ("fetch.min.bytes", "1"), nodelay];
    let c = consumer(bootstrap, topic, LATENCY_PARTITIONS, &tuning);
    // Nanoseconds since `epoch` after which the tail gives up (0: not yet).
    let give_up = Arc::new(AtomicU64::new(0));
    let tail = {
        let (topic, give_up) = (topic.to_string(), give_up.clone());
        std::thread::spawn(move || {
            let mut lat = Vec::with_capacity(total as usize);
            let mut seen = 0u64;
            while seen < total {
                let limit = give_up.load(Ordering::Relaxed);
                if limit != 0 && epoch.elapsed().as_nanos() as u64 > limit {
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
    // Let the consumer's first fetches go out before the clock starts.
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
        // Until the next one is due (a fixed 100 us poll sent each record
        // up to 0.1 ms late, counted as latency); the probe paces alike.
        let next = start + i as f64 * interval;
        let now = epoch.elapsed().as_nanos() as f64;
        if next > now {
            std::thread::sleep(Duration::from_nanos((next - now) as u64));
        }
    }
    let achieved_rate = total as f64 * 1e9 / (epoch.elapsed().as_nanos() as f64 - start);
    let ctx = p.context();
    await_deliveries(ctx, total, topic);
    give_up.store(epoch.elapsed().as_nanos() as u64 + 10_000_000_000, Ordering::Relaxed);
    let e2e = tail.join().expect("tail thread");
    let ack: Vec<u64> = std::mem::take(&mut *lock(ctx.ack_nanos.as_ref().expect("ack latencies")));
    let missing = (total - warmup).saturating_sub(e2e.len() as u64);
    Latency { achieved_rate, missing, e2e: Percentiles::of(e2e), ack: Percentiles::of(ack) }
}

fn ms(nanos: u64) -> f64 {
    nanos as f64 / 1e6
}

// --------------------------------------------------------------- machine --

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
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

/// The 1, 5 and 15 minute load averages.
fn loadavg() -> String {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// Flushes dirty pages so the next phase starts clean.
fn sync() {
    let _ = Command::new("sync").status();
}

/// Writes and deletes a scratch file of `bytes` in `dir`, right before a
/// produce phase. This VM hands freed memory back to its host, and the
/// first write into such memory runs at a sixth of the usual speed (`dd` of
/// 10 GB: 770 MB/s, then 5.4 GB/s right after); without the warm-up the
/// broker's page-cache writes would pay that, and the loopback reference
/// (which reuses its buffers) would not. The freed pages are reused before
/// the host takes them back. `--cold` skips it.
fn warm_page_cache(dir: &Path, bytes: u64) {
    let path = dir.join("warm-up.tmp");
    let chunk = vec![0x5a_u8; 1 << 20];
    let written = std::fs::File::create(&path).and_then(|mut f| {
        use std::io::Write;
        (0..bytes.div_ceil(chunk.len() as u64)).try_for_each(|_| f.write_all(&chunk))
    });
    if let Err(e) = written {
        eprintln!("page-cache warm-up failed: {e}");
    }
    let _ = std::fs::remove_file(&path);
}

/// /proc counts CPU time in USER_HZ ticks, 100 per second on Linux.
const TICKS_PER_SEC: f64 = 100.0;

/// user+system CPU ticks of a process, from /proc/PID/stat.
fn process_ticks(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    // After the command name: state is field 3, utime 14, stime 15.
    let get = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    get(14) + get(15)
}

/// Busy (not idle, not iowait) CPU ticks of the whole machine, /proc/stat.
fn machine_busy_ticks() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is in user)
    v.iter().take(8).sum::<f64>() - v.get(3).unwrap_or(&0.0) - v.get(4).unwrap_or(&0.0)
}

/// CPU use over a phase, each in percent of one core: the broker, this
/// process (the Kafka clients), and everything else on the machine.
#[derive(Clone, Copy, Default)]
struct CpuUse {
    broker: f64,
    bench: f64,
    other: f64,
}

struct Cpu {
    pid: String,
    at: Instant,
    broker: f64,
    bench: f64,
    busy: f64,
}

impl Cpu {
    fn start(pid: u32) -> Cpu {
        let pid = pid.to_string();
        Cpu {
            broker: process_ticks(&pid),
            bench: process_ticks("self"),
            busy: machine_busy_ticks(),
            pid,
            at: Instant::now(),
        }
    }

    fn stop(self) -> CpuUse {
        let pct = 100.0 / (self.at.elapsed().as_secs_f64() * TICKS_PER_SEC);
        let broker = process_ticks(&self.pid) - self.broker;
        let bench = process_ticks("self") - self.bench;
        let other = (machine_busy_ticks() - self.busy - broker - bench).max(0.0);
        CpuUse { broker: broker * pct, bench: bench * pct, other: other * pct }
    }
}

impl CpuUse {
    fn json(&self) -> String {
        format!("{{\"broker_pct\":{:.0},\"bench_pct\":{:.0},\"other_pct\":{:.0}}}", self.broker, self.bench, self.other)
    }
}

// ---------------------------------------------------------------- report --

struct ProduceRow {
    label: String,
    run: Throughput,
    cpu: CpuUse,
}

impl ProduceRow {
    fn line(&self, loopback: f64) -> String {
        format!(
            "{:<20} {:>9} {:>7.2} {:>8.1} {:>10.0} {:>9.0}% {:>6.0}% {:>6.0}% {:>6.0}% {:>9.0}%",
            self.label,
            self.run.records,
            self.run.secs,
            self.run.mib_s(),
            self.run.records_s(),
            100.0 * self.run.mib_s() / loopback,
            self.cpu.broker,
            self.cpu.bench,
            self.cpu.other,
            100.0 * self.client_cap(loopback)
        )
    }

    /// The share of the loopback limit at which the bench's clients alone
    /// would use every CPU, at the CPU per MiB they used in this phase: no
    /// broker, however cheap, gets past it on this machine.
    fn client_cap(&self, loopback: f64) -> f64 {
        self.run.mib_s() * (cpus() as f64 * 100.0) / self.cpu.bench.max(1.0) / loopback
    }

    fn json(&self, loopback: f64) -> String {
        format!(
            "{{\"case\":\"{}\",\"records\":{},\"seconds\":{:.3},\"mib_per_s\":{:.1},\"records_per_s\":{:.0},\
             \"loopback_ratio\":{:.3},\"client_cap_loopback_ratio\":{:.3},\"cpu\":{}}}",
            self.label,
            self.run.records,
            self.run.secs,
            self.run.mib_s(),
            self.run.records_s(),
            self.run.mib_s() / loopback,
            self.client_cap(loopback),
            self.cpu.json()
        )
    }
}

struct LatencyRow {
    acks: &'static str,
    /// false: the topic has flush.messages=MAX (no fsync).
    fsync: bool,
    run: Latency,
    cpu: CpuUse,
}

impl LatencyRow {
    fn label(&self) -> String {
        format!("acks={}{}", self.acks, if self.fsync { "" } else { " no-fsync" })
    }

    fn line(&self) -> String {
        let (e, a) = (self.run.e2e, self.run.ack);
        let mut s = format!(
            "{:<16} {:>7.0} {:>7} {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>5.0}% {:>5.0}% {:>5.0}%",
            self.label(),
            self.run.achieved_rate,
            e.n,
            ms(e.p50),
            ms(e.p99),
            ms(e.p999),
            ms(e.max),
            ms(a.p50),
            ms(a.p99),
            self.cpu.broker,
            self.cpu.bench,
            self.cpu.other
        );
        if self.run.missing > 0 {
            s += &format!("  ({} measured records never arrived)", self.run.missing);
        }
        s
    }

    fn json(&self, rate: u64) -> String {
        format!(
            "{{\"acks\":\"{}\",\"fsync\":{},\"target_rate\":{rate},\"achieved_rate\":{:.0},\"missing\":{},\
             \"end_to_end\":{},\"ack\":{},\"cpu\":{}}}",
            self.acks,
            self.fsync,
            self.run.achieved_rate,
            self.run.missing,
            self.run.e2e.json(),
            self.run.ack.json(),
            self.cpu.json()
        )
    }
}

#[derive(Default)]
struct Report {
    fstype: String,
    load_before: String,
    loopback: f64,
    /// Over all three loopback runs.
    loopback_cpu: CpuUse,
    produce: Vec<ProduceRow>,
    consume: Option<ProduceRow>,
    latency: Vec<LatencyRow>,
}

impl Report {
    fn print(&self, opts: &Options) {
        println!();
        println!(
            "Kafka benchmark: ferry (release) on 127.0.0.1, {} CPUs, data on {}, load average before {}",
            cpus(),
            self.fstype,
            self.load_before
        );
        println!("1 KiB records, no compression, librdkafka {}", rdkafka::util::get_rdkafka_version().1);
        println!("MiB/s: record payload; CPU: % of one core over the phase (broker / bench clients / rest of machine)");
        if !self.produce.is_empty() {
            println!();
            println!(
                "{:<20} {:>9} {:>7} {:>8} {:>10} {:>10} {:>7} {:>7} {:>7} {:>10}",
                "", "records", "secs", "MiB/s", "records/s", "% loopback", "broker", "bench", "other", "client cap"
            );
            let c = self.loopback_cpu;
            println!(
                "{:<20} {:>9} {:>7} {:>8.0} {:>10} {:>10} {:>6.0}% {:>6.0}% {:>6.0}%",
                "loopback TCP", "", "", self.loopback, "", "", c.broker, c.bench, c.other
            );
            for r in self.produce.iter().chain(&self.consume) {
                println!("{}", r.line(self.loopback));
            }
            println!(
                "client cap: % of loopback at which the clients alone would use all {} CPUs at their CPU per MiB \
                 in the phase; page cache {}",
                cpus(),
                if opts.cold { "cold (--cold)" } else { "warmed before each produce phase" }
            );
        }
        println!();
        println!(
            "end-to-end latency (ms): {} records/s target, {:.0} s measured after {:.0} s warm-up, {} partitions",
            opts.rate,
            opts.seconds,
            WARMUP.as_secs_f64(),
            LATENCY_PARTITIONS
        );
        println!(
            "{:<16} {:>7} {:>7} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}",
            "", "rate", "samples", "p50", "p99", "p99.9", "max", "ack50", "ack99", "broker", "bench", "other"
        );
        for l in &self.latency {
            println!("{}", l.line());
        }
    }

    fn json(&self, opts: &Options) -> String {
        let produce: Vec<String> = self.produce.iter().map(|r| r.json(self.loopback)).collect();
        let consume = self.consume.as_ref().map_or("null".into(), |r| r.json(self.loopback));
        let latency: Vec<String> = self.latency.iter().map(|l| l.json(opts.rate)).collect();
        format!(
            "{{\"cpus\":{},\"filesystem\":\"{}\",\"load_before\":\"{}\",\"record_bytes\":{RECORD},\
             \"loopback_mib_per_s\":{:.0},\"loopback_cpu\":{},\"produce\":[{}],\"consume\":{consume},\"latency\":[{}]}}",
            cpus(),
            self.fstype,
            self.load_before,
            self.loopback,
            self.loopback_cpu.json(),
            produce.join(","),
            latency.join(",")
        )
    }
}

/// The broker binary: `FERRY_BIN` if set (to compare two builds in one
/// sitting), else the one cargo built with this bench.
fn ferry_bin() -> std::ffi::OsString {
    std::env::var_os("FERRY_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_ferry").into())
}
