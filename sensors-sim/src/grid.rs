//! The grid-management scenario: the cases of the city's grid cells and the officers who work
//! them (`city/grid/case/{id}`), and the sensors of the cells (`city/grid/sensor/{id}`,
//! CONTRACT §2), simulated alongside the detectors of [`crate::feed`] and merged into the run
//! by [`Scenario`](crate::Scenario). The simulator plays the citizens and patrols reporting
//! cases, the operations centre assigning and verifying them, the officers, and the sensors.
//!
//! # Cases
//! Each cell receives cases as a Poisson process (drawn by thinning) whose rate follows a daily
//! profile in the city time zone (UTC+8): [`GridOptions::case_rate`] cases per cell per hour on
//! the daily average (default [`DEFAULT_CASE_RATE`]), from 0.22 × that at night (00:00–06:00)
//! through 1.09 × at 08:00 to 1.75 × from 10:00 to 16:00, 1.31 × at 19:00 and 0.55 × at 22:00
//! (piecewise linear). A case's category is one of [`URGENT_CATEGORIES`] (10 % together),
//! [`ORDINARY_CATEGORIES`] (85 %), or a category the processor has no time limit for
//! (`stray_animal`, `shared_bikes`, `noise_complaint`: 5 %, worked like ordinary cases with a
//! limit of 3 working days); its source hotline 45 %, patrol 25 %, app 30 %. 80 % of cases name
//! their cell (`cell`); the others give a point of it (`lon`/`lat`, rounded to 1e-6°) that the
//! city model places in that cell, at least about a metre from its boundary. Case ids are
//! `case-YYYYMMDDThhmmss-sSEED-NNNNN`: the local start of the run, the seed and the case's number,
//! so runs with other start times or seeds never share a case id.
//!
//! # Lifecycle
//! Every event of a case repeats its category, source and place (cell or point), and from
//! `assigned` on its officer.
//! * `reported` when it arrives.
//! * `assigned` by the operations centre (any time of day) 5–20 min later for an urgent case,
//!   5–60 min for an ordinary one, to one of the cell's `officers` (at random). A case in a cell
//!   without officers stays `reported`.
//! * `in_progress` when the officer starts: an urgent case 5–25 min after assignment, any time;
//!   an ordinary one after 10 min–3 h of **working time** (08:00–20:00 local, every day: officers
//!   work ordinary cases only then).
//! * `resolved` when the work is done. Each category has a time limit the officers work to
//!   (urgent: 2–4 hours; ordinary: 1–5 working days of 12 working hours; see [`time_limit`]);
//!   90 % of cases are resolved within 0.4–0.85 of it (urgent, counted in hours from the report)
//!   or 0.2–0.6 of it (ordinary, counted in working time from the report), and 10 % take 1.3–2.5
//!   times it, so they run overdue. A case is resolved at least 15 min after its officer started.
//! * `closed` by the centre after verification, 10 min–4 h after `resolved` (any time). 5 % of
//!   cases fail verification: they are `reopened` instead, then `in_progress` again (urgent:
//!   10–40 min later; ordinary: 30 min–4 h of working time), `resolved` again (after 20–90 min,
//!   or 1–6 working hours) and `closed` 10 min–4 h later.
//!
//! # Sensors
//! Every cell has a `water_level` sensor; about a third of the cells (chosen at random) also have
//! one of `manhole_tilt`, `smoke`, `pm25`, `noise` and `feeder_load`, in turn. Sensor ids are
//! `ws-{cell}-{kind}`. Each sensor stands at a fixed point of its cell; 80 % report their cell,
//! 20 % that point instead. They report every period from a random phase:
//!
//! | kind | unit | every | value |
//! |---|---|---|---|
//! | `water_level` | m | 60 s | a baseline of 0.02–0.08 ± 0.004 |
//! | `manhole_tilt` | deg | 300 s | 0.6–1.4 ± 0.15 |
//! | `smoke` | %/m | 300 s | 0.06–0.14 ± 0.02 (obscuration) |
//! | `pm25` | µg/m³ | 300 s | 50 + 28 cos(2π (h − 7) / 24) ± 3 (about 20–80, highest at 07:00) |
//! | `noise` | dB(A) | 300 s | 45–47 at night, 58–64 by day, ± 2 per sensor, ± 1.5 |
//! | `feeder_load` | pu (share of rating) | 120 s | 0.32 at 05:00 to 0.72 at 19:00, × 0.95–1.05 per sensor, ± 0.01 |
//!
//! Rare events: a manhole cover tilts to 15° (about once in 5 days per sensor) and stays tilted
//! until a `manhole_cover` case (source `sensor`, reported 2–5 min later, worked urgently) is
//! resolved; at night (22:00–06:00) a noise sensor reads 71–78 dB(A) for 20 min (about once in 3
//! nights per sensor).
//!
//! # Rainstorms
//! A rainstorm ([`RainstormSpec`], `DISTRICT@MINUTE[+DURATION_MIN]`) floods every cell of a
//! district from `MINUTE` (counted from the start of the run) for `DURATION_MIN` minutes (default
//! [`DEFAULT_RAINSTORM_MIN`]): 0–2 min after its start each cell's water level rises, over 8–12
//! min, to a peak of 0.37–0.57 m (± 4 %), stays there to the end of the storm, and drains back to
//! its baseline in 12–20 min (below 0.15 m within 20 min). When a water-level reading exceeds
//! [`FLOOD_ALARM_M`], a `flooding` case (source `sensor`, at the sensor's cell or point) is
//! reported 2–5 min later and worked urgently; the sensor alarms again only once its level has
//! fallen below 0.15 m.
//!
//! # Silent sensors
//! A silent sensor ([`SilentSensorSpec`], `[SENSOR@]MINUTE`) stops reporting from `MINUTE` on, as
//! a dead battery would. Without `SENSOR` a `water_level` sensor is chosen at random (outside
//! the districts of any rainstorm where there is one, and never one already chosen).
//!
//! # Delivery and determinism
//! Every event is stamped with its simulated time and arrives after a random delivery delay in
//! [0, 2 s), as detector readings do; [`GridSim::advance`] returns the lines in arrival order.
//! The random streams of the seed are the grid's own (the cells' arrivals, one per case, one per
//! sensor, one per rainstorm, and one for the layout), separate from the traffic and emergency
//! streams, so the same seed and options always give the same bytes, and turning the grid
//! scenario on or off changes no detector reading and no emergency event.

use crate::agenda::Agenda;
use crate::emergency::{CITY_UTC_OFFSET_MS, HOUR, local_date, local_hour, pick, round_to, stream};
use crate::feed::FeedOptions;
use anyhow::{Context, Result, bail, ensure};
use citybrain_dataflows::CityModel;
use citybrain_dataflows::city::Idx;
use citybrain_dataflows::event::{CaseEvent, CaseSource, CaseStatus, GridSensorReading};
use citybrain_dataflows::time::{MINUTE, Ms, SECOND, Ts};
use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::borrow::Cow;
use std::str::FromStr;

/// Default case rate: cases per cell per hour, on the daily average.
pub const DEFAULT_CASE_RATE: f64 = 0.3;
/// Default length of a rainstorm, minutes.
pub const DEFAULT_RAINSTORM_MIN: u32 = 60;
/// Water level (m) above which a sensor's reading opens a `flooding` case.
pub const FLOOD_ALARM_M: f64 = 0.3;
/// The urgent case categories (10 % of cases together): worked any time, within hours.
pub const URGENT_CATEGORIES: [&str; 6] =
    ["flooding", "manhole_cover", "road_collapse", "gas_leak", "fallen_tree", "fire_hazard"];
/// The ordinary case categories (85 % of cases together): worked in the daytime, within days.
pub const ORDINARY_CATEGORIES: [&str; 7] = [
    "garbage",
    "illegal_parking",
    "street_light",
    "road_damage",
    "illegal_advertising",
    "illegal_construction",
    "graffiti",
];

const DAY: Ms = 24 * HOUR;
/// Largest delivery delay (exclusive), as for detector readings.
const MAX_DELAY_MS: Ms = 2 * SECOND;
/// Officers work ordinary cases from this local hour …
const WORK_OPEN: Ms = 8 * HOUR;
/// … to this one.
const WORK_CLOSE: Ms = 20 * HOUR;
/// Working time of one working day.
const WORKING_DAY: Ms = WORK_CLOSE - WORK_OPEN;
/// Relative case rate by local hour (piecewise linear; normalised to a daily mean of 1).
const CASE_PROFILE: [(f64, f64); 9] = [
    (0.0, 0.2),
    (6.0, 0.2),
    (8.0, 1.0),
    (10.0, 1.6),
    (16.0, 1.6),
    (19.0, 1.2),
    (22.0, 0.5),
    (23.0, 0.3),
    (24.0, 0.2),
];
/// Every category with its share and the time limit the officers work to.
const CATEGORIES: [(&str, f64, Limit); 16] = [
    ("flooding", 0.015, Limit::Hours(3.0)),
    ("manhole_cover", 0.02, Limit::Hours(3.0)),
    ("road_collapse", 0.01, Limit::Hours(4.0)),
    ("gas_leak", 0.01, Limit::Hours(2.0)),
    ("fallen_tree", 0.03, Limit::Hours(4.0)),
    ("fire_hazard", 0.015, Limit::Hours(2.0)),
    ("garbage", 0.25, Limit::WorkingDays(1.0)),
    ("illegal_parking", 0.20, Limit::WorkingDays(1.0)),
    ("street_light", 0.10, Limit::WorkingDays(3.0)),
    ("road_damage", 0.10, Limit::WorkingDays(5.0)),
    ("illegal_advertising", 0.08, Limit::WorkingDays(3.0)),
    ("illegal_construction", 0.05, Limit::WorkingDays(5.0)),
    ("graffiti", 0.07, Limit::WorkingDays(3.0)),
    ("stray_animal", 0.025, DEFAULT_LIMIT),
    ("shared_bikes", 0.015, DEFAULT_LIMIT),
    ("noise_complaint", 0.01, DEFAULT_LIMIT),
];
/// The limit of a category not in the list.
const DEFAULT_LIMIT: Limit = Limit::WorkingDays(3.0);
/// Sources of reported cases and their shares.
const SOURCE_MIX: [(CaseSource, f64); 3] =
    [(CaseSource::Hotline, 0.45), (CaseSource::Patrol, 0.25), (CaseSource::App, 0.30)];
/// Share of cases (and of sensors) giving a point instead of their cell.
const POINT_SHARE: f64 = 0.2;
/// Share of cases that take longer than their limit.
const LATE_SHARE: f64 = 0.10;
/// Share of resolved cases that fail verification.
const REOPEN_SHARE: f64 = 0.05;
/// Resolution time as a share of the limit: urgent cases, ordinary ones, late ones.
const URGENT_FACTOR: (f64, f64) = (0.4, 0.85);
const ORDINARY_FACTOR: (f64, f64) = (0.2, 0.6);
const LATE_FACTOR: (f64, f64) = (1.3, 2.5);
/// Water level (m) below which a sensor that alarmed may alarm again.
const FLOOD_CLEAR_M: f64 = 0.15;
/// From an alarming reading to its case.
const SENSOR_CASE_MS: (Ms, Ms) = (2 * MINUTE, 5 * MINUTE);
/// A manhole cover tilts about this often per sensor and day.
const TILTS_PER_DAY: f64 = 0.2;
/// A noise event at night about this often per sensor and night.
const NOISE_EVENTS_PER_NIGHT: f64 = 0.33;
/// How long a noise event lasts.
const NOISE_EVENT_MS: Ms = 20 * MINUTE;
/// Noise (dB(A)) by local hour, before the per-sensor offset.
const NOISE_PROFILE: [(f64, f64); 7] =
    [(0.0, 47.0), (5.0, 45.0), (7.0, 58.0), (9.0, 62.0), (18.0, 64.0), (22.0, 55.0), (24.0, 47.0)];
/// Feeder load (share of rating) by local hour, before the per-sensor factor.
const FEEDER_PROFILE: [(f64, f64); 8] =
    [(0.0, 0.4), (5.0, 0.32), (8.0, 0.5), (12.0, 0.62), (14.0, 0.6), (19.0, 0.72), (21.0, 0.68), (24.0, 0.4)];

/// Random streams of the seed; traffic and emergencies use `0..` to `6 << 32` and beyond.
const ARRIVAL_STREAMS: u64 = 7 << 32;
const CASE_STREAMS: u64 = 8 << 32;
const SENSOR_STREAMS: u64 = 9 << 32;
const RAINSTORM_STREAMS: u64 = 10 << 32;
const LAYOUT_STREAM: u64 = 11 << 32;

/// The time limit of a category: hours for urgent cases, working days for ordinary ones.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Limit {
    /// Hours from the report, any time of day.
    Hours(f64),
    /// Working days (of 12 working hours, 08:00–20:00 local) from the report.
    WorkingDays(f64),
}

/// The time limit the simulated officers work to for a category (the processor's own limits
/// come from its config); a category not in the simulator's list gets 3 working days.
pub fn time_limit(category: &str) -> Limit {
    CATEGORIES.iter().find(|c| c.0 == category).map_or(DEFAULT_LIMIT, |c| c.2)
}

/// A rainstorm over one district: `DISTRICT@MINUTE[+DURATION_MIN]`, e.g. `district-2@30+60`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RainstormSpec {
    /// District id (or name, any case) of the city model.
    pub district: String,
    /// Minutes after the start of the run when the rain begins.
    pub minute: u32,
    /// How long it rains, minutes (1..=10080).
    pub duration_min: u32,
}

impl FromStr for RainstormSpec {
    type Err = String;

    /// Parses `DISTRICT@MINUTE[+DURATION_MIN]` (DURATION_MIN defaults to
    /// [`DEFAULT_RAINSTORM_MIN`]).
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || format!("rainstorm {s:?} is not DISTRICT@MINUTE[+DURATION_MIN]");
        let (district, rest) = s.rsplit_once('@').ok_or_else(usage)?;
        let (minute, duration) = match rest.split_once('+') {
            Some((m, d)) => (m, Some(d)),
            None => (rest, None),
        };
        let number = |what: &str, part: &str| -> Result<u32, String> {
            part.trim().parse().map_err(|_| format!("{}: {what} {part:?} is not a whole number", usage()))
        };
        let minute = number("MINUTE", minute)?;
        let duration_min =
            duration.map(|d| number("DURATION_MIN", d)).transpose()?.unwrap_or(DEFAULT_RAINSTORM_MIN);
        let district = district.trim();
        if district.is_empty() {
            return Err(usage());
        }
        if !(1..=10080).contains(&duration_min) {
            return Err(format!("{}: DURATION_MIN must be 1..10080", usage()));
        }
        Ok(RainstormSpec { district: district.to_string(), minute, duration_min })
    }
}

/// A sensor that goes silent: `[SENSOR@]MINUTE`, e.g. `45` or `ws-cell-1-2-water_level@45`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SilentSensorSpec {
    /// The sensor id, or `None` for a `water_level` sensor chosen by the simulator (`auto`).
    pub sensor: Option<String>,
    /// Minutes after the start of the run from which it reports nothing.
    pub minute: u32,
}

impl FromStr for SilentSensorSpec {
    type Err = String;

    /// Parses `MINUTE`, `auto@MINUTE` or `SENSOR@MINUTE`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (sensor, minute) = match s.rsplit_once('@') {
            Some((id, m)) => (Some(id.trim()), m),
            None => (None, s),
        };
        let minute = minute.trim().parse().map_err(|_| {
            format!("silent sensor {s:?} is not [SENSOR@]MINUTE: {minute:?} is not a whole number")
        })?;
        let sensor = match sensor {
            Some("") => return Err(format!("silent sensor {s:?} is not [SENSOR@]MINUTE: no SENSOR")),
            Some(id) if id.eq_ignore_ascii_case("auto") => None,
            other => other.map(str::to_string),
        };
        Ok(SilentSensorSpec { sensor, minute })
    }
}

/// What the grid scenario simulates (the seed, start, length and topic prefix are those of the
/// run's [`FeedOptions`]).
#[derive(Clone, Debug, PartialEq)]
pub struct GridOptions {
    /// Cases per cell per hour, on the daily average (0..=100).
    pub case_rate: f64,
    /// Rainstorms.
    pub rainstorms: Vec<RainstormSpec>,
    /// Sensors that go silent.
    pub silent_sensors: Vec<SilentSensorSpec>,
}

impl Default for GridOptions {
    fn default() -> Self {
        GridOptions { case_rate: DEFAULT_CASE_RATE, rainstorms: Vec::new(), silent_sensors: Vec::new() }
    }
}

impl GridOptions {
    /// Checks the ranges (what needs the city and the run is checked by [`GridSim::new`]).
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.case_rate.is_finite() && (0.0..=100.0).contains(&self.case_rate),
            "case rate must be 0..100 cases per cell per hour, not {}",
            self.case_rate
        );
        for r in &self.rainstorms {
            ensure!(
                (1..=10080).contains(&r.duration_min),
                "rainstorm {}@{}: duration must be 1..10080 minutes, not {}",
                r.district,
                r.minute,
                r.duration_min
            );
        }
        Ok(())
    }
}

/// What a cell sensor measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    WaterLevel,
    ManholeTilt,
    Smoke,
    Pm25,
    Noise,
    FeederLoad,
}

impl Kind {
    /// The kinds a third of the cells get one of, in turn.
    const EXTRA: [Kind; 5] = [Kind::ManholeTilt, Kind::Smoke, Kind::Pm25, Kind::Noise, Kind::FeederLoad];

    fn name(self) -> &'static str {
        match self {
            Kind::WaterLevel => "water_level",
            Kind::ManholeTilt => "manhole_tilt",
            Kind::Smoke => "smoke",
            Kind::Pm25 => "pm25",
            Kind::Noise => "noise",
            Kind::FeederLoad => "feeder_load",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Kind::WaterLevel => "m",
            Kind::ManholeTilt => "deg",
            Kind::Smoke => "%/m",
            Kind::Pm25 => "µg/m³",
            Kind::Noise => "dB(A)",
            Kind::FeederLoad => "pu",
        }
    }

    fn period(self) -> Ms {
        match self {
            Kind::WaterLevel => 60 * SECOND,
            Kind::FeederLoad => 120 * SECOND,
            _ => 300 * SECOND,
        }
    }

    /// Decimals of a reading.
    fn digits(self) -> i32 {
        match self {
            Kind::WaterLevel | Kind::Smoke | Kind::FeederLoad => 3,
            Kind::ManholeTilt => 2,
            Kind::Pm25 | Kind::Noise => 1,
        }
    }

    /// The sensor's own constant: its baseline, offset or factor.
    fn baseline(self, rng: &mut ChaCha8Rng) -> f64 {
        match self {
            Kind::WaterLevel => rng.random_range(0.02..0.08),
            Kind::ManholeTilt => rng.random_range(0.6..1.4),
            Kind::Smoke => rng.random_range(0.06..0.14),
            Kind::Pm25 | Kind::Noise => rng.random_range(-2.0..2.0),
            Kind::FeederLoad => rng.random_range(0.95..1.05),
        }
    }
}

/// A cell sensor.
struct Sensor<'c> {
    id: String,
    topic: String,
    kind: Kind,
    cell: Idx,
    cell_id: &'c str,
    /// The point it reports instead of its cell.
    point: Option<(f64, f64)>,
    baseline: f64,
    rng: ChaCha8Rng,
    /// It reports nothing from this instant on.
    silent_from: Ms,
    /// A water-level sensor that alarmed and has not drained yet.
    alarmed: bool,
    /// A tilted manhole cover: tilted until this instant (its case's resolution; `Ms::MAX`
    /// while unknown).
    tilted_until: Option<Ms>,
    /// A noise event lasts until this instant.
    noisy_until: Ms,
}

/// A cell flooded by a rainstorm.
#[derive(Clone, Copy, Debug)]
struct Flood {
    from: Ms,
    rise: Ms,
    end: Ms,
    fall: Ms,
    peak: f64,
}

impl Flood {
    /// How far the water is up at `t`, 0..=1.
    fn shape(&self, t: Ms) -> f64 {
        if t < self.from {
            return 0.0;
        }
        let up = ((t - self.from) as f64 / self.rise as f64).min(1.0);
        let down = if t < self.end { 1.0 } else { 1.0 - ((t - self.end) as f64 / self.fall as f64).min(1.0) };
        up.min(down)
    }
}

/// What happens next.
#[derive(Clone, Copy, Debug)]
enum Action {
    /// A case arrives in a cell.
    Arrival(Idx),
    /// A sensor reports.
    Reading(usize),
    /// A sensor's alarm becomes a case.
    SensorCase(usize),
}

/// A case about to be written.
struct Draft<'a> {
    id: String,
    topic: String,
    category: &'static str,
    cell: Option<&'a str>,
    point: Option<(f64, f64)>,
    source: CaseSource,
}

/// One recording line (CONTRACT §4).
#[derive(Serialize)]
struct Message<'a, P> {
    topic: &'a str,
    payload: &'a P,
}

/// A piecewise-linear profile at `x`.
fn piecewise(points: &[(f64, f64)], x: f64) -> f64 {
    points
        .windows(2)
        .find(|w| x < w[1].0)
        .map_or(points[0].1, |w| w[0].1 + (w[1].1 - w[0].1) * (x - w[0].0) / (w[1].0 - w[0].0))
}

/// The daily mean of a piecewise-linear profile over 0..24 h.
fn profile_mean(points: &[(f64, f64)]) -> f64 {
    points.windows(2).map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0).sum::<f64>() / 24.0
}

/// Local midnight before (or at) `t`.
fn local_midnight(t: Ms) -> Ms {
    t - (t + CITY_UTC_OFFSET_MS) % DAY
}

/// The instant `work` of working time after `t` (working time starts at the next opening when
/// `t` is outside working hours).
fn add_working(mut t: Ms, mut work: Ms) -> Ms {
    loop {
        let day = local_midnight(t);
        let (open, close) = (day + WORK_OPEN, day + WORK_CLOSE);
        if t >= close {
            t = day + DAY + WORK_OPEN;
            continue;
        }
        t = t.max(open);
        if work < close - t {
            return t + work;
        }
        work -= close - t;
        t = close;
    }
}

/// Whether `t` is at night for noise events (22:00–06:00 local).
fn night(t: Ms) -> bool {
    let h = local_hour(t);
    !(6.0..22.0).contains(&h)
}

/// A uniform draw from an inclusive range of milliseconds.
fn ms_in(rng: &mut ChaCha8Rng, (lo, hi): (Ms, Ms)) -> Ms {
    rng.random_range(lo..=hi)
}

/// A random point of `cell` (rounded to 1e-6°) that the city model places in that cell, and
/// every point within 1e-5° (about a metre) of it too: strictly inside, never on a boundary.
/// `None` for a cell too small or odd to find one.
fn inner_point(city: &CityModel, cell: Idx, rng: &mut ChaCha8Rng) -> Option<(f64, f64)> {
    const AROUND: f64 = 1e-5;
    let area = &city.cells[cell as usize].area;
    let (mut lo, mut hi) = ((f64::INFINITY, f64::INFINITY), (f64::NEG_INFINITY, f64::NEG_INFINITY));
    for c in area.0.iter().flat_map(|poly| poly.exterior().0.iter()) {
        (lo.0, lo.1, hi.0, hi.1) = (lo.0.min(c.x), lo.1.min(c.y), hi.0.max(c.x), hi.1.max(c.y));
    }
    if !(lo.0.is_finite() && lo.1.is_finite() && hi.0 > lo.0 && hi.1 > lo.1) {
        return None;
    }
    let inside = |lon: f64, lat: f64| {
        [(0.0, 0.0), (AROUND, 0.0), (-AROUND, 0.0), (0.0, AROUND), (0.0, -AROUND)]
            .iter()
            .all(|(dx, dy)| city.place(lon + dx, lat + dy).0 == Some(cell))
    };
    for _ in 0..200 {
        let lon = round_to(rng.random_range(lo.0..hi.0), 6);
        let lat = round_to(rng.random_range(lo.1..hi.1), 6);
        if inside(lon, lat) {
            return Some((lon, lat));
        }
    }
    None
}

/// The run tag of case ids: the local start time of the run and the seed.
fn run_tag(start: Ms, seed: u64) -> String {
    let s = (start + CITY_UTC_OFFSET_MS) % DAY / SECOND;
    format!("{}T{:02}{:02}{:02}-s{seed}", local_date(start), s / 3600, s / 60 % 60, s % 60)
}

/// The grid simulator over one run: an event-driven simulation of cases, officers and cell
/// sensors (see the module docs), advanced interval by interval by
/// [`Scenario`](crate::Scenario).
pub struct GridSim<'c> {
    city: &'c CityModel,
    opts: GridOptions,
    seed: u64,
    start: Ms,
    end: Ms,
    interval: Ms,
    topic_prefix: String,
    run_tag: String,
    /// Each cell's arrival stream.
    arrivals: Vec<ChaCha8Rng>,
    /// Each cell's floods.
    floods: Vec<Vec<Flood>>,
    sensors: Vec<Sensor<'c>>,
    cases: usize,
    profile_max: f64,
    profile_mean: f64,
    /// Actions by time, and lines until they arrive.
    agenda: Agenda<Action>,
}

impl<'c> GridSim<'c> {
    /// Prepares the scenario over the run of `feed` (seed, start, length, interval, topic prefix)
    /// in `city`, checking the options first: rainstorm districts must exist (by id or name),
    /// silent sensors too, and both must begin before the end of the run.
    pub fn new(city: &'c CityModel, feed: &FeedOptions, opts: &GridOptions) -> Result<Self> {
        opts.validate()?;
        ensure!((2..=3600).contains(&feed.interval_s), "interval must be 2..3600 s, not {}", feed.interval_s);
        let interval = feed.interval_s as Ms * SECOND;
        let start = feed.start_ms - feed.start_ms % interval;
        let end = start + feed.duration_min as Ms * MINUTE / interval * interval;
        let topic_prefix = feed.topic_prefix.trim_end_matches('/').to_string();
        let mut layout = stream(feed.seed, LAYOUT_STREAM);
        // One water-level sensor per cell, and one more kind in about a third of the cells.
        let mut kinds: Vec<(Idx, Kind)> =
            (0..city.cells.len() as Idx).map(|c| (c, Kind::WaterLevel)).collect();
        let mut order: Vec<Idx> = (0..city.cells.len() as Idx).collect();
        order.shuffle(&mut layout);
        let extra = city.cells.len().div_ceil(3);
        kinds
            .extend(order[..extra].iter().enumerate().map(|(k, &c)| (c, Kind::EXTRA[k % Kind::EXTRA.len()])));
        let sensors = kinds
            .into_iter()
            .enumerate()
            .map(|(s, (cell, kind))| {
                let mut rng = stream(feed.seed, SENSOR_STREAMS + s as u64);
                let cell_id = city.cells[cell as usize].id.as_str();
                let id = format!("ws-{cell_id}-{}", kind.name());
                let at = inner_point(city, cell, &mut rng);
                let point = at.filter(|_| rng.random_bool(POINT_SHARE));
                Sensor {
                    topic: format!("{topic_prefix}/grid/sensor/{id}"),
                    id,
                    kind,
                    cell,
                    cell_id,
                    point,
                    baseline: kind.baseline(&mut rng),
                    rng,
                    silent_from: Ms::MAX,
                    alarmed: false,
                    tilted_until: None,
                    noisy_until: 0,
                }
            })
            .collect();
        let profile_mean = profile_mean(&CASE_PROFILE);
        let mut sim = GridSim {
            city,
            opts: opts.clone(),
            seed: feed.seed,
            start,
            end,
            interval,
            topic_prefix,
            run_tag: run_tag(start, feed.seed),
            arrivals: (0..city.cells.len()).map(|c| stream(feed.seed, ARRIVAL_STREAMS + c as u64)).collect(),
            floods: vec![Vec::new(); city.cells.len()],
            sensors,
            cases: 0,
            profile_max: CASE_PROFILE.iter().map(|p| p.1).fold(0.0, f64::max) / profile_mean,
            profile_mean,
            agenda: Agenda::default(),
        };
        let mut storm_districts = Vec::new();
        for (k, spec) in opts.rainstorms.iter().enumerate() {
            storm_districts.push(sim.add_rainstorm(k, spec, feed.duration_min)?);
        }
        for spec in &opts.silent_sensors {
            sim.add_silent(spec, feed.duration_min, &storm_districts, &mut layout)?;
        }
        for c in 0..city.cells.len() {
            if let Some(t) = sim.next_arrival(c, start) {
                sim.at(t, Action::Arrival(c as Idx));
            }
        }
        for s in 0..sim.sensors.len() {
            let period = sim.sensors[s].kind.period();
            let phase = sim.sensors[s].rng.random_range(0..period / SECOND) * SECOND;
            sim.at(start + phase, Action::Reading(s));
        }
        Ok(sim)
    }

    /// The district of a rainstorm spec (id or name), with an error naming the spec.
    fn district(&self, what: &str, name: &str) -> Result<Idx> {
        let city = self.city;
        let found = city.district(name).or_else(|| {
            city.districts.iter().position(|d| d.name.eq_ignore_ascii_case(name)).map(|d| d as Idx)
        });
        match found {
            Some(d) => Ok(d),
            None => {
                let examples: Vec<String> =
                    city.districts.iter().take(3).map(|d| format!("{} ({})", d.id, d.name)).collect();
                bail!("{what}: unknown district {name:?} (e.g. {})", examples.join(", "))
            }
        }
    }

    fn add_rainstorm(&mut self, k: usize, spec: &RainstormSpec, duration_min: u32) -> Result<Idx> {
        let what = format!("rainstorm {}@{}+{}", spec.district, spec.minute, spec.duration_min);
        let district = self.district(&what, &spec.district)?;
        ensure!(
            spec.minute < duration_min,
            "{what}: starts at minute {}, after the end of the {duration_min}-minute run",
            spec.minute
        );
        let mut rng = stream(self.seed, RAINSTORM_STREAMS + k as u64);
        let from = self.start + spec.minute as Ms * MINUTE;
        let end = from + spec.duration_min as Ms * MINUTE;
        let max_lag = (2 * MINUTE).min(spec.duration_min as Ms * MINUTE / 4);
        for (c, cell) in self.city.cells.iter().enumerate() {
            if cell.district != district {
                continue;
            }
            self.floods[c].push(Flood {
                from: from + ms_in(&mut rng, (0, max_lag)),
                rise: ms_in(&mut rng, (8 * MINUTE, 12 * MINUTE)),
                end,
                fall: ms_in(&mut rng, (12 * MINUTE, 20 * MINUTE)),
                peak: rng.random_range(0.37..0.57),
            });
        }
        Ok(district)
    }

    fn add_silent(
        &mut self,
        spec: &SilentSensorSpec,
        duration_min: u32,
        storm_districts: &[Idx],
        layout: &mut ChaCha8Rng,
    ) -> Result<()> {
        let what = format!("silent sensor {}@{}", spec.sensor.as_deref().unwrap_or("auto"), spec.minute);
        ensure!(
            spec.minute < duration_min,
            "{what}: starts at minute {}, after the end of the {duration_min}-minute run",
            spec.minute
        );
        let s = match &spec.sensor {
            Some(id) => match self.sensors.iter().position(|s| s.id == *id) {
                Some(s) => s,
                None => {
                    let example = self.sensors.first().map_or("none", |s| s.id.as_str());
                    bail!("{what}: unknown sensor {id:?} (e.g. {example:?})");
                }
            },
            None => {
                let free = |s: &&Sensor| s.kind == Kind::WaterLevel && s.silent_from == Ms::MAX;
                let dry = |s: &&Sensor| !storm_districts.contains(&self.city.cells[s.cell as usize].district);
                let mut candidates: Vec<usize> = (0..self.sensors.len())
                    .filter(|&s| free(&&self.sensors[s]) && dry(&&self.sensors[s]))
                    .collect();
                if candidates.is_empty() {
                    candidates = (0..self.sensors.len()).filter(|&s| free(&&self.sensors[s])).collect();
                }
                ensure!(!candidates.is_empty(), "{what}: no water_level sensor left to silence");
                candidates[layout.random_range(0..candidates.len())]
            }
        };
        let from = self.start + spec.minute as Ms * MINUTE;
        self.sensors[s].silent_from = self.sensors[s].silent_from.min(from);
        Ok(())
    }

    /// Number of cell sensors.
    pub fn sensor_count(&self) -> usize {
        self.sensors.len()
    }

    /// Number of cases reported so far (including those opened by sensors).
    pub fn case_count(&self) -> usize {
        self.cases
    }

    /// The silent sensors with the instant (epoch ms) from which they report nothing.
    pub fn silent_sensors(&self) -> Vec<(&str, Ms)> {
        self.sensors
            .iter()
            .filter(|s| s.silent_from < Ms::MAX)
            .map(|s| (s.id.as_str(), s.silent_from))
            .collect()
    }

    /// The options of the scenario.
    pub fn options(&self) -> &GridOptions {
        &self.opts
    }

    /// Simulates up to `until` (exclusive; at most the end of the run) and returns the lines that
    /// arrive before it, in arrival order (so every one is stamped before `until`; an event
    /// stamped just before it whose delivery delay carries it past comes with the next call).
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

    fn handle(&mut self, t: Ms, action: Action) -> Result<()> {
        match action {
            Action::Arrival(c) => self.arrival(t, c),
            Action::Reading(s) => self.reading(t, s),
            Action::SensorCase(s) => self.sensor_case(t, s),
        }
    }

    /// The next case of cell `c` after `after`, if before the end of the run (thinning of a
    /// Poisson process at the profile's peak rate).
    fn next_arrival(&mut self, c: usize, after: Ms) -> Option<Ms> {
        let peak_per_ms = self.opts.case_rate * self.profile_max / HOUR as f64;
        if peak_per_ms <= 0.0 {
            return None;
        }
        let rng = &mut self.arrivals[c];
        let mut t = after;
        loop {
            let gap = -(1.0 - rng.random::<f64>()).ln() / peak_per_ms;
            t = t.saturating_add((gap.ceil() as Ms).max(1));
            if t >= self.end {
                return None;
            }
            let rate = piecewise(&CASE_PROFILE, local_hour(t)) / self.profile_mean;
            if rng.random::<f64>() * self.profile_max < rate {
                return Some(t);
            }
        }
    }

    /// A case reported by a citizen or a patrol in cell `c`.
    fn arrival(&mut self, t: Ms, c: Idx) -> Result<()> {
        let rng = &mut self.arrivals[c as usize];
        let category = CATEGORIES[pick(CATEGORIES.map(|x| x.1), rng.random())].0;
        let source = SOURCE_MIX[pick(SOURCE_MIX.map(|x| x.1), rng.random())].0;
        let with_point = rng.random_bool(POINT_SHARE);
        self.open_case(t, c, None, with_point, category, source)?;
        if let Some(next) = self.next_arrival(c as usize, t) {
            self.at(next, Action::Arrival(c));
        }
        Ok(())
    }

    /// The case a sensor's alarm opens, at the sensor's cell or point.
    fn sensor_case(&mut self, t: Ms, s: usize) -> Result<()> {
        let sensor = &self.sensors[s];
        let category = if sensor.kind == Kind::ManholeTilt { "manhole_cover" } else { "flooding" };
        let (cell, point) = (sensor.cell, sensor.point);
        let resolved = self.open_case(t, cell, point, false, category, CaseSource::Sensor)?;
        if self.sensors[s].kind == Kind::ManholeTilt {
            self.sensors[s].tilted_until = Some(resolved.unwrap_or(Ms::MAX));
        }
        Ok(())
    }

    /// Opens case number `self.cases` in `cell` at `t` and writes its whole lifecycle (see the
    /// module docs): at `point` when given, at a random point of the cell when `random_point`,
    /// else naming the cell. Returns when it is first resolved (`None`: never, for lack of an
    /// officer).
    fn open_case(
        &mut self,
        t: Ms,
        cell: Idx,
        point: Option<(f64, f64)>,
        random_point: bool,
        category: &'static str,
        source: CaseSource,
    ) -> Result<Option<Ms>> {
        use CaseStatus::*;
        let n = self.cases;
        self.cases += 1;
        let city = self.city;
        let mut rng = stream(self.seed, CASE_STREAMS + n as u64);
        let point = point.or_else(|| if random_point { inner_point(city, cell, &mut rng) } else { None });
        let c = &city.cells[cell as usize];
        let id = format!("case-{}-{:05}", self.run_tag, n + 1);
        let draft = Draft {
            topic: format!("{}/grid/case/{id}", self.topic_prefix),
            id,
            category,
            cell: point.is_none().then_some(c.id.as_str()),
            point,
            source,
        };
        self.post_case(&draft, &mut rng, Reported, t, None)?;
        if c.officers.is_empty() {
            return Ok(None);
        }
        let officer = c.officers[rng.random_range(0..c.officers.len())].as_str();
        let limit = time_limit(category);
        let factor = if rng.random_bool(LATE_SHARE) {
            LATE_FACTOR
        } else if matches!(limit, Limit::Hours(_)) {
            URGENT_FACTOR
        } else {
            ORDINARY_FACTOR
        };
        let factor = rng.random_range(factor.0..factor.1);
        let mut events = Vec::with_capacity(8);
        let (assigned, started, resolved) = match limit {
            Limit::Hours(h) => {
                let assigned = t + ms_in(&mut rng, (5 * MINUTE, 20 * MINUTE));
                let started = assigned + ms_in(&mut rng, (5 * MINUTE, 25 * MINUTE));
                let target = t + (factor * h * HOUR as f64) as Ms;
                (assigned, started, target.max(started + ms_in(&mut rng, (15 * MINUTE, 40 * MINUTE))))
            }
            Limit::WorkingDays(d) => {
                let assigned = t + ms_in(&mut rng, (5 * MINUTE, 60 * MINUTE));
                let started = add_working(assigned, ms_in(&mut rng, (10 * MINUTE, 3 * HOUR)));
                let target = add_working(t, (factor * d * WORKING_DAY as f64) as Ms);
                let least = add_working(started, ms_in(&mut rng, (15 * MINUTE, 60 * MINUTE)));
                (assigned, started, target.max(least))
            }
        };
        events.extend([(Assigned, assigned), (InProgress, started), (Resolved, resolved)]);
        let verified = resolved + ms_in(&mut rng, (10 * MINUTE, 4 * HOUR));
        if rng.random_bool(REOPEN_SHARE) {
            let (again, done) = match limit {
                Limit::Hours(_) => {
                    let again = verified + ms_in(&mut rng, (10 * MINUTE, 40 * MINUTE));
                    (again, again + ms_in(&mut rng, (20 * MINUTE, 90 * MINUTE)))
                }
                Limit::WorkingDays(_) => {
                    let again = add_working(verified, ms_in(&mut rng, (30 * MINUTE, 4 * HOUR)));
                    (again, add_working(again, ms_in(&mut rng, (HOUR, 6 * HOUR))))
                }
            };
            let closed = done + ms_in(&mut rng, (10 * MINUTE, 4 * HOUR));
            events.extend([(Reopened, verified), (InProgress, again), (Resolved, done), (Closed, closed)]);
        } else {
            events.push((Closed, verified));
        }
        for (status, ts) in events {
            self.post_case(&draft, &mut rng, status, ts, Some(officer))?;
        }
        Ok(Some(resolved))
    }

    /// Writes one event of a case (it arrives after the delivery delay; past the end of the run
    /// it is never returned).
    fn post_case(
        &mut self,
        draft: &Draft<'_>,
        rng: &mut ChaCha8Rng,
        status: CaseStatus,
        ts: Ms,
        officer: Option<&str>,
    ) -> Result<()> {
        let payload = CaseEvent {
            case_id: Cow::Borrowed(&draft.id),
            ts: Ts(ts),
            status,
            category: Cow::Borrowed(draft.category),
            cell: draft.cell.map(Cow::Borrowed),
            lon: draft.point.map(|p| p.0),
            lat: draft.point.map(|p| p.1),
            source: Some(draft.source),
            officer: officer.map(Cow::Borrowed),
        };
        let line = serde_json::to_string(&Message { topic: &draft.topic, payload: &payload })
            .with_context(|| format!("encoding an event of case {}", draft.id))?;
        let arrival = ts + rng.random_range(0..MAX_DELAY_MS);
        self.post(arrival, line);
        Ok(())
    }

    /// A reading of sensor `s` at `t`, and the next one (unless it has gone silent).
    fn reading(&mut self, t: Ms, s: usize) -> Result<()> {
        let floods = &self.floods;
        let sensor = &mut self.sensors[s];
        if t >= sensor.silent_from {
            return Ok(());
        }
        let rng = &mut sensor.rng;
        let hour = local_hour(t);
        let mut alarm = false;
        let value = match sensor.kind {
            Kind::WaterLevel => {
                let rise = floods[sensor.cell as usize]
                    .iter()
                    .map(|f| f.shape(t) * (f.peak - sensor.baseline))
                    .fold(0.0, f64::max);
                let v = sensor.baseline
                    + rise * (1.0 + rng.random_range(-0.04..0.04))
                    + rng.random_range(-0.004..0.004);
                let v = round_to(v.max(0.0), 3);
                if v > FLOOD_ALARM_M && !sensor.alarmed {
                    sensor.alarmed = true;
                    alarm = true;
                } else if v < FLOOD_CLEAR_M {
                    sensor.alarmed = false;
                }
                v
            }
            Kind::ManholeTilt => {
                if sensor.tilted_until.is_some_and(|until| t >= until) {
                    sensor.tilted_until = None;
                }
                let tilt =
                    rng.random::<f64>() < TILTS_PER_DAY * Kind::ManholeTilt.period() as f64 / DAY as f64;
                if sensor.tilted_until.is_none() && tilt {
                    sensor.tilted_until = Some(Ms::MAX);
                    alarm = true;
                }
                match sensor.tilted_until {
                    Some(_) => 15.0 + rng.random_range(-0.3..0.3),
                    None => (sensor.baseline + rng.random_range(-0.15..0.15)).max(0.0),
                }
            }
            Kind::Smoke => (sensor.baseline + rng.random_range(-0.02..0.02)).max(0.0),
            Kind::Pm25 => {
                let diurnal = 50.0 + 28.0 * (std::f64::consts::TAU * (hour - 7.0) / 24.0).cos();
                (diurnal + sensor.baseline + rng.random_range(-3.0..3.0)).max(1.0)
            }
            Kind::Noise => {
                // Night lasts 8 hours: 96 readings every 300 s.
                let start_event = rng.random::<f64>() < NOISE_EVENTS_PER_NIGHT / 96.0;
                if t >= sensor.noisy_until && night(t) && start_event {
                    sensor.noisy_until = t + NOISE_EVENT_MS;
                }
                if t < sensor.noisy_until {
                    rng.random_range(71.0..78.0)
                } else {
                    piecewise(&NOISE_PROFILE, hour) + sensor.baseline + rng.random_range(-1.5..1.5)
                }
            }
            Kind::FeederLoad => {
                (piecewise(&FEEDER_PROFILE, hour) * sensor.baseline + rng.random_range(-0.01..0.01)).max(0.0)
            }
        };
        let value = round_to(value, sensor.kind.digits());
        let payload = GridSensorReading {
            sensor: Cow::Borrowed(&sensor.id),
            ts: Ts(t),
            kind: Cow::Borrowed(sensor.kind.name()),
            value,
            cell: sensor.point.is_none().then_some(Cow::Borrowed(sensor.cell_id)),
            lon: sensor.point.map(|p| p.0),
            lat: sensor.point.map(|p| p.1),
            unit: Some(Cow::Borrowed(sensor.kind.unit())),
        };
        let line = serde_json::to_string(&Message { topic: &sensor.topic, payload: &payload })
            .with_context(|| format!("encoding a reading of sensor {}", sensor.id))?;
        let arrival = t + rng.random_range(0..MAX_DELAY_MS);
        let case_after = alarm.then(|| ms_in(rng, SENSOR_CASE_MS));
        let next = t + sensor.kind.period();
        self.post(arrival, line);
        if let Some(after) = case_after {
            self.at(t + after, Action::SensorCase(s));
        }
        if next < self.end {
            self.at(next, Action::Reading(s));
        }
        Ok(())
    }
}

crate::agenda::impl_part!(GridSim<'_>);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::city::{CityOptions, generate_city, geojson_text};
    use crate::feed::{DEFAULT_START_MS, Simulator};
    use crate::{EmergencyOptions, Scenario};
    use citybrain_dataflows::event::{Decoder, Event};
    use citybrain_dataflows::pseudonym::Pseudonymizer;
    use std::collections::BTreeMap;
    use std::collections::BTreeSet;
    use std::sync::OnceLock;

    fn city() -> &'static CityModel {
        static CITY: OnceLock<CityModel> = OnceLock::new();
        CITY.get_or_init(|| {
            CityModel::from_geojson_str(&geojson_text(&generate_city(&CityOptions::default()).unwrap()))
                .unwrap()
        })
    }

    /// A case event as decoded, with its line number.
    #[derive(Clone, Debug)]
    struct Case {
        line: usize,
        id: String,
        ts: Ms,
        status: CaseStatus,
        category: String,
        cell: Option<String>,
        at: Option<(f64, f64)>,
        source: CaseSource,
        officer: Option<String>,
    }

    /// A sensor reading as decoded, with its line number.
    #[derive(Clone, Debug)]
    struct Reading {
        line: usize,
        id: String,
        ts: Ms,
        kind: String,
        value: f64,
        cell: Option<String>,
        at: Option<(f64, f64)>,
        unit: String,
    }

    /// Decodes every line with the processor's decoder: the case events, the sensor readings
    /// and the number of other lines (detector readings, emergency events).
    fn decode(lines: &[String]) -> (Vec<Case>, Vec<Reading>, usize) {
        let decoder = Decoder::new("city/", Pseudonymizer::new(vec![7; 32]));
        let (mut cases, mut readings, mut other) = (Vec::new(), Vec::new(), 0);
        for (n, line) in lines.iter().enumerate() {
            let mut events = 0;
            decoder.decode_line(line.as_bytes(), |topic, ev| {
                events += 1;
                match ev {
                    Ok(Event::Case(e)) => {
                        assert_eq!(topic, Some(format!("city/grid/case/{}", e.case_id).as_str()));
                        assert_eq!(e.cell.is_some(), e.lon.is_none(), "{line}: cell or lon/lat");
                        assert_eq!(e.lon.is_some(), e.lat.is_some(), "{line}");
                        cases.push(Case {
                            line: n,
                            id: e.case_id.to_string(),
                            ts: e.ts.0,
                            status: e.status,
                            category: e.category.to_string(),
                            cell: e.cell.map(|c| c.to_string()),
                            at: e.lon.zip(e.lat),
                            source: e.source.expect("source"),
                            officer: e.officer.map(|o| o.to_string()),
                        });
                    }
                    Ok(Event::GridSensor(r)) => {
                        assert_eq!(topic, Some(format!("city/grid/sensor/{}", r.sensor).as_str()));
                        assert_eq!(r.cell.is_some(), r.lon.is_none(), "{line}: cell or lon/lat");
                        readings.push(Reading {
                            line: n,
                            id: r.sensor.to_string(),
                            ts: r.ts.0,
                            kind: r.kind.to_string(),
                            value: r.value,
                            cell: r.cell.map(|c| c.to_string()),
                            at: r.lon.zip(r.lat),
                            unit: r.unit.expect("unit").to_string(),
                        });
                    }
                    Ok(_) => other += 1,
                    Err(e) => panic!("{line}: {e:?}"),
                }
            });
            assert_eq!(events, 1, "{line}");
        }
        (cases, readings, other)
    }

    fn run(feed: &FeedOptions, opts: &GridOptions) -> Vec<String> {
        let mut sim = GridSim::new(city(), feed, opts).unwrap();
        let lines = sim.advance(Ms::MAX).unwrap();
        assert!(sim.advance(Ms::MAX).unwrap().is_empty());
        lines
    }

    /// A busy day from 07:00 local: many cases, a rainstorm in district-2 from 09:00 to 10:00, a
    /// water-level sensor silent from 12:00.
    fn busy_opts() -> (FeedOptions, GridOptions) {
        let feed = FeedOptions { duration_min: 24 * 60, ..FeedOptions::default() };
        let grid = GridOptions {
            case_rate: 2.0,
            rainstorms: vec!["district-2@120+60".parse().unwrap()],
            silent_sensors: vec!["300".parse().unwrap()],
        };
        (feed, grid)
    }

    /// The busy day's lines, decoded (computed once).
    fn busy() -> &'static (Vec<String>, Vec<Case>, Vec<Reading>) {
        static BUSY: OnceLock<(Vec<String>, Vec<Case>, Vec<Reading>)> = OnceLock::new();
        BUSY.get_or_init(|| {
            let (feed, grid) = busy_opts();
            let lines = run(&feed, &grid);
            let (cases, readings, other) = decode(&lines);
            assert_eq!(other, 0);
            (lines, cases, readings)
        })
    }

    fn by_case(cases: &[Case]) -> BTreeMap<&str, Vec<&Case>> {
        let mut map: BTreeMap<&str, Vec<&Case>> = BTreeMap::new();
        for e in cases {
            map.entry(&e.id).or_default().push(e);
        }
        map
    }

    /// The cell a case or reading is in: its cell, or the cell the city model places its point in.
    fn cell_of(cell: &Option<String>, at: Option<(f64, f64)>) -> Idx {
        let city = city();
        match (cell, at) {
            (Some(c), None) => city.cell(c).expect("a model cell"),
            (None, Some((lon, lat))) => {
                let c = city.place(lon, lat).0.expect("a point in a cell");
                for (dx, dy) in [(1e-5, 0.0), (-1e-5, 0.0), (0.0, 1e-5), (0.0, -1e-5)] {
                    assert_eq!(city.place(lon + dx, lat + dy).0, Some(c), "{lon} {lat} is near a boundary");
                }
                c
            }
            other => panic!("{other:?}"),
        }
    }

    /// Whether `t` is in the officers' working hours (08:00–20:00 local).
    fn working(t: Ms) -> bool {
        (WORK_OPEN..WORK_CLOSE).contains(&(t - local_midnight(t)))
    }

    fn is_urgent(category: &str) -> bool {
        URGENT_CATEGORIES.contains(&category)
    }

    #[test]
    fn same_seed_same_lines_in_arrival_order() {
        let (lines, cases, readings) = busy();
        let (feed, grid) = busy_opts();
        let short = FeedOptions { duration_min: 360, ..feed };
        let a = run(&short, &grid);
        assert_eq!(a[..], lines[..a.len()], "a shorter run is a prefix of a longer one");
        assert_eq!(a, run(&short, &grid));
        assert_ne!(a, run(&FeedOptions { seed: 2, ..short.clone() }, &grid));
        // Arrival order: no line stamped more than the delivery delay before an earlier line.
        let mut stamped: Vec<(usize, Ms)> =
            cases.iter().map(|c| (c.line, c.ts)).chain(readings.iter().map(|r| (r.line, r.ts))).collect();
        stamped.sort_unstable();
        assert_eq!(stamped.len(), lines.len());
        let mut latest = 0;
        for (line, ts) in stamped {
            assert!(ts + MAX_DELAY_MS > latest, "line {line} arrives out of order");
            latest = latest.max(ts);
            assert!(ts < DEFAULT_START_MS + 24 * HOUR);
        }
    }

    #[test]
    fn case_ids_name_the_run() {
        let (_, cases, _) = busy();
        assert!(cases.iter().all(|c| c.id.starts_with("case-20260302T070000-s1-")), "{:?}", cases[0]);
        let later =
            FeedOptions { start_ms: DEFAULT_START_MS + 30 * SECOND, duration_min: 120, ..Default::default() };
        let grid = GridOptions { case_rate: 2.0, ..GridOptions::default() };
        let (other, _, _) = decode(&run(&later, &grid));
        assert!(other.iter().all(|c| c.id.starts_with("case-20260302T070030-s1-")), "{:?}", other[0]);
        assert_eq!(run_tag(DEFAULT_START_MS + 17 * HOUR + 61 * SECOND, 42), "20260303T000101-s42");
    }

    #[test]
    fn cases_follow_their_lifecycle() {
        use CaseStatus::*;
        let city = city();
        let (_, cases, _) = busy();
        let all = by_case(cases);
        let (mut closed, mut reopened, mut points, mut late_urgent, mut urgent_done) = (0, 0, 0, 0, 0);
        for (id, events) in &all {
            assert!(events.windows(2).all(|w| w[0].ts < w[1].ts), "{id}: arrival order is event order");
            let first = events[0];
            assert_eq!(first.status, Reported, "{id}");
            let cell = cell_of(&first.cell, first.at);
            points += usize::from(first.at.is_some());
            let officer = events.get(1).and_then(|e| e.officer.clone());
            for e in events {
                assert_eq!(
                    (&e.category, &e.cell, e.at, e.source),
                    (&first.category, &first.cell, first.at, first.source)
                );
                assert_eq!(e.officer.is_some(), e.status != Reported, "{id}: {e:?}");
                assert!(e.officer.is_none() || e.officer == officer, "{id}: one officer");
            }
            if let Some(o) = &officer {
                assert!(
                    city.cells[cell as usize].officers.contains(o),
                    "{id}: {o} is not an officer of its cell"
                );
            }
            // The lifecycle, as a state machine.
            let mut state = Reported;
            let (mut resolved_at, mut last_resolved) = (0, 0);
            for e in &events[1..] {
                let ok = matches!(
                    (state, e.status),
                    (Reported, Assigned)
                        | (Assigned, InProgress)
                        | (InProgress, Resolved)
                        | (Resolved, Closed | Reopened)
                        | (Reopened, InProgress)
                );
                assert!(ok, "{id}: {state:?} → {:?}", e.status);
                match e.status {
                    Assigned => {
                        let after = e.ts - first.ts;
                        assert!(
                            (5 * MINUTE..=60 * MINUTE).contains(&after),
                            "{id}: assigned after {after} ms"
                        );
                    }
                    InProgress | Resolved if !is_urgent(&e.category) => {
                        assert!(working(e.ts), "{id}: ordinary work at {}", e.ts);
                    }
                    _ => {}
                }
                if e.status == Resolved && resolved_at == 0 {
                    resolved_at = e.ts;
                    if is_urgent(&e.category) {
                        urgent_done += 1;
                        let Limit::Hours(h) = time_limit(&e.category) else { panic!() };
                        late_urgent += usize::from(e.ts - first.ts > (h * HOUR as f64) as Ms);
                    }
                }
                if e.status == Resolved {
                    last_resolved = e.ts;
                }
                if matches!(e.status, Closed | Reopened) {
                    let after = e.ts - last_resolved;
                    assert!((10 * MINUTE..=4 * HOUR).contains(&after), "{id}: verified after {after} ms");
                }
                closed += usize::from(e.status == Closed);
                reopened += usize::from(e.status == Reopened);
                state = e.status;
            }
        }
        let n = all.len();
        assert!(n > 1500, "{n} cases");
        assert!(closed > n / 4 && reopened >= 5, "{closed} closed, {reopened} reopened of {n}");
        assert!((0.12..0.28).contains(&(points as f64 / n as f64)), "{points} cases with a point of {n}");
        assert!(urgent_done >= 100, "{urgent_done} urgent cases resolved");
        let late = late_urgent as f64 / urgent_done as f64;
        assert!((0.03..0.2).contains(&late), "{late_urgent} of {urgent_done} urgent cases late");
    }

    #[test]
    fn categories_and_sources() {
        let (_, cases, _) = busy();
        let first: Vec<&Case> = cases.iter().filter(|c| c.status == CaseStatus::Reported).collect();
        let citizens: Vec<&&Case> = first.iter().filter(|c| c.source != CaseSource::Sensor).collect();
        let n = citizens.len() as f64;
        let share = |f: &dyn Fn(&str) -> bool| citizens.iter().filter(|c| f(&c.category)).count() as f64 / n;
        let urgent = share(&is_urgent);
        let ordinary = share(&|c| ORDINARY_CATEGORIES.contains(&c));
        assert!((0.07..0.13).contains(&urgent), "urgent {urgent}");
        assert!((0.81..0.89).contains(&ordinary), "ordinary {ordinary}");
        assert!((0.03..0.08).contains(&(1.0 - urgent - ordinary)), "others {}", 1.0 - urgent - ordinary);
        let categories: BTreeSet<&str> = citizens.iter().map(|c| c.category.as_str()).collect();
        assert_eq!(categories.len(), CATEGORIES.len(), "{categories:?}");
        let sources: BTreeSet<CaseSource> = citizens.iter().map(|c| c.source).collect();
        assert_eq!(sources.len(), 3);
    }

    #[test]
    fn sensors_report_on_schedule() {
        let city = city();
        let (_, _, readings) = busy();
        let mut by_sensor: BTreeMap<&str, Vec<&Reading>> = BTreeMap::new();
        for r in readings {
            by_sensor.entry(&r.id).or_default().push(r);
        }
        let sim = GridSim::new(city, &busy_opts().0, &busy_opts().1).unwrap();
        assert_eq!(by_sensor.len(), sim.sensor_count());
        assert_eq!(sim.sensor_count(), city.cells.len() + city.cells.len().div_ceil(3));
        let kinds: BTreeSet<&str> = readings.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds.len(), 6, "{kinds:?}");
        let mut with_point = 0;
        for (id, list) in &by_sensor {
            let first = list[0];
            let cell = cell_of(&first.cell, first.at);
            assert_eq!(*id, format!("ws-{}-{}", city.cells[cell as usize].id, first.kind));
            with_point += usize::from(first.at.is_some());
            let (period, unit) = match first.kind.as_str() {
                "water_level" => (60, "m"),
                "feeder_load" => (120, "pu"),
                "manhole_tilt" => (300, "deg"),
                "smoke" => (300, "%/m"),
                "pm25" => (300, "µg/m³"),
                "noise" => (300, "dB(A)"),
                other => panic!("{other}"),
            };
            let silent = sim.silent_sensors().iter().any(|s| s.0 == *id);
            if !silent {
                // The last reading may arrive after the end of the run, and is not written.
                let n = 24 * 3600 / period;
                assert!(list.len() == n || list.len() + 1 == n, "{id}: {} readings", list.len());
            }
            for w in list.windows(2) {
                assert_eq!(w[1].ts - w[0].ts, period as Ms * SECOND, "{id}");
                assert_eq!((&w[1].cell, w[1].at, &w[1].unit), (&first.cell, first.at, &first.unit));
            }
            assert_eq!(first.unit, unit);
            let values: Vec<f64> = list.iter().map(|r| r.value).collect();
            let (lo, hi) = values.iter().fold((f64::MAX, f64::MIN), |(l, h), &v| (l.min(v), h.max(v)));
            match first.kind.as_str() {
                "pm25" => assert!(lo > 15.0 && hi < 85.0 && hi - lo > 40.0, "{id}: {lo}..{hi}"),
                "feeder_load" => assert!(lo > 0.25 && hi < 0.8 && hi - lo > 0.3, "{id}: {lo}..{hi}"),
                "noise" => assert!(lo > 40.0 && hi < 80.0 && hi - lo > 12.0, "{id}: {lo}..{hi}"),
                "smoke" => assert!(lo >= 0.0 && hi < 0.2, "{id}: {lo}..{hi}"),
                "manhole_tilt" => assert!(lo >= 0.0 && hi <= 15.3, "{id}: {lo}..{hi}"),
                _ => assert!(lo >= 0.0 && hi < 0.62, "{id}: {lo}..{hi}"),
            }
        }
        assert!((3..=20).contains(&with_point), "{with_point} of {} sensors report a point", by_sensor.len());
    }

    #[test]
    fn a_rainstorm_floods_its_district() {
        let city = city();
        let (_, cases, readings) = busy();
        let district = city.district("district-2").unwrap();
        let from = DEFAULT_START_MS + 120 * MINUTE;
        let end = from + 60 * MINUTE;
        let mut flooded_cells = BTreeSet::new();
        for r in readings.iter().filter(|r| r.kind == "water_level") {
            let cell = cell_of(&r.cell, r.at);
            let inside = city.cells[cell as usize].district == district;
            if inside && (from + 15 * MINUTE..end).contains(&r.ts) {
                assert!((0.34..=0.6).contains(&r.value), "{} at {}: {}", r.id, r.ts, r.value);
                flooded_cells.insert(cell);
            } else if !inside || r.ts < from || r.ts >= end + 20 * MINUTE {
                assert!(r.value < 0.1, "{} at {}: {}", r.id, r.ts, r.value);
            } else if r.ts >= end + 20 * MINUTE - 60 * SECOND {
                assert!(r.value < FLOOD_CLEAR_M, "{} drained at {}: {}", r.id, r.ts, r.value);
            }
        }
        let cells: BTreeSet<Idx> =
            (0..city.cells.len() as Idx).filter(|&c| city.cells[c as usize].district == district).collect();
        assert_eq!(flooded_cells, cells, "every cell of the district floods");
        // One flooding case per cell, from its sensor, reported 2–5 min after its level passed 0.3 m.
        let sensor_cases: Vec<&Case> = cases
            .iter()
            .filter(|c| c.source == CaseSource::Sensor && c.status == CaseStatus::Reported)
            .collect();
        let flooding: Vec<&&Case> = sensor_cases.iter().filter(|c| c.category == "flooding").collect();
        let case_cells: BTreeSet<Idx> = flooding.iter().map(|c| cell_of(&c.cell, c.at)).collect();
        assert_eq!(case_cells, cells);
        assert_eq!(flooding.len(), cells.len());
        for c in &flooding {
            let cell = cell_of(&c.cell, c.at);
            let alarm = readings
                .iter()
                .filter(|r| {
                    r.kind == "water_level" && r.value > FLOOD_ALARM_M && cell_of(&r.cell, r.at) == cell
                })
                .map(|r| r.ts)
                .min()
                .unwrap();
            assert!((from..end).contains(&alarm));
            assert!((alarm + 2 * MINUTE..=alarm + 5 * MINUTE).contains(&c.ts), "{c:?}");
            // Worked urgently.
            let resolved = cases.iter().find(|e| e.id == c.id && e.status == CaseStatus::Resolved).unwrap();
            assert!(resolved.ts - c.ts < 8 * HOUR, "{c:?}");
        }
        // No other case from a water-level sensor (tilted manhole covers open manhole_cover ones).
        assert!(sensor_cases.iter().all(|c| c.category == "flooding" || c.category == "manhole_cover"));
    }

    #[test]
    fn a_silent_sensor_stops_reporting() {
        let city = city();
        let (feed, grid) = busy_opts();
        let (_, _, readings) = busy();
        let sim = GridSim::new(city, &feed, &grid).unwrap();
        let silent = sim.silent_sensors();
        assert_eq!(silent.len(), 1);
        let (id, from) = silent[0];
        assert_eq!(from, DEFAULT_START_MS + 300 * MINUTE);
        assert!(id.ends_with("-water_level"), "{id}");
        let cell = city.cell(id.strip_prefix("ws-").unwrap().strip_suffix("-water_level").unwrap()).unwrap();
        assert_ne!(
            city.cells[cell as usize].district,
            city.district("district-2").unwrap(),
            "not in the rain"
        );
        let times: Vec<Ms> = readings.iter().filter(|r| r.id == id).map(|r| r.ts).collect();
        assert_eq!(times.len(), 300, "one a minute until minute 300");
        assert!(times.iter().all(|&t| t < from));
        // By id, two of them; unknown ids and late minutes are refused.
        let short = FeedOptions { duration_min: 30, ..feed };
        let two = GridOptions {
            silent_sensors: vec!["ws-cell-0-0-water_level@10".parse().unwrap(), "auto@20".parse().unwrap()],
            ..GridOptions::default()
        };
        let sim = GridSim::new(city, &short, &two).unwrap();
        let silent = sim.silent_sensors();
        assert_eq!(silent.len(), 2);
        assert!(silent.contains(&("ws-cell-0-0-water_level", DEFAULT_START_MS + 10 * MINUTE)));
        let (_, readings, _) = decode(&run(&short, &two));
        for (id, from) in silent {
            let n = readings.iter().filter(|r| r.id == id).count();
            assert_eq!(n as Ms, (from - DEFAULT_START_MS) / MINUTE, "{id}");
        }
        let err = |spec: &str| {
            let opts = GridOptions { silent_sensors: vec![spec.parse().unwrap()], ..GridOptions::default() };
            format!("{:#}", GridSim::new(city, &short, &opts).err().unwrap())
        };
        assert!(err("nope@5").contains("unknown sensor \"nope\""));
        assert!(err("45").contains("after the end"));
    }

    #[test]
    fn a_week_of_cases_at_the_case_rate() {
        let city = city();
        let feed = FeedOptions { duration_min: 7 * 24 * 60, ..FeedOptions::default() };
        let opts = GridOptions::default();
        let mut sim = GridSim::new(city, &feed, &opts).unwrap();
        let lines = sim.advance(Ms::MAX).unwrap();
        // The cases, and the readings of the sensors with rare events (not the water levels).
        let rare = |l: &&String| {
            l.starts_with(r#"{"topic":"city/grid/case/"#)
                || l.contains("-manhole_tilt")
                || l.contains("-noise")
        };
        let (cases, readings, _) = decode(&lines.iter().filter(rare).cloned().collect::<Vec<_>>());
        let reported: Vec<&Case> = cases.iter().filter(|c| c.status == CaseStatus::Reported).collect();
        assert_eq!(reported.len(), sim.case_count());
        let citizens: Vec<&&Case> = reported.iter().filter(|c| c.source != CaseSource::Sensor).collect();
        let expected = DEFAULT_CASE_RATE * city.cells.len() as f64 * 7.0 * 24.0;
        let ratio = citizens.len() as f64 / expected;
        assert!((0.9..1.1).contains(&ratio), "{} cases, {expected} expected", citizens.len());
        // More by day than at night.
        let at =
            |from: f64, to: f64| citizens.iter().filter(|c| (from..to).contains(&local_hour(c.ts))).count();
        let (day, night) = (at(10.0, 16.0), at(0.0, 6.0));
        assert!(day > 5 * night, "{day} cases 10–16 h, {night} 0–6 h");
        // About a tenth of the cases whose deadline passed during the run were not resolved by
        // then (overdue).
        let end = DEFAULT_START_MS + 7 * DAY;
        let (mut due, mut overdue) = (0, 0);
        for events in by_case(&cases).values() {
            let reported = events[0].ts;
            let deadline = match time_limit(&events[0].category) {
                Limit::Hours(h) => reported + (h * HOUR as f64) as Ms,
                Limit::WorkingDays(d) => add_working(reported, (d * WORKING_DAY as f64) as Ms),
            };
            if deadline >= end {
                continue;
            }
            due += 1;
            let resolved = events.iter().find(|e| e.status == CaseStatus::Resolved).map(|e| e.ts);
            overdue += usize::from(resolved.is_none_or(|r| r > deadline));
        }
        let share = overdue as f64 / due as f64;
        assert!(due > 1000 && (0.07..0.13).contains(&share), "{overdue} of {due} overdue");
        // A tilted manhole cover reads 15° from its alarm until its case is resolved.
        let tilt_cases: Vec<&&Case> = reported
            .iter()
            .filter(|c| c.source == CaseSource::Sensor && c.category == "manhole_cover")
            .collect();
        assert!(!tilt_cases.is_empty(), "no manhole cover tilted in a week");
        for case in tilt_cases {
            let cell = cell_of(&case.cell, case.at);
            let sensor = format!("ws-{}-manhole_tilt", city.cells[cell as usize].id);
            let resolved =
                cases.iter().find(|e| e.id == case.id && e.status == CaseStatus::Resolved).unwrap().ts;
            let tilted: Vec<&Reading> =
                readings.iter().filter(|r| r.id == sensor && r.value > 10.0).collect();
            let since = tilted.iter().map(|r| r.ts).filter(|&t| t < case.ts).max().unwrap();
            assert!(case.ts - since <= 5 * MINUTE + 300 * SECOND, "{case:?}: tilted at {since}");
            for r in
                readings.iter().filter(|r| r.id == sensor && (since..resolved + 300 * SECOND).contains(&r.ts))
            {
                assert_eq!(r.value > 10.0, r.ts < resolved, "{r:?} (resolved at {resolved})");
            }
        }
        // Noise events: above 70 dB(A) at night only, four readings in a row (20 min).
        let loud: Vec<&Reading> = readings.iter().filter(|r| r.kind == "noise" && r.value > 70.0).collect();
        assert!(!loud.is_empty() && loud.len().is_multiple_of(4), "{} loud readings", loud.len());
        for r in &loud {
            let h = local_hour(r.ts);
            assert!(!(6.0 + 1.0 / 3.0..22.0).contains(&h), "{r:?} at {h} h");
        }
        assert!(readings.iter().filter(|r| r.kind == "noise").all(|r| r.value > 40.0 && r.value < 80.0));
    }

    #[test]
    fn the_scenario_appends_grid_lines() {
        let city = city();
        let text = geojson_text(&generate_city(&CityOptions::default()).unwrap());
        let feed = FeedOptions { duration_min: 20, ..FeedOptions::default() };
        let grid = GridOptions { case_rate: 5.0, ..GridOptions::default() };
        let em = EmergencyOptions::default();
        let plain: Vec<Vec<String>> =
            Scenario::with_emergency(city, &text, &feed, &em).unwrap().map(|b| b.unwrap().lines).collect();
        let mut scenario = Scenario::with_emergency(city, &text, &feed, &em)
            .unwrap()
            .with_grid(GridSim::new(city, &feed, &grid).unwrap())
            .unwrap();
        let mut grid_lines = Vec::new();
        for (k, before) in plain.iter().enumerate() {
            let batch = scenario.next().unwrap().unwrap();
            assert_eq!(batch.lines[..before.len()], before[..], "traffic and emergencies unchanged");
            let (cases, readings, other) = decode(&batch.lines[before.len()..]);
            assert_eq!(other, 0);
            let end = DEFAULT_START_MS + (k as Ms + 1) * 30 * SECOND;
            assert!(cases.iter().map(|c| c.ts).chain(readings.iter().map(|r| r.ts)).all(|ts| ts < end));
            grid_lines.extend_from_slice(&batch.lines[before.len()..]);
        }
        assert!(scenario.next().is_none());
        assert_eq!(scenario.grid_events(), grid_lines.len() as u64);
        assert!(scenario.grid().is_some_and(|g| g.case_count() > 0));
        assert_eq!(grid_lines, run(&feed, &grid), "the same lines as the grid simulator alone");
        // Traffic alone with the grid.
        let alone = Scenario::traffic_only(Simulator::new(city, &feed).unwrap())
            .with_grid(GridSim::new(city, &feed, &grid).unwrap())
            .unwrap();
        assert!(alone.map(|b| b.unwrap().lines.len()).sum::<usize>() > grid_lines.len());
        // A grid simulator over another run is refused.
        let other = FeedOptions { duration_min: 30, ..feed.clone() };
        let mismatch = Scenario::traffic_only(Simulator::new(city, &feed).unwrap())
            .with_grid(GridSim::new(city, &other, &grid).unwrap());
        assert!(mismatch.err().unwrap().to_string().contains("does not cover"));
    }

    #[test]
    fn options_and_specs() {
        let spec: RainstormSpec = "district-2@30+60".parse().unwrap();
        assert_eq!(spec, RainstormSpec { district: "district-2".into(), minute: 30, duration_min: 60 });
        assert_eq!("Xihu@5".parse::<RainstormSpec>().unwrap().duration_min, DEFAULT_RAINSTORM_MIN);
        assert!("district-2".parse::<RainstormSpec>().is_err());
        assert!("@3".parse::<RainstormSpec>().is_err());
        assert!("d@x".parse::<RainstormSpec>().unwrap_err().contains("MINUTE"));
        assert!("d@3+0".parse::<RainstormSpec>().unwrap_err().contains("DURATION_MIN"));
        assert_eq!("45".parse::<SilentSensorSpec>(), Ok(SilentSensorSpec { sensor: None, minute: 45 }));
        assert_eq!("AUTO@45".parse::<SilentSensorSpec>(), Ok(SilentSensorSpec { sensor: None, minute: 45 }));
        assert_eq!(
            "ws-a@b@7".parse::<SilentSensorSpec>(),
            Ok(SilentSensorSpec { sensor: Some("ws-a@b".into()), minute: 7 })
        );
        assert!("@7".parse::<SilentSensorSpec>().is_err());
        assert!("soon".parse::<SilentSensorSpec>().is_err());
        let city = city();
        let feed = FeedOptions::default();
        let err = |opts: GridOptions| format!("{:#}", GridSim::new(city, &feed, &opts).err().unwrap());
        let storm = |s: &str| GridOptions { rainstorms: vec![s.parse().unwrap()], ..GridOptions::default() };
        assert!(err(storm("nowhere@5")).contains("unknown district \"nowhere\""));
        assert!(err(storm("district-1@60")).contains("after the end"));
        assert!(err(GridOptions { case_rate: -1.0, ..Default::default() }).contains("case rate"));
        assert!(err(GridOptions { case_rate: f64::NAN, ..Default::default() }).contains("case rate"));
        // A district by name; no cases at rate 0: only sensor readings.
        let quiet = GridOptions { case_rate: 0.0, ..storm("gongshu@1+5") };
        let (cases, readings, _) = decode(&run(&FeedOptions { duration_min: 5, ..feed }, &quiet));
        assert!(cases.is_empty() && readings.len() >= city.cells.len() * 5);
    }

    #[test]
    fn working_time_and_profiles() {
        let monday_0700 = DEFAULT_START_MS;
        assert!(!working(monday_0700) && working(monday_0700 + HOUR) && !working(monday_0700 + 13 * HOUR));
        assert_eq!(add_working(monday_0700, 0), monday_0700 + HOUR, "starts at 08:00");
        assert_eq!(add_working(monday_0700, 2 * HOUR), monday_0700 + 3 * HOUR);
        // 19:00 + 3 h of work: one hour that evening, two the next morning (10:00).
        assert_eq!(add_working(monday_0700 + 12 * HOUR, 3 * HOUR), monday_0700 + 27 * HOUR);
        assert_eq!(add_working(monday_0700 + 13 * HOUR, 2 * WORKING_DAY), monday_0700 + 3 * DAY + HOUR);
        let mean: f64 = (0..24 * 60).map(|m| piecewise(&CASE_PROFILE, m as f64 / 60.0)).sum::<f64>() / 1440.0;
        assert!((mean / profile_mean(&CASE_PROFILE) - 1.0).abs() < 1e-3);
        // The figures of the module docs.
        let at = |h: f64| piecewise(&CASE_PROFILE, h) / profile_mean(&CASE_PROFILE);
        let documented = [(3.0, 0.22), (8.0, 1.09), (12.0, 1.75), (19.0, 1.31), (22.0, 0.55)];
        for (h, x) in documented {
            assert!((at(h) - x).abs() < 0.005, "{h} h: {}", at(h));
        }
        let shares: f64 = CATEGORIES.iter().map(|c| c.1).sum();
        assert!((shares - 1.0).abs() < 1e-9);
        let urgent: f64 = CATEGORIES.iter().filter(|c| is_urgent(c.0)).map(|c| c.1).sum();
        assert!((urgent - 0.10).abs() < 1e-9);
        assert!(URGENT_CATEGORIES.iter().all(|c| matches!(time_limit(c), Limit::Hours(_))));
        assert!(ORDINARY_CATEGORIES.iter().all(|c| matches!(time_limit(c), Limit::WorkingDays(_))));
        assert_eq!(time_limit("anything"), Limit::WorkingDays(3.0));
        let f = Flood { from: 0, rise: 10, end: 100, fall: 20, peak: 0.5 };
        assert_eq!(
            [f.shape(0), f.shape(5), f.shape(50), f.shape(110), f.shape(200)],
            [0.0, 0.5, 1.0, 0.5, 0.0]
        );
    }
}
