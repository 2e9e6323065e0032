//! Moving replicas over HTTP, as the Kafka APIs and the CLI do:
//! `POST /v1/nodes/{id}/decommission` (`DELETE` calls it off),
//! `DELETE /v1/nodes/{id}`
//! (UnregisterBroker), `GET /v1/reassignments` and
//! `POST /v1/topics/{name}/partitions/{p}/reassignment` (body
//! `{"replicas": [2,3,4]}`, or `{"replicas": null}` to cancel).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::AdminState;
use crate::error::ApiError;

type ApiResult = Result<Response, ApiError>;

/// Starts decommissioning node `id`; answers at once (202) with the
/// replicas still on it.
pub(crate) async fn decommission(State(s): State<AdminState>, Path(id): Path<i32>) -> ApiResult {
    s.broker.decommission_node(id).await?;
    let left = s.broker.metadata().partitions_on(id).count();
    Ok((StatusCode::ACCEPTED, Json(json!({ "node": id, "decommissioning": true, "replicas": left }))).into_response())
}

/// Calls off node `id`'s decommission.
pub(crate) async fn recommission(State(s): State<AdminState>, Path(id): Path<i32>) -> ApiResult {
    s.broker.recommission_node(id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Removes a stopped node that holds no replicas (409 while it runs or
/// holds replicas).
pub(crate) async fn remove(State(s): State<AdminState>, Path(id): Path<i32>) -> ApiResult {
    s.broker.unregister_node(id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The reassignments in progress.
pub(crate) async fn reassignments(State(s): State<AdminState>) -> ApiResult {
    let all: Vec<_> = s
        .broker
        .reassignments(None)
        .into_iter()
        .map(|r| {
            json!({
                "topic": r.topic,
                "partition": r.partition,
                "replicas": r.replicas,
                "adding": r.adding,
                "removing": r.removing,
            })
        })
        .collect();
    Ok(Json(json!({ "reassignments": all })).into_response())
}

#[derive(Deserialize)]
struct Target {
    replicas: Option<Vec<i32>>,
}

/// Reassigns (or, with `"replicas": null`, cancels) one partition.
pub(crate) async fn reassign(
    State(s): State<AdminState>,
    Path((topic, partition)): Path<(String, i32)>,
    body: Bytes,
) -> ApiResult {
    let target: Target =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    s.broker.alter_reassignment(&topic, partition, target.replicas).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}
