//! InfluxDB line protocol for the dataflow outputs (CONTRACT §6). Pure string formatting.
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
use crate::traffic::{DistSum, FlowSum, Win, level, tpi_level};

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

struct Fields<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Fields<'a> {
    fn new(out: &'a mut String) -> Self {
        out.push(' ');
        Fields { out, first: true }
    }
    fn sep(&mut self) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
    }
    fn int(&mut self, k: &str, v: i64) -> &mut Self {
        self.sep();
        self.out.push_str(k);
        self.out.push('=');
        self.out.push_str(itoa::Buffer::new().format(v));
        self.out.push('i');
        self
    }
    fn float(&mut self, k: &str, v: Option<f64>) -> &mut Self {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            self.sep();
            self.out.push_str(k);
            self.out.push('=');
            push_float(v, self.out);
        }
        self
    }
    fn string(&mut self, k: &str, v: &str) -> &mut Self {
        self.sep();
        self.out.push_str(k);
        self.out.push('=');
        quote_field(v, self.out);
        self
    }
    fn end(&mut self, ms: Ms) {
        self.out.push(' ');
        // Nanoseconds fit a u64 until the year 2554; accepted event times end in 2100.
        match ms.checked_mul(1_000_000) {
            Some(ns) => self.out.push_str(itoa::Buffer::new().format(ns)),
            None => self.out.push_str(itoa::Buffer::new().format(ms as u128 * 1_000_000)),
        }
        self.out.push('\n');
    }
}

fn tag(out: &mut String, k: &str, v: &str) {
    out.push(',');
    out.push_str(k);
    out.push('=');
    escape_tag(v, out);
}

fn flow_fields(f: &mut Fields<'_>, sum: &FlowSum, win: Win) {
    f.int("count", sum.count)
        .float("flow_vph", Some(sum.flow_vph(win)))
        .float("occupancy", sum.occupancy())
        .float("speed_kmh", sum.speed_kmh());
}

/// Appends the line for an output record that was inserted (diff > 0) at event time `time`.
/// Alerts are written by [`alert_line`], which knows the transition.
pub fn encode(out: &Out, city: &CityModel, cfg: &Config, buf: &mut String) {
    match out {
        Out::Detector(w, sum) => {
            let det = &city.detectors[w.det as usize];
            buf.push_str("traffic_detector");
            tag(buf, "segment", &city.segments[det.segment as usize].id);
            tag(buf, "sensor", &det.id);
            tag(buf, "window", w.win.tag());
            let mut f = Fields::new(buf);
            flow_fields(&mut f, sum, w.win);
            f.end(w.start);
        }
        Out::Segment(w, sum) => {
            let seg = &city.segments[w.seg as usize];
            buf.push_str("traffic_segment");
            tag(buf, "district", &city.districts[seg.district as usize].id);
            tag(buf, "road_class", seg.road_class.as_str());
            tag(buf, "segment", &seg.id);
            tag(buf, "window", w.win.tag());
            let mut f = Fields::new(buf);
            flow_fields(&mut f, sum, w.win);
            f.float("tti", sum.speed_kmh().filter(|v| *v > 0.0).map(|v| seg.speed_limit_kmh / v));
            f.int("level", level(sum, seg.road_class, &cfg.traffic) as i64);
            f.end(w.start);
        }
        Out::District(w, sum) => district_line(w.district, w.win, w.start, sum, city, cfg, buf),
        Out::Alert(_) => {}
    }
}

fn district_line(
    d: u32,
    win: Win,
    start: Ms,
    sum: &DistSum,
    city: &CityModel,
    cfg: &Config,
    buf: &mut String,
) {
    buf.push_str("traffic_district");
    tag(buf, "district", &city.districts[d as usize].id);
    tag(buf, "window", win.tag());
    let tpi = sum.tpi(&cfg.traffic);
    let mut f = Fields::new(buf);
    f.float("tpi", Some(tpi))
        .int("level", tpi_level(tpi) as i64)
        .float("speed_kmh", sum.speed_kmh())
        .float("congested_km", Some(sum.congested_km()));
    f.end(start);
}

/// Appends the `alert` line of a transition, stamped `time` (the transition's event time).
pub fn alert_line(alert: &Alert, time: Ms, buf: &mut String) {
    buf.push_str("alert");
    tag(buf, "domain", &alert.domain);
    tag(buf, "rule", &alert.rule);
    tag(buf, "severity", alert.severity.as_str());
    let mut f = Fields::new(buf);
    f.string("state", alert.state.as_str())
        .string("subject", &alert.subject.to_string())
        .string("cell", alert.cell.as_deref().unwrap_or(""))
        .string("district", alert.district.as_deref().unwrap_or(""))
        .string("message", &alert.message)
        .string("id", &alert.id);
    f.end(time);
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
}
