//! The whole city dataflow: every domain's inputs and one stream of outputs.
//!
//! [`build`] assembles the domains (today: traffic) in one timely scope whose timestamps are
//! event-time milliseconds, and merges their results into one collection of [`Out`] records.
//! [`deliver`] gathers that collection on worker 0 and hands it over one *completed* event time
//! at a time, consolidated and sorted, so whatever the number of workers the consumer sees the
//! same sequence of `(time, [(record, ±1)])` batches: the basis of bit-identical output on 1 and
//! N workers. Both `citybrain replay` and the live service drive exactly this dataflow.

use crate::alerts::AlertKey;
use crate::city::CityModel;
use crate::config::Config;
use crate::time::Ms;
use crate::traffic::{self, DetWin, DistSum, DistWin, FlowSum, SegWin, TrafficInputs};
use differential_dataflow::VecCollection;
use differential_dataflow::consolidation::consolidate;
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
    /// An active alert (`alert`).
    Alert(AlertKey),
}

/// All input collections of the city dataflow, owned by one worker.
pub struct Inputs {
    /// Traffic inputs.
    pub traffic: TrafficInputs,
}

impl Inputs {
    /// Advances every input to event time `t` (never backwards).
    pub fn advance_to(&mut self, t: Ms) {
        self.traffic.advance_to(t);
    }

    /// Flushes buffered updates into the dataflow.
    pub fn flush(&mut self) {
        self.traffic.flush();
    }

    /// The inputs' current time.
    pub fn time(&self) -> Ms {
        *self.traffic.windows.time()
    }
}

/// Builds every domain's dataflow in `scope` and returns the inputs and the merged outputs.
pub fn build<'s>(
    scope: Scope<'s, Ms>,
    city: Arc<CityModel>,
    cfg: Arc<Config>,
) -> (Inputs, VecCollection<'s, Ms, Out>) {
    let (traffic_in, t) = traffic::dataflow(scope, city, cfg);
    let out = t
        .detectors
        .map(|(k, v)| Out::Detector(k, v))
        .concat(t.segments.map(|(k, v)| Out::Segment(k, v)))
        .concat(t.districts.map(|(k, v)| Out::District(k, v)))
        .concat(t.alerts.map(Out::Alert));
    (Inputs { traffic: traffic_in }, out)
}

/// Gathers `out` on worker 0 and calls `on_time(t, records)` once per completed event time `t`
/// that changed anything, in increasing `t`, with the records consolidated and sorted. Window
/// totals arrive as insertions only (their retractions are dropped on the way); alerts arrive
/// with both signs.
pub fn deliver<'s>(
    out: VecCollection<'s, Ms, Out>,
    mut on_time: impl FnMut(Ms, Vec<(Out, isize)>) + 'static,
) {
    let mut pending: BTreeMap<Ms, Vec<(Out, isize)>> = BTreeMap::new();
    // A window total is only ever replaced (−old, +new at one time) or retracted alone; only
    // the new value is written, so retractions need not travel to worker 0. Alerts keep both.
    let wanted = out.inner.filter(|(d, _, r): &(Out, Ms, isize)| *r > 0 || matches!(d, Out::Alert(_)));
    wanted.exchange(|_| 0).sink(Pipeline, "Deliver", move |(input, frontier)| {
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
            let (t, mut records) = entry.remove_entry();
            consolidate(&mut records);
            if !records.is_empty() {
                on_time(t, records);
            }
        }
    });
}
