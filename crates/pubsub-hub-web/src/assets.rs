//! The page, embedded in the binary with `include_str!`: no CDN, no build step.
//!
//! The script and the stylesheet are separate files because the Content-Security-Policy
//! allows no inline code.

use axum::http::header;
use axum::response::{Html, IntoResponse};

/// `assets/index.html`.
pub const INDEX_HTML: &str = include_str!("../assets/index.html");
/// `assets/app.js`.
pub const APP_JS: &str = include_str!("../assets/app.js");
/// `assets/style.css`.
pub const STYLE_CSS: &str = include_str!("../assets/style.css");
/// `assets/favicon.svg`.
pub const FAVICON_SVG: &str = include_str!("../assets/favicon.svg");

/// Assets change only with the binary; revalidating each load keeps a rebuilt server's page
/// current without a hard refresh.
const ASSET_CACHE: &str = "no-cache";

/// `GET /`: the dashboard page.
pub async fn index() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, ASSET_CACHE)], Html(INDEX_HTML))
}

/// `GET /app.js`.
pub async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, ASSET_CACHE),
        ],
        APP_JS,
    )
}

/// `GET /style.css`.
pub async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, ASSET_CACHE),
        ],
        STYLE_CSS,
    )
}

/// `GET /favicon.svg`.
pub async fn favicon() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, ASSET_CACHE),
        ],
        FAVICON_SVG,
    )
}
