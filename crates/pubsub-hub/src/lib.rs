//! # pubsub_hub
//!
//! A Redis pub/sub hub on [redis-rs](https://docs.rs/redis): publish JSON or raw bytes,
//! keep named exact-match, pattern and shard-channel subscribers, each with a ring buffer
//! of recent messages, ask Redis what is subscribed (`PUBSUB CHANNELS / NUMSUB / NUMPAT /
//! SHARDCHANNELS / SHARDNUMSUB`), and count what was published, delivered and received.
//! It runs on one Redis server or on a Redis Cluster.
//!
//! It is the `PubSubHub` helper of the guide "Redis pub/sub with redis-rs", made reliable:
//! consumers read an event stream with exact lag reports instead of polling the ring buffer;
//! payloads are binary-safe; subscriber connections reconnect and resubscribe by themselves
//! and say truthfully whether they are live; every Redis call is time-bounded; counters only
//! go up.
//!
//! ```no_run
//! use pubsub_hub::{PubSubHub, DEFAULT_BUFFER_SIZE, Event};
//! use serde_json::json;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = redis::Client::open("redis://127.0.0.1:6379/")?;
//! let hub = PubSubHub::new(client, DEFAULT_BUFFER_SIZE).await?;
//! let orders = hub.subscribe("orders-listener", vec!["orders:new".into()]).await?;
//! let mut events = orders.consumer();
//! hub.publish("orders:new", &json!({"order_id": 42})).await?;
//! if let Some(Event::Message(m)) = events.recv().await {
//!     println!("{} {}", m.channel, m.payload);
//! }
//! hub.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//! - Delivery is Redis pub/sub's: at most once. A message published while a subscriber is
//!   disconnected is lost; consumers are told with [`Event::Disconnected`] and
//!   [`Event::Reconnected`], and [`Subscription::status`] says `Reconnecting` meanwhile.
//! - The socket reader never waits for application code. A consumer that falls behind by
//!   more than [`HubConfig::queue_capacity`] events gets [`Event::Lagged`] with the exact
//!   number it missed.
//! - Every Redis command is bounded by [`HubConfig::command_timeout`] (default 2 s).
//!
//! # Redis Cluster and sharded pub/sub
//! [`PubSubHub::cluster`] takes node addresses instead of a client. Plain channels and
//! patterns are subscribed on any reachable node, since a PUBLISH on any node is relayed to
//! every node over the cluster bus. Shard channels ([`PubSubHub::ssubscribe`],
//! [`PubSubHub::spublish`], Redis 7+, also on a single server) live on the master owning
//! their hash slot: a shard subscription keeps one connection per master its channels need,
//! subscribes channel by channel (Redis refuses a multi-slot `SSUBSCRIBE`), and follows its
//! channels to their new master after a restart, a failover or a slot migration, with the
//! same [`Event::Disconnected`] / [`Event::Reconnected`] events and status as plain links.
//! Introspection asks every reachable node and merges: channel lists are unions, `NUMSUB`,
//! `NUMPAT` and `SHARDNUMSUB` are sums (each node only counts its own clients).
//!
//! # Layout
//! - [`hub`] — [`PubSubHub`], publishing, the registry of named subscriptions, introspection,
//!   [`Stats`].
//! - [`subscription`] — [`Subscription`] (ring buffer, counters, [`SubscriptionStatus`]),
//!   [`Consumer`] and [`Event`].
//! - [`message`] — [`ReceivedMessage`] and the binary-safe [`Payload`].
//! - [`config`] — [`HubConfig`], [`ConnectionMode`] and the `DEFAULT_*` values.
//! - [`error`] — [`HubError`].
//! - `link` (private) — one Redis subscribe connection owned by one task, with routing,
//!   reference counting, keep-alive PING and reconnect; on a cluster it connects to any
//!   reachable node.
//! - `shard` (private) — shard links: one RESP3 connection per master owning a subscribed
//!   shard channel, `SSUBSCRIBE` per slot, and resubscription on the new owner when Redis
//!   ends a shard subscription or a node goes away.
//! - `queue` (private) — a consumer's bounded event queue: push never waits, a full queue
//!   drops its oldest event and reports the count as [`Event::Lagged`].
//! - `publisher` (private) — the connection for `PUBLISH` and `PUBSUB`: redis-rs's
//!   reconnecting manager, replaced when a reconnect was refused (a changed password), or
//!   the cluster connection.
//! - `cluster` (private) — the hub's view of a Redis Cluster: slot owners (merged from
//!   every node's `CLUSTER NODES` by config epoch), the nodes to ask, and one admin
//!   connection per node for introspection.

mod cluster;
pub mod config;
pub mod error;
pub mod hub;
mod link;
pub mod message;
mod publisher;
mod queue;
mod shard;
pub mod subscription;

pub use config::{
    ConnectionMode, DEFAULT_BUFFER_SIZE, DEFAULT_COMMAND_TIMEOUT, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_SUBSCRIPTIONS, DEFAULT_MAX_TRACKED_CHANNELS, DEFAULT_PING_INTERVAL,
    DEFAULT_QUEUE_CAPACITY, DEFAULT_RECONNECT_MAX, DEFAULT_RECONNECT_MIN,
    DEFAULT_SHARED_CONNECTIONS, HubConfig,
};
pub use error::HubError;
pub use hub::{Introspection, PubSubHub, Stats};
pub use message::{Payload, PayloadEncoding, ReceivedMessage};
pub use subscription::{Consumer, Event, Subscription, SubscriptionStatus, TargetKind};
