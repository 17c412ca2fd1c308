//! The websockets: `GET /ws/alerts` (alert transitions) and `GET /ws/live` (indicator updates).
//!
//! Both take a slot of `http.max_ws_connections` for their lifetime (503 beyond it) and send
//! text frames of JSON objects with a `type`. `/ws/alerts` starts from a snapshot taken under the
//! hub's lock together with the subscription, and when it falls behind the broadcast channel
//! (`Lagged`) says so and starts again from a fresh snapshot, never stalling silently. `/ws/live`
//! follows the [`Board`](super::Board)'s version and sends at most one update per
//! `http.live_interval_ms`, carrying every domain's rows changed since the last message
//! ([`ReadModel::live`](super::ReadModel::live)).

use super::alerts::AlertQuery;
use super::{ApiError, AppState, Authed};
use crate::alerts::Alert;
use crate::auth::{Caller, Role};
use crate::hub::{AlertFilter, Published};
use axum::extract::ws::rejection::WebSocketUpgradeRejection as WsRejection;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use futures_util::SinkExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The websocket routes, with their OpenAPI entries.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(ws_alerts)).routes(routes!(ws_live))
}

/// Alert transitions as they happen: a snapshot of the active alerts the caller may see, then
/// every transition (`{"type":"transition","seq":…,"alert":{…}}`), heartbeats, and acks as
/// messages (`{"type":"ack","id":…,"note":…}`). Filters: `domain`, `severity`, `cell`.
#[utoipa::path(get, path = "/ws/alerts", security(("bearer" = [])), params(AlertQuery),
    responses((status = 101, description = "Websocket"), (status = 401), (status = 403), (status = 503, description = "Too many websockets")))]
async fn ws_alerts(
    auth: Authed,
    ws: Result<WebSocketUpgrade, WsRejection>,
    State(s): State<AppState>,
    Query(q): Query<AlertQuery>,
) -> Result<Response, ApiError> {
    auth.require(&[Role::Officer])?;
    let ws = ws.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let caller = auth.0.clone();
    let filter = q.filter(&caller.scope())?;
    let permit = s
        .ws_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Unavailable("too many websocket connections".into()))?;
    // Snapshot and subscription are taken together, under the hub's lock: nothing falls between.
    let (snapshot, rx) = s.hub.subscribe(&caller.scope(), &filter);
    Ok(ws.on_upgrade(move |socket| async move {
        follow_alerts(socket, s, caller, filter, snapshot, rx).await;
        drop(permit);
    }))
}

/// A message from a websocket client.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMsg {
    Ack { id: String, note: Option<String> },
    Ping,
}

fn snapshot_text(alerts: &[Alert]) -> String {
    json!({"type": "snapshot", "alerts": alerts}).to_string()
}

async fn follow_alerts(
    mut socket: WebSocket,
    s: AppState,
    caller: Arc<Caller>,
    filter: AlertFilter,
    snapshot: Vec<Alert>,
    mut rx: broadcast::Receiver<Arc<Published>>,
) {
    let scope = caller.scope();
    if socket.send(WsMessage::Text(snapshot_text(&snapshot).into())).await.is_err() {
        return;
    }
    let period = Duration::from_secs(s.http.ws_heartbeat_s.max(1));
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let wanted = |p: &Published| scope.allows(&p.alert) && filter.matches(&p.alert);
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Ok(p) => {
                    // Send everything already waiting, then flush once.
                    let mut batch = vec![p];
                    while batch.len() < 256 {
                        match rx.try_recv() {
                            Ok(p) => batch.push(p),
                            Err(_) => break,
                        }
                    }
                    let mut sent = false;
                    for p in batch.iter().filter(|p| wanted(p)) {
                        if socket.feed(WsMessage::Text(p.text.clone())).await.is_err() {
                            return;
                        }
                        sent = true;
                    }
                    if sent && socket.flush().await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    // Fell behind: say so and start again from a fresh snapshot and subscription.
                    let (snap, fresh) = s.hub.subscribe(&scope, &filter);
                    rx = fresh;
                    let notice = json!({"type": "lagged", "missed": missed}).to_string();
                    if socket.send(WsMessage::Text(notice.into())).await.is_err()
                        || socket.send(WsMessage::Text(snapshot_text(&snap).into())).await.is_err()
                    {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = heartbeat.tick() => {
                let beat = json!({"type": "heartbeat", "seq": s.hub.seq()}).to_string();
                if socket.send(WsMessage::Text(beat.into())).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Text(text))) => {
                    let reply = match serde_json::from_str::<ClientMsg>(&text) {
                        Ok(ClientMsg::Ack { id, note }) => match s.hub.ack(&id, &caller.name, note, &scope) {
                            Ok(_) => json!({"type": "ack_result", "id": id, "ok": true}),
                            Err(e) => json!({"type": "ack_result", "id": id, "ok": false, "error": e.to_string()}),
                        },
                        Ok(ClientMsg::Ping) => json!({"type": "pong", "seq": s.hub.seq()}),
                        Err(e) => json!({"type": "error", "error": format!("unreadable message: {e}")}),
                    };
                    if socket.send(WsMessage::Text(reply.to_string().into())).await.is_err() {
                        return;
                    }
                }
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Indicator updates for dashboards: a snapshot (districts, segment levels, city figures), then
/// at most one update per `http.live_interval_ms` (default 1 s) carrying the districts whose
/// window changed, the segments whose level changed and the city figures.
#[utoipa::path(get, path = "/ws/live", security(("bearer" = [])),
    responses((status = 101, description = "Websocket"), (status = 401), (status = 403), (status = 503, description = "Too many websockets")))]
async fn ws_live(
    auth: Authed,
    ws: Result<WebSocketUpgrade, WsRejection>,
    State(s): State<AppState>,
) -> Result<Response, ApiError> {
    auth.require(&[])?;
    let ws = ws.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let permit = s
        .ws_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Unavailable("too many websocket connections".into()))?;
    Ok(ws.on_upgrade(move |socket| async move {
        follow_live(socket, s).await;
        drop(permit);
    }))
}

/// A `/ws/live` message — the snapshot (`since` = `None`) or the update since board version
/// `since` — and the board version it reflects.
fn live_message(s: &AppState, since: Option<u64>) -> (u64, String) {
    let board = s.read_board();
    let kind = if since.is_some() { "update" } else { "snapshot" };
    let mut msg = Map::new();
    msg.insert("type".into(), kind.into());
    msg.insert("version".into(), board.version().into());
    board.live(since, &mut msg);
    msg.insert("kpis".into(), json!(board.kpis(s.hub.metrics().active.load(Ordering::Relaxed))));
    (board.version(), Value::Object(msg).to_string())
}

async fn follow_live(mut socket: WebSocket, s: AppState) {
    let mut version_rx = s.board_version.clone();
    let (mut sent_version, text) = live_message(&s, None);
    if socket.send(WsMessage::Text(text.into())).await.is_err() {
        return;
    }
    let interval = Duration::from_millis(s.http.live_interval_ms.max(1));
    let mut last_sent = Instant::now();
    let mut updating = true;
    loop {
        tokio::select! {
            changed = version_rx.changed(), if updating => {
                if changed.is_err() {
                    updating = false; // no more updates (shutting down): keep the socket
                    continue;
                }
                // Throttle: at most one update per interval, carrying everything since the last.
                let wait = interval.saturating_sub(last_sent.elapsed());
                tokio::time::sleep(wait).await;
                let (v, text) = live_message(&s, Some(sent_version));
                if v == sent_version {
                    continue;
                }
                if socket.send(WsMessage::Text(text.into())).await.is_err() {
                    return;
                }
                sent_version = v;
                last_sent = Instant::now();
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
