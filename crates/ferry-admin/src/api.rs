//! Routes: `/metrics`, `/v1/health*`, the REST admin API on topics,
//! configs, groups and offsets (nodes and reassignments: `nodes.rs`),
//! front-ends' listings (`/v1/stomp/connections|subscriptions`), vhosts
//! (RabbitMQ's `/api/vhosts`: `vhosts.rs`), and `/stomp` (STOMP over
//! WebSocket).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ferry_broker::group::Committed;
use ferry_broker::metadata::TopicInfo;
use ferry_broker::topic_config::{self, ConfigSource, TOPIC_CONFIGS};
use ferry_broker::{Broker, BrokerError};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::AdminState;
use crate::error::ApiError;

type ApiResult = Result<Response, ApiError>;

pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/health", get(health))
        .route("/v1/health/live", get(live))
        .route("/v1/health/ready", get(ready))
        .route("/v1/cluster", get(cluster))
        .route("/v1/topics", get(list_topics).post(create_topic))
        .route("/v1/topics/{name}", get(describe_topic).delete(delete_topic))
        .route("/v1/topics/{name}/configs", get(topic_configs).patch(alter_topic_configs))
        .route("/v1/groups", get(list_groups))
        .route("/v1/groups/{id}", get(describe_group).delete(delete_group))
        .route("/v1/groups/{id}/offsets", post(reset_offsets))
        .route("/v1/nodes/{id}", axum::routing::delete(crate::nodes::remove))
        .route("/v1/nodes/{id}/decommission", post(crate::nodes::decommission).delete(crate::nodes::recommission))
        .route("/v1/reassignments", get(crate::nodes::reassignments))
        .route("/v1/topics/{name}/partitions/{partition}/reassignment", post(crate::nodes::reassign))
        .route("/v1/users", get(crate::security::list_users).post(crate::security::create_user))
        .route("/v1/users/{name}", axum::routing::delete(crate::security::delete_user))
        .route("/v1/users/{name}/password", axum::routing::put(crate::security::change_password))
        .route(
            "/v1/acls",
            get(crate::security::list_acls).post(crate::security::add_acl).delete(crate::security::remove_acl),
        )
        .route("/api/vhosts", get(crate::vhosts::list))
        .route("/api/vhosts/{name}", get(crate::vhosts::show).put(crate::vhosts::create).delete(crate::vhosts::delete))
        .route("/v1/stomp/connections", get(listing))
        .route("/v1/stomp/subscriptions", get(listing))
        .route("/stomp", get(crate::websocket::upgrade))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// A front-end's listing ([`crate::LISTINGS`]), if that front-end runs.
async fn listing(State(s): State<AdminState>, uri: axum::http::Uri) -> ApiResult {
    match s.listing(uri.path()) {
        Some(list) => ok(list()),
        None => Err(ApiError::not_found(format!("{} is not served: its front-end is not running", uri.path()))),
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this endpoint")
}

/// A JSON body, with our error shape for bodies that do not parse.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Runs broker work that touches files (fsync, directories) off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("admin task failed: {e}")))?
}

fn ok(v: Value) -> ApiResult {
    Ok(Json(v).into_response())
}

/// OpenMetrics when the scraper asks for it (Prometheus does), else the
/// classic Prometheus text format 0.0.4 (curl, older scrapers and parsers).
async fn metrics(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    let text = s.broker.encode_metrics();
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.contains("application/openmetrics-text") {
        ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
    } else {
        ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], to_prometheus_text(&text))
            .into_response()
    }
}

/// OpenMetrics text to Prometheus text 0.0.4: a counter's family is named
/// after its samples (`x_total`), and `# EOF` / `# UNIT` lines go.
fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].iter().find_map(|p| line.strip_prefix(p).map(|rest| (*p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

async fn health(State(s): State<AdminState>) -> Response {
    let (status, body) = health_body(s.ready.load(Ordering::Acquire), s.broker.controller_status().waiting);
    (status, Json(body)).into_response()
}

/// `/v1/health`: 503 while not ready, or while the node waits for the
/// controller quorum (with the reason under `waiting`).
fn health_body(ready: bool, waiting: Option<String>) -> (StatusCode, Value) {
    let status = if ready && waiting.is_none() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut body = json!({ "live": true, "ready": ready });
    if let Some(why) = waiting {
        body["waiting"] = Value::String(why);
    }
    (status, body)
}

async fn live() -> Response {
    Json(json!({ "live": true })).into_response()
}

async fn ready(State(s): State<AdminState>) -> Response {
    let ready = s.ready.load(Ordering::Acquire);
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ "ready": ready }))).into_response()
}

async fn cluster(State(s): State<AdminState>) -> ApiResult {
    ok(crate::cluster::cluster_json(&s.broker))
}

/// The topic as the cluster knows it (hosted here or not).
fn topic_or_404(b: &Broker, name: &str) -> Result<Arc<TopicInfo>, ApiError> {
    b.metadata()
        .topic(name)
        .filter(|t| !t.internal)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("topic {name} not found")))
}

/// A topic: every partition's replicas and leader from the image, and the
/// offsets and size of the partitions this node hosts.
fn topic_json(b: &Broker, t: &TopicInfo) -> Value {
    let local = b.topic(&t.name).filter(|l| l.id == t.id);
    let partitions: Vec<Value> = (0..)
        .zip(&t.partitions)
        .map(|(index, info)| {
            let mut p = json!({
                "partition": index,
                "leader": info.leader,
                "leader_epoch": info.leader_epoch,
                "replicas": info.replicas,
                "isr": info.isr,
            });
            if let Some(part) = local.as_ref().and_then(|l| l.partition(index)) {
                p["log_start_offset"] = json!(part.log_start_offset());
                p["high_watermark"] = json!(part.high_watermark());
                p["log_end_offset"] = json!(part.log_end_offset());
                p["size_bytes"] = json!(part.size_bytes());
            }
            p
        })
        .collect();
    json!({ "name": t.name, "id": t.id.to_string(), "partitions": partitions, "configs": t.configs })
}

async fn list_topics(State(s): State<AdminState>) -> ApiResult {
    let topics: Vec<Value> = s
        .broker
        .metadata()
        .topics
        .values()
        .filter(|t| !t.internal)
        .map(|t| json!({ "name": t.name, "id": t.id.to_string(), "partitions": t.partitions.len() }))
        .collect();
    ok(json!({ "topics": topics }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTopic {
    name: String,
    partitions: Option<i32>,
    #[serde(default)]
    configs: BTreeMap<String, Value>,
}

/// Config values as strings: JSON strings, numbers and booleans are taken.
fn config_value(name: &str, v: &Value) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(ApiError::bad_request(format!("config {name}: value must be a string, number or boolean"))),
    }
}

async fn create_topic(State(s): State<AdminState>, bytes: Bytes) -> ApiResult {
    let req: NewTopic = body(&bytes)?;
    let configs = req
        .configs
        .iter()
        .map(|(k, v)| Ok((k.clone(), config_value(k, v)?)))
        .collect::<Result<BTreeMap<_, _>, ApiError>>()?;
    s.broker.create_topic(&req.name, req.partitions, &configs, false).await?;
    let topic = topic_or_404(&s.broker, &req.name)?;
    Ok((StatusCode::CREATED, Json(topic_json(&s.broker, &topic))).into_response())
}

async fn describe_topic(State(s): State<AdminState>, Path(name): Path<String>) -> ApiResult {
    let t = topic_or_404(&s.broker, &name)?;
    ok(topic_json(&s.broker, &t))
}

async fn delete_topic(State(s): State<AdminState>, Path(name): Path<String>) -> ApiResult {
    topic_or_404(&s.broker, &name)?;
    s.broker.delete_topic(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn source_name(source: ConfigSource) -> &'static str {
    match source {
        ConfigSource::Topic => "topic",
        ConfigSource::DynamicBroker => "dynamic_broker",
        ConfigSource::StaticBroker => "static_broker",
        ConfigSource::Default => "default",
    }
}

fn configs_json(b: &Broker, t: &TopicInfo) -> Value {
    let defaults = b.defaults();
    let overrides = &t.configs;
    let configs: Vec<Value> = TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let (value, source) = topic_config::effective(def, &defaults, overrides, Some(t.replication_factor()));
            json!({ "name": def.name, "value": value, "source": source_name(source) })
        })
        .collect();
    json!({ "topic": t.name, "configs": configs })
}

async fn topic_configs(State(s): State<AdminState>, Path(name): Path<String>) -> ApiResult {
    let t = topic_or_404(&s.broker, &name)?;
    ok(configs_json(&s.broker, &t))
}

/// `{"retention.ms": "60000", "cleanup.policy": null}`: set the first,
/// remove the override of the second (as IncrementalAlterConfigs).
async fn alter_topic_configs(State(s): State<AdminState>, Path(name): Path<String>, bytes: Bytes) -> ApiResult {
    let changes: BTreeMap<String, Value> = body(&bytes)?;
    let t = topic_or_404(&s.broker, &name)?;
    let mut configs = t.configs.clone();
    for (k, v) in &changes {
        if topic_config::find(k).is_none() {
            return Err(ApiError::bad_request(format!("unknown topic config {k}")));
        }
        if v.is_null() {
            configs.remove(k);
        } else {
            configs.insert(k.clone(), config_value(k, v)?);
        }
    }
    s.broker.set_topic_configs(&name, configs, false).await?;
    let t = topic_or_404(&s.broker, &name)?;
    ok(configs_json(&s.broker, &t))
}

async fn list_groups(State(s): State<AdminState>) -> ApiResult {
    let groups: Vec<Value> = s
        .broker
        .groups()
        .list()
        .into_iter()
        .map(|(id, protocol_type, state, kind)| {
            json!({ "group": id, "protocol_type": protocol_type, "state": state, "type": kind })
        })
        .collect();
    ok(json!({ "groups": groups }))
}

/// Topic partitions of a Kafka consumer-protocol assignment
/// (ConsumerProtocolAssignment v0-v3: version, [topic, [partition]], ...).
/// Other protocols' assignments are opaque: `None`.
fn decode_assignment(bytes: &[u8]) -> Option<BTreeMap<String, Vec<i32>>> {
    struct Cur<'a>(&'a [u8]);
    impl Cur<'_> {
        fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
            let (head, rest) = self.0.split_first_chunk::<N>()?;
            self.0 = rest;
            Some(*head)
        }
        fn i16(&mut self) -> Option<i16> {
            self.take().map(i16::from_be_bytes)
        }
        fn i32(&mut self) -> Option<i32> {
            self.take().map(i32::from_be_bytes)
        }
    }
    let mut c = Cur(bytes);
    let mut out = BTreeMap::new();
    if bytes.is_empty() {
        return Some(out);
    }
    let version = c.i16()?;
    if !(0..=3).contains(&version) {
        return None;
    }
    for _ in 0..c.i32()?.max(0) {
        let len = usize::try_from(c.i16()?).ok()?;
        let name = c.0.get(..len)?;
        c.0 = &c.0[len..];
        let name = std::str::from_utf8(name).ok()?.to_string();
        let n = c.i32()?.max(0);
        let mut parts = Vec::new();
        for _ in 0..n {
            parts.push(c.i32()?);
        }
        out.insert(name, parts);
    }
    Some(out)
}

async fn describe_group(State(s): State<AdminState>, Path(id): Path<String>) -> ApiResult {
    let b = &s.broker;
    if !b.groups().exists(&id) {
        return Err(ApiError::not_found(format!("group {id} not found")));
    }
    let mut out = json!({ "group": id, "state": "Empty", "members": [] });
    if let Some(d) = b.groups().describe(&id) {
        let members: Vec<Value> = d
            .members
            .iter()
            .map(|m| {
                json!({
                    "member_id": m.member_id,
                    "instance_id": m.instance_id,
                    "client_id": m.client_id,
                    "client_host": m.client_host,
                    "assignment": decode_assignment(&m.assignment),
                })
            })
            .collect();
        out = json!({
            "group": id,
            "state": d.state.name(),
            "protocol_type": d.protocol_type,
            "protocol": d.protocol,
            "generation": d.generation,
            "members": members,
        });
    } else if let Some((state, members)) = b.groups().with_consumer_group(&id, |g| {
        let members: Vec<Value> = g.members.keys().map(|m| json!({ "member_id": m })).collect();
        (g.state(), members)
    }) {
        out = json!({ "group": id, "state": state, "protocol_type": "consumer", "members": members });
    }
    let offsets: Vec<Value> = b
        .group_lag(&id)
        .into_iter()
        .map(|(topic, partition, committed, hw, lag)| {
            json!({
                "topic": topic,
                "partition": partition,
                "committed_offset": committed,
                "high_watermark": hw,
                "lag": if lag >= 0 { json!(lag) } else { Value::Null },
            })
        })
        .collect();
    out["offsets"] = Value::Array(offsets);
    ok(out)
}

async fn delete_group(State(s): State<AdminState>, Path(id): Path<String>) -> ApiResult {
    let broker = s.broker.clone();
    blocking(move || Ok(broker.groups().delete_group(&id)?)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Where to move a group's offsets: exactly one of `to`, `offset`,
/// `timestamp`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetOffsets {
    topic: String,
    /// Partitions to reset (default: all of the topic's).
    partitions: Option<Vec<i32>>,
    /// "earliest" or "latest".
    to: Option<String>,
    offset: Option<i64>,
    /// Milliseconds since the epoch: the first offset with a timestamp at
    /// or after it (the high watermark if none).
    timestamp: Option<i64>,
}

async fn reset_offsets(State(s): State<AdminState>, Path(id): Path<String>, bytes: Bytes) -> ApiResult {
    let req: ResetOffsets = body(&bytes)?;
    let b = s.broker.clone();
    let topic = b.topic(&req.topic).ok_or_else(|| ApiError::bad_request(format!("topic {} not found", req.topic)))?;
    if b.group_member_count(&id) > 0 {
        return Err(ApiError::new(StatusCode::CONFLICT, "the group has active members; stop them first"));
    }
    let partitions = match &req.partitions {
        Some(p) => p.clone(),
        None => (0..topic.partition_count() as i32).collect(),
    };
    let now = ferry_util::time::now_ms_u64();
    let mut offsets = Vec::with_capacity(partitions.len());
    for index in partitions {
        let p = topic
            .partition(index)
            .ok_or_else(|| ApiError::bad_request(format!("topic {} has no partition {index}", req.topic)))?;
        let (start, end) = (p.log_start_offset() as i64, p.high_watermark() as i64);
        let offset = match (req.to.as_deref(), req.offset, req.timestamp) {
            (Some("earliest"), None, None) => start,
            (Some("latest"), None, None) => end,
            (Some(other), None, None) => {
                return Err(ApiError::bad_request(format!("\"to\" must be earliest or latest, not {other:?}")));
            }
            (None, Some(o), None) if o >= 0 => o.clamp(start, end),
            (None, None, Some(ts)) => {
                let found = p.offset_for_timestamp(ts).map_err(ApiError::from)?;
                found.map_or(end, |(o, _)| o as i64)
            }
            _ => return Err(ApiError::bad_request("give exactly one of \"to\", \"offset\" (>= 0) or \"timestamp\"")),
        };
        let c = Committed { offset, leader_epoch: -1, metadata: None, commit_ms: now };
        offsets.push((req.topic.clone(), index, c));
    }
    let result: Vec<Value> =
        offsets.iter().map(|(t, p, c)| json!({ "topic": t, "partition": p, "offset": c.offset })).collect();
    let written = b.groups().commit(&id, "", -1, offsets).map_err(|e| match e {
        ferry_broker::group::GroupError::UnknownMemberId => {
            ApiError::new(StatusCode::CONFLICT, "the group has active members; stop them first")
        }
        e => ApiError::from(BrokerError::Group(e)),
    })?;
    written.acknowledged().await.map_err(|e| ApiError::from(BrokerError::Group(e)))?;
    ok(json!({ "group": id, "offsets": result }))
}

#[cfg(test)]
mod tests {
    use super::{StatusCode, decode_assignment, health_body, json, to_prometheus_text};

    #[test]
    fn health_says_why_it_waits() {
        assert_eq!(health_body(true, None), (StatusCode::OK, json!({"live": true, "ready": true})));
        assert_eq!(health_body(false, None).0, StatusCode::SERVICE_UNAVAILABLE);
        let (status, body) = health_body(true, Some("waiting for quorum".into()));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, json!({"live": true, "ready": true, "waiting": "waiting for quorum"}));
    }

    #[test]
    fn openmetrics_becomes_prometheus_text() {
        let om = "# HELP a_bytes Bytes\n# TYPE a_bytes counter\na_bytes_total{t=\"x\"} 3\n\
                  # HELP g A gauge\n# TYPE g gauge\ng 1\n# EOF\n";
        let text = to_prometheus_text(om);
        assert_eq!(
            text,
            "# HELP a_bytes_total Bytes\n# TYPE a_bytes_total counter\na_bytes_total{t=\"x\"} 3\n\
             # HELP g A gauge\n# TYPE g gauge\ng 1\n"
        );
    }

    #[test]
    fn consumer_assignments_decode() {
        let mut b = Vec::new();
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(&2i16.to_be_bytes());
        b.extend_from_slice(b"ab");
        b.extend_from_slice(&2i32.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&3i32.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes()); // user data: null
        let a = decode_assignment(&b).expect("decodes");
        assert_eq!(a.get("ab"), Some(&vec![0, 3]));
        assert_eq!(decode_assignment(&b[..7]), None, "truncated");
        assert_eq!(decode_assignment(&[0, 9]), None, "unknown version");
    }

    mod topics {
        use axum::body::{Bytes, to_bytes};
        use axum::extract::{Path, State};
        use axum::http::StatusCode;
        use ferry_broker::metadata::{MetadataRecord, NodeInfo};
        use ferry_broker::{Broker, BrokerConfig};
        use serde_json::{Value, json};

        use crate::AdminState;

        async fn body(r: super::super::ApiResult) -> (StatusCode, Value) {
            let r = r.unwrap_or_else(axum::response::IntoResponse::into_response);
            let status = r.status();
            let bytes = to_bytes(r.into_body(), 1 << 20).await.unwrap();
            (status, if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() })
        }

        #[tokio::test]
        async fn topic_endpoints_read_the_image_and_change_it_through_the_controller() {
            let dir = tempfile::tempdir().unwrap();
            let broker =
                Broker::open(BrokerConfig { data_dir: dir.path().to_path_buf(), ..BrokerConfig::default() }).unwrap();
            let controller = ferry_broker::testing::install(&broker);
            let s = AdminState::new(broker.clone());
            let created = super::super::create_topic(
                State(s.clone()),
                Bytes::from_static(br#"{"name":"t","partitions":2,"configs":{"retention.ms":60000}}"#),
            )
            .await;
            let (status, t) = body(created).await;
            assert_eq!(status, StatusCode::CREATED);
            assert_eq!(
                (t["partitions"][1]["leader"].clone(), t["partitions"][1]["high_watermark"].clone()),
                (json!(1), json!(0))
            );
            assert_eq!(t["configs"]["retention.ms"], "60000");
            // A topic placed on another node: listed and described from the
            // image, without local offsets.
            let node2 = NodeInfo {
                id: 2,
                incarnation: uuid::Uuid::new_v4(),
                listeners: Default::default(),
                rack: None,
                voter: false,
                fenced: false,
            };
            controller
                .apply(vec![
                    MetadataRecord::RegisterNode(node2),
                    MetadataRecord::CreateTopic {
                        name: "remote".into(),
                        id: uuid::Uuid::new_v4(),
                        internal: false,
                        configs: Default::default(),
                        replicas: vec![vec![2]],
                    },
                ])
                .unwrap();
            let (_, list) = body(super::super::list_topics(State(s.clone())).await).await;
            let names: Vec<&str> =
                list["topics"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
            assert_eq!(names, vec!["remote", "t"], "internal topics are not listed");
            let (_, r) = body(super::super::describe_topic(State(s.clone()), Path("remote".into())).await).await;
            assert_eq!(r["partitions"][0]["leader"], 2);
            assert!(r["partitions"][0].get("high_watermark").is_none());
            let patch = Bytes::from_static(br#"{"retention.ms":null,"cleanup.policy":"compact"}"#);
            let (status, c) =
                body(super::super::alter_topic_configs(State(s.clone()), Path("t".into()), patch).await).await;
            assert_eq!(status, StatusCode::OK);
            let policy =
                c["configs"].as_array().unwrap().iter().find(|x| x["name"] == "cleanup.policy").unwrap().clone();
            assert_eq!((policy["value"].clone(), policy["source"].clone()), (json!("compact"), json!("topic")));
            let (status, _) = body(super::super::delete_topic(State(s.clone()), Path("t".into())).await).await;
            assert_eq!(status, StatusCode::NO_CONTENT);
            assert!(broker.metadata().topic("t").is_none() && broker.topic("t").is_none());
            let (status, _) = body(super::super::describe_topic(State(s.clone()), Path("t".into())).await).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
            // Without a controller, changes are refused as unavailable.
            let lone_dir = tempfile::tempdir().unwrap();
            let lone = AdminState::new(
                Broker::open(BrokerConfig { data_dir: lone_dir.path().to_path_buf(), ..BrokerConfig::default() })
                    .unwrap(),
            );
            let (status, _) =
                body(super::super::create_topic(State(lone), Bytes::from_static(br#"{"name":"x"}"#)).await).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        }
    }
}
