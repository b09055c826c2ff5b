//! Memory per subscriber, Redis connections and time to subscribe, at 100, 1,000 and
//! 10,000 subscribers spread over at most 1,000 channels: raw `aio::PubSub` per subscriber,
//! the hub with a connection per subscription, and the hub with 4 shared connections.
//! Shared mode at 10,000 is also checked against the shared mode's goals: at most 4 subscriber
//! connections, under 100 MB of process memory, all subscribed within 5 s.
//!
//! Each measurement runs in a fresh child process (`pubsub-hub-bench worker`), so that its
//! RSS growth (`VmRSS` in `/proc/self/status`) is the subscribers' alone and not memory an
//! earlier measurement freed but the allocator kept. The worker reports when every
//! subscription is confirmed; the parent then reads `INFO clients` / `INFO memory` on the
//! server, closes the worker's stdin, and waits for the connections to go.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::Bench;
use crate::args::WorkerArgs;
use crate::driver::{Variant, rotation};
use crate::error::BenchError;
use crate::report::{Row, Target};
use crate::server::{info_int, open_files_limit, wait_clients_at_most};

/// The variants, in round 0's order.
const VARIANTS: [Variant; 3] = [Variant::Raw, Variant::Dedicated, Variant::Shared];

/// File descriptors kept free for everything that is not a subscriber connection.
pub const FD_HEADROOM: u64 = 200;

/// The goals for shared mode, checked at this many subscribers.
const GOAL_SUBSCRIBERS: usize = 10_000;
const GOAL_RSS_MB: f64 = 100.0;
const GOAL_CONNECTIONS: f64 = 4.0;
const GOAL_SUBSCRIBE_SECS: f64 = 5.0;

/// Channels the subscribers spread over (subscriber `i` takes channel `i % CHANNELS`), as
/// in the shared mode's goal of 10,000 subscribers over 1,000 channels.
const CHANNELS: usize = 1_000;

/// What a worker reports on its stdout (one JSON line).
#[derive(Debug, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Subscribers created.
    pub subscribers: usize,
    /// `VmRSS` before subscribing, KiB.
    pub rss_before_kib: u64,
    /// `VmRSS` with every subscription confirmed, KiB.
    pub rss_after_kib: u64,
    /// Wall time to create them all, seconds.
    pub subscribe_secs: f64,
    /// Subscriber connections the hub reports (0 for raw).
    pub hub_connections: usize,
}

/// Runs the scenario: for each size and variant, one worker.
pub async fn run(bench: &mut Bench) -> Result<(), BenchError> {
    let plan = bench.plan.clone();
    let fd_limit = open_files_limit().unwrap_or(1024);
    let mut admin = bench.redis.connection().await?;
    let idle_clients = info_int(&mut admin, "clients", "connected_clients").await?;
    for &wanted in &plan.memory_sizes {
        let mut rows: Vec<(Variant, Measured)> = Vec::new();
        for variant in rotation(&VARIANTS, 0) {
            // One connection per subscriber needs a descriptor each, here and in Redis.
            let max_by_fd = fd_limit.saturating_sub(FD_HEADROOM) as usize;
            let n = if variant == Variant::Shared {
                wanted
            } else {
                wanted.min(max_by_fd)
            };
            let measured = measure(bench, &mut admin, variant, n, idle_clients).await?;
            bench.progress.step(&format!(
                "{n} subscribers, {}: {:.1} KiB/sub RSS, {} Redis connections, {:.1} KiB/sub in Redis, subscribed in {:.2}s",
                variant.label(),
                measured.rss_kib_per_sub,
                measured.redis_connections,
                measured.redis_kib_per_sub,
                measured.subscribe_secs,
            ));
            rows.push((variant, measured));
        }
        let case = format!("{wanted} subscribers");
        let raw = &rows[0].1;
        let (raw_rss, raw_redis_kib, raw_secs) = (
            raw.rss_kib_per_sub,
            raw.redis_kib_per_sub,
            raw.subscribe_secs,
        );
        for (variant, m) in &rows {
            let bounded = (m.subscribers < wanted).then(|| {
                format!(
                    "bounded to {} by the open-files limit ({fd_limit})",
                    m.subscribers
                )
            });
            let mut push = |row: Row| {
                let row = match &bounded {
                    Some(note) => row.note(note.clone()),
                    None => row,
                };
                bench.report.push(row);
            };
            let is_hub = *variant != Variant::Raw;
            let rss = Row::plain(
                "memory",
                &case,
                variant.label(),
                "RSS KiB/sub",
                m.rss_kib_per_sub,
            );
            push(if is_hub {
                rss.against(Variant::Raw.label(), raw_rss)
            } else {
                rss
            });
            let redis_mem = Row::plain(
                "memory",
                &case,
                variant.label(),
                "Redis KiB/sub",
                m.redis_kib_per_sub,
            );
            push(if is_hub {
                redis_mem.against(Variant::Raw.label(), raw_redis_kib)
            } else {
                redis_mem
            });
            push(Row::plain(
                "memory",
                &case,
                variant.label(),
                "Redis connections",
                m.redis_connections as f64,
            ));
            let secs = Row::plain(
                "memory",
                &case,
                variant.label(),
                "subscribe all s",
                m.subscribe_secs,
            );
            push(if is_hub {
                secs.against(Variant::Raw.label(), raw_secs)
            } else {
                secs
            });
            if *variant == Variant::Shared && wanted == GOAL_SUBSCRIBERS {
                for (metric, value, goal) in [
                    ("process RSS MB", m.rss_total_mb, GOAL_RSS_MB),
                    (
                        "subscriber connections",
                        m.hub_connections as f64,
                        GOAL_CONNECTIONS,
                    ),
                    ("subscribe all s", m.subscribe_secs, GOAL_SUBSCRIBE_SECS),
                ] {
                    push(
                        Row::plain("memory", &case, "shared x4 vs goal", metric, value)
                            .target(Target::AtMost(1.0))
                            .against("shared-mode goal", goal),
                    );
                }
            }
        }
    }
    Ok(())
}

/// One worker's numbers, with the server's view.
struct Measured {
    subscribers: usize,
    /// The worker's whole `VmRSS` with every subscription confirmed, in MB (10^6 bytes).
    rss_total_mb: f64,
    /// Subscriber connections the hub reports (0 for raw).
    hub_connections: usize,
    rss_kib_per_sub: f64,
    redis_kib_per_sub: f64,
    redis_connections: i64,
    subscribe_secs: f64,
}

async fn measure(
    bench: &Bench,
    admin: &mut redis::aio::MultiplexedConnection,
    variant: Variant,
    subscribers: usize,
    idle_clients: i64,
) -> Result<Measured, BenchError> {
    let exe = std::env::current_exe()
        .map_err(|e| BenchError::new(format!("cannot find this executable: {e}")))?;
    let used_before = info_int(admin, "memory", "used_memory").await?;
    let mut child = tokio::process::Command::new(exe)
        .args(["worker", "--port", &bench.redis.port().to_string()])
        .args([
            "--variant",
            variant.name(),
            "--subscribers",
            &subscribers.to_string(),
        ])
        .env_remove("REDIS_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| BenchError::new(format!("cannot start a bench worker: {e}")))?;
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(bench.plan.memory_max, lines.next_line())
        .await
        .map_err(|_| {
            BenchError::new(format!(
                "the worker did not subscribe {subscribers} within {:?}",
                bench.plan.memory_max
            ))
        })?
        .map_err(|e| BenchError::new(format!("reading the worker: {e}")))?
        .ok_or_else(|| BenchError::new("the worker exited without a report"))?;
    let report: WorkerReport = serde_json::from_str(&line)
        .map_err(|e| BenchError::new(format!("the worker's report {line:?}: {e}")))?;
    let clients = info_int(admin, "clients", "connected_clients").await?;
    let used_after = info_int(admin, "memory", "used_memory").await?;
    // Closing stdin tells the worker to shut its hub down and exit.
    drop(child.stdin.take());
    match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
        Ok(Ok(status)) if status.success() => {}
        Ok(Ok(status)) => {
            return Err(BenchError::new(format!("the worker exited with {status}")));
        }
        Ok(Err(e)) => return Err(BenchError::new(format!("waiting for the worker: {e}"))),
        Err(_) => {
            let _ = child.kill().await;
            return Err(BenchError::new("the worker did not exit within 30 s"));
        }
    }
    wait_clients_at_most(admin, idle_clients, Duration::from_secs(30)).await?;
    let n = report.subscribers.max(1) as f64;
    Ok(Measured {
        subscribers: report.subscribers,
        rss_total_mb: report.rss_after_kib as f64 * 1024.0 / 1e6,
        hub_connections: report.hub_connections,
        rss_kib_per_sub: report.rss_after_kib.saturating_sub(report.rss_before_kib) as f64 / n,
        redis_kib_per_sub: (used_after - used_before).max(0) as f64 / 1024.0 / n,
        redis_connections: clients - idle_clients,
        subscribe_secs: report.subscribe_secs,
    })
}

/// `VmRSS` of this process in KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The hidden `worker` subcommand: create the subscribers, report, wait for stdin to close,
/// shut down.
pub async fn worker(args: &WorkerArgs) -> Result<(), BenchError> {
    let variant = Variant::from_name(&args.variant)
        .ok_or_else(|| BenchError::new(format!("unknown variant {:?}", args.variant)))?;
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", args.port))
        .map_err(|e| BenchError::new(format!("bad port: {e}")))?;
    let n = args.subscribers;
    let channel = |i: usize| format!("bench:mem:{}", i % CHANNELS);

    let hub = match variant {
        Variant::Raw => None,
        _ => Some(
            pubsub_hub::PubSubHub::with_config(
                client.clone(),
                variant
                    .hub_config()
                    .with_max_subscriptions(n.max(pubsub_hub::DEFAULT_MAX_SUBSCRIPTIONS)),
            )
            .await
            .map_err(|e| BenchError::new(format!("hub: {e}")))?,
        ),
    };
    let rss_before = rss_kib();
    let start = Instant::now();
    let mut raw_subs = Vec::new();
    let mut hub_subs = Vec::new();
    match &hub {
        None => {
            let mut opened = futures_util::stream::iter(0..n)
                .map(|i| {
                    let client = client.clone();
                    async move {
                        let mut p = client.get_async_pubsub().await?;
                        p.subscribe(channel(i)).await?;
                        Ok::<_, redis::RedisError>(p)
                    }
                })
                .buffer_unordered(args.concurrency.max(1));
            while let Some(p) = opened.next().await {
                raw_subs.push(p.map_err(|e| BenchError::new(format!("raw SUBSCRIBE: {e}")))?);
            }
        }
        Some(hub) => {
            let mut opened = futures_util::stream::iter(0..n)
                .map(|i| {
                    let hub = hub.clone();
                    async move {
                        let sub = hub.subscribe(&format!("mem-{i}"), vec![channel(i)]).await?;
                        let consumer = sub.consumer();
                        Ok::<_, pubsub_hub::HubError>((sub, consumer))
                    }
                })
                .buffer_unordered(args.concurrency.max(1));
            while let Some(s) = opened.next().await {
                hub_subs.push(s.map_err(|e| BenchError::new(format!("hub SUBSCRIBE: {e}")))?);
            }
        }
    }
    let subscribe_secs = start.elapsed().as_secs_f64();
    let report = WorkerReport {
        subscribers: n,
        rss_before_kib: rss_before,
        rss_after_kib: rss_kib(),
        subscribe_secs,
        hub_connections: hub.as_ref().map_or(0, |h| h.subscriber_connections()),
    };
    {
        let mut out = std::io::stdout().lock();
        let line = serde_json::to_string(&report).unwrap_or_default();
        writeln!(out, "{line}")
            .and_then(|_| out.flush())
            .map_err(|e| BenchError::new(format!("cannot report: {e}")))?;
    }
    // Hold everything until the parent has looked at the server.
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut sink);
    })
    .await;
    drop(hub_subs);
    drop(raw_subs);
    if let Some(hub) = hub {
        hub.shutdown().await;
    }
    Ok(())
}
