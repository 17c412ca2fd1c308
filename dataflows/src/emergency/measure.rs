//! The emergency measurements (CONTRACT §6) as rows, stamped with the event time at which they
//! were evaluated:
//!
//! * `emergency_district` — a district's indicators whenever they change. When a district's
//!   indicators vanish altogether (its last open incident left, no unit is in it, no sample is
//!   in the hour) a row of zeros is written, so the latest point is never stale.
//! * `emergency_dispatch` — every change of a recommendation; a withdrawn rank writes a row
//!   with an empty `unit`, so the latest point of a series is never a stale recommendation.

use crate::city::CityModel;
use crate::emergency::model::Interval;
use crate::emergency::{DistrictSnapshot, EmCounts, EmOut};
use crate::lp::RowSink;
use crate::pipeline::Out;
use crate::time::Ms;
use std::collections::BTreeSet;

/// Writes the rows of the emergency records of one consolidated batch of time `t`; returns the
/// number written.
pub fn rows(t: Ms, batch: &[(Out, isize)], city: &CityModel, w: &mut impl RowSink) -> u64 {
    let mut points = 0;
    let refreshed: BTreeSet<u32> = batch
        .iter()
        .filter_map(|(o, d)| match o {
            Out::Emergency(EmOut::District(s)) if *d > 0 => Some(s.district),
            _ => None,
        })
        .collect();
    for (out, diff) in batch {
        let Out::Emergency(e) = out else { continue };
        match e {
            EmOut::District(s) if *diff > 0 => district_row(t, s, city, w),
            EmOut::District(s) if !refreshed.contains(&s.district) => {
                let zero =
                    DistrictSnapshot { district: s.district, counts: EmCounts::default(), pct: [None; 4] };
                district_row(t, &zero, city, w)
            }
            EmOut::Dispatch(r) if *diff > 0 => {
                w.measurement("emergency_dispatch");
                w.tag("incident", &r.incident);
                w.tag("rank", itoa::Buffer::new().format(r.rank));
                w.string("unit", r.unit.as_deref().unwrap_or(""));
                w.string("unit_type", r.unit_type.map_or("", |u| u.as_str()));
                w.float("eta_s", r.unit.as_ref().map(|_| r.eta_ms as f64 / 1e3));
                w.float("distance_m", r.unit.as_ref().map(|_| r.distance_dm as f64 / 10.0));
                w.end(t);
            }
            _ => continue,
        }
        points += 1;
    }
    points
}

fn district_row(t: Ms, s: &DistrictSnapshot, city: &CityModel, w: &mut impl RowSink) {
    let c = &s.counts;
    w.measurement("emergency_district");
    w.tag("district", &city.districts[s.district as usize].id);
    w.int("open_incidents", c.open);
    w.int("open_fire", c.open_fire);
    w.int("open_medical", c.open_medical);
    w.int("open_police", c.open_police);
    w.int("open_traffic", c.open_traffic);
    w.int("open_sev1_2", c.open_sev1_2);
    w.int("unassigned", c.unassigned);
    w.int("available_units", c.available);
    w.int("available_fire_engine", c.available_fire_engine);
    w.int("available_ambulance", c.available_ambulance);
    w.int("available_police", c.available_police);
    for kind in Interval::ALL {
        if let Some((p50, p90)) = s.pct[kind as usize] {
            w.float(&format!("{}_p50_s", kind.name()), Some(p50 as f64 / 1e3));
            w.float(&format!("{}_p90_s", kind.name()), Some(p90 as f64 / 1e3));
        }
    }
    w.end(t);
}
