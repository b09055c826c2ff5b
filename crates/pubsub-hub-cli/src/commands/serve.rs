//! `pubsub-hub serve` (and no subcommand): the dashboard of `pubsub_hub_web`.

use pubsub_hub_web::{DashboardError, DashboardOptions, run_dashboard};

use crate::cli::ServeArgs;
use crate::config::RedisTarget;
use crate::error::CliError;

/// The dashboard options for these arguments: the resolved Redis address goes in as a URL
/// only when a URL won, so that the start-up line shows `host:port` as the guide's does.
pub fn options(target: &RedisTarget, args: &ServeArgs) -> DashboardOptions {
    let mut opts = DashboardOptions {
        host: args.host.clone(),
        port: args.port,
        embedded_fallback: !args.no_embedded,
        ..DashboardOptions::default()
    };
    match target.host_port() {
        Some((host, port)) => {
            opts.redis_host = host.to_owned();
            opts.redis_port = port;
        }
        None => opts.redis_url = Some(target.url().to_owned()),
    }
    opts
}

/// Serves until Ctrl-C or SIGTERM; every subscription is closed before this returns.
pub async fn run(target: &RedisTarget, args: &ServeArgs) -> Result<(), CliError> {
    // Installed before the start-up lines are printed (see `shutdown_signal`).
    let stop = super::shutdown_signal();
    run_dashboard(options(target, args), stop)
        .await
        .map_err(|e| classify(&e))
}

fn classify(e: &DashboardError) -> CliError {
    let text = e.to_string();
    match e {
        DashboardError::InvalidRedisUrl { .. } => CliError::usage(text),
        DashboardError::RedisUnreachable { .. } => CliError::unreachable(text),
        DashboardError::Redis { source, .. } if source.is_unavailable() => {
            CliError::unreachable(text)
        }
        _ => CliError::failure(text),
    }
}
