//! Bounds on what a stalled Redis, a big server or a slow client can cost, each on a real
//! socket or a private Redis:
//! - changes queued behind one stuck on a stalled Redis answer 503 (busy) in bounded time
//!   instead of adding up their waits;
//! - `/state` lists at most `max_listed_channels` of the server's channels, and says so;
//! - a request head or body that stops arriving, and an idle keep-alive connection, are
//!   closed after their timeouts; connections beyond `max_connections` get a 503.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::util::{Live, Reply, Setup, WAIT, all_live, request, sub};
use pubsub_hub::PubSubHub;
use pubsub_hub_testkit::RedisServer;
use pubsub_hub_web::{AppState, Limits, dashboard_hub_config, router, seed_defaults};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The dashboard's command timeout (1 s) plus its write wait (0.5 s) plus slack for a
/// loaded 2-core machine: every change must answer within this while Redis is stalled.
const CHANGE_DEADLINE: Duration = Duration::from_millis(2500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_changes_answer_busy_in_bounded_time_while_redis_is_stalled() {
    let live = Live::start().await;
    let before = live.state().await;

    // DEBUG SLEEP blocks the whole server; run it on a connection of its own, and know it
    // runs when /state says Redis does not answer.
    let mut stall_connection = live.server.connection();
    let stall = tokio::task::spawn_blocking(move || {
        redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(4)
            .query::<()>(&mut stall_connection)
    });
    live.wait_state("the stall shows as unavailable", |s| {
        s["redis"]["available"] == false
    })
    .await;

    let started = Instant::now();
    let subscribes: Vec<_> = (0..8)
        .map(|i| {
            let addr = live.addr;
            tokio::spawn(async move {
                let form = format!("name=stalled-{i}&target=stalled:{i}");
                post(addr, "/subscribe", &form).await
            })
        })
        .collect();
    let unsubscribe = post(live.addr, "/unsubscribe", "name=orders-listener").await;
    let mut replies = vec![("unsubscribe".to_owned(), unsubscribe)];
    for (i, task) in subscribes.into_iter().enumerate() {
        replies.push((format!("subscribe {i}"), task.await.unwrap()));
    }
    let all = started.elapsed();
    let mut busy = 0;
    for (what, reply) in &replies {
        eprintln!("{what}: {} after {:?}", reply.status, reply.took);
        assert!(
            reply.took < CHANGE_DEADLINE,
            "{what} took {:?}: {}",
            reply.took,
            reply.text()
        );
        if reply.status == 503 {
            let message = reply.error(503);
            busy += usize::from(message.contains("busy"));
        }
    }
    eprintln!("9 changes during a 4 s stall answered within {all:?}; {busy} said busy");
    assert!(
        busy >= 6,
        "the queued changes were told the dashboard is busy"
    );
    stall.await.unwrap().expect("DEBUG SLEEP ran");

    // Nothing half-applied: once Redis answers, every subscriber that was accepted is there
    // and live, and those refused left nothing behind.
    let state = live
        .wait_state("Redis answers and all are live", |s| {
            s["redis"]["available"] == true && all_live(s)
        })
        .await;
    let mut expected: Vec<String> = before["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    for (what, reply) in &replies {
        if reply.status == 200 && what.starts_with("subscribe") {
            let i = what.trim_start_matches("subscribe ");
            expected.push(format!("stalled-{i}"));
        }
        if reply.status == 200 && what == "unsubscribe" {
            expected.retain(|n| n != "orders-listener");
        }
    }
    expected.sort();
    let names: Vec<String> = state["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, expected);
    live.stop().await;
}

/// Subscribes a client of its own to `count` channels `prefix0..` with one command (plain
/// or, with `shard`, SSUBSCRIBE) and waits until Redis counts the last one.
async fn foreign_subscriber(
    server: &RedisServer,
    prefix: &str,
    count: usize,
    shard: bool,
) -> TcpStream {
    let command = if shard { "SSUBSCRIBE" } else { "SUBSCRIBE" };
    let mut resp = format!("*{}\r\n${}\r\n{command}\r\n", count + 1, command.len());
    for i in 0..count {
        let name = format!("{prefix}{i}");
        resp.push_str(&format!("${}\r\n{name}\r\n", name.len()));
    }
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    if let Some(password) = server.password() {
        let auth = format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{password}\r\n", password.len());
        stream.write_all(auth.as_bytes()).await.unwrap();
    }
    stream.write_all(resp.as_bytes()).await.unwrap();
    let last = format!("{prefix}{}", count - 1);
    let sub = if shard { "SHARDNUMSUB" } else { "NUMSUB" };
    server.wait_until(WAIT, "the foreign subscriber is counted", || {
        let reply = server.cmd(&["PUBSUB", sub, &last]);
        let counts: Vec<redis::Value> = redis::from_redis_value(reply).unwrap_or_default();
        counts
            .get(1)
            .and_then(|v| redis::from_redis_value::<i64>(v.clone()).ok())
            == Some(1)
    });
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_lists_a_bounded_number_of_the_servers_channels() {
    let server = RedisServer::start();
    let _plain = foreign_subscriber(&server, "foreign:", 5_000, false).await;
    let _shard = foreign_subscriber(&server, "foreign-shard:", 150, true).await;
    let hub = PubSubHub::with_config(server.client(), dashboard_hub_config())
        .await
        .unwrap();
    seed_defaults(&hub).await.unwrap();

    // The default bound.
    let app = router(AppState::new(hub.clone()));
    let state = common_state(&app).await;
    let listed = state["active_channels"].as_array().unwrap();
    assert_eq!(listed.len(), Limits::default().max_listed_channels);
    assert_eq!(state["active_channels_truncated"], true);
    assert_eq!(
        state["active_channels_total"], 5_002,
        "5,000 foreign + our 2"
    );
    assert_eq!(state["shard_channels"].as_array().unwrap().len(), 150);
    assert_eq!(state["shard_channels_truncated"], false);
    // Our own channels' counts are whole whatever the cut.
    assert_eq!(state["numsub"]["orders:new"], 1);
    assert_eq!(state["numsub"]["billing:invoice"], 1);

    // A configured bound, for both lists; the cut keeps the sorted start.
    let limits = Limits {
        max_listed_channels: 100,
        ..Limits::default()
    };
    let app = router(AppState::new(hub.clone()).with_limits(limits));
    let state = common_state(&app).await;
    let listed: Vec<&str> = state["active_channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 100);
    assert!(listed.windows(2).all(|w| w[0] < w[1]), "sorted");
    assert_eq!(listed[0], "billing:invoice");
    assert_eq!(state["active_channels_total"], 5_002);
    assert_eq!(state["shard_channels"].as_array().unwrap().len(), 100);
    assert_eq!(state["shard_channels_truncated"], true);
    assert_eq!(state["shard_channels_total"], 150);
    let size = state.to_string().len();
    eprintln!("/state with 5,150 foreign channels, bound 100: {size} bytes");
    assert!(size < 16 * 1024, "{size} bytes");
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_foreign_messages_do_not_pile_up_in_the_ring_buffers() {
    let server = RedisServer::start();
    let hub = PubSubHub::with_config(server.client(), dashboard_hub_config())
        .await
        .unwrap();
    seed_defaults(&hub).await.unwrap();
    let listener = hub.get_subscription("orders-listener").unwrap();
    // Another client publishes 20 messages of 200 KB, far over our own /publish limit.
    let big = vec![b'x'; 200_000];
    let mut conn = server
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for _ in 0..20 {
        let _: i64 = redis::cmd("PUBLISH")
            .arg("orders:new")
            .arg(&big)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    pubsub_hub_testkit::wait_until_async(WAIT, "all 20 received", || async {
        listener.received_total() == 20
    })
    .await;
    let kept: usize = listener
        .messages(None)
        .iter()
        .map(|m| m.payload.len())
        .sum();
    assert!(
        kept <= pubsub_hub_web::DASHBOARD_BUFFER_MAX_BYTES,
        "{kept} bytes kept"
    );
    assert_eq!(listener.messages(None).len(), 1, "only the newest fits");
    let state = common_state(&router(AppState::new(hub.clone()))).await;
    assert!(
        state.to_string().len() < 64 * 1024,
        "the page gets a cut copy"
    );
    hub.shutdown().await;
}

async fn common_state(app: &axum::Router) -> Value {
    use tower::ServiceExt;
    let request = axum::http::Request::get("/state")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = tokio::time::timeout(WAIT, app.clone().oneshot(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

/// One form POST on a new connection.
async fn post(addr: SocketAddr, path: &str, form: &str) -> Reply {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
        form.len()
    );
    request(addr, &head, form.as_bytes()).await
}

/// Reads until the server closes the connection; returns what came and when it closed.
async fn read_until_closed(stream: &mut TcpStream, started: Instant) -> (Vec<u8>, Duration) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (received, started.elapsed()),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server held the connection for {WAIT:?}"),
        }
    }
}

const SHORT: Duration = Duration::from_millis(500);

async fn live_with_short_timeouts() -> Live {
    let limits = Limits {
        header_read_timeout: SHORT,
        body_read_timeout: SHORT,
        ..Limits::default()
    };
    Live::start_on(
        RedisServer::start(),
        Setup {
            limits,
            ..Setup::default()
        },
    )
    .await
}

/// The head of a form POST that announces a 100-byte body.
const POST_OF_100_BYTES: &[u8] = b"POST /publish HTTP/1.1\r\nHost: 127.0.0.1\r\n\
    Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_stops_arriving_is_cut_off() {
    let live = live_with_short_timeouts().await;

    // Half a request line.
    let mut stream = TcpStream::connect(live.addr).await.unwrap();
    let started = Instant::now();
    stream.write_all(b"GET /sta").await.unwrap();
    let (_, closed) = read_until_closed(&mut stream, started).await;
    eprintln!("half a request line: closed after {closed:?}");
    assert!(closed >= SHORT - Duration::from_millis(50), "{closed:?}");
    assert!(closed < SHORT + Duration::from_secs(1), "{closed:?}");

    // Headers that never end.
    let mut stream = TcpStream::connect(live.addr).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(b"GET /state HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .unwrap();
    let (_, closed) = read_until_closed(&mut stream, started).await;
    assert!(closed < SHORT + Duration::from_secs(1), "{closed:?}");

    // A body of 9 bytes where 100 were announced: a 408 that names the limit, then closed.
    let mut stream = TcpStream::connect(live.addr).await.unwrap();
    let started = Instant::now();
    stream.write_all(POST_OF_100_BYTES).await.unwrap();
    stream.write_all(b"channel=o").await.unwrap();
    let (raw, closed) = read_until_closed(&mut stream, started).await;
    let text = String::from_utf8_lossy(&raw);
    eprintln!("9 of 100 body bytes: answered and closed after {closed:?}");
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_read_timeout"), "{text}");
    assert!(text.contains("application/json"), "{text}");
    assert!(closed >= SHORT - Duration::from_millis(50), "{closed:?}");
    assert!(closed < SHORT + Duration::from_secs(1), "{closed:?}");

    // A body dripped a byte every 100 ms: each byte is in time, the whole is not. One
    // deadline covers the body, so it gets the same 408 after the same time.
    let mut stream = TcpStream::connect(live.addr).await.unwrap();
    let started = Instant::now();
    stream.write_all(POST_OF_100_BYTES).await.unwrap();
    let dripper = {
        let (mut reader, mut writer) = stream.into_split();
        let drip = tokio::spawn(async move {
            let mut pace = tokio::time::interval(Duration::from_millis(100));
            for _ in 0..50 {
                pace.tick().await;
                if writer.write_all(b"x").await.is_err() {
                    break;
                }
            }
        });
        let mut raw = Vec::new();
        let read = tokio::time::timeout(WAIT, reader.read_to_end(&mut raw)).await;
        drip.abort();
        assert!(read.is_ok(), "the dripped body was never cut off");
        (raw, started.elapsed())
    };
    let (raw, closed) = dripper;
    let text = String::from_utf8_lossy(&raw);
    eprintln!("a dripped body: answered and closed after {closed:?}");
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(closed < SHORT + Duration::from_secs(1), "{closed:?}");

    // An idle keep-alive connection after a complete exchange is closed as well.
    let mut stream = TcpStream::connect(live.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (raw, closed) = read_until_closed(&mut stream, started).await;
    assert!(String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 200"));
    assert!(closed < SHORT + Duration::from_secs(1), "{closed:?}");

    // Nothing of this reached the state.
    let state = live.state().await;
    assert_eq!(state["stats"]["published_total"], 0);
    assert_eq!(sub(&state, "orders-listener")["received_total"], 0);
    live.stop().await;
}

/// Sends a keep-alive `GET /healthz` on `stream` and reads its whole answer.
async fn healthz_keep_alive(stream: &mut TcpStream) {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 1024];
    while !raw.ends_with(br#"{"status":"ok"}"#) {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&buf[..n]);
    }
    assert!(raw.starts_with(b"HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_get_a_503() {
    const CAP: usize = 3;
    let limits = Limits {
        max_connections: CAP,
        ..Limits::default()
    };
    let live = Live::start_on(
        RedisServer::start(),
        Setup {
            limits,
            ..Setup::default()
        },
    )
    .await;

    // CAP open keep-alive connections, each known to be served (it answered).
    let mut held = Vec::new();
    for _ in 0..CAP {
        let mut stream = TcpStream::connect(live.addr).await.unwrap();
        healthz_keep_alive(&mut stream).await;
        held.push(stream);
    }
    let refused = live.get("/state").await;
    let message = refused.error(503);
    assert!(message.contains("max_connections is 3"), "{message}");
    assert_eq!(refused.header("retry-after"), Some("1"));

    // One closes: a new connection is served again, as soon as the server saw it go.
    drop(held.pop());
    let start = Instant::now();
    loop {
        let reply = live.get("/healthz").await;
        if reply.status == 200 {
            break;
        }
        assert_eq!(reply.status, 503);
        assert!(
            start.elapsed() < WAIT,
            "the closed connection's place never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(held);
    live.stop().await;
}
