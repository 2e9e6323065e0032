//! `/api/vhosts`: RabbitMQ's management API for vhosts, so its tools and
//! scripts work unchanged (`PUT` creates, `DELETE` deletes with everything
//! in the vhost, `GET` lists). A change goes through the controller and
//! reaches every node (docs/cluster.md, "Vhosts as records"). The name is
//! percent-encoded in the path as RabbitMQ expects (`%2F` for `/`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferry_broker::metadata::MQTT_VHOST;
use serde_json::{Value, json};

use crate::AdminState;
use crate::error::ApiError;

type ApiResult = Result<Response, ApiError>;

/// Longest vhost name (AMQP's short string).
const MAX_NAME: usize = 255;

fn vhost_json(name: &str) -> Value {
    // RabbitMQ's fields; descriptions and tags are not kept (docs/cluster.md).
    json!({ "name": name, "description": "", "tags": [] })
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(ApiError::bad_request(format!("invalid vhost name {name:?}")));
    }
    if name == MQTT_VHOST {
        return Err(ApiError::bad_request(format!("vhost name '{name}' is reserved")));
    }
    Ok(())
}

/// `GET /api/vhosts`: every vhost.
pub async fn list(State(s): State<AdminState>) -> ApiResult {
    let all: Vec<Value> = s.broker.vhost_names().iter().map(|n| vhost_json(n)).collect();
    Ok(Json(Value::Array(all)).into_response())
}

/// `GET /api/vhosts/{name}`.
pub async fn show(State(s): State<AdminState>, Path(name): Path<String>) -> ApiResult {
    if !s.broker.metadata().vhosts.contains_key(&name) {
        return Err(ApiError::not_found(format!("no vhost '{name}'")));
    }
    Ok(Json(vhost_json(&name)).into_response())
}

/// `PUT /api/vhosts/{name}` (any body, as RabbitMQ's optional
/// description, tags and default queue type): 201 if created, 204 if it
/// existed.
pub async fn create(State(s): State<AdminState>, Path(name): Path<String>) -> ApiResult {
    check_name(&name)?;
    let created = s.broker.create_vhost(&name).await?;
    Ok(if created { StatusCode::CREATED } else { StatusCode::NO_CONTENT }.into_response())
}

/// `DELETE /api/vhosts/{name}`: 204, or 404 if there is none.
pub async fn delete(State(s): State<AdminState>, Path(name): Path<String>) -> ApiResult {
    if !s.broker.metadata().vhosts.contains_key(&name) {
        return Err(ApiError::not_found(format!("no vhost '{name}'")));
    }
    s.broker.delete_vhost(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
