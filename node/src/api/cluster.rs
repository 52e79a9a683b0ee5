//! `GET /api/cluster` (gossip joined with Raft roles) and the admin endpoints that
//! remove members.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde::Serialize;
use shoal_raft::{MembershipChange, NodeId};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult};
use super::extract::Path;
use super::openapi::{ErrorBody, StateErrors};
use super::AppState;
use crate::gossip::Member;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(cluster))
        .routes(routes!(remove_member))
        .routes(routes!(leave))
}

/// What gossip says of a node.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GossipState {
    Alive,
    Dead,
    /// Gossip has not heard of it (a Raft member that never gossiped here).
    Unknown,
}

/// A node's place in Raft.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RaftRole {
    Leader,
    Voter,
    Learner,
    /// Known to gossip, not (or not yet) a Raft member.
    None,
}

/// One node, as Raft and gossip see it from the answering node.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemberView {
    pub node_id: NodeId,
    pub instance_id: Option<String>,
    /// Its HTTP address.
    pub addr: Option<String>,
    pub gossip: GossipState,
    /// `gossip` as a boolean; null when gossip does not know the node.
    pub alive: Option<bool>,
    pub raft_role: RaftRole,
    /// The last log index it applied (for others than the answering node, as the leader
    /// last saw it replicated; null elsewhere).
    pub applied_index: Option<u64>,
    /// Parts running and queued on it, as it gossips.
    pub load: Option<u64>,
}

/// Returns every member known to Raft or gossip, with both views.
pub async fn members(app: &AppState) -> Vec<MemberView> {
    let status = app.cluster.status();
    let gossip: BTreeMap<NodeId, Member> =
        app.gossip.members().await.into_iter().map(|member| (member.node_id, member)).collect();
    let replication = app.cluster.replication();
    let mut node_ids: Vec<NodeId> = status.members.iter().map(|(node_id, _)| *node_id).collect();
    node_ids.extend(
        gossip.keys().filter(|node_id| !status.members.iter().any(|(id, _)| id == *node_id)),
    );
    node_ids
        .into_iter()
        .map(|node_id| {
            let member = gossip.get(&node_id);
            let addr = status
                .members
                .iter()
                .find(|(id, _)| *id == node_id)
                .map(|(_, addr)| addr.clone())
                .or_else(|| member.and_then(|member| member.api_addr.clone()));
            let raft_role = if status.leader_id == Some(node_id) {
                RaftRole::Leader
            } else if status.voters.contains(&node_id) {
                RaftRole::Voter
            } else if status.learners.contains(&node_id) {
                RaftRole::Learner
            } else {
                RaftRole::None
            };
            let applied_index = if node_id == status.node_id {
                status.last_applied_index
            } else {
                replication.get(&node_id).copied().flatten()
            };
            MemberView {
                node_id,
                instance_id: member.and_then(|member| member.instance_id.clone()),
                addr,
                gossip: match member {
                    None => GossipState::Unknown,
                    Some(member) if member.alive => GossipState::Alive,
                    Some(_) => GossipState::Dead,
                },
                alive: member.map(|member| member.alive),
                raft_role,
                applied_index,
                load: member.map(|member| member.load),
            }
        })
        .collect()
}

/// The cluster as the answering node sees it.
#[derive(Debug, Serialize, ToSchema)]
struct ClusterView {
    /// The answering node.
    node_id: NodeId,
    leader_id: Option<NodeId>,
    term: u64,
    commit_index: Option<u64>,
    applied_index: Option<u64>,
    voters: Vec<NodeId>,
    learners: Vec<NodeId>,
    members: Vec<MemberView>,
}

/// Every member known to Raft or gossip, with its role, liveness, applied index and load.
#[utoipa::path(
    get,
    path = "/api/cluster",
    tag = "cluster",
    responses((status = 200, description = "The members", body = ClusterView))
)]
async fn cluster(State(app): State<AppState>) -> Json<ClusterView> {
    let status = app.cluster.status();
    Json(ClusterView {
        node_id: status.node_id,
        leader_id: status.leader_id,
        term: status.term,
        commit_index: status.committed_index,
        applied_index: status.last_applied_index,
        voters: status.voters,
        learners: status.learners,
        members: members(&app).await,
    })
}

/// Admits a request that carries the admin token. Without an `Authorization` header
/// the answer is 401 (authenticate), also when admin endpoints are disabled; with one
/// on a node without a token, 403.
fn check_admin(app: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    let given = headers.get(header::AUTHORIZATION).map(|value| value.to_str().unwrap_or(""));
    let unauthorized = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <admin token> (--admin-token)",
        )
    };
    let Some(given) = given else { return Err(unauthorized()) };
    let Some(token) = &app.config.admin_token else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "admin endpoints are disabled; start the node with --admin-token (SHOAL_ADMIN_TOKEN)",
        ));
    };
    let expected = format!("Bearer {token}");
    // Compared in constant time: the token is a secret.
    let matches = given.len() == expected.len()
        && given.bytes().zip(expected.bytes()).fold(0, |acc, (a, b)| acc | (a ^ b)) == 0;
    if matches {
        Ok(())
    } else {
        Err(unauthorized())
    }
}

#[derive(Debug, Serialize, ToSchema)]
struct Removed {
    removed: NodeId,
}

/// Removes a member from the Raft cluster (a node gone for good).
#[utoipa::path(
    delete,
    path = "/api/cluster/members/{node_id}",
    tag = "cluster",
    security(("admin_token" = [])),
    params(("node_id" = NodeId, Path, description = "The member to remove")),
    responses(
        (status = 200, description = "Removed", body = Removed),
        (status = 400, description = "The node id is not a number", body = ErrorBody),
        (status = 401, description = "No admin token, or another one", body = ErrorBody),
        (status = 404, description = "No such member", body = ErrorBody),
        (status = 409, description = "The membership cannot change that way now", body = ErrorBody),
        (status = 403, description = "Admin endpoints are disabled (no --admin-token), or a \
                                        browser sent this from another origin", body = ErrorBody),
        StateErrors,
    )
)]
async fn remove_member(
    State(app): State<AppState>,
    Path(node_id): Path<NodeId>,
    headers: HeaderMap,
) -> ApiResult<Json<Removed>> {
    check_admin(&app, &headers)?;
    let status = app.cluster.status();
    if !status.members.iter().any(|(id, _)| *id == node_id) {
        return Err(ApiError::not_found("not_found", format!("node {node_id} is not a member")));
    }
    app.cluster.change_membership(MembershipChange::Remove { node_id }).await?;
    tracing::warn!(node_id, "removed a member on request");
    Ok(Json(Removed { removed: node_id }))
}

#[derive(Debug, Serialize, ToSchema)]
struct Left {
    left: NodeId,
}

/// Takes the answering node out of the Raft cluster (before it is stopped for good).
#[utoipa::path(
    post,
    path = "/api/cluster/leave",
    tag = "cluster",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "This node left", body = Left),
        (status = 401, description = "No admin token, or another one", body = ErrorBody),
        (status = 409, description = "The membership cannot change that way now", body = ErrorBody),
        (status = 403, description = "Admin endpoints are disabled (no --admin-token), or a \
                                        browser sent this from another origin", body = ErrorBody),
        StateErrors,
    )
)]
async fn leave(State(app): State<AppState>, headers: HeaderMap) -> ApiResult<Json<Left>> {
    check_admin(&app, &headers)?;
    let node_id = app.cluster.node_id();
    app.cluster.change_membership(MembershipChange::Remove { node_id }).await?;
    tracing::warn!(node_id, "this node left the cluster on request");
    Ok(Json(Left { left: node_id }))
}
