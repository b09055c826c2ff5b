//! The dashboard's integration tests, one binary (each `tests/*.rs` file would link the
//! crate and its dependencies again), against private `redis-server` processes and
//! clusters from `pubsub-hub-testkit`. Every wait is bounded by `util::WAIT`.
//!
//! - `util`: the dashboard through its router and on a real socket, each on a private Redis
//!   with the defaults seeded; the `/state` readers.
//! - `routes`: the HTTP contract (`docs/http-api.md`) route by route, through the router.
//! - `serve`: `/events` on a socket, push latency and coalescing, graceful shutdown,
//!   `Dashboard::start` and its Redis choice.
//! - `scale`: shard channels, the shared-connection mode and a Redis Cluster.
//! - `access`: the token, cross-site and host refusals, security headers, TLS and ACL
//!   credentials, no secret in any output.
//! - `bad_input`, `props`: hostile and odd requests on every route, property tests of the
//!   form parsing.
//! - `bounds`, `slow_readers`, `huge_messages`: a stalled Redis, long channel lists, slow or
//!   stalled clients, memory with huge messages.
//! - `faults`: Redis going away, dropping, stalling or refusing us, with `/state` timed
//!   throughout.
//! - `operations`: `/metrics`, `/readyz`, `/openapi.json` against live answers, request logs.
//! - `soak`: ten seconds of the test kit's soak (`pubsub_hub_testkit::soak`).
//! - `deltas`: `/state` built once per hub version, `/events` deltas that apply to the state
//!   sent before and match their schema.
//! - `browser`: the page in headless Chromium (`tests/browser/dashboard.test.mjs`), and the
//!   page after a hundred deltas against one built from fresh `/state` reads
//!   (`tests/browser/deltas.test.mjs`).

mod access;
mod bad_input;
mod bounds;
mod browser;
mod deltas;
mod faults;
mod huge_messages;
mod operations;
mod props;
mod routes;
mod scale;
mod serve;
mod slow_readers;
mod soak;
mod util;
