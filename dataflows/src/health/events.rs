//! The public-health topics `city/health/case/{id}`, `city/health/trip/{id}` and
//! `city/health/checkin/{venue}` (CONTRACT §2): their payloads, their validation, and the owned
//! records the health ingest keeps, with their identities for idempotence (CONTRACT §1: a health
//! case is (person, status, ts), a trip (person, trip, ts), a check-in (person, venue, ts)).
//!
//! `person` is a clear personal id on the wire only: the decoder ([`crate::event::Decoder`])
//! validates the payload and then replaces it by its pseudonym before anything else sees it, so
//! every record here carries the pseudonym. No rejection detail ever quotes a person.
//!
//! # Rows
//! A trip's `row` may be a JSON number or a string of digits (`12`, `"12"`); when it is absent,
//! the leading digits of `seat` are taken (`"12A"` → 12, a numeric seat is its own row). Any
//! other `row` (a negative or fractional number, a string that is not all digits) is
//! `invalid_value`. A train or flight trip with no row at all is accepted and simply has none:
//! it matches nobody by row (its traveller is neither a row contact of a case nor has row
//! contacts as a case), since a "close to" test is meaningless without a position. Bus and
//! metro trips match everyone on the trip, row or not.

use crate::city::{CityModel, Idx};
use crate::event::{Reason, Rejected, lon_lat};
use crate::time::{Ms, Ts};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// Public-health case states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum HealthStatus {
    Confirmed,
    Suspected,
    Cleared,
}

impl HealthStatus {
    /// Whether a person with this status is a case whose contacts are traced (confirmed or
    /// suspected).
    pub fn is_active(self) -> bool {
        matches!(self, HealthStatus::Confirmed | HealthStatus::Suspected)
    }

    /// The contract's name.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Confirmed => "confirmed",
            HealthStatus::Suspected => "suspected",
            HealthStatus::Cleared => "cleared",
        }
    }
}

/// A public-health case record (`city/health/case/{id}`). After decoding, `person` is the pseudonym.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthCase<'a> {
    /// Personal id (clear text on the wire only; the pseudonym once decoded).
    #[serde(borrow)]
    pub person: Cow<'a, str>,
    /// Event time.
    pub ts: Ts,
    /// Status.
    pub status: HealthStatus,
}

/// Trip carriers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum Carrier {
    Train,
    Flight,
    Bus,
    Metro,
}

impl Carrier {
    /// Whether contacts on this carrier are decided by row (train, flight); on a bus or the
    /// metro everyone on the trip is a contact.
    pub fn by_row(self) -> bool {
        matches!(self, Carrier::Train | Carrier::Flight)
    }
}

/// A trip record (`city/health/trip/{id}`). After decoding, `person` is the pseudonym.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TripRecord<'a> {
    /// Personal id (pseudonym once decoded).
    #[serde(borrow)]
    pub person: Cow<'a, str>,
    /// Event time.
    pub ts: Ts,
    /// Carrier.
    pub carrier: Carrier,
    /// Trip id, e.g. `G1234@2026-03-02`.
    #[serde(borrow)]
    pub trip: Cow<'a, str>,
    /// Row or car.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<serde_json::Value>,
    /// Seat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seat: Option<serde_json::Value>,
}

/// A venue check-in (`city/health/checkin/{venue}`). After decoding, `person` is the pseudonym.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkin<'a> {
    /// Personal id (pseudonym once decoded).
    #[serde(borrow)]
    pub person: Cow<'a, str>,
    /// Event time.
    pub ts: Ts,
    /// Venue id.
    #[serde(borrow)]
    pub venue: Cow<'a, str>,
    /// Cell id, or else lon/lat.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub cell: Option<Cow<'a, str>>,
    /// Longitude.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
    /// Latitude.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
}

fn person_ok(person: &str) -> Result<(), Rejected> {
    if person.trim().is_empty() {
        return Err(Rejected::new(Reason::InvalidValue, "empty person"));
    }
    Ok(())
}

impl HealthCase<'_> {
    /// Range checks beyond the types (run on the clear payload, before pseudonymization).
    pub fn validate(&self) -> Result<(), Rejected> {
        person_ok(&self.person)
    }
}

impl TripRecord<'_> {
    /// Range checks beyond the types (run on the clear payload, before pseudonymization).
    pub fn validate(&self) -> Result<(), Rejected> {
        person_ok(&self.person)?;
        if self.trip.trim().is_empty() {
            return Err(Rejected::new(Reason::InvalidValue, "empty trip id"));
        }
        self.row_number().map(|_| ())
    }

    /// The row (see the module docs): `row` when given, else the leading digits of `seat`.
    pub fn row_number(&self) -> Result<Option<i32>, Rejected> {
        let bad = || Rejected::new(Reason::InvalidValue, "row must be a whole number or a string of digits");
        match &self.row {
            Some(serde_json::Value::Null) | None => {}
            Some(serde_json::Value::Number(n)) => {
                return n.as_u64().and_then(|r| i32::try_from(r).ok()).map(Some).ok_or_else(bad);
            }
            Some(serde_json::Value::String(s)) => {
                let s = s.trim();
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                return s.parse::<i32>().map(Some).map_err(|_| bad());
            }
            Some(_) => return Err(bad()),
        }
        Ok(match &self.seat {
            Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|r| i32::try_from(r).ok()),
            Some(serde_json::Value::String(s)) => {
                let s = s.trim();
                let digits = s.bytes().take_while(|b| b.is_ascii_digit()).count();
                s[..digits].parse::<i32>().ok()
            }
            _ => None,
        })
    }
}

impl Checkin<'_> {
    /// Range checks beyond the types (run on the clear payload, before pseudonymization).
    pub fn validate(&self) -> Result<(), Rejected> {
        person_ok(&self.person)?;
        lon_lat(self.lon, self.lat)?;
        if self.venue.trim().is_empty() {
            return Err(Rejected::new(Reason::InvalidValue, "empty venue id"));
        }
        Ok(())
    }
}

/// A health case event checked and owned. Its identity (CONTRACT §1) is (person, status, ts).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CheckedCase {
    /// The person's pseudonym.
    pub person: String,
    /// Event time.
    pub ts: Ms,
    /// The status this event reports.
    pub status: HealthStatus,
}

impl CheckedCase {
    /// Checks a decoded (pseudonymized) health case record.
    pub fn check(_city: &CityModel, e: &HealthCase<'_>) -> Result<CheckedCase, Rejected> {
        e.validate()?;
        Ok(CheckedCase { person: e.person.trim().to_string(), ts: e.ts.0, status: e.status })
    }
}

/// A trip checked and owned. Its identity (CONTRACT §1) is (person, trip, ts).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CheckedTrip {
    /// The person's pseudonym.
    pub person: String,
    /// Event time.
    pub ts: Ms,
    /// Carrier.
    pub carrier: Carrier,
    /// Trip id.
    pub trip: String,
    /// Row (see the module docs).
    pub row: Option<i32>,
}

impl CheckedTrip {
    /// Checks a decoded (pseudonymized) trip record.
    pub fn check(_city: &CityModel, e: &TripRecord<'_>) -> Result<CheckedTrip, Rejected> {
        e.validate()?;
        Ok(CheckedTrip {
            person: e.person.trim().to_string(),
            ts: e.ts.0,
            carrier: e.carrier,
            trip: e.trip.trim().to_string(),
            row: e.row_number()?,
        })
    }
}

/// A venue check-in checked and owned. Its identity (CONTRACT §1) is (person, venue, ts).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CheckedCheckin {
    /// The person's pseudonym.
    pub person: String,
    /// Event time.
    pub ts: Ms,
    /// Venue id.
    pub venue: String,
    /// The cell it is in, when the check-in gave a cell or a point.
    pub cell: Option<Idx>,
}

impl CheckedCheckin {
    /// Checks a decoded (pseudonymized) check-in against the city model: an unknown cell id or
    /// a point in no cell is `unknown_id`; a check-in with neither has no cell.
    pub fn check(city: &CityModel, e: &Checkin<'_>) -> Result<CheckedCheckin, Rejected> {
        e.validate()?;
        let cell = match (e.cell.as_deref(), e.lon, e.lat) {
            (Some(id), _, _) => Some(city.cell(id).ok_or_else(|| {
                Rejected::new(Reason::UnknownId, format!("cell {id:?} is not in the city model"))
            })?),
            (None, Some(lon), Some(lat)) => Some(city.place(lon, lat).0.ok_or_else(|| {
                Rejected::new(Reason::UnknownId, format!("({lon}, {lat}) is in no grid cell"))
            })?),
            _ => None,
        };
        Ok(CheckedCheckin {
            person: e.person.trim().to_string(),
            ts: e.ts.0,
            venue: e.venue.trim().to_string(),
            cell,
        })
    }
}

/// The entity key of a trip or check-in: the person, the trip or venue, and the event time
/// (each record is its own entity: it lives from its time until its retention ends).
pub fn record_key(person: &str, what: &str, ts: Ms) -> String {
    format!("{person}\u{1f}{what}\u{1f}{ts}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trip(row: Option<serde_json::Value>, seat: Option<serde_json::Value>) -> TripRecord<'static> {
        TripRecord {
            person: "p".into(),
            ts: Ts(1_767_225_600_000),
            carrier: Carrier::Train,
            trip: "G1@2026-01-01".into(),
            row,
            seat,
        }
    }

    #[test]
    fn rows_from_row_or_seat() {
        use serde_json::json;
        assert_eq!(trip(Some(json!(12)), None).row_number(), Ok(Some(12)));
        assert_eq!(trip(Some(json!("07")), Some(json!("3A"))).row_number(), Ok(Some(7)));
        assert_eq!(trip(None, Some(json!("12A"))).row_number(), Ok(Some(12)));
        assert_eq!(trip(None, Some(json!(4))).row_number(), Ok(Some(4)));
        assert_eq!(trip(None, Some(json!("A12"))).row_number(), Ok(None));
        assert_eq!(trip(None, None).row_number(), Ok(None));
        for bad in [json!(-1), json!(1.5), json!("1A"), json!(""), json!([1])] {
            assert_eq!(trip(Some(bad), None).row_number().map_err(|e| e.reason), Err(Reason::InvalidValue));
        }
    }
}
