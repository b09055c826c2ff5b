//! The connection the hub publishes and asks `PUBSUB` through.
//!
//! On one server it is a redis-rs `MultiplexedConnection` that the hub replaces when it
//! breaks (see [`ServerPublisher`]); on a cluster it is
//! redis-rs's cluster connection, which follows `MOVED` and refreshes slots itself, next to
//! the hub's own cluster view for what that connection cannot do (route `SPUBLISH` by the
//! view's owners, ask every node).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::AsyncConnectionConfig;
use redis::aio::{ConnectionLike, MultiplexedConnection};
#[cfg(feature = "cluster")]
use redis::cluster_async::ClusterConnection;
#[cfg(feature = "cluster")]
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

#[cfg(feature = "cluster")]
use crate::cluster::{ClusterView, slot_of};
use crate::error::{HubError, bounded};

/// The publishing connection. The hub holds it in an `ArcSwapOption`, so taking it for a
/// call costs no lock; each call then works on its own clone of the connection handle,
/// because redis-rs's commands take `&mut`.
///
/// Its two variants are the two kinds of connection redis-rs has, not a second description
/// of the deployment: the hub's [`Topology`](crate::topology::Topology) is that, and a
/// cluster publisher shares its view.
// One per hub, behind an `Arc`: the size of the server variant (a `redis::Client` inside)
// costs nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Publisher {
    Server(ServerPublisher),
    #[cfg(feature = "cluster")]
    Cluster {
        conn: ClusterConnection,
        /// The hub's topology view: where `SPUBLISH` goes, and which nodes `ask` asks.
        view: Arc<ClusterView>,
    },
}

impl Publisher {
    /// Runs one command and decodes its reply. The caller bounds the time.
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
            #[cfg(feature = "cluster")]
            Publisher::Cluster { conn, .. } => cmd.query_async(&mut conn.clone()).await,
        }
    }

    /// `PUBLISH` or `SPUBLISH` (`command`) of `payload` to `channel`, bounded by `timeout`;
    /// Redis' delivered count.
    ///
    /// On one server with a working connection, the bound is the connection's own response
    /// time-out (the hub's `command_timeout`, set when it was opened): the call arms no timer
    /// of its own and clones one connection handle, as a raw redis-rs caller does. Only a
    /// call that must (re)connect first is bounded by a timer here.
    pub(crate) async fn publish(
        &self,
        command: &'static str,
        channel: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<i64, HubError> {
        let mut cmd = redis::cmd(command);
        cmd.arg(channel).arg(payload);
        #[cfg(feature = "cluster")]
        if let Publisher::Cluster { conn, view } = self
            && command == "SPUBLISH"
            && let Some(addr) = view.owner(slot_of(channel.as_bytes()))
        {
            // SPUBLISH goes to the master our view names. redis-rs's own slot map can stay
            // stale after a graceful failover: the demoted master, now a replica, still
            // takes SPUBLISH (and relays it within its shard) without a MOVED, but Redis
            // then counts only that replica's subscribers.
            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: addr.host,
                port: addr.port,
            });
            let mut conn = conn.clone();
            return bounded(command, timeout, async {
                let value = conn.route_command(cmd, route).await?;
                Ok(redis::from_redis_value(value)?)
            })
            .await;
        }
        if let Publisher::Server(server) = self
            && let Some(live) = server.live()
        {
            let mut conn = live.conn.clone();
            let result = cmd.query_async(&mut conn).await;
            server.check(live.generation, &result);
            return result.map_err(|e| {
                if e.is_timeout() {
                    HubError::Timeout {
                        operation: command,
                        after: timeout,
                    }
                } else {
                    HubError::from(e)
                }
            });
        }
        bounded(command, timeout, self.query(&cmd)).await
    }

    /// Runs `pipe` (`count` commands) on the server, or on every reachable node of the
    /// cluster at once; one list of replies per node, server errors included as values.
    /// Bounded by `timeout` as a whole.
    pub(crate) async fn ask(
        &self,
        operation: &'static str,
        pipe: &redis::Pipeline,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<Vec<redis::Value>>, HubError> {
        let replies = match self {
            #[cfg(feature = "cluster")]
            Publisher::Cluster { view, .. } => {
                match tokio::time::timeout(timeout, view.on_every_node(operation, pipe, count))
                    .await
                {
                    Ok(result) => result?.into_iter().map(|(_, v)| v).collect(),
                    Err(_) => {
                        return Err(HubError::Timeout {
                            operation,
                            after: timeout,
                        });
                    }
                }
            }
            Publisher::Server(server) => {
                let call = server
                    .run(|mut conn| async move { conn.req_packed_commands(pipe, 0, count).await });
                vec![bounded(operation, timeout, call).await?]
            }
        };
        if replies.iter().any(|r| r.len() != count) {
            return Err(HubError::Redis(redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "wrong number of replies to a PUBSUB pipeline",
            ))));
        }
        Ok(replies)
    }
}

/// One multiplexed connection to the server, replaced when it breaks.
///
/// redis-rs's `ConnectionManager` does this too, but every command through it clones the
/// manager, loads and awaits its shared connection future and clones the connection out of
/// it; and redis-rs 1.8's manager never recovers from a reconnect that Redis refused during
/// the handshake (a changed password or ACL user): the failed attempt stays its answer to
/// every later command. Here a command clones the current connection and runs on it. A
/// connection is dropped as soon as a command on it fails in a way that leaves it unusable
/// (a closed socket fails the next command at once), and the next command opens a new one:
/// one attempt per command at most, concurrent commands sharing it, and a refused attempt
/// is simply tried again by the next command.
pub(crate) struct ServerPublisher {
    client: redis::Client,
    slot: Arc<Slot>,
    /// Connection and response time-outs of every connection opened.
    timeouts: (Duration, Duration),
    /// Held while a connection is being opened, so concurrent commands open only one.
    connecting: tokio::sync::Mutex<()>,
}

/// The connection in use and the generation counter.
#[derive(Default)]
struct Slot {
    current: ArcSwapOption<Live>,
    next_generation: AtomicU64,
}

/// A working connection and its generation, which tells a failed command whether the
/// connection it used is still the current one.
pub(crate) struct Live {
    generation: u64,
    conn: MultiplexedConnection,
}

impl Slot {
    /// Forgets connection `generation` if it is still the current one.
    fn clear(&self, generation: u64) {
        let current = self.current.load();
        if let Some(live) = current.as_ref()
            && live.generation == generation
        {
            self.current.compare_and_swap(&current, None);
        }
    }
}

impl ServerPublisher {
    /// Connects the first connection. The caller bounds the time.
    pub(crate) async fn connect(
        client: redis::Client,
        timeouts: (Duration, Duration),
    ) -> redis::RedisResult<Self> {
        let publisher = Self::lazy(client, timeouts);
        publisher.open().await?;
        Ok(publisher)
    }

    /// A publisher without a connection yet: the first command opens one. For a hub that
    /// must exist before Redis answers.
    pub(crate) fn lazy(client: redis::Client, timeouts: (Duration, Duration)) -> Self {
        ServerPublisher {
            client,
            slot: Arc::default(),
            timeouts,
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    /// The current connection, if there is one that has not broken.
    fn live(&self) -> Option<Arc<Live>> {
        self.slot.current.load_full()
    }

    /// Drops connection `generation` if `result` says it is unusable.
    fn check<T>(&self, generation: u64, result: &redis::RedisResult<T>) {
        if let Err(e) = result
            && (e.is_unrecoverable_error() || e.is_connection_dropped() || e.is_io_error())
        {
            self.slot.clear(generation);
        }
    }

    /// The current connection, or a new one (one attempt, shared by concurrent callers).
    /// The caller bounds the time.
    async fn open(&self) -> redis::RedisResult<Arc<Live>> {
        if let Some(live) = self.live() {
            return Ok(live);
        }
        let _opening = self.connecting.lock().await;
        if let Some(live) = self.live() {
            return Ok(live);
        }
        let generation = self.slot.next_generation.fetch_add(1, Ordering::Relaxed);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeouts.0))
            .set_response_timeout(Some(self.timeouts.1));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let live = Arc::new(Live { generation, conn });
        self.slot.current.store(Some(Arc::clone(&live)));
        if generation > 0 {
            tracing::info!("publishing connection re-established");
        }
        Ok(live)
    }

    /// Runs `call` on the current connection, opening one first if there is none. The
    /// caller bounds the time.
    pub(crate) async fn run<T, F, Fut>(&self, call: F) -> redis::RedisResult<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let live = self.open().await?;
        let result = call(live.conn.clone()).await;
        self.check(live.generation, &result);
        result
    }
}
