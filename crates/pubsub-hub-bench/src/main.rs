//! The `pubsub-hub-bench` binary: parse, run the scenarios (or one memory worker), exit 1
//! with one line on failure.

use std::process::ExitCode;

use clap::Parser;
use pubsub_hub_bench::args::Internal;
use pubsub_hub_bench::{Args, BenchError};

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&BenchError::new(format!("cannot start the runtime: {e}"))),
    };
    let result = runtime.block_on(async {
        match &args.command {
            Some(Internal::Worker(worker)) => pubsub_hub_bench::memory::worker(worker).await,
            Some(Internal::GatewayServer(server)) => {
                pubsub_hub_bench::gateway::server(server).await
            }
            None => pubsub_hub_bench::run(&args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &BenchError) -> ExitCode {
    eprintln!("pubsub-hub-bench: {e}");
    ExitCode::FAILURE
}
