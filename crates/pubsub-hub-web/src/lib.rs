//! # pubsub_hub_web
//!
//! The pubsub-hub dashboard: the guide's demo web server on axum, speaking the guide's HTTP
//! contract exactly (`/state`, `/publish`, `/subscribe`, `/unsubscribe`, `/reset`; written
//! down in `docs/http-api.md`), plus a live push stream (`/events`, server-sent events) and
//! a self-contained page.
//!
//! ```no_run
//! use pubsub_hub_web::{DashboardOptions, run_dashboard, shutdown_signal};
//!
//! # async fn demo() -> Result<(), pubsub_hub_web::DashboardError> {
//! // Binds 127.0.0.1:8103, connects to localhost:6379 (or starts a private redis-server on a
//! // unix socket),
//! // seeds the three default subscribers and serves until Ctrl-C or SIGTERM.
//! run_dashboard(DashboardOptions::default(), shutdown_signal()).await
//! # }
//! ```
//!
//! Tests build the app without a socket through [`router`], or serve it on
//! `127.0.0.1:0` through [`serve`] with any shutdown future.
//!
//! # Costs
//! - One `/state` answer, or one pushed update, costs one Redis round trip
//!   (`PUBSUB CHANNELS`, `NUMSUB` and `NUMPAT` pipelined), whatever the number of subscribers.
//! - Pushed updates are built once and shared by every open `/events` stream, at most one
//!   every [`DashboardSettings::push_interval`], so many open tabs cost no more Redis work
//!   than one.
//! - Every answer's size is bounded: at most [`MAX_MESSAGES_PER_SUBSCRIPTION`] messages per
//!   subscriber, and payloads longer than [`DEFAULT_PAYLOAD_DISPLAY_BYTES`] are cut and marked
//!   `"truncated": true`; the server-wide channel lists (`active_channels`, `shard_channels`)
//!   are cut at [`Limits::max_listed_channels`] and marked.
//! - Each connection is bounded in time and number ([`http`]): request head and body
//!   timeouts, a write-progress timeout ([`Limits::write_timeout`]), at most
//!   [`Limits::max_connections`] at once.
//!
//! # Layout
//! - [`app`]: [`AppState`] (the hub and the [`DashboardSettings`]), [`router`] (the route
//!   table, fallbacks and the security headers on every response).
//! - [`limits`]: [`Limits`], every input bound with its `DEFAULT_*` value.
//! - [`form`]: the strict form decoder and the `target` / `count` parsing.
//! - [`access`]: [`AccessControl`] and the middleware that applies it: the access token
//!   (header or cookie) and its minimum length, the cross-site refusal and the loopback
//!   host check.
//! - [`throttle`]: [`FailureLimiter`], the per-address limit on wrong tokens (429), in a
//!   bounded table.
//! - [`client`]: the client's address and HTTPS, from the connection or a
//!   [`TrustedProxies`] reverse proxy's `X-Forwarded-*` headers.
//! - [`peers`]: [`PeerDirectory`](peers::PeerDirectory), every dashboard process's
//!   subscribers kept in Redis with an expiry, shown in `/state`'s `other_dashboards`.
//! - [`routes`]: the contract's handlers (`/state`, `/publish`, `/subscribe`, `/unsubscribe`,
//!   `/reset`) and `/healthz`.
//! - [`health`]: `/readyz` ([`Readiness`]): Redis answers within a second and every
//!   subscriber is live, else 503.
//! - [`metrics`]: [`Metrics`], one Prometheus registry per dashboard, `/metrics` and the
//!   middleware that counts and times requests by route pattern; the label bounds.
//! - [`openapi`]: `/openapi.json`, the OpenAPI 3.1 document generated from the handlers'
//!   `#[utoipa::path]` attributes and the body types ([`ApiDoc`]).
//! - [`document`]: [`StateDocument`] and its parts, the one typed shape of `/state` (also
//!   pushed by `/events` and described by `/openapi.json`), built from the library's data:
//!   subscribers with their gap history (`gaps_total`, `last_gap`, `warnings`), messages
//!   with payload truncation, counters, the connection mode, the other dashboards on the
//!   same Redis.
//! - [`state`]: [`build_state`], which fills a [`StateDocument`] with one Redis round trip,
//!   and the dashboard's cache that builds it once per hub version.
//! - [`push`]: `/events`, the coalesced server-sent-event stream that ends at shutdown: the
//!   whole document once, then deltas (made by the private `delta` module, whose protocol
//!   `docs/http-api.md` describes).
//! - [`error`]: [`ApiError`], the one error type of the HTTP layer, and [`ApiForm`], the form
//!   extractor whose rejections use the same `{"error": ...}` body.
//! - [`assets`]: the page (`index.html`, `app.js`, `style.css`, `favicon.svg`), embedded with
//!   `include_str!`.
//! - [`http`]: the HTTP/1.1 server under the router: accept loop, connection cap, request
//!   head and body timeouts, the write-progress timeout that cuts clients which stop
//!   reading, graceful shutdown.
//! - [`server`]: [`DashboardOptions`], [`Dashboard`], [`run_dashboard`], [`serve`],
//!   [`shutdown_signal`], [`seed_defaults`] and [`DashboardError`]. Which Redis to use (the
//!   configured one, or a private throwaway `redis-server` on a unix socket only when none
//!   was configured), the client for a URL and CA file, and URL redaction come from
//!   `pubsub_hub_launcher`, which the binary uses too.

pub mod access;
pub mod app;
pub mod assets;
pub mod client;
pub(crate) mod delta;
pub mod document;
pub mod error;
pub mod form;
pub mod health;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod peers;
pub mod push;
pub mod routes;
pub mod server;
pub mod state;
pub mod throttle;

pub use access::AccessControl;
pub use app::{AppState, DashboardSettings, router};
pub use client::TrustedProxies;
pub use document::StateDocument;
pub use error::{ApiError, ApiForm};
pub use health::Readiness;
pub use limits::{Limit, LimitError, LimitProblem, Limits};
pub use metrics::Metrics;
pub use openapi::ApiDoc;
pub use pubsub_hub_launcher::{LaunchError, PrivateRedis};
pub use server::{
    DASHBOARD_BUFFER_MAX_BYTES, DEFAULT_SUBSCRIPTIONS, Dashboard, DashboardError, DashboardOptions,
    dashboard_hub_config, run_dashboard, seed_defaults, serve, serve_with_state, shutdown_signal,
};
pub use state::{
    DEFAULT_PAYLOAD_DISPLAY_BYTES, MAX_MESSAGES_PER_SUBSCRIPTION, app_state_document, build_state,
};
pub use throttle::{FailureLimit, FailureLimiter};
