//! The dashboard under load: `POST /publish` and `GET /state` requests per second with 3
//! subscribers (the seeded ones) and with 200 (197 more, each on its own channel), and the
//! size of an `/events` push: the first event (the whole document) against the delta that
//! carries one new message.
//!
//! `GET /state` is measured twice: as a browser asks for it (`Accept-Encoding: gzip`, the
//! target's row; the body is read as sent, compressed), and as a client without gzip does.
//!
//! Before `GET /state` is measured, every subscriber's ring buffer is filled (15 messages
//! each, what `/state` shows), so the 200-subscriber document is the full-size one. The
//! server is `pubsub_hub_web::serve` on `127.0.0.1:0`, driven by a few keep-alive
//! connections of [`crate::http`]. The baseline is the same request with 3 subscribers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pubsub_hub::PubSubHub;
use pubsub_hub_web::{dashboard_hub_config, seed_defaults, serve};

use crate::error::BenchError;
use crate::http::{self, HttpConnection};
use crate::progress::thousands;
use crate::report::{Row, Target};
use crate::{Bench, median};

/// The target: `GET /state` with 200 subscribers >= 0.5x its rate with 3 (asked for as a
/// browser does, with gzip).
pub const TARGET_STATE: Target = Target::AtLeast(0.5);

/// The target: the push carrying one new message at 200 subscribers <= 2 % of the
/// whole document.
pub const TARGET_PUSH: Target = Target::AtMost(0.02);

/// Messages per subscriber before `GET /state` is measured (what `/state` shows).
const FILL: usize = 15;

/// Runs the scenario.
pub async fn run(bench: &mut Bench) -> Result<(), BenchError> {
    let plan = bench.plan.clone();
    let counts = plan.dashboard_subscribers.clone();
    let mut results: Vec<PerCount> = counts
        .iter()
        .map(|&n| PerCount {
            subscribers: n,
            ..PerCount::default()
        })
        .collect();
    for round in 0..plan.rounds.min(2) {
        let mut order = counts.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for subscribers in order {
            let m = measure(bench, subscribers).await?;
            bench.progress.step(&format!(
                "{subscribers} subscribers (round {}): POST /publish {} req/s, GET /state {} req/s gzip ({} KiB each), {} req/s plain ({} KiB each)",
                round + 1,
                thousands(m.publish_rps),
                thousands(m.state.rps),
                m.state.bytes / 1024,
                thousands(m.plain.rps),
                m.plain.bytes / 1024
            ));
            let entry = results
                .iter_mut()
                .find(|r| r.subscribers == subscribers)
                .expect("listed");
            entry.publish.push(m.publish_rps);
            entry.state.push(m.state.rps);
            entry.plain.push(m.plain.rps);
            entry.state_bytes = m.state.bytes;
            entry.plain_bytes = m.plain.bytes;
            entry.push = m.push;
        }
    }
    let base = &results[0];
    let (base_pub, base_state, base_plain) = (
        median(&base.publish),
        median(&base.state),
        median(&base.plain),
    );
    let base_label = format!("{} subscribers", base.subscribers);
    for r in &results {
        let case = format!("{} subscribers", r.subscribers);
        let is_base = r.subscribers == base.subscribers;
        let mut publish = Row::plain(
            "dashboard",
            &case,
            "POST /publish",
            "req/s",
            median(&r.publish),
        );
        let mut state = Row::plain("dashboard", &case, "GET /state", "req/s", median(&r.state))
            .note(format!(
                "Accept-Encoding: gzip, as browsers send; {} KiB per answer, {} KiB as JSON",
                r.state_bytes / 1024,
                r.plain_bytes / 1024
            ));
        let mut plain = Row::plain(
            "dashboard",
            &case,
            "GET /state without gzip",
            "req/s",
            median(&r.plain),
        )
        .note(format!("{} KiB per answer", r.plain_bytes / 1024));
        if !is_base {
            publish = publish.against(&base_label, base_pub);
            state = state.target(TARGET_STATE).against(&base_label, base_state);
            plain = plain.against(&base_label, base_plain);
        }
        bench.report.push(publish);
        bench.report.push(state);
        bench.report.push(plain);
        let delta = Row::plain(
            "dashboard",
            &case,
            "/events push, one new message",
            "bytes",
            r.push.delta as f64,
        )
        .against("the whole document", r.push.whole as f64)
        .note(format!(
            "first event (whole document) {} bytes",
            thousands(r.push.whole as f64)
        ));
        bench.report.push(if is_base {
            delta
        } else {
            delta.target(TARGET_PUSH)
        });
    }
    Ok(())
}

/// What one subscriber count measured, over the rounds.
#[derive(Default)]
struct PerCount {
    subscribers: usize,
    /// `POST /publish` rates.
    publish: Vec<f64>,
    /// `GET /state` rates with gzip.
    state: Vec<f64>,
    /// `GET /state` rates without gzip.
    plain: Vec<f64>,
    /// The gzip answer's size.
    state_bytes: usize,
    /// The plain answer's size.
    plain_bytes: usize,
    push: PushSizes,
}

/// The `data` sizes of two `/events` pushes.
#[derive(Clone, Copy, Debug, Default)]
struct PushSizes {
    /// The first event: the whole document.
    whole: usize,
    /// The delta that carries one new message.
    delta: usize,
}

struct Measured {
    publish_rps: f64,
    /// `GET /state` with gzip.
    state: Driven,
    /// `GET /state` without.
    plain: Driven,
    push: PushSizes,
}

/// A request loop's rate and the size of its last answer's body.
#[derive(Clone, Copy, Default)]
struct Driven {
    rps: f64,
    bytes: usize,
}

async fn measure(bench: &Bench, subscribers: usize) -> Result<Measured, BenchError> {
    let hub = PubSubHub::with_config(bench.redis.client(), dashboard_hub_config())
        .await
        .map_err(|e| BenchError::new(format!("hub: {e}")))?;
    let result = measure_on(bench, &hub, subscribers).await;
    hub.shutdown().await;
    result
}

async fn measure_on(
    bench: &Bench,
    hub: &PubSubHub,
    subscribers: usize,
) -> Result<Measured, BenchError> {
    seed_defaults(hub)
        .await
        .map_err(|e| BenchError::new(format!("seeding: {e}")))?;
    for i in 0..subscribers.saturating_sub(3) {
        hub.subscribe(&format!("bench-{i}"), vec![format!("bench:dash:{i}")])
            .await
            .map_err(|e| BenchError::new(format!("subscribe: {e}")))?;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| BenchError::new(format!("cannot bind 127.0.0.1:0: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| BenchError::new(format!("local address: {e}")))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, hub.clone(), async move {
        let _ = stop_rx.await;
    }));

    let plan = &bench.plan;
    let publish_body = "channel=orders%3Anew&message=bench&count=1";
    let publish_rps = drive(
        addr,
        &http::post_form("/publish", publish_body),
        plan.dashboard_connections,
        plan.dashboard_duration,
    )
    .await?
    .rps;

    fill_buffers(bench, hub).await?;
    let state = drive(
        addr,
        &http::get_gzip("/state"),
        plan.dashboard_connections,
        plan.dashboard_duration,
    )
    .await?;
    let plain = drive(
        addr,
        &http::get("/state"),
        plan.dashboard_connections,
        plan.dashboard_duration,
    )
    .await?;
    let push = push_sizes(bench, addr).await?;

    let _ = stop_tx.send(());
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(BenchError::new(format!("dashboard server: {e}"))),
        Ok(Err(e)) => return Err(BenchError::new(format!("dashboard task: {e}"))),
        Err(_) => return Err(BenchError::new("the dashboard did not stop within 5 s")),
    }
    Ok(Measured {
        publish_rps,
        state,
        plain,
        push,
    })
}

/// Publishes [`FILL`] messages to every subscriber's target and waits until each has them.
async fn fill_buffers(bench: &Bench, hub: &PubSubHub) -> Result<(), BenchError> {
    let mut conn = bench.redis.connection().await?;
    let mut pipe = redis::pipe();
    for sub in hub.subscriptions() {
        for target in sub.targets() {
            let channel = target.replace('*', "bench");
            for i in 0..FILL {
                pipe.cmd("PUBLISH")
                    .arg(&channel)
                    .arg(format!(
                        "{{\"fill\":{i},\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}}"
                    ))
                    .ignore();
            }
        }
    }
    pipe.query_async::<()>(&mut conn)
        .await
        .map_err(|e| BenchError::new(format!("filling buffers: {e}")))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while hub
        .subscriptions()
        .iter()
        .any(|s| s.messages(Some(FILL)).len() < FILL)
    {
        if Instant::now() > deadline {
            return Err(BenchError::new(
                "subscribers did not receive the fill messages in 10 s",
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// `connections` keep-alive loops sending `request` for `duration`: requests/s and the size
/// of the last body.
async fn drive(
    addr: SocketAddr,
    request: &[u8],
    connections: usize,
    duration: Duration,
) -> Result<Driven, BenchError> {
    let done = Arc::new(AtomicU64::new(0));
    let last_len = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let request = request.to_vec();
        let done = Arc::clone(&done);
        let last_len = Arc::clone(&last_len);
        tasks.spawn(async move {
            let mut conn = HttpConnection::connect(addr).await?;
            while Instant::now() < deadline {
                let r = conn.send(&request).await?;
                if r.status != 200 {
                    return Err(std::io::Error::other(format!("HTTP {}", r.status)));
                }
                last_len.store(r.body_len as u64, Ordering::Relaxed);
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), std::io::Error>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined
            .map_err(|e| BenchError::new(format!("HTTP task: {e}")))?
            .map_err(|e| BenchError::new(format!("HTTP request: {e}")))?;
    }
    let rps = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    Ok(Driven {
        rps,
        bytes: last_len.load(Ordering::Relaxed) as usize,
    })
}

/// Opens `/events`, takes the first event (the whole document), publishes one message to
/// one subscriber's channel and takes the delta that carries it (a push that only moves the
/// version or the counters, as the publish's own bookkeeping may cause, is skipped).
async fn push_sizes(bench: &Bench, addr: SocketAddr) -> Result<PushSizes, BenchError> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let io = |e: std::io::Error| BenchError::new(format!("/events: {e}"));
    let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(io)?;
    // HTTP/1.0: the stream comes unchunked, one line per SSE line.
    stream
        .write_all(b"GET /events HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .map_err(io)?;
    let mut reader = BufReader::new(stream);
    let within = Duration::from_secs(10);
    let events = async {
        let mut line = String::new();
        // The head, up to the empty line.
        loop {
            line.clear();
            if reader.read_line(&mut line).await? == 0 || line.trim_end().is_empty() {
                break;
            }
        }
        let mut next = async || -> std::io::Result<(String, usize, bool)> {
            let (mut event, mut size, mut carries) = (String::new(), 0, false);
            loop {
                line.clear();
                if reader.read_line(&mut line).await? == 0 {
                    return Err(std::io::Error::other("the stream ended"));
                }
                let l = line.trim_end_matches(['\r', '\n']);
                if let Some(name) = l.strip_prefix("event: ") {
                    event = name.to_owned();
                } else if let Some(data) = l.strip_prefix("data: ") {
                    size += data.len();
                    carries |= data.contains("\"messages_new\":[{");
                } else if l.is_empty() && !event.is_empty() {
                    return Ok((event, size, carries));
                }
            }
        };
        let (first, whole, _) = next().await?;
        if first != "state" {
            return Err(std::io::Error::other(format!("first event {first}")));
        }
        let mut conn = bench
            .redis
            .connection()
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        redis::cmd("PUBLISH")
            .arg("orders:new")
            .arg("{\"one\":\"new message\"}")
            .query_async::<i64>(&mut conn)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        loop {
            let (event, delta, carries) = next().await?;
            if event == "delta" && carries {
                return Ok(PushSizes { whole, delta });
            }
        }
    };
    tokio::time::timeout(within, events)
        .await
        .map_err(|_| BenchError::new("/events: no delta with the new message within 10 s"))?
        .map_err(io)
}
