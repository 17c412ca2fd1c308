//! InfluxDB line protocol for the dataflow outputs (CONTRACT §6). Pure string formatting.
//!
//! Domains describe their measurements as rows through [`RowSink`] (each domain's
//! `measure.rs`); [`LineProtocol`] is the one encoding of those rows.
//!
//! Windowed points are stamped with the window start, alerts with the event time of the
//! transition; timestamps are nanoseconds. Values are written unrounded from the exact sums
//! (the shortest decimal that reads back to the same `f64`, via `ryu`). Only insertions are written: a retraction
//! alone writes nothing, and a corrected window is written again at the same series and time,
//! which InfluxDB treats as an overwrite.

use crate::alerts::Alert;
use crate::city::CityModel;
use crate::config::Config;
use crate::pipeline::Out;
use crate::time::Ms;

/// Escapes a tag key or value (commas, spaces, equals signs).
pub fn escape_tag(s: &str, out: &mut String) {
    if !s.bytes().any(|b| matches!(b, b',' | b' ' | b'=' | b'\\' | b'\n')) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        if matches!(c, ',' | ' ' | '=' | '\\') {
            out.push('\\');
        }
        if c == '\n' {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
}

/// Appends a quoted string field value.
pub fn quote_field(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Appends a finite float as the shortest decimal that reads back to the same `f64` (values are
/// unrounded), in `ryu`'s notation. Whole numbers (flow rates always are) take a shortcut
/// through `itoa` that writes the same bytes as `ryu` (`1320.0`).
fn push_float(v: f64, out: &mut String) {
    if v.fract() == 0.0 && v.abs() < 1e15 && !(v == 0.0 && v.is_sign_negative()) {
        out.push_str(itoa::Buffer::new().format(v as i64));
        out.push_str(".0");
    } else {
        out.push_str(ryu::Buffer::new().format_finite(v));
    }
}

/// A sink of measurement rows (CONTRACT §6): what a domain's `measure` module writes to.
/// Domains name measurements, tags and fields; they never format bytes. A row is
/// `measurement`, its tags (in key order), its fields, then `end` with its timestamp.
pub trait RowSink {
    /// Starts a row of `name`.
    fn measurement(&mut self, name: &str);
    /// Adds a tag (keys in sorted order).
    fn tag(&mut self, key: &str, value: &str);
    /// Adds an integer field.
    fn int(&mut self, key: &str, v: i64);
    /// Adds a float field; `None` (or a non-finite value) leaves the field out.
    fn float(&mut self, key: &str, v: Option<f64>);
    /// Adds a string field.
    fn string(&mut self, key: &str, v: &str);
    /// Ends the row, stamped `ms` (epoch ms).
    fn end(&mut self, ms: Ms);
}

/// InfluxDB line protocol: the [`RowSink`] every output writes through.
pub struct LineProtocol<'a> {
    out: &'a mut String,
    /// Whether the next field is the row's first.
    first: bool,
}

impl<'a> LineProtocol<'a> {
    /// Ends the row with a timestamp in nanoseconds.
    pub fn end_ns(&mut self, ns: u128) {
        self.out.push(' ');
        self.out.push_str(itoa::Buffer::new().format(ns));
        self.out.push('\n');
        self.first = true;
    }

    /// Appends rows to `out`.
    pub fn new(out: &'a mut String) -> Self {
        LineProtocol { out, first: true }
    }

    fn sep(&mut self) {
        self.out.push(if self.first { ' ' } else { ',' });
        self.first = false;
    }
}

impl RowSink for LineProtocol<'_> {
    fn measurement(&mut self, name: &str) {
        escape_tag(name, self.out);
        self.first = true;
    }

    fn tag(&mut self, k: &str, v: &str) {
        self.out.push(',');
        self.out.push_str(k);
        self.out.push('=');
        escape_tag(v, self.out);
    }

    fn int(&mut self, k: &str, v: i64) {
        self.sep();
        self.out.push_str(k);
        self.out.push('=');
        self.out.push_str(itoa::Buffer::new().format(v));
        self.out.push('i');
    }

    fn float(&mut self, k: &str, v: Option<f64>) {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            self.sep();
            self.out.push_str(k);
            self.out.push('=');
            push_float(v, self.out);
        }
    }

    fn string(&mut self, k: &str, v: &str) {
        self.sep();
        self.out.push_str(k);
        self.out.push('=');
        quote_field(v, self.out);
    }

    fn end(&mut self, ms: Ms) {
        self.out.push(' ');
        // Nanoseconds fit a u64 until the year 2554; accepted event times end in 2100.
        match ms.checked_mul(1_000_000) {
            Some(ns) => self.out.push_str(itoa::Buffer::new().format(ns)),
            None => self.out.push_str(itoa::Buffer::new().format(ms as u128 * 1_000_000)),
        }
        self.out.push('\n');
        self.first = true;
    }
}

/// Appends the line for an output record that was inserted (diff > 0). Alerts are written by
/// [`alert_line`], which knows the transition; records whose rows depend on the rest of their
/// batch (emergency snapshots and recommendations) by [`encode_batch`].
pub fn encode(out: &Out, city: &CityModel, cfg: &Config, buf: &mut String) {
    crate::traffic::measure::rows(out, city, cfg, &mut LineProtocol::new(buf));
}

/// Appends the lines of one consolidated batch of event time `t` (alerts excluded); returns
/// the number of points written. Each domain's `measure` decides what its records write.
pub fn encode_batch(t: Ms, batch: &[(Out, isize)], city: &CityModel, cfg: &Config, buf: &mut String) -> u64 {
    let mut lp = LineProtocol::new(buf);
    let mut points = 0;
    for (out, diff) in batch {
        if *diff > 0 && crate::traffic::measure::rows(out, city, cfg, &mut lp) {
            points += 1;
        }
    }
    points
        + crate::emergency::measure::rows(t, batch, city, &mut lp)
        + crate::grid::measure::rows(t, batch, city, &mut lp)
}

/// Appends the `alert` line of a transition, stamped `time` (the transition's event time) plus
/// [`alert_offset_ns`] of its id.
pub fn alert_line(alert: &Alert, time: Ms, buf: &mut String) {
    let mut w = LineProtocol::new(buf);
    w.measurement("alert");
    w.tag("domain", &alert.domain);
    w.tag("rule", &alert.rule);
    w.tag("severity", alert.severity.as_str());
    w.string("state", alert.state.as_str());
    w.string("subject", &alert.subject.to_string());
    w.string("cell", alert.cell.as_deref().unwrap_or(""));
    w.string("district", alert.district.as_deref().unwrap_or(""));
    w.string("message", &alert.message);
    w.string("id", &alert.id);
    w.end_ns(time as u128 * 1_000_000 + alert_offset_ns(&alert.id) as u128);
}

/// The sub-millisecond part of an `alert` point's timestamp, 0–999,999 ns, from its id: the
/// series of `alert` is (domain, rule, severity), so two different alerts of one rule raised at
/// the same millisecond (two lanes at one window's end) would otherwise be one point in InfluxDB,
/// the second overwriting the first. Fixed per id (the same bytes on every run and worker), and
/// the event time to the millisecond is unchanged.
pub fn alert_offset_ns(id: &str) -> u64 {
    // FNV-1a, 64 bits: stable across runs, platforms and versions.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h % 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_floats_are_written_as_ryu_writes_them() {
        let mut values =
            vec![0.0, -0.0, 1.0, -1.0, 1320.0, 0.5, 1e14, 999_999_999_999_999.0, 1e15, 1e16, -7e12];
        values.extend((0..2000).map(|i| i as f64 * 12.0));
        values.extend((0..2000).map(|i| i as f64 * 0.37));
        for v in values {
            let mut s = String::new();
            push_float(v, &mut s);
            assert_eq!(s, ryu::Buffer::new().format_finite(v), "{v}");
        }
    }

    #[test]
    fn escaping() {
        let mut s = String::new();
        escape_tag("a b,c=d", &mut s);
        assert_eq!(s, r"a\ b\,c\=d");
        let mut s = String::new();
        quote_field(r#"say "hi"\"#, &mut s);
        assert_eq!(s, r#""say \"hi\"\\""#);
    }

    #[test]
    fn alerts_of_one_rule_at_one_millisecond_are_distinct_points() {
        let alert = |id: &str| Alert {
            id: id.into(),
            rule: "traffic.incident".into(),
            severity: crate::alerts::Severity::Warning,
            state: crate::alerts::AlertState::Raised,
            domain: "traffic".into(),
            subject: serde_json::json!({}),
            cell: None,
            district: None,
            raised_ts: 1,
            cleared_ts: None,
            acked_by: None,
            acked_ts: None,
            message: String::new(),
            ack_note: None,
            escalated: false,
        };
        let (mut a, mut b) = (String::new(), String::new());
        alert_line(&alert("traffic.incident:s1:0"), 1_767_225_600_000, &mut a);
        alert_line(&alert("traffic.incident:s1:1"), 1_767_225_600_000, &mut b);
        let ns = |line: &str| line.trim_end().rsplit_once(' ').map(|(_, t)| t.parse::<u128>().unwrap_or(0));
        let (ta, tb) = (ns(&a).unwrap_or(0), ns(&b).unwrap_or(0));
        assert_ne!(ta, tb);
        assert_eq!((ta / 1_000_000, tb / 1_000_000), (1_767_225_600_000, 1_767_225_600_000));
        assert_eq!(alert_offset_ns("traffic.incident:s1:0"), alert_offset_ns("traffic.incident:s1:0"));
    }
}
