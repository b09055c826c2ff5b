//! Connection tokens, refresh, server-side channels, subscription tokens, namespaces'
//! subscribe rules and the origin check.

use pubsub_hub_gateway::{GatewayConfig, NamespaceConfig, SubscribePolicy};
use serde_json::json;

use crate::support::*;

/// A short grace after `exp`, so the expiry tests need not wait the default 25 s.
const GRACE: std::time::Duration = std::time::Duration::from_millis(300);

#[tokio::test]
async fn without_anonymous_access_a_token_is_required() {
    let config = GatewayConfig::default().with_hmac_secret(SECRET);
    let gw = TestGateway::start(config).await;
    let mut anonymous = WsClient::open(&gw.ws_url()).await;
    let refused = anonymous.connect("").await;
    assert_eq!(refused["error"]["code"], json!(101), "{refused}");

    let mut user = WsClient::open(&gw.ws_url()).await;
    let ok = user
        .connect(&token(json!({"sub": "alice", "info": {"name": "A"}})))
        .await;
    assert!(ok["connect"]["client"].is_string(), "{ok}");
    assert!(ok["connect"].get("expires").is_none());

    let mut forged = WsClient::open(&gw.ws_url()).await;
    let bad = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "alice"}),
        &jsonwebtoken::EncodingKey::from_secret(b"wrong"),
    )
    .unwrap();
    forged.send("connect", json!({"token": bad})).await;
    let closed = forged.closed().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (3500, "invalid token")
    );
}

#[tokio::test]
async fn an_expired_token_gets_token_expired_and_refresh_extends_the_connection() {
    let gw = TestGateway::start(base_config()).await;
    let mut c = WsClient::open(&gw.ws_url()).await;
    let expired = c
        .connect(&token(json!({"sub": "bob", "exp": now() - 10})))
        .await;
    assert_eq!(expired["error"]["code"], json!(109), "{expired}");
    // The SDK then gets a fresh token and connects again.
    let ok = c
        .connect(&token(json!({"sub": "bob", "exp": now() + 2})))
        .await;
    assert_eq!(ok["connect"]["expires"], json!(true), "{ok}");
    assert!(ok["connect"]["ttl"].as_u64().unwrap() <= 2);
    let refreshed = c
        .call(
            "refresh",
            json!({"token": token(json!({"sub": "bob", "exp": now() + 600}))}),
        )
        .await;
    assert_eq!(refreshed["refresh"]["expires"], json!(true), "{refreshed}");
    assert!(refreshed["refresh"]["ttl"].as_u64().unwrap() > 500);
    // Past the first token's expiry the connection is still open.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(c.subscribe("after").await["subscribe"], json!({}));
    // A refresh for another user is refused.
    c.send(
        "refresh",
        json!({"token": token(json!({"sub": "mallory"}))}),
    )
    .await;
    assert_eq!(c.closed().await.code, 3500);
}

#[tokio::test]
async fn a_connection_whose_token_expires_unrefreshed_is_disconnected_as_expired() {
    let gw = TestGateway::start(base_config().with_expired_close_delay(GRACE)).await;
    let mut c = WsClient::open(&gw.ws_url()).await;
    c.connect(&token(json!({"sub": "eve", "exp": now() + 1})))
        .await;
    let closed = c.closed().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (3005, "connection expired")
    );
}

#[tokio::test]
async fn server_side_subscriptions_receive_and_unknown_namespaces_in_tokens_are_refused() {
    let config = base_config().with_namespace("user", NamespaceConfig::default());
    let gw = TestGateway::start(config).await;
    let mut c = WsClient::open(&gw.ws_url()).await;
    let reply = c
        .connect(&token(json!({"sub": "carol", "channels": ["user:carol"]})))
        .await;
    assert_eq!(
        reply["connect"]["subs"],
        json!({"user:carol": {}}),
        "{reply}"
    );
    gw.redis_publish("user:carol", b"{\"dm\":true}").await;
    assert_eq!(
        c.push().await,
        json!({"channel": "user:carol", "pub": {"data": {"dm": true}}})
    );
    let again = c.subscribe("user:carol").await;
    assert_eq!(again["error"]["code"], json!(105));

    let mut bad = WsClient::open(&gw.ws_url()).await;
    let refused = bad
        .connect(&token(json!({"sub": "x", "channels": ["missing:1"]})))
        .await;
    assert_eq!(refused["error"]["code"], json!(102), "{refused}");
}

#[tokio::test]
async fn private_and_authenticated_namespaces_need_a_subscription_token_or_a_user() {
    let config = base_config()
        .with_namespace(
            "private",
            NamespaceConfig::default().with_subscribe(SubscribePolicy::Token),
        )
        .with_namespace(
            "members",
            NamespaceConfig::default().with_subscribe(SubscribePolicy::Authenticated),
        );
    let gw = TestGateway::start(config).await;
    let mut anon = gw.client().await;
    assert_eq!(
        anon.subscribe("members:1").await["error"]["code"],
        json!(103)
    );
    assert_eq!(
        anon.subscribe("private:1").await["error"]["code"],
        json!(103)
    );
    assert_eq!(anon.subscribe("public").await["subscribe"], json!({}));

    let mut dave = WsClient::open(&gw.ws_url()).await;
    dave.connect(&token(json!({"sub": "dave"}))).await;
    assert_eq!(dave.subscribe("members:1").await["subscribe"], json!({}));
    assert_eq!(
        dave.subscribe("private:1").await["error"]["code"],
        json!(103)
    );
    let sub_token = token(json!({"sub": "dave", "channel": "private:1", "exp": now() + 600}));
    let ok = dave
        .call(
            "subscribe",
            json!({"channel": "private:1", "token": sub_token}),
        )
        .await;
    assert_eq!(ok["subscribe"]["expires"], json!(true), "{ok}");
    let refreshed = dave
        .call(
            "sub_refresh",
            json!({"channel": "private:1", "token": token(json!({"sub": "dave", "channel": "private:1", "exp": now() + 900}))}),
        )
        .await;
    assert!(
        refreshed["sub_refresh"]["ttl"].as_u64().unwrap() > 800,
        "{refreshed}"
    );
    let other = token(json!({"sub": "dave", "channel": "private:2"}));
    let wrong = dave
        .call("subscribe", json!({"channel": "private:3", "token": other}))
        .await;
    assert_eq!(wrong["error"]["code"], json!(103));
    let expired = token(json!({"sub": "dave", "channel": "private:4", "exp": now() - 5}));
    let late = dave
        .call(
            "subscribe",
            json!({"channel": "private:4", "token": expired}),
        )
        .await;
    assert_eq!(late["error"]["code"], json!(109));
}

#[tokio::test]
async fn an_expired_subscription_token_ends_the_subscription_with_a_resubscribe_code() {
    let config = base_config()
        .with_expired_close_delay(GRACE)
        .with_namespace(
            "private",
            NamespaceConfig::default().with_subscribe(SubscribePolicy::Token),
        );
    let gw = TestGateway::start(config).await;
    let mut c = WsClient::open(&gw.ws_url()).await;
    c.connect(&token(json!({"sub": "f"}))).await;
    let t = token(json!({"sub": "f", "channel": "private:x", "exp": now() + 1}));
    c.call("subscribe", json!({"channel": "private:x", "token": t}))
        .await;
    let push = c.push().await;
    assert_eq!(push["channel"], json!("private:x"));
    assert_eq!(push["unsubscribe"]["code"], json!(2501), "{push}");
}

#[tokio::test]
async fn browser_origins_are_checked() {
    let gw = TestGateway::start(base_config().with_allowed_origin("https://app.example")).await;
    let upgrade = |origin: String| async move {
        let headers = [
            ("Origin", origin.as_str()),
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        http(gw.addr, "GET", "/connection/websocket", &headers, "")
            .await
            .0
    };
    assert_eq!(upgrade("https://evil.example".into()).await, 403);
    // HTTP/1.0 cannot upgrade; anything but 403 shows the origin check passed.
    assert_ne!(upgrade("https://app.example".into()).await, 403);
    assert_ne!(upgrade(format!("http://{}", gw.addr)).await, 403);
    let (status, _) = http(
        gw.addr,
        "GET",
        "/connection/uni_sse?cf_connect=%7B%7D",
        &[("Origin", "https://evil.example")],
        "",
    )
    .await;
    assert_eq!(status, 403);
}
