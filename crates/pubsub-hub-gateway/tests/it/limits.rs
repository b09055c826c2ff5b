//! Every configured bound: write queue (slow clients), channels per connection, message
//! size, command rate, time to connect, connection count.

use std::time::Duration;

use pubsub_hub_gateway::GatewayLimits;
use serde_json::json;

use crate::support::*;

fn limits(f: impl FnOnce(&mut GatewayLimits)) -> GatewayLimits {
    let mut l = GatewayLimits::default();
    f(&mut l);
    l
}

#[tokio::test]
async fn a_client_that_does_not_read_is_disconnected_as_slow_and_never_slows_the_others() {
    let config = base_config().with_limits(limits(|l| {
        l.write_queue_messages = 1000;
        l.write_queue_bytes = 2 * 1024 * 1024;
    }));
    let gw = TestGateway::start(config).await;
    let mut fast = gw.client().await;
    let mut slow = gw.client().await;
    fast.subscribe("flood").await;
    slow.subscribe("flood").await;
    // The fast reader drains concurrently; the slow one never reads, so once the socket
    // buffers are full its queue overflows.
    let reader = tokio::spawn(async move {
        let mut got = 0u32;
        while got < 5000 {
            let push = fast.push().await;
            assert_eq!(push["pub"]["data"]["i"], json!(got));
            got += 1;
        }
        fast
    });
    let payload = "x".repeat(4000);
    let mut conn = gw.redis_conn().await;
    for i in 0..5000u32 {
        let message = json!({"i": i, "pad": payload}).to_string();
        let _: i64 = redis::cmd("PUBLISH")
            .arg("flood")
            .arg(message)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let mut fast = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the fast client got every message in time")
        .unwrap();
    assert_eq!(gw.metric("pubsub_hub_gateway_slow_disconnects_total"), 1);
    // The slow one's connection is gone; whatever it still reads ends in a close.
    let closed = slow.closed().await;
    assert!(closed.code == 3008 || closed.code == 0, "{closed:?}");
    assert_eq!(fast.subscribe("still-ok").await["subscribe"], json!({}));
    pubsub_hub_testkit::wait_until_async(WAIT, "the slow client unregistered", || async {
        gw.gateway.connection_count() == 1
    })
    .await;
}

#[tokio::test]
async fn messages_larger_than_the_socket_buffers_pass_and_the_queue_bound_still_holds() {
    // A connection reads in small steps and its output buffer is bounded by the write
    // queue's byte bound: a command several reads long, and a publication just under the
    // byte bound, arrive whole; one over it cannot be queued, and the client is slow.
    let config = base_config().with_limits(limits(|l| {
        l.write_queue_bytes = 256 * 1024;
        l.max_message_bytes = 64 * 1024;
    }));
    let gw = TestGateway::start(config).await;
    let mut c = gw.client().await;
    let pad = "n".repeat(16 * 1024);
    let reply = c
        .call("subscribe", json!({"channel": "big", "pad": pad}))
        .await;
    assert_eq!(reply["subscribe"], json!({}), "{reply}");
    let under = json!({"pad": "x".repeat(250 * 1024)}).to_string();
    assert_eq!(gw.redis_publish("big", under.as_bytes()).await, 1);
    let push = c.push().await;
    assert_eq!(
        push["pub"]["data"]["pad"].as_str().map(str::len),
        Some(250 * 1024)
    );
    let over = json!({"pad": "x".repeat(260 * 1024)}).to_string();
    assert_eq!(gw.redis_publish("big", over.as_bytes()).await, 1);
    let closed = c.closed().await;
    assert_eq!(closed.code, 3008, "{closed:?}");
    assert_eq!(gw.metric("pubsub_hub_gateway_slow_disconnects_total"), 1);
}

#[tokio::test]
async fn channels_per_connection_are_bounded() {
    let config = base_config().with_limits(limits(|l| l.max_channels_per_connection = 2));
    let gw = TestGateway::start(config).await;
    let mut c = gw.client().await;
    c.subscribe("a").await;
    c.subscribe("b").await;
    let third = c.subscribe("c").await;
    assert_eq!(third["error"]["code"], json!(106), "{third}");
    c.call("unsubscribe", json!({"channel": "a"})).await;
    assert_eq!(c.subscribe("c").await["subscribe"], json!({}));
}

#[tokio::test]
async fn a_message_over_the_size_limit_closes_with_message_too_big() {
    let config = base_config().with_limits(limits(|l| l.max_message_bytes = 1024));
    let gw = TestGateway::start(config).await;
    let mut c = gw.client().await;
    let big = json!({"id": 9, "publish": {"channel": "x", "data": "y".repeat(2000)}});
    c.send_text(&big.to_string()).await;
    let closed = c.closed().await;
    assert_eq!(closed.code, 1009, "{closed:?}");
    // Far over the WebSocket layer's own bound: the connection is dropped, never a panic.
    let mut d = gw.client().await;
    let huge = "z".repeat(2 * 1024 * 1024);
    let _ = tokio::time::timeout(WAIT, d.send_text_checked(&huge)).await;
    let _ = d.closed().await;
    let mut e = gw.client().await;
    assert_eq!(e.subscribe("alive").await["subscribe"], json!({}));
}

#[tokio::test]
async fn a_client_above_the_command_rate_is_disconnected() {
    let config = base_config().with_limits(limits(|l| l.max_commands_per_second = 5));
    let gw = TestGateway::start(config).await;
    let mut c = gw.client().await;
    let frame = (0..20)
        .map(|i| json!({"id": 100 + i, "ping": {}}).to_string())
        .collect::<Vec<_>>()
        .join("\n");
    c.send_text(&frame).await;
    let closed = c.closed().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (3013, "too many requests")
    );
}

#[tokio::test]
async fn a_connection_that_never_connects_is_closed_as_stale() {
    let config =
        base_config().with_limits(limits(|l| l.connect_timeout = Duration::from_millis(300)));
    let gw = TestGateway::start(config).await;
    let mut c = WsClient::open(&gw.ws_url()).await;
    let closed = c.closed().await;
    assert_eq!((closed.code, closed.reason.as_str()), (3502, "stale"));
    assert_eq!(gw.gateway.connection_count(), 0);
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused() {
    let config = base_config().with_limits(limits(|l| l.max_connections = 2));
    let gw = TestGateway::start(config).await;
    let _a = gw.client().await;
    let _b = gw.client().await;
    let mut c = WsClient::open(&gw.ws_url()).await;
    let closed = c.closed().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (3504, "connection limit")
    );
    assert_eq!(
        gw.metric("pubsub_hub_gateway_connection_limit_refusals_total"),
        1
    );
}
