//! The grid-management domain (网格化管理; CONTRACT §2, §6, §7): cases and cell sensors, the
//! `grid_cell` and `grid_district` indicators with the cell risk score, and the `grid.*` alert
//! rules, which go to the officers of the cell.
//!
//! * [`events`] — the payloads of the two topics, their validation and owned records;
//! * [`config`] — the `[grid]` section: time limits, calendar, sensor rules, risk weights;
//! * [`calendar`] — the city's local days and working days;
//! * [`model`] — a case and a sensor as of an event time (deadlines and staleness are timers);
//! * [`ingest`] — per-worker upserts on event time (the entity's owner worker);
//! * [`rules`] — the alert rules;
//! * [`measure`] — the measurement rows.
//!
//! # The indicators, and why they are exact
//! The ingest releases each case and sensor version over exactly the event-time interval it
//! held, and each closed case's [`Closed`] fact from its closing until the city's next midnight
//! ([`model`]). A cell's counts — open, amber and overdue cases, closed today with the sum of
//! their resolution times, sensors in alarm or stale, and (from the other domains) the traffic
//! incidents on its segments and the open emergency incidents in it — are then sums of
//! per-record contributions, kept by [`totals`] as exact integers, so they are right at every
//! event time whatever the arrival order or worker count. The risk score is a function of those
//! counts ([`crate::grid::config::RiskConfig`]). A district's counts are the sums of its cells',
//! again by [`totals`]; its risk is the highest of its cells' (a `reduce` over the district's
//! cells), and its mean time to resolve is the sum of resolution times over the cases closed
//! today in it, divided by their number.

pub mod calendar;
pub mod config;
pub mod events;
pub mod ingest;
pub mod measure;
pub mod model;
pub mod rules;

use crate::alerts::{AlertKey, Rule, Subject};
use crate::city::{CityModel, Idx};
use crate::config::Config;
use crate::diff::abelian_struct;
use crate::time::Ms;
use crate::totals::totals;
use differential_dataflow::VecCollection;
use differential_dataflow::input::{Input, InputSession};
use model::{Case, Closed, Light, Sensor};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use timely::dataflow::Scope;

/// The input collections of the grid dataflow (see [`ingest`]).
pub struct GridInputs {
    /// Case versions, each present over the event-time interval it held.
    pub cases: InputSession<Ms, Case, isize>,
    /// Sensor versions, likewise.
    pub sensors: InputSession<Ms, Sensor, isize>,
    /// Closed-today facts.
    pub facts: InputSession<Ms, Closed, isize>,
}

impl GridInputs {
    /// Advances every input to `t`.
    pub fn advance_to(&mut self, t: Ms) {
        self.cases.advance_to(t);
        self.sensors.advance_to(t);
        self.facts.advance_to(t);
    }

    /// Flushes buffered updates into the dataflow.
    pub fn flush(&mut self) {
        self.cases.flush();
        self.sensors.flush();
        self.facts.flush();
    }
}

/// A cell's (or a district's) counts, the difference type the totals sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GridCounts {
    /// Open cases (reported, assigned, in progress, reopened).
    pub open: i64,
    /// Open cases nearing their deadline.
    pub amber: i64,
    /// Open cases past their deadline.
    pub overdue: i64,
    /// Cases closed today (city time zone).
    pub closed_today: i64,
    /// The sum of their resolution times, ms.
    pub resolve_ms: i64,
    /// Sensors in alarm.
    pub sensor_alarms: i64,
    /// Sensors silent too long.
    pub stale_sensors: i64,
    /// Active `traffic.incident` alerts on the cell's segments.
    pub traffic_incidents: i64,
    /// Open emergency incidents in the cell.
    pub emergency_incidents: i64,
}

abelian_struct!(GridCounts {
    open,
    amber,
    overdue,
    closed_today,
    resolve_ms,
    sensor_alarms,
    stale_sensors,
    traffic_incidents,
    emergency_incidents
});

impl GridCounts {
    /// What one case version adds to its cell.
    pub fn of_case(c: &Case) -> GridCounts {
        let open = c.is_open();
        GridCounts {
            open: open as i64,
            amber: (open && c.light == Light::Amber) as i64,
            overdue: (open && c.light == Light::Red) as i64,
            ..GridCounts::default()
        }
    }

    /// What one sensor version adds to its cell.
    pub fn of_sensor(s: &Sensor) -> GridCounts {
        GridCounts { sensor_alarms: s.alarm as i64, stale_sensors: s.stale as i64, ..GridCounts::default() }
    }

    /// The mean time to resolve the cases closed today, seconds.
    pub fn mttr_s(&self) -> Option<f64> {
        (self.closed_today > 0).then(|| self.resolve_ms as f64 / 1e3 / self.closed_today as f64)
    }

    /// The risk score of a cell with these counts (see [`crate::grid::config::RiskConfig`]).
    pub fn risk(&self, w: &config::RiskConfig) -> u32 {
        let score = self.open.max(0) as u64 * w.open_case as u64
            + self.overdue.max(0) as u64 * w.overdue_case as u64
            + self.sensor_alarms.max(0) as u64 * w.sensor_alarm as u64
            + self.traffic_incidents.max(0) as u64 * w.traffic_incident as u64
            + self.emergency_incidents.max(0) as u64 * w.emergency_incident as u64;
        score.min(100) as u32
    }
}

/// A cell's indicators at an event time (`grid_cell`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CellSnapshot {
    /// Cell.
    pub cell: Idx,
    /// Counts.
    pub counts: GridCounts,
    /// Risk score, 0–100.
    pub risk: u32,
}

/// A district's indicators at an event time (`grid_district`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DistrictSnapshot {
    /// District.
    pub district: Idx,
    /// The sums of its cells' counts.
    pub counts: GridCounts,
    /// The highest risk of its cells.
    pub risk: u32,
}

/// One output record of the grid dataflow (boxed, as [`crate::emergency::EmOut`]'s are).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum GridOut {
    /// A cell's indicators (+1 new, −1 replaced or gone).
    Cell(Box<CellSnapshot>),
    /// A district's indicators.
    District(Box<DistrictSnapshot>),
    /// A case's current state (+1 / −1), for the read model.
    Case(Box<Case>),
    /// A sensor's current state (+1 / −1), for the read model and `grid_sensor`.
    Sensor(Box<Sensor>),
}

/// The outputs of the grid dataflow.
pub struct GridOutputs<'s> {
    /// Indicators and states.
    pub out: VecCollection<'s, Ms, GridOut>,
    /// Active grid alerts (a set).
    pub alerts: VecCollection<'s, Ms, AlertKey>,
}

/// A part of a district snapshot, assembled per district.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Part {
    Counts(GridCounts),
    Risk(u32),
}

/// Builds the grid dataflow in `scope`. From the other domains it takes the active traffic
/// alerts (their `traffic.incident`s count on the segment's cell) and the cells of the open
/// emergency incidents (one record per open incident).
pub fn dataflow<'s>(
    scope: Scope<'s, Ms>,
    city: Arc<CityModel>,
    cfg: Arc<Config>,
    traffic_alerts: VecCollection<'s, Ms, AlertKey>,
    emergency_cells: VecCollection<'s, Ms, Idx>,
) -> (GridInputs, GridOutputs<'s>) {
    let (cases_in, cases) = scope.new_collection::<Case, isize>();
    let (sensors_in, sensors) = scope.new_collection::<Sensor, isize>();
    let (facts_in, facts) = scope.new_collection::<Closed, isize>();

    let seg_city = city.clone();
    let traffic = traffic_alerts.flat_map(move |k: AlertKey| match k.subject {
        Subject::Lane { segment, .. } if k.rule == Rule::TrafficIncident => {
            seg_city.segments[segment as usize].cell
        }
        _ => None,
    });
    let one = |f: fn(&mut GridCounts)| {
        let mut c = GridCounts::default();
        f(&mut c);
        c
    };
    let cell_counts = totals(
        cases
            .clone()
            .explode(|c: Case| Some((c.cell, GridCounts::of_case(&c))))
            .concat(sensors.clone().explode(|s: Sensor| Some((s.cell, GridCounts::of_sensor(&s)))))
            .concat(facts.explode(|f: Closed| {
                Some((
                    f.cell,
                    GridCounts { closed_today: 1, resolve_ms: f.resolve_ms as i64, ..GridCounts::default() },
                ))
            }))
            .concat(traffic.explode(move |cell| Some((cell, one(|c| c.traffic_incidents = 1)))))
            .concat(emergency_cells.explode(move |cell| Some((cell, one(|c| c.emergency_incidents = 1))))),
    );
    let weights = cfg.grid.risk;
    let cells =
        cell_counts.map(move |(cell, counts)| CellSnapshot { cell, counts, risk: counts.risk(&weights) });

    let district_of = {
        let city = city.clone();
        move |cell: Idx| city.cells[cell as usize].district
    };
    let district_counts = totals({
        let district_of = district_of.clone();
        cells.clone().explode(move |c: CellSnapshot| Some((district_of(c.cell), c.counts)))
    });
    let districts = district_counts
        .map(|(d, c)| (d, Part::Counts(c)))
        .concat(cells.clone().map(move |c| (district_of(c.cell), Part::Risk(c.risk))))
        .reduce(|&district, input: &[(&Part, isize)], out: &mut Vec<(DistrictSnapshot, isize)>| {
            let mut snap = DistrictSnapshot { district, counts: GridCounts::default(), risk: 0 };
            for (part, _) in input {
                match part {
                    Part::Counts(c) => snap.counts = *c,
                    Part::Risk(r) => snap.risk = snap.risk.max(*r),
                }
            }
            out.push((snap, 1));
        })
        .map(|(_, snap)| GridOut::District(Box::new(snap)));

    let alerts = rules::alerts(cases.clone(), sensors.clone(), cells.clone(), &cfg);
    let out = cells
        .map(|c| GridOut::Cell(Box::new(c)))
        .concat(districts)
        .concat(cases.map(|c| GridOut::Case(Box::new(c))))
        .concat(sensors.map(|s| GridOut::Sensor(Box::new(s))));
    (GridInputs { cases: cases_in, sensors: sensors_in, facts: facts_in }, GridOutputs { out, alerts })
}
