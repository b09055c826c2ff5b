//! The server HTTP API, in the shape of Centrifugo's: `POST /api/<method>` with a JSON
//! body, answered `{"result": ...}` or `{"error": {"code", "message"}}` (status 200 for
//! both, as Centrifugo does, so its server SDKs read them). The key comes in `X-API-Key:
//! KEY` or `Authorization: apikey KEY`; a missing or wrong key is 401, an unknown method
//! 404, a body that is not the method's JSON 400. Without a configured key every
//! `/api/*` path is 404.
//!
//! Methods: `publish` {channel, data}, `broadcast` {channels, data}, `unsubscribe`
//! {channel, user?, client?}, `disconnect` {user, client?, disconnect?: {code, reason}},
//! `channels` {pattern?}, `info`, `history` {channel, limit?, since?: {offset, epoch},
//! reverse?}, `history_remove` {channel}, `presence` {channel} and `presence_stats`
//! {channel} (across every gateway process; error 108 "not available" in a channel without
//! history or presence). On a channel with history, `publish` answers the publication's
//! `offset` and `epoch` (and `broadcast` each one's).
//! `data` is any JSON value and goes to Redis as its exact JSON text. `unsubscribe`,
//! `disconnect`, `channels` and `info` act on and report this gateway process only.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::gateway::{Inner, VERSION};
use crate::protocol::{ClientError, Disconnect};

fn error(status: StatusCode, code: u32, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

fn client_error(e: &ClientError) -> Response {
    error(StatusCode::OK, e.code, e.message.clone())
}

fn result(value: Value) -> Response {
    Json(json!({ "result": value })).into_response()
}

/// Whether the request carries the configured key (compared in constant time).
fn authorized(gw: &Inner, headers: &HeaderMap) -> bool {
    let Some(key) = &gw.config.api_key else {
        return false;
    };
    let given = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .or_else(|| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    let (scheme, rest) = v.trim().split_once(' ')?;
                    scheme.eq_ignore_ascii_case("apikey").then_some(rest.trim())
                })
        });
    given.is_some_and(|g| constant_time_eq(g.as_bytes(), key.expose().as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, serde_json::Error> {
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(text)
}

fn bad_body(e: serde_json::Error) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        ClientError::BAD_REQUEST.code,
        format!("bad request: {e}"),
    )
}

/// Parses the body or returns the 400 answer.
macro_rules! body {
    ($body:expr) => {
        match parse($body) {
            Ok(b) => b,
            Err(e) => return bad_body(e),
        }
    };
}

#[derive(Deserialize)]
struct PublishBody {
    #[serde(default)]
    channel: String,
    data: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct BroadcastBody {
    #[serde(default)]
    channels: Vec<String>,
    data: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct UnsubscribeBody {
    #[serde(default)]
    channel: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    client: String,
}

#[derive(Deserialize)]
struct DisconnectBody {
    #[serde(default)]
    user: String,
    #[serde(default)]
    client: String,
    /// A custom disconnect (code and reason); "force disconnect" (3503) by default.
    disconnect: Option<CustomDisconnect>,
}

#[derive(Deserialize)]
struct CustomDisconnect {
    code: u16,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
struct HistoryBody {
    #[serde(default)]
    channel: String,
    /// 0: only the position (the default); -1: everything kept.
    #[serde(default)]
    limit: i64,
    since: Option<crate::protocol::StreamPosition>,
    #[serde(default)]
    reverse: bool,
}

#[derive(Deserialize)]
struct ChannelBody {
    #[serde(default)]
    channel: String,
}

#[derive(Deserialize, Default)]
struct ChannelsBody {
    #[serde(default)]
    pattern: String,
}

/// `POST /api/{method}`.
pub(crate) async fn handle(
    State(gw): State<Arc<Inner>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if gw.config.api_key.is_none() {
        return StatusCode::NOT_FOUND.into_response();
    }
    if !authorized(&gw, &headers) {
        return error(StatusCode::UNAUTHORIZED, 101, "unauthorized");
    }
    match method.as_str() {
        "publish" => publish(&gw, &body).await,
        "broadcast" => broadcast(&gw, &body).await,
        "unsubscribe" => unsubscribe(&gw, &body),
        "disconnect" => disconnect(&gw, &body),
        "channels" => channels(&gw, &body),
        "info" => info(&gw),
        "history" => history(&gw, &body).await,
        "history_remove" => history_remove(&gw, &body).await,
        "presence" => presence(&gw, &body, false).await,
        "presence_stats" => presence(&gw, &body, true).await,
        _ => error(StatusCode::NOT_FOUND, 104, "method not found"),
    }
}

/// Publishes raw JSON `data` to `channel`: the result or the protocol error.
async fn publish_one(gw: &Inner, channel: &str, data: &RawValue) -> Result<Value, ClientError> {
    gw.check_channel(channel)?;
    let bytes = data.get().as_bytes();
    if bytes.len() > gw.config.limits.max_message_bytes {
        return Err(
            ClientError::LIMIT_EXCEEDED.with_message("data larger than limits.max_message_bytes")
        );
    }
    match gw.publish_raw(channel, bytes).await {
        Ok(done) if !done.epoch.is_empty() => {
            Ok(json!({"offset": done.offset, "epoch": done.epoch}))
        }
        Ok(_) => Ok(json!({})),
        Err(e) => {
            tracing::warn!(error = %e, "API publish failed");
            Err(ClientError::INTERNAL)
        }
    }
}

async fn publish(gw: &Inner, body: &Bytes) -> Response {
    let body: PublishBody = body!(body);
    let Some(data) = body.data else {
        return client_error(&ClientError::BAD_REQUEST.with_message("no data"));
    };
    match publish_one(gw, &body.channel, &data).await {
        Ok(v) => result(v),
        Err(e) => client_error(&e),
    }
}

async fn broadcast(gw: &Inner, body: &Bytes) -> Response {
    let body: BroadcastBody = body!(body);
    let Some(data) = body.data else {
        return client_error(&ClientError::BAD_REQUEST.with_message("no data"));
    };
    if body.channels.is_empty() {
        return client_error(&ClientError::BAD_REQUEST.with_message("no channels"));
    }
    let mut responses = Vec::with_capacity(body.channels.len());
    for channel in &body.channels {
        responses.push(match publish_one(gw, channel, &data).await {
            Ok(v) => json!({ "result": v }),
            Err(e) => json!({"error": {"code": e.code, "message": e.message}}),
        });
    }
    result(json!({ "responses": responses }))
}

fn history_error(e: crate::features::FeatureError) -> ClientError {
    match e {
        crate::features::FeatureError::NotAvailable => ClientError::NOT_AVAILABLE,
        crate::features::FeatureError::Unavailable(reason) => {
            tracing::warn!(%reason, "API history failed");
            ClientError::INTERNAL
        }
    }
}

async fn history(gw: &Inner, body: &Bytes) -> Response {
    let body: HistoryBody = body!(body);
    if let Err(e) = gw.check_channel(&body.channel) {
        return client_error(&e);
    }
    let redis = gw.redis_channel(&body.channel);
    let rules = gw.history_rules(&body.channel);
    let query = crate::features::HistoryQuery {
        limit: usize::try_from(body.limit).unwrap_or(usize::MAX),
        since: body.since,
        reverse: body.reverse,
        size: rules.size,
        ttl: rules.ttl,
    };
    match gw.history.history(&redis, query).await {
        Ok(page) => {
            let publications: Vec<Box<RawValue>> = page
                .publications
                .iter()
                .filter_map(|(offset, bytes)| {
                    RawValue::from_string(crate::payload::publication_json(bytes, Some(*offset)))
                        .ok()
                })
                .collect();
            result(json!({
                "publications": publications,
                "offset": page.position.offset,
                "epoch": page.position.epoch,
            }))
        }
        Err(e) => client_error(&history_error(e)),
    }
}

async fn history_remove(gw: &Inner, body: &Bytes) -> Response {
    let body: ChannelBody = body!(body);
    if let Err(e) = gw.check_channel(&body.channel) {
        return client_error(&e);
    }
    if gw.history_rules(&body.channel).size == 0 {
        return client_error(&ClientError::NOT_AVAILABLE);
    }
    let redis = gw.redis_channel(&body.channel);
    match gw.history.remove(&redis).await {
        Ok(()) => result(json!({})),
        Err(e) => client_error(&history_error(e)),
    }
}

fn unsubscribe(gw: &Inner, body: &Bytes) -> Response {
    let body: UnsubscribeBody = body!(body);
    if let Err(e) = gw.check_channel(&body.channel) {
        return client_error(&e);
    }
    if body.client.is_empty() {
        let user = (!body.user.is_empty()).then_some(body.user.as_str());
        gw.node.unsubscribe_members(&body.channel, user);
    } else {
        for client in gw.node.clients() {
            if client.client_id == body.client
                && (body.user.is_empty() || client.user() == body.user)
            {
                client.control.send(crate::node::Control::Unsubscribe {
                    channel: body.channel.clone(),
                });
            }
        }
    }
    result(json!({}))
}

fn disconnect(gw: &Inner, body: &Bytes) -> Response {
    let body: DisconnectBody = body!(body);
    if body.user.is_empty() && body.client.is_empty() {
        return client_error(&ClientError::BAD_REQUEST.with_message("user or client required"));
    }
    let reason = match body.disconnect {
        None => Disconnect::FORCE_NO_RECONNECT,
        // Application codes are 4000-4999 (and the protocol's own 3000-3999); the
        // WebSocket close reason holds at most 123 bytes.
        Some(d) if (3000..=4999).contains(&d.code) && d.reason.len() <= 123 => Disconnect {
            code: d.code,
            reason: d.reason.into(),
        },
        Some(_) => {
            return client_error(&ClientError::BAD_REQUEST.with_message(
                "disconnect.code must be 3000-4999 and disconnect.reason at most 123 bytes",
            ));
        }
    };
    gw.disconnect_where(
        |c| {
            (body.user.is_empty() || c.user.get().is_some_and(|u| *u == body.user))
                && (body.client.is_empty() || c.client_id == body.client)
        },
        reason,
    );
    result(json!({}))
}

fn channels(gw: &Inner, body: &Bytes) -> Response {
    let body: ChannelsBody = body!(body);
    let mut map = serde_json::Map::new();
    for (name, n) in gw.node.channel_counts() {
        if body.pattern.is_empty() || glob_match(body.pattern.as_bytes(), name.as_bytes()) {
            map.insert(name, json!({ "num_clients": n }));
        }
    }
    result(json!({ "channels": map }))
}

async fn presence(gw: &Inner, body: &Bytes, stats: bool) -> Response {
    let body: ChannelBody = body!(body);
    let rules = match gw.check_channel(&body.channel) {
        Ok(r) => r,
        Err(e) => return client_error(&e),
    };
    if !rules.presence {
        return client_error(&ClientError::NOT_AVAILABLE);
    }
    let answer = if stats {
        gw.presence_stats(&body.channel).await
    } else {
        gw.presence_of(&body.channel).await
    };
    match answer {
        Ok(v) => result(v),
        Err(e) => {
            tracing::warn!(error = ?e, "API presence failed");
            client_error(&ClientError::INTERNAL)
        }
    }
}

fn info(gw: &Inner) -> Response {
    let clients = gw.node.clients();
    let mut users: Vec<String> = clients
        .iter()
        .filter_map(|c| c.user.get().cloned())
        .collect();
    users.sort_unstable();
    users.dedup();
    result(json!({
        "nodes": [{
            "uid": gw.config.node_name,
            "name": gw.config.node_name,
            "version": VERSION,
            "num_clients": clients.len(),
            "num_users": users.len(),
            "num_channels": gw.node.channel_counts().len(),
            "uptime": gw.started.elapsed().as_secs(),
        }]
    }))
}

/// A glob with `*` and `?` (no classes): enough for
/// filtering channel names.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some(p);
            mark = t;
            p += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            t = mark;
        } else {
            return false;
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len()
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match(b"chat:*", b"chat:1"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(!glob_match(b"chat:*", b"news"));
        assert!(glob_match(b"*:x*", b"ns:xy"));
    }
}
