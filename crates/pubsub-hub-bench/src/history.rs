//! The cost of history, in three measurements on the bench's private Redis:
//!
//! 1. **Publish with history against without**: `PubSubHub::publish_with_history` (append
//!    to the channel's capped Stream and publish, in one Lua script) against
//!    `PubSubHub::publish_bytes` on the same hub, 16 publications in flight, the two
//!    alternating round by round; the row is `with / without`.
//! 2. **Redis memory per 1,000 publications of history**: `INFO memory` `used_memory`
//!    before and after 10,000 durable publications of the 64-byte payload to a channel that
//!    keeps 10,000, divided by 10 (and `MEMORY USAGE` of the channel's two keys, in the
//!    note).
//! 3. **Time to recover 10,000 missed publications**: a gateway (in this process, its own
//!    hub) keeps history for the `bench:` namespace; a raw WebSocket client subscribes
//!    (recoverable) and keeps its position, goes away while the 10,000 are published,
//!    then reconnects and subscribes with `recover`; the time is from sending `connect` +
//!    `subscribe` to holding the parsed subscribe reply with all 10,000, checked to be
//!    `recovered: true` and the exact offsets in order. The library's own read of the same
//!    10,000 (`PubSubHub::history` since the old offset) is a second row, so the store's
//!    share is visible.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use pubsub_hub::history::history_keys;
use pubsub_hub::{HistoryOptions, HistoryRequest, PubSubHub};
use pubsub_hub_gateway::{Gateway, GatewayConfig, NamespaceConfig};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::driver::{self, Variant};
use crate::report::{Row, Target};
use crate::{Bench, BenchError, PAYLOAD_64, median};

/// Goal for publishing with history: at least half the rate without.
pub const TARGET: Target = Target::AtLeast(0.5);
/// Goal for recovering [`RECOVER_COUNT`] publications, in milliseconds.
pub const RECOVER_GOAL_MS: f64 = 1_000.0;
/// Publications missed and recovered (and kept for the memory measurement).
pub const RECOVER_COUNT: u64 = 10_000;
/// Publications in flight while publishing.
const IN_FLIGHT: usize = 16;
/// The channel the recovery and memory measurements use (namespace `bench`).
const RECOVER_CHANNEL: &str = "bench:recover";
/// Bound on one WebSocket step of the recovery measurement.
const STEP: Duration = Duration::from_secs(20);

fn failure(what: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::new(format!("{what}: {e}"))
}

/// Publishes up to `total` times (16 in flight, for at most `max`), durably when `history`
/// is given; returns publications per second.
async fn rate(
    hub: &PubSubHub,
    channel: &str,
    history: Option<&HistoryOptions>,
    total: u64,
    max: Duration,
) -> Result<f64, BenchError> {
    let remaining = Arc::new(AtomicI64::new(total as i64));
    let start = Instant::now();
    let deadline = start + max;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let hub = hub.clone();
        let remaining = Arc::clone(&remaining);
        let channel = channel.to_owned();
        let history = history.cloned();
        tasks.spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline && remaining.fetch_sub(1, Ordering::Relaxed) > 0 {
                let result = match &history {
                    Some(options) => hub
                        .publish_with_history(&channel, PAYLOAD_64, options)
                        .await
                        .map(|_| ()),
                    None => hub.publish_bytes(&channel, PAYLOAD_64).await.map(|_| ()),
                };
                result.map_err(|e| e.to_string())?;
                done += 1;
            }
            Ok::<u64, String>(done)
        });
    }
    let mut done = 0;
    while let Some(joined) = tasks.join_next().await {
        done += joined
            .map_err(|e| failure("publisher task", e))?
            .map_err(|e| failure("publish", e))?;
    }
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

/// Runs the scenario: four rows.
pub async fn run(bench: &mut Bench) -> Result<(), BenchError> {
    let hub = driver::hub(bench.redis.client(), Variant::Dedicated).await?;
    let result = measure(bench, &hub).await;
    hub.shutdown().await;
    result
}

async fn measure(bench: &mut Bench, hub: &PubSubHub) -> Result<(), BenchError> {
    let plan = bench.plan.clone();
    // 1. Publish rate, alternating which goes first.
    let options = HistoryOptions::new(1_000, Duration::from_secs(300));
    let total = plan.publish_count_parallel;
    rate(hub, "bench:plain", None, 2_000, plan.publish_max).await?;
    rate(hub, "bench:kept", Some(&options), 2_000, plan.publish_max).await?;
    let (mut plain, mut durable) = (Vec::new(), Vec::new());
    for round in 0..plan.rounds {
        for with_history in [round % 2 == 1, round % 2 == 0] {
            if with_history {
                durable
                    .push(rate(hub, "bench:kept", Some(&options), total, plan.publish_max).await?);
            } else {
                plain.push(rate(hub, "bench:plain", None, total, plan.publish_max).await?);
            }
        }
    }
    let (plain, durable) = (median(&plain), median(&durable));
    bench.report.push(
        Row::plain(
            "history",
            "16 in flight",
            "publish with history",
            "publishes/s",
            durable,
        )
        .against("without history", plain)
        .target(TARGET)
        .note("history_size 1000, 64-byte payload; median of the rounds"),
    );

    // 2. A client holds a position, then misses RECOVER_COUNT publications.
    let keep = HistoryOptions::new(RECOVER_COUNT as usize, Duration::from_secs(300));
    let gateway = GatewayUnderTest::start(bench, RECOVER_COUNT as usize).await?;
    let result = recover(bench, hub, &gateway, &keep).await;
    gateway.stop().await;
    result
}

async fn recover(
    bench: &mut Bench,
    hub: &PubSubHub,
    gateway: &GatewayUnderTest,
    keep: &HistoryOptions,
) -> Result<(), BenchError> {
    // One publication first, so the channel has an epoch and the client a position.
    hub.publish_with_history(RECOVER_CHANNEL, PAYLOAD_64, keep)
        .await
        .map_err(|e| failure("first publication", e))?;
    let (mut ws, reply) = gateway.subscribe(None).await?;
    let position = (
        reply["offset"].as_u64().unwrap_or(0),
        reply["epoch"].as_str().unwrap_or_default().to_owned(),
    );
    if position.0 != 1 || position.1.is_empty() {
        return Err(BenchError::new(format!(
            "the gateway gave no position: {reply}"
        )));
    }
    let _ = ws.close(None).await;

    let mut conn = bench.redis.connection().await?;
    let before = crate::server::info_int(&mut conn, "memory", "used_memory").await?;
    rate(
        hub,
        RECOVER_CHANNEL,
        Some(keep),
        RECOVER_COUNT,
        Duration::from_secs(120),
    )
    .await?;
    let after = crate::server::info_int(&mut conn, "memory", "used_memory").await?;
    let (stream, meta) = history_keys(RECOVER_CHANNEL);
    let mut usage = 0i64;
    for key in [&stream, &meta] {
        let bytes: Option<i64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut conn)
            .await
            .map_err(|e| failure("MEMORY USAGE", e))?;
        usage += bytes.unwrap_or(0);
    }
    // The stream holds the first publication and the RECOVER_COUNT after it, capped at
    // RECOVER_COUNT: exactly the RECOVER_COUNT the client missed.
    let thousands = RECOVER_COUNT as f64 / 1_000.0;
    bench.report.push(
        Row::plain(
            "history",
            "memory",
            "per 1,000 publications kept",
            "bytes",
            ((after - before).max(0) as f64 / thousands).round(),
        )
        .note(format!(
            "INFO used_memory growth over {RECOVER_COUNT} durable publications of 64 bytes; \
             MEMORY USAGE of the stream and meta keys: {:.0} per 1,000",
            usage as f64 / thousands
        )),
    );

    // 3. Recovery through the gateway, and the library read alone.
    let rounds = bench.plan.rounds.max(3);
    let mut through_gateway = Vec::new();
    let mut library = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        let (mut ws, reply) = gateway.subscribe(Some(&position)).await?;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        let _ = ws.close(None).await;
        check_recovered(&reply, position.0)?;
        through_gateway.push(ms);

        let start = Instant::now();
        let page = hub
            .history(
                RECOVER_CHANNEL,
                &HistoryRequest::since(position.0, None),
                Duration::ZERO,
            )
            .await
            .map_err(|e| failure("history read", e))?;
        library.push(start.elapsed().as_secs_f64() * 1000.0);
        if page.publications.len() as u64 != RECOVER_COUNT {
            return Err(BenchError::new(format!(
                "the history read returned {} publications, not {RECOVER_COUNT}",
                page.publications.len()
            )));
        }
    }
    let case = "recover 10,000 missed";
    bench.report.push(
        Row::plain(
            "history",
            case,
            "gateway subscribe reply",
            "ms",
            median(&through_gateway),
        )
        .against("goal", RECOVER_GOAL_MS)
        .target(Target::AtMost(1.0))
        .note(format!(
            "WebSocket connect + subscribe with recover until the parsed reply holds all \
             {RECOVER_COUNT}; median of {rounds}"
        )),
    );
    bench.report.push(
        Row::plain(
            "history",
            case,
            "library history read",
            "ms",
            median(&library),
        )
        .note(format!(
            "PubSubHub::history since the old offset; median of {rounds}"
        )),
    );
    Ok(())
}

/// Checks a recovering subscribe reply: `recovered: true` and exactly the offsets after
/// `since`, in order.
fn check_recovered(reply: &Value, since: u64) -> Result<(), BenchError> {
    if reply["recovered"] != json!(true) {
        return Err(BenchError::new(format!(
            "the subscription did not recover: {}",
            reply.get("recovered").unwrap_or(&Value::Null)
        )));
    }
    let publications = reply["publications"].as_array().map_or(&[][..], |v| v);
    let offsets: Vec<u64> = publications
        .iter()
        .map(|p| p["offset"].as_u64().unwrap_or(0))
        .collect();
    let expected: Vec<u64> = (since + 1..=since + RECOVER_COUNT).collect();
    if offsets != expected {
        return Err(BenchError::new(format!(
            "recovered {} publications (offsets {:?}..{:?}), not {RECOVER_COUNT} in order",
            offsets.len(),
            offsets.first(),
            offsets.last()
        )));
    }
    Ok(())
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A gateway in this process whose `bench` namespace keeps history.
struct GatewayUnderTest {
    addr: std::net::SocketAddr,
    hub: PubSubHub,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl GatewayUnderTest {
    async fn start(bench: &Bench, history_size: usize) -> Result<Self, BenchError> {
        let hub = driver::hub(bench.redis.client(), Variant::Shared).await?;
        let config = GatewayConfig::default()
            .with_allow_anonymous(true)
            .with_namespace(
                "bench",
                NamespaceConfig::default().with_history(history_size, Duration::from_secs(300)),
            );
        let gateway = Gateway::new(hub.clone(), config).map_err(|e| failure("gateway", e))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| failure("cannot bind", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| failure("cannot read the bound address", e))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = pubsub_hub_gateway::serve(listener, gateway, async {
                let _ = stopped.await;
            })
            .await;
        });
        Ok(GatewayUnderTest {
            addr,
            hub,
            stop,
            task,
        })
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(STEP, self.task).await;
        self.hub.shutdown().await;
    }

    /// Connects and subscribes to the recovery channel (recoverable; recovering from
    /// `from` when given) in one frame; returns the socket and the subscribe result.
    async fn subscribe(&self, from: Option<&(u64, String)>) -> Result<(Ws, Value), BenchError> {
        let url = format!("ws://{}/connection/websocket", self.addr);
        let (mut ws, _) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(url))
            .await
            .map_err(|_| BenchError::new("WebSocket connect timed out"))?
            .map_err(|e| failure("WebSocket connect", e))?;
        let mut subscribe = json!({"channel": RECOVER_CHANNEL, "recoverable": true});
        if let Some((offset, epoch)) = from {
            subscribe["recover"] = json!(true);
            subscribe["offset"] = json!(offset);
            subscribe["epoch"] = json!(epoch);
        }
        let frame = format!(
            "{}\n{}",
            json!({"id": 1, "connect": {"name": "bench"}}),
            json!({"id": 2, "subscribe": subscribe})
        );
        ws.send(Message::text(frame))
            .await
            .map_err(|e| failure("sending subscribe", e))?;
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let frame = tokio::time::timeout_at(deadline, ws.next())
                .await
                .map_err(|_| BenchError::new("no subscribe reply within 20 s"))?
                .ok_or_else(|| BenchError::new("the gateway closed before replying"))?
                .map_err(|e| failure("reading a frame", e))?;
            let Message::Text(text) = frame else { continue };
            for line in text.lines() {
                let reply: Value = serde_json::from_str(line)
                    .map_err(|e| failure("a reply that is not JSON", e))?;
                if reply.get("error").is_some() {
                    return Err(BenchError::new(format!("the gateway refused: {line}")));
                }
                if reply["id"] == json!(2) {
                    return Ok((ws, reply["subscribe"].clone()));
                }
            }
        }
    }
}
