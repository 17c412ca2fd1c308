//! The error answer every route gives: [`ApiError`], a status and `{"error": "…"}`.
//!
//! 401 answers carry the `WWW-Authenticate: Bearer` challenge, 503 answers `Retry-After: 1` and
//! 429 answers `Retry-After` with the seconds until a retry may pass;
//! the alert hub's [`HubError`]s map onto statuses here, so handlers just use `?`.

use crate::hub::HubError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer: a status and `{"error": "…"}`.
#[derive(Debug)]
pub enum ApiError {
    /// 401: no token or an unknown one.
    Unauthorized(&'static str),
    /// 403: outside the token's scope.
    Forbidden(String),
    /// 400.
    BadRequest(String),
    /// 404.
    NotFound(String),
    /// 409.
    Conflict(String),
    /// 429, with `Retry-After` (the seconds in the second field).
    TooManyRequests(String, u64),
    /// 503, with `Retry-After`.
    Unavailable(String),
    /// 500.
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut retry_after = None;
        let (status, msg) = match self {
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m.to_string()),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m),
            ApiError::TooManyRequests(m, secs) => {
                retry_after = Some(secs.max(1));
                (StatusCode::TOO_MANY_REQUESTS, m)
            }
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
            ApiError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, m),
        };
        let mut resp = (status, Json(json!({ "error": msg }))).into_response();
        let headers = resp.headers_mut();
        match status {
            StatusCode::UNAUTHORIZED => {
                headers
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"citybrain\""));
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            StatusCode::TOO_MANY_REQUESTS => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after.unwrap_or(1)));
            }
            _ => {}
        }
        resp
    }
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        use crate::hub::lifecycle::AckError;
        match e {
            HubError::Ack(AckError::NotFound) => ApiError::NotFound(e.to_string()),
            HubError::Ack(AckError::AlreadyAcknowledged(_)) => ApiError::Conflict(e.to_string()),
            HubError::Forbidden => ApiError::Forbidden(e.to_string()),
            HubError::NoStore => ApiError::NotFound(e.to_string()),
            HubError::Store(e) => ApiError::Internal(e.to_string()),
        }
    }
}
