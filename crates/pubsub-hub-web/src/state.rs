//! The `/state` document: what the page shows, built with one Redis round trip.
//!
//! The contract's fields come first (`subscriptions`, `active_channels`, `numsub`, `stats`);
//! everything else is additive, so a client of the guide's server cannot notice it:
//! per subscriber `kind`, `status`, `dropped_total`, `reconnects_total`; per message
//! `encoding`, `size`, `truncated`; in `stats` the library's extra counters; and at the top
//! `redis` (is Redis answering?), `version` (the hub's change counter), `mode` (dedicated or
//! shared connections, cluster or not, and what `numsub` counts then), the shard view
//! (`shard_channels`, `shard_numsub`) and the markers of the bounded channel lists
//! (`active_channels_truncated`, `active_channels_total` and their shard twins).

use std::collections::{BTreeMap, BTreeSet};

use pubsub_hub::{
    ConnectionMode, HubError, Introspection, Payload, PayloadEncoding, PubSubHub, ReceivedMessage,
    Subscription, TargetKind,
};
use serde_json::{Value, json};

use crate::app::{AppState, DashboardSettings};
use crate::metrics::Metrics;

/// Messages shown per subscriber, newest first (the contract's 15).
pub const MAX_MESSAGES_PER_SUBSCRIPTION: usize = 15;

/// Payloads longer than this (bytes of text, or characters of base64) are cut for display
/// and marked `"truncated": true`, so that one answer's size stays bounded.
pub const DEFAULT_PAYLOAD_DISPLAY_BYTES: usize = 2048;

/// Builds the `/state` document.
///
/// Asks Redis once (`PUBSUB CHANNELS *`, `NUMSUB` for every exact channel a local subscriber
/// targets, `NUMPAT`, pipelined). When Redis does not answer within
/// [`DashboardSettings::state_timeout`] (or refuses), the local part is still returned, with empty server-side fields and
/// `"redis": {"available": false, "error": ...}`: the page keeps working and says why.
///
/// The server-wide lists (`active_channels`, `shard_channels`) are cut at
/// [`Limits::max_listed_channels`](crate::Limits::max_listed_channels) (its default here).
pub async fn build_state(hub: &PubSubHub, settings: &DashboardSettings) -> Value {
    let max_listed = crate::limits::DEFAULT_MAX_LISTED_CHANNELS;
    build_state_timed(hub, settings, max_listed, None).await
}

/// The targets of the local subscribers of `kind`, sorted and deduplicated.
fn targets_of(subs: &[std::sync::Arc<Subscription>], kind: TargetKind) -> BTreeSet<String> {
    subs.iter()
        .filter(|s| s.kind() == kind)
        .flat_map(|s| s.targets().iter().cloned())
        .collect()
}

/// [`build_state`] with the list bound `max_listed`, timing the Redis round trip in
/// `metrics` when given.
async fn build_state_timed(
    hub: &PubSubHub,
    settings: &DashboardSettings,
    max_listed: usize,
    metrics: Option<&Metrics>,
) -> Value {
    let version = hub.version();
    let subs = hub.subscriptions();
    let exact = targets_of(&subs, TargetKind::Channel);
    let shard = targets_of(&subs, TargetKind::Shard);
    // One pipeline asks NUMSUB and SHARDNUMSUB about the same names: both sets together.
    let exact_channels: Vec<String> = exact.union(&shard).cloned().collect();

    let started = std::time::Instant::now();
    let introspection =
        match tokio::time::timeout(settings.state_timeout, hub.introspect("*", &exact_channels))
            .await
        {
            Ok(result) => result,
            Err(_) => Err(HubError::Timeout {
                operation: "PUBSUB",
                after: settings.state_timeout,
            }),
        };
    if let Some(metrics) = metrics {
        metrics.observe_redis("introspect", started.elapsed(), introspection.is_ok());
    }
    let mut stats = hub.local_stats();
    let (found, redis) = match introspection {
        Ok(found) => {
            stats.pattern_subscriptions = found.numpat;
            (Introspected::from(found), json!({ "available": true }))
        }
        Err(e) => {
            tracing::debug!(error = %e, "PUBSUB introspection failed");
            (
                Introspected::default(),
                json!({ "available": false, "error": redis_problem(&e) }),
            )
        }
    };
    let numsub: BTreeMap<String, i64> = found
        .numsub
        .into_iter()
        .filter(|(c, _)| exact.contains(c))
        .collect();
    let shard_numsub: BTreeMap<String, i64> = found
        .shard_numsub
        .into_iter()
        .filter(|(c, _)| shard.contains(c))
        .collect();
    let (active_channels, active_total) = bounded_list(found.active_channels, max_listed);
    let (shard_channels, shard_total) = bounded_list(found.shard_channels, max_listed);

    let subscriptions: Vec<Value> = subs
        .iter()
        .map(|s| subscription_json(s, settings))
        .collect();

    json!({
        "subscriptions": subscriptions,
        "active_channels": active_channels,
        "numsub": numsub,
        "stats": stats,
        "redis": redis,
        "version": version,
        "mode": mode_json(hub),
        "active_channels_truncated": active_channels.len() < active_total,
        "active_channels_total": active_total,
        "shard_channels": shard_channels,
        "shard_channels_truncated": shard_channels.len() < shard_total,
        "shard_channels_total": shard_total,
        "shard_numsub": shard_numsub,
    })
}

/// What the introspection found, or nothing while Redis does not answer.
#[derive(Default)]
struct Introspected {
    active_channels: Vec<String>,
    numsub: BTreeMap<String, i64>,
    shard_channels: Vec<String>,
    shard_numsub: BTreeMap<String, i64>,
}

impl From<Introspection> for Introspected {
    fn from(i: Introspection) -> Self {
        Introspected {
            active_channels: i.active_channels,
            numsub: i.numsub,
            shard_channels: i.shard_channels,
            shard_numsub: i.shard_numsub,
        }
    }
}

/// The first `max` names of a sorted list, and how many there were.
fn bounded_list(mut names: Vec<String>, max: usize) -> (Vec<String>, usize) {
    let total = names.len();
    names.truncate(max);
    (names, total)
}

/// `mode`: how subscribers map onto Redis connections here, and so what `numsub` counts.
fn mode_json(hub: &PubSubHub) -> Value {
    let cluster = hub.is_cluster();
    let cluster_note = if cluster {
        " In this cluster every count is summed over all nodes."
    } else {
        ""
    };
    let (name, shared, counts, explanation) = match hub.mode() {
        ConnectionMode::Shared { connections } => (
            "shared",
            Some(connections),
            "connections",
            format!(
                "Shared mode: all subscribers share {connections} Redis subscriber \
                 connection(s), and each channel is subscribed on one of them however many \
                 local subscribers want it. So NUMSUB counts connections, not names: this \
                 dashboard adds 1 to a channel's NUMSUB whether one or a hundred of its \
                 subscribers listen; each card shows its own count.{cluster_note}"
            ),
        ),
        _ => (
            "dedicated",
            None,
            "subscribers",
            format!(
                "Dedicated mode: every named subscriber has its own Redis connection, so \
                 NUMSUB counts this dashboard's subscribers of a channel one by one (plus any \
                 other client subscribed to it).{cluster_note}"
            ),
        ),
    };
    json!({
        "name": name,
        "shared_connections": shared,
        "cluster": cluster,
        "subscriber_connections": hub.subscriber_connections(),
        "numsub_counts": counts,
        "numsub_explanation": explanation,
    })
}

/// The `/state` document of a running dashboard: [`build_state`] plus, per subscriber,
/// `gaps_total` and `last_gap` (see [`crate::gaps`]), and at the top `warnings`, one
/// sentence per subscriber that is disconnected now or has been, saying that messages
/// published in that window were lost for it.
pub async fn app_state_document(app: &AppState) -> Value {
    let mut state = build_state_timed(
        &app.hub,
        &app.settings,
        app.limits.max_listed_channels,
        Some(&app.metrics),
    )
    .await;
    app.gaps.observe(&app.hub);
    if let Some(subs) = state["subscriptions"].as_array_mut() {
        for sub in subs {
            let name = sub["name"].as_str().unwrap_or_default().to_owned();
            app.gaps.annotate(&name, sub);
        }
    }
    state["warnings"] = json!(app.gaps.warnings());
    state
}

/// A short, secret-free sentence about why Redis did not answer.
fn redis_problem(e: &HubError) -> String {
    if let Some(code) = crate::error::refusal_code(e) {
        format!(
            "Redis refused the dashboard's user ({code}): fix the credentials or the ACL \
             (PUBSUB, PUBLISH and SUBSCRIBE are needed)"
        )
    } else if e.is_timeout() {
        "Redis did not answer in time".into()
    } else if e.is_closed() {
        "the dashboard is shutting down".into()
    } else {
        "cannot reach Redis".into()
    }
}

/// One subscriber as the page shows it: the library's view with the messages truncated.
fn subscription_json(sub: &Subscription, settings: &DashboardSettings) -> Value {
    let mut value = sub.to_json(0);
    let messages: Vec<Value> = sub
        .messages(Some(settings.message_limit))
        .iter()
        .map(|m| message_json(m, settings.payload_display_bytes))
        .collect();
    value["messages"] = Value::Array(messages);
    value
}

/// One message: the contract's `channel`, `pattern`, `payload`, `received_at_ms`, plus
/// `encoding`, `size` (bytes as received) and `truncated`.
pub(crate) fn message_json(m: &ReceivedMessage, limit: usize) -> Value {
    let (payload, truncated) = display_payload(&m.payload, limit);
    json!({
        "channel": m.channel,
        "pattern": m.pattern,
        "payload": payload,
        "encoding": m.payload.encoding(),
        "received_at_ms": m.received_at_ms,
        "size": m.payload.len(),
        "truncated": truncated,
    })
}

/// The payload's JSON view, or, when it is longer than `limit`, the start of its text (or of
/// its base64) as a string.
fn display_payload(payload: &Payload, limit: usize) -> (Value, bool) {
    let shown = match payload.encoding() {
        PayloadEncoding::Base64 => payload.json().as_str().unwrap_or_default(),
        _ => payload.as_str().unwrap_or_default(),
    };
    if shown.len() <= limit {
        (payload.json().clone(), false)
    } else {
        (
            Value::String(cut_at_char_boundary(shown, limit).to_owned()),
            true,
        )
    }
}

/// The longest prefix of `s` that is at most `max` bytes and ends on a character boundary.
fn cut_at_char_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(bytes: &[u8]) -> ReceivedMessage {
        ReceivedMessage::new("c".into(), None, Payload::from_bytes(bytes.to_vec()))
    }

    #[test]
    fn short_payloads_are_shown_whole() {
        let v = message_json(&message(br#"{"body":"hi","seq":1,"of":1}"#), 64);
        assert_eq!(v["payload"], json!({"body": "hi", "seq": 1, "of": 1}));
        assert_eq!(v["encoding"], "json");
        assert_eq!(v["truncated"], false);
        assert_eq!(v["size"], 28);
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let text = "é".repeat(100); // 200 bytes
        let v = message_json(&message(text.as_bytes()), 51);
        assert_eq!(v["truncated"], true);
        assert_eq!(v["size"], 200);
        assert_eq!(v["payload"].as_str().unwrap(), "é".repeat(25));
        assert_eq!(v["encoding"], "text");
    }

    #[test]
    fn long_json_becomes_a_text_preview() {
        let body = format!(r#"{{"body":"{}"}}"#, "x".repeat(100));
        let v = message_json(&message(body.as_bytes()), 20);
        assert_eq!(v["payload"], json!(&body[..20]));
        assert_eq!(v["encoding"], "json");
        assert_eq!(v["truncated"], true);
    }

    #[test]
    fn long_binary_keeps_a_base64_prefix() {
        let v = message_json(&message(&[0xff; 300]), 40);
        assert_eq!(v["encoding"], "base64");
        assert_eq!(v["truncated"], true);
        assert_eq!(v["payload"].as_str().unwrap().len(), 40);
        assert_eq!(v["size"], 300);
    }
}
