//! The application: shared state and the route table.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware;
use axum::routing::{get, post};
use pubsub_hub::PubSubHub;
use tokio_util::sync::CancellationToken;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultOnFailure, DefaultOnRequest, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::access::{self, AccessControl};
use crate::gaps::GapTracker;
use crate::limits::Limits;
use crate::metrics::{Metrics, UNMATCHED_ROUTE};
use crate::push::StateFeed;
use crate::state::{DEFAULT_PAYLOAD_DISPLAY_BYTES, MAX_MESSAGES_PER_SUBSCRIPTION};
use crate::{assets, health, metrics, openapi, push, routes};

/// Largest accepted request body by default ([`Limits::max_body_bytes`]).
pub const MAX_BODY_BYTES: usize = crate::limits::DEFAULT_MAX_BODY_BYTES;

/// The Content-Security-Policy sent with every response: only our own script and style,
/// no inline code, no framing. The page is written for it (external `app.js`, no `on*=`).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// What the dashboard shows and how often it pushes. The defaults are the contract's.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DashboardSettings {
    /// Messages per subscriber in `/state` and pushes, newest first
    /// ([`MAX_MESSAGES_PER_SUBSCRIPTION`]).
    pub message_limit: usize,
    /// Payload display bound ([`DEFAULT_PAYLOAD_DISPLAY_BYTES`]); longer ones are cut and
    /// marked `truncated`.
    pub payload_display_bytes: usize,
    /// Least time between two pushed states: a burst of messages becomes one update per
    /// interval, not one per message.
    pub push_interval: Duration,
    /// How often an idle `/events` stream sends a comment, so proxies keep it open.
    pub keep_alive: Duration,
    /// How long `/state` waits for Redis' part ([`DEFAULT_STATE_TIMEOUT`]) before it
    /// answers with the local part and `"redis": {"available": false}`; below the hub's
    /// command timeout so that `/state` answers within a second when Redis is stalled.
    pub state_timeout: Duration,
    /// How long `/subscribe`, `/unsubscribe` and `/reset` wait for an earlier change to
    /// finish ([`DEFAULT_WRITE_WAIT`]) before answering 503 (busy). Changes are serialized,
    /// and one stuck on a stalled Redis holds the others for up to the command timeout:
    /// without this bound eight queued changes answered after up to eight seconds.
    pub write_wait: Duration,
}

/// Default of [`DashboardSettings::state_timeout`].
pub const DEFAULT_STATE_TIMEOUT: Duration = Duration::from_millis(500);

/// Default of [`DashboardSettings::write_wait`]: half the hub's command timeout, so that a
/// change answers within about 1.5 s even behind one stuck on a stalled Redis.
pub const DEFAULT_WRITE_WAIT: Duration = Duration::from_millis(500);

impl Default for DashboardSettings {
    fn default() -> Self {
        DashboardSettings {
            message_limit: MAX_MESSAGES_PER_SUBSCRIPTION,
            payload_display_bytes: DEFAULT_PAYLOAD_DISPLAY_BYTES,
            push_interval: Duration::from_millis(100),
            keep_alive: Duration::from_secs(15),
            state_timeout: DEFAULT_STATE_TIMEOUT,
            write_wait: DEFAULT_WRITE_WAIT,
        }
    }
}

impl DashboardSettings {
    /// Sets the payload display bound.
    pub fn with_payload_display_bytes(mut self, n: usize) -> Self {
        self.payload_display_bytes = n;
        self
    }

    /// Sets the least time between two pushed states.
    pub fn with_push_interval(mut self, d: Duration) -> Self {
        self.push_interval = d;
        self
    }

    /// Sets how long `/state` waits for Redis.
    pub fn with_state_timeout(mut self, d: Duration) -> Self {
        self.state_timeout = d;
        self
    }

    /// Sets how long a change waits for an earlier one before answering 503.
    pub fn with_write_wait(mut self, d: Duration) -> Self {
        self.write_wait = d;
        self
    }

    /// Sets the keep-alive interval of `/events`.
    pub fn with_keep_alive(mut self, d: Duration) -> Self {
        self.keep_alive = d;
        self
    }
}

/// Shared by every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The hub every route works on.
    pub hub: PubSubHub,
    /// Display and push settings.
    pub settings: Arc<DashboardSettings>,
    /// Cancelled at shutdown; every `/events` stream ends on it, so open streams never hold
    /// up a graceful shutdown (axum issue #2673).
    pub shutdown: CancellationToken,
    /// The one producer of pushed states, shared by all `/events` streams.
    pub(crate) feed: Arc<StateFeed>,
    /// What one request may ask for; every route checks its input against it.
    pub limits: Arc<Limits>,
    /// Token, host and cross-site rules, applied by [`access::guard`] before any route.
    pub access: Arc<AccessControl>,
    /// The subscribers' delivery gaps, shown in `/state`.
    pub gaps: Arc<GapTracker>,
    /// This dashboard's metrics (its own registry), rendered by `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Held by `/subscribe`, `/unsubscribe` and `/reset` while they change the registry, so
    /// a limit check and the change it allows cannot interleave with another change.
    pub(crate) writes: Arc<tokio::sync::Mutex<()>>,
}

impl AppState {
    /// State for `hub` with the default settings.
    pub fn new(hub: PubSubHub) -> Self {
        Self::with_settings(hub, DashboardSettings::default())
    }

    /// State for `hub` with `settings`, the default [`Limits`] and no access control.
    /// Inside a Tokio runtime this starts the gap tracker's task.
    pub fn with_settings(hub: PubSubHub, settings: DashboardSettings) -> Self {
        let state = AppState {
            metrics: Arc::new(Metrics::new(&hub)),
            hub,
            settings: Arc::new(settings),
            shutdown: CancellationToken::new(),
            feed: Arc::new(StateFeed::new()),
            limits: Arc::new(Limits::default()),
            access: Arc::new(AccessControl::open()),
            gaps: Arc::new(GapTracker::new()),
            writes: Arc::new(tokio::sync::Mutex::new(())),
        };
        state.gaps.start(&state.hub, &state.shutdown);
        state
    }

    /// Replaces the limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = Arc::new(limits);
        self
    }

    /// Replaces the access rules.
    pub fn with_access(mut self, access: AccessControl) -> Self {
        self.access = Arc::new(access);
        self
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("hub", &self.hub)
            .field("settings", &self.settings)
            .field("limits", &self.limits)
            .field("access", &self.access)
            .field("shutting_down", &self.shutdown.is_cancelled())
            .finish()
    }
}

/// The whole dashboard as a `Router`: the page and its assets, the contract's routes,
/// `/events`, the operations routes (`/healthz`, `/readyz`, `/metrics`, `/openapi.json`),
/// JSON 404 / 405 answers, the access rules ([`access::guard`]), a body limit, request
/// metrics and tracing by route pattern, and the security headers.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::script))
        .route("/style.css", get(assets::style))
        .route("/favicon.svg", get(assets::favicon))
        .route("/state", get(routes::state))
        .route("/publish", post(routes::publish))
        .route("/subscribe", post(routes::subscribe))
        .route("/unsubscribe", post(routes::unsubscribe))
        .route("/reset", post(routes::reset))
        .route("/events", get(push::events))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/openapi.json", get(openapi::openapi_json))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), access::guard))
        // Outside the access guard, so refusals are counted under their route too.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track_http,
        ))
        // The span names the route pattern only, never the URI: a query may carry the
        // access token. Status and latency are in the response event.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &axum::http::Request<axum::body::Body>| {
                    let route = request
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
                    tracing::info_span!("request", method = %request.method(), route = %route)
                })
                .on_request(DefaultOnRequest::new().level(Level::DEBUG))
                .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                // `ApiError` logs server-side failures with their cause already.
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
        .layer(header_layer(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(header_layer(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .layer(header_layer(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(header_layer(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(header_layer(
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ))
        .layer(header_layer(
            HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("same-origin"),
        ))
        // API answers are live data; the assets and the SSE stream set their own.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .with_state(state)
}

fn header_layer(name: HeaderName, value: HeaderValue) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::overriding(name, value)
}
