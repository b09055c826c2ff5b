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
///
/// # Cancel safety
/// Cancel-safe: nothing is awaited that holds state.
#[utoipa::path(
    get,
    path = "/",
    tag = "page",
    description = "The dashboard page. With an access token configured, opening \
                   `/?token=<token>` once sets the session cookie and redirects to `/`.",
    params(
        ("token" = Option<String>, Query,
         description = "The access token, to log in (only when one is configured)"),
    ),
    responses(
        (status = 200, description = "The page", content_type = "text/html", body = String),
        (status = 303, description = "Logged in: the cookie is set; go to `/`"),
        (status = 401, description = "An access token is configured and was not presented, or is wrong", body = crate::openapi::ErrorBody),
        (status = 403, description = "Refused whatever the credentials (a foreign Host)", body = crate::openapi::ErrorBody),
    )
)]
pub async fn index() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, ASSET_CACHE)], Html(INDEX_HTML))
}

/// `GET /app.js`.
///
/// # Cancel safety
/// Cancel-safe: nothing is awaited that holds state.
#[utoipa::path(
    get,
    path = "/app.js",
    tag = "page",
    responses(
        (status = 200, description = "The page's script", content_type = "text/javascript", body = String),
        (status = 401, description = "An access token is configured and was not presented", body = crate::openapi::ErrorBody),
        (status = 403, description = "Refused whatever the credentials (a foreign Host)", body = crate::openapi::ErrorBody),
    )
)]
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
///
/// # Cancel safety
/// Cancel-safe: nothing is awaited that holds state.
#[utoipa::path(
    get,
    path = "/style.css",
    tag = "page",
    responses(
        (status = 200, description = "The page's stylesheet", content_type = "text/css", body = String),
        (status = 401, description = "An access token is configured and was not presented", body = crate::openapi::ErrorBody),
        (status = 403, description = "Refused whatever the credentials (a foreign Host)", body = crate::openapi::ErrorBody),
    )
)]
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
///
/// # Cancel safety
/// Cancel-safe: nothing is awaited that holds state.
#[utoipa::path(
    get,
    path = "/favicon.svg",
    tag = "page",
    responses(
        (status = 200, description = "The page's icon", content_type = "image/svg+xml", body = String),
        (status = 401, description = "An access token is configured and was not presented", body = crate::openapi::ErrorBody),
        (status = 403, description = "Refused whatever the credentials (a foreign Host)", body = crate::openapi::ErrorBody),
    )
)]
pub async fn favicon() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, ASSET_CACHE),
        ],
        FAVICON_SVG,
    )
}
