//! `/internal/*`: Raft RPCs, forwarded writes, read indexes. Every request must carry an
//! HMAC-SHA256 under the cluster secret (see `shoal_raft::auth`); others get 401.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::de::DeserializeOwned;
use shoal_raft::auth::{SIGNATURE_HEADER, TIMESTAMP_HEADER};
use shoal_raft::network::{
    APPEND_PATH, FORWARD_PATH, MEMBERSHIP_PATH, READ_INDEX_PATH, SNAPSHOT_PATH, VOTE_PATH,
};
use shoal_raft::{unix_millis, ClusterSecret, Command, MembershipChange};
use shoal_storage::codec;

use super::error::ApiError;
use super::AppState;

/// The largest internal request: an append of many blob chunks, or a snapshot chunk.
const MAX_INTERNAL_BODY: usize = 256 * 1024 * 1024;

pub fn routes(secret: ClusterSecret) -> Router<AppState> {
    Router::new()
        .route(APPEND_PATH, post(append))
        .route(VOTE_PATH, post(vote))
        .route(SNAPSHOT_PATH, post(snapshot))
        .route(FORWARD_PATH, post(forward))
        .route(READ_INDEX_PATH, post(read_index))
        .route(MEMBERSHIP_PATH, post(membership))
        .layer(axum::middleware::from_fn_with_state(secret, authenticate))
}

/// Refuses unsigned, stale or forged requests with 401 before any handler runs.
async fn authenticate(
    State(secret): State<ClusterSecret>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_INTERNAL_BODY).await else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "internal request too large",
        )
        .into_response();
    };
    let header = |name: &str| parts.headers.get(name).and_then(|value| value.to_str().ok());
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
        Ok(request) => encoded(&app.cluster.raft().vote(request).await),
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

async fn membership(State(app): State<AppState>, body: Bytes) -> Response {
    match decode::<MembershipChange>(&body) {
        Ok(change) => encoded(&app.cluster.change_membership_local(change).await),
        Err(response) => response,
    }
}

async fn read_index(State(app): State<AppState>) -> Response {
    encoded(&app.cluster.read_index().await)
}
