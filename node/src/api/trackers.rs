//! Trackers: the progress machinery of searches for workers outside shoal. A backend in
//! any language creates a tracker, posts its events, and browsers follow them over SSE.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shoal_raft::{ProgressRecord, ProgressStatus, Rejection};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult};
use super::extract::Path;
use super::json::JsonBody;
use super::openapi::{BodyErrors, CrossSiteErrors, ErrorBody, StateErrors};
use super::progress::{self, view, ProgressView, SseEvent, StatusView};
use super::AppState;
use crate::fabric::{Effect, FabricError, TrackerEvent, TrackerPosted};

const MAX_LABEL_CHARS: usize = 200;
const MAX_TOTAL: u32 = 1_000_000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_tracker))
        .routes(routes!(get_tracker))
        .routes(routes!(tracker_events, post_event))
}

/// A new tracker.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateTracker {
    /// How many steps the work has (progress bars show `done` of it).
    #[schema(minimum = 1, maximum = 1_000_000)]
    #[serde(deserialize_with = "super::json::whole_number")]
    total: u32,
    /// What the work is, for people; at most 200 characters.
    #[serde(default)]
    #[schema(max_length = 200)]
    label: String,
}

/// An event as a worker posts it: unknown fields are refused here, to catch typos.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PostedEvent {
    /// `progress`, or the terminal `completed` or `failed`.
    #[serde(rename = "type")]
    #[schema(value_type = EventType)]
    kind: String,
    /// Any JSON, at most --max-event-bytes: `{"done": 3}` on progress events; a
    /// `completed` event's data becomes the tracker's `result`, a `failed` event's
    /// `error` string its `error`.
    #[serde(default)]
    data: Value,
}

/// The kinds of event a worker posts.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
enum EventType {
    Progress,
    Completed,
    Failed,
}

/// An event published, to every client following the tracker.
#[derive(Debug, Serialize, ToSchema)]
struct EventPosted {
    id: String,
    /// The event's number in the stream.
    seq: u64,
    /// The status a terminal event ended the tracker in.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusView>,
}

/// Creates a tracker: the progress of work done outside shoal, which browsers follow
/// over SSE from any node.
#[utoipa::path(
    post,
    path = "/api/trackers",
    tag = "trackers",
    request_body(content = CreateTracker),
    responses(
        (status = 201, description = "Created", body = ProgressView),
        CrossSiteErrors,
        BodyErrors,
        StateErrors,
    )
)]
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
    view.events_url = Some(format!("/api/trackers/{id}/events"));
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// A tracker's replicated state, read linearizably.
#[utoipa::path(
    get,
    path = "/api/trackers/{id}",
    tag = "trackers",
    params(("id" = String, Path, description = "The tracker id")),
    responses(
        (status = 200, description = "The tracker", body = ProgressView),
        (status = 404, description = "No such tracker (or it expired)", body = ErrorBody),
        StateErrors,
    )
)]
async fn get_tracker(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ProgressView>> {
    let record = progress::read_kind(&app, &id, "tracker").await?;
    Ok(Json(view(&id, &record)))
}

/// Follows a tracker over Server-Sent Events, from any node: a `snapshot`, the posted
/// events, one terminal event, then the stream ends; `Last-Event-ID` resumes.
#[utoipa::path(
    get,
    path = "/api/trackers/{id}/events",
    tag = "trackers",
    params(
        ("id" = String, Path, description = "The tracker id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event, such as `1:17`"),
    ),
    responses(
        (status = 200, description = "The event stream", body = SseEvent, content_type = "text/event-stream"),
        (status = 204, description = "`Last-Event-ID` shows the client saw the end"),
        (status = 404, description = "No such tracker (or it expired)", body = ErrorBody),
        StateErrors,
    )
)]
async fn tracker_events(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    progress::events(app, id, headers).await
}

/// Posts an event to a tracker, from the worker doing the work; the node that owns the
/// tracker publishes it.
#[utoipa::path(
    post,
    path = "/api/trackers/{id}/events",
    tag = "trackers",
    params(("id" = String, Path, description = "The tracker id")),
    request_body(content = PostedEvent),
    responses(
        (status = 200, description = "A terminal event: the tracker ended", body = EventPosted),
        (status = 202, description = "Published", body = EventPosted),
        (status = 404, description = "No such tracker (or it expired)", body = ErrorBody),
        (status = 409, description = "The tracker has ended already", body = ErrorBody),
        CrossSiteErrors,
        BodyErrors,
        StateErrors,
    )
)]
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
    let code = if posted.status.is_some() { StatusCode::OK } else { StatusCode::ACCEPTED };
    let body =
        EventPosted { id: id.to_string(), seq: posted.seq, status: posted.status.map(Into::into) };
    (code, Json(body)).into_response()
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
