//! Trackers: the progress machinery of searches for workers outside shoal. A backend in
//! any language creates a tracker, posts its events, and browsers follow them over SSE.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use shoal_raft::{ProgressRecord, ProgressStatus, ProgressUpdate, Rejection};

use super::error::{ApiError, ApiResult};
use super::json::JsonBody;
use super::progress::{self, view};
use super::AppState;
use crate::sse::{terminal_data, EventKind, ProgressEvent};

const MAX_LABEL_CHARS: usize = 200;
const MAX_TOTAL: u32 = 1_000_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/trackers", post(create_tracker))
        .route("/api/trackers/{id}", get(get_tracker))
        .route("/api/trackers/{id}/events", get(progress::events_handler).post(post_event))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTracker {
    total: u32,
    #[serde(default)]
    label: String,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrackerEvent {
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
        ttl_ms: app.config.progress_ttl.as_millis() as u64,
        expires_at_ms: 0,
    };
    let record = app.store.create_progress(&id, record).await?;
    // In Redis mode events are numbered in the record, whichever node takes them.
    if app.feed.is_none() {
        app.hub.open(&id, record.attempt, record.last_seq);
    }
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
    JsonBody(event): JsonBody<TrackerEvent>,
) -> ApiResult<Response> {
    check_size(&app, &event)?;
    let record = progress::read_kind(&app, &id, "tracker").await?;
    if record.status.is_terminal() {
        return Err(Rejection::ProgressFinished.into());
    }
    if app.feed.is_some() {
        return apply_event_through_redis(&app, &id, &record, event).await;
    }
    if record.owner != app.cluster.node_id() {
        // The tracker's events are numbered on the node that created it: hand it over.
        let owner = app.cluster.member_addr(record.owner).ok_or_else(|| {
            ApiError::unavailable(
                "owner_unknown",
                "the node of that tracker is unknown; retry shortly",
            )
        })?;
        let body = serde_json::to_vec(&event).map_err(ApiError::internal)?;
        let path = format!("/internal/trackers/{id}/events");
        let (status, body) = app
            .cluster
            .client()
            .relay_post(&owner, record.owner, &path, body, app.config.request_timeout)
            .await
            .map_err(|error| {
                tracing::warn!(tracker_id = %id, %error, "forwarding a tracker event failed");
                ApiError::unavailable(
                    "owner_unreachable",
                    "the node of that tracker did not answer; retry shortly",
                )
            })?;
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        return Ok((status, [(axum::http::header::CONTENT_TYPE, "application/json")], body)
            .into_response());
    }
    apply_event(&app, &id, &record, event).await
}

/// Refuses an event whose `data` is over `--max-event-bytes` with 413, before anything
/// is published: the owner keeps recent events in memory for clients that resume, and a
/// terminal event's data becomes the replicated record's result.
fn check_size(app: &AppState, event: &TrackerEvent) -> ApiResult<()> {
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

/// Slides the deadline of unfinished tracker `record` when less than its TTL is left.
///
/// A tracker's `progress` events are not recorded through Raft, so they would not move
/// its deadline; the replicated rule gives an unfinished tracker its TTL and a tenth
/// after its last milestone, and this refresh (a `Started` milestone that changes nothing
/// else) restores that whenever an event finds less than the TTL left. So a tracker lives
/// at least `--progress-ttl` after its last event, as the classic setup's `EX 300`
/// refreshed by every update, with one Raft write per tenth of the TTL at most.
async fn refresh_deadline(app: &AppState, id: &str, record: &ProgressRecord) -> ApiResult<()> {
    if record.expires_at_ms >= shoal_raft::unix_millis().saturating_add(record.ttl_ms) {
        return Ok(());
    }
    app.store.record_milestone(id, record.attempt, 0, ProgressUpdate::Started).await?;
    Ok(())
}

/// What a tracker event changes: its status (`None` for progress), and for a terminal
/// one the record's result and error.
struct Effect {
    kind: EventKind,
    status: Option<ProgressStatus>,
    result: Option<String>,
    error: Option<String>,
}

/// The kinds of event a worker may post.
const POSTED_KINDS: [EventKind; 3] = [EventKind::Progress, EventKind::Completed, EventKind::Failed];

fn effect(event: &TrackerEvent) -> ApiResult<Effect> {
    let Some(kind) = EventKind::parse(&event.kind).filter(|kind| POSTED_KINDS.contains(kind))
    else {
        return Err(ApiError::unprocessable(format!(
            "type: {:?} is not one of progress, completed, failed",
            event.kind
        )));
    };
    let Some(status) = kind.terminal_status() else {
        return Ok(Effect { kind, status: None, result: None, error: None });
    };
    let data = &event.data;
    let (result, error) = match status {
        ProgressStatus::Completed => (Some(data.to_string()), None),
        _ => (
            None,
            Some(
                data.get("error")
                    .and_then(Value::as_str)
                    .map_or_else(|| data.to_string(), str::to_string),
            ),
        ),
    };
    Ok(Effect { kind, status: Some(status), result, error })
}

/// Records `event` of tracker `id` in Redis, numbered there, and publishes it.
async fn apply_event_through_redis(
    app: &AppState,
    id: &str,
    record: &ProgressRecord,
    event: TrackerEvent,
) -> ApiResult<Response> {
    let Some(feed) = &app.feed else {
        return Err(ApiError::internal("not in redis mode"));
    };
    let effect = effect(&event)?;
    let update = match effect.status {
        // Progress changes nothing but the event count (and the TTL, as in the classic setup).
        None => ProgressUpdate::Started,
        Some(status) => {
            ProgressUpdate::Finished { status, result: effect.result, error: effect.error.clone() }
        }
    };
    let (seq, _) = feed.store().next_tracker_event(id, record.attempt, update).await?;
    let data = match effect.status {
        None => event.data,
        Some(status) => terminal_data(status, Some(event.data), effect.error.as_deref()),
    };
    let published = ProgressEvent { attempt: record.attempt, seq, kind: effect.kind, data };
    feed.publish(id, published);
    let body = match effect.status {
        None => json!({ "id": id, "seq": seq }),
        Some(status) => json!({ "id": id, "seq": seq, "status": status.as_str() }),
    };
    let code = if effect.status.is_some() { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((code, Json(body)).into_response())
}

/// Publishes `event` of tracker `id`, which this node owns.
pub async fn apply_event(
    app: &AppState,
    id: &str,
    record: &ProgressRecord,
    event: TrackerEvent,
) -> ApiResult<Response> {
    check_size(app, &event)?;
    let id = id.to_string();
    let Effect { kind, status, result, error } = effect(&event)?;
    let topic = app.hub.get_or_open(&id, record.attempt, record.last_seq);
    let Some(status) = status else {
        refresh_deadline(app, &id, record).await?;
        let seq = topic.publish(kind, event.data).await.ok_or(Rejection::ProgressFinished)?;
        return Ok((StatusCode::ACCEPTED, Json(json!({ "id": id, "seq": seq }))).into_response());
    };
    let data = event.data;
    let store = app.store.clone();
    let attempt = record.attempt;
    let event_id = id.clone();
    let seq = topic
        .publish_durable(kind, |seq| async move {
            let update = ProgressUpdate::Finished { status, result, error: error.clone() };
            store.record_milestone(&event_id, attempt, seq, update).await?;
            Ok::<_, crate::store::StoreError>(terminal_data(status, Some(data), error.as_deref()))
        })
        .await?
        .ok_or(Rejection::ProgressFinished)?;
    app.hub.retire(&id, &topic, std::time::Duration::from_secs(120));
    Ok((StatusCode::OK, Json(json!({ "id": id, "seq": seq, "status": status.as_str() })))
        .into_response())
}
