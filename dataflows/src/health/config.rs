//! The `[health]` section of the config: the co-passenger contact query (同乘接触者) and the
//! retention of public-health records, with documented defaults (README lists them).

use crate::config::ConfigError;
use crate::time::{MINUTE, Ms};
use serde::{Deserialize, Serialize};

/// One day in ms.
pub const DAY: Ms = 86_400_000;

/// Public health: contact tracing over trips and venue check-ins (CONTRACT §2, §7).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// How far back from a case's time its trips and check-ins are traced, in days: a record
    /// exactly this long before the case is in, one a second older is out. Default 14.
    pub lookback_days: u32,
    /// On a train or flight, a traveller whose row differs from the case's by at most this
    /// many rows is a contact (±3: rows 9–15 around row 12). Default 3.
    pub row_window: u32,
    /// At a venue, a check-in at most this many minutes before or after one of the case's is
    /// a contact. Default 30.
    pub venue_window_min: u32,
    /// Public-health records are deleted `lookback_days` + this many days after their event
    /// time (and are `too_late` from then); the grace lets a case reported a little late still
    /// find the whole of its lookback. Default 1.
    pub retention_grace_days: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig { lookback_days: 14, row_window: 3, venue_window_min: 30, retention_grace_days: 1 }
    }
}

impl HealthConfig {
    /// [`HealthConfig::lookback_days`] in ms.
    pub fn lookback_ms(&self) -> Ms {
        self.lookback_days as Ms * DAY
    }

    /// [`HealthConfig::venue_window_min`] in ms.
    pub fn venue_window_ms(&self) -> Ms {
        self.venue_window_min as Ms * MINUTE
    }

    /// How long after its event time a record is kept: lookback + grace, in ms.
    pub fn retention_ms(&self) -> Ms {
        (self.lookback_days as Ms + self.retention_grace_days as Ms) * DAY
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: &str, reason: &str| Err(ConfigError { key: key.into(), reason: reason.into() });
        if self.lookback_days == 0 || self.lookback_days > 366 {
            return err("health.lookback_days", "must be 1..366");
        }
        if self.row_window > 1000 {
            return err("health.row_window", "must be at most 1000");
        }
        if self.venue_window_min > 24 * 60 {
            return err("health.venue_window_min", "must be at most 1440 (a day)");
        }
        if self.retention_grace_days > 30 {
            return err("health.retention_grace_days", "must be at most 30");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values() {
        let c = HealthConfig::default();
        c.validate().unwrap();
        assert_eq!(c.retention_ms(), 15 * DAY);
        let bad = HealthConfig { lookback_days: 0, ..HealthConfig::default() };
        assert_eq!(bad.validate().unwrap_err().key, "health.lookback_days");
        let bad = HealthConfig { venue_window_min: 2000, ..HealthConfig::default() };
        assert_eq!(bad.validate().unwrap_err().key, "health.venue_window_min");
    }
}
