//! Traffic: the read model of the traffic dataflow's outputs and its routes,
//! `GET /api/traffic/segments` and `GET /api/traffic/districts` (ops only).
//!
//! [`TrafficBoard`] keeps the latest 5-minute window of every segment (`Out::Segment`) and
//! district (`Out::District`): a newer window replaces an older one, an older one arriving late
//! is ignored, retractions are ignored (the next window replaces the row). Each row remembers
//! the board version at which it last changed — for a segment, at which its congestion level
//! changed — so `/ws/live` sends a district when its window moves on and a segment only when its
//! level does.

use super::board::{HistoryRow, ReadModel};
use super::{ApiError, AppState, Authed};
use axum::Json;
use axum::extract::State;
use citybrain_dataflows::city::Idx;
use citybrain_dataflows::pipeline::Out;
use citybrain_dataflows::traffic::{DistSum, FlowSum, Win, level, tpi_level};
use citybrain_dataflows::{CityModel, Config, Ms};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The latest traffic indicators: the traffic part of the [`Board`](super::Board).
pub struct TrafficBoard {
    city: Arc<CityModel>,
    cfg: Arc<Config>,
    segments: HashMap<Idx, SegmentEntry>,
    /// By district: window start, sums, and the board version of the last change.
    districts: HashMap<Idx, (Ms, DistSum, u64)>,
    /// The whole city (`traffic_city`): window start, sums, the board version of the last change.
    city_total: Option<(Ms, DistSum, u64)>,
}

struct SegmentEntry {
    start: Ms,
    sum: FlowSum,
    level: u8,
    /// The board version at which `level` last changed.
    level_version: u64,
}

impl ReadModel for TrafficBoard {
    fn apply(&mut self, v: u64, records: &[(Out, isize)]) -> bool {
        let mut changed = false;
        for (out, diff) in records {
            match out {
                Out::Segment(w, sum) if *diff > 0 => {
                    let seg = &self.city.segments[w.seg as usize];
                    let lvl = level(sum, seg.road_class, &self.cfg.traffic);
                    let e = self.segments.entry(w.seg).or_insert(SegmentEntry {
                        start: w.start,
                        sum: *sum,
                        level: 0,
                        level_version: v,
                    });
                    if w.start >= e.start {
                        if e.level != lvl {
                            e.level = lvl;
                            e.level_version = v;
                        }
                        (e.start, e.sum) = (w.start, *sum);
                        changed = true;
                    }
                }
                Out::District(w, sum) if *diff > 0 => {
                    let e = self.districts.entry(w.district).or_insert((w.start, *sum, v));
                    if w.start >= e.0 {
                        *e = (w.start, *sum, v);
                        changed = true;
                    }
                }
                Out::City(w, sum)
                    if *diff > 0 && self.city_total.is_none_or(|(start, _, _)| w.start >= start) =>
                {
                    self.city_total = Some((w.start, *sum, v));
                    changed = true;
                }
                _ => {}
            }
        }
        changed
    }

    fn live(&self, since: Option<u64>, msg: &mut Map<String, Value>) {
        msg.insert("districts".into(), json!(self.districts(since)));
        msg.insert("segments".into(), json!(self.segments(since)));
        let city = self.city_total.filter(|(_, _, at)| since.is_none_or(|s| *at > s));
        msg.insert("city".into(), json!(city.map(|(start, sum, _)| self.city_row(start, &sum))));
    }

    fn history(&self, version: u64, out: &mut Vec<HistoryRow>) {
        for (i, (start, sum, at)) in &self.districts {
            if *at == version {
                let row = self.district_row(*i, *start, sum);
                out.push(("traffic_district", row.district.clone(), json!(row)));
            }
        }
        if let Some((start, sum, at)) = self.city_total
            && at == version
        {
            out.push(("traffic_city", "city".into(), json!(self.city_row(start, &sum))));
        }
    }
}

impl TrafficBoard {
    /// An empty read model for `city`, with the congestion thresholds of `cfg`.
    pub fn new(city: Arc<CityModel>, cfg: Arc<Config>) -> TrafficBoard {
        TrafficBoard { city, cfg, segments: HashMap::new(), districts: HashMap::new(), city_total: None }
    }

    /// The row of `traffic_city`.
    fn city_row(&self, start: Ms, sum: &DistSum) -> AreaWindow {
        let tpi = sum.tpi(&self.cfg.traffic);
        AreaWindow {
            window: "5m",
            ts: start,
            tpi,
            level: tpi_level(tpi),
            speed_kmh: sum.speed_kmh(),
            congested_km: sum.congested_km(),
        }
    }

    /// The city's latest traffic index and level (`traffic_city`), if a window closed yet.
    pub(super) fn city_index(&self) -> Option<(f64, u8)> {
        self.city_total.map(|(_, sum, _)| {
            let tpi = sum.tpi(&self.cfg.traffic);
            (tpi, tpi_level(tpi))
        })
    }

    fn segment_row(&self, i: Idx, e: &SegmentEntry) -> SegmentRow {
        let seg = &self.city.segments[i as usize];
        SegmentRow {
            segment: seg.id.clone(),
            district: self.city.districts[seg.district as usize].id.clone(),
            road_class: seg.road_class.as_str(),
            window: "5m",
            ts: e.start,
            count: e.sum.count,
            flow_vph: e.sum.flow_vph(Win::M5),
            occupancy: e.sum.occupancy(),
            speed_kmh: e.sum.speed_kmh(),
            tti: e.sum.speed_kmh().filter(|v| *v > 0.0).map(|v| seg.speed_limit_kmh / v),
            level: e.level,
        }
    }

    fn district_row(&self, i: Idx, start: Ms, sum: &DistSum) -> DistrictRow {
        DistrictRow {
            district: self.city.districts[i as usize].id.clone(),
            name: self.city.districts[i as usize].name.clone(),
            window: self.city_row(start, sum),
        }
    }

    /// Segment rows (all, or those whose level changed after version `since`), by segment.
    fn segments(&self, since: Option<u64>) -> Vec<SegmentRow> {
        let mut ids: Vec<Idx> = self
            .segments
            .iter()
            .filter(|(_, e)| since.is_none_or(|v| e.level_version > v))
            .map(|(i, _)| *i)
            .collect();
        ids.sort_unstable();
        ids.into_iter().map(|i| self.segment_row(i, &self.segments[&i])).collect()
    }

    /// District rows (all, or those updated after version `since`), by district.
    fn districts(&self, since: Option<u64>) -> Vec<DistrictRow> {
        let mut ids: Vec<Idx> =
            self.districts.iter().filter(|(_, e)| since.is_none_or(|v| e.2 > v)).map(|(i, _)| *i).collect();
        ids.sort_unstable();
        ids.into_iter()
            .map(|i| {
                let (start, sum, _) = &self.districts[&i];
                self.district_row(i, *start, sum)
            })
            .collect()
    }

    /// Congested road length across the city, km (the sum over the districts' latest windows).
    pub(super) fn congested_km(&self) -> f64 {
        self.districts.values().map(|(_, s, _)| s.congested_km()).sum()
    }

    /// The mean of the districts' latest traffic performance indices (0 before any district).
    pub(super) fn mean_tpi(&self) -> f64 {
        let n = self.districts.len().max(1) as f64;
        self.districts.values().map(|(_, s, _)| s.tpi(&self.cfg.traffic)).sum::<f64>() / n
    }
}

/// A row of `/api/traffic/segments`: the latest 5-minute window of a segment (`traffic_segment`).
#[derive(Debug, Serialize, ToSchema)]
pub struct SegmentRow {
    /// Segment id.
    pub segment: String,
    /// District id.
    pub district: String,
    /// Road class.
    pub road_class: &'static str,
    /// Window length.
    pub window: &'static str,
    /// Window start, epoch ms.
    pub ts: Ms,
    /// Vehicles counted.
    pub count: i64,
    /// Flow, vehicles per hour.
    pub flow_vph: f64,
    /// Occupancy, 0..1.
    pub occupancy: Option<f64>,
    /// Mean speed, km/h (absent without vehicles).
    pub speed_kmh: Option<f64>,
    /// Travel time index: speed limit / speed.
    pub tti: Option<f64>,
    /// Congestion level 1 (畅通) … 5 (严重拥堵).
    pub level: u8,
}

/// A row of `/api/traffic/districts`: the latest 5-minute window of a district.
#[derive(Debug, Serialize, ToSchema)]
pub struct DistrictRow {
    /// District id.
    pub district: String,
    /// District name.
    pub name: String,
    /// Its latest window's figures.
    #[serde(flatten)]
    pub window: AreaWindow,
}

/// An area's latest 5-minute traffic window: a district's (in [`DistrictRow`]) or the whole
/// city's (`traffic_city`: on `/ws/live` as `city`, and in `/api/history`).
#[derive(Debug, Serialize, ToSchema)]
pub struct AreaWindow {
    /// Always `5m`.
    pub window: &'static str,
    /// Window start, epoch ms.
    pub ts: Ms,
    /// Traffic performance index 0–10 over the area's observed road length.
    pub tpi: f64,
    /// Level 1–5 of the index.
    pub level: u8,
    /// Space-mean speed, km/h.
    pub speed_kmh: Option<f64>,
    /// Congested road length, km.
    pub congested_km: f64,
}

/// The traffic routes, with their OpenAPI entries.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(segments)).routes(routes!(districts))
}

/// The latest 5-minute window of every segment.
#[utoipa::path(get, path = "/api/traffic/segments", security(("bearer" = [])),
    responses((status = 200, body = [SegmentRow]), (status = 401), (status = 403)))]
async fn segments(auth: Authed, State(s): State<AppState>) -> Result<Json<Vec<SegmentRow>>, ApiError> {
    auth.require(&[])?;
    Ok(Json(s.read_board().traffic.segments(None)))
}

/// The latest 5-minute window of every district (traffic performance index).
#[utoipa::path(get, path = "/api/traffic/districts", security(("bearer" = [])),
    responses((status = 200, body = [DistrictRow]), (status = 401), (status = 403)))]
async fn districts(auth: Authed, State(s): State<AppState>) -> Result<Json<Vec<DistrictRow>>, ApiError> {
    auth.require(&[])?;
    Ok(Json(s.read_board().traffic.districts(None)))
}
