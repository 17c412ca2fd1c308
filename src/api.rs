//! The HTTP and websocket API (axum): health, metrics, the city, latest indicators, alerts.
//!
//! [`app`] builds the router from an [`AppState`], so tests call it without a socket. The state's
//! [`Board`] holds the latest value of every indicator and the active alerts; the service's output
//! consumer updates it from the dataflow's results ([`Board::apply`]) and publishes every alert
//! transition on a broadcast channel that `/ws/alerts` clients follow. A client that falls behind
//! the broadcast (`Lagged`) is told so and sent a fresh snapshot — it never stalls silently.
//!
//! Access control (bearer tokens, roles, officers' cells) arrives with the alerts issue; until
//! then every route is open, so bind the API to loopback (the default).

use crate::alerts::{Alert, AlertState};
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use citybrain_dataflows::city::Idx;
use citybrain_dataflows::pipeline::Out;
use citybrain_dataflows::traffic::{DistSum, FlowSum, level, tpi_level};
use citybrain_dataflows::{CityModel, Config, Ms};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use tokio::sync::broadcast;

/// The latest indicators and the active alerts.
#[derive(Default)]
pub struct Board {
    segments: HashMap<Idx, (Ms, FlowSum)>,
    districts: HashMap<Idx, (Ms, DistSum)>,
    active: BTreeMap<String, Alert>,
}

impl Board {
    /// Applies one completed event time's output (consolidated): newer windows replace older
    /// ones; alert transitions update the active set.
    pub fn apply(&mut self, records: &[(Out, isize)]) {
        for (out, diff) in records {
            match out {
                Out::Segment(w, sum) if *diff > 0 => {
                    let e = self.segments.entry(w.seg).or_insert((w.start, *sum));
                    if w.start >= e.0 {
                        *e = (w.start, *sum);
                    }
                }
                Out::District(w, sum) if *diff > 0 => {
                    let e = self.districts.entry(w.district).or_insert((w.start, *sum));
                    if w.start >= e.0 {
                        *e = (w.start, *sum);
                    }
                }
                _ => {}
            }
        }
    }

    /// Records an alert transition.
    pub fn alert(&mut self, alert: &Alert) {
        if alert.state == AlertState::Cleared {
            self.active.remove(&alert.id);
        } else {
            self.active.insert(alert.id.clone(), alert.clone());
        }
    }
}

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The city model.
    pub city: Arc<CityModel>,
    /// Dataflow settings (bands for levels).
    pub cfg: Arc<Config>,
    /// The city model file as served by `/api/city`.
    pub city_geojson: Arc<String>,
    /// Latest indicators and active alerts.
    pub board: Arc<RwLock<Board>>,
    /// Every alert transition, as JSON, for `/ws/alerts`.
    pub alert_tx: broadcast::Sender<Arc<String>>,
    /// Whether the service is ready (dataflow running, input connected).
    pub ready: Arc<dyn Fn() -> bool + Send + Sync>,
    /// Renders the Prometheus text of `/metrics`.
    pub metrics: Arc<dyn Fn() -> String + Send + Sync>,
}

/// The router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/city", get(city))
        .route("/api/traffic/segments", get(segments))
        .route("/api/traffic/districts", get(districts))
        .route("/api/alerts", get(alerts))
        .route("/ws/alerts", get(ws_alerts))
        .with_state(state)
}

async fn readyz(State(s): State<AppState>) -> Response {
    if (s.ready)() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], (s.metrics)()).into_response()
}

async fn city(State(s): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "application/geo+json")], s.city_geojson.as_str().to_owned()).into_response()
}

fn read_board(s: &AppState) -> std::sync::RwLockReadGuard<'_, Board> {
    s.board.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn segments(State(s): State<AppState>) -> Json<Vec<Value>> {
    let board = read_board(&s);
    let mut rows: Vec<(Idx, Value)> = board
        .segments
        .iter()
        .map(|(&i, (start, sum))| {
            let seg = &s.city.segments[i as usize];
            let row = json!({
                "segment": seg.id,
                "district": s.city.districts[seg.district as usize].id,
                "road_class": seg.road_class.as_str(),
                "window": "5m",
                "ts": start,
                "count": sum.count,
                "flow_vph": sum.flow_vph(citybrain_dataflows::traffic::Win::M5),
                "occupancy": sum.occupancy(),
                "speed_kmh": sum.speed_kmh(),
                "tti": sum.speed_kmh().filter(|v| *v > 0.0).map(|v| seg.speed_limit_kmh / v),
                "level": level(sum, seg.road_class, &s.cfg.traffic),
            });
            (i, row)
        })
        .collect();
    rows.sort_by_key(|(i, _)| *i);
    Json(rows.into_iter().map(|(_, r)| r).collect())
}

async fn districts(State(s): State<AppState>) -> Json<Vec<Value>> {
    let board = read_board(&s);
    let mut rows: Vec<(Idx, Value)> = board
        .districts
        .iter()
        .map(|(&i, (start, sum))| {
            let tpi = sum.tpi(&s.cfg.traffic);
            let row = json!({
                "district": s.city.districts[i as usize].id,
                "name": s.city.districts[i as usize].name,
                "window": "5m",
                "ts": start,
                "tpi": tpi,
                "level": tpi_level(tpi),
                "speed_kmh": sum.speed_kmh(),
                "congested_km": sum.congested_km(),
            });
            (i, row)
        })
        .collect();
    rows.sort_by_key(|(i, _)| *i);
    Json(rows.into_iter().map(|(_, r)| r).collect())
}

/// Filters of `/api/alerts` and `/ws/alerts`.
#[derive(Debug, Default, Deserialize)]
pub struct AlertFilter {
    /// `active` (default; raised or acknowledged) — history arrives with the alert store.
    pub state: Option<String>,
    /// Domain (`traffic`, …).
    pub domain: Option<String>,
    /// Severity (`info`, `warning`, `critical`).
    pub severity: Option<String>,
    /// Cell id.
    pub cell: Option<String>,
}

impl AlertFilter {
    /// Whether an alert passes the filter.
    pub fn matches(&self, a: &Alert) -> bool {
        let state_ok = match self.state.as_deref() {
            None | Some("active") => a.state != AlertState::Cleared,
            Some(other) => a.state.as_str() == other,
        };
        state_ok
            && self.domain.as_deref().is_none_or(|d| a.domain == d)
            && self.severity.as_deref().is_none_or(|v| a.severity == v)
            && self.cell.as_deref().is_none_or(|c| a.cell.as_deref() == Some(c))
    }
}

fn snapshot(s: &AppState, f: &AlertFilter) -> Vec<Alert> {
    read_board(s).active.values().filter(|a| f.matches(a)).cloned().collect()
}

async fn alerts(State(s): State<AppState>, Query(f): Query<AlertFilter>) -> Json<Vec<Alert>> {
    Json(snapshot(&s, &f))
}

async fn ws_alerts(
    ws: WebSocketUpgrade,
    State(s): State<AppState>,
    Query(f): Query<AlertFilter>,
) -> Response {
    // Subscribe before the upgrade completes, so no transition falls between snapshot and stream.
    let rx = s.alert_tx.subscribe();
    ws.on_upgrade(move |socket| follow_alerts(socket, s, f, rx))
}

async fn follow_alerts(
    mut socket: WebSocket,
    s: AppState,
    f: AlertFilter,
    mut rx: broadcast::Receiver<Arc<String>>,
) {
    let send_snapshot =
        |s: &AppState, f: &AlertFilter| json!({"type": "snapshot", "alerts": snapshot(s, f)}).to_string();
    if socket.send(WsMessage::Text(send_snapshot(&s, &f).into())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Ok(json) => {
                    let Ok(alert) = serde_json::from_str::<Value>(&json) else { continue };
                    if !filter_json(&f, &alert) {
                        continue;
                    }
                    let text = json!({"type": "transition", "alert": alert}).to_string();
                    if socket.send(WsMessage::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    // Fell behind: say so and start again from a fresh snapshot.
                    let notice = json!({"type": "lagged", "missed": missed}).to_string();
                    if socket.send(WsMessage::Text(notice.into())).await.is_err()
                        || socket.send(WsMessage::Text(send_snapshot(&s, &f).into())).await.is_err()
                    {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

fn filter_json(f: &AlertFilter, a: &Value) -> bool {
    let field = |k: &str| a.get(k).and_then(Value::as_str);
    let state_ok = match f.state.as_deref() {
        None | Some("active") => true, // a stream of transitions includes the clears
        Some(st) => field("state") == Some(st),
    };
    state_ok
        && f.domain.as_deref().is_none_or(|d| field("domain") == Some(d))
        && f.severity.as_deref().is_none_or(|v| field("severity") == Some(v))
        && f.cell.as_deref().is_none_or(|c| field("cell") == Some(c))
}
