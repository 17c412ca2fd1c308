//! The `[traffic]` section of the config: windows, congestion bands, the district index and the
//! traffic alert rules, with documented defaults (README lists them all).

use crate::config::ConfigError;
use crate::time::{Ms, SECOND};
use serde::{Deserialize, Serialize};

/// Traffic indicators and alert rules (CONTRACT §6–7).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TrafficConfig {
    /// How long after its window ends a window's readings are kept, in seconds, so late readings
    /// can still correct it. A reading whose 1-minute window ended longer ago than this (measured
    /// on the watermark) is dead-lettered `too_late`. Default 900 (15 minutes).
    pub retention_s: u64,
    /// Congestion bands, km/h, per road class: a segment's level is 1 (畅通) above the first
    /// number, 2 (基本畅通) above the second, 3 (轻度拥堵) above the third, 4 (中度拥堵) above the
    /// fourth, else 5 (严重拥堵).
    pub bands: Bands,
    /// A segment counts as congested for the district index at this level or worse. Default 4.
    pub congested_level: u8,
    /// Piecewise-linear map from the length-weighted congested share of a district's observed
    /// road (percent) to its traffic performance index (0–10), as `[share_pct, tpi]` points with
    /// increasing share. Default (after Beijing DB11/T 785): 0→0, 4→2, 8→4, 11→6, 14→8, 24→10.
    pub tpi_curve: Vec<[f64; 2]>,
    /// `traffic.incident` (a blocked lane) parameters.
    pub incident: IncidentConfig,
    /// `traffic.congestion` parameters.
    pub congestion: CongestionConfig,
    /// `traffic.detector_offline`: raised after this many reporting intervals without a reading
    /// (after the interval the last reading covers). Default 3.
    pub offline_intervals: u32,
}

impl Default for TrafficConfig {
    fn default() -> Self {
        TrafficConfig {
            retention_s: 900,
            bands: Bands::default(),
            congested_level: 4,
            tpi_curve: vec![[0.0, 0.0], [4.0, 2.0], [8.0, 4.0], [11.0, 6.0], [14.0, 8.0], [24.0, 10.0]],
            incident: IncidentConfig::default(),
            congestion: CongestionConfig::default(),
            offline_intervals: 3,
        }
    }
}

impl TrafficConfig {
    /// Retention in ms.
    pub fn retention_ms(&self) -> Ms {
        self.retention_s * SECOND
    }
}

/// Speed bands per road class, each `[l1, l2, l3, l4]` in km/h, strictly decreasing.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Bands {
    /// Expressways. Default 65, 50, 35, 20.
    pub expressway: [f64; 4],
    /// Arterial roads. Default 40, 30, 20, 15.
    pub arterial: [f64; 4],
    /// Secondary roads. Default 35, 25, 15, 10.
    pub secondary: [f64; 4],
    /// Branch roads. Default 35, 25, 15, 10.
    pub branch: [f64; 4],
}

impl Default for Bands {
    fn default() -> Self {
        Bands {
            expressway: [65.0, 50.0, 35.0, 20.0],
            arterial: [40.0, 30.0, 20.0, 15.0],
            secondary: [35.0, 25.0, 15.0, 10.0],
            branch: [35.0, 25.0, 15.0, 10.0],
        }
    }
}

/// Blocked-lane detection (`traffic.incident`; the module docs of `traffic` give the rule and
/// its reasoning). Defaults were chosen on the SUMO runs of `tests/fixtures/sumo` (README).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IncidentConfig {
    /// A lane is "stopped" in a minute when its occupancy is at least this (a vehicle stands over
    /// the loop the whole minute; a creeping queue reads 0.85–0.95) … Default 0.97.
    pub occ_stopped: f64,
    /// … and at most this many vehicles crossed its loop in the minute (a car now and then
    /// slips past a blockage by changing lanes). Default 1.
    pub max_count: u32,
    /// A minute in which at least this many vehicles cross a loop that was stopped the minute
    /// before is a queue discharging (a red light or a turning queue), not a blockage: no window
    /// holding such a minute raises. Default 2.
    pub discharge_count: u32,
    /// The adjacent lanes must carry at least this many vehicles in the window (traffic passes
    /// the blocked lane). Default 6.
    pub neighbour_min_count: u32,
    /// A downstream segment's 1-minute mean occupancy at or above which a stopped minute is read
    /// as spill-back from downstream, not a blockage. Default 0.75.
    pub spillback_occ: f64,
    /// The window, in minutes, over which the rule judges a lane (persistence). Default 6.
    pub persist_min: u32,
    /// Stopped minutes the window must hold (k of `persist_min`, not necessarily
    /// consecutive). Default 3.
    pub stopped_min: u32,
}

impl Default for IncidentConfig {
    fn default() -> Self {
        IncidentConfig {
            occ_stopped: 0.97,
            max_count: 1,
            discharge_count: 2,
            neighbour_min_count: 6,
            spillback_occ: 0.75,
            persist_min: 6,
            stopped_min: 3,
        }
    }
}

/// District congestion alert.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CongestionConfig {
    /// A district is congested while its 5-minute index is at least this. Default 6 (中度拥堵).
    pub tpi_threshold: f64,
    /// For this many minutes (a multiple of 5): consecutive 5-minute windows. Default 15.
    pub persist_min: u32,
}

impl Default for CongestionConfig {
    fn default() -> Self {
        CongestionConfig { tpi_threshold: 6.0, persist_min: 15 }
    }
}

impl TrafficConfig {
    /// Checks the values that types alone cannot, naming the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: &str, reason: &str| Err(ConfigError { key: key.into(), reason: reason.into() });
        let t = self;
        if t.retention_s < 60 {
            return err("traffic.retention_s", "must be at least 60 (a whole 1-minute window)");
        }
        for (name, b) in [
            ("expressway", t.bands.expressway),
            ("arterial", t.bands.arterial),
            ("secondary", t.bands.secondary),
            ("branch", t.bands.branch),
        ] {
            if !b.windows(2).all(|w| w[0] > w[1]) || b[3] < 0.0 {
                return err(&format!("traffic.bands.{name}"), "must be four strictly decreasing speeds ≥ 0");
            }
        }
        if !(1..=5).contains(&t.congested_level) {
            return err("traffic.congested_level", "must be 1..5");
        }
        if t.tpi_curve.len() < 2 || !t.tpi_curve.windows(2).all(|w| w[0][0] < w[1][0] && w[0][1] <= w[1][1]) {
            return err(
                "traffic.tpi_curve",
                "needs ≥ 2 points with increasing share and non-decreasing index",
            );
        }
        if t.tpi_curve.iter().any(|p| !(0.0..=100.0).contains(&p[0]) || !(0.0..=10.0).contains(&p[1])) {
            return err("traffic.tpi_curve", "shares must be 0..100 and indices 0..10");
        }
        let i = &t.incident;
        for (key, v) in [
            ("traffic.incident.occ_stopped", i.occ_stopped),
            ("traffic.incident.spillback_occ", i.spillback_occ),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return err(key, "must be an occupancy fraction 0..1");
            }
        }
        if i.persist_min == 0 || i.persist_min > 120 {
            return err("traffic.incident.persist_min", "must be 1..120");
        }
        // A window's minutes must all still be held when it closes, or expiring minutes would
        // change a window already judged.
        if i.persist_min as u64 * 60 + 60 > t.retention_s {
            return err(
                "traffic.incident.persist_min",
                "must be at least a minute shorter than traffic.retention_s",
            );
        }
        if i.stopped_min == 0 || i.stopped_min > i.persist_min {
            return err("traffic.incident.stopped_min", "must be 1..persist_min");
        }
        if i.discharge_count <= i.max_count {
            return err("traffic.incident.discharge_count", "must be more than max_count");
        }
        let c = &t.congestion;
        if c.persist_min == 0 || !c.persist_min.is_multiple_of(5) || c.persist_min > 24 * 60 {
            return err("traffic.congestion.persist_min", "must be a positive multiple of 5 (≤ 1440)");
        }
        if !(0.0..=10.0).contains(&c.tpi_threshold) {
            return err("traffic.congestion.tpi_threshold", "must be 0..10");
        }
        if t.offline_intervals == 0 || t.offline_intervals > 1000 {
            return err("traffic.offline_intervals", "must be 1..1000");
        }
        Ok(())
    }
}
