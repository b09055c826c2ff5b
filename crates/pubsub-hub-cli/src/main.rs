//! The `pubsub-hub` binary: parse, load the configuration, set up tracing, run, exit with a
//! documented code.

use std::process::ExitCode;

use pubsub_hub_cli::{Cli, CliError};

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    let config = match pubsub_hub_cli::load_config(&cli) {
        Ok(config) => config,
        Err(e) => return fail(&e),
    };
    pubsub_hub_cli::init_logging(&config.log);
    match pubsub_hub_cli::run(cli, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &CliError) -> ExitCode {
    eprintln!("pubsub-hub: {e}");
    ExitCode::from(e.status().code())
}
