//! Shared helpers: a gateway on a private Redis, a protocol-speaking WebSocket client, JWTs
//! and a raw HTTP client.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{EncodingKey, Header};
use pubsub_hub::{ConnectionMode, HubConfig, PubSubHub};
use pubsub_hub_gateway::{Gateway, GatewayConfig, serve};
use pubsub_hub_testkit::RedisServer;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Bound on every wait for a frame.
pub const WAIT: Duration = Duration::from_secs(10);
pub const SECRET: &str = "test-secret";
pub const API_KEY: &str = "test-api-key";

/// A gateway served on a loopback port, over its own Redis.
pub struct TestGateway {
    pub redis: RedisServer,
    pub gateway: Gateway,
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Shared mode, fast reconnects; a command bound above the default so that a loaded
/// test machine does not turn a slow SUBSCRIBE confirmation into a failed subscribe.
pub fn hub_config() -> HubConfig {
    HubConfig::default()
        .with_command_timeout(Duration::from_secs(5))
        .with_mode(ConnectionMode::Shared { connections: 2 })
        .with_reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300))
        .with_ping_interval(Duration::from_millis(500))
}

/// The configuration most tests use: anonymous allowed, an HMAC secret and an API key.
pub fn base_config() -> GatewayConfig {
    GatewayConfig::default()
        .with_allow_anonymous(true)
        .with_hmac_secret(SECRET)
        .with_api_key(API_KEY)
}

impl TestGateway {
    pub async fn start(config: GatewayConfig) -> TestGateway {
        Self::start_on(RedisServer::start(), config).await
    }

    pub async fn start_on(redis: RedisServer, config: GatewayConfig) -> TestGateway {
        let hub = PubSubHub::with_config(redis.client(), hub_config())
            .await
            .expect("hub");
        let gateway = Gateway::new(hub, config).expect("gateway");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(serve(listener, gateway.clone(), async move {
            let _ = rx.await;
        }));
        TestGateway {
            redis,
            gateway,
            addr,
            stop: Some(tx),
            served: Some(served),
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/connection/websocket", self.addr)
    }

    /// A connected anonymous client.
    pub async fn client(&self) -> WsClient {
        let mut c = WsClient::open(&self.ws_url()).await;
        let reply = c.connect("").await;
        assert!(reply.get("connect").is_some(), "connect failed: {reply}");
        c
    }

    /// Triggers the serve future's shutdown and waits for it to return.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(served) = self.served.take() {
            tokio::time::timeout(Duration::from_secs(15), served)
                .await
                .expect("serve returns after shutdown")
                .unwrap()
                .unwrap();
        }
    }

    /// A plain Redis connection.
    pub async fn redis_conn(&self) -> redis::aio::MultiplexedConnection {
        self.redis
            .client()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    pub async fn redis_publish(&self, channel: &str, payload: &[u8]) -> i64 {
        let mut conn = self.redis_conn().await;
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    pub async fn numsub(&self, channel: &str) -> i64 {
        let mut conn = self.redis_conn().await;
        let (_, n): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut conn)
            .await
            .unwrap();
        n
    }

    pub fn metric(&self, name: &str) -> u64 {
        let text = self.gateway.metrics().render();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
            .parse()
            .unwrap()
    }
}

/// How a WebSocket connection ended.
#[derive(Debug)]
pub struct Closed {
    pub code: u16,
    pub reason: String,
}

/// A client speaking the protocol: replies and pushes are read line by line.
pub struct WsClient {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
    lines: VecDeque<Value>,
    next_id: u32,
    /// Answer server pings automatically.
    pub pong: bool,
}

impl WsClient {
    pub async fn open(url: &str) -> WsClient {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("WebSocket handshake in time")
            .expect("WebSocket handshake");
        WsClient {
            ws,
            lines: VecDeque::new(),
            next_id: 1,
            pong: true,
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::Text(text.into())).await.unwrap();
    }

    pub async fn send_binary(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::Binary(bytes.to_vec().into()))
            .await
            .unwrap();
    }

    /// Sends, tolerating a connection the server already dropped.
    pub async fn send_text_checked(&mut self, text: &str) -> bool {
        self.ws.send(Message::Text(text.into())).await.is_ok()
    }

    /// Sends a command and returns its id.
    pub async fn send(&mut self, method: &str, params: Value) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        let command = json!({"id": id, method: params});
        self.send_text(&command.to_string()).await;
        id
    }

    /// The next line (reply, push or ping), or the close.
    pub async fn next_raw(&mut self) -> Result<Value, Closed> {
        loop {
            if let Some(v) = self.lines.pop_front() {
                return Ok(v);
            }
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time");
            match message {
                Some(Ok(Message::Text(text))) => {
                    for line in text.split('\n') {
                        self.lines
                            .push_back(serde_json::from_str(line).expect("a JSON line"));
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(match frame {
                        Some(f) => Closed {
                            code: u16::from(f.code),
                            reason: f.reason.to_string(),
                        },
                        None => Closed {
                            code: u16::from(CloseCode::Status),
                            reason: String::new(),
                        },
                    });
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    return Err(Closed {
                        code: 0,
                        reason: e.to_string(),
                    });
                }
                None => {
                    return Err(Closed {
                        code: 0,
                        reason: "stream ended".into(),
                    });
                }
            }
        }
    }

    /// The next reply or push, answering pings when `pong` is set.
    pub async fn next(&mut self) -> Value {
        loop {
            let v = self
                .next_raw()
                .await
                .unwrap_or_else(|c| panic!("closed: {c:?}"));
            if v == json!({}) {
                if self.pong {
                    self.send_text("{}").await;
                }
                continue;
            }
            return v;
        }
    }

    /// The reply to command `id` (pushes before it are kept for later reads).
    pub async fn reply(&mut self, id: u32) -> Value {
        let mut skipped = Vec::new();
        let reply = loop {
            let v = self.next().await;
            if v["id"] == json!(id) {
                break v;
            }
            skipped.push(v);
        };
        for v in skipped.into_iter().rev() {
            self.lines.push_front(v);
        }
        reply
    }

    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, params).await;
        self.reply(id).await
    }

    pub async fn connect(&mut self, token: &str) -> Value {
        self.call("connect", json!({"token": token})).await
    }

    pub async fn subscribe(&mut self, channel: &str) -> Value {
        self.call("subscribe", json!({"channel": channel})).await
    }

    /// The next push (skipping nothing: a reply here is a test failure).
    pub async fn push(&mut self) -> Value {
        let v = self.next().await;
        assert!(v.get("push").is_some(), "expected a push, got {v}");
        v["push"].clone()
    }

    /// Reads until the server closes; pings are not answered.
    pub async fn closed(&mut self) -> Closed {
        loop {
            match self.next_raw().await {
                Ok(_) => continue,
                Err(c) => return c,
            }
        }
    }
}

/// An HS256 token with `claims`.
pub fn token(claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A raw HTTP/1.0 exchange: the status and the whole body (the server closes).
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    let reply = pubsub_hub_testkit::http::exchange(addr, request.as_bytes()).await;
    (reply.status, reply.text())
}

/// `POST /api/{method}` with the test key.
pub async fn api(addr: std::net::SocketAddr, method: &str, body: Value) -> (u16, Value) {
    let (status, text) = http(
        addr,
        "POST",
        &format!("/api/{method}"),
        &[("X-API-Key", API_KEY), ("Content-Type", "application/json")],
        &body.to_string(),
    )
    .await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}
