//! Helpers shared by the integration tests: hubs on private servers and bounded waits.

use std::sync::Arc;
use std::time::Duration;

use pubsub_hub::{Consumer, Event, HubConfig, PubSubHub, ReceivedMessage};
#[cfg(feature = "cluster")]
use pubsub_hub_testkit::RedisCluster;
use pubsub_hub_testkit::RedisServer;

/// Upper bound for any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// A hub on `server` with fast reconnects, so recovery tests finish quickly.
pub async fn hub(server: &RedisServer) -> PubSubHub {
    hub_with(server, HubConfig::default()).await
}

/// A hub on `server` with `config` plus test-friendly timings.
pub async fn hub_with(server: &RedisServer, config: HubConfig) -> PubSubHub {
    let config = config
        .with_reconnect_backoff(Duration::from_millis(20), Duration::from_millis(300))
        .with_ping_interval(Duration::from_millis(500));
    PubSubHub::with_config(server.client(), config)
        .await
        .expect("hub connects to the private server")
}

/// A hub on `server` that logs in as ACL user `app` with `password`, allowed the channels
/// `channel_rule` (`&*` for all), with `config` plus test-friendly timings.
pub async fn acl_hub(
    server: &RedisServer,
    password: &str,
    channel_rule: &str,
    config: HubConfig,
) -> PubSubHub {
    let pass = format!(">{password}");
    server.cmd(&[
        "ACL",
        "SETUSER",
        "app",
        "on",
        &pass,
        "~*",
        channel_rule,
        "+@all",
    ]);
    let url = format!("redis://app:{password}@127.0.0.1:{}/", server.port());
    let config = config
        .with_reconnect_backoff(Duration::from_millis(20), Duration::from_millis(300))
        .with_ping_interval(Duration::from_millis(500));
    PubSubHub::with_config(redis::Client::open(url).expect("a loopback URL"), config)
        .await
        .expect("hub connects as the ACL user")
}

/// A hub on `cluster` (seeded with every node) with `config` plus test-friendly timings.
#[cfg(feature = "cluster")]
pub async fn cluster_hub(cluster: &RedisCluster, config: HubConfig) -> PubSubHub {
    let config = config
        .with_reconnect_backoff(Duration::from_millis(20), Duration::from_millis(300))
        .with_ping_interval(Duration::from_millis(500));
    PubSubHub::cluster(cluster.node_urls(), config)
        .await
        .expect("hub connects to the private cluster")
}

/// The next event, failing the test after `WAIT`.
pub async fn next_event(consumer: &mut Consumer) -> Event {
    tokio::time::timeout(WAIT, consumer.recv())
        .await
        .expect("an event within the time limit")
        .expect("the consumer is still open")
}

/// The next message, skipping connection events; fails after `WAIT`.
pub async fn next_message(consumer: &mut Consumer) -> Arc<ReceivedMessage> {
    loop {
        if let Event::Message(m) = next_event(consumer).await {
            return m;
        }
    }
}

/// The next connection event (`Disconnected`, `Reconnected`, `Lagged`), skipping messages;
/// fails after `WAIT` per event.
pub async fn next_connection_event(consumer: &mut Consumer) -> Event {
    loop {
        match next_event(consumer).await {
            Event::Message(_) => continue,
            other => return other,
        }
    }
}

/// Polls an async condition every 10 ms until it holds, failing after `WAIT`.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until Redis holds one client's command: a script call postponed by
/// `CLIENT PAUSE ... WRITE` (`INFO clients` counts it among `blocked_clients`).
pub async fn one_call_held(server: &RedisServer) {
    eventually("a script call is held by the pause", || {
        let held = server.info("clients").contains("blocked_clients:1");
        async move { held }
    })
    .await;
}

/// Connections the server has, excluding `CLIENT LIST`'s own admin connection.
pub fn client_count(server: &RedisServer) -> usize {
    server
        .client_list()
        .iter()
        .filter(|c| c.cmd != "client|list" && c.cmd != "client")
        .count()
}
