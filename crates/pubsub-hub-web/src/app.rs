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

/// What the dashboard shows and how often it pushes. The defaults are the contract's
/// (`docs/http-api.md`).
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
    /// The newest `/state` document, served until the hub's version moves (or it is
    /// [`STATE_MAX_AGE`](crate::state::STATE_MAX_AGE) old).
    pub(crate) states: Arc<crate::state::StateCache>,
    /// What one request may ask for; every route checks its input against it.
    pub limits: Arc<Limits>,
    /// Token, host and cross-site rules, applied by [`access::guard`] before any route.
    pub access: Arc<AccessControl>,
    /// Every dashboard process's subscribers through Redis, shown in `/state`'s
    /// `other_dashboards` (see [`crate::peers`]).
    pub peers: Arc<crate::peers::PeerDirectory>,
    /// This dashboard's metrics (its own registry), rendered by `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Held by `/subscribe`, `/unsubscribe` and `/reset` while they change the registry, so
    /// a limit check and the change it allows cannot interleave with another change.
    pub(crate) writes: Arc<tokio::sync::Mutex<()>>,
    /// The changes running in tasks of their own, so that a client leaving cannot stop
    /// them half-way ([`Detached::run`]); the server waits for them at shutdown.
    pub(crate) detached: Arc<Detached>,
}

/// Changes (`/publish`, `/subscribe`, `/unsubscribe`, `/reset`) run to their end in a task
/// of their own, whatever happens to the request.
///
/// When a client closes or half-closes its connection, hyper drops the handler's future at
/// whatever `.await` it has reached. A change dropped half-way would leave half a change:
/// a reset that closed every subscriber but seeded none, five of twenty publishes. So the
/// handler hands the change (body already read and checked) to a task and awaits its
/// result; if the handler is dropped the task still finishes, as if the client had stayed.
/// At most [`Limits::max_connections`] such tasks run at once (the requests that started
/// them held connections); beyond that the answer is 503 busy, so clients that come and go
/// cannot pile up tasks.
#[derive(Debug, Default)]
pub(crate) struct Detached {
    running: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// Counts one detached change while it lives, also if its task panics or is aborted.
struct Running(Arc<Detached>);

impl Drop for Running {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Detached {
    /// Runs `change` in its own task and returns its result. Refuses with
    /// [`ApiError::Busy`](crate::ApiError::Busy) when `max` changes are already running.
    ///
    /// # Cancel safety
    /// Dropping the returned future does not stop the change: it runs to its end, and only
    /// its result is lost.
    pub(crate) async fn run<T, F>(
        self: &Arc<Self>,
        max: usize,
        change: F,
    ) -> Result<T, crate::ApiError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, crate::ApiError>> + Send + 'static,
    {
        use std::sync::atomic::Ordering;
        if self.running.fetch_add(1, Ordering::AcqRel) >= max {
            drop(Running(Arc::clone(self)));
            return Err(crate::ApiError::Busy);
        }
        let running = Running(Arc::clone(self));
        let task = tokio::spawn(async move {
            let result = change.await;
            drop(running);
            result
        });
        task.await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "a change failed");
            Err(crate::ApiError::Internal)
        })
    }

    /// Resolves when no detached change is running.
    pub(crate) async fn wait_idle(&self) {
        use std::sync::atomic::Ordering;
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.running.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl AppState {
    /// State for `hub` with the default settings.
    pub fn new(hub: PubSubHub) -> Self {
        Self::with_settings(hub, DashboardSettings::default())
    }

    /// State for `hub` with `settings`, the default [`Limits`] and no access control.
    /// Inside a Tokio runtime this starts the peer directory's task, which ends when
    /// [`AppState::shutdown`] is cancelled.
    pub fn with_settings(hub: PubSubHub, settings: DashboardSettings) -> Self {
        let state = AppState {
            metrics: Arc::new(Metrics::new(&hub)),
            hub,
            settings: Arc::new(settings),
            shutdown: CancellationToken::new(),
            feed: Arc::new(StateFeed::new()),
            states: Arc::default(),
            limits: Arc::new(Limits::default()),
            access: Arc::new(AccessControl::open()),
            peers: Arc::new(crate::peers::PeerDirectory::new()),
            writes: Arc::new(tokio::sync::Mutex::new(())),
            detached: Arc::new(Detached::default()),
        };
        state.peers.start(&state.hub, &state.shutdown);
        state
    }

    /// Replaces the limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = Arc::new(limits);
        // Documents built under the old bound must not be served under the new one.
        self.states = Arc::default();
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
