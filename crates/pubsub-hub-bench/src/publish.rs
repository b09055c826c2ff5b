//! Publish throughput at 1, 16 and 64 in flight: `PubSubHub::publish_bytes` against
//! `PUBLISH` on a raw `redis::aio::MultiplexedConnection` and on a fred client (which
//! pipelines concurrent commands on its one connection, as both others do).
//!
//! The channel has no subscribers, so the row measures the client's cost per command and
//! Redis' command path, not fan-out.

use crate::driver::{self, Publisher, Variant, rotation};
use crate::error::BenchError;
use crate::progress::thousands;
use crate::report::{Row, Target};
use crate::{BENCH_CHANNEL, Bench, PAYLOAD_64, median};
use fred::prelude::ClientLike;

/// The target: the hub publishes at least as fast as raw redis-rs, and as fred, at every
/// concurrency.
pub const TARGET: Target = Target::AtLeast(1.0);

/// Runs the scenario and adds one row per concurrency.
pub async fn run(bench: &mut Bench) -> Result<(), BenchError> {
    let client = bench.redis.client();
    let hub = driver::hub(client.clone(), Variant::Dedicated).await?;
    let raw = bench.redis.connection().await?;
    let fred = driver::fred_client(&client).await?;
    let publishers = [
        (Variant::Raw, Publisher::Raw(raw)),
        (Variant::Dedicated, Publisher::Hub(hub.clone())),
        (Variant::Fred, Publisher::Fred(fred.clone())),
    ];
    // Warm both paths up (connections, allocator, branch predictors) before measuring.
    for (_, p) in &publishers {
        driver::closed_loop(
            p,
            BENCH_CHANNEL,
            PAYLOAD_64,
            2_000,
            16,
            bench.plan.publish_max,
        )
        .await?;
    }
    let plan = bench.plan.clone();
    for &in_flight in &plan.publish_in_flight {
        let total = if in_flight == 1 {
            plan.publish_count_serial
        } else {
            plan.publish_count_parallel
        };
        let mut rates: Vec<(Variant, Vec<f64>)> =
            publishers.iter().map(|(v, _)| (*v, Vec::new())).collect();
        for round in 0..plan.rounds {
            for variant in rotation(&[Variant::Raw, Variant::Dedicated, Variant::Fred], round) {
                let p = &publishers
                    .iter()
                    .find(|(v, _)| *v == variant)
                    .expect("listed")
                    .1;
                let (done, elapsed) = driver::closed_loop(
                    p,
                    BENCH_CHANNEL,
                    PAYLOAD_64,
                    total,
                    in_flight,
                    plan.publish_max,
                )
                .await?;
                let rate = done as f64 / elapsed.as_secs_f64();
                bench.progress.step(&format!(
                    "{in_flight} in flight, {} (round {}): {} msg/s ({done} in {:.2}s)",
                    variant.label(),
                    round + 1,
                    thousands(rate),
                    elapsed.as_secs_f64()
                ));
                rates
                    .iter_mut()
                    .find(|(v, _)| *v == variant)
                    .expect("listed")
                    .1
                    .push(rate);
            }
        }
        let rate_of = |v: Variant| median(&rates.iter().find(|(x, _)| *x == v).expect("listed").1);
        let case = format!("{in_flight} in flight");
        bench.report.push(Row::plain(
            "publish",
            &case,
            Variant::Raw.label(),
            "msg/s",
            rate_of(Variant::Raw),
        ));
        bench.report.push(
            Row::plain(
                "publish",
                &case,
                "hub",
                "msg/s",
                rate_of(Variant::Dedicated),
            )
            .target(TARGET)
            .against(Variant::Raw.label(), rate_of(Variant::Raw)),
        );
        bench.report.push(
            Row::plain(
                "publish",
                &case,
                Variant::Fred.label(),
                "msg/s",
                rate_of(Variant::Fred),
            )
            .against(Variant::Raw.label(), rate_of(Variant::Raw)),
        );
        bench.report.push(
            Row::plain(
                "publish",
                &case,
                "hub vs fred",
                "msg/s",
                rate_of(Variant::Dedicated),
            )
            .target(TARGET)
            .against(Variant::Fred.label(), rate_of(Variant::Fred)),
        );
    }
    hub.shutdown().await;
    let _ = fred.quit().await;
    Ok(())
}
