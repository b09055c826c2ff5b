//! # pubsub_hub
//!
//! A Redis pub/sub hub on [redis-rs](https://docs.rs/redis) and Tokio: publish JSON or raw
//! bytes, keep named subscribers on channels, patterns and shard channels, consume their
//! messages as a stream that reports every gap, and ask Redis what is subscribed. It runs on
//! one Redis server or on a Redis Cluster.
//!
// The example is the file itself, so the crate docs, the README (checked by
// tests/it/readme.rs) and `cargo run --example readme` show one and the same program.
#![doc = concat!("```no_run\n", include_str!("../examples/readme.rs"), "```")]
//!
//! It is the `PubSubHub` helper of the guide "Redis pub/sub with redis-rs", made reliable:
//! consumers read an event stream with exact lag reports instead of polling the ring buffer;
//! payloads are binary-safe; subscriber connections reconnect and resubscribe by themselves
//! and say truthfully whether they are live; every Redis call is time-bounded; counters only
//! go up. [`PubSubHub`] publishes (`PUBLISH`, `SPUBLISH`), keeps the named subscriptions
//! (`SUBSCRIBE`, `PSUBSCRIBE`, `SSUBSCRIBE`), each a [`Subscription`] with a ring buffer of
//! recent messages, answers `PUBSUB CHANNELS / NUMSUB / NUMPAT / SHARDCHANNELS /
//! SHARDNUMSUB` ([`Introspection`]) and counts what was published, delivered and received
//! ([`Stats`]).
//!
//! # Guarantees
//! - Delivery is Redis pub/sub's: at most once. A message published while a subscriber is
//!   disconnected is lost; consumers are told with [`Event::Disconnected`] and
//!   [`Event::Reconnected`], and [`Subscription::status`] says `Reconnecting` meanwhile.
//! - The socket reader never waits for application code. A consumer that falls behind by
//!   more than [`HubConfig::queue_capacity`] events (or [`HubConfig::queue_max_bytes`] of
//!   payload) gets [`Event::Lagged`] with the exact number of messages it missed, where they
//!   were; connection events are never dropped.
//! - Memory is bounded in bytes, also for one huge message: a ring buffer keeps a message
//!   above its budget as a preview ([`Payload::is_preview`]), [`Payload::encoding`] needs no
//!   parsed document, and [`PubSubHub::memory`] counts what is held.
//! - Every Redis command is bounded by [`HubConfig::command_timeout`] (default 2 s).
//! - Every public async function is cancel safe, and its `# Cancel safety` section says what
//!   a dropped future leaves: a `subscribe` dropped at any point leaves no name, no
//!   registration and nothing subscribed on Redis; closing and shutting down do their work
//!   at the first poll.
//! - [`HubConfig`] is checked once, at construction ([`HubConfig::validate`]): a value that
//!   would make a task panic or spin is refused with [`HubError::InvalidConfig`].
//!
//! # Redis Cluster and sharded pub/sub
//! `PubSubHub::cluster` (feature `cluster`) takes node addresses instead of a client. Plain
//! channels and patterns are subscribed on any reachable node, since a PUBLISH on any node
//! is relayed to every node over the cluster bus. Shard channels ([`PubSubHub::ssubscribe`],
//! [`PubSubHub::spublish`], Redis 7+, also on a single server) live on the master owning
//! their hash slot: a shard subscription keeps one connection per master its channels need,
//! subscribes channel by channel (Redis refuses a multi-slot `SSUBSCRIBE`), and follows its
//! channels to their new master after a restart, a failover or a slot migration, with the
//! same [`Event::Disconnected`] / [`Event::Reconnected`] events and status as plain links.
//! Introspection asks every reachable node and merges: channel lists are unions, `NUMSUB`,
//! `NUMPAT` and `SHARDNUMSUB` are sums (each node only counts its own clients).
//!
//! # Features
//! Both are on by default; `default-features = false` leaves them out.
//! - `tls`: `rediss://` URLs, through redis-rs' rustls support with the webpki roots and
//!   ring as the crypto provider. For a private CA, build the client with
//!   `redis::Client::build_with_tls`. Without it, a `rediss://` URL is refused by
//!   `redis::Client::open`. rustls picks ring by itself only while it is the one provider
//!   compiled in: if the application also enables another (aws-lc-rs), it must install
//!   one as the process default before connecting (`CryptoProvider::install_default`).
//! - `cluster`: `PubSubHub::cluster` and the cluster topology, with redis-rs' cluster
//!   client for publishing. Without it, shard channels still work on a single Redis 7
//!   server and [`PubSubHub::is_cluster`] is always false.
//!
//! # Layout
//! - [`hub`] — [`PubSubHub`]: publishing, the registry of named subscriptions (with the
//!   guard that rolls back a dropped `subscribe`), which links serve a subscription, and
//!   the public methods of introspection and statistics, which call the modules below.
//! - [`history`] — durable publications: [`PubSubHub::publish_with_history`] (a capped
//!   Redis Stream per channel plus the live publish, in one Lua script,
//!   [`PUBLISH_SCRIPT`](history::PUBLISH_SCRIPT); concurrent ones of a channel batched into
//!   one call of [`PUBLISH_BATCH_SCRIPT`](history::PUBLISH_BATCH_SCRIPT), within
//!   [`BATCH_MAX_PUBLICATIONS`](history::BATCH_MAX_PUBLICATIONS) and
//!   [`BATCH_MAX_BYTES`](history::BATCH_MAX_BYTES), the queues within
//!   [`QUEUE_MAX_BYTES`](history::QUEUE_MAX_BYTES) at
//!   [`QUEUE_CHARGE_PER_PUBLICATION`](history::QUEUE_CHARGE_PER_PUBLICATION) each) with
//!   its [`HistoryOptions`] and its answer [`DurablePublish`]; [`PubSubHub::history`] ([`HistoryRequest`], [`HistoryPage`],
//!   [`READ_SCRIPT`](history::READ_SCRIPT)); [`PubSubHub::remove_history`]; offsets and
//!   epochs ([`StreamPosition`]), the live envelope ([`LiveEnvelope`]) and the Redis keys
//!   ([`history_keys`](history::history_keys), [`STREAM_KEY_PREFIX`](history::STREAM_KEY_PREFIX),
//!   [`META_KEY_PREFIX`](history::META_KEY_PREFIX)).
//! - [`subscription`] — [`Subscription`] (ring buffer, counters, [`SubscriptionStatus`],
//!   [`TargetKind`], its delivery gaps as [`GapHistory`] of [`Gap`]s), [`Consumer`] and
//!   [`Event`].
//! - [`message`] — [`ReceivedMessage`] and the binary-safe [`Payload`] (whole, or a ring
//!   buffer's preview of [`PAYLOAD_PREVIEW_BYTES`]) with its [`PayloadEncoding`].
//! - [`config`] — [`HubConfig`] and its validation, [`ConnectionMode`], the bound
//!   [`MAX_DURATION`] and the defaults [`DEFAULT_BUFFER_SIZE`],
//!   [`DEFAULT_BUFFER_MAX_BYTES`], [`DEFAULT_QUEUE_CAPACITY`], [`DEFAULT_QUEUE_MAX_BYTES`],
//!   [`DEFAULT_COMMAND_TIMEOUT`], [`DEFAULT_CONNECT_TIMEOUT`], [`DEFAULT_PING_INTERVAL`],
//!   [`DEFAULT_RECONNECT_MIN`], [`DEFAULT_RECONNECT_MAX`], [`DEFAULT_MAX_SUBSCRIPTIONS`],
//!   [`DEFAULT_MAX_TRACKED_CHANNELS`], [`DEFAULT_SHARED_CONNECTIONS`].
//! - [`error`] — [`HubError`].
//! - `stats` (private) — the counters shared by the hub, its links and its subscriptions,
//!   the version watchers wait on, and the snapshots [`Stats`] and [`MemoryUse`].
//! - `introspect` (private) — the `PUBSUB` questions, merged over every node of a cluster,
//!   and their answer [`Introspection`].
//! - `links` (private) — subscriber connections, each owned by one task: the handle, the
//!   commands, one routing table, gap bookkeeping, keep-alive and backoff shared by its two
//!   task loops, `links::plain` (channels and patterns over one connection, to any node of
//!   a cluster: RESP3 whose push sender delivers each message on redis-rs's reader, or
//!   RESP2 read by the task for a server without `HELLO`) and `links::shard` (one RESP3 connection per master owning a subscribed
//!   shard channel, `SSUBSCRIBE` per slot, resubscription on the new owner when Redis ends
//!   a shard subscription or a node goes away).
//! - `topology` (private) — one server or a cluster: where a plain link connects, which
//!   node owns a shard channel, and refreshing that knowledge.
//! - `queue` (private) — a consumer's event queue, bounded in events and bytes: push never
//!   waits, a full queue drops its oldest messages (never connection events) and reports
//!   the count as [`Event::Lagged`] in their place.
//! - `publisher` (private) — the connection for `PUBLISH` and `PUBSUB`: one redis-rs
//!   multiplexed connection, replaced by the next command after it breaks (also when a
//!   reconnect was refused, e.g. a changed password), or the cluster connection with the
//!   hub's view of the cluster.
//! - `cluster` (private) — hash slots and node addresses; with the `cluster` feature, the
//!   hub's view of a Redis Cluster: slot owners (merged from every node's `CLUSTER NODES`
//!   by config epoch), the nodes to ask, and one admin connection per node for
//!   introspection.
//! - `locks` (private) — lock helpers that ignore poisoning.
//!
//! Dependencies point one way: `hub` uses everything below it, and no module imports from
//! `hub` (a subscription reaches its hub through the small `Owner` trait it defines).
#![cfg_attr(docsrs, feature(doc_cfg))]

mod cluster;
pub mod config;
pub mod error;
pub mod history;
pub mod hub;
mod introspect;
mod links;
mod locks;
pub mod message;
mod publisher;
mod queue;
mod stats;
pub mod subscription;
mod topology;

pub use config::{
    ConnectionMode, DEFAULT_BUFFER_MAX_BYTES, DEFAULT_BUFFER_SIZE, DEFAULT_COMMAND_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_SUBSCRIPTIONS, DEFAULT_MAX_TRACKED_CHANNELS,
    DEFAULT_PING_INTERVAL, DEFAULT_QUEUE_CAPACITY, DEFAULT_QUEUE_MAX_BYTES, DEFAULT_RECONNECT_MAX,
    DEFAULT_RECONNECT_MIN, DEFAULT_SHARED_CONNECTIONS, HubConfig, MAX_DURATION,
};
pub use error::HubError;
pub use history::{
    DurablePublish, HistoryOptions, HistoryPage, HistoryRequest, LiveEnvelope, StreamPosition,
};
pub use hub::{Introspection, MemoryUse, PubSubHub, Stats};
pub use message::{PAYLOAD_PREVIEW_BYTES, Payload, PayloadEncoding, ReceivedMessage};
pub use subscription::{
    Consumer, Event, Gap, GapHistory, Subscription, SubscriptionStatus, TargetKind,
};
