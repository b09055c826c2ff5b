//! The route table ([`Gateway::router`]), the health, readiness and metrics routes, the
//! browser origin check, and [`serve`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;

use crate::gateway::{Gateway, Inner};
use crate::protocol::ConnectRequest;

/// Read buffer of each WebSocket connection, allocated with the connection and kept for
/// its life. The WebSocket layer's default (128 KiB, zero-filled) would cost over a
/// gigabyte at 10,000 connections. Client commands are small (a connect with its token
/// fits); a larger message grows the buffer to its size while it is read, in reads of
/// this many bytes.
pub const WS_READ_BUFFER_BYTES: usize = 1024;

/// Room in a WebSocket connection's output buffer beyond its largest message: frame
/// headers and a control frame (a close with its reason, a pong).
const WS_WRITE_SLACK_BYTES: usize = 1024;

/// How long `/readyz` waits for Redis.
pub const READY_TIMEOUT: Duration = Duration::from_secs(1);

impl Gateway {
    /// The gateway's routes, to serve alone ([`serve`]) or to merge into an application's
    /// router:
    ///
    /// - `GET /connection/websocket`: the bidirectional protocol (JSON).
    /// - `GET|POST /connection/uni_sse`: unidirectional server-sent events.
    /// - `POST /api/{method}`: the server API (404 without a configured key).
    /// - `GET /healthz` (the process answers), `GET /readyz` (Redis answers within
    ///   [`READY_TIMEOUT`] and the gateway is not shutting down; else 503), `GET /metrics`.
    ///
    /// Serve it with `TCP_NODELAY` on accepted sockets, as [`serve`] does (with axum,
    /// `axum::serve::ListenerExt::tap_io`): pushes are small writes, and Nagle's algorithm
    /// would hold each one back until the client acknowledged the last.
    pub fn router(&self) -> Router {
        let inner = Arc::clone(&self.inner);
        let body_limit = inner.config.limits.max_api_body_bytes;
        Router::new()
            .route("/connection/websocket", get(websocket))
            .route("/connection/uni_sse", get(sse_get).post(sse_post))
            .route("/api/{method}", post(crate::api::handle))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .layer(DefaultBodyLimit::max(body_limit))
            .with_state(inner)
    }
}

/// Whether a browser request from its `Origin` may connect: no `Origin` (not a browser),
/// an origin whose host is the request's `Host` (same origin), or a configured one.
fn origin_allowed(gw: &Inner, headers: &HeaderMap) -> bool {
    origin_allowed_with(&gw.config, headers)
}

fn origin_allowed_with(config: &crate::GatewayConfig, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return headers.get(header::ORIGIN).is_none();
    };
    let origin = origin.trim_end_matches('/');
    let allowed = &config.allowed_origins;
    if allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    matches!((host, origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
}

fn forbidden_origin() -> Response {
    (StatusCode::FORBIDDEN, "origin not allowed\n").into_response()
}

async fn websocket(
    State(gw): State<Arc<Inner>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if !origin_allowed(&gw, &headers) {
        return forbidden_origin();
    }
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    // The WebSocket layer's own bound is looser than the protocol limit, so that a message
    // between the two gets the protocol's close code instead of a dropped connection.
    let limit = gw.config.limits.max_message_bytes;
    let layer_limit = limit.saturating_mul(4).max(1024 * 1024);
    // Nothing is held back for a later write: the write queue already joins what is
    // waiting into one message. The layer's output buffer holds at most the message being
    // written (a batch, or one queued message, which the queue bounds) and a control frame;
    // its own bound says so, instead of the layer's default of none.
    let limits = &gw.config.limits;
    let max_write = limits
        .write_queue_bytes
        .max(crate::ws::MAX_BATCH_BYTES)
        .saturating_add(WS_WRITE_SLACK_BYTES);
    upgrade
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_write_buffer_size(max_write)
        .max_message_size(layer_limit)
        .max_frame_size(layer_limit)
        .on_upgrade(move |socket| crate::ws::handle(gw, socket))
}

async fn sse_get(
    State(gw): State<Arc<Inner>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !origin_allowed(&gw, &headers) {
        return forbidden_origin();
    }
    let request = match query.get("cf_connect") {
        None => ConnectRequest::default(),
        Some(text) => match serde_json::from_str::<ConnectRequest>(text) {
            Ok(r) => r,
            Err(e) => return bad_connect(e),
        },
    };
    crate::sse::handle(gw, request, last_event_id(&headers)).await
}

/// The browser's `Last-Event-ID` when it resumes an event stream.
fn last_event_id(headers: &HeaderMap) -> Option<&str> {
    headers.get("last-event-id").and_then(|v| v.to_str().ok())
}

async fn sse_post(State(gw): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    if !origin_allowed(&gw, &headers) {
        return forbidden_origin();
    }
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        ConnectRequest::default()
    } else {
        match serde_json::from_slice::<ConnectRequest>(&body) {
            Ok(r) => r,
            Err(e) => return bad_connect(e),
        }
    };
    crate::sse::handle(gw, request, last_event_id(&headers)).await
}

fn bad_connect(e: serde_json::Error) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({"error": {"code": 107, "message": format!("bad connect request: {e}")}})),
    )
        .into_response()
}

async fn readyz(State(gw): State<Arc<Inner>>) -> Response {
    if gw.closing.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let hub = gw.node.hub();
    // A pattern that matches no channel: one cheap round trip that proves Redis answers.
    let probe = hub.active_channels("pubsub-hub-gateway:readyz:\u{0}");
    match tokio::time::timeout(READY_TIMEOUT, probe).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("redis: {e}\n")).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "redis: no answer\n").into_response(),
    }
}

async fn metrics(State(gw): State<Arc<Inner>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        gw.metrics.render(),
    )
        .into_response()
}

/// Serves `gateway` on `listener` until `shutdown` completes; then calls
/// [`Gateway::shutdown`] (every client gets the "shutdown" disconnect) and returns once
/// the connections are gone.
///
/// The caller owns the socket and the signal, so a test can pass `127.0.0.1:0` and any
/// future.
///
/// # Cancel safety
/// Dropping the future stops accepting and drops open HTTP connections without telling
/// WebSocket clients; call [`Gateway::shutdown`] for an orderly end.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = gateway.router();
    let closing = gateway.clone();
    // Pushes are small writes: with Nagle's algorithm one waits for the client's
    // acknowledgement of the last, up to its delayed-ACK time (40 ms on Linux).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            closing.shutdown().await;
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GatewayConfig;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn origins() {
        let none = GatewayConfig::default();
        assert!(origin_allowed_with(&none, &headers(&[("host", "a.test")])));
        assert!(origin_allowed_with(
            &none,
            &headers(&[("host", "a.test:8000"), ("origin", "http://a.test:8000")])
        ));
        assert!(!origin_allowed_with(
            &none,
            &headers(&[("host", "a.test"), ("origin", "http://evil.test")])
        ));
        let listed = GatewayConfig::default().with_allowed_origin("https://app.test");
        assert!(origin_allowed_with(
            &listed,
            &headers(&[("host", "gw.test"), ("origin", "https://app.test")])
        ));
        assert!(!origin_allowed_with(
            &listed,
            &headers(&[("host", "gw.test"), ("origin", "http://app.test")])
        ));
        let any = GatewayConfig::default().with_allowed_origin("*");
        assert!(origin_allowed_with(
            &any,
            &headers(&[("host", "gw.test"), ("origin", "http://x.test")])
        ));
    }
}
