//! The command line, as clap derive types. Doc comments here are the `--help` text.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::error::EXIT_CODES_HELP;

/// Redis pub/sub from the terminal: serve the dashboard, publish, subscribe, inspect, bench.
///
/// With no subcommand, serves the dashboard (as `pubsub-hub serve`).
#[derive(Parser, Debug)]
#[command(
    name = "pubsub-hub",
    version,
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    /// Where Redis is (global: valid before or after the subcommand).
    #[command(flatten)]
    pub redis: RedisArgs,

    /// Dashboard options when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,

    /// What to do; the dashboard when absent.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The Redis server to talk to.
///
/// Precedence, highest first: `--redis-url`; `--redis-host`/`--redis-port` given as flags;
/// `REDIS_URL`; `REDIS_HOST`/`REDIS_PORT`; the defaults `localhost`/`6379`.
#[derive(Args, Debug, Clone)]
pub struct RedisArgs {
    /// Redis URL, e.g. redis://:password@host:6379/0 (overrides --redis-host/--redis-port).
    #[arg(
        long,
        env = "REDIS_URL",
        global = true,
        help_heading = "Redis",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub redis_url: Option<String>,

    /// Redis host.
    #[arg(
        long,
        env = "REDIS_HOST",
        global = true,
        help_heading = "Redis",
        default_value = "localhost",
        value_name = "HOST"
    )]
    pub redis_host: String,

    /// Redis port.
    #[arg(
        long,
        env = "REDIS_PORT",
        global = true,
        help_heading = "Redis",
        default_value_t = 6379,
        value_name = "PORT"
    )]
    pub redis_port: u16,

    /// Where each value came from; filled by [`Cli::parse_args`] (clap's derive does not
    /// keep it), because a flag beats the environment even across the URL/host split.
    #[arg(skip)]
    pub sources: RedisSources,
}

/// Where each Redis setting came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedisSources {
    /// Source of `--redis-url`.
    pub url: Source,
    /// Source of `--redis-host`.
    pub host: Source,
    /// Source of `--redis-port`.
    pub port: Source,
}

/// The layer a setting was taken from, highest precedence first. (A configuration file,
/// when one exists, slots in between [`Source::Env`] and [`Source::Default`].)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// An environment variable.
    Env,
    /// The built-in default (or not set at all).
    #[default]
    Default,
}

impl Source {
    fn of(matches: &ArgMatches, id: &str) -> Source {
        match matches.value_source(id) {
            Some(ValueSource::CommandLine) => Source::Flag,
            Some(ValueSource::EnvVariable) => Source::Env,
            _ => Source::Default,
        }
    }

    /// `flag`, `env` or `default`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Env => "env",
            Source::Default => "default",
        }
    }
}

/// How to serve the dashboard.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address the dashboard binds to.
    #[arg(long, default_value = "127.0.0.1", value_name = "HOST")]
    pub host: String,

    /// Port the dashboard binds to (0 picks a free port).
    #[arg(long, default_value_t = 8103, value_name = "PORT")]
    pub port: u16,

    /// Exit instead of starting a private redis-server when nothing answers at the
    /// configured Redis address.
    #[arg(long)]
    pub no_embedded: bool,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the dashboard (the default): the guide's HTTP API and a live page.
    Serve(ServeArgs),
    /// Publish a message; prints how many subscribers Redis delivered it to, one line per
    /// publish.
    Publish(PublishArgs),
    /// Subscribe to channels (or patterns, or shard channels) and print each message, until
    /// Ctrl-C, SIGTERM or --count. Lag and reconnect events go to stderr.
    Subscribe(SubscribeArgs),
    /// Show what Redis has subscribed: PUBSUB CHANNELS, NUMSUB, NUMPAT and the shard
    /// variants.
    Inspect(InspectArgs),
    /// Benchmark the hub against raw redis-rs and redis-benchmark on a private redis-server.
    Bench(BenchArgs),
    /// Internal: one memory measurement in a fresh process (used by `bench`).
    #[command(hide = true)]
    BenchWorker(WorkerArgs),
}

/// `pubsub-hub publish`.
#[derive(Args, Debug)]
#[command(after_help = "\
Message encoding:
  By default the message is JSON: text that parses as JSON is sent as compact JSON
  ('{\"a\": 1}' is sent as {\"a\":1}, 42 as 42); any other text is sent as a JSON string
  (hello is sent as \"hello\"). One trailing newline is dropped from text read from
  stdin or a file. Use --raw to send the bytes exactly as given, newline included.

Examples:
  pubsub-hub publish orders:new '{\"order_id\": 42}'
  echo '{\"order_id\": 42}' | pubsub-hub publish orders:new -
  pubsub-hub publish --raw --file image.png blobs:new")]
pub struct PublishArgs {
    /// Channel to publish to.
    pub channel: String,

    /// The message; `-` (or nothing, when stdin is not a terminal) reads stdin.
    #[arg(conflicts_with = "file")]
    pub message: Option<String>,

    /// Read the message from a file.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,

    /// Publish the message this many times.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,

    /// Send the bytes exactly as given instead of as JSON.
    #[arg(long)]
    pub raw: bool,

    /// Publish to a shard channel (SPUBLISH, Redis 7+): only `subscribe --shard`
    /// subscribers receive it.
    #[arg(long)]
    pub shard: bool,
}

/// `pubsub-hub subscribe`.
#[derive(Args, Debug)]
#[command(after_help = "\
Output:
  text  one line per message: CHANNEL PAYLOAD, or CHANNEL (via PATTERN) PAYLOAD for a
        pattern delivery. UTF-8 payloads are printed as text with control characters
        escaped (\\n, \\t, \\u{1b}); other payloads as base64:... .
  json  one JSON object per line: channel, pattern, payload (parsed JSON, text, or
        base64), encoding (json|text|base64), received_at_ms.")]
pub struct SubscribeArgs {
    /// Channels to subscribe to (glob patterns with --pattern).
    #[arg(required = true, value_name = "TARGET")]
    pub targets: Vec<String>,

    /// Treat the targets as glob patterns (PSUBSCRIBE): `*`, `?`, `[abc]`.
    #[arg(long, conflicts_with = "shard")]
    pub pattern: bool,

    /// Treat the targets as shard channels (SSUBSCRIBE, Redis 7+).
    #[arg(long)]
    pub shard: bool,

    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,

    /// Exit 0 after printing this many messages.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
}

/// How `subscribe` prints messages.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// `CHANNEL PAYLOAD` lines.
    Text,
    /// JSON lines.
    Json,
}

/// `pubsub-hub inspect`.
#[derive(Args, Debug)]
#[command(after_help = "\
Shard channels (Redis 7+: PUBSUB SHARDCHANNELS / SHARDNUMSUB) are listed in a second
table when there are any.")]
pub struct InspectArgs {
    /// Glob for PUBSUB CHANNELS (and SHARDCHANNELS).
    #[arg(long, default_value = "*", value_name = "GLOB")]
    pub pattern: String,

    /// Channels to count with PUBSUB NUMSUB and SHARDNUMSUB (default: every channel
    /// PUBSUB CHANNELS and SHARDCHANNELS list).
    #[arg(value_name = "CHANNEL")]
    pub channels: Vec<String>,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `pubsub-hub bench`.
#[derive(Args, Debug)]
#[command(after_help = "\
Every scenario runs on a private redis-server started on a free loopback port (never on
--redis-url), is bounded in count and time, and compares against a raw redis-rs baseline
measured in the same run. Progress goes to stderr, results to stdout.")]
pub struct BenchArgs {
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

    /// The redis-server binary.
    #[arg(long, default_value = "redis-server", value_name = "PATH")]
    pub redis_server: String,

    /// The redis-benchmark binary.
    #[arg(long, default_value = "redis-benchmark", value_name = "PATH")]
    pub redis_benchmark: String,
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
}

impl Scenario {
    /// Every scenario, in the order they run.
    pub const ALL: [Scenario; 7] = [
        Scenario::Publish,
        Scenario::Ceiling,
        Scenario::Shard,
        Scenario::Fanout,
        Scenario::Latency,
        Scenario::Memory,
        Scenario::Dashboard,
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
        }
    }
}

/// The hidden `bench-worker` subcommand: holds N subscriptions in a fresh process so that
/// its RSS growth is theirs alone.
#[derive(Args, Debug)]
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

impl Cli {
    /// Parses the process arguments (exiting with code 2 and clap's message on a usage
    /// error) and records where each Redis setting came from.
    pub fn parse_args() -> Cli {
        let matches = Cli::command().get_matches();
        Cli::from_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    /// Like [`Cli::parse_args`] over explicit arguments, returning clap's error.
    pub fn try_parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Cli::command().try_get_matches_from(args)?;
        Cli::from_matches(&matches)
    }

    fn from_matches(matches: &ArgMatches) -> Result<Cli, clap::Error> {
        let mut cli = Cli::from_arg_matches(matches)?;
        // The dashboard's options before a subcommand would be silently ignored: refuse them
        // (clap's `args_conflicts_with_subcommands` would refuse the global Redis ones too).
        if let Some((name, _)) = matches.subcommand() {
            let given = ["host", "port", "no_embedded"]
                .into_iter()
                .find(|id| Source::of(matches, id) == Source::Flag);
            if let Some(id) = given {
                let flag = format!("--{}", id.replace('_', "-"));
                let hint = if name == "serve" {
                    format!("put {flag} after `serve`")
                } else {
                    format!("{flag} is an option of `serve`, not of `{name}`")
                };
                return Err(Cli::command().error(clap::error::ErrorKind::ArgumentConflict, hint));
            }
        }
        // Global arguments given after the subcommand are recorded in its matches.
        let mut scope = matches;
        while let Some((_, sub)) = scope.subcommand() {
            scope = sub;
        }
        let strongest = |id: &str| Source::of(matches, id).min(Source::of(scope, id));
        cli.redis.sources = RedisSources {
            url: strongest("redis_url"),
            host: strongest("redis_host"),
            port: strongest("redis_port"),
        };
        Ok(cli)
    }
}
