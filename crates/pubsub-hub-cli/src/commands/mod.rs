//! The client subcommands: each is one async function over a [`RedisTarget`].

use std::time::Duration;

use pubsub_hub::{HubConfig, PubSubHub};
use pubsub_hub_launcher::Reached;

use crate::config::RedisTarget;
use crate::error::CliError;
use crate::settings::Config;

pub mod gateway;
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

/// The Redis a long-running subcommand (`serve`, and any other server such as a gateway)
/// uses: the configured target if something answers there; a private throwaway
/// `redis-server` on a unix socket only when no Redis address is configured at all
/// ([`Config::private_redis_allowed`]); otherwise the configured target anyway, with
/// [`Reached::answered`] false, so that the caller starts, says so on stderr
/// ([`Reached::not_answering_warning`]), builds its hub with
/// `PubSubHub::with_config_lazy` and connects when Redis appears. `serve` applies the same
/// rule through `DashboardOptions::embedded_fallback`.
///
/// Keep [`Reached::private`] alive while the client is in use: dropping it stops the
/// private server. A private server that cannot start is exit 3.
///
/// # Cancel safety
///
/// Dropping the future leaves nothing behind: a private server being started is killed
/// once its start finishes.
pub async fn reach_redis(target: &RedisTarget, config: &Config) -> Result<Reached, CliError> {
    let client = target.client()?;
    pubsub_hub_launcher::reach_redis(client, config.private_redis_allowed())
        .await
        .map_err(|e| {
            CliError::unreachable(format!(
                "cannot reach Redis at {}, and the private redis-server did not start: {e}",
                target.display()
            ))
        })
}
