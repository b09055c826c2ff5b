//! Shared by every module: the dashboard reached two ways, each on a private Redis with the
//! three default subscribers seeded, and the `/state` readers.
//!
//! - [`Dashboard`]: the router driven with `Router::oneshot` (no socket), its answers as
//!   [`RouterReply`].
//! - [`Live`]: the dashboard served on a real loopback socket, reached with the test kit's
//!   HTTP client (answers as [`Reply`]), with a `/state` [`Prober`] that times every call.
//! - [`WAIT`], the bound on every wait (the test kit's), and the `/state` helpers.
//! - [`capture_logs`]: what the binary logs while a test looks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use pubsub_hub::{Consumer, Event, PubSubHub, ReceivedMessage};
use pubsub_hub_testkit::RedisServer;
pub use pubsub_hub_testkit::WAIT;
use pubsub_hub_testkit::dashboard::{self, STATE_DEADLINE};
pub use pubsub_hub_testkit::dashboard::{all_live, all_reconnecting, sub};
pub use pubsub_hub_testkit::http::{Reply, request, request_from};
use pubsub_hub_web::{
    AccessControl, AppState, DashboardSettings, Limits, dashboard_hub_config, router,
    seed_defaults, serve_with_state,
};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::ServiceExt;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;

// ---- through the router -----------------------------------------------------------------

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
    pub async fn send(&self, request: Request<Body>) -> RouterReply {
        send_to(&self.app, request).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> RouterReply {
        self.send(Request::get(path).body(Body::empty()).unwrap())
            .await
    }

    /// `POST path` with a form-encoded body.
    pub async fn post_form(&self, path: &str, form: &str) -> RouterReply {
        self.send(
            Request::post(path)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(form.to_owned()))
                .unwrap(),
        )
        .await
    }

    /// `POST path` with any body and content type.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> RouterReply {
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
pub async fn send_to(app: &Router, request: Request<Body>) -> RouterReply {
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
    RouterReply {
        status,
        headers,
        body: bytes.to_vec(),
    }
}

/// `POST path` with a form body through `app`.
pub async fn post_form_to(app: &Router, path: &str, form: &str) -> RouterReply {
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

/// A buffered response from the router (no socket).
pub struct RouterReply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl RouterReply {
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

/// Applies a `delta` event to the last document, as the page does (docs/http-api.md,
/// "Deltas"); fails unless the delta's `base` is that document's version.
pub fn apply_delta(doc: &mut Value, delta: &Value) {
    assert_eq!(
        delta["base"], doc["version"],
        "applies to the last document"
    );
    for (k, v) in delta["set"].as_object().unwrap() {
        doc[k] = v.clone();
    }
    let gone = delta["removed"].as_array().unwrap();
    let subs = doc["subscriptions"].as_array_mut().unwrap();
    subs.retain(|s| !gone.contains(&s["name"]));
    for entry in delta["subscriptions"].as_array().unwrap() {
        let at = subs.iter().position(|s| s["name"] == entry["name"]);
        let mut entry = entry.clone();
        if entry.get("messages").is_none() {
            let fields = entry.as_object_mut().unwrap();
            let mut messages = fields["messages_new"].as_array().unwrap().clone();
            let kept = fields["messages_kept"].as_u64().unwrap() as usize;
            if let Some(i) = at {
                messages.extend(subs[i]["messages"].as_array().unwrap().iter().cloned());
            }
            messages.truncate(kept);
            fields.remove("messages_new");
            fields.remove("messages_kept");
            fields.insert("messages".into(), Value::Array(messages));
        }
        match at {
            Some(i) => subs[i] = entry,
            None => subs.push(entry),
        }
    }
    if let Some(order) = delta["order"].as_array() {
        subs.sort_by_key(|s| order.iter().position(|n| *n == s["name"]));
    }
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

// ---- on a socket -----------------------------------------------------------------------

/// How the dashboard is set up.
#[derive(Clone)]
pub struct Setup {
    pub limits: Limits,
    pub access: AccessControl,
    pub seed: bool,
    /// The client the hub connects with (`None`: the server's own, with its password).
    pub client: Option<redis::Client>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            limits: Limits::default(),
            access: AccessControl::open(),
            seed: true,
            client: None,
        }
    }
}

/// Serves `app` on `127.0.0.1:<free port>` from a task until the sender fires; the address,
/// the sender and the task (which returns `serve_with_state`'s result).
pub async fn serve_on_free_port(
    app: &AppState,
) -> (
    SocketAddr,
    oneshot::Sender<()>,
    JoinHandle<std::io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_with_state(listener, app.clone(), async move {
        let _ = stop_rx.await;
    }));
    (addr, stop, task)
}

/// A dashboard running on `127.0.0.1:<free port>` until dropped or stopped.
pub struct Live {
    pub server: RedisServer,
    pub hub: PubSubHub,
    pub app: AppState,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Live {
    /// A fresh private Redis and the dashboard on it, seeded.
    pub async fn start() -> Live {
        Self::start_on(RedisServer::start(), Setup::default()).await
    }

    /// The dashboard on `server`.
    pub async fn start_on(server: RedisServer, setup: Setup) -> Live {
        let client = setup.client.clone().unwrap_or_else(|| server.client());
        let config = dashboard_hub_config().with_max_subscriptions(setup.limits.max_subscriptions);
        let hub = PubSubHub::with_config(client, config)
            .await
            .expect("the hub connects to the private server");
        if setup.seed {
            seed_defaults(&hub).await.expect("defaults seeded");
        }
        let app = AppState::with_settings(hub.clone(), DashboardSettings::default())
            .with_limits(setup.limits)
            .with_access(setup.access);
        // The peer directory opens its own Redis connection from a task: wait for its first
        // read, so that a connection count taken once this returns includes it.
        let start = Instant::now();
        while !app.peers.snapshot().available {
            assert!(
                start.elapsed() < WAIT,
                "the peer directory never read Redis"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (addr, stop, task) = serve_on_free_port(&app).await;
        Live {
            server,
            hub,
            app,
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Sends raw request head lines (without the final blank line) plus `body`.
    pub async fn raw(&self, head: &str, body: &[u8]) -> Reply {
        request(self.addr, head, body).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Reply {
        self.get_with(path, &[]).await
    }

    /// `GET path` with extra headers.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        self.raw(&head, b"").await
    }

    /// `POST path` with a form body.
    pub async fn post(&self, path: &str, form: &str) -> Reply {
        self.post_with(
            path,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            form.as_bytes(),
        )
        .await
    }

    /// `POST path` with the given headers and body.
    pub async fn post_with(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let mut head = format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        self.raw(&head, body).await
    }

    /// `GET /state`, asserting 200 and the one-second promise.
    pub async fn state(&self) -> Value {
        dashboard::state(self.addr).await
    }

    /// Polls `/state` (each call timed) until `f` holds; returns that state.
    pub async fn wait_state(&self, what: &str, f: impl FnMut(&Value) -> bool) -> Value {
        dashboard::wait_state(self.addr, what, f).await
    }

    /// Connections to the private Redis other than the test kit's admin connection.
    pub fn connections(&self) -> usize {
        dashboard::connections(&self.server)
    }

    /// Waits until [`Live::connections`] is `n`.
    pub async fn wait_connections(&self, n: usize) {
        dashboard::wait_connections(&self.server, n).await
    }

    /// Starts a task that GETs `/state` every `every` until the prober is finished.
    pub fn probe(&self, every: Duration) -> Prober {
        let stats = Arc::new(ProbeStats::default());
        let addr = self.addr;
        let done = Arc::new(AtomicBool::new(false));
        let task = {
            let stats = Arc::clone(&stats);
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    let reply =
                        request(addr, "GET /state HTTP/1.1\r\nHost: 127.0.0.1\r\n", b"").await;
                    stats.record(&reply);
                    tokio::time::sleep(every).await;
                }
            })
        };
        Prober { stats, done, task }
    }

    /// Stops the server, then shuts the hub down.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(WAIT, task).await;
        }
        self.hub.shutdown().await;
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// What a [`Prober`] saw.
#[derive(Default, Debug)]
pub struct ProbeStats {
    pub calls: AtomicU64,
    pub max_micros: AtomicU64,
    pub unavailable: AtomicU64,
    pub failures: AtomicU64,
}

impl ProbeStats {
    fn record(&self, reply: &Reply) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.max_micros
            .fetch_max(reply.took.as_micros() as u64, Ordering::Relaxed);
        if reply.status != 200 {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let state: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        if state["redis"]["available"] == false {
            self.unavailable.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A background `/state` poller.
pub struct Prober {
    pub stats: Arc<ProbeStats>,
    done: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Prober {
    /// Stops polling and checks every call answered 200 within [`STATE_DEADLINE`]; returns
    /// the stats (`unavailable`: how many answers said Redis was away).
    pub async fn finish(self) -> Arc<ProbeStats> {
        self.done.store(true, Ordering::Relaxed);
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the prober stops")
            .expect("the prober did not panic");
        let s = &self.stats;
        let calls = s.calls.load(Ordering::Relaxed);
        let max = Duration::from_micros(s.max_micros.load(Ordering::Relaxed));
        assert!(calls > 0, "the prober made no call");
        assert_eq!(
            s.failures.load(Ordering::Relaxed),
            0,
            "a /state call failed"
        );
        assert!(
            max < STATE_DEADLINE,
            "the slowest of {calls} /state calls took {max:?}"
        );
        self.stats
    }
}

/// Percent-encodes a form value.
pub fn enc(s: &str) -> String {
    pubsub_hub_web::form::encode_form([("", s)])[1..].to_owned()
}

/// A `/state` document without what changes by itself (times, the version counter), for
/// before/after comparisons.
pub fn stable(state: &Value) -> Value {
    let mut v = state.clone();
    strip_times(&mut v);
    if let Some(o) = v.as_object_mut() {
        o.remove("version");
    }
    v
}

fn strip_times(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|k, _| !k.ends_with("_ms"));
            map.values_mut().for_each(strip_times);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_times),
        _ => {}
    }
}

// ---- logs -------------------------------------------------------------------------------

/// How many [`LogCapture`]s are open; the subscriber records only while there is one.
static CAPTURING: AtomicUsize = AtomicUsize::new(0);

/// What the subscriber recorded, at every level.
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Starts recording what this binary logs (every level, no colours) until the capture is
/// dropped. The subscriber is global, so other tests running meanwhile are recorded too:
/// checks look for lines of their own or for strings only their test uses.
pub fn capture_logs() -> LogCapture {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let recording =
            tracing_subscriber::filter::filter_fn(|_| CAPTURING.load(Ordering::SeqCst) > 0);
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .with_filter(recording);
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .expect("the only global subscriber of this binary");
    });
    CAPTURING.fetch_add(1, Ordering::SeqCst);
    LogCapture(())
}

/// An open log capture ([`capture_logs`]).
pub struct LogCapture(());

impl LogCapture {
    /// Everything recorded so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
    }
}

impl Drop for LogCapture {
    fn drop(&mut self) {
        CAPTURING.fetch_sub(1, Ordering::SeqCst);
    }
}

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
