//! Who may use the admin API, and its users and ACLs endpoints (the same
//! as `ferry user` and `ferry acl`; docs/security.md, "HTTP admin API").
//!
//! When security is on (a Kafka SASL listener, or a user in the store that
//! is not loopback-only), every endpoint but `/metrics` and `/v1/health*`
//! needs HTTP basic authentication with a user of the store
//! (`Authorization: Basic`, checked as the other protocols' PLAIN logins:
//! against the SCRAM credential, failures slowed per address) and that
//! user must be a super user (`--super-users`): the API administers the
//! whole node. 401 without or with wrong credentials, 403 for other users.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use ferry_broker::security::{
    AclBinding, AclEntry, AclFilter, Gatekeeper, Operation, PatternType, Permission, Principal, ResourcePattern,
    ResourceType, ScramCredential, ScramMechanism,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AdminState;
use crate::error::ApiError;

type ApiResult = Result<Response, ApiError>;

/// What decides who may use the API.
pub struct HttpAuth {
    /// Logins and super users.
    pub gate: Arc<Gatekeeper>,
    /// Security is on regardless of the store (a Kafka SASL listener).
    pub always: bool,
}

/// Endpoints open to everyone (probes and scrapers).
fn open_path(path: &str) -> bool {
    path == "/metrics" || path == "/v1/health" || path.starts_with("/v1/health/")
}

fn unauthorized(why: &str) -> Response {
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, why).into_response();
    r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"ferry\""));
    r
}

/// (user, password) of an `Authorization: Basic` header.
fn basic(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// The middleware: lets a request through, or answers 401 / 403.
pub async fn require_login(State(s): State<AdminState>, req: Request, next: Next) -> Response {
    let Some(auth) = s.auth.get() else { return next.run(req).await };
    if open_path(req.uri().path()) || !(auth.always || auth.gate.logins_required()) {
        return next.run(req).await;
    }
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let peer = peer.unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    let Some((user, password)) = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(basic)
    else {
        return unauthorized("authentication required (HTTP basic with a user of the store)");
    };
    let gate = auth.gate.clone();
    // PBKDF2 off the async workers.
    let checked = tokio::task::spawn_blocking(move || gate.login("http", &user, &password, peer)).await;
    match checked {
        Ok(Ok(principal)) if auth.gate.is_super_user(&principal) => next.run(req).await,
        Ok(Ok(principal)) => {
            tracing::info!(%principal, %peer, path = req.uri().path(), "admin API refused: not a super user");
            ApiError::new(StatusCode::FORBIDDEN, format!("{principal} is not a super user")).into_response()
        }
        Ok(Err(refused)) => {
            tokio::time::sleep(refused.delay).await;
            unauthorized("wrong user name or password")
        }
        Err(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "login check failed").into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    password: String,
    iterations: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    password: String,
    iterations: Option<u32>,
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))
}

async fn set_password(s: &AdminState, name: &str, password: &str, iterations: Option<u32>) -> Result<(), ApiError> {
    let iterations = iterations.unwrap_or(ScramMechanism::MIN_ITERATIONS);
    if !(ScramMechanism::MIN_ITERATIONS..=ScramMechanism::MAX_ITERATIONS).contains(&iterations) {
        return Err(ApiError::bad_request(format!(
            "iterations must be {}..={}",
            ScramMechanism::MIN_ITERATIONS,
            ScramMechanism::MAX_ITERATIONS
        )));
    }
    if name.is_empty() || password.is_empty() {
        return Err(ApiError::bad_request("name and password must not be empty"));
    }
    for m in ScramMechanism::ALL {
        let password = password.to_string();
        let credential = tokio::task::spawn_blocking(move || ScramCredential::new(m, &password, iterations))
            .await
            .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "hashing failed"))?;
        s.broker.upsert_scram_credential(name, credential).await?;
    }
    Ok(())
}

/// `GET /v1/users`: names and mechanisms (never a credential).
pub async fn list_users(State(s): State<AdminState>) -> ApiResult {
    let users: Vec<Value> = s
        .broker
        .metadata()
        .users
        .iter()
        .map(|(name, creds)| json!({"name": name, "mechanisms": creds.keys().map(|m| m.name()).collect::<Vec<_>>()}))
        .collect();
    Ok(Json(json!({ "users": users })).into_response())
}

/// `POST /v1/users` `{"name", "password", "iterations"?}`.
pub async fn create_user(State(s): State<AdminState>, body: Bytes) -> ApiResult {
    let u: NewUser = parse(&body)?;
    if s.broker.metadata().users.contains_key(&u.name) {
        return Err(ApiError::new(StatusCode::CONFLICT, format!("user {} exists", u.name)));
    }
    set_password(&s, &u.name, &u.password, u.iterations).await?;
    Ok((StatusCode::CREATED, Json(json!({ "name": u.name }))).into_response())
}

/// `PUT /v1/users/{name}/password` `{"password", "iterations"?}`.
pub async fn change_password(State(s): State<AdminState>, Path(name): Path<String>, body: Bytes) -> ApiResult {
    let p: NewPassword = parse(&body)?;
    if !s.broker.metadata().users.contains_key(&name) {
        return Err(ApiError::not_found(format!("no user {name}")));
    }
    set_password(&s, &name, &p.password, p.iterations).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /v1/users/{name}`.
pub async fn delete_user(State(s): State<AdminState>, Path(name): Path<String>) -> ApiResult {
    let Some(creds) = s.broker.metadata().users.get(&name).cloned() else {
        return Err(ApiError::not_found(format!("no user {name}")));
    };
    for m in creds.keys() {
        s.broker.delete_scram_credential(&name, *m).await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// One ACL in the API's JSON, as `ferry acl` names its parts.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AclJson {
    principal: String,
    #[serde(default = "any_host")]
    host: String,
    operation: String,
    #[serde(default = "allow")]
    permission: String,
    resource_type: String,
    resource_name: String,
    #[serde(default = "literal")]
    pattern_type: String,
}

fn any_host() -> String {
    "*".into()
}
fn allow() -> String {
    "allow".into()
}
fn literal() -> String {
    "literal".into()
}

fn binding(a: AclJson) -> Result<AclBinding, ApiError> {
    let bad = |what: &str, v: &str| ApiError::bad_request(format!("unknown {what} {v:?}"));
    let resource_type =
        ResourceType::from_name(&a.resource_type).ok_or_else(|| bad("resource_type", &a.resource_type))?;
    let pattern_type = PatternType::from_name(&a.pattern_type).ok_or_else(|| bad("pattern_type", &a.pattern_type))?;
    let operation = Operation::from_name(&a.operation).ok_or_else(|| bad("operation", &a.operation))?;
    let permission = match a.permission.to_ascii_lowercase().as_str() {
        "allow" => Permission::Allow,
        "deny" => Permission::Deny,
        other => return Err(bad("permission", other)),
    };
    let principal = Principal::parse(&a.principal).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if a.resource_name.is_empty() || a.host.is_empty() {
        return Err(ApiError::bad_request("empty resource_name or host"));
    }
    Ok(AclBinding {
        pattern: ResourcePattern { resource_type, name: a.resource_name, pattern_type },
        entry: AclEntry { principal, host: a.host, operation, permission },
    })
}

fn acl_json(b: &AclBinding) -> Value {
    json!({
        "principal": b.entry.principal.to_string(),
        "host": b.entry.host,
        "operation": b.entry.operation.name(),
        "permission": if b.entry.permission == Permission::Allow { "allow" } else { "deny" },
        "resource_type": b.pattern.resource_type.name(),
        "resource_name": b.pattern.name,
        "pattern_type": b.pattern.pattern_type.name(),
    })
}

/// `GET /v1/acls`: every ACL of every protocol.
pub async fn list_acls(State(s): State<AdminState>) -> ApiResult {
    let acls = s.broker.metadata().acls.clone();
    let all: Vec<Value> = acls.matching(&AclFilter::any()).map(acl_json).collect();
    Ok(Json(json!({ "acls": all })).into_response())
}

/// `POST /v1/acls` with one ACL.
pub async fn add_acl(State(s): State<AdminState>, body: Bytes) -> ApiResult {
    let b = binding(parse(&body)?)?;
    let out = acl_json(&b);
    s.broker.create_acls(vec![b]).await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// `DELETE /v1/acls` with the ACL to remove (404 if there is none such).
pub async fn remove_acl(State(s): State<AdminState>, body: Bytes) -> ApiResult {
    let b = binding(parse(&body)?)?;
    if !s.broker.metadata().acls.contains(&b) {
        return Err(ApiError::not_found("no such ACL"));
    }
    s.broker.delete_acls(vec![b]).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_headers() {
        assert_eq!(basic("Basic YWRtaW46cHc6eA=="), Some(("admin".into(), "pw:x".into())));
        assert_eq!(basic("basic YTpi"), Some(("a".into(), "b".into())));
        assert_eq!(basic("Bearer abc"), None);
        assert_eq!(basic("Basic !!!"), None);
        assert_eq!(basic("Basic YWJj"), None, "no colon");
        assert!(open_path("/metrics") && open_path("/v1/health/ready") && !open_path("/v1/users"));
    }
}
