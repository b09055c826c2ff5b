//! Publish-to-receive latency at a fixed 5,000 publishes/s with 1, 10 and 100 subscribers:
//! hub end to end (`publish_bytes` → consumer) against raw redis-rs end to end
//! (`MultiplexedConnection` → `aio::PubSub`) and fred end to end (one client publishing,
//! one client per subscriber).
//!
//! Each payload carries its sequence number and its send time (nanoseconds since a clock
//! origin shared by publisher and receivers, which live in the same process). The pacer
//! wakes every millisecond and sends what is due, so messages leave in bursts of about 5;
//! each is stamped when its PUBLISH is issued. Publishes are not awaited by the pacer, so a
//! slow answer never delays the next send (no coordinated omission).

use std::time::{Duration, Instant};

use crate::driver::{
    self, Publisher, Receivers, Recording, Variant, latency_histogram, rotation, stamp,
};
use crate::error::BenchError;
use crate::report::{LatencyCurve, Row, Target};
use crate::server::wait_numsub;
use crate::{BENCH_CHANNEL, Bench};

/// The target: p99 <= 1.1x raw.
pub const TARGET_P99: Target = Target::AtMost(1.1);

/// The target: p99.9 <= 1.1x raw at 1 and 10 subscribers, dedicated mode.
pub const TARGET_P999: Target = Target::AtMost(1.1);

/// The variants, in round 0's order.
const VARIANTS: [Variant; 4] = [
    Variant::Raw,
    Variant::Dedicated,
    Variant::Shared,
    Variant::Fred,
];

/// The quantiles kept for the chart (1.0 is the maximum).
pub const CURVE_QUANTILES: [f64; 10] = [
    0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0,
];

/// Runs the scenario: rows for p50, p99 and p99.9, and one curve per variant and count.
pub async fn run(bench: &mut Bench) -> Result<(), BenchError> {
    let plan = bench.plan.clone();
    // Two rounds even in a full run: each measurement is long (4 s) and the merged
    // histograms of both rounds are reported.
    let rounds = plan.rounds.min(2);
    for &subscribers in &plan.subscriber_counts {
        let mut merged: Vec<(Variant, hdrhistogram::Histogram<u64>, u64)> = VARIANTS
            .iter()
            .map(|v| (*v, latency_histogram(), 0))
            .collect();
        for round in 0..rounds {
            for variant in rotation(&VARIANTS, round) {
                let (hist, missing) = measure(bench, variant, subscribers).await?;
                bench.progress.step(&format!(
                    "{subscribers} subscriber(s), {} (round {}): p50 {} us, p99 {} us, p99.9 {} us{}",
                    variant.label(),
                    round + 1,
                    hist.value_at_quantile(0.5),
                    hist.value_at_quantile(0.99),
                    hist.value_at_quantile(0.999),
                    if missing > 0 { format!(", {missing} missing") } else { String::new() }
                ));
                let entry = merged.iter_mut().find(|m| m.0 == variant).expect("listed");
                entry
                    .1
                    .add(&hist)
                    .map_err(|e| BenchError::new(format!("histogram: {e}")))?;
                entry.2 += missing;
            }
        }
        let case = format!("{subscribers} subscriber(s)");
        let raw = merged[0].1.clone();
        let dedicated = merged[1].1.clone();
        let fred = merged[3].1.clone();
        for (variant, hist, missing) in &merged {
            bench.report.latency_curves.push(LatencyCurve {
                subscribers,
                variant: variant.label().to_owned(),
                points: CURVE_QUANTILES
                    .iter()
                    .map(|&q| (q, hist.value_at_quantile(q) as f64))
                    .collect(),
                samples: hist.len(),
            });
            for (q, name) in [(0.5, "p50 us"), (0.99, "p99 us"), (0.999, "p99.9 us")] {
                let value = hist.value_at_quantile(q) as f64;
                let mut row = Row::plain("latency", &case, variant.label(), name, value);
                if *variant != Variant::Raw {
                    if name == "p99 us" && variant.is_hub() {
                        row = row.target(TARGET_P99);
                    }
                    if name == "p99.9 us" && *variant == Variant::Dedicated && subscribers <= 10 {
                        row = row.target(TARGET_P999);
                    }
                    row = row.against(Variant::Raw.label(), raw.value_at_quantile(q) as f64);
                }
                if *missing > 0 && name == "p50 us" {
                    row = row.note(format!("{missing} deliveries missing"));
                }
                bench.report.push(row);
            }
        }
        for (q, name) in [(0.5, "p50 us"), (0.99, "p99 us"), (0.999, "p99.9 us")] {
            bench.report.push(
                Row::plain(
                    "latency",
                    &case,
                    "hub (dedicated) vs fred",
                    name,
                    dedicated.value_at_quantile(q) as f64,
                )
                .against(Variant::Fred.label(), fred.value_at_quantile(q) as f64),
            );
        }
    }
    Ok(())
}

/// One paced run; returns the merged histogram of every receiver and the number of
/// deliveries that did not arrive.
async fn measure(
    bench: &Bench,
    variant: Variant,
    subscribers: usize,
) -> Result<(hdrhistogram::Histogram<u64>, u64), BenchError> {
    let plan = &bench.plan;
    let client = bench.redis.client();
    let mut admin = bench.redis.connection().await?;
    let total = plan.latency_messages();
    let base = Instant::now();
    let receivers = Receivers::start(
        variant,
        &client,
        subscribers,
        BENCH_CHANNEL,
        total,
        Recording::Latency {
            base,
            warmup: plan.latency_warmup,
        },
    )
    .await?;
    let expected_numsub = if variant == Variant::Shared {
        1
    } else {
        subscribers as i64
    };
    wait_numsub(
        &mut admin,
        BENCH_CHANNEL,
        expected_numsub,
        Duration::from_secs(10),
    )
    .await?;
    let publisher = match receivers.hub() {
        Some(hub) => Publisher::Hub(hub.clone()),
        None if variant == Variant::Fred => Publisher::Fred(driver::fred_client(&client).await?),
        None => Publisher::Raw(bench.redis.connection().await?),
    };

    let rate = plan.latency_rate as f64;
    let mut sent = 0u64;
    let mut inflight = tokio::task::JoinSet::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    // A PUBLISH that times out under overload is a lost delivery, not the end of the run.
    let mut failed = 0u64;
    let start = Instant::now();
    let send_deadline = start + plan.latency_duration * 3;
    while sent < total && Instant::now() < send_deadline {
        ticker.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate) as u64).min(total);
        while sent < due {
            let mut p = publisher.clone();
            let payload = stamp(sent, base.elapsed().as_nanos() as u64, 64);
            inflight.spawn(async move { p.publish(BENCH_CHANNEL, &payload).await });
            sent += 1;
        }
        while let Some(done) = inflight.try_join_next() {
            failed += publish_failed(done)?;
        }
    }
    while let Some(done) = inflight.join_next().await {
        failed += publish_failed(done)?;
    }
    receivers.wait_complete(Duration::from_secs(5)).await;
    let stats = receivers.finish().await;
    wait_numsub(&mut admin, BENCH_CHANNEL, 0, Duration::from_secs(10)).await?;
    let mut hist = latency_histogram();
    let mut received = 0;
    for s in &stats {
        received += s.received;
        hist.add(&s.histogram)
            .map_err(|e| BenchError::new(format!("histogram: {e}")))?;
    }
    let expected = (sent - failed) * subscribers as u64;
    Ok((
        hist,
        expected.saturating_sub(received) + failed * subscribers as u64,
    ))
}

/// 1 if the publish task's PUBLISH failed, 0 if it succeeded; a panicked task is an error.
fn publish_failed(
    joined: Result<Result<i64, String>, tokio::task::JoinError>,
) -> Result<u64, BenchError> {
    match joined {
        Ok(Ok(_)) => Ok(0),
        Ok(Err(_)) => Ok(1),
        Err(e) => Err(BenchError::new(format!("publish task: {e}"))),
    }
}
