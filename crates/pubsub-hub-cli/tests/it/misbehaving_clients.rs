//! Clients that misbehave: the `pubsub-hub` binary as a process, against a private
//! redis-server, with raw HTTP requests over TCP that are closed or half-closed at several
//! points of every route, Ctrl-C (SIGINT) during `pubsub-hub subscribe`, and the access
//! settings (short tokens, the wrong-token limit, trusted proxies) as the binary applies them.
//!
//! After the dashboard has been treated this way it must be as if each request had been
//! answered or never sent: `/state` lists exactly the subscribers Redis has (`PUBSUB
//! NUMSUB` of each one's channel), every name it does not list can be taken again, a
//! multi-publish went out whole or not at all, and the process' connections (to Redis in
//! `CLIENT LIST`, HTTP sockets, file descriptors) return to what they were.
//!
//! Every wait is bounded; the tests wait for what Redis or the process report.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use pubsub_hub_testkit::{RedisServer, wait_until};
use serde_json::Value;

use crate::util::{Running, WAIT, bin, http_exchange, http_response, ours};

/// The promise for Ctrl-C during `subscribe`.
const CTRL_C_EXIT: Duration = Duration::from_secs(1);

/// `pubsub-hub serve` on a free port against `server`; returns it with its HTTP port.
fn serve(server: &RedisServer) -> (Running, u16) {
    serve_with(server, |_| {})
}

/// As [`serve`], with `setup` applied to the command first (environment, more flags).
fn serve_with(server: &RedisServer, setup: impl FnOnce(&mut Command)) -> (Running, u16) {
    let mut cmd = bin();
    setup(&mut cmd);
    cmd.args([
        "serve",
        "--port",
        "0",
        "--no-embedded",
        "--redis-host",
        "127.0.0.1",
    ])
    .args(["--redis-port", &server.port().to_string()]);
    let serve = Running::spawn(cmd);
    loop {
        let line = serve.next_line("start-up line");
        if let Some(port) =
            line.strip_prefix("Redis pub/sub demo server listening on http://127.0.0.1:")
        {
            return (serve, port.parse().expect("a port"));
        }
    }
}

/// Server-side TCP sockets of the dashboard still open (ESTABLISHED or CLOSE_WAIT: the
/// client has gone, the server has not closed) on `port`.
fn open_http_sockets(port: u16) -> usize {
    let local = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|t| t.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&local) && (f[3] == "01" || f[3] == "08")
        })
        .count()
}

/// One complete form request (`Connection: close`); the status and the body.
fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    http_exchange(
        port,
        method,
        path,
        &["Content-Type: application/x-www-form-urlencoded"],
        body,
    )
}

fn state(port: u16) -> Value {
    let (status, body) = http(port, "GET", "/state", "");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("/state is JSON")
}

fn names(state: &Value) -> BTreeSet<String> {
    state["subscriptions"]
        .as_array()
        .expect("subscriptions")
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

fn defaults() -> BTreeSet<String> {
    ["orders-listener", "billing-listener", "all-notifications"]
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// Where the client gives up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Point {
    /// Half the request head sent.
    MidHeaders,
    /// The head and half the body sent.
    MidBody,
    /// The whole request sent, nothing read.
    AfterBody,
    /// The whole request sent and the first bytes of the answer read.
    WhileAnswering,
}

/// How the client gives up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leave {
    /// Closes the socket.
    Close,
    /// `shutdown(Write)`: sends FIN and keeps reading until the server closes.
    HalfClose,
}

const POINTS: [Point; 4] = [
    Point::MidHeaders,
    Point::MidBody,
    Point::AfterBody,
    Point::WhileAnswering,
];
const LEAVES: [Leave; 2] = [Leave::Close, Leave::HalfClose];

/// Sends `method path` with `body` and gives up at `point` by `leave`. Returns whether the
/// whole request reached the server.
fn give_up(port: u16, method: &str, path: &str, body: &str, point: Point, leave: Leave) -> bool {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let request = format!("{head}{body}");
    let sent = match point {
        Point::MidHeaders => &request[..head.len() / 2],
        Point::MidBody => &request[..head.len() + body.len() / 2],
        Point::AfterBody | Point::WhileAnswering => &request[..],
    };
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(sent.as_bytes()).unwrap();
    if point == Point::WhileAnswering {
        let mut first = [0u8; 16];
        let n = stream.read(&mut first).expect("the answer starts");
        assert!(n > 0 && first.starts_with(b"HTTP/1.1"), "{method} {path}");
    }
    match leave {
        Leave::Close => drop(stream),
        Leave::HalfClose => {
            let _ = stream.shutdown(Shutdown::Write);
            // Whatever comes until the server closes (a stream may go on for a while).
            stream
                .set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let mut sink = [0u8; 16 * 1024];
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(2) {
                match stream.read(&mut sink) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
    }
    sent.len() == request.len()
}

/// Every subscriber of `channel:i` named `name-i` that `/state` lists has exactly one
/// subscriber in Redis, and every one it does not list has none.
fn consistent(server: &RedisServer, listed: &BTreeSet<String>, prefix: &str, n: usize) -> bool {
    (0..n).all(|i| {
        let expected = i64::from(listed.contains(&format!("{prefix}-{i}")));
        server.numsub(&format!("{prefix}chan:{i}")) == expected
    })
}

#[test]
fn clients_that_leave_mid_request_leave_nothing_behind() {
    let server = RedisServer::start();
    let (dash, port) = serve(&server);
    server.wait_numsub("orders:new", 1, WAIT);
    assert_eq!(names(&state(port)), defaults());
    let baseline_redis = ours(&server);
    let baseline_fds = dash.settled_fds();

    // The reading routes, at every point, both ways.
    for path in [
        "/state",
        "/events",
        "/metrics",
        "/readyz",
        "/healthz",
        "/openapi.json",
        "/",
        "/app.js",
        "/no-such-route",
    ] {
        for point in POINTS {
            for leave in LEAVES {
                give_up(port, "GET", path, "", point, leave);
            }
        }
    }

    // `/reset` is one change: whatever point the client leaves at, the dashboard ends with
    // the three defaults, never with none.
    for point in POINTS {
        for leave in LEAVES {
            give_up(port, "POST", "/reset", "", point, leave);
            wait_until(WAIT, "the defaults are there after a cut /reset", || {
                names(&state(port)) == defaults()
            });
        }
    }
    for channel in ["orders:new", "billing:invoice"] {
        server.wait_numsub(channel, 1, WAIT);
    }
    server.wait_numpat(1, WAIT);

    // `/unsubscribe` of victims: each one is removed or left whole.
    let mut victims = 0;
    for point in POINTS {
        for leave in LEAVES {
            let form = format!("name=victim-{victims}&target=victimchan:{victims}");
            assert_eq!(http(port, "POST", "/subscribe", &form).0, 200);
            let form = format!("name=victim-{victims}");
            give_up(port, "POST", "/unsubscribe", &form, point, leave);
            victims += 1;
        }
    }

    // `/publish` with count=20: all twenty or none.
    let published_before = state(port)["stats"]["published_total"].as_u64().unwrap();
    let mut whole_requests = 0;
    for point in POINTS {
        for leave in LEAVES {
            let form = "channel=ghostpub&message=boo&count=20";
            if give_up(port, "POST", "/publish", form, point, leave) {
                whole_requests += 1;
            }
        }
    }

    // `/subscribe` of ghosts: at every point, and the burst of the field report (every
    // other request half-closed right after it was sent).
    let mut ghosts = 0;
    for point in POINTS {
        for leave in LEAVES {
            let form = format!("name=ghost-{ghosts}&target=ghostchan:{ghosts}");
            give_up(port, "POST", "/subscribe", &form, point, leave);
            ghosts += 1;
        }
    }
    for i in 0..20 {
        let form = format!("name=ghost-{ghosts}&target=ghostchan:{ghosts}");
        let leave = if i % 2 == 1 {
            Leave::HalfClose
        } else {
            Leave::Close
        };
        give_up(port, "POST", "/subscribe", &form, Point::AfterBody, leave);
        ghosts += 1;
    }

    // What /state lists is exactly what Redis has.
    let mut listed = BTreeSet::new();
    wait_until(WAIT, "/state and PUBSUB NUMSUB agree", || {
        listed = names(&state(port));
        consistent(&server, &listed, "ghost", ghosts)
            && consistent(&server, &listed, "victim", victims)
    });
    let published = state(port)["stats"]["published_total"].as_u64().unwrap() - published_before;
    assert!(
        published.is_multiple_of(20) && published <= 20 * whole_requests,
        "{published} publishes from {whole_requests} whole requests of 20"
    );
    // A request cut before its body was complete did nothing.
    let listed_ghosts: Vec<&String> = listed.iter().filter(|n| n.starts_with("ghost-")).collect();
    for (i, point) in POINTS.iter().enumerate() {
        if matches!(point, Point::MidHeaders | Point::MidBody) {
            for leave in 0..LEAVES.len() {
                let name = format!("ghost-{}", i * LEAVES.len() + leave);
                assert!(
                    !listed.contains(&name),
                    "{name} was cut at {point:?}: {listed_ghosts:?}"
                );
            }
        }
    }

    // Every name it does not list can be taken; every one it lists is taken.
    for prefix in ["ghost", "victim"] {
        let n = if prefix == "ghost" { ghosts } else { victims };
        for i in 0..n {
            let name = format!("{prefix}-{i}");
            let form = format!("name={name}&target={prefix}chan:{i}");
            let (status, body) = http(port, "POST", "/subscribe", &form);
            if listed.contains(&name) {
                assert_eq!(status, 400, "{name} is listed, so it is taken: {body}");
                assert!(body.contains("already exists"), "{body}");
            } else {
                assert_eq!(status, 200, "{name} is not listed, so it is free: {body}");
            }
        }
    }
    let all = names(&state(port));
    assert!(consistent(&server, &all, "ghost", ghosts));
    assert_eq!(all.len(), 3 + ghosts + victims, "{all:?}");

    // Removing them all leaves Redis, the sockets and the process as they were.
    for name in all.iter().filter(|n| !defaults().contains(*n)) {
        let (status, body) = http(port, "POST", "/unsubscribe", &format!("name={name}"));
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"removed\":true"), "{body}");
    }
    assert_eq!(names(&state(port)), defaults());
    assert!(consistent(&server, &BTreeSet::new(), "ghost", ghosts));
    assert!(consistent(&server, &BTreeSet::new(), "victim", victims));
    wait_until(WAIT, "CLIENT LIST is back to the baseline", || {
        ours(&server) == baseline_redis
    });
    wait_until(WAIT, "no HTTP connection is left open", || {
        open_http_sockets(port) == 0
    });
    let started = Instant::now();
    let mut fds = dash.settled_fds();
    while fds.len() != baseline_fds.len() && started.elapsed() < WAIT {
        fds = dash.settled_fds();
    }
    assert!(
        fds.len() == baseline_fds.len(),
        "the process' file descriptors are not back to the baseline: {} then, {} now: \
         {baseline_fds:?} / {fds:?}",
        baseline_fds.len(),
        fds.len()
    );
}

/// `pubsub-hub subscribe` with flags pointing at `port`.
fn subscribe_to(port: u16, channel: &str) -> Running {
    let mut cmd = bin();
    cmd.args(["--redis-host", "127.0.0.1", "--redis-port"])
        .arg(port.to_string())
        .args(["subscribe", channel]);
    Running::spawn(cmd)
}

#[test]
fn ctrl_c_stops_subscribe_within_a_second_while_receiving() {
    let server = RedisServer::start();
    let mut sub = subscribe_to(server.port(), "jobs");
    sub.stderr_containing("subscribed to 1 channel: jobs");
    server.wait_numsub("jobs", 1, WAIT);
    server.publish("jobs", b"one");
    assert_eq!(sub.next_line("a message"), "jobs one");

    sub.signal("INT");
    let (code, took) = sub.wait_timed(WAIT);
    assert_eq!(code, Some(0), "Ctrl-C is a normal stop");
    assert!(took < CTRL_C_EXIT, "exited after {took:?}");
    server.wait_numsub("jobs", 0, WAIT);
}

#[test]
fn ctrl_c_stops_subscribe_within_a_second_while_redis_is_away() {
    let mut server = RedisServer::start();
    let mut sub = subscribe_to(server.port(), "jobs");
    sub.stderr_containing("subscribed to 1 channel: jobs");
    server.stop();
    sub.stderr_containing("connection to Redis lost");

    sub.signal("INT");
    let (code, took) = sub.wait_timed(WAIT);
    assert_eq!(code, Some(0));
    assert!(took < CTRL_C_EXIT, "exited after {took:?}");
}

#[test]
fn ctrl_c_stops_subscribe_within_a_second_while_redis_does_not_answer() {
    // Something that accepts connections and never answers: a stalled Redis.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut sub = subscribe_to(port, "jobs");
    // The command is waiting for an answer once it has connected and spoken.
    let (mut conn, _) = listener.accept().expect("the command connects");
    conn.set_read_timeout(Some(WAIT)).unwrap();
    let mut hello = [0u8; 64];
    assert!(conn.read(&mut hello).expect("it sends a command") > 0);

    sub.signal("INT");
    let (code, took) = sub.wait_timed(WAIT);
    assert_eq!(code, Some(0));
    assert!(took < CTRL_C_EXIT, "exited after {took:?}");
}

/// `GET path` on a fresh connection with extra header lines; the status and the head.
fn head_of(port: u16, path: &str, headers: &[&str]) -> (u16, String) {
    let (status, head, _) = http_response(port, "GET", path, headers, "");
    (status, head)
}

#[test]
fn a_short_token_is_refused_at_start_in_one_line() {
    for (how, value) in [("flag", "Zq8x-s3cret-015"), ("env", "s3cret")] {
        let mut cmd = bin();
        cmd.args(["serve", "--port", "0", "--no-embedded"]);
        if how == "flag" {
            cmd.args(["--token", value]);
        } else {
            cmd.env("PUBSUB_HUB_TOKEN", value);
        }
        let mut run = Running::spawn(cmd);
        let code = run.wait(WAIT);
        assert_eq!(code, Some(2), "{how}");
        let line = run.err.recv_timeout(WAIT).expect("an error line");
        assert!(
            line.starts_with("pubsub-hub: ")
                && line.contains("at least 16")
                && !line.contains("s3cret"),
            "{how}: {line}"
        );
        assert!(
            run.err.recv_timeout(Duration::from_millis(200)).is_err(),
            "one line"
        );
    }
}

#[test]
fn the_access_settings_reach_the_dashboard() {
    let server = RedisServer::start();
    let token = "Zq8x-s3cret-0123456789";
    let (_dash, port) = serve_with(&server, |cmd| {
        cmd.env("PUBSUB_HUB_TOKEN", token)
            .env("PUBSUB_HUB_TRUSTED_PROXIES", "127.0.0.1");
    });
    // Over HTTPS at the trusted proxy, the login cookie is Secure and the token leaves the
    // address bar.
    let (status, head) = head_of(
        port,
        &format!("/?token={token}"),
        &["X-Forwarded-Proto: https"],
    );
    assert_eq!(status, 303, "{head}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("\r\nlocation: /\r\n"), "{head}");
    let cookie = head
        .lines()
        .find(|l| l.starts_with("set-cookie:"))
        .expect("a cookie");
    assert!(
        cookie.contains("httponly") && cookie.ends_with("; secure"),
        "{cookie}"
    );
    // Wrong tokens from one forwarded client meet a 429; the proxy's other clients do not.
    let mut limited = false;
    for i in 0..200 {
        let wrong = format!("Authorization: Bearer guess-{i:016}");
        let (status, head) = head_of(port, "/state", &[&wrong, "X-Forwarded-For: 203.0.113.9"]);
        if status == 429 {
            assert!(
                head.to_ascii_lowercase().contains("retry-after: "),
                "{head}"
            );
            limited = true;
            break;
        }
        assert_eq!(status, 401, "{head}");
    }
    assert!(limited, "200 wrong tokens and no 429");
    let right = format!("Authorization: Bearer {token}");
    let (status, _) = head_of(port, "/state", &[&right, "X-Forwarded-For: 203.0.113.10"]);
    assert_eq!(status, 200);
}
