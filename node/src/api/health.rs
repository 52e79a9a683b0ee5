//! `GET /api/health`, `GET /api/health/ready` and `GET /metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use shoal_raft::NodeId;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::cluster::MemberView;
use super::error::ApiResult;
use super::openapi::StateErrors;
use super::AppState;
use crate::jobs::PoolStats;
use crate::store::Mode;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health)).routes(routes!(ready)).routes(routes!(metrics))
}

/// `ok`, or `raft_stopped` once this node's Raft core has stopped.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum HealthStatus {
    Ok,
    RaftStopped,
}

/// This node, its view of the cluster and its workers.
#[derive(Debug, Serialize, ToSchema)]
struct Health {
    status: HealthStatus,
    /// Why the Raft core stopped, when it did.
    raft_stopped: Option<String>,
    instance_id: String,
    node_id: NodeId,
    #[schema(value_type = String)]
    version: &'static str,
    /// `cluster` (Raft) or `redis` (compatibility mode).
    #[schema(value_type = String, example = "cluster")]
    mode: &'static str,
    /// Where reports are kept: `cluster` (replicated by Raft), `redis` or `s3`.
    #[schema(value_type = String, example = "cluster")]
    storage: &'static str,
    cluster: HealthCluster,
    thread_pool_stats: PoolStats,
    /// Live sessions in this node's replica (not a linearizable count); null in Redis
    /// mode.
    sessions_live: Option<u64>,
    /// The search sources this node runs (`source` of `POST /api/searches`).
    #[schema(value_type = Vec<String>)]
    sources: Vec<&'static str>,
}

/// This node's Raft view.
#[derive(Debug, Serialize, ToSchema)]
struct HealthCluster {
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    #[schema(value_type = String, example = "follower")]
    role: &'static str,
    leader_id: Option<NodeId>,
    term: u64,
    voters: Vec<NodeId>,
    learners: Vec<NodeId>,
    members: Vec<HealthMember>,
    last_log_index: Option<u64>,
    commit_index: Option<u64>,
    last_applied: Option<u64>,
    snapshot_index: Option<u64>,
    purged_index: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
struct HealthMember {
    node_id: NodeId,
    instance_id: Option<String>,
    addr: Option<String>,
    /// What gossip says; null when gossip does not know the node.
    alive: Option<bool>,
}

/// This node's health: 200 `"status": "ok"`, or 503 `"status": "raft_stopped"` (with the
/// reason) once its Raft core has stopped: it serves nothing until it is restarted, and a
/// load balancer checking this path moves on.
#[utoipa::path(
    get,
    path = "/api/health",
    tag = "cluster",
    responses(
        (status = 200, description = "The node serves", body = Health),
        (status = 503, description = "The node's Raft core stopped", body = Health),
    )
)]
async fn health(State(app): State<AppState>) -> Response {
    let status = app.cluster.status();
    let members = super::cluster::members(&app)
        .await
        .into_iter()
        .map(|member: MemberView| HealthMember {
            node_id: member.node_id,
            instance_id: member.instance_id,
            addr: member.addr,
            alive: member.alive,
        })
        .collect();
    let (code, state) = match &status.stopped {
        None => (StatusCode::OK, HealthStatus::Ok),
        Some(_) => (StatusCode::SERVICE_UNAVAILABLE, HealthStatus::RaftStopped),
    };
    let sessions_live = match app.store.mode() {
        Mode::Cluster => Some(app.cluster.reader().num_sessions()),
        Mode::Redis => None,
    };
    let body = Health {
        status: state,
        raft_stopped: status.stopped,
        instance_id: app.instance_id.clone(),
        node_id: status.node_id,
        version: env!("CARGO_PKG_VERSION"),
        mode: app.store.mode().as_str(),
        storage: app.reports.storage_kind(),
        cluster: HealthCluster {
            role: status.role,
            leader_id: status.leader_id,
            term: status.term,
            voters: status.voters,
            learners: status.learners,
            members,
            last_log_index: status.last_log_index,
            commit_index: status.committed_index,
            last_applied: status.last_applied_index,
            snapshot_index: status.snapshot_index,
            purged_index: status.purged_index,
        },
        thread_pool_stats: app.searches.pool_stats(),
        sessions_live,
        sources: app.searches.source_names(),
    };
    (code, Json(body)).into_response()
}

#[derive(Debug, Serialize, ToSchema)]
struct Ready {
    #[schema(value_type = String, example = "ready")]
    status: &'static str,
    node_id: NodeId,
    #[schema(value_type = String, example = "cluster")]
    mode: &'static str,
}

/// 200 when this node can serve linearizable reads and writes now (a leader confirmed
/// by a quorum round), else 503: what a load balancer's health check needs.
#[utoipa::path(
    get,
    path = "/api/health/ready",
    tag = "cluster",
    responses(
        (status = 200, description = "Reads and writes are served now", body = Ready),
        StateErrors,
    )
)]
async fn ready(State(app): State<AppState>) -> ApiResult<Json<Ready>> {
    app.store.ready().await?;
    Ok(Json(Ready {
        status: "ready",
        node_id: app.cluster.node_id(),
        mode: app.store.mode().as_str(),
    }))
}

/// Prometheus metrics of this node.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "cluster",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
)]
async fn metrics(State(app): State<AppState>) -> Response {
    let body = crate::metrics::render(&app.metrics, &app.cluster, app.searches.pool_stats());
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
        .into_response()
}
