//! The contract's routes (see `shared/spec/http-api.md`) and `/healthz`.
//!
//! Form fields are read as optional strings and validated here, so that a missing field
//! gets the contract's message (`channel is required`) instead of a deserializer's.

use axum::Json;
use axum::extract::State;
use pubsub_hub::TargetKind;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::error::{ApiError, ApiForm};
use crate::form::{parse_count, parse_targets};
use crate::server::seed_defaults;
use crate::state::app_state_document;

/// Most publishes one `POST /publish` makes by default (`count` is clamped to
/// `1..=Limits::max_publish_count`).
pub const MAX_PUBLISH_COUNT: u32 = crate::limits::DEFAULT_MAX_PUBLISH_COUNT;

/// `POST /publish` fields.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PublishForm {
    /// Channel to publish to (trimmed, required).
    pub channel: String,
    /// Message body (trimmed, required); sent inside the `{body, seq, of}` envelope.
    pub message: String,
    /// How many times to publish; see [`parse_count`](crate::form::parse_count).
    pub count: Option<String>,
}

/// `POST /subscribe` fields.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SubscribeForm {
    /// Subscriber name (trimmed, required, unique).
    pub name: String,
    /// `channel` (the default when absent or empty) or `pattern`.
    pub kind: String,
    /// Comma-separated channels or patterns.
    pub target: String,
}

/// `POST /unsubscribe` fields.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct UnsubscribeForm {
    /// Subscriber name (trimmed, required).
    pub name: String,
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
pub async fn state(State(app): State<AppState>) -> Json<Value> {
    Json(app_state_document(&app).await)
}

/// `POST /publish`: publishes the `{body, seq, of}` envelope `count` times, in order.
///
/// Everything is checked before the first PUBLISH. If Redis fails part-way (it went away),
/// the answer is the error and `stats.published_total` says how many went out.
pub async fn publish(
    State(app): State<AppState>,
    ApiForm(form): ApiForm<PublishForm>,
) -> Result<Json<Value>, ApiError> {
    let channel = required(&form.channel, "channel")?;
    let message = required(&form.message, "message")?;
    app.limits.check_target("channel", channel)?;
    app.limits.check_message(message)?;
    let count = parse_count(form.count.as_deref(), app.limits.max_publish_count);
    let mut delivered = Vec::with_capacity(count as usize);
    for seq in 1..=count {
        let envelope = json!({ "body": message, "seq": seq, "of": count });
        delivered.push(app.hub.publish(channel, &envelope).await?);
    }
    let state = app_state_document(&app).await;
    Ok(Json(json!({
        "channel": channel,
        "publishes": count,
        "delivered": delivered,
        "state": state,
    })))
}

/// `POST /subscribe`: adds a named channel or pattern subscriber. All input and the
/// subscriber limit are checked first; a Redis failure leaves nothing behind.
pub async fn subscribe(
    State(app): State<AppState>,
    ApiForm(form): ApiForm<SubscribeForm>,
) -> Result<Json<Value>, ApiError> {
    let name = required(&form.name, "name")?;
    app.limits.check_name(name)?;
    let kind = match form.kind.trim() {
        "" | "channel" => TargetKind::Channel,
        "pattern" => TargetKind::Pattern,
        other => {
            return Err(ApiError::bad_request(format!(
                "kind must be 'channel' or 'pattern', not {other:?}"
            )));
        }
    };
    let targets = parse_targets(&form.target);
    if targets.is_empty() {
        return Err(ApiError::bad_request("target is required"));
    }
    app.limits.check_targets(&targets)?;
    {
        let _writing = app.writes.lock().await;
        if app.hub.subscriptions().len() >= app.limits.max_subscriptions
            && app.hub.get_subscription(name).is_none()
        {
            return Err(app.limits.subscriptions_full());
        }
        app.hub
            .subscribe_kind(name, kind, targets)
            .await
            .map_err(|e| {
                if e.is_limit_exceeded() {
                    app.limits.subscriptions_full()
                } else {
                    ApiError::from(e)
                }
            })?;
    }
    Ok(Json(app_state_document(&app).await))
}

/// `POST /unsubscribe`: removes a subscriber; `removed` says whether there was one.
pub async fn unsubscribe(
    State(app): State<AppState>,
    ApiForm(form): ApiForm<UnsubscribeForm>,
) -> Result<Json<Value>, ApiError> {
    let name = required(&form.name, "name")?;
    let removed = {
        let _writing = app.writes.lock().await;
        app.hub.unsubscribe(name).await
    };
    let state = app_state_document(&app).await;
    Ok(Json(json!({ "removed": removed, "state": state })))
}

/// `POST /reset`: closes every subscription, zeroes the counters and seeds the defaults.
///
/// Redis is asked first, so that with Redis away the answer is a 503 and the subscribers
/// are left as they were instead of being closed with nothing to replace them.
pub async fn reset(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    {
        let _writing = app.writes.lock().await;
        app.hub.pattern_subscriber_count().await?;
        app.hub.close_all().await;
        app.hub.reset_stats();
        app.gaps.clear();
        seed_defaults(&app.hub).await?;
    }
    Ok(Json(app_state_document(&app).await))
}

/// `GET /healthz`: the process is up and serving (it does not ask Redis; `/state` says
/// whether Redis answers).
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Any unknown route: a JSON 404.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// A known route with the wrong method: a JSON 405.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
