//! The whole city dataflow: every domain's inputs and one stream of outputs.
//!
//! [`build`] assembles the domains (traffic, emergency, grid, health) in one timely scope whose timestamps are
//! event-time milliseconds, and merges their results into one collection of [`Out`] records.
//! [`deliver`] gathers that collection on worker 0 and hands it over one *completed* event time
//! at a time; after [`consolidate_batch`] (which the consumer runs on its own thread, off the
//! worker) every number of workers yields the same sequence of sorted `(time, [(record, ±1)])`
//! batches: the basis of bit-identical output on 1 and N workers. Both `citybrain replay` and the live service drive exactly this dataflow.

use crate::alerts::AlertKey;
use crate::city::CityModel;
use crate::config::Config;
use crate::emergency::{self, EmOut, EmergencyInputs};
use crate::grid::{self, GridInputs};
use crate::health::{self, HealthInputs};
use crate::time::Ms;
use crate::traffic::{self, CityWin, DetWin, DistSum, DistWin, FlowSum, SegWin, TrafficInputs};
use differential_dataflow::consolidation::consolidate;
use differential_dataflow::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use timely::dataflow::Scope;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::vec::Filter;
use timely::dataflow::operators::{Exchange, Operator};

/// One output record of the city dataflow. With diff +1 it is a (new) value; with −1 the
/// retraction of a previous one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Out {
    /// A detector window total (`traffic_detector`).
    Detector(DetWin, FlowSum),
    /// A segment window total (`traffic_segment`).
    Segment(SegWin, FlowSum),
    /// A district window total (`traffic_district`).
    District(DistWin, DistSum),
    /// The whole city's window total (`traffic_city`).
    City(CityWin, DistSum),
    /// An emergency record: indicators, states, recommendations.
    Emergency(crate::emergency::EmOut),
    /// A grid record: indicators and states.
    Grid(crate::grid::GridOut),
    /// A health record: contacts of active cases (pseudonyms only).
    Health(crate::health::HealthOut),
    /// An active alert (`alert`).
    Alert(AlertKey),
}

/// All input collections of the city dataflow, owned by one worker.
pub struct Inputs {
    /// Traffic inputs.
    pub traffic: TrafficInputs,
    /// Emergency inputs.
    pub emergency: EmergencyInputs,
    /// Grid inputs.
    pub grid: GridInputs,
    /// Health inputs.
    pub health: HealthInputs,
}

impl Inputs {
    /// Advances every input to event time `t` (never backwards).
    pub fn advance_to(&mut self, t: Ms) {
        self.traffic.advance_to(t);
        self.emergency.advance_to(t);
        self.grid.advance_to(t);
        self.health.advance_to(t);
    }

    /// Flushes buffered updates into the dataflow.
    pub fn flush(&mut self) {
        self.traffic.flush();
        self.emergency.flush();
        self.grid.flush();
        self.health.flush();
    }

    /// The inputs' current time.
    pub fn time(&self) -> Ms {
        *self.traffic.windows.time()
    }
}

/// Keeps only the insertions of a collection of window totals.
///
/// A window total is only ever replaced (−old and +new at one time) or retracted alone (when its
/// retention ends); only new values are written anywhere, so the retractions are dropped as soon
/// as they leave the operator that computed them instead of travelling to worker 0.
fn new_values<'s, D: differential_dataflow::Data>(c: VecCollection<'s, Ms, D>) -> VecCollection<'s, Ms, D> {
    c.inner.filter(|(_, _, r): &(D, Ms, isize)| *r > 0).as_collection()
}

/// Builds every domain's dataflow in `scope` and returns the inputs and the merged outputs:
/// window totals as insertions only (new values), alerts with both signs (raise and clear).
pub fn build<'s>(
    scope: Scope<'s, Ms>,
    city: Arc<CityModel>,
    cfg: Arc<Config>,
) -> (Inputs, VecCollection<'s, Ms, Out>) {
    let (traffic_in, t) = traffic::dataflow(scope, city.clone(), cfg.clone());
    let (emergency_in, e) = emergency::dataflow(scope, city.clone(), cfg.clone(), t.segments.clone());
    // Grid risk counts the traffic incidents on a cell's segments and the open emergency
    // incidents in it.
    let open_incident_cells = e.out.clone().flat_map(|o| match o {
        EmOut::Incident(i) if i.is_open() => i.cell,
        _ => None,
    });
    let (grid_in, g) = grid::dataflow(scope, city, cfg.clone(), t.alerts.clone(), open_incident_cells);
    let (health_in, h) = health::dataflow(scope, cfg);
    let out = new_values(t.detectors)
        .map(|(k, v)| Out::Detector(k, v))
        .concat(new_values(t.segments).map(|(k, v)| Out::Segment(k, v)))
        .concat(new_values(t.districts).map(|(k, v)| Out::District(k, v)))
        .concat(new_values(t.city).map(|(k, v)| Out::City(k, v)))
        .concat(e.out.map(Out::Emergency))
        .concat(g.out.map(Out::Grid))
        .concat(h.out.map(Out::Health))
        .concat(t.alerts.concat(e.alerts).concat(g.alerts).concat(h.alerts).map(Out::Alert));
    (Inputs { traffic: traffic_in, emergency: emergency_in, grid: grid_in, health: health_in }, out)
}

/// Whether an output at event time `t`, after the last event time seen (`last`) because input
/// ended, is still news: a window's value is (a window holding data closed), and so is an alert
/// transition completed by the close of a window holding data — at the end of its rule's window
/// that holds `last` at the latest ([`crate::alerts::Rule::window_ms`]). Anything later is an
/// artefact of closing the input: a run of windows broken only because no more windows came,
/// or an absence timer (CONTRACT §5).
pub fn after_input_keeps(out: &Out, t: Ms, last: Ms) -> bool {
    match out {
        Out::Alert(key) => key.rule.window_ms().is_some_and(|w| t <= crate::time::window_end(last, w)),
        // Emergency state changes only on events and their timers (a closed incident leaving,
        // a sample leaving the hour): none of them after the last event is news.
        Out::Emergency(_) => false,
        // Likewise grid states: deadlines and staleness after the last event are absence
        // timers, and a day's end is not news.
        Out::Grid(_) => false,
        // Health contacts change only on records and their retention: a retention ending after
        // the last event is not news.
        Out::Health(_) => false,
        _ => true,
    }
}

/// Sorts a delivered batch and sums the differences of equal records, dropping those that cancel.
pub fn consolidate_batch(records: &mut Vec<(Out, isize)>) {
    consolidate(records);
}

/// Gathers `out` on worker 0 and calls `on_time(t, records)` once per completed event time `t`
/// that changed anything, in increasing `t`. The records are not yet consolidated: pass them
/// through [`consolidate_batch`] (on the consumer's thread, so worker 0 is not burdened). Window
/// totals arrive as insertions only (see [`build`]); alerts arrive with both signs.
///
/// Progress is reported too: when the output frontier moves to `f` (every time before `f` is
/// complete), `on_time(f, [])` is called once, after the batches before `f`. That is the city
/// clock as the output has reached it, which drives the alert hub's timers (hold-down,
/// escalation) in the same order as the records.
pub fn deliver<'s>(
    out: VecCollection<'s, Ms, Out>,
    mut on_time: impl FnMut(Ms, Vec<(Out, isize)>) + 'static,
) {
    let mut pending: BTreeMap<Ms, Vec<(Out, isize)>> = BTreeMap::new();
    let mut reported: Ms = 0;
    out.inner.exchange(|_| 0).sink(Pipeline, "Deliver", move |(input, frontier)| {
        input.for_each_stamp(|_cap, batches| {
            for batch in batches {
                for (d, t, r) in batch.drain(..) {
                    pending.entry(t).or_default().push((d, r));
                }
            }
        });
        while let Some(entry) = pending.first_entry() {
            if frontier.less_equal(entry.key()) {
                break;
            }
            let (t, records) = entry.remove_entry();
            on_time(t, records);
        }
        if let Some(&f) = frontier.frontier().iter().min()
            && f > reported
        {
            reported = f;
            on_time(f, Vec::new());
        }
    });
}
