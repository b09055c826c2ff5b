//! The test kit's own tests, one binary, against real `redis-server` processes.
//!
//! - `util`: the wait bound.
//! - `server`: [`RedisServer`](pubsub_hub_testkit::RedisServer): start, stop, restart on the
//!   same port, passwords and arguments, admin commands, cleanup on drop and on panic, and
//!   the polling helpers with their timeouts.
//! - `cluster`: [`RedisCluster`](pubsub_hub_testkit::RedisCluster): three masters, health,
//!   automatic and manual failover, replicas with a password.

mod cluster;
mod server;
mod util;
