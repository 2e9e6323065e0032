//! The fault harness on one node (issue #16): AMQP and MQTT are not
//! replicated yet (issue #17), so their runs are failover-free: one
//! `ferry serve` killed with SIGKILL and restarted on its data from a
//! seeded schedule, while an AMQP publisher with confirms and a
//! manual-ack consumer, and MQTT QoS 1 and QoS 2 publishers and a
//! persistent-session subscriber, write histories. At the end the
//! consumers empty their queues and the checker runs over each history:
//! AMQP and QoS 1 are at-least-once (redeliveries allowed), QoS 2 is
//! exactly-once (a duplicate is an anomaly).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferry_chaos::checker::{self, Options};
use ferry_chaos::history::{Kind, Op, Phase, Recorder};
use ferry_chaos::schedule::Rng;
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::chaos::settings;
use crate::support::{Broker, watchdog_naming};

const QUEUE: &str = "chaos-q";
/// History partitions: the AMQP queue, the MQTT QoS 1 and QoS 2 topics.
const AMQP: i32 = 300;
const MQTT1: i32 = 401;
const MQTT2: i32 = 402;
const VALUES: i64 = 1_000_000_000;

/// AMQP confirms and MQTT QoS 1 across kill -9 restarts: nothing
/// confirmed lost, redeliveries allowed.
#[test]
fn amqp_and_mqtt_lose_nothing_confirmed_across_kill9() {
    run(false);
}

/// MQTT QoS 2 as well: exactly once.
#[test]
fn mqtt_qos2_is_exactly_once_across_kill9() {
    run(true);
}

fn run(qos2: bool) {
    let s = settings();
    // A single node restarts fast: 20 s (4-5 kills) unless told otherwise.
    let length = if std::env::var("FERRY_CHAOS_SECS").is_ok() { s.length } else { Duration::from_secs(20) };
    let history = |name: &str| s.keep.join(format!("chaos-{name}-{}.jsonl", s.seed));
    let (amqp, mqtt1) = (Recorder::to_file(&history("amqp")), Recorder::to_file(&history("mqtt-qos1")));
    let (amqp, mqtt1) = (amqp.expect("the AMQP history file"), mqtt1.expect("the QoS 1 history file"));
    let mqtt2 =
        if qos2 { Recorder::to_file(&history("mqtt-qos2")).expect("the QoS 2 history file") } else { Recorder::new() };
    let _guard = {
        let recs = [("amqp", amqp.clone()), ("mqtt-qos1", mqtt1.clone()), ("mqtt-qos2", mqtt2.clone())];
        watchdog_naming("single-node chaos run", length + Duration::from_secs(300), move || {
            recs.iter()
                .map(|(name, r)| format!("{name}: {}", r.report_blocked("watchdog")))
                .collect::<Vec<_>>()
                .join("; ")
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let mut b = Broker::prepare(dir.path(), &[], "");
    b.log = Some(dir.path().join("node.log"));
    b.start_again();
    let (amqp_uri, mqtt_port) = (b.amqp_uri(), b.mqtt_port);

    let stop = Arc::new(AtomicBool::new(false));
    let stop_readers = Arc::new(AtomicBool::new(false));
    let last_read = Arc::new(AtomicU64::new(0));
    let subscribed = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    {
        let (u, r, st, lr) = (amqp_uri.clone(), amqp.clone(), stop_readers.clone(), last_read.clone());
        readers.push(std::thread::spawn(move || block_on(amqp_consumer(&u, &r, &st, &lr))));
    }
    {
        let (r1, r2, st, lr, sub) =
            (mqtt1.clone(), mqtt2.clone(), stop_readers.clone(), last_read.clone(), subscribed.clone());
        readers.push(std::thread::spawn(move || block_on(mqtt_subscriber(mqtt_port, &r1, &r2, &st, &lr, &sub))));
    }
    eventually_flag(&subscribed);
    let mut writers = Vec::new();
    {
        let (u, r, st) = (amqp_uri.clone(), amqp.clone(), stop.clone());
        writers.push(std::thread::spawn(move || block_on(amqp_publisher(&u, &r, &st))));
    }
    for (qos, rec) in [(QoS::AtLeastOnce, mqtt1.clone()), (QoS::ExactlyOnce, mqtt2.clone())] {
        if qos == QoS::ExactlyOnce && !qos2 {
            continue;
        }
        let st = stop.clone();
        writers.push(std::thread::spawn(move || block_on(mqtt_publisher(mqtt_port, qos, &rec, &st))));
    }

    // kill -9 every 3-6 s, restarted after 0.2-1 s.
    let mut rng = Rng::new(s.seed);
    let start = Instant::now();
    let mut kills = 0;
    loop {
        let wait = rng.between(Duration::from_secs(3), Duration::from_secs(6));
        let down = rng.between(Duration::from_millis(200), Duration::from_secs(1));
        if start.elapsed() + wait + down > length {
            break;
        }
        std::thread::sleep(wait);
        b.kill9();
        std::thread::sleep(down);
        b.start_again();
        kills += 1;
    }
    std::thread::sleep((start + length).saturating_duration_since(Instant::now()));
    stop.store(true, Ordering::Release);
    for w in writers {
        w.join().expect("publisher thread");
    }
    // Drained: nothing delivered for 5 s (at most two minutes).
    let deadline = Instant::now() + Duration::from_secs(120);
    let since = |t: &AtomicU64| Duration::from_nanos(amqp.now().saturating_sub(t.load(Ordering::Acquire)));
    while since(&last_read) < Duration::from_secs(5) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let drained = Instant::now() < deadline;
    stop_readers.store(true, Ordering::Release);
    for r in readers {
        r.join().expect("consumer thread");
    }
    let mut failures = Vec::new();
    for (name, rec, partition, duplicates_forbidden) in
        [("amqp", &amqp, AMQP, false), ("mqtt-qos1", &mqtt1, MQTT1, false), ("mqtt-qos2", &mqtt2, MQTT2, true)]
    {
        if partition == MQTT2 && !qos2 {
            continue;
        }
        if drained {
            rec.log(Op::new(Phase::Ok, Kind::Drain, 0, 0).partition(partition));
        }
        let ops = rec.ops();
        let path = history(name);
        assert_eq!(rec.write_error(), None, "writing the history {}", path.display());
        let report = checker::check(&ops, &Options { duplicates_forbidden, ..Options::default() });
        eprintln!("chaos {name}: seed {} {kills} kills\n{report}history: {}", s.seed, path.display());
        let [_, ok, ..] = report.writes;
        if !report.is_valid() || !report.undrained.is_empty() || ok < 20 {
            failures.push(format!("{name} ({ok} confirmed, history {}):\n{report}", path.display()));
        }
    }
    std::fs::write(s.keep.join(format!("chaos-single-{}-node.log", s.seed)), b.log_text()).expect("keep the log");
    assert!(kills >= 2, "only {kills} kills");
    assert!(failures.is_empty(), "seed {}:\n{}", s.seed, failures.join("\n"));
}

fn block_on<F: std::future::Future<Output = ()>>(f: F) {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f);
}

fn eventually_flag(flag: &AtomicBool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !flag.load(Ordering::Acquire) {
        assert!(Instant::now() < deadline, "the MQTT subscriber did not subscribe within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn value_of(payload: &[u8]) -> Option<i64> {
    std::str::from_utf8(payload).ok()?.parse().ok()
}

/// Publishes persistent messages to [`QUEUE`] one at a time, each waiting
/// for its confirm; reconnects after a failure.
async fn amqp_publisher(uri: &str, rec: &Recorder, stop: &AtomicBool) {
    const PROCESS: u64 = 1;
    let mut n = 0i64;
    while !stop.load(Ordering::Acquire) {
        let setup = rec.call("amqp publisher", "connect, confirm_select, declare");
        let Ok(Ok(conn)) =
            tokio::time::timeout(Duration::from_secs(3), Connection::connect(uri, ConnectionProperties::default()))
                .await
        else {
            drop(setup);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let Ok(ch) = conn.create_channel().await else { continue };
        // Declared here too: a message the default exchange cannot route is
        // confirmed and dropped.
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        if ch.confirm_select(ConfirmSelectOptions::default()).await.is_err()
            || ch.queue_declare(QUEUE.into(), durable, FieldTable::default()).await.is_err()
        {
            continue;
        }
        drop(setup);
        while !stop.load(Ordering::Acquire) {
            let value = PROCESS as i64 * VALUES + n;
            n += 1;
            let text = value.to_string();
            rec.log(Op::new(Phase::Invoke, Kind::Send, PROCESS, 0).value(value));
            let props = BasicProperties::default().with_delivery_mode(2);
            let confirm = async {
                let c = ch
                    .basic_publish("".into(), QUEUE.into(), BasicPublishOptions::default(), text.as_bytes(), props)
                    .await?;
                c.await
            };
            let done = Op::new(Phase::Ok, Kind::Send, PROCESS, 0).value(value);
            let call = rec.call("amqp publisher", format!("confirm of {value}"));
            let confirmed = tokio::time::timeout(Duration::from_secs(5), confirm).await;
            drop(call);
            match confirmed {
                Ok(Ok(c)) if c.is_ack() => rec.log(done.partition(AMQP)),
                // A nack: the broker says it did not take it.
                Ok(Ok(_)) => rec.log(Op { phase: Phase::Fail, ..done }.error("nack")),
                Ok(Err(e)) => {
                    rec.log(Op { phase: Phase::Info, ..done }.error(e.to_string()));
                    break;
                }
                Err(_) => {
                    rec.log(Op { phase: Phase::Info, ..done }.error("no confirm within 5 s"));
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.close(200, "bye".into())).await;
    }
}

/// Consumes [`QUEUE`] with manual acks (prefetch 50), logging each delivery
/// before acking it; reconnects after a failure.
async fn amqp_consumer(uri: &str, rec: &Recorder, stop: &AtomicBool, last_read: &AtomicU64) {
    const PROCESS: u64 = 2;
    while !stop.load(Ordering::Acquire) {
        let setup = rec.call("amqp consumer", "connect, declare, consume");
        let Ok(Ok(conn)) =
            tokio::time::timeout(Duration::from_secs(3), Connection::connect(uri, ConnectionProperties::default()))
                .await
        else {
            drop(setup);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let Ok(ch) = conn.create_channel().await else { continue };
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        if ch.queue_declare(QUEUE.into(), durable, FieldTable::default()).await.is_err()
            || ch.basic_qos(50, BasicQosOptions::default()).await.is_err()
        {
            continue;
        }
        let Ok(mut consumer) =
            ch.basic_consume(QUEUE.into(), "chaos".into(), BasicConsumeOptions::default(), FieldTable::default()).await
        else {
            continue;
        };
        drop(setup);
        // The publisher may start once the queue exists.
        last_read.store(rec.now(), Ordering::Release);
        while !stop.load(Ordering::Acquire) {
            match tokio::time::timeout(Duration::from_millis(200), consumer.next()).await {
                Ok(Some(Ok(d))) => {
                    if let Some(v) = value_of(&d.data) {
                        rec.log(Op::new(Phase::Ok, Kind::Read, PROCESS, 0).partition(AMQP).value(v));
                    }
                    last_read.store(rec.now(), Ordering::Release);
                    let _call = rec.call("amqp consumer", format!("ack of tag {}", d.delivery_tag));
                    if d.ack(BasicAckOptions::default()).await.is_err() {
                        break;
                    }
                }
                Ok(_) => break,
                Err(_) => {}
            }
        }
    }
}

fn mqtt_options(port: u16, id: &str, clean: bool) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_session(clean).set_keep_alive(Duration::from_secs(5));
    o
}

/// Publishes to `chaos/q1` or `chaos/q2` at `qos`, one message at a time,
/// each waiting for its PUBACK / PUBCOMP; a fresh connection after a
/// failure, with a clean session: a new client state starts its packet ids
/// at 1 again, and a resumed session would take a new QoS 2 PUBLISH for a
/// retransmission of the old one with that id (and rightly drop it).
async fn mqtt_publisher(port: u16, qos: QoS, rec: &Recorder, stop: &AtomicBool) {
    let (process, topic, partition) =
        if qos == QoS::ExactlyOnce { (12u64, "chaos/q2", MQTT2) } else { (11, "chaos/q1", MQTT1) };
    let mut n = 0i64;
    while !stop.load(Ordering::Acquire) {
        let (client, mut el) = AsyncClient::new(mqtt_options(port, &format!("chaos-pub-{process}"), true), 10);
        if !connected(&mut el).await {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        while !stop.load(Ordering::Acquire) {
            let value = process as i64 * VALUES + n;
            n += 1;
            rec.log(Op::new(Phase::Invoke, Kind::Send, process, 0).value(value));
            let done = Op::new(Phase::Ok, Kind::Send, process, 0).value(value);
            let _call = rec.call(&format!("mqtt publisher QoS {}", qos as u8), format!("publish of {value}"));
            if client.publish(topic, qos, false, value.to_string()).await.is_err() {
                rec.log(Op { phase: Phase::Info, ..done }.error("client closed"));
                break;
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            let acked = loop {
                match tokio::time::timeout_at(deadline, el.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::PubAck(_)))) if qos == QoS::AtLeastOnce => break Ok(()),
                    Ok(Ok(Event::Incoming(Packet::PubComp(_)))) if qos == QoS::ExactlyOnce => break Ok(()),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => break Err(e.to_string()),
                    Err(_) => break Err("no acknowledgement within 5 s".into()),
                }
            };
            match acked {
                Ok(()) => rec.log(done.partition(partition)),
                Err(e) => {
                    rec.log(Op { phase: Phase::Info, ..done }.error(e));
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Polls until CONNACK (true) or an error or 3 s (false).
async fn connected(el: &mut rumqttc::EventLoop) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        match tokio::time::timeout_at(deadline, el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return true,
            Ok(Ok(_)) => {}
            _ => return false,
        }
    }
}

/// One persistent session subscribed to both topics (QoS 1 and QoS 2),
/// logging every message; reconnects after a failure. A bare MQTT 3.1.1
/// client over TCP, because it must keep its QoS 2 state across
/// connections, as MQTT asks of a client: the packet ids received and not
/// yet released (a PUBLISH the broker sends again for one of them is the
/// same message, not a new one), and a PUBCOMP for every PUBREL, known or
/// not. rumqttc forgets that state on every disconnect and drops the
/// connection on the PUBREL a broker resends after a restart.
async fn mqtt_subscriber(
    port: u16,
    q1: &Recorder,
    q2: &Recorder,
    stop: &AtomicBool,
    last_read: &AtomicU64,
    subscribed: &AtomicBool,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const PROCESS: u64 = 20;
    let mut unreleased = std::collections::BTreeSet::new();
    while !stop.load(Ordering::Acquire) {
        let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(("127.0.0.1", port))).await
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        // CONNECT (3.1.1, persistent session, no keepalive), then SUBSCRIBE
        // chaos/q1 at QoS 1 and chaos/q2 at QoS 2.
        let id = b"chaos-sub";
        let mut hello = vec![0x10, (10 + 2 + id.len()) as u8, 0, 4, b'M', b'Q', b'T', b'T', 4, 0, 0, 0, 0];
        hello.push(id.len() as u8);
        hello.extend_from_slice(id);
        hello.extend_from_slice(&[0x82, 2 + 2 * 11, 0, 1]);
        for (topic, qos) in [(&b"chaos/q1"[..], 1u8), (&b"chaos/q2"[..], 2)] {
            hello.extend_from_slice(&[0, topic.len() as u8]);
            hello.extend_from_slice(topic);
            hello.push(qos);
        }
        if s.write_all(&hello).await.is_err() {
            continue;
        }
        let mut buf: Vec<u8> = Vec::new();
        'conn: while !stop.load(Ordering::Acquire) {
            // Whole packets first: type byte, remaining length, body.
            while let Some((first, body_at, end)) = frame(&buf) {
                let body = buf[body_at..end].to_vec();
                buf.drain(..end);
                let pid_at = |at: usize| body.get(at..at + 2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
                let reply = match first >> 4 {
                    2 if body.get(1) != Some(&0) => break 'conn,
                    9 => {
                        subscribed.store(true, Ordering::Release);
                        None
                    }
                    6 => {
                        let pid = pid_at(0);
                        unreleased.remove(&pid);
                        Some(0x70)
                    }
                    3 => {
                        let (dup, qos) = (first & 0b1000 != 0, (first >> 1) & 3);
                        let topic_end = 2 + usize::from(pid_at(0));
                        let pid = pid_at(topic_end);
                        let payload = body.get(topic_end + if qos > 0 { 2 } else { 0 }..).unwrap_or_default();
                        let (rec, partition) =
                            if body.get(2..topic_end) == Some(&b"chaos/q2"[..]) { (q2, MQTT2) } else { (q1, MQTT1) };
                        let again = qos == 2 && !unreleased.insert(pid);
                        if again {
                            // Kept in the history (the checker skips it) to tell
                            // a real resend from a new message on a stale id.
                            let what =
                                format!("not delivered again: pkid {pid} dup {dup} value {:?}", value_of(payload));
                            rec.log(Op::new(Phase::Info, Kind::Fault, PROCESS, 0).partition(partition).error(what));
                        }
                        if let Some(v) = value_of(payload).filter(|_| !again) {
                            // The packet id and DUP flag tell a resend from a new delivery.
                            let how = format!("pkid {pid} dup {dup}");
                            rec.log(Op::new(Phase::Ok, Kind::Read, PROCESS, 0).partition(partition).value(v).key(how));
                        }
                        last_read.store(q1.now(), Ordering::Release);
                        match qos {
                            1 => Some(0x40),
                            2 => Some(0x50),
                            _ => None,
                        }
                    }
                    _ => None,
                };
                if let Some(kind) = reply {
                    let pid = pid_at(if kind == 0x70 { 0 } else { 2 + usize::from(pid_at(0)) });
                    let [hi, lo] = pid.to_be_bytes();
                    if s.write_all(&[kind, 2, hi, lo]).await.is_err() {
                        break 'conn;
                    }
                }
            }
            let mut chunk = [0u8; 8192];
            match tokio::time::timeout(Duration::from_millis(200), s.read(&mut chunk)).await {
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
        }
    }
}

/// The first whole MQTT packet in `buf`: its first byte, where its body
/// starts and where it ends.
fn frame(buf: &[u8]) -> Option<(u8, usize, usize)> {
    let mut len = 0usize;
    for i in 1..buf.len().min(5) {
        len |= usize::from(buf[i] & 0x7f) << (7 * (i - 1));
        if buf[i] & 0x80 == 0 {
            let end = i + 1 + len;
            return (end <= buf.len()).then_some((buf[0], i + 1, end));
        }
    }
    None
}
