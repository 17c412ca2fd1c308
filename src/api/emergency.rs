//! Emergency: the read model of the emergency dataflow's outputs and its routes (CONTRACT §8),
//! `GET /api/emergency/incidents`, `/api/emergency/units`, `/api/emergency/dispatch` (ops; an
//! officer within their cells) and `POST /api/emergency/dispatch/{incident}` (ops).
//!
//! # The read model
//!
//! [`EmergencyBoard`] folds the `Out::Emergency` records of each completed event time:
//!
//! * **Incidents and units** (`EmOut::Incident`, `EmOut::Unit`, ±1). The dataflow releases each
//!   version of an entity over the event-time interval it held, so one version is present at a
//!   time: in a batch, an insertion replaces the entity's row and a retraction without an
//!   insertion of the same id removes it (retractions count before insertions). A closed
//!   incident therefore stays, cleared or cancelled, until the dataflow lets it go
//!   (`emergency.closed_grace_s` after it closed).
//! * **Recommendations** (`EmOut::Dispatch`, insert-only audit records): rank `r` of an
//!   incident is the record's unit; a record without a unit withdraws the rank. An incident that
//!   is gone, closed or assigned (dispatched, or a unit named) loses all its ranks.
//! * **District indicators** (`EmOut::District`, ±1): the latest snapshot; one retracted without
//!   a replacement becomes zeros, as `emergency_district` writes it.
//!
//! Every row carries the board version of its last change, so `/ws/live` sends only what changed
//! (keys `emergency_incidents`, `emergency_units`, `emergency_dispatch`, `emergency_districts`).
//! A removed incident, unit or rank leaves a tombstone, so an update can also say what went
//! (`emergency_incidents_removed`: ids, `emergency_units_removed`: ids,
//! `emergency_dispatch_removed`: `{incident, rank}`); the latest [`TOMBSTONES`](super::board::TOMBSTONES) removals are
//! kept, and a dashboard further behind than that reconnects for a fresh snapshot.
//!
//! # Who sees what
//!
//! `ops` sees everything. An `officer` sees the incidents whose cell (the cell holding the
//! incident's position, `Incident.cell`) is one of theirs, the recommendations of those
//! incidents, and the units working on them: a unit is theirs while it reports one of those
//! incidents as its `incident`, or one of those incidents names it as its `unit`. Available units
//! are not tied to a cell and are not shown to officers (dispatching is the operations centre's
//! job). The `ingest` role reads nothing here (403).
//!
//! # Confirming a dispatch
//!
//! `POST /api/emergency/dispatch/{incident}` with `{"unit": "…"}` (ops only) publishes the
//! incident's `dispatched` event (CONTRACT §2: `incident`, `ts`, `status`, `type`, `severity`,
//! `lon`, `lat`, `unit`, and `note` when given) and the unit's `dispatched` report (`unit`, `ts`,
//! `type`, `status`, `incident`, and its last reported `lon`/`lat` and `station`), through the
//! very handler of `POST /api/ingest/{topic…}`: the same checks, the same queue, the same 503
//! while input is paused. The unit's report goes first, so a refusal in between leaves at most a
//! unit marked dispatched to the incident, which a retry then dispatches (the incident stays
//! unassigned and confirmable until its event is in, and a unit already sent to it passes the
//! availability check). Both are stamped with the city clock now: the board's clock
//! ([`Kpis::clock`](super::board::Kpis::clock), the latest completed event time whose output the
//! board was given: the output times that also move the alert hub's clock, which stamps
//! acknowledgements), never before anything the board shows, so the call interval is never
//! negative. Answers: 202 with both topics and payloads; 404 for an incident the board does not
//! hold or one that is closed; 409 when it already has a unit (dispatched, or a unit named), or
//! the unit's status is not one `emergency.dispatch.eligible` allows (by default only
//! `available` units are confirmed); 400 for a body without a unit, a unit the board does not
//! know, or a unit of another type than `emergency.dispatch` sends to the incident's type. The
//! checks read the board, which lags the published events by a round: a second confirmation
//! within that round is published too (the dataflow counts an identical one as a duplicate).

use super::board::{HistoryRow, ReadModel, Table};
use super::{ApiError, AppState, Authed};
use crate::hub::Scope;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use citybrain_dataflows::city::Idx;
use citybrain_dataflows::emergency::model::{Incident, Interval, Unit};
use citybrain_dataflows::emergency::{DistrictSnapshot, EmCounts, EmOut, Recommendation};
use citybrain_dataflows::pipeline::Out;
use citybrain_dataflows::{CityModel, Config, Ms};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The latest emergency state: the emergency part of the [`Board`](super::Board).
pub struct EmergencyBoard {
    city: Arc<CityModel>,
    cfg: Arc<Config>,
    incidents: Table<String, Incident>,
    units: Table<String, Unit>,
    /// Current recommendations by (incident, rank).
    dispatch: Table<(String, u32), Recommendation>,
    /// By district: the latest snapshot and the board version of its last change.
    districts: BTreeMap<Idx, (DistrictSnapshot, u64)>,
}

impl ReadModel for EmergencyBoard {
    fn apply(&mut self, v: u64, records: &[(Out, isize)]) -> bool {
        let mut changed = false;
        let mut incidents: Vec<&Incident> = Vec::new();
        let mut units: Vec<&Unit> = Vec::new();
        let mut recommendations: Vec<&Recommendation> = Vec::new();
        let (mut gone_incidents, mut gone_units) = (BTreeSet::new(), BTreeSet::new());
        let mut districts: BTreeMap<Idx, Option<&DistrictSnapshot>> = BTreeMap::new();
        for (out, diff) in records {
            let Out::Emergency(e) = out else { continue };
            match e {
                EmOut::Incident(i) if *diff > 0 => incidents.push(i),
                EmOut::Incident(i) if *diff < 0 => {
                    gone_incidents.insert(i.id.as_str());
                }
                EmOut::Unit(u) if *diff > 0 => units.push(u),
                EmOut::Unit(u) if *diff < 0 => {
                    gone_units.insert(u.id.as_str());
                }
                EmOut::Dispatch(r) if *diff > 0 => recommendations.push(r),
                EmOut::District(s) if *diff > 0 => {
                    districts.insert(s.district, Some(s));
                }
                EmOut::District(s) if *diff < 0 => {
                    districts.entry(s.district).or_insert(None);
                }
                _ => {}
            }
        }
        // Retractions first: an id retracted and inserted in one batch keeps the insertion.
        for i in &incidents {
            gone_incidents.remove(i.id.as_str());
        }
        for u in &units {
            gone_units.remove(u.id.as_str());
        }
        let mut touched: BTreeSet<String> = BTreeSet::new();
        for id in gone_incidents {
            changed |= self.incidents.remove(&id.to_string(), v);
            touched.insert(id.to_string());
        }
        for i in incidents {
            touched.insert(i.id.clone());
            changed |= self.incidents.set(i.id.clone(), Incident::clone(i), v);
        }
        for id in gone_units {
            changed |= self.units.remove(&id.to_string(), v);
        }
        for u in units {
            changed |= self.units.set(u.id.clone(), Unit::clone(u), v);
        }
        for r in recommendations {
            let key = (r.incident.clone(), r.rank);
            touched.insert(r.incident.clone());
            changed |= match r.unit {
                Some(_) => self.dispatch.set(key, Recommendation::clone(r), v),
                None => self.dispatch.remove(&key, v),
            };
        }
        // Only an open, unassigned incident has recommendations.
        for id in touched {
            if self.incidents.get(&id).is_none_or(|i| !i.is_unassigned()) {
                let ranks = self.dispatch.present_in((id.clone(), 0)..=(id.clone(), u32::MAX));
                for key in ranks {
                    changed |= self.dispatch.remove(&key, v);
                }
            }
        }
        for (d, snap) in districts {
            let snap = snap.cloned().unwrap_or(DistrictSnapshot {
                district: d,
                counts: EmCounts::default(),
                pct: [None; 4],
            });
            if self.districts.get(&d).is_none_or(|(old, _)| *old != snap) {
                self.districts.insert(d, (snap, v));
                changed = true;
            }
        }
        changed
    }

    fn live(&self, since: Option<u64>, msg: &mut Map<String, Value>) {
        let incidents: Vec<IncidentRow> =
            self.incidents.changed(since).map(|(_, i)| self.incident_row(i)).collect();
        let units: Vec<UnitRow> = self.units.changed(since).map(|(_, u)| self.unit_row(u)).collect();
        let dispatch: Vec<DispatchRow> =
            self.dispatch.changed(since).filter_map(|(_, r)| dispatch_row(r)).collect();
        let districts: Vec<EmergencyDistrictRow> = self
            .districts
            .values()
            .filter(|(_, at)| since.is_none_or(|s| *at > s))
            .map(|(snap, _)| self.district_row(snap))
            .collect();
        msg.insert("emergency_districts".into(), json!(districts));
        msg.insert("emergency_incidents".into(), json!(incidents));
        msg.insert("emergency_units".into(), json!(units));
        msg.insert("emergency_dispatch".into(), json!(dispatch));
        msg.insert(
            "emergency_incidents_removed".into(),
            json!(self.incidents.removed(since).collect::<Vec<_>>()),
        );
        msg.insert("emergency_units_removed".into(), json!(self.units.removed(since).collect::<Vec<_>>()));
        let ranks: Vec<Value> =
            self.dispatch.removed(since).map(|(i, r)| json!({"incident": i, "rank": r})).collect();
        msg.insert("emergency_dispatch_removed".into(), json!(ranks));
    }

    fn history(&self, version: u64, out: &mut Vec<HistoryRow>) {
        for (snap, at) in self.districts.values() {
            if *at == version {
                let row = self.district_row(snap);
                out.push(("emergency_district", row.district.clone(), json!(row)));
            }
        }
    }
}

impl EmergencyBoard {
    /// An empty read model for `city`, with the dispatch rules of `cfg`.
    pub fn new(city: Arc<CityModel>, cfg: Arc<Config>) -> EmergencyBoard {
        EmergencyBoard {
            city,
            cfg,
            incidents: Table::new(),
            units: Table::new(),
            dispatch: Table::new(),
            districts: BTreeMap::new(),
        }
    }

    fn district_id(&self, d: Option<Idx>) -> Option<String> {
        d.map(|d| self.city.districts[d as usize].id.clone())
    }

    fn cell_id(&self, c: Option<Idx>) -> Option<&str> {
        c.map(|c| self.city.cells[c as usize].id.as_str())
    }

    fn incident_row(&self, i: &Incident) -> IncidentRow {
        IncidentRow {
            incident: i.id.clone(),
            kind: i.kind.as_str(),
            severity: i.severity,
            status: i.status.as_str(),
            lon: i.pos.map(|p| p.lon()),
            lat: i.pos.map(|p| p.lat()),
            district: self.district_id(i.district),
            cell: self.cell_id(i.cell).map(str::to_string),
            unit: i.unit.clone(),
            reported_ts: i.reported,
            dispatched_ts: i.dispatched,
            en_route_ts: i.en_route,
            on_scene_ts: i.on_scene,
            closed_ts: i.closed,
        }
    }

    fn unit_row(&self, u: &Unit) -> UnitRow {
        let at = u.location(&self.city);
        UnitRow {
            unit: u.id.clone(),
            kind: u.kind.as_str(),
            status: u.status.as_str(),
            lon: at.map(|p| p.0),
            lat: at.map(|p| p.1),
            station: u.station.map(|s| self.city.stations[s as usize].id.clone()),
            district: self.district_id(u.district),
            incident: u.incident.clone(),
            ts: u.ts,
        }
    }

    fn district_row(&self, s: &DistrictSnapshot) -> EmergencyDistrictRow {
        let c = &s.counts;
        let pct =
            |k: Interval, p90: bool| s.pct[k as usize].map(|(a, b)| (if p90 { b } else { a }) as f64 / 1e3);
        EmergencyDistrictRow {
            district: self.city.districts[s.district as usize].id.clone(),
            open_incidents: c.open,
            open_fire: c.open_fire,
            open_medical: c.open_medical,
            open_police: c.open_police,
            open_traffic: c.open_traffic,
            open_sev1_2: c.open_sev1_2,
            unassigned: c.unassigned,
            available_units: c.available,
            available_fire_engine: c.available_fire_engine,
            available_ambulance: c.available_ambulance,
            available_police: c.available_police,
            call_p50_s: pct(Interval::Call, false),
            call_p90_s: pct(Interval::Call, true),
            turnout_p50_s: pct(Interval::Turnout, false),
            turnout_p90_s: pct(Interval::Turnout, true),
            travel_p50_s: pct(Interval::Travel, false),
            travel_p90_s: pct(Interval::Travel, true),
            response_p50_s: pct(Interval::Response, false),
            response_p90_s: pct(Interval::Response, true),
        }
    }

    /// Whether an incident is within `scope` (an officer's: its cell is theirs).
    fn sees(&self, scope: &Scope, i: &Incident) -> bool {
        match scope {
            Scope::All => true,
            Scope::Cells(_) => self.cell_id(i.cell).is_some_and(|c| scope.allows_cell(c)),
        }
    }

    /// The incidents `scope` may see, by id.
    fn incidents(&self, scope: &Scope) -> Vec<IncidentRow> {
        self.incidents
            .iter()
            .filter(|(_, i)| self.sees(scope, i))
            .map(|(_, i)| self.incident_row(i))
            .collect()
    }

    /// The units `scope` may see (an officer: those working on their incidents), by id.
    fn units(&self, scope: &Scope) -> Vec<UnitRow> {
        let mine: Option<(BTreeSet<&str>, BTreeSet<&str>)> = match scope {
            Scope::All => None,
            Scope::Cells(_) => {
                let (mut ids, mut named) = (BTreeSet::new(), BTreeSet::new());
                for (id, i) in self.incidents.iter().filter(|(_, i)| self.sees(scope, i)) {
                    ids.insert(id.as_str());
                    named.extend(i.unit.as_deref());
                }
                Some((ids, named))
            }
        };
        self.units
            .iter()
            .filter(|(id, u)| {
                mine.as_ref().is_none_or(|(ids, named)| {
                    named.contains(id.as_str()) || u.incident.as_deref().is_some_and(|i| ids.contains(i))
                })
            })
            .map(|(_, u)| self.unit_row(u))
            .collect()
    }

    /// The current recommendations of the incidents `scope` may see, by incident and rank.
    fn dispatch(&self, scope: &Scope) -> Vec<DispatchRow> {
        self.dispatch
            .iter()
            .filter(|((id, _), _)| self.incidents.get(id).is_some_and(|i| self.sees(scope, i)))
            .filter_map(|(_, r)| dispatch_row(r))
            .collect()
    }

    /// The events that confirm `unit` for `incident` at event time `ts` (see the module docs
    /// for the checks): the incident's and the unit's payloads.
    fn confirmation(
        &self,
        incident: &str,
        unit: &str,
        note: Option<String>,
        ts: Ms,
    ) -> Result<(Value, Value), ApiError> {
        let inc = self
            .incidents
            .get(&incident.to_string())
            .filter(|i| i.is_open())
            .ok_or_else(|| ApiError::NotFound(format!("no open incident {incident:?}")))?;
        if !inc.is_unassigned() {
            let who = inc.unit.as_deref().map(|u| format!(" ({u})")).unwrap_or_default();
            return Err(ApiError::Conflict(format!(
                "incident {incident} is already {}{who}",
                inc.status.as_str()
            )));
        }
        let u = self
            .units
            .get(&unit.to_string())
            .ok_or_else(|| ApiError::BadRequest(format!("unknown unit {unit:?}")))?;
        let suited = self.cfg.emergency.dispatch.unit_type(inc.kind);
        if u.kind != suited {
            return Err(ApiError::BadRequest(format!(
                "unit {unit} is a {}; a {} incident is sent a {}",
                u.kind.as_str(),
                inc.kind.as_str(),
                suited.as_str()
            )));
        }
        // A unit already sent to this incident passes: the retry of a confirmation whose
        // incident event was refused after its unit report went out.
        let sent_here = u.incident.as_deref() == Some(incident);
        if !sent_here && !self.cfg.emergency.dispatch.eligible.contains(&u.status) {
            let on = u.incident.as_deref().map(|i| format!(" (incident {i})")).unwrap_or_default();
            return Err(ApiError::Conflict(format!(
                "unit {unit} is {}{on}, not available",
                u.status.as_str()
            )));
        }
        let mut ev = Map::new();
        ev.insert("incident".into(), inc.id.clone().into());
        ev.insert("ts".into(), ts.into());
        ev.insert("status".into(), "dispatched".into());
        ev.insert("type".into(), inc.kind.as_str().into());
        ev.insert("severity".into(), inc.severity.into());
        if let Some(p) = inc.pos {
            ev.insert("lon".into(), p.lon().into());
            ev.insert("lat".into(), p.lat().into());
        }
        ev.insert("unit".into(), u.id.clone().into());
        if let Some(n) = note.filter(|n| !n.is_empty()) {
            ev.insert("note".into(), n.into());
        }
        let mut rep = Map::new();
        rep.insert("unit".into(), u.id.clone().into());
        rep.insert("ts".into(), ts.into());
        rep.insert("type".into(), u.kind.as_str().into());
        rep.insert("status".into(), "dispatched".into());
        rep.insert("incident".into(), inc.id.clone().into());
        if let Some(p) = u.pos {
            rep.insert("lon".into(), p.lon().into());
            rep.insert("lat".into(), p.lat().into());
        }
        if let Some(s) = u.station {
            rep.insert("station".into(), self.city.stations[s as usize].id.clone().into());
        }
        Ok((Value::Object(ev), Value::Object(rep)))
    }

    /// City-wide sums of the districts' latest indicators: (open incidents, unassigned,
    /// available units).
    pub(super) fn totals(&self) -> (i64, i64, i64) {
        self.districts.values().fold((0, 0, 0), |(o, n, a), (s, _)| {
            (o + s.counts.open, n + s.counts.unassigned, a + s.counts.available)
        })
    }
}

fn dispatch_row(r: &Recommendation) -> Option<DispatchRow> {
    Some(DispatchRow {
        incident: r.incident.clone(),
        rank: r.rank,
        unit: r.unit.clone()?,
        unit_type: r.unit_type.map_or("", |t| t.as_str()),
        eta_s: r.eta_ms as f64 / 1e3,
        distance_m: r.distance_dm as f64 / 10.0,
    })
}

/// A row of `/api/emergency/incidents`: an incident's current state.
#[derive(Debug, Serialize, ToSchema)]
pub struct IncidentRow {
    /// Incident id.
    pub incident: String,
    /// `fire`, `medical`, `police` or `traffic`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Severity, 1 = highest … 5.
    pub severity: u8,
    /// `reported`, `dispatched`, `en_route`, `on_scene`, `cleared` or `cancelled`.
    pub status: &'static str,
    /// Longitude (absent when no position was reported).
    pub lon: Option<f64>,
    /// Latitude.
    pub lat: Option<f64>,
    /// District holding it.
    pub district: Option<String>,
    /// Grid cell holding it.
    pub cell: Option<String>,
    /// The unit assigned (latest reported).
    pub unit: Option<String>,
    /// Reported, epoch ms.
    pub reported_ts: Ms,
    /// First dispatch, epoch ms.
    pub dispatched_ts: Option<Ms>,
    /// First unit en route, epoch ms.
    pub en_route_ts: Option<Ms>,
    /// First unit on scene, epoch ms.
    pub on_scene_ts: Option<Ms>,
    /// Cleared or cancelled, epoch ms.
    pub closed_ts: Option<Ms>,
}

/// A row of `/api/emergency/units`: a unit's latest report.
#[derive(Debug, Serialize, ToSchema)]
pub struct UnitRow {
    /// Unit id.
    pub unit: String,
    /// `fire_engine`, `ambulance` or `police`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `available`, `dispatched`, `en_route`, `on_scene`, `returning` or `out_of_service`.
    pub status: &'static str,
    /// Longitude: its reported position, else its station's.
    pub lon: Option<f64>,
    /// Latitude.
    pub lat: Option<f64>,
    /// Home station.
    pub station: Option<String>,
    /// District it is in.
    pub district: Option<String>,
    /// The incident it is assigned to.
    pub incident: Option<String>,
    /// Event time of the report, epoch ms.
    pub ts: Ms,
}

/// A row of `/api/emergency/dispatch`: a current recommendation (`emergency_dispatch`).
#[derive(Debug, Serialize, ToSchema)]
pub struct DispatchRow {
    /// Incident id.
    pub incident: String,
    /// Rank, 1 = best.
    pub rank: u32,
    /// The unit recommended.
    pub unit: String,
    /// Its type.
    pub unit_type: &'static str,
    /// Estimated time of arrival, s.
    pub eta_s: f64,
    /// Route length, m.
    pub distance_m: f64,
}

/// A district's emergency indicators on `/ws/live` (`emergency_district`).
#[derive(Debug, Serialize, ToSchema)]
#[allow(missing_docs)]
pub struct EmergencyDistrictRow {
    pub district: String,
    pub open_incidents: i64,
    pub open_fire: i64,
    pub open_medical: i64,
    pub open_police: i64,
    pub open_traffic: i64,
    pub open_sev1_2: i64,
    pub unassigned: i64,
    pub available_units: i64,
    pub available_fire_engine: i64,
    pub available_ambulance: i64,
    pub available_police: i64,
    pub call_p50_s: Option<f64>,
    pub call_p90_s: Option<f64>,
    pub turnout_p50_s: Option<f64>,
    pub turnout_p90_s: Option<f64>,
    pub travel_p50_s: Option<f64>,
    pub travel_p90_s: Option<f64>,
    pub response_p50_s: Option<f64>,
    pub response_p90_s: Option<f64>,
}

/// The body of `POST /api/emergency/dispatch/{incident}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct DispatchBody {
    /// The unit to send.
    pub unit: Option<String>,
    /// An optional note, carried on the incident's event.
    pub note: Option<String>,
}

/// One event published by a confirmation.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublishedEvent {
    /// Its topic.
    pub topic: String,
    /// Its payload (CONTRACT §2).
    #[schema(value_type = Object)]
    pub payload: Value,
}

/// The answer of `POST /api/emergency/dispatch/{incident}`: what was queued for the dataflow.
#[derive(Debug, Serialize, ToSchema)]
pub struct DispatchConfirmed {
    /// Always true: both events are queued.
    pub queued: bool,
    /// The incident's `dispatched` event.
    pub incident: PublishedEvent,
    /// The unit's `dispatched` report.
    pub unit: PublishedEvent,
}

/// The emergency routes, with their OpenAPI entries.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(incidents))
        .routes(routes!(units))
        .routes(routes!(dispatch))
        .routes(routes!(confirm))
}

/// The caller's scope for the reads: ops everything, an officer their cells, ingest 403.
fn read_scope(auth: &Authed) -> Result<Scope, ApiError> {
    Ok(auth.require(&[crate::auth::Role::Officer])?.scope())
}

/// Current incidents (an officer: those in their cells), by id; a closed one stays for
/// `emergency.closed_grace_s`.
#[utoipa::path(get, path = "/api/emergency/incidents", security(("bearer" = [])),
    responses((status = 200, body = [IncidentRow]), (status = 401), (status = 403)))]
async fn incidents(auth: Authed, State(s): State<AppState>) -> Result<Json<Vec<IncidentRow>>, ApiError> {
    let scope = read_scope(&auth)?;
    Ok(Json(s.read_board().emergency.incidents(&scope)))
}

/// Units' latest reports (an officer: the units working on incidents in their cells), by id.
#[utoipa::path(get, path = "/api/emergency/units", security(("bearer" = [])),
    responses((status = 200, body = [UnitRow]), (status = 401), (status = 403)))]
async fn units(auth: Authed, State(s): State<AppState>) -> Result<Json<Vec<UnitRow>>, ApiError> {
    let scope = read_scope(&auth)?;
    Ok(Json(s.read_board().emergency.units(&scope)))
}

/// Current recommendations for the open, unassigned incidents (an officer: those in their
/// cells), by incident and rank.
#[utoipa::path(get, path = "/api/emergency/dispatch", security(("bearer" = [])),
    responses((status = 200, body = [DispatchRow]), (status = 401), (status = 403)))]
async fn dispatch(auth: Authed, State(s): State<AppState>) -> Result<Json<Vec<DispatchRow>>, ApiError> {
    let scope = read_scope(&auth)?;
    Ok(Json(s.read_board().emergency.dispatch(&scope)))
}

/// Confirms a dispatch (ops): publishes the unit's and the incident's `dispatched` events
/// through `POST /api/ingest`, stamped with the city clock.
#[utoipa::path(post, path = "/api/emergency/dispatch/{incident}", security(("bearer" = [])),
    params(("incident" = String, Path, description = "The incident id")), request_body = DispatchBody,
    responses((status = 202, body = DispatchConfirmed, description = "Both events queued for the dataflow"),
        (status = 400, description = "No unit, an unknown unit, or one of an unsuited type"),
        (status = 401), (status = 403),
        (status = 404, description = "No such open incident"),
        (status = 409, description = "The incident already has a unit, or the unit is not available"),
        (status = 503, description = "The dataflow is busy or stopping, or an output is failing: retry")))]
async fn confirm(
    auth: Authed,
    State(s): State<AppState>,
    Path(incident): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    auth.require(&[])?;
    let body: DispatchBody =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("body: {e}")))?;
    let unit = body
        .unit
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ApiError::BadRequest("`unit` is required".into()))?;
    let (ev, rep) = {
        let board = s.read_board();
        let clock = board.kpis(0).clock;
        board.emergency.confirmation(&incident, &unit, body.note, clock)?
    };
    let prefix = s.topic_prefix.as_str();
    let unit_event = PublishedEvent { topic: format!("{prefix}emergency/unit/{unit}"), payload: rep };
    let incident_event =
        PublishedEvent { topic: format!("{prefix}emergency/incident/{incident}"), payload: ev };
    for e in [&unit_event, &incident_event] {
        let bytes = serde_json::to_vec(&e.payload).map_err(|e| ApiError::Internal(e.to_string()))?;
        super::ingest::publish(&s, e.topic.clone(), bytes.into()).await?;
    }
    let answer = DispatchConfirmed { queued: true, incident: incident_event, unit: unit_event };
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use citybrain_dataflows::event::{IncidentStatus, IncidentType, UnitStatus, UnitType};

    const CITY: &str = r#"{"type":"FeatureCollection","features":[
      {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[2,0],[2,1],[0,1],[0,0]]]},"properties":{"kind":"district","id":"d1","name":"One"}},
      {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,1],[0,0]]]},"properties":{"kind":"cell","id":"c1","district":"d1","officers":["o1"]}}
    ]}"#;

    fn incident(id: &str, status: IncidentStatus, unit: Option<&str>) -> Incident {
        Incident {
            id: id.into(),
            kind: IncidentType::Medical,
            severity: 1,
            status,
            pos: None,
            district: Some(0),
            cell: Some(0),
            reported: 1000,
            dispatched: unit.map(|_| 2000),
            en_route: None,
            on_scene: None,
            closed: None,
            unit: unit.map(str::to_string),
        }
    }

    fn rec(incident: &str, rank: u32, unit: Option<&str>) -> (Out, isize) {
        let r = Recommendation {
            incident: incident.into(),
            rank,
            unit: unit.map(str::to_string),
            unit_type: unit.map(|_| UnitType::Ambulance),
            eta_ms: 60_000,
            distance_dm: 10_000,
        };
        (Out::Emergency(EmOut::Dispatch(r.into())), 1)
    }

    fn inc(i: &Incident, diff: isize) -> (Out, isize) {
        (Out::Emergency(EmOut::Incident(i.clone().into())), diff)
    }

    fn keys(msg: &Map<String, Value>, key: &str) -> Vec<String> {
        msg[key].as_array().unwrap().iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn versions_replace_withdrawals_remove_and_updates_say_what_went() {
        let city = Arc::new(CityModel::from_geojson_str(CITY).unwrap());
        let mut b = EmergencyBoard::new(city, Arc::new(Config::default()));
        let open = incident("i1", IncidentStatus::Reported, None);
        let unit = Unit {
            id: "a1".into(),
            kind: UnitType::Ambulance,
            status: UnitStatus::Available,
            pos: None,
            station: None,
            district: Some(0),
            home: None,
            incident: None,
            ts: 1000,
        };
        let u = (Out::Emergency(EmOut::Unit(unit.into())), 1);
        assert!(b.apply(1, &[inc(&open, 1), u.clone(), rec("i1", 1, Some("a1")), rec("i1", 2, Some("a2"))]));
        assert_eq!(b.dispatch(&Scope::All).len(), 2);
        // Nothing new: no change. A withdrawn rank goes, and the update says so.
        assert!(!b.apply(2, &[u]));
        assert!(b.apply(3, &[rec("i1", 2, None)]));
        let mut msg = Map::new();
        b.live(Some(2), &mut msg);
        assert_eq!(keys(&msg, "emergency_dispatch_removed"), [r#"{"incident":"i1","rank":2}"#]);
        assert!(keys(&msg, "emergency_incidents").is_empty());
        // Dispatched (−old +new in one batch, the retraction listed last): the incident stays,
        // its recommendations go even without their withdrawal records.
        let sent = incident("i1", IncidentStatus::Dispatched, Some("a1"));
        assert!(b.apply(4, &[inc(&sent, 1), inc(&open, -1)]));
        let rows = b.incidents(&Scope::All);
        assert_eq!((rows.len(), rows[0].status, rows[0].unit.as_deref()), (1, "dispatched", Some("a1")));
        assert!(b.dispatch(&Scope::All).is_empty());
        assert!(matches!(b.confirmation("i1", "a1", None, 5), Err(ApiError::Conflict(_))));
        // Retracted alone: gone, and said to be.
        assert!(b.apply(5, &[inc(&sent, -1)]));
        assert!(b.incidents(&Scope::All).is_empty());
        let mut msg = Map::new();
        b.live(Some(4), &mut msg);
        assert_eq!(keys(&msg, "emergency_incidents_removed"), [r#""i1""#]);
        let mut snapshot = Map::new();
        b.live(None, &mut snapshot);
        assert!(keys(&snapshot, "emergency_incidents_removed").is_empty());
        assert!(matches!(b.confirmation("i1", "a1", None, 5), Err(ApiError::NotFound(_))));
    }
}
