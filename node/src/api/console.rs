//! The web console (DESIGN §11): one page, its script and its style sheet, compiled into
//! the binary and served by every node at `/`. It fetches nothing from outside: the
//! Content-Security-Policy allows this origin only.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

const INDEX_HTML: &str = include_str!("../console/assets/index.html");
const APP_JS: &str = include_str!("../console/assets/app.js");
const STYLE_CSS: &str = include_str!("../console/assets/style.css");

/// Scripts, styles, connections and images from this origin only; no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     connect-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'self'";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(index)).routes(routes!(script)).routes(routes!(style))
}

/// Answers an asset with its type and the console's security headers. Assets change
/// only with the binary, and a rolling upgrade serves two versions behind one load
/// balancer: browsers revalidate (`no-cache`) rather than mix them.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers
        .insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// The console: the cluster's members, searches with a progress bar per UF, trackers.
#[utoipa::path(
    get,
    path = "/",
    tag = "console",
    responses((status = 200, description = "The console page", body = String, content_type = "text/html"))
)]
async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// The console's script.
#[utoipa::path(
    get,
    path = "/console/app.js",
    tag = "console",
    responses((status = 200, description = "JavaScript", body = String, content_type = "text/javascript"))
)]
async fn script() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// The console's style sheet.
#[utoipa::path(
    get,
    path = "/console/style.css",
    tag = "console",
    responses((status = 200, description = "CSS", body = String, content_type = "text/css"))
)]
async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}
