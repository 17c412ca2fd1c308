//! The grid topics `city/grid/case/{id}` and `city/grid/sensor/{id}` (CONTRACT §2): their
//! payloads, their validation, and the owned records the grid ingest keeps, placed in their cell
//! (with their identities for idempotence, CONTRACT §1: a case event is (case, status, ts), a
//! sensor reading (sensor, ts)).

use crate::city::{CityModel, Idx};
use crate::event::{Reason, Rejected, lon_lat};
use crate::time::{Ms, Ts};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// Grid case lifecycle states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum CaseStatus {
    Reported,
    Assigned,
    InProgress,
    Resolved,
    Closed,
    Reopened,
}

/// Where a grid case came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum CaseSource {
    Hotline,
    Patrol,
    Sensor,
    App,
}

/// A grid-management case event (`city/grid/case/{id}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaseEvent<'a> {
    /// Case id.
    #[serde(borrow, rename = "case")]
    pub case_id: Cow<'a, str>,
    /// Event time.
    pub ts: Ts,
    /// New status.
    pub status: CaseStatus,
    /// Category (free text; selects the time limit).
    #[serde(borrow)]
    pub category: Cow<'a, str>,
    /// Cell id, or else lon/lat.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub cell: Option<Cow<'a, str>>,
    /// Longitude.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
    /// Latitude.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    /// Source channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<CaseSource>,
    /// Officer handling it.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub officer: Option<Cow<'a, str>>,
}

/// A grid cell sensor reading (`city/grid/sensor/{id}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GridSensorReading<'a> {
    /// Sensor id.
    #[serde(borrow)]
    pub sensor: Cow<'a, str>,
    /// Event time.
    pub ts: Ts,
    /// What it measures (free text: water_level, smoke, …).
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
    /// The reading.
    pub value: f64,
    /// Cell id, or else lon/lat.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub cell: Option<Cow<'a, str>>,
    /// Longitude.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
    /// Latitude.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    /// Unit of `value`.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub unit: Option<Cow<'a, str>>,
}

impl CaseStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [CaseStatus; 6] = [
        CaseStatus::Reported,
        CaseStatus::Assigned,
        CaseStatus::InProgress,
        CaseStatus::Resolved,
        CaseStatus::Closed,
        CaseStatus::Reopened,
    ];

    /// The contract's name.
    pub fn as_str(self) -> &'static str {
        match self {
            CaseStatus::Reported => "reported",
            CaseStatus::Assigned => "assigned",
            CaseStatus::InProgress => "in_progress",
            CaseStatus::Resolved => "resolved",
            CaseStatus::Closed => "closed",
            CaseStatus::Reopened => "reopened",
        }
    }

    /// Parses a contract name.
    pub fn parse(s: &str) -> Option<CaseStatus> {
        CaseStatus::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Whether a case in this status is still to be worked (counts as open): reported,
    /// assigned, in progress or reopened. A resolved case waits for the centre to close it.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            CaseStatus::Reported | CaseStatus::Assigned | CaseStatus::InProgress | CaseStatus::Reopened
        )
    }
}

impl CaseSource {
    /// The contract's name.
    pub fn as_str(self) -> &'static str {
        match self {
            CaseSource::Hotline => "hotline",
            CaseSource::Patrol => "patrol",
            CaseSource::Sensor => "sensor",
            CaseSource::App => "app",
        }
    }
}

/// The cell of a point given as a cell id or lon/lat: unknown ids and points outside every cell
/// are `unknown_id`.
fn cell_of(
    city: &CityModel,
    cell: Option<&str>,
    lon: Option<f64>,
    lat: Option<f64>,
) -> Result<Idx, Rejected> {
    match (cell, lon, lat) {
        (Some(id), _, _) => city
            .cell(id)
            .ok_or_else(|| Rejected::new(Reason::UnknownId, format!("cell {id:?} is not in the city model"))),
        (None, Some(lon), Some(lat)) => city
            .place(lon, lat)
            .0
            .ok_or_else(|| Rejected::new(Reason::UnknownId, format!("({lon}, {lat}) is in no grid cell"))),
        _ => Err(Rejected::new(Reason::InvalidPayload, "needs cell or lon/lat")),
    }
}

impl CaseEvent<'_> {
    /// Range checks beyond the types.
    pub fn validate(&self) -> Result<(), Rejected> {
        lon_lat(self.lon, self.lat)?;
        if self.case_id.trim().is_empty() {
            return Err(Rejected::new(Reason::InvalidValue, "empty case id"));
        }
        if self.category.trim().is_empty() {
            return Err(Rejected::new(Reason::InvalidValue, "empty category"));
        }
        Ok(())
    }
}

impl GridSensorReading<'_> {
    /// Range checks beyond the types.
    pub fn validate(&self) -> Result<(), Rejected> {
        lon_lat(self.lon, self.lat)?;
        if !self.value.is_finite() {
            return Err(Rejected::new(Reason::InvalidValue, "value is not finite"));
        }
        if self.sensor.trim().is_empty() || self.kind.trim().is_empty() {
            return Err(Rejected::new(Reason::InvalidValue, "empty sensor id or kind"));
        }
        Ok(())
    }
}

/// A case event checked and owned. Its identity (CONTRACT §1) is (case, status, ts).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CaseRecord {
    /// Case id.
    pub id: String,
    /// Event time.
    pub ts: Ms,
    /// The status this event reports.
    pub status: CaseStatus,
    /// Category (selects the time limit).
    pub category: String,
    /// The cell it is in.
    pub cell: Idx,
    /// Where it came from.
    pub source: Option<CaseSource>,
    /// The officer handling it.
    pub officer: Option<String>,
}

impl CaseRecord {
    /// Checks a decoded case event against the city model.
    pub fn check(city: &CityModel, e: &CaseEvent<'_>) -> Result<CaseRecord, Rejected> {
        Ok(CaseRecord {
            id: e.case_id.to_string(),
            ts: e.ts.0,
            status: e.status,
            category: e.category.trim().to_string(),
            cell: cell_of(city, e.cell.as_deref(), e.lon, e.lat)?,
            source: e.source,
            officer: e.officer.as_ref().map(|o| o.to_string()),
        })
    }
}

/// A cell sensor reading checked and owned. Its identity (CONTRACT §1) is (sensor, ts).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SensorRecord {
    /// Sensor id.
    pub id: String,
    /// Event time.
    pub ts: Ms,
    /// What it measures.
    pub kind: String,
    /// The reading, as the bits of its `f64` (exact, and orderable).
    pub value_bits: u64,
    /// The cell it is in.
    pub cell: Idx,
}

impl SensorRecord {
    /// Checks a decoded sensor reading against the city model.
    pub fn check(city: &CityModel, e: &GridSensorReading<'_>) -> Result<SensorRecord, Rejected> {
        Ok(SensorRecord {
            id: e.sensor.to_string(),
            ts: e.ts.0,
            kind: e.kind.trim().to_string(),
            value_bits: e.value.to_bits(),
            cell: cell_of(city, e.cell.as_deref(), e.lon, e.lat)?,
        })
    }

    /// The reading.
    pub fn value(&self) -> f64 {
        f64::from_bits(self.value_bits)
    }
}
