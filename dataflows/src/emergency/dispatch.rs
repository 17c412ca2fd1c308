//! Dispatch recommendations: for every open, unassigned incident, the best `k` eligible units
//! of the suited type, ranked by their estimated time of arrival over the road network at the
//! live segment speeds ([`crate::emergency::route`]).
//!
//! # The operator, and why its output does not depend on workers or batching
//! Recommendations need every unit and every segment speed at once, so the inputs — incident
//! versions (open, unassigned, placed), unit versions (eligible) and the live speeds — are
//! gathered on one worker. There, as in [`crate::totals`], updates are held per event time
//! until the input frontier has passed it, then applied in increasing time, each time's updates
//! consolidated first. State after each time is therefore a function of the collections' contents
//! at that time alone; recommendations are recomputed for the incidents whose inputs changed (a
//! new or changed incident; every incident of a unit's type when a unit changed; every incident
//! when speeds changed) and compared with what was last recommended. Every rank whose
//! recommendation changed is emitted at that time as a [`Recommendation`] — an insertion, never
//! retracted: the audit `emergency_dispatch` is written from (a rank withdrawn, because the
//! incident was assigned or closed or fewer units qualify, is a record without a unit).
//!
//! Live speeds: a segment's latest closed 5-minute window with a speed is its live speed for
//! `speed_fresh_s` after the window ends (it is *present* over that span, [`during`]); elsewhere
//! the free-flow speed (limit × `free_flow_factor`) applies. Speeds below `min_speed_kmh` count
//! as that.

use crate::city::{CityModel, Idx};
use crate::config::Config;
use crate::emergency::model::{Incident, Unit};
use crate::emergency::route::{Placement, Ranker, RoadGraph, UnitAt};
use crate::event::UnitType;
use crate::time::{Ms, SECOND};
use crate::traffic::{FlowSum, SegWin, Win};
use crate::windows::during;
use differential_dataflow::consolidation::consolidate;
use differential_dataflow::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Capability, Operator};

/// One change of a recommendation: rank `rank` (1 = best) of `incident` is now `unit` — or
/// nothing any more (`unit: None`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Recommendation {
    /// Incident id.
    pub incident: String,
    /// Rank, 1 = best.
    pub rank: u32,
    /// The unit, or `None` when the rank was withdrawn.
    pub unit: Option<String>,
    /// Its type.
    pub unit_type: Option<UnitType>,
    /// Estimated time of arrival, ms.
    pub eta_ms: u64,
    /// Route length, decimetres (integer, so the record is ordered).
    pub distance_dm: u64,
}

/// What the operator takes in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum In {
    /// A segment's live speed (0.001 km/h) from the window starting at `start`.
    Speed(Idx, Ms, i64),
    Unit(Unit),
    Incident(Incident),
}

/// The held updates of one time.
type Held = (Capability<Ms>, Vec<(In, isize)>);

/// Recommendations for the open, unassigned incidents (see the module docs).
pub fn recommend<'s>(
    incidents: VecCollection<'s, Ms, Incident>,
    units: VecCollection<'s, Ms, Unit>,
    segments: VecCollection<'s, Ms, (SegWin, FlowSum)>,
    city: Arc<CityModel>,
    cfg: Arc<Config>,
) -> VecCollection<'s, Ms, Recommendation> {
    let d = cfg.emergency.dispatch.clone();
    let fresh = d.speed_fresh_s * SECOND;
    let speeds = during(
        segments.flat_map(|(w, sum): (SegWin, FlowSum)| {
            (w.win == Win::M5 && sum.speed_n > 0).then(|| (w.seg, w.start, sum.speed_mk / sum.speed_n))
        }),
        move |&(_, start, _)| (start + Win::M5.ms(), start + Win::M5.ms() + fresh),
    )
    .map(|(seg, start, v)| In::Speed(seg, start, v));
    let eligible = d.eligible.clone();
    let input = speeds
        .concat(units.filter(move |u| eligible.contains(&u.status)).map(In::Unit))
        .concat(incidents.filter(|i| i.is_unassigned() && i.pos.is_some()).map(In::Incident));

    input
        .inner
        .unary_frontier(Exchange::new(|_: &(In, Ms, isize)| 0), "Dispatch", move |_cap, _info| {
            let mut pending: BTreeMap<Ms, Held> = BTreeMap::new();
            let mut state = Dispatcher::new(city, cfg);
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, batches| {
                    let Some(cap) = cap.retain_least(output.output_index()) else { return };
                    for batch in batches {
                        for (x, t, r) in batch.drain(..) {
                            pending.entry(t).or_insert_with(|| (cap.delayed(&t), Vec::new())).1.push((x, r));
                        }
                    }
                });
                while let Some(entry) = pending.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let (t, (cap, mut updates)) = entry.remove_entry();
                    consolidate(&mut updates);
                    let changes = state.apply(updates);
                    if !changes.is_empty() {
                        output.session(&cap).give_iterator(changes.into_iter().map(|r| (r, t, 1)));
                    }
                }
            }
        })
        .as_collection()
}

/// The dispatcher's state on the worker that gathers everything.
struct Dispatcher {
    city: Arc<CityModel>,
    cfg: Arc<Config>,
    graph: RoadGraph,
    ranker: Ranker,
    /// Live speeds per segment: window start → speed (0.001 km/h), while fresh.
    live: BTreeMap<Idx, BTreeMap<Ms, i64>>,
    /// Speed per segment in m/s (live or free-flow).
    speeds: Vec<f64>,
    /// Eligible units by id: (type, places), and the id's number for the ranker.
    units: BTreeMap<String, (UnitType, Placement)>,
    /// Open, unassigned incidents by id: (suited unit type, places).
    incidents: BTreeMap<String, (UnitType, Placement)>,
    /// What is recommended now, per incident.
    current: BTreeMap<String, Vec<Recommendation>>,
}

impl Dispatcher {
    fn new(city: Arc<CityModel>, cfg: Arc<Config>) -> Self {
        let graph = RoadGraph::new(&city);
        let ranker = Ranker::default();
        let mut d = Dispatcher {
            speeds: vec![0.0; city.segments.len()],
            city,
            cfg,
            graph,
            ranker,
            live: BTreeMap::new(),
            units: BTreeMap::new(),
            incidents: BTreeMap::new(),
            current: BTreeMap::new(),
        };
        for s in 0..d.speeds.len() {
            d.set_speed(s as Idx);
        }
        d
    }

    fn set_speed(&mut self, seg: Idx) {
        let d = &self.cfg.emergency.dispatch;
        let s = &self.city.segments[seg as usize];
        let kmh = match self.live.get(&seg).and_then(|w| w.last_key_value()) {
            Some((_, &v)) => (v as f64 / 1e3).max(d.min_speed_kmh),
            None => s.speed_limit_kmh * d.free_flow_factor,
        };
        self.speeds[seg as usize] = kmh.max(d.min_speed_kmh) / 3.6;
    }

    fn place(&self, lonlat: Option<(f64, f64)>) -> Placement {
        lonlat.map(|(lon, lat)| self.graph.place(lon, lat)).unwrap_or_default()
    }

    /// Applies one time's consolidated updates; the changed recommendations.
    fn apply(&mut self, updates: Vec<(In, isize)>) -> Vec<Recommendation> {
        let mut speeds_changed = false;
        let mut types: BTreeSet<UnitType> = BTreeSet::new();
        let mut touched: BTreeSet<String> = BTreeSet::new();
        // Retractions first, so an entity's −old/+new leaves the new one.
        let (minus, plus): (Vec<_>, Vec<_>) = updates.into_iter().partition(|(_, r)| *r < 0);
        for (x, r) in minus.into_iter().chain(plus) {
            match x {
                In::Speed(seg, start, v) => {
                    let w = self.live.entry(seg).or_default();
                    if r > 0 {
                        w.insert(start, v);
                    } else {
                        w.remove(&start);
                    }
                    if w.is_empty() {
                        self.live.remove(&seg);
                    }
                    self.set_speed(seg);
                    speeds_changed = true;
                }
                In::Unit(u) => {
                    types.insert(u.kind);
                    if r > 0 {
                        let places = self.place(u.location(&self.city));
                        self.units.insert(u.id, (u.kind, places));
                    } else {
                        self.units.remove(&u.id);
                    }
                }
                In::Incident(i) => {
                    touched.insert(i.id.clone());
                    if r > 0 {
                        let t = self.cfg.emergency.dispatch.unit_type(i.kind);
                        let places = self.place(i.pos.map(|p| (p.lon(), p.lat())));
                        self.incidents.insert(i.id, (t, places));
                    } else {
                        self.incidents.remove(&i.id);
                    }
                }
            }
        }
        let redo: Vec<String> = if speeds_changed {
            self.incidents
                .keys()
                .chain(touched.iter())
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        } else {
            let mut ids: BTreeSet<String> = touched;
            ids.extend(
                self.incidents.iter().filter(|(_, (t, _))| types.contains(t)).map(|(id, _)| id.clone()),
            );
            ids.into_iter().collect()
        };
        let mut changes = Vec::new();
        for id in redo {
            let new = self.rank(&id);
            let old = self.current.remove(&id).unwrap_or_default();
            for rank in 0..old.len().max(new.len()) {
                match (old.get(rank), new.get(rank)) {
                    (Some(a), Some(b)) if a == b => {}
                    (_, Some(b)) => changes.push(b.clone()),
                    (Some(a), None) => changes.push(Recommendation {
                        incident: a.incident.clone(),
                        rank: a.rank,
                        unit: None,
                        unit_type: None,
                        eta_ms: 0,
                        distance_dm: 0,
                    }),
                    (None, None) => {}
                }
            }
            if !new.is_empty() {
                self.current.insert(id, new);
            }
        }
        changes
    }

    /// The current ranking for one incident (empty when it is gone or nothing reaches it).
    fn rank(&mut self, id: &str) -> Vec<Recommendation> {
        let Some((kind, places)) = self.incidents.get(id) else { return Vec::new() };
        let ids: Vec<&String> = self.units.iter().filter(|(_, (t, _))| t == kind).map(|(id, _)| id).collect();
        let units: Vec<UnitAt> = ids
            .iter()
            .enumerate()
            .map(|(n, uid)| UnitAt { id: n as u32, places: self.units[*uid].1.clone() })
            .collect();
        let k = self.cfg.emergency.dispatch.k;
        self.ranker
            .rank(&self.graph, &self.speeds, places, &units, k)
            .into_iter()
            .enumerate()
            .map(|(i, r)| Recommendation {
                incident: id.to_string(),
                rank: i as u32 + 1,
                unit: Some(ids[r.unit as usize].clone()),
                unit_type: Some(*kind),
                eta_ms: r.eta_ms,
                distance_dm: (r.distance_m * 10.0).round() as u64,
            })
            .collect()
    }
}
