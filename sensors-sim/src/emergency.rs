//! The emergency scenario: calls for help, and the fire engines, ambulances and police cars that
//! answer them (`city/emergency/incident/{id}` and `city/emergency/unit/{id}`, CONTRACT §2),
//! simulated alongside the detectors of [`crate::feed`] and merged with them in arrival order
//! ([`Scenario`]). The simulator plays the callers, the dispatcher and the crews.
//!
//! # Units
//! Every station of the city model gets [`EmergencyOptions::units_per_station`] units (default
//! [`DEFAULT_UNITS_PER_STATION`]) of its type — `fire` → `fire_engine`, `ems` → `ambulance`,
//! `police` → `police`; stations of another type get none — named after the station
//! (`station-fire-3` → `unit-fire-3-1`, `unit-fire-3-2`; a station id without the `station-`
//! prefix is used whole). A unit belongs to its station's district. At the start of the run every
//! unit reports `available` at its station.
//!
//! # Calls
//! Each district receives calls as a Poisson process (drawn by thinning) whose rate follows a
//! daily profile in the city time zone (UTC+8): [`EmergencyOptions::call_rate`] calls per
//! district per hour on the daily average (default [`DEFAULT_CALL_RATE`]), from 0.37 × that
//! around 04:00 through 0.84 × at 07:00 to 1.42 × at 14:00, 1.05 × at 21:00 and 0.58 × at midnight
//! (piecewise linear). A call's type is medical 50 %, police 25 %, traffic 15 %, fire 10 %; its
//! severity 1 (highest) … 5 with 5 / 15 / 35 / 30 / 15 %; its place a random point of a random
//! cell of the district: a point of the cell's bounding box (rounded to 1e-6°), kept once the city
//! model places it in that cell. Incident ids are `inc-YYYYMMDD-NNNN`: the local date of the call
//! and its number in the run.
//!
//! A **mass-casualty incident** ([`MassCasualtySpec`], `DISTRICT@MINUTE[+CALLS]`) adds `CALLS`
//! (default [`DEFAULT_MASS_CASUALTY_CALLS`]) medical calls of severity 1–3 (30 / 40 / 30 %) at
//! random times in the five minutes from `MINUTE` (counted from the start of the run), all in one
//! random cell of the district, noted `mass casualty in {district name}`.
//!
//! # Lifecycle
//! * `reported` at the call. A share [`EmergencyOptions::cancel_share`] (default 4 %) of calls is
//!   `cancelled` by the caller 20–90 % of the way through the dispatch delay, and never dispatched.
//! * After the dispatch delay (uniform 20–45 s for severity 1–2, 30–90 s otherwise) the dispatcher
//!   picks the unit: of the units of the incident's type (fire → fire engine, medical →
//!   ambulance, police and traffic → police) that are `available` at their station, those of the
//!   incident's district, and those of another district that keeps at least one other unit of
//!   the type available (a district never gives away its last unit); among them the five
//!   nearest in a straight line, and of those the one with the shortest route time (ties: the
//!   first in station order). The incident and the unit report `dispatched`. With no such unit
//!   the call **waits**, unassigned: whenever a unit comes back `available` the dispatcher, 5–20 s
//!   later, goes through the waiting calls by severity, then report time, and dispatches every one
//!   it now can. (That is what leaves districts without units of a type, and calls unassigned.)
//! * After the turnout time (30–80 s) both report `en_route`; the unit drives its route (below),
//!   reporting its position (`en_route`, with the incident) every 15–30 s; on arrival both report
//!   `on_scene`, at the incident's point.
//! * After 5–30 minutes on scene the incident is `cleared` and the unit `returning`: it drives
//!   back, reporting its position every 15–30 s (`returning`), and is `available` at its station
//!   on arrival.
//!
//! Every event carries the incident's type, severity and point (incident topic), or the unit's
//! type, position and station, and its incident while it has one (unit topic). A unit's reports
//! are at least 1 ms apart (a unit report's identity is its unit and `ts`).
//!
//! # Driving
//! Units drive the road network: the segments of the city model, from the end of a segment onto
//! every segment its `downstream` lists and every segment that starts within 30 m of its end
//! (the turns at a junction: the generated city links its segments only straight on), with the
//! segment geometry of the city's GeoJSON ([`RoadNetwork`]). A point joins the network at the
//! nearest point of the nearest segment (every segment within 20 m of that distance is a
//! candidate, e.g. both directions of a street), driving the straight line to it and from the
//! network to the destination at 20 km/h, off the road. The route is the fastest over the
//! candidates (Dijkstra on segment times `length_m` / speed), or the straight line at 20 km/h
//! when that is faster. Positions are interpolated along the segments' geometry (and along the
//! straight access legs).
//!
//! The speed on a segment is the **simulated traffic speed**: the count-weighted mean speed of
//! the segment's detector readings in the traffic simulator's latest interval ([`Scenario`]
//! passes every batch of readings to [`EmergencySim::observe_traffic`] before it simulates the
//! same interval's emergencies). A segment whose detectors counted nothing drives at its speed
//! limit (an empty road), or at 5 km/h when one reads occupancy ≥ 0.9 (a stopped vehicle on the
//! loop); before any reading, 0.9 × the speed limit. Emergency vehicles never go below 10 km/h
//! (they get past stopped traffic). A moving unit reads the speeds at each position report, for
//! the 15–30 s until the next one.
//!
//! # Delivery, arrival order and determinism
//! Every event is stamped with its simulated time and arrives after a random delivery delay in
//! [0, 2 s), as detector readings do. A share [`EmergencyOptions::out_of_order`] (default 2 %) of
//! incidents has both `en_route` events (the incident's and the unit's) arrive only after the
//! `on_scene` ones, 1–3 s after them: the processor must fold events by event time, not arrival.
//!
//! [`Scenario`] yields one [`Batch`] per traffic interval `[t, t + interval)`: the detector
//! readings of `t` (which arrive within 2 s of `t`), then the emergency events that arrive during
//! the interval, in arrival order (and then, with the grid scenario, [`crate::grid`]'s events
//! arriving during it). Events that would arrive after the end of the run are not written (as a
//! recording that simply stops). The emergency streams of the seed are separate
//! from the traffic streams (callers per district, one per incident, one per unit, the
//! dispatcher, one per mass-casualty incident), so the same seed and options always give the same
//! bytes, and turning the scenario on or off changes no detector reading.

use crate::agenda::{Agenda, check_covers, step};
use crate::feed::{Batch, FeedOptions, Simulator};
use crate::grid::GridSim;
use crate::health::HealthSim;
use anyhow::{Context, Result, bail, ensure};
use citybrain_dataflows::CityModel;
use citybrain_dataflows::city::Idx;
use citybrain_dataflows::event::{
    DetectorReading, IncidentEvent, IncidentStatus, IncidentType, UnitEvent, UnitStatus, UnitType,
};
use citybrain_dataflows::scan::detector_line;
use citybrain_dataflows::time::{MINUTE, Ms, SECOND, Ts};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::str::FromStr;

/// Default call rate: calls per district per hour, on the daily average.
pub const DEFAULT_CALL_RATE: f64 = 1.5;
/// Default number of units per station.
pub const DEFAULT_UNITS_PER_STATION: u32 = 2;
/// Default number of calls of a mass-casualty incident.
pub const DEFAULT_MASS_CASUALTY_CALLS: u32 = 12;
/// Default share of incidents whose `en_route` events arrive after their `on_scene` ones.
pub const DEFAULT_OUT_OF_ORDER: f64 = 0.02;
/// Default share of calls cancelled before dispatch.
pub const DEFAULT_CANCEL_SHARE: f64 = 0.04;

/// An hour, ms.
pub(crate) const HOUR: Ms = 60 * MINUTE;
/// The city time zone's offset from UTC (Asia/Shanghai has no daylight saving time).
pub(crate) const CITY_UTC_OFFSET_MS: Ms = 8 * HOUR;
/// Largest delivery delay (exclusive), as for detector readings.
const MAX_DELAY_MS: Ms = 2 * SECOND;
/// Relative call rate by local hour (piecewise linear; normalised to a daily mean of 1).
const CALL_PROFILE: [(f64, f64); 8] = [
    (0.0, 0.55),
    (4.0, 0.35),
    (7.0, 0.8),
    (10.0, 1.25),
    (14.0, 1.35),
    (18.0, 1.3),
    (21.0, 1.0),
    (24.0, 0.55),
];
/// Call types and their shares.
const TYPE_MIX: [(IncidentType, f64); 4] = [
    (IncidentType::Medical, 0.50),
    (IncidentType::Police, 0.25),
    (IncidentType::Traffic, 0.15),
    (IncidentType::Fire, 0.10),
];
/// Shares of severities 1..=5.
const SEVERITY_MIX: [f64; 5] = [0.05, 0.15, 0.35, 0.30, 0.15];
/// Shares of severities 1..=5 of mass-casualty calls.
const MASS_CASUALTY_SEVERITY_MIX: [f64; 5] = [0.3, 0.4, 0.3, 0.0, 0.0];
/// A mass-casualty incident's calls come within this span.
const MASS_CASUALTY_SPREAD_MS: Ms = 5 * MINUTE;
/// Dispatch delay (call processing) for severity 1–2, inclusive range.
const DISPATCH_URGENT_MS: (Ms, Ms) = (20 * SECOND, 45 * SECOND);
/// Dispatch delay for severity 3–5.
const DISPATCH_ROUTINE_MS: (Ms, Ms) = (30 * SECOND, 90 * SECOND);
/// From a unit's return to the dispatch of waiting calls.
const REDISPATCH_MS: (Ms, Ms) = (5 * SECOND, 20 * SECOND);
/// Turnout: from dispatch to en route.
const TURNOUT_MS: (Ms, Ms) = (30 * SECOND, 80 * SECOND);
/// Between two position reports of a moving unit.
const REPORT_EVERY_MS: (Ms, Ms) = (15 * SECOND, 30 * SECOND);
/// Time on scene.
const ON_SCENE_MS: (Ms, Ms) = (5 * MINUTE, 30 * MINUTE);
/// Speed off the road network (from a station to the road, from the road to an incident).
const ACCESS_SPEED_KMH: f64 = 20.0;
/// Emergency vehicles never drive slower on a segment.
const MIN_SPEED_KMH: f64 = 10.0;
/// Traffic speed of a segment whose loop reads a stopped vehicle and no traffic.
const BLOCKED_SPEED_KMH: f64 = 5.0;
/// Occupancy from which a loop without vehicles reads a stopped vehicle.
const BLOCKED_OCCUPANCY: f64 = 0.9;
/// Traffic speed before any reading, as a share of the speed limit.
const INITIAL_SPEED_FACTOR: f64 = 0.9;
/// A segment starting this close to another's end continues it (a junction).
const JUNCTION_M: f64 = 30.0;
/// Segments within this distance of the nearest one are candidates for a point.
const PLACE_TOLERANCE_M: f64 = 20.0;
/// Units (nearest in a straight line) whose route time the dispatcher compares.
const NEAREST_CANDIDATES: usize = 5;
/// Mean Earth radius (IUGG), metres.
const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Random streams of the seed; traffic uses `0..` (detectors) and `1 << 32..` (segments).
const CALL_STREAMS: u64 = 2 << 32;
const INCIDENT_STREAMS: u64 = 3 << 32;
const UNIT_STREAMS: u64 = 4 << 32;
const DISPATCHER_STREAM: u64 = 5 << 32;
const MASS_CASUALTY_STREAMS: u64 = 6 << 32;

/// A mass-casualty incident: `DISTRICT@MINUTE[+CALLS]`, e.g. `district-5@20+12`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MassCasualtySpec {
    /// District id (or name, any case) of the city model.
    pub district: String,
    /// Minutes after the start of the run when the calls begin.
    pub minute: u32,
    /// Number of calls (1..=1000).
    pub calls: u32,
}

impl FromStr for MassCasualtySpec {
    type Err = String;

    /// Parses `DISTRICT@MINUTE[+CALLS]` (CALLS defaults to [`DEFAULT_MASS_CASUALTY_CALLS`]).
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || format!("mass casualty {s:?} is not DISTRICT@MINUTE[+CALLS]");
        let (district, rest) = s.rsplit_once('@').ok_or_else(usage)?;
        let (minute, calls) = match rest.split_once('+') {
            Some((m, c)) => (m, Some(c)),
            None => (rest, None),
        };
        let number = |what: &str, part: &str| -> Result<u32, String> {
            part.trim().parse().map_err(|_| format!("{}: {what} {part:?} is not a whole number", usage()))
        };
        let minute = number("MINUTE", minute)?;
        let calls = calls.map(|c| number("CALLS", c)).transpose()?.unwrap_or(DEFAULT_MASS_CASUALTY_CALLS);
        let district = district.trim();
        if district.is_empty() {
            return Err(usage());
        }
        if !(1..=1000).contains(&calls) {
            return Err(format!("{}: CALLS must be 1..1000", usage()));
        }
        Ok(MassCasualtySpec { district: district.to_string(), minute, calls })
    }
}

/// What the emergency scenario simulates (the seed, start, length and topic prefix are those of
/// the run's [`FeedOptions`]).
#[derive(Clone, Debug, PartialEq)]
pub struct EmergencyOptions {
    /// Calls per district per hour, on the daily average (0..=1000).
    pub call_rate: f64,
    /// Units per station (1..=100).
    pub units_per_station: u32,
    /// Mass-casualty incidents.
    pub mass_casualty: Vec<MassCasualtySpec>,
    /// Share of incidents whose `en_route` events arrive after their `on_scene` ones (0..=1).
    pub out_of_order: f64,
    /// Share of calls cancelled before dispatch (0..=1).
    pub cancel_share: f64,
}

impl Default for EmergencyOptions {
    fn default() -> Self {
        EmergencyOptions {
            call_rate: DEFAULT_CALL_RATE,
            units_per_station: DEFAULT_UNITS_PER_STATION,
            mass_casualty: Vec::new(),
            out_of_order: DEFAULT_OUT_OF_ORDER,
            cancel_share: DEFAULT_CANCEL_SHARE,
        }
    }
}

impl EmergencyOptions {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.call_rate.is_finite() && (0.0..=1000.0).contains(&self.call_rate),
            "call rate must be 0..1000 calls per district per hour, not {}",
            self.call_rate
        );
        ensure!(
            (1..=100).contains(&self.units_per_station),
            "units per station must be 1..100, not {}",
            self.units_per_station
        );
        for (what, share) in [("out-of-order share", self.out_of_order), ("cancel share", self.cancel_share)]
        {
            ensure!((0.0..=1.0).contains(&share), "{what} must be 0..1, not {share}");
        }
        Ok(())
    }
}

/// A point of the local plane: metres east and north of the network's centre.
type Xy = [f64; 2];

fn dist(a: Xy, b: Xy) -> f64 {
    (b[0] - a[0]).hypot(b[1] - a[1])
}

fn lerp(a: Xy, b: Xy, t: f64) -> Xy {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t]
}

pub(crate) fn round_to(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// An equirectangular projection around the network's centre: exact enough over a city.
#[derive(Clone, Copy, Debug)]
struct Frame {
    lon0: f64,
    lat0: f64,
    m_per_deg_lon: f64,
    m_per_deg_lat: f64,
}

impl Frame {
    fn new(lon0: f64, lat0: f64) -> Frame {
        let m_per_deg_lat = EARTH_RADIUS_M.to_radians();
        Frame { lon0, lat0, m_per_deg_lon: m_per_deg_lat * lat0.to_radians().cos(), m_per_deg_lat }
    }

    fn xy(&self, (lon, lat): (f64, f64)) -> Xy {
        [(lon - self.lon0) * self.m_per_deg_lon, (lat - self.lat0) * self.m_per_deg_lat]
    }

    /// Lon/lat of a point, rounded to 1e-7° (about 1 cm).
    fn lonlat(&self, p: Xy) -> (f64, f64) {
        (
            round_to(self.lon0 + p[0] / self.m_per_deg_lon, 7),
            round_to(self.lat0 + p[1] / self.m_per_deg_lat, 7),
        )
    }
}

/// A polyline of the local plane with its cumulative lengths.
#[derive(Clone, Debug)]
struct Line {
    pts: Vec<Xy>,
    cum: Vec<f64>,
}

impl Line {
    fn new(pts: Vec<Xy>) -> Line {
        let mut cum = Vec::with_capacity(pts.len());
        let mut acc = 0.0;
        for (k, &p) in pts.iter().enumerate() {
            if k > 0 {
                acc += dist(pts[k - 1], p);
            }
            cum.push(acc);
        }
        Line { pts, cum }
    }

    fn len(&self) -> f64 {
        self.cum.last().copied().unwrap_or(0.0)
    }

    /// The point `along` metres from the start (clamped to the line).
    fn at(&self, along: f64) -> Xy {
        let n = self.pts.len();
        if n < 2 {
            return self.pts.first().copied().unwrap_or([0.0, 0.0]);
        }
        let along = along.clamp(0.0, self.len());
        let k = self.cum.partition_point(|&c| c < along).clamp(1, n - 1);
        let piece = self.cum[k] - self.cum[k - 1];
        let t = if piece > 0.0 { (along - self.cum[k - 1]) / piece } else { 1.0 };
        lerp(self.pts[k - 1], self.pts[k], t)
    }

    /// The nearest point of the line to `p`: (metres along, the point, its distance).
    fn project(&self, p: Xy) -> (f64, Xy, f64) {
        let Some(&first) = self.pts.first() else { return (0.0, p, 0.0) };
        let mut best = (0.0, first, dist(p, first));
        for k in 1..self.pts.len() {
            let (a, b) = (self.pts[k - 1], self.pts[k]);
            let ab = [b[0] - a[0], b[1] - a[1]];
            let l2 = ab[0] * ab[0] + ab[1] * ab[1];
            let t = if l2 > 0.0 {
                (((p[0] - a[0]) * ab[0] + (p[1] - a[1]) * ab[1]) / l2).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let q = lerp(a, b, t);
            let d = dist(p, q);
            if d < best.2 {
                best = (self.cum[k - 1] + t * l2.sqrt(), q, d);
            }
        }
        best
    }

    /// The part of the line from `a` to `b` metres along (`a ≤ b`).
    fn sub(&self, a: f64, b: f64) -> Line {
        let mut pts = vec![self.at(a)];
        pts.extend(self.pts.iter().zip(&self.cum).filter(|&(_, &c)| a < c && c < b).map(|(&p, _)| p));
        pts.push(self.at(b));
        Line::new(pts)
    }
}

/// Where a point joins the road network: a segment, how far along it, and the point there.
#[derive(Clone, Copy, Debug)]
struct Place {
    seg: Idx,
    /// Metres along the segment's geometry.
    along: f64,
    /// Share of the segment before the point (0..=1).
    frac: f64,
    point: Xy,
    /// Off-road distance from the point to the segment, metres.
    dist: f64,
}

/// One stretch of a route: part of a segment, or a straight line off the road.
#[derive(Clone, Debug)]
struct Leg {
    /// Its geometry.
    line: Line,
    /// Metres to drive: the share of the segment's `length_m`, or the straight line's length.
    path_m: f64,
    /// The segment, or `None` off the road.
    seg: Option<Idx>,
}

impl Leg {
    fn access(a: Xy, b: Xy) -> Leg {
        Leg { line: Line::new(vec![a, b]), path_m: dist(a, b), seg: None }
    }
}

/// A route being driven.
#[derive(Clone, Debug)]
struct Drive {
    legs: Vec<Leg>,
    leg: usize,
    /// Metres driven on the current leg.
    done_m: f64,
}

/// Speed on a segment (or off the road), m/s.
fn speed_mps(speeds_kmh: &[f64], seg: Option<Idx>) -> f64 {
    match seg {
        Some(s) => speeds_kmh[s as usize].max(MIN_SPEED_KMH) / 3.6,
        None => ACCESS_SPEED_KMH / 3.6,
    }
}

impl Drive {
    /// Drives for `dt_s` seconds at the given speeds; returns the seconds it took when the route
    /// ends within them.
    fn advance(&mut self, dt_s: f64, speeds_kmh: &[f64]) -> Option<f64> {
        let mut left = dt_s;
        while let Some(leg) = self.legs.get(self.leg) {
            let v = speed_mps(speeds_kmh, leg.seg);
            let need = (leg.path_m - self.done_m).max(0.0) / v;
            if need <= left {
                left -= need;
                self.leg += 1;
                self.done_m = 0.0;
            } else {
                self.done_m += left * v;
                return None;
            }
        }
        Some(dt_s - left)
    }

    fn position(&self) -> Xy {
        match self.legs.get(self.leg) {
            Some(leg) if leg.path_m > 0.0 => leg.line.at(self.done_m / leg.path_m * leg.line.len()),
            Some(leg) => leg.line.at(0.0),
            None => self.legs.last().map_or([0.0, 0.0], |leg| leg.line.at(leg.line.len())),
        }
    }
}

/// How the best route was found.
enum Plan {
    /// The straight line, off the road.
    Direct,
    /// Along one segment, from start place `.0` to destination place `.1`.
    Same(usize, usize),
    /// Over the network: the last segment before destination place `.1` is `.0`.
    Via(Idx, usize),
}

#[derive(Clone, Copy)]
enum Came {
    Nowhere,
    Start(usize),
    From(Idx),
}

/// The road network the units drive: every segment of the city model with its geometry, and
/// the links from each segment's end onward (its `downstream` segments, and the segments that
/// start within 30 m of its end). See the module docs.
#[derive(Clone, Debug)]
pub struct RoadNetwork {
    frame: Frame,
    lines: Vec<Line>,
    length_m: Vec<f64>,
    speed_limit_kmh: Vec<f64>,
    next: Vec<Vec<Idx>>,
    prev: Vec<Vec<Idx>>,
}

impl RoadNetwork {
    /// The network of `city`, with the segment geometry (LineStrings) of the GeoJSON it was
    /// loaded from. Every segment of the model needs its geometry there.
    pub fn from_geojson(city: &CityModel, geojson: &str) -> Result<RoadNetwork> {
        let doc: Value = serde_json::from_str(geojson).context("the city GeoJSON is not JSON")?;
        let features = doc["features"].as_array().context("the city GeoJSON has no features")?;
        let mut lines: Vec<Option<Vec<(f64, f64)>>> = vec![None; city.segments.len()];
        for f in features.iter().filter(|f| f["properties"]["kind"] == "segment") {
            let Some(s) = f["properties"]["id"].as_str().and_then(|id| city.segment(id)) else { continue };
            let coords = f["geometry"]["coordinates"].as_array().map(|c| {
                c.iter().filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?))).collect::<Vec<_>>()
            });
            lines[s as usize] = coords.filter(|c| !c.is_empty());
        }
        let lines = lines
            .into_iter()
            .enumerate()
            .map(|(s, l)| l.with_context(|| format!("segment {:?} has no geometry", city.segments[s].id)))
            .collect::<Result<Vec<_>>>()?;
        RoadNetwork::from_lines(city, lines)
    }

    /// The network of `city` with the given geometry (lon/lat, from start to end) per segment,
    /// in the model's segment order.
    pub fn from_lines(city: &CityModel, lines: Vec<Vec<(f64, f64)>>) -> Result<RoadNetwork> {
        ensure!(
            lines.len() == city.segments.len(),
            "{} segment geometries for {} segments",
            lines.len(),
            city.segments.len()
        );
        ensure!(!lines.is_empty(), "the city model has no road segments");
        let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
        for &(lon, lat) in lines.iter().flatten() {
            ensure!(lon.is_finite() && lat.is_finite(), "a segment coordinate is not a number");
            (lo[0], lo[1], hi[0], hi[1]) = (lo[0].min(lon), lo[1].min(lat), hi[0].max(lon), hi[1].max(lat));
        }
        ensure!(lo[0].is_finite(), "no segment has a coordinate");
        let frame = Frame::new((lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0);
        let lines: Vec<Line> =
            lines.iter().map(|l| Line::new(l.iter().map(|&p| frame.xy(p)).collect())).collect();
        // Junctions: segment starts bucketed on a JUNCTION_M grid.
        let cell = |p: Xy| ((p[0] / JUNCTION_M).floor() as i64, (p[1] / JUNCTION_M).floor() as i64);
        let mut starts: HashMap<(i64, i64), Vec<Idx>> = HashMap::new();
        for (s, l) in lines.iter().enumerate() {
            starts.entry(cell(l.at(0.0))).or_default().push(s as Idx);
        }
        let mut next: Vec<Vec<Idx>> = city.segments.iter().map(|s| s.downstream.clone()).collect();
        for (s, l) in lines.iter().enumerate() {
            let end = l.at(l.len());
            let (cx, cy) = cell(end);
            for (dx, dy) in (-1..=1).flat_map(|dx| (-1..=1).map(move |dy| (dx, dy))) {
                for &t in starts.get(&(cx + dx, cy + dy)).into_iter().flatten() {
                    if t as usize != s && dist(end, lines[t as usize].at(0.0)) <= JUNCTION_M {
                        next[s].push(t);
                    }
                }
            }
            next[s].sort_unstable();
            next[s].dedup();
        }
        let mut prev = vec![Vec::new(); lines.len()];
        for (s, ts) in next.iter().enumerate() {
            for &t in ts {
                prev[t as usize].push(s as Idx);
            }
        }
        Ok(RoadNetwork {
            frame,
            lines,
            length_m: city.segments.iter().map(|s| s.length_m).collect(),
            speed_limit_kmh: city.segments.iter().map(|s| s.speed_limit_kmh).collect(),
            next,
            prev,
        })
    }

    /// Number of links from a segment's end onto another segment.
    pub fn link_count(&self) -> usize {
        self.next.iter().map(Vec::len).sum()
    }

    /// Where a point joins the network: the nearest segment, and every other within
    /// [`PLACE_TOLERANCE_M`] of its distance.
    fn place(&self, p: Xy) -> Vec<Place> {
        let projected: Vec<(f64, Xy, f64)> = self.lines.iter().map(|l| l.project(p)).collect();
        let nearest = projected.iter().map(|x| x.2).fold(f64::INFINITY, f64::min);
        projected
            .into_iter()
            .enumerate()
            .filter(|(_, (_, _, d))| *d <= nearest + PLACE_TOLERANCE_M)
            .map(|(s, (along, point, d))| {
                let len = self.lines[s].len();
                let frac = if len > 0.0 { (along / len).clamp(0.0, 1.0) } else { 0.0 };
                Place { seg: s as Idx, along, frac, point, dist: d }
            })
            .collect()
    }

    /// Seconds to drive share `frac` of segment `s`.
    fn seg_s(&self, s: Idx, frac: f64, speeds: &[f64]) -> f64 {
        frac * self.length_m[s as usize] / speed_mps(speeds, Some(s))
    }

    /// The fastest route from `from` (joining the network at `from_places`) to `to`, at the
    /// given segment speeds: its time in seconds and its legs.
    fn route(
        &self,
        from: Xy,
        from_places: &[Place],
        to: Xy,
        to_places: &[Place],
        speeds: &[f64],
    ) -> (f64, Vec<Leg>) {
        let access = |d: f64| d / speed_mps(speeds, None);
        // What needs no search: the straight line, and the spans along one segment.
        let mut best = (access(dist(from, to)), Plan::Direct);
        for (j, b) in to_places.iter().enumerate() {
            for (i, a) in from_places.iter().enumerate().filter(|(_, a)| a.seg == b.seg && a.along <= b.along)
            {
                let t = access(a.dist) + self.seg_s(a.seg, b.frac - a.frac, speeds) + access(b.dist);
                if t < best.0 {
                    best = (t, Plan::Same(i, j));
                }
            }
        }
        // Dijkstra on the time to reach each segment's end. A destination place on `b` is reached
        // from the end of any segment linked into `b`: those segments, with the places they lead to.
        let mut into: BTreeMap<Idx, Vec<usize>> = BTreeMap::new();
        for (j, b) in to_places.iter().enumerate() {
            for &p in &self.prev[b.seg as usize] {
                into.entry(p).or_default().push(j);
            }
        }
        let n = self.lines.len();
        let mut best_end = vec![f64::INFINITY; n];
        let mut came = vec![Came::Nowhere; n];
        let mut heap = BinaryHeap::new();
        for (i, a) in from_places.iter().enumerate() {
            let t = access(a.dist) + self.seg_s(a.seg, 1.0 - a.frac, speeds);
            if t < best_end[a.seg as usize] {
                best_end[a.seg as usize] = t;
                came[a.seg as usize] = Came::Start(i);
                heap.push(Reverse((t.to_bits(), a.seg)));
            }
        }
        while let Some(Reverse((bits, s))) = heap.pop() {
            let t = f64::from_bits(bits);
            if t > best_end[s as usize] {
                continue;
            }
            // Every route not yet found passes the end of a segment not yet settled, so it takes
            // at least `t`: once that is no better than the best, the search is over.
            if t >= best.0 {
                break;
            }
            for &j in into.get(&s).into_iter().flatten() {
                let b = &to_places[j];
                let total = t + self.seg_s(b.seg, b.frac, speeds) + access(b.dist);
                if total < best.0 {
                    best = (total, Plan::Via(s, j));
                }
            }
            for &u in &self.next[s as usize] {
                let nt = t + self.seg_s(u, 1.0, speeds);
                if nt < best_end[u as usize] {
                    best_end[u as usize] = nt;
                    came[u as usize] = Came::From(s);
                    heap.push(Reverse((nt.to_bits(), u)));
                }
            }
        }
        let segment = |s: Idx, a: f64, b: f64| {
            let line = &self.lines[s as usize];
            let frac = |x: f64| if line.len() > 0.0 { x / line.len() } else { 0.0 };
            Leg {
                line: line.sub(a, b),
                path_m: (frac(b) - frac(a)).max(0.0) * self.length_m[s as usize],
                seg: Some(s),
            }
        };
        let legs = match best.1 {
            Plan::Direct => vec![Leg::access(from, to)],
            Plan::Same(i, j) => {
                let (a, b) = (from_places[i], to_places[j]);
                vec![Leg::access(from, a.point), segment(a.seg, a.along, b.along), Leg::access(b.point, to)]
            }
            Plan::Via(last, j) => {
                let mut chain = vec![last];
                let start = loop {
                    match came[*chain.last().expect("non-empty") as usize] {
                        Came::Start(i) => break i,
                        Came::From(p) => chain.push(p),
                        Came::Nowhere => unreachable!("a reached segment has a predecessor"),
                    }
                };
                chain.reverse();
                let (a, b) = (from_places[start], to_places[j]);
                let mut legs = vec![Leg::access(from, a.point)];
                for (k, &s) in chain.iter().enumerate() {
                    let len = self.lines[s as usize].len();
                    legs.push(segment(s, if k == 0 { a.along } else { 0.0 }, len));
                }
                legs.push(segment(b.seg, 0.0, b.along));
                legs.push(Leg::access(b.point, to));
                legs
            }
        };
        (best.0, legs)
    }
}

/// A unit of a station.
struct Unit {
    id: String,
    topic: String,
    kind: UnitType,
    station: String,
    district: Idx,
    home: (f64, f64),
    home_xy: Xy,
    home_places: Vec<Place>,
    state: UnitStatus,
    incident: Option<usize>,
    pos: (f64, f64),
    drive: Option<Drive>,
    rng: ChaCha8Rng,
    last_ts: Ms,
}

/// A call.
struct Incident {
    id: String,
    topic: String,
    kind: IncidentType,
    severity: u8,
    lon: f64,
    lat: f64,
    xy: Xy,
    places: Vec<Place>,
    district: Idx,
    reported: Ms,
    status: IncidentStatus,
    unit: Option<usize>,
    note: Option<String>,
    /// Its `en_route` events arrive after its `on_scene` ones.
    late: bool,
    /// Lines held back until `on_scene` (the late `en_route` events).
    held: Vec<String>,
    rng: ChaCha8Rng,
}

/// The callers of one district.
struct Callers {
    rng: ChaCha8Rng,
    cells: Vec<Idx>,
}

/// A mass-casualty incident resolved against the city model.
struct MassCasualty {
    district: Idx,
    cell: Option<Idx>,
    note: String,
    rng: ChaCha8Rng,
}

/// What happens next.
#[derive(Clone, Copy, Debug)]
enum Action {
    Call(Idx),
    MassCasualtyCall(usize),
    Cancel(usize),
    Dispatch(usize),
    Redispatch,
    Turnout(usize),
    Report(usize),
    Arrive(usize),
    Clear(usize),
}

/// A random stream of the seed.
pub(crate) fn stream(seed: u64, n: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(n);
    rng
}

/// Hour of the day (0..24, fractional) in the city time zone.
pub(crate) fn local_hour(ts: Ms) -> f64 {
    ((ts + CITY_UTC_OFFSET_MS) % (24 * HOUR)) as f64 / HOUR as f64
}

/// The raw call profile at a local hour.
fn raw_profile(hour: f64) -> f64 {
    CALL_PROFILE
        .windows(2)
        .find(|w| hour < w[1].0)
        .map_or(CALL_PROFILE[0].1, |w| w[0].1 + (w[1].1 - w[0].1) * (hour - w[0].0) / (w[1].0 - w[0].0))
}

/// The daily mean of the raw profile (exact for a piecewise-linear profile).
fn profile_mean() -> f64 {
    CALL_PROFILE.windows(2).map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0).sum::<f64>() / 24.0
}

/// `YYYYMMDD` of an instant in the city time zone.
pub(crate) fn local_date(ts: Ms) -> String {
    // Howard Hinnant's days-to-civil.
    let z = ((ts + CITY_UTC_OFFSET_MS) / (24 * HOUR)) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}")
}

/// Index into a mix of shares, for a uniform draw `u` in [0, 1).
pub(crate) fn pick(shares: impl IntoIterator<Item = f64>, u: f64) -> usize {
    let mut acc = 0.0;
    let mut last = 0;
    for (i, s) in shares.into_iter().enumerate() {
        acc += s;
        if s > 0.0 {
            last = i;
        }
        if u < acc {
            return i;
        }
    }
    last
}

fn unit_type_of_station(kind: &str) -> Option<UnitType> {
    match kind {
        "fire" => Some(UnitType::FireEngine),
        "ems" => Some(UnitType::Ambulance),
        "police" => Some(UnitType::Police),
        _ => None,
    }
}

/// The unit type an incident type is sent.
pub fn unit_type_for(kind: IncidentType) -> UnitType {
    match kind {
        IncidentType::Fire => UnitType::FireEngine,
        IncidentType::Medical => UnitType::Ambulance,
        IncidentType::Police | IncidentType::Traffic => UnitType::Police,
    }
}

/// A random point (rounded to 1e-6°) that the city model places in `cell`, or — for a district
/// without cells — in `district`.
fn sample_point(city: &CityModel, rng: &mut ChaCha8Rng, district: Idx, cell: Option<Idx>) -> (f64, f64) {
    let area = match cell {
        Some(c) => &city.cells[c as usize].area,
        None => &city.districts[district as usize].area,
    };
    let coords: Vec<(f64, f64)> =
        area.0.iter().flat_map(|poly| poly.exterior().0.iter().map(|c| (c.x, c.y))).collect();
    let (mut lo, mut hi) = ((f64::INFINITY, f64::INFINITY), (f64::NEG_INFINITY, f64::NEG_INFINITY));
    for &(x, y) in &coords {
        (lo.0, lo.1, hi.0, hi.1) = (lo.0.min(x), lo.1.min(y), hi.0.max(x), hi.1.max(y));
    }
    let inside = |lon: f64, lat: f64| {
        let (c, d) = city.place(lon, lat);
        match cell {
            Some(_) => c == cell,
            None => d == Some(district),
        }
    };
    if lo.0.is_finite() {
        for _ in 0..200 {
            let lon = round_to(rng.random_range(lo.0..=hi.0), 6);
            let lat = round_to(rng.random_range(lo.1..=hi.1), 6);
            if inside(lon, lat) {
                return (lon, lat);
            }
        }
    }
    // A degenerate area: the mean of its vertices.
    let n = coords.len().max(1) as f64;
    let (x, y) = coords.iter().fold((0.0, 0.0), |acc, &(x, y)| (acc.0 + x, acc.1 + y));
    (round_to(x / n, 6), round_to(y / n, 6))
}

/// A detector reading's recording line, as read.
#[derive(Deserialize)]
struct ReadingLine<'a> {
    #[serde(borrow)]
    payload: DetectorReading<'a>,
}

/// One recording line (CONTRACT §4).
#[derive(Serialize)]
struct Message<'a, P> {
    topic: &'a str,
    payload: &'a P,
}

/// The emergency simulator over one run: an event-driven simulation of calls, the dispatcher
/// and the crews (see the module docs), advanced interval by interval by [`Scenario`].
pub struct EmergencySim<'c> {
    city: &'c CityModel,
    net: RoadNetwork,
    opts: EmergencyOptions,
    seed: u64,
    start: Ms,
    end: Ms,
    interval: Ms,
    /// Traffic speed per segment, km/h.
    speeds: Vec<f64>,
    units: Vec<Unit>,
    incidents: Vec<Incident>,
    /// Incidents waiting for a unit.
    waiting: Vec<usize>,
    callers: Vec<Callers>,
    mass_casualties: Vec<MassCasualty>,
    dispatcher: ChaCha8Rng,
    /// The largest value of the normalised call profile.
    profile_max: f64,
    profile_mean: f64,
    topic_prefix: String,
    /// Actions by time, and lines until they arrive.
    agenda: Agenda<Action>,
}

impl<'c> EmergencySim<'c> {
    /// Prepares the scenario over the run of `feed` (seed, start, length, interval, topic prefix),
    /// checking the options first.
    pub fn new(
        city: &'c CityModel,
        net: RoadNetwork,
        feed: &FeedOptions,
        opts: &EmergencyOptions,
    ) -> Result<Self> {
        opts.validate()?;
        ensure!((2..=3600).contains(&feed.interval_s), "interval must be 2..3600 s, not {}", feed.interval_s);
        ensure!(net.lines.len() == city.segments.len(), "the road network is not this city's");
        let interval = feed.interval_s as Ms * SECOND;
        let start = feed.start_ms - feed.start_ms % interval;
        let end = start + feed.duration_min as Ms * MINUTE / interval * interval;
        let topic_prefix = feed.topic_prefix.trim_end_matches('/').to_string();
        let mut units = Vec::new();
        for st in &city.stations {
            let Some(kind) = unit_type_of_station(&st.kind) else { continue };
            let name = st.id.strip_prefix("station-").unwrap_or(&st.id);
            let home = (st.location.x(), st.location.y());
            let home_xy = net.frame.xy(home);
            let home_places = net.place(home_xy);
            for k in 1..=opts.units_per_station {
                let id = format!("unit-{name}-{k}");
                units.push(Unit {
                    topic: format!("{topic_prefix}/emergency/unit/{id}"),
                    id,
                    kind,
                    station: st.id.clone(),
                    district: st.district,
                    home,
                    home_xy,
                    home_places: home_places.clone(),
                    state: UnitStatus::Available,
                    incident: None,
                    pos: home,
                    drive: None,
                    rng: stream(feed.seed, UNIT_STREAMS + units.len() as u64),
                    last_ts: 0,
                });
            }
        }
        let callers = (0..city.districts.len())
            .map(|d| Callers {
                rng: stream(feed.seed, CALL_STREAMS + d as u64),
                cells: (0..city.cells.len() as Idx)
                    .filter(|&c| city.cells[c as usize].district == d as Idx)
                    .collect(),
            })
            .collect();
        let profile_mean = profile_mean();
        let profile_max = CALL_PROFILE.iter().map(|p| p.1).fold(0.0, f64::max) / profile_mean;
        let mut sim = EmergencySim {
            city,
            speeds: net.speed_limit_kmh.iter().map(|v| v * INITIAL_SPEED_FACTOR).collect(),
            net,
            opts: opts.clone(),
            seed: feed.seed,
            start,
            end,
            interval,
            units,
            incidents: Vec::new(),
            waiting: Vec::new(),
            callers,
            mass_casualties: Vec::new(),
            dispatcher: stream(feed.seed, DISPATCHER_STREAM),
            profile_max,
            profile_mean,
            topic_prefix,
            agenda: Agenda::default(),
        };
        for (k, spec) in opts.mass_casualty.iter().enumerate() {
            sim.add_mass_casualty(k, spec, feed.duration_min)?;
        }
        for d in 0..city.districts.len() {
            if let Some(t) = sim.next_call(d as Idx, start) {
                sim.at(t, Action::Call(d as Idx));
            }
        }
        for u in 0..sim.units.len() {
            sim.emit_unit(u, UnitStatus::Available, start, false)?;
        }
        Ok(sim)
    }

    fn add_mass_casualty(&mut self, k: usize, spec: &MassCasualtySpec, duration_min: u32) -> Result<()> {
        let city = self.city;
        let what = || format!("mass casualty {}@{}+{}", spec.district, spec.minute, spec.calls);
        let district = city.district(&spec.district).or_else(|| {
            city.districts.iter().position(|d| d.name.eq_ignore_ascii_case(&spec.district)).map(|d| d as Idx)
        });
        let Some(district) = district else {
            let examples: Vec<String> =
                city.districts.iter().take(3).map(|d| format!("{} ({})", d.id, d.name)).collect();
            bail!("{}: unknown district {:?} (e.g. {})", what(), spec.district, examples.join(", "));
        };
        ensure!(
            spec.minute < duration_min,
            "{}: starts at minute {}, after the end of the {duration_min}-minute run",
            what(),
            spec.minute
        );
        let mut rng = stream(self.seed, MASS_CASUALTY_STREAMS + k as u64);
        let cells = &self.callers[district as usize].cells;
        let cell = (!cells.is_empty()).then(|| cells[rng.random_range(0..cells.len())]);
        let from = self.start + spec.minute as Ms * MINUTE;
        let mut times: Vec<Ms> =
            (0..spec.calls).map(|_| from + rng.random_range(0..MASS_CASUALTY_SPREAD_MS)).collect();
        times.sort_unstable();
        for t in times {
            self.at(t, Action::MassCasualtyCall(k));
        }
        let note = format!("mass casualty in {}", city.districts[district as usize].name);
        self.mass_casualties.push(MassCasualty { district, cell, note, rng });
        Ok(())
    }

    /// Number of units (all stations).
    pub fn unit_count(&self) -> usize {
        self.units.len()
    }

    /// Number of calls so far.
    pub fn incident_count(&self) -> usize {
        self.incidents.len()
    }

    /// Takes the traffic speed of every segment from one interval's detector readings (recording
    /// lines as [`Simulator`] writes them; other lines are ignored): the count-weighted mean
    /// speed of its lanes; with no vehicle counted, the speed limit (an empty road) or 5 km/h if
    /// a loop reads occupancy ≥ 0.9 (a stopped vehicle). Segments without readings keep theirs.
    pub fn observe_traffic(&mut self, lines: &[String]) {
        // (Σ count × speed, Σ count, highest occupancy) per segment read.
        let mut read: BTreeMap<Idx, (f64, u64, f64)> = BTreeMap::new();
        for line in lines {
            // The plain shape the simulator writes, read without serde; anything else with it.
            let reading = detector_line(line).map(|(_, r)| r).or_else(|| {
                line.contains("/traffic/detector/")
                    .then(|| serde_json::from_str::<ReadingLine>(line).ok().map(|l| l.payload))
                    .flatten()
            });
            let Some(r) = reading else { continue };
            let Some(s) = self.city.segment(&r.segment) else { continue };
            let e = read.entry(s).or_default();
            if let Some(v) = r.speed_kmh.filter(|v| v.is_finite() && *v >= 0.0 && r.count > 0) {
                e.0 += v * r.count as f64;
                e.1 += r.count as u64;
            }
            e.2 = e.2.max(r.occupancy.unwrap_or(0.0));
        }
        for (s, (weighted, count, occupancy)) in read {
            self.speeds[s as usize] = if count > 0 {
                weighted / count as f64
            } else if occupancy >= BLOCKED_OCCUPANCY {
                BLOCKED_SPEED_KMH
            } else {
                self.net.speed_limit_kmh[s as usize]
            };
        }
    }

    /// Simulates up to `until` (exclusive; at most the end of the run) and returns the lines that
    /// arrive before it, in arrival order.
    pub fn advance(&mut self, until: Ms) -> Result<Vec<String>> {
        let until = until.min(self.end);
        while let Some((t, action)) = self.agenda.next_before(until) {
            self.handle(t, action)?;
        }
        Ok(self.agenda.arrived_before(until))
    }

    fn at(&mut self, t: Ms, action: Action) {
        self.agenda.at(t, action);
    }

    fn post(&mut self, arrival: Ms, line: String) {
        self.agenda.post(arrival, line);
    }

    /// The next call of a district after `after`, if before the end of the run (thinning of a
    /// Poisson process at the profile's peak rate).
    fn next_call(&mut self, d: Idx, after: Ms) -> Option<Ms> {
        let peak_per_ms = self.opts.call_rate * self.profile_max / HOUR as f64;
        if peak_per_ms <= 0.0 {
            return None;
        }
        let rng = &mut self.callers[d as usize].rng;
        let mut t = after;
        loop {
            let gap = -(1.0 - rng.random::<f64>()).ln() / peak_per_ms;
            t = t.saturating_add((gap.ceil() as Ms).max(1));
            if t >= self.end {
                return None;
            }
            let rate = raw_profile(local_hour(t)) / self.profile_mean;
            if rng.random::<f64>() * self.profile_max < rate {
                return Some(t);
            }
        }
    }

    fn handle(&mut self, t: Ms, action: Action) -> Result<()> {
        match action {
            Action::Call(d) => self.call(t, d),
            Action::MassCasualtyCall(k) => self.mass_casualty_call(t, k),
            Action::Cancel(i) => self.cancel(t, i),
            Action::Dispatch(i) => {
                if self.incidents[i].status == IncidentStatus::Reported && !self.try_dispatch(t, i)? {
                    self.waiting.push(i);
                }
                Ok(())
            }
            Action::Redispatch => self.redispatch(t),
            Action::Turnout(u) => self.turnout(t, u),
            Action::Report(u) => self.report(t, u),
            Action::Arrive(u) => self.arrive(t, u),
            Action::Clear(u) => self.clear(t, u),
        }
    }

    fn call(&mut self, t: Ms, d: Idx) -> Result<()> {
        let city = self.city;
        let callers = &mut self.callers[d as usize];
        let kind = TYPE_MIX[pick(TYPE_MIX.map(|m| m.1), callers.rng.random())].0;
        let severity = pick(SEVERITY_MIX, callers.rng.random()) as u8 + 1;
        let cell = (!callers.cells.is_empty())
            .then(|| callers.cells[callers.rng.random_range(0..callers.cells.len())]);
        let point = sample_point(city, &mut callers.rng, d, cell);
        self.open_incident(t, d, kind, severity, point, None)?;
        if let Some(next) = self.next_call(d, t) {
            self.at(next, Action::Call(d));
        }
        Ok(())
    }

    fn mass_casualty_call(&mut self, t: Ms, k: usize) -> Result<()> {
        let city = self.city;
        let mc = &mut self.mass_casualties[k];
        let severity = pick(MASS_CASUALTY_SEVERITY_MIX, mc.rng.random()) as u8 + 1;
        let point = sample_point(city, &mut mc.rng, mc.district, mc.cell);
        let (district, note) = (mc.district, mc.note.clone());
        self.open_incident(t, district, IncidentType::Medical, severity, point, Some(note))?;
        Ok(())
    }

    fn open_incident(
        &mut self,
        t: Ms,
        district: Idx,
        kind: IncidentType,
        severity: u8,
        (lon, lat): (f64, f64),
        note: Option<String>,
    ) -> Result<()> {
        let i = self.incidents.len();
        let mut rng = stream(self.seed, INCIDENT_STREAMS + i as u64);
        let late = rng.random_bool(self.opts.out_of_order);
        let cancel = rng.random_bool(self.opts.cancel_share);
        let (lo, hi) = if severity <= 2 { DISPATCH_URGENT_MS } else { DISPATCH_ROUTINE_MS };
        let delay = rng.random_range(lo..=hi);
        let cancel_after = delay * rng.random_range(20..=90) / 100;
        let id = format!("inc-{}-{:04}", local_date(t), i + 1);
        let xy = self.net.frame.xy((lon, lat));
        self.incidents.push(Incident {
            topic: format!("{}/emergency/incident/{id}", self.topic_prefix),
            id,
            kind,
            severity,
            lon,
            lat,
            xy,
            places: self.net.place(xy),
            district,
            reported: t,
            status: IncidentStatus::Reported,
            unit: None,
            note,
            late,
            held: Vec::new(),
            rng,
        });
        self.emit_incident(i, IncidentStatus::Reported, t, false)?;
        if cancel {
            self.at(t + cancel_after, Action::Cancel(i));
        } else {
            self.at(t + delay, Action::Dispatch(i));
        }
        Ok(())
    }

    fn cancel(&mut self, t: Ms, i: usize) -> Result<()> {
        if self.incidents[i].status == IncidentStatus::Reported {
            self.incidents[i].status = IncidentStatus::Cancelled;
            self.incidents[i].note = Some("cancelled by the caller".into());
            self.emit_incident(i, IncidentStatus::Cancelled, t, false)?;
            self.waiting.retain(|&w| w != i);
        }
        Ok(())
    }

    /// The unit the dispatcher sends to incident `i` now, if any (see the module docs).
    fn pick_unit(&self, i: usize) -> Option<usize> {
        let inc = &self.incidents[i];
        let kind = unit_type_for(inc.kind);
        let free = |u: &Unit| u.state == UnitStatus::Available && u.kind == kind;
        let mut available: BTreeMap<Idx, usize> = BTreeMap::new();
        for u in self.units.iter().filter(|u| free(u)) {
            *available.entry(u.district).or_default() += 1;
        }
        let mut candidates: Vec<(f64, usize)> = self
            .units
            .iter()
            .enumerate()
            .filter(|(_, u)| free(u) && (u.district == inc.district || available[&u.district] >= 2))
            .map(|(k, u)| (dist(u.home_xy, inc.xy), k))
            .collect();
        candidates.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        candidates.truncate(NEAREST_CANDIDATES);
        let mut best: Option<(f64, usize)> = None;
        for (_, k) in candidates {
            let u = &self.units[k];
            let (eta, _) = self.net.route(u.home_xy, &u.home_places, inc.xy, &inc.places, &self.speeds);
            if best.is_none_or(|(b, _)| eta < b) {
                best = Some((eta, k));
            }
        }
        best.map(|(_, k)| k)
    }

    fn try_dispatch(&mut self, t: Ms, i: usize) -> Result<bool> {
        let Some(u) = self.pick_unit(i) else { return Ok(false) };
        self.units[u].state = UnitStatus::Dispatched;
        self.units[u].incident = Some(i);
        self.incidents[i].status = IncidentStatus::Dispatched;
        self.incidents[i].unit = Some(u);
        self.waiting.retain(|&w| w != i);
        self.emit_incident(i, IncidentStatus::Dispatched, t, false)?;
        self.emit_unit(u, UnitStatus::Dispatched, t, false)?;
        let turnout = self.units[u].rng.random_range(TURNOUT_MS.0..=TURNOUT_MS.1);
        self.at(t + turnout, Action::Turnout(u));
        Ok(true)
    }

    /// Dispatches the waiting calls it now can, by severity, then report time.
    fn redispatch(&mut self, t: Ms) -> Result<()> {
        let mut order = self.waiting.clone();
        order.sort_by_key(|&i| (self.incidents[i].severity, self.incidents[i].reported, i));
        for i in order {
            if self.incidents[i].status == IncidentStatus::Reported {
                self.try_dispatch(t, i)?;
            }
        }
        Ok(())
    }

    fn turnout(&mut self, t: Ms, u: usize) -> Result<()> {
        let i = self.units[u].incident.expect("a dispatched unit has its incident");
        self.units[u].state = UnitStatus::EnRoute;
        self.incidents[i].status = IncidentStatus::EnRoute;
        let late = self.incidents[i].late;
        self.emit_incident(i, IncidentStatus::EnRoute, t, late)?;
        self.emit_unit(u, UnitStatus::EnRoute, t, late)?;
        let (unit, inc) = (&self.units[u], &self.incidents[i]);
        let (_, legs) = self.net.route(unit.home_xy, &unit.home_places, inc.xy, &inc.places, &self.speeds);
        self.units[u].drive = Some(Drive { legs, leg: 0, done_m: 0.0 });
        self.step(t, u);
        Ok(())
    }

    /// Drives unit `u` on from `t` until its next report, or its arrival.
    fn step(&mut self, t: Ms, u: usize) {
        let unit = &mut self.units[u];
        let dt = unit.rng.random_range(REPORT_EVERY_MS.0..=REPORT_EVERY_MS.1);
        let drive = unit.drive.as_mut().expect("a moving unit has its route");
        match drive.advance(dt as f64 / 1000.0, &self.speeds) {
            Some(took_s) => self.at(t + ((took_s * 1000.0).round() as Ms).clamp(1, dt), Action::Arrive(u)),
            None => self.at(t + dt, Action::Report(u)),
        }
    }

    fn report(&mut self, t: Ms, u: usize) -> Result<()> {
        let unit = &mut self.units[u];
        let at = unit.drive.as_ref().expect("a moving unit has its route").position();
        unit.pos = self.net.frame.lonlat(at);
        let status = unit.state;
        self.emit_unit(u, status, t, false)?;
        self.step(t, u);
        Ok(())
    }

    fn arrive(&mut self, t: Ms, u: usize) -> Result<()> {
        self.units[u].drive = None;
        match self.units[u].state {
            UnitStatus::EnRoute => {
                let i = self.units[u].incident.expect("a unit en route has its incident");
                self.units[u].state = UnitStatus::OnScene;
                self.units[u].pos = (self.incidents[i].lon, self.incidents[i].lat);
                self.incidents[i].status = IncidentStatus::OnScene;
                let a = self.emit_incident(i, IncidentStatus::OnScene, t, false)?;
                let b = self.emit_unit(u, UnitStatus::OnScene, t, false)?;
                // The late en_route events arrive now, 1–3 s after the on_scene ones.
                let mut after = a.max(b);
                for line in std::mem::take(&mut self.incidents[i].held) {
                    after += 1 + self.incidents[i].rng.random_range(0..MAX_DELAY_MS);
                    self.post(after, line);
                }
                let dwell = self.units[u].rng.random_range(ON_SCENE_MS.0..=ON_SCENE_MS.1);
                self.at(t + dwell, Action::Clear(u));
            }
            UnitStatus::Returning => {
                self.units[u].state = UnitStatus::Available;
                self.units[u].pos = self.units[u].home;
                self.emit_unit(u, UnitStatus::Available, t, false)?;
                if !self.waiting.is_empty() {
                    let delay = self.dispatcher.random_range(REDISPATCH_MS.0..=REDISPATCH_MS.1);
                    self.at(t + delay, Action::Redispatch);
                }
            }
            other => unreachable!("unit {} arrives while {other:?}", self.units[u].id),
        }
        Ok(())
    }

    fn clear(&mut self, t: Ms, u: usize) -> Result<()> {
        let i = self.units[u].incident.take().expect("a unit on scene has its incident");
        self.incidents[i].status = IncidentStatus::Cleared;
        self.emit_incident(i, IncidentStatus::Cleared, t, false)?;
        self.units[u].state = UnitStatus::Returning;
        self.emit_unit(u, UnitStatus::Returning, t, false)?;
        let (unit, inc) = (&self.units[u], &self.incidents[i]);
        let (_, legs) = self.net.route(inc.xy, &inc.places, unit.home_xy, &unit.home_places, &self.speeds);
        self.units[u].drive = Some(Drive { legs, leg: 0, done_m: 0.0 });
        self.step(t, u);
        Ok(())
    }

    /// Writes an event of incident `i` at `t`; returns its arrival time (held lines: none yet).
    fn emit_incident(&mut self, i: usize, status: IncidentStatus, t: Ms, hold: bool) -> Result<Ms> {
        let inc = &self.incidents[i];
        let payload = IncidentEvent {
            incident: Cow::Borrowed(&inc.id),
            ts: Ts(t),
            status,
            kind: inc.kind,
            severity: Some(inc.severity),
            lon: Some(inc.lon),
            lat: Some(inc.lat),
            unit: inc.unit.map(|u| Cow::Borrowed(self.units[u].id.as_str())),
            note: inc.note.as_deref().map(Cow::Borrowed),
        };
        let line = serde_json::to_string(&Message { topic: &inc.topic, payload: &payload })
            .with_context(|| format!("encoding an event of incident {}", inc.id))?;
        let inc = &mut self.incidents[i];
        let arrival = t + inc.rng.random_range(0..MAX_DELAY_MS);
        if hold {
            inc.held.push(line);
        } else {
            self.post(arrival, line);
        }
        Ok(arrival)
    }

    /// Writes a report of unit `u` at `t` (at least 1 ms after its previous one) at its current
    /// position; returns its arrival time. A held report waits with its incident's late lines.
    fn emit_unit(&mut self, u: usize, status: UnitStatus, t: Ms, hold: bool) -> Result<Ms> {
        let unit = &self.units[u];
        let ts = t.max(unit.last_ts + 1);
        let assigned = matches!(status, UnitStatus::Dispatched | UnitStatus::EnRoute | UnitStatus::OnScene);
        let incident = unit.incident.filter(|_| assigned);
        let payload = UnitEvent {
            unit: Cow::Borrowed(&unit.id),
            ts: Ts(ts),
            kind: unit.kind,
            status,
            lon: Some(unit.pos.0),
            lat: Some(unit.pos.1),
            station: Some(Cow::Borrowed(&unit.station)),
            incident: incident.map(|i| Cow::Borrowed(self.incidents[i].id.as_str())),
        };
        let line = serde_json::to_string(&Message { topic: &unit.topic, payload: &payload })
            .with_context(|| format!("encoding a report of unit {}", unit.id))?;
        let unit = &mut self.units[u];
        unit.last_ts = ts;
        let arrival = ts + unit.rng.random_range(0..MAX_DELAY_MS);
        match incident.filter(|_| hold) {
            Some(i) => self.incidents[i].held.push(line),
            None => self.post(arrival, line),
        }
        Ok(arrival)
    }
}

/// A whole run: the traffic [`Simulator`] and, optionally, the emergency scenario, the grid
/// scenario ([`GridSim`], added with [`Scenario::with_grid`]) and the public-health scenario
/// ([`HealthSim`], added with [`Scenario::with_health`]), merged in arrival order. An
/// iterator over the run's intervals, each a [`Batch`]: the detector readings of the interval,
/// then the emergency events arriving during it, then the grid events (cases and cell sensor
/// readings) arriving during it, then the health events (trips, check-ins, cases). Without the other scenarios the batches are exactly the traffic
/// simulator's.
pub struct Scenario<'c> {
    traffic: Simulator<'c>,
    emergency: Option<EmergencySim<'c>>,
    grid: Option<GridSim<'c>>,
    health: Option<HealthSim>,
    readings: u64,
    events: u64,
    grid_events: u64,
    health_events: u64,
}

impl<'c> Scenario<'c> {
    /// Traffic alone.
    pub fn traffic_only(traffic: Simulator<'c>) -> Self {
        Scenario {
            traffic,
            emergency: None,
            grid: None,
            health: None,
            readings: 0,
            events: 0,
            grid_events: 0,
            health_events: 0,
        }
    }

    /// Traffic and, if given, emergencies over the same run.
    pub fn new(traffic: Simulator<'c>, emergency: Option<EmergencySim<'c>>) -> Result<Self> {
        if let Some(e) = &emergency {
            check_covers(e, traffic.start_ms(), traffic.interval_count(), "emergency")?;
        }
        Ok(Scenario {
            traffic,
            emergency,
            grid: None,
            health: None,
            readings: 0,
            events: 0,
            grid_events: 0,
            health_events: 0,
        })
    }

    /// The same run with the grid scenario as well (replacing any earlier one); `grid` must cover
    /// the traffic run (the same [`FeedOptions`]).
    pub fn with_grid(mut self, grid: GridSim<'c>) -> Result<Self> {
        check_covers(&grid, self.traffic.start_ms(), self.traffic.interval_count(), "grid")?;
        self.grid = Some(grid);
        Ok(self)
    }

    /// The same run with the public-health scenario as well (replacing any earlier one);
    /// `health` must cover the traffic run (the same [`FeedOptions`]).
    pub fn with_health(mut self, health: HealthSim) -> Result<Self> {
        check_covers(&health, self.traffic.start_ms(), self.traffic.interval_count(), "health")?;
        self.health = Some(health);
        Ok(self)
    }

    /// Traffic and emergencies over the run of `feed` in `city`, whose GeoJSON text is `geojson`.
    pub fn with_emergency(
        city: &'c CityModel,
        geojson: &str,
        feed: &FeedOptions,
        emergency: &EmergencyOptions,
    ) -> Result<Self> {
        let traffic = Simulator::new(city, feed)?;
        let net = RoadNetwork::from_geojson(city, geojson)?;
        Scenario::new(traffic, Some(EmergencySim::new(city, net, feed, emergency)?))
    }

    /// The emergency simulator, if on.
    pub fn emergency(&self) -> Option<&EmergencySim<'c>> {
        self.emergency.as_ref()
    }

    /// Start of the first interval, epoch ms.
    pub fn start_ms(&self) -> Ms {
        self.traffic.start_ms()
    }

    /// Number of intervals of the run.
    pub fn interval_count(&self) -> u64 {
        self.traffic.interval_count()
    }

    /// Detector readings yielded so far.
    pub fn readings(&self) -> u64 {
        self.readings
    }

    /// Emergency events yielded so far.
    pub fn emergency_events(&self) -> u64 {
        self.events
    }

    /// The grid simulator, if on.
    pub fn grid(&self) -> Option<&GridSim<'c>> {
        self.grid.as_ref()
    }

    /// Grid events (case events and cell sensor readings) yielded so far.
    pub fn grid_events(&self) -> u64 {
        self.grid_events
    }

    /// The health simulator, if on.
    pub fn health(&self) -> Option<&HealthSim> {
        self.health.as_ref()
    }

    /// Health events (trips, check-ins and case events) yielded so far.
    pub fn health_events(&self) -> u64 {
        self.health_events
    }
}

impl Iterator for Scenario<'_> {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        let mut batch = match self.traffic.next()? {
            Ok(b) => b,
            Err(e) => return Some(Err(e)),
        };
        self.readings += batch.lines.len() as u64;
        let (ts, lines) = (batch.ts, &mut batch.lines);
        let stepped = (|| {
            if let Some(em) = &mut self.emergency {
                em.observe_traffic(lines);
                step(em, ts, lines, &mut self.events)?;
            }
            if let Some(grid) = &mut self.grid {
                step(grid, ts, lines, &mut self.grid_events)?;
            }
            if let Some(health) = &mut self.health {
                step(health, ts, lines, &mut self.health_events)?;
            }
            Ok::<(), anyhow::Error>(())
        })();
        if let Err(e) = stepped {
            return Some(Err(e));
        }
        Some(Ok(batch))
    }
}

/// Every line of a run with emergencies over `city` (GeoJSON text `geojson`), in arrival order.
pub fn scenario_feed(
    city: &CityModel,
    geojson: &str,
    feed: &FeedOptions,
    emergency: &EmergencyOptions,
) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for batch in Scenario::with_emergency(city, geojson, feed, emergency)? {
        lines.extend(batch?.lines);
    }
    Ok(lines)
}

crate::agenda::impl_part!(EmergencySim<'_>);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::city::{CityOptions, generate_city, geojson_text};
    use crate::feed::{DEFAULT_START_MS, detector_feed};
    use citybrain_dataflows::event::{Decoder, Event};
    use citybrain_dataflows::pseudonym::Pseudonymizer;
    use std::collections::{BTreeSet, VecDeque};

    fn city() -> (CityModel, String) {
        let text = geojson_text(&generate_city(&CityOptions::default()).unwrap());
        (CityModel::from_geojson_str(&text).unwrap(), text)
    }

    /// An incident event as decoded, with its line number.
    #[derive(Clone, Debug)]
    struct Inc {
        line: usize,
        id: String,
        ts: Ms,
        status: IncidentStatus,
        kind: IncidentType,
        severity: u8,
        at: (f64, f64),
        unit: Option<String>,
        note: Option<String>,
    }

    /// A unit report as decoded, with its line number.
    #[derive(Clone, Debug)]
    struct Rep {
        line: usize,
        id: String,
        ts: Ms,
        kind: UnitType,
        status: UnitStatus,
        at: (f64, f64),
        station: String,
        incident: Option<String>,
    }

    /// Decodes every line with the processor's decoder (which validates): the incident events,
    /// the unit reports and the number of detector readings.
    fn decode(lines: &[String]) -> (Vec<Inc>, Vec<Rep>, usize) {
        let decoder = Decoder::new("city/", Pseudonymizer::new(vec![7; 32]));
        let (mut incs, mut reps, mut readings) = (Vec::new(), Vec::new(), 0);
        for (n, line) in lines.iter().enumerate() {
            let mut events = 0;
            decoder.decode_line(line.as_bytes(), |topic, ev| {
                events += 1;
                match ev {
                    Ok(Event::Detector(_)) => readings += 1,
                    Ok(Event::Incident(e)) => {
                        assert_eq!(topic, Some(format!("city/emergency/incident/{}", e.incident).as_str()));
                        incs.push(Inc {
                            line: n,
                            id: e.incident.to_string(),
                            ts: e.ts.0,
                            status: e.status,
                            kind: e.kind,
                            severity: e.severity.expect("severity"),
                            at: (e.lon.expect("lon"), e.lat.expect("lat")),
                            unit: e.unit.map(|u| u.to_string()),
                            note: e.note.map(|n| n.to_string()),
                        });
                    }
                    Ok(Event::Unit(e)) => {
                        assert_eq!(topic, Some(format!("city/emergency/unit/{}", e.unit).as_str()));
                        reps.push(Rep {
                            line: n,
                            id: e.unit.to_string(),
                            ts: e.ts.0,
                            kind: e.kind,
                            status: e.status,
                            at: (e.lon.expect("lon"), e.lat.expect("lat")),
                            station: e.station.expect("station").to_string(),
                            incident: e.incident.map(|i| i.to_string()),
                        });
                    }
                    other => panic!("{line}: {other:?}"),
                }
            });
            assert_eq!(events, 1, "{line}");
        }
        (incs, reps, readings)
    }

    fn run(city: &CityModel, text: &str, feed: &FeedOptions, em: &EmergencyOptions) -> Vec<String> {
        scenario_feed(city, text, feed, em).unwrap()
    }

    /// Two busy hours from 07:00 local, with a mass-casualty incident.
    fn busy() -> (FeedOptions, EmergencyOptions) {
        let feed = FeedOptions { duration_min: 120, ..FeedOptions::default() };
        let em = EmergencyOptions {
            call_rate: 3.0,
            mass_casualty: vec!["district-5@30".parse().unwrap()],
            ..EmergencyOptions::default()
        };
        (feed, em)
    }

    fn by_incident(incs: &[Inc]) -> BTreeMap<&str, Vec<&Inc>> {
        let mut map: BTreeMap<&str, Vec<&Inc>> = BTreeMap::new();
        for e in incs {
            map.entry(&e.id).or_default().push(e);
        }
        map
    }

    fn by_unit(reps: &[Rep]) -> BTreeMap<&str, Vec<&Rep>> {
        let mut map: BTreeMap<&str, Vec<&Rep>> = BTreeMap::new();
        for r in reps {
            map.entry(&r.id).or_default().push(r);
        }
        for list in map.values_mut() {
            list.sort_by_key(|r| r.ts);
        }
        map
    }

    /// Metres between two lon/lat points (equirectangular).
    fn metres(a: (f64, f64), b: (f64, f64)) -> f64 {
        let f = Frame::new(a.0, a.1);
        dist(f.xy(a), f.xy(b))
    }

    #[test]
    fn same_seed_same_bytes_and_every_line_decodes() {
        let (city, text) = city();
        let (feed, em) = busy();
        let a = run(&city, &text, &feed, &em);
        assert_eq!(a, run(&city, &text, &feed, &em));
        assert_ne!(a, run(&city, &text, &FeedOptions { seed: 2, ..feed.clone() }, &em));
        let (incs, reps, readings) = decode(&a);
        assert_eq!(readings, city.detectors.len() * 240);
        let calls = by_incident(&incs).len();
        assert!((60..=140).contains(&calls), "{calls} calls in two busy hours (about 54 expected + 12)");
        // Every unit of every station reports; ids, types and stations agree with the model.
        let units = by_unit(&reps);
        assert_eq!(units.len(), city.stations.len() * 2);
        for (id, list) in &units {
            let station = city.stations.iter().find(|s| s.id == list[0].station).expect("a model station");
            let name = station.id.strip_prefix("station-").unwrap();
            assert!(id.starts_with(&format!("unit-{name}-")), "{id} of {}", station.id);
            assert_eq!(Some(list[0].kind), unit_type_of_station(&station.kind));
            assert!(list.iter().all(|r| r.station == station.id && r.kind == list[0].kind));
            assert_eq!(
                (list[0].status, list[0].ts, list[0].at),
                (UnitStatus::Available, DEFAULT_START_MS, (station.location.x(), station.location.y()))
            );
        }
        // Every incident lies in a cell of the city (the processor places it there).
        for e in &incs {
            assert!(city.place(e.at.0, e.at.1).0.is_some(), "{e:?}");
            assert!(e.id.starts_with("inc-20260302-"), "{}", e.id);
        }
        let types: BTreeSet<IncidentType> = incs.iter().map(|e| e.kind).collect();
        assert_eq!(types.len(), 4, "every type occurs: {types:?}");
    }

    #[test]
    fn traffic_is_unchanged() {
        let (city, text) = city();
        let (feed, em) = busy();
        let feed = FeedOptions { duration_min: 30, ..feed };
        let em = EmergencyOptions { mass_casualty: vec!["district-5@5".parse().unwrap()], ..em };
        let traffic = detector_feed(&city, &feed).unwrap();
        let alone: Vec<String> = Scenario::traffic_only(Simulator::new(&city, &feed).unwrap())
            .flat_map(|b| b.unwrap().lines)
            .collect();
        assert_eq!(alone, traffic, "without emergencies: exactly the traffic simulator's lines");
        let mixed = run(&city, &text, &feed, &em);
        let readings: Vec<String> =
            mixed.iter().filter(|l| l.starts_with(r#"{"topic":"city/traffic/"#)).cloned().collect();
        assert_eq!(readings, traffic, "with emergencies: the same readings");
        assert!(mixed.len() > traffic.len());
        // Each batch: the interval's readings first, then emergency events arriving in it (never
        // stamped after the interval ends).
        let scenario = Scenario::with_emergency(&city, &text, &feed, &em).unwrap();
        for (batch, plain) in scenario.zip(Simulator::new(&city, &feed).unwrap()) {
            let (batch, plain) = (batch.unwrap(), plain.unwrap());
            assert_eq!(batch.lines[..plain.lines.len()], plain.lines[..]);
            let (incs, reps, readings) = decode(&batch.lines[plain.lines.len()..]);
            assert_eq!(readings, 0);
            let stamps = incs.iter().map(|e| e.ts).chain(reps.iter().map(|r| r.ts));
            assert!(stamps.into_iter().all(|ts| ts < batch.ts + 30_000));
        }
    }

    #[test]
    fn lifecycle_in_event_time() {
        use IncidentStatus::*;
        let (city, text) = city();
        let (feed, em) = busy();
        let end = DEFAULT_START_MS + 120 * MINUTE;
        let (incs, _, _) = decode(&run(&city, &text, &feed, &em));
        let (mut cleared, mut cancelled) = (0, 0);
        for (id, events) in by_incident(&incs) {
            let at: BTreeMap<IncidentStatus, Ms> = events.iter().map(|e| (e.status, e.ts)).collect();
            assert_eq!(at.len(), events.len(), "{id}: each status once");
            let first = events[0];
            for e in &events {
                assert_eq!((e.kind, e.severity, e.at), (first.kind, first.severity, first.at), "{id}");
                assert!((1..=5).contains(&e.severity));
                assert_eq!(e.unit.is_some(), !matches!(e.status, Reported | Cancelled), "{id}: {e:?}");
            }
            let units: BTreeSet<&String> = events.iter().filter_map(|e| e.unit.as_ref()).collect();
            assert!(units.len() <= 1, "{id}: one unit");
            assert!(at.contains_key(&Reported), "{id}");
            if let Some(&c) = at.get(&Cancelled) {
                cancelled += 1;
                assert_eq!(at.len(), 2, "{id}: cancelled before dispatch");
                assert!(c > at[&Reported]);
                continue;
            }
            // Strictly increasing in event time; each milestone implies the earlier ones (a late
            // en_route may be cut off by the end of the run only).
            let order = [Reported, Dispatched, EnRoute, OnScene, Cleared];
            let present: Vec<Ms> = order.iter().filter_map(|s| at.get(s).copied()).collect();
            assert!(present.windows(2).all(|w| w[0] < w[1]), "{id}: {at:?}");
            for (k, s) in order.iter().enumerate().skip(1) {
                if at.contains_key(s) {
                    for earlier in &order[..k] {
                        let cut = *earlier == EnRoute && at[&OnScene] + 5 * SECOND >= end;
                        assert!(at.contains_key(earlier) || cut, "{id}: {s:?} without {earlier:?}");
                    }
                }
            }
            if let (Some(&d), Some(&r)) = (at.get(&Dispatched), at.get(&EnRoute)) {
                assert!((30 * SECOND..=80 * SECOND).contains(&(r - d)), "{id}: turnout");
                assert!(d - at[&Reported] >= 20 * SECOND, "{id}: call processing");
            }
            if let (Some(&o), Some(&c)) = (at.get(&OnScene), at.get(&Cleared)) {
                cleared += 1;
                assert!((5 * MINUTE..=30 * MINUTE).contains(&(c - o)), "{id}: on scene");
            }
        }
        assert!(cleared >= 20 && cancelled >= 1, "{cleared} cleared, {cancelled} cancelled");
    }

    #[test]
    fn units_are_never_double_booked() {
        use UnitStatus::*;
        let (city, text) = city();
        let (feed, em) = busy();
        let (incs, reps, _) = decode(&run(&city, &text, &feed, &em));
        let incidents = by_incident(&incs);
        let mut served: BTreeSet<&str> = BTreeSet::new();
        for (id, list) in by_unit(&reps) {
            assert!(list.windows(2).all(|w| w[0].ts < w[1].ts), "{id}: one report per ts");
            let mut state = Available;
            let mut job: Option<&str> = None;
            for r in &list[1..] {
                let ok = matches!(
                    (state, r.status),
                    (Available, Dispatched)
                        | (Dispatched, EnRoute)
                        | (EnRoute, EnRoute | OnScene)
                        | (OnScene, Returning)
                        | (Returning, Returning | Available)
                );
                assert!(ok, "{id}: {state:?} → {:?} at {}", r.status, r.ts);
                match r.status {
                    Dispatched => {
                        let inc = r.incident.as_deref().expect("dispatched to an incident");
                        assert!(served.insert(inc), "{inc} served twice");
                        let events = &incidents[inc];
                        assert_eq!(unit_type_for(events[0].kind), r.kind, "{inc}");
                        assert!(events.iter().all(|e| e.unit.as_deref().is_none_or(|u| u == id)), "{inc}");
                        let dispatched = events.iter().find(|e| e.status == IncidentStatus::Dispatched);
                        assert_eq!(dispatched.map(|e| e.ts), Some(r.ts), "{inc}: dispatched together");
                        job = Some(inc);
                    }
                    EnRoute | OnScene => assert_eq!(r.incident.as_deref(), job, "{id}"),
                    _ => {
                        assert_eq!(r.incident, None, "{id}");
                        job = None;
                    }
                }
                state = r.status;
            }
        }
        let dispatched = incs.iter().filter(|e| e.status == IncidentStatus::Dispatched).count();
        assert_eq!(served.len(), dispatched, "every dispatch names its unit");
    }

    #[test]
    fn units_drive_toward_the_incident() {
        let (city, text) = city();
        let (feed, em) = busy();
        let (incs, reps, _) = decode(&run(&city, &text, &feed, &em));
        let incidents = by_incident(&incs);
        let (mut trips, mut steps, mut away) = (0, 0, 0);
        for (id, list) in by_unit(&reps) {
            let mut trip: Vec<&Rep> = Vec::new();
            for r in list {
                match r.status {
                    UnitStatus::EnRoute => trip.push(r),
                    UnitStatus::OnScene => {
                        let inc = &incidents[r.incident.as_deref().unwrap()][0];
                        assert_eq!(r.at, inc.at, "{id} on scene at the incident");
                        assert!(trip.len() >= 2, "{id}: en route, then at least one position");
                        let d: Vec<f64> = trip.iter().map(|p| metres(p.at, inc.at)).collect();
                        assert!(d[d.len() - 1] < d[0], "{id} → {}: {d:?}", inc.id);
                        for (w, p) in d.windows(2).zip(trip.windows(2)) {
                            steps += 1;
                            away += usize::from(w[1] > w[0] + 1.0);
                            let kmh = metres(p[0].at, p[1].at) / ((p[1].ts - p[0].ts) as f64 / 3600.0);
                            assert!(kmh < 130.0, "{id}: {kmh} km/h");
                        }
                        let travel = r.ts - trip[0].ts;
                        assert!(travel < 25 * MINUTE, "{id} → {}: {travel} ms", inc.id);
                        trips += 1;
                        trip.clear();
                    }
                    _ => trip.clear(),
                }
            }
        }
        assert!(trips >= 20, "{trips} trips");
        // Along a road route the straight-line distance rarely grows (a detour round a block).
        assert!(away * 10 < steps, "{away} of {steps} steps away from the incident");
    }

    #[test]
    fn a_mass_casualty_incident_exhausts_the_district() {
        let (city, text) = city();
        let feed = FeedOptions { duration_min: 90, ..FeedOptions::default() };
        let em = EmergencyOptions {
            mass_casualty: vec!["Binjiang@10+12".parse().unwrap()],
            ..EmergencyOptions::default()
        };
        let district = city.district("district-4").unwrap();
        assert_eq!(city.districts[district as usize].name, "Binjiang");
        let (incs, reps, _) = decode(&run(&city, &text, &feed, &em));
        let incidents = by_incident(&incs);
        let mci: Vec<&Vec<&Inc>> = incidents
            .values()
            .filter(|e| e[0].note.as_deref() == Some("mass casualty in Binjiang"))
            .collect();
        assert_eq!(mci.len(), 12);
        let cells: BTreeSet<Option<Idx>> = mci.iter().map(|e| city.place(e[0].at.0, e[0].at.1).0).collect();
        assert_eq!(cells.len(), 1, "one site");
        let cell = cells.into_iter().next().unwrap().unwrap();
        assert_eq!(city.cells[cell as usize].district, district);
        let start = DEFAULT_START_MS + 10 * MINUTE;
        for e in &mci {
            assert!((start..start + 5 * MINUTE).contains(&e[0].ts));
            assert!(e[0].kind == IncidentType::Medical && e[0].severity <= 3);
        }
        // Some calls wait for an ambulance to come back.
        let waited = mci
            .iter()
            .filter(|e| {
                let dispatched = e.iter().find(|x| x.status == IncidentStatus::Dispatched).map(|x| x.ts);
                dispatched.is_none_or(|d| d - e[0].ts > DISPATCH_ROUTINE_MS.1)
            })
            .count();
        assert!(waited >= 1, "no call waited");
        // The district's ambulances are all out at some point.
        let own: BTreeSet<&str> = reps
            .iter()
            .filter(|r| r.kind == UnitType::Ambulance && r.station == "station-ems-4")
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(own.len(), 2);
        let mut reports: Vec<&Rep> = reps.iter().filter(|r| own.contains(r.id.as_str())).collect();
        reports.sort_by_key(|r| r.ts);
        let mut status: BTreeMap<&str, UnitStatus> = BTreeMap::new();
        let mut gap = false;
        for r in reports {
            status.insert(&r.id, r.status);
            gap |= status.len() == 2 && status.values().all(|s| *s != UnitStatus::Available);
        }
        assert!(gap, "no moment without an ambulance in the district");
    }

    #[test]
    fn out_of_order_arrivals() {
        let (city, text) = city();
        let feed = FeedOptions { duration_min: 60, ..FeedOptions::default() };
        let lines_of = |share: f64| {
            let em = EmergencyOptions { call_rate: 3.0, out_of_order: share, ..EmergencyOptions::default() };
            decode(&run(&city, &text, &feed, &em))
        };
        for share in [0.0, 1.0] {
            let (incs, reps, _) = lines_of(share);
            let mut pairs = 0;
            for (id, events) in by_incident(&incs) {
                let line = |s: IncidentStatus| events.iter().find(|e| e.status == s).map(|e| (e.line, e.ts));
                let (Some(en_route), Some(on_scene)) =
                    (line(IncidentStatus::EnRoute), line(IncidentStatus::OnScene))
                else {
                    continue;
                };
                pairs += 1;
                assert!(en_route.1 < on_scene.1, "{id}: event time keeps its order");
                assert_eq!(en_route.0 > on_scene.0, share == 1.0, "{id}: arrival order");
                // The unit's own en_route (its turnout report) likewise.
                let turnout = reps
                    .iter()
                    .filter(|r| r.incident.as_deref() == Some(id) && r.status == UnitStatus::EnRoute)
                    .min_by_key(|r| r.ts)
                    .unwrap();
                assert_eq!(turnout.ts, en_route.1);
                assert_eq!(turnout.line > on_scene.0, share == 1.0, "{id}: unit arrival order");
            }
            assert!(pairs >= 10, "{pairs}");
        }
        // Arrival order everywhere else: no line arrives before an earlier-stamped one by more
        // than the delivery delay, except the late en_route events.
        let (incs, reps, _) = lines_of(DEFAULT_OUT_OF_ORDER);
        let mut stamped: Vec<(usize, Ms)> =
            incs.iter().map(|e| (e.line, e.ts)).chain(reps.iter().map(|r| (r.line, r.ts))).collect();
        stamped.sort_unstable();
        let mut latest = 0;
        let mut late = 0;
        for (_, ts) in stamped {
            if ts + MAX_DELAY_MS < latest {
                late += 1;
            }
            latest = latest.max(ts);
        }
        assert!(late <= 2 * incs.len() / 10, "{late} late lines");
    }

    #[test]
    fn traffic_speeds_steer_the_units() {
        let (city, text) = city();
        let feed = FeedOptions { duration_min: 2, ..FeedOptions::default() };
        let net = RoadNetwork::from_geojson(&city, &text).unwrap();
        let mut sim = EmergencySim::new(&city, net, &feed, &EmergencyOptions::default()).unwrap();
        assert!(sim.speeds.iter().zip(&city.segments).all(|(v, s)| *v == s.speed_limit_kmh * 0.9));
        sim.speeds.fill(-1.0);
        let batch = Simulator::new(&city, &feed).unwrap().next().unwrap().unwrap();
        sim.observe_traffic(&batch.lines);
        assert!(sim.speeds.iter().all(|&v| v > 0.0 && v < 120.0), "every segment read: {:?}", sim.speeds);
        // A segment with a stopped vehicle on its only loop and no traffic crawls.
        let one_lane = city.segments.iter().position(|s| s.lanes == 1).unwrap();
        let det = city.segment_detectors(one_lane as Idx)[0].1;
        let line = format!(
            r#"{{"topic":"city/traffic/detector/{}","payload":{{"sensor":"{}","segment":"{}","ts":{},"interval_s":30,"count":0,"lane":0,"flow_vph":0.0,"occupancy":0.97,"speed_kmh":null}}}}"#,
            city.detectors[det as usize].id,
            city.detectors[det as usize].id,
            city.segments[one_lane].id,
            DEFAULT_START_MS
        );
        sim.observe_traffic(&[line]);
        assert_eq!(sim.speeds[one_lane], BLOCKED_SPEED_KMH);
        assert_eq!(speed_mps(&sim.speeds, Some(one_lane as Idx)), MIN_SPEED_KMH / 3.6);
    }

    #[test]
    fn the_road_network_turns_at_junctions() {
        let (city, text) = city();
        let net = RoadNetwork::from_geojson(&city, &text).unwrap();
        let downstream: usize = city.segments.iter().map(|s| s.downstream.len()).sum();
        assert!(net.link_count() > 2 * downstream, "{} links, {downstream} straight on", net.link_count());
        // Every segment reaches every other.
        let mut seen = vec![false; city.segments.len()];
        let mut queue = VecDeque::from([0 as Idx]);
        seen[0] = true;
        while let Some(s) = queue.pop_front() {
            for &t in &net.next[s as usize] {
                if !std::mem::replace(&mut seen[t as usize], true) {
                    queue.push_back(t);
                }
            }
        }
        assert!(seen.iter().all(|&s| s), "the network is strongly connected from segment 0");
        // A route across the city: about the Manhattan distance, on the network.
        let speeds: Vec<f64> = vec![36.0; city.segments.len()];
        let (a, b) = (city.stations[0].location, city.stations[26].location);
        let (a, b) = (net.frame.xy((a.x(), a.y())), net.frame.xy((b.x(), b.y())));
        let (eta, legs) = net.route(a, &net.place(a), b, &net.place(b), &speeds);
        let metres: f64 = legs.iter().map(|l| l.path_m).sum();
        let manhattan = (a[0] - b[0]).abs() + (a[1] - b[1]).abs();
        assert!(legs.iter().filter(|l| l.seg.is_some()).count() >= 4, "{legs:?}");
        assert!((0.8 * manhattan..1.4 * manhattan).contains(&metres), "{metres} m vs {manhattan}");
        assert!(eta > metres / 10.0 && eta < metres / 5.0, "{eta} s for {metres} m at 10 m/s");
        assert_eq!(legs[0].line.at(0.0), a);
        let last = legs.last().unwrap();
        assert!(dist(last.line.at(last.line.len()), b) < 1e-6);
        let bad =
            RoadNetwork::from_geojson(&city, &text.replace(r#""kind":"segment""#, r#""kind":"segmentx""#));
        assert!(bad.unwrap_err().to_string().contains("has no geometry"));
    }

    #[test]
    fn options_and_specs() {
        let spec: MassCasualtySpec = "district-5@20".parse().unwrap();
        assert_eq!(spec, MassCasualtySpec { district: "district-5".into(), minute: 20, calls: 12 });
        assert_eq!("a@b@3+4".parse::<MassCasualtySpec>().unwrap().district, "a@b");
        assert_eq!("x@3+40".parse::<MassCasualtySpec>().unwrap().calls, 40);
        assert!("district-5".parse::<MassCasualtySpec>().is_err());
        assert!("@3".parse::<MassCasualtySpec>().is_err());
        assert!("d@x".parse::<MassCasualtySpec>().unwrap_err().contains("MINUTE"));
        assert!("d@3+0".parse::<MassCasualtySpec>().unwrap_err().contains("CALLS"));
        let (city, text) = city();
        let feed = FeedOptions::default();
        let err = |em: EmergencyOptions| {
            let net = RoadNetwork::from_geojson(&city, &text).unwrap();
            format!("{:#}", EmergencySim::new(&city, net, &feed, &em).err().unwrap())
        };
        let with = |spec: &str| EmergencyOptions {
            mass_casualty: vec![spec.parse().unwrap()],
            ..EmergencyOptions::default()
        };
        assert!(err(with("nowhere@5")).contains("unknown district \"nowhere\""));
        assert!(err(with("district-1@60")).contains("after the end"));
        assert!(err(EmergencyOptions { call_rate: -1.0, ..Default::default() }).contains("call rate"));
        assert!(err(EmergencyOptions { units_per_station: 0, ..Default::default() }).contains("units"));
        assert!(err(EmergencyOptions { out_of_order: 1.5, ..Default::default() }).contains("out-of-order"));
        // No calls at rate 0: only the units' first reports.
        let quiet = run(&city, &text, &feed, &EmergencyOptions { call_rate: 0.0, ..Default::default() });
        let (incs, reps, _) = decode(&quiet);
        assert!(incs.is_empty() && reps.len() == city.stations.len() * 2);
        // Three units per station.
        let three = EmergencyOptions { units_per_station: 3, ..Default::default() };
        let (_, reps, _) = decode(&run(&city, &text, &FeedOptions { duration_min: 1, ..feed }, &three));
        assert!(reps.iter().any(|r| r.id == "unit-fire-9-3"));
    }

    #[test]
    fn the_call_profile() {
        let mean: f64 = (0..24 * 60).map(|m| raw_profile(m as f64 / 60.0)).sum::<f64>() / (24.0 * 60.0);
        assert!((mean / profile_mean() - 1.0).abs() < 1e-3, "{mean} vs {}", profile_mean());
        let at = |h: f64| raw_profile(h) / profile_mean();
        assert!((at(4.0) - 0.37).abs() < 0.01 && (at(14.0) - 1.42).abs() < 0.01, "{} {}", at(4.0), at(14.0));
        assert_eq!(local_date(DEFAULT_START_MS), "20260302");
        assert_eq!(local_date(DEFAULT_START_MS - 7 * HOUR - 1), "20260301");
        assert_eq!(local_date(951_782_400_000 + 16 * HOUR), "20000301");
        assert_eq!(pick([0.5, 0.5], 0.7), 1);
        assert_eq!(pick(MASS_CASUALTY_SEVERITY_MIX, 0.999_999_999), 2);
    }
}
