//! The STOMP front-end end to end: the real binary, raw STOMP frames, and
//! lapin / librdkafka on the other side for the cross-protocol cases.

use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers as _;
use rdkafka::{Offset, TopicPartitionList};

use crate::amqp_support;
use crate::stomp_support::Stomp;
use crate::support::{self, Broker};

#[test]
fn send_and_receive_on_a_queue_with_nuls_and_headers() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut c = Stomp::connect(&b);
    c.subscribe("0", "/queue/jobs", &[]);
    c.send(
        "/queue/jobs",
        b"a\0b\0c",
        &[("content-type", "application/octet-stream"), ("customer", "42"), ("persistent", "true")],
    );
    let m = c.message();
    assert_eq!(&m.body[..], b"a\0b\0c", "content-length bodies keep their NULs");
    assert_eq!(m.header("destination"), Some("/queue/jobs"));
    assert_eq!(m.header("subscription"), Some("0"));
    assert_eq!(m.header("content-type"), Some("application/octet-stream"));
    assert_eq!(m.header("customer"), Some("42"));
    assert_eq!(m.header("persistent"), Some("true"));
    assert_eq!(m.header("redelivered"), Some("false"));
    assert!(m.header("message-id").is_some());
    // 1.2 names no `ack` header for ack:auto.
    assert_eq!(m.header("ack"), None);
    c.disconnect();
    let (status, metrics) = support::http(&b, "GET", "/metrics", None);
    assert_eq!(status, 200);
    let line = |prefix: &str| metrics.lines().find(|l| l.starts_with(prefix)).map(str::to_string);
    let sends = line("ferry_requests_total{protocol=\"stomp\",api=\"SEND\"}").expect("STOMP SENDs counted");
    assert!(sends.ends_with(" 1"), "{sends}");
    assert!(line("ferry_stomp_deliveries_total 1").is_some(), "{metrics}");
    assert!(line("ferry_connections_accepted_total{protocol=\"stomp\"} 1").is_some(), "{metrics}");
}

#[test]
fn topic_subscribers_each_get_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut a = Stomp::connect(&b);
    let mut z = Stomp::connect(&b);
    let mut other = Stomp::connect(&b);
    a.subscribe("s", "/topic/news.*", &[]);
    z.subscribe("s", "/topic/news.#", &[]);
    other.subscribe("s", "/topic/sport.*", &[]);
    let mut p = Stomp::connect(&b);
    p.send("/topic/news.eu", b"hello", &[]);
    p.send("/topic/sport.eu", b"goal", &[]);
    for c in [&mut a, &mut z] {
        let m = c.message();
        assert_eq!((&m.body[..], m.header("destination")), (&b"hello"[..], Some("/topic/news.eu")));
    }
    let m = other.message();
    assert_eq!(&m.body[..], b"goal", "a subscriber gets only what its pattern matches");
}

#[test]
fn client_individual_acks_prefetch_and_nack_redelivery() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut p = Stomp::connect(&b);
    for body in ["m1", "m2", "m3"] {
        p.send("/queue/work", body.as_bytes(), &[]);
    }
    let mut c = Stomp::connect(&b);
    c.subscribe("w", "/queue/work", &[("ack", "client-individual"), ("prefetch-count", "2")]);
    let m1 = c.message();
    let m2 = c.message();
    assert_eq!((&m1.body[..], &m2.body[..]), (&b"m1"[..], &b"m2"[..]));
    // Two unacknowledged: the third waits for credit. NACK m2 (requeue),
    // ACK m1: m2 comes back redelivered, then m3.
    c.frame("NACK", &[("id", m2.header("ack").unwrap())], b"");
    let again = c.message();
    assert_eq!((&again.body[..], again.header("redelivered")), (&b"m2"[..], Some("true")));
    c.frame("ACK", &[("id", m1.header("ack").unwrap()), ("receipt", "a1")], b"");
    c.receipt("a1");
    let m3 = c.message();
    assert_eq!(&m3.body[..], b"m3");
    // NACK without requeue drops the message.
    c.frame("NACK", &[("id", m3.header("ack").unwrap()), ("requeue", "false")], b"");
    c.frame("ACK", &[("id", again.header("ack").unwrap()), ("receipt", "a2")], b"");
    c.receipt("a2");
    c.disconnect();
    let mut c = Stomp::connect(&b);
    c.subscribe("w", "/queue/work", &[]);
    p.send("/queue/work", b"marker", &[]);
    assert_eq!(&c.message().body[..], b"marker", "nothing else was left in the queue");
}

#[test]
fn client_acks_are_cumulative_and_unacked_messages_return_on_disconnect() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut c = Stomp::connect(&b);
    for body in ["1", "2", "3"] {
        c.send("/queue/cum", body.as_bytes(), &[]);
    }
    c.subscribe("x", "/queue/cum", &[("ack", "client")]);
    let got: Vec<_> = (0..3).map(|_| c.message()).collect();
    c.frame("ACK", &[("id", got[1].header("ack").unwrap()), ("receipt", "r")], b"");
    c.receipt("r");
    c.disconnect();
    let mut c = Stomp::connect(&b);
    c.subscribe("x", "/queue/cum", &[("ack", "client")]);
    let m = c.message();
    assert_eq!((&m.body[..], m.header("redelivered")), (&b"3"[..], Some("true")), "1 and 2 were acknowledged");
}

#[test]
fn transactions_commit_and_abort() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut c = Stomp::connect(&b);
    c.subscribe("t", "/queue/txq", &[]);
    c.frame("BEGIN", &[("transaction", "tx1")], b"");
    c.frame("SEND", &[("destination", "/queue/txq"), ("transaction", "tx1")], b"inside");
    c.send("/queue/txq", b"outside", &[]);
    assert_eq!(&c.message().body[..], b"outside", "a transaction's SEND waits for COMMIT");
    c.frame("COMMIT", &[("transaction", "tx1"), ("receipt", "c1")], b"");
    c.receipt("c1");
    assert_eq!(&c.message().body[..], b"inside");
    c.frame("BEGIN", &[("transaction", "tx2")], b"");
    c.frame("SEND", &[("destination", "/queue/txq"), ("transaction", "tx2")], b"aborted");
    c.frame("ABORT", &[("transaction", "tx2")], b"");
    c.send("/queue/txq", b"after", &[]);
    assert_eq!(&c.message().body[..], b"after", "an aborted SEND never arrives");
    // ACK inside a transaction takes effect at COMMIT.
    c.subscribe("k", "/queue/txack", &[("ack", "client-individual")]);
    c.send("/queue/txack", b"ack me", &[]);
    let m = c.message();
    c.frame("BEGIN", &[("transaction", "tx3")], b"");
    c.frame("ACK", &[("id", m.header("ack").unwrap()), ("transaction", "tx3")], b"");
    c.frame("ABORT", &[("transaction", "tx3"), ("receipt", "ab")], b"");
    c.receipt("ab");
    c.disconnect();
    let mut c = Stomp::connect(&b);
    c.subscribe("k", "/queue/txack", &[]);
    assert_eq!(&c.message().body[..], b"ack me", "the aborted ACK left the message unacknowledged");
    c.frame("COMMIT", &[("transaction", "nope")], b"");
    let e = c.error_then_close();
    assert!(String::from_utf8_lossy(&e.body).contains("not open"), "{e:?}");
}

#[test]
fn heart_beats_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start_with_toml(dir.path(), "[stomp]\nheartbeat_ms = [100, 100]\n");
    // The client wants ours every 100 ms and sends none.
    let mut c = Stomp::open(&b);
    c.frame("CONNECT", &[("accept-version", "1.1,1.2"), ("heart-beat", "0,100")], b"");
    let f = c.recv();
    assert_eq!((f.header("version"), f.header("heart-beat")), (Some("1.2"), Some("100,100")));
    c.await_heartbeat();
    // The client promises one every 100 ms and goes silent: the broker
    // gives up on it.
    let mut c = Stomp::open(&b);
    c.frame("CONNECT", &[("accept-version", "1.2"), ("heart-beat", "100,0")], b"");
    assert_eq!(c.recv().command, "CONNECTED");
    let e = c.error_then_close();
    assert!(String::from_utf8_lossy(&e.body).contains("heart-beat"), "{e:?}");
    // One that keeps beating stays.
    let mut c = Stomp::open(&b);
    c.frame("CONNECT", &[("accept-version", "1.2"), ("heart-beat", "100,0")], b"");
    assert_eq!(c.recv().command, "CONNECTED");
    for _ in 0..10 {
        c.raw(b"\n");
        std::thread::sleep(Duration::from_millis(50));
    }
    c.disconnect();
}

#[test]
fn durable_topic_subscription_survives_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut c = Stomp::connect(&b);
    c.subscribe("d1", "/topic/prices", &[("durable", "true"), ("ack", "client-individual")]);
    c.disconnect();
    let mut p = Stomp::connect(&b);
    p.send("/topic/prices", b"while away", &[("persistent", "true")]);
    let mut c = Stomp::connect(&b);
    c.subscribe("d1", "/topic/prices", &[("durable", "true"), ("ack", "client-individual")]);
    let m = c.message();
    assert_eq!(&m.body[..], b"while away");
    c.frame("ACK", &[("id", m.header("ack").unwrap())], b"");
    c.frame("UNSUBSCRIBE", &[("id", "d1"), ("durable", "true"), ("receipt", "u")], b"");
    c.receipt("u");
    c.disconnect();
    // Gone with the UNSUBSCRIBE: what is sent now is kept for no one.
    p.send("/topic/prices", b"nobody", &[]);
    let mut c = Stomp::connect(&b);
    c.subscribe("d1", "/topic/prices", &[("durable", "true")]);
    p.send("/topic/prices", b"fresh", &[]);
    assert_eq!(&c.message().body[..], b"fresh");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stomp_send_is_an_amqp_message_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (_conn, ch) = amqp_support::channel(&b).await;
    let b2 = &b;
    // STOMP -> AMQP queue q.
    tokio::task::block_in_place(|| {
        let mut c = Stomp::connect(b2);
        c.send(
            "/queue/xq",
            b"{\"id\":1}",
            &[
                ("content-type", "application/json"),
                ("persistent", "true"),
                ("customer", "42"),
                ("correlation-id", "c-9"),
            ],
        );
        c.disconnect();
    });
    let got = ch.basic_get("xq".into(), BasicGetOptions { no_ack: true }).await.unwrap().expect("a message in xq");
    assert_eq!(got.delivery.data, b"{\"id\":1}");
    let props = &got.delivery.properties;
    assert_eq!(props.content_type().as_ref().map(lapin::types::ShortString::as_str), Some("application/json"));
    assert_eq!(props.delivery_mode(), &Some(2));
    assert_eq!(props.correlation_id().as_ref().map(lapin::types::ShortString::as_str), Some("c-9"));
    let headers = props.headers().clone().expect("application headers");
    assert_eq!(headers.inner().get("customer"), Some(&AMQPValue::LongString("42".into())));
    // AMQP publish to amq.topic -> a STOMP /topic/ subscriber.
    let mut sub = tokio::task::block_in_place(|| {
        let mut c = Stomp::connect(b2);
        c.subscribe("t", "/topic/orders.*", &[]);
        c
    });
    let mut t = FieldTable::default();
    t.insert("region".into(), AMQPValue::LongString("eu".into()));
    let props = BasicProperties::default().with_content_type("text/plain".into()).with_headers(t);
    ch.basic_publish("amq.topic".into(), "orders.new".into(), BasicPublishOptions::default(), b"from amqp", props)
        .await
        .unwrap();
    let m = tokio::task::block_in_place(|| sub.message());
    assert_eq!(&m.body[..], b"from amqp");
    assert_eq!(m.header("destination"), Some("/topic/orders.new"));
    assert_eq!(m.header("content-type"), Some("text/plain"));
    assert_eq!(m.header("region"), Some("eu"));
}

#[test]
fn kafka_destinations_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut tail = Stomp::connect(&b);
    tail.subscribe("k", "/kafka/events", &[]);
    let mut c = Stomp::connect(&b);
    c.send("/kafka/events", b"from stomp", &[("content-type", "text/plain"), ("kafka-key", "k1")]);
    // A Kafka consumer reads the record, with the properties as headers.
    let consumer: BaseConsumer =
        support::config(&b).set("group.id", "stomp-test").set("enable.auto.commit", "false").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("events", 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let record = loop {
        assert!(std::time::Instant::now() < deadline, "no record within 30 s");
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            break m.unwrap().detach();
        }
    };
    assert_eq!(record.payload(), Some(&b"from stomp"[..]));
    assert_eq!(record.key(), Some(&b"k1"[..]));
    let headers: Vec<(String, Vec<u8>)> = record
        .headers()
        .map(|h| h.iter().map(|x| (x.key.to_string(), x.value.unwrap_or_default().to_vec())).collect())
        .unwrap_or_default();
    assert!(headers.contains(&("content-type".into(), b"text/plain".to_vec())), "{headers:?}");
    // The subscriber from the tail sees it; one from the start sees it too.
    let m = tail.message();
    assert_eq!((&m.body[..], m.header("destination")), (&b"from stomp"[..], Some("/kafka/events")));
    assert_eq!(m.header("content-type"), Some("text/plain"));
    let mut first = Stomp::connect(&b);
    first.subscribe("k", "/kafka/events", &[("x-stream-offset", "first")]);
    assert_eq!(&first.message().body[..], b"from stomp");
}

#[test]
fn bad_input_gets_an_error_and_a_close_for_that_client_only() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut bystander = Stomp::connect(&b);
    bystander.subscribe("s", "/queue/calm", &[]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage before CONNECT", b"\x16\x03\x01\x00\xff\xfe\n\n\0".to_vec()),
        ("SEND before CONNECT", b"SEND\ndestination:/queue/a\n\nx\0".to_vec()),
        ("no common version", b"CONNECT\naccept-version:2.0\n\n\0".to_vec()),
        ("wrong password", b"CONNECT\naccept-version:1.2\nlogin:guest\npasscode:nope\n\n\0".to_vec()),
        ("header line too long", [b"CONNECT\nx:".to_vec(), vec![b'a'; 20_000], b"\n\n\0".to_vec()].concat()),
    ];
    for (what, bytes) in cases {
        let mut c = Stomp::open(&b);
        c.raw(&bytes);
        let e = c.error_then_close();
        assert!(e.header("message").is_some(), "{what}: {e:?}");
    }
    let after_connect: Vec<(&str, &[u8])> = vec![
        ("unknown command", b"FROB\n\n\0"),
        ("gigantic content-length", b"SEND\ndestination:/queue/a\ncontent-length:99999999999\n\n"),
        ("no NUL after the body", b"SEND\ndestination:/queue/a\ncontent-length:1\n\nxy\0"),
        ("undefined escape", b"SEND\ndestination:/queue/a\nk:\\t\n\n\0"),
        ("unknown destination", b"SEND\ndestination:/nowhere/a\n\n\0"),
        ("missing exchange", b"SUBSCRIBE\nid:1\ndestination:/exchange/nope/k\n\n\0"),
        ("unknown ack id", b"ACK\nid:12345\n\n\0"),
        ("lowercase command", b"send\n\n\0"),
    ];
    for (what, bytes) in after_connect {
        let mut c = Stomp::connect(&b);
        c.raw(bytes);
        let e = c.error_then_close();
        assert!(e.header("message").is_some(), "{what}: {e:?}");
    }
    // A failing frame's receipt is named in the ERROR.
    let mut c = Stomp::connect(&b);
    c.raw(b"SUBSCRIBE\nid:1\ndestination:/amq/queue/absent\nreceipt:r-7\n\n\0");
    assert_eq!(c.error_then_close().header("receipt-id"), Some("r-7"));
    // Everyone else carries on.
    let mut p = Stomp::connect(&b);
    p.send("/queue/calm", b"still here", &[]);
    assert_eq!(&bystander.message().body[..], b"still here");
}

#[test]
fn stomp_1_0_and_1_1_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    // 1.0: no accept-version, no escaping, ACK by message-id.
    let mut c = Stomp::connect_with(&b, &[("login", "guest"), ("passcode", "guest")]);
    c.frame("SUBSCRIBE", &[("destination", "/queue/old"), ("ack", "client")], b"");
    c.send("/queue/old", b"v10", &[("k", "a\\cb")]);
    let m = c.message();
    assert_eq!(m.header("k"), Some("a\\cb"), "1.0 headers are not unescaped");
    assert_eq!(m.header("subscription"), Some("/queue/old"), "the destination stands in for a 1.0 id");
    c.frame("ACK", &[("message-id", m.header("message-id").unwrap()), ("receipt", "a")], b"");
    c.receipt("a");
    c.frame("NACK", &[("message-id", "1")], b"");
    c.error_then_close();
    // 1.1: escaped headers round-trip.
    let mut c = Stomp::connect_with(&b, &[("accept-version", "1.0,1.1"), ("host", "/")]);
    c.subscribe("s", "/queue/mid", &[]);
    c.send("/queue/mid", b"v11", &[("colon:key", "line\nbreak")]);
    let m = c.message();
    assert_eq!(m.header("colon:key"), Some("line\nbreak"));
    c.disconnect();
}

#[test]
fn exchange_destinations_and_temp_queue_replies() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut c = Stomp::connect(&b);
    c.subscribe("f", "/exchange/amq.fanout", &[]);
    c.subscribe("d", "/exchange/amq.direct/blue", &[]);
    c.send("/exchange/amq.direct/blue", b"to blue", &[]);
    c.send("/exchange/amq.direct/red", b"to red", &[]);
    c.send("/exchange/amq.fanout/any", b"to all", &[]);
    let got: Vec<(String, Vec<u8>)> = (0..2)
        .map(|_| {
            let m = c.message();
            (m.header("subscription").unwrap().to_string(), m.body.to_vec())
        })
        .collect();
    assert!(got.contains(&("d".into(), b"to blue".to_vec())), "{got:?}");
    assert!(got.contains(&("f".into(), b"to all".to_vec())), "{got:?}");
    // Request / reply: the reply-to of a request names the requester's
    // private queue, and the answer arrives on its /temp-queue/ subscription.
    let mut service = Stomp::connect(&b);
    service.subscribe("s", "/queue/service", &[]);
    let mut client = Stomp::connect(&b);
    client.send("/queue/service", b"ping", &[("reply-to", "/temp-queue/answers"), ("correlation-id", "42")]);
    let req = service.message();
    let reply_to = req.header("reply-to").unwrap().to_string();
    assert!(reply_to.starts_with("/reply-queue/amq.gen-"), "{reply_to}");
    service.send(&reply_to, b"pong", &[("correlation-id", "42")]);
    let answer = client.message();
    assert_eq!(&answer.body[..], b"pong");
    assert_eq!(answer.header("subscription"), Some("/temp-queue/answers"));
    assert_eq!(answer.header("destination"), Some("/temp-queue/answers"));
    assert_eq!(answer.header("correlation-id"), Some("42"));
    // The reply queue goes with its connection.
    client.disconnect();
    service.frame("SEND", &[("destination", &reply_to), ("receipt", "late")], b"too late");
    assert_eq!(service.error_then_close().header("receipt-id"), Some("late"));
}

#[test]
fn persistent_messages_and_durable_subscriptions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Broker::start(dir.path());
    let mut c = Stomp::connect(&b);
    c.subscribe("dur", "/topic/audit.#", &[("durable", "true")]);
    c.disconnect();
    let mut p = Stomp::connect(&b);
    p.send("/queue/keep", b"kept", &[("persistent", "true")]);
    p.send("/topic/audit.login", b"audited", &[("persistent", "true")]);
    drop(p);
    b.kill9();
    b.start_again();
    let mut c = Stomp::connect(&b);
    c.subscribe("q", "/queue/keep", &[]);
    assert_eq!(&c.message().body[..], b"kept", "a SEND's receipt means it is on disk");
    c.subscribe("dur", "/topic/audit.#", &[("durable", "true")]);
    assert_eq!(&c.message().body[..], b"audited");
}

#[test]
fn logins_and_permissions_are_the_amqp_users() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start_with_toml(
        dir.path(),
        "[[amqp.users]]\nname = \"app\"\npassword = \"pw\"\n\
         [amqp.users.permissions.\"/\"]\nconfigure = \"^app-\"\nwrite = \"^amq\\\\.default$|^app-\"\nread = \"^app-\"\n",
    );
    let login = [("accept-version", "1.2"), ("host", "/"), ("login", "app"), ("passcode", "pw")];
    let mut c = Stomp::connect_with(&b, &login);
    c.subscribe("0", "/queue/app-jobs", &[]);
    c.send("/queue/app-jobs", b"allowed", &[]);
    assert_eq!(&c.message().body[..], b"allowed");
    c.disconnect();
    let refused: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("SEND", vec![("destination", "/queue/other")]),
        ("SEND", vec![("destination", "/topic/news")]),
        ("SUBSCRIBE", vec![("id", "1"), ("destination", "/topic/news")]),
        ("SUBSCRIBE", vec![("id", "1"), ("destination", "/amq/queue/other")]),
    ];
    for (command, headers) in refused {
        let mut c = Stomp::connect_with(&b, &login);
        c.frame(command, &headers, b"x");
        let e = c.error_then_close();
        assert!(String::from_utf8_lossy(&e.body).contains("refused for user 'app'"), "{command} {headers:?}: {e:?}");
    }
    // guest is gone once users are configured; no login means guest.
    let mut c = Stomp::open(&b);
    c.frame("CONNECT", &[("accept-version", "1.2")], b"");
    assert_eq!(c.error_then_close().header("message"), Some("Access refused"));
}

#[test]
fn random_frames_do_no_harm() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut bystander = Stomp::connect(&b);
    bystander.subscribe("s", "/queue/steady", &[]);
    // Fragments of real frames shuffled with random bytes (a fixed seed,
    // so a failure replays).
    let pieces: &[&[u8]] = &[
        b"SEND\n",
        b"SUBSCRIBE\n",
        b"ACK\n",
        b"NACK\n",
        b"BEGIN\n",
        b"COMMIT\n",
        b"destination:/queue/steady\n",
        b"destination:/topic/x\n",
        b"id:1\n",
        b"ack:client\n",
        b"transaction:t\n",
        b"content-length:3\n",
        b"content-length:999999999999\n",
        b"receipt:r\n",
        b"\n",
        b"\0",
        b"\r\n",
        b"\\c",
        b"\\",
        b":",
        b"\xff\xfe",
    ];
    let mut seed: u64 = 0x5eed_f00d;
    let mut next = move || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) as usize
    };
    for _ in 0..40 {
        let mut c = Stomp::connect(&b);
        let mut bytes = Vec::new();
        for _ in 0..60 {
            if next() % 4 == 0 {
                bytes.extend((0..next() % 16).map(|_| next() as u8));
            } else {
                bytes.extend_from_slice(pieces[next() % pieces.len()]);
            }
        }
        c.raw(&bytes);
        c.shutdown_write();
        // Whatever came back (it must decode), the connection ends.
        while c.try_recv().is_some() {}
    }
    let mut p = Stomp::connect(&b);
    p.send("/queue/steady", b"unharmed", &[]);
    // Random SENDs may have reached the queue first.
    while &bystander.message().body[..] != b"unharmed" {}
}
