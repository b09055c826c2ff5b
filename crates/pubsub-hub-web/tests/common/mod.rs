//! Shared by the web crate's integration tests: a seeded dashboard on a private Redis,
//! request helpers for `oneshot`, and bounded waits.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use pubsub_hub::{Consumer, Event, PubSubHub, ReceivedMessage};
use pubsub_hub_testkit::RedisServer;
use pubsub_hub_web::{AppState, DashboardSettings, dashboard_hub_config, router, seed_defaults};
use serde_json::Value;
use tower::ServiceExt;

/// Upper bound for any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// A private Redis, a hub on it with the three defaults seeded, and the dashboard router.
pub struct Dashboard {
    pub server: RedisServer,
    pub hub: PubSubHub,
    pub app: Router,
}

impl Dashboard {
    /// The dashboard with the default settings.
    pub async fn start() -> Dashboard {
        Self::start_with(DashboardSettings::default()).await
    }

    /// The dashboard with `settings`.
    pub async fn start_with(settings: DashboardSettings) -> Dashboard {
        let server = RedisServer::start();
        let hub = PubSubHub::with_config(server.client(), dashboard_hub_config())
            .await
            .expect("hub connects to the private server");
        seed_defaults(&hub).await.expect("defaults seeded");
        let app = router(AppState::with_settings(hub.clone(), settings));
        Dashboard { server, hub, app }
    }

    /// Sends one request through the router (no socket).
    pub async fn send(&self, request: Request<Body>) -> Reply {
        send_to(&self.app, request).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(Request::get(path).body(Body::empty()).unwrap())
            .await
    }

    /// `POST path` with a form-encoded body.
    pub async fn post_form(&self, path: &str, form: &str) -> Reply {
        self.send(
            Request::post(path)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(form.to_owned()))
                .unwrap(),
        )
        .await
    }

    /// `POST path` with any body and content type.
    pub async fn post_raw(&self, path: &str, content_type: Option<&str>, body: &[u8]) -> Reply {
        let mut builder = Request::builder().method(Method::POST).uri(path);
        if let Some(ct) = content_type {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        self.send(builder.body(Body::from(body.to_vec())).unwrap())
            .await
    }

    /// `GET /state` as JSON, asserting 200.
    pub async fn state(&self) -> Value {
        let reply = self.get("/state").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.json()
    }

    /// A consumer on the subscription called `name`.
    pub fn consumer(&self, name: &str) -> Consumer {
        self.hub
            .get_subscription(name)
            .unwrap_or_else(|| panic!("no subscription {name:?}"))
            .consumer()
    }
}

/// Sends one request through `app` (no socket) and buffers the answer; fails after `WAIT`.
pub async fn send_to(app: &Router, request: Request<Body>) -> Reply {
    let response = tokio::time::timeout(WAIT, app.clone().oneshot(request))
        .await
        .expect("the router answers in time")
        .expect("the router is infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = tokio::time::timeout(WAIT, response.into_body().collect())
        .await
        .expect("the body completes in time")
        .expect("the body is readable")
        .to_bytes();
    Reply {
        status,
        headers,
        body: bytes.to_vec(),
    }
}

/// `POST path` with a form body through `app`.
pub async fn post_form_to(app: &Router, path: &str, form: &str) -> Reply {
    send_to(
        app,
        Request::post(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form.to_owned()))
            .unwrap(),
    )
    .await
}

/// `GET /state` through `app`, asserting 200.
pub async fn state_of(app: &Router) -> Value {
    let reply = send_to(app, Request::get("/state").body(Body::empty()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()
}

/// A buffered response.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics with the text when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the contract's error shape: the status and `{"error": "<text>"}` as JSON.
    pub fn assert_error(&self, status: StatusCode) -> String {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert!(
            self.header("content-type")
                .is_some_and(|ct| ct.starts_with("application/json")),
            "error content type: {:?}",
            self.header("content-type")
        );
        let body = self.json();
        let message = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error string in {body}"));
        assert!(!message.is_empty());
        assert_eq!(body.as_object().unwrap().len(), 1, "only `error`: {body}");
        message.to_owned()
    }
}

/// The next message on `consumer`, skipping connection events; fails after `WAIT`.
pub async fn next_message(consumer: &mut Consumer) -> Arc<ReceivedMessage> {
    loop {
        let event = tokio::time::timeout(WAIT, consumer.recv())
            .await
            .expect("a message within the time limit")
            .expect("the consumer is still open");
        if let Event::Message(m) = event {
            return m;
        }
    }
}

/// The subscription called `name` in a `/state` document.
pub fn find_sub<'a>(state: &'a Value, name: &str) -> &'a Value {
    state["subscriptions"]
        .as_array()
        .expect("subscriptions is an array")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no subscription {name:?} in {state}"))
}

/// The names in a `/state` document, in order.
pub fn sub_names(state: &Value) -> Vec<String> {
    state["subscriptions"]
        .as_array()
        .expect("subscriptions is an array")
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Percent-encodes a form value.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Polls `GET /state` every ~10 ms until `f` holds for it; fails after `timeout`.
pub async fn wait_state(
    d: &Dashboard,
    timeout: Duration,
    what: &str,
    mut f: impl FnMut(&Value) -> bool,
) {
    let start = std::time::Instant::now();
    loop {
        let state = d.state().await;
        if f(&state) {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting until {what}; last state: {state}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
