//! `GET /api/cluster` (gossip joined with Raft roles) and the admin endpoints that
//! remove members.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use shoal_raft::{MembershipChange, NodeId};

use super::error::{ApiError, ApiResult};
use super::AppState;
use crate::gossip::Member;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/cluster", get(cluster))
        .route("/api/cluster/members/{node_id}", delete(remove_member))
        .route("/api/cluster/leave", post(leave))
}

/// Returns every member known to Raft or gossip, with both views.
pub async fn members(app: &AppState) -> Vec<Value> {
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
            let role = if status.leader_id == Some(node_id) {
                "leader"
            } else if status.voters.contains(&node_id) {
                "voter"
            } else if status.learners.contains(&node_id) {
                "learner"
            } else {
                "none"
            };
            let applied = if node_id == status.node_id {
                status.last_applied_index
            } else {
                replication.get(&node_id).copied().flatten()
            };
            json!({
                "node_id": node_id,
                "instance_id": member.and_then(|member| member.instance_id.clone()),
                "addr": addr,
                "gossip": member.map_or("unknown", |member| if member.alive { "alive" } else { "dead" }),
                "alive": member.map(|member| member.alive),
                "raft_role": role,
                "applied_index": applied,
                "load": member.map(|member| member.load),
            })
        })
        .collect()
}

async fn cluster(State(app): State<AppState>) -> Json<Value> {
    let status = app.cluster.status();
    Json(json!({
        "node_id": status.node_id,
        "leader_id": status.leader_id,
        "term": status.term,
        "commit_index": status.committed_index,
        "applied_index": status.last_applied_index,
        "voters": status.voters,
        "learners": status.learners,
        "members": members(&app).await,
    }))
}

fn check_admin(app: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    let Some(token) = &app.config.admin_token else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "admin endpoints are disabled; start the node with --admin-token (SHOAL_ADMIN_TOKEN)",
        ));
    };
    let given = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    let expected = format!("Bearer {token}");
    // Compared in constant time: the token is a secret.
    let matches = given.is_some_and(|given| {
        given.len() == expected.len()
            && given.bytes().zip(expected.bytes()).fold(0, |acc, (a, b)| acc | (a ^ b)) == 0
    });
    if matches {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <admin token>",
        ))
    }
}

async fn remove_member(
    State(app): State<AppState>,
    Path(node_id): Path<NodeId>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    check_admin(&app, &headers)?;
    let status = app.cluster.status();
    if !status.members.iter().any(|(id, _)| *id == node_id) {
        return Err(ApiError::not_found("not_found", format!("node {node_id} is not a member")));
    }
    app.cluster.change_membership(MembershipChange::Remove { node_id }).await?;
    tracing::warn!(node_id, "removed a member on request");
    Ok((StatusCode::OK, Json(json!({ "removed": node_id }))).into_response())
}

async fn leave(State(app): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    check_admin(&app, &headers)?;
    let node_id = app.cluster.node_id();
    app.cluster.change_membership(MembershipChange::Remove { node_id }).await?;
    tracing::warn!(node_id, "this node left the cluster on request");
    Ok((StatusCode::OK, Json(json!({ "left": node_id }))).into_response())
}
