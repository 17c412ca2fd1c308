//! The dataflows' settings, with documented defaults.
//!
//! These are the knobs that change *what* is computed (lateness, retention, congestion bands,
//! alert thresholds), as opposed to *where* data comes from or goes (broker, InfluxDB), which the
//! binary's config holds. Every struct denies unknown fields so a typo in `citybrain.toml` is an
//! error naming the key, never a silently ignored setting. All defaults are listed in README.md.
//!
//! Each domain owns its section (`traffic/config.rs`, `emergency/config.rs`, …) and its
//! validation; this file holds the sections every domain shares and lists the domains' ones.

use crate::time::{MINUTE, Ms, SECOND};
use serde::{Deserialize, Serialize};

pub use crate::emergency::config::EmergencyConfig;
pub use crate::grid::config::GridConfig;
pub use crate::health::config::HealthConfig;
pub use crate::traffic::config::{Bands, CongestionConfig, IncidentConfig, TrafficConfig};

/// All settings of the dataflows.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The event-time clock.
    pub time: TimeConfig,
    /// Ingestion: how far ahead a record may be.
    pub ingest: IngestConfig,
    /// Traffic indicators and alerts.
    pub traffic: TrafficConfig,
    /// Emergency indicators, dispatch recommendations and alerts.
    pub emergency: EmergencyConfig,
    /// Grid management: case time limits, sensor rules, the cell risk score.
    pub grid: GridConfig,
    /// Public health: contact tracing and the retention of health records.
    pub health: HealthConfig,
}

/// The event-time clock (CONTRACT §1).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TimeConfig {
    /// Allowed lateness in seconds: watermark = largest ts seen − this. Default 5.
    pub lateness_s: u64,
    /// The city's time zone (IANA name) that defines "today" for daily figures. Default `Asia/Shanghai`.
    pub city_tz: String,
}

impl Default for TimeConfig {
    fn default() -> Self {
        TimeConfig { lateness_s: 5, city_tz: "Asia/Shanghai".into() }
    }
}

impl TimeConfig {
    /// The allowed lateness in ms.
    pub fn lateness_ms(&self) -> Ms {
        self.lateness_s * SECOND
    }
}

/// Ingestion (CONTRACT §1).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// How far ahead a record may be, in seconds. In `run` and `demo` a record stamped more than
    /// this ahead of the wall clock is dead-lettered `future_ts`. Everywhere (and so in
    /// `replay`, which has no wall clock) one source more than this ahead of every other source
    /// does not move the city's clock; its records wait, and those still that far ahead at the
    /// end of input are dead-lettered `future_ts`. Default 300.
    pub max_future_s: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig { max_future_s: 300 }
    }
}

impl IngestConfig {
    /// [`IngestConfig::max_future_s`] in ms.
    pub fn max_future_ms(&self) -> Ms {
        self.max_future_s * SECOND
    }
}

/// A setting that is present but unusable.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("config key `{key}`: {reason}")]
pub struct ConfigError {
    /// The dotted key, e.g. `traffic.bands.arterial`.
    pub key: String,
    /// Why the value is unusable.
    pub reason: String,
}

impl Config {
    /// Checks the values that types alone cannot, naming the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: &str, reason: &str| Err(ConfigError { key: key.into(), reason: reason.into() });
        if self.time.lateness_s > 3600 {
            return err("time.lateness_s", "must be at most 3600");
        }
        if self.ingest.max_future_s == 0 || self.ingest.max_future_s > 7 * 86_400 {
            return err("ingest.max_future_s", "must be 1..604800 (a week)");
        }
        crate::grid::calendar::parse_tz(&self.time.city_tz)?;
        self.traffic.validate()?;
        self.emergency.validate()?;
        self.grid.validate()?;
        self.health.validate()?;
        Ok(())
    }

    /// The incident persistence as a duration.
    pub fn incident_persist_ms(&self) -> Ms {
        self.traffic.incident.persist_min as Ms * MINUTE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut c = Config::default();
        c.traffic.bands.arterial = [40.0, 45.0, 20.0, 15.0];
        assert_eq!(c.validate().unwrap_err().key, "traffic.bands.arterial");
        let mut c = Config::default();
        c.traffic.congestion.persist_min = 7;
        assert_eq!(c.validate().unwrap_err().key, "traffic.congestion.persist_min");
        let mut c = Config::default();
        c.traffic.incident.stopped_min = 7;
        assert_eq!(c.validate().unwrap_err().key, "traffic.incident.stopped_min");
        let mut c = Config::default();
        c.traffic.incident.discharge_count = 1;
        assert_eq!(c.validate().unwrap_err().key, "traffic.incident.discharge_count");
        let mut c = Config::default();
        c.traffic.incident.persist_min = 15;
        assert_eq!(c.validate().unwrap_err().key, "traffic.incident.persist_min");
    }
}
