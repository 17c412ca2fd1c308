//! The `[grid]` section of the config: case time limits and the working-day calendar they run
//! on, the amber share, sensor thresholds per kind, and the cell risk score, with documented
//! defaults (README lists them all).
//!
//! # Time limits
//! A limit is written `"4h"` (calendar hours: the clock always runs) or `"3wd"` (working days:
//! the clock runs only on working days of the [`CalendarConfig`], so a case reported on Friday
//! at 10:00 with `1wd` is due on Monday at 10:00, and one reported on Saturday is due at the end
//! of Monday). The defaults follow the manner of the municipal digital city-management
//! standards for 部件/事件 cases: urgent categories in hours, ordinary ones in working days.

use crate::config::ConfigError;
use crate::time::{Ms, SECOND};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Grid management: cases, cell sensors and the cell risk score (CONTRACT §2, §6, §7).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GridConfig {
    /// How far behind the watermark a case event or sensor reading is still accepted, in
    /// seconds; older ones are dead-lettered `too_late`. Default 86400 (a day).
    pub retention_s: u64,
    /// How far behind the watermark a cell sensor reading is still accepted, in seconds.
    /// Default 3600.
    pub sensor_retention_s: u64,
    /// A closed case leaves the case list and the state this long after it closed, in seconds
    /// (it still counts in `closed_today` until the city's midnight). Default 3600.
    pub closed_grace_s: u64,
    /// The share of its time limit after which an open case is amber (黄灯) before it turns
    /// red (overdue) at its deadline. Default 0.8.
    pub amber_share: f64,
    /// Time limits per case category (`"2h"`: calendar hours; `"3wd"`: working days), over the
    /// built-in ones ([`DEFAULT_LIMITS`]: flooding, manhole_cover, road_collapse 2h; gas_leak
    /// 1h; fallen_tree, fire_hazard 4h; garbage, illegal_parking 1wd; street_light,
    /// road_damage, illegal_advertising 3wd; illegal_construction, graffiti 5wd).
    pub limits: BTreeMap<String, Limit>,
    /// The limit of a category not in `limits`. Default `3wd`.
    pub default_limit: Limit,
    /// The working-day calendar.
    pub calendar: CalendarConfig,
    /// Alarm rules per sensor kind, over the built-in ones ([`DEFAULT_SENSORS`]). A kind in
    /// neither is stored and charted without alarms.
    pub sensors: BTreeMap<String, SensorRule>,
    /// The cell risk score.
    pub risk: RiskConfig,
}

/// The built-in time limits (see [`GridConfig::limits`]).
pub const DEFAULT_LIMITS: [(&str, Limit); 13] = [
    ("flooding", Limit::Hours(2)),
    ("manhole_cover", Limit::Hours(2)),
    ("road_collapse", Limit::Hours(2)),
    ("gas_leak", Limit::Hours(1)),
    ("fallen_tree", Limit::Hours(4)),
    ("fire_hazard", Limit::Hours(4)),
    ("garbage", Limit::WorkingDays(1)),
    ("illegal_parking", Limit::WorkingDays(1)),
    ("street_light", Limit::WorkingDays(3)),
    ("road_damage", Limit::WorkingDays(3)),
    ("illegal_advertising", Limit::WorkingDays(3)),
    ("illegal_construction", Limit::WorkingDays(5)),
    ("graffiti", Limit::WorkingDays(5)),
];

const fn rule(raise: f64, clear: f64, persist_n: u32, persist_s: u64, stale_s: u64) -> SensorRule {
    SensorRule { raise, clear, persist_n, persist_s, stale_s, below: false }
}

/// The built-in sensor rules (see [`GridConfig::sensors`]).
pub const DEFAULT_SENSORS: [(&str, SensorRule); 6] = [
    ("water_level", rule(0.30, 0.20, 2, 0, 900)),
    ("manhole_tilt", rule(10.0, 5.0, 1, 0, 3600)),
    ("smoke", rule(1.0, 0.5, 2, 0, 3600)),
    ("pm25", rule(150.0, 115.0, 1, 1800, 3600)),
    ("noise", rule(70.0, 65.0, 1, 600, 3600)),
    ("feeder_load", rule(0.9, 0.8, 3, 0, 900)),
];

impl Default for GridConfig {
    fn default() -> Self {
        GridConfig {
            retention_s: 86_400,
            sensor_retention_s: 3600,
            closed_grace_s: 3600,
            amber_share: 0.8,
            limits: BTreeMap::new(),
            default_limit: Limit::WorkingDays(3),
            calendar: CalendarConfig::default(),
            sensors: BTreeMap::new(),
            risk: RiskConfig::default(),
        }
    }
}

impl GridConfig {
    /// [`GridConfig::retention_s`] in ms.
    pub fn retention_ms(&self) -> Ms {
        self.retention_s * SECOND
    }

    /// [`GridConfig::closed_grace_s`] in ms.
    pub fn grace_ms(&self) -> Ms {
        self.closed_grace_s * SECOND
    }

    /// The time limit of a category.
    pub fn limit(&self, category: &str) -> Limit {
        self.limits
            .get(category)
            .copied()
            .or_else(|| DEFAULT_LIMITS.iter().find(|(c, _)| *c == category).map(|(_, l)| *l))
            .unwrap_or(self.default_limit)
    }

    /// The alarm rule of every sensor kind: the built-in ones with the configured ones over them.
    pub fn sensor_rules(&self) -> BTreeMap<String, SensorRule> {
        let mut rules: BTreeMap<String, SensorRule> =
            DEFAULT_SENSORS.iter().map(|(k, r)| (k.to_string(), *r)).collect();
        rules.extend(self.sensors.iter().map(|(k, r)| (k.clone(), *r)));
        rules
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: String, reason: &str| Err(ConfigError { key, reason: reason.into() });
        if !(self.amber_share > 0.0 && self.amber_share < 1.0) {
            return err("grid.amber_share".into(), "must be between 0 and 1 (exclusive)");
        }
        if self.retention_s == 0 || self.sensor_retention_s == 0 {
            return err("grid.retention_s".into(), "retention_s and sensor_retention_s must be at least 1");
        }
        for (category, l) in
            self.limits.iter().map(|(c, l)| (c.as_str(), l)).chain([("", &self.default_limit)])
        {
            if l.is_zero() {
                let key = if category.is_empty() {
                    "grid.default_limit".into()
                } else {
                    format!("grid.limits.{category}")
                };
                return err(key, "must be longer than zero");
            }
        }
        for (kind, r) in &self.sensors {
            let bad = if r.below { r.clear < r.raise } else { r.clear > r.raise };
            if !(r.raise.is_finite() && r.clear.is_finite()) || bad {
                return err(
                    format!("grid.sensors.{kind}"),
                    "needs finite raise and clear, clear on the safe side of raise (hysteresis)",
                );
            }
            if r.persist_n == 0 {
                return err(format!("grid.sensors.{kind}.persist_n"), "must be at least 1");
            }
        }
        if self.risk.high == 0 || self.risk.high > 100 {
            return err("grid.risk.high".into(), "must be 1..100");
        }
        self.calendar.validate()
    }
}

/// A case time limit: calendar hours or working days.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Calendar hours: the clock always runs.
    Hours(u32),
    /// Working days: the clock runs only on working days.
    WorkingDays(u32),
}

impl Limit {
    /// Parses `"4h"` or `"3wd"`.
    pub fn parse(s: &str) -> Result<Limit, String> {
        let s = s.trim();
        let num = |n: &str| {
            n.trim().parse::<u32>().map_err(|_| format!("{s:?} is not a limit like \"4h\" or \"3wd\""))
        };
        if let Some(n) = s.strip_suffix("wd") {
            Ok(Limit::WorkingDays(num(n)?))
        } else if let Some(n) = s.strip_suffix('h') {
            Ok(Limit::Hours(num(n)?))
        } else {
            Err(format!("{s:?} is not a limit like \"4h\" (calendar hours) or \"3wd\" (working days)"))
        }
    }

    fn is_zero(self) -> bool {
        matches!(self, Limit::Hours(0) | Limit::WorkingDays(0))
    }

    /// The limit's length of running clock, in ms (hours, or 24 h per working day).
    pub fn running_ms(self) -> Ms {
        match self {
            Limit::Hours(h) => h as Ms * 3_600_000,
            Limit::WorkingDays(d) => d as Ms * 86_400_000,
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Hours(h) => write!(f, "{h}h"),
            Limit::WorkingDays(d) => write!(f, "{d}wd"),
        }
    }
}

impl Serialize for Limit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Limit::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The working-day calendar, in the city time zone (`time.city_tz`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CalendarConfig {
    /// The days of the week that are not working days (`mon` … `sun`). Default `["sat", "sun"]`.
    pub weekend: Vec<String>,
    /// Public holidays (`YYYY-MM-DD`): not working days. Default none — put the State Council's
    /// yearly schedule here.
    pub holidays: Vec<String>,
    /// Make-up working days (调休, `YYYY-MM-DD`): working days even on a weekend. Default none.
    pub workdays: Vec<String>,
}

impl Default for CalendarConfig {
    fn default() -> Self {
        CalendarConfig { weekend: vec!["sat".into(), "sun".into()], holidays: vec![], workdays: vec![] }
    }
}

impl CalendarConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for d in &self.weekend {
            if crate::grid::calendar::weekday(d).is_none() {
                return Err(ConfigError {
                    key: "grid.calendar.weekend".into(),
                    reason: format!("{d:?} is not a day of the week (mon … sun)"),
                });
            }
        }
        for (key, days) in [("holidays", &self.holidays), ("workdays", &self.workdays)] {
            for d in days {
                if chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_err() {
                    return Err(ConfigError {
                        key: format!("grid.calendar.{key}"),
                        reason: format!("{d:?} is not a date YYYY-MM-DD"),
                    });
                }
            }
        }
        Ok(())
    }
}

/// The alarm rule of one sensor kind: a threshold with persistence and hysteresis, and the
/// longest silence before the sensor is stale.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SensorRule {
    /// The alarm is raised at readings at or beyond this value …
    pub raise: f64,
    /// … and cleared at the first reading at or on the safe side of this one (hysteresis).
    pub clear: f64,
    /// Persistence: the alarm needs this many consecutive readings beyond `raise`. Default 1.
    #[serde(default = "one")]
    pub persist_n: u32,
    /// Persistence: … and readings beyond `raise` for at least this long, in seconds. Default 0.
    #[serde(default)]
    pub persist_s: u64,
    /// A sensor of this kind silent for this long is stale (`grid.sensor_stale`), in seconds;
    /// 0 turns the rule off. Default 0.
    #[serde(default)]
    pub stale_s: u64,
    /// Whether the alarm is for low values (readings at or *below* `raise`). Default false.
    #[serde(default)]
    pub below: bool,
}

fn one() -> u32 {
    1
}

impl SensorRule {
    /// Whether `v` is beyond the raise threshold.
    pub fn beyond(&self, v: f64) -> bool {
        if self.below { v <= self.raise } else { v >= self.raise }
    }

    /// Whether `v` is back on the safe side of the clear threshold.
    pub fn cleared(&self, v: f64) -> bool {
        if self.below { v >= self.clear } else { v <= self.clear }
    }
}

/// The cell risk score (0–100): a weighted sum of what is wrong in the cell, capped at 100.
///
/// `risk = min(100, open × open_case + overdue × overdue_case + alarms × sensor_alarm
///  + traffic × traffic_incident + emergency × emergency_incident)`, counting the cell's open
/// cases, its overdue cases (also counted as open), its sensors in alarm, the active
/// `traffic.incident` alerts on its segments and the open emergency incidents in it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RiskConfig {
    /// Points per open case. Default 5.
    pub open_case: u32,
    /// Extra points per overdue case. Default 15.
    pub overdue_case: u32,
    /// Points per sensor in alarm. Default 25.
    pub sensor_alarm: u32,
    /// Points per traffic incident on the cell's segments. Default 20.
    pub traffic_incident: u32,
    /// Points per open emergency incident in the cell. Default 10.
    pub emergency_incident: u32,
    /// `grid.risk_high` is raised while a cell's risk is at least this. Default 60.
    pub high: u32,
}

impl Default for RiskConfig {
    fn default() -> Self {
        RiskConfig {
            open_case: 5,
            overdue_case: 15,
            sensor_alarm: 25,
            traffic_incident: 20,
            emergency_incident: 10,
            high: 60,
        }
    }
}
