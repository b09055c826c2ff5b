//! A dashboard served on a real loopback socket against a private Redis, a minimal HTTP/1.1
//! client, and a `/state` prober that times every call. Used by the fault, input, access and
//! soak tests (and the soak example, through `#[path]`).
#![allow(dead_code)]

pub mod soak;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pubsub_hub::PubSubHub;
use pubsub_hub_testkit::{ADMIN_CLIENT_NAME, RedisServer};
use pubsub_hub_web::{
    AccessControl, AppState, DashboardSettings, Limits, dashboard_hub_config, seed_defaults,
    serve_with_state,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Upper bound for any single wait.
pub const WAIT: Duration = Duration::from_secs(15);

/// The promise under test: `/state` answers within this, whatever Redis does.
pub const STATE_DEADLINE: Duration = Duration::from_secs(1);

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

/// A dashboard running on `127.0.0.1:<free port>` until dropped or stopped.
pub struct Live {
    pub server: RedisServer,
    pub hub: PubSubHub,
    pub app: AppState,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// A buffered HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub took: Duration,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}), status {}: {}", self.status, self.text()))
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts a JSON `{"error": "..."}` with `status`; returns the message.
    pub fn error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert!(
            self.header("content-type")
                .is_some_and(|ct| ct.starts_with("application/json")),
            "error content type {:?} (status {})",
            self.header("content-type"),
            self.status
        );
        let body = self.json();
        let message = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error string in {body}"))
            .to_owned();
        assert!(!message.is_empty());
        assert_eq!(body.as_object().unwrap().len(), 1, "only `error`: {body}");
        message
    }
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
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_with_state(listener, app.clone(), async move {
            let _ = stop_rx.await;
        }));
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
        let reply = self.get("/state").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert!(
            reply.took < STATE_DEADLINE,
            "/state took {:?} (promise: under {STATE_DEADLINE:?})",
            reply.took
        );
        reply.json()
    }

    /// Polls `/state` (each call timed) until `f` holds; returns that state.
    pub async fn wait_state(&self, what: &str, mut f: impl FnMut(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let state = self.state().await;
            if f(&state) {
                return state;
            }
            assert!(
                start.elapsed() < WAIT,
                "timed out after {WAIT:?} waiting until {what}; last state: {state}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Connections to the private Redis other than the test kit's admin connection.
    pub fn connections(&self) -> usize {
        self.server
            .client_list()
            .iter()
            .filter(|c| c.field("name") != Some(ADMIN_CLIENT_NAME))
            .count()
    }

    /// Waits until [`Live::connections`] is `n`.
    pub async fn wait_connections(&self, n: usize) {
        let start = Instant::now();
        loop {
            let now = self.connections();
            if now == n {
                return;
            }
            assert!(
                start.elapsed() < WAIT,
                "timed out waiting for {n} Redis connections (have {now}): {:?}",
                self.server.client_list()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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

/// One request on a new connection (`Connection: close`), timed; panics after [`WAIT`].
pub async fn request(addr: SocketAddr, head: &str, body: &[u8]) -> Reply {
    let started = Instant::now();
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let mut bytes = head.as_bytes().to_vec();
        bytes.extend_from_slice(b"Connection: close\r\n\r\n");
        bytes.extend_from_slice(body);
        // The server may answer (413) and close before reading everything.
        let _ = stream.write_all(&bytes).await;
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw).await;
        raw
    };
    let raw = tokio::time::timeout(WAIT, exchange)
        .await
        .unwrap_or_else(|_| panic!("no answer within {WAIT:?} to {head:?}"));
    let took = started.elapsed();
    parse_response(&raw, took)
}

fn parse_response(raw: &[u8], took: Duration) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body,
        took,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&data[..eol])
                .split(';')
                .next()
                .unwrap_or("0")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 || data.len() < eol + 2 + size {
            return out;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[(eol + 4 + size).min(data.len())..];
    }
}

/// Percent-encodes a form value.
pub fn enc(s: &str) -> String {
    pubsub_hub_web::form::encode_form([("", s)])[1..].to_owned()
}

/// The subscription called `name` in a `/state` document.
pub fn sub<'a>(state: &'a Value, name: &str) -> &'a Value {
    state["subscriptions"]
        .as_array()
        .expect("subscriptions is an array")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no subscription {name:?} in {state}"))
}

/// True when every subscriber is live.
pub fn all_live(state: &Value) -> bool {
    state["subscriptions"]
        .as_array()
        .is_some_and(|subs| subs.iter().all(|s| s["status"]["state"] == "live"))
}

/// True when every subscriber is reconnecting.
pub fn all_reconnecting(state: &Value) -> bool {
    state["subscriptions"].as_array().is_some_and(|subs| {
        !subs.is_empty() && subs.iter().all(|s| s["status"]["state"] == "reconnecting")
    })
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
