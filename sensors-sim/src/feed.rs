//! The traffic simulator: loop-detector readings (`city/traffic/detector/{id}`) for a city model.
//!
//! # Traffic model
//! Each segment has a demand ratio (demand ÷ lane capacity) that follows a daily profile in the
//! city time zone (Asia/Shanghai, UTC+8): quiet nights, a flat day, and — with rush hours on —
//! peaks around 08:00 and 17:30. The profile is scaled by the road class, a fixed random weight
//! per segment and per lane, and a slowly drifting noise per segment, so at the peaks some
//! segments exceed their capacity. Greenshields' fundamental diagram turns a lane's demand
//! ratio into density, speed and flow: below capacity on the free-flowing branch, above it on the
//! congested branch (queues: density up, speed and flow down). The free-flow speed is the speed
//! limit times a fixed random factor (0.92–1.05). A detector's count is Poisson around the flow,
//! its speed the lane speed with noise, and its occupancy the density times the effective vehicle
//! length (6.5 m) with noise, so flow ≈ occupancy × speed ÷ length, as on a real loop.
//!
//! # Incidents
//! An incident is a vehicle stopped on one lane's loop: that detector reads count 0, no speed and
//! occupancy 0.95–1.0. The segment's other lanes carry the traffic that merges around it: past the
//! blockage it discharges freely but slowed by onlookers (speed × 0.8), at no more than 85 % of
//! capacity and at least 4 vehicles per 30 s (the queue behind the blockage keeps feeding them).
//! Downstream segments receive only what got past: their demand drops to the share of lanes left
//! open (at least 20 %, the traffic joining from side streets) and their occupancy falls.
//!
//! # Delivery and determinism
//! A reading is stamped with the start of its interval and arrives after a random delivery delay
//! in [0, 2 s); lines are in arrival order. Every detector and every segment draws from its own
//! ChaCha8 stream of the seed, so the output is byte-identical for a seed, and an incident changes
//! only the readings it affects.

use anyhow::{Context, Result, bail, ensure};
use citybrain_dataflows::CityModel;
use citybrain_dataflows::city::{Idx, RoadClass};
use citybrain_dataflows::event::DetectorReading;
use citybrain_dataflows::time::{MAX_TS, MIN_TS, MINUTE, Ms, SECOND, Ts, parse_rfc3339};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::str::FromStr;

/// Default start of a run: a Monday, an hour before the morning rush in Hangzhou.
pub const DEFAULT_START: &str = "2026-03-02T07:00:00+08:00";
/// [`DEFAULT_START`] in epoch ms.
pub const DEFAULT_START_MS: Ms = 1_772_406_000_000;
/// Default run length, minutes.
pub const DEFAULT_DURATION_MIN: u32 = 60;
/// Default reporting interval of a detector, seconds.
pub const DEFAULT_INTERVAL_S: u32 = 30;
/// Default random seed.
pub const DEFAULT_SEED: u64 = 1;
/// Default topic prefix (CONTRACT §2).
pub const DEFAULT_TOPIC_PREFIX: &str = "city";

/// The city time zone's offset from UTC (Asia/Shanghai has no daylight saving time).
const CITY_UTC_OFFSET_MS: Ms = 8 * 60 * MINUTE;
/// Largest delivery delay (exclusive), ms.
const MAX_DELAY_MS: Ms = 2 * SECOND;
/// Jam density of one lane, vehicles per km (7.5 m per stopped vehicle).
const JAM_DENSITY_PER_KM: f64 = 1000.0 / 7.5;
/// Effective vehicle length seen by a loop (vehicle plus loop), metres.
const EFFECTIVE_LENGTH_M: f64 = 6.5;
/// Highest demand ratio: deep in the congested branch, but short of a standstill.
const MAX_DEMAND: f64 = 1.25;
/// Highest demand ratio of lanes discharging past an incident, and of segments downstream of one.
const DISCHARGE_CAP: f64 = 0.75;
/// Speed factor of lanes passing an incident (onlookers).
const DISCHARGE_SPEED: f64 = 0.8;
/// Fewest vehicles per 30 s on a lane passing an incident (the merging queue).
const DISCHARGE_MIN_PER_30S: u32 = 4;
/// Share of demand a downstream segment keeps when the segment feeding it is fully blocked.
const SIDE_STREET_SHARE: f64 = 0.2;

/// A blocked lane: `SEGMENT:LANE:START_MIN:DURATION_MIN`, minutes counted from the run's start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncidentSpec {
    /// Segment id of the city model.
    pub segment: String,
    /// Blocked lane (0-based, as in the city model).
    pub lane: u32,
    /// Minutes after the start of the run when the lane is blocked.
    pub start_min: u32,
    /// How long the lane stays blocked, minutes (at least 1).
    pub duration_min: u32,
}

impl FromStr for IncidentSpec {
    type Err = String;

    /// Parses `SEGMENT:LANE:START_MIN:DURATION_MIN` (the segment id may itself contain `:`).
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || format!("incident {s:?} is not SEGMENT:LANE:START_MIN:DURATION_MIN");
        let parts: Vec<&str> = s.rsplitn(4, ':').map(str::trim).collect();
        let [duration, start, lane, segment] = parts[..] else { return Err(usage()) };
        let number = |what: &str, part: &str| -> Result<u32, String> {
            part.parse().map_err(|_| format!("{}: {what} {part:?} is not a whole number", usage()))
        };
        let (lane, start_min, duration_min) =
            (number("LANE", lane)?, number("START_MIN", start)?, number("DURATION_MIN", duration)?);
        if segment.is_empty() {
            return Err(usage());
        }
        if duration_min == 0 {
            return Err(format!("{}: DURATION_MIN must be at least 1", usage()));
        }
        Ok(IncidentSpec { segment: segment.to_string(), lane, start_min, duration_min })
    }
}

/// Parses a start time: RFC 3339 (`2026-03-02T07:00:00+08:00`) or integer epoch milliseconds.
pub fn parse_start(s: &str) -> Result<Ms, String> {
    let s = s.trim();
    let ms = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse::<Ms>().map_err(|e| format!("start {s:?}: {e}"))?
    } else {
        parse_rfc3339(s)?.0
    };
    if (MIN_TS..MAX_TS).contains(&ms) { Ok(ms) } else { Err(format!("start {s:?} is outside 2000..2100")) }
}

/// What to simulate.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedOptions {
    /// Seed of the random streams: the same options and city always give the same lines.
    pub seed: u64,
    /// Start of the run, epoch ms (rounded down to a multiple of the interval).
    pub start_ms: Ms,
    /// Length of the run, minutes.
    pub duration_min: u32,
    /// Reporting interval of every detector, seconds (2..=3600).
    pub interval_s: u32,
    /// Blocked lanes.
    pub incidents: Vec<IncidentSpec>,
    /// Morning and evening rush hours on (true) or a flat daytime profile (false).
    pub rush_hours: bool,
    /// Topic prefix, without the trailing `/` (`city`).
    pub topic_prefix: String,
}

impl Default for FeedOptions {
    fn default() -> Self {
        FeedOptions {
            seed: DEFAULT_SEED,
            start_ms: DEFAULT_START_MS,
            duration_min: DEFAULT_DURATION_MIN,
            interval_s: DEFAULT_INTERVAL_S,
            incidents: Vec::new(),
            rush_hours: true,
            topic_prefix: DEFAULT_TOPIC_PREFIX.to_string(),
        }
    }
}

/// The readings of one reporting interval, in arrival order.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Start of the interval (the readings' `ts`), epoch ms.
    pub ts: Ms,
    /// Recording lines `{"topic": …, "payload": …}` (CONTRACT §4).
    pub lines: Vec<String>,
}

/// An incident resolved against the city model.
struct Incident {
    segment: Idx,
    lane: u32,
    from: Ms,
    until: Ms,
}

/// What a lane is doing in one interval.
#[derive(Clone, Copy, Debug)]
enum Lane {
    /// Traffic at this demand ratio, speeds scaled by `speed`, at least `min_count` vehicles.
    Flowing { demand: f64, speed: f64, min_count: u32 },
    /// A vehicle stands on the loop.
    Blocked,
}

struct SegmentState {
    rng: ChaCha8Rng,
    /// Demand at profile 1.0 (road class × fixed random weight).
    weight: f64,
    free_speed_kmh: f64,
    /// Slowly drifting relative noise of the demand.
    drift: f64,
}

struct DetectorState {
    rng: ChaCha8Rng,
    topic: String,
    lane_weight: f64,
}

/// A reading before it is encoded.
struct Reading {
    count: u32,
    occupancy: f64,
    speed_kmh: Option<f64>,
}

/// The simulator: an iterator over the run's intervals, each a [`Batch`] of recording lines.
/// Batches come in time order and never overlap in arrival time (the delivery delay is shorter
/// than the interval), so concatenating them keeps the whole run in arrival order.
pub struct Simulator<'c> {
    city: &'c CityModel,
    opts: FeedOptions,
    start: Ms,
    intervals: u64,
    next: u64,
    incidents: Vec<Incident>,
    segments: Vec<SegmentState>,
    detectors: Vec<DetectorState>,
}

/// A random stream of the seed: streams `0..` are detectors, streams from `1 << 32` segments.
fn stream(seed: u64, n: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(n);
    rng
}

impl<'c> Simulator<'c> {
    /// Prepares a run over `city`, checking the options (interval, duration, incidents) first.
    pub fn new(city: &'c CityModel, opts: &FeedOptions) -> Result<Self> {
        ensure!((2..=3600).contains(&opts.interval_s), "interval must be 2..3600 s, not {}", opts.interval_s);
        ensure!(opts.duration_min >= 1, "duration must be at least 1 minute");
        ensure!(
            (MIN_TS..MAX_TS).contains(&opts.start_ms),
            "start {} ms is outside 2000..2100",
            opts.start_ms
        );
        ensure!(!city.detectors.is_empty(), "the city model has no detectors");
        let interval = opts.interval_s as Ms * SECOND;
        ensure!(
            opts.duration_min as Ms * MINUTE >= interval,
            "duration ({} min) is shorter than one interval ({} s)",
            opts.duration_min,
            opts.interval_s
        );
        let start = opts.start_ms - opts.start_ms % interval;
        let incidents = opts
            .incidents
            .iter()
            .map(|spec| Self::resolve(city, opts, start, spec))
            .collect::<Result<Vec<_>>>()?;
        let segments = city
            .segments
            .iter()
            .enumerate()
            .map(|(s, seg)| {
                let mut rng = stream(opts.seed, (1 << 32) + s as u64);
                let class_weight = match seg.road_class {
                    RoadClass::Expressway => 0.95,
                    RoadClass::Arterial => 0.9,
                    RoadClass::Secondary => 0.8,
                    RoadClass::Branch => 0.6,
                };
                let weight = class_weight * rng.random_range(0.85..1.15);
                let free_speed_kmh = seg.speed_limit_kmh * rng.random_range(0.92..1.05);
                SegmentState { rng, weight, free_speed_kmh, drift: 0.0 }
            })
            .collect();
        let detectors = city
            .detectors
            .iter()
            .enumerate()
            .map(|(d, det)| {
                let mut rng = stream(opts.seed, d as u64);
                let lane_weight = rng.random_range(0.9..1.1);
                let topic =
                    format!("{}/traffic/detector/{}", opts.topic_prefix.trim_end_matches('/'), det.id);
                DetectorState { rng, topic, lane_weight }
            })
            .collect();
        Ok(Simulator {
            city,
            opts: opts.clone(),
            start,
            intervals: opts.duration_min as u64 * MINUTE / interval,
            next: 0,
            incidents,
            segments,
            detectors,
        })
    }

    fn resolve(city: &CityModel, opts: &FeedOptions, start: Ms, spec: &IncidentSpec) -> Result<Incident> {
        let what =
            || format!("incident {}:{}:{}:{}", spec.segment, spec.lane, spec.start_min, spec.duration_min);
        let Some(segment) = city.segment(&spec.segment) else {
            let example = city.segments.first().map_or("none", |s| s.id.as_str());
            bail!(
                "{}: unknown segment {:?} (the city has {} segments, e.g. {example:?})",
                what(),
                spec.segment,
                city.segments.len()
            );
        };
        let lanes = city.segments[segment as usize].lanes;
        ensure!(
            spec.lane < lanes,
            "{}: segment {} has {lanes} lane(s), numbered 0..{}",
            what(),
            spec.segment,
            lanes - 1
        );
        ensure!(
            spec.start_min < opts.duration_min,
            "{}: starts at minute {}, after the end of the {}-minute run",
            what(),
            spec.start_min,
            opts.duration_min
        );
        let from = start + spec.start_min as Ms * MINUTE;
        Ok(Incident { segment, lane: spec.lane, from, until: from + spec.duration_min as Ms * MINUTE })
    }

    /// Number of reporting intervals in the run.
    pub fn interval_count(&self) -> u64 {
        self.intervals
    }

    /// Start of the first interval, epoch ms.
    pub fn start_ms(&self) -> Ms {
        self.start
    }

    /// Simulates the interval starting at `ts`.
    fn step(&mut self, ts: Ms) -> Result<Vec<String>> {
        let city = self.city;
        let profile = demand_profile(local_hour(ts), self.opts.rush_hours);
        let mut demand: Vec<f64> = self.segments.iter_mut().map(|s| s.demand(profile)).collect();
        // Blocked lanes per segment, for the incidents active in this interval.
        let mut blocked: BTreeMap<Idx, Vec<u32>> = BTreeMap::new();
        for inc in self.incidents.iter().filter(|i| i.from <= ts && ts < i.until) {
            let lanes = blocked.entry(inc.segment).or_default();
            if !lanes.contains(&inc.lane) {
                lanes.push(inc.lane);
            }
        }
        for (&s, lanes) in &blocked {
            let seg = &city.segments[s as usize];
            let open = ((seg.lanes as usize - lanes.len()) as f64 / seg.lanes as f64).max(SIDE_STREET_SHARE);
            for &d in &seg.downstream {
                demand[d as usize] = (demand[d as usize] * open).min(DISCHARGE_CAP);
            }
        }
        let min_discharge = (DISCHARGE_MIN_PER_30S * self.opts.interval_s).div_ceil(30);
        let mut out = Vec::with_capacity(city.detectors.len());
        for (d, det) in city.detectors.iter().enumerate() {
            let s = det.segment as usize;
            let state = &mut self.detectors[d];
            let lane_demand = demand[s] * state.lane_weight;
            let lane = match blocked.get(&det.segment) {
                Some(lanes) if lanes.contains(&det.lane) => Lane::Blocked,
                Some(lanes) => {
                    let total = city.segments[s].lanes as f64;
                    let diverted = lane_demand * total / (total - lanes.len() as f64).max(1.0);
                    Lane::Flowing {
                        demand: diverted.min(DISCHARGE_CAP),
                        speed: DISCHARGE_SPEED,
                        min_count: min_discharge,
                    }
                }
                None => Lane::Flowing { demand: lane_demand, speed: 1.0, min_count: 0 },
            };
            let delay = state.rng.random_range(0..MAX_DELAY_MS);
            let r = state.read(lane, self.segments[s].free_speed_kmh, self.opts.interval_s);
            let payload = DetectorReading {
                sensor: Cow::Borrowed(&det.id),
                segment: Cow::Borrowed(&city.segments[s].id),
                ts: Ts(ts),
                interval_s: self.opts.interval_s,
                count: r.count,
                lane: Some(det.lane),
                flow_vph: Some(round(r.count as f64 * 3600.0 / self.opts.interval_s as f64, 2)),
                occupancy: Some(round(r.occupancy, 4)),
                speed_kmh: r.speed_kmh.map(|v| round(v, 1)),
            };
            let line = serde_json::to_string(&Message { topic: &state.topic, payload: &payload })
                .with_context(|| format!("encoding a reading of detector {}", det.id))?;
            out.push((ts + delay, d, line));
        }
        out.sort_unstable_by_key(|&(at, d, _)| (at, d));
        Ok(out.into_iter().map(|(_, _, line)| line).collect())
    }
}

impl Iterator for Simulator<'_> {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.next >= self.intervals {
            return None;
        }
        let ts = self.start + self.next * self.opts.interval_s as Ms * SECOND;
        self.next += 1;
        Some(self.step(ts).map(|lines| Batch { ts, lines }))
    }
}

/// One recording line (CONTRACT §4); `topic` comes first, as the processor's fast path expects.
#[derive(Serialize)]
struct Message<'a> {
    topic: &'a str,
    payload: &'a DetectorReading<'a>,
}

impl SegmentState {
    /// This interval's demand ratio at the given profile value; advances the drift.
    fn demand(&mut self, profile: f64) -> f64 {
        self.drift = 0.85 * self.drift + self.rng.random_range(-0.03..0.03);
        (profile * self.weight * (1.0 + self.drift)).clamp(0.0, MAX_DEMAND)
    }
}

impl DetectorState {
    /// One interval's reading of a lane in the given state.
    fn read(&mut self, lane: Lane, free_speed_kmh: f64, interval_s: u32) -> Reading {
        let rng = &mut self.rng;
        let Lane::Flowing { demand, speed, min_count } = lane else {
            return Reading { count: 0, occupancy: rng.random_range(0.95..=1.0), speed_kmh: None };
        };
        let k = density_ratio(demand);
        let speed_kmh = free_speed_kmh * (1.0 - k) * speed * (1.0 + rng.random_range(-0.05..0.05));
        let flow_vph = free_speed_kmh * JAM_DENSITY_PER_KM * k * (1.0 - k);
        let count = poisson(rng, flow_vph * interval_s as f64 / 3600.0).max(min_count);
        if count == 0 {
            return Reading { count, occupancy: 0.0, speed_kmh: None };
        }
        // Occupancy = density × effective length; slowing down at the same flow packs vehicles.
        let density_per_m = k * JAM_DENSITY_PER_KM / 1000.0 / speed;
        let occupancy = (density_per_m * EFFECTIVE_LENGTH_M * (1.0 + rng.random_range(-0.08..0.08))).min(1.0);
        Reading { count, occupancy, speed_kmh: Some(speed_kmh) }
    }
}

/// Hour of the day (0..24, fractional) of an instant in the city time zone.
fn local_hour(ts: Ms) -> f64 {
    ((ts + CITY_UTC_OFFSET_MS) % (24 * 60 * MINUTE)) as f64 / (60 * MINUTE) as f64
}

/// Demand ratio of a typical road at a local hour, before the per-segment weights.
fn demand_profile(hour: f64, rush_hours: bool) -> f64 {
    const BASE: [(f64, f64); 7] =
        [(0.0, 0.15), (5.0, 0.08), (7.0, 0.5), (10.0, 0.55), (16.0, 0.55), (20.0, 0.45), (24.0, 0.15)];
    let base = BASE
        .windows(2)
        .find(|w| hour < w[1].0)
        .map_or(BASE[0].1, |w| w[0].1 + (w[1].1 - w[0].1) * (hour - w[0].0) / (w[1].0 - w[0].0));
    let bump = |centre: f64, width: f64| (-0.5 * ((hour - centre) / width).powi(2)).exp();
    if rush_hours { base + 0.6 * bump(8.0, 0.8) + 0.55 * bump(17.5, 1.0) } else { base }
}

/// Density as a fraction of jam density for a demand ratio (Greenshields): the free-flowing
/// branch up to capacity (ratio 1 ↔ half the jam density), the congested branch beyond it.
fn density_ratio(demand: f64) -> f64 {
    if demand <= 1.0 {
        (1.0 - (1.0 - demand.max(0.0)).sqrt()) / 2.0
    } else {
        (0.5 + (demand - 1.0) * 1.2).min(0.85)
    }
}

/// A Poisson draw with mean `mu` (Knuth's method; a normal approximation for large means).
fn poisson(rng: &mut ChaCha8Rng, mu: f64) -> u32 {
    if mu <= 0.0 {
        return 0;
    }
    if mu < 50.0 {
        let limit = (-mu).exp();
        let mut k = 0;
        let mut p: f64 = rng.random();
        while p > limit {
            k += 1;
            p *= rng.random::<f64>();
        }
        return k;
    }
    let (u1, u2): (f64, f64) = (1.0 - rng.random::<f64>(), rng.random());
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    (mu + mu.sqrt() * z).round().max(0.0) as u32
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// Every line of a run over `city`, in arrival order (for tests and tools that need no file).
pub fn detector_feed(city: &CityModel, opts: &FeedOptions) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for batch in Simulator::new(city, opts)? {
        lines.extend(batch?.lines);
    }
    Ok(lines)
}

/// [`detector_feed`] over a city model given as GeoJSON (e.g. from [`crate::generate_city`]).
pub fn detector_feed_geojson(city: &serde_json::Value, opts: &FeedOptions) -> Result<Vec<String>> {
    let model = CityModel::from_geojson_str(&city.to_string()).context("loading the city model")?;
    detector_feed(&model, opts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::city::{CityOptions, generate_city};
    use citybrain_dataflows::event::{Decoder, Event};
    use citybrain_dataflows::pseudonym::Pseudonymizer;
    use serde_json::Value;

    fn city() -> CityModel {
        let geojson = generate_city(&CityOptions::default()).unwrap();
        CityModel::from_geojson_str(&geojson.to_string()).unwrap()
    }

    fn payloads(lines: &[String]) -> Vec<Value> {
        lines.iter().map(|l| serde_json::from_str::<Value>(l).unwrap()["payload"].take()).collect()
    }

    /// Count-weighted mean speed and mean occupancy over all readings.
    fn means(lines: &[String]) -> (f64, f64) {
        let p = payloads(lines);
        let count: f64 = p.iter().map(|r| r["count"].as_f64().unwrap()).sum();
        let speed: f64 =
            p.iter().map(|r| r["count"].as_f64().unwrap() * r["speed_kmh"].as_f64().unwrap_or(0.0)).sum();
        let occ: f64 = p.iter().map(|r| r["occupancy"].as_f64().unwrap()).sum();
        (speed / count, occ / p.len() as f64)
    }

    #[test]
    fn same_seed_same_bytes_and_valid_payloads() {
        let city = city();
        let opts = FeedOptions { duration_min: 5, ..FeedOptions::default() };
        let a = detector_feed(&city, &opts).unwrap();
        assert_eq!(a, detector_feed(&city, &opts).unwrap());
        assert_ne!(a, detector_feed(&city, &FeedOptions { seed: 2, ..opts.clone() }).unwrap());
        assert_eq!(a.len(), city.detectors.len() * 10);
        let decoder = Decoder::new("city/", Pseudonymizer::new(vec![7; 32]));
        let mut last_ts = 0;
        for line in &a {
            decoder.decode_line(line.as_bytes(), |topic, ev| {
                let Ok(Event::Detector(r)) = ev else { panic!("{line}: {ev:?}") };
                assert_eq!(topic, Some(format!("city/traffic/detector/{}", r.sensor).as_str()));
                assert!(r.ts.0 >= last_ts, "arrival order follows the intervals");
                last_ts = r.ts.0;
                assert_eq!(r.flow_vph, Some(r.count as f64 * 120.0));
                assert_eq!(r.speed_kmh.is_none(), r.count == 0);
                assert_eq!(r.ts.0 % 30_000, 0);
            });
        }
        assert!(a[0].contains(r#""speed_kmh":"#), "speed is always present (null without vehicles)");
    }

    #[test]
    fn rush_hour_lowers_speed_and_raises_occupancy() {
        let city = city();
        // 07:45–08:15 local.
        let opts = FeedOptions {
            start_ms: parse_start("2026-03-02T07:45:00+08:00").unwrap(),
            duration_min: 30,
            ..FeedOptions::default()
        };
        let (rush_speed, rush_occ) = means(&detector_feed(&city, &opts).unwrap());
        let (calm_speed, calm_occ) =
            means(&detector_feed(&city, &FeedOptions { rush_hours: false, ..opts }).unwrap());
        assert!(rush_speed < calm_speed * 0.85, "rush {rush_speed} vs calm {calm_speed}");
        assert!(rush_occ > calm_occ * 1.3, "rush {rush_occ} vs calm {calm_occ}");
    }

    #[test]
    fn incident_signature() {
        let city = city();
        // A 3-lane segment with a downstream neighbour.
        let (s, seg) = city
            .segments
            .iter()
            .enumerate()
            .find(|(_, s)| s.lanes == 3 && !s.downstream.is_empty())
            .expect("the default city has a 3-lane segment");
        let down = seg.downstream[0];
        let spec = format!("{}:1:5:10", seg.id);
        let base = FeedOptions { duration_min: 20, ..FeedOptions::default() };
        let with = FeedOptions { incidents: vec![spec.parse().unwrap()], ..base.clone() };
        let (calm, blocked) = (detector_feed(&city, &base).unwrap(), detector_feed(&city, &with).unwrap());
        let from = base.start_ms + 5 * MINUTE;
        let during = |r: &Value| (from..from + 10 * MINUTE).contains(&r["ts"].as_u64().unwrap());
        let on = |lines: &[String], segment: u32| -> Vec<Value> {
            payloads(lines)
                .into_iter()
                .filter(|r| r["segment"] == city.segments[segment as usize].id.as_str() && during(r))
                .collect()
        };
        let here = on(&blocked, s as u32);
        assert_eq!(here.len(), 3 * 20);
        for r in &here {
            let occ = r["occupancy"].as_f64().unwrap();
            if r["lane"] == 1 {
                assert!(r["count"] == 0 && r["speed_kmh"].is_null() && occ >= 0.95, "{r}");
            } else {
                assert!(r["count"].as_u64().unwrap() >= 4 && occ < 0.6, "{r}");
            }
        }
        let open: Vec<f64> =
            here.iter().filter(|r| r["lane"] != 1).map(|r| r["occupancy"].as_f64().unwrap()).collect();
        assert!(open.iter().sum::<f64>() / (open.len() as f64) < 0.4, "open lanes flow: {open:?}");
        let occ_sum = |rs: Vec<Value>| rs.iter().map(|r| r["occupancy"].as_f64().unwrap()).sum::<f64>();
        let (down_calm, down_blocked) = (occ_sum(on(&calm, down)), occ_sum(on(&blocked, down)));
        assert!(down_blocked < down_calm * 0.9, "downstream {down_blocked} vs {down_calm} without incident");
        // Outside the incident's reach every line is the same as without it.
        let touched = [seg.id.as_str(), city.segments[down as usize].id.as_str()];
        let untouched = |lines: &[String]| -> Vec<String> {
            lines
                .iter()
                .filter(|l| !touched.iter().any(|t| l.contains(&format!("\"{t}\""))))
                .cloned()
                .collect()
        };
        assert_eq!(untouched(&calm), untouched(&blocked));
    }

    #[test]
    fn bad_incidents_are_explained() {
        let city = city();
        let err = |spec: &str| {
            let opts = FeedOptions { incidents: vec![spec.parse().unwrap()], ..FeedOptions::default() };
            Simulator::new(&city, &opts).err().unwrap().to_string()
        };
        assert!(err("nope:0:1:5").contains("unknown segment \"nope\""));
        assert!(err("seg-h0e-0:7:1:5").contains("lane(s)"));
        assert!(err("seg-h0e-0:0:90:5").contains("after the end"));
        assert!("seg-h0e-0:0:1".parse::<IncidentSpec>().unwrap_err().ends_with("DURATION_MIN"));
        assert!(":0:1:1".parse::<IncidentSpec>().is_err());
        assert!("seg-h0e-0:x:1:5".parse::<IncidentSpec>().unwrap_err().contains("LANE"));
        assert_eq!(
            "a:b:0:2:3".parse::<IncidentSpec>().unwrap(),
            IncidentSpec { segment: "a:b".into(), lane: 0, start_min: 2, duration_min: 3 }
        );
    }

    #[test]
    fn start_accepts_rfc3339_and_epoch_ms() {
        assert_eq!(parse_start("2026-03-02T07:00:00+08:00"), Ok(1_772_406_000_000));
        assert_eq!(parse_start("1772406000000"), Ok(1_772_406_000_000));
        assert!(parse_start("12").is_err());
        assert!(parse_start("yesterday").is_err());
        assert_eq!(parse_start(DEFAULT_START), Ok(DEFAULT_START_MS));
    }
}
