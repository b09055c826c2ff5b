//! # pubsub_hub_cli
//!
//! The `pubsub-hub` command: the dashboard, `publish`, `subscribe` and `inspect` for people
//! who live in the terminal, and `bench`, the benchmark suite that compares the hub with raw
//! redis-rs and `redis-benchmark` in one run.
//!
//! The binary (`src/main.rs`) only parses arguments, sets up tracing and calls [`run`]; all
//! behaviour is here, in modules a test or another front end can call.
//!
//! # Layout
//! - [`cli`]: the clap derive types ([`Cli`], [`Command`] and each subcommand's arguments);
//!   their doc comments are the `--help` text. Records whether each Redis setting came from
//!   a flag, the environment or a default.
//! - [`config`]: [`RedisTarget`], the one precedence order for the Redis address (flag >
//!   env > default, URL over host/port within a layer) and password redaction.
//! - [`error`]: [`CliError`] and [`ExitStatus`], the documented exit codes
//!   ([`error::EXIT_CODES_HELP`]); every error is one line.
//! - [`commands`]: `serve` (over `pubsub_hub_web`), `publish`, `subscribe`, `inspect`, and
//!   the Ctrl-C / SIGTERM signal.
//! - [`bench`](mod@bench): the benchmark suite: a private `redis-server` per run, one module per
//!   scenario, the progress display, the results table / JSON / Markdown and the SVG chart.
//! - [`table`]: aligned text and Markdown tables.

pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod table;

pub use cli::{Cli, Command};
pub use config::RedisTarget;
pub use error::{CliError, ExitStatus};

/// Runs the parsed command line to completion on a fresh tokio runtime.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(dispatch(cli))
}

async fn dispatch(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        None => commands::serve::run(&RedisTarget::resolve(&cli.redis)?, &cli.serve).await,
        Some(Command::Serve(args)) => {
            commands::serve::run(&RedisTarget::resolve(&cli.redis)?, &args).await
        }
        Some(Command::Publish(args)) => {
            commands::publish::run(&RedisTarget::resolve(&cli.redis)?, &args).await
        }
        Some(Command::Subscribe(args)) => {
            commands::subscribe::run(&RedisTarget::resolve(&cli.redis)?, &args).await
        }
        Some(Command::Inspect(args)) => {
            commands::inspect::run(&RedisTarget::resolve(&cli.redis)?, &args).await
        }
        Some(Command::Bench(args)) => bench::run(&args).await,
        Some(Command::BenchWorker(args)) => bench::memory::worker(&args).await,
    }
}

/// The default log filter when `RUST_LOG` is not set: the dashboard logs warnings; the
/// client commands report everything themselves, so only library errors show.
pub fn default_log_filter(cli: &Cli) -> &'static str {
    match cli.command {
        None | Some(Command::Serve(_)) => "warn",
        _ => "error",
    }
}
