//! The discrete-event core the scenario simulators share: actions scheduled by event time, and
//! the lines they produce held until they arrive (a line's arrival may be later than its event
//! time: a delayed or out-of-order delivery). Both are ordered by (time, sequence number), so
//! a run is deterministic: equal times keep the order in which they were scheduled.

use anyhow::{Result, ensure};
use citybrain_dataflows::Ms;
use std::collections::BTreeMap;

/// A scenario simulator that runs beside the detectors (emergency, grid, health): it covers the
/// traffic run's span and, interval by interval, yields the lines that arrive. What
/// [`Scenario`](crate::Scenario) needs of each of them.
pub trait Part {
    /// Start of the run, epoch ms.
    fn start_ms(&self) -> Ms;
    /// End of the run (exclusive), epoch ms.
    fn end_ms(&self) -> Ms;
    /// The reporting interval of the run, ms.
    fn interval_ms(&self) -> Ms;
    /// Simulates up to `until` (exclusive) and returns the lines that arrive before it.
    fn advance(&mut self, until: Ms) -> Result<Vec<String>>;
}

/// Checks that `part` (named `what`) covers a traffic run of `intervals` intervals from `start`.
pub fn check_covers(part: &impl Part, start: Ms, intervals: u64, what: &str) -> Result<()> {
    let end = start + intervals * part.interval_ms();
    ensure!(
        part.start_ms() == start && part.end_ms() == end,
        "the {what} scenario does not cover the traffic run"
    );
    Ok(())
}

/// Advances `part` over the traffic interval starting at `ts`, appending its lines to `lines`
/// and counting them in `count`.
pub fn step(part: &mut impl Part, ts: Ms, lines: &mut Vec<String>, count: &mut u64) -> Result<()> {
    let got = part.advance(ts + part.interval_ms())?;
    *count += got.len() as u64;
    lines.extend(got);
    Ok(())
}

/// Implements [`Part`] for a simulator whose fields `start`, `end` and `interval` hold its span
/// and whose inherent `advance` simulates.
macro_rules! impl_part {
    ($t:ty) => {
        impl $crate::agenda::Part for $t {
            fn start_ms(&self) -> citybrain_dataflows::Ms {
                self.start
            }
            fn end_ms(&self) -> citybrain_dataflows::Ms {
                self.end
            }
            fn interval_ms(&self) -> citybrain_dataflows::Ms {
                self.interval
            }
            fn advance(&mut self, until: citybrain_dataflows::Ms) -> anyhow::Result<Vec<String>> {
                <$t>::advance(self, until)
            }
        }
    };
}
pub(crate) use impl_part;

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
