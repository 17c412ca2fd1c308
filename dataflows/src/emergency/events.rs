//! The emergency topics `city/emergency/incident/{id}` and `city/emergency/unit/{id}`
//! (CONTRACT §2): their payloads, their validation, and the owned records the emergency ingest
//! keeps (with their identities for idempotence, CONTRACT §1).

use crate::city::{CityModel, Idx};
use crate::event::{Reason, Rejected, lon_lat};
use crate::time::{Ms, Ts};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// Incident lifecycle states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum IncidentStatus {
    Reported,
    Dispatched,
    EnRoute,
    OnScene,
    Cleared,
    Cancelled,
}

/// Incident types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum IncidentType {
    Fire,
    Medical,
    Police,
    Traffic,
}

/// An emergency incident event (`city/emergency/incident/{id}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentEvent<'a> {
    /// Incident id.
    #[serde(borrow)]
    pub incident: Cow<'a, str>,
    /// Event time.
    pub ts: Ts,
    /// New status.
    pub status: IncidentStatus,
    /// Incident type.
    #[serde(rename = "type")]
    pub kind: IncidentType,
    /// 1 = highest … 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<u8>,
    /// Longitude.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
    /// Latitude.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    /// The unit assigned (from dispatch on).
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub unit: Option<Cow<'a, str>>,
    /// Free text.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub note: Option<Cow<'a, str>>,
}

/// Emergency unit types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum UnitType {
    FireEngine,
    Ambulance,
    Police,
}

/// Emergency unit states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum UnitStatus {
    Available,
    Dispatched,
    EnRoute,
    OnScene,
    Returning,
    OutOfService,
}

/// An emergency unit's status or position (`city/emergency/unit/{id}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnitEvent<'a> {
    /// Unit id.
    #[serde(borrow)]
    pub unit: Cow<'a, str>,
    /// Event time.
    pub ts: Ts,
    /// Unit type.
    #[serde(rename = "type")]
    pub kind: UnitType,
    /// Status.
    pub status: UnitStatus,
    /// Longitude.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
    /// Latitude.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    /// Home station.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub station: Option<Cow<'a, str>>,
    /// Incident it is assigned to.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub incident: Option<Cow<'a, str>>,
}

impl IncidentEvent<'_> {
    /// Range checks beyond the types.
    pub fn validate(&self) -> Result<(), Rejected> {
        lon_lat(self.lon, self.lat)?;
        if self.severity.is_some_and(|s| !(1..=5).contains(&s)) {
            return Err(Rejected::new(Reason::InvalidValue, "severity outside 1..5"));
        }
        if self.incident.is_empty() {
            return Err(Rejected::new(Reason::InvalidValue, "empty incident id"));
        }
        Ok(())
    }
}

impl UnitEvent<'_> {
    /// Range checks beyond the types.
    pub fn validate(&self) -> Result<(), Rejected> {
        lon_lat(self.lon, self.lat)?;
        if self.unit.is_empty() {
            return Err(Rejected::new(Reason::InvalidValue, "empty unit id"));
        }
        Ok(())
    }
}

/// A position in fixed point (1e-7 degrees, about 1 cm), so records can be ordered and hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Pos {
    /// Longitude × 1e7.
    pub lon_e7: i32,
    /// Latitude × 1e7.
    pub lat_e7: i32,
}

impl Pos {
    /// The position of an event with both coordinates (validated to be in range).
    pub fn of(lon: Option<f64>, lat: Option<f64>) -> Option<Pos> {
        Some(Pos { lon_e7: (lon? * 1e7).round() as i32, lat_e7: (lat? * 1e7).round() as i32 })
    }

    /// Longitude, degrees.
    pub fn lon(&self) -> f64 {
        self.lon_e7 as f64 / 1e7
    }

    /// Latitude, degrees.
    pub fn lat(&self) -> f64 {
        self.lat_e7 as f64 / 1e7
    }
}

/// An incident event checked and owned, as the emergency ingest keeps it. Its identity
/// (CONTRACT §1) is (incident, status, ts).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IncidentRecord {
    /// Incident id.
    pub id: String,
    /// Event time.
    pub ts: Ms,
    /// The status this event reports.
    pub status: IncidentStatus,
    /// Incident type.
    pub kind: IncidentType,
    /// Severity, 1 = highest.
    pub severity: Option<u8>,
    /// Where it is.
    pub pos: Option<Pos>,
    /// The unit assigned.
    pub unit: Option<String>,
}

/// A unit report checked and owned. Its identity (CONTRACT §1) is (unit, ts).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnitRecord {
    /// Unit id.
    pub id: String,
    /// Event time.
    pub ts: Ms,
    /// Unit type.
    pub kind: UnitType,
    /// Status.
    pub status: UnitStatus,
    /// Where it is.
    pub pos: Option<Pos>,
    /// Home station (index into the city model's stations).
    pub station: Option<Idx>,
    /// The incident it is assigned to.
    pub incident: Option<String>,
}

impl IncidentRecord {
    /// The owned record of a decoded incident event.
    pub fn check(e: &IncidentEvent<'_>) -> IncidentRecord {
        IncidentRecord {
            id: e.incident.to_string(),
            ts: e.ts.0,
            status: e.status,
            kind: e.kind,
            severity: e.severity,
            pos: Pos::of(e.lon, e.lat),
            unit: e.unit.as_deref().filter(|u| !u.is_empty()).map(str::to_string),
        }
    }
}

impl UnitRecord {
    /// The owned record of a decoded unit report; a station the city model does not know is
    /// `unknown_id`.
    pub fn check(city: &CityModel, e: &UnitEvent<'_>) -> Result<UnitRecord, Rejected> {
        let station = match e.station.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => Some(
                city.station(s)
                    .ok_or_else(|| Rejected::new(Reason::UnknownId, format!("unknown station {s:?}")))?,
            ),
            None => None,
        };
        Ok(UnitRecord {
            id: e.unit.to_string(),
            ts: e.ts.0,
            kind: e.kind,
            status: e.status,
            pos: Pos::of(e.lon, e.lat),
            station,
            incident: e.incident.as_deref().filter(|i| !i.is_empty()).map(str::to_string),
        })
    }
}

macro_rules! names {
    ($t:ty { $($v:ident => $s:literal),+ $(,)? }) => {
        impl $t {
            /// The contract's name (as in the payloads).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(<$t>::$v => $s,)+
                }
            }
        }
    };
}

names!(IncidentStatus {
    Reported => "reported",
    Dispatched => "dispatched",
    EnRoute => "en_route",
    OnScene => "on_scene",
    Cleared => "cleared",
    Cancelled => "cancelled",
});
names!(IncidentType { Fire => "fire", Medical => "medical", Police => "police", Traffic => "traffic" });
names!(UnitType { FireEngine => "fire_engine", Ambulance => "ambulance", Police => "police" });
names!(UnitStatus {
    Available => "available",
    Dispatched => "dispatched",
    EnRoute => "en_route",
    OnScene => "on_scene",
    Returning => "returning",
    OutOfService => "out_of_service",
});

impl UnitType {
    /// Every unit type, in field order.
    pub const ALL: [UnitType; 3] = [UnitType::FireEngine, UnitType::Ambulance, UnitType::Police];
}

impl IncidentType {
    /// Every incident type, in field order.
    pub const ALL: [IncidentType; 4] =
        [IncidentType::Fire, IncidentType::Medical, IncidentType::Police, IncidentType::Traffic];
}
