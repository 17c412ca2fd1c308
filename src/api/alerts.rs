//! Alerts over REST: `GET /api/alerts` (the active set, or the stored history of transitions)
//! and `POST /api/alerts/{id}/ack`, for ops and for officers within their own cells.
//!
//! [`AlertQuery`] is also the filter of `/ws/alerts` ([`super::ws`]); a filter naming a cell
//! outside the caller's scope is refused (403) before anything is read.

use super::{ApiError, AppState, Authed, blocking};
use crate::alerts::Alert;
use crate::auth::Role;
use crate::hub::store::HistoryQuery;
use crate::hub::{AlertFilter, Scope};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use citybrain_dataflows::Ms;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The alert routes, with their OpenAPI entries.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(alerts)).routes(routes!(ack))
}

/// The query of `GET /api/alerts` (and the filters of `/ws/alerts`).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertQuery {
    /// `active` (default: the current active set), or `raised`, `acknowledged`, `cleared`,
    /// `all`: the stored history of transitions into that state (any state for `all`).
    pub state: Option<String>,
    /// Domains, comma-separated.
    pub domain: Option<String>,
    /// Severities, comma-separated.
    pub severity: Option<String>,
    /// Cell ids, comma-separated (an officer may name only their own cells).
    pub cell: Option<String>,
    /// From this event time (epoch ms or RFC 3339): raise time for active alerts, transition
    /// time for history.
    pub since: Option<String>,
    /// Before this event time (epoch ms or RFC 3339).
    pub until: Option<String>,
    /// History paging: only transitions with `seq` above this (pass the last `seq` you got).
    pub after: Option<u64>,
    /// History page size, at most 1000. Default 100.
    pub limit: Option<usize>,
}

fn split(list: &Option<String>) -> Option<Vec<String>> {
    list.as_deref().filter(|l| !l.is_empty()).map(|l| l.split(',').map(|x| x.trim().to_string()).collect())
}

/// An event-time parameter: epoch ms or RFC 3339; `None` when absent or empty.
pub(super) fn parse_time(name: &str, v: &Option<String>) -> Result<Option<Ms>, ApiError> {
    let Some(v) = v.as_deref().filter(|v| !v.is_empty()) else { return Ok(None) };
    if let Ok(ms) = v.parse::<Ms>() {
        return Ok(Some(ms));
    }
    citybrain_dataflows::time::parse_rfc3339(v)
        .map(|ts| Some(ts.0))
        .map_err(|e| ApiError::BadRequest(format!("`{name}`: expected epoch ms or RFC 3339 ({e})")))
}

impl AlertQuery {
    /// The filter, after checking the named cells are within the caller's scope.
    pub(super) fn filter(&self, scope: &Scope) -> Result<AlertFilter, ApiError> {
        let f = AlertFilter {
            domains: split(&self.domain),
            severities: split(&self.severity),
            cells: split(&self.cell),
        };
        if let Some(c) = f.cells.iter().flatten().find(|c| !scope.allows_cell(c)) {
            return Err(ApiError::Forbidden(format!("cell {c} is not one of your cells")));
        }
        if let Some(bad) = f.severities.iter().flatten().find(|v| crate::alerts::Severity::parse(v).is_none())
        {
            return Err(ApiError::BadRequest(format!("unknown severity {bad:?}")));
        }
        Ok(f)
    }
}

/// Alerts: the active set, or the history of transitions (`state` other than `active`).
#[utoipa::path(get, path = "/api/alerts", security(("bearer" = [])), params(AlertQuery),
    responses((status = 200, description = "Active alerts (state=active) or stored transitions with `seq` and `ts`", body = [Alert]),
        (status = 400), (status = 401), (status = 403)))]
async fn alerts(
    auth: Authed,
    State(s): State<AppState>,
    Query(q): Query<AlertQuery>,
) -> Result<Response, ApiError> {
    let caller = auth.require(&[Role::Officer])?;
    let scope = caller.scope();
    let filter = q.filter(&scope)?;
    let (since, until) = (parse_time("since", &q.since)?, parse_time("until", &q.until)?);
    match q.state.as_deref().unwrap_or("active") {
        "active" => {
            let mut list = s.hub.active(&scope, &filter);
            list.retain(|a| since.is_none_or(|t| a.raised_ts >= t) && until.is_none_or(|t| a.raised_ts < t));
            Ok(Json(list).into_response())
        }
        st => {
            let state = match st {
                "all" => None,
                other => Some(
                    crate::alerts::AlertState::parse(other)
                        .ok_or_else(|| ApiError::BadRequest(format!("unknown state {other:?}")))?,
                ),
            };
            let cells = match (&scope, filter.cells) {
                (_, Some(list)) => Some(list),
                (Scope::Cells(mine), None) => Some(mine.iter().cloned().collect()),
                (Scope::All, None) => None,
            };
            let query = HistoryQuery {
                state,
                domains: filter.domains,
                severities: filter.severities,
                cells,
                since,
                until,
                after: q.after,
                limit: q.limit.unwrap_or(100).clamp(1, 1000),
            };
            let hub = s.hub.clone();
            Ok(Json(blocking(move || hub.history(&query)).await??).into_response())
        }
    }
}

/// The body of an acknowledgement.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct AckBody {
    /// An optional note (what is being done).
    pub note: Option<String>,
}

/// Acknowledges an active alert; every client sees the transition.
#[utoipa::path(post, path = "/api/alerts/{id}/ack", security(("bearer" = [])),
    params(("id" = String, Path, description = "The alert id")), request_body(content = Option<AckBody>),
    responses((status = 200, body = Alert), (status = 401), (status = 403), (status = 404), (status = 409)))]
async fn ack(
    auth: Authed,
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Alert>, ApiError> {
    let caller = auth.require(&[Role::Officer])?;
    let body: AckBody = if body.iter().all(u8::is_ascii_whitespace) {
        AckBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("body: {e}")))?
    };
    let (hub, scope, who) = (s.hub.clone(), caller.scope(), caller.name.clone());
    // The ack waits until the alert store has it: off the async runtime.
    Ok(Json(blocking(move || hub.ack(&id, &who, body.note, &scope)).await??))
}
