//! The server HTTP API, and the health, readiness and metrics routes.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn the_api_needs_the_key_in_either_header() {
    let gw = TestGateway::start(base_config()).await;
    let body = json!({"channel": "k", "data": 1}).to_string();
    let (none, _) = http(gw.addr, "POST", "/api/publish", &[], &body).await;
    assert_eq!(none, 401);
    let (wrong, _) = http(
        gw.addr,
        "POST",
        "/api/publish",
        &[("X-API-Key", "nope")],
        &body,
    )
    .await;
    assert_eq!(wrong, 401);
    let auth = format!("apikey {API_KEY}");
    let (ok, text) = http(
        gw.addr,
        "POST",
        "/api/publish",
        &[("Authorization", auth.as_str())],
        &body,
    )
    .await;
    assert_eq!((ok, text.as_str()), (200, r#"{"result":{}}"#));
    let (unknown, text) = api(gw.addr, "teleport", json!({})).await;
    assert_eq!((unknown, text["error"]["code"].clone()), (404, json!(104)));
    let (bad, _) = http(
        gw.addr,
        "POST",
        "/api/publish",
        &[("X-API-Key", API_KEY)],
        "{not json",
    )
    .await;
    assert_eq!(bad, 400);
}

#[tokio::test]
async fn without_a_key_the_api_is_off() {
    let gw =
        TestGateway::start(pubsub_hub_gateway::GatewayConfig::default().with_allow_anonymous(true))
            .await;
    let (status, _) = api(gw.addr, "info", json!({})).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn publish_broadcast_unsubscribe_disconnect_channels_and_info() {
    let gw = TestGateway::start(base_config()).await;
    let mut c = WsClient::open(&gw.ws_url()).await;
    c.connect(&token(json!({"sub": "api-user"}))).await;
    c.subscribe("one").await;
    c.subscribe("two").await;

    let (_, published) = api(
        gw.addr,
        "publish",
        json!({"channel": "one", "data": {"x": 1}}),
    )
    .await;
    assert_eq!(published, json!({"result": {}}));
    assert_eq!(
        c.push().await,
        json!({"channel": "one", "pub": {"data": {"x": 1}}})
    );

    let (_, broadcast) = api(
        gw.addr,
        "broadcast",
        json!({"channels": ["one", "two", "nope:x"], "data": "b"}),
    )
    .await;
    assert_eq!(
        broadcast["result"]["responses"],
        json!([{"result": {}}, {"result": {}}, {"error": {"code": 102, "message": "unknown channel"}}])
    );
    let mut got = [c.push().await, c.push().await];
    got.sort_by_key(|p| p["channel"].as_str().unwrap().to_owned());
    assert_eq!(got[0], json!({"channel": "one", "pub": {"data": "b"}}));
    assert_eq!(got[1], json!({"channel": "two", "pub": {"data": "b"}}));

    let (_, no_data) = api(gw.addr, "publish", json!({"channel": "one"})).await;
    assert_eq!(no_data["error"]["code"], json!(107));

    let (_, channels) = api(gw.addr, "channels", json!({})).await;
    assert_eq!(
        channels,
        json!({"result": {"channels": {"one": {"num_clients": 1}, "two": {"num_clients": 1}}}})
    );
    let (_, filtered) = api(gw.addr, "channels", json!({"pattern": "t*"})).await;
    assert_eq!(
        filtered["result"]["channels"],
        json!({"two": {"num_clients": 1}})
    );

    let (_, info) = api(gw.addr, "info", json!({})).await;
    let node = &info["result"]["nodes"][0];
    assert_eq!(
        (
            node["num_clients"].clone(),
            node["num_users"].clone(),
            node["num_channels"].clone()
        ),
        (json!(1), json!(1), json!(2))
    );

    let (_, unsub) = api(
        gw.addr,
        "unsubscribe",
        json!({"channel": "two", "user": "api-user"}),
    )
    .await;
    assert_eq!(unsub, json!({"result": {}}));
    assert_eq!(
        c.push().await,
        json!({"channel": "two", "unsubscribe": {"code": 2000, "reason": "server unsubscribe"}})
    );
    let (_, bad) = api(
        gw.addr,
        "disconnect",
        json!({"user": "api-user", "disconnect": {"code": 1000}}),
    )
    .await;
    assert_eq!(bad["error"]["code"], json!(107));
    let (_, disc) = api(
        gw.addr,
        "disconnect",
        json!({"user": "api-user", "disconnect": {"code": 4001, "reason": "moved"}}),
    )
    .await;
    assert_eq!(disc, json!({"result": {}}));
    let closed = c.closed().await;
    assert_eq!((closed.code, closed.reason.as_str()), (4001, "moved"));
    let mut d = gw.client().await;
    let (_, plain) = api(gw.addr, "disconnect", json!({"client": "no-such-client"})).await;
    assert_eq!(plain, json!({"result": {}}));
    assert_eq!(d.subscribe("still").await["subscribe"], json!({}));
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let mut gw = TestGateway::start(base_config()).await;
    assert_eq!(http(gw.addr, "GET", "/healthz", &[], "").await.0, 200);
    assert_eq!(http(gw.addr, "GET", "/readyz", &[], "").await.0, 200);
    let _c = gw.client().await;
    let (status, metrics) = http(gw.addr, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("pubsub_hub_gateway_connections 1\n"),
        "{metrics}"
    );
    gw.redis.stop();
    assert_eq!(http(gw.addr, "GET", "/readyz", &[], "").await.0, 503);
    gw.redis.start_again();
}
