//! [`ApiError`]: every error the API answers, mapped to a status in one place.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use shoal_raft::{ClusterError, Rejection};

use crate::fabric::FabricError;
use crate::store::{StoreError, Unavailable};

/// An error answered as `{"error": "<code>", "message": "<text>"}` with its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for `Retry-After`, on 503s.
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    /// Returns an error with `status`, machine-readable `code` and a message for people.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after_secs: None }
    }

    /// 400: the request is malformed.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404: nothing is at that path.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 422: well-formed JSON with values that cannot be accepted.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", message)
    }

    /// 503 with `Retry-After`: the cluster cannot serve this right now.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            retry_after_secs: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    /// 500: logs `detail` and tells the client only that something failed inside.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the node's log",
        )
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        let message = rejection.to_string();
        match rejection {
            Rejection::NotFound => Self::not_found("session_not_found", message),
            Rejection::AlreadyExists => Self::new(StatusCode::CONFLICT, "session_exists", message),
            Rejection::VersionMismatch { .. } => {
                Self::new(StatusCode::PRECONDITION_FAILED, "version_mismatch", message)
            }
            Rejection::TooLarge { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
            }
            Rejection::NotAnObject => Self::unprocessable(message),
            Rejection::ProgressNotFound => Self::not_found("not_found", message),
            Rejection::ProgressFinished => Self::new(StatusCode::CONFLICT, "finished", message),
            Rejection::StaleAttempt { .. } => {
                Self::new(StatusCode::CONFLICT, "stale_attempt", message)
            }
            Rejection::UnknownPart | Rejection::NotAnInteger | Rejection::Overflow => {
                Self::unprocessable(message)
            }
            Rejection::BlobNotPending => {
                Self::new(StatusCode::CONFLICT, "blob_not_pending", message)
            }
            Rejection::RequestExpired => Self::unavailable(
                "timeout",
                "the write reached the cluster leader too late to tell whether it applied; \
                 read the state, then retry",
            ),
        }
    }
}

impl From<ClusterError> for ApiError {
    fn from(error: ClusterError) -> Self {
        match error {
            // Only membership changes answer this; the rest is the state store's table.
            ClusterError::Membership(reason) => {
                Self::new(StatusCode::CONFLICT, "membership", reason)
            }
            other => StoreError::from(other).into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Rejected(rejection) => rejection.into(),
            StoreError::Unavailable(unavailable) => unavailable.into(),
            StoreError::Failed(_) => Self::internal(error),
        }
    }
}

impl From<FabricError> for ApiError {
    fn from(error: FabricError) -> Self {
        match error {
            FabricError::Store(error) => error.into(),
            FabricError::OwnerUnknown => Self::unavailable(
                "owner_unknown",
                "the node that runs it is unknown; retry shortly",
            ),
            FabricError::Owner { status, body } => Self::internal(format!(
                "an answer of the owner ({status}: {}) reached the error table",
                String::from_utf8_lossy(&body)
            )),
            FabricError::OwnerUnreachable(reason) => {
                tracing::warn!(%reason, "the node that runs it did not answer");
                Self::unavailable(
                    "owner_unreachable",
                    "the node that runs it did not answer; retry shortly",
                )
            }
        }
    }
}

impl From<Unavailable> for ApiError {
    fn from(unavailable: Unavailable) -> Self {
        match unavailable {
            Unavailable::NoLeader => {
                Self::unavailable("no_leader", "the cluster has no leader right now; retry shortly")
            }
            Unavailable::NotLeader { leader_id } => Self::unavailable(
                "not_leader",
                format!("node {leader_id} leads the cluster; retry shortly"),
            ),
            Unavailable::Unreachable(reason) => {
                tracing::warn!(%reason, "a peer could not be reached");
                Self::unavailable(
                    "unreachable",
                    "the cluster leader could not be reached; retry shortly",
                )
            }
            Unavailable::Timeout(timeout) => Self::unavailable(
                "timeout",
                format!(
                    "the cluster did not answer within {} ms; retry shortly",
                    timeout.as_millis()
                ),
            ),
            Unavailable::NoQuorum => Self::unavailable(
                "no_quorum",
                "this node is cut off from most of the cluster; retry on another node",
            ),
            Unavailable::TooLate => Rejection::RequestExpired.into(),
            Unavailable::Redis(reason) => {
                tracing::warn!(%reason, "the state store could not answer");
                Self::unavailable("unavailable", format!("{reason}; retry shortly"))
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": self.code, "message": self.message }));
        let mut response = (self.status, body).into_response();
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// The result type of handlers.
pub type ApiResult<T> = Result<T, ApiError>;
