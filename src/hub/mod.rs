//! The alert hub: the one place an alert's life is decided, stored and fanned out.
//!
//! ```text
//! dataflow transitions ─┐                       ┌─▶ SQLite (every transition, the active set)
//!  (AlertBook, live)    ├─▶ Lifecycle ─▶ seq ───┼─▶ broadcast ─▶ /ws/alerts clients (by scope)
//! acks (REST, ws) ──────┘   (hold-down,         ├─▶ outlet queue ─▶ line protocol, alerts.jsonl
//! city clock ───────────────  escalation)       └─▶ outlet queue ─▶ MQTT city/alerts/{domain}/{cell}
//! ```
//!
//! Every transition gets the next sequence number and is stored and sent *under one lock*, so
//! all outlets see the same order, and a websocket client that takes its snapshot and subscribes
//! under that lock ([`Hub::subscribe`]) misses nothing and sees nothing twice. The broadcast
//! channel is sized for bursts (`alerts.broadcast_capacity`); a client that still falls behind
//! is told and re-sent a snapshot by the API. The outlet queues are unbounded but drained by
//! tasks that never wait on the network (see [`outlet`]), so they stay short.
//!
//! Who sees what is a [`Scope`]: everything (`ops`) or the cells an officer looks after.

pub mod lifecycle;
pub mod outlet;
pub mod store;

use crate::alerts::{Alert, AlertState};
use citybrain_dataflows::Ms;
use lifecycle::{AckError, Lifecycle, Policy};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use store::{HistoryQuery, Store, StoreError, StoredTransition};
use tokio::sync::{broadcast, mpsc};

/// The hub's settings.
#[derive(Clone, Debug)]
pub struct HubOptions {
    /// Hold-down, escalation and restore timing.
    pub policy: Policy,
    /// How long transitions stay in the history, ms of event time.
    pub history_ms: Ms,
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
    store: Option<Store>,
    seq: u64,
    history_ms: Ms,
    pruned_at: Ms,
}

/// The alert hub (cheap to share behind an `Arc`).
pub struct Hub {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Published>>,
    outlets: Mutex<Vec<mpsc::UnboundedSender<Arc<Published>>>>,
    metrics: Arc<HubMetrics>,
}

impl Hub {
    /// A hub persisting to the database at `db` (created if missing; `None`: memory only),
    /// resuming the active set, acknowledgements, clock and sequence stored there.
    pub fn open(db: Option<&Path>, opts: &HubOptions) -> Result<Hub, StoreError> {
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
        Ok(Hub {
            inner: Mutex::new(Inner { life, store, seq, history_ms: opts.history_ms, pruned_at: 0 }),
            tx,
            outlets: Mutex::new(Vec::new()),
            metrics,
        })
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
        if let Some(store) = inner.store.as_mut() {
            let rows: Vec<(u64, Ms, &Alert)> = published.iter().map(|p| (p.seq, p.time, &p.alert)).collect();
            let changed: Vec<(String, Option<&lifecycle::Entry>)> =
                dirty.into_iter().map(|id| (id.clone(), inner.life.entries().get(&id))).collect();
            let mut result = store.commit(&rows, &changed, clock);
            if result.is_ok() && clock.saturating_sub(inner.pruned_at) > 3_600_000 {
                result = store.prune(clock.saturating_sub(inner.history_ms)).map(|_| ());
                inner.pruned_at = clock;
            }
            if let Err(e) = result {
                let n = self.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() || n == 0 {
                    tracing::error!(error = %e, "cannot write the alert store; alerts still flow");
                }
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

    /// Stored transitions matching `q`.
    pub fn history(&self, q: &HistoryQuery) -> Result<Vec<StoredTransition>, HubError> {
        let inner = self.lock();
        let store = inner.store.as_ref().ok_or(HubError::NoStore)?;
        Ok(store.history(q)?)
    }

    /// The last sequence number published.
    pub fn seq(&self) -> u64 {
        self.lock().seq
    }
}
