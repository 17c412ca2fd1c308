//! The HTTP and websocket API (axum): CONTRACT §8.
//!
//! [`app`] builds the router from an [`AppState`], so tests call it without a socket. Routes and
//! who may call them:
//!
//! | route | token | roles |
//! |---|---|---|
//! | `GET /healthz`, `/readyz`, `/metrics`, `/api/openapi.json` | none | — |
//! | `GET /api/city` | bearer | ops, officer |
//! | `GET /api/traffic/segments`, `/api/traffic/districts` | bearer | ops |
//! | `GET /api/alerts`, `POST /api/alerts/{id}/ack`, `GET /ws/alerts` | bearer | ops; officer (own cells) |
//! | `GET /ws/live` | bearer | ops |
//! | `POST /api/ingest/{topic…}` | bearer | ingest, ops |
//!
//! A missing or unknown token gets 401, a token outside its scope 403 (an officer asking for
//! another officer's cell, or acknowledging an alert there, included). The OpenAPI description
//! is generated from the handlers' annotations (utoipa) by the same router that serves them.
//! Request bodies are limited (`http.max_body_bytes`, `http.max_ingest_bytes`), websockets are
//! limited in number (`http.max_ws_connections`; beyond it 503), and no CORS header is sent
//! unless `http.cors_origins` lists origins.
//!
//! [`Board`] holds the latest value of every indicator; the service's output consumer updates it
//! from the dataflow's results ([`Board::apply`]) and `/ws/live` clients follow its version.

pub mod auth;
pub mod board;
pub mod error;
pub mod traffic;

pub use auth::Authed;
pub use board::{Board, ReadModel};
pub use error::ApiError;

use board::Kpis;
use traffic::{DistrictRow, SegmentRow};

use crate::alerts::Alert;
use crate::auth::{Caller, Role, Tokens};
use crate::config::HttpConfig;
use crate::hub::store::{HistoryQuery, StoredTransition};
use crate::hub::{AlertFilter, Hub, Published, Scope};
use crate::live::{Message, Refused};
use axum::extract::ws::rejection::WebSocketUpgradeRejection as WsRejection;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use citybrain_dataflows::event::{Reason, Rejected};
use citybrain_dataflows::{CityModel, Config, Ms};
use futures_util::SinkExt;
use serde::Deserialize;
use serde_json::json;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, broadcast, watch};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Hands `POST /api/ingest` payloads to the live dataflow; emptied at shutdown so the dataflow
/// can finish (it waits for every sender to be gone).
pub type IngestGate = Arc<Mutex<Option<crate::live::LiveSender>>>;

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The city model.
    pub city: Arc<CityModel>,
    /// The city model file as served by `/api/city`.
    pub city_geojson: Arc<String>,
    /// Latest indicators.
    pub board: Arc<RwLock<Board>>,
    /// The board's version, bumped by the output consumer after each change (`/ws/live`).
    pub board_version: watch::Receiver<u64>,
    /// The alert hub.
    pub hub: Arc<Hub>,
    /// The configured tokens.
    pub tokens: Arc<Tokens>,
    /// `[http]` settings.
    pub http: Arc<HttpConfig>,
    /// The topic prefix, for `POST /api/ingest/{topic…}`.
    pub topic_prefix: Arc<String>,
    /// The live dataflow's input (None once shutting down).
    pub ingest: IngestGate,
    /// Keeps what `POST /api/ingest` cannot take (not JSON) in the dead-letter store.
    pub reject: crate::live::RejectSink,
    /// Whether the service is ready (outputs working, input connected); otherwise why not.
    pub ready: Arc<dyn Fn() -> Result<(), String> + Send + Sync>,
    /// Whether `POST /api/ingest` may take input (every output working); otherwise why not
    /// (503: input is paused while an output fails).
    pub accepting: Arc<dyn Fn() -> Result<(), String> + Send + Sync>,
    /// Renders the Prometheus text of `/metrics`.
    pub metrics: Arc<dyn Fn() -> String + Send + Sync>,
    /// Websocket slots.
    pub ws_slots: Arc<Semaphore>,
}

impl AppState {
    /// The board, for reading (also after a writer panicked: a poisoned lock is read anyway).
    fn read_board(&self) -> std::sync::RwLockReadGuard<'_, Board> {
        self.board.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A state serving `hub` and the city in `city_geojson`, with no dataflow behind it: an empty
    /// board, no ingestion (503), always ready, empty metrics. For tests and the alert benchmark;
    /// the service fills in the rest.
    pub fn standalone(
        city_geojson: String,
        hub: Arc<Hub>,
        tokens: Tokens,
        http: HttpConfig,
    ) -> Result<AppState, citybrain_dataflows::city::CityError> {
        let city = Arc::new(CityModel::from_geojson_str(&city_geojson)?);
        let cfg = Arc::new(Config::default());
        let (_, board_version) = watch::channel(0); // never changes
        Ok(AppState {
            board: Arc::new(RwLock::new(Board::new(city.clone(), cfg))),
            city,
            city_geojson: Arc::new(city_geojson),
            board_version,
            hub,
            tokens: Arc::new(tokens),
            ws_slots: Arc::new(Semaphore::new(http.max_ws_connections)),
            http: Arc::new(http),
            topic_prefix: Arc::new("city/".into()),
            ingest: Arc::new(Mutex::new(None)),
            reject: Arc::new(|_: &str, _: &[u8], _: &Rejected| {}),
            ready: Arc::new(|| Ok(())),
            accepting: Arc::new(|| Ok(())),
            metrics: Arc::new(String::new),
        })
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "citybrain", description = "The city operations API (CONTRACT §8). Protected routes take `Authorization: Bearer TOKEN`."),
    paths(ingest),
    modifiers(&BearerAuth),
    components(schemas(Alert, StoredTransition, SegmentRow, DistrictRow, Kpis))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The router: every route of §8 so far, with the OpenAPI description generated from it.
pub fn app(state: AppState) -> Router {
    let ingest_limit = state.http.max_ingest_bytes;
    let body_limit = state.http.max_body_bytes;
    let cors = cors_layer(&state.http.cors_origins);
    let (router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(city))
        .merge(traffic::routes())
        .routes(routes!(alerts))
        .routes(routes!(ack))
        .routes(routes!(ws_alerts))
        .routes(routes!(ws_live))
        .split_for_parts();
    // `{*topic}` spans several path segments, which the OpenAPI path cannot say: this route is
    // registered by hand and described through `ApiDoc`'s `paths(ingest)`.
    let ingest_router: Router<AppState> =
        Router::new().route("/api/ingest/{*topic}", axum::routing::post(ingest));
    let api = Arc::new(api);
    let router = router
        .layer(DefaultBodyLimit::max(body_limit))
        .merge(ingest_router.layer(DefaultBodyLimit::max(ingest_limit)))
        .route(
            "/api/openapi.json",
            axum::routing::get(move || {
                let api = api.clone();
                async move { Json(api.as_ref().clone()) }
            }),
        )
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .with_state(state);
    match cors {
        Some(c) => router.layer(c),
        None => router,
    }
}

fn cors_layer(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let list: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(list)
            .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
    )
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "The process is up")))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the broker is connected and subscribed, and every output works (503 with the reason
/// otherwise).
#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "Ready"), (status = 503, description = "Starting, disconnected, or an output failing (the reason in the body)")))]
async fn readyz(State(s): State<AppState>) -> Response {
    match (s.ready)() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response(),
    }
}

/// Metrics of every stage, Prometheus text format.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
async fn metrics(State(s): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], (s.metrics)()).into_response()
}

/// The city model (GeoJSON, CONTRACT §3).
#[utoipa::path(get, path = "/api/city", security(("bearer" = [])),
    responses((status = 200, description = "GeoJSON FeatureCollection", content_type = "application/geo+json"), (status = 401), (status = 403)))]
async fn city(auth: Authed, State(s): State<AppState>) -> Result<Response, ApiError> {
    auth.require(&[Role::Officer])?;
    Ok(([(header::CONTENT_TYPE, "application/geo+json")], s.city_geojson.as_str().to_owned()).into_response())
}

/// The query of `GET /api/alerts` (and the filters of `/ws/alerts`).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertQuery {
    /// `active` (default: the current active set), or `raised`, `acknowledged`, `cleared`,
    /// `all`: the stored history of transitions into that state (any state for `all`).
    pub state: Option<String>,
    /// Domains, comma-separated.
    pub domain: Option<String>,
    /// Severities, comma-separated.
    pub severity: Option<String>,
    /// Cell ids, comma-separated (an officer may name only their own cells).
    pub cell: Option<String>,
    /// From this event time (epoch ms or RFC 3339): raise time for active alerts, transition
    /// time for history.
    pub since: Option<String>,
    /// Before this event time (epoch ms or RFC 3339).
    pub until: Option<String>,
    /// History paging: only transitions with `seq` above this (pass the last `seq` you got).
    pub after: Option<u64>,
    /// History page size, at most 1000. Default 100.
    pub limit: Option<usize>,
}

fn split(list: &Option<String>) -> Option<Vec<String>> {
    list.as_deref().filter(|l| !l.is_empty()).map(|l| l.split(',').map(|x| x.trim().to_string()).collect())
}

fn parse_time(name: &str, v: &Option<String>) -> Result<Option<Ms>, ApiError> {
    let Some(v) = v.as_deref().filter(|v| !v.is_empty()) else { return Ok(None) };
    if let Ok(ms) = v.parse::<Ms>() {
        return Ok(Some(ms));
    }
    citybrain_dataflows::time::parse_rfc3339(v)
        .map(|ts| Some(ts.0))
        .map_err(|e| ApiError::BadRequest(format!("`{name}`: expected epoch ms or RFC 3339 ({e})")))
}

impl AlertQuery {
    /// The filter, after checking the named cells are within the caller's scope.
    fn filter(&self, scope: &Scope) -> Result<AlertFilter, ApiError> {
        let f = AlertFilter {
            domains: split(&self.domain),
            severities: split(&self.severity),
            cells: split(&self.cell),
        };
        if let Some(c) = f.cells.iter().flatten().find(|c| !scope.allows_cell(c)) {
            return Err(ApiError::Forbidden(format!("cell {c} is not one of your cells")));
        }
        if let Some(bad) = f.severities.iter().flatten().find(|v| crate::alerts::Severity::parse(v).is_none())
        {
            return Err(ApiError::BadRequest(format!("unknown severity {bad:?}")));
        }
        Ok(f)
    }
}

/// Alerts: the active set, or the history of transitions (`state` other than `active`).
#[utoipa::path(get, path = "/api/alerts", security(("bearer" = [])), params(AlertQuery),
    responses((status = 200, description = "Active alerts (state=active) or stored transitions with `seq` and `ts`", body = [Alert]),
        (status = 400), (status = 401), (status = 403)))]
async fn alerts(
    auth: Authed,
    State(s): State<AppState>,
    Query(q): Query<AlertQuery>,
) -> Result<Response, ApiError> {
    let caller = auth.require(&[Role::Officer])?;
    let scope = caller.scope();
    let filter = q.filter(&scope)?;
    let (since, until) = (parse_time("since", &q.since)?, parse_time("until", &q.until)?);
    match q.state.as_deref().unwrap_or("active") {
        "active" => {
            let mut list = s.hub.active(&scope, &filter);
            list.retain(|a| since.is_none_or(|t| a.raised_ts >= t) && until.is_none_or(|t| a.raised_ts < t));
            Ok(Json(list).into_response())
        }
        st => {
            let state = match st {
                "all" => None,
                other => Some(
                    crate::alerts::AlertState::parse(other)
                        .ok_or_else(|| ApiError::BadRequest(format!("unknown state {other:?}")))?,
                ),
            };
            let cells = match (&scope, filter.cells) {
                (_, Some(list)) => Some(list),
                (Scope::Cells(mine), None) => Some(mine.iter().cloned().collect()),
                (Scope::All, None) => None,
            };
            let query = HistoryQuery {
                state,
                domains: filter.domains,
                severities: filter.severities,
                cells,
                since,
                until,
                after: q.after,
                limit: q.limit.unwrap_or(100).clamp(1, 1000),
            };
            let hub = s.hub.clone();
            Ok(Json(blocking(move || hub.history(&query)).await??).into_response())
        }
    }
}

/// The body of an acknowledgement.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct AckBody {
    /// An optional note (what is being done).
    pub note: Option<String>,
}

/// Acknowledges an active alert; every client sees the transition.
#[utoipa::path(post, path = "/api/alerts/{id}/ack", security(("bearer" = [])),
    params(("id" = String, Path, description = "The alert id")), request_body(content = Option<AckBody>),
    responses((status = 200, body = Alert), (status = 401), (status = 403), (status = 404), (status = 409)))]
async fn ack(
    auth: Authed,
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Alert>, ApiError> {
    let caller = auth.require(&[Role::Officer])?;
    let body: AckBody = if body.iter().all(u8::is_ascii_whitespace) {
        AckBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("body: {e}")))?
    };
    let (hub, scope, who) = (s.hub.clone(), caller.scope(), caller.name.clone());
    // The ack waits until the alert store has it: off the async runtime.
    Ok(Json(blocking(move || hub.ack(&id, &who, body.note, &scope)).await??))
}

/// Runs blocking work (the alert store's SQLite, dead-letter files) on tokio's blocking pool,
/// never on an async worker thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::Internal(format!("blocking task: {e}")))
}

/// Takes the payload of one topic of §2 (one JSON object or an array of them) over HTTP.
#[utoipa::path(post, path = "/api/ingest/{topic}", security(("bearer" = [])),
    params(("topic" = String, Path, description = "The full topic, e.g. city/traffic/detector/d-17")),
    request_body(content = Object, content_type = "application/json"),
    responses((status = 202, description = "Queued for the dataflow; invalid elements go to the dead-letter store"),
        (status = 400, description = "Not JSON (dead-lettered)"), (status = 401), (status = 403), (status = 413),
        (status = 503, description = "The dataflow is busy or stopping, or an output is failing (input paused): retry")))]
async fn ingest(
    auth: Authed,
    State(s): State<AppState>,
    Path(topic): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    auth.require(&[Role::Ingest])?;
    if !topic.starts_with(s.topic_prefix.as_str()) {
        return Err(ApiError::BadRequest(format!("topic must start with {}", s.topic_prefix)));
    }
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
        let why = Rejected::new(Reason::MalformedJson, e.to_string());
        let (reject, topic, body) = (s.reject.clone(), topic.clone(), body.clone());
        blocking(move || reject(&topic, &body, &why)).await?;
        return Err(ApiError::BadRequest(format!("payload is not JSON: {e}")));
    }
    (s.accepting)().map_err(ApiError::Unavailable)?;
    let sender = s.ingest.lock().ok().and_then(|g| g.clone());
    let sender = sender.ok_or_else(|| ApiError::Unavailable("shutting down".into()))?;
    match sender.try_send(Message { topic, payload: body.to_vec() }) {
        Ok(()) => Ok((StatusCode::ACCEPTED, Json(json!({"queued": true}))).into_response()),
        Err(Refused::Full(_)) => Err(ApiError::Unavailable("the dataflow is busy; retry".into())),
        Err(Refused::Stopped) => Err(ApiError::Unavailable("shutting down".into())),
    }
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
    let mut msg = serde_json::Map::new();
    msg.insert("type".into(), kind.into());
    msg.insert("version".into(), board.version().into());
    board.live(since, &mut msg);
    msg.insert(
        "kpis".into(),
        json!(board.kpis(s.hub.metrics().active.load(std::sync::atomic::Ordering::Relaxed))),
    );
    (board.version(), serde_json::Value::Object(msg).to_string())
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
