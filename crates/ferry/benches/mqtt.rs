//! MQTT benchmark: the release `ferry` binary and Debian's Mosquitto
//! (persistence on), both on loopback, driven in the same run by the same
//! MQTT 3.1.1 client in this process (raw packets on tokio sockets, so the
//! client costs little next to either broker).
//!
//! `scripts/bench-mqtt.sh [-- --messages N --rate R --seconds S --only NAME]`
//! (`FERRY_BIN=path` runs another broker build, e.g. to compare two in one sitting)
//! (installs mosquitto if missing, then `cargo bench -p ferry --bench mqtt`).
//!
//! Cases, each run against both brokers back to back (the order alternates):
//! - fan-in: 8 publishers -> 1 subscriber; fan-out: 1 publisher -> 8
//!   subscribers; at QoS 0 and QoS 1 (subscription and publishes), as fast
//!   as the brokers go. QoS 1 publishers keep 32 PUBLISHes unacknowledged;
//!   subscribers acknowledge everything they read. Throughput = messages
//!   delivered to subscribers per second, from the first send to the last
//!   delivery; latency = delivery time minus send time of every message.
//! - latency: 1 publisher -> 1 subscriber at a fixed rate (default 5,000/s,
//!   and 4 times that) for 3 s after 0.5 s of warm-up, QoS 0 and QoS 1; each
//!   message carries the time it was due (a stalled sender counts against
//!   latency).
//!
//! - rumqttc (issue #21): one rumqttc publisher at QoS 1 with the client's
//!   default in-flight window (100), 1 KiB payloads, `--messages` of them,
//!   into one QoS 1 subscriber (this bench's client, clean session), as
//!   fast as the broker acknowledges; broker CPU per message alongside.
//!   `rumqttc-qos1-persist`: the same (a quarter of the messages) into a
//!   persistent-session subscriber, whose messages both brokers store
//!   (Ferry fsyncs them before the PUBACK). The clients (rumqttc and the
//!   subscriber, this process) share the machine with the broker, so their
//!   CPU per message, the machine's busy share and the "client cap" (the
//!   rate at which broker + clients at their CPU per message would use
//!   every CPU) are printed beside it.
//!
//! "other" is the CPU everything else on the machine used during the case
//! (both brokers' runs); above about 10%, rerun. Before each half the bench
//! waits (up to 15 s) for the machine to be idle.
//!
//! Both brokers get the same limits: 20 QoS 1 messages in flight per
//! subscriber, no queue limit. Sessions are clean (Ferry writes nothing to
//! disk for them; Mosquitto's persistence saves its in-memory state
//! periodically and at exit). The run is bounded: every case has a deadline.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Semaphore;

#[path = "common/pace.rs"]
mod pace;

const PAYLOAD: usize = 64;
const QOS1_WINDOW: usize = 32;
/// Payload of the rumqttc case (issue #21: 1 KiB).
const RUMQTTC_PAYLOAD: usize = 1024;
const CASE_DEADLINE: Duration = Duration::from_secs(60);

struct Options {
    messages: u64,
    rate: u64,
    seconds: f64,
    only: Vec<String>,
}

fn parse_args() -> Options {
    let mut o = Options { messages: 200_000, rate: 5_000, seconds: 3.0, only: Vec::new() };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> f64 {
            args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{what} needs a number"))
        };
        match a.as_str() {
            "--messages" => o.messages = num("--messages") as u64,
            "--rate" => o.rate = num("--rate") as u64,
            "--seconds" => o.seconds = num("--seconds"),
            "--only" => o.only.push(args.next().expect("--only needs a case name")),
            // `--bench` (added by cargo) and anything else: ignored.
            _ => {}
        }
    }
    o
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

/// A broker process listening for MQTT on a loopback port.
struct Server {
    name: &'static str,
    child: Child,
    port: u16,
}

impl Server {
    fn ferry(dir: &Path) -> Server {
        let port = free_port();
        let config = dir.join("ferry.toml");
        std::fs::write(&config, "[mqtt]\nmax_queued_messages = 1000000000\nmax_inflight_messages = 20\n").unwrap();
        let child = Command::new(ferry_bin())
            .args(["serve", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--kafka-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--http-listen", "127.0.0.1:0"])
            .args(["--mqtt-listen", &format!("127.0.0.1:{port}")])
            // Free ports only: the defaults may be taken by other brokers.
            .args(["--amqp-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--stomp-listen", "off", "--redis-listen", "off"])
            .args(["--cluster-listen", &format!("127.0.0.1:{}", free_port())])
            .env("FERRY_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start ferry");
        Server::ready(Server { name: "ferry", child, port })
    }

    fn mosquitto(dir: &Path) -> Server {
        let port = free_port();
        let bin = std::env::var("MOSQUITTO").unwrap_or_else(|_| "/usr/sbin/mosquitto".into());
        let data = dir.join("mosquitto");
        std::fs::create_dir_all(&data).unwrap();
        let config = dir.join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n\
                 max_inflight_messages 20\nmax_queued_messages 0\nuser root\nlog_dest stderr\nlog_type error\n",
                data.display()
            ),
        )
        .unwrap();
        let mut child = Command::new(&bin)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {bin} (scripts/bench-mqtt.sh installs it): {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[mosquitto] {line}");
            }
        });
        Server::ready(Server { name: "mosquitto", child, port })
    }

    fn ready(s: Server) -> Server {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", s.port)).is_err() {
            assert!(Instant::now() < deadline, "{} did not listen within 30 s", s.name);
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----------------------------------------------------------------- client --

fn remaining_length(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let b = (n % 128) as u8;
        n /= 128;
        out.push(if n > 0 { b | 0x80 } else { b });
        if n == 0 {
            return;
        }
    }
}

fn publish(out: &mut Vec<u8>, topic: &str, qos: u8, pid: u16, due_ns: u64) {
    out.push(0x30 | (qos << 1));
    remaining_length(out, 2 + topic.len() + if qos > 0 { 2 } else { 0 } + PAYLOAD);
    out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    out.extend_from_slice(topic.as_bytes());
    if qos > 0 {
        out.extend_from_slice(&pid.to_be_bytes());
    }
    out.extend_from_slice(&due_ns.to_be_bytes());
    out.resize(out.len() + PAYLOAD - 8, b'x');
}

/// Splits whole packets (first byte, body) off a socket.
struct Reader {
    rd: OwnedReadHalf,
    buf: BytesMut,
}

impl Reader {
    /// Every whole packet buffered after one more read (at least one).
    async fn packets(&mut self, out: &mut Vec<(u8, BytesMut)>) -> std::io::Result<()> {
        loop {
            loop {
                let (mut len, mut i) = (0usize, 1);
                let complete = loop {
                    let Some(&b) = self.buf.get(i) else { break false };
                    len |= usize::from(b & 0x7f) << (7 * (i - 1));
                    i += 1;
                    if b & 0x80 == 0 {
                        break true;
                    }
                };
                if !complete || self.buf.len() < i + len {
                    break;
                }
                let first = self.buf[0];
                let mut p = self.buf.split_to(i + len);
                p.advance(i);
                out.push((first, p));
            }
            if !out.is_empty() {
                return Ok(());
            }
            self.buf.reserve(64 * 1024);
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

async fn connect(port: u16, id: &str) -> (Reader, OwnedWriteHalf) {
    connect_as(port, id, true).await
}

/// CONNECT with a clean session, or (`clean` false) a persistent one whose
/// QoS 1 messages the broker stores durably.
async fn connect_as(port: u16, id: &str, clean: bool) -> (Reader, OwnedWriteHalf) {
    let s = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    s.set_nodelay(true).unwrap();
    let (rd, mut wr) = s.into_split();
    let mut p = vec![0x10];
    remaining_length(&mut p, 12 + id.len());
    p.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, if clean { 0x02 } else { 0 }, 0, 60]);
    p.extend_from_slice(&(id.len() as u16).to_be_bytes());
    p.extend_from_slice(id.as_bytes());
    wr.write_all(&p).await.unwrap();
    let mut r = Reader { rd, buf: BytesMut::new() };
    let mut got = Vec::new();
    r.packets(&mut got).await.expect("CONNACK");
    assert_eq!(got[0].0, 0x20, "CONNACK");
    (r, wr)
}

async fn subscribe(r: &mut Reader, wr: &mut OwnedWriteHalf, filter: &str, qos: u8) {
    let mut p = vec![0x82];
    remaining_length(&mut p, 2 + 2 + filter.len() + 1);
    p.extend_from_slice(&[0, 1]);
    p.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    p.extend_from_slice(filter.as_bytes());
    p.push(qos);
    wr.write_all(&p).await.unwrap();
    let mut got = Vec::new();
    r.packets(&mut got).await.expect("SUBACK");
    assert_eq!(got[0].0, 0x90, "SUBACK");
}

/// Reads `n` publishes, acknowledging QoS 1; returns the latencies (ns) of
/// those due from `record_from` (ns since `epoch`) on, and how many arrived.
async fn subscriber(
    mut r: Reader,
    mut wr: OwnedWriteHalf,
    n: u64,
    epoch: Instant,
    record_from: u64,
) -> (Histogram<u64>, u64) {
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let (mut seen, mut packets, mut acks) = (0, Vec::new(), Vec::new());
    while seen < n {
        packets.clear();
        if r.packets(&mut packets).await.is_err() {
            break;
        }
        let now = epoch.elapsed().as_nanos() as u64;
        for (first, body) in &packets {
            if first >> 4 != 3 {
                continue;
            }
            let qos = (first >> 1) & 3;
            let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
            let mut at = 2 + tlen;
            if qos > 0 {
                acks.extend_from_slice(&[0x40, 2, body[at], body[at + 1]]);
                at += 2;
            }
            let Some(due) = body.get(at..at + 8).map(|b| u64::from_be_bytes(b.try_into().unwrap())) else { continue };
            if due >= record_from {
                let _ = hist.record(now.saturating_sub(due).max(1));
            }
            seen += 1;
        }
        if !acks.is_empty() {
            if wr.write_all(&acks).await.is_err() {
                break;
            }
            acks.clear();
        }
    }
    (hist, seen)
}

/// Sends `n` publishes (at `rate` per second if given, each stamped with
/// the time it was due); QoS 1 keeps `QOS1_WINDOW` unacknowledged.
async fn publisher(
    r: Reader,
    mut wr: OwnedWriteHalf,
    topic: String,
    qos: u8,
    n: u64,
    rate: Option<u64>,
    epoch: Instant,
) {
    let window = Arc::new(Semaphore::new(QOS1_WINDOW));
    let acker = (qos > 0).then(|| {
        let (window, mut r) = (window.clone(), r);
        tokio::spawn(async move {
            let mut packets = Vec::new();
            loop {
                packets.clear();
                if r.packets(&mut packets).await.is_err() {
                    return;
                }
                window.add_permits(packets.iter().filter(|(f, _)| f >> 4 == 4).count());
            }
        })
    });
    let start = epoch.elapsed();
    let mut out = Vec::with_capacity(64 * 1024);
    let mut pid = 0u16;
    for i in 0..n {
        let due = match rate {
            Some(rate) => {
                let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
                if !out.is_empty() {
                    wr.write_all(&out).await.unwrap();
                    out.clear();
                }
                pace::until(epoch + due).await;
                due
            }
            None => epoch.elapsed(),
        };
        if qos > 0 {
            let permit = if let Ok(p) = window.try_acquire() {
                p
            } else {
                if !out.is_empty() {
                    wr.write_all(&out).await.unwrap();
                    out.clear();
                }
                window.acquire().await.unwrap()
            };
            permit.forget();
            pid = pid.checked_add(1).unwrap_or(1);
        }
        publish(&mut out, &topic, qos, pid, due.as_nanos() as u64);
        if out.len() >= 32 * 1024 {
            wr.write_all(&out).await.unwrap();
            out.clear();
        }
    }
    wr.write_all(&out).await.unwrap();
    if qos > 0 {
        // All acknowledged before the publisher leaves.
        let _ = window.acquire_many(QOS1_WINDOW as u32).await;
    }
    if let Some(a) = acker {
        a.abort();
    }
}

/// Sends `n` publishes of `RUMQTTC_PAYLOAD` bytes through rumqttc at QoS 1
/// (the client's default in-flight window), as fast as they are
/// acknowledged; each starts with its send time.
async fn publisher_rumqttc(port: u16, id: String, topic: String, n: u64, epoch: Instant) {
    let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(60)).set_max_packet_size(64 * 1024, 64 * 1024);
    let (client, mut events) = rumqttc::AsyncClient::new(o, 1024);
    let sender = tokio::spawn(async move {
        let mut payload = vec![b'x'; RUMQTTC_PAYLOAD];
        for _ in 0..n {
            payload[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_be_bytes());
            client.publish(topic.as_str(), rumqttc::QoS::AtLeastOnce, false, payload.clone()).await.unwrap();
        }
        client
    });
    let mut acked = 0;
    while acked < n {
        match events.poll().await {
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => acked += 1,
            Ok(_) => {}
            Err(e) => panic!("rumqttc publisher: {e}"),
        }
    }
    let client = sender.await.unwrap();
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), events.poll()).await;
}

#[derive(Clone)]
struct Case {
    name: String,
    /// Publish through rumqttc (1 KiB payloads) instead of the raw client.
    rumqttc: bool,
    /// Subscribers keep persistent sessions (their QoS 1 messages are
    /// stored durably before the publisher's PUBACK).
    persistent: bool,
    qos: u8,
    publishers: u64,
    subscribers: u64,
    /// Messages per publisher.
    per_publisher: u64,
    rate: Option<u64>,
    warmup: Duration,
}

struct Outcome {
    other_cpu: f64,
    deliveries: u64,
    secs: f64,
    p50_ms: f64,
    p99_ms: f64,
    broker_cpu: f64,
    /// Broker CPU seconds over the case.
    broker_secs: f64,
    /// This process's (the clients') CPU seconds over the case.
    client_secs: f64,
    /// The whole machine's busy CPU over the case, as a share of all CPUs.
    busy_share: f64,
}

async fn run_case(server: &Server, case: &Case, round: usize) -> Outcome {
    let epoch = Instant::now();
    let tag = format!("{}-{round}", case.name);
    let mut subs = Vec::new();
    for s in 0..case.subscribers {
        let (mut r, mut wr) = connect_as(server.port, &format!("{tag}-sub{s}"), !case.persistent).await;
        subscribe(&mut r, &mut wr, &format!("bench/{tag}/#"), case.qos).await;
        subs.push((r, wr));
    }
    let mut pubs = Vec::new();
    for p in 0..case.publishers {
        pubs.push(connect(server.port, &format!("{tag}-pub{p}")).await);
    }
    let expected = case.publishers * case.per_publisher;
    let cpu_before = process_ticks(server.pid());
    let (self_before, busy_before) = (process_ticks(std::process::id()), machine_busy_ticks());
    let started = Instant::now();
    let record_from = (started - epoch + case.warmup).as_nanos() as u64;
    let sub_tasks: Vec<_> =
        subs.into_iter().map(|(r, wr)| tokio::spawn(subscriber(r, wr, expected, epoch, record_from))).collect();
    let pub_tasks: Vec<_> = pubs
        .into_iter()
        .enumerate()
        .map(|(i, (r, wr))| {
            let topic = format!("bench/{tag}/{i}");
            if case.rumqttc {
                drop((r, wr));
                let id = format!("{tag}-rumqttc{i}");
                tokio::spawn(publisher_rumqttc(server.port, id, topic, case.per_publisher, epoch))
            } else {
                tokio::spawn(publisher(r, wr, topic, case.qos, case.per_publisher, case.rate, epoch))
            }
        })
        .collect();
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let mut deliveries = 0;
    let joined = tokio::time::timeout(CASE_DEADLINE, async {
        for t in pub_tasks {
            t.await.unwrap();
        }
        for t in sub_tasks {
            let (h, seen) = t.await.unwrap();
            hist.add(h).unwrap();
            deliveries += seen;
        }
    })
    .await;
    let secs = started.elapsed().as_secs_f64();
    let broker = process_ticks(server.pid()) - cpu_before;
    let bench = process_ticks(std::process::id()) - self_before;
    let busy = machine_busy_ticks() - busy_before;
    let other_cpu = ((busy - broker - bench) / secs).max(0.0);
    let broker_cpu = broker / secs;
    if joined.is_err() {
        eprintln!("{} {}: not done within {CASE_DEADLINE:?}", server.name, case.name);
    }
    Outcome {
        other_cpu,
        deliveries,
        secs,
        p50_ms: hist.value_at_quantile(0.5) as f64 / 1e6,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1e6,
        broker_cpu,
        broker_secs: broker,
        client_secs: bench,
        busy_share: busy / secs / cpus() as f64,
    }
}

/// user+system CPU of a process in seconds, from /proc/PID/stat.
fn process_ticks(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let get = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (get(14) + get(15)) / 100.0
}

/// Waits (up to 15 s) until the machine is idle for 200 ms: a broker may
/// still be busy with the previous case (Mosquitto keeps a core busy for
/// seconds after a QoS 1 fan-in), which would land on the next half.
fn settle() {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let before = machine_busy_ticks();
        std::thread::sleep(Duration::from_millis(200));
        if machine_busy_ticks() - before < 0.02 {
            return;
        }
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// Busy (not idle, not iowait) CPU seconds of the whole machine, /proc/stat.
fn machine_busy_ticks() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    (v.iter().take(8).sum::<f64>() - v.get(3).unwrap_or(&0.0) - v.get(4).unwrap_or(&0.0)) / 100.0
}

fn main() {
    let opts = parse_args();
    let base = std::env::var_os("FERRY_BENCH_DIR").unwrap_or_else(|| env!("CARGO_TARGET_TMPDIR").into());
    std::fs::create_dir_all(&base).expect("benchmark scratch directory");
    let dir = tempfile::Builder::new().prefix("mqtt-bench-").tempdir_in(&base).expect("temp dir");
    let ferry = Server::ferry(dir.path());
    let mosquitto = Server::mosquitto(dir.path());
    let version = Command::new(std::env::var("MOSQUITTO").unwrap_or_else(|_| "/usr/sbin/mosquitto".into()))
        .arg("-h")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(str::to_string))
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "MQTT benchmark: ferry (release) vs {version}, {} CPUs, load average {}",
        cpus(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let n = opts.messages;
    let latency_n = (opts.rate as f64 * (opts.seconds + 0.5)) as u64;
    let mut cases = Vec::new();
    for qos in [0u8, 1] {
        let base = |name: &str, publishers, subscribers, per_publisher, rate| Case {
            name: format!("{name}-qos{qos}"),
            rumqttc: false,
            persistent: false,
            qos,
            publishers,
            subscribers,
            per_publisher,
            rate,
            warmup: Duration::ZERO,
        };
        cases.push(base("fan-in", 8, 1, n / 8, None));
        cases.push(base("fan-out", 1, 8, n / 8, None));
        cases.push(Case { warmup: Duration::from_millis(500), ..base("latency", 1, 1, latency_n, Some(opts.rate)) });
        let high = opts.rate * 4;
        cases.push(Case {
            warmup: Duration::from_millis(500),
            ..base(&format!("latency{}k", high / 1000), 1, 1, latency_n * 4, Some(high))
        });
    }
    for persistent in [false, true] {
        cases.push(Case {
            name: format!("rumqttc-qos1{}", if persistent { "-persist" } else { "" }),
            rumqttc: true,
            persistent,
            qos: 1,
            publishers: 1,
            subscribers: 1,
            per_publisher: if persistent { n / 4 } else { n },
            rate: None,
            warmup: Duration::ZERO,
        });
    }
    cases.retain(|c| opts.only.is_empty() || opts.only.iter().any(|o| c.name.contains(o.as_str())));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!(
        "{:<16} {:>12} {:>12} {:>7}   {:>17} {:>17}   {:>9} {:>9} {:>6}",
        "case",
        "ferry msg/s",
        "mosq msg/s",
        "ratio",
        "ferry p50/p99 ms",
        "mosq p50/p99 ms",
        "ferry cpu",
        "mosq cpu",
        "other"
    );
    for (i, case) in cases.iter().enumerate() {
        let order: [&Server; 2] = if i % 2 == 0 { [&ferry, &mosquitto] } else { [&mosquitto, &ferry] };
        let mut results = Vec::new();
        for s in order {
            let _ = Command::new("sync").status();
            settle();
            let o = runtime.block_on(run_case(s, case, i));
            results.push((s.name, o));
        }
        let get = |name: &str| &results.iter().find(|(n, _)| *n == name).unwrap().1;
        let (f, m) = (get("ferry"), get("mosquitto"));
        let expected = case.publishers * case.per_publisher * case.subscribers;
        for (name, o) in [("ferry", f), ("mosquitto", m)] {
            if o.deliveries != expected {
                println!("  ({name} delivered {} of {expected})", o.deliveries);
            }
        }
        let rate = |o: &Outcome| o.deliveries as f64 / o.secs;
        println!(
            "{:<16} {:>12.0} {:>12.0} {:>6.2}x   {:>7.2} / {:>7.2} {:>7.2} / {:>7.2}   {:>8.0}% {:>8.0}% {:>5.0}%",
            case.name,
            rate(f),
            rate(m),
            rate(f) / rate(m),
            f.p50_ms,
            f.p99_ms,
            m.p50_ms,
            m.p99_ms,
            f.broker_cpu * 100.0,
            m.broker_cpu * 100.0,
            f.other_cpu.max(m.other_cpu) * 100.0
        );
        if case.rumqttc {
            let per = |secs: f64, o: &Outcome| secs * 1e6 / o.deliveries.max(1) as f64;
            println!(
                "{:<16} broker CPU per message: ferry {:.2} us, mosquitto {:.2} us",
                "",
                per(f.broker_secs, f),
                per(m.broker_secs, m)
            );
            // The clients share the machine with the broker: at their CPU per
            // message plus the broker's, this rate would use every CPU.
            let cap = |o: &Outcome| cpus() as f64 * 1e6 / (per(o.broker_secs, o) + per(o.client_secs, o));
            println!(
                "{:<16} client CPU per message: {:.2} us (ferry run), {:.2} us (mosquitto run); machine busy {:.0}% / {:.0}%; \
                 client cap {:.0} / {:.0} msg/s",
                "",
                per(f.client_secs, f),
                per(m.client_secs, m),
                f.busy_share * 100.0,
                m.busy_share * 100.0,
                cap(f),
                cap(m)
            );
        }
    }
}

/// The broker binary: `FERRY_BIN` if set (to compare two builds in one
/// sitting), else the one cargo built with this bench.
fn ferry_bin() -> std::ffi::OsString {
    std::env::var_os("FERRY_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_ferry").into())
}
