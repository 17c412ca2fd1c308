//! The traffic measurements (CONTRACT §6) as rows: `traffic_detector`, `traffic_segment`,
//! `traffic_district` and `traffic_city`, each stamped with its window start. Only new values are written (a
//! window's retraction writes nothing; a corrected window is written again).

use crate::city::CityModel;
use crate::config::Config;
use crate::lp::RowSink;
use crate::pipeline::Out;
use crate::time::Ms;
use crate::traffic::{DistSum, FlowSum, Win, level, tpi_level};

fn flow_fields(f: &mut impl RowSink, sum: &FlowSum, win: Win) {
    f.int("count", sum.count);
    f.float("flow_vph", Some(sum.flow_vph(win)));
    f.float("occupancy", sum.occupancy());
    f.float("speed_kmh", sum.speed_kmh());
}

/// Writes the row of a traffic record inserted into the output; whether it was one.
pub fn rows(out: &Out, city: &CityModel, cfg: &Config, w: &mut impl RowSink) -> bool {
    match out {
        Out::Detector(win, sum) => {
            let det = &city.detectors[win.det as usize];
            w.measurement("traffic_detector");
            w.tag("segment", &city.segments[det.segment as usize].id);
            w.tag("sensor", &det.id);
            w.tag("window", win.win.tag());
            flow_fields(w, sum, win.win);
            w.end(win.start);
        }
        Out::Segment(win, sum) => {
            let seg = &city.segments[win.seg as usize];
            w.measurement("traffic_segment");
            w.tag("district", &city.districts[seg.district as usize].id);
            w.tag("road_class", seg.road_class.as_str());
            w.tag("segment", &seg.id);
            w.tag("window", win.win.tag());
            flow_fields(w, sum, win.win);
            w.float("tti", sum.speed_kmh().filter(|v| *v > 0.0).map(|v| seg.speed_limit_kmh / v));
            w.int("level", level(sum, seg.road_class, &cfg.traffic) as i64);
            w.end(win.start);
        }
        Out::District(win, sum) => {
            w.measurement("traffic_district");
            w.tag("district", &city.districts[win.district as usize].id);
            area_fields(win.win, win.start, sum, cfg, w);
        }
        Out::City(win, sum) => {
            w.measurement("traffic_city");
            area_fields(win.win, win.start, sum, cfg, w);
        }
        _ => return false,
    }
    true
}

/// The window tag and fields of an area (a district or the city), then the row's end.
fn area_fields(win: Win, start: Ms, sum: &DistSum, cfg: &Config, w: &mut impl RowSink) {
    w.tag("window", win.tag());
    let tpi = sum.tpi(&cfg.traffic);
    w.float("tpi", Some(tpi));
    w.int("level", tpi_level(tpi) as i64);
    w.float("speed_kmh", sum.speed_kmh());
    w.float("congested_km", Some(sum.congested_km()));
    w.end(start);
}
