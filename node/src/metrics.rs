//! Prometheus metrics: HTTP request counts and latencies, Raft progress, live sessions.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use shoal_raft::Cluster;

use crate::jobs::PoolStats;

const REQUEST_DURATION: &str = "shoal_http_request_duration_seconds";
const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Returns the process-wide Prometheus recorder, installing it on first use.
pub fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(REQUEST_DURATION.to_string()),
                    LATENCY_BUCKETS,
                )
                .expect("the bucket list is not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding application's);
            // shoal then renders its own metrics from its handle alone.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "a global metrics recorder was already installed; /metrics may be empty"
                );
            }
            handle
        })
        .clone()
}

/// Returns the `method` label of a request: one of the methods of RFC 9110 (and PATCH),
/// else `other`. Labels come from a closed set: every distinct label value is a series
/// the recorder keeps for the life of the process, so a value taken from the request
/// would let any client grow `/metrics` (and the node's memory) without bound.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Middleware: counts every request and records its latency, labelled by method, route
/// template (or `unmatched`) and status: all from closed sets (see [`method_label`]).
pub async fn track_requests(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("shoal_http_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(REQUEST_DURATION, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Renders every metric, sampling the Raft and session gauges first.
pub fn render(handle: &PrometheusHandle, cluster: &Cluster, pool: PoolStats) -> String {
    let status = cluster.status();
    let index = |index: Option<u64>| index.map_or(0.0, |index| index as f64);
    metrics::gauge!("shoal_raft_term").set(status.term as f64);
    metrics::gauge!("shoal_raft_last_log_index").set(index(status.last_log_index));
    metrics::gauge!("shoal_raft_commit_index").set(index(status.committed_index));
    metrics::gauge!("shoal_raft_applied_index").set(index(status.last_applied_index));
    metrics::gauge!("shoal_raft_is_leader").set(if status.role == "leader" { 1.0 } else { 0.0 });
    metrics::gauge!("shoal_raft_voters").set(status.voters.len() as f64);
    metrics::gauge!("shoal_sessions_live").set(cluster.reader().num_sessions() as f64);
    metrics::gauge!("shoal_pool_workers").set(pool.workers as f64);
    metrics::gauge!("shoal_pool_active").set(pool.active as f64);
    metrics::gauge!("shoal_pool_queued").set(pool.queued as f64);
    metrics::gauge!("shoal_pool_completed_total").set(pool.completed as f64);
    metrics::gauge!("shoal_pool_failed_total").set(pool.failed as f64);
    metrics::gauge!("shoal_pool_rejected_total").set(pool.rejected as f64);
    handle.render()
}
