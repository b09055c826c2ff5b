//! The connection the hub publishes and asks `PUBSUB` through.
//!
//! On one server it is redis-rs's reconnecting `ConnectionManager`, wrapped so that it also
//! recovers from a reconnect that Redis refused (see [`ServerPublisher`]); on a cluster it is
//! redis-rs's cluster connection, which follows `MOVED` and refreshes slots itself.

use std::future::Future;
use std::sync::Arc;

use arc_swap::ArcSwap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;

/// The publishing connection. The hub holds it in an `ArcSwapOption`, so taking it for a
/// call costs no lock; each call then works on its own clone of the connection handle,
/// because redis-rs's commands take `&mut`.
// One per hub, behind an `Arc`: the size of the server variant (a `redis::Client` inside)
// costs nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Publisher {
    Server(ServerPublisher),
    Cluster(ClusterConnection),
}

impl Publisher {
    /// Runs one command and decodes its reply.
    pub(crate) async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        match self {
            Publisher::Server(server) => {
                server
                    .run(|mut conn| async move { cmd.query_async(&mut conn).await })
                    .await
            }
            Publisher::Cluster(conn) => cmd.query_async(&mut conn.clone()).await,
        }
    }
}

/// A `ConnectionManager` that is replaced when it can no longer recover by itself.
///
/// redis-rs 1.8's manager reconnects after an I/O error only. If the reconnect is refused
/// during the handshake (the password or ACL user changed), the failed attempt stays the
/// manager's answer to every later command, even after Redis accepts us again. So when a
/// command fails that way, this wrapper builds a fresh manager from the same client and
/// configuration and retries the command once on it.
pub(crate) struct ServerPublisher {
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// The manager in use and its generation; the generation tells a caller whether the
    /// manager it saw fail has already been replaced by someone else.
    current: ArcSwap<(u64, ConnectionManager)>,
    /// Held while a replacement is being built, so concurrent failures build only one.
    replacing: tokio::sync::Mutex<()>,
}

impl ServerPublisher {
    /// Connects the first manager. The caller bounds the time.
    pub(crate) async fn connect(
        client: redis::Client,
        config: ConnectionManagerConfig,
    ) -> redis::RedisResult<Self> {
        let manager = client
            .get_connection_manager_with_config(config.clone())
            .await?;
        Ok(ServerPublisher {
            client,
            config,
            current: ArcSwap::from_pointee((0, manager)),
            replacing: tokio::sync::Mutex::new(()),
        })
    }

    /// Runs `call` on the current manager; if it fails because the manager is stuck on a
    /// refused reconnect, runs it once more on a fresh manager. The caller bounds the time.
    pub(crate) async fn run<T, F, Fut>(&self, call: F) -> redis::RedisResult<T>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let (generation, manager) = {
            let current = self.current.load();
            (current.0, current.1.clone())
        };
        match call(manager).await {
            Err(e) if is_refused_handshake(&e) => {
                let fresh = self.replace(generation).await?;
                call(fresh).await
            }
            result => result,
        }
    }

    /// Replaces the manager of `generation` by a fresh one, unless someone already did.
    async fn replace(&self, generation: u64) -> redis::RedisResult<ConnectionManager> {
        let _building = self.replacing.lock().await;
        {
            let current = self.current.load();
            if current.0 != generation {
                return Ok(current.1.clone());
            }
        }
        let fresh = self
            .client
            .get_connection_manager_with_config(self.config.clone())
            .await?;
        self.current
            .store(Arc::new((generation + 1, fresh.clone())));
        tracing::info!("publishing connection replaced after a refused reconnect");
        Ok(fresh)
    }
}

/// True for the errors a connection handshake ends with when Redis refuses it: redis-rs
/// reports a refused `AUTH` as `AuthenticationFailed` (and a refused `HELLO ... AUTH` as
/// `WRONGPASS`, a command on a connection that never authenticated as `NOAUTH`), yet its
/// manager only reconnects after I/O errors. In each case the command was never executed,
/// so running it again cannot publish twice; any other error (a reply that did not parse,
/// `NOPERM`, a wrong type) may come after Redis executed it and is returned as it is.
fn is_refused_handshake(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH"))
}
