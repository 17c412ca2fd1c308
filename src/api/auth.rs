//! Who is calling an HTTP or websocket route: the [`Authed`] extractor and its role check.
//!
//! The tokens themselves (hashes, roles, an officer's cells) are [`crate::auth`]'s, which knows
//! nothing of HTTP; this module reads the token off a request — `Authorization: Bearer TOKEN`,
//! or on `/ws/*` routes `?token=` when `http.ws_query_token` allows it — and turns a missing or
//! unknown one into 401 and a role outside a route's list into 403. What an officer may see
//! within a route (their cells) is the caller's [`Scope`](crate::hub::Scope), checked by the
//! route.

use super::{ApiError, AppState};
use crate::auth::{Caller, Role};
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use std::sync::Arc;

/// The authenticated caller of a protected route (extractor: 401 when the token is missing or
/// unknown). The token itself is dropped here; only its name and role travel on.
pub struct Authed(pub Arc<Caller>);

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let token = match header {
            Some(h) => {
                let t = h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer "));
                Some(
                    t.ok_or(ApiError::Unauthorized("the Authorization header must be `Bearer TOKEN`"))?
                        .to_string(),
                )
            }
            None if s.http.ws_query_token && parts.uri.path().starts_with("/ws/") => {
                url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
                    .find(|(k, _)| k == "token")
                    .map(|(_, v)| v.into_owned())
            }
            None => None,
        };
        let token = token.ok_or(ApiError::Unauthorized("a bearer token is required"))?;
        s.tokens.check(&token).map(Authed).ok_or(ApiError::Unauthorized("unknown token"))
    }
}

impl Authed {
    /// 403 unless the caller has one of `roles` (ops always passes).
    pub(super) fn require(&self, roles: &[Role]) -> Result<&Caller, ApiError> {
        if self.0.role == Role::Ops || roles.contains(&self.0.role) {
            Ok(&self.0)
        } else {
            Err(ApiError::Forbidden(format!("the {} role may not use this route", self.0.role.as_str())))
        }
    }
}
