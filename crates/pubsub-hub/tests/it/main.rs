//! The library's integration tests, one binary (each `tests/*.rs` file would link the
//! crate and its dependencies again): every module runs against private `redis-server`
//! processes and clusters from `pubsub-hub-testkit`.
//!
//! - `util`: hubs on private servers and the bounded waits every module uses.
//! - `delivery`, `shared`, `shard`, `reconnect`: publishing and receiving in each connection
//!   mode, shard channels on one server, recovery after restarts and refusals.
//! - `cancel`: every public async function polled N times and dropped, with the invariants
//!   checked on the real server after each drop.
//! - `cluster`: the same on a three-master Redis Cluster (feature `cluster`).
//! - `history`: durable publications (offsets, epochs, the capped stream, reads, removal,
//!   batches of concurrent publications).
//! - `features`: TLS with a private CA, and what a build without the default features does.
//! - `guide_example`, `readme`: the guide's program runs unchanged; the READMEs show the
//!   compiled example.

mod cancel;
mod cluster;
mod delivery;
mod features;
mod guide_example;
mod history;
mod readme;
mod reconnect;
mod shard;
mod shared;
mod util;
