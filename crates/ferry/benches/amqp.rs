//! AMQP 0-9-1 benchmark: the `ferry` binary and Debian's `rabbitmq-server`,
//! both on 127.0.0.1 and started here, driven by lapin in this process.
//!
//! `cargo bench -p ferry --bench amqp [-- --messages N --rate R --seconds S --window W]`
//!
//! `FERRY_BIN` picks the broker binary (default: the one cargo built with
//! the bench). The figures in docs/benchmarks.md come from a release broker
//! driven by a dev-profile client (the same client for both brokers):
//! `cargo build --release -p ferry --bin ferry && FERRY_BIN=$CARGO_TARGET_DIR/release/ferry cargo bench --profile dev -p ferry --bench amqp`
//!
//! For each broker, on a fresh durable queue, 1 KiB persistent messages
//! (delivery_mode 2):
//! 1. throughput: one publisher with confirms (at most `window` unconfirmed
//!    publishes) and one consumer (prefetch `window`, manual ack of each
//!    message) run together; messages / (last consumed - first published);
//! 2. latency at a fixed rate (default 2,000/s for 5 s), publisher with
//!    confirms, consumer with manual ack: each body starts with the time it
//!    was due to be sent (monotonic clock of this process); the consumer
//!    takes its receive time minus that. p50 / p99 / max.
//!
//! RabbitMQ runs with its own data directory, node name and ports
//! (RABBITMQ_* environment variables), so it neither needs nor touches a
//! system-wide installation's state; it is skipped (with a note) when
//! `rabbitmq-server` is not installed.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

#[path = "common/pace.rs"]
mod pace;

const BODY: usize = 1024;

struct Options {
    messages: u64,
    rate: u64,
    seconds: u64,
    window: usize,
}

fn options() -> Options {
    let mut o = Options { messages: 50_000, rate: 2_000, seconds: 5, window: 256 };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let v = args.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match (args[i].as_str(), v) {
            ("--messages", Some(v)) => o.messages = v,
            ("--rate", Some(v)) => o.rate = v,
            ("--seconds", Some(v)) => o.seconds = v,
            ("--window", Some(v)) => o.window = v as usize,
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_port(port: u16, what: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start listening on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Server {
    name: &'static str,
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_ferry(root: &Path) -> Server {
    let dir = root.join("ferry");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let exe =
        std::env::var_os("FERRY_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ferry")));
    let child = Command::new(exe)
        .args(["serve", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--kafka-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--amqp-listen", &format!("127.0.0.1:{port}")])
        // Free ports only: the defaults may be taken by other brokers.
        .args(["--mqtt-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .args(["--stomp-listen", "off", "--redis-listen", "off"])
        .env("FERRY_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start ferry");
    wait_port(port, "ferry", 30);
    Server { name: "ferry", child, port, dir }
}

fn start_rabbitmq(root: &Path) -> Option<Server> {
    let exe = ["/usr/lib/rabbitmq/bin/rabbitmq-server", "/usr/sbin/rabbitmq-server"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let dir = root.join("rabbitmq");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("enabled_plugins"), "[].\n").unwrap();
    std::fs::write(dir.join("rabbitmq.conf"), "loopback_users = none\n").unwrap();
    let port = free_port();
    let child = Command::new(exe)
        .env("HOME", &dir)
        .env("RABBITMQ_NODENAME", format!("ferrybench{}@localhost", std::process::id()))
        .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
        // The Erlang port mapper the node starts (and leaves running) listens on
        // loopback only, like everything the bench starts.
        .env("ERL_EPMD_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_NODE_PORT", port.to_string())
        .env("RABBITMQ_DIST_PORT", free_port().to_string())
        .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
        .env("RABBITMQ_LOG_BASE", dir.join("log"))
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
        .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    wait_port(port, "rabbitmq-server", 120);
    Some(Server { name: "rabbitmq", child, port, dir })
}

async fn connect(port: u16) -> Connection {
    let uri = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match Connection::connect(&uri, ConnectionProperties::default()).await {
            Ok(c) => return c,
            Err(e) => {
                assert!(Instant::now() < deadline, "connect {uri}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn body(sent_ns: u64) -> Vec<u8> {
    let mut b = vec![b'x'; BODY];
    b[..8].copy_from_slice(&sent_ns.to_be_bytes());
    b
}

/// Consumes `n` messages with manual ack; returns latencies (ns) and the
/// time the last one arrived.
async fn consume(conn: &Connection, queue: &str, n: u64, window: usize, epoch: Instant) -> (Vec<u64>, Instant) {
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(window.min(u16::MAX as usize) as u16, BasicQosOptions::default()).await.unwrap();
    let mut c =
        ch.basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await.unwrap();
    let mut lat = Vec::with_capacity(n as usize);
    let mut last = Instant::now();
    while (lat.len() as u64) < n {
        let d = tokio::time::timeout(Duration::from_secs(60), c.next()).await.expect("delivery").unwrap().unwrap();
        let now = epoch.elapsed().as_nanos() as u64;
        let mut t = [0u8; 8];
        t.copy_from_slice(&d.data[..8]);
        lat.push(now.saturating_sub(u64::from_be_bytes(t)));
        last = Instant::now();
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    (lat, last)
}

/// Publishes `n` messages with confirms, at most `window` unconfirmed;
/// with `rate`, each is due at i / rate seconds.
async fn publish(conn: &Connection, queue: &str, n: u64, window: usize, rate: Option<u64>, epoch: Instant) -> Instant {
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let props = BasicProperties::default().with_delivery_mode(2);
    let first = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(window));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let due = match rate {
            Some(r) => {
                let due = first + Duration::from_nanos(i * 1_000_000_000 / r);
                pace::until(due).await;
                due
            }
            None => Instant::now(),
        };
        let permit = sem.clone().acquire_owned().await.unwrap();
        let sent = due.duration_since(epoch).as_nanos() as u64;
        let confirm = ch
            .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), &body(sent), props.clone())
            .await
            .unwrap();
        tasks.spawn(async move {
            let c = confirm.await.expect("confirm");
            assert!(c.is_ack());
            drop(permit);
        });
    }
    while tasks.join_next().await.is_some() {}
    first
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1e6
}

/// User + system CPU seconds of a process (and its reaped children).
fn cpu_secs(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the command name, which ends with the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    // utime, stime, cutime, cstime are fields 14-17 (1-based), i.e. 11-14 here.
    let ticks: u64 = f.get(11..15).map_or(0, |s| s.iter().sum());
    ticks as f64 / 100.0
}

/// The broker's CPU: its process and, for rabbitmq-server (a script), the
/// Erlang VM it starts.
fn process_tree_cpu(pid: u32) -> f64 {
    let mut total = cpu_secs(&pid.to_string());
    if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        for c in children.split_whitespace() {
            total += process_tree_cpu(c.parse().unwrap_or(0));
        }
    }
    total
}

/// A lean AMQP client for the second throughput phase: frames encoded once
/// with Ferry's frame helpers and amq-protocol, pipelined publishes, acks
/// with `multiple` every 64 deliveries. Far cheaper per message than lapin,
/// so the brokers, not the client, use most of the CPU.
mod raw {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    use bytes::{Bytes, BytesMut};
    use ferry_amqp::frame::{self, FrameReader};
    use lapin::protocol::basic::{AMQPProperties, gen_properties};
    use lapin::protocol::{AMQPClass, basic, channel, confirm, connection, parse_class};
    use lapin::types::{FieldTable, LongString};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

    fn method(ch: u16, m: AMQPClass) -> Bytes {
        let mut b = BytesMut::new();
        frame::put_method(&mut b, ch, &m).unwrap();
        b.freeze()
    }

    async fn next_method(rd: &mut FrameReader<OwnedReadHalf>) -> AMQPClass {
        loop {
            let f = rd.next(0).await.expect("frame");
            if f.kind == frame::FRAME_METHOD {
                return parse_class(&f.payload[..]).unwrap().1;
            }
        }
    }

    /// Connection with channel 1 open.
    async fn open(port: u16) -> (FrameReader<OwnedReadHalf>, OwnedWriteHalf) {
        let (rd, mut wr) = TcpStream::connect(("127.0.0.1", port)).await.unwrap().into_split();
        let mut rd = FrameReader::new(rd);
        wr.write_all(frame::PROTOCOL_HEADER).await.unwrap();
        next_method(&mut rd).await;
        let ok = connection::StartOk {
            client_properties: FieldTable::default(),
            mechanism: "PLAIN".into(),
            response: LongString::from("\0guest\0guest"),
            locale: "en_US".into(),
        };
        wr.write_all(&method(0, AMQPClass::Connection(connection::AMQPMethod::StartOk(ok)))).await.unwrap();
        next_method(&mut rd).await;
        let tune = connection::TuneOk { channel_max: 8, frame_max: 131072, heartbeat: 0 };
        wr.write_all(&method(0, AMQPClass::Connection(connection::AMQPMethod::TuneOk(tune)))).await.unwrap();
        let open = connection::Open { virtual_host: "/".into() };
        wr.write_all(&method(0, AMQPClass::Connection(connection::AMQPMethod::Open(open)))).await.unwrap();
        next_method(&mut rd).await;
        wr.write_all(&method(1, AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})))).await.unwrap();
        next_method(&mut rd).await;
        (rd, wr)
    }

    /// Publishes `n` persistent 1 KiB messages with confirms, at most
    /// `window` unconfirmed; returns when the first was sent and when all
    /// were confirmed.
    pub async fn publish(port: u16, queue: &str, n: u64, window: u64) -> Instant {
        let (mut rd, mut wr) = open(port).await;
        let sel = confirm::Select { nowait: false };
        wr.write_all(&method(1, AMQPClass::Confirm(confirm::AMQPMethod::Select(sel)))).await.unwrap();
        next_method(&mut rd).await;
        let props = AMQPProperties::default().with_delivery_mode(2);
        let (raw_props, _) = gen_properties(&props)(Vec::new().into()).unwrap().into_inner();
        let publish =
            basic::Publish { exchange: "".into(), routing_key: queue.into(), mandatory: false, immediate: false };
        let mut one = BytesMut::new();
        frame::put_method(&mut one, 1, &AMQPClass::Basic(basic::AMQPMethod::Publish(publish))).unwrap();
        frame::put_content(&mut one, 1, &raw_props, &[b'x'; super::BODY], 131072);
        let one = one.freeze();
        let confirmed = Arc::new(AtomicU64::new(0));
        let notify = Arc::new(tokio::sync::Notify::new());
        let reader = {
            let (confirmed, notify) = (confirmed.clone(), notify.clone());
            tokio::spawn(async move {
                while confirmed.load(Ordering::Acquire) < n {
                    match next_method(&mut rd).await {
                        AMQPClass::Basic(basic::AMQPMethod::Ack(a)) => {
                            // Both brokers confirm in order: a single ack is
                            // the next one, a multiple one covers all below.
                            let upto = if a.multiple {
                                a.delivery_tag
                            } else {
                                a.delivery_tag.max(confirmed.load(Ordering::Acquire) + 1)
                            };
                            confirmed.fetch_max(upto, Ordering::AcqRel);
                            notify.notify_one();
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
            })
        };
        let first = Instant::now();
        let mut sent = 0u64;
        let mut buf = BytesMut::with_capacity(256 * 1024);
        while sent < n {
            let room = window.saturating_sub(sent - confirmed.load(Ordering::Acquire)).min(n - sent).min(64);
            if room == 0 {
                notify.notified().await;
                continue;
            }
            for _ in 0..room {
                buf.extend_from_slice(&one);
            }
            sent += room;
            wr.write_all(&buf).await.unwrap();
            buf.clear();
        }
        reader.await.unwrap();
        first
    }

    /// Consumes `n` messages with manual acks (`multiple`, every 64, and at
    /// the end); returns when the last arrived.
    pub async fn consume(port: u16, queue: &str, n: u64, prefetch: u16) -> Instant {
        let (mut rd, mut wr) = open(port).await;
        let qos = basic::Qos { prefetch_count: prefetch, global: false };
        wr.write_all(&method(1, AMQPClass::Basic(basic::AMQPMethod::Qos(qos)))).await.unwrap();
        next_method(&mut rd).await;
        let consume = basic::Consume {
            queue: queue.into(),
            consumer_tag: "raw".into(),
            no_local: false,
            no_ack: false,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::default(),
        };
        wr.write_all(&method(1, AMQPClass::Basic(basic::AMQPMethod::Consume(consume)))).await.unwrap();
        let (mut got, mut last_tag, mut unacked) = (0u64, 0u64, 0u64);
        loop {
            let f = rd.next(0).await.expect("frame");
            match f.kind {
                frame::FRAME_METHOD => {
                    if let Ok((_, AMQPClass::Basic(basic::AMQPMethod::Deliver(d)))) = parse_class(&f.payload[..]) {
                        last_tag = d.delivery_tag;
                    }
                }
                frame::FRAME_BODY => {
                    got += 1;
                    unacked += 1;
                    if unacked >= 64 || got == n {
                        let ack = basic::Ack { delivery_tag: last_tag, multiple: true };
                        wr.write_all(&method(1, AMQPClass::Basic(basic::AMQPMethod::Ack(ack)))).await.unwrap();
                        unacked = 0;
                    }
                    if got == n {
                        return Instant::now();
                    }
                }
                _ => {}
            }
        }
    }
}

struct Figures {
    /// CPU seconds per 10,000 messages in the throughput phase.
    broker_cpu: f64,
    client_cpu: f64,
    throughput: f64,
    /// The same with the lean client.
    raw_throughput: f64,
    raw_broker_cpu: f64,
    raw_client_cpu: f64,
    p50: f64,
    p99: f64,
    max: f64,
}

async fn run(server: &Server, o: &Options) -> Figures {
    let epoch = Instant::now();
    let pubc = connect(server.port).await;
    let conc = connect(server.port).await;
    let setup = pubc.create_channel().await.unwrap();
    for q in ["bench-throughput", "bench-latency"] {
        let opts = QueueDeclareOptions { durable: true, ..Default::default() };
        setup.queue_declare(q.into(), opts, FieldTable::default()).await.unwrap();
        setup.queue_purge(q.into(), QueuePurgeOptions::default()).await.unwrap();
    }
    let _ = Command::new("sync").status();
    let (b0, c0) = (process_tree_cpu(server.child.id()), cpu_secs("self"));
    let (consumed, first) = tokio::join!(
        consume(&conc, "bench-throughput", o.messages, o.window, epoch),
        publish(&pubc, "bench-throughput", o.messages, o.window, None, epoch)
    );
    let throughput = o.messages as f64 / consumed.1.duration_since(first).as_secs_f64();
    let per = 10_000.0 / o.messages as f64;
    let (broker_cpu, client_cpu) = ((process_tree_cpu(server.child.id()) - b0) * per, (cpu_secs("self") - c0) * per);
    let _ = Command::new("sync").status();
    let (b0, c0) = (process_tree_cpu(server.child.id()), cpu_secs("self"));
    let (last, first) = tokio::join!(
        raw::consume(server.port, "bench-throughput", o.messages, o.window.min(u16::MAX as usize) as u16),
        raw::publish(server.port, "bench-throughput", o.messages, o.window as u64)
    );
    let raw_throughput = o.messages as f64 / last.duration_since(first).as_secs_f64();
    let (raw_broker_cpu, raw_client_cpu) =
        ((process_tree_cpu(server.child.id()) - b0) * per, (cpu_secs("self") - c0) * per);
    let _ = Command::new("sync").status();
    let n = o.rate * o.seconds;
    let ((mut lat, _), _) = tokio::join!(
        consume(&conc, "bench-latency", n, o.window, epoch),
        publish(&pubc, "bench-latency", n, o.window, Some(o.rate), epoch)
    );
    // The first second is warm-up.
    let lat = lat.split_off((o.rate as usize).min(lat.len() / 2));
    let mut lat = lat;
    lat.sort_unstable();
    let _ = pubc.close(200, "bye".into()).await;
    let _ = conc.close(200, "bye".into()).await;
    Figures {
        broker_cpu,
        client_cpu,
        throughput,
        raw_throughput,
        raw_broker_cpu,
        raw_client_cpu,
        p50: pct(&lat, 0.5),
        p99: pct(&lat, 0.99),
        max: pct(&lat, 1.0),
    }
}

fn main() {
    let o = options();
    let root = std::env::var_os("FERRY_BENCH_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("amqp-bench-{}", std::process::id()))
    });
    std::fs::create_dir_all(&root).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    println!(
        "AMQP benchmark: {} messages of {BODY} B, persistent, durable queue, confirm window and prefetch {}; latency at {}/s for {} s",
        o.messages, o.window, o.rate, o.seconds
    );
    let mut results = Vec::new();
    {
        let ferry = start_ferry(&root);
        results.push((ferry.name, rt.block_on(run(&ferry, &o))));
    }
    match start_rabbitmq(&root) {
        Some(rabbit) => results.push((rabbit.name, rt.block_on(run(&rabbit, &o)))),
        None => println!("rabbitmq-server not installed: RabbitMQ skipped (apt-get install rabbitmq-server)"),
    }
    println!("| broker | client | msg/s (publish+consume) | broker CPU s / 10k msgs | client CPU s / 10k msgs |");
    println!("|---|---|---|---|---|");
    for (name, f) in &results {
        println!("| {name} | lapin | {:.0} | {:.2} | {:.2} |", f.throughput, f.broker_cpu, f.client_cpu);
        println!("| {name} | lean | {:.0} | {:.2} | {:.2} |", f.raw_throughput, f.raw_broker_cpu, f.raw_client_cpu);
    }
    println!();
    println!("| broker | p50 ms | p99 ms | max ms | (lapin, {}/s) |", o.rate);
    println!("|---|---|---|---|---|");
    for (name, f) in &results {
        println!("| {name} | {:.2} | {:.2} | {:.2} | |", f.p50, f.p99, f.max);
    }
    if let [(_, f), (_, r)] = &results[..] {
        println!(
            "ferry / rabbitmq: throughput x{:.2} (lapin), x{:.2} (lean client); broker CPU per message x{:.2} (lean); p99 x{:.2} (lower is better)",
            f.throughput / r.throughput,
            f.raw_throughput / r.raw_throughput,
            f.raw_broker_cpu / r.raw_broker_cpu,
            f.p99 / r.p99
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}
