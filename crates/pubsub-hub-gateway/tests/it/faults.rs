//! Redis going away and coming back, and two gateways on one Redis.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// Subscribes until the gateway answers with success (as the SDKs retry temporary errors).
async fn subscribe_until_ok(c: &mut WsClient, channel: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let reply = c.subscribe(channel).await;
        if reply.get("subscribe").is_some() {
            return;
        }
        assert_eq!(reply["error"]["code"], json!(100), "{reply}");
        assert_eq!(reply["error"]["temporary"], json!(true));
        assert!(
            tokio::time::Instant::now() < deadline,
            "Redis never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn during_a_redis_outage_subscribers_are_told_and_receive_again_after_resubscribing() {
    let mut gw = TestGateway::start(base_config()).await;
    let mut c = gw.client().await;
    c.subscribe("live").await;
    gw.redis_publish("live", b"1").await;
    assert_eq!(c.push().await["pub"]["data"], json!(1));

    gw.redis.stop();
    let push = c.push().await;
    assert_eq!(
        push,
        json!({"channel": "live", "unsubscribe": {"code": 2500, "reason": "insufficient state"}})
    );
    // While Redis is down a subscribe is a temporary error (the SDK retries it).
    let down = c.subscribe("live").await;
    assert_eq!(down["error"]["code"], json!(100), "{down}");
    assert!(gw.metric("pubsub_hub_gateway_channel_losses_total") >= 1);

    gw.redis.start_again();
    subscribe_until_ok(&mut c, "live").await;
    gw.redis_publish("live", b"2").await;
    assert_eq!(c.push().await["pub"]["data"], json!(2));
    assert_eq!(gw.numsub("live").await, 1);
}

#[tokio::test]
async fn server_side_subscriptions_are_disconnected_on_an_outage_so_the_client_reconnects() {
    let config = base_config().with_namespace("u", Default::default());
    let mut gw = TestGateway::start(config).await;
    let mut c = WsClient::open(&gw.ws_url()).await;
    c.connect(&token(json!({"sub": "z", "channels": ["u:z"]})))
        .await;
    gw.redis.stop();
    let closed = c.closed().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (3010, "insufficient state")
    );
    gw.redis.start_again();
}

#[tokio::test]
async fn two_gateways_on_one_redis_are_one_system() {
    let a = TestGateway::start(base_config()).await;
    let hub = pubsub_hub::PubSubHub::with_config(a.redis.client(), hub_config())
        .await
        .unwrap();
    let b_gateway = pubsub_hub_gateway::Gateway::new(hub, base_config()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b_addr = listener.local_addr().unwrap();
    tokio::spawn(pubsub_hub_gateway::serve(
        listener,
        b_gateway.clone(),
        std::future::pending(),
    ));
    let mut on_a = a.client().await;
    let mut on_b = WsClient::open(&format!("ws://{b_addr}/connection/websocket")).await;
    on_b.connect("").await;
    on_a.subscribe("both").await;
    on_b.subscribe("both").await;
    assert_eq!(a.numsub("both").await, 2);
    // A publish through either node's API reaches clients of both.
    let (status, body) = api(
        b_addr,
        "publish",
        json!({"channel": "both", "data": {"via": "b"}}),
    )
    .await;
    assert_eq!((status, body), (200, json!({"result": {}})));
    for c in [&mut on_a, &mut on_b] {
        assert_eq!(c.push().await["pub"]["data"], json!({"via": "b"}));
    }
    a.gateway.publish("both", b"\"via a\"").await.unwrap();
    for c in [&mut on_a, &mut on_b] {
        assert_eq!(c.push().await["pub"]["data"], Value::from("via a"));
    }
    b_gateway.shutdown().await;
}
