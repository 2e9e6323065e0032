//! The HTTP admin API: every endpoint, its answers and its refusals (JSON
//! errors with 400 / 404 / 405 / 409).

use std::time::Duration;

use rdkafka::consumer::Consumer;
use serde_json::Value;

use crate::support::{Broker, eventually, group_consumer, http, http_json, produce_values};

/// A JSON error body: `{"error": "...", "code": status}`.
fn assert_error(what: &str, (status, body): (u16, Value), expected: u16) {
    assert_eq!(status, expected, "{what}: {body}");
    assert_eq!(body["code"], expected, "{what}: {body}");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{what}: {body}");
}

#[test]
fn health_and_routing() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    assert_eq!(http_json(&b, "GET", "/v1/health", None), (200, serde_json::json!({"live": true, "ready": true})));
    assert_eq!(http_json(&b, "GET", "/v1/health/live", None), (200, serde_json::json!({"live": true})));
    assert_eq!(http_json(&b, "GET", "/v1/health/ready", None), (200, serde_json::json!({"ready": true})));
    let (status, cluster) = http_json(&b, "GET", "/v1/cluster", None);
    assert_eq!(status, 200);
    assert_eq!(cluster["node_id"], 1);
    assert!(cluster["cluster_id"].as_str().is_some_and(|c| !c.is_empty()));
    assert_error("unknown path", http_json(&b, "GET", "/v1/nothing", None), 404);
    assert_error("unknown root path", http_json(&b, "GET", "/", None), 404);
    assert_error("wrong method", http_json(&b, "PUT", "/v1/topics", Some("{}")), 405);
    assert_error("wrong method on health", http_json(&b, "POST", "/v1/health", None), 405);
}

#[test]
fn topics_and_configs() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (status, created) = http_json(
        &b,
        "POST",
        "/v1/topics",
        Some(r#"{"name": "orders", "partitions": 3, "configs": {"retention.ms": 3600000}}"#),
    );
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["partitions"].as_array().map(Vec::len), Some(3));
    assert_eq!(created["configs"]["retention.ms"], "3600000");

    assert_error("duplicate", http_json(&b, "POST", "/v1/topics", Some(r#"{"name": "orders"}"#)), 409);
    assert_error("bad JSON", http_json(&b, "POST", "/v1/topics", Some("{name")), 400);
    assert_error("no name", http_json(&b, "POST", "/v1/topics", Some(r#"{"partitions": 1}"#)), 400);
    assert_error("unknown field", http_json(&b, "POST", "/v1/topics", Some(r#"{"name": "x", "replicas": 1}"#)), 400);
    assert_error("bad name", http_json(&b, "POST", "/v1/topics", Some(r#"{"name": "a/b"}"#)), 400);
    assert_error("0 partitions", http_json(&b, "POST", "/v1/topics", Some(r#"{"name": "z", "partitions": 0}"#)), 400);
    assert_error(
        "bad config",
        http_json(&b, "POST", "/v1/topics", Some(r#"{"name": "y", "configs": {"cleanup.policy": "sometimes"}}"#)),
        400,
    );
    assert_error(
        "unknown config",
        http_json(&b, "POST", "/v1/topics", Some(r#"{"name": "y", "configs": {"no.such": "1"}}"#)),
        400,
    );

    let (status, list) = http_json(&b, "GET", "/v1/topics", None);
    assert_eq!(status, 200);
    let names: Vec<&str> = list["topics"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["orders"], "refused creations left nothing behind");

    let (status, t) = http_json(&b, "GET", "/v1/topics/orders", None);
    assert_eq!(status, 200);
    assert_eq!(t["partitions"][2]["high_watermark"], 0);
    assert_error("unknown topic", http_json(&b, "GET", "/v1/topics/nope", None), 404);

    let config = |body: &Value, name: &str| -> (String, String) {
        let c = body["configs"].as_array().unwrap().iter().find(|c| c["name"] == name).cloned().unwrap();
        (c["value"].as_str().unwrap().to_string(), c["source"].as_str().unwrap().to_string())
    };
    let (status, configs) = http_json(&b, "GET", "/v1/topics/orders/configs", None);
    assert_eq!(status, 200);
    assert_eq!(config(&configs, "retention.ms"), ("3600000".into(), "topic".into()));
    assert_eq!(config(&configs, "cleanup.policy"), ("delete".into(), "default".into()));
    assert_error("configs of unknown topic", http_json(&b, "GET", "/v1/topics/nope/configs", None), 404);

    let (status, configs) = http_json(
        &b,
        "PATCH",
        "/v1/topics/orders/configs",
        Some(r#"{"retention.ms": null, "cleanup.policy": "compact"}"#),
    );
    assert_eq!(status, 200, "{configs}");
    assert_eq!(config(&configs, "cleanup.policy"), ("compact".into(), "topic".into()));
    assert_eq!(config(&configs, "retention.ms").1, "default");
    let (_, t) = http_json(&b, "GET", "/v1/topics/orders", None);
    assert_eq!(t["configs"], serde_json::json!({"cleanup.policy": "compact"}));
    for (what, body) in [
        ("bad value", r#"{"cleanup.policy": "sometimes"}"#),
        ("negative", r#"{"segment.bytes": -5}"#),
        ("unknown key", r#"{"no.such.config": "1"}"#),
        ("array value", r#"{"retention.ms": [1]}"#),
        ("not an object", "[1, 2]"),
        ("bad JSON", "{"),
    ] {
        assert_error(what, http_json(&b, "PATCH", "/v1/topics/orders/configs", Some(body)), 400);
    }
    assert_error("alter unknown topic", http_json(&b, "PATCH", "/v1/topics/nope/configs", Some("{}")), 404);

    assert_eq!(http(&b, "DELETE", "/v1/topics/orders", None).0, 204);
    assert_error("deleted", http_json(&b, "GET", "/v1/topics/orders", None), 404);
    assert_error("delete twice", http_json(&b, "DELETE", "/v1/topics/orders", None), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_offsets_and_lag() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (status, _) =
        http_json(&b, "POST", "/v1/topics", Some(r#"{"name": "events", "partitions": 2, "configs": {}}"#));
    assert_eq!(status, 201);
    // Unkeyed by partition: keys spread values over both partitions.
    produce_values(&b, "events", 0..20).await;
    let (_, t) = http_json(&b, "GET", "/v1/topics/events", None);
    let hw: Vec<i64> =
        t["partitions"].as_array().unwrap().iter().map(|p| p["high_watermark"].as_i64().unwrap()).collect();
    assert_eq!(hw.iter().sum::<i64>(), 20);

    assert_error("unknown group", http_json(&b, "GET", "/v1/groups/readers", None), 404);
    assert_error("delete unknown group", http_json(&b, "DELETE", "/v1/groups/readers", None), 404);

    // Reset a group that does not exist yet: it gets offsets.
    let (status, reset) =
        http_json(&b, "POST", "/v1/groups/readers/offsets", Some(r#"{"topic": "events", "to": "earliest"}"#));
    assert_eq!(status, 200, "{reset}");
    assert_eq!(reset["offsets"].as_array().map(Vec::len), Some(2));
    let (status, g) = http_json(&b, "GET", "/v1/groups/readers", None);
    assert_eq!(status, 200, "{g}");
    let lag: i64 = g["offsets"].as_array().unwrap().iter().map(|o| o["lag"].as_i64().unwrap()).sum();
    assert_eq!(lag, 20, "{g}");

    let (status, _) = http_json(
        &b,
        "POST",
        "/v1/groups/readers/offsets",
        Some(r#"{"topic": "events", "partitions": [0], "offset": 1000000}"#),
    );
    assert_eq!(status, 200);
    let (_, g) = http_json(&b, "GET", "/v1/groups/readers", None);
    let p0 = g["offsets"].as_array().unwrap().iter().find(|o| o["partition"] == 0).cloned().unwrap();
    assert_eq!(p0["committed_offset"], hw[0], "offsets past the end are clamped to the high watermark");
    assert_eq!(p0["lag"], 0);
    let (status, _) =
        http_json(&b, "POST", "/v1/groups/readers/offsets", Some(r#"{"topic": "events", "timestamp": 0}"#));
    assert_eq!(status, 200);
    let (_, g) = http_json(&b, "GET", "/v1/groups/readers", None);
    assert!(g["offsets"].as_array().unwrap().iter().all(|o| o["committed_offset"] == 0), "{g}");

    for (what, body) in [
        ("bad JSON", "{"),
        ("unknown topic", r#"{"topic": "nope", "to": "earliest"}"#),
        ("no target", r#"{"topic": "events"}"#),
        ("two targets", r#"{"topic": "events", "to": "latest", "offset": 3}"#),
        ("bad target", r#"{"topic": "events", "to": "middle"}"#),
        ("negative offset", r#"{"topic": "events", "offset": -1}"#),
        ("unknown partition", r#"{"topic": "events", "partitions": [7], "to": "latest"}"#),
        ("unknown field", r#"{"topic": "events", "to": "latest", "x": 1}"#),
    ] {
        assert_error(what, http_json(&b, "POST", "/v1/groups/readers/offsets", Some(body)), 400);
    }

    let (status, list) = http_json(&b, "GET", "/v1/groups", None);
    assert_eq!(status, 200);
    assert!(list["groups"].as_array().unwrap().iter().any(|g| g["group"] == "readers"), "{list}");

    // An active member: resets and deletion are refused while it is there.
    let consumer = group_consumer(&b, "live", "events", &[]);
    let mut seen = 0;
    eventually("the member to consume", || {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            seen += 1;
        }
        seen > 0
    });
    let (status, g) = http_json(&b, "GET", "/v1/groups/live", None);
    assert_eq!(status, 200);
    assert_eq!(g["state"], "Stable", "{g}");
    let member = &g["members"][0];
    let assigned = member["assignment"]["events"].as_array().map(Vec::len);
    assert_eq!(assigned, Some(2), "{g}");
    assert_error(
        "reset while active",
        http_json(&b, "POST", "/v1/groups/live/offsets", Some(r#"{"topic": "events", "to": "latest"}"#)),
        409,
    );
    assert_error("delete while active", http_json(&b, "DELETE", "/v1/groups/live", None), 409);
    consumer.unsubscribe();
    drop(consumer);
    eventually("the group to be empty", || http_json(&b, "GET", "/v1/groups/live", None).1["state"] == "Empty");

    assert_eq!(http(&b, "DELETE", "/v1/groups/readers", None).0, 204);
    assert_error("deleted group", http_json(&b, "GET", "/v1/groups/readers", None), 404);
}
