//! The searches API (DESIGN §6): start, read, follow over SSE, cancel.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use shoal_raft::{ProgressRecord, Rejection};

use super::error::{ApiError, ApiResult};
use super::json::JsonBody;
use super::progress::{self, view};
use super::AppState;
use crate::jobs::{SearchParams, SearchRequest, StartError};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/searches", post(start_search))
        .route("/api/searches/{id}", get(get_search).delete(cancel_search))
        .route(super::SEARCH_EVENTS_ROUTE, get(progress::events_handler))
}

#[derive(Debug, Deserialize)]
struct StartQuery {
    #[serde(default)]
    wait: bool,
}

async fn start_search(
    State(app): State<AppState>,
    Query(query): Query<StartQuery>,
    JsonBody(request): JsonBody<SearchRequest>,
) -> ApiResult<Response> {
    let params = request
        .validate(&app.searches.source_names())
        .map_err(|invalid| ApiError::unprocessable(invalid.to_string()))?;
    let (id, status) = match app.searches.start(params.clone()).await {
        Ok((id, record)) => (id, record.status.as_str().to_string()),
        Err(StartError::QueueFull(_)) => place_elsewhere(&app, &params).await?,
        Err(StartError::Store(error)) => return Err(error.into()),
    };
    if query.wait {
        let record = wait_until_finished(&app, &id).await?;
        return Ok(Json(view(&id, &record)).into_response());
    }
    let body = json!({
        "id": id,
        "status": status,
        "status_url": format!("/api/searches/{id}"),
        "events_url": format!("/api/searches/{id}/events"),
    });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// Polls the replicated record until the search ends: wherever it runs, whatever
/// attempt finishes it.
async fn wait_until_finished(app: &AppState, id: &str) -> ApiResult<ProgressRecord> {
    loop {
        let record = progress::read(app, id).await?;
        if record.status.is_terminal() {
            return Ok(record);
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

/// This node's queue is full: hands the search to the least-loaded live node (by the
/// `load` each gossips) that has room; 503 only when every queue is full.
async fn place_elsewhere(app: &AppState, params: &SearchParams) -> ApiResult<(String, String)> {
    let status = app.cluster.status();
    let mut candidates: Vec<_> = app
        .gossip
        .members()
        .await
        .into_iter()
        .filter(|member| member.alive && member.ready && member.node_id != status.node_id)
        .filter(|member| status.members.iter().any(|(id, _)| *id == member.node_id))
        .filter_map(|member| {
            member.api_addr.clone().map(|addr| (member.load, member.node_id, addr))
        })
        .collect();
    candidates.sort();
    let body = serde_json::to_vec(params).map_err(ApiError::internal)?;
    for (load, node_id, addr) in candidates {
        let placed = app
            .cluster
            .client()
            .relay_post(&addr, node_id, START_PATH, body.clone(), app.config.raft.request_timeout)
            .await;
        match placed {
            Ok((202, answer)) => {
                let answer: serde_json::Value =
                    serde_json::from_slice(&answer).map_err(ApiError::internal)?;
                let Some(id) =
                    answer["id"].as_str().filter(|id| !id.is_empty()).map(str::to_string)
                else {
                    tracing::warn!(%addr, "a node accepted a search but answered no id");
                    continue;
                };
                tracing::info!(search_id = %id, %addr, load, "queue full here: search placed on another node");
                return Ok((id, answer["status"].as_str().unwrap_or("queued").to_string()));
            }
            Ok((status, _)) => {
                tracing::debug!(%addr, status, "that node cannot take the search either")
            }
            Err(error) => tracing::debug!(%addr, %error, "could not offer the search to that node"),
        }
    }
    Err(ApiError::unavailable(
        "queue_full",
        "every worker of every node is busy and the queues are full; retry shortly",
    ))
}

/// The path through which a node with a full queue places a search on another node.
pub const START_PATH: &str = "/internal/searches/start";
/// How often `?wait=true` re-reads the search.
const WAIT_POLL: std::time::Duration = std::time::Duration::from_millis(100);

async fn get_search(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let record = progress::read_kind(&app, &id, "search").await?;
    Ok(Json(view(&id, &record)))
}

async fn cancel_search(State(app): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let record = progress::read(&app, &id).await?;
    if record.status.is_terminal() {
        return Err(Rejection::ProgressFinished.into());
    }
    if !app.searches.cancel(&id) {
        // Run by another node.
        app.events.cancel_elsewhere(&id, &record).await?;
    }
    let body =
        json!({ "id": id, "status": "cancelling", "status_url": format!("/api/searches/{id}") });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}
