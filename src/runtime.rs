//! The timely side shared by `replay` and the live service: one worker's round loop.
//!
//! Every driver runs the city dataflow the same way. Input arrives in *rounds*; in each round
//! every worker offers its share of the input to its [`Ingest`], then the workers agree on the
//! city-wide clock (a barrier and the largest event time any of them saw), release the updates
//! due by the new watermark, advance their inputs and step the dataflow until the previous
//! round is complete (at most one round in flight, so memory stays bounded). Drivers differ only
//! in what a round is: `replay` cuts rounds from the file; the live service ends one on a
//! wall-clock tick and, while input is idle, lets the clock follow the wall clock.

use citybrain_dataflows::ingest::Ingest;
use citybrain_dataflows::pipeline::{self, Inputs, Out};
use citybrain_dataflows::{CityModel, Config, Ms};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use timely::dataflow::ProbeHandle;
use timely::worker::Worker;

/// The clock the workers share: a barrier per round and the largest event time seen.
pub struct SharedClock {
    barrier: Barrier,
    max_ts: AtomicU64,
    /// Worker 0's idle floor and stop decision for the round, read by all between the barriers.
    floor: AtomicU64,
    stop: AtomicBool,
    lateness: Ms,
}

/// Worker 0's say in how a round ends (other workers' values are ignored), so every worker
/// takes the same decision.
#[derive(Clone, Copy, Debug, Default)]
pub struct RoundControl {
    /// Let the watermark advance to at least this without input (idle input following the wall
    /// clock); never moves the clock back.
    pub idle_floor: Option<Ms>,
    /// Stop after this round.
    pub stop: bool,
}

impl SharedClock {
    /// A clock for `workers` workers with the given allowed lateness.
    pub fn new(workers: usize, lateness: Ms) -> Arc<SharedClock> {
        Arc::new(SharedClock {
            barrier: Barrier::new(workers),
            max_ts: AtomicU64::new(0),
            floor: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            lateness,
        })
    }

    /// The largest event time any worker has reported (0 before any input).
    pub fn max_ts(&self) -> Ms {
        self.max_ts.load(Ordering::Acquire)
    }

    /// The allowed lateness.
    pub fn lateness(&self) -> Ms {
        self.lateness
    }
}

/// One worker's dataflow and ingest state, driven round by round.
pub struct WorkerRounds {
    inputs: Inputs,
    probe: ProbeHandle<Ms>,
    /// This worker's ingest state; drivers offer decoded events to it during a round.
    pub ingest: Ingest,
    clock: Arc<SharedClock>,
    now: Ms,
    local_max: Ms,
}

impl WorkerRounds {
    /// Builds the city dataflow on this worker; `on_out` receives (on worker 0) every completed
    /// event time's output, unconsolidated (see `pipeline::deliver`).
    pub fn new(
        worker: &mut Worker,
        city: Arc<CityModel>,
        cfg: Arc<Config>,
        clock: Arc<SharedClock>,
        on_out: impl FnMut(Ms, Vec<(Out, isize)>) + 'static,
    ) -> WorkerRounds {
        let (inputs, probe) = worker.dataflow::<Ms, _, _>(|scope| {
            let (inputs, out) = pipeline::build(scope, city.clone(), cfg.clone());
            let (probe, out) = out.probe();
            pipeline::deliver(out, on_out);
            (inputs, probe)
        });
        let ingest = Ingest::new(city, &cfg);
        WorkerRounds { inputs, probe, ingest, clock, now: 0, local_max: 0 }
    }

    /// Notes an event time this worker saw in the current round.
    #[inline]
    pub fn saw(&mut self, ts: Ms) {
        self.local_max = self.local_max.max(ts);
    }

    /// The watermark at the end of the last round (the input time of the current one).
    pub fn now(&self) -> Ms {
        self.now
    }

    /// Ends the round on every worker (all must call it): agrees on the clock, releases the
    /// updates due, advances the inputs and steps until the previous round is complete.
    /// Returns the new watermark and whether worker 0 asked to stop after this round.
    pub fn end_round(&mut self, worker: &mut Worker, control: RoundControl) -> (Ms, bool) {
        self.clock.max_ts.fetch_max(self.local_max, Ordering::AcqRel);
        if worker.index() == 0 {
            self.clock.floor.fetch_max(control.idle_floor.unwrap_or(0), Ordering::AcqRel);
            self.clock.stop.store(control.stop, Ordering::Release);
        }
        self.clock.barrier.wait();
        let global = self.clock.max_ts.load(Ordering::Acquire);
        let floor = self.clock.floor.load(Ordering::Acquire);
        let stop = self.clock.stop.load(Ordering::Acquire);
        self.clock.barrier.wait();
        let previous = self.now;
        let from_events = if global > 0 { global.saturating_sub(self.clock.lateness) } else { 0 };
        self.now = self.now.max(from_events).max(floor);
        self.release(worker, self.now, previous);
        (self.now, stop)
    }

    /// Ends the input: releases everything due by `end` (inclusive) and waits until every
    /// output up to `end` has been computed.
    pub fn finish(&mut self, worker: &mut Worker, end: Ms) {
        let end = end.max(self.now);
        self.release(worker, end + 1, end + 1);
        self.now = end + 1;
    }

    fn release(&mut self, worker: &mut Worker, upto: Ms, wait_for: Ms) {
        self.ingest.flush(&mut self.inputs, upto);
        self.inputs.advance_to(upto);
        self.inputs.flush();
        let probe = &self.probe;
        worker.step_or_park_while(None, || probe.less_than(&wait_for));
    }
}
