//! The `pubsub-hub` binary: parse, set up tracing, run, exit with a documented code.

use std::process::ExitCode;

use pubsub_hub_cli::Cli;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(pubsub_hub_cli::default_log_filter(&cli)));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match pubsub_hub_cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pubsub-hub: {e}");
            ExitCode::from(e.status().code())
        }
    }
}
