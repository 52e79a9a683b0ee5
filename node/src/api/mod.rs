//! The public HTTP API of DESIGN §6 and the state its handlers share.

mod cluster;
mod console;
mod cross_site;
mod downloads;
mod error;
mod extract;
mod health;
mod internal;
mod json;
pub mod openapi;
mod progress;
mod searches;
mod sessions;
mod trackers;

use std::ops::Deref;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::Router;
pub use error::{ApiError, ApiResult};
use metrics_exporter_prometheus::PrometheusHandle;
pub use sessions::SESSION_COOKIE;
use shoal_raft::{Cluster, ClusterSecret};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::fabric::Fabric;
use crate::gossip::Gossip;
use crate::jobs::Searches;
use crate::reports::Reports;
use crate::sse::Hub;
use crate::store::Store;

use crate::config::Config;

/// The SSE route of a search's events.
pub const SEARCH_EVENTS_ROUTE: &str = "/api/searches/{id}/events";
/// The SSE route of a tracker's events.
pub const TRACKER_EVENTS_ROUTE: &str = "/api/trackers/{id}/events";
/// Every SSE route: the router serves them, and a connection whose first request is a
/// GET of one takes the streaming path (`http/streams.rs`), which reads this list.
pub const STREAM_ROUTES: [&str; 2] = [SEARCH_EVENTS_ROUTE, TRACKER_EVENTS_ROUTE];

/// Room for the JSON around a session's `data` in a request body.
const BODY_OVERHEAD_BYTES: usize = 16 * 1024;

/// What every handler can reach.
#[derive(Debug)]
pub struct NodeContext {
    /// Raft membership and the internal endpoints (in Redis mode, a cluster of one that
    /// holds no state).
    pub cluster: Cluster,
    /// Where sessions and progress records live.
    pub store: Store,
    /// How live events and requests about searches and trackers reach other nodes.
    pub events: Fabric,
    pub config: Config,
    pub instance_id: String,
    pub metrics: PrometheusHandle,
    pub hub: Arc<Hub>,
    pub searches: Arc<Searches>,
    pub reports: Arc<Reports>,
    /// Signs and checks `/internal/*` requests.
    pub secret: ClusterSecret,
    /// When this node started, in Unix milliseconds: it refuses internal requests signed
    /// before (it cannot know which nonces it saw then).
    pub started_ms: u64,
    pub gossip: Arc<Gossip>,
    /// This node's Redis protocol subscribers, which other nodes publish to.
    pub bus: Arc<crate::resp::pubsub::LocalBus>,
}

/// Cheaply clonable handle on the [`NodeContext`].
#[derive(Debug, Clone)]
pub struct AppState(pub Arc<NodeContext>);

impl Deref for AppState {
    type Target = NodeContext;

    fn deref(&self) -> &NodeContext {
        &self.0
    }
}

/// Returns every public route with its OpenAPI operation: only what is registered here
/// through `utoipa_axum::routes!` is served, and the document is made from the same
/// declarations (`openapi.rs`).
pub fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(health::routes())
        .merge(sessions::routes())
        .merge(searches::routes())
        .merge(trackers::routes())
        .merge(downloads::routes())
        .merge(cluster::routes())
        .merge(console::routes())
        .routes(routes!(openapi::openapi_json))
}

/// Returns every route: the public ones and the signed `/internal/*` endpoints that
/// nodes call on each other (not public: the OpenAPI document leaves them out).
fn routes(gate: internal::InternalGate) -> Router<AppState> {
    let (public, _) = public_routes().split_for_parts();
    public.merge(internal::routes(Arc::new(gate)))
}

/// Returns the router of the API.
pub fn router(state: AppState) -> Router {
    let body_limit = usize::try_from(state.config.max_session_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(BODY_OVERHEAD_BYTES);
    let gate = internal::InternalGate::new(
        state.secret.clone(),
        state.cluster.node_id(),
        state.started_ms,
        state.config.max_session_bytes,
    );
    routes(gate)
        .fallback(|| async {
            ApiError::not_found("not_found", "no such route; see /api/openapi.json for the API")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), cross_site::refuse_cross_site))
        .layer(axum::middleware::from_fn(crate::metrics::track_requests))
        .with_state(state)
}
