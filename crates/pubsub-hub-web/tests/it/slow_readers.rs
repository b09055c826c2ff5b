//! Clients that stop reading: a large `/state` or an `/events` stream whose client never
//! reads fills the socket buffers, and the write-progress timeout (`Limits::write_timeout`)
//! closes the connection, so such clients cannot hold the `max_connections` places. Real
//! loopback sockets with small receive buffers, against a private Redis.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pubsub_hub::PubSubHub;
use pubsub_hub_testkit::RedisServer;
use pubsub_hub_web::{AppState, DashboardSettings, Limits, dashboard_hub_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;

use crate::util::{WAIT, serve_on_free_port};

/// Size of each message the big subscribers hold (they keep whole payloads for display).
const PAYLOAD: usize = 60 * 1024;

/// Subscribers of the big channel.
const BIG_SUBSCRIBERS: usize = 24;

/// Smallest `/state` of the big dashboard.
const BIG_STATE: usize = 5 * 1024 * 1024;

struct Dashboard {
    server: RedisServer,
    hub: PubSubHub,
    app: AppState,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Dashboard {
    /// A dashboard whose `/state` is about 6 MB, more than the socket buffers of a loopback
    /// connection hold (about 3 MB here): 24 subscribers of `big`, each holding four 60 KiB
    /// messages shown whole, and pushes every 10 ms.
    async fn start(limits: Limits, big: bool) -> Dashboard {
        let server = RedisServer::start();
        let hub = PubSubHub::with_config(server.client(), dashboard_hub_config())
            .await
            .expect("the hub connects");
        let settings = DashboardSettings::default()
            .with_payload_display_bytes(PAYLOAD)
            .with_push_interval(Duration::from_millis(10));
        let app = AppState::with_settings(hub.clone(), settings).with_limits(limits);
        if big {
            for i in 0..BIG_SUBSCRIBERS {
                hub.subscribe(&format!("big-{i}"), vec!["big".into()])
                    .await
                    .expect("subscribed");
            }
            server.wait_numsub("big", BIG_SUBSCRIBERS as i64, WAIT);
            let payload = "x".repeat(PAYLOAD);
            for _ in 0..5 {
                assert_eq!(
                    server.publish("big", payload.as_bytes()),
                    BIG_SUBSCRIBERS as i64
                );
            }
            let start = Instant::now();
            while hub
                .subscriptions()
                .iter()
                .any(|s| s.messages(None).len() < 4)
            {
                assert!(start.elapsed() < WAIT, "the messages did not arrive");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let (addr, stop, task) = serve_on_free_port(&app).await;
        Dashboard {
            server,
            hub,
            app,
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// Stops serving (within the bound) and shuts the hub down.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("the server stops")
            .expect("the server task did not panic")
            .expect("the server ended cleanly");
        self.hub.shutdown().await;
    }
}

/// A connection with a small receive buffer that sends `GET path` and never reads.
async fn stalled(addr: SocketAddr, path: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.expect("connect");
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    stream
}

/// Status of `GET path` on a fresh connection, and the whole answer.
async fn get(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw).await;
        raw
    };
    let raw = tokio::time::timeout(WAIT, exchange)
        .await
        .expect("an answer in time");
    let status = String::from_utf8_lossy(&raw[..raw.len().min(12)])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stop_reading_are_cut_and_give_their_places_back() {
    let write_timeout = Duration::from_secs(2);
    let limits = Limits {
        max_connections: 6,
        write_timeout,
        // hyper applies the head timeout to a keep-alive connection once it has written its
        // answer into its buffer, which would cut a stalled `/state` too: out of the way, so
        // that only the write timeout can free the places here.
        header_read_timeout: Duration::from_secs(120),
        ..Limits::default()
    };
    let dash = Dashboard::start(limits, true).await;
    let (status, whole) = get(dash.addr, "/state").await;
    assert_eq!(status, 200);
    assert!(
        whole.len() > BIG_STATE,
        "the state is large: {} bytes",
        whole.len()
    );

    // Six clients that never read: three on `/state`, three on `/events`.
    let mut stuck = Vec::new();
    for path in [
        "/state", "/events", "/state", "/events", "/state", "/events",
    ] {
        stuck.push((path, stalled(dash.addr, path).await));
    }
    // They hold every place: one more is turned away.
    let started = Instant::now();
    let (status, answer) = get(dash.addr, "/healthz").await;
    assert_eq!(
        status,
        503,
        "the cap is full while they hang: {}",
        String::from_utf8_lossy(&answer)
    );
    // Once a write to each has been blocked for write_timeout, all six are closed (the
    // dashboard counts them) and the places are free again.
    while dash.app.metrics.write_timeouts() < 6 {
        assert!(
            started.elapsed() < WAIT,
            "after {WAIT:?}, {} of the 6 stalled clients were cut",
            dash.app.metrics.write_timeouts()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        started.elapsed() >= write_timeout,
        "cut after {:?}, before write_timeout",
        started.elapsed()
    );
    let (status, _) = get(dash.addr, "/healthz").await;
    assert_eq!(status, 200, "the places are free again");
    // Each of them finds the connection closed by the server: a `/state` answer cut short,
    // an `/events` stream (which ends only at shutdown) ended.
    for (path, mut stream) in stuck {
        let mut got = Vec::new();
        let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "{path}: the server closed the connection");
        if path == "/state" {
            assert!(
                got.len() < whole.len(),
                "{path}: the answer was cut ({} of {} bytes)",
                got.len(),
                whole.len()
            );
        } else {
            assert!(
                String::from_utf8_lossy(&got[..200]).contains("text/event-stream"),
                "{path}: it was a stream"
            );
        }
    }
    // And the dashboard serves whole answers as before.
    let (status, again) = get(dash.addr, "/state").await;
    assert_eq!(status, 200);
    assert!(again.len() > BIG_STATE);
    dash.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_whose_client_reads_is_never_cut() {
    let write_timeout = Duration::from_millis(300);
    let limits = Limits {
        write_timeout,
        ..Limits::default()
    };
    let dash = Dashboard::start(limits, false).await;
    let mut events = TcpStream::connect(dash.addr).await.unwrap();
    events
        .write_all(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut seen = String::new();
    let mut buf = vec![0u8; 64 * 1024];
    let read_until = |needle: &'static str| {
        let needle = needle.to_owned();
        move |seen: &String| seen.contains(&needle)
    };
    // The first state arrives.
    let first = read_until("event: state");
    tokio::time::timeout(WAIT, async {
        while !first(&seen) {
            let n = events.read(&mut buf).await.expect("read");
            assert!(n > 0, "the stream ended: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await
    .expect("the first state in time");
    // Nothing happens for several write timeouts: no write is blocked, so nothing is cut.
    tokio::time::sleep(write_timeout * 4).await;
    dash.hub
        .subscribe("late", vec!["late-channel".into()])
        .await
        .unwrap();
    seen.clear();
    let second = read_until("late-channel");
    tokio::time::timeout(WAIT, async {
        while !second(&seen) {
            let n = events.read(&mut buf).await.expect("read");
            assert!(n > 0, "the idle stream was closed");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await
    .expect("the change is pushed on the same stream");
    drop(events);
    let _ = &dash.server;
    dash.stop().await;
}
