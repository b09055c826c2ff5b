//! What tests of the pubsub-hub dashboard read on a real socket: its `/state` document
//! (each call held to [`STATE_DEADLINE`]), the subscribers in it, and the dashboard's own
//! connections to a private Redis. Used by the dashboard's integration tests and by
//! [`crate::soak`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http::request;
use crate::{ADMIN_CLIENT_NAME, RedisServer, WAIT};

/// The dashboard's promise: `/state` answers within this, whatever Redis does.
pub const STATE_DEADLINE: Duration = Duration::from_secs(1);

/// `GET /state` of the dashboard at `addr`, asserting 200 and [`STATE_DEADLINE`].
pub async fn state(addr: SocketAddr) -> Value {
    let reply = request(addr, "GET /state HTTP/1.1\r\nHost: 127.0.0.1\r\n", b"").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        reply.took < STATE_DEADLINE,
        "/state took {:?} (promise: under {STATE_DEADLINE:?})",
        reply.took
    );
    reply.json()
}

/// Polls [`state`] every 20 ms until `f` holds; returns that state. Panics after [`WAIT`]
/// naming `what`.
pub async fn wait_state(addr: SocketAddr, what: &str, mut f: impl FnMut(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let state = state(addr).await;
        if f(&state) {
            return state;
        }
        assert!(
            start.elapsed() < WAIT,
            "timed out after {WAIT:?} waiting until {what}; last state: {state}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The subscription called `name` in a `/state` document.
pub fn sub<'a>(state: &'a Value, name: &str) -> &'a Value {
    state["subscriptions"]
        .as_array()
        .expect("subscriptions is an array")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no subscription {name:?} in {state}"))
}

/// True when every subscriber in a `/state` document is live.
pub fn all_live(state: &Value) -> bool {
    state["subscriptions"]
        .as_array()
        .is_some_and(|subs| subs.iter().all(|s| s["status"]["state"] == "live"))
}

/// True when there are subscribers and every one is reconnecting.
pub fn all_reconnecting(state: &Value) -> bool {
    state["subscriptions"].as_array().is_some_and(|subs| {
        !subs.is_empty() && subs.iter().all(|s| s["status"]["state"] == "reconnecting")
    })
}

/// Connections to `server` other than the kit's admin connection.
pub fn connections(server: &RedisServer) -> usize {
    server
        .client_list()
        .iter()
        .filter(|c| c.field("name") != Some(ADMIN_CLIENT_NAME))
        .count()
}

/// Waits until [`connections`] is `n`; panics after [`WAIT`] with the client list.
pub async fn wait_connections(server: &RedisServer, n: usize) {
    let start = Instant::now();
    loop {
        let now = connections(server);
        if now == n {
            return;
        }
        assert!(
            start.elapsed() < WAIT,
            "timed out waiting for {n} Redis connections (have {now}): {:?}",
            server.client_list()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
