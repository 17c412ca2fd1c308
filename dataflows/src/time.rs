//! Event time: parsing `ts`, aligning windows to the epoch, and the city-wide watermark.
//!
//! Every payload carries `ts`, an integer of epoch milliseconds (UTC) or an RFC 3339 string
//! (CONTRACT §1). Inside citybrain event time is a `u64` of epoch milliseconds ([`Ms`]), and it is
//! also the timely timestamp of every dataflow: a record that belongs to the window `[s, e)` is
//! presented to differential at time `e` (or at the current input time if that is later), so a
//! window's result appears exactly when the watermark passes its end.
//!
//! The [`Watermark`] is the one clock of the city: the largest `ts` seen on any topic minus the
//! allowed lateness. It never goes backwards.

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Event time in milliseconds since the Unix epoch (UTC); also the timely timestamp type.
pub type Ms = u64;

/// One second in [`Ms`].
pub const SECOND: Ms = 1_000;
/// One minute in [`Ms`].
pub const MINUTE: Ms = 60 * SECOND;

/// The earliest event time accepted (2000-01-01T00:00:00Z): older stamps are certainly wrong
/// (a sensor with an unset clock) and are rejected as `invalid_value`.
pub const MIN_TS: Ms = 946_684_800_000;
/// The latest event time accepted (2100-01-01T00:00:00Z).
pub const MAX_TS: Ms = 4_102_444_800_000;

/// A payload's `ts` field: accepts integer milliseconds or an RFC 3339 string, always serializes
/// as integer milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ts(pub Ms);

impl Serialize for Ts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Ts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TsVisitor;
        impl Visitor<'_> for TsVisitor {
            type Value = Ts;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("epoch milliseconds or an RFC 3339 timestamp")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Ts, E> {
                check_range(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Ts, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom("ts before 1970"))
                    .and_then(|v| check_range(v).map_err(E::custom))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Ts, E> {
                if v.fract() == 0.0 && (0.0..1e16).contains(&v) {
                    check_range(v as u64).map_err(E::custom)
                } else {
                    Err(E::custom("ts must be whole milliseconds"))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Ts, E> {
                parse_rfc3339(v).map_err(E::custom)
            }
        }
        d.deserialize_any(TsVisitor)
    }
}

fn check_range(v: Ms) -> Result<Ts, String> {
    if (MIN_TS..MAX_TS).contains(&v) { Ok(Ts(v)) } else { Err(format!("ts {v} outside 2000..2100")) }
}

/// Parses an RFC 3339 timestamp into epoch milliseconds.
pub fn parse_rfc3339(v: &str) -> Result<Ts, String> {
    let dt = chrono::DateTime::parse_from_rfc3339(v).map_err(|e| format!("ts {v:?}: {e}"))?;
    let ms = u64::try_from(dt.timestamp_millis()).map_err(|_| "ts before 1970".to_string())?;
    check_range(ms)
}

/// Formats epoch milliseconds as RFC 3339 (UTC), for messages and logs.
pub fn format_ms(ms: Ms) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

/// The start of the epoch-aligned window of length `len` that holds `ts`.
#[inline]
pub fn window_start(ts: Ms, len: Ms) -> Ms {
    ts - ts % len
}

/// The end (exclusive) of the epoch-aligned window of length `len` that holds `ts`.
#[inline]
pub fn window_end(ts: Ms, len: Ms) -> Ms {
    window_start(ts, len) + len
}

/// The city-wide event-time clock: the largest `ts` seen on any topic minus the allowed lateness.
///
/// Pure: it only moves when told of an event time (or, in the live service, of the wall clock
/// through [`Watermark::advance_idle`]). It never goes backwards.
#[derive(Clone, Debug)]
pub struct Watermark {
    lateness: Ms,
    max_ts: Option<Ms>,
    floor: Ms,
}

impl Watermark {
    /// A clock that has seen nothing yet, with the given allowed lateness.
    pub fn new(lateness: Ms) -> Self {
        Watermark { lateness, max_ts: None, floor: 0 }
    }

    /// Notes an event time seen on any topic.
    #[inline]
    pub fn observe(&mut self, ts: Ms) {
        if self.max_ts.is_none_or(|m| ts > m) {
            self.max_ts = Some(ts);
        }
    }

    /// The largest event time seen so far.
    pub fn max_ts(&self) -> Option<Ms> {
        self.max_ts
    }

    /// Moves the clock to at least `at` without an event (idle input advancing with the wall clock).
    pub fn advance_idle(&mut self, at: Ms) {
        self.floor = self.floor.max(at);
    }

    /// The current watermark: max ts − lateness, or the idle floor if that is later; 0 before any input.
    pub fn current(&self) -> Ms {
        let from_events = self.max_ts.map(|m| m.saturating_sub(self.lateness)).unwrap_or(0);
        from_events.max(self.floor)
    }

    /// The allowed lateness in ms.
    pub fn lateness(&self) -> Ms {
        self.lateness
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ts_accepts_integers_and_rfc3339() {
        let a: Ts = serde_json::from_str("1767225600000").unwrap();
        let b: Ts = serde_json::from_str("\"2026-01-01T08:00:00+08:00\"").unwrap();
        assert_eq!(a, b);
        assert!(serde_json::from_str::<Ts>("-5").is_err());
        assert!(serde_json::from_str::<Ts>("\"yesterday\"").is_err());
        assert!(serde_json::from_str::<Ts>("12").is_err());
        assert!(serde_json::from_str::<Ts>("1767225600000.5").is_err());
    }

    #[test]
    fn windows_align_to_the_epoch() {
        assert_eq!(window_start(1_767_225_899_999, 300_000), 1_767_225_600_000);
        assert_eq!(window_end(1_767_225_600_000, 300_000), 1_767_225_900_000);
    }

    #[test]
    fn watermark_never_goes_back() {
        let mut w = Watermark::new(5_000);
        assert_eq!(w.current(), 0);
        w.observe(100_000);
        w.observe(50_000);
        assert_eq!(w.current(), 95_000);
        w.advance_idle(90_000);
        assert_eq!(w.current(), 95_000);
        w.advance_idle(120_000);
        assert_eq!(w.current(), 120_000);
    }
}
