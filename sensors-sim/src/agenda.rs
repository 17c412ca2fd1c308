//! The discrete-event core the scenario simulators share: actions scheduled by event time, and
//! the lines they produce held until they arrive (a line's arrival may be later than its event
//! time: a delayed or out-of-order delivery). Both are ordered by (time, sequence number), so
//! a run is deterministic: equal times keep the order in which they were scheduled.

use citybrain_dataflows::Ms;
use std::collections::BTreeMap;

/// Scheduled actions and lines waiting for their arrival.
#[derive(Debug)]
pub struct Agenda<A> {
    actions: BTreeMap<(Ms, u64), A>,
    outbox: BTreeMap<(Ms, u64), String>,
    seq: u64,
}

impl<A> Default for Agenda<A> {
    fn default() -> Self {
        Agenda { actions: BTreeMap::new(), outbox: BTreeMap::new(), seq: 0 }
    }
}

impl<A> Agenda<A> {
    /// Schedules `action` at event time `t`.
    pub fn at(&mut self, t: Ms, action: A) {
        self.actions.insert((t, self.seq), action);
        self.seq += 1;
    }

    /// Holds `line` until `arrival`.
    pub fn post(&mut self, arrival: Ms, line: String) {
        self.outbox.insert((arrival, self.seq), line);
        self.seq += 1;
    }

    /// Takes the earliest action due before `until`, with its time.
    pub fn next_before(&mut self, until: Ms) -> Option<(Ms, A)> {
        let entry = self.actions.first_entry().filter(|e| e.key().0 < until)?;
        let t = entry.key().0;
        Some((t, entry.remove()))
    }

    /// Takes the lines arriving before `until`, in arrival order.
    pub fn arrived_before(&mut self, until: Ms) -> Vec<String> {
        let later = self.outbox.split_off(&(until, 0));
        std::mem::replace(&mut self.outbox, later).into_values().collect()
    }
}
