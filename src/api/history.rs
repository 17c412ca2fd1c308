//! `GET /api/history?measurement=&key=&since=` (CONTRACT §8): the recent history of the district
//! and city indicators for the dashboards' charts (ops).
//!
//! The points are the rows the reads and `/ws/live` served, kept by the board as they changed
//! ([`super::board::History`]): `traffic_city` and `traffic_district` a point per 5-minute window
//! (stamped with its start), `emergency_district` and `grid_district` a point per change
//! (stamped with the event time of the change). At least the last 6 hours of event time are
//! kept (and at most 1,000 points a series), in memory: a restart starts the charts afresh, and
//! InfluxDB keeps the long history.

use super::board::{HISTORY_MEASUREMENTS, History};
use super::{ApiError, AppState, Authed};
use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The history route, with its OpenAPI entry.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(history))
}

/// The query of `GET /api/history`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// `traffic_city`, `traffic_district`, `emergency_district` or `grid_district`.
    pub measurement: String,
    /// The series: a district id (absent: every series of the measurement; `city` for `traffic_city`).
    pub key: Option<String>,
    /// From this event time (epoch ms or RFC 3339).
    pub since: Option<String>,
}

/// Recent points of a district or city indicator, in time order: JSON objects with the
/// measurement's tags and fields and `ts` (epoch ms), as `/api/traffic/districts`,
/// `/api/grid/districts` and `/ws/live` serve them.
#[utoipa::path(get, path = "/api/history", security(("bearer" = [])), params(HistoryParams),
    responses((status = 200, description = "Points in time order", body = [Object]),
        (status = 400, description = "Unknown measurement or bad time"), (status = 401), (status = 403)))]
async fn history(
    auth: Authed,
    State(s): State<AppState>,
    Query(q): Query<HistoryParams>,
) -> Result<Json<Vec<Value>>, ApiError> {
    auth.require(&[])?;
    if !History::knows(&q.measurement) {
        return Err(ApiError::BadRequest(format!(
            "unknown measurement {:?}: one of {}",
            q.measurement,
            HISTORY_MEASUREMENTS.join(", ")
        )));
    }
    let since = super::alerts::parse_time("since", &q.since)?.unwrap_or(0);
    let points =
        s.read_board().history.query(&q.measurement, q.key.as_deref().filter(|k| !k.is_empty()), since);
    Ok(Json(points))
}
