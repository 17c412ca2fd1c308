//! The payloads of every MQTT topic (CONTRACT §2) and the one place they are decoded.
//!
//! Each topic has one type here, used by the processor to decode and by the simulator to encode,
//! so the two can never disagree on the schema. Strings borrow from the input where JSON allows
//! (`Cow<str>`: escaped strings are owned), which keeps decoding allocation-free on the hot path.
//!
//! [`Decoder::decode`] is where a topic is recognised, a payload (object or array batch) parsed and
//! validated, and personal identifiers are replaced by their pseudonyms: nothing downstream of it
//! ever sees a clear-text `person`. A bad element of a batch is reported on its own; the others
//! still decode.

use crate::pseudonym::Pseudonymizer;
use crate::time::Ts;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;

pub use crate::emergency::events::{
    IncidentEvent, IncidentStatus, IncidentType, UnitEvent, UnitStatus, UnitType,
};
pub use crate::grid::events::{CaseEvent, CaseSource, CaseStatus, GridSensorReading};
pub use crate::health::events::{Carrier, Checkin, HealthCase, HealthStatus, TripRecord};
pub use crate::traffic::events::DetectorReading;

/// One decoded, validated message element.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum Event<'a> {
    Detector(DetectorReading<'a>),
    Incident(IncidentEvent<'a>),
    Unit(UnitEvent<'a>),
    Case(CaseEvent<'a>),
    GridSensor(GridSensorReading<'a>),
    HealthCase(HealthCase<'a>),
    Trip(TripRecord<'a>),
    Checkin(Checkin<'a>),
}

impl Event<'_> {
    /// The topic family the event came from.
    pub fn kind(&self) -> TopicKind {
        match self {
            Event::Detector(_) => TopicKind::Detector,
            Event::Incident(_) => TopicKind::Incident,
            Event::Unit(_) => TopicKind::Unit,
            Event::Case(_) => TopicKind::Case,
            Event::GridSensor(_) => TopicKind::GridSensor,
            Event::HealthCase(_) => TopicKind::HealthCase,
            Event::Trip(_) => TopicKind::Trip,
            Event::Checkin(_) => TopicKind::Checkin,
        }
    }

    /// The source of the event for the city's clock ([`crate::time::SourceClock`]): the
    /// entity that reported it (detector, incident, unit, case, sensor, person).
    pub fn source(&self) -> crate::time::Source {
        let id: &str = match self {
            Event::Detector(e) => &e.sensor,
            Event::Incident(e) => &e.incident,
            Event::Unit(e) => &e.unit,
            Event::Case(e) => &e.case_id,
            Event::GridSensor(e) => &e.sensor,
            Event::HealthCase(e) => &e.person,
            Event::Trip(e) => &e.person,
            Event::Checkin(e) => &e.person,
        };
        crate::time::source_of(self.kind() as u8, id)
    }

    /// The event time.
    pub fn ts(&self) -> Ts {
        match self {
            Event::Detector(e) => e.ts,
            Event::Incident(e) => e.ts,
            Event::Unit(e) => e.ts,
            Event::Case(e) => e.ts,
            Event::GridSensor(e) => e.ts,
            Event::HealthCase(e) => e.ts,
            Event::Trip(e) => e.ts,
            Event::Checkin(e) => e.ts,
        }
    }
}

/// The topic families of CONTRACT §2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[allow(missing_docs)]
pub enum TopicKind {
    Detector,
    Incident,
    Unit,
    Case,
    GridSensor,
    HealthCase,
    Trip,
    Checkin,
}

impl TopicKind {
    /// Every topic family, in contract order.
    pub const ALL: [TopicKind; 8] = [
        TopicKind::Detector,
        TopicKind::Incident,
        TopicKind::Unit,
        TopicKind::Case,
        TopicKind::GridSensor,
        TopicKind::HealthCase,
        TopicKind::Trip,
        TopicKind::Checkin,
    ];

    /// The topic path below the prefix, without the trailing id: `traffic/detector`, ….
    pub fn path(self) -> &'static str {
        match self {
            TopicKind::Detector => "traffic/detector",
            TopicKind::Incident => "emergency/incident",
            TopicKind::Unit => "emergency/unit",
            TopicKind::Case => "grid/case",
            TopicKind::GridSensor => "grid/sensor",
            TopicKind::HealthCase => "health/case",
            TopicKind::Trip => "health/trip",
            TopicKind::Checkin => "health/checkin",
        }
    }

    /// Whether payloads of this family carry a personal identifier.
    pub fn personal(self) -> bool {
        matches!(self, TopicKind::HealthCase | TopicKind::Trip | TopicKind::Checkin)
    }

    /// Recognises `{prefix}{path}/{id}`; returns the family and the id.
    pub fn parse<'t>(prefix: &str, topic: &'t str) -> Option<(TopicKind, &'t str)> {
        let rest = topic.strip_prefix(prefix)?;
        let (path, id) = rest.rsplit_once('/')?;
        if id.is_empty() {
            return None;
        }
        TopicKind::ALL.into_iter().find(|k| k.path() == path).map(|k| (k, id))
    }
}

/// Why a message (or one element of a batch) was rejected. The string forms are the
/// dead-letter reasons of the contract and of `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Not JSON (or a recording line that is not `{"topic", "payload"}`).
    MalformedJson,
    /// JSON, but not the payload of its topic: a missing field, a wrong type, an unknown enum value.
    InvalidPayload,
    /// Well-formed, but a value is out of range (occupancy outside 0..1, a zero interval, …).
    InvalidValue,
    /// A topic that is not one of the contract's.
    UnknownTopic,
    /// A detector or segment the city model does not know.
    UnknownId,
    /// Behind the watermark by more than its collection's retention.
    TooLate,
    /// Stamped too far ahead: of the wall clock (`run`, `demo`), or of every other source until
    /// the end of input (`replay`); see `ingest.max_future_s`.
    FutureTs,
}

impl Reason {
    /// Every reason, for metrics tables.
    pub const ALL: [Reason; 7] = [
        Reason::MalformedJson,
        Reason::InvalidPayload,
        Reason::InvalidValue,
        Reason::UnknownTopic,
        Reason::UnknownId,
        Reason::TooLate,
        Reason::FutureTs,
    ];

    /// The reason's contract name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MalformedJson => "malformed_json",
            Reason::InvalidPayload => "invalid_payload",
            Reason::InvalidValue => "invalid_value",
            Reason::UnknownTopic => "unknown_topic",
            Reason::UnknownId => "unknown_id",
            Reason::TooLate => "too_late",
            Reason::FutureTs => "future_ts",
        }
    }
}

/// A rejection: the reason and a human-readable detail (never containing a personal id).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{}: {detail}", reason.as_str())]
pub struct Rejected {
    /// The dead-letter reason.
    pub reason: Reason,
    /// What exactly was wrong.
    pub detail: String,
}

impl Rejected {
    /// A rejection with a reason and detail.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Rejected { reason, detail: detail.into() }
    }
}

/// A recording line (CONTRACT §4).
#[derive(Deserialize)]
struct RecordLine<'a, P> {
    #[serde(borrow)]
    topic: Cow<'a, str>,
    payload: P,
}

/// Decodes payloads of the contract's topics.
#[derive(Clone, Debug)]
pub struct Decoder {
    prefix: String,
    pseudonyms: Pseudonymizer,
}

fn schema_error(kind: TopicKind, e: serde_json::Error) -> Rejected {
    if e.is_syntax() || e.is_eof() {
        return Rejected::new(Reason::MalformedJson, format!("line {} column {}", e.line(), e.column()));
    }
    let msg = e.to_string();
    // Range checks inside `Ts` are value errors, not schema errors.
    let reason = if msg.starts_with("ts ") { Reason::InvalidValue } else { Reason::InvalidPayload };
    // serde quotes offending values; in a personal payload that value could be an id number.
    let detail = if kind.personal() { format!("schema error at column {}", e.column()) } else { msg };
    Rejected::new(reason, detail)
}

pub(crate) fn finite_in(v: Option<f64>, lo: f64, hi: f64, what: &str) -> Result<(), Rejected> {
    match v {
        Some(x) if !(x.is_finite() && (lo..=hi).contains(&x)) => {
            Err(Rejected::new(Reason::InvalidValue, format!("{what} {x} outside {lo}..{hi}")))
        }
        _ => Ok(()),
    }
}

pub(crate) fn lon_lat(lon: Option<f64>, lat: Option<f64>) -> Result<(), Rejected> {
    finite_in(lon, -180.0, 180.0, "lon")?;
    finite_in(lat, -90.0, 90.0, "lat")
}

impl Decoder {
    /// A decoder for topics under `prefix` (e.g. `city/`), pseudonymizing with `pseudonyms`.
    pub fn new(prefix: impl Into<String>, pseudonyms: Pseudonymizer) -> Self {
        let mut prefix = prefix.into();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Decoder { prefix, pseudonyms }
    }

    /// The topic prefix, ending in `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The pseudonymizer in use.
    pub fn pseudonyms(&self) -> &Pseudonymizer {
        &self.pseudonyms
    }

    /// Decodes one recording line `{"topic": …, "payload": …}` (CONTRACT §4), given as bytes.
    /// Calls `each` with the line's topic (when it has one) and each element's event or
    /// rejection; a line that is not UTF-8 is one `malformed_json` rejection.
    ///
    /// The common case — a detector topic written first, one object as payload — is read by
    /// [`crate::scan::detector_line`] when it has the plain shape, else parsed by serde_json in
    /// one pass straight into its type; anything else (or anything that fails there) takes the
    /// general path, which yields the precise reason. Both apply the same types and checks.
    /// (The whole line is checked for UTF-8 once, up front: measured, that is cheaper than
    /// serde_json's check of each string it borrows from bytes.)
    pub fn decode_line<'a>(
        &self,
        line: &'a [u8],
        mut each: impl FnMut(Option<&str>, Result<Event<'a>, Rejected>),
    ) {
        let Ok(line) = std::str::from_utf8(line) else {
            return each(None, Err(Rejected::new(Reason::MalformedJson, "line is not UTF-8")));
        };
        if let Some(rest) =
            line.strip_prefix(r#"{"topic":""#).and_then(|r| r.strip_prefix(self.prefix.as_str()))
            && rest.starts_with("traffic/detector/")
        {
            if let Some((topic, reading)) = crate::scan::detector_line(line) {
                let res = reading.validate().map(|()| Event::Detector(reading));
                return each(Some(topic), res);
            }
            if let Ok(rec) = serde_json::from_str::<RecordLine<'a, DetectorReading<'a>>>(line) {
                let topic = rec.topic;
                let res = rec.payload.validate().map(|()| Event::Detector(rec.payload));
                return each(Some(&topic), res);
            }
        }
        match serde_json::from_str::<RecordLine<'a, &'a RawValue>>(line) {
            Ok(rec) => {
                let topic = rec.topic;
                self.decode(&topic, rec.payload.get().as_bytes(), |res| each(Some(&topic), res));
            }
            Err(e) => {
                let reason = if e.is_data() { Reason::InvalidPayload } else { Reason::MalformedJson };
                // No serde text here: it could quote a personal id.
                let detail =
                    format!(r#"not a recording line {{"topic", "payload"}} (column {})"#, e.column());
                each(None, Err(Rejected::new(reason, detail)))
            }
        }
    }

    /// Decodes one message: a JSON object, or an array of them. Calls `each` once per element
    /// with the event or the reason it was rejected. A message that is not JSON at all, or whose
    /// topic is unknown, yields one rejection.
    pub fn decode<'a>(
        &self,
        topic: &str,
        payload: &'a [u8],
        mut each: impl FnMut(Result<Event<'a>, Rejected>),
    ) {
        let Some((kind, _id)) = TopicKind::parse(&self.prefix, topic) else {
            return each(Err(Rejected::new(Reason::UnknownTopic, "not a citybrain input topic")));
        };
        let text = match std::str::from_utf8(payload) {
            Ok(t) => t,
            Err(_) => {
                return each(Err(Rejected::new(Reason::MalformedJson, "payload is not UTF-8")));
            }
        };
        match text.trim_start().as_bytes().first() {
            Some(b'[') => match serde_json::from_str::<Vec<&'a RawValue>>(text) {
                Ok(items) => {
                    for item in items {
                        each(self.decode_one(kind, item.get()));
                    }
                }
                Err(e) => each(Err(schema_error(kind, e))),
            },
            _ => each(self.decode_one(kind, text)),
        }
    }

    /// Decodes one JSON object of a known topic family.
    pub fn decode_one<'a>(&self, kind: TopicKind, text: &'a str) -> Result<Event<'a>, Rejected> {
        let err = |e| schema_error(kind, e);
        let ev = match kind {
            TopicKind::Detector => {
                let r: DetectorReading = serde_json::from_str(text).map_err(err)?;
                r.validate()?;
                Event::Detector(r)
            }
            TopicKind::Incident => {
                let r: IncidentEvent = serde_json::from_str(text).map_err(err)?;
                r.validate()?;
                Event::Incident(r)
            }
            TopicKind::Unit => {
                let r: UnitEvent = serde_json::from_str(text).map_err(err)?;
                r.validate()?;
                Event::Unit(r)
            }
            TopicKind::Case => {
                let r: CaseEvent = serde_json::from_str(text).map_err(err)?;
                r.validate()?;
                Event::Case(r)
            }
            TopicKind::GridSensor => {
                let r: GridSensorReading = serde_json::from_str(text).map_err(err)?;
                r.validate()?;
                Event::GridSensor(r)
            }
            TopicKind::HealthCase => {
                let mut r: HealthCase = serde_json::from_str(text).map_err(err)?;
                r.validate()?;
                r.person = Cow::Owned(self.pseudonyms.pseudonym(&r.person));
                Event::HealthCase(r)
            }
            TopicKind::Trip => {
                let mut r: TripRecord = serde_json::from_str(text).map_err(err)?;
                r.validate()?;
                r.person = Cow::Owned(self.pseudonyms.pseudonym(&r.person));
                Event::Trip(r)
            }
            TopicKind::Checkin => {
                let mut r: Checkin = serde_json::from_str(text).map_err(err)?;
                r.validate()?;
                r.person = Cow::Owned(self.pseudonyms.pseudonym(&r.person));
                Event::Checkin(r)
            }
        };
        Ok(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder() -> Decoder {
        Decoder::new("city", Pseudonymizer::new(b"test-key".to_vec()))
    }

    fn all(topic: &str, payload: &str) -> Vec<Result<String, Reason>> {
        let mut out = vec![];
        decoder().decode(topic, payload.as_bytes(), |r| {
            out.push(r.map(|e| format!("{e:?}")).map_err(|e| e.reason))
        });
        out
    }

    #[test]
    fn detector_object_and_batch() {
        let one = r#"{"sensor":"d1","segment":"s1","ts":1767225600000,"interval_s":30,"count":3,"occupancy":0.2,"speed_kmh":50.5}"#;
        assert!(all("city/traffic/detector/d1", one)[0].is_ok());
        let batch = format!(r#"[{one}, {{"sensor":"d1"}}, {one}]"#);
        let got = all("city/traffic/detector/d1", &batch);
        assert_eq!(got.len(), 3);
        assert!(got[0].is_ok() && got[2].is_ok());
        assert_eq!(got[1], Err(Reason::InvalidPayload));
    }

    #[test]
    fn reasons() {
        let t = "city/traffic/detector/d1";
        assert_eq!(all(t, "{not json"), vec![Err(Reason::MalformedJson)]);
        assert_eq!(all("city/nope/x", "{}"), vec![Err(Reason::UnknownTopic)]);
        assert_eq!(
            all(t, r#"{"sensor":"d1","segment":"s1","ts":1767225600000,"interval_s":30,"count":"3"}"#),
            vec![Err(Reason::InvalidPayload)]
        );
        assert_eq!(
            all(
                t,
                r#"{"sensor":"d1","segment":"s1","ts":1767225600000,"interval_s":30,"count":3,"occupancy":1.5}"#
            ),
            vec![Err(Reason::InvalidValue)]
        );
        assert_eq!(
            all(t, r#"{"sensor":"d1","segment":"s1","ts":12,"interval_s":30,"count":3}"#),
            vec![Err(Reason::InvalidValue)]
        );
    }

    #[test]
    fn persons_never_leave_in_clear() {
        let d = decoder();
        let mut seen = vec![];
        d.decode(
            "city/health/case/x",
            br#"{"person":" 11010519491231002x ","ts":1767225600000,"status":"confirmed"}"#,
            |r| seen.push(r.unwrap()),
        );
        let Event::HealthCase(c) = &seen[0] else { panic!() };
        assert_eq!(c.person, d.pseudonyms().pseudonym("11010519491231002X"));
        assert!(!c.person.contains("110105"));
        // A schema error in a personal payload does not quote the value.
        let mut errs = vec![];
        d.decode(
            "city/health/case/x",
            br#"{"person":"110105194912310021","ts":"soon","status":"confirmed"}"#,
            |r| errs.push(r.unwrap_err()),
        );
        assert!(!errs[0].detail.contains("110105"), "{}", errs[0].detail);
    }

    #[test]
    fn topics() {
        assert_eq!(TopicKind::parse("city/", "city/health/checkin/v-1"), Some((TopicKind::Checkin, "v-1")));
        assert_eq!(TopicKind::parse("city/", "city/traffic/detector/"), None);
        assert_eq!(TopicKind::parse("city/", "town/traffic/detector/a"), None);
    }
}
