//! The HTTP and websocket API (axum): CONTRACT §8.
//!
//! [`app`] builds the router from an [`AppState`], so tests call it without a socket. Routes and
//! who may call them:
//!
//! | route | token | roles |
//! |---|---|---|
//! | `GET /healthz`, `/readyz`, `/metrics`, `/api/openapi.json` | none | — |
//! | `POST /api/health/contact-check` (rate limited per client) | none | — |
//! | `GET /`, `/officer`, `/assets/…` (the dashboards' pages) | none (the pages ask for one) | — |
//! | `GET /api/city` | bearer | ops, officer |
//! | `GET /api/traffic/segments`, `/api/traffic/districts` | bearer | ops |
//! | `GET /api/emergency/incidents`, `/api/emergency/units`, `/api/emergency/dispatch` | bearer | ops; officer (own cells) |
//! | `POST /api/emergency/dispatch/{incident}` | bearer | ops |
//! | `GET /api/grid/cases`, `/api/grid/cells`, `/api/grid/sensors` | bearer | ops; officer (own cells) |
//! | `GET /api/grid/districts` | bearer | ops |
//! | `POST /api/grid/cases/{id}/status` | bearer | ops; officer (own cells, their steps) |
//! | `GET /api/health/contacts` | bearer | ops; officer (own cells) |
//! | `GET /api/alerts`, `POST /api/alerts/{id}/ack`, `GET /ws/alerts` | bearer | ops; officer (own cells) |
//! | `GET /ws/live`, `GET /api/history` | bearer | ops |
//! | `GET /api/session` | bearer | any |
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
//!
//! # Layout
//!
//! One module a domain, one module a shared concern:
//!
//! | module | holds |
//! |---|---|
//! | this one | [`AppState`], [`app`]: the domain modules' routes assembled, body limits, CORS |
//! | [`board`] | [`Board`], the latest indicators of every domain under one version; [`ReadModel`], what a domain's read model implements |
//! | [`traffic`] | the traffic read model (segments, districts) and `/api/traffic/*` |
//! | [`emergency`] | the emergency read model (incidents, units, recommendations, districts) and `/api/emergency/*` |
//! | [`grid`] | the grid read model (cases, sensors, cells, districts) and `/api/grid/*` |
//! | [`health`] | the health read model (contacts, by pseudonym) and `/api/health/*`, the public self-check with its rate limiter |
//! | [`alerts`] | `/api/alerts` (active set, stored history) and `/api/alerts/{id}/ack` |
//! | [`history`] | `/api/history`: recent district and city indicators for charts |
//! | [`session`] | `/api/session`: the caller, the city clock and time zone |
//! | [`ws`] | the `/ws/alerts` and `/ws/live` loops |
//! | [`ingest`] | `POST /api/ingest/{topic…}` |
//! | [`city`] | `/api/city` |
//! | [`pages`] | `/`, `/officer` and `/assets/…`: the dashboards, embedded from `dashboards/web/` |
//! | [`probes`] | `/healthz`, `/readyz`, `/metrics` |
//! | [`auth`] | [`Authed`]: the caller behind a request's token, and role checks (the tokens themselves are [`crate::auth`]'s) |
//! | [`error`] | [`ApiError`]: every failure's status and body |
//! | [`openapi`] | the OpenAPI document's base and `/api/openapi.json` |
//!
//! # Adding a domain's API
//!
//! A domain `d` (emergency, grid, health) gets one file, `src/api/d.rs`, holding
//!
//! 1. its read model, a struct implementing [`ReadModel`]: `apply` folds the domain's `Out`
//!    variants into its latest rows (stamping each changed row with the version it is given),
//!    `live` adds the rows changed since a version to `/ws/live` messages;
//! 2. its handlers, annotated with `#[utoipa::path]`, which read the model through
//!    [`AppState`]'s board (`s.read_board().d`), check the caller with [`Authed`] and fail with
//!    [`ApiError`];
//! 3. `pub fn routes() -> OpenApiRouter<AppState>` registering the handlers with `routes!`
//!    (their OpenAPI entries and the schemas they name come along).
//!
//! Then it is registered: `pub mod d;` here and `.merge(d::routes())` in [`app`] serve the routes
//! and describe them; a field for the model on [`Board`], built in [`Board::new`] and listed in
//! its `models`/`models_mut`, feeds it and puts it on `/ws/live`.

pub mod alerts;
pub mod auth;
pub mod board;
pub mod city;
pub mod emergency;
pub mod error;
pub mod grid;
pub mod health;
pub mod history;
pub mod ingest;
pub mod openapi;
pub mod pages;
pub mod probes;
pub mod session;
pub mod traffic;
pub mod ws;

pub use auth::Authed;
pub use board::{Board, ReadModel};
pub use error::ApiError;
pub use ingest::IngestGate;

use crate::auth::Tokens;
use crate::config::HttpConfig;
use crate::hub::Hub;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use citybrain_dataflows::event::Rejected;
use citybrain_dataflows::pseudonym::Pseudonymizer;
use citybrain_dataflows::{CityModel, Config};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use tokio::sync::{Semaphore, watch};
use utoipa_axum::router::OpenApiRouter;

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
    /// The decoder's pseudonymizer (same key), for `POST /api/health/contact-check`.
    pub pseudonyms: Arc<Pseudonymizer>,
    /// The per-client rate limit of `POST /api/health/contact-check`.
    pub contact_limiter: Arc<health::ContactLimiter>,
}

impl AppState {
    /// A state serving `hub` and the city in `city_geojson`, with no dataflow behind it: an empty
    /// board, no ingestion (503), always ready, empty metrics, and pseudonyms with an empty key
    /// (that of [`LiveOptions::default`](crate::live::LiveOptions)). For tests and the alert
    /// benchmark; the service fills in the rest.
    pub fn standalone(
        city_geojson: String,
        hub: Arc<Hub>,
        tokens: Tokens,
        http: HttpConfig,
    ) -> Result<AppState, citybrain_dataflows::city::CityError> {
        let city = Arc::new(CityModel::from_geojson_str(&city_geojson)?);
        let cfg = Arc::new(Config::default());
        let (_, board_version) = watch::channel(0); // never changes
        let contact_limiter = Arc::new(health::ContactLimiter::new(
            http.contact_check_per_minute,
            http.contact_check_burst,
            health::MAX_LIMITED_CLIENTS,
        ));
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
            pseudonyms: Arc::new(Pseudonymizer::new(Vec::new())),
            contact_limiter,
        })
    }
}

impl AppState {
    /// The board, for reading (also after a writer panicked: a poisoned lock is read anyway).
    fn read_board(&self) -> RwLockReadGuard<'_, Board> {
        self.board.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Runs blocking work (the alert store's SQLite, dead-letter files) on tokio's blocking pool,
/// never on an async worker thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::Internal(format!("blocking task: {e}")))
}

/// The router: every route of §8 so far, with the OpenAPI description generated from it.
pub fn app(state: AppState) -> Router {
    let ingest_limit = state.http.max_ingest_bytes;
    let body_limit = state.http.max_body_bytes;
    let cors = cors_layer(&state.http.cors_origins);
    let (router, api) = OpenApiRouter::with_openapi(openapi::base())
        .merge(probes::routes())
        .merge(city::routes())
        .merge(traffic::routes())
        .merge(emergency::routes())
        .merge(grid::routes())
        .merge(health::routes())
        .merge(alerts::routes())
        .merge(history::routes())
        .merge(session::routes())
        .merge(ws::routes())
        .layer(DefaultBodyLimit::max(body_limit))
        .merge(ingest::routes(ingest_limit))
        .split_for_parts();
    let router = router
        .route("/api/openapi.json", openapi::route(api))
        .merge(pages::routes())
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
