//! The `pubsub-hub` binary as a process, one test binary (each `tests/*.rs` file would link
//! the crate and its dependencies again), against private `redis-server` processes from
//! `pubsub-hub-testkit`. Every wait is bounded by `util::WAIT`; tests synchronise on what
//! Redis reports (`PUBSUB NUMSUB`, `NUMPAT`, `CLIENT LIST`) or on the process' own output,
//! never on sleeps.
//!
//! - `util`: the binary with a clean environment, a running process with its output lines
//!   on channels, the wait bound.
//! - `cli`: publish, subscribe, inspect and serve; flags, environment and the configuration
//!   file; exit codes and one-line errors; signals.
//! - `gateway`: `pubsub-hub gateway`: start-up lines, SSE and the server API, shutdown, the
//!   public-bind refusal, a configured Redis that is down.
//! - `misbehaving_clients`: requests abandoned mid-way leave nothing behind, Ctrl-C during
//!   `subscribe`, the access settings as the binary applies them.

mod cli;
mod gateway;
mod misbehaving_clients;
mod util;
