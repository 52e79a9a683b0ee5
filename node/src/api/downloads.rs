//! `GET /api/downloads/{id}?expires=&sig=`: a report, on a signed link, from any node.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use shoal_raft::unix_millis;
use shoal_storage::BlobError;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult};
use super::extract::{Path, Query};
use super::openapi::{ErrorBody, StateErrors};
use super::AppState;
use crate::reports::LinkError;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(download))
}

/// The signature of a download link, as the search's `result.download.url` carries it.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct LinkQuery {
    /// When the link expires, in Unix seconds.
    expires: Option<u64>,
    /// The link's signature.
    sig: Option<String>,
}

/// A search's report (an Excel workbook), from any node, on the signed link of the
/// search's result.
#[utoipa::path(
    get,
    path = "/api/downloads/{id}",
    tag = "downloads",
    params(("id" = String, Path, description = "The report id"), LinkQuery),
    responses(
        (status = 200, description = "The report", body = Vec<u8>,
            content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            headers(("Content-Disposition" = String, description = "`attachment` with the file name"))),
        (status = 400, description = "The query string does not parse", body = ErrorBody),
        (status = 403, description = "The link's signature is missing or wrong", body = ErrorBody),
        (status = 404, description = "No such report (it may have expired)", body = ErrorBody),
        (status = 410, description = "The link has expired", body = ErrorBody),
        StateErrors,
    )
)]
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
