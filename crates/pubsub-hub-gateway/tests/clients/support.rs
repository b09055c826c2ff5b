//! What the real-client scenarios need from the Rust side: installing the Node packages,
//! gateways served on loopback that can be stopped and served again on the same port, and
//! the runner that executes a scenario and answers its `control:` requests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use axum::Router;
use pubsub_hub::{ConnectionMode, HistoryOptions, HubConfig, PubSubHub};
use pubsub_hub_gateway::{Gateway, GatewayConfig, NamespaceConfig, PublishPolicy, serve};
use pubsub_hub_testkit::RedisServer;
use pubsub_hub_testkit::http::rebind;
pub use pubsub_hub_testkit::node::{artifact_dir, browser_turn, chromium_path};
use pubsub_hub_testkit::node::{npm_ci, run_node};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The HMAC secret of every gateway under test; the scenarios sign their tokens with it.
pub const SECRET: &str = "gateway-client-tests-secret";
/// The server API key of every gateway under test.
pub const API_KEY: &str = "gateway-client-tests-api-key";

/// Bound on one control request (a Redis restart included).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on a `redis-cli` call.
const REDIS_CLI_TIMEOUT: Duration = Duration::from_secs(10);
/// Publications the `history` namespace keeps per channel.
pub const HISTORY_SIZE: usize = 20_000;
/// How long an idle `history` channel's history lives.
pub const HISTORY_TTL: Duration = Duration::from_secs(300);
/// The environment variable that turns this test binary into a gateway process (see
/// [`GatewayProcess`]): the Redis URL it serves from.
pub const GATEWAY_PROCESS_ENV: &str = "PUBSUB_HUB_TEST_GATEWAY_PROCESS_REDIS";

/// The Node package of the scenarios.
pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

fn describe(output: &Output) -> String {
    format!(
        "exit: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Fails with a clear message when node is missing; runs `npm ci` in [`js_dir`] when its
/// `node_modules` is missing or older than the lock file (as `scripts/setup` does).
pub async fn prepare() {
    npm_ci(&js_dir()).await;
}

/// The configuration of every gateway under test: HS256 tokens with [`SECRET`], the server
/// API on with [`API_KEY`], channels without a namespace closed to client publishes (the
/// default), a `chat` namespace whose subscribers may publish, a `room` namespace with
/// presence and join and leave pushes, and a `history` namespace that keeps
/// [`HISTORY_SIZE`] publications per channel for [`HISTORY_TTL`].
pub fn gateway_config() -> GatewayConfig {
    GatewayConfig::default()
        .with_hmac_secret(SECRET)
        .with_api_key(API_KEY)
        .with_namespace(
            "chat",
            NamespaceConfig::default().with_publish(PublishPolicy::Subscribers),
        )
        .with_namespace(
            "history",
            NamespaceConfig::default().with_history(HISTORY_SIZE, HISTORY_TTL),
        )
        .with_namespace(
            "room",
            NamespaceConfig::default()
                .with_presence(true)
                .with_join_leave(true),
        )
}

/// `{"n": n}` published durably to `channel` of the `history` namespace, as the gateway
/// publishes there (the library's durable publish with the namespace's size and TTL).
async fn publish_numbered(hub: &PubSubHub, channel: &str, n: u64) {
    hub.publish_with_history(
        channel,
        json!({ "n": n }).to_string().as_bytes(),
        &HistoryOptions::new(HISTORY_SIZE, HISTORY_TTL),
    )
    .await
    .unwrap_or_else(|e| panic!("durable publish {n} to {channel}: {e}"));
}

/// A publisher at a steady rate: one durable publication per tick, numbered from 1, each
/// in a task of its own so that a slow reply does not lower the rate (so numbers may reach
/// Redis slightly out of order; offsets give the order).
struct Steady {
    stop: oneshot::Sender<()>,
    task: JoinHandle<u64>,
}

impl Steady {
    fn start(hub: PubSubHub, channel: String, per_second: u64) -> Steady {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second as u32);
            let mut publishing = tokio::task::JoinSet::new();
            let mut n = 0;
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {
                        n += 1;
                        let (hub, channel) = (hub.clone(), channel.clone());
                        publishing.spawn(async move { publish_numbered(&hub, &channel, n).await });
                    }
                }
                while let Some(done) = publishing.try_join_next() {
                    done.expect("a durable publish did not panic");
                }
            }
            while let Some(done) = publishing.join_next().await {
                done.expect("a durable publish did not panic");
            }
            n
        });
        Steady { stop, task }
    }

    /// Stops it once every publication it started is done; returns how many it published.
    async fn stop(self) -> u64 {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the steady publisher stops")
            .expect("the steady publisher did not panic")
    }
}

/// A gateway in a process of its own, killable with SIGKILL: this test binary run again
/// with [`GATEWAY_PROCESS_ENV`] set, as the ignored test `sdk::gateway_process`, which
/// serves [`gateway_config`] on `127.0.0.1:0` and prints `listening ADDR`.
pub struct GatewayProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl GatewayProcess {
    async fn start(redis: &RedisServer) -> GatewayProcess {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut cmd = Command::new(exe);
        cmd.args([
            "--ignored",
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "sdk::gateway_process",
        ])
        .env(GATEWAY_PROCESS_ENV, redis.url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
        let mut child = cmd.spawn().expect("the gateway process starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let line = lines
                    .next_line()
                    .await
                    .expect("the gateway process' stdout")
                    .expect("the gateway process exited before listening");
                // libtest prints `test sdk::gateway_process ... ` first, without a newline.
                if let Some((_, addr)) = line.split_once("listening ") {
                    return addr.trim().parse::<SocketAddr>().expect("an address");
                }
            }
        })
        .await
        .expect("the gateway process listens within 20 s");
        // Keep reading so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        GatewayProcess { child, addr }
    }

    /// The WebSocket endpoint.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/connection/websocket", self.addr)
    }

    /// `kill -9`: SIGKILL, then waits for the process to be gone.
    async fn kill(&mut self) {
        self.child.start_kill().expect("SIGKILL sent");
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("the killed gateway is gone within 10 s")
            .expect("wait");
    }

    /// Closes its stdin (it stops cleanly) and waits for it.
    async fn stop(mut self) {
        drop(self.child.stdin.take());
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The body of the ignored test `sdk::gateway_process`: serves [`gateway_config`] from the
/// Redis at `url` until stdin closes.
pub async fn serve_gateway_process(url: &str) {
    let client = redis::Client::open(url).expect("a Redis URL");
    let config = HubConfig::default()
        .with_mode(ConnectionMode::Shared { connections: 2 })
        .with_reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500));
    let hub = PubSubHub::with_config(client, config)
        .await
        .expect("hub connects");
    let mut served = Served::start(hub.clone(), gateway_config()).await;
    println!("listening {}", served.addr);
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut sink);
    })
    .await;
    served.stop().await;
    hub.shutdown().await;
}

/// A hub in the shared mode the gateway runs on, reconnecting quickly so that the Redis
/// restart scenario heals within its bound.
pub async fn hub(redis: &RedisServer) -> PubSubHub {
    let config = HubConfig::default()
        .with_mode(ConnectionMode::Shared { connections: 2 })
        .with_reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500));
    PubSubHub::with_config(redis.client(), config)
        .await
        .expect("hub connects")
}

/// One gateway served on a loopback port until stopped; [`Served::restart`] serves a new
/// gateway from the same hub on the same port, as a process restart would.
pub struct Served {
    /// The bound address; restarts keep it.
    pub addr: SocketAddr,
    hub: PubSubHub,
    config: GatewayConfig,
    /// Routes of the embedding app served next to the gateway's (the browser test's page),
    /// as an app mounts [`Gateway::router`] into its own router.
    app: Option<Router>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Served {
    /// Builds a gateway from `hub` and `config` and serves it on `127.0.0.1:0`.
    pub async fn start(hub: PubSubHub, config: GatewayConfig) -> Served {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut served = Served {
            addr,
            hub,
            config,
            app: None,
            stop: None,
            task: None,
        };
        served.serve_on(listener);
        served
    }

    /// Serves the gateway's router merged into `app` on `127.0.0.1:0`: the page and the
    /// gateway share one origin, as in an app that embeds the gateway.
    pub async fn start_in_app(hub: PubSubHub, config: GatewayConfig, app: Router) -> Served {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut served = Served {
            addr,
            hub,
            config,
            app: Some(app),
            stop: None,
            task: None,
        };
        served.serve_on(listener);
        served
    }

    fn serve_on(&mut self, listener: TcpListener) {
        let gateway = Gateway::new(self.hub.clone(), self.config.clone()).expect("valid config");
        let (stop, stopped) = oneshot::channel::<()>();
        self.stop = Some(stop);
        let shutdown = async move {
            let _ = stopped.await;
        };
        self.task = Some(match &self.app {
            None => tokio::spawn(serve(listener, gateway, shutdown)),
            Some(app) => {
                let router = app.clone().merge(gateway.router());
                tokio::spawn(async move {
                    axum::serve(listener, router)
                        .with_graceful_shutdown(async move {
                            shutdown.await;
                            gateway.shutdown().await;
                        })
                        .await
                })
            }
        });
    }

    /// `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The WebSocket endpoint.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/connection/websocket", self.addr)
    }

    /// Stops serving; fails unless `serve` returns cleanly within 5 s, open connections
    /// included (each is told "shutdown").
    pub async fn stop(&mut self) {
        let Some(stop) = self.stop.take() else {
            return;
        };
        let _ = stop.send(());
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("serve returns within 5 s of its shutdown signal")
            .expect("serve did not panic")
            .expect("serve returns Ok");
    }

    /// Stops, then serves a new gateway from the same hub on the same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    /// Serves a new gateway from the same hub on the same port, after [`Served::stop`].
    pub async fn start_again(&mut self) {
        assert!(self.stop.is_none(), "start_again while serving");
        let listener = rebind(self.addr).await;
        self.serve_on(listener);
    }
}

/// `redis-cli` against the private server: Redis' own client, as a publisher the gateway
/// does not control.
fn redis_cli(redis: &RedisServer) -> Command {
    let mut cmd = Command::new("redis-cli");
    cmd.arg("-h")
        .arg(redis.host())
        .arg("-p")
        .arg(redis.port().to_string());
    if let Some(password) = redis.password() {
        cmd.arg("--no-auth-warning").arg("-a").arg(password);
    }
    cmd.kill_on_drop(true);
    cmd
}

/// `redis-cli PUBLISH channel payload`; returns the receiver count it printed.
pub async fn redis_cli_publish(redis: &RedisServer, channel: &str, payload: &str) -> i64 {
    let mut cmd = redis_cli(redis);
    cmd.arg("PUBLISH").arg(channel).arg(payload);
    let output = tokio::time::timeout(REDIS_CLI_TIMEOUT, cmd.output())
        .await
        .expect("redis-cli PUBLISH within its bound")
        .expect("redis-cli runs");
    assert!(
        output.status.success(),
        "redis-cli PUBLISH: {}",
        describe(&output)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim()
        .trim_start_matches("(integer) ")
        .parse()
        .unwrap_or_else(|_| panic!("redis-cli PUBLISH printed {text:?}"))
}

/// A `redis-cli SUBSCRIBE channel` process: a plain Redis subscriber.
struct RedisCliSubscriber {
    /// Held so that `kill_on_drop` ends the process with the rig.
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl RedisCliSubscriber {
    /// Starts it and waits for its subscription confirmation (so a publish made after this
    /// returns reaches it).
    async fn start(redis: &RedisServer, channel: &str) -> RedisCliSubscriber {
        let mut cmd = redis_cli(redis);
        cmd.arg("SUBSCRIBE")
            .arg(channel)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("redis-cli SUBSCRIBE runs");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut subscriber = RedisCliSubscriber {
            _child: child,
            lines,
        };
        // Without a terminal redis-cli prints each reply field on its own line:
        // "subscribe", the channel, the subscription count.
        let confirmation = subscriber.fields(3).await;
        assert_eq!(
            confirmation[0], "subscribe",
            "redis-cli SUBSCRIBE printed {confirmation:?}"
        );
        subscriber
    }

    async fn fields(&mut self, n: usize) -> Vec<String> {
        let mut fields = Vec::with_capacity(n);
        while fields.len() < n {
            let line = tokio::time::timeout(REDIS_CLI_TIMEOUT, self.lines.next_line())
                .await
                .expect("redis-cli SUBSCRIBE printed the next line within its bound")
                .expect("redis-cli's stdout")
                .expect("redis-cli SUBSCRIBE still running");
            fields.push(line);
        }
        fields
    }

    /// The payloads of the next `count` messages.
    async fn messages(&mut self, count: usize) -> Vec<String> {
        let mut payloads = Vec::with_capacity(count);
        for _ in 0..count {
            let message = self.fields(3).await;
            assert_eq!(
                message[0], "message",
                "redis-cli SUBSCRIBE printed {message:?}"
            );
            payloads.push(message[2].clone());
        }
        payloads
    }
}

/// Everything a scenario can act on through `control:` requests.
pub struct Rig {
    /// The private Redis every gateway of the test uses.
    pub redis: RedisServer,
    /// The gateways under test; `restart-gateway` restarts the first.
    pub gateways: Vec<Served>,
    /// Gateways in processes of their own ([`Rig::start_processes`]); `kill-gateway`
    /// kills one.
    pub processes: Vec<GatewayProcess>,
    listeners: HashMap<String, RedisCliSubscriber>,
    steady: Option<Steady>,
    /// A hub of the test's own for durable publishes when no gateway runs in-process.
    publisher: Option<PubSubHub>,
}

impl Rig {
    /// A private Redis and `n` gateways on it, each with its own hub (so its own Redis
    /// connections, as separate processes would have).
    pub async fn start(n: usize) -> Rig {
        let redis = RedisServer::start();
        let mut gateways = Vec::with_capacity(n);
        for _ in 0..n {
            gateways.push(Served::start(hub(&redis).await, gateway_config()).await);
        }
        Rig {
            redis,
            gateways,
            processes: Vec::new(),
            listeners: HashMap::new(),
            steady: None,
            publisher: None,
        }
    }

    /// A private Redis and `n` gateways each in a process of its own ([`GatewayProcess`]).
    pub async fn start_processes(n: usize) -> Rig {
        let redis = RedisServer::start();
        let mut processes = Vec::with_capacity(n);
        for _ in 0..n {
            processes.push(GatewayProcess::start(&redis).await);
        }
        let publisher = Some(hub(&redis).await);
        Rig {
            redis,
            gateways: Vec::new(),
            processes,
            listeners: HashMap::new(),
            steady: None,
            publisher,
        }
    }

    /// The hub durable publishes go through: the test's own, or the first gateway's.
    fn publishing_hub(&self) -> PubSubHub {
        match &self.publisher {
            Some(hub) => hub.clone(),
            None => self.gateways[0].hub.clone(),
        }
    }

    /// A private Redis and one gateway embedded in `app`.
    pub async fn start_in_app(app: Router) -> Rig {
        let redis = RedisServer::start();
        let gateway = Served::start_in_app(hub(&redis).await, gateway_config(), app).await;
        Rig {
            redis,
            gateways: vec![gateway],
            processes: Vec::new(),
            listeners: HashMap::new(),
            steady: None,
            publisher: None,
        }
    }

    /// Stops every gateway (each must return cleanly).
    pub async fn stop(mut self) {
        if let Some(steady) = self.steady.take() {
            steady.stop().await;
        }
        for gateway in &mut self.gateways {
            gateway.stop().await;
            gateway.hub.shutdown().await;
        }
        for process in self.processes.drain(..) {
            process.stop().await;
        }
        if let Some(publisher) = self.publisher.take() {
            publisher.shutdown().await;
        }
    }

    /// Carries out one control request and returns its answer.
    async fn control(&mut self, request: &Value) -> Value {
        let text = |key: &str| {
            request[key]
                .as_str()
                .unwrap_or_else(|| panic!("control request without {key}: {request}"))
                .to_owned()
        };
        match request["do"].as_str() {
            Some("redis-publish") => {
                let receivers =
                    redis_cli_publish(&self.redis, &text("channel"), &text("payload")).await;
                json!({ "receivers": receivers })
            }
            Some("redis-listen") => {
                let channel = text("channel");
                let subscriber = RedisCliSubscriber::start(&self.redis, &channel).await;
                self.listeners.insert(channel, subscriber);
                json!({})
            }
            Some("redis-heard") => {
                let channel = text("channel");
                let count = request["count"].as_u64().unwrap_or(1) as usize;
                let subscriber = self
                    .listeners
                    .get_mut(&channel)
                    .unwrap_or_else(|| panic!("redis-heard before redis-listen on {channel}"));
                json!({ "payloads": subscriber.messages(count).await })
            }
            Some("wait-numsub") => {
                let channel = text("channel");
                let count = request["count"].as_i64().expect("count");
                let redis = &self.redis;
                tokio::task::block_in_place(|| {
                    redis.wait_numsub(&channel, count, Duration::from_secs(10))
                });
                json!({})
            }
            Some("restart-gateway") => {
                self.gateways[0].restart().await;
                json!({})
            }
            Some("stop-gateway") => {
                self.gateways[0].stop().await;
                json!({})
            }
            Some("start-gateway") => {
                self.gateways[0].start_again().await;
                json!({})
            }
            Some("kill-gateway") => {
                let index = request["index"].as_u64().unwrap_or(0) as usize;
                self.processes[index].kill().await;
                json!({})
            }
            Some("publish-history") => {
                // One after the other as fast as Redis answers: offsets follow the numbers.
                let channel = text("channel");
                let from = request["from"].as_u64().expect("from");
                let count = request["count"].as_u64().expect("count");
                let hub = self.publishing_hub();
                for n in from..from + count {
                    publish_numbered(&hub, &channel, n).await;
                }
                json!({})
            }
            Some("steady-start") => {
                let rate = request["rate"].as_u64().expect("rate");
                assert!(self.steady.is_none(), "one steady publisher at a time");
                self.steady = Some(Steady::start(self.publishing_hub(), text("channel"), rate));
                json!({})
            }
            Some("steady-stop") => {
                let steady = self.steady.take().expect("steady-stop after steady-start");
                json!({ "count": steady.stop().await })
            }
            Some("restart-redis") => {
                let redis = &mut self.redis;
                tokio::task::block_in_place(|| redis.restart());
                json!({})
            }
            _ => panic!("unknown control request {request}"),
        }
    }

    /// Runs `node SCRIPT ARGS...` in `tests/js`, answering its control requests, and fails
    /// the test with the scenario's output and the Redis log unless it prints `PASSED` and
    /// exits 0 within `limit`.
    pub async fn run_node(&mut self, args: &[String], limit: Duration) {
        let rig = &mut *self;
        let run = run_node(&js_dir(), args, limit, async |request| {
            let request: Value = serde_json::from_str(request)
                .unwrap_or_else(|e| panic!("bad control request {request:?}: {e}"));
            tokio::time::timeout(CONTROL_TIMEOUT, rig.control(&request))
                .await
                .unwrap_or_else(|_| panic!("control {request}: over {CONTROL_TIMEOUT:?}"))
                .to_string()
        })
        .await;
        assert!(
            run.passed("PASSED"),
            "scenario {args:?} failed:\n{}\n--- redis log tail ---\n{}",
            run.describe(),
            self.redis.log_tail(20),
        );
    }
}
