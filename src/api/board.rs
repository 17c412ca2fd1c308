//! The board: the latest value of every indicator the API serves, one read model per domain,
//! under a single version number so `/ws/live` can send only what changed.
//!
//! The service's output consumer calls [`Board::apply`] with each completed event time's output;
//! the board hands the batch to every domain's [`ReadModel`] and takes a new version when any of
//! them changed. A read model stamps each row it changes with that version, so
//! [`ReadModel::live`] can give the rows changed since the version a `/ws/live` client last got.
//! A domain's routes read its own model through the board's field for it (`board.traffic`).

use super::emergency::EmergencyBoard;
use super::grid::GridBoard;
use super::health::HealthBoard;
use super::traffic::TrafficBoard;
use citybrain_dataflows::pipeline::Out;
use citybrain_dataflows::{CityModel, Config, Ms};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, VecDeque};
use std::ops::RangeBounds;
use std::sync::Arc;
use utoipa::ToSchema;

/// A domain's read model: folds the dataflow's output into the latest rows its routes serve.
pub trait ReadModel: Send + Sync {
    /// Folds one completed event time's output (consolidated) into the model, taking only this
    /// domain's records (`Out` variants) and ignoring the rest. `version` is the board version
    /// this batch gets if anything changes: changed rows are stamped with it. Returns whether
    /// anything changed.
    fn apply(&mut self, version: u64, records: &[(Out, isize)]) -> bool;

    /// Adds this domain's part to a `/ws/live` message, one key a list: the rows changed after
    /// board version `since`, or all rows when `since` is `None` (the snapshot).
    fn live(&self, since: Option<u64>, msg: &mut Map<String, Value>);

    /// Adds the rows of this domain's charted measurements (district and city indicators) that
    /// changed at board version `version`, for `/api/history`. Default: none.
    fn history(&self, _version: u64, _out: &mut Vec<HistoryRow>) {}
}

/// A row for `/api/history`: its measurement, its series key (the district, or `city`) and the
/// row as the reads serve it (tags and fields, with `ts` when the row has its own time).
pub type HistoryRow = (&'static str, String, Value);

/// The latest indicators, with a version per change so `/ws/live` can send only what changed.
pub struct Board {
    /// Traffic: segments and districts.
    pub(super) traffic: TrafficBoard,
    /// Emergency: incidents, units, recommendations, districts.
    pub(super) emergency: EmergencyBoard,
    /// Grid: cases, sensors, cells, districts.
    pub(super) grid: GridBoard,
    /// Health: current contacts (pseudonyms only; `/ws/live` gets their number only).
    pub(super) health: HealthBoard,
    /// The recent history of the district and city indicators (`/api/history`).
    pub(super) history: History,
    version: u64,
    clock: Ms,
    /// The city's time zone (`time.city_tz`), for `/api/session`.
    city_tz: String,
}

impl Board {
    /// An empty board for `city`.
    pub fn new(city: Arc<CityModel>, cfg: Arc<Config>) -> Board {
        let city_tz = cfg.time.city_tz.clone();
        Board {
            traffic: TrafficBoard::new(city.clone(), cfg.clone()),
            emergency: EmergencyBoard::new(city.clone(), cfg),
            grid: GridBoard::new(city.clone()),
            health: HealthBoard::new(city),
            history: History::new(HISTORY_MS, HISTORY_POINTS),
            version: 0,
            clock: 0,
            city_tz,
        }
    }

    /// Every domain's read model, in the order their parts appear in `/ws/live` messages.
    fn models(&self) -> [&dyn ReadModel; 4] {
        [&self.traffic, &self.emergency, &self.grid, &self.health]
    }

    /// [`Board::models`], to update.
    fn models_mut(&mut self) -> [&mut dyn ReadModel; 4] {
        [&mut self.traffic, &mut self.emergency, &mut self.grid, &mut self.health]
    }

    /// Applies one completed event time's output (consolidated): newer windows replace older
    /// ones. Returns the new version.
    pub fn apply(&mut self, t: Ms, records: &[(Out, isize)]) -> u64 {
        self.clock = self.clock.max(t);
        let v = self.version + 1;
        let mut changed = false;
        for model in self.models_mut() {
            changed |= model.apply(v, records);
        }
        if changed {
            self.version = v;
            let mut rows = Vec::new();
            for model in self.models() {
                model.history(v, &mut rows);
            }
            self.history.add(self.clock, rows);
        }
        self.version
    }

    /// The latest event time applied, epoch ms (0 before any).
    pub fn clock(&self) -> Ms {
        self.clock
    }

    /// The city's time zone (IANA name).
    pub fn city_tz(&self) -> &str {
        &self.city_tz
    }

    /// The current version: bumped by every [`Board::apply`] that changed something.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Every domain's part of a `/ws/live` message (see [`ReadModel::live`]).
    pub(super) fn live(&self, since: Option<u64>, msg: &mut Map<String, Value>) {
        for model in self.models() {
            model.live(since, msg);
        }
    }

    /// City-wide figures for dashboards.
    pub(super) fn kpis(&self, active_alerts: u64) -> Kpis {
        let (open_incidents, unassigned_incidents, available_units) = self.emergency.totals();
        let (open_cases, overdue_cases) = self.grid.totals();
        Kpis {
            clock: self.clock,
            active_alerts,
            congested_km: self.traffic.congested_km(),
            mean_tpi: self.traffic.mean_tpi(),
            city_tpi: self.traffic.city_index().map(|(tpi, _)| tpi),
            city_level: self.traffic.city_index().map(|(_, level)| level),
            open_incidents,
            unassigned_incidents,
            available_units,
            open_cases,
            overdue_cases,
            contacts: self.health.count(),
        }
    }
}

/// City-wide figures of `/ws/live`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Kpis {
    /// The latest event time the indicators reflect, epoch ms.
    pub clock: Ms,
    /// Active alerts.
    pub active_alerts: u64,
    /// Congested road length across the city, km.
    pub congested_km: f64,
    /// Mean district traffic performance index.
    pub mean_tpi: f64,
    /// The city's traffic performance index (`traffic_city`, latest 5-minute window), once one closed.
    pub city_tpi: Option<f64>,
    /// The level 1–5 of `city_tpi`.
    pub city_level: Option<u8>,
    /// Open emergency incidents across the city (the districts' `open_incidents`).
    pub open_incidents: i64,
    /// Open incidents no unit was dispatched to (the districts' `unassigned`).
    pub unassigned_incidents: i64,
    /// Available emergency units (the districts' `available_units`).
    pub available_units: i64,
    /// Open grid cases across the city (the cells' `open_cases`).
    pub open_cases: i64,
    /// Overdue grid cases across the city (the cells' `overdue_cases`).
    pub overdue_cases: i64,
    /// Current contacts of active public-health cases (a count; nothing personal).
    pub contacts: i64,
}

/// How long `/api/history` keeps a point: 6 hours of event time behind the clock.
pub const HISTORY_MS: Ms = 6 * 3_600_000;

/// At most this many points a series (the newest), whatever their times.
pub const HISTORY_POINTS: usize = 1_000;

/// The recent history of the charted indicators: per (measurement, key) series, points in time
/// order, each at most [`HISTORY_MS`] behind the city clock and at most [`HISTORY_POINTS`] a
/// series, so memory stays bounded whatever the input. A row at the time of the series' last
/// point replaces it (a window corrected before the next one closed).
pub(super) struct History {
    keep_ms: Ms,
    max_points: usize,
    series: BTreeMap<(&'static str, String), VecDeque<(Ms, Value)>>,
}

impl History {
    fn new(keep_ms: Ms, max_points: usize) -> History {
        History { keep_ms, max_points, series: BTreeMap::new() }
    }

    /// Adds the rows changed at clock `now`; a row without its own `ts` is stamped with `now`.
    fn add(&mut self, now: Ms, rows: Vec<HistoryRow>) {
        for (measurement, key, mut row) in rows {
            let ts = match row.get("ts").and_then(Value::as_u64) {
                Some(ts) => ts,
                None => {
                    if let Some(obj) = row.as_object_mut() {
                        obj.insert("ts".into(), now.into());
                    }
                    now
                }
            };
            let points = self.series.entry((measurement, key)).or_default();
            match points.back_mut() {
                Some(last) if last.0 == ts => *last = (ts, row),
                Some(last) if last.0 > ts => {} // an older window arriving late: charts move on
                _ => points.push_back((ts, row)),
            }
            while points.len() > self.max_points {
                points.pop_front();
            }
        }
        let horizon = now.saturating_sub(self.keep_ms);
        self.series.retain(|_, points| {
            while points.front().is_some_and(|(ts, _)| *ts < horizon) {
                points.pop_front();
            }
            !points.is_empty()
        });
    }

    /// Whether `measurement` is one the history keeps.
    pub(super) fn knows(measurement: &str) -> bool {
        HISTORY_MEASUREMENTS.contains(&measurement)
    }

    /// The points of `measurement` (of series `key`, or every series) at or after `since`, in
    /// time order (series by key at equal times).
    pub(super) fn query(&self, measurement: &str, key: Option<&str>, since: Ms) -> Vec<Value> {
        let mut points: Vec<(Ms, &str, &Value)> = self
            .series
            .iter()
            .filter(|((m, k), _)| *m == measurement && key.is_none_or(|want| want == k))
            .flat_map(|((_, k), pts)| {
                pts.iter().filter(|(ts, _)| *ts >= since).map(move |(ts, v)| (*ts, k.as_str(), v))
            })
            .collect();
        points.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        points.into_iter().map(|(_, _, v)| v.clone()).collect()
    }
}

/// The measurements `/api/history` serves.
pub const HISTORY_MEASUREMENTS: [&str; 4] =
    ["traffic_city", "traffic_district", "emergency_district", "grid_district"];

/// How many removals (of each table: incidents, units, ranks, cases, …) are remembered for `/ws/live` updates.
pub const TOMBSTONES: usize = 4096;

/// Rows by key, each with the board version of its last change; a removed row stays as a
/// tombstone (the latest [`TOMBSTONES`] removals) so an update can say it went.
pub(super) struct Table<K, T> {
    rows: BTreeMap<K, (Option<T>, u64)>,
    removals: VecDeque<(K, u64)>,
}

impl<K: Ord + Clone, T: PartialEq> Table<K, T> {
    pub(super) fn new() -> Self {
        Table { rows: BTreeMap::new(), removals: VecDeque::new() }
    }

    pub(super) fn get(&self, k: &K) -> Option<&T> {
        self.rows.get(k).and_then(|(v, _)| v.as_ref())
    }

    /// The present rows, by key.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&K, &T)> {
        self.rows.iter().filter_map(|(k, (v, _))| v.as_ref().map(|v| (k, v)))
    }

    /// Sets a row; whether it changed.
    pub(super) fn set(&mut self, k: K, v: T, version: u64) -> bool {
        match self.rows.get_mut(&k) {
            Some((Some(old), _)) if *old == v => false,
            Some(e) => {
                *e = (Some(v), version);
                true
            }
            None => {
                self.rows.insert(k, (Some(v), version));
                true
            }
        }
    }

    /// Removes a row, leaving a tombstone; whether it was there.
    pub(super) fn remove(&mut self, k: &K, version: u64) -> bool {
        match self.rows.get_mut(k) {
            Some(e) if e.0.is_some() => *e = (None, version),
            _ => return false,
        }
        self.removals.push_back((k.clone(), version));
        while self.removals.len() > TOMBSTONES {
            let Some((old, v)) = self.removals.pop_front() else { break };
            if matches!(self.rows.get(&old), Some((None, at)) if *at == v) {
                self.rows.remove(&old);
            }
        }
        true
    }

    /// The keys of the present rows in `range`.
    pub(super) fn present_in(&self, range: impl RangeBounds<K>) -> Vec<K> {
        self.rows.range(range).filter(|(_, (v, _))| v.is_some()).map(|(k, _)| k.clone()).collect()
    }

    /// The present rows changed after version `since` (all of them for `None`).
    pub(super) fn changed(&self, since: Option<u64>) -> impl Iterator<Item = (&K, &T)> {
        self.rows
            .iter()
            .filter(move |(_, (_, at))| since.is_none_or(|s| *at > s))
            .filter_map(|(k, (v, _))| v.as_ref().map(|v| (k, v)))
    }

    /// The keys removed after version `since` (none for the snapshot, `None`).
    pub(super) fn removed(&self, since: Option<u64>) -> impl Iterator<Item = &K> {
        self.rows
            .iter()
            .filter(move |(_, (v, at))| v.is_none() && since.is_some_and(|s| *at > s))
            .map(|(k, _)| k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use citybrain_dataflows::city::CityError;
    use citybrain_dataflows::traffic::{DistSum, DistWin, FlowSum, SegWin, Win};

    const CITY: &str = r#"{"type":"FeatureCollection","features":[
      {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[2,0],[2,1],[0,1],[0,0]]]},"properties":{"kind":"district","id":"d1","name":"One"}},
      {"type":"Feature","geometry":{"type":"LineString","coordinates":[[0.1,0.5],[0.4,0.5]]},"properties":{"kind":"segment","id":"s1","district":"d1","length_m":300,"speed_limit_kmh":60,"lanes":2,"road_class":"arterial"}},
      {"type":"Feature","geometry":{"type":"LineString","coordinates":[[0.5,0.5],[0.9,0.5]]},"properties":{"kind":"segment","id":"s2","district":"d1","length_m":400,"speed_limit_kmh":50,"lanes":1,"road_class":"branch"}}
    ]}"#;
    const T0: Ms = 1_767_225_600_000;
    const M5: Ms = 300_000;

    /// A segment window of `count` vehicles at `kmh`.
    fn seg(seg: u32, start: Ms, count: i64, kmh: i64) -> (Out, isize) {
        let sum = FlowSum {
            count,
            occ_s: 300,
            occ_ppm_s: 300 * 150_000,
            speed_n: count,
            speed_mk: count * kmh * 1000,
        };
        (Out::Segment(SegWin { win: Win::M5, start, seg }, sum), 1)
    }

    fn dist(start: Ms, congested_mm: i64, travel_us: i64) -> (Out, isize) {
        let sum = DistSum { segments: 2, observed_mm: 700_000, congested_mm, speed_mm: 700_000, travel_us };
        (Out::District(DistWin { win: Win::M5, start, district: 0 }, sum), 1)
    }

    /// The ids under `key` in the `/ws/live` part of rows changed after `since`.
    fn live(b: &Board, since: Option<u64>, key: &str, id: &str) -> Vec<String> {
        let mut msg = Map::new();
        b.live(since, &mut msg);
        msg[key].as_array().into_iter().flatten().filter_map(|r| r[id].as_str()).map(String::from).collect()
    }

    #[test]
    fn a_version_per_change_and_live_parts_carry_only_what_changed() -> Result<(), CityError> {
        let city = Arc::new(CityModel::from_geojson_str(CITY)?);
        let mut b = Board::new(city, Arc::new(Config::default()));
        let retracted = (seg(0, T0 - M5, 1, 1).0, -1);
        let v1 =
            b.apply(T0 + M5, &[seg(0, T0, 30, 45), seg(1, T0, 10, 30), dist(T0, 0, 60_000_000), retracted]);
        assert_eq!(v1, 1);
        assert_eq!(live(&b, None, "segments", "segment"), ["s1", "s2"]);
        assert_eq!(live(&b, None, "districts", "district"), ["d1"]);
        // Both segments and the district move on a window; only s1's level changes.
        let v2 = b.apply(
            T0 + 2 * M5,
            &[seg(0, T0 + M5, 30, 8), seg(1, T0 + M5, 10, 30), dist(T0 + M5, 300_000, 200_000_000)],
        );
        assert_eq!(v2, 2);
        assert_eq!(live(&b, Some(v1), "segments", "segment"), ["s1"]);
        assert_eq!(live(&b, Some(v1), "districts", "district"), ["d1"]);
        // Late, older windows change nothing: no new version, nothing to send; the clock moves.
        assert_eq!(b.apply(T0 + 3 * M5, &[seg(0, T0, 99, 99), dist(T0, 1, 1)]), v2);
        assert!(live(&b, Some(v2), "segments", "segment").is_empty());
        assert!(live(&b, Some(v2), "districts", "district").is_empty());
        let kpis = b.kpis(4);
        assert_eq!((kpis.clock, kpis.active_alerts, b.version()), (T0 + 3 * M5, 4, v2));
        assert!((kpis.congested_km - 0.3).abs() < 1e-9, "{kpis:?}");
        Ok(())
    }

    #[test]
    fn the_history_keeps_six_hours_a_point_a_window_and_the_city_total() -> Result<(), CityError> {
        use citybrain_dataflows::traffic::CityWin;
        let city = Arc::new(CityModel::from_geojson_str(CITY)?);
        let mut b = Board::new(city, Arc::new(Config::default()));
        let city_win = |start: Ms, travel_us: i64| {
            let sum =
                DistSum { segments: 2, observed_mm: 700_000, congested_mm: 0, speed_mm: 700_000, travel_us };
            (Out::City(CityWin { win: Win::M5, start }, sum), 1)
        };
        // 80 windows (6 h 40 min): the oldest 8 fall behind the 6 hours before the clock.
        for k in 0..80 {
            let start = T0 + k * M5;
            b.apply(start + M5, &[dist(start, 0, 60_000_000), city_win(start, 60_000_000)]);
        }
        // A corrected last window replaces its point; a late older one adds none.
        let last = T0 + 79 * M5;
        b.apply(last + M5, &[dist(last, 300_000, 200_000_000)]);
        b.apply(last + M5, &[dist(last - 30 * M5, 1, 1)]);
        let points = b.history.query("traffic_district", Some("d1"), 0);
        assert_eq!(points.len(), 72, "the windows of the 6 hours before the clock");
        assert_eq!(points[0]["ts"].as_u64(), Some(T0 + 8 * M5));
        assert_eq!(points[71]["ts"].as_u64(), Some(last));
        assert!((points[71]["congested_km"].as_f64().unwrap_or(0.0) - 0.3).abs() < 1e-9, "{}", points[71]);
        let city_points = b.history.query("traffic_city", None, last - 2 * M5);
        assert_eq!(city_points.len(), 3);
        assert_eq!((city_points[2]["tpi"].as_f64(), city_points[2]["level"].as_u64()), (Some(0.0), Some(1)));
        assert!(b.history.query("traffic_district", Some("nope"), 0).is_empty());
        // The city's index is a KPI and a /ws/live part.
        let kpis = b.kpis(0);
        assert_eq!((kpis.city_tpi, kpis.city_level), (Some(0.0), Some(1)));
        let mut msg = Map::new();
        b.live(None, &mut msg);
        assert_eq!(msg["city"]["ts"].as_u64(), Some(last));
        Ok(())
    }
}
