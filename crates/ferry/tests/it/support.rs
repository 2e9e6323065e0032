//! Starts and stops the real `ferry` binary on a free port.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{Message, Offset, TopicPartitionList};

pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    /// The HTTP admin API and /metrics.
    pub http_port: u16,
    /// MQTT listener port (every test broker gets its own).
    pub mqtt_port: u16,
    /// The AMQP listener's port.
    pub amqp_port: u16,
    /// MQTT over WebSocket listener port (path /mqtt).
    pub mqtt_ws_port: u16,
    /// The STOMP listener's port.
    pub stomp_port: u16,
    /// The Redis listener's port.
    pub redis_port: u16,
    /// A second Kafka listener, SASL_PLAINTEXT, when set (`with_sasl_listener`).
    pub sasl_port: Option<u16>,
    /// The cluster port (`--cluster-listen`): every broker its own, as
    /// tests run in parallel and the default 9192 would collide.
    pub cluster_port: u16,
    /// The cluster port is named in a `--controller-quorum`: a retry after
    /// a port was taken keeps it.
    pub(crate) fixed_cluster_port: bool,
    data: PathBuf,
    /// More `ferry serve` flags.
    pub(crate) args: Vec<String>,
    /// More TOML for the config file.
    pub toml: String,
    /// Where the broker's stderr goes (appended over restarts); `None`:
    /// the test's stderr.
    pub(crate) log: Option<PathBuf>,
    /// `FERRY_LOG` when `FERRY_TEST_LOG` is not set.
    pub(crate) log_level: &'static str,
    /// Listening once: later spawns (restarts) keep the ports.
    started: bool,
}

/// Which ports a start waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum WaitFor {
    /// Every listener: the broker serves.
    AllPorts,
    /// The HTTP listener only (a node still waiting for its quorum).
    Http,
}

impl Broker {
    pub fn start(data: &Path) -> Broker {
        Broker::start_with(data, &[])
    }

    pub fn start_with(data: &Path, args: &[&str]) -> Broker {
        let mut b = Broker::prepare(data, args, "");
        b.spawn();
        b
    }

    /// A broker whose config file also holds `toml` (e.g. an `[mqtt]` or `[amqp]` section).
    pub fn start_with_toml(data: &Path, toml: &str) -> Broker {
        let mut b = Broker::prepare(data, &[], toml);
        b.spawn();
        b
    }

    /// A broker with free ports, not started.
    pub fn prepare(data: &Path, args: &[&str], toml: &str) -> Broker {
        Broker {
            child: None,
            port: free_port(),
            http_port: free_port(),
            mqtt_port: free_port(),
            amqp_port: free_port(),
            mqtt_ws_port: free_port(),
            stomp_port: free_port(),
            redis_port: free_port(),
            sasl_port: None,
            cluster_port: free_port(),
            fixed_cluster_port: false,
            data: data.to_path_buf(),
            args: args.iter().map(ToString::to_string).collect(),
            toml: toml.to_string(),
            log: None,
            log_level: "warn",
            started: false,
        }
    }

    pub(crate) fn spawn(&mut self) {
        self.spawn_waiting(WaitFor::AllPorts);
    }

    /// Starts the process and waits until `what` listens.
    pub(crate) fn spawn_waiting(&mut self, what: WaitFor) {
        self.launch();
        self.wait_listening(what);
    }

    /// Waits until the launched process listens on `what`. A port
    /// free_port() found free can be taken before the broker binds it
    /// (tests run in parallel; the MQTT scale test opens 11,000 client
    /// sockets): on a first start the broker then tries other ports.
    pub(crate) fn wait_listening(&mut self, what: WaitFor) {
        let mut tries = 1;
        while !self.listening(what) {
            if self.started || tries == 4 {
                break;
            }
            tries += 1;
            self.port = free_port();
            self.http_port = free_port();
            self.mqtt_port = free_port();
            self.mqtt_ws_port = free_port();
            self.stomp_port = free_port();
            self.redis_port = free_port();
            self.amqp_port = free_port();
            if self.sasl_port.is_some() {
                self.sasl_port = Some(free_port());
            }
            if !self.fixed_cluster_port {
                self.cluster_port = free_port();
            }
            self.launch();
        }
        assert!(self.child.is_some(), "ferry did not start{}", self.log_tail());
        self.started = true;
    }

    /// Adds a SASL_PLAINTEXT Kafka listener on a port of its own (the
    /// plain one stays on `port`).
    pub fn with_sasl_listener(mut self) -> Broker {
        self.sasl_port = Some(free_port());
        self
    }

    /// `--kafka-listen`: the plain listener, and the SASL one if asked for.
    fn kafka_listen(&self) -> String {
        match self.sasl_port {
            Some(sasl) => format!("PLAINTEXT://127.0.0.1:{},SASL_PLAINTEXT://127.0.0.1:{sasl}", self.port),
            None => format!("127.0.0.1:{}", self.port),
        }
    }

    /// `bootstrap.servers` of the SASL listener.
    pub fn sasl_bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.sasl_port.expect("a SASL listener"))
    }

    /// The process, started with the current ports.
    pub(crate) fn launch(&mut self) {
        assert!(self.child.is_none(), "ferry runs already");
        self.child = Some(self.command().spawn().expect("start ferry"));
    }

    fn command(&self) -> Command {
        // Groups form without Kafka's 3 s initial rebalance delay in tests.
        let config = self.data.join("ferry-test.toml");
        std::fs::create_dir_all(&self.data).unwrap();
        std::fs::write(
            &config,
            format!(
                "[kafka]\ngroup_initial_rebalance_delay_ms = 0\ngroup_consumer_heartbeat_interval_ms = 500\n{}",
                self.toml
            ),
        )
        .unwrap();
        let mut cmd = Command::new(ferry_bin());
        cmd.args(["serve", "--config"]).arg(&config).arg("--data-dir").arg(&self.data);
        // A listener flag the test gives itself (e.g. a list with a tls://
        // listener) replaces the default one: clap takes a flag once.
        let addr = |port: u16| format!("127.0.0.1:{port}");
        for (flag, value) in [
            ("--kafka-listen", self.kafka_listen()),
            ("--http-listen", addr(self.http_port)),
            ("--mqtt-listen", addr(self.mqtt_port)),
            ("--amqp-listen", addr(self.amqp_port)),
            ("--mqtt-ws-listen", addr(self.mqtt_ws_port)),
            ("--stomp-listen", addr(self.stomp_port)),
            ("--redis-listen", addr(self.redis_port)),
            ("--cluster-listen", addr(self.cluster_port)),
        ] {
            if !self.args.iter().any(|a| a == flag) {
                cmd.args([flag, &value]);
            }
        }
        cmd.args(&self.args)
            // FERRY_TEST_LOG=debug shows the broker's log in a failing test.
            .env("FERRY_LOG", std::env::var("FERRY_TEST_LOG").unwrap_or_else(|_| self.log_level.into()))
            .env_remove("FERRY_CONTROLLER_QUORUM")
            .env_remove("FERRY_CLUSTER_LISTEN")
            .env_remove("FERRY_NODE_ID")
            .stdout(Stdio::null());
        if let Some(log) = &self.log {
            let file = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("broker log file");
            cmd.stderr(file);
        }
        cmd
    }

    /// Waits until the process listens on `what`; `false` if it exited
    /// first (a port taken meanwhile).
    fn listening(&mut self, what: WaitFor) -> bool {
        let ports = match what {
            WaitFor::AllPorts => {
                let mut ports = vec![
                    self.port,
                    self.http_port,
                    self.mqtt_port,
                    self.mqtt_ws_port,
                    self.amqp_port,
                    self.stomp_port,
                    self.redis_port,
                ];
                ports.extend(self.sasl_port);
                ports
            }
            WaitFor::Http => vec![self.http_port],
        };
        // A cluster node waits for its quorum and elects a leader first.
        let deadline = Instant::now() + Duration::from_secs(if self.fixed_cluster_port { 60 } else { 30 });
        while ports.iter().any(|p| TcpStream::connect(("127.0.0.1", *p)).is_err()) {
            if let Some(c) = self.child.as_mut()
                && matches!(c.try_wait(), Ok(Some(_)))
            {
                self.child = None;
                return false;
            }
            assert!(Instant::now() < deadline, "ferry did not start listening{}", self.log_tail());
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Starts a process that must exit by itself (a refused start) within
    /// `within`; returns its exit status and stderr.
    pub fn run_to_exit(&mut self, within: Duration) -> (std::process::ExitStatus, String) {
        let mut cmd = self.command();
        let mut child = cmd.stderr(Stdio::piped()).spawn().expect("start ferry");
        let mut stderr = child.stderr.take().expect("stderr");
        // Drain stderr on a thread so a chatty process never blocks on it.
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
            text
        });
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for ferry") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("ferry did not exit within {within:?}: {}", reader.join().unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        (status, reader.join().unwrap_or_default())
    }

    /// Whether the process is running (it has not exited).
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The broker's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// amqp://guest:guest@127.0.0.1:<amqp port>/%2f
    pub fn amqp_uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    /// The broker's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What the broker wrote to its log file so far (empty without one).
    pub fn log_text(&self) -> String {
        self.log.as_ref().and_then(|l| std::fs::read_to_string(l).ok()).unwrap_or_default()
    }

    /// The last lines of the log file, for a failure message.
    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        if text.is_empty() {
            return String::new();
        }
        let lines: Vec<&str> = text.lines().collect();
        format!("\n--- {} ---\n{}", self.data.display(), lines[lines.len().saturating_sub(40)..].join("\n"))
    }

    /// SIGTERM and wait (at most 60 s): a clean shutdown.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(60);
            let status = loop {
                if let Some(status) = c.try_wait().expect("wait for ferry") {
                    break status;
                }
                if Instant::now() >= deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!("ferry did not stop within 60 s of SIGTERM{}", self.log_tail());
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            assert!(status.success(), "ferry exited with {status}{}", self.log_tail());
        }
    }

    /// SIGKILL: a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill -9");
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn start_again(&mut self) {
        assert!(self.child.is_none());
        self.spawn();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A port nothing listens on, never handed out before in this test process,
/// and below the kernel's ephemeral range (32768 and up): a restarted broker
/// gets its port back, and a client dialing it while it was down must not
/// have been given that very port as its own local end (loopback
/// self-connect), nor may two parallel tests' brokers be told to listen on
/// the same port.
/// `FERRY_TEST_PORTS=LOW-HIGH` (inclusive, below 32768) narrows the range,
/// so that long runs beside other test suites keep to ports of their own.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let (low, span) = port_range();
    let seed = std::process::id().wrapping_mul(7919)
        ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for i in 0..span {
        let port = u16::try_from(low + (seed.wrapping_add(i.wrapping_mul(7))) % span).expect("below 32768");
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free port in {low}..{}", low + span);
}

/// The ports [`free_port`] hands out: (first, how many).
fn port_range() -> (u32, u32) {
    const DEFAULT: (u32, u32) = (12_000, 20_000);
    let Some(range) = std::env::var("FERRY_TEST_PORTS").ok().filter(|r| !r.is_empty()) else { return DEFAULT };
    let parsed =
        range.split_once('-').and_then(|(l, h)| Some((l.trim().parse::<u32>().ok()?, h.trim().parse::<u32>().ok()?)));
    match parsed {
        Some((low, high)) if low >= 1024 && low <= high && high < 32_768 => (low, high - low + 1),
        _ => panic!("FERRY_TEST_PORTS is LOW-HIGH, 1024 <= LOW <= HIGH < 32768: {range:?}"),
    }
}

/// The `ferry` binary the tests start: this build's, or `FERRY_BIN` (a
/// copy kept for a long run, so that rebuilding the workspace meanwhile
/// does not change the binary its restarted nodes run).
pub fn ferry_bin() -> std::path::PathBuf {
    std::env::var_os("FERRY_BIN").map_or_else(|| env!("CARGO_BIN_EXE_ferry").into(), Into::into)
}

pub fn config(b: &Broker) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", b.bootstrap()).set("broker.address.family", "v4");
    c
}

pub fn producer(b: &Broker, extra: &[(&str, &str)]) -> FutureProducer {
    let mut c = config(b);
    c.set("message.timeout.ms", "30000");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().expect("producer")
}

pub fn admin(b: &Broker) -> AdminClient<DefaultClientContext> {
    config(b).create().expect("admin client")
}

pub async fn create_topic(b: &Broker, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let r = admin(b).create_topics(&[t], &AdminOptions::new()).await.expect("create_topics");
    r[0].as_ref().expect("topic created");
}

/// Reads every record of `topic`'s partitions from the start, with
/// assigned partitions (no consumer group), until `expected` arrived.
/// Returns (partition, offset, key, value).
pub fn consume_all(b: &Broker, topic: &str, partitions: i32, expected: usize) -> Vec<(i32, i64, Vec<u8>, Vec<u8>)> {
    let consumer: BaseConsumer =
        config(b).set("group.id", "unused-assign-only").set("enable.auto.commit", "false").create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::with_capacity(expected);
    let deadline = Instant::now() + Duration::from_secs(120);
    while out.len() < expected && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.expect("consume");
            out.push((
                m.partition(),
                m.offset(),
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
            ));
        }
    }
    // Nothing beyond what was expected arrives.
    if let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) {
        panic!("unexpected extra record at {}:{}", m.partition(), m.offset());
    }
    out
}

/// A consumer in `group` subscribed to `topic`.
pub fn group_consumer(b: &Broker, group: &str, topic: &str, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut c = config(b);
    c.set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    let consumer: BaseConsumer = c.create().expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// Produces `values` to `topic` (keyed by value) and waits for them.
pub async fn produce_values(b: &Broker, topic: &str, values: impl IntoIterator<Item = u32>) {
    let p = producer(b, &[("acks", "all"), ("linger.ms", "2")]);
    let mut deliveries = Vec::new();
    for v in values {
        let s = v.to_string();
        deliveries.push(p.send_result(rdkafka::producer::FutureRecord::to(topic).key(&s).payload(&s)).unwrap());
    }
    for d in deliveries {
        d.await.unwrap().unwrap();
    }
}

/// The value of a message produced by `produce_values`.
pub fn value_of(m: &rdkafka::message::BorrowedMessage<'_>) -> u32 {
    std::str::from_utf8(m.payload().unwrap()).unwrap().parse().unwrap()
}

/// One HTTP/1.1 request to the broker's admin listener: (status, body).
pub fn http(b: &Broker, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let (status, _, body) = http_with(b, method, path, body, "");
    (status, body)
}

/// `http` with extra header lines (each ending in CRLF); also returns the
/// response head.
pub fn http_with(b: &Broker, method: &str, path: &str, body: Option<&str>, headers: &str) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", b.http_port)).expect("connect to the HTTP listener");
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n\
         {headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, rest) = text.split_once("\r\n\r\n").expect("HTTP head");
    let status: u16 = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status code");
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut out = String::new();
        let mut rest = rest;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        rest.to_string()
    };
    (status, head.to_string(), body)
}

/// `http` for a JSON answer.
pub fn http_json(b: &Broker, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let (status, text) = http(b, method, path, body);
    let v = if text.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"))
    };
    (status, v)
}

/// Polls `f` until it returns true (at most 30 s).
pub fn eventually(what: &str, f: impl FnMut() -> bool) {
    eventually_within(what, Duration::from_secs(30), f);
}

/// Polls `f` until it returns true, at most `limit`.
pub fn eventually_within(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Ends the whole test run if the returned guard is still alive after
/// `limit`: for tests whose client calls can block forever inside
/// librdkafka, where a stuck thread cannot be unwound. It kills this
/// process's child processes (the brokers) first, so none is left behind.
pub fn watchdog(what: &'static str, limit: Duration) -> Watchdog {
    watchdog_naming(what, limit, String::new)
}

/// [`watchdog`], whose last words also say what `blocked` names (the
/// client calls still in progress).
pub fn watchdog_naming(
    what: &'static str,
    limit: Duration,
    blocked: impl FnOnce() -> String + Send + 'static,
) -> Watchdog {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if rx.recv_timeout(limit) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            eprintln!("{what}: still running after {limit:?}; killing its brokers and ending the run");
            let blocked = blocked();
            if !blocked.is_empty() {
                eprintln!("{what}: blocked: {blocked}");
            }
            kill_children();
            std::process::exit(101);
        }
    });
    Watchdog { _disarm: tx }
}

/// Dropping it disarms the [`watchdog`].
pub struct Watchdog {
    _disarm: std::sync::mpsc::Sender<()>,
}

/// SIGKILL to every process whose parent is this one.
fn kill_children() {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    for pid in entries.flatten().filter_map(|e| e.file_name().into_string().ok()) {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // "pid (comm) state ppid ...": comm may hold spaces, so split after ')'.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1));
        if ppid == Some(me.as_str()) {
            let _ = Command::new("kill").args(["-9", &pid]).status();
        }
    }
}
