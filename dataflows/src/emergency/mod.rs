//! The emergency domain (CONTRACT §2, §6, §7): incidents and units, the `emergency_district`
//! indicators, dispatch recommendations over the live road network (`emergency_dispatch`), and
//! the `emergency.*` alert rules.
//!
//! * [`events`] — the payloads of the two topics, their validation and owned records;
//! * [`config`] — the `[emergency]` section, with documented defaults;
//! * [`model`] — an incident or unit as of an event time, and the timed facts it implies;
//! * [`ingest`] — per-worker upserts on event time (the entity's owner worker);
//! * [`route`] — the road network, points placed on it, and ETA ranking;
//! * [`dispatch`] — the recommendation operator;
//! * [`rules`] — the alert rules;
//! * [`measure`] — the measurement rows.
//!
//! # The indicators, and why they are exact
//! The ingest releases each incident and unit version over exactly the event-time interval it
//! held ([`ingest`]). A district's counts (open incidents by type and severity, unassigned,
//! available units by type) are then sums of per-version contributions, kept by [`totals`]
//! as exact integers: at any event time they count the versions present, whatever the arrival
//! order or worker count. The interval percentiles are computed per (district, interval) by a
//! `reduce` over the samples present — each sample is present for the 60 minutes after the
//! event that completes it — as nearest-rank over the sorted multiset (p50 of 10 samples is the
//! 5th smallest), which is what a sorted list gives. One more `reduce` per district assembles
//! the snapshot that `emergency_district` writes whenever it changes.

pub mod config;
pub mod dispatch;
pub mod events;
pub mod ingest;
pub mod measure;
pub mod model;
pub mod route;
pub mod rules;

use crate::alerts::AlertKey;
use crate::city::{CityModel, Idx};
use crate::config::Config;
use crate::diff::abelian_struct;
use crate::event::{IncidentType, UnitStatus, UnitType};
use crate::time::Ms;
use crate::totals::totals;
use crate::traffic::{FlowSum, SegWin};
use differential_dataflow::VecCollection;
use differential_dataflow::input::{Input, InputSession};
use model::{Fact, FactKind, Incident, Interval, Unit};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use timely::dataflow::Scope;

pub use dispatch::Recommendation;

/// The input collections of the emergency dataflow (see [`ingest`]).
pub struct EmergencyInputs {
    /// Incident versions, each present over the event-time interval it held.
    pub incidents: InputSession<Ms, Incident, isize>,
    /// Unit versions, likewise.
    pub units: InputSession<Ms, Unit, isize>,
    /// Timed facts: interval samples and reports.
    pub facts: InputSession<Ms, Fact, isize>,
}

impl EmergencyInputs {
    /// Advances every input to `t`.
    pub fn advance_to(&mut self, t: Ms) {
        self.incidents.advance_to(t);
        self.units.advance_to(t);
        self.facts.advance_to(t);
    }

    /// Flushes buffered updates into the dataflow.
    pub fn flush(&mut self) {
        self.incidents.flush();
        self.units.flush();
        self.facts.flush();
    }
}

/// A district's counts, the difference type the district totals sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct EmCounts {
    pub open: i64,
    pub open_fire: i64,
    pub open_medical: i64,
    pub open_police: i64,
    pub open_traffic: i64,
    pub open_sev1_2: i64,
    pub unassigned: i64,
    pub available: i64,
    pub available_fire_engine: i64,
    pub available_ambulance: i64,
    pub available_police: i64,
}

abelian_struct!(EmCounts {
    open,
    open_fire,
    open_medical,
    open_police,
    open_traffic,
    open_sev1_2,
    unassigned,
    available,
    available_fire_engine,
    available_ambulance,
    available_police
});

impl EmCounts {
    /// What one incident version adds to its district.
    pub fn of_incident(i: &Incident) -> EmCounts {
        let mut c = EmCounts::default();
        if i.is_open() {
            c.open = 1;
            match i.kind {
                IncidentType::Fire => c.open_fire = 1,
                IncidentType::Medical => c.open_medical = 1,
                IncidentType::Police => c.open_police = 1,
                IncidentType::Traffic => c.open_traffic = 1,
            }
            c.open_sev1_2 = (i.severity <= 2) as i64;
            c.unassigned = i.is_unassigned() as i64;
        }
        c
    }

    /// What one unit version adds to the district it is in.
    pub fn of_unit(u: &Unit) -> EmCounts {
        let mut c = EmCounts::default();
        if u.status == UnitStatus::Available {
            c.available = 1;
            match u.kind {
                UnitType::FireEngine => c.available_fire_engine = 1,
                UnitType::Ambulance => c.available_ambulance = 1,
                UnitType::Police => c.available_police = 1,
            }
        }
        c
    }
}

/// A district's emergency indicators at an event time (`emergency_district`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DistrictSnapshot {
    /// District.
    pub district: Idx,
    /// Counts.
    pub counts: EmCounts,
    /// Per interval ([`Interval::ALL`] order): (p50, p90) in ms over the sliding hour, when it
    /// holds samples.
    pub pct: [Option<(Ms, Ms)>; 4],
}

/// One output record of the emergency dataflow. The payloads are boxed: [`crate::pipeline::Out`]
/// holds one of these beside the small traffic records, and a large variant would make every
/// traffic record as large.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EmOut {
    /// A district's indicators (+1 new, −1 replaced or gone).
    District(Box<DistrictSnapshot>),
    /// An incident's current state (+1 / −1), for the read model.
    Incident(Box<Incident>),
    /// A unit's current state (+1 / −1), for the read model.
    Unit(Box<Unit>),
    /// A change of a recommendation (insertions only: the audit of what was recommended when).
    Dispatch(Box<Recommendation>),
}

/// The outputs of the emergency dataflow.
pub struct EmergencyOutputs<'s> {
    /// Indicators, states and recommendations.
    pub out: VecCollection<'s, Ms, EmOut>,
    /// Active emergency alerts (a set).
    pub alerts: VecCollection<'s, Ms, AlertKey>,
}

/// A part of a district snapshot, assembled per district.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Part {
    Counts(EmCounts),
    Pct(Interval, Ms, Ms),
}

/// The nearest-rank percentile `q` (0..1] of `n` sorted samples given as (value, count) runs.
pub fn nearest_rank(sorted: impl IntoIterator<Item = (Ms, isize)>, n: isize, q: f64) -> Option<Ms> {
    if n <= 0 {
        return None;
    }
    let rank = ((q * n as f64).ceil() as isize).clamp(1, n);
    let mut seen = 0;
    for (v, c) in sorted {
        seen += c;
        if seen >= rank {
            return Some(v);
        }
    }
    None
}

/// Builds the emergency dataflow in `scope`; `segments` are the traffic dataflow's segment
/// window totals (the live speeds dispatch routes on).
pub fn dataflow<'s>(
    scope: Scope<'s, Ms>,
    city: Arc<CityModel>,
    cfg: Arc<Config>,
    segments: VecCollection<'s, Ms, (SegWin, FlowSum)>,
) -> (EmergencyInputs, EmergencyOutputs<'s>) {
    let (incidents_in, incidents) = scope.new_collection::<Incident, isize>();
    let (units_in, units) = scope.new_collection::<Unit, isize>();
    let (facts_in, facts) = scope.new_collection::<Fact, isize>();

    let counts = totals(
        incidents
            .clone()
            .explode(|i: Incident| i.district.map(|d| (d, EmCounts::of_incident(&i))))
            .concat(units.clone().explode(|u: Unit| u.district.map(|d| (d, EmCounts::of_unit(&u))))),
    );
    let pcts = facts
        .clone()
        .flat_map(|f: Fact| match f.what {
            FactKind::Sample(kind, value) => Some(((f.district, kind), value)),
            FactKind::Report => None,
        })
        .reduce(|_key, input: &[(&Ms, isize)], out: &mut Vec<((Ms, Ms), isize)>| {
            let n: isize = input.iter().map(|(_, c)| *c).sum();
            let runs = || input.iter().map(|(v, c)| (**v, *c));
            if let (Some(p50), Some(p90)) = (nearest_rank(runs(), n, 0.5), nearest_rank(runs(), n, 0.9)) {
                out.push(((p50, p90), 1));
            }
        });
    let districts = counts
        .map(|(d, c)| (d, Part::Counts(c)))
        .concat(pcts.map(|((d, kind), (p50, p90))| (d, Part::Pct(kind, p50, p90))))
        .reduce(|&district, input: &[(&Part, isize)], out: &mut Vec<(DistrictSnapshot, isize)>| {
            let mut snap = DistrictSnapshot { district, counts: EmCounts::default(), pct: [None; 4] };
            for (part, _) in input {
                match part {
                    Part::Counts(c) => snap.counts = *c,
                    Part::Pct(kind, a, b) => snap.pct[*kind as usize] = Some((*a, *b)),
                }
            }
            out.push((snap, 1));
        })
        .map(|(_, snap)| EmOut::District(Box::new(snap)));

    let recommendations =
        dispatch::recommend(incidents.clone(), units.clone(), segments, city.clone(), cfg.clone());
    let alerts = rules::alerts(incidents.clone(), units.clone(), facts, &cfg);
    let out = districts
        .concat(incidents.map(|i| EmOut::Incident(Box::new(i))))
        .concat(units.map(|u| EmOut::Unit(Box::new(u))))
        .concat(recommendations.map(|r| EmOut::Dispatch(Box::new(r))));
    (
        EmergencyInputs { incidents: incidents_in, units: units_in, facts: facts_in },
        EmergencyOutputs { out, alerts },
    )
}
