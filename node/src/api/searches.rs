//! The searches API (DESIGN §6): start, read, follow over SSE, cancel.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use shoal_raft::Rejection;

use super::error::{ApiError, ApiResult};
use super::json::JsonBody;
use super::progress::{self, view};
use super::AppState;
use crate::jobs::{SearchRequest, StartError};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/searches", post(start_search))
        .route("/api/searches/{id}", get(get_search).delete(cancel_search))
        .route("/api/searches/{id}/events", get(search_events))
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
    let (id, record) = app.searches.start(params).await.map_err(|error| match error {
        StartError::QueueFull(_) => ApiError::unavailable(
            "queue_full",
            "every worker is busy and the queue is full; retry shortly",
        ),
        StartError::Cluster(error) => error.into(),
    })?;
    if query.wait {
        let topic = app.hub.get(&id).ok_or_else(|| ApiError::internal("search topic missing"))?;
        let mut subscription = topic.subscribe(Some(0), || ()).await;
        let mut finished = subscription.replay.iter().any(|event| event.is_terminal());
        while !finished {
            match subscription.live.recv().await {
                Ok(event) => finished = event.is_terminal(),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
        let record = progress::read(&app, &id).await?;
        return Ok(Json(view(&id, &record)).into_response());
    }
    let body = json!({
        "id": id,
        "status": record.status.as_str(),
        "status_url": format!("/api/searches/{id}"),
        "events_url": format!("/api/searches/{id}/events"),
    });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

async fn get_search(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let record = progress::read(&app, &id).await?;
    if record.kind != "search" {
        return Err(Rejection::ProgressNotFound.into());
    }
    Ok(Json(view(&id, &record)))
}

async fn search_events(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    progress::events(app, id, headers).await
}

async fn cancel_search(State(app): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let record = progress::read(&app, &id).await?;
    if record.status.is_terminal() {
        return Err(Rejection::ProgressFinished.into());
    }
    if !app.searches.cancel(&id) {
        // Run by another node: ask the owner to cancel it.
        let owner = app.cluster.member_addr(record.owner).ok_or_else(|| {
            ApiError::unavailable(
                "owner_unknown",
                "the node running that search is unknown; retry shortly",
            )
        })?;
        let path = format!("/internal/searches/{id}/cancel");
        let timeout = app.config.request_timeout;
        app.cluster.client().post(&owner, &path, Vec::new(), timeout).await.map_err(|error| {
            tracing::warn!(search_id = %id, %error, "forwarding a cancel to the owner failed");
            ApiError::unavailable(
                "owner_unreachable",
                "the node running that search did not answer; retry shortly",
            )
        })?;
    }
    let body =
        json!({ "id": id, "status": "cancelling", "status_url": format!("/api/searches/{id}") });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}
