//! The emergency domain's state records: an incident or a unit *as of* an event time (the fold
//! of its events up to then), and the timed facts (reports and NFPA 1710 interval samples) the
//! indicators count.
//!
//! # Why state is a fold by event time
//! An incident's events may arrive in any order (on_scene before en_route). Its state at time
//! `t` is therefore computed from *all* its events stamped at or before `t`, ordered by event
//! time — never from arrival order: each milestone is the earliest event of that status, the
//! current status is the latest event's (a closed incident stays closed), and the type,
//! severity, place and unit are the latest that were reported. Re-folding after a late event
//! gives exactly the state a timely delivery would have given. Units are simpler: a report
//! replaces the previous one, so a unit's state is its latest report by event time.

use crate::city::{CityModel, Idx};
use crate::emergency::events::{IncidentRecord, Pos, UnitRecord};
use crate::event::{IncidentStatus, IncidentType, UnitStatus, UnitType};
use crate::time::Ms;
use serde::{Deserialize, Serialize};

/// An incident as of some event time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Incident {
    /// Incident id.
    pub id: String,
    /// Type.
    pub kind: IncidentType,
    /// Severity, 1 = highest (3 when never reported).
    pub severity: u8,
    /// Current status.
    pub status: IncidentStatus,
    /// Where it is.
    pub pos: Option<Pos>,
    /// District holding it.
    pub district: Option<Idx>,
    /// Grid cell holding it.
    pub cell: Option<Idx>,
    /// When it was reported (its first event when no `reported` came).
    pub reported: Ms,
    /// First dispatch.
    pub dispatched: Option<Ms>,
    /// First unit en route.
    pub en_route: Option<Ms>,
    /// First unit on scene.
    pub on_scene: Option<Ms>,
    /// When it was cleared or cancelled.
    pub closed: Option<Ms>,
    /// The unit assigned (latest reported).
    pub unit: Option<String>,
}

/// The default severity of an incident reported without one.
pub const DEFAULT_SEVERITY: u8 = 3;

impl Incident {
    /// The state of an incident after `events` (sorted by `(ts, status)`), or `None` without
    /// events.
    pub fn fold<'a>(
        city: &CityModel,
        events: impl IntoIterator<Item = &'a IncidentRecord>,
    ) -> Option<Incident> {
        let mut it = events.into_iter();
        let first = it.next()?;
        let mut inc = Incident {
            id: first.id.clone(),
            kind: first.kind,
            severity: DEFAULT_SEVERITY,
            status: first.status,
            pos: None,
            district: None,
            cell: None,
            reported: first.ts,
            dispatched: None,
            en_route: None,
            on_scene: None,
            closed: None,
            unit: None,
        };
        let mut reported = None;
        let mut closing = None;
        for e in std::iter::once(first).chain(it) {
            inc.kind = e.kind;
            if let Some(s) = e.severity {
                inc.severity = s;
            }
            if e.pos.is_some() {
                inc.pos = e.pos;
            }
            if e.unit.is_some() {
                inc.unit.clone_from(&e.unit);
            }
            let first_of = |m: &mut Option<Ms>| *m = Some(m.map_or(e.ts, |x| x.min(e.ts)));
            match e.status {
                IncidentStatus::Reported => first_of(&mut reported),
                IncidentStatus::Dispatched => first_of(&mut inc.dispatched),
                IncidentStatus::EnRoute => first_of(&mut inc.en_route),
                IncidentStatus::OnScene => first_of(&mut inc.on_scene),
                IncidentStatus::Cleared | IncidentStatus::Cancelled => first_of(&mut inc.closed),
            }
            if closing.is_none() && matches!(e.status, IncidentStatus::Cleared | IncidentStatus::Cancelled) {
                closing = Some(e.status);
            }
            inc.status = closing.unwrap_or(e.status);
        }
        if let Some(r) = reported {
            inc.reported = r;
        }
        if let Some(p) = inc.pos {
            let (cell, district) = city.place(p.lon(), p.lat());
            inc.cell = cell;
            inc.district = district;
        }
        Some(inc)
    }

    /// Whether the incident is open (not cleared or cancelled).
    pub fn is_open(&self) -> bool {
        self.closed.is_none()
    }

    /// Whether it is open and no unit has been dispatched.
    pub fn is_unassigned(&self) -> bool {
        self.is_open() && self.dispatched.is_none() && self.unit.is_none()
    }

    /// The interval samples this state completes, with the event time that completes each
    /// (CONTRACT §6: call, turnout, travel, response).
    pub fn samples(&self) -> Vec<(Interval, Ms, Ms)> {
        let mut out = Vec::new();
        let mut add = |kind, from: Option<Ms>, to: Option<Ms>| {
            if let (Some(a), Some(b)) = (from, to)
                && b >= a
            {
                out.push((kind, b - a, b));
            }
        };
        add(Interval::Call, Some(self.reported), self.dispatched);
        add(Interval::Turnout, self.dispatched, self.en_route);
        add(Interval::Travel, self.en_route, self.on_scene);
        add(Interval::Response, Some(self.reported), self.on_scene);
        out
    }
}

/// A unit as of some event time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Unit {
    /// Unit id.
    pub id: String,
    /// Type.
    pub kind: UnitType,
    /// Status.
    pub status: UnitStatus,
    /// Reported position, if any.
    pub pos: Option<Pos>,
    /// Home station.
    pub station: Option<Idx>,
    /// District it is in: of its position, else of its station.
    pub district: Option<Idx>,
    /// District of its home station (the district it covers).
    pub home: Option<Idx>,
    /// The incident it is assigned to.
    pub incident: Option<String>,
    /// The event time of the report.
    pub ts: Ms,
}

impl Unit {
    /// The state of a unit after its latest report `last`; a report without a position or a
    /// station keeps the ones reported before (`prev`).
    pub fn of(city: &CityModel, last: &UnitRecord, prev: Option<&Unit>) -> Unit {
        let station = last.station.or(prev.and_then(|p| p.station));
        let pos = last.pos.or(prev.and_then(|p| p.pos));
        let home = station.map(|s| city.stations[s as usize].district);
        let district = pos.and_then(|p| city.place(p.lon(), p.lat()).1).or(home);
        Unit {
            id: last.id.clone(),
            kind: last.kind,
            status: last.status,
            pos,
            station,
            district,
            home,
            incident: last.incident.clone(),
            ts: last.ts,
        }
    }

    /// Where it is for routing: its position, else its station's.
    pub fn location(&self, city: &CityModel) -> Option<(f64, f64)> {
        match (self.pos, self.station) {
            (Some(p), _) => Some((p.lon(), p.lat())),
            (None, Some(s)) => {
                let l = city.stations[s as usize].location;
                Some((l.x(), l.y()))
            }
            _ => None,
        }
    }
}

/// The NFPA 1710 intervals of CONTRACT §6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Interval {
    /// Reported → dispatched.
    Call,
    /// Dispatched → en route.
    Turnout,
    /// En route → on scene.
    Travel,
    /// Reported → on scene.
    Response,
}

impl Interval {
    /// All four, in field order.
    pub const ALL: [Interval; 4] = [Interval::Call, Interval::Turnout, Interval::Travel, Interval::Response];

    /// The field-name prefix (`call`, `turnout`, `travel`, `response`).
    pub fn name(self) -> &'static str {
        match self {
            Interval::Call => "call",
            Interval::Turnout => "turnout",
            Interval::Travel => "travel",
            Interval::Response => "response",
        }
    }
}

/// A timed fact of an incident in its district, present for a fixed time after it happened.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Fact {
    /// District.
    pub district: Idx,
    /// What happened.
    pub what: FactKind,
    /// When it happened (the event that completes it).
    pub at: Ms,
    /// The incident.
    pub incident: String,
}

/// What a [`Fact`] records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FactKind {
    /// An interval sample of this many ms (in the sliding hour for 60 minutes).
    Sample(Interval, Ms),
    /// The incident was reported (counted by `emergency.surge`).
    Report,
}
