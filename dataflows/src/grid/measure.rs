//! The grid measurements (CONTRACT §6) as rows, stamped with the event time at which they were
//! evaluated:
//!
//! * `grid_cell` — a cell's indicators whenever they change (the contract's fields, and
//!   `amber_cases`, `stale_sensors`, `traffic_incidents`, `emergency_incidents`, `mttr_s`);
//! * `grid_district` — a district's, likewise (and `amber_cases`, `sensor_alarms`);
//! * `grid_sensor` — every reading of a cell sensor with its alarm and stale flags (an
//!   extension of the contract: readings are stored and charted, with or without a rule).
//!
//! When a cell's or district's indicators vanish altogether a row of zeros is written, so the
//! latest point is never stale.

use crate::city::CityModel;
use crate::grid::{CellSnapshot, DistrictSnapshot, GridCounts, GridOut};
use crate::lp::RowSink;
use crate::pipeline::Out;
use crate::time::Ms;
use std::collections::BTreeSet;

/// Writes the rows of the grid records of one consolidated batch of time `t`; returns the
/// number written.
pub fn rows(t: Ms, batch: &[(Out, isize)], city: &CityModel, w: &mut impl RowSink) -> u64 {
    let mut refreshed_cells = BTreeSet::new();
    let mut refreshed_districts = BTreeSet::new();
    for (o, d) in batch {
        match o {
            Out::Grid(GridOut::Cell(c)) if *d > 0 => drop(refreshed_cells.insert(c.cell)),
            Out::Grid(GridOut::District(s)) if *d > 0 => drop(refreshed_districts.insert(s.district)),
            _ => {}
        }
    }
    let mut points = 0;
    for (out, diff) in batch {
        let Out::Grid(g) = out else { continue };
        match g {
            GridOut::Cell(c) if *diff > 0 => cell_row(t, c, city, w),
            GridOut::Cell(c) if !refreshed_cells.contains(&c.cell) => {
                cell_row(t, &CellSnapshot { cell: c.cell, counts: GridCounts::default(), risk: 0 }, city, w)
            }
            GridOut::District(s) if *diff > 0 => district_row(t, s, city, w),
            GridOut::District(s) if !refreshed_districts.contains(&s.district) => {
                let zero = DistrictSnapshot { district: s.district, counts: GridCounts::default(), risk: 0 };
                district_row(t, &zero, city, w)
            }
            GridOut::Sensor(s) if *diff > 0 => {
                w.measurement("grid_sensor");
                w.tag("cell", &city.cells[s.cell as usize].id);
                w.tag("district", &city.districts[s.district as usize].id);
                w.tag("kind", &s.kind);
                w.tag("sensor", &s.id);
                w.float("value", Some(s.value()));
                w.int("alarm", s.alarm as i64);
                w.int("stale", s.stale as i64);
                w.end(t);
            }
            _ => continue,
        }
        points += 1;
    }
    points
}

fn cell_row(t: Ms, s: &CellSnapshot, city: &CityModel, w: &mut impl RowSink) {
    let cell = &city.cells[s.cell as usize];
    let c = &s.counts;
    w.measurement("grid_cell");
    w.tag("cell", &cell.id);
    w.tag("district", &city.districts[cell.district as usize].id);
    w.int("open_cases", c.open);
    w.int("overdue_cases", c.overdue);
    w.int("closed_today", c.closed_today);
    w.int("sensor_alarms", c.sensor_alarms);
    w.int("risk", s.risk as i64);
    w.int("amber_cases", c.amber);
    w.int("stale_sensors", c.stale_sensors);
    w.int("traffic_incidents", c.traffic_incidents);
    w.int("emergency_incidents", c.emergency_incidents);
    w.float("mttr_s", c.mttr_s());
    w.end(t);
}

fn district_row(t: Ms, s: &DistrictSnapshot, city: &CityModel, w: &mut impl RowSink) {
    let c = &s.counts;
    w.measurement("grid_district");
    w.tag("district", &city.districts[s.district as usize].id);
    w.int("open_cases", c.open);
    w.int("overdue_cases", c.overdue);
    w.int("closed_today", c.closed_today);
    w.float("mttr_s", c.mttr_s());
    w.int("risk", s.risk as i64);
    w.int("amber_cases", c.amber);
    w.int("sensor_alarms", c.sensor_alarms);
    w.end(t);
}
