//! `GET /api/city`: the city model file (GeoJSON, CONTRACT §3) as loaded, for ops and officers.

use super::{ApiError, AppState, Authed};
use crate::auth::Role;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The city route, with its OpenAPI entry.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(city))
}

/// The city model (GeoJSON, CONTRACT §3).
#[utoipa::path(get, path = "/api/city", security(("bearer" = [])),
    responses((status = 200, description = "GeoJSON FeatureCollection", content_type = "application/geo+json"), (status = 401), (status = 403)))]
async fn city(auth: Authed, State(s): State<AppState>) -> Result<Response, ApiError> {
    auth.require(&[Role::Officer])?;
    Ok(([(header::CONTENT_TYPE, "application/geo+json")], s.city_geojson.as_str().to_owned()).into_response())
}
