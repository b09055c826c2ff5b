//! The bidirectional protocol over WebSocket: connect, subscribe, publications from Redis,
//! client publish, unsubscribe, pings, errors for unknown and unavailable methods.

use pubsub_hub_gateway::{NamespaceConfig, PublishPolicy};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn redis_publishes_reach_subscribers_as_json_text_or_base64() {
    let gw = TestGateway::start(base_config()).await;
    let mut c = gw.client().await;
    let reply = c.subscribe("news").await;
    assert_eq!(reply["subscribe"], json!({}), "{reply}");
    // Answered only once Redis has the subscription: a publish right now is delivered.
    assert_eq!(gw.redis_publish("news", br#"{"n": 1}"#).await, 1);
    assert_eq!(
        c.push().await,
        json!({"channel": "news", "pub": {"data": {"n": 1}}})
    );
    gw.redis_publish("news", b"plain text").await;
    assert_eq!(c.push().await["pub"]["data"], json!("plain text"));
    gw.redis_publish("news", &[0xde, 0xad, 0xbe, 0xef]).await;
    assert_eq!(
        c.push().await["pub"],
        json!({"data": "3q2+7w==", "tags": {"encoding": "base64"}})
    );
    assert_eq!(gw.metric("pubsub_hub_gateway_subscriptions"), 1);
}

#[tokio::test]
async fn one_redis_subscription_per_channel_whatever_the_number_of_clients() {
    let gw = TestGateway::start(base_config()).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut c = gw.client().await;
        assert!(c.subscribe("room").await.get("subscribe").is_some());
        clients.push(c);
    }
    assert_eq!(gw.numsub("room").await, 1);
    assert_eq!(gw.redis_publish("room", b"\"hi\"").await, 1);
    for c in &mut clients {
        assert_eq!(c.push().await["pub"]["data"], json!("hi"));
    }
    assert_eq!(
        gw.gateway.channels().await.unwrap(),
        vec![("room".to_owned(), 5)]
    );
    // The last one out releases the Redis subscription.
    for c in &mut clients {
        let reply = c.call("unsubscribe", json!({"channel": "room"})).await;
        assert_eq!(reply["unsubscribe"], json!({}));
    }
    pubsub_hub_testkit::wait_until_async(WAIT, "Redis subscription released", || async {
        gw.numsub("room").await == 0
    })
    .await;
    assert!(gw.gateway.channels().await.unwrap().is_empty());
}

#[tokio::test]
async fn several_commands_in_one_frame_get_their_replies_and_unknown_fields_are_ignored() {
    let gw = TestGateway::start(base_config()).await;
    let mut c = WsClient::open(&gw.ws_url()).await;
    c.send_text(concat!(
        r#"{"id":1,"connect":{"name":"js","version":"9","new_field":{"x":1}}}"#,
        "\n",
        r#"{"id":2,"subscribe":{"channel":"a","recoverable":true,"flag":3}}"#,
        "\n",
        r#"{"id":3,"subscribe":{"channel":"b"},"future":"yes"}"#
    ))
    .await;
    let connect = c.reply(1).await;
    assert_eq!(connect["connect"]["pong"], json!(true));
    assert_eq!(connect["connect"]["ping"], json!(25));
    assert!(connect["connect"]["client"].as_str().unwrap().len() >= 32);
    assert_eq!(c.reply(2).await["subscribe"], json!({}));
    assert_eq!(c.reply(3).await["subscribe"], json!({}));
    let again = c.subscribe("a").await;
    assert_eq!(again["error"]["code"], json!(105), "{again}");
}

#[tokio::test]
async fn unknown_methods_history_and_presence_get_their_error_codes() {
    let gw = TestGateway::start(base_config()).await;
    let mut c = gw.client().await;
    c.subscribe("x").await;
    let unknown = c.call("teleport", json!({})).await;
    assert_eq!(unknown["error"]["code"], json!(104), "{unknown}");
    let rpc = c.call("rpc", json!({"method": "m"})).await;
    assert_eq!(rpc["error"]["code"], json!(104));
    for method in ["history", "presence", "presence_stats"] {
        let reply = c.call(method, json!({"channel": "x"})).await;
        assert_eq!(reply["error"]["code"], json!(108), "{method}: {reply}");
    }
    let ping = c.call("ping", json!({})).await;
    assert_eq!(ping["ping"], json!({}));
    let nons = c.subscribe("nope:1").await;
    assert_eq!(nons["error"]["code"], json!(102), "{nons}");
    let empty = c.subscribe("").await;
    assert_eq!(empty["error"]["code"], json!(107), "{empty}");
    // The connection is still fine.
    assert_eq!(c.subscribe("y").await["subscribe"], json!({}));
}

#[tokio::test]
async fn clients_publish_only_where_the_rules_allow_and_redis_gets_the_raw_payload() {
    let config = base_config().with_namespace(
        "chat",
        NamespaceConfig::default().with_publish(PublishPolicy::Subscribers),
    );
    let gw = TestGateway::start(config).await;
    let mut c = gw.client().await;
    let denied = c
        .call("publish", json!({"channel": "news", "data": {"a": 1}}))
        .await;
    assert_eq!(denied["error"]["code"], json!(103), "{denied}");
    let not_subscribed = c
        .call("publish", json!({"channel": "chat:1", "data": {"a": 1}}))
        .await;
    assert_eq!(not_subscribed["error"]["code"], json!(103));

    let mut plain = gw.redis.client().get_async_pubsub().await.unwrap();
    plain.subscribe("chat:1").await.unwrap();
    c.subscribe("chat:1").await;
    let ok = c
        .call(
            "publish",
            json!({"channel": "chat:1", "data": {"text": "hello"}}),
        )
        .await;
    assert_eq!(ok["publish"], json!({}), "{ok}");
    let message = tokio::time::timeout(WAIT, plain.on_message().next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(message.get_payload_bytes(), br#"{"text":"hello"}"#);
    assert_eq!(
        c.push().await,
        json!({"channel": "chat:1", "pub": {"data": {"text": "hello"}}})
    );
}

use futures_util::StreamExt;

#[tokio::test]
async fn a_client_that_answers_pings_stays_and_one_that_does_not_is_closed_with_no_pong() {
    let config = base_config().with_ping(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_millis(500),
    );
    let gw = TestGateway::start(config).await;
    let mut good = gw.client().await;
    let mut silent = gw.client().await;
    silent.pong = false;
    // The good one reads (and answers pings) for several ping rounds meanwhile.
    let good = tokio::spawn(async move {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), async {
            loop {
                good.next().await;
            }
        })
        .await;
        good
    });
    let closed = silent.closed().await;
    assert_eq!(closed.code, 3012, "{closed:?}");
    assert_eq!(closed.reason, "no pong");
    let mut good = good.await.unwrap();
    assert_eq!(good.subscribe("p").await["subscribe"], json!({}));
}

#[tokio::test]
async fn commands_before_connect_and_malformed_frames_close_with_bad_request() {
    let gw = TestGateway::start(base_config()).await;
    let mut early = WsClient::open(&gw.ws_url()).await;
    early.send("subscribe", json!({"channel": "x"})).await;
    let closed = early.closed().await;
    assert_eq!((closed.code, closed.reason.as_str()), (3501, "bad request"));

    for garbage in [
        "not json",
        "[1,2,3]",
        "{\"id\":1,\"connect\":5}",
        "{\"id\":\"x\"}",
    ] {
        let mut c = gw.client().await;
        c.send_text(garbage).await;
        let closed = c.closed().await;
        assert_eq!(closed.code, 3501, "{garbage}: {closed:?}");
    }
    let mut twice = gw.client().await;
    twice.send("connect", json!({})).await;
    assert_eq!(twice.closed().await.code, 3501);
    assert!(gw.metric("pubsub_hub_gateway_bad_frames_total") >= 6);
}

#[tokio::test]
async fn shutdown_sends_every_client_the_shutdown_disconnect_with_reconnect_advice() {
    let mut gw = TestGateway::start(base_config()).await;
    let mut a = gw.client().await;
    let mut b = gw.client().await;
    b.subscribe("s").await;
    gw.stop().await;
    for c in [&mut a, &mut b] {
        let closed = c.closed().await;
        assert_eq!((closed.code, closed.reason.as_str()), (3001, "shutdown"));
    }
    assert_eq!(gw.gateway.connection_count(), 0);
    assert_eq!(gw.numsub("s").await, 0);
}

#[tokio::test]
async fn the_rust_api_publishes_lists_and_disconnects() {
    let gw = TestGateway::start(base_config().with_channel_prefix("app.")).await;
    let token = token(json!({"sub": "u1"}));
    let mut c = WsClient::open(&gw.ws_url()).await;
    assert!(c.connect(&token).await.get("connect").is_some());
    c.subscribe("feed").await;
    assert_eq!(gw.numsub("app.feed").await, 1);
    let result = gw.gateway.publish("feed", b"[1,2]").await.unwrap();
    assert_eq!(result.receivers, 1);
    assert_eq!(c.push().await["pub"]["data"], json!([1, 2]));
    assert!(
        gw.gateway
            .publish("", b"1")
            .await
            .unwrap_err()
            .is_invalid_channel()
    );
    assert!(
        gw.gateway
            .publish("ns:x", b"1")
            .await
            .unwrap_err()
            .is_invalid_channel()
    );
    assert_eq!(gw.gateway.disconnect_user("nobody"), 0);
    assert_eq!(gw.gateway.disconnect_user("u1"), 1);
    let closed = c.closed().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (3503, "force disconnect")
    );
}

#[tokio::test]
async fn a_dropped_publish_future_leaves_the_gateway_usable() {
    let gw = TestGateway::start(base_config()).await;
    let mut c = gw.client().await;
    c.subscribe("d").await;
    // Dropped at its first await (and at later ones, as the budget grows).
    for micros in [0u64, 10, 100, 1000] {
        let _ = tokio::time::timeout(
            std::time::Duration::from_micros(micros),
            gw.gateway.publish("d", b"1"),
        )
        .await;
    }
    gw.gateway.publish("d", b"\"last\"").await.unwrap();
    loop {
        if c.push().await["pub"]["data"] == json!("last") {
            break;
        }
    }
    // A dropped shutdown still told every client before its first await.
    let _ = tokio::time::timeout(std::time::Duration::ZERO, gw.gateway.shutdown()).await;
    assert_eq!(c.closed().await.code, 3001);
}

/// A history store with fixed content, to show the extension point carries the protocol's
/// shapes (the Redis-backed one is a later addition).
struct FixedHistory;

impl pubsub_hub_gateway::features::HistoryStore for FixedHistory {
    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: pubsub_hub_gateway::features::HistoryQuery,
    ) -> pubsub_hub_gateway::features::BoxFuture<
        'a,
        Result<
            pubsub_hub_gateway::features::HistoryPage,
            pubsub_hub_gateway::features::FeatureError,
        >,
    > {
        Box::pin(async move {
            assert_eq!(channel, "app.h", "the store gets the Redis channel");
            let mut page = pubsub_hub_gateway::features::HistoryPage::default();
            page.publications = vec![(7, b"{\"old\":true}".to_vec()), (8, vec![0xff])];
            page.publications.truncate(query.limit);
            page.position.offset = 8;
            page.position.epoch = "e1".into();
            Ok(page)
        })
    }
}

#[tokio::test]
async fn a_history_store_answers_history_in_the_protocol_shape() {
    let redis = pubsub_hub_testkit::RedisServer::start();
    let hub = pubsub_hub::PubSubHub::with_config(redis.client(), hub_config())
        .await
        .unwrap();
    let gateway = pubsub_hub_gateway::Gateway::with_stores(
        hub,
        base_config().with_channel_prefix("app."),
        std::sync::Arc::new(FixedHistory),
        std::sync::Arc::new(pubsub_hub_gateway::features::NoPresence),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(pubsub_hub_gateway::serve(
        listener,
        gateway,
        std::future::pending(),
    ));
    let mut c = WsClient::open(&format!("ws://{addr}/connection/websocket")).await;
    c.connect("").await;
    let unsubscribed = c
        .call("history", json!({"channel": "h", "limit": 10}))
        .await;
    assert_eq!(
        unsubscribed["error"]["code"],
        json!(103),
        "only subscribers read history"
    );
    c.subscribe("h").await;
    let reply = c
        .call("history", json!({"channel": "h", "limit": 10}))
        .await;
    assert_eq!(
        reply["history"],
        json!({
            "publications": [
                {"data": {"old": true}, "offset": 7},
                {"data": "/w==", "tags": {"encoding": "base64"}, "offset": 8},
            ],
            "epoch": "e1",
            "offset": 8,
        }),
        "{reply}"
    );
    let presence = c.call("presence", json!({"channel": "h"})).await;
    assert_eq!(presence["error"]["code"], json!(108));
}

#[tokio::test]
async fn a_binary_frame_closes_with_bad_request_since_the_encoding_is_json() {
    let gw = TestGateway::start(base_config()).await;
    let mut c = gw.client().await;
    c.send_binary(&[0x0a, 0x00]).await;
    let closed = c.closed().await;
    assert_eq!(closed.code, 3501, "{closed:?}");
}
