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
use crate::server::seed_defaults;
use crate::state::build_state;

/// Most publishes one `POST /publish` makes (`count` is clamped to `1..=MAX_PUBLISH_COUNT`).
pub const MAX_PUBLISH_COUNT: u32 = 20;

/// `POST /publish` fields.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PublishForm {
    /// Channel to publish to (trimmed, required).
    pub channel: String,
    /// Message body (trimmed, required); sent inside the `{body, seq, of}` envelope.
    pub message: String,
    /// How many times to publish; see [`parse_count`].
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

/// The contract's `count` rule: absent → 1, not an integer → 1, otherwise clamped to
/// `1..=MAX_PUBLISH_COUNT` (an integer too large to represent counts as the maximum).
pub fn parse_count(raw: Option<&str>) -> u32 {
    use std::num::IntErrorKind;
    let Some(raw) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
        return 1;
    };
    match raw.parse::<i64>() {
        Ok(n) => n.clamp(1, i64::from(MAX_PUBLISH_COUNT)) as u32,
        Err(e) if *e.kind() == IntErrorKind::PosOverflow => MAX_PUBLISH_COUNT,
        Err(_) => 1,
    }
}

/// Splits a comma-separated target list: items trimmed, empty items dropped.
pub fn parse_targets(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
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
    Json(build_state(&app.hub, &app.settings).await)
}

/// `POST /publish`: publishes the `{body, seq, of}` envelope `count` times, in order.
pub async fn publish(
    State(app): State<AppState>,
    ApiForm(form): ApiForm<PublishForm>,
) -> Result<Json<Value>, ApiError> {
    let channel = required(&form.channel, "channel")?;
    let message = required(&form.message, "message")?;
    let count = parse_count(form.count.as_deref());
    let mut delivered = Vec::with_capacity(count as usize);
    for seq in 1..=count {
        let envelope = json!({ "body": message, "seq": seq, "of": count });
        delivered.push(app.hub.publish(channel, &envelope).await?);
    }
    let state = build_state(&app.hub, &app.settings).await;
    Ok(Json(json!({
        "channel": channel,
        "publishes": count,
        "delivered": delivered,
        "state": state,
    })))
}

/// `POST /subscribe`: adds a named channel or pattern subscriber.
pub async fn subscribe(
    State(app): State<AppState>,
    ApiForm(form): ApiForm<SubscribeForm>,
) -> Result<Json<Value>, ApiError> {
    let name = required(&form.name, "name")?;
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
    app.hub.subscribe_kind(name, kind, targets).await?;
    Ok(Json(build_state(&app.hub, &app.settings).await))
}

/// `POST /unsubscribe`: removes a subscriber; `removed` says whether there was one.
pub async fn unsubscribe(
    State(app): State<AppState>,
    ApiForm(form): ApiForm<UnsubscribeForm>,
) -> Result<Json<Value>, ApiError> {
    let name = required(&form.name, "name")?;
    let removed = app.hub.unsubscribe(name).await;
    let state = build_state(&app.hub, &app.settings).await;
    Ok(Json(json!({ "removed": removed, "state": state })))
}

/// `POST /reset`: closes every subscription, zeroes the counters and seeds the defaults.
pub async fn reset(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    app.hub.close_all().await;
    app.hub.reset_stats();
    seed_defaults(&app.hub).await?;
    Ok(Json(build_state(&app.hub, &app.settings).await))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_rules() {
        assert_eq!(parse_count(None), 1);
        assert_eq!(parse_count(Some("")), 1);
        assert_eq!(parse_count(Some("abc")), 1);
        assert_eq!(parse_count(Some("2.5")), 1);
        assert_eq!(parse_count(Some("0")), 1);
        assert_eq!(parse_count(Some("-3")), 1);
        assert_eq!(parse_count(Some(" 7 ")), 7);
        assert_eq!(parse_count(Some("25")), 20);
        assert_eq!(parse_count(Some("99999999999999999999999")), 20);
        assert_eq!(parse_count(Some("-99999999999999999999999")), 1);
    }

    #[test]
    fn targets_are_trimmed_and_empties_dropped() {
        assert_eq!(parse_targets(" a , ,b,, "), vec!["a", "b"]);
        assert!(parse_targets(" , ,").is_empty());
    }
}
