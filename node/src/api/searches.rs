//! The searches API (DESIGN §6): start, read, follow over SSE, cancel.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use shoal_raft::{ProgressRecord, Rejection};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult};
use super::extract::{Path, Query};
use super::json::JsonBody;
use super::openapi::{BodyErrors, CrossSiteErrors, ErrorBody, StateErrors};
use super::progress::{self, view, ProgressView, SseEvent, StatusView};
use super::AppState;
use crate::jobs::{SearchParams, SearchRequest, StartError};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_search))
        .routes(routes!(get_search, cancel_search))
        .routes(routes!(search_events))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct StartQuery {
    /// Answer when the search has ended (200 with its state) rather than at once (202).
    #[serde(default)]
    wait: bool,
}

/// A search accepted: it runs, and its state and events are at these URLs.
#[derive(Debug, Serialize, ToSchema)]
struct Started {
    id: String,
    status: StatusView,
    status_url: String,
    events_url: String,
}

/// A search being cancelled.
#[derive(Debug, Serialize, ToSchema)]
struct Cancelling {
    id: String,
    #[schema(value_type = String, example = "cancelling")]
    status: &'static str,
    status_url: String,
}

/// Starts a search: one part per UF, run by this node's workers or, when its queue is
/// full, by the least-loaded node with room.
#[utoipa::path(
    post,
    path = "/api/searches",
    tag = "searches",
    params(StartQuery),
    request_body(content = SearchRequest),
    responses(
        (status = 200, description = "`?wait=true`: the search has ended", body = ProgressView),
        (status = 202, description = "Accepted: the search runs", body = Started),
        (status = 400, description = "The body is not JSON, or the query string does not parse", body = ErrorBody),
        CrossSiteErrors,
        BodyErrors,
        StateErrors,
    )
)]
async fn start_search(
    State(app): State<AppState>,
    Query(query): Query<StartQuery>,
    JsonBody(request): JsonBody<SearchRequest>,
) -> ApiResult<Response> {
    let params = request
        .validate(&app.searches.source_names())
        .map_err(|invalid| ApiError::unprocessable(invalid.to_string()))?;
    let (id, status) = match app.searches.start(params.clone()).await {
        Ok((id, record)) => (id, record.status.into()),
        Err(StartError::QueueFull(_)) => place_elsewhere(&app, &params).await?,
        Err(StartError::Store(error)) => return Err(error.into()),
    };
    if query.wait {
        let record = wait_until_finished(&app, &id).await?;
        return Ok(Json(view(&id, &record)).into_response());
    }
    let body = Started {
        status_url: format!("/api/searches/{id}"),
        events_url: format!("/api/searches/{id}/events"),
        id,
        status,
    };
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
async fn place_elsewhere(app: &AppState, params: &SearchParams) -> ApiResult<(String, StatusView)> {
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
                let status = answer["status"]
                    .as_str()
                    .and_then(shoal_raft::ProgressStatus::parse)
                    .map_or(StatusView::Queued, StatusView::from);
                return Ok((id, status));
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

/// A search's replicated state, read linearizably.
#[utoipa::path(
    get,
    path = "/api/searches/{id}",
    tag = "searches",
    params(("id" = String, Path, description = "The search id")),
    responses(
        (status = 200, description = "The search", body = ProgressView),
        (status = 404, description = "No such search (or it expired)", body = ErrorBody),
        StateErrors,
    )
)]
async fn get_search(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ProgressView>> {
    let record = progress::read_kind(&app, &id, "search").await?;
    Ok(Json(view(&id, &record)))
}

/// Cancels a running search, wherever it runs.
#[utoipa::path(
    delete,
    path = "/api/searches/{id}",
    tag = "searches",
    params(("id" = String, Path, description = "The search id")),
    responses(
        (status = 202, description = "Cancelling", body = Cancelling),
        (status = 404, description = "No such search (or it expired)", body = ErrorBody),
        (status = 409, description = "The search has ended already", body = ErrorBody),
        CrossSiteErrors,
        StateErrors,
    )
)]
async fn cancel_search(State(app): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let record = progress::read_kind(&app, &id, "search").await?;
    if record.status.is_terminal() {
        return Err(Rejection::ProgressFinished.into());
    }
    if !app.searches.cancel(&id) {
        // Run by another node.
        app.events.cancel_elsewhere(&id, &record).await?;
    }
    let body = Cancelling { status_url: format!("/api/searches/{id}"), id, status: "cancelling" };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// Follows a search over Server-Sent Events, from any node: a `snapshot` (the state,
/// as `GET /api/searches/{id}` answers it), then `progress` and `part_completed`
/// events, then one terminal event (`completed`, `failed` or `cancelled`), and the stream
/// ends. Each event's id is `<attempt>:<seq>`; `Last-Event-ID` resumes after it.
#[utoipa::path(
    get,
    path = "/api/searches/{id}/events",
    tag = "searches",
    params(
        ("id" = String, Path, description = "The search id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event, such as `1:17`"),
    ),
    responses(
        (status = 200, description = "The event stream", body = SseEvent, content_type = "text/event-stream"),
        (status = 204, description = "`Last-Event-ID` shows the client saw the end"),
        (status = 404, description = "No such search (or it expired)", body = ErrorBody),
        StateErrors,
    )
)]
async fn search_events(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    progress::events(app, id, headers).await
}
