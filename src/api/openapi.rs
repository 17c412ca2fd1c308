//! The OpenAPI description, served without a token at `GET /api/openapi.json`.
//!
//! It is generated from the handlers' `#[utoipa::path]` annotations by the same router that
//! serves them: every module's `routes()` is an `OpenApiRouter` carrying its paths and the
//! schemas they name, and [`app`](super::app) merges them all onto a base document: the title,
//! the bearer security scheme, and the schemas no path names but clients read (stored alert
//! transitions, the `/ws/live` figures). A new domain changes nothing here unless it adds such a
//! schema.

use super::AppState;
use super::board::Kpis;
use crate::alerts::Alert;
use crate::hub::store::StoredTransition;
use axum::Json;
use axum::routing::MethodRouter;
use std::sync::Arc;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "citybrain", description = "The city operations API (CONTRACT §8). Protected routes take `Authorization: Bearer TOKEN`."),
    modifiers(&BearerAuth),
    components(schemas(Alert, StoredTransition, Kpis))
)]
struct ApiDoc;

/// Declares the `bearer` security scheme the protected paths name.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document the routes' entries are merged onto.
pub(super) fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `GET /api/openapi.json`: serves the assembled document `api`.
pub(super) fn route(api: utoipa::openapi::OpenApi) -> MethodRouter<AppState> {
    let api = Arc::new(api);
    axum::routing::get(move || {
        let api = api.clone();
        async move { Json(api.as_ref().clone()) }
    })
}
