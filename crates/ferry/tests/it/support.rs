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
    /// The AMQP listener's port.
    pub amqp_port: u16,
    data: PathBuf,
    /// More `ferry serve` flags.
    args: Vec<String>,
    /// More TOML for the config file.
    toml: String,
}

impl Broker {
    pub fn start(data: &Path) -> Broker {
        Broker::start_with(data, &[])
    }

    pub fn start_with(data: &Path, args: &[&str]) -> Broker {
        let port = free_port();
        let args = args.iter().map(|a| a.to_string()).collect();
        let amqp_port = free_port();
        let mut b = Broker { child: None, port, amqp_port, data: data.to_path_buf(), args, toml: String::new() };
        b.spawn();
        b
    }

    /// With `toml` added to the config file (sections other than `[kafka]`).
    pub fn start_with_toml(data: &Path, toml: &str) -> Broker {
        let (port, amqp_port) = (free_port(), free_port());
        let mut b =
            Broker { child: None, port, amqp_port, data: data.to_path_buf(), args: Vec::new(), toml: toml.to_string() };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
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
        let child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["serve", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--kafka-listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--amqp-listen", &format!("127.0.0.1:{}", self.amqp_port)])
            .args(&self.args)
            .env("FERRY_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start ferry");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        for port in [self.port, self.amqp_port] {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "ferry did not start listening");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// amqp://guest:guest@127.0.0.1:<amqp port>/%2f
    pub fn amqp_uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGTERM and wait: a clean shutdown.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let status = c.wait().expect("wait for ferry");
            assert!(status.success(), "ferry exited with {status}");
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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
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
