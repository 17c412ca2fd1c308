//! Event time: parsing `ts`, aligning windows to the epoch, and the city-wide watermark.
//!
//! Every payload carries `ts`, an integer of epoch milliseconds (UTC) or an RFC 3339 string
//! (CONTRACT §1). Inside citybrain event time is a `u64` of epoch milliseconds ([`Ms`]), and it is
//! also the timely timestamp of every dataflow: a record that belongs to the window `[s, e)` is
//! presented to differential at time `e` (or at the current input time if that is later), so a
//! window's result appears exactly when the watermark passes its end.
//!
//! The city has one clock (CONTRACT §1): the latest event time of any validated record on any
//! topic, except that one source far ahead of all the others does not move it
//! ([`SourceClock`]). The watermark is that clock minus the allowed lateness; it never goes
//! backwards.

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

/// Where an event time came from, for the clock: one detector, one incident, one unit, … (see
/// [`source_of`]). Two records of one source never count as two witnesses.
pub type Source = u64;

/// The source key of an entity of a topic family (`kind` is the family's index): a hash of both,
/// so ids of different families never meet.
pub fn source_of(kind: u8, id: &str) -> Source {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    kind.hash(&mut h);
    id.hash(&mut h);
    h.finish()
}

/// The two sources that have reported the latest event times, and those times.
///
/// The city's clock (CONTRACT §1: one clock for every topic, moved only by validated records)
/// must not be dragged into the future by one sensor with a wrong clock. [`SourceClock::clock`]
/// therefore trusts the latest source only while it is within `max_future` of the second latest
/// (or of the clock itself): a lone source far ahead of every other one does not move the
/// clock; a second source that reports a time as far ahead confirms it (a real gap in the
/// input), and the clock jumps.
///
/// Only the top two of the per-source maxima are kept, and that is exact: a source's maximum
/// only grows, and a source outside the top two has a maximum at or below the second, so when it
/// reports again its new maximum is simply its new time. For the same reason two
/// `SourceClock`s of disjoint or overlapping inputs merge into the `SourceClock` of the union
/// ([`SourceClock::merge`]) — what the workers of one dataflow do at the end of every round.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceClock {
    /// `(time, source)` of the latest and the second latest source, distinct sources, ordered
    /// by `(time, source)` so ties break the same way everywhere.
    top: [Option<(Ms, Source)>; 2],
}

impl SourceClock {
    /// Notes that `src` reported event time `ts`.
    pub fn observe(&mut self, src: Source, ts: Ms) {
        let new = (ts, src);
        match self.top {
            [Some((t0, s0)), _] if s0 == src => {
                if ts > t0 {
                    self.top[0] = Some(new);
                }
            }
            [first, Some((t1, s1))] if s1 == src => {
                if ts > t1 {
                    self.top[1] = Some(new);
                    if first.is_none_or(|f| new > f) {
                        self.top.swap(0, 1);
                    }
                }
            }
            [first, second] => {
                if first.is_none_or(|f| new > f) {
                    self.top = [Some(new), first];
                } else if second.is_none_or(|s| new > s) {
                    self.top[1] = Some(new);
                }
            }
        }
    }

    /// Adds what `other` has seen.
    pub fn merge(&mut self, other: &SourceClock) {
        for (ts, src) in other.top.iter().flatten() {
            self.observe(*src, *ts);
        }
    }

    /// The latest event time of any source.
    pub fn latest(&self) -> Option<Ms> {
        self.top[0].map(|(t, _)| t)
    }

    /// The clock after these observations, given the previous clock (`previous`), a trusted
    /// time if there is one (`trusted`: the live service's wall clock) and the largest lead one
    /// source may have on the others (`max_future`): the latest time, if it is within
    /// `max_future` of the second latest, of `previous` or of `trusted`; else the second latest.
    /// Never before `previous`; `None` before any record.
    pub fn clock(&self, previous: Option<Ms>, trusted: Option<Ms>, max_future: Ms) -> Option<Ms> {
        let second = self.top[1].map(|(t, _)| t);
        let anchor = previous.max(second).max(trusted);
        let latest = match (self.top[0], anchor) {
            (Some((t, _)), Some(a)) if t > a.saturating_add(max_future) => second,
            (top, _) => top.map(|(t, _)| t),
        };
        previous.max(latest)
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
    fn one_source_far_ahead_does_not_move_the_clock() {
        const F: Ms = 300_000;
        let mut c = SourceClock::default();
        assert_eq!(c.clock(None, None, F), None);
        c.observe(1, 1_000_000);
        assert_eq!(c.clock(None, None, F), Some(1_000_000), "a lone source is trusted");
        c.observe(2, 1_000_500);
        c.observe(1, 1_001_000);
        assert_eq!(c.clock(None, None, F), Some(1_001_000));
        // A sensor with a clock a day ahead.
        c.observe(3, 1_000_000 + 86_400_000);
        assert_eq!(c.clock(Some(1_001_000), None, F), Some(1_001_000));
        // The same sensor again: still one source.
        c.observe(3, 1_000_000 + 86_500_000);
        assert_eq!(c.clock(Some(1_001_000), None, F), Some(1_001_000));
        // A second source as far ahead confirms it: a gap in the input.
        c.observe(2, 1_000_000 + 86_400_000);
        assert_eq!(c.clock(Some(1_001_000), None, F), Some(1_000_000 + 86_500_000));
        // Within max_future of the clock a single source moves it.
        let mut d = SourceClock::default();
        d.observe(1, 10_000_000);
        d.observe(2, 9_000_000);
        assert_eq!(d.clock(Some(9_800_000), None, F), Some(10_000_000));
        assert_eq!(d.clock(Some(12_000_000), None, F), Some(12_000_000), "never goes back");
        // A trusted time (the wall clock) vouches for the latest source, and is not a floor.
        let mut e = SourceClock::default();
        e.observe(1, 10_000_000);
        e.observe(2, 1_000_000);
        assert_eq!(e.clock(None, None, F), Some(1_000_000));
        assert_eq!(e.clock(None, Some(9_900_000), F), Some(10_000_000));
        assert_eq!(e.clock(None, Some(99_000_000), F), Some(10_000_000));
    }

    #[test]
    fn merged_clocks_equal_the_clock_of_the_union() {
        // Deterministic pseudo-random observations split over "workers" in every way.
        let mut x = 12345u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..200 {
            let obs: Vec<(Source, Ms)> = (0..20).map(|_| (next() % 6, next() % 1000)).collect();
            let mut all = SourceClock::default();
            let mut parts = [SourceClock::default(); 3];
            for (i, &(s, t)) in obs.iter().enumerate() {
                all.observe(s, t);
                parts[(i + (s as usize)) % 3].observe(s, t);
            }
            let mut merged = SourceClock::default();
            for p in &parts {
                merged.merge(p);
            }
            // The brute-force top two of the per-source maxima.
            let mut max: std::collections::BTreeMap<Source, Ms> = Default::default();
            for &(s, t) in &obs {
                let m = max.entry(s).or_insert(t);
                *m = (*m).max(t);
            }
            let mut v: Vec<(Ms, Source)> = max.into_iter().map(|(s, t)| (t, s)).collect();
            v.sort_unstable_by(|a, b| b.cmp(a));
            let want = [v.first().copied(), v.get(1).copied()];
            assert_eq!(all.top, want);
            assert_eq!(merged.top, want);
        }
    }
}
