//! `/internal/*`: Raft RPCs, forwarded writes, read indexes, relays. Every request must be
//! signed for this node under the cluster secret, fresh and never seen before (see
//! `shoal_raft::auth`), which [`authenticate`] decides from the head, before the body is
//! read; every answer is signed for the request it answers, so callers can tell it from
//! a stranger's.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, MatchedPath, Path, Query};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use shoal_raft::auth::{self, AuthError, Nonce, ReplayGuard, RequestHead, SIGNATURE_HEADER};
use shoal_raft::network::{
    Identity, APPEND_PATH, FORWARD_BATCH_PATH, FORWARD_PATH, IDENTITY_PATH, MEMBERSHIP_PATH,
    READ_INDEX_PATH, SNAPSHOT_PATH, STREAM_DIGEST, VOTE_PATH,
};
use shoal_raft::{unix_millis, ClusterSecret, Command, MembershipChange, NodeId};
use shoal_storage::codec;

use super::error::ApiError;
use super::AppState;
use crate::fabric::relay::Frame;
use crate::fabric::tracker_events::{self, Effect, TrackerEvent};
use crate::resp::pubsub::PUBLISH_PATH;
use crate::sse::follow::{follow, Followed};

/// The path of the owner's event stream of a search or tracker.
const STREAM_PATH: &str = "/internal/searches/{id}/stream";
const CANCEL_PATH: &str = "/internal/searches/{id}/cancel";
const TRACKER_EVENT_PATH: &str = "/internal/trackers/{id}/events";
/// What bounds an append: openraft sends at most 300 entries, each at most a report
/// chunk (256 KiB) or a batch of session writes.
const MAX_APPEND_BYTES: u64 = 128 * 1024 * 1024;
/// A snapshot arrives in chunks of openraft's `snapshot_max_chunk_size` (3 MiB).
const MAX_SNAPSHOT_CHUNK_BYTES: u64 = 16 * 1024 * 1024;
/// The most commands one forwarded batch carries (the group commit's batch size).
const MAX_FORWARDED_COMMANDS: u64 = 256;
/// Room around one command's session data or report chunk.
const COMMAND_OVERHEAD_BYTES: u64 = 320 * 1024;
/// Messages published on another node arrive in batches of at most this much (a single
/// message may be larger: `--resp-max-bulk-bytes` bounds it, and this is the most it
/// may be set to).
const MAX_PUBLISH_BYTES: u64 = 64 * 1024 * 1024;
/// Everything else is small: votes, read indexes, membership changes, search parameters.
const SMALL_BODY_BYTES: u64 = 64 * 1024;

/// What the internal endpoints check before any handler runs.
#[derive(Debug)]
pub struct InternalGate {
    secret: ClusterSecret,
    node_id: NodeId,
    replays: ReplayGuard,
    /// The largest session data, which bounds forwarded writes and tracker events.
    max_session_bytes: u64,
}

impl InternalGate {
    /// Returns the gate of node `node_id`, which started at `started_ms`.
    pub fn new(
        secret: ClusterSecret,
        node_id: NodeId,
        started_ms: u64,
        max_session_bytes: u64,
    ) -> Self {
        Self { secret, node_id, replays: ReplayGuard::new(started_ms), max_session_bytes }
    }

    /// Returns the largest body a request to the route `route` may declare.
    fn body_limit(&self, route: &str) -> u64 {
        // A command carries a session's data or a Redis client's keys and values.
        let payload = self.max_session_bytes.max(crate::config::MAX_WRITE_BYTES as u64);
        let command = payload.saturating_add(COMMAND_OVERHEAD_BYTES);
        match route {
            APPEND_PATH => MAX_APPEND_BYTES,
            SNAPSHOT_PATH => MAX_SNAPSHOT_CHUNK_BYTES,
            FORWARD_PATH => command,
            FORWARD_BATCH_PATH => command.saturating_mul(MAX_FORWARDED_COMMANDS),
            TRACKER_EVENT_PATH => command,
            PUBLISH_PATH => MAX_PUBLISH_BYTES,
            _ => SMALL_BODY_BYTES,
        }
    }
}

/// The nonce of a request that passed the gate, for handlers that sign as they stream.
#[derive(Debug, Clone, Copy)]
struct Verified {
    nonce: Nonce,
}

/// Marks a response whose lines the handler signed itself.
#[derive(Debug, Clone, Copy)]
struct SignedLines;

pub fn routes(gate: Arc<InternalGate>) -> Router<AppState> {
    Router::new()
        .route(APPEND_PATH, post(append))
        .route(VOTE_PATH, post(vote))
        .route(SNAPSHOT_PATH, post(snapshot))
        .route(FORWARD_PATH, post(forward))
        .route(FORWARD_BATCH_PATH, post(forward_batch))
        .route(READ_INDEX_PATH, post(read_index))
        .route(MEMBERSHIP_PATH, post(membership))
        .route(IDENTITY_PATH, post(identity))
        .route(STREAM_PATH, get(stream))
        .route(CANCEL_PATH, post(cancel))
        .route(TRACKER_EVENT_PATH, post(tracker_event))
        .route(super::searches::START_PATH, post(start_search))
        .route(PUBLISH_PATH, post(resp_publish))
        .route_layer(axum::middleware::from_fn_with_state(gate, authenticate))
        // The gate has bounded the body by the route's own limit already.
        .layer(axum::extract::DefaultBodyLimit::disable())
}

fn refused(
    status: StatusCode,
    code: &'static str,
    reason: &'static str,
    message: String,
) -> Response {
    metrics::counter!("shoal_internal_requests_refused_total", "reason" => reason).increment(1);
    ApiError::new(status, code, message).into_response()
}

fn unauthorized(error: AuthError, path: &str) -> Response {
    tracing::warn!(%error, path, "refused an internal request");
    let message = format!("internal request refused: {error}");
    refused(StatusCode::UNAUTHORIZED, "unauthorized", error.label(), message)
}

/// Returns the one `Content-Length` of a request, `Ok(None)` without one; an error for
/// several or a malformed one.
fn declared_length(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    match (lengths.next(), lengths.next()) {
        (None, _) => Ok(None),
        (Some(length), None) => {
            length.to_str().ok().and_then(|text| text.parse().ok()).map(Some).ok_or(())
        }
        (Some(_), Some(_)) => Err(()),
    }
}

/// Admits a request only if it is signed for this node, fresh, new and within its
/// route's size limit, all decided from its head; then checks the body against its signed
/// digest, runs the handler and signs the answer for the request.
async fn authenticate(
    State(gate): State<Arc<InternalGate>>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let path =
        parts.uri.path_and_query().map_or(parts.uri.path(), |path| path.as_str()).to_string();
    let route = parts.extensions.get::<MatchedPath>().map_or("", MatchedPath::as_str).to_string();
    let Ok(declared) = declared_length(&parts.headers) else {
        return unauthorized(AuthError::Unsigned, &path);
    };
    if declared.is_none() && parts.headers.contains_key(header::TRANSFER_ENCODING) {
        let message = "internal requests declare their length (Content-Length)".to_string();
        return refused(StatusCode::LENGTH_REQUIRED, "length_required", "no_length", message);
    }
    let header = |name: &str| parts.headers.get(name).and_then(|value| value.to_str().ok());
    let (head, signature) = match RequestHead::parse(parts.method.as_str(), &path, declared, header)
    {
        Ok(parsed) => parsed,
        Err(error) => return unauthorized(error, &path),
    };
    if let Err(error) = gate.secret.verify_request(&head, signature) {
        return unauthorized(error, &path);
    }
    if head.target != gate.node_id {
        return unauthorized(AuthError::WrongTarget, &path);
    }
    if let Err(error) = gate.replays.admit(head.nonce, head.timestamp_ms, unix_millis()) {
        return unauthorized(error, &path);
    }
    let limit = gate.body_limit(&route);
    if head.content_length > limit {
        let message =
            format!("{} bytes is over this endpoint's limit of {limit}", head.content_length);
        return refused(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "too_large", message);
    }
    // Only now, with the sender known to hold the secret, is the body read.
    let length = usize::try_from(head.content_length).unwrap_or(usize::MAX);
    let bytes = match axum::body::to_bytes(body, length).await {
        Ok(bytes) if bytes.len() == length && auth::body_digest(&bytes) == head.body_digest => {
            bytes
        }
        _ => return unauthorized(AuthError::BodyMismatch, &path),
    };
    let mut request = Request::from_parts(parts, Body::from(bytes));
    request.extensions_mut().insert(Verified { nonce: head.nonce });
    let response = next.run(request).await;
    sign_answer(&gate.secret, head.nonce, response).await
}

/// Signs `response` for the request with `nonce`: its status and body, or, for a stream
/// whose lines are signed one by one, its status alone.
async fn sign_answer(secret: &ClusterSecret, nonce: Nonce, response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let status = parts.status.as_u16();
    let (digest, body) = if parts.extensions.get::<SignedLines>().is_some() {
        (STREAM_DIGEST, body)
    } else {
        match axum::body::to_bytes(body, usize::MAX).await {
            Ok(bytes) => (auth::body_digest(&bytes), Body::from(bytes)),
            Err(error) => return ApiError::internal(error).into_response(),
        }
    };
    let signature = secret.sign_response(nonce, status, &digest);
    parts.headers.insert(
        SIGNATURE_HEADER,
        HeaderValue::from_str(&signature).expect("hex is a header value"),
    );
    Response::from_parts(parts, body)
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
        Ok(request) => encoded(&app.cluster.append_entries(request).await),
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

/// Proves who this node is: the answer is signed, and the request was signed for this
/// node id (see `InternalClient::identify`).
async fn identity(State(app): State<AppState>) -> Response {
    encoded(&Identity { node_id: app.cluster.node_id() })
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
    Extension(verified): Extension<Verified>,
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
    // An empty line now and then lets relays tell a silent owner from a dead one.
    let heartbeat = Some(crate::fabric::relay::HEARTBEAT);
    let (seq, replay, live) = (subscription.seq, subscription.replay, subscription.live);
    let lines = follow(topic, seq, replay, live, heartbeat).map(|followed| match followed {
        Followed::Event(event) => Frame::json(&event),
        Followed::Idle => String::new(),
    });
    // Each line is signed for this request, numbered, so that the relay takes events from
    // the owner only, none dropped, repeated or moved.
    let mut signer = app.secret.line_signer(verified.nonce);
    let lines = lines.map(move |payload| {
        Ok::<_, std::convert::Infallible>(Bytes::from(signer.sign(payload.as_bytes())))
    });
    let mut response = Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(lines))
        .expect("a streaming response builds");
    response.extensions_mut().insert(SignedLines);
    response
}

/// Publishes an event of a tracker this node owns, on behalf of the node a worker asked.
async fn tracker_event(
    State(app): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let event: TrackerEvent = match serde_json::from_slice(&body) {
        Ok(event) => event,
        Err(error) => return ApiError::unprocessable(error.to_string()).into_response(),
    };
    let published = async {
        super::trackers::check_size(&app, &event)?;
        let effect =
            Effect::of(&event).map_err(|invalid| ApiError::unprocessable(invalid.to_string()))?;
        let record = super::progress::read(&app, &id).await?;
        if record.owner != app.cluster.node_id() {
            return Err(ApiError::not_found("not_found", "this node does not own that tracker"));
        }
        if record.status.is_terminal() {
            return Err(shoal_raft::Rejection::ProgressFinished.into());
        }
        let posted =
            tracker_events::publish_here(&app.hub, &app.store, &id, &record, event, effect);
        Ok::<_, ApiError>(super::trackers::posted_response(&id, posted.await?))
    };
    published.await.unwrap_or_else(IntoResponse::into_response)
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
        Err(crate::jobs::StartError::Store(error)) => ApiError::from(error).into_response(),
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

/// Delivers Redis protocol messages published on another node to this node's
/// subscribers; answers how many received each.
async fn resp_publish(State(app): State<AppState>, body: Bytes) -> Response {
    match decode::<Vec<(Vec<u8>, Vec<u8>)>>(&body) {
        Ok(messages) => encoded(&crate::resp::pubsub::deliver_from_peer(&app.bus, messages)),
        Err(response) => response,
    }
}

async fn read_index(State(app): State<AppState>) -> Response {
    encoded(&app.cluster.read_index().await)
}
