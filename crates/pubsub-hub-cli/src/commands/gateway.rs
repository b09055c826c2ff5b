//! `pubsub-hub gateway`: the WebSocket/SSE gateway of `pubsub_hub_gateway`, standalone.
//!
//! Redis is chosen by the rule `serve` follows ([`super::reach_redis`]): the configured
//! server (or cluster); a private throwaway `redis-server` on a unix socket only when no
//! Redis address is configured and nothing answers at the default one; and a configured
//! server that does not answer yet is waited for (stderr says so, `/readyz` is 503), never
//! replaced.

use std::time::Duration;

use pubsub_hub::{ConnectionMode, HubConfig, PubSubHub};
use pubsub_hub_gateway::Gateway;
use pubsub_hub_launcher::{PrivateRedis, redact_url};

use crate::config::RedisTarget;
use crate::error::CliError;
use crate::settings::Config;

/// Hub subscriptions the gateway's hub may hold: one per channel with local clients.
pub const MAX_GATEWAY_CHANNELS: usize = 100_000;

/// How long the hub's first connection to a Redis that answered may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// With `print_config`, prints the effective configuration and returns. Otherwise serves
/// until Ctrl-C or SIGTERM; every client gets the "shutdown" disconnect first.
pub async fn run(
    target: &RedisTarget,
    config: &Config,
    print_config: bool,
) -> Result<(), CliError> {
    let settings = &config.gateway;
    let nodes = &settings.cluster_nodes.value;
    if print_config {
        let in_use = if nodes.is_empty() {
            format!("{} (from {})", target.display(), target.source().as_str())
        } else {
            let shown: Vec<String> = nodes.iter().map(|u| redact_url(u)).collect();
            format!("a Redis Cluster through {}", shown.join(", "))
        };
        print!("{}", config.render(&in_use));
        return Ok(());
    }
    let mut gateway_config = config.gateway_config()?;
    let host = settings.host.value.clone();
    let bind = if host.contains(':') {
        format!("[{host}]:{}", settings.port.value)
    } else {
        format!("{host}:{}", settings.port.value)
    };
    let listener = tokio::net::TcpListener::bind((host.as_str(), settings.port.value))
        .await
        .map_err(|e| CliError::failure(format!("cannot listen on {bind}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| CliError::failure(format!("cannot listen on {bind}: {e}")))?;
    let has_key = gateway_config.hmac_secret.is_some() || gateway_config.rsa_public_key.is_some();
    if !has_key && !gateway_config.allow_anonymous {
        if !local.ip().is_loopback() {
            return Err(CliError::usage(format!(
                "refusing to serve the gateway on {bind} with neither --hmac-secret nor \
                 --allow-anonymous: anyone who can reach it could subscribe"
            )));
        }
        // On loopback only this machine can connect: anonymous clients are the point.
        gateway_config.allow_anonymous = true;
    }
    // No ring buffers: the gateway reads every message from the consumer stream and keeps
    // none for inspection.
    let hub_config = HubConfig::default()
        .with_buffer_size(0)
        .with_mode(ConnectionMode::Shared {
            connections: settings.shared_connections.value,
        })
        .with_max_subscriptions(MAX_GATEWAY_CHANNELS);
    let mut notes = Vec::new();
    let (hub, embedded) = if nodes.is_empty() {
        connect_single(target, config, hub_config, &mut notes).await?
    } else {
        let hub = PubSubHub::cluster(nodes.clone(), hub_config)
            .await
            .map_err(|e| CliError::from_hub("connect", &nodes.join(", "), &e))?;
        notes.push(format!(
            "Using Redis Cluster through {} (channels are shard channels: SPUBLISH to reach clients)",
            nodes.iter().map(|u| redact_url(u)).collect::<Vec<_>>().join(", ")
        ));
        (hub, None)
    };
    let gateway = match Gateway::new(hub.clone(), gateway_config) {
        Ok(g) => g,
        Err(e) => {
            hub.shutdown().await;
            return Err(CliError::usage(e.to_string()));
        }
    };
    // Installed before the start-up lines are printed (see `shutdown_signal`).
    let stop = pubsub_hub_web::shutdown_signal();
    let shown_host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    println!(
        "pubsub-hub gateway listening on ws://{shown_host}:{}/connection/websocket",
        local.port()
    );
    for note in &notes {
        println!("{note}");
    }
    let served = pubsub_hub_gateway::serve(listener, gateway, stop).await;
    hub.shutdown().await;
    drop(embedded);
    served.map_err(|e| CliError::failure(format!("the gateway failed: {e}")))
}

/// The hub on the Redis [`super::reach_redis`] chooses: connected when it answered, else
/// built to connect when it appears (after a warning on stderr).
async fn connect_single(
    target: &RedisTarget,
    config: &Config,
    hub_config: HubConfig,
    notes: &mut Vec<String>,
) -> Result<(PubSubHub, Option<PrivateRedis>), CliError> {
    let reached = super::reach_redis(target, config).await?;
    notes.extend(reached.private_note());
    let address = match &reached.private {
        Some(_) => reached.addr(),
        None => target.display(),
    };
    notes.push(format!("Using Redis at {address}"));
    let hub = match reached.not_answering_warning() {
        None => {
            PubSubHub::with_config(
                reached.client,
                hub_config.with_connect_timeout(CONNECT_TIMEOUT),
            )
            .await
        }
        Some(warning) => {
            eprintln!("{warning} (/readyz answers 503 until then)");
            PubSubHub::with_config_lazy(reached.client, hub_config)
        }
    }
    .map_err(|e| CliError::from_hub("connect", &address, &e))?;
    Ok((hub, reached.private))
}
