//! The dashboard under load: `POST /publish` and `GET /state` requests per second with 3
//! subscribers (the seeded ones) and with 200 (197 more, each on its own channel).
//!
//! Before `GET /state` is measured, every subscriber's ring buffer is filled (15 messages
//! each, what `/state` shows), so the 200-subscriber document is the full-size one. The
//! server is `pubsub_hub_web::serve` on `127.0.0.1:0`, driven by a few keep-alive
//! connections of [`super::http`]. The baseline is the same request with 3 subscribers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pubsub_hub::PubSubHub;
use pubsub_hub_web::{dashboard_hub_config, seed_defaults, serve};

use super::http::{self, HttpConnection};
use super::progress::thousands;
use super::report::{Row, Target};
use super::{Bench, median};
use crate::error::CliError;

/// The target: `GET /state` with 200 subscribers >= 0.5x its rate with 3.
pub const TARGET_STATE: Target = Target::AtLeast(0.5);

/// Messages per subscriber before `GET /state` is measured (what `/state` shows).
const FILL: usize = 15;

/// Runs the scenario.
pub async fn run(bench: &mut Bench) -> Result<(), CliError> {
    let plan = bench.plan.clone();
    let counts = plan.dashboard_subscribers.clone();
    // (subscribers, publish rates, state rates, state body bytes)
    let mut results: Vec<(usize, Vec<f64>, Vec<f64>, usize)> = counts
        .iter()
        .map(|&n| (n, Vec::new(), Vec::new(), 0))
        .collect();
    for round in 0..plan.rounds.min(2) {
        let mut order = counts.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for subscribers in order {
            let m = measure(bench, subscribers).await?;
            bench.progress.step(&format!(
                "{subscribers} subscribers (round {}): POST /publish {} req/s, GET /state {} req/s ({} KiB each)",
                round + 1,
                thousands(m.publish_rps),
                thousands(m.state_rps),
                m.state_bytes / 1024
            ));
            let entry = results
                .iter_mut()
                .find(|r| r.0 == subscribers)
                .expect("listed");
            entry.1.push(m.publish_rps);
            entry.2.push(m.state_rps);
            entry.3 = m.state_bytes;
        }
    }
    let (base_n, base_pub, base_state, _) = &results[0];
    let (base_pub, base_state) = (median(base_pub), median(base_state));
    let base_label = format!("{base_n} subscribers");
    for (n, pubs, states, bytes) in &results {
        let case = format!("{n} subscribers");
        let mut publish = Row::plain("dashboard", &case, "POST /publish", "req/s", median(pubs));
        let mut state = Row::plain("dashboard", &case, "GET /state", "req/s", median(states))
            .note(format!("{} KiB per answer", bytes / 1024));
        if *n != *base_n {
            publish = publish.against(&base_label, base_pub);
            state = state.target(TARGET_STATE).against(&base_label, base_state);
        }
        bench.report.push(publish);
        bench.report.push(state);
    }
    Ok(())
}

struct Measured {
    publish_rps: f64,
    state_rps: f64,
    state_bytes: usize,
}

async fn measure(bench: &Bench, subscribers: usize) -> Result<Measured, CliError> {
    let hub = PubSubHub::with_config(bench.redis.client(), dashboard_hub_config())
        .await
        .map_err(|e| CliError::failure(format!("hub: {e}")))?;
    let result = measure_on(bench, &hub, subscribers).await;
    hub.shutdown().await;
    result
}

async fn measure_on(
    bench: &Bench,
    hub: &PubSubHub,
    subscribers: usize,
) -> Result<Measured, CliError> {
    seed_defaults(hub)
        .await
        .map_err(|e| CliError::failure(format!("seeding: {e}")))?;
    for i in 0..subscribers.saturating_sub(3) {
        hub.subscribe(&format!("bench-{i}"), vec![format!("bench:dash:{i}")])
            .await
            .map_err(|e| CliError::failure(format!("subscribe: {e}")))?;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| CliError::failure(format!("cannot bind 127.0.0.1:0: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::failure(format!("local address: {e}")))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, hub.clone(), async move {
        let _ = stop_rx.await;
    }));

    let plan = &bench.plan;
    let publish_body = "channel=orders%3Anew&message=bench&count=1";
    let (publish_rps, _) = drive(
        addr,
        &http::post_form("/publish", publish_body),
        plan.dashboard_connections,
        plan.dashboard_duration,
    )
    .await?;

    fill_buffers(bench, hub).await?;
    let (state_rps, state_bytes) = drive(
        addr,
        &http::get("/state"),
        plan.dashboard_connections,
        plan.dashboard_duration,
    )
    .await?;

    let _ = stop_tx.send(());
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(CliError::failure(format!("dashboard server: {e}"))),
        Ok(Err(e)) => return Err(CliError::failure(format!("dashboard task: {e}"))),
        Err(_) => return Err(CliError::failure("the dashboard did not stop within 5 s")),
    }
    Ok(Measured {
        publish_rps,
        state_rps,
        state_bytes,
    })
}

/// Publishes [`FILL`] messages to every subscriber's target and waits until each has them.
async fn fill_buffers(bench: &Bench, hub: &PubSubHub) -> Result<(), CliError> {
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
        .map_err(|e| CliError::failure(format!("filling buffers: {e}")))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while hub
        .subscriptions()
        .iter()
        .any(|s| s.messages(Some(FILL)).len() < FILL)
    {
        if Instant::now() > deadline {
            return Err(CliError::failure(
                "subscribers did not receive the fill messages in 10 s",
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// `connections` keep-alive loops sending `request` for `duration`; returns (requests/s,
/// size of the last body).
async fn drive(
    addr: SocketAddr,
    request: &[u8],
    connections: usize,
    duration: Duration,
) -> Result<(f64, usize), CliError> {
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
            .map_err(|e| CliError::failure(format!("HTTP task: {e}")))?
            .map_err(|e| CliError::failure(format!("HTTP request: {e}")))?;
    }
    let rps = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    Ok((rps, last_len.load(Ordering::Relaxed) as usize))
}
