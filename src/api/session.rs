//! `GET /api/session` (any token): who the caller is and what the pages need to show time —
//! the token's name and role, an officer's cells, the city clock (event time) and the city's
//! time zone (`time.city_tz`). The officer's page uses it for its header clock, whose source is
//! otherwise `/ws/live` (ops only).

use super::{ApiError, AppState, Authed};
use crate::auth::Role;
use axum::Json;
use axum::extract::State;
use citybrain_dataflows::Ms;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The session route, with its OpenAPI entry.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(session))
}

/// The caller and the city's clock.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionInfo {
    /// The token's name (what `acked_by` says for this caller).
    pub name: String,
    /// `ops`, `officer` or `ingest`.
    pub role: &'static str,
    /// An officer's id; absent for other roles.
    pub officer: Option<String>,
    /// An officer's cells (sorted); absent for other roles (they see every cell).
    pub cells: Option<Vec<String>>,
    /// The latest event time the indicators reflect, epoch ms (0 before any output).
    pub clock: Ms,
    /// The city's time zone (IANA name), which defines "today".
    pub city_tz: String,
}

/// Who the caller is, the city clock and time zone.
#[utoipa::path(get, path = "/api/session", security(("bearer" = [])),
    responses((status = 200, description = "The caller", body = SessionInfo), (status = 401)))]
async fn session(auth: Authed, State(s): State<AppState>) -> Result<Json<SessionInfo>, ApiError> {
    let caller = auth.require(&[Role::Officer, Role::Ingest])?;
    let board = s.read_board();
    Ok(Json(SessionInfo {
        name: caller.name.clone(),
        role: caller.role.as_str(),
        officer: caller.officer.clone(),
        cells: (caller.role == Role::Officer).then(|| caller.cells.iter().cloned().collect()),
        clock: board.clock(),
        city_tz: board.city_tz().to_string(),
    }))
}
