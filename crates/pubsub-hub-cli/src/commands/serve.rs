//! `pubsub-hub serve` (and no subcommand): the dashboard of `pubsub_hub_web`.

use pubsub_hub_web::{DashboardError, DashboardOptions, run_dashboard};

use crate::config::RedisTarget;
use crate::error::CliError;
use crate::settings::Config;

/// The dashboard options for this configuration. The resolved Redis address goes in as a
/// URL only when a URL won, so that the start-up line shows `host:port` as the guide's does.
pub fn options(target: &RedisTarget, config: &Config) -> DashboardOptions {
    let server = &config.server;
    let mut opts = DashboardOptions {
        host: server.host.value.clone(),
        port: server.port.value,
        token: server.token.value.clone(),
        insecure_no_auth: server.insecure_no_auth.value,
        cookie_secure: server.cookie_secure.value,
        trusted_proxies: server.trusted_proxies.value.clone(),
        // The same rule as `super::reach_redis`: a private server only without a configured
        // address.
        embedded_fallback: config.private_redis_allowed(),
        redis_ca_file: target.ca_file().map(ToOwned::to_owned),
        limits: config.web_limits(),
        mode: config.connection_mode(),
        cluster_nodes: config.dashboard.cluster_nodes.value.clone(),
        ..DashboardOptions::default()
    };
    if !opts.cluster_nodes.is_empty() {
        // A cluster is reached through its nodes; the single-server address does not apply.
        return opts;
    }
    match target.host_port() {
        Some((host, port)) => {
            opts.redis_host = host.to_owned();
            opts.redis_port = port;
        }
        None => opts.redis_url = Some(target.url().to_owned()),
    }
    opts
}

/// With `print_config`, prints the effective configuration and returns. Otherwise serves
/// until Ctrl-C or SIGTERM; every subscription is closed before this returns.
pub async fn run(
    target: &RedisTarget,
    config: &Config,
    print_config: bool,
) -> Result<(), CliError> {
    if print_config {
        let nodes = &config.dashboard.cluster_nodes;
        let in_use = if nodes.value.is_empty() {
            format!("{} (from {})", target.display(), target.source().as_str())
        } else {
            let shown: Vec<String> = nodes
                .value
                .iter()
                .map(|u| pubsub_hub_launcher::redact_url(u))
                .collect();
            format!(
                "a Redis Cluster through {} (from {})",
                shown.join(", "),
                nodes.source.as_str()
            )
        };
        print!("{}", config.render(&in_use));
        return Ok(());
    }
    let opts = options(target, config);
    tracing::info!(
        host = %opts.host,
        port = opts.port,
        redis = %target.display(),
        token = opts.token.is_some(),
        config_file = ?config.file,
        "starting the dashboard"
    );
    // Installed before the start-up lines are printed (see `shutdown_signal`).
    let stop = pubsub_hub_web::shutdown_signal();
    run_dashboard(opts, stop).await.map_err(|e| classify(&e))
}

/// The dashboard's error as the binary's: the exit code by its kind, and the hints that name
/// this binary's flags (the dashboard's own text speaks of its options only).
fn classify(e: &DashboardError) -> CliError {
    let text = e.to_string();
    match e {
        // Configuration the operator must fix: exit 2, like any other bad setting.
        DashboardError::RedisAddress(_)
        | DashboardError::InvalidLimit(_)
        | DashboardError::InvalidOption { .. } => CliError::usage(text),
        DashboardError::NoTokenForPublicAddress { .. } => CliError::usage(format!(
            "{text}; set a token (--token or PUBSUB_HUB_TOKEN), listen on 127.0.0.1, or pass \
             --insecure-no-auth to do it anyway"
        )),
        DashboardError::Bind { .. } => {
            CliError::failure(format!("{text} (pass --host/--port to choose another)"))
        }
        DashboardError::RedisUnreachable { cluster: true, .. } => CliError::unreachable(text),
        DashboardError::RedisUnreachable { .. } => CliError::unreachable(format!(
            "{text}; or pass --redis-url or --redis-host/--redis-port to use another Redis"
        )),
        DashboardError::Redis { source, .. } if source.is_unavailable() => {
            CliError::unreachable(text)
        }
        _ => CliError::failure(text),
    }
}
