//! Trackers: the progress machinery of searches for workers outside shoal. A backend in
//! any language creates a tracker, posts its events, and browsers follow them over SSE.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use shoal_raft::{ProgressRecord, ProgressStatus, Rejection};

use super::error::{ApiError, ApiResult};
use super::json::JsonBody;
use super::progress::{self, view};
use super::AppState;
use crate::fabric::{Effect, FabricError, TrackerEvent, TrackerPosted};

const MAX_LABEL_CHARS: usize = 200;
const MAX_TOTAL: u32 = 1_000_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/trackers", post(create_tracker))
        .route("/api/trackers/{id}", get(get_tracker))
        .route(super::TRACKER_EVENTS_ROUTE, get(progress::events_handler).post(post_event))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTracker {
    total: u32,
    #[serde(default)]
    label: String,
}

/// An event as a worker posts it: unknown fields are refused here, to catch typos.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostedEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Value,
}

async fn create_tracker(
    State(app): State<AppState>,
    JsonBody(body): JsonBody<CreateTracker>,
) -> ApiResult<Response> {
    if body.total == 0 || body.total > MAX_TOTAL {
        return Err(ApiError::unprocessable(format!("total: must be 1 to {MAX_TOTAL}")));
    }
    if body.label.chars().count() > MAX_LABEL_CHARS {
        return Err(ApiError::unprocessable(format!(
            "label: at most {MAX_LABEL_CHARS} characters"
        )));
    }
    let id = format!("{:032x}", rand::random::<u128>());
    let record = ProgressRecord {
        kind: "tracker".to_string(),
        params: json!({ "label": body.label, "total": body.total }).to_string(),
        status: ProgressStatus::Running,
        owner: app.cluster.node_id(),
        attempt: 1,
        created_at_ms: 0,
        updated_at_ms: 0,
        total_parts: body.total,
        parts: Vec::new(),
        result: None,
        error: None,
        last_seq: 0,
        ttl_ms: app.config.searches.progress_ttl.as_millis() as u64,
        expires_at_ms: 0,
    };
    let record = app.store.create_progress(&id, record).await?;
    app.events.open_tracker(&id, &record);
    let mode = app.store.mode().as_str();
    tracing::info!(tracker_id = %id, total = body.total, mode, "created progress tracker: {id} ({} parts) [mode: {mode}]", body.total);
    let mut view = view(&id, &record);
    view["events_url"] = json!(format!("/api/trackers/{id}/events"));
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn get_tracker(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let record = progress::read_kind(&app, &id, "tracker").await?;
    Ok(Json(view(&id, &record)))
}

async fn post_event(
    State(app): State<AppState>,
    Path(id): Path<String>,
    JsonBody(posted): JsonBody<PostedEvent>,
) -> ApiResult<Response> {
    let event = TrackerEvent { kind: posted.kind, data: posted.data };
    check_size(&app, &event)?;
    let record = progress::read_kind(&app, &id, "tracker").await?;
    if record.status.is_terminal() {
        return Err(Rejection::ProgressFinished.into());
    }
    let effect =
        Effect::of(&event).map_err(|invalid| ApiError::unprocessable(invalid.to_string()))?;
    match app.events.post_tracker_event(&id, &record, event, effect).await {
        Ok(posted) => Ok(posted_response(&id, posted)),
        // The tracker's owner refused it: its answer goes back as it is.
        Err(FabricError::Owner { status, body }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            let content_type = [(axum::http::header::CONTENT_TYPE, "application/json")];
            Ok((status, content_type, body).into_response())
        }
        Err(error) => Err(error.into()),
    }
}

/// Answers a published event: 202 with its number, or 200 with the status it ended in.
pub fn posted_response(id: &str, posted: TrackerPosted) -> Response {
    match posted.status {
        None => (StatusCode::ACCEPTED, Json(json!({ "id": id, "seq": posted.seq }))),
        Some(status) => (
            StatusCode::OK,
            Json(json!({ "id": id, "seq": posted.seq, "status": status.as_str() })),
        ),
    }
    .into_response()
}

/// Refuses an event whose `data` is over `--max-event-bytes` with 413, before anything
/// is published: the owner keeps recent events in memory for clients that resume, and a
/// terminal event's data becomes the replicated record's result.
pub fn check_size(app: &AppState, event: &TrackerEvent) -> ApiResult<()> {
    let size = event.data.to_string().len();
    let limit = app.config.edge.max_event_bytes;
    if size > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("event data is {size} bytes of JSON, more than the limit of {limit}"),
        ));
    }
    Ok(())
}
