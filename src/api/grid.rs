//! Grid management: the read model of the grid dataflow's outputs and its routes (CONTRACT §8):
//! `GET /api/grid/cases`, `/api/grid/cells`, `/api/grid/sensors` (ops; an officer within their
//! cells), `GET /api/grid/districts` (ops) and `POST /api/grid/cases/{id}/status`.
//!
//! # The read model
//!
//! [`GridBoard`] folds the `Out::Grid` records of each completed event time, as the emergency
//! board does: a case or sensor version inserted replaces the row, one retracted without a
//! replacement removes it (a closed case stays until `grid.closed_grace_s` after it closed);
//! the latest cell and district snapshots, zeros when one is retracted without a replacement.
//! `/ws/live` carries `grid_cells`, `grid_districts`, `grid_cases`, `grid_sensors` and
//! `grid_cases_removed` (ids), each with only the rows changed since the client's last update.
//!
//! # Who sees what
//!
//! `ops` sees everything. An `officer` sees the cases, cells and sensors of their own cells
//! only, and no district figures (they sum other officers' cells too). `ingest` reads nothing.
//!
//! # Moving a case through its lifecycle
//!
//! `POST /api/grid/cases/{id}/status` with `{"status": "in_progress", "note": "…"}` publishes the
//! case's event (CONTRACT §2: `case`, `ts`, `status`, `category`, `cell`, `officer`, `source`)
//! through the very handler of `POST /api/ingest/{topic…}`, stamped with the city clock (and
//! after the case's last event), so the dataflow sees it like any other event. The transitions
//! allowed follow the lifecycle: reported → assigned → in_progress → resolved → closed, a
//! resolved or closed case may be reopened, and a reopened one is assigned or taken in hand
//! again. An officer works the cases of their own cells (assigned to themselves, in progress,
//! resolved); assigning to someone else, closing and reopening are the operations centre's.
//! Answers: 202 with the topic and payload; 400 for an unknown status; 403 for a case outside
//! the officer's cells or a step that is not theirs; 404 for a case the board does not hold; 409
//! for a step the lifecycle does not allow from the case's current status.

use super::board::{HistoryRow, ReadModel, Table};
use super::{ApiError, AppState, Authed};
use crate::auth::Role;
use crate::hub::Scope;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use citybrain_dataflows::city::Idx;
use citybrain_dataflows::event::CaseStatus;
use citybrain_dataflows::grid::model::{Case, Sensor};
use citybrain_dataflows::grid::{CellSnapshot, DistrictSnapshot, GridCounts, GridOut};
use citybrain_dataflows::pipeline::Out;
use citybrain_dataflows::{CityModel, Ms};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The latest grid state: the grid part of the [`Board`](super::Board).
pub struct GridBoard {
    city: Arc<CityModel>,
    cases: Table<String, Case>,
    sensors: Table<String, Sensor>,
    cells: BTreeMap<Idx, (CellSnapshot, u64)>,
    districts: BTreeMap<Idx, (DistrictSnapshot, u64)>,
}

/// Applies the versions of one batch to a table: retractions first, so an id retracted and
/// inserted in one batch keeps the insertion.
fn upsert<'a, T: Clone + PartialEq + 'a>(
    table: &mut Table<String, T>,
    v: u64,
    inserted: Vec<&'a T>,
    mut gone: BTreeSet<&'a str>,
    id: impl Fn(&T) -> &str,
) -> bool {
    let mut changed = false;
    for t in &inserted {
        gone.remove(id(t));
    }
    for g in gone {
        changed |= table.remove(&g.to_string(), v);
    }
    for t in inserted {
        changed |= table.set(id(t).to_string(), t.clone(), v);
    }
    changed
}

impl ReadModel for GridBoard {
    fn apply(&mut self, v: u64, records: &[(Out, isize)]) -> bool {
        let (mut cases, mut sensors) = (Vec::new(), Vec::new());
        let (mut gone_cases, mut gone_sensors) = (BTreeSet::new(), BTreeSet::new());
        let mut cells: BTreeMap<Idx, Option<&CellSnapshot>> = BTreeMap::new();
        let mut districts: BTreeMap<Idx, Option<&DistrictSnapshot>> = BTreeMap::new();
        for (out, diff) in records {
            let Out::Grid(g) = out else { continue };
            match g {
                GridOut::Case(c) if *diff > 0 => cases.push(&**c),
                GridOut::Case(c) => drop(gone_cases.insert(c.id.as_str())),
                GridOut::Sensor(s) if *diff > 0 => sensors.push(&**s),
                GridOut::Sensor(s) => drop(gone_sensors.insert(s.id.as_str())),
                GridOut::Cell(c) if *diff > 0 => drop(cells.insert(c.cell, Some(c))),
                GridOut::Cell(c) => drop(cells.entry(c.cell).or_insert(None)),
                GridOut::District(d) if *diff > 0 => drop(districts.insert(d.district, Some(d))),
                GridOut::District(d) => drop(districts.entry(d.district).or_insert(None)),
            }
        }
        let mut changed = upsert(&mut self.cases, v, cases, gone_cases, |c| &c.id);
        changed |= upsert(&mut self.sensors, v, sensors, gone_sensors, |s| &s.id);
        for (c, snap) in cells {
            let snap =
                snap.cloned().unwrap_or(CellSnapshot { cell: c, counts: GridCounts::default(), risk: 0 });
            if self.cells.get(&c).is_none_or(|(old, _)| *old != snap) {
                self.cells.insert(c, (snap, v));
                changed = true;
            }
        }
        for (d, snap) in districts {
            let snap = snap.cloned().unwrap_or(DistrictSnapshot {
                district: d,
                counts: GridCounts::default(),
                risk: 0,
            });
            if self.districts.get(&d).is_none_or(|(old, _)| *old != snap) {
                self.districts.insert(d, (snap, v));
                changed = true;
            }
        }
        changed
    }

    fn live(&self, since: Option<u64>, msg: &mut Map<String, Value>) {
        let newer = |at: &u64| since.is_none_or(|s| *at > s);
        let cells: Vec<CellRow> = match since {
            // The snapshot lists every cell, zeros where nothing happened.
            None => self.cells(&Scope::All),
            Some(_) => {
                self.cells.values().filter(|(_, at)| newer(at)).map(|(s, _)| self.cell_row(s)).collect()
            }
        };
        let districts: Vec<GridDistrictRow> =
            self.districts.values().filter(|(_, at)| newer(at)).map(|(s, _)| self.district_row(s)).collect();
        let cases: Vec<CaseRow> = self.cases.changed(since).map(|(_, c)| self.case_row(c)).collect();
        let sensors: Vec<SensorRow> = self.sensors.changed(since).map(|(_, s)| self.sensor_row(s)).collect();
        msg.insert("grid_cells".into(), json!(cells));
        msg.insert("grid_districts".into(), json!(districts));
        msg.insert("grid_cases".into(), json!(cases));
        msg.insert("grid_sensors".into(), json!(sensors));
        msg.insert("grid_cases_removed".into(), json!(self.cases.removed(since).collect::<Vec<_>>()));
    }

    fn history(&self, version: u64, out: &mut Vec<HistoryRow>) {
        for (snap, at) in self.districts.values() {
            if *at == version {
                let row = self.district_row(snap);
                out.push(("grid_district", row.district.clone(), json!(row)));
            }
        }
    }
}

impl GridBoard {
    /// An empty read model for `city`.
    pub fn new(city: Arc<CityModel>) -> GridBoard {
        GridBoard {
            city,
            cases: Table::new(),
            sensors: Table::new(),
            cells: BTreeMap::new(),
            districts: BTreeMap::new(),
        }
    }

    fn cell_id(&self, c: Idx) -> &str {
        &self.city.cells[c as usize].id
    }

    fn district_id(&self, d: Idx) -> &str {
        &self.city.districts[d as usize].id
    }

    fn case_row(&self, c: &Case) -> CaseRow {
        CaseRow {
            case: c.id.clone(),
            category: c.category.clone(),
            status: c.status.as_str(),
            light: c.light.as_str(),
            overdue: c.is_overdue(),
            cell: self.cell_id(c.cell).to_string(),
            district: self.district_id(c.district).to_string(),
            officer: c.officer.clone(),
            source: c.source.map(|s| s.as_str()),
            reported_ts: c.reported,
            amber_ts: c.amber_at,
            deadline_ts: c.deadline,
            resolved_ts: c.resolved,
            closed_ts: c.closed,
            updated_ts: c.updated,
        }
    }

    fn sensor_row(&self, s: &Sensor) -> SensorRow {
        SensorRow {
            sensor: s.id.clone(),
            kind: s.kind.clone(),
            cell: self.cell_id(s.cell).to_string(),
            district: self.district_id(s.district).to_string(),
            value: s.value(),
            ts: s.at,
            alarm: s.alarm,
            stale: s.stale,
        }
    }

    fn cell_row(&self, s: &CellSnapshot) -> CellRow {
        let cell = &self.city.cells[s.cell as usize];
        let c = &s.counts;
        CellRow {
            cell: cell.id.clone(),
            district: self.district_id(cell.district).to_string(),
            officers: cell.officers.clone(),
            open_cases: c.open,
            overdue_cases: c.overdue,
            amber_cases: c.amber,
            closed_today: c.closed_today,
            mttr_s: c.mttr_s(),
            sensor_alarms: c.sensor_alarms,
            stale_sensors: c.stale_sensors,
            traffic_incidents: c.traffic_incidents,
            emergency_incidents: c.emergency_incidents,
            risk: s.risk,
        }
    }

    fn district_row(&self, s: &DistrictSnapshot) -> GridDistrictRow {
        let c = &s.counts;
        GridDistrictRow {
            district: self.district_id(s.district).to_string(),
            open_cases: c.open,
            overdue_cases: c.overdue,
            amber_cases: c.amber,
            closed_today: c.closed_today,
            mttr_s: c.mttr_s(),
            sensor_alarms: c.sensor_alarms,
            risk: s.risk,
        }
    }

    /// The cases `scope` may see, by id.
    fn cases(&self, scope: &Scope) -> Vec<CaseRow> {
        self.cases
            .iter()
            .filter(|(_, c)| scope.allows_cell(self.cell_id(c.cell)))
            .map(|(_, c)| self.case_row(c))
            .collect()
    }

    /// Every cell `scope` may see, in model order, zeros where nothing is happening.
    fn cells(&self, scope: &Scope) -> Vec<CellRow> {
        (0..self.city.cells.len() as Idx)
            .filter(|&c| scope.allows_cell(self.cell_id(c)))
            .map(|c| match self.cells.get(&c) {
                Some((s, _)) => self.cell_row(s),
                None => self.cell_row(&CellSnapshot { cell: c, counts: GridCounts::default(), risk: 0 }),
            })
            .collect()
    }

    /// The sensors `scope` may see, by id.
    fn sensors(&self, scope: &Scope) -> Vec<SensorRow> {
        self.sensors
            .iter()
            .filter(|(_, s)| scope.allows_cell(self.cell_id(s.cell)))
            .map(|(_, s)| self.sensor_row(s))
            .collect()
    }

    /// Every district's figures, in model order.
    fn districts(&self) -> Vec<GridDistrictRow> {
        (0..self.city.districts.len() as Idx)
            .map(|d| match self.districts.get(&d) {
                Some((s, _)) => self.district_row(s),
                None => self.district_row(&DistrictSnapshot {
                    district: d,
                    counts: GridCounts::default(),
                    risk: 0,
                }),
            })
            .collect()
    }

    /// City-wide sums of the cells' latest figures: (open cases, overdue cases).
    pub(super) fn totals(&self) -> (i64, i64) {
        self.cells.values().fold((0, 0), |(o, d), (s, _)| (o + s.counts.open, d + s.counts.overdue))
    }

    /// The event that moves case `id` to `status` for `caller` at event time `ts` (see the
    /// module docs for the checks).
    fn transition(
        &self,
        caller: &crate::auth::Caller,
        id: &str,
        status: CaseStatus,
        officer: Option<String>,
        ts: Ms,
    ) -> Result<Value, ApiError> {
        let case =
            self.cases.get(&id.to_string()).ok_or_else(|| ApiError::NotFound(format!("no case {id:?}")))?;
        let cell = self.cell_id(case.cell);
        if !caller.scope().allows_cell(cell) {
            return Err(ApiError::Forbidden(format!("case {id} is in cell {cell}, not one of yours")));
        }
        use CaseStatus::*;
        let allowed: &[CaseStatus] = match case.status {
            Reported => &[Assigned, InProgress, Resolved],
            Assigned => &[Assigned, InProgress, Resolved],
            InProgress => &[Resolved],
            Resolved => &[Closed, Reopened],
            Closed => &[Reopened],
            Reopened => &[Assigned, InProgress, Resolved],
        };
        if !allowed.contains(&status) {
            return Err(ApiError::Conflict(format!(
                "case {id} is {}; it may go to {}",
                case.status.as_str(),
                allowed.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        let officer = match caller.role {
            Role::Officer => {
                if matches!(status, Closed | Reopened) {
                    return Err(ApiError::Forbidden(format!(
                        "closing and reopening a case is the operations centre's ({})",
                        status.as_str()
                    )));
                }
                if officer.as_ref().is_some_and(|o| *o != caller.name) {
                    return Err(ApiError::Forbidden("an officer assigns cases to themselves only".into()));
                }
                Some(caller.name.clone())
            }
            _ => officer.or_else(|| case.officer.clone()),
        };
        let mut ev = Map::new();
        ev.insert("case".into(), case.id.clone().into());
        ev.insert("ts".into(), ts.max(case.updated + 1).into());
        ev.insert("status".into(), status.as_str().into());
        ev.insert("category".into(), case.category.clone().into());
        ev.insert("cell".into(), cell.into());
        if let Some(s) = case.source {
            ev.insert("source".into(), s.as_str().into());
        }
        if let Some(o) = officer {
            ev.insert("officer".into(), o.into());
        }
        Ok(Value::Object(ev))
    }
}

/// A row of `/api/grid/cases`: a case's current state.
#[derive(Debug, Serialize, ToSchema)]
pub struct CaseRow {
    /// Case id.
    pub case: String,
    /// Category (selects the time limit).
    pub category: String,
    /// `reported`, `assigned`, `in_progress`, `resolved`, `closed` or `reopened`.
    pub status: &'static str,
    /// `green`, `amber` (nearing its deadline) or `red` (past it); a resolved case keeps the
    /// light it had when it was resolved.
    pub light: &'static str,
    /// Open and past its deadline.
    pub overdue: bool,
    /// Cell.
    pub cell: String,
    /// District.
    pub district: String,
    /// The officer handling it.
    pub officer: Option<String>,
    /// `hotline`, `patrol`, `sensor` or `app`.
    pub source: Option<&'static str>,
    /// First report, epoch ms.
    pub reported_ts: Ms,
    /// When it turns (turned) amber, epoch ms.
    pub amber_ts: Ms,
    /// Its deadline, epoch ms.
    pub deadline_ts: Ms,
    /// When it was resolved, epoch ms.
    pub resolved_ts: Option<Ms>,
    /// When it was closed, epoch ms.
    pub closed_ts: Option<Ms>,
    /// Its last event, epoch ms.
    pub updated_ts: Ms,
}

/// A row of `/api/grid/cells` (`grid_cell`).
#[derive(Debug, Serialize, ToSchema)]
#[allow(missing_docs)]
pub struct CellRow {
    pub cell: String,
    pub district: String,
    /// The officers who look after it.
    pub officers: Vec<String>,
    pub open_cases: i64,
    pub overdue_cases: i64,
    pub amber_cases: i64,
    pub closed_today: i64,
    /// Mean time to resolve the cases closed today, s.
    pub mttr_s: Option<f64>,
    pub sensor_alarms: i64,
    pub stale_sensors: i64,
    pub traffic_incidents: i64,
    pub emergency_incidents: i64,
    /// Risk score, 0–100.
    pub risk: u32,
}

/// A row of `/api/grid/districts` (`grid_district`).
#[derive(Debug, Serialize, ToSchema)]
#[allow(missing_docs)]
pub struct GridDistrictRow {
    pub district: String,
    pub open_cases: i64,
    pub overdue_cases: i64,
    pub amber_cases: i64,
    pub closed_today: i64,
    /// Mean time to resolve the cases closed today, s.
    pub mttr_s: Option<f64>,
    pub sensor_alarms: i64,
    /// The highest risk of its cells.
    pub risk: u32,
}

/// A row of `/api/grid/sensors`: a cell sensor's latest reading.
#[derive(Debug, Serialize, ToSchema)]
pub struct SensorRow {
    /// Sensor id.
    pub sensor: String,
    /// What it measures.
    pub kind: String,
    /// Cell.
    pub cell: String,
    /// District.
    pub district: String,
    /// Its latest reading.
    pub value: f64,
    /// When, epoch ms.
    pub ts: Ms,
    /// In alarm (`grid.sensor_threshold`).
    pub alarm: bool,
    /// Silent too long (`grid.sensor_stale`).
    pub stale: bool,
}

/// The body of `POST /api/grid/cases/{id}/status`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct StatusBody {
    /// The new status.
    pub status: String,
    /// For `assigned` (ops): the officer; an officer's own steps carry their own id.
    pub officer: Option<String>,
}

/// The answer of `POST /api/grid/cases/{id}/status`: what was queued for the dataflow.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusQueued {
    /// Always true.
    pub queued: bool,
    /// The event's topic.
    pub topic: String,
    /// Its payload (CONTRACT §2).
    #[schema(value_type = Object)]
    pub payload: Value,
}

/// The grid routes, with their OpenAPI entries.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(cases))
        .routes(routes!(cells))
        .routes(routes!(sensors))
        .routes(routes!(districts))
        .routes(routes!(set_status))
}

/// The caller's scope for the reads: ops everything, an officer their cells, ingest 403.
fn read_scope(auth: &Authed) -> Result<Scope, ApiError> {
    Ok(auth.require(&[Role::Officer])?.scope())
}

/// Current cases (an officer: those of their cells), by id; a closed one stays for
/// `grid.closed_grace_s`.
#[utoipa::path(get, path = "/api/grid/cases", security(("bearer" = [])),
    responses((status = 200, body = [CaseRow]), (status = 401), (status = 403)))]
async fn cases(auth: Authed, State(s): State<AppState>) -> Result<Json<Vec<CaseRow>>, ApiError> {
    let scope = read_scope(&auth)?;
    Ok(Json(s.read_board().grid.cases(&scope)))
}

/// Every cell's latest figures (an officer: their cells), in city-model order.
#[utoipa::path(get, path = "/api/grid/cells", security(("bearer" = [])),
    responses((status = 200, body = [CellRow]), (status = 401), (status = 403)))]
async fn cells(auth: Authed, State(s): State<AppState>) -> Result<Json<Vec<CellRow>>, ApiError> {
    let scope = read_scope(&auth)?;
    Ok(Json(s.read_board().grid.cells(&scope)))
}

/// Cell sensors' latest readings (an officer: those of their cells), by id.
#[utoipa::path(get, path = "/api/grid/sensors", security(("bearer" = [])),
    responses((status = 200, body = [SensorRow]), (status = 401), (status = 403)))]
async fn sensors(auth: Authed, State(s): State<AppState>) -> Result<Json<Vec<SensorRow>>, ApiError> {
    let scope = read_scope(&auth)?;
    Ok(Json(s.read_board().grid.sensors(&scope)))
}

/// Every district's grid figures (ops), in city-model order.
#[utoipa::path(get, path = "/api/grid/districts", security(("bearer" = [])),
    responses((status = 200, body = [GridDistrictRow]), (status = 401), (status = 403)))]
async fn districts(auth: Authed, State(s): State<AppState>) -> Result<Json<Vec<GridDistrictRow>>, ApiError> {
    auth.require(&[])?;
    Ok(Json(s.read_board().grid.districts()))
}

/// Moves a case through its lifecycle: publishes its event through `POST /api/ingest`, stamped
/// with the city clock (see the module docs for who may do what).
#[utoipa::path(post, path = "/api/grid/cases/{id}/status", security(("bearer" = [])),
    params(("id" = String, Path, description = "The case id")), request_body = StatusBody,
    responses((status = 202, body = StatusQueued, description = "The event is queued for the dataflow"),
        (status = 400, description = "An unknown status"), (status = 401),
        (status = 403, description = "Not one of the officer's cells, or not an officer's step"),
        (status = 404, description = "No such case"),
        (status = 409, description = "The lifecycle does not allow this step now"),
        (status = 503, description = "The dataflow is busy or stopping, or an output is failing: retry")))]
async fn set_status(
    auth: Authed,
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let caller = auth.require(&[Role::Officer])?;
    let body: StatusBody =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("body: {e}")))?;
    let status = CaseStatus::parse(&body.status)
        .ok_or_else(|| ApiError::BadRequest(format!("unknown status {:?}", body.status)))?;
    let payload = {
        let board = s.read_board();
        let clock = board.kpis(0).clock;
        board.grid.transition(caller, &id, status, body.officer, clock)?
    };
    let topic = format!("{}grid/case/{id}", s.topic_prefix);
    let bytes = serde_json::to_vec(&payload).map_err(|e| ApiError::Internal(e.to_string()))?;
    super::ingest::publish(&s, topic.clone(), bytes.into()).await?;
    Ok((StatusCode::ACCEPTED, Json(StatusQueued { queued: true, topic, payload })).into_response())
}
