//! The traffic topic `city/traffic/detector/{id}` (CONTRACT §2): its payload, its validation,
//! and its check against the city model, which turns it into the record the traffic ingest
//! applies (identity: detector and `ts`, CONTRACT §1).

use crate::city::{CityModel, Idx};
use crate::event::{Reason, Rejected, finite_in};
use crate::time::Source;
use crate::time::{Ms, Ts};
use crate::traffic::FlowSum;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// A loop-detector reading for one reporting interval (`city/traffic/detector/{id}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectorReading<'a> {
    /// Detector id (a `detector` of the city model).
    #[serde(borrow)]
    pub sensor: Cow<'a, str>,
    /// Segment id the detector is on.
    #[serde(borrow)]
    pub segment: Cow<'a, str>,
    /// Start of the interval.
    pub ts: Ts,
    /// Interval length, seconds (> 0).
    pub interval_s: u32,
    /// Vehicles counted in the interval.
    pub count: u32,
    /// Lane (informational; the city model's lane is authoritative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane: Option<u32>,
    /// Flow rate as reported (informational; citybrain derives flow from `count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_vph: Option<f64>,
    /// Share of the interval the loop was occupied, 0..1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occupancy: Option<f64>,
    /// Mean speed of the counted vehicles, km/h; null when count = 0.
    #[serde(default)]
    pub speed_kmh: Option<f64>,
}

impl DetectorReading<'_> {
    /// Range checks beyond the types.
    pub fn validate(&self) -> Result<(), Rejected> {
        if self.interval_s == 0 || self.interval_s > 3600 {
            return Err(Rejected::new(
                Reason::InvalidValue,
                format!("interval_s {} outside 1..3600", self.interval_s),
            ));
        }
        if self.count > 100_000 {
            return Err(Rejected::new(Reason::InvalidValue, format!("count {} implausible", self.count)));
        }
        finite_in(self.occupancy, 0.0, 1.0, "occupancy")?;
        finite_in(self.speed_kmh, 0.0, 400.0, "speed_kmh")?;
        finite_in(self.flow_vph, 0.0, 1e7, "flow_vph")
    }
}

/// A detector reading checked against the city model: its detector, interval and exact sums.
///
/// [`CheckedReading::check`] needs only the (immutable) city model, so a driver may run it on
/// another thread than the worker's and hand the worker [`crate::ingest::Ingest::offer_checked`]; this is
/// what [`crate::ingest::Ingest::offer`] does in one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckedReading {
    /// Detector index.
    pub det: Idx,
    /// Interval length, seconds.
    pub interval_s: u32,
    /// Start of the interval.
    pub ts: Ms,
    /// The interval's exact sums.
    pub sum: FlowSum,
}

impl CheckedReading {
    /// Checks a reading against the city model: its detector must exist and lie on the segment
    /// the reading names, else it is `unknown_id`.
    pub fn check(city: &CityModel, r: &DetectorReading<'_>) -> Result<CheckedReading, Rejected> {
        let Some(det) = city.detector(&r.sensor) else {
            return Err(Rejected::new(Reason::UnknownId, format!("unknown detector {:?}", r.sensor)));
        };
        let segment = city.detector_segment(det);
        if city.segment_id(segment) != r.segment {
            let detail = if city.segment(&r.segment).is_some() {
                format!("detector {:?} is not on segment {:?}", r.sensor, r.segment)
            } else {
                format!("unknown segment {:?}", r.segment)
            };
            return Err(Rejected::new(Reason::UnknownId, detail));
        }
        let sum = FlowSum::reading(r.interval_s, r.count, r.occupancy, r.speed_kmh);
        Ok(CheckedReading { det, interval_s: r.interval_s, ts: r.ts.0, sum })
    }

    /// The detector's source key for the city's clock.
    pub fn source(&self) -> Source {
        detector_source(self.det)
    }
}

/// The clock's source key of a detector (a tag bit keeps it apart from the hashed keys of
/// other entities in all but astronomically rare cases; a collision would only merge two
/// witnesses into one).
fn detector_source(det: Idx) -> Source {
    (1 << 63) | det as Source
}
