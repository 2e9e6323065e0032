//! /metrics, read with a Prometheus text-format parser: counters move with
//! the traffic that should move them.

use prometheus_parse::{Scrape, Value};

use crate::support::{Broker, consume_all, create_topic, http, http_json, produce_values};

fn scrape(b: &Broker) -> Scrape {
    let (status, text) = http(b, "GET", "/metrics", None);
    assert_eq!(status, 200);
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text format")
}

/// The value of the sample `name` whose labels include `labels` (0 if absent).
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(h) => h.iter().map(|c| c.count).fold(0.0, f64::max),
            Value::Summary(_) => panic!("{name} is a summary"),
        })
        .sum()
}

/// A histogram's family name from its series names.
fn family_name(metric: &str) -> &str {
    ["_bucket", "_count", "_sum"].iter().fold(metric, |m, suffix| m.strip_suffix(suffix).unwrap_or(m))
}

fn kind<'a>(s: &'a Scrape, name: &str) -> &'a Value {
    &s.samples.iter().find(|x| x.metric == name).unwrap_or_else(|| panic!("no metric {name}")).value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    create_topic(&b, "m", 2, &[]).await;
    let before = scrape(&b);
    let produce = [("protocol", "kafka"), ("api", "Produce")];
    assert!(matches!(kind(&before, "ferry_topic_records_in_total"), Value::Counter(_)));
    assert!(matches!(kind(&before, "ferry_partition_high_watermark"), Value::Gauge(_)));
    assert_eq!(value(&before, "ferry_topic_records_in_total", &[("topic", "m")]), 0.0);
    let fsyncs_before = value(&before, "ferry_log_fsync_duration_seconds", &[]);

    produce_values(&b, "m", 0..50).await;
    let got = consume_all(&b, "m", 2, 50);
    assert_eq!(got.len(), 50);
    // Kafka's error for an existing topic, mapped by the broker.
    let admin = crate::support::admin(&b);
    let dup = rdkafka::admin::NewTopic::new("m", 1, rdkafka::admin::TopicReplication::Fixed(1));
    let r = admin.create_topics(&[dup], &rdkafka::admin::AdminOptions::new()).await.unwrap();
    assert!(r[0].is_err());
    // A group with committed offsets at the start: lag is everything.
    let (status, _) = http_json(&b, "POST", "/v1/groups/lagging/offsets", Some(r#"{"topic": "m", "to": "earliest"}"#));
    assert_eq!(status, 200);

    let after = scrape(&b);
    assert!(value(&after, "ferry_requests_total", &produce) > value(&before, "ferry_requests_total", &produce));
    assert!(value(&after, "ferry_requests_total", &[("api", "Fetch")]) >= 1.0);
    assert!(value(&after, "ferry_requests_total", &[("api", "Metadata")]) >= 1.0);
    match kind(&after, "ferry_request_duration_seconds") {
        Value::Histogram(h) => assert!(!h.is_empty()),
        other => panic!("request latency is not a histogram: {other:?}"),
    }
    assert!(value(&after, "ferry_request_duration_seconds", &produce) >= 1.0, "produce latency observed");
    assert_eq!(value(&after, "ferry_topic_records_in_total", &[("topic", "m")]), 50.0);
    assert!(value(&after, "ferry_topic_bytes_in_total", &[("topic", "m")]) > 50.0 * 2.0);
    assert!(value(&after, "ferry_topic_bytes_out_total", &[("topic", "m")]) > 50.0 * 2.0);
    assert_eq!(value(&after, "ferry_topic_records_out_total", &[("topic", "m")]), 50.0, "each record read once");
    assert_eq!(value(&after, "ferry_partition_high_watermark", &[("topic", "m")]), 50.0);
    assert!(value(&after, "ferry_partition_log_size_bytes", &[("topic", "m")]) > 0.0);
    assert_eq!(value(&after, "ferry_partition_log_start_offset", &[("topic", "m")]), 0.0);
    assert_eq!(value(&after, "ferry_group_lag_sum", &[("group", "lagging")]), 50.0);
    assert_eq!(value(&after, "ferry_group_lag", &[("group", "lagging"), ("topic", "m")]), 50.0);
    assert_eq!(value(&after, "ferry_group_committed_offset", &[("group", "lagging")]), 0.0);
    assert!(value(&after, "ferry_connections_accepted_total", &[("protocol", "kafka")]) >= 2.0);
    assert!(value(&after, "ferry_connections", &[("protocol", "kafka")]) >= 0.0);
    assert_eq!(value(&after, "ferry_errors_total", &[("code", "36"), ("error", "TOPIC_ALREADY_EXISTS")]), 1.0);
    assert_eq!(value(&after, "ferry_topics", &[]), 1.0);
    // Flush policy `always`: acknowledged produces were fsynced.
    assert!(value(&after, "ferry_log_fsync_duration_seconds", &[]) > fsyncs_before);

    // Prometheus text by default; OpenMetrics for scrapers that ask for it.
    let (status, head, _) = crate::support::http_with(&b, "GET", "/metrics", None, "");
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    let accept = "Accept: application/openmetrics-text; version=1.0.0,text/plain;q=0.5\r\n";
    let (status, head, body) = crate::support::http_with(&b, "GET", "/metrics", None, accept);
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("content-type: application/openmetrics-text"), "{head}");
    assert!(body.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    assert!(body.contains("# TYPE ferry_topic_records_in counter\nferry_topic_records_in_total{topic=\"m\"} 50\n"));

    // docs/operations.md lists every metric, and the Grafana dashboard
    // only queries metrics that exist (queue families need a queue: the
    // AMQP test checks those).
    documented(&after);
    assert!(dashboard_queries_exist(&after, |m| !m.starts_with("ferry_queue_")) >= 10);
}

/// Every metric family in `s` is in docs/operations.md's table.
fn documented(s: &Scrape) {
    let operations = std::fs::read_to_string(docs().join("operations.md")).unwrap();
    for name in names(s) {
        assert!(operations.contains(&format!("`{name}`")), "docs/operations.md does not list {name}");
    }
}

fn docs() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

/// Metric family names in a scrape.
fn names(s: &Scrape) -> Vec<&str> {
    let mut names: Vec<&str> = s.samples.iter().map(|x| family_name(&x.metric)).collect();
    names.sort();
    names.dedup();
    names
}

/// The metrics the Grafana dashboard queries that `which` selects all
/// exist in `s`; returns how many queries were checked.
fn dashboard_queries_exist(s: &Scrape, which: impl Fn(&str) -> bool) -> usize {
    let names = names(s);
    let dashboard = std::fs::read_to_string(docs().join("grafana-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("ferry_") && which(word) {
                    assert!(
                        names.contains(&family_name(word)),
                        "the dashboard queries {word}, which /metrics does not have"
                    );
                    queried += 1;
                }
            }
        }
    }
    queried
}

/// Scrapes until `done` holds for the scrape (at most 30 s).
fn scrape_until(b: &Broker, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let s = scrape(b);
        if done(&s) {
            return s;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_connections_methods_and_queues() {
    use lapin::options::*;
    use lapin::types::{AMQPValue, FieldTable};

    use crate::amqp_support::{channel, consumer, declare, next, publish};

    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let amqp = [("protocol", "amqp")];
    let (c1, ch1) = channel(&b).await;
    let (c2, ch2) = channel(&b).await;
    ch1.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    declare(&ch1, "work", false).await;
    for i in 0..10 {
        publish(&ch1, "", "work", format!("m{i}").as_bytes(), lapin::BasicProperties::default()).await;
    }
    // A dead-lettering queue: a rejected message goes to "dead".
    declare(&ch1, "dead", false).await;
    let mut dlx = FieldTable::default();
    dlx.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
    dlx.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString("dead".into()));
    ch1.queue_declare("src".into(), QueueDeclareOptions::default(), dlx).await.unwrap();
    publish(&ch1, "", "src", b"doomed", lapin::BasicProperties::default()).await;
    let got = ch1.basic_get("src".into(), BasicGetOptions { no_ack: false }).await.unwrap().expect("a message");
    got.delivery.reject(BasicRejectOptions { requeue: false }).await.unwrap();

    // The consumer on the other connection takes 3 (its prefetch), acks
    // one and hands one back: both are replaced, the returned one first
    // or second, flagged redelivered. Then 3 are unacknowledged again and
    // nothing more comes.
    ch2.basic_qos(3, BasicQosOptions::default()).await.unwrap();
    let mut cons = consumer(&ch2, "work", "c").await;
    let d1 = next(&mut cons).await;
    let d2 = next(&mut cons).await;
    let _d3 = next(&mut cons).await;
    d1.ack(BasicAckOptions::default()).await.unwrap();
    d2.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.unwrap();
    let (d4, d5) = (next(&mut cons).await, next(&mut cons).await);
    assert_eq!(u8::from(d4.redelivered) + u8::from(d5.redelivered), 1, "one redelivery");

    // (A method is counted once handled: the ack and nack may still be
    // finishing when their effects arrive.)
    let s = scrape_until(&b, "the dead letter, ack and nack", |s| {
        value(s, "ferry_queue_messages_ready", &[("queue", "dead")]) == 1.0
            && value(s, "ferry_requests_total", &[("api", "basic.ack")]) == 1.0
            && value(s, "ferry_requests_total", &[("api", "basic.nack")]) == 1.0
    });
    assert_eq!(value(&s, "ferry_connections", &amqp), 2.0);
    assert_eq!(value(&s, "ferry_connections_accepted_total", &amqp), 2.0);
    let requests = |api: &str| value(&s, "ferry_requests_total", &[("protocol", "amqp"), ("api", api)]);
    assert_eq!(requests("basic.publish"), 11.0);
    assert_eq!(requests("queue.declare"), 3.0);
    assert_eq!(requests("channel.open"), 2.0);
    assert_eq!(requests("confirm.select"), 1.0);
    assert_eq!(requests("basic.get"), 1.0);
    assert_eq!(requests("basic.reject"), 1.0);
    assert_eq!(requests("basic.qos"), 1.0);
    assert_eq!(requests("basic.consume"), 1.0);
    assert_eq!(requests("basic.ack"), 1.0);
    assert_eq!(requests("basic.nack"), 1.0);
    let publish_latency = [("protocol", "amqp"), ("api", "basic.publish")];
    assert_eq!(value(&s, "ferry_request_duration_seconds", &publish_latency), 11.0, "one observation per publish");
    let confirms = |result: &str| value(&s, "ferry_amqp_publisher_confirms_total", &[("result", result)]);
    assert_eq!((confirms("ack"), confirms("nack")), (11.0, 0.0));
    let q = |name: &str, queue: &str| value(&s, name, &[("vhost", "/"), ("queue", queue)]);
    assert!(matches!(kind(&s, "ferry_queue_messages_ready"), Value::Gauge(_)));
    assert!(matches!(kind(&s, "ferry_queue_messages_published_total"), Value::Counter(_)));
    assert_eq!(q("ferry_queue_messages_ready", "work"), 6.0);
    assert_eq!(q("ferry_queue_messages_unacked", "work"), 3.0);
    assert_eq!(q("ferry_queue_consumers", "work"), 1.0);
    assert_eq!(q("ferry_queue_messages_published_total", "work"), 10.0);
    assert_eq!(q("ferry_queue_messages_delivered_total", "work"), 5.0);
    assert_eq!(q("ferry_queue_messages_redelivered_total", "work"), 1.0);
    assert_eq!(q("ferry_queue_messages_acked_total", "work"), 1.0);
    assert_eq!(q("ferry_queue_messages_dead_lettered_total", "work"), 0.0);
    assert_eq!(q("ferry_queue_messages_published_total", "src"), 1.0);
    assert_eq!(q("ferry_queue_messages_delivered_total", "src"), 1.0);
    assert_eq!(q("ferry_queue_messages_acked_total", "src"), 0.0, "a reject is not an ack");
    assert_eq!(q("ferry_queue_messages_dead_lettered_total", "src"), 1.0);
    assert_eq!(q("ferry_queue_messages_ready", "src"), 0.0);
    assert_eq!(q("ferry_queue_messages_unacked", "src"), 0.0);
    assert_eq!(q("ferry_queue_messages_published_total", "dead"), 1.0);
    documented(&s);
    assert!(dashboard_queries_exist(&s, |m| m.starts_with("ferry_queue_")) >= 8);

    // The consumer's connection goes: its deliveries go back to the queue.
    c2.close(200, "bye".into()).await.unwrap();
    let s = scrape_until(&b, "the connection to be released", |s| {
        value(s, "ferry_connections", &amqp) == 1.0 && value(s, "ferry_queue_consumers", &[("queue", "work")]) == 0.0
    });
    let q = |name: &str| value(&s, name, &[("vhost", "/"), ("queue", "work")]);
    assert_eq!(q("ferry_queue_messages_unacked"), 0.0);
    assert_eq!(q("ferry_queue_messages_ready"), 9.0);
    assert_eq!(q("ferry_queue_messages_delivered_total"), 5.0);
    assert_eq!(value(&s, "ferry_connections_accepted_total", &amqp), 2.0);
    c1.close(200, "bye".into()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_sessions_subscriptions_retained_and_messages() {
    use rumqttc::{Packet, QoS};

    use crate::mqtt_clients::{client, expect, publishes};

    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start_with_toml(dir.path(), "[mqtt]\nmax_queued_messages = 5\n");
    let mqtt = [("protocol", "mqtt")];
    // A persistent session that goes offline with one subscription.
    let (slow, mut slow_rx) = client(b.mqtt_port, "slow", false, |_| {}).await;
    slow.subscribe("full/#", QoS::AtLeastOnce).await.unwrap();
    expect(&mut slow_rx, |p| matches!(p, Packet::SubAck(_))).await;
    slow.disconnect().await.unwrap();
    let (sub, mut srx) = client(b.mqtt_port, "sub", true, |_| {}).await;
    for (filter, qos) in [("m/#", QoS::AtLeastOnce), ("r/#", QoS::AtMostOnce)] {
        sub.subscribe(filter, qos).await.unwrap();
        expect(&mut srx, |p| matches!(p, Packet::SubAck(_))).await;
    }
    let (publ, mut prx) = client(b.mqtt_port, "pub", true, |_| {}).await;
    // One at a time, each delivered before the next: (topic, QoS, retain,
    // the QoS it reaches "sub" with).
    let sends = [
        ("r/1", QoS::AtLeastOnce, true, QoS::AtMostOnce),
        ("r/2", QoS::AtLeastOnce, true, QoS::AtMostOnce),
        ("m/a", QoS::AtMostOnce, false, QoS::AtMostOnce),
        ("m/b", QoS::AtLeastOnce, false, QoS::AtLeastOnce),
        ("m/c", QoS::ExactlyOnce, false, QoS::AtLeastOnce),
    ];
    for (topic, qos, retain, delivered) in sends {
        publ.publish(topic, qos, retain, "x").await.unwrap();
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => drop(expect(&mut prx, |p| matches!(p, Packet::PubAck(_))).await),
            QoS::ExactlyOnce => drop(expect(&mut prx, |p| matches!(p, Packet::PubComp(_))).await),
        }
        let got = publishes(&mut srx, 1).await;
        assert_eq!((got[0].0.as_str(), got[0].2), (topic, delivered));
    }
    // "slow" is offline: QoS 0 is dropped, and its queue takes 5 of 6.
    publ.publish("full/zero", QoS::AtMostOnce, false, "x").await.unwrap();
    for i in 0..6 {
        publ.publish(format!("full/{i}"), QoS::AtLeastOnce, false, "x").await.unwrap();
        expect(&mut prx, |p| matches!(p, Packet::PubAck(_))).await;
    }

    let s = scrape_until(&b, "the offline session", |s| {
        value(s, "ferry_mqtt_sessions", &[("state", "offline")]) == 1.0 && value(s, "ferry_connections", &mqtt) == 2.0
    });
    assert_eq!(value(&s, "ferry_connections_accepted_total", &mqtt), 3.0);
    assert_eq!(value(&s, "ferry_mqtt_sessions", &[("state", "connected")]), 2.0);
    assert!(matches!(kind(&s, "ferry_mqtt_sessions"), Value::Gauge(_)));
    assert_eq!(value(&s, "ferry_mqtt_subscriptions", &[]), 3.0);
    assert_eq!(value(&s, "ferry_mqtt_retained_messages", &[]), 2.0);
    let received = |qos: &str| value(&s, "ferry_mqtt_messages_received_total", &[("qos", qos)]);
    let sent = |qos: &str| value(&s, "ferry_mqtt_messages_sent_total", &[("qos", qos)]);
    assert_eq!((received("0"), received("1"), received("2")), (2.0, 9.0, 1.0));
    assert_eq!((sent("0"), sent("1"), sent("2")), (3.0, 2.0, 0.0));
    assert!(matches!(kind(&s, "ferry_mqtt_messages_dropped_total"), Value::Counter(_)));
    assert_eq!(value(&s, "ferry_mqtt_messages_dropped_total", &[]), 2.0);
    let requests = |api: &str| value(&s, "ferry_requests_total", &[("protocol", "mqtt"), ("api", api)]);
    assert_eq!(requests("CONNECT"), 3.0);
    assert_eq!(requests("SUBSCRIBE"), 3.0);
    assert_eq!(requests("PUBLISH"), 12.0);
    assert_eq!(requests("DISCONNECT"), 1.0);
    let publish_latency = [("protocol", "mqtt"), ("api", "PUBLISH")];
    assert_eq!(value(&s, "ferry_request_duration_seconds", &publish_latency), 12.0);
    documented(&s);
    assert!(dashboard_queries_exist(&s, |m| m.starts_with("ferry_mqtt_")) >= 6);

    // A retained message cleared by an empty one: the gauge follows.
    publ.publish("r/2", QoS::AtLeastOnce, true, "").await.unwrap();
    expect(&mut prx, |p| matches!(p, Packet::PubAck(_))).await;
    assert_eq!(value(&scrape(&b), "ferry_mqtt_retained_messages", &[]), 1.0);
    drop(sub);
}
