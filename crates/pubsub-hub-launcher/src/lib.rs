//! # pubsub_hub_launcher
//!
//! How pubsub-hub reaches Redis, written once for the dashboard, the command line, the
//! benchmark suite and the test kit:
//!
//! - starting a private `redis-server` process ([`Launch`], [`RedisProcess`],
//!   [`PrivateRedis`]): with the settings every private server shares (no persistence, its
//!   files in its own directory, our child so it dies with us), waiting until the process
//!   *itself* answers, killing it on drop;
//! - the choice between the configured Redis and a private one ([`reach_redis`]): a private
//!   server only when the user configured no Redis at all, and then on a unix socket that
//!   only this user can reach;
//! - building a redis-rs client from a URL and an optional CA file ([`open_client`]), and
//!   showing addresses and URLs without their secrets ([`redact_url`], [`display_addr`]).
//!
//! The `tls` feature (on by default) adds `rediss://` clients and CA files.
//!
//! It depends on redis, tokio and tempfile only, so the published dashboard can use it; the
//! test kit (not published) builds its servers on [`Launch`].
//!
//! ```no_run
//! use pubsub_hub_launcher::PrivateRedis;
//!
//! let server = PrivateRedis::start_unix("redis-server")?;
//! let client = redis::Client::open(server.url())?;
//! # drop(client);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//! - [`process`]: [`Launch`] (what to start), [`RedisProcess`] (the running child),
//!   [`Listen`] (TCP port or unix socket), [`LaunchError`], and the readiness probe.
//! - [`private`]: [`PrivateRedis`], a server in a 0700 temporary directory on a unix socket
//!   or a free loopback port; [`free_loopback_port`], [`server_version`].
//! - [`reach`]: [`reach_redis`], the configured-or-private rule, and [`Reached`].
//! - [`address`]: [`open_client`], [`check_url`], [`ClientError`], [`redact_url`],
//!   [`display_addr`], [`host_port_url`].

pub mod address;
pub mod private;
pub mod process;
pub mod reach;

pub use address::{
    ClientError, bracket_ipv6, check_url, display_addr, host_port_url, open_client, redact_url,
};
pub use private::{PrivateRedis, free_loopback_port, server_version};
pub use process::{Launch, LaunchError, Listen, RedisProcess};
pub use reach::{Reached, answers, reach_redis};

/// The `redis-server` binary looked up on `PATH` when no other is given.
pub const DEFAULT_BINARY: &str = "redis-server";
