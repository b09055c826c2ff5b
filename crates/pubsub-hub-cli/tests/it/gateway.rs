//! `pubsub-hub gateway` as a process: start-up lines, an SSE client receiving what Redis
//! and the server API publish, the shutdown disconnect on SIGTERM, presence after a SIGKILL,
//! the public-bind refusal and a configured Redis that is down being waited for. Every wait is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use pubsub_hub_testkit::RedisServer;
use serde_json::{Value, json};

use crate::util::{Running, WAIT, bin};

/// The port from the gateway's first start-up line.
fn port_of(gateway: &Running) -> u16 {
    let line = gateway.next_line("the listening line");
    line.strip_prefix("pubsub-hub gateway listening on ws://127.0.0.1:")
        .and_then(|rest| rest.strip_suffix("/connection/websocket"))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap()
}

/// An SSE connection: the events' JSON, one by one.
struct Events {
    reader: BufReader<TcpStream>,
}

impl Events {
    fn open(port: u16, connect: &Value) -> Events {
        let query: String = connect
            .to_string()
            .bytes()
            .map(|b| format!("%{b:02X}"))
            .collect();
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            stream,
            "GET /connection/uni_sse?cf_connect={query} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(stream);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(
            status.starts_with("HTTP/1.0 200") || status.starts_with("HTTP/1.1 200"),
            "{status}"
        );
        Events { reader }
    }

    fn next(&mut self) -> Option<Value> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).unwrap() == 0 {
                return None;
            }
            if let Some(data) = line.strip_prefix("data: ") {
                return Some(serde_json::from_str(data.trim_end()).unwrap());
            }
        }
    }
}

fn api(port: u16, method: &str, key: &str, body: &Value) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let body = body.to_string();
    write!(
        stream,
        "POST /api/{method} HTTP/1.0\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn the_gateway_serves_sse_and_the_api_and_shuts_down_on_sigterm() {
    let server = RedisServer::start();
    let mut cmd = bin();
    cmd.args([
        "--redis-port",
        &server.port().to_string(),
        "gateway",
        "--port",
        "0",
        "--no-embedded",
    ])
    .env("PUBSUB_HUB_API_KEY", "process-key");
    let mut gateway = Running::spawn(cmd);
    let port = port_of(&gateway);
    assert_eq!(
        gateway.next_line("the Redis line"),
        format!("Using Redis at localhost:{}", server.port())
    );
    // Loopback without a secret: anonymous clients are allowed.
    let mut events = Events::open(port, &json!({"subs": {"news": {}}}));
    let connect = events.next().unwrap();
    assert_eq!(connect["connect"]["subs"], json!({"news": {}}), "{connect}");
    server.wait_numsub("news", 1, WAIT);
    let mut redis = server.connection();
    let _: i64 = redis::cmd("PUBLISH")
        .arg("news")
        .arg("{\"from\":\"redis\"}")
        .query(&mut redis)
        .unwrap();
    assert_eq!(
        events.next().unwrap(),
        json!({"channel": "news", "pub": {"data": {"from": "redis"}}})
    );
    let answer = api(
        port,
        "publish",
        "process-key",
        &json!({"channel": "news", "data": [1]}),
    );
    assert!(answer.ends_with("{\"result\":{}}"), "{answer}");
    assert_eq!(events.next().unwrap()["pub"]["data"], json!([1]));
    let refused = api(
        port,
        "publish",
        "wrong",
        &json!({"channel": "news", "data": 1}),
    );
    assert!(
        refused.starts_with("HTTP/1.1 401") || refused.starts_with("HTTP/1.0 401"),
        "{refused}"
    );

    gateway.signal("TERM");
    assert_eq!(
        events.next().unwrap(),
        json!({"disconnect": {"code": 3001, "reason": "shutdown", "reconnect": true}})
    );
    assert_eq!(gateway.wait(WAIT), Some(0));
    server.wait_numsub("news", 0, WAIT);
}

#[test]
fn a_public_bind_without_secret_or_anonymous_access_is_refused() {
    let out = bin()
        .args([
            "gateway",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--no-embedded",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--hmac-secret") && err.contains("--allow-anonymous"),
        "{err}"
    );
}

#[test]
fn bad_gateway_settings_are_one_line_naming_the_key() {
    let out = bin()
        .args(["gateway", "--print-config"])
        .env("PUBSUB_HUB_GATEWAY_PUBLISH", "everyone")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PUBSUB_HUB_GATEWAY_PUBLISH"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    let out = gateway_with_config(
        &path,
        "[gateway]\nwrite_queue_bytes = 0\n",
        &["--port", "0", "--no-embedded"],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("gateway.write_queue_bytes"), "{err}");

    let out = gateway_with_config(
        &path,
        "[gateway]\npresence_ttl_ms = 5000\n[gateway.namespaces.chat]\npublish = \"any\"\npresence = true\njoin_leave = false\n[gateway.namespaces.private]\nsubscribe = \"token\"\n",
        &["--print-config"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(r#"namespaces = { "chat" = { publish = "any", presence = true, join_leave = false }, "private" = { subscribe = "token" } }  # file"#),
        "{text}"
    );
    assert!(text.contains("presence_ttl_ms = 5000  # file"), "{text}");
    assert!(text.contains("presence = false  # default"), "{text}");

    let out = gateway_with_config(
        &path,
        "[gateway.namespaces.feed]\nhistory_size = 100\nhistory_ttl = \"5m\"\nforce_recovery = true\n",
        &["--print-config"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(r#"namespaces = { "feed" = { history_size = 100, history_ttl = "5m", force_recovery = true } }  # file"#),
        "{text}"
    );
    let out = gateway_with_config(
        &path,
        "[gateway.namespaces.feed]\nhistory_size = 100\nhistory_ttl = \"soon\"\n",
        &["--print-config"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("soon"), "{err}");
}

/// `GET /readyz`'s status code.
fn readyz(port: u16) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(stream, "GET /readyz HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut r = String::new();
    stream.read_to_string(&mut r).unwrap();
    r.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {r:?}"))
}

#[test]
fn a_configured_redis_that_is_down_is_waited_for_not_replaced() {
    // A port the test kit owns, with nothing on it yet; no --no-embedded: a configured
    // address alone rules the private server out (the private one, for an unconfigured
    // address, is tested in the launcher and dashboard crates).
    let mut server = RedisServer::start();
    server.stop();
    let mut cmd = bin();
    cmd.args([
        "--redis-host",
        "127.0.0.1",
        "--redis-port",
        &server.port().to_string(),
        "gateway",
        "--port",
        "0",
    ]);
    let gateway = Running::spawn(cmd);
    let port = port_of(&gateway);
    assert_eq!(
        gateway.next_line("the Redis line"),
        format!("Using Redis at 127.0.0.1:{}", server.port())
    );
    assert_eq!(readyz(port), 503);

    server.start_again();
    server.wait_until(WAIT, "/readyz answers 200", || readyz(port) == 200);
    // In the moment Redis comes back, the server-side subscription can still meet a link
    // that has not noticed yet: the client is then told to reconnect (3004 with
    // `reconnect: true`), as an SDK or EventSource would, and the next attempt connects.
    let mut connected = None;
    server.wait_until(WAIT, "a uni_sse client connects", || {
        let mut events = Events::open(port, &json!({"subs": {"local": {}}}));
        let first = events.next().unwrap();
        if first.get("connect").is_some() {
            connected = Some(events);
            return true;
        }
        assert_eq!(first["disconnect"]["reconnect"], true, "{first}");
        false
    });
    let _events = connected.unwrap();
    server.wait_numsub("local", 1, WAIT);
}

#[test]
fn the_gateway_sample_in_the_cli_docs_loads() {
    let docs = include_str!("../../../../docs/cli.md");
    let sample = docs
        .split("```toml\n")
        .filter_map(|rest| rest.split_once("```").map(|(block, _)| block))
        .find(|block| block.contains("[gateway.namespaces."))
        .expect("a gateway sample in docs/cli.md");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sample.toml");
    let out = gateway_with_config(&path, sample, &["--print-config"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(r#""private" = { subscribe = "token" }"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#""chat" = { publish = "subscribers", history_size = 1000, history_ttl = "5m", force_recovery = true, presence = true, join_leave = true }"#
        ),
        "{text}"
    );
}

/// The JSON body of an `api` answer.
fn api_result(port: u16, method: &str, key: &str, body: &Value) -> Value {
    let answer = api(port, method, key, body);
    let (_, json) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no body in {answer}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

/// The client id named by a `join` or `leave` event of `events`, skipping anything else
/// (pings, publications).
fn next_presence_event(events: &mut Events, kind: &str) -> String {
    loop {
        let event = events.next().expect("the stream still open");
        if let Some(id) = event[kind]["info"]["client"].as_str() {
            return id.to_owned();
        }
    }
}

#[test]
fn a_gateway_process_killed_with_sigkill_has_its_clients_leave_within_the_expiry() {
    const TTL: Duration = Duration::from_secs(2);
    const KEY: &str = "presence-key";
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(
        &path,
        format!(
            "[gateway]\npresence_ttl_ms = {}\n[gateway.namespaces.room]\npresence = true\njoin_leave = true\n",
            TTL.as_millis()
        ),
    )
    .unwrap();
    let start = || {
        let mut cmd = bin();
        cmd.args([
            "--config",
            path.to_str().unwrap(),
            "--redis-port",
            &server.port().to_string(),
            "gateway",
            "--port",
            "0",
            "--no-embedded",
        ])
        .env("PUBSUB_HUB_API_KEY", KEY);
        let gateway = Running::spawn(cmd);
        let port = port_of(&gateway);
        (gateway, port)
    };
    let (_survivor, port_a) = start();
    let (mut doomed, port_b) = start();
    let stats = |port: u16| {
        api_result(
            port,
            "presence_stats",
            KEY,
            &json!({"channel": "room:k"}),
        )["result"]["num_clients"]
            .clone()
    };

    // A watcher on the survivor, three clients on the process that will be killed.
    let mut watcher = Events::open(port_a, &json!({"subs": {"room:k": {}}}));
    let connect = watcher.next().unwrap();
    let watcher_id = connect["connect"]["client"].as_str().unwrap().to_owned();
    assert_eq!(next_presence_event(&mut watcher, "join"), watcher_id);
    let mut on_doomed = Vec::new();
    let mut doomed_ids = Vec::new();
    for _ in 0..3 {
        let mut events = Events::open(port_b, &json!({"subs": {"room:k": {}}}));
        let connect = events.next().unwrap();
        doomed_ids.push(connect["connect"]["client"].as_str().unwrap().to_owned());
        on_doomed.push(events);
    }
    let mut joined = Vec::new();
    while joined.len() < doomed_ids.len() {
        joined.push(next_presence_event(&mut watcher, "join"));
    }
    joined.sort();
    doomed_ids.sort();
    assert_eq!(
        joined, doomed_ids,
        "the watcher saw the other process's joins"
    );
    assert_eq!(stats(port_a), json!(4));

    doomed.signal("KILL");
    let killed_at = Instant::now();
    assert_eq!(doomed.wait(WAIT), None, "killed by a signal, no exit code");
    // A killed process cleans nothing up: its clients are still listed...
    assert_eq!(stats(port_a), json!(4), "right after the kill");
    // ...until their entries expire; then the survivor's next refresh removes them and
    // announces each one's leave, once.
    let mut left = Vec::new();
    while left.len() < doomed_ids.len() {
        let id = next_presence_event(&mut watcher, "leave");
        assert!(
            doomed_ids.contains(&id) && !left.contains(&id),
            "leave of {id}"
        );
        left.push(id);
    }
    let elapsed = killed_at.elapsed();
    assert!(
        elapsed >= TTL - Duration::from_millis(500),
        "leaves {elapsed:?} after the kill, before the expiry"
    );
    assert!(
        elapsed < TTL * 4 / 3 + Duration::from_secs(3),
        "leaves only {elapsed:?} after the kill"
    );
    assert_eq!(stats(port_a), json!(1));
    drop(on_doomed);
}

/// Writes `contents` to `path` and runs `pubsub-hub --config PATH gateway ARGS...` to its end.
fn gateway_with_config(
    path: &std::path::Path,
    contents: &str,
    args: &[&str],
) -> std::process::Output {
    std::fs::write(path, contents).unwrap();
    bin()
        .arg("--config")
        .arg(path)
        .arg("gateway")
        .args(args)
        .output()
        .unwrap()
}
