//! Traffic indicators and alerts (CONTRACT §6–7): detector, segment and district windows,
//! congestion levels, the district traffic performance index, and the rules
//! `traffic.incident`, `traffic.congestion` and `traffic.detector_offline`.
//!
//! # How the windows are computed, and why they are exact
//! The ingest side ([`ingest`]) turns each reading into the record [`DetWin`] (detector,
//! window) whose *difference* is a [`FlowSum`] of fixed-point integers, presented at the time the
//! window closes and retracted `retention` later. [`totals`] sums the differences per key, so
//! a window's total is exact whatever the arrival order or worker count, appears when the
//! watermark passes the window's end, and is corrected (−old, +new) by a late reading. Segment
//! windows (5 minutes) are the same records re-keyed to the segment; district windows (5
//! minutes) sum per-segment [`DistSum`]s derived from the segment totals, so a corrected segment
//! corrects its district. Detector windows are written for 1 and 5 minutes.
//!
//! # Levels and the district index
//! A segment's level (1 畅通, 2 基本畅通, 3 轻度拥堵, 4 中度拥堵, 5 严重拥堵) comes from its
//! count-weighted mean speed and the bands of its road class (`level 1` above the first band
//! speed, …, `5` at or below the fourth); without a speed (no vehicle counted) it is 5 when the
//! loops were at least half occupied (standing traffic) and 1 otherwise (an empty road). The
//! district index (TPI, 0–10) maps the length-weighted share of observed road at
//! `congested_level` or worse through a piecewise-linear curve (by default after Beijing's
//! DB11/T 785: 4 % → 2, 8 % → 4, 11 % → 6, 14 % → 8, 24 % → 10); its level is 1 below 2, 2 below
//! 4, 3 below 6, 4 below 8, else 5. District speed is the space-mean speed Σ length / Σ travel time
//! over segments with a speed.
//!
//! # Alert rules
//! * `traffic.incident` — a blocked lane; see [the rule below](#the-incident-rule).
//! * `traffic.congestion` — a district's 5-minute index ≥ `tpi_threshold` for `persist_min`
//!   minutes of consecutive 5-minute windows.
//! * `traffic.detector_offline` — a reading at `ts` with interval `I` keeps its detector alive over
//!   `[ts, ts + (offline_intervals + 1)·I)`; a detector that has reported before and is alive
//!   nowhere is offline. The deadline is the timer of the contract: it fires on the watermark.//!
//! # The incident rule
//! Tuned on microscopic simulations of signalised and unsignalised networks (Eclipse SUMO,
//! `scripts/sumo/`, fixtures in `tests/fixtures/sumo/`, figures in the README), where the
//! earlier rule ("count 0 for 5 straight minutes while the neighbour lane is much less
//! occupied") missed every stall: a car slips past now and then, and the neighbour lane queues
//! at every red light too. It judges each lane of a multi-lane segment on its 1-minute windows:
//!
//! * a minute is **stopped** when the lane's loop was occupied at least `occ_stopped` (0.97) of
//!   it and at most `max_count` (1) vehicle crossed — a vehicle standing over the loop the whole
//!   minute. A red light stops a lane for at most part of a cycle; a creeping turning queue
//!   reads 0.85–0.95 (cars move up into gaps); a stalled car, or the standing queue behind it,
//!   reads 1. A stopped minute does not count while a downstream segment's 1-minute mean
//!   occupancy is at least `spillback_occ` (0.75): the queue is then spill-back from a full
//!   road downstream, not a blockage of this lane;
//! * a minute **discharges** when at least `discharge_count` (2) vehicles cross a loop that was
//!   stopped the minute before: a queue that moves off is a signal or a turning queue, which a
//!   blocked lane never is; a car that slips past (one vehicle) is not a discharge. Judging the
//!   discharge against the minute before, not any busy minute, matters: the minute in which a
//!   stall begins is usually busy, and must not veto the minutes after it;
//! * the **neighbours** are the lanes numbered one either side; their vehicles are summed.
//!
//! A lane is **blocked** at the end of minute `m` when the window of the `persist_min` (6)
//! minutes ending at `m` holds at least `stopped_min` (3) stopped minutes (k of n, so a car
//! slipping past or a minute under spill-back does not restart the count), no discharge, and
//! at least `neighbour_min_count` (6) vehicles in the neighbour lanes (traffic passes the
//! blockage: when every lane stands — a red light, gridlock — nothing does). A queue held again
//! and again, moving off between holds (a turning lane held four minutes, then discharging),
//! never completes a window once it has been seen to discharge: its last discharge is always in
//! the window. What remains is a lane that stood three minutes out of six beside moving
//! traffic without moving off. (A first hold of more than three minutes, with no discharge in
//! the window before it, cannot be told from a blockage in real time: it is raised, and cleared
//! the minute it moves off.)
//!
//! The alert is present from the end of the first window that satisfies the condition (its
//! `raised_ts`, CONTRACT §7) to the end of the first that does not. It clears quickly once the
//! blockage goes: the queue behind it discharges (a veto at once), or the stopped minutes age
//! out of the window.
//!
//! *As a dataflow*, every step is a pure function of exact integer sums, so the output does not
//! depend on arrival order, batching or worker count. Each lane-minute total is sent under its
//! (segment, minute) and, as the "minute before", under (segment, minute + 1); the spill-back
//! marker (downstream segment totals over the threshold) joins the same key. One `reduce` per
//! (segment, minute) turns these into each lane's `Votes` (stopped 0/1, discharged 0/1,
//! neighbour vehicles), which a late reading corrects like any other aggregate. Each minute's
//! votes are the *difference* of the `persist_min` windows that contain it, so [`totals`] keeps
//! each window's exact sums incrementally, and the condition is a filter on them. A satisfied
//! window is made present only over `[its end, its end + 1 minute)` ([`during`]), so the
//! windows of consecutive minutes join into one continuous presence, and a window that stops
//! satisfying it retracts at the current time. The minutes of a window are all within
//! retention when it is judged (`persist_min` is validated against `retention_s`), so an
//! expiring minute never changes a window after its end.

pub mod config;
pub mod events;
pub mod ingest;
pub mod measure;

use crate::alerts::{AlertKey, Rule, Subject};
use crate::city::{CityModel, Idx, RoadClass};
use crate::config::{Config, TrafficConfig};
use crate::diff::abelian_struct;
use crate::time::{MINUTE, Ms};
use crate::totals::totals;
use crate::windows::{during, persisted};
use differential_dataflow::input::{Input, InputSession};
use differential_dataflow::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use timely::dataflow::Scope;

/// Window lengths of the traffic measurements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Win {
    /// One minute.
    M1,
    /// Five minutes.
    M5,
}

impl Win {
    /// Both window lengths.
    pub const ALL: [Win; 2] = [Win::M1, Win::M5];

    /// Length in ms.
    #[inline]
    pub fn ms(self) -> Ms {
        match self {
            Win::M1 => MINUTE,
            Win::M5 => 5 * MINUTE,
        }
    }

    /// Length in seconds.
    pub fn seconds(self) -> i64 {
        (self.ms() / 1000) as i64
    }

    /// The `window` tag value.
    pub fn tag(self) -> &'static str {
        match self {
            Win::M1 => "1m",
            Win::M5 => "5m",
        }
    }
}

/// A detector's window: the key of `traffic_detector`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DetWin {
    /// Window length.
    pub win: Win,
    /// Window start, epoch ms.
    pub start: Ms,
    /// Detector index.
    pub det: Idx,
}

/// A segment's window: the key of `traffic_segment`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SegWin {
    /// Window length.
    pub win: Win,
    /// Window start, epoch ms.
    pub start: Ms,
    /// Segment index.
    pub seg: Idx,
}

/// A district's window: the key of `traffic_district`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DistWin {
    /// Window length.
    pub win: Win,
    /// Window start, epoch ms.
    pub start: Ms,
    /// District index.
    pub district: Idx,
}

/// The whole city's window: the key of `traffic_city` (the sum of the districts' windows).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CityWin {
    /// Window length.
    pub win: Win,
    /// Window start, epoch ms.
    pub start: Ms,
}

/// Exact sums of detector intervals (the difference type of detector and segment windows).
///
/// Fixed point: occupancy in millionths, speed in thousandths of a km/h.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FlowSum {
    /// Vehicles.
    pub count: i64,
    /// Seconds covered by intervals that reported occupancy.
    pub occ_s: i64,
    /// Σ occupancy (ppm) × interval seconds.
    pub occ_ppm_s: i64,
    /// Vehicles in intervals that reported a speed.
    pub speed_n: i64,
    /// Σ speed (0.001 km/h) × vehicles.
    pub speed_mk: i64,
}

abelian_struct!(FlowSum { count, occ_s, occ_ppm_s, speed_n, speed_mk });

impl FlowSum {
    /// The sum of one reading interval.
    pub fn reading(interval_s: u32, count: u32, occupancy: Option<f64>, speed_kmh: Option<f64>) -> FlowSum {
        let count = count as i64;
        let (occ_s, occ_ppm_s) = match occupancy {
            Some(o) => (interval_s as i64, (o * 1e6).round() as i64 * interval_s as i64),
            None => (0, 0),
        };
        let (speed_n, speed_mk) = match speed_kmh {
            Some(v) if count > 0 => (count, (v * 1e3).round() as i64 * count),
            _ => (0, 0),
        };
        FlowSum { count, occ_s, occ_ppm_s, speed_n, speed_mk }
    }

    /// Flow rate for a window: count × 3600 / window seconds.
    pub fn flow_vph(&self, win: Win) -> f64 {
        self.count as f64 * 3600.0 / win.seconds() as f64
    }

    /// Time-weighted mean occupancy (0..1), if any interval reported one.
    pub fn occupancy(&self) -> Option<f64> {
        (self.occ_s > 0).then(|| self.occ_ppm_s as f64 / self.occ_s as f64 / 1e6)
    }

    /// Count-weighted mean speed, km/h, if any vehicle had a speed.
    pub fn speed_kmh(&self) -> Option<f64> {
        (self.speed_n > 0).then(|| self.speed_mk as f64 / self.speed_n as f64 / 1e3)
    }

    /// Whether the mean speed is strictly above `kmh`, decided exactly on the integers.
    fn speed_above(&self, kmh: f64) -> bool {
        self.speed_mk > (kmh * 1e3).round() as i64 * self.speed_n
    }

    /// Whether the mean occupancy is at least `frac`, decided exactly on the integers.
    pub fn occupancy_at_least(&self, frac: f64) -> bool {
        self.occ_s > 0 && self.occ_ppm_s >= (frac * 1e6).round() as i64 * self.occ_s
    }
}

/// The congestion level (1 畅通 … 5 严重拥堵) of a window's sums on a road of class `class`.
pub fn level(sum: &FlowSum, class: RoadClass, cfg: &TrafficConfig) -> u8 {
    let bands = match class {
        RoadClass::Expressway => cfg.bands.expressway,
        RoadClass::Arterial => cfg.bands.arterial,
        RoadClass::Secondary => cfg.bands.secondary,
        RoadClass::Branch => cfg.bands.branch,
    };
    if sum.speed_n == 0 {
        return if sum.occupancy_at_least(0.5) { 5 } else { 1 };
    }
    bands.iter().position(|&b| sum.speed_above(b)).map(|p| p as u8 + 1).unwrap_or(5)
}

/// The names of the five levels, 1-based.
pub const LEVEL_NAMES: [&str; 5] = ["畅通", "基本畅通", "轻度拥堵", "中度拥堵", "严重拥堵"];

/// Per-district sums of segment windows (the difference type of district windows).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DistSum {
    /// Segments observed.
    pub segments: i64,
    /// Length of observed road, mm.
    pub observed_mm: i64,
    /// Length of congested road, mm.
    pub congested_mm: i64,
    /// Length of road with a speed, mm.
    pub speed_mm: i64,
    /// Travel time over that road, µs.
    pub travel_us: i64,
}

abelian_struct!(DistSum { segments, observed_mm, congested_mm, speed_mm, travel_us });

impl DistSum {
    /// A segment window's contribution to its district.
    pub fn of_segment(sum: &FlowSum, length_m: f64, level: u8, cfg: &TrafficConfig) -> DistSum {
        let mm = (length_m * 1e3).round() as i64;
        let (speed_mm, travel_us) = match sum.speed_kmh() {
            Some(v) if v > 0.0 => (mm, (length_m * 3.6e6 / v).round() as i64),
            _ => (0, 0),
        };
        DistSum {
            segments: 1,
            observed_mm: mm,
            congested_mm: if level >= cfg.congested_level { mm } else { 0 },
            speed_mm,
            travel_us,
        }
    }

    /// Congested share of observed road, percent.
    pub fn congested_pct(&self) -> f64 {
        if self.observed_mm <= 0 { 0.0 } else { self.congested_mm as f64 * 100.0 / self.observed_mm as f64 }
    }

    /// The traffic performance index, 0–10.
    pub fn tpi(&self, cfg: &TrafficConfig) -> f64 {
        tpi_of_share(self.congested_pct(), &cfg.tpi_curve)
    }

    /// Space-mean speed, km/h.
    pub fn speed_kmh(&self) -> Option<f64> {
        (self.travel_us > 0).then(|| self.speed_mm as f64 / 1e3 / (self.travel_us as f64 / 1e6) * 3.6)
    }

    /// Congested road, km.
    pub fn congested_km(&self) -> f64 {
        self.congested_mm as f64 / 1e6
    }
}

/// Maps a congested share (percent) through the piecewise-linear curve, clamped to its ends.
pub fn tpi_of_share(pct: f64, curve: &[[f64; 2]]) -> f64 {
    let (Some(first), Some(last)) = (curve.first(), curve.last()) else {
        return 0.0;
    };
    if pct <= first[0] {
        return first[1];
    }
    for w in curve.windows(2) {
        let ([x0, y0], [x1, y1]) = (w[0], w[1]);
        if pct <= x1 {
            return y0 + (y1 - y0) * (pct - x0) / (x1 - x0);
        }
    }
    last[1]
}

/// The level (1–5) of a district index: 1 below 2, 2 below 4, 3 below 6, 4 below 8, else 5.
pub fn tpi_level(tpi: f64) -> u8 {
    match tpi {
        t if t < 2.0 => 1,
        t if t < 4.0 => 2,
        t if t < 6.0 => 3,
        t if t < 8.0 => 4,
        _ => 5,
    }
}

/// The input collections of the traffic dataflow.
pub struct TrafficInputs {
    /// Detector window sums: presented at window close, retracted once retention has passed.
    pub windows: InputSession<Ms, DetWin, FlowSum>,
    /// Detector liveness: present while a reading keeps the detector alive.
    pub alive: InputSession<Ms, Idx, isize>,
    /// Detectors that have reported at least once (inserted once per worker, never retracted).
    pub seen: InputSession<Ms, Idx, isize>,
}

impl TrafficInputs {
    /// Advances every input to `t`.
    pub fn advance_to(&mut self, t: Ms) {
        self.windows.advance_to(t);
        self.alive.advance_to(t);
        self.seen.advance_to(t);
    }

    /// Flushes buffered updates into the dataflow.
    pub fn flush(&mut self) {
        self.windows.flush();
        self.alive.flush();
        self.seen.flush();
    }
}

/// The outputs of the traffic dataflow.
pub struct TrafficOutputs<'s> {
    /// Detector window totals.
    pub detectors: VecCollection<'s, Ms, (DetWin, FlowSum)>,
    /// Segment window totals (5 minutes).
    pub segments: VecCollection<'s, Ms, (SegWin, FlowSum)>,
    /// District window totals (5 minutes).
    pub districts: VecCollection<'s, Ms, (DistWin, DistSum)>,
    /// City window totals (5 minutes): every district's sum, so a corrected district corrects it.
    pub city: VecCollection<'s, Ms, (CityWin, DistSum)>,
    /// Active traffic alerts (a set: present while active).
    pub alerts: VecCollection<'s, Ms, AlertKey>,
}

/// Builds the traffic dataflow in `scope`.
pub fn dataflow<'s>(
    scope: Scope<'s, Ms>,
    city: Arc<CityModel>,
    cfg: Arc<Config>,
) -> (TrafficInputs, TrafficOutputs<'s>) {
    let (windows_in, windows) = scope.new_collection::<DetWin, FlowSum>();
    let (alive_in, alive) = scope.new_collection::<Idx, isize>();
    let (seen_in, seen) = scope.new_collection::<Idx, isize>();

    let detectors = totals(windows.clone());

    let c = city.clone();
    let segments = totals(windows.clone().filter(|w| w.win == Win::M5).map(move |w| SegWin {
        win: w.win,
        start: w.start,
        seg: c.detector_segment(w.det),
    }));

    let (c, f) = (city.clone(), cfg.clone());
    let districts = totals(segments.clone().explode(move |(w, sum): (SegWin, FlowSum)| {
        let seg = &c.segments[w.seg as usize];
        let lvl = level(&sum, seg.road_class, &f.traffic);
        let key = DistWin { win: w.win, start: w.start, district: seg.district };
        Some((key, DistSum::of_segment(&sum, seg.length_m, lvl, &f.traffic)))
    }));

    let city_totals = totals(
        districts
            .clone()
            .explode(|(w, sum): (DistWin, DistSum)| Some((CityWin { win: w.win, start: w.start }, sum))),
    );

    let incidents = incident_alerts(detectors.clone(), windows, &city, &cfg);
    let congestion = congestion_alerts(districts.clone(), &cfg);
    let offline = offline_alerts(alive, seen);
    let alerts = incidents.concat(congestion).concat(offline).distinct();

    (
        TrafficInputs { windows: windows_in, alive: alive_in, seen: seen_in },
        TrafficOutputs { detectors, segments, districts, city: city_totals, alerts },
    )
}

/// What the incident rule reads of one lane in one minute, keyed by (segment, minute): the
/// lane's own minute (`prev == false`), its minute before (`prev == true`, re-keyed one minute
/// on), or the marker [`SPILL`] that a downstream segment is full in this minute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
struct LaneObs {
    lane: u32,
    prev: bool,
    count: i64,
    /// Occupancy in ppm (time-weighted mean), or −1 when none was reported.
    occ_ppm: i64,
}

/// The `lane` of the spill-back marker.
const SPILL: u32 = u32::MAX;

/// A lane-minute's votes towards each window of `persist_min` minutes that holds it; the
/// window's sums decide the rule (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
struct Votes {
    /// Stopped minutes (not under spill-back).
    stopped: i64,
    /// Minutes in which a stopped queue discharged.
    discharged: i64,
    /// Vehicles the adjacent lanes carried.
    neighbour: i64,
}

abelian_struct!(Votes { stopped, discharged, neighbour });

/// `traffic.incident`: see the module docs for the rule and why it is correct.
fn incident_alerts<'s>(
    detectors: VecCollection<'s, Ms, (DetWin, FlowSum)>,
    windows: VecCollection<'s, Ms, DetWin, FlowSum>,
    city: &Arc<CityModel>,
    cfg: &Arc<Config>,
) -> VecCollection<'s, Ms, AlertKey> {
    // Without a segment of several lanes no lane has a neighbour to compare with, so the rule
    // can never fire: it is not built, and costs nothing per window.
    if !city.has_multi_lane() {
        return timely::dataflow::operators::generic::operator::empty(detectors.inner.scope())
            .as_collection();
    }
    let inc = cfg.traffic.incident.clone();
    let occ_stopped_ppm = (inc.occ_stopped * 1e6).round() as i64;
    let max_count = inc.max_count as i64;
    let discharge = inc.discharge_count as i64;

    // Each lane-minute of a multi-lane segment, under its own minute and under the next one.
    let c = city.clone();
    let lanes = detectors.flat_map(move |(w, sum)| {
        let (segment, lane) = (c.detector_segment(w.det), c.detectors[w.det as usize].lane);
        let keep = w.win == Win::M1 && c.detector_multi_lane(w.det);
        let occ_ppm = if sum.occ_s > 0 { sum.occ_ppm_s / sum.occ_s } else { -1 };
        keep.then_some([false, true]).into_iter().flatten().map(move |prev| {
            let minute = if prev { w.start + MINUTE } else { w.start };
            ((segment, minute), LaneObs { lane, prev, count: sum.count, occ_ppm })
        })
    });

    // Minutes in which a segment's downstream neighbour is full enough to spill back: the
    // 1-minute occupancy of every segment downstream of a multi-lane segment.
    let watched: Vec<bool> = city
        .segments
        .iter()
        .map(|s| s.upstream.iter().any(|&u| city.segment_detectors(u).len() > 1))
        .collect();
    let (c, c2) = (city.clone(), city.clone());
    let spill_occ = inc.spillback_occ;
    let spilling = totals(
        windows
            .filter(move |w| w.win == Win::M1 && watched[c.detector_segment(w.det) as usize])
            .map(move |w| (c2.detector_segment(w.det), w.start)),
    )
    .flat_map({
        let c = city.clone();
        move |((seg, start), sum): ((Idx, Ms), FlowSum)| {
            let hit = sum.occupancy_at_least(spill_occ);
            let ups = if hit { c.segments[seg as usize].upstream.clone() } else { Vec::new() };
            ups.into_iter().map(move |u| (u, start))
        }
    })
    .distinct()
    .map(|key| (key, LaneObs { lane: SPILL, prev: false, count: 0, occ_ppm: 0 }));

    // Per segment and minute, each lane's votes.
    let stopped = move |o: &LaneObs| o.occ_ppm >= occ_stopped_ppm && o.count <= max_count;
    let votes = lanes.concat(spilling).reduce(
        move |_key, input: &[(&LaneObs, isize)], out: &mut Vec<((u32, Votes), isize)>| {
            let spill = input.iter().any(|(o, _)| o.lane == SPILL);
            let now = || input.iter().map(|(o, _)| *o).filter(|o| !o.prev && o.lane != SPILL);
            for a in now() {
                let before = input.iter().find(|(o, _)| o.prev && o.lane == a.lane).map(|(o, _)| *o);
                let v = Votes {
                    stopped: (stopped(a) && !spill) as i64,
                    discharged: (a.count >= discharge && before.is_some_and(stopped)) as i64,
                    neighbour: now().filter(|b| b.lane.abs_diff(a.lane) == 1).map(|b| b.count).sum(),
                };
                if v != Votes::default() {
                    out.push(((a.lane, v), 1));
                }
            }
        },
    );

    // Each minute votes for the windows of `persist_min` minutes that end at it or after it.
    let n = inc.persist_min as Ms;
    let windows = totals(votes.explode(move |((seg, start), (lane, v)): ((Idx, Ms), (u32, Votes))| {
        (0..n).map(move |i| ((seg, lane, start + i * MINUTE), v))
    }));
    let (k, neighbour_min) = (inc.stopped_min as i64, inc.neighbour_min_count as i64);
    let blocked = windows
        .filter(move |(_, v)| v.stopped >= k && v.discharged == 0 && v.neighbour >= neighbour_min)
        .map(|(key, _)| key);
    // Present from the end of the window that completes the condition to the end of the next.
    during(blocked, |&(_, _, last)| (last + MINUTE, last + 2 * MINUTE)).map(|(segment, lane, _)| AlertKey {
        rule: Rule::TrafficIncident,
        subject: Subject::Lane { segment, lane },
    })
}

fn congestion_alerts<'s>(
    districts: VecCollection<'s, Ms, (DistWin, DistSum)>,
    cfg: &Arc<Config>,
) -> VecCollection<'s, Ms, AlertKey> {
    let f = cfg.clone();
    let threshold = cfg.traffic.congestion.tpi_threshold;
    let congested = districts
        .filter(move |(w, sum)| w.win == Win::M5 && sum.tpi(&f.traffic) >= threshold)
        .map(|(w, _)| (w.district, w.start));
    let windows = cfg.traffic.congestion.persist_min / 5;
    persisted(congested, Win::M5.ms(), windows)
        .map(|district| AlertKey { rule: Rule::TrafficCongestion, subject: Subject::District(district) })
}

fn offline_alerts<'s>(
    alive: VecCollection<'s, Ms, Idx>,
    seen: VecCollection<'s, Ms, Idx>,
) -> VecCollection<'s, Ms, AlertKey> {
    let alive = alive.distinct();
    seen.distinct()
        .map(|d| (d, ()))
        .antijoin(alive)
        .map(|(d, ())| AlertKey { rule: Rule::TrafficDetectorOffline, subject: Subject::Detector(d) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_at_their_boundaries() {
        let cfg = TrafficConfig::default();
        let at = |v: f64| FlowSum::reading(60, 10, Some(0.1), Some(v));
        let ex = |v| level(&at(v), RoadClass::Expressway, &cfg);
        assert_eq!(
            [ex(65.01), ex(65.0), ex(50.01), ex(50.0), ex(35.0), ex(20.01), ex(20.0), ex(0.0)],
            [1, 2, 2, 3, 4, 4, 5, 5]
        );
        let ar = |v| level(&at(v), RoadClass::Arterial, &cfg);
        assert_eq!([ar(40.01), ar(40.0), ar(30.0), ar(20.0), ar(15.01), ar(15.0)], [1, 2, 3, 4, 4, 5]);
        let se = |v| level(&at(v), RoadClass::Secondary, &cfg);
        let br = |v| level(&at(v), RoadClass::Branch, &cfg);
        assert_eq!([se(35.01), se(35.0), se(25.0), se(15.0), se(10.01), se(10.0)], [1, 2, 3, 4, 4, 5]);
        assert_eq!([br(35.01), br(10.0)], [1, 5]);
        // No vehicles: standing traffic or an empty road.
        assert_eq!(level(&FlowSum::reading(60, 0, Some(0.95), None), RoadClass::Arterial, &cfg), 5);
        assert_eq!(level(&FlowSum::reading(60, 0, Some(0.0), None), RoadClass::Arterial, &cfg), 1);
    }

    #[test]
    fn tpi_curve_and_levels() {
        let c = TrafficConfig::default().tpi_curve;
        assert_eq!(tpi_of_share(0.0, &c), 0.0);
        assert_eq!(tpi_of_share(2.0, &c), 1.0);
        assert_eq!(tpi_of_share(4.0, &c), 2.0);
        assert_eq!(tpi_of_share(9.5, &c), 5.0);
        assert_eq!(tpi_of_share(24.0, &c), 10.0);
        assert_eq!(tpi_of_share(80.0, &c), 10.0);
        assert_eq!(
            [
                tpi_level(1.99),
                tpi_level(2.0),
                tpi_level(5.99),
                tpi_level(6.0),
                tpi_level(8.0),
                tpi_level(10.0)
            ],
            [1, 2, 3, 4, 5, 5]
        );
    }

    #[test]
    fn loop_detector_convention() {
        let mut s = FlowSum::reading(30, 10, Some(0.2), Some(60.0));
        differential_dataflow::difference::Semigroup::plus_equals(
            &mut s,
            &FlowSum::reading(30, 30, Some(0.4), Some(40.0)),
        );
        differential_dataflow::difference::Semigroup::plus_equals(
            &mut s,
            &FlowSum::reading(60, 0, Some(0.1), None),
        );
        assert_eq!(s.count, 40);
        assert_eq!(s.flow_vph(Win::M5), 480.0);
        assert!((s.occupancy().unwrap() - 0.2).abs() < 1e-12); // (0.2·30 + 0.4·30 + 0.1·60) / 120
        assert!((s.speed_kmh().unwrap() - 45.0).abs() < 1e-12); // (60·10 + 40·30) / 40
    }
}
