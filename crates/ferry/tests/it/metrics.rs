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
    // only queries metrics that exist.
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    let operations = std::fs::read_to_string(docs.join("operations.md")).unwrap();
    let mut names: Vec<&str> = after.samples.iter().map(|x| family_name(&x.metric)).collect();
    names.sort();
    names.dedup();
    for name in &names {
        assert!(operations.contains(&format!("`{name}`")), "docs/operations.md does not list {name}");
    }
    let dashboard = std::fs::read_to_string(docs.join("grafana-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("ferry_") {
                    assert!(
                        names.contains(&family_name(word)),
                        "the dashboard queries {word}, which /metrics does not have"
                    );
                    queried += 1;
                }
            }
        }
    }
    assert!(queried >= 10);
}
