//! Unidirectional SSE: `cf_connect`, the connect event, publications, pings, refusals.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::support::*;

/// An open event stream: its `data:` events as JSON.
struct EventStream {
    reader: BufReader<TcpStream>,
    pub status: u16,
}

impl EventStream {
    async fn open(addr: std::net::SocketAddr, connect: Value) -> EventStream {
        let query: String = connect
            .to_string()
            .bytes()
            .map(|b| format!("%{b:02X}"))
            .collect();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET /connection/uni_sse?cf_connect={query} HTTP/1.0\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).await.unwrap();
        let status = status_line[9..12].parse().unwrap();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        EventStream { reader, status }
    }

    /// The next event, or `None` at the end of the stream.
    async fn next(&mut self) -> Option<Value> {
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(WAIT, self.reader.read_line(&mut line))
                .await
                .expect("an event in time")
                .unwrap();
            if n == 0 {
                return None;
            }
            if let Some(data) = line.strip_prefix("data: ") {
                return Some(serde_json::from_str(data.trim_end()).unwrap());
            }
        }
    }

    async fn body(&mut self) -> String {
        let mut rest = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut self.reader, &mut rest).await;
        rest
    }
}

#[tokio::test]
async fn an_event_stream_gets_connect_publications_and_pings() {
    let config = base_config().with_ping(Duration::from_secs(1), Duration::from_secs(1));
    let gw = TestGateway::start(config).await;
    let mut events = EventStream::open(gw.addr, json!({"subs": {"ticker": {}}})).await;
    assert_eq!(events.status, 200);
    let connect = events.next().await.unwrap();
    assert_eq!(
        connect["connect"]["subs"],
        json!({"ticker": {}}),
        "{connect}"
    );
    assert_eq!(connect["connect"].get("pong"), None);
    assert_eq!(gw.numsub("ticker").await, 1);
    gw.redis_publish("ticker", b"{\"p\":1}").await;
    assert_eq!(
        events.next().await.unwrap(),
        json!({"channel": "ticker", "pub": {"data": {"p": 1}}})
    );
    // Pings are empty objects; no pong is expected, so the stream stays.
    assert_eq!(events.next().await.unwrap(), json!({}));
    assert_eq!(events.next().await.unwrap(), json!({}));
    gw.redis_publish("ticker", b"2").await;
    assert_eq!(events.next().await.unwrap()["pub"]["data"], json!(2));
}

#[tokio::test]
async fn a_closed_event_stream_releases_its_channels() {
    let gw = TestGateway::start(base_config()).await;
    let mut events = EventStream::open(gw.addr, json!({"subs": {"gone": {}}})).await;
    events.next().await.unwrap();
    assert_eq!(gw.numsub("gone").await, 1);
    drop(events);
    pubsub_hub_testkit::wait_until_async(WAIT, "the stream's channel released", || async {
        gw.numsub("gone").await == 0 && gw.gateway.connection_count() == 0
    })
    .await;
}

#[tokio::test]
async fn refused_streams_get_http_errors_and_shutdown_sends_the_disconnect_event() {
    let config = pubsub_hub_gateway::GatewayConfig::default()
        .with_hmac_secret(SECRET)
        .with_namespace(
            "private",
            pubsub_hub_gateway::NamespaceConfig::default()
                .with_subscribe(pubsub_hub_gateway::SubscribePolicy::Token),
        );
    let mut gw = TestGateway::start(config).await;
    let mut anonymous = EventStream::open(gw.addr, json!({})).await;
    assert_eq!(anonymous.status, 401);
    assert!(anonymous.body().await.contains("101"));
    let user = token(json!({"sub": "s", "channels": ["news"]}));
    let private =
        EventStream::open(gw.addr, json!({"token": user, "subs": {"private:1": {}}})).await;
    assert_eq!(private.status, 403);
    let mut ok = EventStream::open(gw.addr, json!({"token": user})).await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.next().await.unwrap()["connect"]["subs"],
        json!({"news": {}})
    );
    gw.stop().await;
    assert_eq!(
        ok.next().await.unwrap(),
        json!({"disconnect": {"code": 3001, "reason": "shutdown", "reconnect": true}})
    );
    assert_eq!(ok.next().await, None);
}

#[tokio::test]
async fn a_post_body_carries_the_connect_request_and_bad_ones_are_400() {
    let gw = TestGateway::start(base_config()).await;
    let (status, _) = http(gw.addr, "POST", "/connection/uni_sse", &[], "{not json").await;
    assert_eq!(status, 400);
    let (status, body) = http(
        gw.addr,
        "GET",
        "/connection/uni_sse?cf_connect=%5B1%5D",
        &[],
        "",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // A POST stream: read its first event from the raw response.
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let body = r#"{"subs":{"posted":{}}}"#;
    let request = format!(
        "POST /connection/uni_sse HTTP/1.0\r\nHost: {}\r\nContent-Length: {}\r\n\r\n{body}",
        gw.addr,
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        tokio::time::timeout(WAIT, reader.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        if let Some(data) = line.strip_prefix("data: ") {
            let connect: Value = serde_json::from_str(data.trim_end()).unwrap();
            assert_eq!(connect["connect"]["subs"], json!({"posted": {}}));
            break;
        }
    }
    assert_eq!(gw.numsub("posted").await, 1);
}

#[tokio::test]
async fn during_a_redis_outage_an_event_stream_is_told_to_reconnect_and_can_once_redis_is_back() {
    let mut gw = TestGateway::start(base_config()).await;
    let mut events = EventStream::open(gw.addr, json!({"subs": {"out": {}}})).await;
    events.next().await.unwrap();
    gw.redis.stop();
    assert_eq!(
        events.next().await.unwrap(),
        json!({"disconnect": {"code": 3010, "reason": "insufficient state", "reconnect": true}})
    );
    assert_eq!(events.next().await, None);
    // While Redis is down a new stream gets the same advice at once (an EventSource retries).
    let mut early = EventStream::open(gw.addr, json!({"subs": {"out": {}}})).await;
    assert_eq!(early.status, 200);
    assert_eq!(
        early.next().await.unwrap()["disconnect"]["reconnect"],
        json!(true)
    );
    gw.redis.start_again();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut again = EventStream::open(gw.addr, json!({"subs": {"out": {}}})).await;
        let first = again.next().await.unwrap();
        if first.get("connect").is_some() {
            gw.redis_publish("out", b"1").await;
            assert_eq!(again.next().await.unwrap()["pub"]["data"], json!(1));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no connect after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
