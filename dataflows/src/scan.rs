//! The hot shape of a recording line, scanned without serde.
//!
//! Nearly every line of a traffic recording looks like
//! `{"topic":"city/traffic/detector/d-1","payload":{"sensor":"d-1","segment":"s-1",…}}`: one
//! detector reading, no whitespace, no escapes. [`detector_line`] reads exactly that shape in one
//! forward pass — about a third of what serde_json's derive spends on it, which matters when
//! parsing is the largest cost of a replay. It is a strict *subset* parser: any line it cannot
//! read with certainty (whitespace, an escape, a control character, an unknown, repeated or
//! missing field, a number that is not a plain unsigned integer or short decimal, an out-of-range
//! `ts`, anything after the closing brace) makes it return `None`, and the caller falls back to
//! serde_json, which gives the precise reason. For every line it accepts, the result is the one
//! serde_json gives (a test compares the two over the standard lines and thousands of mutations
//! of them):
//!
//! * strings are the bytes between the quotes (no escapes, so that is their value);
//! * integers are decimal digits without a sign or leading zeros and must fit their type;
//! * floats have at most 15 digits and no exponent: both serde_json (significand divided by a
//!   power of ten, one correctly rounded IEEE operation) and `str::parse` then yield the
//!   correctly rounded value, so the two agree bit for bit.

use crate::event::DetectorReading;
use crate::time::{MAX_TS, MIN_TS, Ts};
use std::borrow::Cow;

/// A forward-only reader over the bytes of one line.
struct Cursor<'a> {
    text: &'a str,
    i: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.i).copied()
    }

    #[inline]
    fn literal(&mut self, lit: &[u8]) -> Option<()> {
        let rest = self.text.as_bytes().get(self.i..)?;
        rest.starts_with(lit).then(|| self.i += lit.len())
    }

    /// A string without escapes or control characters.
    #[inline]
    fn string(&mut self) -> Option<&'a str> {
        self.literal(b"\"")?;
        let start = self.i;
        let bytes = self.text.as_bytes();
        loop {
            match *bytes.get(self.i)? {
                b'"' => break,
                b'\\' | 0..=0x1f => return None,
                _ => self.i += 1,
            }
        }
        self.i += 1;
        // The quotes are ASCII, so both ends are character boundaries.
        self.text.get(start..self.i - 1)
    }

    /// The digits of an unsigned integer (no sign, no leading zero), not followed by a fraction
    /// or exponent.
    #[inline]
    fn digits(&mut self) -> Option<&'a str> {
        let start = self.i;
        self.int_part()?;
        (!matches!(self.peek(), Some(b'.' | b'e' | b'E'))).then(|| &self.text[start..self.i])
    }

    #[inline]
    fn uint(&mut self) -> Option<u64> {
        self.digits()?.parse().ok()
    }

    #[inline]
    fn null(&mut self) -> bool {
        self.literal(b"null").is_some()
    }

    /// `null`, or a number of at most 15 digits without sign or exponent.
    ///
    /// Its value is `m / 10^k` for the digits `m` and the `k` digits after the point: with at
    /// most 15 digits both are exact in an `f64`, and one IEEE division rounds correctly, so this
    /// is the correctly rounded value of the decimal, as `str::parse` (and serde_json) give it.
    #[inline]
    fn float(&mut self) -> Option<Option<f64>> {
        const POW10: [f64; 16] =
            [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];
        if self.null() {
            return Some(None);
        }
        let int = self.int_part().filter(|&n| n <= 15)?;
        let mut m: u64 = 0;
        for &d in &self.text.as_bytes()[self.i - int..self.i] {
            m = m * 10 + (d - b'0') as u64;
        }
        let mut frac = 0;
        if self.peek() == Some(b'.') {
            self.i += 1;
            while let Some(d @ b'0'..=b'9') = self.peek() {
                if int + frac >= 15 {
                    return None;
                }
                m = m * 10 + (d - b'0') as u64;
                frac += 1;
                self.i += 1;
            }
            if frac == 0 {
                return None;
            }
        }
        if int + frac > 15 || matches!(self.peek(), Some(b'e' | b'E')) {
            return None;
        }
        Some(Some(m as f64 / POW10[frac]))
    }

    /// The integer part of a number: its digit count.
    #[inline]
    fn int_part(&mut self) -> Option<usize> {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        let digits = self.text.get(start..self.i)?;
        (!digits.is_empty() && (digits == "0" || !digits.starts_with('0'))).then_some(digits.len())
    }
}

const SENSOR: u16 = 1;
const SEGMENT: u16 = 1 << 1;
const TS: u16 = 1 << 2;
const INTERVAL: u16 = 1 << 3;
const COUNT: u16 = 1 << 4;
const LANE: u16 = 1 << 5;
const FLOW: u16 = 1 << 6;
const OCCUPANCY: u16 = 1 << 7;
const SPEED: u16 = 1 << 8;
const REQUIRED: u16 = SENSOR | SEGMENT | TS | INTERVAL | COUNT;

/// Reads `{"topic":"…","payload":{…detector reading…}}` exactly as serde_json would, or returns
/// `None` when the line is not of that plain shape (see the module docs). Returns the topic and
/// the reading, not yet validated.
pub fn detector_line(line: &str) -> Option<(&str, DetectorReading<'_>)> {
    let mut c = Cursor { text: line, i: 0 };
    c.literal(br#"{"topic":"#)?;
    let topic = c.string()?;
    c.literal(br#","payload":{"#)?;
    let mut r = DetectorReading {
        sensor: Cow::Borrowed(""),
        segment: Cow::Borrowed(""),
        ts: Ts(0),
        interval_s: 0,
        count: 0,
        lane: None,
        flow_vph: None,
        occupancy: None,
        speed_kmh: None,
    };
    let mut seen = 0u16;
    loop {
        let key = c.string()?;
        c.literal(b":")?;
        let field = match key {
            "sensor" => {
                r.sensor = Cow::Borrowed(c.string()?);
                SENSOR
            }
            "segment" => {
                r.segment = Cow::Borrowed(c.string()?);
                SEGMENT
            }
            "ts" => {
                let ts = c.uint().filter(|ts| (MIN_TS..MAX_TS).contains(ts))?;
                r.ts = Ts(ts);
                TS
            }
            "interval_s" => {
                r.interval_s = u32::try_from(c.uint()?).ok()?;
                INTERVAL
            }
            "count" => {
                r.count = u32::try_from(c.uint()?).ok()?;
                COUNT
            }
            "lane" => {
                r.lane = if c.null() { None } else { Some(u32::try_from(c.uint()?).ok()?) };
                LANE
            }
            "flow_vph" => {
                r.flow_vph = c.float()?;
                FLOW
            }
            "occupancy" => {
                r.occupancy = c.float()?;
                OCCUPANCY
            }
            "speed_kmh" => {
                r.speed_kmh = c.float()?;
                SPEED
            }
            _ => return None,
        };
        if seen & field != 0 {
            return None;
        }
        seen |= field;
        match c.peek()? {
            b',' => c.i += 1,
            b'}' => {
                c.i += 1;
                break;
            }
            _ => return None,
        }
    }
    if seen & REQUIRED != REQUIRED {
        return None;
    }
    c.literal(b"}")?;
    (c.i == line.len()).then_some((topic, r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Line<'a> {
        #[serde(borrow)]
        topic: Cow<'a, str>,
        #[serde(borrow)]
        payload: DetectorReading<'a>,
    }

    /// Whenever the scanner accepts a line, serde_json reads the same topic and reading.
    fn agrees(line: &str) -> bool {
        let Some((topic, reading)) = detector_line(line) else { return false };
        let serde: Line =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: accepted, but serde: {e}"));
        assert_eq!(topic, serde.topic, "{line}");
        assert_eq!(reading, serde.payload, "{line}");
        for v in [reading.flow_vph, reading.occupancy, reading.speed_kmh].into_iter().flatten() {
            assert!(v.is_sign_positive(), "{line}");
        }
        true
    }

    const LINES: [&str; 4] = [
        r#"{"topic":"city/traffic/detector/det-00409","payload":{"sensor":"det-00409","segment":"seg-00409","lane":0,"ts":1767225600000,"interval_s":30,"count":11,"flow_vph":1320,"occupancy":0.1,"speed_kmh":92.0}}"#,
        r#"{"topic":"city/traffic/detector/d1","payload":{"sensor":"d1","segment":"s1","ts":1767225600000,"interval_s":30,"count":0,"occupancy":0.9731,"speed_kmh":null}}"#,
        r#"{"topic":"city/traffic/detector/d2","payload":{"count":7,"interval_s":60,"segment":"s2","sensor":"d2","ts":1767225661234,"lane":null,"speed_kmh":47.123456789012}}"#,
        r#"{"topic":"x","payload":{"sensor":"街口","segment":"s","ts":1767225600000,"interval_s":1,"count":4294967295,"flow_vph":0}}"#,
    ];

    #[test]
    fn plain_lines_are_read_as_serde_reads_them() {
        for line in LINES {
            assert!(agrees(line), "not accepted: {line}");
        }
    }

    #[test]
    fn short_decimals_are_correctly_rounded() {
        let mut x: u64 = 1;
        for _ in 0..100_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let digits = format!("{}", (x >> 20) % 1_000_000_000_000_000);
            let point = (x >> 8) as usize % digits.len();
            let text = if point == 0 {
                digits.clone()
            } else {
                format!("{}.{}", &digits[..point], &digits[point..])
            };
            let mut c = Cursor { text: &text, i: 0 };
            match c.float() {
                Some(Some(v)) => assert_eq!(v.to_bits(), text.parse::<f64>().unwrap().to_bits(), "{text}"),
                other => panic!("{text} refused: {other:?}"),
            }
        }
    }

    #[test]
    fn anything_else_is_left_to_serde() {
        let refused = [
            r#"{"topic": "t","payload":{"sensor":"d","segment":"s","ts":1767225600000,"interval_s":30,"count":1}}"#,
            r#"{"topic":"t","payload":{"sensor":"d\u0031","segment":"s","ts":1767225600000,"interval_s":30,"count":1}}"#,
            r#"{"topic":"t","payload":{"sensor":"d","segment":"s","ts":1767225600000,"interval_s":30,"count":1,"count":2}}"#,
            r#"{"topic":"t","payload":{"sensor":"d","segment":"s","ts":1767225600000,"interval_s":30}}"#,
            r#"{"topic":"t","payload":{"sensor":"d","segment":"s","ts":1767225600000,"interval_s":30,"count":1,"extra":1}}"#,
            r#"{"topic":"t","payload":{"sensor":"d","segment":"s","ts":12,"interval_s":30,"count":1}}"#,
            r#"{"topic":"t","payload":{"sensor":"d","segment":"s","ts":"2026-01-01T00:00:00Z","interval_s":30,"count":1}}"#,
            r#"{"topic":"t","payload":{"sensor":"d","segment":"s","ts":1767225600000,"interval_s":30,"count":01}}"#,
            r#"{"topic":"t","payload":{"sensor":"d","segment":"s","ts":1767225600000,"interval_s":30,"count":1.0}}"#,
            r#"{"topic":"t","payload":{"sensor":"d","segment":"s","ts":1767225600000,"interval_s":30,"count":4294967296}}"#,
            r#"{"topic":"t","payload":{"sensor":"d","segment":"s","ts":1767225600000,"interval_s":30,"count":1,"occupancy":-0.0}}"#,
            r#"{"topic":"t","payload":{"sensor":"d","segment":"s","ts":1767225600000,"interval_s":30,"count":1,"occupancy":1e-1}}"#,
            r#"{"topic":"t","payload":{"sensor":"d","segment":"s","ts":1767225600000,"interval_s":30,"count":1,"speed_kmh":1.1234567890123456}}"#,
            r#"{"topic":"t","payload":{"sensor":"d","segment":"s","ts":1767225600000,"interval_s":30,"count":1,"speed_kmh":12345678901234567890123}}"#,
            r#"{"topic":"t","payload":{"sensor":"d","segment":"s","ts":1767225600000,"interval_s":30,"count":1}} "#,
            r#"{"topic":"t","payload":[{"sensor":"d","segment":"s","ts":1767225600000,"interval_s":30,"count":1}]}"#,
        ];
        for line in refused {
            assert!(detector_line(line).is_none(), "accepted: {line}");
        }
    }

    #[test]
    fn mutations_never_disagree_with_serde() {
        // Delete, duplicate or replace one byte (or swap two) of each plain line, with bytes
        // that matter to JSON: whatever the scanner still accepts, serde_json reads alike.
        let alphabet = b"0123456789.eE-+\"\\,:{}[] nul\tx";
        let mut x: u64 = 42;
        let mut next = |m: usize| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) as usize % m
        };
        let (mut accepted, mut tried) = (0, 0);
        for line in LINES {
            for _ in 0..3000 {
                let mut b = line.as_bytes().to_vec();
                let i = next(b.len());
                match next(4) {
                    0 => {
                        b.remove(i);
                    }
                    1 => b.insert(i, b[i]),
                    2 => b[i] = alphabet[next(alphabet.len())],
                    _ => {
                        let j = next(b.len());
                        b.swap(i, j);
                    }
                }
                let Ok(text) = std::str::from_utf8(&b) else { continue };
                tried += 1;
                accepted += agrees(text) as usize;
            }
        }
        assert!(accepted > tried / 20, "the mutations exercise accepted lines too ({accepted} of {tried})");
    }
}
