//! The contract's routes (`docs/http-api.md`) and `/healthz`.
//!
//! Form fields are read as optional strings and validated here, so that a missing field
//! gets the contract's message (`channel is required`) instead of a deserializer's.
//!
//! # Cancel safety
//! A client that closes or half-closes its connection makes hyper drop the handler's future.
//! Before the request is complete (head and body read and checked) that changes nothing.
//! After it, each change (`/publish`'s publishes, `/subscribe`, `/unsubscribe`, `/reset`)
//! runs in a task of its own and finishes as if the client had stayed (see
//! `app::Detached`); only the answer is lost. Reading routes hold no lock and reserve
//! nothing across an `.await`.

use axum::Json;
use axum::extract::State;
use pubsub_hub::TargetKind;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::app::AppState;
use crate::error::{ApiError, ApiForm};
use crate::form::{parse_count, parse_targets};
use crate::openapi::{
    ErrorBody, HealthStatus, PublishReply, StateDocument, UnsubscribeReply, default_fields,
};
use crate::server::seed_defaults;
use crate::state::app_state_document;

/// Most publishes one `POST /publish` makes by default (`count` is clamped to
/// `1..=Limits::max_publish_count`).
pub const MAX_PUBLISH_COUNT: u32 = crate::limits::DEFAULT_MAX_PUBLISH_COUNT;

/// `POST /publish` fields.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct PublishForm {
    /// Channel to publish to (trimmed, required).
    #[schema(required = true, schema_with = default_fields::channel)]
    pub channel: String,
    /// Message body (trimmed, required); sent inside the `{body, seq, of}` envelope.
    #[schema(required = true, schema_with = default_fields::message)]
    pub message: String,
    /// How many times to publish; see [`parse_count`].
    #[schema(schema_with = default_fields::count)]
    pub count: Option<String>,
    /// `channel` (the default when absent or empty: PUBLISH, as in the contract) or `shard`
    /// (SPUBLISH, to the subscribers of kind `shard`). Additive.
    #[schema(schema_with = default_fields::publish_kind)]
    pub kind: String,
}

/// `POST /subscribe` fields.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct SubscribeForm {
    /// Subscriber name (trimmed, required, unique).
    #[schema(required = true, schema_with = default_fields::name)]
    pub name: String,
    /// `channel` (the default when absent or empty), `pattern`, or `shard` (additive:
    /// SSUBSCRIBE, Redis 7 sharded pub/sub).
    #[schema(schema_with = default_fields::kind)]
    pub kind: String,
    /// Comma-separated channels or patterns.
    #[schema(required = true, schema_with = default_fields::target)]
    pub target: String,
}

/// `POST /unsubscribe` fields.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct UnsubscribeForm {
    /// Subscriber name (trimmed, required).
    #[schema(required = true, schema_with = default_fields::unsubscribe_name)]
    pub name: String,
}

/// Takes the write lock of `/subscribe`, `/unsubscribe` and `/reset`, waiting at most
/// [`DashboardSettings::write_wait`](crate::DashboardSettings::write_wait): a change stuck
/// on a stalled Redis holds it for up to the command timeout, and the requests queued
/// behind it should not add up those waits. Past the bound the answer is a 503 that says so.
async fn write_lock(app: &AppState) -> Result<tokio::sync::MutexGuard<'_, ()>, ApiError> {
    tokio::time::timeout(app.settings.write_wait, app.writes.lock())
        .await
        .map_err(|_| ApiError::Busy)
}

/// A trimmed required field, or the contract's 400.
fn required<'a>(value: &'a str, field: &str) -> Result<&'a str, ApiError> {
    let value = value.trim();
    if value.is_empty() {
        Err(ApiError::bad_request(format!("{field} is required")))
    } else {
        Ok(value)
    }
}

/// `GET /state`.
///
/// The document is built once per hub version and its JSON served to every caller until
/// the hub changes (see [`app_state_document`] for the Redis part's age).
///
/// # Cancel safety
/// Cancel-safe: it only reads; dropping it leaves nothing behind (a build it began is
/// dropped with it, and the previous document stays).
#[utoipa::path(
    get,
    path = "/state",
    tag = "contract",
    description = "Every subscriber with its 15 newest messages (newest first), what Redis \
                   reports about pub/sub, and the counters. Answers 200 within about a second \
                   also while Redis is down: then `redis.available` is false and the \
                   Redis-side fields are empty. Built once per change of the hub (its \
                   `version`) and shared by every caller until the next one; the Redis-side \
                   fields, which change without the hub seeing it, are at most one second \
                   old. A client whose `Accept-Encoding` admits gzip gets the document \
                   gzip-compressed (`Content-Encoding: gzip`), compressed once per build \
                   and shared the same way; every answer carries `Vary: Accept-Encoding`.",
    responses(
        (status = 200, description = "The state", body = StateDocument),
        (status = 401, description = "An access token is configured and was not presented", body = ErrorBody),
        (status = 403, description = "Refused whatever the credentials (a foreign Host)", body = ErrorBody),
    )
)]
pub async fn state(
    State(app): State<AppState>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    use axum::response::IntoResponse;
    let built = crate::state::app_state(&app).await;
    let json = HeaderValue::from_static("application/json");
    // The answer depends on Accept-Encoding, so caches must key on it.
    let vary = (header::VARY, HeaderValue::from_static("accept-encoding"));
    match accepts_gzip(&headers).then(|| built.gzipped()).flatten() {
        Some(gzip) => (
            [
                (header::CONTENT_TYPE, json),
                (header::CONTENT_ENCODING, HeaderValue::from_static("gzip")),
                vary,
            ],
            gzip,
        )
            .into_response(),
        None => ([(header::CONTENT_TYPE, json), vary], built.json.clone()).into_response(),
    }
}

/// Whether `Accept-Encoding` admits gzip: a `gzip` (or `x-gzip`) or `*` coding whose
/// quality is not 0 (RFC 9110, section 12.5.3). No header, or only other codings, means
/// the identity encoding.
fn accepts_gzip(headers: &axum::http::HeaderMap) -> bool {
    let mut gzip = None;
    let mut any = None;
    for value in headers.get_all(axum::http::header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let quality = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
                .map(|q| q.trim().parse::<f32>().unwrap_or(0.0))
                .next()
                .unwrap_or(1.0);
            let allowed = quality > 0.0;
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                gzip = Some(allowed);
            } else if coding == "*" {
                any = Some(allowed);
            }
        }
    }
    gzip.or(any).unwrap_or(false)
}

/// `POST /publish`: publishes the `{body, seq, of}` envelope `count` times, in order.
///
/// Everything is checked before the first PUBLISH. If Redis fails part-way (it went away),
/// the answer is the error and `stats.published_total` says how many went out.
///
/// # Cancel safety
/// Dropping it (the client left) before the form is read changes nothing; after that the
/// change runs to its end in a task of its own (see the module documentation), and only
/// the answer is lost.
#[utoipa::path(
    post,
    path = "/publish",
    tag = "contract",
    description = "Publishes `{\"body\": message, \"seq\": i, \"of\": count}` `count` times \
                   (i from 1). Everything is checked before the first PUBLISH. With \
                   `kind=shard` (additive) it uses SPUBLISH, which reaches the `shard` \
                   subscribers.",
    request_body(content = PublishForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Published", body = PublishReply),
        (status = 400, description = "Bad input: a required field is empty, a control character, a malformed form", body = ErrorBody),
        (status = 401, description = "An access token is configured and was not presented", body = ErrorBody),
        (status = 403, description = "Refused: cross-site, or a foreign Host", body = ErrorBody),
        (status = 408, description = "The request body stopped arriving (`body_read_timeout`); the connection is closed", body = ErrorBody),
        (status = 413, description = "Over a size limit (body, message, channel)", body = ErrorBody),
        (status = 415, description = "The body is not a form", body = ErrorBody),
        (status = 502, description = "Redis refused the command (ACL, credentials)", body = ErrorBody),
        (status = 503, description = "Redis is unavailable, or the server is shutting down", body = ErrorBody),
    )
)]
pub async fn publish(
    State(app): State<AppState>,
    ApiForm(form): ApiForm<PublishForm>,
) -> Result<Json<PublishReply>, ApiError> {
    let channel = required(&form.channel, "channel")?;
    let message = required(&form.message, "message")?;
    app.limits.check_target("channel", channel)?;
    app.limits.check_message(message)?;
    let kind = match form.kind.trim() {
        "" | "channel" => TargetKind::Channel,
        "shard" => TargetKind::Shard,
        other => {
            return Err(ApiError::bad_request(format!(
                "kind must be 'channel' or 'shard' (messages go to channels; patterns only \
                 match them), not {other:?}"
            )));
        }
    };
    let count = parse_count(form.count.as_deref(), app.limits.max_publish_count);
    let subscribed = app
        .hub
        .subscriptions()
        .iter()
        .any(|s| s.kind() == kind && s.targets().iter().any(|t| t == channel));
    // All `count` publishes go out, or the first failure ends them, even if the client
    // leaves meanwhile (see `Detached`).
    let publishing = {
        let app = app.clone();
        let channel = channel.to_owned();
        let message = message.to_owned();
        async move {
            let mut delivered = Vec::with_capacity(count as usize);
            for seq in 1..=count {
                let envelope = json!({ "body": message, "seq": seq, "of": count });
                let n = if kind == TargetKind::Shard {
                    let publish = app.hub.spublish(&channel, &envelope);
                    app.metrics.time_redis("publish", publish).await?
                } else {
                    let publish = app.hub.publish(&channel, &envelope);
                    app.metrics.time_redis("publish", publish).await?
                };
                delivered.push(n);
                app.metrics.count_publish(&channel, subscribed);
            }
            Ok(delivered)
        }
    };
    let delivered = app
        .detached
        .run(app.limits.max_connections, publishing)
        .await?;
    let state = app_state_document(&app).await;
    Ok(Json(PublishReply {
        channel: channel.to_owned(),
        publishes: count,
        delivered,
        kind: kind.as_str().to_owned(),
        state,
    }))
}

/// `POST /subscribe`: adds a named channel or pattern subscriber. All input and the
/// subscriber limit are checked first; a Redis failure leaves nothing behind.
///
/// # Cancel safety
/// Dropping it (the client left) before the form is read changes nothing; after that the
/// change runs to its end in a task of its own (see the module documentation), and only
/// the answer is lost.
#[utoipa::path(
    post,
    path = "/subscribe",
    tag = "contract",
    description = "Adds a named channel, pattern or (additive) shard subscriber. All input \
                   and the subscriber limit are checked first; a Redis failure leaves nothing \
                   behind.",
    request_body(content = SubscribeForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Subscribed; the state after it", body = StateDocument),
        (status = 400, description = "Bad input: a required field is empty, an unknown kind, a name in use, too many targets or subscribers, a control character, a malformed form", body = ErrorBody),
        (status = 401, description = "An access token is configured and was not presented", body = ErrorBody),
        (status = 403, description = "Refused: cross-site, or a foreign Host", body = ErrorBody),
        (status = 408, description = "The request body stopped arriving (`body_read_timeout`); the connection is closed", body = ErrorBody),
        (status = 413, description = "Over a size limit (body, name, target)", body = ErrorBody),
        (status = 415, description = "The body is not a form", body = ErrorBody),
        (status = 502, description = "Redis refused the command (ACL, credentials)", body = ErrorBody),
        (status = 503, description = "Redis is unavailable, busy (an earlier change is still waiting for a slow Redis), or the server is shutting down", body = ErrorBody),
    )
)]
pub async fn subscribe(
    State(app): State<AppState>,
    ApiForm(form): ApiForm<SubscribeForm>,
) -> Result<Json<StateDocument>, ApiError> {
    let name = required(&form.name, "name")?;
    app.limits.check_name(name)?;
    let kind = match form.kind.trim() {
        "" | "channel" => TargetKind::Channel,
        "pattern" => TargetKind::Pattern,
        "shard" => TargetKind::Shard,
        other => {
            return Err(ApiError::bad_request(format!(
                "kind must be 'channel', 'pattern' or 'shard', not {other:?}"
            )));
        }
    };
    let targets = parse_targets(&form.target);
    if targets.is_empty() {
        return Err(ApiError::bad_request("target is required"));
    }
    app.limits.check_targets(&targets)?;
    // The check and the subscribe run to their end even if the client leaves (see
    // `Detached`): a name is either subscribed and listed, or free.
    let subscribing = {
        let app = app.clone();
        let name = name.to_owned();
        async move {
            let _writing = write_lock(&app).await?;
            if app.hub.subscriptions().len() >= app.limits.max_subscriptions
                && app.hub.get_subscription(&name).is_none()
            {
                return Err(app.limits.subscriptions_full());
            }
            let subscribing = app.hub.subscribe_kind(&name, kind, targets);
            app.metrics
                .time_redis("subscribe", subscribing)
                .await
                .map_err(|e| {
                    if e.is_limit_exceeded() {
                        app.limits.subscriptions_full()
                    } else {
                        ApiError::from(e)
                    }
                })?;
            Ok(())
        }
    };
    app.detached
        .run(app.limits.max_connections, subscribing)
        .await?;
    Ok(Json(app_state_document(&app).await))
}

/// `POST /unsubscribe`: removes a subscriber; `removed` says whether there was one.
///
/// # Cancel safety
/// Dropping it (the client left) before the form is read changes nothing; after that the
/// change runs to its end in a task of its own (see the module documentation), and only
/// the answer is lost.
#[utoipa::path(
    post,
    path = "/unsubscribe",
    tag = "contract",
    description = "Removes a subscriber; `removed` says whether there was one.",
    request_body(content = UnsubscribeForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Done; the state after it", body = UnsubscribeReply),
        (status = 400, description = "Bad input: `name` is empty, a malformed form", body = ErrorBody),
        (status = 401, description = "An access token is configured and was not presented", body = ErrorBody),
        (status = 403, description = "Refused: cross-site, or a foreign Host", body = ErrorBody),
        (status = 408, description = "The request body stopped arriving (`body_read_timeout`); the connection is closed", body = ErrorBody),
        (status = 413, description = "The body is over `max_body_bytes`", body = ErrorBody),
        (status = 415, description = "The body is not a form", body = ErrorBody),
        (status = 503, description = "Busy: an earlier change is still waiting for a slow Redis; nothing was changed", body = ErrorBody),
    )
)]
pub async fn unsubscribe(
    State(app): State<AppState>,
    ApiForm(form): ApiForm<UnsubscribeForm>,
) -> Result<Json<UnsubscribeReply>, ApiError> {
    let name = required(&form.name, "name")?;
    let unsubscribing = {
        let app = app.clone();
        let name = name.to_owned();
        async move {
            let _writing = write_lock(&app).await?;
            let started = std::time::Instant::now();
            let removed = app.hub.unsubscribe(&name).await;
            app.metrics
                .observe_redis("unsubscribe", started.elapsed(), true);
            Ok(removed)
        }
    };
    let removed = app
        .detached
        .run(app.limits.max_connections, unsubscribing)
        .await?;
    let state = app_state_document(&app).await;
    Ok(Json(UnsubscribeReply { removed, state }))
}

/// `POST /reset`: closes every subscription, zeroes the counters and seeds the defaults.
///
/// Redis is asked first, so that with Redis away the answer is a 503 and the subscribers
/// are left as they were instead of being closed with nothing to replace them.
///
/// # Cancel safety
/// The whole reset (check, close, seed) runs to its end in a task of its own as soon as the
/// handler first runs (see the module documentation); dropping it loses only the answer.
#[utoipa::path(
    post,
    path = "/reset",
    tag = "contract",
    description = "Closes every subscription, zeroes the counters and seeds the three default \
                   subscribers again. Takes no fields.",
    responses(
        (status = 200, description = "Reset; the state after it", body = StateDocument),
        (status = 401, description = "An access token is configured and was not presented", body = ErrorBody),
        (status = 403, description = "Refused: cross-site, or a foreign Host", body = ErrorBody),
        (status = 502, description = "Redis refused the command (ACL, credentials)", body = ErrorBody),
        (status = 503, description = "Redis is unavailable or busy (nothing was changed), or the server is shutting down", body = ErrorBody),
    )
)]
pub async fn reset(State(app): State<AppState>) -> Result<Json<StateDocument>, ApiError> {
    // Closing everything and seeding the defaults again is one change: it runs to its end
    // even if the client leaves (see `Detached`), never leaving a dashboard with no
    // subscribers.
    let resetting = {
        let app = app.clone();
        async move {
            let _writing = write_lock(&app).await?;
            let check = app.hub.pattern_subscriber_count();
            app.metrics.time_redis("numpat", check).await?;
            app.hub.close_all().await;
            app.hub.reset_stats();
            seed_defaults(&app.hub).await?;
            Ok(())
        }
    };
    app.detached
        .run(app.limits.max_connections, resetting)
        .await?;
    Ok(Json(app_state_document(&app).await))
}

/// `GET /healthz`: the process is up and serving (it does not ask Redis; `/state` says
/// whether Redis answers).
///
/// # Cancel safety
/// Cancel-safe: nothing is awaited that holds state.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    description = "The process answers. Never asks Redis (see `/readyz`); never needs the \
                   access token.",
    responses((status = 200, description = "Alive", body = HealthStatus))
)]
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Any unknown route: a JSON 404.
///
/// # Cancel safety
/// Cancel-safe: nothing is awaited that holds state.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// A known route with the wrong method: a JSON 405.
///
/// # Cancel safety
/// Cancel-safe: nothing is awaited that holds state.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::accepts_gzip;
    use axum::http::{HeaderMap, HeaderValue, header::ACCEPT_ENCODING};

    fn with(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(ACCEPT_ENCODING, HeaderValue::from_static(v));
        }
        headers
    }

    #[test]
    fn gzip_is_chosen_only_when_admitted() {
        assert!(!accepts_gzip(&HeaderMap::new()));
        assert!(accepts_gzip(&with(&["gzip, deflate, br, zstd"])));
        assert!(accepts_gzip(&with(&["br;q=1.0, GZIP;q=0.5"])));
        assert!(accepts_gzip(&with(&["x-gzip"])));
        assert!(accepts_gzip(&with(&["*"])));
        assert!(accepts_gzip(&with(&["br", "gzip"])));
        assert!(!accepts_gzip(&with(&["identity"])));
        assert!(!accepts_gzip(&with(&["br, deflate"])));
        assert!(!accepts_gzip(&with(&["gzip;q=0"])));
        assert!(!accepts_gzip(&with(&["gzip; q=0.000"])));
        assert!(
            !accepts_gzip(&with(&["*, gzip;q=0"])),
            "an explicit gzip;q=0 wins over *"
        );
        assert!(!accepts_gzip(&with(&["*;q=0"])));
        assert!(!accepts_gzip(&with(&["gzip;q=nonsense"])));
        assert!(
            accepts_gzip(&with(&["gzip;level=1"])),
            "other parameters are not a quality"
        );
    }
}
