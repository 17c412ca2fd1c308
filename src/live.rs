//! The live driver: messages in (from MQTT or HTTP ingestion), rounds on a wall-clock tick.
//!
//! Messages wait in one bounded FIFO queue that every timely worker takes from; a full queue
//! makes the sender wait (backpressure towards the broker instead of unbounded memory). Workers
//! decode and ingest until their tick ends, then end the round together through
//! [`WorkerRounds`] — the same loop `replay` runs. One shared queue, not one per worker, is what
//! keeps the clock honest under a burst: whatever is still queued when a round ends arrived after
//! everything the round processed, so it is never judged against a watermark that another
//! worker's progress pushed past it (with per-worker queues, a worker waiting at the round's
//! barrier lets its own queue fill while the other's progress advances the city-wide clock, and
//! its backlog then looks late).
//!
//! A record is applied by the worker that owns its entity (detector, incident, unit:
//! [`Record::owner`]): whichever worker decodes it forwards it there, and every worker takes its forwarded
//! readings at the end of the round (after a barrier, so none is left behind). That keeps a
//! detector's remembered readings in one place, which is what makes ingestion idempotent on
//! any number of workers: a QoS 1 redelivery or an HTTP retry changes nothing.
//!
//! The event-time clock is the city's (CONTRACT §1): the latest `ts` of a validated record; a
//! record stamped more than `ingest.max_future_s` ahead of the wall clock is dead-lettered
//! `future_ts` and never reaches it. The wall clock here runs at `speed` event milliseconds per
//! wall millisecond from the driver's start (1 in production; the simulator's speed in a demo,
//! whose simulated time starts at the wall clock). While input is idle the clock also follows
//! the wall clock, so timers (an offline detector) fire without new input. Worker 0 measures the
//! idle time: once the clock has not moved for a whole tick, the watermark may advance to
//! `clock + idle wall time × speed − lateness`.
//!
//! Shutdown ends the current round, then closes every window holding data, exactly as `replay`
//! does at the end of a recording: timers fire only up to the last event time seen, so stopping
//! the service raises nothing (`runtime::EndOfInput`).

use crate::runtime::{EndOfInput, RoundControl, SharedClock, WorkerRounds};
use anyhow::Result;
use citybrain_dataflows::event::{Decoder, Event, Reason, Rejected};
use citybrain_dataflows::ingest::Record;
use citybrain_dataflows::pipeline::Out;
use citybrain_dataflows::pseudonym::Pseudonymizer;
use citybrain_dataflows::{CityModel, Config, Ms};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// How the live driver runs.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    /// Timely worker threads.
    pub workers: usize,
    /// Wall-clock length of a round. Default 250 ms.
    pub tick: Duration,
    /// Event milliseconds per wall millisecond for the idle clock. Default 1.
    pub speed: f64,
    /// Messages the queue holds per worker before senders wait. Default 4096.
    pub queue: usize,
    /// MQTT topic prefix (`city/`).
    pub topic_prefix: String,
    /// Pseudonym key.
    pub pseudonym_key: Vec<u8>,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            workers: 1,
            tick: Duration::from_millis(250),
            speed: 1.0,
            queue: 4096,
            topic_prefix: "city/".into(),
            pseudonym_key: Vec::new(),
        }
    }
}

/// One message as received: topic and raw payload.
#[derive(Clone, Debug)]
pub struct Message {
    /// MQTT topic (or the topic path of `POST /api/ingest/{topic…}`).
    pub topic: String,
    /// Raw payload bytes.
    pub payload: Vec<u8>,
}

/// Counters of the live driver.
#[derive(Debug, Default)]
pub struct LiveMetrics {
    /// Messages received.
    pub messages: AtomicU64,
    /// Elements accepted.
    pub accepted: AtomicU64,
    /// Elements rejected (dead-lettered).
    pub rejected: AtomicU64,
    /// Copies of readings already accepted that changed nothing (not in `accepted`).
    pub duplicates: AtomicU64,
    /// Copies of readings already accepted that replaced them with other content.
    pub corrections: AtomicU64,
    /// The watermark after the last round, epoch ms.
    pub watermark: AtomicU64,
    /// The largest event time seen, epoch ms.
    pub max_ts: AtomicU64,
}

/// Why [`LiveSender::try_send`] did not take a message.
#[derive(Debug)]
pub enum Refused {
    /// The worker's queue is full: try again later (the message is handed back).
    Full(Message),
    /// The live dataflow has stopped.
    Stopped,
}

/// Sends messages into the live driver; cheap to clone.
#[derive(Clone)]
pub struct LiveSender {
    queue: Sender<Message>,
}

impl LiveSender {
    /// Sends a message, waiting while the queue is full. Fails once the driver stopped.
    pub fn send(&self, msg: Message) -> Result<()> {
        self.queue.send(msg).map_err(|_| anyhow::anyhow!("the live dataflow has stopped"))
    }

    /// Sends without waiting: the message comes back if the queue is full.
    pub fn try_send(&self, msg: Message) -> Result<(), Refused> {
        match self.queue.try_send(msg) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(m)) => Err(Refused::Full(m)),
            Err(TrySendError::Disconnected(_)) => Err(Refused::Stopped),
        }
    }
}

/// A running live dataflow.
pub struct Live {
    sender: LiveSender,
    stop: Arc<AtomicBool>,
    metrics: Arc<LiveMetrics>,
    guards: timely::communication::WorkerGuards<()>,
}

/// Receives the rejected elements of live input: topic, raw payload and reason.
pub type RejectSink = Arc<dyn Fn(&str, &[u8], &Rejected) + Send + Sync>;

/// Receives every completed event time's output (worker 0's thread; hand it off quickly).
pub type OutputSink = Arc<dyn Fn(Ms, Vec<(Out, isize)>) + Send + Sync>;

impl Live {
    /// Starts the workers.
    pub fn start(
        city: Arc<CityModel>,
        cfg: Arc<Config>,
        opts: LiveOptions,
        on_out: OutputSink,
        on_reject: RejectSink,
    ) -> Result<Live> {
        let workers = opts.workers.max(1);
        let (queue_tx, queue_rx) = crossbeam_channel::bounded::<Message>(opts.queue.max(1) * workers);
        let stop = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(LiveMetrics::default());
        let clock = SharedClock::new(workers, &cfg);
        let decoder = Decoder::new(opts.topic_prefix.clone(), Pseudonymizer::new(opts.pseudonym_key.clone()));
        let ended = Arc::new(EndOfInput::default());
        let (stop2, metrics2) = (stop.clone(), metrics.clone());
        let wall = WallClock::new(opts.speed);
        // Readings forwarded to the worker that owns their detector.
        let (owners_tx, owners_rx): (Vec<_>, Vec<_>) =
            (0..workers).map(|_| crossbeam_channel::unbounded::<Forwarded>()).unzip();
        let forwarding = Arc::new(Barrier::new(workers));
        let arrivals = Arc::new(AtomicU64::new(0));
        let guards = timely::execute(timely::Config::process(workers), move |worker| {
            let rx: Receiver<Message> = queue_rx.clone();
            let (out, ended) = (on_out.clone(), ended.clone());
            let deliver_ended = ended.clone();
            let mut rounds =
                WorkerRounds::new(worker, city.clone(), cfg.clone(), clock.clone(), move |t, mut records| {
                    if deliver_ended.admit(t, &mut records) {
                        out(t, records)
                    }
                });
            let mut idle = IdleClock::new(opts.speed, clock.lateness());
            let mut ctx = Ctx {
                decoder: &decoder,
                city: &city,
                metrics: &metrics2,
                on_reject: &on_reject,
                owners: &owners_tx,
                index: worker.index(),
                wall: &wall,
                max_future: clock.max_future(),
                arrivals: &arrivals,
                counted: (0, 0),
            };
            let inbox = &owners_rx[worker.index()];
            loop {
                let deadline = Instant::now() + opts.tick;
                let mut disconnected = false;
                loop {
                    // The round ends at its deadline even while input remains: the queue is FIFO,
                    // so what is left arrived after everything this round took.
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match rx.recv_timeout(left) {
                        Ok(msg) => ctx.ingest_message(msg, &mut rounds),
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => {
                            disconnected = true;
                            break;
                        }
                    }
                }
                let control = RoundControl {
                    idle_floor: idle.floor(clock.max_ts()),
                    reference: Some(wall.now()),
                    stop: stop2.load(Ordering::Acquire) || disconnected,
                };
                ctx.take_forwarded(&forwarding, inbox, &mut rounds);
                let (now, stopping) = rounds.end_round(worker, control);
                ctx.after_round(&mut rounds);
                if worker.index() == 0 {
                    metrics2.watermark.store(now, Ordering::Relaxed);
                    metrics2.max_ts.store(clock.max_ts(), Ordering::Relaxed);
                }
                if stopping {
                    break;
                }
            }
            // Nothing already queued is lost: drain to the end (the senders are gone), then end
            // one last round together.
            for msg in rx.iter() {
                ctx.ingest_message(msg, &mut rounds);
            }
            ctx.take_forwarded(&forwarding, inbox, &mut rounds);
            rounds.end_round(worker, RoundControl { reference: Some(wall.now()), ..RoundControl::default() });
            ctx.after_round(&mut rounds);
            // Close every window holding data; timers fire only up to the last event time seen.
            rounds.finish(worker, &ended);
        })
        .map_err(|e| anyhow::anyhow!("cannot start the dataflow workers: {e}"))?;
        Ok(Live { sender: LiveSender { queue: queue_tx }, stop, metrics, guards })
    }

    /// A handle for sending messages.
    pub fn sender(&self) -> LiveSender {
        self.sender.clone()
    }

    /// The driver's counters.
    pub fn metrics(&self) -> Arc<LiveMetrics> {
        self.metrics.clone()
    }

    /// Stops after the current round, ingests whatever is still queued, closes every open
    /// window, fires due timers, delivers everything and waits for the workers. Clones of the
    /// sender must be dropped too, or the workers wait for them.
    pub fn shutdown(self) -> Result<()> {
        drop(self.sender);
        self.stop.store(true, Ordering::Release);
        for r in self.guards.join() {
            r.map_err(|e| anyhow::anyhow!("a dataflow worker failed: {e}"))?;
        }
        Ok(())
    }
}

/// A record on its way to the worker that owns its entity, with the message it came in (for
/// a dead letter).
struct Forwarded {
    seq: u64,
    record: Record,
    msg: Arc<Message>,
}

/// What a live worker needs to ingest messages.
struct Ctx<'a> {
    decoder: &'a Decoder,
    city: &'a CityModel,
    metrics: &'a LiveMetrics,
    on_reject: &'a RejectSink,
    owners: &'a [Sender<Forwarded>],
    index: usize,
    wall: &'a WallClock,
    max_future: Ms,
    arrivals: &'a AtomicU64,
    /// This worker's duplicates and corrections already added to the metrics.
    counted: (u64, u64),
}

impl Ctx<'_> {
    fn reject(&self, msg: &Message, rej: &Rejected) {
        (self.on_reject)(&msg.topic, &msg.payload, rej);
        self.metrics.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Decodes one message and offers its events (detector readings on the worker that owns
    /// the detector); rejections go to `on_reject`.
    fn ingest_message(&mut self, msg: Message, rounds: &mut WorkerRounds) {
        self.metrics.messages.fetch_add(1, Ordering::Relaxed);
        let msg = Arc::new(msg);
        let decoder = self.decoder;
        let latest = self.wall.now().saturating_add(self.max_future);
        decoder.decode(&msg.topic, &msg.payload, |res| {
            match res.and_then(|ev| self.offer(&ev, latest, &msg, rounds)) {
                Ok(true) => {
                    self.metrics.accepted.fetch_add(1, Ordering::Relaxed);
                }
                Ok(false) => {}
                Err(rej) => self.reject(&msg, &rej),
            }
        });
    }

    /// Offers one event stamped at most `latest` (else `future_ts`): `Ok(false)` when it went
    /// to the worker owning its detector, which judges (and counts) it when it takes it at the
    /// round's end.
    fn offer(
        &self,
        ev: &Event<'_>,
        latest: Ms,
        msg: &Arc<Message>,
        rounds: &mut WorkerRounds,
    ) -> Result<bool, Rejected> {
        let ts = ev.ts().0;
        if ts > latest {
            let detail = format!("{} is ahead of the wall clock", citybrain_dataflows::time::format_ms(ts));
            return Err(Rejected::new(Reason::FutureTs, detail));
        }
        let record = Record::check(self.city, ev)?;
        let seq = self.arrivals.fetch_add(1, Ordering::Relaxed);
        let owner = record.owner(self.owners.len());
        if owner == self.index {
            return rounds.ingest.offer_record(record, seq).map(|()| true);
        }
        // The owner is alive while this worker is (they end together).
        let _ = self.owners[owner].send(Forwarded { seq, record, msg: msg.clone() });
        Ok(false)
    }

    /// Ends this worker's part of the round: once every worker has stopped forwarding (a
    /// barrier), offers the readings forwarded to it.
    fn take_forwarded(&mut self, barrier: &Barrier, inbox: &Receiver<Forwarded>, rounds: &mut WorkerRounds) {
        if self.owners.len() > 1 {
            barrier.wait();
        }
        for f in inbox.try_iter() {
            match rounds.ingest.offer_record(f.record, f.seq) {
                Ok(()) => {
                    self.metrics.accepted.fetch_add(1, Ordering::Relaxed);
                }
                Err(rej) => self.reject(&f.msg, &rej),
            }
        }
    }

    /// After a round: counts duplicates and corrections.
    fn after_round(&mut self, rounds: &mut WorkerRounds) {
        let (d, c) = (rounds.ingest.duplicates(), rounds.ingest.corrections());
        let new_dups = d - self.counted.0;
        if new_dups > 0 {
            self.metrics.duplicates.fetch_add(new_dups, Ordering::Relaxed);
            self.metrics.accepted.fetch_sub(new_dups, Ordering::Relaxed);
        }
        self.metrics.corrections.fetch_add(c - self.counted.1, Ordering::Relaxed);
        self.counted = (d, c);
    }
}

/// The wall clock in event time: the real one at `speed` 1 (production), accelerated in a demo.
struct WallClock {
    origin_ms: Ms,
    started: Instant,
    speed: f64,
}

impl WallClock {
    fn new(speed: f64) -> Self {
        let origin_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as Ms)
            .unwrap_or(0);
        WallClock { origin_ms, started: Instant::now(), speed: speed.max(1.0) }
    }

    fn now(&self) -> Ms {
        self.origin_ms + (self.started.elapsed().as_secs_f64() * 1e3 * self.speed) as Ms
    }
}

/// Worker 0's view of idle input: when the largest event time stops growing, the clock follows
/// the wall clock from there.
struct IdleClock {
    speed: f64,
    lateness: Ms,
    last_max: Ms,
    since: Instant,
}

impl IdleClock {
    fn new(speed: f64, lateness: Ms) -> Self {
        IdleClock { speed: speed.max(0.0), lateness, last_max: 0, since: Instant::now() }
    }

    /// The floor for the next round, if input has been idle.
    fn floor(&mut self, max_ts: Ms) -> Option<Ms> {
        if max_ts != self.last_max {
            self.last_max = max_ts;
            self.since = Instant::now();
            return None;
        }
        if max_ts == 0 {
            return None;
        }
        let idle_ms = self.since.elapsed().as_secs_f64() * 1e3 * self.speed;
        Some((max_ts + idle_ms as Ms).saturating_sub(self.lateness))
    }
}
