//! The grid alert rules (CONTRACT §7), each a collection of alert keys present exactly while
//! its condition holds, on the city's one event-time clock. Every grid alert carries its cell,
//! so it reaches the officers of that cell (and the operations centre, which sees everything).
//!
//! * `grid.case_assigned` (info) — a case assigned and not yet taken in hand: present from the
//!   `assigned` event until the next status (in progress, resolved, closed, reopened).
//! * `grid.case_overdue` (warning) — an open case past its deadline: raised at the deadline (a
//!   timer of [`crate::grid::model`]: no further message is needed), cleared when the case is
//!   resolved or closed.
//! * `grid.sensor_threshold` (warning) — a sensor in alarm: raised by the reading that
//!   completes the persistence, cleared by the reading back on the safe side of the clear
//!   threshold (hysteresis).
//! * `grid.sensor_stale` (info) — a sensor silent for its kind's `stale_s`: raised at the
//!   instant its last reading became that old, cleared by its next reading.
//! * `grid.risk_high` (critical, escalated to the operations centre) — a cell whose risk score
//!   is at least `risk.high`.
//!
//! Each maps versions of a state to keys; the versions of one entity follow each other, and
//! the final `distinct` makes a condition that holds across versions one alert.

use crate::alerts::{AlertKey, Rule, Subject};
use crate::config::Config;
use crate::grid::CellSnapshot;
use crate::grid::events::CaseStatus;
use crate::grid::model::{Case, Sensor};
use crate::time::Ms;
use differential_dataflow::VecCollection;

fn case_key(rule: Rule, c: &Case) -> AlertKey {
    AlertKey { rule, subject: Subject::Case { id: c.id.clone(), cell: c.cell, district: c.district } }
}

fn sensor_key(rule: Rule, s: &Sensor) -> AlertKey {
    AlertKey { rule, subject: Subject::Sensor { id: s.id.clone(), cell: s.cell, district: s.district } }
}

/// Every grid alert rule over the domain's collections.
pub fn alerts<'s>(
    cases: VecCollection<'s, Ms, Case>,
    sensors: VecCollection<'s, Ms, Sensor>,
    cells: VecCollection<'s, Ms, CellSnapshot>,
    cfg: &Config,
) -> VecCollection<'s, Ms, AlertKey> {
    let assigned = cases
        .clone()
        .filter(|c| c.status == CaseStatus::Assigned)
        .map(|c| case_key(Rule::GridCaseAssigned, &c));
    let overdue = cases.filter(|c| c.is_overdue()).map(|c| case_key(Rule::GridCaseOverdue, &c));
    let threshold = sensors.clone().filter(|s| s.alarm).map(|s| sensor_key(Rule::GridSensorThreshold, &s));
    let stale = sensors.filter(|s| s.stale).map(|s| sensor_key(Rule::GridSensorStale, &s));
    let high = cfg.grid.risk.high;
    let risky = cells
        .filter(move |c| c.risk >= high)
        .map(|c| AlertKey { rule: Rule::GridRiskHigh, subject: Subject::Cell(c.cell) });
    assigned.concat(overdue).concat(threshold).concat(stale).concat(risky).distinct()
}
