//! Refuses state-changing requests that a browser sends on behalf of another site.
//!
//! A cross-site form POST (`application/x-www-form-urlencoded`, `multipart/form-data` or
//! `text/plain`, a "simple request" that needs no CORS preflight) reaches the API with the
//! victim's cookies, and its body parses as JSON when the attacker writes it so; such a
//! request could create a session and set its cookie (login CSRF, session fixation).
//! Browsers say where a request comes from: `Sec-Fetch-Site` (every current browser) and
//! `Origin` (older ones too). The rule is that of Go 1.25's `http.CrossOriginProtection`:
//! requests without either header are not a browser's cross-site requests (curl, workers,
//! other servers) and pass, so nothing that calls the API from outside a browser changes.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::AppState;

/// Middleware: answers 403 `cross_site` to a request that changes state under `/api/`
/// when the browser that sent it says it comes from another origin (see [`is_cross_site`]).
/// `/internal/*` is not a browser's business: it is signed, and left alone.
pub async fn refuse_cross_site(
    State(app): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let changes_state = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if changes_state
        && request.uri().path().starts_with("/api/")
        && is_cross_site(request.headers(), &app.config.edge.allowed_origins)
    {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_site",
            "a browser sent this request from another origin; add that origin to \
             --allowed-origins if it may change state here",
        )
        .into_response();
    }
    next.run(request).await
}

/// Returns whether a browser marked this request as sent from another origin that is not
/// one of `allowed_origins` (lowercase `scheme://host[:port]`):
/// - `Sec-Fetch-Site: same-origin` or `none` (typed by the user) passes, `cross-site` and
///   `same-site` (a sibling subdomain) are cross-site unless `Origin` is allowed;
/// - without `Sec-Fetch-Site`, an `Origin` whose `host[:port]` is not the `Host` the
///   request was sent to is cross-site unless allowed; no `Origin` passes.
pub fn is_cross_site(headers: &HeaderMap, allowed_origins: &[String]) -> bool {
    let text = |name: header::HeaderName| {
        headers.get(name).map(|value| value.to_str().unwrap_or("?").trim().to_ascii_lowercase())
    };
    let origin = text(header::ORIGIN);
    let allowed = origin.as_ref().is_some_and(|origin| allowed_origins.contains(origin));
    match text(header::HeaderName::from_static("sec-fetch-site")).as_deref() {
        Some("same-origin" | "none") => false,
        Some(_) => !allowed,
        None => {
            let Some(origin) = origin else { return false };
            let origin_host = origin.split_once("://").map(|(_, authority)| authority);
            let same_host =
                origin_host.is_some_and(|host| Some(host) == text(header::HOST).as_deref());
            !same_host && !allowed
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn browsers_from_elsewhere_are_refused_and_everything_else_passes() {
        let allowed = vec!["https://app.example.com".to_string()];
        let host = ("host", "api.example.com");
        for (pairs, cross) in [
            (&[host][..], false), // curl, workers, servers
            (&[host, ("sec-fetch-site", "same-origin")], false),
            (&[host, ("sec-fetch-site", "none")], false),
            (&[host, ("sec-fetch-site", "cross-site")], true),
            (&[host, ("sec-fetch-site", "same-site")], true),
            (
                &[host, ("sec-fetch-site", "cross-site"), ("origin", "https://app.example.com")],
                false,
            ),
            (&[host, ("origin", "https://api.example.com")], false),
            (&[host, ("origin", "https://API.example.com")], false),
            (&[host, ("origin", "https://evil.example")], true),
            (&[host, ("origin", "https://api.example.com:8443")], true),
            (&[host, ("origin", "null")], true),
            (&[("origin", "https://api.example.com")], true), // no Host to match
            (&[host, ("origin", "https://app.example.com")], false),
        ] {
            assert_eq!(is_cross_site(&headers(pairs), &allowed), cross, "{pairs:?}");
        }
    }
}
