//! The dashboards' pages, without a token (CONTRACT §8): `GET /` (the operations centre),
//! `GET /officer` (a grid officer's view) and their static assets under `GET /assets/…`.
//!
//! The sources live in `dashboards/web/` and are embedded in the binary (rust-embed): a release
//! build serves them with no file beside it and no outside network (the charting library is
//! vendored there with its licence). A debug build reads them from the source tree on every
//! request, so a page can be edited and reloaded without rebuilding. The pages ask for a token
//! once and call the API with it; nothing here is secret.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rust_embed::RustEmbed;

/// The files of `dashboards/web/`.
#[derive(RustEmbed)]
#[folder = "dashboards/web/"]
struct Web;

/// The page routes (not in the OpenAPI document: they serve HTML, not the API).
pub fn routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    axum::Router::new()
        .route("/", get(|| async { file("ops.html") }))
        .route("/officer", get(|| async { file("officer.html") }))
        .route("/assets/{*path}", get(|Path(path): Path<String>| async move { file(&path) }))
}

/// One embedded file with its content type, or 404.
fn file(path: &str) -> Response {
    match Web::get(path) {
        Some(f) => (
            [
                (header::CONTENT_TYPE, content_type(path)),
                // Pages are small and change with the binary: always revalidate.
                (header::CACHE_CONTROL, "no-cache"),
            ],
            f.data.into_owned(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such page or asset\n").into_response(),
    }
}

/// The content type of an asset, by its extension (the few kinds the dashboards ship).
fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("txt" | "md") | None => "text/plain; charset=utf-8",
        Some(_) => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_assets_are_embedded_with_their_types() {
        for (path, kind) in [("ops.html", "text/html"), ("officer.html", "text/html")] {
            assert!(Web::get(path).is_some(), "{path} is not embedded");
            assert!(content_type(path).starts_with(kind));
        }
        assert_eq!(content_type("vendor/echarts.min.js"), "text/javascript; charset=utf-8");
        assert_eq!(file("../Cargo.toml").status(), StatusCode::NOT_FOUND);
    }
}
