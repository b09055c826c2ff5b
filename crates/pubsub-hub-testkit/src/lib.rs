//! Test kit for pubsub-hub: private `redis-server` processes and real Redis
//! Clusters on free loopback ports, plus polling helpers with timeouts.
//!
//! Integration tests of the hub need a Redis they fully own: one they can
//! kill, restart on the same port, reconfigure (`CONFIG SET`), fill up or
//! watch (`CLIENT LIST`, `PUBSUB NUMSUB`) without disturbing anything else
//! on the machine. This crate starts such servers as child processes of the
//! test, on `127.0.0.1` only, on ports chosen to be free (never 6379), each in
//! its own temporary directory, and kills them when they are dropped, also
//! when a test panics. Every wait has a timeout, so no test can hang on it.
//!
//! `redis-server` must be on `PATH` (`apt-get install redis-server`).
//!
//! # Items
//!
//! - [`RedisServer`]: one private server.
//!   - Lifecycle: [`start`](RedisServer::start),
//!     [`start_with_args`](RedisServer::start_with_args) (e.g.
//!     `--requirepass`, `--client-output-buffer-limit`),
//!     [`stop`](RedisServer::stop) (SIGKILL, waits until the port refuses
//!     connections), [`restart`](RedisServer::restart) /
//!     [`start_again`](RedisServer::start_again) (same port, same arguments,
//!     empty data set), [`is_running`](RedisServer::is_running).
//!   - Addresses: [`port`](RedisServer::port), [`host`](RedisServer::host),
//!     [`addr`](RedisServer::addr), [`url`](RedisServer::url) (with the
//!     password, if any), [`client`](RedisServer::client),
//!     [`connection`](RedisServer::connection).
//!   - Admin commands on a cached connection named [`ADMIN_CLIENT_NAME`]:
//!     [`cmd`](RedisServer::cmd), [`try_cmd`](RedisServer::try_cmd),
//!     [`info`](RedisServer::info), [`client_list`](RedisServer::client_list)
//!     (as [`ClientInfo`]), [`numsub`](RedisServer::numsub),
//!     [`numpat`](RedisServer::numpat), [`publish`](RedisServer::publish),
//!     [`kill_pubsub_clients`](RedisServer::kill_pubsub_clients).
//!   - Waiting: [`wait_until`](RedisServer::wait_until),
//!     [`wait_numsub`](RedisServer::wait_numsub),
//!     [`wait_numpat`](RedisServer::wait_numpat) (panic messages quote the
//!     server log).
//!   - Diagnostics: [`log`](RedisServer::log),
//!     [`log_tail`](RedisServer::log_tail), [`log_path`](RedisServer::log_path),
//!     [`dir`](RedisServer::dir), [`pid`](RedisServer::pid).
//! - [`ClientInfo`]: one parsed `CLIENT LIST` entry.
//! - [`RedisCluster`]: a real cluster of `RedisServer` nodes
//!   ([`start`](RedisCluster::start), [`nodes`](RedisCluster::nodes),
//!   [`node_urls`](RedisCluster::node_urls),
//!   [`cluster_client`](RedisCluster::cluster_client),
//!   [`master_ports`](RedisCluster::master_ports),
//!   [`replica_ports`](RedisCluster::replica_ports),
//!   [`port_for_slot`](RedisCluster::port_for_slot),
//!   [`slot_for_key`](RedisCluster::slot_for_key),
//!   [`key_for_slot`](RedisCluster::key_for_slot),
//!   [`stop_node`](RedisCluster::stop_node),
//!   [`start_node`](RedisCluster::start_node),
//!   [`failover`](RedisCluster::failover),
//!   [`wait_healthy`](RedisCluster::wait_healthy)), and [`CLUSTER_SLOTS`].
//! - [`TlsRedisServer`]: a private server that also listens for TLS, with a throwaway CA
//!   made by the `openssl` command ([`start`](TlsRedisServer::start),
//!   [`tls_url`](TlsRedisServer::tls_url), [`ca_cert_pem`](TlsRedisServer::ca_cert_pem),
//!   [`ca_cert_path`](TlsRedisServer::ca_cert_path), [`server`](TlsRedisServer::server)).
//! - [`wait_until`] and [`wait_until_async`]: poll a condition every ~10 ms,
//!   panic after a timeout.
//! - For the dashboard on a real socket: [`http`], a minimal HTTP/1.1 client
//!   ([`request`](http::request), [`request_from`](http::request_from), [`Reply`](http::Reply));
//!   [`dashboard`], what its tests read (`/state` held to
//!   [`STATE_DEADLINE`](dashboard::STATE_DEADLINE), subscribers in it, its Redis
//!   connections); and [`soak`], the bounded churn-and-restarts run with its account of
//!   every message, shared by the dashboard's test suite and its `soak` example.
//! - For the real JavaScript clients (the `centrifuge` SDK, Chromium through
//!   `playwright-core`): [`node`], which installs a test package's npm dependencies once per
//!   process ([`npm_ci`](node::npm_ci)) and runs a scenario, answering its `control:`
//!   requests ([`run_node`](node::run_node)).
//! - [`WAIT`]: the bound on each wait of those three modules, which the dashboard's
//!   tests use too.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use pubsub_hub_testkit::RedisServer;
//!
//! let mut server = RedisServer::start();
//! let mut sub = server.connection();
//! sub.as_pubsub().subscribe("news").unwrap();
//! server.wait_numsub("news", 1, Duration::from_secs(5));
//! assert_eq!(server.publish("news", b"hello"), 1);
//! server.restart(); // same port, empty data set, subscribers disconnected
//! ```
//!
//! # Notes
//!
//! - Ports are drawn outside the kernel's ephemeral range, checked by
//!   binding, and reserved process-wide until the server is dropped; a port
//!   lost to another process between the check and redis-server's bind is
//!   detected (bind failure, or a different `process_id` answering) and a new
//!   one is tried.
//! - Each process is started through `pubsub_hub_launcher::Launch`, the one
//!   `redis-server` launcher the dashboard's private server and the bench use
//!   too; the kit adds the port reservation, restarts on the same port, the
//!   watchdog and the admin helpers.
//! - Servers run with `--save "" --appendonly no --enable-debug-command local`
//!   and their log in their temporary directory.
//! - Connections handed out by the kit have 10 s read/write timeouts.
//! - Do not keep a server in a `static`: statics are never dropped. (A small
//!   watchdog still kills it within ~1 s of the test process exiting.)

mod cluster;
pub mod dashboard;
pub mod http;
pub mod node;
mod ports;
mod server;
pub mod soak;
mod tls;
mod wait;

use std::time::Duration;

pub use cluster::{CLUSTER_SLOTS, RedisCluster};
pub use server::{ADMIN_CLIENT_NAME, ClientInfo, RedisServer};
pub use tls::TlsRedisServer;
pub use wait::{
    assert_exit_code, child_output, run_to_exit, stderr_text, stdout_text, wait_until,
    wait_until_async,
};

/// Upper bound for any single wait of [`http`], [`dashboard`] and [`soak`].
pub const WAIT: Duration = Duration::from_secs(15);
