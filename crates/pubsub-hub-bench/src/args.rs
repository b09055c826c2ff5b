//! The command line, as clap derive types. Doc comments here are the `--help` text.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Benchmark the pubsub-hub library and dashboard against raw redis-rs and
/// redis-benchmark on a private redis-server.
#[derive(Parser, Debug, Default)]
#[command(
    name = "pubsub-hub-bench",
    version,
    args_conflicts_with_subcommands = true,
    after_help = "\
Every scenario runs on a private redis-server started on a free loopback port (never on the
machine's own Redis), is bounded in count and time, and compares against a raw redis-rs
baseline measured in the same run. Progress goes to stderr, results to stdout. Build it
with --release: `cargo run --release -p pubsub-hub-bench -- ...`."
)]
pub struct Args {
    /// CI-sized run: small counts, a few seconds per scenario.
    #[arg(long)]
    pub quick: bool,

    /// Only these scenarios (repeatable).
    #[arg(long, value_enum, value_name = "NAME")]
    pub scenario: Vec<Scenario>,

    /// Print the results as JSON instead of a table.
    #[arg(long, conflicts_with = "markdown")]
    pub json: bool,

    /// Print the results as a Markdown table.
    #[arg(long)]
    pub markdown: bool,

    /// Write an SVG chart of the latency percentiles here.
    #[arg(long, value_name = "PATH")]
    pub svg: Option<PathBuf>,

    /// Runs nothing: reads these `--json` outputs of earlier runs (repeatable) and prints
    /// one Markdown table of every row's values, ratios and median ratio, judging each
    /// target on the median ratio.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["quick", "scenario", "json", "svg"])]
    pub combine: Vec<PathBuf>,

    /// The redis-server binary.
    #[arg(long, default_value = "redis-server", value_name = "PATH")]
    pub redis_server: String,

    /// The redis-benchmark binary.
    #[arg(long, default_value = "redis-benchmark", value_name = "PATH")]
    pub redis_benchmark: String,

    /// Internal: the memory scenario's measurement process.
    #[command(subcommand)]
    pub command: Option<Internal>,
}

/// Subcommands the bench starts itself with; not for people.
#[derive(Subcommand, Debug)]
pub enum Internal {
    /// One memory measurement in a fresh process (used by the memory scenario).
    #[command(hide = true)]
    Worker(WorkerArgs),
    /// A gateway server in a process of its own (used by the gateway scenario).
    #[command(hide = true)]
    GatewayServer(GatewayServerArgs),
}

/// The hidden `gateway-server` subcommand: a gateway on a free loopback port until its
/// stdin closes, so that its RSS is its own.
#[derive(clap::Args, Debug)]
pub struct GatewayServerArgs {
    /// Port of the bench's private redis-server (always on 127.0.0.1).
    #[arg(long)]
    pub redis_port: u16,
}

/// The benchmark scenarios.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scenario {
    /// PUBLISH throughput at 1, 16 and 64 in flight.
    Publish,
    /// Fan-out receive throughput with 1 to 10,000 subscribers on one channel.
    Fanout,
    /// Publish-to-receive latency at a fixed 5,000 publishes/s.
    Latency,
    /// redis-benchmark PUBLISH: the machine's ceiling.
    Ceiling,
    /// SPUBLISH on a private 3-master cluster against one node, and cluster PUBLISH.
    Shard,
    /// Memory, connections and subscribe time per subscriber.
    Memory,
    /// Dashboard requests/s: POST /publish and GET /state.
    Dashboard,
    /// The gateway against socket.io 4 + redis-adapter: 1,000 and 10,000 WebSocket clients.
    Gateway,
    /// History: publish with it against without, recovering 10,000 missed, memory per 1,000.
    History,
}

impl Scenario {
    /// Every scenario, in the order they run.
    pub const ALL: [Scenario; 9] = [
        Scenario::Publish,
        Scenario::Ceiling,
        Scenario::Shard,
        Scenario::Fanout,
        Scenario::Latency,
        Scenario::Memory,
        Scenario::Dashboard,
        Scenario::Gateway,
        Scenario::History,
    ];

    /// The name used on the command line and in the results.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Publish => "publish",
            Scenario::Fanout => "fanout",
            Scenario::Latency => "latency",
            Scenario::Ceiling => "ceiling",
            Scenario::Shard => "shard",
            Scenario::Memory => "memory",
            Scenario::Dashboard => "dashboard",
            Scenario::Gateway => "gateway",
            Scenario::History => "history",
        }
    }
}

/// The hidden `worker` subcommand: holds N subscriptions in a fresh process so that its RSS
/// growth is theirs alone.
#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// Port of the bench's private redis-server (always on 127.0.0.1).
    #[arg(long)]
    pub port: u16,

    /// raw, dedicated or shared.
    #[arg(long)]
    pub variant: String,

    /// Subscribers to create.
    #[arg(long)]
    pub subscribers: usize,

    /// Subscribe calls in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_the_worker_parse() {
        let args = Args::try_parse_from([
            "pubsub-hub-bench",
            "--quick",
            "--scenario",
            "fanout",
            "--scenario",
            "latency",
            "--json",
        ])
        .unwrap();
        assert!(args.quick && args.json && args.command.is_none());
        assert_eq!(args.scenario, [Scenario::Fanout, Scenario::Latency]);
        let worker = Args::try_parse_from([
            "pubsub-hub-bench",
            "worker",
            "--port",
            "7000",
            "--variant",
            "raw",
            "--subscribers",
            "10",
        ])
        .unwrap();
        assert!(matches!(worker.command, Some(Internal::Worker(w)) if w.port == 7000));
        assert!(Args::try_parse_from(["pubsub-hub-bench", "--json", "--markdown"]).is_err());
    }
}
