//! Fan-out receive throughput: 1 to 10,000 subscribers on one channel; deliveries per
//! second until every subscriber has every message. Shared mode is also compared with
//! dedicated connections (the goal: at least 2x at 100 subscribers).
//!
//! The publisher is the same raw multiplexed connection (32 in flight) for every variant,
//! so a row compares only the receiving side: the hub's consumers (dedicated or shared
//! connections) against one raw `redis::aio::PubSub` per subscriber and against one fred
//! client per subscriber (its message stream holds as many messages as a hub consumer's
//! queue).

use std::time::{Duration, Instant};

use crate::driver::{self, Publisher, Receivers, Recording, Variant, rotation};
use crate::error::BenchError;
use crate::memory::FD_HEADROOM;
use crate::progress::thousands;
use crate::report::{Row, Target};
use crate::server::{open_files_limit, wait_numsub};
use crate::{BENCH_CHANNEL, Bench, PAYLOAD_64, median};

/// The target: the hub's dedicated mode receives at least as fast as raw redis-rs at every
/// subscriber count (shared mode: from 100 subscribers).
pub const TARGET: Target = Target::AtLeast(1.0);

/// The goal: shared mode receives at least 2x dedicated with 100 subscribers.
pub const SHARED_TARGET: Target = Target::AtLeast(2.0);

/// The variants, in round 0's order.
const VARIANTS: [Variant; 4] = [
    Variant::Raw,
    Variant::Dedicated,
    Variant::Shared,
    Variant::Fred,
];

/// One measurement's outcome.
struct Outcome {
    rate: f64,
    lost: u64,
    complete: bool,
}

/// Runs the scenario and adds rows per subscriber count.
pub async fn run(bench: &mut Bench) -> Result<(), BenchError> {
    let plan = bench.plan.clone();
    let publisher = Publisher::Raw(bench.redis.connection().await?);
    // Raw and dedicated need a descriptor per subscriber; every variant gets the same count.
    let fd_limit = open_files_limit().unwrap_or(1024);
    let max_by_fd = fd_limit.saturating_sub(FD_HEADROOM) as usize;
    for &wanted in &plan.fanout_counts {
        let subscribers = wanted.min(max_by_fd);
        let messages = plan.fanout_messages(subscribers);
        let mut results: Vec<(Variant, Vec<f64>, u64, bool)> =
            VARIANTS.iter().map(|v| (*v, Vec::new(), 0, true)).collect();
        for round in 0..plan.rounds {
            for variant in rotation(&VARIANTS, round) {
                let o = measure(bench, &publisher, variant, subscribers, messages).await?;
                bench.progress.step(&format!(
                    "{subscribers} subscriber(s) x {messages} messages, {} (round {}): {} deliveries/s{}",
                    variant.label(),
                    round + 1,
                    thousands(o.rate),
                    if o.lost > 0 { format!(", {} lost to lag", o.lost) } else { String::new() }
                ));
                let entry = results.iter_mut().find(|r| r.0 == variant).expect("listed");
                entry.1.push(o.rate);
                entry.2 += o.lost;
                entry.3 &= o.complete;
            }
        }
        let case = format!("{subscribers} subscriber(s)");
        let raw = median(&results[0].1);
        let dedicated = median(&results[1].1);
        let fred = median(&results[3].1);
        for (variant, rates, lost, complete) in &results {
            let mut row = Row::plain(
                "fanout",
                &case,
                variant.label(),
                "deliveries/s",
                median(rates),
            );
            if *variant != Variant::Raw {
                if *variant == Variant::Dedicated
                    || (*variant == Variant::Shared && subscribers >= 100)
                {
                    row = row.target(TARGET);
                }
                row = row.against(Variant::Raw.label(), raw);
            }
            if *lost > 0 {
                row = row.note(format!("{lost} dropped to consumer lag"));
            }
            if !complete {
                row = row.note("time bound hit before all deliveries");
            }
            if subscribers < wanted {
                row = row.note(format!(
                    "bounded to {subscribers} by the open-files limit ({fd_limit})"
                ));
            }
            bench.report.push(row);
        }
        bench.report.push(
            Row::plain(
                "fanout",
                &case,
                "hub (dedicated) vs fred",
                "deliveries/s",
                dedicated,
            )
            .target(TARGET)
            .against(Variant::Fred.label(), fred),
        );
        let mut shared = Row::plain(
            "fanout",
            &case,
            "shared x4 vs dedicated",
            "deliveries/s",
            median(&results[2].1),
        );
        if subscribers == 100 {
            shared = shared.target(SHARED_TARGET);
        }
        bench
            .report
            .push(shared.against(Variant::Dedicated.label(), dedicated));
    }
    Ok(())
}

async fn measure(
    bench: &Bench,
    publisher: &Publisher,
    variant: Variant,
    subscribers: usize,
    messages: u64,
) -> Result<Outcome, BenchError> {
    let client = bench.redis.client();
    let mut admin = bench.redis.connection().await?;
    let receivers = Receivers::start(
        variant,
        &client,
        subscribers,
        BENCH_CHANNEL,
        messages,
        Recording::Count,
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
        Duration::from_secs(30),
    )
    .await?;

    let start = Instant::now();
    driver::closed_loop(
        publisher,
        BENCH_CHANNEL,
        PAYLOAD_64,
        messages,
        32,
        bench.plan.fanout_max,
    )
    .await?;
    let remaining = bench.plan.fanout_max.saturating_sub(start.elapsed());
    let complete = receivers.wait_complete(remaining).await;
    let elapsed = start.elapsed();
    let stats = receivers.finish().await;
    wait_numsub(&mut admin, BENCH_CHANNEL, 0, Duration::from_secs(30)).await?;
    let received: u64 = stats.iter().map(|s| s.received).sum();
    let lost: u64 = stats.iter().map(|s| s.lost).sum();
    Ok(Outcome {
        rate: received as f64 / elapsed.as_secs_f64(),
        lost,
        complete,
    })
}
