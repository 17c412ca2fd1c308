//! `POST /api/ingest/{topic…}`: the payloads of CONTRACT §2 over HTTP, for the `ingest` role
//! (and ops), into the same live dataflow input as MQTT.
//!
//! A body that is not JSON is dead-lettered and refused (400); anything else is queued whole and
//! validated by the dataflow's decoder like an MQTT message (its invalid elements go to the
//! dead-letter store). While an output is failing, or the dataflow's queue is full or it is
//! stopping, the answer is 503 with `Retry-After`: input is held back, never dropped. Bodies are
//! limited by `http.max_ingest_bytes`, not by `http.max_body_bytes` as the other routes are.

use super::{ApiError, AppState, Authed, blocking};
use crate::auth::Role;
use crate::live::{Message, Refused};
use axum::Json;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use citybrain_dataflows::event::{Reason, Rejected};
use serde_json::json;
use std::sync::{Arc, Mutex};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

/// Hands `POST /api/ingest` payloads to the live dataflow; emptied at shutdown so the dataflow
/// can finish (it waits for every sender to be gone).
pub type IngestGate = Arc<Mutex<Option<crate::live::LiveSender>>>;

/// The route's OpenAPI entry, written by hand (see [`routes`]).
#[derive(OpenApi)]
#[openapi(paths(ingest))]
struct IngestDoc;

/// The ingest route, with its own body limit (`max_bytes`) and its OpenAPI entry.
///
/// `{*topic}` spans several path segments, which the OpenAPI path cannot say: the route is
/// registered by hand and described through a hand-written `paths(ingest)` document.
pub fn routes(max_bytes: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(IngestDoc::openapi())
        .route("/api/ingest/{*topic}", axum::routing::post(ingest))
        .layer(DefaultBodyLimit::max(max_bytes))
}

/// Takes the payload of one topic of §2 (one JSON object or an array of them) over HTTP.
/// (Also what `POST /api/emergency/dispatch/{incident}` publishes its events through.)
#[utoipa::path(post, path = "/api/ingest/{topic}", security(("bearer" = [])),
    params(("topic" = String, Path, description = "The full topic, e.g. city/traffic/detector/d-17")),
    request_body(content = Object, content_type = "application/json"),
    responses((status = 202, description = "Queued for the dataflow; invalid elements go to the dead-letter store"),
        (status = 400, description = "Not JSON (dead-lettered)"), (status = 401), (status = 403), (status = 413),
        (status = 503, description = "The dataflow is busy or stopping, or an output is failing (input paused): retry")))]
pub(super) async fn ingest(
    auth: Authed,
    State(s): State<AppState>,
    Path(topic): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    auth.require(&[Role::Ingest])?;
    publish(&s, topic, body).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"queued": true}))).into_response())
}

/// Queues one topic's payload for the live dataflow with the checks of [`ingest`] (after its
/// role check): what the domain actions (`POST /api/emergency/dispatch/…`, `POST
/// /api/grid/cases/…/status`) publish their events through, whoever may call them.
pub(super) async fn publish(s: &AppState, topic: String, body: axum::body::Bytes) -> Result<(), ApiError> {
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
        Ok(()) => Ok(()),
        Err(Refused::Full(_)) => Err(ApiError::Unavailable("the dataflow is busy; retry".into())),
        Err(Refused::Stopped) => Err(ApiError::Unavailable("shutting down".into())),
    }
}
