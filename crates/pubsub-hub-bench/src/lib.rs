//! # pubsub_hub_bench
//!
//! The benchmark suite: the hub against raw redis-rs (and `redis-benchmark`) in one run,
//! as its own binary so that the `pubsub-hub` binary stays the product. Not published.
//!
//! ```text
//! cargo run --release -p pubsub-hub-bench -- --markdown --svg docs/latency.svg
//! cargo run --release -p pubsub-hub-bench -- --quick --scenario fanout --json
//! ```
//!
//! Every scenario runs on a private `redis-server` that [`server::BenchRedis`] starts on a
//! free loopback port with no persistence and no pub/sub output-buffer limit (so a slow
//! receiver is measured, not disconnected); the machine's own Redis is never touched. Each
//! measurement is bounded in count *and* time. The raw baseline runs in the same process,
//! alternating with the hub round by round, and every row reports `hub / raw`, because on
//! a small noisy machine only ratios measured side by side mean anything.
//!
//! The binary (`src/main.rs`) parses [`Args`] and calls [`run`], or [`memory::worker`] for
//! the hidden `worker` subcommand the memory scenario starts itself as.
//!
//! # Layout
//! - [`args`]: the command line ([`Args`], [`Scenario`], the worker's arguments); its doc
//!   comments are the `--help` text.
//! - [`error`]: [`BenchError`], one line of text; the binary exits 1 with it.
//! - [`plan`]: the sizes of a full and a `--quick` run.
//! - [`server`]: the private `redis-server` (through `pubsub_hub_launcher`) and admin helpers
//!   (`INFO`, `PUBSUB NUMSUB`).
//! - [`progress`]: the progress display on stderr.
//! - [`report`]: result rows, targets, and the text / Markdown / JSON renderings (tables
//!   through `pubsub_hub_cli::table`).
//! - [`svg`]: the latency-percentile chart.
//! - [`combine`]: several runs' `--json` outputs as one table of medians (`--combine`).
//! - [`driver`]: the shared closed-loop publisher and the receivers (hub and raw).
//! - one module per scenario: [`publish`], [`fanout`], [`latency`], [`ceiling`],
//!   [`shard`] (which starts a 3-master cluster of its own), [`memory`] (which measures in
//!   child processes), [`dashboard`], [`http`] (its keep-alive HTTP/1.1 client), and
//!   [`gateway`] (the gateway against socket.io 4 + redis-adapter; the gateway runs as the
//!   hidden `gateway-server` subcommand, socket.io as `socketio/server.mjs` under node),
//!   and [`history`] (publish with history against without, recovering 10,000 missed
//!   publications through a gateway, Redis memory per 1,000 kept).

use std::time::Instant;

pub mod args;
pub mod ceiling;
pub mod combine;
pub mod dashboard;
pub mod driver;
pub mod error;
pub mod fanout;
pub mod gateway;
pub mod history;
pub mod http;
pub mod latency;
pub mod memory;
pub mod plan;
pub mod progress;
pub mod publish;
pub mod report;
pub mod server;
pub mod shard;
pub mod svg;

pub use args::{Args, GatewayServerArgs, Scenario, WorkerArgs};
pub use error::BenchError;
pub use plan::Plan;
pub use progress::Progress;
pub use report::{Report, Row, Target};
pub use server::BenchRedis;

/// The channel every throughput scenario publishes to.
pub const BENCH_CHANNEL: &str = "bench:channel";

/// A 64-byte JSON payload, the size of a small event.
pub const PAYLOAD_64: &[u8] =
    br#"{"event":"bench","pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#;

/// Everything a scenario needs: the plan, the private server, the progress display and the
/// report it adds rows to.
pub struct Bench {
    /// Sizes for this run.
    pub plan: Plan,
    /// The private Redis.
    pub redis: BenchRedis,
    /// Progress on stderr.
    pub progress: Progress,
    /// Rows so far.
    pub report: Report,
    /// The `redis-benchmark` binary to run for the ceiling.
    pub redis_benchmark: String,
    /// The `redis-server` binary, for scenarios that start servers of their own.
    pub redis_server: String,
}

/// Runs the selected scenarios and prints the report.
pub async fn run(args: &Args) -> Result<(), BenchError> {
    if !args.combine.is_empty() {
        let reports = combine::read(&args.combine)?;
        print!("{}", combine::render_markdown(&reports));
        return Ok(());
    }
    let scenarios: Vec<Scenario> = if args.scenario.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        Scenario::ALL
            .into_iter()
            .filter(|s| args.scenario.contains(s))
            .collect()
    };
    let plan = Plan::new(args.quick);
    let progress = Progress::new();
    let started = Instant::now();
    progress.note(&format!(
        "{} run of {} on a private redis-server",
        if args.quick { "quick" } else { "full" },
        scenarios
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let redis = BenchRedis::start(&args.redis_server, server::wanted_maxclients())?;
    progress.note(&format!(
        "redis-server {} on 127.0.0.1:{}",
        redis.version(),
        redis.port()
    ));
    let report = Report::new(args.quick, redis.version().to_owned());
    let mut bench = Bench {
        plan,
        redis,
        progress,
        report,
        redis_benchmark: args.redis_benchmark.clone(),
        redis_server: args.redis_server.clone(),
    };
    for scenario in &scenarios {
        bench.progress.scenario(scenario.name());
        let result = match scenario {
            Scenario::Publish => publish::run(&mut bench).await,
            Scenario::Fanout => fanout::run(&mut bench).await,
            Scenario::Latency => latency::run(&mut bench).await,
            Scenario::Ceiling => ceiling::run(&mut bench).await,
            Scenario::Shard => shard::run(&mut bench).await,
            Scenario::Memory => memory::run(&mut bench).await,
            Scenario::Dashboard => dashboard::run(&mut bench).await,
            Scenario::Gateway => gateway::run(&mut bench).await,
            Scenario::History => history::run(&mut bench).await,
        };
        if let Err(e) = result {
            return Err(BenchError::new(format!("bench {}: {e}", scenario.name())));
        }
    }
    bench.report.finish();
    bench
        .progress
        .note(&format!("done in {:.1}s", started.elapsed().as_secs_f64()));

    if let Some(path) = &args.svg {
        let chart = svg::latency_chart(&bench.report.latency_curves);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| BenchError::new(format!("cannot create {}: {e}", dir.display())))?;
        }
        std::fs::write(path, chart)
            .map_err(|e| BenchError::new(format!("cannot write {}: {e}", path.display())))?;
        bench
            .progress
            .note(&format!("latency chart written to {}", path.display()));
    }
    let out = if args.json {
        bench.report.to_json_string()
    } else if args.markdown {
        bench.report.render_markdown()
    } else {
        bench.report.render_text()
    };
    print!("{out}");
    Ok(())
}

/// The median of `values` (the mean of the middle two for an even count); 0 when empty.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn payload_is_64_bytes_of_json() {
        assert_eq!(PAYLOAD_64.len(), 64);
        serde_json::from_slice::<serde_json::Value>(PAYLOAD_64).unwrap();
    }
}
