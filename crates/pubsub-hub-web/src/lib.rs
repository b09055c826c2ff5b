//! # pubsub_hub_web
//!
//! The pubsub-hub dashboard: the guide's demo web server on axum, speaking the guide's HTTP
//! contract exactly (`/state`, `/publish`, `/subscribe`, `/unsubscribe`, `/reset`), plus a
//! live push stream (`/events`, server-sent events) and a self-contained page.
//!
//! ```no_run
//! use pubsub_hub_web::{DashboardOptions, run_dashboard, shutdown_signal};
//!
//! # async fn demo() -> Result<(), pubsub_hub_web::DashboardError> {
//! // Binds 127.0.0.1:8103, connects to localhost:6379 (or starts a private redis-server),
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
//!   timeouts, at most [`Limits::max_connections`] at once.
//!
//! # Layout
//! - [`app`]: [`AppState`] (the hub and the [`DashboardSettings`]), [`router`] (the route
//!   table, fallbacks and the security headers on every response).
//! - [`limits`]: [`Limits`], every input bound with its `DEFAULT_*` value.
//! - [`form`]: the strict form decoder and the `target` / `count` parsing.
//! - [`access`]: [`AccessControl`] and the middleware that applies it: the access token
//!   (header or cookie), the cross-site refusal and the loopback host check.
//! - [`gaps`]: [`GapTracker`], the per-subscriber history of disconnections that `/state`
//!   shows as `gaps_total`, `last_gap` and `warnings`.
//! - [`routes`]: the contract's handlers (`/state`, `/publish`, `/subscribe`, `/unsubscribe`,
//!   `/reset`) and `/healthz`.
//! - [`health`]: `/readyz` ([`Readiness`]): Redis answers within a second and every
//!   subscriber is live, else 503.
//! - [`metrics`]: [`Metrics`], one Prometheus registry per dashboard, `/metrics` and the
//!   middleware that counts and times requests by route pattern; the label bounds.
//! - [`openapi`]: `/openapi.json`, the OpenAPI 3.1 document generated from the handlers'
//!   `#[utoipa::path]` attributes and the body types ([`ApiDoc`]).
//! - [`state`]: [`build_state`], the `/state` document, with payload truncation.
//! - [`push`]: `/events`, the coalesced server-sent-event stream that ends at shutdown.
//! - [`error`]: [`ApiError`], the one error type of the HTTP layer, and [`ApiForm`], the form
//!   extractor whose rejections use the same `{"error": ...}` body.
//! - [`assets`]: the page (`index.html`, `app.js`, `style.css`, `favicon.svg`), embedded with
//!   `include_str!`.
//! - [`http`]: the HTTP/1.1 server under the router: accept loop, connection cap, request
//!   head and body timeouts, graceful shutdown.
//! - [`embedded`]: [`EmbeddedRedis`], the private throwaway `redis-server` started when
//!   nothing answers at the configured address.
//! - [`server`]: [`DashboardOptions`], [`Dashboard`], [`run_dashboard`], [`serve`],
//!   [`shutdown_signal`], [`seed_defaults`] and [`DashboardError`].

pub mod access;
pub mod app;
pub mod assets;
pub mod embedded;
pub mod error;
pub mod form;
pub mod gaps;
pub mod health;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod push;
pub mod routes;
pub mod server;
pub mod state;

pub use access::AccessControl;
pub use app::{AppState, DashboardSettings, router};
pub use embedded::{EmbeddedError, EmbeddedRedis};
pub use error::{ApiError, ApiForm};
pub use gaps::GapTracker;
pub use health::Readiness;
pub use limits::Limits;
pub use metrics::Metrics;
pub use openapi::ApiDoc;
pub use server::{
    DASHBOARD_BUFFER_MAX_BYTES, DEFAULT_SUBSCRIPTIONS, Dashboard, DashboardError, DashboardOptions,
    dashboard_hub_config, run_dashboard, seed_defaults, serve, serve_with_state, shutdown_signal,
};
pub use state::{
    DEFAULT_PAYLOAD_DISPLAY_BYTES, MAX_MESSAGES_PER_SUBSCRIPTION, app_state_document, build_state,
};
