//! `GET /api/downloads/{id}?expires=&sig=`: a report, on a signed link, from any node.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use shoal_raft::unix_millis;
use shoal_storage::BlobError;

use super::error::{ApiError, ApiResult};
use super::AppState;
use crate::reports::LinkError;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/downloads/{id}", get(download))
}

#[derive(Debug, Deserialize)]
struct LinkQuery {
    expires: Option<u64>,
    sig: Option<String>,
}

async fn download(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(link): Query<LinkQuery>,
) -> ApiResult<Response> {
    let refused =
        || ApiError::new(StatusCode::FORBIDDEN, "invalid_signature", "download link is invalid");
    let (Some(expires), Some(sig)) = (link.expires, link.sig) else { return Err(refused()) };
    match app.reports.signer().check(&id, expires, &sig, unix_millis() / 1000) {
        Ok(()) => {}
        Err(LinkError::BadSignature) => return Err(refused()),
        Err(LinkError::Expired) => {
            return Err(ApiError::new(StatusCode::GONE, "expired", "download expired or invalid"))
        }
    }
    let blob = app.reports.store().get(&id).await.map_err(|error| match error {
        BlobError::Unavailable(reason) => ApiError::unavailable("unavailable", reason),
        BlobError::Failed(reason) => ApiError::internal(reason),
    })?;
    let Some(blob) = blob else {
        return Err(ApiError::not_found(
            "not_found",
            "no report with that id (it may have expired)",
        ));
    };
    let disposition = format!("attachment; filename=\"{}\"", blob.name.replace('"', ""));
    let mut response = (StatusCode::OK, blob.bytes).into_response();
    let headers = response.headers_mut();
    let content_type = HeaderValue::from_str(&blob.content_type).map_err(ApiError::internal)?;
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition).map_err(ApiError::internal)?,
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    Ok(response)
}
