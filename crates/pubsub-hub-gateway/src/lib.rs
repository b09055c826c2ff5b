//! # pubsub_hub_gateway
//!
//! Browsers, phones and services in any language subscribe to Redis channels over
//! WebSocket or server-sent events, speaking Centrifugo's client protocol (version 2, JSON
//! encoding), so its SDKs (`centrifuge` on npm, and the Python, Go, Swift, Java, Dart and
//! .NET ones) work unchanged, reconnects and resubscribes included.
//!
//! A gateway channel is a Redis channel (with an optional prefix): whatever any Redis
//! client `PUBLISH`es there reaches every subscribed client, and what a client or the
//! server API publishes reaches plain Redis subscribers as the raw payload (see
//! [`payload`] for the mapping between bytes and JSON). Every gateway process subscribes
//! each channel once, whatever its number of local clients, so any number of processes on
//! the same Redis form one system.
//!
//! ```no_run
//! use pubsub_hub::{ConnectionMode, HubConfig, PubSubHub};
//! use pubsub_hub_gateway::{Gateway, GatewayConfig, serve};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = redis::Client::open("redis://127.0.0.1:6379/")?;
//! let config = HubConfig::default().with_mode(ConnectionMode::Shared { connections: 4 });
//! let hub = PubSubHub::with_config(client, config).await?;
//! let gateway = Gateway::new(hub, GatewayConfig::default().with_allow_anonymous(true))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! serve(listener, gateway, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! # Endpoints ([`Gateway::router`])
//! - `/connection/websocket`: the bidirectional protocol.
//! - `/connection/uni_sse`: unidirectional server-sent events; the connect request in the
//!   `cf_connect` query parameter (or a POST body), pushes as `data:` events.
//! - `/api/<method>`: the server API (`publish`, `broadcast`, `unsubscribe`, `disconnect`,
//!   `channels`, `info`, `presence`, `presence_stats`), with `X-API-Key` or
//!   `Authorization: apikey <key>`; off without a configured key.
//! - `/healthz`, `/readyz`, `/metrics`.
//!
//! # Guarantees and bounds
//! - Delivery is Redis pub/sub's: at most once. A `subscribe` is answered only once Redis
//!   has confirmed the subscription, so a publication made after the reply is delivered.
//! - When the Redis connection is lost, every subscriber of the affected channels is told:
//!   SDK subscriptions get the "insufficient state" unsubscribe (the SDK subscribes again,
//!   and succeeds once Redis is back); server-side subscriptions and SSE connections get
//!   the "insufficient state" disconnect and reconnect.
//! - Presence ([`presence`]), in namespaces that turn it on, is kept in Redis and seen by
//!   every gateway process; an entry outlives its connection's last refresh by at most
//!   [`GatewayConfig::presence_ttl`], which bounds how long the clients of a process that
//!   died stay listed. With `join_leave`, the next refresh on the channel after they
//!   expire removes them and pushes one `leave` for each on every process (within four
//!   thirds of the expiry), as long as a live connection keeps presence in that channel.
//! - Every client has a write queue bounded in messages and bytes; a client that cannot
//!   keep up is disconnected as "slow" and counted, never slowing anyone else. Every other
//!   bound is in [`GatewayLimits`].
//!
//! # Layout
//! - [`gateway`] — [`Gateway`], its Rust API (`publish`, `disconnect_user`, `channels`,
//!   `shutdown`) and the shared state.
//! - [`config`] — [`GatewayConfig`], channel rules per namespace, [`GatewayLimits`] and the
//!   `DEFAULT_*` values.
//! - [`protocol`] — the wire format: commands, replies, pushes, the frame decoder, error,
//!   unsubscribe and disconnect codes.
//! - [`payload`] — Redis bytes to publication `data` (JSON, text, base64) and back.
//! - [`auth`] — connection and subscription tokens (JWT, HS256/RS256).
//! - `node` (private) — local clients and channels, one hub subscription per channel and
//!   its fan-out task.
//! - `queue` (private) — a client's bounded write queue.
//! - `session` (private) — one connection's protocol state and command handling, shared by
//!   both transports.
//! - `ws` (private) and `sse` (private) — the WebSocket and SSE transports.
//! - `api` (private) — the server HTTP API.
//! - [`server`] — [`Gateway::router`], the health, readiness and metrics routes, the origin
//!   check and [`serve`].
//! - [`features`] — the [`HistoryStore`](features::HistoryStore) and
//!   [`PresenceStore`](features::PresenceStore) traits, and the "not available" stores.
//! - [`history`] — [`RedisHistory`](history::RedisHistory), channel history on the
//!   library's durable publish, and how live publications carry their offsets.
//! - [`presence`] — [`RedisPresence`](presence::RedisPresence): presence in Redis across
//!   processes, its keys and scripts, and the join and leave companion channels.
//! - [`metrics`] — [`GatewayMetrics`] and its Prometheus rendering.
//! - [`error`] — [`GatewayError`].

mod api;
pub mod auth;
pub mod config;
pub mod error;
pub mod features;
pub mod gateway;
pub mod history;
pub mod metrics;
mod node;
pub mod payload;
pub mod presence;
pub mod protocol;
mod queue;
pub mod server;
mod session;
mod sse;
mod ws;

pub use config::{
    ChannelRules, GatewayConfig, GatewayLimits, NamespaceConfig, PublishPolicy, Secret,
    SubscribePolicy,
};
pub use error::GatewayError;
pub use gateway::{Gateway, PublishResult, VERSION};
pub use metrics::GatewayMetrics;
pub use server::serve;
