//! The gateway driven by real clients: the `centrifuge` JS SDK in Node (over the `ws`
//! package) and, through the SDK's browser bundle and a native `EventSource`, in Debian's
//! headless Chromium driven by playwright-core. The scenarios live in `tests/js/`; each
//! test here starts a private Redis (pubsub-hub-testkit) and in-process gateways on
//! `127.0.0.1:0`, runs one scenario as a `node` process, and answers the scenario's
//! `control:` requests (run `redis-cli`, restart the gateway or Redis, publish durably to
//! a history channel, kill a gateway process), which a client cannot do to itself.
//!
//! Needs `node` with npm and `/usr/bin/chromium` (or `CHROMIUM_PATH`), which
//! `scripts/setup` installs. They fail rather than skip when those are missing: a client
//! that never runs is a client that is never tested.
//!
//! # Layout
//!
//! - `support`: the node runner and its control protocol, the gateways under test (in
//!   this process, or each in a process of its own that can be killed), the durable
//!   publishers, the `redis-cli` helpers.
//! - `sdk`: SDK scenarios in Node: basics (subscribe, receive, publish rules, unsubscribe),
//!   token expiry and refresh, gateway restart, Redis restart, two gateways on one Redis;
//!   history and recovery (1,000 missed, 100 reconnects under a steady 1,000/s, a Redis
//!   restart without persistence, kill -9 of one of two gateway processes).
//! - `browser`: the SDK's browser bundle and native `EventSource` on `uni_sse` in
//!   headless Chromium, and an `EventSource` resuming a history channel through the
//!   browser's own `Last-Event-ID` retry.

mod browser;
mod sdk;
mod support;
