//! `GET /api/health`, `GET /api/health/ready` and `GET /metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::error::ApiResult;
use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/health/ready", get(ready))
        .route("/metrics", get(metrics))
}

/// 200 `"status": "ok"`, or 503 `"status": "raft_stopped"` (with the reason) once this
/// node's Raft core has stopped: it serves nothing until it is restarted, and a load
/// balancer checking this path moves on.
async fn health(State(app): State<AppState>) -> Response {
    let status = app.cluster.status();
    let members: Vec<_> = super::cluster::members(&app)
        .await
        .into_iter()
        .map(|member| {
            json!({
                "node_id": member["node_id"],
                "instance_id": member["instance_id"],
                "addr": member["addr"],
                "alive": member["alive"],
            })
        })
        .collect();
    let (code, state) = match &status.stopped {
        None => (StatusCode::OK, "ok"),
        Some(_) => (StatusCode::SERVICE_UNAVAILABLE, "raft_stopped"),
    };
    let body = Json(json!({
        "status": state,
        "raft_stopped": status.stopped,
        "instance_id": app.instance_id,
        "node_id": status.node_id,
        "version": env!("CARGO_PKG_VERSION"),
        "mode": app.store.mode().as_str(),
        "storage": app.reports.storage_kind(),
        "cluster": {
            "role": status.role,
            "leader_id": status.leader_id,
            "term": status.term,
            "voters": status.voters,
            "learners": status.learners,
            "members": members,
            "last_log_index": status.last_log_index,
            "commit_index": status.committed_index,
            "last_applied": status.last_applied_index,
            "snapshot_index": status.snapshot_index,
            "purged_index": status.purged_index,
        },
        "thread_pool_stats": app.searches.pool_stats(),
    }));
    (code, body).into_response()
}

/// 200 when this node can serve linearizable reads and writes now (a leader confirmed
/// by a quorum round), else 503: what a load balancer's health check needs.
async fn ready(State(app): State<AppState>) -> ApiResult<Json<serde_json::Value>> {
    app.store.ready().await?;
    Ok(Json(
        json!({ "status": "ready", "node_id": app.cluster.node_id(), "mode": app.store.mode().as_str() }),
    ))
}

async fn metrics(State(app): State<AppState>) -> Response {
    let body = crate::metrics::render(&app.metrics, &app.cluster, app.searches.pool_stats());
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
        .into_response()
}
