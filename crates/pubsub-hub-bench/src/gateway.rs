//! The gateway against what users would pick instead: socket.io 4 with
//! `@socket.io/redis-adapter` (`socketio/server.mjs`, run by `node`) on the same private
//! Redis, driven by the same number of WebSocket clients spread over 100 channels (rooms).
//!
//! Each server runs in a process of its own, so that its RSS is its own: the gateway as this
//! binary's hidden `gateway-server` subcommand ([`server`]), socket.io as `node`. The clients
//! all live in this process, one tokio task each, speaking each server's protocol over
//! tokio-tungstenite: Centrifugo's client protocol (JSON) to the gateway, Engine.IO 4 /
//! Socket.IO 5 to socket.io. Per client count, both servers are measured in turn:
//!
//! 1. **connect**: every client connects and subscribes (joins its room); the server's
//!    `VmRSS` before and after gives RSS per connection.
//! 2. **fixed rates** (1,000 and 10,000 deliveries/s in a full run, that is publishes/s
//!    times clients per channel, so every client count carries the same load): publishes
//!    round-robin over the channels for a fixed time; the publish-to-client latency of
//!    every delivery is recorded (p50/p99/p99.9).
//! 3. **flat out**: a fixed number of publishes as fast as the publisher can send them;
//!    deliveries per second from the first publish to the last delivery (or the drain
//!    bound).
//!
//! How each side is published to, as its users would: the gateway's channels are Redis
//! channels, so a backend `PUBLISH`es to Redis (one multiplexed redis-rs connection, at most
//! [`IN_FLIGHT`] commands in flight); socket.io has no such entry, so a publisher socket
//! sends a `pub` event and the server emits to the room through the adapter (which also
//! publishes it to Redis for other nodes). Each payload carries a phase number and its send
//! time in nanoseconds since a clock origin of this process, read back by the clients.
//!
//! Rows report the gateway against socket.io with the project's goals: deliveries/s at least
//! 3x, p99 at most 0.5x, RSS per connection at most 0.5x, and 10,000 connections within
//! 300 MB of gateway RSS.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::Bench;
use crate::args::GatewayServerArgs;
use crate::driver::latency_histogram;
use crate::error::BenchError;
use crate::report::{Row, Target};
use crate::server::open_files_limit;

/// Channels (rooms) the clients spread over: client `i` takes channel `i % CHANNELS`.
pub const CHANNELS: usize = 100;
/// Redis commands in flight from the gateway's publisher.
pub const IN_FLIGHT: usize = 64;
/// File descriptors kept free in this process besides one per client.
const FD_HEADROOM: u64 = 200;
/// Clients connecting at once.
const CONNECT_CONCURRENCY: usize = 200;
/// Read buffer of each driver client (and the socket publisher). tungstenite's default of
/// 128 KiB is zero-filled up to its full size before every socket read, even one that finds
/// nothing: with 10,000 clients the driver would spend its cores clearing memory and
/// measure itself rather than the server. Pushes are a few hundred bytes; a larger
/// message only takes more reads.
const CLIENT_READ_BUFFER_BYTES: usize = 4 * 1024;

/// Opens a WebSocket client connection with the driver's buffer sizes.
async fn open_ws(url: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let config = WebSocketConfig::default().read_buffer_size(CLIENT_READ_BUFFER_BYTES);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), false).await?;
    Ok(ws)
}

/// The goals, as ratios gateway / socket.io.
const GOAL_DELIVERIES: Target = Target::AtLeast(3.0);
const GOAL_P99: Target = Target::AtMost(0.5);
const GOAL_RSS: Target = Target::AtMost(0.5);
/// 10,000 gateway connections within this many MB of process RSS.
const GOAL_RSS_MB_AT_10K: f64 = 300.0;

/// Sizes of one run.
struct Sizes {
    clients: Vec<usize>,
    /// Deliveries per second of each fixed-rate phase (publishes per second times clients
    /// per channel), so that every client count is loaded alike.
    delivery_rates: Vec<u64>,
    /// Length of a fixed-rate phase.
    rate_duration: Duration,
    /// Deliveries (publishes × clients per channel) of the flat-out phase.
    flat_deliveries: u64,
    /// Bound on connecting and subscribing every client.
    connect_max: Duration,
    /// Bound on the deliveries arriving after the last publish.
    drain_max: Duration,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                clients: vec![100],
                delivery_rates: vec![400],
                rate_duration: Duration::from_millis(300),
                flat_deliveries: 10_000,
                connect_max: Duration::from_secs(20),
                drain_max: Duration::from_secs(10),
            }
        } else {
            Sizes {
                clients: vec![1_000, 10_000],
                delivery_rates: vec![1_000, 10_000],
                rate_duration: Duration::from_secs(4),
                flat_deliveries: 200_000,
                connect_max: Duration::from_secs(120),
                drain_max: Duration::from_secs(30),
            }
        }
    }
}

/// Which server a measurement drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum System {
    Gateway,
    SocketIo,
}

impl System {
    fn label(self) -> &'static str {
        match self {
            System::Gateway => "gateway",
            System::SocketIo => "socket.io 4 + redis-adapter",
        }
    }
}

/// What every client task shares: the clock origin, the phase being recorded, and the
/// deliveries and latencies of that phase.
struct Shared {
    origin: Instant,
    phase: AtomicU64,
    /// Whether the current phase records latencies (the fixed-rate ones do).
    recording: std::sync::atomic::AtomicBool,
    delivered: AtomicU64,
    /// Deliveries of earlier phases arriving late, or unreadable payloads.
    stray: AtomicU64,
    /// Latencies in microseconds, of the fixed-rate phase only.
    latencies: Mutex<Histogram<u64>>,
    /// When the last delivery of the current phase arrived (ns since `origin`).
    last_delivery_ns: AtomicU64,
    /// Clients whose connection ended during the run.
    closed: AtomicU64,
    /// Publishes that failed (a PUBLISH that timed out on an overloaded machine): counted
    /// and reported with the phase, whose deliveries then fall short.
    publish_errors: AtomicU64,
}

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared {
            origin: Instant::now(),
            phase: AtomicU64::new(0),
            recording: std::sync::atomic::AtomicBool::new(false),
            delivered: AtomicU64::new(0),
            stray: AtomicU64::new(0),
            latencies: Mutex::new(latency_histogram()),
            last_delivery_ns: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            publish_errors: AtomicU64::new(0),
        })
    }

    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// Starts counting phase `phase` from zero, recording latencies if `recording`.
    fn begin(&self, phase: u64, recording: bool) {
        self.delivered.store(0, Ordering::SeqCst);
        self.last_delivery_ns.store(0, Ordering::SeqCst);
        self.latencies.lock().expect("not poisoned").reset();
        self.recording.store(recording, Ordering::SeqCst);
        self.publish_errors.store(0, Ordering::SeqCst);
        self.phase.store(phase, Ordering::SeqCst);
    }

    /// One delivery with payload text `text` (JSON with `"p"` and `"t"` somewhere in it).
    fn deliver(&self, text: &str, record_latency: bool) {
        let (Some(phase), Some(sent)) =
            (number_after(text, "\"p\":"), number_after(text, "\"t\":"))
        else {
            self.stray.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if phase != self.phase.load(Ordering::Relaxed) {
            self.stray.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let now = self.now_ns();
        if record_latency {
            let micros = (now.saturating_sub(sent) / 1_000).max(1);
            let _ = self.latencies.lock().expect("not poisoned").record(micros);
        }
        self.last_delivery_ns.fetch_max(now, Ordering::Relaxed);
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }
}

/// The unsigned integer right after `key` in `text`.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let start = text.find(key)? + key.len();
    let digits: &str = &text[start..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// The payload of one publish: phase and send time.
fn payload(phase: u64, sent_ns: u64) -> String {
    format!(r#"{{"p":{phase},"t":{sent_ns},"pad":"xxxxxxxxxxxxxxxx"}}"#)
}

/// Channel `i % CHANNELS` of `system`. The gateway's have no `:`, which would make the
/// part before it a namespace that the bench's gateway does not configure.
fn channel_name(system: System, i: usize) -> String {
    match system {
        System::Gateway => format!("bench.gw.{}", i % CHANNELS),
        System::SocketIo => format!("room-{}", i % CHANNELS),
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn ws_error(what: &str) -> impl Fn(tokio_tungstenite::tungstenite::Error) -> BenchError + '_ {
    move |e| BenchError::new(format!("{what}: {e}"))
}

/// The next text frame, answering pings on the way (the gateway's `{}` lines, Engine.IO's
/// `2`); `None` when the connection ended.
async fn next_text(ws: &mut Ws, system: System) -> Result<Option<String>, BenchError> {
    loop {
        let Some(frame) = ws.next().await else {
            return Ok(None);
        };
        match frame.map_err(ws_error("reading a frame"))? {
            Message::Text(text) => {
                let text = text.to_string();
                match system {
                    System::SocketIo if text == "2" => {
                        ws.send(Message::text("3"))
                            .await
                            .map_err(ws_error("pong"))?;
                    }
                    System::Gateway if text.lines().all(|l| l.trim() == "{}") => {
                        ws.send(Message::text("{}"))
                            .await
                            .map_err(ws_error("pong"))?;
                    }
                    _ => return Ok(Some(text)),
                }
            }
            Message::Close(_) => return Ok(None),
            _ => {}
        }
    }
}

/// Connects one client and subscribes it to `channel`; returns once the server confirmed.
async fn connect(system: System, addr: SocketAddr, channel: &str) -> Result<Ws, BenchError> {
    let url = match system {
        System::Gateway => format!("ws://{addr}/connection/websocket"),
        System::SocketIo => format!("ws://{addr}/socket.io/?EIO=4&transport=websocket"),
    };
    let mut ws = open_ws(&url).await.map_err(ws_error("WebSocket connect"))?;
    match system {
        System::Gateway => {
            let commands = format!(
                "{}\n{}",
                r#"{"id":1,"connect":{"name":"bench"}}"#,
                serde_json::json!({"id": 2, "subscribe": {"channel": channel}})
            );
            ws.send(Message::text(commands))
                .await
                .map_err(ws_error("connect command"))?;
            let mut replies = 0;
            while replies < 2 {
                let text = next_text(&mut ws, system)
                    .await?
                    .ok_or_else(|| BenchError::new("the gateway closed during connect"))?;
                for line in text.lines() {
                    if line.contains("\"error\"") {
                        return Err(BenchError::new(format!("the gateway refused: {line}")));
                    }
                    if line.starts_with("{\"id\":") {
                        replies += 1;
                    }
                }
            }
        }
        System::SocketIo => {
            // Engine.IO open packet, then the Socket.IO connect of the main namespace, then
            // `join` with acknowledgement 0.
            let open = next_text(&mut ws, system).await?.unwrap_or_default();
            if !open.starts_with('0') {
                return Err(BenchError::new(format!("socket.io open packet: {open:?}")));
            }
            ws.send(Message::text("40")).await.map_err(ws_error("40"))?;
            let connected = next_text(&mut ws, system).await?.unwrap_or_default();
            if !connected.starts_with("40") {
                return Err(BenchError::new(format!("socket.io connect: {connected:?}")));
            }
            ws.send(Message::text(format!(r#"420["join","{channel}"]"#)))
                .await
                .map_err(ws_error("join"))?;
            let ack = next_text(&mut ws, system).await?.unwrap_or_default();
            if !ack.starts_with("430") {
                return Err(BenchError::new(format!("socket.io join: {ack:?}")));
            }
        }
    }
    Ok(ws)
}

/// A subscribed client's reading loop: counts every delivery until the connection ends.
async fn receive(mut ws: Ws, system: System, shared: Arc<Shared>) {
    loop {
        match next_text(&mut ws, system).await {
            Ok(Some(text)) => {
                let record = shared.recording.load(Ordering::Relaxed);
                match system {
                    // Several pushes may share a frame, one per line.
                    System::Gateway => {
                        for line in text.lines().filter(|l| l.contains("\"pub\"")) {
                            shared.deliver(line, record);
                        }
                    }
                    System::SocketIo => {
                        if text.starts_with("42") {
                            shared.deliver(&text, record);
                        }
                    }
                }
            }
            _ => {
                shared.closed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// A server under test, in its own process.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    async fn start(bench: &Bench, system: System) -> Result<ServerProcess, BenchError> {
        let mut cmd = match system {
            System::Gateway => {
                let exe = std::env::current_exe()
                    .map_err(|e| BenchError::new(format!("cannot find this executable: {e}")))?;
                let mut cmd = Command::new(exe);
                cmd.args([
                    "gateway-server",
                    "--redis-port",
                    &bench.redis.port().to_string(),
                ]);
                cmd
            }
            System::SocketIo => {
                let dir = socketio_dir();
                if !dir.join("node_modules/socket.io/package.json").exists() {
                    return Err(BenchError::new(format!(
                        "socket.io is not installed: run `npm ci` in {} (scripts/setup does)",
                        dir.display()
                    )));
                }
                let mut cmd = Command::new("node");
                cmd.arg("server.mjs")
                    .arg("0")
                    .arg(bench.redis.url())
                    .current_dir(dir);
                cmd
            }
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError::new(format!("cannot start {}: {e}", system.label())))?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .map_err(|_| BenchError::new(format!("{} did not start within 20 s", system.label())))?
            .map_err(|e| BenchError::new(format!("reading {}: {e}", system.label())))?
            .ok_or_else(|| BenchError::new(format!("{} exited at start", system.label())))?;
        let port: u16 = line
            .strip_prefix("listening ")
            .and_then(|rest| rest.rsplit(':').next())
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| BenchError::new(format!("{}: unexpected {line:?}", system.label())))?;
        // Keep reading its stdout so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(ServerProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        })
    }

    fn rss_kib(&self) -> u64 {
        self.child.id().map_or(0, rss_kib_of)
    }

    async fn stop(mut self) {
        // Closing stdin stops the gateway server; node gets SIGTERM through kill().
        drop(self.child.stdin.take());
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// `VmRSS` of process `pid` in KiB.
fn rss_kib_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The Node package of the socket.io server.
pub fn socketio_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("socketio")
}

/// How to publish to a system.
enum Publisher {
    Redis(redis::aio::MultiplexedConnection),
    /// Boxed: one per measurement, and the stream is large next to a connection handle.
    Socket(Box<Ws>),
}

impl Publisher {
    async fn open(
        bench: &Bench,
        system: System,
        addr: SocketAddr,
    ) -> Result<Publisher, BenchError> {
        Ok(match system {
            System::Gateway => Publisher::Redis(bench.redis.connection().await?),
            System::SocketIo => {
                // A socket of its own that joins no room; its reader answers pings.
                let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
                let mut ws = open_ws(&url).await.map_err(ws_error("publisher connect"))?;
                let _open = next_text(&mut ws, system).await?;
                ws.send(Message::text("40")).await.map_err(ws_error("40"))?;
                let _connected = next_text(&mut ws, system).await?;
                Publisher::Socket(Box::new(ws))
            }
        })
    }

    /// Sends `count` publishes of `phase`, round-robin over the channels, paced to `rate`
    /// per second (or flat out with `None`), never waiting for one to finish before the
    /// next is due.
    async fn publish(
        &mut self,
        system: System,
        shared: &Shared,
        phase: u64,
        count: u64,
        rate: Option<u64>,
    ) -> Result<(), BenchError> {
        let start = Instant::now();
        match self {
            Publisher::Redis(conn) => {
                let mut pending = futures_util::stream::FuturesUnordered::new();
                for i in 0..count {
                    if let Some(rate) = rate {
                        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
                        // Finish what completed while waiting for the next send time.
                        while Instant::now() < due {
                            tokio::select! {
                                Some(r) = pending.next(), if !pending.is_empty() => check(shared, r)?,
                                _ = tokio::time::sleep_until(due.into()) => {}
                            }
                        }
                    }
                    while pending.len() >= IN_FLIGHT {
                        if let Some(r) = pending.next().await {
                            check(shared, r)?;
                        }
                    }
                    let mut conn = conn.clone();
                    let channel = channel_name(system, i as usize);
                    let body = payload(phase, shared.now_ns());
                    pending.push(async move {
                        redis::cmd("PUBLISH")
                            .arg(channel)
                            .arg(body)
                            .query_async::<i64>(&mut conn)
                            .await
                    });
                }
                while let Some(r) = pending.next().await {
                    check(shared, r)?;
                }
            }
            Publisher::Socket(ws) => {
                for i in 0..count {
                    if let Some(rate) = rate {
                        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
                        tokio::time::sleep_until(due.into()).await;
                    }
                    let room = channel_name(system, i as usize);
                    let frame =
                        format!(r#"42["pub","{room}",{}]"#, payload(phase, shared.now_ns()));
                    ws.feed(Message::text(frame))
                        .await
                        .map_err(ws_error("publish"))?;
                    if rate.is_some() || i % 64 == 63 {
                        ws.flush().await.map_err(ws_error("publish"))?;
                    }
                }
                ws.flush().await.map_err(ws_error("publish"))?;
            }
        }
        Ok(())
    }

    /// Answers the server's pings of an idle socket publisher (between phases).
    async fn idle(&mut self, system: System) -> Result<(), BenchError> {
        if let Publisher::Socket(ws) = self {
            // Only a ping can be waiting: this socket joined no room.
            if let Ok(r) =
                tokio::time::timeout(Duration::from_millis(1), next_text(ws, system)).await
            {
                r?;
            }
        }
        Ok(())
    }
}

/// Counts a failed PUBLISH; a connection that is gone ends the run.
fn check(shared: &Shared, r: redis::RedisResult<i64>) -> Result<(), BenchError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.is_timeout() => {
            shared.publish_errors.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => Err(BenchError::new(format!("PUBLISH: {e}"))),
    }
}

/// One fixed-rate phase: its latencies and how much of it arrived.
struct FixedRate {
    /// Publishes per second.
    rate: u64,
    /// Deliveries per second that rate makes.
    deliveries: u64,
    latency: Histogram<u64>,
    delivered: u64,
    expected: u64,
}

/// One system's numbers at one client count.
struct Measured {
    clients: usize,
    rss_kib_per_conn: f64,
    rss_total_mb: f64,
    connect_secs: f64,
    fixed: Vec<FixedRate>,
    flat_per_sec: f64,
    flat_delivered: u64,
    flat_expected: u64,
    closed: u64,
}

/// Waits until `shared.delivered` reaches `expected` or `bound` passes.
async fn drain(shared: &Shared, expected: u64, bound: Duration) {
    let deadline = Instant::now() + bound;
    while shared.delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn measure(
    bench: &Bench,
    sizes: &Sizes,
    system: System,
    clients: usize,
) -> Result<Measured, BenchError> {
    let server = ServerProcess::start(bench, system).await?;
    let addr = server.addr;
    let rss_idle = server.rss_kib();
    let shared = Shared::new();

    // 1. Connect and subscribe every client.
    let started = Instant::now();
    let connected = futures_util::stream::iter(0..clients)
        .map(|i| {
            let channel = channel_name(system, i);
            async move { connect(system, addr, &channel).await }
        })
        .buffer_unordered(CONNECT_CONCURRENCY);
    let mut connected = std::pin::pin!(connected);
    let mut readers = Vec::with_capacity(clients);
    let deadline = started + sizes.connect_max;
    while let Some(ws) = tokio::time::timeout_at(deadline.into(), connected.next())
        .await
        .map_err(|_| {
            BenchError::new(format!(
                "{}: {clients} clients not subscribed within {:?}",
                system.label(),
                sizes.connect_max
            ))
        })?
    {
        readers.push(tokio::spawn(receive(ws?, system, shared.clone())));
    }
    let connect_secs = started.elapsed().as_secs_f64();
    let rss_connected = server.rss_kib();
    bench.progress.step(&format!(
        "{}: {clients} clients subscribed in {connect_secs:.2}s, RSS {} -> {} KiB",
        system.label(),
        rss_idle,
        rss_connected
    ));
    let per_channel = clients.div_ceil(CHANNELS) as u64;
    let mut publisher = Publisher::open(bench, system, server.addr).await?;

    // 2. Fixed rates, latencies recorded.
    // Publish i goes to channel i % CHANNELS, which has clients / CHANNELS clients (or
    // one more, for the first clients % CHANNELS channels).
    let expected = |count: u64| -> u64 {
        (0..count.min(CHANNELS as u64))
            .map(|c| {
                let on_channel =
                    (clients / CHANNELS + usize::from((c as usize) < clients % CHANNELS)) as u64;
                on_channel * (count / CHANNELS as u64 + u64::from(c < count % CHANNELS as u64))
            })
            .sum()
    };
    let mut fixed = Vec::with_capacity(sizes.delivery_rates.len());
    for (k, &deliveries) in sizes.delivery_rates.iter().enumerate() {
        let phase = 1 + k as u64;
        let rate = (deliveries / per_channel.max(1)).max(1);
        let count = (rate as f64 * sizes.rate_duration.as_secs_f64()) as u64;
        let want = expected(count);
        shared.begin(phase, true);
        publisher
            .publish(system, &shared, phase, count, Some(rate))
            .await?;
        drain(&shared, want, sizes.drain_max).await;
        let got = shared.delivered.load(Ordering::SeqCst);
        let latency = shared.latencies.lock().expect("not poisoned").clone();
        bench.progress.step(&format!(
            "{}: {rate} pub/s: p50 {} us, p99 {} us, p99.9 {} us ({got}/{want} delivered, {} publishes failed)",
            system.label(),
            latency.value_at_quantile(0.5),
            latency.value_at_quantile(0.99),
            latency.value_at_quantile(0.999),
            shared.publish_errors.load(Ordering::SeqCst),
        ));
        fixed.push(FixedRate {
            rate,
            deliveries,
            latency,
            delivered: got,
            expected: want,
        });
        publisher.idle(system).await?;
    }

    // 3. Flat out.
    let flat_count = (sizes.flat_deliveries / per_channel.max(1)).max(CHANNELS as u64);
    let flat_expected = expected(flat_count);
    let phase = 1 + sizes.delivery_rates.len() as u64;
    shared.begin(phase, false);
    let flat_start = shared.now_ns();
    publisher
        .publish(system, &shared, phase, flat_count, None)
        .await?;
    drain(&shared, flat_expected, sizes.drain_max).await;
    let flat_delivered = shared.delivered.load(Ordering::SeqCst);
    let flat_secs = (shared
        .last_delivery_ns
        .load(Ordering::SeqCst)
        .saturating_sub(flat_start)) as f64
        / 1e9;
    let flat_per_sec = if flat_secs > 0.0 {
        flat_delivered as f64 / flat_secs
    } else {
        0.0
    };
    let closed = shared.closed.load(Ordering::SeqCst);
    bench.progress.step(&format!(
        "{}: flat out {flat_per_sec:.0} deliveries/s ({flat_delivered}/{flat_expected} delivered); {closed} connections closed",
        system.label(),
    ));

    for reader in &readers {
        reader.abort();
    }
    drop(publisher);
    server.stop().await;
    Ok(Measured {
        clients,
        rss_kib_per_conn: rss_connected.saturating_sub(rss_idle) as f64 / clients.max(1) as f64,
        rss_total_mb: rss_connected as f64 * 1024.0 / 1e6,
        connect_secs,
        fixed,
        flat_per_sec,
        flat_delivered,
        flat_expected,
        closed,
    })
}

/// Runs the scenario: for each client count, socket.io then the gateway, and the rows.
pub async fn run(bench: &mut Bench) -> Result<(), BenchError> {
    let sizes = Sizes::new(bench.plan.quick);
    let fd_limit = open_files_limit().unwrap_or(1024);
    for &wanted in &sizes.clients {
        // One descriptor per client here, and one per connection in each server process
        // (which inherits this limit).
        let clients = wanted.min(fd_limit.saturating_sub(FD_HEADROOM) as usize);
        let socketio = measure(bench, &sizes, System::SocketIo, clients).await?;
        let gateway = measure(bench, &sizes, System::Gateway, clients).await?;
        let case = format!("{clients} clients / {CHANNELS} channels");
        let bounded = (clients < wanted).then(|| {
            format!(
                "bounded to {clients} by the open-files limit ({fd_limit}); raise it with ulimit -n"
            )
        });
        let mut push = |row: Row| {
            bench.report.push(match &bounded {
                Some(note) => row.note(note.clone()),
                None => row,
            })
        };
        let base = System::SocketIo.label();
        for m in [&socketio, &gateway] {
            let system = if std::ptr::eq(m, &gateway) {
                System::Gateway
            } else {
                System::SocketIo
            };
            let is_gateway = system == System::Gateway;
            let versus = |row: Row, theirs: f64, goal: Option<Target>| {
                if !is_gateway {
                    return row;
                }
                let row = match goal {
                    Some(goal) => row.target(goal),
                    None => row,
                };
                row.against(base, theirs)
            };
            let mut flat = Row::plain(
                "gateway",
                &case,
                system.label(),
                "flat-out deliveries/s",
                m.flat_per_sec,
            );
            if m.flat_delivered < m.flat_expected || m.closed > 0 {
                flat = flat.note(format!(
                    "{} of {} delivered; {} connections closed",
                    m.flat_delivered, m.flat_expected, m.closed
                ));
            }
            push(versus(flat, socketio.flat_per_sec, Some(GOAL_DELIVERIES)));
            for (f, theirs) in m.fixed.iter().zip(&socketio.fixed) {
                let note = (f.delivered < f.expected)
                    .then(|| format!("{} of {} delivered", f.delivered, f.expected));
                for (q, metric) in [(0.5, "p50 us"), (0.99, "p99 us"), (0.999, "p99.9 us")] {
                    let mut row = Row::plain(
                        "gateway",
                        &case,
                        system.label(),
                        &format!(
                            "{metric} at {} pub/s ({} deliveries/s)",
                            f.rate, f.deliveries
                        ),
                        f.latency.value_at_quantile(q) as f64,
                    );
                    if let Some(note) = &note {
                        row = row.note(note.clone());
                    }
                    let goal = (q == 0.99).then_some(GOAL_P99);
                    push(versus(
                        row,
                        theirs.latency.value_at_quantile(q) as f64,
                        goal,
                    ));
                }
            }
            push(versus(
                Row::plain(
                    "gateway",
                    &case,
                    system.label(),
                    "RSS KiB/conn",
                    m.rss_kib_per_conn,
                ),
                socketio.rss_kib_per_conn,
                Some(GOAL_RSS),
            ));
            push(versus(
                Row::plain(
                    "gateway",
                    &case,
                    system.label(),
                    "connect all s",
                    m.connect_secs,
                ),
                socketio.connect_secs,
                None,
            ));
            if is_gateway && m.clients >= 10_000 {
                push(
                    Row::plain(
                        "gateway",
                        &case,
                        "gateway vs goal",
                        "process RSS MB",
                        m.rss_total_mb,
                    )
                    .target(Target::AtMost(1.0))
                    .against("goal", GOAL_RSS_MB_AT_10K),
                );
            }
        }
    }
    Ok(())
}

/// The hidden `gateway-server` subcommand: a gateway on a free loopback port over the
/// bench's Redis, anonymous clients allowed (loopback only), until stdin closes. Prints
/// `listening ADDR` once it accepts connections.
pub async fn server(args: &GatewayServerArgs) -> Result<(), BenchError> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", args.redis_port))
        .map_err(|e| BenchError::new(format!("bad port: {e}")))?;
    let hub = pubsub_hub::PubSubHub::with_config(
        client,
        pubsub_hub::HubConfig::default()
            .with_mode(pubsub_hub::ConnectionMode::Shared { connections: 4 }),
    )
    .await
    .map_err(|e| BenchError::new(format!("hub: {e}")))?;
    let mut config = pubsub_hub_gateway::GatewayConfig::default().with_allow_anonymous(true);
    config.limits.max_connections = 50_000;
    let gateway = pubsub_hub_gateway::Gateway::new(hub.clone(), config)
        .map_err(|e| BenchError::new(format!("gateway: {e}")))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| BenchError::new(format!("cannot bind: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| BenchError::new(format!("cannot read the bound address: {e}")))?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening {addr}")
            .and_then(|_| out.flush())
            .map_err(|e| BenchError::new(format!("cannot report: {e}")))?;
    }
    let stdin_closed = async {
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut sink);
        })
        .await;
    };
    pubsub_hub_gateway::serve(listener, gateway, stdin_closed)
        .await
        .map_err(|e| BenchError::new(format!("serve: {e}")))?;
    hub.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_fields_read_back() {
        let text = format!(
            r#"{{"push":{{"channel":"c","pub":{{"data":{}}}}}}}"#,
            payload(3, 123_456)
        );
        assert_eq!(number_after(&text, "\"p\":"), Some(3));
        assert_eq!(number_after(&text, "\"t\":"), Some(123_456));
        let socketio = format!(r#"42["m",{}]"#, payload(2, 9));
        assert_eq!(number_after(&socketio, "\"t\":"), Some(9));
        assert_eq!(number_after("{}", "\"t\":"), None);
    }
}
