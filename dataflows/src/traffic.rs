//! Traffic indicators and alerts (CONTRACT §6–7): detector, segment and district windows,
//! congestion levels, the district traffic performance index, and the rules
//! `traffic.incident`, `traffic.congestion` and `traffic.detector_offline`.
//!
//! # How the windows are computed, and why they are exact
//! The ingest side ([`crate::ingest`]) turns each reading into the record [`DetWin`] (detector,
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
//! * `traffic.incident` — a blocked lane, California-algorithm style but across lanes: in a
//!   1-minute window a lane is *stopped* (occupancy ≥ `occ_stopped`, count ≤ `max_count`) while
//!   an adjacent lane of the same segment *flows* (count ≥ `neighbour_min_count`, occupancy at
//!   least `occ_diff` lower), and no downstream segment is at or above `spillback_occ` (then the
//!   queue is spill-back, not an incident). This must hold for `persist_min` consecutive minutes.
//!   A signal queue stops both lanes at once (no difference); a turning-lane queue discharges
//!   every cycle, so it breaks the run of stopped minutes; a blocked lane does neither.
//! * `traffic.congestion` — a district's 5-minute index ≥ `tpi_threshold` for `persist_min`
//!   minutes of consecutive 5-minute windows.
//! * `traffic.detector_offline` — a reading at `ts` with interval `I` keeps its detector alive over
//!   `[ts, ts + (offline_intervals + 1)·I)`; a detector that has reported before and is alive
//!   nowhere is offline. The deadline is the timer of the contract: it fires on the watermark.

use crate::alerts::{AlertKey, Rule, Subject};
use crate::city::{CityModel, Idx, RoadClass};
use crate::config::{Config, TrafficConfig};
use crate::diff::abelian_struct;
use crate::time::{MINUTE, Ms};
use crate::totals::totals;
use crate::windows::persisted;
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

    let incidents = incident_alerts(detectors.clone(), windows, &city, &cfg);
    let congestion = congestion_alerts(districts.clone(), &cfg);
    let offline = offline_alerts(alive, seen);
    let alerts = incidents.concat(congestion).concat(offline).distinct();

    (
        TrafficInputs { windows: windows_in, alive: alive_in, seen: seen_in },
        TrafficOutputs { detectors, segments, districts, alerts },
    )
}

/// A lane's minute, as the incident rule sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
struct LaneMinute {
    lane: u32,
    stopped: bool,
    count: i64,
    /// Occupancy in ppm (time-weighted mean), or −1 when none was reported.
    occ_ppm: i64,
}

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
    let occ_diff_ppm = (inc.occ_diff * 1e6).round() as i64;

    // Lanes of multi-lane segments, per (segment, minute).
    let c = city.clone();
    let lanes = detectors.flat_map(move |(w, sum)| {
        (w.win == Win::M1 && c.detector_multi_lane(w.det)).then(|| {
            let det = &c.detectors[w.det as usize];
            let occ_ppm = if sum.occ_s > 0 { sum.occ_ppm_s / sum.occ_s } else { -1 };
            let stopped = occ_ppm >= occ_stopped_ppm && sum.count <= inc.max_count as i64;
            ((det.segment, w.start), LaneMinute { lane: det.lane, stopped, count: sum.count, occ_ppm })
        })
    });

    // A stopped lane next to a flowing one.
    let min_count = inc.neighbour_min_count as i64;
    let candidates =
        lanes.reduce(move |_key, input: &[(&LaneMinute, isize)], out: &mut Vec<(u32, isize)>| {
            for (a, _) in input.iter().filter(|(a, _)| a.stopped) {
                let flowing_neighbour = input.iter().any(|(b, _)| {
                    b.lane.abs_diff(a.lane) == 1
                        && b.count >= min_count
                        && b.occ_ppm >= 0
                        && b.occ_ppm + occ_diff_ppm <= a.occ_ppm
                });
                if flowing_neighbour {
                    out.push((a.lane, 1));
                }
            }
        });

    // Minutes in which a segment's downstream neighbour is congested enough to spill back: the
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
    .distinct();

    let blocked = candidates.antijoin(spilling).map(|((seg, start), lane)| ((seg, lane), start));
    persisted(blocked, MINUTE, inc.persist_min).map(|(segment, lane)| AlertKey {
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
