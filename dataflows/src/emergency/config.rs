//! The `[emergency]` section of the config: how long incidents are kept, how dispatch is
//! recommended, and the thresholds of the `emergency.*` alert rules, with documented defaults
//! (README lists them all).

use crate::config::ConfigError;
use crate::event::{IncidentType, UnitStatus, UnitType};
use crate::time::{MINUTE, Ms, SECOND};
use serde::{Deserialize, Serialize};

/// Emergency indicators, dispatch recommendations and alert rules (CONTRACT §6–7).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EmergencyConfig {
    /// How far behind the watermark an incident or unit event is still accepted, in seconds;
    /// older ones are dead-lettered `too_late`. Default 3600.
    pub retention_s: u64,
    /// A closed (cleared or cancelled) incident leaves the indicators, the API and the state
    /// this long after it closed, in seconds. Default 600.
    pub closed_grace_s: u64,
    /// Dispatch recommendations.
    pub dispatch: DispatchConfig,
    /// `emergency.unassigned`.
    pub unassigned: UnassignedConfig,
    /// `emergency.response_sla`: the longest acceptable travel time (en route → on scene) per
    /// unit type, in seconds; 0 turns the rule off for the type. Defaults (NFPA 1710): fire
    /// engine 240, ambulance 480, police 0 (off).
    pub response_sla: PerUnitType,
    /// `emergency.coverage_gap`: on or off. Default on.
    pub coverage_gap: bool,
    /// `emergency.surge`.
    pub surge: SurgeConfig,
}

impl Default for EmergencyConfig {
    fn default() -> Self {
        EmergencyConfig {
            retention_s: 3600,
            closed_grace_s: 600,
            dispatch: DispatchConfig::default(),
            unassigned: UnassignedConfig::default(),
            response_sla: PerUnitType { fire_engine: 240, ambulance: 480, police: 0 },
            coverage_gap: true,
            surge: SurgeConfig::default(),
        }
    }
}

/// One number per unit type.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct PerUnitType {
    pub fire_engine: u64,
    pub ambulance: u64,
    pub police: u64,
}

impl PerUnitType {
    /// The value for a unit type.
    pub fn get(&self, t: UnitType) -> u64 {
        match t {
            UnitType::FireEngine => self.fire_engine,
            UnitType::Ambulance => self.ambulance,
            UnitType::Police => self.police,
        }
    }
}

/// How units are recommended for open, unassigned incidents.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DispatchConfig {
    /// How many units to recommend per incident. Default 3.
    pub k: usize,
    /// The unit type sent to each incident type. Defaults: fire → fire_engine, medical →
    /// ambulance, police → police, traffic → police.
    pub fire: UnitType,
    /// See [`DispatchConfig::fire`].
    pub medical: UnitType,
    /// See [`DispatchConfig::fire`].
    pub police: UnitType,
    /// See [`DispatchConfig::fire`].
    pub traffic: UnitType,
    /// Unit states that may be recommended. Default `["available"]` (returning and
    /// out-of-service units are not recommended).
    pub eligible: Vec<UnitStatus>,
    /// Free-flow speed = speed limit × this, used on segments without a fresh live speed.
    /// Default 0.8 (an emergency vehicle on an empty road keeps below the limit at junctions).
    pub free_flow_factor: f64,
    /// A segment's live speed (its latest closed 5-minute window with a speed) is fresh for this
    /// many seconds after the window ends. Default 900.
    pub speed_fresh_s: u64,
    /// Live speeds below this (km/h) count as this, so a standing queue slows a route without
    /// making it impassable. Default 5.
    pub min_speed_kmh: f64,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            k: 3,
            fire: UnitType::FireEngine,
            medical: UnitType::Ambulance,
            police: UnitType::Police,
            traffic: UnitType::Police,
            eligible: vec![UnitStatus::Available],
            free_flow_factor: 0.8,
            speed_fresh_s: 900,
            min_speed_kmh: 5.0,
        }
    }
}

impl DispatchConfig {
    /// The unit type suited to an incident type.
    pub fn unit_type(&self, t: IncidentType) -> UnitType {
        match t {
            IncidentType::Fire => self.fire,
            IncidentType::Medical => self.medical,
            IncidentType::Police => self.police,
            IncidentType::Traffic => self.traffic,
        }
    }
}

/// `emergency.unassigned`: a serious incident not dispatched in time.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct UnassignedConfig {
    /// Raised this many seconds after the report. Default 60.
    pub after_s: u64,
    /// For incidents of this severity or higher (1 = highest). Default 2.
    pub max_severity: u8,
}

impl Default for UnassignedConfig {
    fn default() -> Self {
        UnassignedConfig { after_s: 60, max_severity: 2 }
    }
}

/// `emergency.surge`: many more incidents in a district than usual.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SurgeConfig {
    /// The window counted, minutes. Default 30.
    pub window_min: u64,
    /// The trailing baseline, hours: the incidents of the `baseline_h` hours before the window,
    /// scaled to one window. Default 24.
    pub baseline_h: u64,
    /// A surge is at least this many times the baseline … Default 3.
    pub factor: f64,
    /// … and at least this many incidents in the window. Default 5.
    pub min_count: u64,
}

impl Default for SurgeConfig {
    fn default() -> Self {
        SurgeConfig { window_min: 30, baseline_h: 24, factor: 3.0, min_count: 5 }
    }
}

impl SurgeConfig {
    /// The window, ms.
    pub fn window_ms(&self) -> Ms {
        self.window_min * MINUTE
    }

    /// The baseline span, ms.
    pub fn baseline_ms(&self) -> Ms {
        self.baseline_h * 60 * MINUTE
    }
}

impl EmergencyConfig {
    /// [`EmergencyConfig::retention_s`] in ms.
    pub fn retention_ms(&self) -> Ms {
        self.retention_s * SECOND
    }

    /// [`EmergencyConfig::closed_grace_s`] in ms.
    pub fn grace_ms(&self) -> Ms {
        self.closed_grace_s * SECOND
    }

    /// Checks the values that types alone cannot, naming the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: &str, reason: &str| Err(ConfigError { key: key.into(), reason: reason.into() });
        if self.retention_s < 60 || self.retention_s > 7 * 86_400 {
            return err("emergency.retention_s", "must be 60..604800");
        }
        if self.closed_grace_s > 86_400 {
            return err("emergency.closed_grace_s", "must be at most 86400");
        }
        let d = &self.dispatch;
        if d.k == 0 || d.k > 20 {
            return err("emergency.dispatch.k", "must be 1..20");
        }
        if !(d.free_flow_factor > 0.0 && d.free_flow_factor <= 2.0) {
            return err("emergency.dispatch.free_flow_factor", "must be in (0, 2]");
        }
        if !(d.min_speed_kmh > 0.0 && d.min_speed_kmh <= 200.0) {
            return err("emergency.dispatch.min_speed_kmh", "must be in (0, 200]");
        }
        if d.eligible.is_empty() {
            return err("emergency.dispatch.eligible", "needs at least one unit status");
        }
        if !(1..=5).contains(&self.unassigned.max_severity) {
            return err("emergency.unassigned.max_severity", "must be 1..5");
        }
        let s = &self.surge;
        if s.window_min == 0 || s.window_min > 24 * 60 {
            return err("emergency.surge.window_min", "must be 1..1440");
        }
        if s.baseline_h == 0 || s.baseline_h > 24 * 28 {
            return err("emergency.surge.baseline_h", "must be 1..672");
        }
        if !(s.factor.is_finite() && s.factor > 0.0) {
            return err("emergency.surge.factor", "must be positive");
        }
        if s.min_count == 0 {
            return err("emergency.surge.min_count", "must be at least 1");
        }
        Ok(())
    }
}
