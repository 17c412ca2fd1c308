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
//! The event-time clock is the largest `ts` seen minus the lateness; while input is idle it also
//! follows the wall clock (CONTRACT §1), so timers (an offline detector) fire without new input.
//! Worker 0 measures the idle time: once the largest `ts` has not grown for a whole tick, the
//! clock may advance to `largest ts + idle wall time × speed − lateness` (`speed` is event
//! milliseconds per wall millisecond: 1 in production, the simulator's speed in a demo).
//!
//! Shutdown ends the current round, then closes every window and fires every timer due by the
//! end of the current 5-minute window, exactly as `replay` does at the end of a recording.

use crate::runtime::{RoundControl, SharedClock, WorkerRounds};
use anyhow::Result;
use citybrain_dataflows::event::{Decoder, Rejected};
use citybrain_dataflows::pipeline::Out;
use citybrain_dataflows::pseudonym::Pseudonymizer;
use citybrain_dataflows::time::window_end;
use citybrain_dataflows::traffic::Win;
use citybrain_dataflows::{CityModel, Config, Ms};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
        let clock = SharedClock::new(workers, cfg.time.lateness_ms());
        let decoder = Decoder::new(opts.topic_prefix.clone(), Pseudonymizer::new(opts.pseudonym_key.clone()));
        let cutoff = Arc::new(AtomicU64::new(u64::MAX));
        let (stop2, metrics2) = (stop.clone(), metrics.clone());
        let guards = timely::execute(timely::Config::process(workers), move |worker| {
            let rx: Receiver<Message> = queue_rx.clone();
            let (out, cut) = (on_out.clone(), cutoff.clone());
            let mut rounds =
                WorkerRounds::new(worker, city.clone(), cfg.clone(), clock.clone(), move |t, records| {
                    if t <= cut.load(Ordering::Acquire) {
                        out(t, records)
                    }
                });
            let mut idle = IdleClock::new(opts.speed, clock.lateness());
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
                        Ok(msg) => ingest_message(&msg, &decoder, &mut rounds, &metrics2, &on_reject),
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => {
                            disconnected = true;
                            break;
                        }
                    }
                }
                let control = RoundControl {
                    idle_floor: idle.floor(clock.max_ts()),
                    stop: stop2.load(Ordering::Acquire) || disconnected,
                };
                let (now, stopping) = rounds.end_round(worker, control);
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
                ingest_message(&msg, &decoder, &mut rounds, &metrics2, &on_reject);
            }
            rounds.end_round(worker, RoundControl::default());
            // Close every window and fire every timer due by the end of the current 5-minute
            // window; nothing later is delivered.
            let now = rounds.now();
            let end = if now > 0 { window_end(now.max(clock.max_ts()), Win::M5.ms()) } else { 0 };
            cutoff.store(end, Ordering::Release);
            rounds.finish(worker, end);
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

/// Decodes one message and offers its events; rejections go to `on_reject`.
fn ingest_message(
    msg: &Message,
    decoder: &Decoder,
    rounds: &mut WorkerRounds,
    metrics: &LiveMetrics,
    on_reject: &RejectSink,
) {
    metrics.messages.fetch_add(1, Ordering::Relaxed);
    decoder.decode(&msg.topic, &msg.payload, |res| {
        let res = res.and_then(|ev| {
            rounds.saw(ev.ts().0);
            rounds.ingest.offer(&ev)
        });
        match res {
            Ok(()) => metrics.accepted.fetch_add(1, Ordering::Relaxed),
            Err(rej) => {
                on_reject(&msg.topic, &msg.payload, &rej);
                metrics.rejected.fetch_add(1, Ordering::Relaxed)
            }
        };
    });
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
