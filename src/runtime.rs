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
use citybrain_dataflows::time::{SourceClock, window_end};
use citybrain_dataflows::traffic::Win;
use citybrain_dataflows::{CityModel, Config, Ms};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use timely::dataflow::ProbeHandle;
use timely::worker::Worker;

/// The clock the workers share: a barrier per round and the sources seen (see
/// [`SourceClock`]: one source far ahead of all the others does not move the clock).
pub struct SharedClock {
    barrier: Barrier,
    sources: Mutex<SourceClock>,
    /// The agreed clock + 1 (0: none yet), for readers outside the round loop.
    clock: AtomicU64,
    /// The latest event time any worker applied to a window.
    max_applied: AtomicU64,
    /// Worker 0's idle floor, trusted reference and stop decision for the round, read by all
    /// between the barriers.
    floor: AtomicU64,
    reference: AtomicU64,
    stop: AtomicBool,
    lateness: Ms,
    max_future: Ms,
}

/// Worker 0's say in how a round ends (other workers' values are ignored), so every worker
/// takes the same decision.
#[derive(Clone, Copy, Debug, Default)]
pub struct RoundControl {
    /// Let the watermark advance to at least this without input (idle input following the wall
    /// clock); never moves the clock back.
    pub idle_floor: Option<Ms>,
    /// A trusted event time (the live service's wall clock): the clock may follow the latest
    /// source up to `max_future` past it even without a second source (records beyond that
    /// were already dead-lettered `future_ts`).
    pub reference: Option<Ms>,
    /// Stop after this round.
    pub stop: bool,
}

impl SharedClock {
    /// A clock for `workers` workers with the dataflows' lateness and `ingest.max_future_s`.
    pub fn new(workers: usize, cfg: &Config) -> Arc<SharedClock> {
        Arc::new(SharedClock {
            barrier: Barrier::new(workers),
            sources: Mutex::new(SourceClock::default()),
            clock: AtomicU64::new(0),
            max_applied: AtomicU64::new(0),
            floor: AtomicU64::new(0),
            reference: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            lateness: cfg.time.lateness_ms(),
            max_future: cfg.ingest.max_future_ms(),
        })
    }

    /// The city's clock after the last round: the latest event time of a validated record,
    /// unless one source is far ahead of all others (0 before any input).
    pub fn max_ts(&self) -> Ms {
        self.clock.load(Ordering::Acquire).saturating_sub(1)
    }

    /// The latest event time applied to a window (0 before any input): "the last event time
    /// seen", up to which timers fire at the end of input.
    pub fn max_applied(&self) -> Ms {
        self.max_applied.load(Ordering::Acquire)
    }

    /// The allowed lateness.
    pub fn lateness(&self) -> Ms {
        self.lateness
    }

    /// `ingest.max_future_s` in ms.
    pub fn max_future(&self) -> Ms {
        self.max_future
    }
}

/// What may still be delivered once input has ended (CONTRACT §5: the end of input, or a
/// shutdown, is not news). Windows close up to the driver's end; alert transitions after the
/// last event time seen only where a window holding data completes them
/// ([`pipeline::after_input_keeps`]); and no progress past the last event time, so the alert
/// hub's own timers (hold-down, escalation) do not run on the artificial close either.
pub struct EndOfInput {
    end: AtomicU64,
    last: AtomicU64,
}

impl Default for EndOfInput {
    fn default() -> Self {
        EndOfInput { end: AtomicU64::new(u64::MAX), last: AtomicU64::new(u64::MAX) }
    }
}

impl EndOfInput {
    /// Input has ended: deliver nothing after `end`; `last` is the last event time seen.
    pub fn set(&self, end: Ms, last: Option<Ms>) {
        self.last.store(last.unwrap_or(0), Ordering::Release);
        self.end.store(end, Ordering::Release);
    }

    /// Filters one delivered batch of event time `t` (see [`pipeline::deliver`]); whether
    /// anything of it (records, or the progress marker an empty batch is) is to be delivered.
    pub fn admit(&self, t: Ms, records: &mut Vec<(Out, isize)>) -> bool {
        if t > self.end.load(Ordering::Acquire) {
            return false;
        }
        let last = self.last.load(Ordering::Acquire);
        if t <= last {
            return true;
        }
        records.retain(|(out, _)| pipeline::after_input_keeps(out, t, last));
        !records.is_empty()
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
    /// The agreed clock (identical on every worker).
    agreed: Option<Ms>,
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
        WorkerRounds { inputs, probe, ingest, clock, now: 0, agreed: None }
    }

    /// The watermark at the end of the last round (the input time of the current one).
    pub fn now(&self) -> Ms {
        self.now
    }

    /// Ends the round on every worker (all must call it): agrees on the clock, releases the
    /// updates due, advances the inputs and steps until the previous round is complete.
    /// Returns the new watermark and whether worker 0 asked to stop after this round.
    pub fn end_round(&mut self, worker: &mut Worker, control: RoundControl) -> (Ms, bool) {
        let shared = self.clock.clone();
        if let Ok(mut s) = shared.sources.lock() {
            s.merge(&self.ingest.sources());
        }
        if worker.index() == 0 {
            shared.floor.fetch_max(control.idle_floor.unwrap_or(0), Ordering::AcqRel);
            shared.reference.store(control.reference.map_or(0, |r| r + 1), Ordering::Release);
            shared.stop.store(control.stop, Ordering::Release);
        }
        shared.barrier.wait();
        let sources = shared.sources.lock().map(|s| *s).unwrap_or_default();
        let floor = shared.floor.load(Ordering::Acquire);
        let reference = shared.reference.load(Ordering::Acquire).checked_sub(1);
        let stop = shared.stop.load(Ordering::Acquire);
        shared.barrier.wait();
        self.agreed = sources.clock(self.agreed, reference, shared.max_future);
        if worker.index() == 0 {
            shared.clock.store(self.agreed.map_or(0, |c| c + 1), Ordering::Release);
        }
        let previous = self.now;
        let from_events = self.agreed.map_or(0, |c| c.saturating_sub(shared.lateness));
        self.now = self.now.max(from_events).max(floor);
        let now = self.now;
        self.release(worker, now, now, previous);
        (self.now, stop)
    }

    /// Ends the input on every worker (all must call it): every window holding data closes —
    /// the clock advances to the end of the 5-minute window that holds the last event time seen
    /// (the latest reading applied to a window on any worker) — and timers fire only up to that
    /// last event time, since the end of input is not news. Waits until every output up to the
    /// end has been computed. `ended` learns both before anything past the last round is
    /// delivered, so the driver's delivery can filter with it. Returns the end and the last event
    /// time seen (`None` without input).
    pub fn finish(&mut self, worker: &mut Worker, ended: &EndOfInput) -> (Ms, Option<Ms>) {
        // Every worker's last release is complete once all are here.
        self.clock.barrier.wait();
        let last = Some(self.clock.max_applied()).filter(|&m| m > 0);
        let end = last.map_or(self.now, |l| window_end(l, Win::M5.ms()).max(self.now));
        ended.set(end, last);
        self.release(worker, end + 1, last.unwrap_or(0), end + 1);
        self.now = end + 1;
        (end, last)
    }

    fn release(&mut self, worker: &mut Worker, upto: Ms, timers_upto: Ms, wait_for: Ms) {
        // Readings past the clock by more than max_future wait (never those behind the
        // watermark: it is trusted, and may run ahead of the clock on the idle wall clock).
        let horizon = self.agreed.unwrap_or(0).max(upto).saturating_add(self.clock.max_future);
        self.ingest.flush(&mut self.inputs, upto, horizon, timers_upto);
        if let Some(m) = self.ingest.max_applied() {
            self.clock.max_applied.fetch_max(m, Ordering::AcqRel);
        }
        self.inputs.advance_to(upto);
        self.inputs.flush();
        let probe = &self.probe;
        worker.step_or_park_while(None, || probe.less_than(&wait_for));
    }
}
