//! A grid case and a cell sensor as of an event time: the [`Model`]s the grid ingest folds
//! their events with ([`crate::upsert`]).
//!
//! # Cases
//! A case's clock starts at its first event (normally `reported`) and restarts when it is
//! `reopened`. Its deadline is its category's time limit from then ([`GridConfig::limit`], on
//! the working-day [`Calendar`]); it is amber from `amber_share` of the limit. While the case is
//! open (reported, assigned, in progress, reopened) its light is green, amber or red by the event
//! time alone — the deadline is a timer, so a case turns overdue when the city's clock passes it,
//! with no further message. A resolved or closed case keeps the light it had when it was
//! resolved. A closed case leaves `closed_grace_s` after closing, and implies a [`Closed`] fact
//! (for `closed_today` and the mean time to resolve) until the city's next midnight.
//!
//! # Sensors
//! A reading at or beyond its kind's `raise` threshold extends a run; the alarm is raised by the
//! reading that makes the run `persist_n` readings long *and* `persist_s` seconds long, and
//! cleared by the first reading at or on the safe side of `clear` (hysteresis: readings between
//! the two thresholds change nothing while in alarm, and break a run while not). A sensor whose
//! last reading is `stale_s` old is stale, until its next reading. A kind with no rule has
//! neither alarm nor staleness.

use crate::city::{CityModel, Idx};
use crate::grid::calendar::Calendar;
use crate::grid::config::{GridConfig, SensorRule};
use crate::grid::events::{CaseRecord, CaseSource, CaseStatus, SensorRecord};
use crate::time::{Ms, SECOND};
use crate::upsert::Model;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A case's traffic light against its deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Light {
    /// Within the first `amber_share` of its limit.
    Green,
    /// Nearing its deadline (黄灯).
    Amber,
    /// Past its deadline: overdue (红灯).
    Red,
}

impl Light {
    /// The name the API and measurements use.
    pub fn as_str(self) -> &'static str {
        match self {
            Light::Green => "green",
            Light::Amber => "amber",
            Light::Red => "red",
        }
    }
}

/// A case as of an event time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Case {
    /// Case id.
    pub id: String,
    /// Cell.
    pub cell: Idx,
    /// District (the cell's).
    pub district: Idx,
    /// Category.
    pub category: String,
    /// Current status.
    pub status: CaseStatus,
    /// The officer handling it.
    pub officer: Option<String>,
    /// Where it came from.
    pub source: Option<CaseSource>,
    /// First report, epoch ms.
    pub reported: Ms,
    /// When it turns amber.
    pub amber_at: Ms,
    /// Its deadline.
    pub deadline: Ms,
    /// Green, amber or red (see module docs).
    pub light: Light,
    /// When it was last resolved.
    pub resolved: Option<Ms>,
    /// When it was closed.
    pub closed: Option<Ms>,
    /// Its last event.
    pub updated: Ms,
}

impl Case {
    /// Whether it is still to be worked.
    pub fn is_open(&self) -> bool {
        self.status.is_open()
    }

    /// Whether it is open and past its deadline.
    pub fn is_overdue(&self) -> bool {
        self.is_open() && self.light == Light::Red
    }
}

/// A closed case, counted in `closed_today` of its cell until the city's next midnight.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Closed {
    /// Cell.
    pub cell: Idx,
    /// Case id.
    pub case: String,
    /// From its first report to its (last) resolution, ms.
    pub resolve_ms: Ms,
}

/// The fold of a case's events.
#[derive(Clone, Debug)]
pub struct CaseAcc {
    case: Case,
    clock_from: Ms,
}

/// How cases fold (see module docs).
pub struct CaseModel {
    city: Arc<CityModel>,
    cfg: GridConfig,
    calendar: Calendar,
}

impl CaseModel {
    /// The case model of a city with its grid settings and calendar.
    pub fn new(city: Arc<CityModel>, cfg: GridConfig, calendar: Calendar) -> Self {
        CaseModel { city, cfg, calendar }
    }

    fn light(&self, c: &Case, t: Ms) -> Light {
        if t >= c.deadline {
            Light::Red
        } else if t >= c.amber_at {
            Light::Amber
        } else {
            Light::Green
        }
    }

    fn restart(&self, acc: &mut CaseAcc, from: Ms) {
        let limit = self.cfg.limit(&acc.case.category);
        acc.clock_from = from;
        acc.case.amber_at = self.calendar.after(from, limit, self.cfg.amber_share);
        acc.case.deadline = self.calendar.after(from, limit, 1.0);
    }
}

impl Model for CaseModel {
    type Sub = CaseStatus;
    type Event = CaseRecord;
    type Acc = CaseAcc;
    type State = Case;
    type Fact = Closed;

    fn key(e: &CaseRecord) -> (Ms, CaseStatus) {
        (e.ts, e.status)
    }

    fn step(&self, acc: &mut Option<CaseAcc>, e: &CaseRecord) {
        let district = self.city.cells[e.cell as usize].district;
        let a = acc.get_or_insert_with(|| CaseAcc {
            case: Case {
                id: e.id.clone(),
                cell: e.cell,
                district,
                category: e.category.clone(),
                status: e.status,
                officer: None,
                source: None,
                reported: e.ts,
                amber_at: Ms::MAX,
                deadline: Ms::MAX,
                light: Light::Green,
                resolved: None,
                closed: None,
                updated: e.ts,
            },
            clock_from: e.ts,
        });
        let category_changed = a.case.category != e.category;
        let c = &mut a.case;
        c.cell = e.cell;
        c.district = district;
        c.category = e.category.clone();
        c.status = e.status;
        c.officer = e.officer.clone().or(c.officer.take());
        c.source = c.source.or(e.source);
        c.updated = e.ts;
        match e.status {
            CaseStatus::Resolved => c.resolved = Some(e.ts),
            CaseStatus::Closed => {
                c.closed = Some(e.ts);
                c.resolved = c.resolved.or(Some(e.ts));
            }
            _ => {
                c.closed = None;
                c.resolved = None;
            }
        }
        if e.status == CaseStatus::Reopened {
            self.restart(a, e.ts);
        } else if category_changed || a.case.deadline == Ms::MAX {
            self.restart(a, a.clock_from);
        }
    }

    fn state(&self, acc: &CaseAcc, t: Ms) -> Option<Case> {
        let c = &acc.case;
        if c.closed.is_some_and(|closed| closed + self.cfg.grace_ms() <= t) {
            return None;
        }
        let mut case = c.clone();
        case.light = self.light(c, if c.is_open() { t } else { c.resolved.unwrap_or(t) });
        Some(case)
    }

    fn timers(&self, acc: &CaseAcc, out: &mut Vec<Ms>) {
        let c = &acc.case;
        if c.is_open() {
            out.extend([c.amber_at, c.deadline]);
        }
        if let Some(closed) = c.closed {
            out.push(closed + self.cfg.grace_ms());
        }
    }

    fn facts(&self, acc: &CaseAcc, out: &mut Vec<(Closed, Ms)>) {
        let c = &acc.case;
        if let Some(closed) = c.closed {
            let resolve_ms = c.resolved.unwrap_or(closed).saturating_sub(c.reported);
            out.push((
                Closed { cell: c.cell, case: c.id.clone(), resolve_ms },
                self.calendar.next_midnight(closed),
            ));
        }
    }
}

/// A cell sensor as of an event time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Sensor {
    /// Sensor id.
    pub id: String,
    /// What it measures.
    pub kind: String,
    /// Cell.
    pub cell: Idx,
    /// District (the cell's).
    pub district: Idx,
    /// Its last reading (the bits of the `f64`).
    pub value_bits: u64,
    /// When it was taken.
    pub at: Ms,
    /// Whether it is in alarm (`grid.sensor_threshold`).
    pub alarm: bool,
    /// Since when (the reading that completed the persistence).
    pub alarm_since: Option<Ms>,
    /// Whether it has been silent too long (`grid.sensor_stale`).
    pub stale: bool,
}

impl Sensor {
    /// Its last reading.
    pub fn value(&self) -> f64 {
        f64::from_bits(self.value_bits)
    }
}

/// The fold of a sensor's readings.
#[derive(Clone, Debug)]
pub struct SensorAcc {
    sensor: Sensor,
    run_n: u32,
    run_from: Option<Ms>,
}

/// How cell sensors fold (see module docs).
pub struct SensorModel {
    city: Arc<CityModel>,
    rules: BTreeMap<String, SensorRule>,
}

impl SensorModel {
    /// The sensor model of a city with the rules per kind.
    pub fn new(city: Arc<CityModel>, rules: BTreeMap<String, SensorRule>) -> Self {
        SensorModel { city, rules }
    }
}

impl Model for SensorModel {
    type Sub = ();
    type Event = SensorRecord;
    type Acc = SensorAcc;
    type State = Sensor;
    /// Sensors imply no facts; they share the cases' fact input.
    type Fact = Closed;

    fn key(e: &SensorRecord) -> (Ms, ()) {
        (e.ts, ())
    }

    fn step(&self, acc: &mut Option<SensorAcc>, e: &SensorRecord) {
        let district = self.city.cells[e.cell as usize].district;
        let a = acc.get_or_insert_with(|| SensorAcc {
            sensor: Sensor {
                id: e.id.clone(),
                kind: e.kind.clone(),
                cell: e.cell,
                district,
                value_bits: e.value_bits,
                at: e.ts,
                alarm: false,
                alarm_since: None,
                stale: false,
            },
            run_n: 0,
            run_from: None,
        });
        if a.sensor.kind != e.kind {
            // A sensor that changes kind starts afresh.
            (a.sensor.alarm, a.sensor.alarm_since, a.run_n, a.run_from) = (false, None, 0, None);
        }
        let s = &mut a.sensor;
        (s.kind, s.cell, s.district, s.value_bits, s.at) =
            (e.kind.clone(), e.cell, district, e.value_bits, e.ts);
        let Some(rule) = self.rules.get(&e.kind) else { return };
        let v = e.value();
        if s.alarm {
            if rule.cleared(v) {
                (s.alarm, s.alarm_since, a.run_n, a.run_from) = (false, None, 0, None);
            }
        } else if rule.beyond(v) {
            a.run_n += 1;
            let from = *a.run_from.get_or_insert(e.ts);
            if a.run_n >= rule.persist_n && e.ts - from >= rule.persist_s * SECOND {
                (s.alarm, s.alarm_since) = (true, Some(e.ts));
            }
        } else {
            (a.run_n, a.run_from) = (0, None);
        }
    }

    fn state(&self, acc: &SensorAcc, t: Ms) -> Option<Sensor> {
        let mut s = acc.sensor.clone();
        s.stale = self.rules.get(&s.kind).is_some_and(|r| r.stale_s > 0 && t >= s.at + r.stale_s * SECOND);
        Some(s)
    }

    fn timers(&self, acc: &SensorAcc, out: &mut Vec<Ms>) {
        if let Some(r) = self.rules.get(&acc.sensor.kind).filter(|r| r.stale_s > 0) {
            out.push(acc.sensor.at + r.stale_s * SECOND);
        }
    }

    fn facts(&self, _acc: &SensorAcc, _out: &mut Vec<(Closed, Ms)>) {}
}
