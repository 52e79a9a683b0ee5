//! `/internal/*`: Raft RPCs, forwarded writes, read indexes. Every request must carry an
//! HMAC-SHA256 under the cluster secret (see `shoal_raft::auth`); others get 401.

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use shoal_raft::auth::{MAX_SKEW_MS, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use shoal_raft::network::{
    APPEND_PATH, FORWARD_BATCH_PATH, FORWARD_PATH, MEMBERSHIP_PATH, READ_INDEX_PATH, SNAPSHOT_PATH,
    VOTE_PATH,
};
use shoal_raft::{unix_millis, ClusterSecret, Command, MembershipChange};
use shoal_storage::codec;

use super::error::ApiError;
use super::AppState;
use crate::sse::relay::Frame;
use futures::StreamExt;

/// The largest internal request: an append of many blob chunks, or a snapshot chunk.
const MAX_INTERNAL_BODY: usize = 256 * 1024 * 1024;

pub fn routes(secret: ClusterSecret) -> Router<AppState> {
    Router::new()
        .route(APPEND_PATH, post(append))
        .route(VOTE_PATH, post(vote))
        .route(SNAPSHOT_PATH, post(snapshot))
        .route(FORWARD_PATH, post(forward))
        .route(FORWARD_BATCH_PATH, post(forward_batch))
        .route(READ_INDEX_PATH, post(read_index))
        .route(MEMBERSHIP_PATH, post(membership))
        .route("/internal/searches/{id}/stream", get(stream))
        .route("/internal/searches/{id}/cancel", post(cancel))
        .route("/internal/trackers/{id}/events", post(tracker_event))
        .route(super::searches::START_PATH, post(start_search))
        .layer(axum::middleware::from_fn_with_state(secret, authenticate))
        // Internal bodies (appends of blob chunks, snapshots) exceed the public limit.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_INTERNAL_BODY))
}

/// Refuses unsigned, stale or forged requests with 401 before any handler runs.
async fn authenticate(
    State(secret): State<ClusterSecret>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let header = |name: &str| parts.headers.get(name).and_then(|value| value.to_str().ok());
    // Refuse what cannot be genuine before reading (up to 256 MiB of) the body.
    let fresh = header(TIMESTAMP_HEADER)
        .and_then(|timestamp| timestamp.parse::<u64>().ok())
        .is_some_and(|timestamp| timestamp.abs_diff(unix_millis()) <= MAX_SKEW_MS);
    if !fresh || header(SIGNATURE_HEADER).is_none() {
        let message = "unsigned or stale internal request";
        return ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_INTERNAL_BODY).await else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "internal request too large",
        )
        .into_response();
    };
    let path = parts.uri.path_and_query().map_or(parts.uri.path(), |path| path.as_str());
    let verified = secret.verify(
        parts.method.as_str(),
        path,
        header(TIMESTAMP_HEADER),
        header(SIGNATURE_HEADER),
        &bytes,
        unix_millis(),
    );
    if let Err(error) = verified {
        tracing::warn!(%error, path, "refused an internal request");
        return ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", error.to_string())
            .into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

fn decode<T: DeserializeOwned>(body: &Bytes) -> Result<T, Response> {
    codec::decode(body, "internal request").map_err(|error| {
        ApiError::bad_request("invalid_body", format!("undecodable internal request: {error}"))
            .into_response()
    })
}

fn encoded<T: serde::Serialize>(value: &T) -> Response {
    (StatusCode::OK, codec::encode(value)).into_response()
}

async fn append(State(app): State<AppState>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(request) => encoded(&app.cluster.raft().append_entries(request).await),
        Err(response) => response,
    }
}

async fn vote(State(app): State<AppState>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(request) => encoded(&app.cluster.vote(request).await),
        Err(response) => response,
    }
}

async fn snapshot(State(app): State<AppState>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(request) => encoded(&app.cluster.raft().install_snapshot(request).await),
        Err(response) => response,
    }
}

async fn forward(State(app): State<AppState>, body: Bytes) -> Response {
    match decode::<Command>(&body) {
        Ok(command) => encoded(&app.cluster.write_local(command).await),
        Err(response) => response,
    }
}

/// Many writes from a follower: each is proposed here (and packed by the group commit);
/// the answers come back in order.
async fn forward_batch(State(app): State<AppState>, body: Bytes) -> Response {
    match decode::<Vec<Command>>(&body) {
        Ok(commands) => {
            let writes = commands.into_iter().map(|command| app.cluster.write_local(command));
            let answers: Vec<shoal_raft::Result<shoal_raft::Response>> =
                futures::future::join_all(writes).await;
            encoded(&Ok::<_, shoal_raft::ClusterError>(answers))
        }
        Err(response) => response,
    }
}

async fn membership(State(app): State<AppState>, body: Bytes) -> Response {
    match decode::<MembershipChange>(&body) {
        Ok(change) => encoded(&app.cluster.change_membership_local(change).await),
        Err(response) => response,
    }
}

#[derive(Debug, serde::Deserialize)]
struct StreamQuery {
    attempt: u32,
    after: u64,
}

/// The owner's side of the relay: the events of an attempt after a point, one JSON line
/// each, ending after the terminal event. 404 when this node does not run that attempt;
/// 410 when it no longer has the events after that point.
async fn stream(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<StreamQuery>,
) -> Response {
    let Some(topic) = app.hub.get(&id).filter(|topic| topic.attempt == query.attempt) else {
        return ApiError::not_found("not_found", "this node does not run that attempt")
            .into_response();
    };
    let subscription = topic.subscribe(Some(query.after), || ()).await;
    if !subscription.resumed {
        return ApiError::new(StatusCode::GONE, "gone", "those events are no longer kept")
            .into_response();
    }
    let replay_done = subscription.replay.iter().any(|event| event.is_terminal());
    let replay: Vec<String> = subscription.replay.iter().map(|event| Frame::line(event)).collect();
    let last_seen = subscription.replay.last().map_or(query.after, |event| event.seq);
    let closed = topic.closed();
    let live = futures::stream::unfold(
        (subscription.live, last_seen, replay_done, topic.clone(), closed),
        |(mut live, mut last_seen, done, topic, mut closed)| async move {
            loop {
                if done {
                    return None;
                }
                let received = tokio::select! {
                    biased;
                    received = live.recv() => Some(received),
                    // The attempt stopped without a terminal event: end, so relays notice.
                    _ = closed.wait_for(|closed| *closed) => return None,
                    // An empty line now and then lets relays tell a silent owner from a dead one.
                    _ = tokio::time::sleep(crate::sse::relay::HEARTBEAT) => None,
                };
                let Some(received) = received else {
                    return Some(("\n".to_string(), (live, last_seen, done, topic, closed)));
                };
                match received {
                    Ok(event) if event.seq <= last_seen => continue,
                    Ok(event) => {
                        last_seen = event.seq;
                        let terminal = event.is_terminal();
                        return Some((
                            Frame::line(&event),
                            (live, last_seen, terminal, topic, closed),
                        ));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        // Send what was missed from the history, then carry on live.
                        let missed = topic.since(last_seen).await;
                        let Some(last) = missed.last() else { continue };
                        last_seen = last.seq;
                        let terminal = missed.iter().any(|event| event.is_terminal());
                        let lines: String = missed.iter().map(|event| Frame::line(event)).collect();
                        return Some((lines, (live, last_seen, terminal, topic, closed)));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    let lines = futures::stream::iter(replay)
        .chain(live)
        .map(|line| Ok::<_, std::convert::Infallible>(Bytes::from(line)));
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(lines))
        .expect("a streaming response builds")
}

/// Publishes an event of a tracker this node owns, on behalf of the node a worker asked.
async fn tracker_event(
    State(app): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let event: super::trackers::TrackerEvent = match serde_json::from_slice(&body) {
        Ok(event) => event,
        Err(error) => return ApiError::unprocessable(error.to_string()).into_response(),
    };
    let record = match super::progress::read(&app, &id).await {
        Ok(record) => record,
        Err(error) => return error.into_response(),
    };
    if record.owner != app.cluster.node_id() {
        return ApiError::not_found("not_found", "this node does not own that tracker")
            .into_response();
    }
    super::trackers::apply_event(&app, &id, &record, event).await.into_response()
}

/// Runs a search here for a node whose queue was full: 202 with its id, or 503.
async fn start_search(State(app): State<AppState>, body: Bytes) -> Response {
    let params: crate::jobs::SearchParams = match serde_json::from_slice(&body) {
        Ok(params) => params,
        Err(error) => return ApiError::unprocessable(error.to_string()).into_response(),
    };
    match app.searches.start(params).await {
        Ok((id, record)) => {
            let body = serde_json::json!({ "id": id, "status": record.status.as_str() });
            (StatusCode::ACCEPTED, axum::Json(body)).into_response()
        }
        Err(crate::jobs::StartError::QueueFull(_)) => {
            ApiError::unavailable("queue_full", "this node's queue is full too").into_response()
        }
        Err(crate::jobs::StartError::Cluster(error)) => ApiError::from(error).into_response(),
    }
}

/// Cancels a search this node runs, on behalf of the node a client asked.
async fn cancel(State(app): State<AppState>, Path(id): Path<String>) -> Response {
    if app.searches.cancel(&id) {
        StatusCode::ACCEPTED.into_response()
    } else {
        ApiError::not_found("not_found", "this node does not run that search").into_response()
    }
}

async fn read_index(State(app): State<AppState>) -> Response {
    encoded(&app.cluster.read_index().await)
}
