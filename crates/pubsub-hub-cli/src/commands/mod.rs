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
///
/// The handlers are installed when this is *called*, not when the future is first polled:
/// a signal that arrives after a command has announced itself (the dashboard's start-up
/// lines, `subscribe`'s confirmation) but before its loop first awaits must still stop it
/// cleanly rather than kill it with the default action. Call it before announcing.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt()).ok();
        let terminate = signal(SignalKind::terminate()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(interrupt) => {}
                _ = wait(terminate) => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
