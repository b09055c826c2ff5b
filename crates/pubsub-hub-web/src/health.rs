//! `GET /readyz`: whether this dashboard can do its work right now.
//!
//! `/healthz` (in [`crate::routes`]) says only that the process answers; a liveness probe
//! uses it, and it never asks Redis, so a Redis outage does not get the process restarted.
//! `/readyz` is for a load balancer or a readiness probe: it is ready when Redis answers
//! within [`READY_REDIS_TIMEOUT`] and every subscriber is live. While Redis is down, or a
//! subscriber is still reconnecting after it came back, the answer is 503 with the same
//! JSON, so a probe can log why.
//!
//! Both are exempt from the access token ([`crate::access::PUBLIC_PATHS`]), and neither
//! tells more than counts.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use pubsub_hub::SubscriptionStatus;
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;

/// How long the readiness probe (and the metrics scrape's) waits for Redis: 1 s.
pub const READY_REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// The `/readyz` answer, with 200 when `ready` and 503 when not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Readiness {
    /// Redis answers and every subscriber is live.
    pub ready: bool,
    /// Whether Redis answered the probe in time.
    pub redis: RedisHealth,
    /// How many subscribers are live, out of how many.
    pub subscribers: SubscriberCounts,
}

/// Whether Redis answered the readiness probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RedisHealth {
    /// Redis answered within [`READY_REDIS_TIMEOUT`].
    Up,
    /// Redis did not answer in time, refused, or the dashboard is shutting down.
    Down,
}

/// Subscriber counts of `/readyz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct SubscriberCounts {
    /// Subscribers receiving now.
    pub live: u64,
    /// All subscribers.
    pub total: u64,
}

/// True when Redis answers a command on the hub's command connection within
/// [`READY_REDIS_TIMEOUT`]. The probe is `PUBSUB NUMPAT` (the library offers no PING of its
/// own; any answer proves the connection the dashboard publishes on works), timed in the
/// metrics as `command="numpat"`.
///
/// # Cancel safety
/// Cancel-safe: it only reads, and holds no lock across an `.await`; dropping it leaves
/// nothing behind.
pub async fn redis_answers(app: &AppState) -> bool {
    let started = Instant::now();
    let answered = matches!(
        tokio::time::timeout(READY_REDIS_TIMEOUT, app.hub.pattern_subscriber_count()).await,
        Ok(Ok(_))
    );
    app.metrics
        .observe_redis("numpat", started.elapsed(), answered);
    answered
}

/// The readiness of `app` now: one bounded Redis probe plus the subscribers' statuses.
///
/// # Cancel safety
/// Cancel-safe: it only reads, and holds no lock across an `.await`; dropping it leaves
/// nothing behind.
pub async fn readiness(app: &AppState) -> Readiness {
    let redis_up = redis_answers(app).await;
    let subs = app.hub.subscriptions();
    let live = subs
        .iter()
        .filter(|s| s.status() == SubscriptionStatus::Live)
        .count() as u64;
    let total = subs.len() as u64;
    Readiness {
        ready: redis_up && live == total,
        redis: if redis_up {
            RedisHealth::Up
        } else {
            RedisHealth::Down
        },
        subscribers: SubscriberCounts { live, total },
    }
}

/// `GET /readyz`: 200 when ready, else 503; the body is a [`Readiness`] either way.
///
/// # Cancel safety
/// Cancel-safe: it only reads; dropping it leaves nothing behind.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    description = "Ready when Redis answers within 1 s and every subscriber is live. Never \
                   needs the access token.",
    responses(
        (status = 200, description = "Ready", body = Readiness,
         example = json!({"ready": true, "redis": "up", "subscribers": {"live": 3, "total": 3}})),
        (status = 503, description = "Not ready: Redis is down or a subscriber is not live",
         body = Readiness,
         example = json!({"ready": false, "redis": "down", "subscribers": {"live": 0, "total": 3}})),
    )
)]
pub async fn readyz(State(app): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let readiness = readiness(&app).await;
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness))
}
