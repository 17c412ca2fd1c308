//! The alert hub: the one place an alert's life is decided, stored and fanned out.
//!
//! ```text
//! dataflow transitions ─┐                       ┌─▶ SQLite (every transition, the active set)
//!  (AlertBook, live)    ├─▶ Lifecycle ─▶ seq ───┼─▶ broadcast ─▶ /ws/alerts clients (by scope)
//! acks (REST, ws) ──────┘   (hold-down,         ├─▶ outlet queue ─▶ line protocol, alerts.jsonl
//! city clock ───────────────  escalation)       └─▶ outlet queue ─▶ MQTT city/alerts/{domain}/{cell}
//! ```
//!
//! Every transition gets the next sequence number and is queued for the store and sent *under
//! one lock*, so all outlets and the store see the same order, and a websocket client that takes
//! its snapshot and subscribes under that lock ([`Hub::subscribe`]) misses nothing and sees
//! nothing twice. The SQLite commit itself happens *outside* the lock, on the store's own thread
//! ([`store`]), which commits the queued batches strictly in that order: a slow or failing disk
//! never holds up acknowledgements, websockets or the dataflow's output. A failed commit is
//! counted (`store_errors`), reported to the service's [`OutputHealth`] (logged once with the
//! path and reason; input pauses, `/readyz` 503) and retried every second with everything queued
//! behind it, so a recovery loses no transition. The queue's length is [`Hub::store_backlog`];
//! the service's output consumer waits while it is too long (bounded memory), an acknowledgement
//! waits (briefly) until it is stored, and a history read first lets the store catch up. The broadcast
//! channel is sized for bursts (`alerts.broadcast_capacity`); a client that still falls behind
//! is told and re-sent a snapshot by the API. The outlet queues are unbounded but drained by
//! tasks that never wait on the network (see [`outlet`]), so they stay short.
//!
//! Who sees what is a [`Scope`]: everything (`ops`) or the cells an officer looks after.

pub mod lifecycle;
pub mod outlet;
pub mod store;

use crate::alerts::{Alert, AlertState};
use crate::sink::health::OutputHealth;
use citybrain_dataflows::Ms;
use lifecycle::{AckError, Lifecycle, Policy};
use std::collections::{BTreeSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use store::{HistoryQuery, Store, StoreError, StoredTransition};
use tokio::sync::{broadcast, mpsc};

/// The hub's settings.
#[derive(Clone, Debug)]
pub struct HubOptions {
    /// Hold-down, escalation and restore timing.
    pub policy: Policy,
    /// How long transitions stay in the history, ms of event time.
    pub history_ms: Ms,
    /// Domains whose transitions are personal data, with their own (shorter) history, ms of
    /// event time: `health` keeps its alerts only as long as the records they come from. Their
    /// rows are deleted with SQLite's `secure_delete` and the write-ahead log truncated, so
    /// they are gone from the disk, not only from the table.
    pub domain_history_ms: Vec<(String, Ms)>,
    /// Transitions a websocket client may fall behind before it is re-sent a snapshot.
    pub broadcast_capacity: usize,
}

/// One published transition, shared by every outlet.
#[derive(Debug)]
pub struct Published {
    /// The hub's sequence number: increasing by one per transition, across restarts.
    pub seq: u64,
    /// The transition's event time (the `alert` point's timestamp), epoch ms.
    pub time: Ms,
    /// The alert after the transition.
    pub alert: Alert,
    /// The websocket message, rendered once for all clients:
    /// `{"type":"transition","seq":…,"alert":{…}}` (reference-counted: sending it to a
    /// thousand clients copies no bytes).
    pub text: axum::extract::ws::Utf8Bytes,
}

/// The websocket message of a transition, fields in this order.
#[derive(serde::Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    seq: u64,
    alert: &'a Alert,
}

/// Which alerts a caller may see.
#[derive(Clone, Debug)]
pub enum Scope {
    /// Every alert (`ops`).
    All,
    /// Alerts of these cells only (an `officer`); alerts without a cell are not theirs.
    Cells(Arc<BTreeSet<String>>),
}

impl Scope {
    /// Whether the alert is within the scope.
    pub fn allows(&self, a: &Alert) -> bool {
        match self {
            Scope::All => true,
            Scope::Cells(cells) => a.cell.as_ref().is_some_and(|c| cells.contains(c)),
        }
    }

    /// Whether a cell is within the scope.
    pub fn allows_cell(&self, cell: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Cells(cells) => cells.contains(cell),
        }
    }
}

/// The filters of `/api/alerts` and `/ws/alerts` (§8), parsed once per request: each is a list
/// of accepted values, `None` accepting anything.
#[derive(Debug, Default, Clone)]
pub struct AlertFilter {
    /// Domains (`traffic`, `emergency`, `grid`, `health`).
    pub domains: Option<Vec<String>>,
    /// Severities (`info`, `warning`, `critical`).
    pub severities: Option<Vec<String>>,
    /// Cell ids.
    pub cells: Option<Vec<String>>,
}

fn in_list(list: &Option<Vec<String>>, value: Option<&str>) -> bool {
    match list {
        None => true,
        Some(l) => value.is_some_and(|v| l.iter().any(|x| x == v)),
    }
}

impl AlertFilter {
    /// Whether a transition passes the domain, severity and cell filters (a stream of
    /// transitions carries the clears too, whatever `state` says).
    pub fn matches(&self, a: &Alert) -> bool {
        in_list(&self.domains, Some(&a.domain))
            && in_list(&self.severities, Some(a.severity.as_str()))
            && in_list(&self.cells, a.cell.as_deref())
    }
}

/// Counters of the hub.
#[derive(Debug, Default)]
pub struct HubMetrics {
    /// Transitions published.
    pub transitions: AtomicU64,
    /// Acknowledgements taken.
    pub acks: AtomicU64,
    /// Escalations published.
    pub escalations: AtomicU64,
    /// Re-raises kept within the hold-down (storms avoided).
    pub flaps: AtomicU64,
    /// Failed writes to the alert store.
    pub store_errors: AtomicU64,
    /// Active alerts.
    pub active: AtomicU64,
}

/// Why an action on the hub failed.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The acknowledgement was refused.
    #[error(transparent)]
    Ack(#[from] AckError),
    /// The alert is outside the caller's scope.
    #[error("this alert is not in your cells")]
    Forbidden,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// History needs the store, and this hub has none.
    #[error("no alert store configured")]
    NoStore,
}

struct Inner {
    life: Lifecycle,
    /// The store thread's queue (`None`: memory only).
    store: Option<std::sync::mpsc::Sender<StoreJob>>,
    /// Jobs queued for the store so far.
    jobs: u64,
    seq: u64,
    history_ms: Ms,
    domain_history_ms: Vec<(String, Ms)>,
    pruned_at: Ms,
}

/// One batch for the store: what one `publish` changed, committed in one transaction.
struct StoreJob {
    rows: Vec<(u64, Ms, Alert)>,
    changed: Vec<(String, Option<lifecycle::Entry>)>,
    clock: Ms,
    /// Prune transitions older than this (and of the listed domains, older than theirs) after
    /// the commit.
    prune_before: Option<(Ms, Vec<(String, Ms)>)>,
}

/// How far the store thread has got, shared with those who wait on it.
#[derive(Default)]
struct Progress {
    /// Jobs committed (or given up at the very end).
    done: u64,
    /// Transitions queued and not yet committed.
    backlog: u64,
    /// The thread has ended.
    ended: bool,
}

/// The store thread's side of the hub.
struct StoreThread {
    progress: Mutex<Progress>,
    changed: Condvar,
    /// A second connection for history reads (WAL: readers never wait for the writer).
    reader: Mutex<Store>,
}

impl StoreThread {
    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `cond` holds or `timeout` passes; returns whether it holds.
    fn wait(&self, timeout: Duration, cond: impl Fn(&Progress) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut p = self.lock();
        while !cond(&p) && !p.ended {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            p = self.changed.wait_timeout(p, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        cond(&p)
    }
}

/// How often a failed store commit is retried.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// The alert hub (cheap to share behind an `Arc`).
pub struct Hub {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Published>>,
    outlets: Mutex<Vec<mpsc::UnboundedSender<Arc<Published>>>>,
    metrics: Arc<HubMetrics>,
    store: Option<Arc<StoreThread>>,
}

impl Hub {
    /// A hub persisting to the database at `db` (created if missing; `None`: memory only),
    /// resuming the active set, acknowledgements, clock and sequence stored there.
    pub fn open(db: Option<&Path>, opts: &HubOptions) -> Result<Hub, StoreError> {
        Self::open_reporting(db, opts, Arc::default())
    }

    /// [`Hub::open`], reporting the store's failures and recoveries to `health` (the service's).
    pub fn open_reporting(
        db: Option<&Path>,
        opts: &HubOptions,
        health: Arc<OutputHealth>,
    ) -> Result<Hub, StoreError> {
        let store = db.map(Store::open).transpose()?;
        let (life, seq) = match &store {
            Some(s) => {
                let (entries, mut clock, seq) = s.load()?;
                // A clock stored by an older version from one sensor's wrong clock (or a
                // corrupted row) would stop every timer after a restart: a clock more than a
                // week past the wall clock (the most `ingest.max_future_s` allows) is ignored.
                let wall = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as Ms);
                if clock > wall.saturating_add(7 * 86_400_000) {
                    tracing::warn!(
                        stored = %citybrain_dataflows::time::format_ms(clock),
                        "the alert store's clock is far in the future; ignoring it"
                    );
                    clock = 0;
                }
                if !entries.is_empty() {
                    tracing::info!(active = entries.len(), "alert hub resumes the stored active set");
                }
                (Lifecycle::restore(opts.policy, entries, clock), seq)
            }
            None => (Lifecycle::new(opts.policy), 0),
        };
        let metrics = Arc::new(HubMetrics::default());
        metrics.active.store(life.entries().len() as u64, Ordering::Relaxed);
        let (tx, _) = broadcast::channel(opts.broadcast_capacity.max(16));
        let (queue, thread) = match (store, db) {
            (Some(writer), Some(path)) => {
                let shared = Arc::new(StoreThread {
                    progress: Mutex::default(),
                    changed: Condvar::new(),
                    reader: Mutex::new(Store::open(path)?),
                });
                let (jobs_tx, jobs_rx) = std::sync::mpsc::channel();
                let (sh, m, path) = (shared.clone(), metrics.clone(), path.display().to_string());
                std::thread::Builder::new()
                    .name("alert-store".into())
                    .spawn(move || store_thread(writer, jobs_rx, &sh, &m, &health, &path))
                    .map_err(|e| StoreError::Thread(e.to_string()))?;
                (Some(jobs_tx), Some(shared))
            }
            _ => (None, None),
        };
        Ok(Hub {
            inner: Mutex::new(Inner {
                life,
                store: queue,
                jobs: 0,
                seq,
                history_ms: opts.history_ms,
                domain_history_ms: opts.domain_history_ms.clone(),
                pruned_at: 0,
            }),
            tx,
            outlets: Mutex::new(Vec::new()),
            metrics,
            store: thread,
        })
    }

    /// Transitions published but not yet stored (waiting for, or retrying, their commit).
    pub fn store_backlog(&self) -> u64 {
        self.store.as_ref().map_or(0, |s| s.lock().backlog)
    }

    /// Waits up to `timeout` until at most `max` transitions wait for the store; returns
    /// whether that is so. The output consumer calls this before giving the hub more (bounded
    /// memory while the store fails).
    pub fn wait_store_below(&self, max: u64, timeout: Duration) -> bool {
        self.store.as_ref().is_none_or(|s| s.wait(timeout, |p| p.backlog <= max))
    }

    /// Waits up to `timeout` until everything published so far is stored; returns the number
    /// of transitions still not stored (0 when done).
    pub fn flush_store(&self, timeout: Duration) -> u64 {
        let Some(s) = &self.store else { return 0 };
        let jobs = self.lock().jobs;
        s.wait(timeout, |p| p.done >= jobs);
        s.lock().backlog
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The hub's counters.
    pub fn metrics(&self) -> Arc<HubMetrics> {
        self.metrics.clone()
    }

    /// A queue that receives every transition from now on, in order, without loss (for the
    /// line-protocol/JSON files and the MQTT outlet), with the active set at this moment.
    pub fn outlet(&self) -> (Vec<Alert>, mpsc::UnboundedReceiver<Arc<Published>>) {
        let inner = self.lock();
        let (tx, rx) = mpsc::unbounded_channel();
        self.outlets.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
        (inner.life.entries().values().map(|e| e.alert.clone()).collect(), rx)
    }

    /// Takes the dataflow's transitions of event time `t`, then advances the city clock to `t`
    /// (firing held-down clears, escalations and restore reconciliation). An empty `raw` just
    /// advances the clock.
    pub fn apply(&self, t: Ms, raw: Vec<Alert>) {
        let mut inner = self.lock();
        let mut out = Vec::new();
        let flaps = inner.life.flaps();
        for alert in raw {
            inner.life.on_dataflow(alert, &mut out);
        }
        inner.life.advance(t, &mut out);
        self.metrics.flaps.fetch_add(inner.life.flaps() - flaps, Ordering::Relaxed);
        self.publish(&mut inner, out);
    }

    /// Acknowledges alert `id` for `who` (within `scope`); the transition goes to everyone.
    pub fn ack(&self, id: &str, who: &str, note: Option<String>, scope: &Scope) -> Result<Alert, HubError> {
        let mut inner = self.lock();
        let entry = inner.life.entries().get(id).ok_or(AckError::NotFound)?;
        if !scope.allows(&entry.alert) {
            return Err(HubError::Forbidden);
        }
        let (t, alert) = inner.life.ack(id, who, note)?;
        self.metrics.acks.fetch_add(1, Ordering::Relaxed);
        self.publish(&mut inner, vec![(t, alert.clone())]);
        let job = inner.jobs;
        drop(inner);
        // An operator's action is answered once it is stored (briefly: a failing store is
        // reported elsewhere, and the acknowledgement is stored when it recovers).
        if let Some(s) = &self.store {
            s.wait(Duration::from_secs(2), |p| p.done >= job);
        }
        Ok(alert)
    }

    fn publish(&self, inner: &mut Inner, out: Vec<(Ms, Alert)>) {
        let dirty = inner.life.take_dirty();
        if out.is_empty() && dirty.is_empty() {
            return;
        }
        let mut published = Vec::with_capacity(out.len());
        for (time, alert) in out {
            inner.seq += 1;
            let seq = inner.seq;
            let text = serde_json::to_string(&Envelope { kind: "transition", seq, alert: &alert })
                .unwrap_or_default();
            if alert.escalated && alert.state == AlertState::Raised {
                // Only an escalation publishes an escalated alert that is still unacknowledged.
                self.metrics.escalations.fetch_add(1, Ordering::Relaxed);
            }
            published.push(Arc::new(Published { seq, time, alert, text: text.into() }));
        }
        let clock = inner.life.clock();
        if let (Some(queue), Some(shared)) = (&inner.store, &self.store) {
            // Queued under the lock (the store's order is the sequence order); committed by the
            // store thread, outside it.
            let prune_before = (clock.saturating_sub(inner.pruned_at) > 3_600_000).then(|| {
                let by_domain = inner.domain_history_ms.iter();
                let by_domain = by_domain.map(|(d, keep)| (d.clone(), clock.saturating_sub(*keep))).collect();
                (clock.saturating_sub(inner.history_ms), by_domain)
            });
            if prune_before.is_some() {
                inner.pruned_at = clock;
            }
            let job = StoreJob {
                rows: published.iter().map(|p| (p.seq, p.time, p.alert.clone())).collect(),
                changed: dirty
                    .into_iter()
                    .map(|id| (id.clone(), inner.life.entries().get(&id).cloned()))
                    .collect(),
                clock,
                prune_before,
            };
            shared.lock().backlog += job.rows.len() as u64;
            if queue.send(job).is_ok() {
                inner.jobs += 1;
            }
        }
        self.metrics.active.store(inner.life.entries().len() as u64, Ordering::Relaxed);
        self.metrics.transitions.fetch_add(published.len() as u64, Ordering::Relaxed);
        let mut outlets = self.outlets.lock().unwrap_or_else(|p| p.into_inner());
        for p in published {
            outlets.retain(|o| o.send(p.clone()).is_ok());
            let _ = self.tx.send(p);
        }
    }

    /// The active alerts within `scope` passing `filter`, by id, and a receiver of every later
    /// transition: taken together, so nothing falls between them.
    pub fn subscribe(
        &self,
        scope: &Scope,
        filter: &AlertFilter,
    ) -> (Vec<Alert>, broadcast::Receiver<Arc<Published>>) {
        let inner = self.lock();
        let rx = self.tx.subscribe();
        (Self::collect(&inner, scope, filter), rx)
    }

    fn collect(inner: &Inner, scope: &Scope, filter: &AlertFilter) -> Vec<Alert> {
        inner
            .life
            .entries()
            .values()
            .filter(|e| scope.allows(&e.alert) && filter.matches(&e.alert))
            .map(|e| e.alert.clone())
            .collect()
    }

    /// The active alerts within `scope` passing `filter`, by id.
    pub fn active(&self, scope: &Scope, filter: &AlertFilter) -> Vec<Alert> {
        Self::collect(&self.lock(), scope, filter)
    }

    /// Stored transitions matching `q` (after letting the store catch up with what was
    /// published, for at most a second).
    pub fn history(&self, q: &HistoryQuery) -> Result<Vec<StoredTransition>, HubError> {
        let store = self.store.as_ref().ok_or(HubError::NoStore)?;
        let jobs = self.lock().jobs;
        store.wait(Duration::from_secs(1), |p| p.done >= jobs);
        let reader = store.reader.lock().unwrap_or_else(|p| p.into_inner());
        Ok(reader.history(q)?)
    }

    /// The last sequence number published.
    pub fn seq(&self) -> u64 {
        self.lock().seq
    }
}

impl Drop for Hub {
    /// Lets the store thread commit what is queued (it gives up after a few seconds of failing,
    /// saying how many transitions were not stored).
    fn drop(&mut self) {
        self.lock().store = None;
        if let Some(s) = &self.store {
            s.wait(Duration::from_secs(10), |p| p.ended);
        }
    }
}

/// The store thread: commits the queued jobs in order; a failed commit is retried every
/// [`STORE_RETRY`] with everything behind it kept. Once the hub is gone, it keeps trying for
/// five seconds, then says what it could not store.
fn store_thread(
    mut store: Store,
    rx: std::sync::mpsc::Receiver<StoreJob>,
    shared: &StoreThread,
    metrics: &HubMetrics,
    health: &OutputHealth,
    path: &str,
) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut queue: VecDeque<StoreJob> = VecDeque::new();
    let mut closed_at: Option<Instant> = None;
    loop {
        if queue.is_empty() {
            match rx.recv() {
                Ok(job) => queue.push_back(job),
                Err(_) => break,
            }
        } else if closed_at.is_none() {
            // Failing: wait before the retry, taking what arrives meanwhile.
            match rx.recv_timeout(STORE_RETRY) {
                Ok(job) => queue.push_back(job),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => closed_at = Some(Instant::now()),
            }
        } else {
            std::thread::sleep(STORE_RETRY / 2);
        }
        while let Ok(job) = rx.try_recv() {
            queue.push_back(job);
        }
        while let Some(job) = queue.front() {
            let rows: Vec<(u64, Ms, &Alert)> = job.rows.iter().map(|(s, t, a)| (*s, *t, a)).collect();
            let changed: Vec<(String, Option<&lifecycle::Entry>)> =
                job.changed.iter().map(|(id, e)| (id.clone(), e.as_ref())).collect();
            if let Err(e) = store.commit(&rows, &changed, job.clock) {
                metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                health.failed("alert_store", path, &e);
                break;
            }
            health.ok("alert_store");
            if let Some((before, by_domain)) = &job.prune_before
                && let Err(e) = store.prune(*before, by_domain)
            {
                metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(path, error = %e, "cannot prune the alert history; it is tried again in an hour");
            }
            let n = job.rows.len() as u64;
            queue.pop_front();
            let mut p = shared.lock();
            p.done += 1;
            p.backlog -= n;
            shared.changed.notify_all();
        }
        if closed_at.is_some_and(|at| at.elapsed() > Duration::from_secs(5)) {
            let lost: usize = queue.iter().map(|j| j.rows.len()).sum();
            tracing::error!(
                path,
                transitions = lost,
                "alert store still failing at shutdown; these transitions are not stored (they were published and are in alerts.jsonl)"
            );
            break;
        }
    }
    let mut p = shared.lock();
    p.ended = true;
    shared.changed.notify_all();
}
