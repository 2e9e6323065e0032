//! Scale, bounded in time (60 s): 10,000 idle MQTT connections and 1,000
//! publishers against one broker, on raw sockets so the test's own cost
//! stays small. Prints the broker's resident memory per idle connection
//! (VmRSS from /proc; docs/benchmarks.md, "## MQTT").

use std::time::{Duration, Instant};

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::support::Broker;

const IDLE: usize = 10_000;
const PUBLISHERS: usize = 1_000;
const PER_PUBLISHER: usize = 10;

/// VmRSS of `pid`, bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// user+system CPU seconds of `pid` (/proc/PID/stat).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let get = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (get(14) + get(15)) / 100.0
}

/// A 3.1.1 clean-session connection with keepalive 0 (never timed out).
async fn connect(port: u16, id: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut p = vec![0x10, (12 + id.len()) as u8, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 0, 0, id.len() as u8];
    p.extend_from_slice(id.as_bytes());
    s.write_all(&p).await.unwrap();
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).await.unwrap();
    assert_eq!(ack, [0x20, 2, 0, 0], "{id}");
    s
}

/// Opens `n` connections named `{prefix}{i}`, 500 at a time: more than
/// std's accept queue of 128, which the MQTT listener raises (with 128, SYNs
/// are dropped and retried after 1 s, and this phase took 19 s, not 0.5 s).
async fn connect_many(port: u16, prefix: &str, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(500) {
        let mut set = JoinSet::new();
        for i in start..(start + 500).min(n) {
            let id = format!("{prefix}{i}");
            set.spawn(async move { connect(port, &id).await });
        }
        while let Some(s) = set.join_next().await {
            out.push(s.unwrap());
        }
    }
    out
}

/// Counts PUBLISH packets arriving on `s` until `n` arrived.
async fn count_publishes(mut s: TcpStream, n: usize) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut seen = 0;
    while seen < n {
        let k = s.read(&mut chunk).await.unwrap();
        assert!(k > 0, "subscriber closed after {seen} publishes");
        buf.extend_from_slice(&chunk[..k]);
        loop {
            // fixed header: type byte, remaining length (variable byte integer)
            let (mut len, mut i) = (0usize, 1);
            let complete = loop {
                let Some(&b) = buf.get(i) else { break false };
                len |= usize::from(b & 0x7f) << (7 * (i - 1));
                i += 1;
                if b & 0x80 == 0 {
                    break true;
                }
            };
            if !complete || buf.len() < i + len {
                break;
            }
            if buf[0] >> 4 == 3 {
                seen += 1;
            }
            buf.drain(..i + len);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_and_a_thousand_publishers() {
    // Both processes (the broker inherits it) need a descriptor per connection.
    let need = (IDLE + PUBLISHERS + 1_000) as u64;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(hard >= need, "RLIMIT_NOFILE hard limit {hard} is below {need}: raise it (ulimit -Hn)");
    if soft < need {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    // 1,000 publishers at once can put more than the default 1,000 messages
    // in the subscriber's queue before it reads: room for all of them.
    let b = Broker::start_with_toml(dir.path(), "[mqtt]\nmax_queued_messages = 100000\n");
    let pid = b.pid().unwrap();
    let port = b.mqtt_port;
    tokio::time::timeout(Duration::from_secs(60), async move {
        let t0 = Instant::now();
        // Progress, shown if the test fails.
        let phase = |what: &str| println!("{:>8.2?} {what}", t0.elapsed());
        let warm = connect_many(port, "warm-", 10).await;
        phase("warm");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = rss(pid);
        let started = Instant::now();
        let (broker_cpu, own_cpu) = (cpu_secs(pid), cpu_secs(std::process::id()));
        let mut idle = connect_many(port, "idle-", IDLE).await;
        let connect_time = started.elapsed();
        let broker_cpu = cpu_secs(pid) - broker_cpu;
        let own_cpu = cpu_secs(std::process::id()) - own_cpu;
        tokio::time::sleep(Duration::from_millis(500)).await;
        phase("idle connected");
        let after = rss(pid);
        let per_conn = after.saturating_sub(before) / IDLE as u64;

        // One subscriber for everything, QoS 0; publishers send QoS 1 and wait for each PUBACK.
        let mut sub = connect(port, "scale-sub").await;
        sub.write_all(&[0x82, 11, 0, 1, 0, 6, b'l', b'o', b'a', b'd', b'/', b'#', 0]).await.unwrap();
        let mut suback = [0u8; 5];
        sub.read_exact(&mut suback).await.unwrap();
        assert_eq!(suback, [0x90, 3, 0, 1, 0]);
        let counter = tokio::spawn(count_publishes(sub, PUBLISHERS * PER_PUBLISHER));
        let publishers = connect_many(port, "pub-", PUBLISHERS).await;
        phase("publishers connected");
        let started = Instant::now();
        let mut set = JoinSet::new();
        for (i, mut s) in publishers.into_iter().enumerate() {
            set.spawn(async move {
                for m in 0..PER_PUBLISHER {
                    let pid = (m + 1) as u16;
                    let topic = format!("load/{i}");
                    let mut p = vec![0x32, (2 + topic.len() + 2 + 8) as u8, 0, topic.len() as u8];
                    p.extend_from_slice(topic.as_bytes());
                    p.extend_from_slice(&pid.to_be_bytes());
                    p.extend_from_slice(b"payload!");
                    s.write_all(&p).await.unwrap();
                    let mut ack = [0u8; 4];
                    s.read_exact(&mut ack).await.unwrap();
                    assert_eq!(ack, [0x40, 2, pid.to_be_bytes()[0], pid.to_be_bytes()[1]]);
                }
                s
            });
        }
        let mut publishers = Vec::new();
        while let Some(s) = set.join_next().await {
            publishers.push(s.unwrap());
        }
        phase("publishers done");
        counter.await.unwrap();
        let publish_time = started.elapsed();
        phase("subscriber done");

        // The idle connections are still served.
        for s in idle.iter_mut().step_by(IDLE / 100) {
            s.write_all(&[0xc0, 0]).await.unwrap();
            let mut resp = [0u8; 2];
            s.read_exact(&mut resp).await.unwrap();
            assert_eq!(resp, [0xd0, 0]);
        }
        println!(
            "mqtt scale: {IDLE} idle connections in {connect_time:.2?} (CPU: broker {broker_cpu:.1} s, test \
             process {own_cpu:.1} s); broker RSS {} MiB -> {} MiB, \
             {per_conn} bytes ({:.1} KiB) per idle connection; {PUBLISHERS} publishers x {PER_PUBLISHER} \
             QoS 1 messages to one subscriber in {publish_time:.2?}",
            before >> 20,
            after >> 20,
            per_conn as f64 / 1024.0
        );
        // A regression guard far above the measured figure (docs/benchmarks.md).
        assert!(per_conn < 64 * 1024, "{per_conn} bytes per idle connection");
        drop((warm, idle, publishers));
    })
    .await
    .expect("the scale test took more than 60 s");
}
