//! The client subcommands: each is one async function over a [`RedisTarget`].

use std::time::Duration;

use pubsub_hub::{HubConfig, PubSubHub};

use crate::config::RedisTarget;
use crate::error::CliError;

pub mod inspect;
pub mod publish;
pub mod serve;
pub mod subscribe;

/// How long a command waits for Redis to accept a connection. Short, because a person is
/// waiting and "unreachable" should be said quickly.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Connects a hub to `target`; a failure is exit 3 (unreachable) or 2 (bad address).
pub async fn connect(target: &RedisTarget, config: HubConfig) -> Result<PubSubHub, CliError> {
    let client = target.client()?;
    PubSubHub::with_config(client, config.with_connect_timeout(CONNECT_TIMEOUT))
        .await
        .map_err(|e| CliError::from_hub("connect", &target.display(), &e))
}

/// Resolves when the process gets Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
