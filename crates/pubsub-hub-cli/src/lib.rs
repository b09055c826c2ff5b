//! # pubsub_hub_cli
//!
//! The `pubsub-hub` command: the dashboard, `publish`, `subscribe` and `inspect` for people
//! who live in the terminal. The benchmark suite is a crate of its own
//! (`crates/pubsub-hub-bench`), so this binary is only the product.
//!
//! The binary (`src/main.rs`) only parses arguments, calls [`load_config`], sets up tracing
//! ([`init_logging`]) and calls [`run`]; all behaviour is here, in modules a test or another
//! front end can call.
//!
//! # Layout
//! - [`cli`]: the clap derive types ([`Cli`], [`Command`] and each subcommand's arguments);
//!   their doc comments are the `--help` text. Flags are `Option`s without clap defaults or
//!   `env`, so that [`settings`] can tell a flag from a lower layer; usage errors as one line.
//! - [`settings`]: [`Config`], every setting resolved by the one precedence order (flag >
//!   env > config file > default) with its [`cli::Source`]; the TOML file's shape and its
//!   one-line errors; `--print-config`. One table lists every setting.
//! - [`config`]: [`RedisTarget`]: the URL-versus-host/port rule on top of that order. The
//!   client itself (URL, CA file) and password redaction are `pubsub_hub_launcher`'s, as in
//!   the dashboard.
//! - [`error`]: [`CliError`] and [`ExitStatus`], the documented exit codes
//!   ([`error::EXIT_CODES_HELP`]); every error is one line.
//! - [`commands`]: `serve` (over `pubsub_hub_web`), `publish`, `subscribe`, `inspect`, and
//!   [`commands::reach_redis`], the configured-or-private Redis rule for long-running
//!   subcommands. The Ctrl-C / SIGTERM signal is `pubsub_hub_web::shutdown_signal`.
//! - [`table`]: aligned text and Markdown tables (also used by `pubsub-hub-bench`).

pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod settings;
pub mod table;

pub use cli::{Cli, Command};
pub use config::RedisTarget;
pub use error::{CliError, ExitStatus};
pub use settings::Config;

use std::io::IsTerminal;

use cli::{GatewayArgs, ServeArgs};
use settings::Flags;
use tracing_subscriber::EnvFilter;

/// Loads the configuration for the parsed command line: the file (`--config` or
/// `PUBSUB_HUB_CONFIG`), the process environment and the flags, by the one precedence order.
/// An unset log filter becomes the command's default.
pub fn load_config(cli: &Cli) -> Result<Config, CliError> {
    let none = ServeArgs::default();
    let no_gateway = GatewayArgs::default();
    let flags = Flags {
        redis: &cli.redis,
        serve: cli.serve_args().unwrap_or(&none),
        gateway: cli.gateway_args().unwrap_or(&no_gateway),
        log_format: cli.log_format,
    };
    let env = |name: &str| std::env::var(name).ok();
    let mut config = Config::load(&flags, cli.config.as_deref(), &env)?;
    if config.log.filter.value.is_none() {
        config.log.filter.value = Some(default_log_filter(cli).to_owned());
    }
    Ok(config)
}

/// Installs the tracing subscriber: the configured filter, text or JSON lines on stderr.
/// Text has ANSI colours only when stderr is a terminal and `NO_COLOR` is unset.
pub fn init_logging(log: &settings::Log) {
    let filter = log.filter.value.as_deref().unwrap_or("warn");
    let filter = EnvFilter::builder()
        .parse(filter)
        .unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.format.value {
        cli::LogFormat::Json => builder.json().init(),
        cli::LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colour).init()
        }
    }
}

/// Runs the parsed command line to completion on a fresh tokio runtime.
pub fn run(cli: Cli, config: Config) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(dispatch(cli, config))
}

async fn dispatch(cli: Cli, config: Config) -> Result<(), CliError> {
    let target = || RedisTarget::resolve(config.redis());
    match &cli.command {
        None | Some(Command::Serve(_)) => {
            let print = cli.serve_args().is_some_and(|a| a.print_config);
            commands::serve::run(&target()?, &config, print).await
        }
        Some(Command::Gateway(args)) => {
            commands::gateway::run(&target()?, &config, args.print_config).await
        }
        Some(Command::Publish(args)) => commands::publish::run(&target()?, args).await,
        Some(Command::Subscribe(args)) => commands::subscribe::run(&target()?, args).await,
        Some(Command::Inspect(args)) => commands::inspect::run(&target()?, args).await,
    }
}

/// The default log filter when neither `RUST_LOG` nor the file's `log.filter` is set: the
/// dashboard logs warnings; the client commands report everything themselves, so only
/// library errors show.
pub fn default_log_filter(cli: &Cli) -> &'static str {
    match cli.command {
        None | Some(Command::Serve(_)) | Some(Command::Gateway(_)) => "warn",
        _ => "error",
    }
}
