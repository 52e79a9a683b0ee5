//! The sessions API (DESIGN §6): create, read by id or cookie, merge-patch, replace, delete.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use shoal_raft::{Rejection, SessionChange, SessionRecord};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult};
use super::extract::Path;
use super::json::JsonBody;
use super::openapi::{BodyErrors, CrossSiteErrors, ErrorBody, StateErrors};
use super::AppState;
use crate::config::MAX_SESSION_TTL_SECS;
use crate::time::rfc3339_millis;

/// The cookie that carries the session id.
pub const SESSION_COOKIE: &str = "shoal_session";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_session))
        .routes(routes!(get_session, patch_session, put_session, delete_session))
        .routes(routes!(get_cookie_session))
}

/// A new session; an empty body is `{}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateSessionBody {
    /// What the session holds: a JSON object (`{}` when left out), at most
    /// --max-session-bytes of JSON.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
    /// Seconds of inactivity after which the session expires (--session-ttl when left
    /// out); each read slides it.
    #[schema(minimum = 1, maximum = 31_536_000)]
    #[serde(default, deserialize_with = "super::json::optional_whole_number")]
    ttl_secs: Option<u64>,
}

/// The session's new `data`, whole.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PutSessionBody {
    #[schema(value_type = Object)]
    data: Value,
}

/// A JSON merge patch (RFC 7396) of the session's `data`: an object whose `null` members
/// remove keys.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(value_type = Object)]
struct MergePatch(Value);

/// The `If-Match` header of changes, for the OpenAPI document.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct IfMatch {
    /// Only if the session is at this version, such as `"3"`; `*` is any version.
    #[param(
        rename = "If-Match",
        value_type = String,
        required = false,
        pattern = r#"^(\*|"[0-9]{1,19}"|[0-9]{1,19})$"#
    )]
    if_match: Option<String>,
}

/// A session.
#[derive(Debug, Serialize, ToSchema)]
struct SessionView<'a> {
    /// 32 hex digits, 128 random bits.
    #[schema(value_type = String, pattern = "^[0-9a-f]{32}$")]
    id: &'a str,
    #[schema(value_type = Object)]
    data: &'a RawValue,
    /// Grows by one with each change; `If-Match` takes it.
    version: u64,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    expires_at: String,
}

/// Returns a new session id: 128 bits from the thread's CSPRNG, as 32 hex digits.
fn new_session_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn is_session_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
}

fn checked_id(id: &str) -> ApiResult<&str> {
    if is_session_id(id) {
        Ok(id)
    } else {
        Err(Rejection::NotFound.into())
    }
}

/// Checks that `data` is a JSON object within the size limit and returns its text.
fn data_text(data: Option<Value>, max_bytes: u64) -> ApiResult<String> {
    let data = match data {
        None | Some(Value::Null) => return Ok("{}".to_string()),
        Some(data @ Value::Object(_)) => data.to_string(),
        Some(_) => return Err(ApiError::unprocessable("`data` must be a JSON object")),
    };
    if data.len() as u64 > max_bytes {
        return Err(Rejection::TooLarge { size: data.len() as u64, limit: max_bytes }.into());
    }
    Ok(data)
}

/// Parses `If-Match`: `"<version>"` (or a bare number); `*` and absence mean any version.
fn if_match(headers: &HeaderMap) -> ApiResult<Option<u64>> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::bad_request(
            "invalid_if_match",
            "If-Match must be a session version such as \"3\"",
        )
    };
    let text = value.to_str().map_err(|_| invalid())?.trim();
    if text == "*" {
        return Ok(None);
    }
    let unquoted = text.strip_prefix('"').and_then(|rest| rest.strip_suffix('"')).unwrap_or(text);
    unquoted.parse().map(Some).map_err(|_| invalid())
}

/// Returns the `Set-Cookie` value for session `id`; `Secure` (`--cookie-secure`) keeps
/// browsers from sending it over plain HTTP, where anyone on the path could read it.
fn session_cookie(app: &AppState, id: &str, max_age_secs: u64) -> HeaderValue {
    let secure = if app.config.edge.cookie_secure { "; Secure" } else { "" };
    let cookie = format!(
        "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}"
    );
    HeaderValue::from_str(&cookie).expect("session ids and numbers are valid header text")
}

fn cookie_session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
}

fn session_response(status: StatusCode, id: &str, record: &SessionRecord) -> ApiResult<Response> {
    let data = RawValue::from_string(record.data.clone()).map_err(ApiError::internal)?;
    let view = SessionView {
        id,
        data: &data,
        version: record.version,
        created_at: rfc3339_millis(record.created_at_ms),
        expires_at: rfc3339_millis(record.expires_at_ms),
    };
    let mut response = (status, Json(view)).into_response();
    let etag = HeaderValue::from_str(&format!("\"{}\"", record.version)).expect("digits");
    response.headers_mut().insert(header::ETAG, etag);
    Ok(response)
}

/// Creates a session and sets its cookie.
#[utoipa::path(
    post,
    path = "/api/sessions",
    tag = "sessions",
    request_body(content = Option<CreateSessionBody>, description = "May be left out"),
    responses(
        (status = 201, description = "Created", body = SessionView, headers(
            ("Set-Cookie" = String, description = "`shoal_session=<id>`, HttpOnly, SameSite=Lax"),
            ("Location" = String, description = "The session's URL"),
            ("ETag" = String, description = "The version, quoted"),
        )),
        CrossSiteErrors,
        BodyErrors,
        StateErrors,
    )
)]
async fn create_session(
    State(app): State<AppState>,
    JsonBody(body): JsonBody<CreateSessionBody>,
) -> ApiResult<Response> {
    let data = data_text(body.data, app.config.max_session_bytes)?;
    let ttl_secs = match body.ttl_secs {
        None => app.config.session_ttl.as_secs(),
        Some(ttl_secs @ 1..=MAX_SESSION_TTL_SECS) => ttl_secs,
        Some(_) => {
            return Err(ApiError::unprocessable(format!(
                "`ttl_secs` must be between 1 and {MAX_SESSION_TTL_SECS}"
            )))
        }
    };
    let id = new_session_id();
    let record = app.store.create_session(&id, data, ttl_secs * 1000).await?;
    let mut response = session_response(StatusCode::CREATED, &id, &record)?;
    let headers = response.headers_mut();
    headers.insert(header::SET_COOKIE, session_cookie(&app, &id, ttl_secs));
    let location = HeaderValue::from_str(&format!("/api/sessions/{id}")).expect("hex id");
    headers.insert(header::LOCATION, location);
    Ok(response)
}

/// Reads session `id` linearizably and queues a touch to slide its expiry.
async fn read_session(app: &AppState, id: &str) -> ApiResult<SessionRecord> {
    app.store.session(id).await?.ok_or(ApiError::from(Rejection::NotFound))
}

/// Reads a session linearizably and slides its expiry.
#[utoipa::path(
    get,
    path = "/api/sessions/{id}",
    tag = "sessions",
    params(("id" = String, Path, description = "The session id")),
    responses(
        (status = 200, description = "The session", body = SessionView, headers(
            ("ETag" = String, description = "The version, quoted"),
        )),
        (status = 404, description = "No such session (or it expired)", body = ErrorBody),
        StateErrors,
    )
)]
async fn get_session(State(app): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let id = checked_id(&id)?;
    let record = read_session(&app, id).await?;
    session_response(StatusCode::OK, id, &record)
}

/// Reads the session of the `shoal_session` cookie and refreshes the cookie.
#[utoipa::path(
    get,
    path = "/api/session",
    tag = "sessions",
    params(("shoal_session" = Option<String>, Cookie, description = "The session id")),
    responses(
        (status = 200, description = "The session", body = SessionView, headers(
            ("ETag" = String, description = "The version, quoted"),
            ("Set-Cookie" = String, description = "The cookie, with a fresh Max-Age"),
        )),
        (status = 404, description = "No cookie, or no such session", body = ErrorBody),
        StateErrors,
    )
)]
async fn get_cookie_session(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let id = cookie_session_id(&headers).ok_or_else(|| {
        ApiError::not_found("no_session", format!("the request has no {SESSION_COOKIE} cookie"))
    })?;
    let id = checked_id(id)?;
    let record = read_session(&app, id).await?;
    let mut response = session_response(StatusCode::OK, id, &record)?;
    // Refresh the cookie so that it lives as long as the sliding session does.
    let cookie = session_cookie(&app, id, record.ttl_ms / 1000);
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

async fn update_session(
    app: &AppState,
    id: &str,
    headers: &HeaderMap,
    change: SessionChange,
) -> ApiResult<Response> {
    let if_version = if_match(headers)?;
    let max_data_bytes = app.config.max_session_bytes;
    let record = app.store.update_session(id, change, if_version, max_data_bytes).await?;
    session_response(StatusCode::OK, id, &record)
}

/// Merges a JSON merge patch into the session's `data`.
#[utoipa::path(
    patch,
    path = "/api/sessions/{id}",
    tag = "sessions",
    params(("id" = String, Path, description = "The session id"), IfMatch),
    request_body(content = Option<MergePatch>, description = "May be left out: no change"),
    responses(
        (status = 200, description = "The session after the change", body = SessionView, headers(
            ("ETag" = String, description = "The version, quoted"),
        )),
        (status = 400, description = "The body is not JSON, or If-Match is not a version", body = ErrorBody),
        (status = 404, description = "No such session (or it expired)", body = ErrorBody),
        (status = 412, description = "If-Match names another version", body = ErrorBody),
        (status = 413, description = "`data` would be over --max-session-bytes", body = ErrorBody),
        (status = 422, description = "The value cannot be accepted; the message says why", body = ErrorBody),
        CrossSiteErrors,
        StateErrors,
    )
)]
async fn patch_session(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(MergePatch(patch)): JsonBody<MergePatch>,
) -> ApiResult<Response> {
    let id = checked_id(&id)?;
    if !patch.is_object() {
        return Err(ApiError::unprocessable(
            "a merge patch of `data` must be a JSON object (data must stay an object)",
        ));
    }
    update_session(&app, id, &headers, SessionChange::MergePatch(patch.to_string())).await
}

/// Replaces the session's `data`.
#[utoipa::path(
    put,
    path = "/api/sessions/{id}",
    tag = "sessions",
    params(("id" = String, Path, description = "The session id"), IfMatch),
    request_body(content = PutSessionBody),
    responses(
        (status = 200, description = "The session after the change", body = SessionView, headers(
            ("ETag" = String, description = "The version, quoted"),
        )),
        (status = 400, description = "The body is not JSON, or If-Match is not a version", body = ErrorBody),
        (status = 404, description = "No such session (or it expired)", body = ErrorBody),
        (status = 412, description = "If-Match names another version", body = ErrorBody),
        (status = 413, description = "`data` would be over --max-session-bytes", body = ErrorBody),
        (status = 422, description = "The value cannot be accepted; the message says why", body = ErrorBody),
        CrossSiteErrors,
        StateErrors,
    )
)]
async fn put_session(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<PutSessionBody>,
) -> ApiResult<Response> {
    let id = checked_id(&id)?;
    // `null` is no object (creating takes it for `{}`, as if `data` were left out).
    if body.data.is_null() {
        return Err(ApiError::unprocessable("`data` must be a JSON object"));
    }
    let data = data_text(Some(body.data), app.config.max_session_bytes)?;
    update_session(&app, id, &headers, SessionChange::Replace(data)).await
}

/// Deletes a session (and clears its cookie when the request carries it).
#[utoipa::path(
    delete,
    path = "/api/sessions/{id}",
    tag = "sessions",
    params(("id" = String, Path, description = "The session id"), IfMatch),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "If-Match is not a version", body = ErrorBody),
        (status = 404, description = "No such session (or it expired)", body = ErrorBody),
        (status = 412, description = "If-Match names another version", body = ErrorBody),
        CrossSiteErrors,
        StateErrors,
    )
)]
async fn delete_session(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let id = checked_id(&id)?;
    app.store.delete_session(id, if_match(&headers)?).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if cookie_session_id(&headers) == Some(id) {
        response.headers_mut().insert(header::SET_COOKIE, session_cookie(&app, "", 0));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_128_bit_hex_and_distinct() {
        let first = new_session_id();
        assert!(is_session_id(&first), "{first}");
        assert_ne!(first, new_session_id());
        assert!(!is_session_id("../etc/passwd"));
        assert!(!is_session_id(&first.to_uppercase()));
    }

    #[test]
    fn if_match_forms() {
        let mut headers = HeaderMap::new();
        assert_eq!(if_match(&headers), Ok(None));
        for (text, expected) in [("\"3\"", Some(3)), ("3", Some(3)), ("*", None)] {
            headers.insert(header::IF_MATCH, HeaderValue::from_static(text));
            assert_eq!(if_match(&headers), Ok(expected), "{text}");
        }
        headers.insert(header::IF_MATCH, HeaderValue::from_static("\"abc\""));
        assert_eq!(if_match(&headers).unwrap_err().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn finds_the_session_cookie_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; shoal_session=abc ; b=2"));
        assert_eq!(cookie_session_id(&headers), Some("abc"));
    }
}
