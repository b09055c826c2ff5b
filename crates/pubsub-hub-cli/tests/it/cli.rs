//! The commands as a process: publish, subscribe, inspect and serve against private
//! redis-server processes, with their flags, environment, configuration file, exit codes
//! and signals.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pubsub_hub_testkit::{
    RedisServer, assert_exit_code as assert_exit, child_output, run_to_exit as run,
    stderr_text as stderr, stdout_text as stdout,
};
use serde_json::Value;

use crate::util::{Running, WAIT, bin, http_exchange, lines, ours};

/// The binary pointed at `server` with flags.
fn bin_at(server: &RedisServer) -> Command {
    let mut c = bin();
    c.args(["--redis-host", "127.0.0.1", "--redis-port"])
        .arg(server.port().to_string());
    c
}

fn assert_one_line_error(o: &Output) -> String {
    let err = stderr(o);
    assert_eq!(err.lines().count(), 1, "one line on stderr, got: {err:?}");
    assert!(err.starts_with("pubsub-hub: "), "{err:?}");
    assert!(
        !err.contains("Error {") && !err.contains("kind:"),
        "no Debug dump: {err:?}"
    );
    err
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn publish_and_subscribe_round_trip_then_count_exits_0() {
    let server = RedisServer::start();
    let mut sub = bin_at(&server);
    sub.args(["subscribe", "--count", "2", "orders:new"]);
    let mut sub = Running::spawn(sub);
    server.wait_numsub("orders:new", 1, WAIT);

    let mut publish = bin_at(&server);
    publish.args(["publish", "orders:new", r#"{"order_id": 42}"#]);
    let o = run(publish, WAIT);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "1\n");

    let mut publish = bin_at(&server);
    publish.args(["publish", "--count", "3", "orders:new", "hello world"]);
    let o = run(publish, WAIT);
    assert_exit(&o, 0);
    // The subscriber leaves after the second message; Redis reports each delivery.
    let out = stdout(&o);
    let counts: Vec<&str> = out.lines().collect();
    assert_eq!(counts.len(), 3, "one count per publish: {counts:?}");
    assert_eq!(counts[0], "1");

    assert_eq!(
        sub.next_line("first message"),
        r#"orders:new {"order_id":42}"#
    );
    assert_eq!(
        sub.next_line("second message"),
        r#"orders:new "hello world""#
    );
    assert_eq!(sub.wait(WAIT), Some(0), "--count 2 exits 0");
    server.wait_numsub("orders:new", 0, WAIT);
}

#[test]
fn redis_cli_publish_reaches_our_json_subscriber() {
    let server = RedisServer::start();
    let mut sub = bin_at(&server);
    sub.args([
        "subscribe",
        "--format",
        "json",
        "--count",
        "2",
        "chat:lobby",
    ]);
    let mut sub = Running::spawn(sub);
    server.wait_numsub("chat:lobby", 1, WAIT);

    let o = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &server.port().to_string()])
        .args(["publish", "chat:lobby", "hello from redis-cli"])
        .output()
        .expect("redis-cli runs");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "1");
    server.publish("chat:lobby", &[0xff, 0x00, 0x80]);

    let first: Value = serde_json::from_str(&sub.next_line("text message")).unwrap();
    assert_eq!(first["channel"], "chat:lobby");
    assert_eq!(first["pattern"], Value::Null);
    assert_eq!(first["payload"], "hello from redis-cli");
    assert_eq!(first["encoding"], "text");
    assert!(first["received_at_ms"].as_u64().unwrap() > 0);
    let second: Value = serde_json::from_str(&sub.next_line("binary message")).unwrap();
    assert_eq!(second["encoding"], "base64");
    assert_eq!(second["payload"], "/wCA");
    assert_eq!(sub.wait(WAIT), Some(0));
}

#[test]
fn our_publish_reaches_a_redis_cli_subscriber() {
    let server = RedisServer::start();
    let mut cli = Command::new("redis-cli");
    cli.args(["-h", "127.0.0.1", "-p", &server.port().to_string()])
        .args(["subscribe", "alerts"]);
    let cli = Running::spawn(cli);
    server.wait_numsub("alerts", 1, WAIT);

    let mut publish = bin_at(&server);
    publish.args(["publish", "--raw", "alerts", "disk almost full"]);
    let o = run(publish, WAIT);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "1\n");
    // redis-cli prints subscribe confirmations, then message / channel / payload lines.
    let deadline = Instant::now() + WAIT;
    loop {
        let line = cli.next_line("redis-cli output");
        if line == "disk almost full" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "redis-cli never showed the payload"
        );
    }
}

#[test]
fn pattern_subscription_shows_the_matching_glob() {
    let server = RedisServer::start();
    let mut sub = bin_at(&server);
    sub.args(["subscribe", "--pattern", "--count", "1", "notifications:*"]);
    let mut sub = Running::spawn(sub);
    server.wait_numpat(1, WAIT);
    assert_eq!(
        server.publish("notifications:billing", b"invoice\nready"),
        1
    );
    assert_eq!(
        sub.next_line("pattern message"),
        "notifications:billing (via notifications:*) invoice\\nready"
    );
    assert_eq!(sub.wait(WAIT), Some(0));
}

#[test]
fn shard_channels_round_trip_and_show_in_inspect() {
    let server = RedisServer::start();
    let mut sub = bin_at(&server);
    sub.args(["subscribe", "--shard", "--count", "1", "room:7"]);
    let mut sub = Running::spawn(sub);
    server.wait_until(WAIT, "SHARDNUMSUB room:7 is 1", || {
        let reply: (String, i64) =
            redis::from_redis_value(server.cmd(&["PUBSUB", "SHARDNUMSUB", "room:7"]))
                .expect("a SHARDNUMSUB pair");
        reply.1 == 1
    });

    let mut inspect = bin_at(&server);
    inspect.arg("inspect");
    let o = run(inspect, WAIT);
    assert_exit(&o, 0);
    let text = stdout(&o);
    assert!(
        text.starts_with("no channel matching \"*\" has a subscriber"),
        "{text}"
    );
    let shard_line = text
        .lines()
        .find(|l| l.starts_with("room:7"))
        .expect("a shard row");
    assert_eq!(
        shard_line.split_whitespace().collect::<Vec<_>>(),
        ["room:7", "1"]
    );

    let mut publish = bin_at(&server);
    publish.args(["publish", "--shard", "room:7", "hi"]);
    let o = run(publish, WAIT);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "1\n");
    assert_eq!(sub.next_line("shard message"), r#"room:7 "hi""#);
    assert_eq!(sub.wait(WAIT), Some(0));
}

#[test]
fn publish_reads_stdin_and_files() {
    let server = RedisServer::start();
    let mut con = server.connection();
    let mut ps = con.as_pubsub();
    ps.subscribe("inbox").unwrap();
    server.wait_numsub("inbox", 1, WAIT);

    let mut publish = bin_at(&server);
    publish
        .args(["publish", "inbox", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = publish.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"x\": [1, 2]}\n")
        .unwrap();
    let o = child_output(child, WAIT);
    assert_exit(&o, 0);
    let m = ps.get_message().unwrap();
    assert_eq!(m.get_payload_bytes(), b"{\"x\":[1,2]}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob.bin");
    std::fs::write(&path, [0u8, 159, 146, 150, b'\n']).unwrap();
    let mut publish = bin_at(&server);
    publish
        .args(["publish", "--raw", "--file"])
        .arg(&path)
        .arg("inbox");
    let o = run(publish, WAIT);
    assert_exit(&o, 0);
    let m = ps.get_message().unwrap();
    assert_eq!(m.get_payload_bytes(), &[0u8, 159, 146, 150, b'\n']);

    let mut missing = bin_at(&server);
    missing.args(["publish", "--file", "/nonexistent/message.json", "inbox"]);
    let o = run(missing, WAIT);
    assert_exit(&o, 1);
    assert_one_line_error(&o);
}

#[test]
fn inspect_shows_channels_numsub_and_numpat() {
    let server = RedisServer::start();
    let mut c1 = server.connection();
    let mut c2 = server.connection();
    let mut c3 = server.connection();
    let mut p1 = c1.as_pubsub();
    let mut p2 = c2.as_pubsub();
    let mut p3 = c3.as_pubsub();
    p1.subscribe("orders:new").unwrap();
    p2.subscribe(&["orders:new", "billing:invoice"]).unwrap();
    p3.psubscribe("notifications:*").unwrap();
    server.wait_numsub("orders:new", 2, WAIT);
    server.wait_numsub("billing:invoice", 1, WAIT);
    server.wait_numpat(1, WAIT);

    let mut inspect = bin_at(&server);
    inspect.arg("inspect");
    let o = run(inspect, WAIT);
    assert_exit(&o, 0);
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["CHANNEL", "SUBSCRIBERS", "ACTIVE"]
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["billing:invoice", "1", "yes"]
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["orders:new", "2", "yes"]
    );
    assert_eq!(lines[3], "pattern subscriptions (NUMPAT): 1");

    let mut inspect = bin_at(&server);
    inspect.args([
        "inspect",
        "--json",
        "--pattern",
        "orders:*",
        "orders:new",
        "nobody:here",
    ]);
    let o = run(inspect, WAIT);
    assert_exit(&o, 0);
    let doc: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(doc["active_channels"], serde_json::json!(["orders:new"]));
    assert_eq!(
        doc["numsub"],
        serde_json::json!({"orders:new": 2, "nobody:here": 0})
    );
    assert_eq!(doc["numpat"], 1);
}

#[test]
fn malformed_url_is_a_one_line_usage_error_without_the_password() {
    let mut c = bin();
    c.args([
        "publish",
        "--redis-url",
        "http://:hunter2@example:6379/",
        "ch",
        "m",
    ]);
    let o = run(c, WAIT);
    assert_exit(&o, 2);
    let err = assert_one_line_error(&o);
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.contains("--redis-url"), "{err}");

    let mut c = bin();
    c.env("REDIS_URL", "redis://:hunter2@127.0.0.1:notaport/")
        .args(["inspect"]);
    let o = run(c, WAIT);
    assert_exit(&o, 2);
    assert!(!assert_one_line_error(&o).contains("hunter2"));
}

#[test]
fn unreachable_redis_exits_3_with_one_line() {
    let port = closed_port().to_string();
    for args in [
        vec!["publish", "ch", "m"],
        vec!["subscribe", "ch"],
        vec!["inspect"],
    ] {
        let mut c = bin();
        c.args(["--redis-host", "127.0.0.1", "--redis-port", &port])
            .args(&args);
        let o = run(c, WAIT);
        assert_exit(&o, 3);
        let err = assert_one_line_error(&o);
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    }
    let mut c = bin();
    c.args([
        "publish",
        "--redis-url",
        &format!("redis://:hunter2@127.0.0.1:{port}/"),
        "ch",
        "m",
    ]);
    let o = run(c, WAIT);
    assert_exit(&o, 3);
    assert!(!assert_one_line_error(&o).contains("hunter2"));
}

#[test]
fn usage_errors_exit_2() {
    // clap's errors: one line, its message, and where to look next.
    for (args, says, hint) in [
        (
            vec!["publish"],
            "required arguments were not provided: <CHANNEL>",
            "pubsub-hub publish",
        ),
        (
            vec!["subscribe"],
            "required arguments were not provided",
            "pubsub-hub subscribe",
        ),
        (
            vec!["publish", "--count", "0", "ch", "m"],
            "invalid value '0' for '--count",
            "pubsub-hub publish",
        ),
        (
            vec!["subscribe", "--format", "xml", "ch"],
            "[possible values: text, json]",
            "pubsub-hub subscribe",
        ),
        (
            vec!["--port", "1", "publish", "ch", "m"],
            "--port is an option of `serve`",
            "pubsub-hub",
        ),
        (
            vec!["--port", "http", "serve"],
            "invalid value 'http' for '--port",
            "pubsub-hub serve",
        ),
        (
            vec!["no-such-command"],
            "unrecognized subcommand 'no-such-command'",
            "pubsub-hub",
        ),
    ] {
        let mut c = bin();
        c.args(&args);
        let o = run(c, WAIT);
        assert_exit(&o, 2);
        let err = assert_one_line_error(&o);
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(
            err.trim_end().ends_with(&format!("; try '{hint} --help'")),
            "{args:?}: {err}"
        );
        assert!(!err.contains("error:"), "no clap prefix: {err}");
    }
    // Our own usage errors are one line too.
    let mut c = bin();
    c.args(["publish", "ch"]);
    let o = run(c, WAIT);
    assert_exit(&o, 2);
    assert!(assert_one_line_error(&o).contains("no message"));

    let o = run(
        {
            let mut c = bin();
            c.arg("--help");
            c
        },
        WAIT,
    );
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("Exit codes:"));
}

#[test]
fn flags_win_over_environment() {
    let server = RedisServer::start();
    let good = server.port().to_string();
    let bad = closed_port().to_string();
    let publish = |env: &[(&str, String)], flags: &[&str]| {
        let mut c = bin();
        for (k, v) in env {
            c.env(k, v);
        }
        c.args(flags).args(["publish", "ch", "1"]);
        run(c, WAIT).status.code()
    };
    let host = ("REDIS_HOST", "127.0.0.1".to_owned());
    // Env alone is used.
    assert_eq!(
        publish(&[host.clone(), ("REDIS_PORT", good.clone())], &[]),
        Some(0)
    );
    // A flag beats the same setting's env.
    assert_eq!(
        publish(
            &[host.clone(), ("REDIS_PORT", bad.clone())],
            &["--redis-port", &good]
        ),
        Some(0)
    );
    // A host/port flag beats REDIS_URL from the environment.
    assert_eq!(
        publish(
            &[
                host.clone(),
                ("REDIS_URL", format!("redis://127.0.0.1:{bad}/"))
            ],
            &["--redis-port", &good]
        ),
        Some(0)
    );
    // Within the environment, REDIS_URL beats REDIS_HOST/REDIS_PORT.
    assert_eq!(
        publish(
            &[("REDIS_URL", server.url()), ("REDIS_PORT", bad.clone())],
            &[]
        ),
        Some(0)
    );
    // A URL flag beats everything.
    assert_eq!(
        publish(
            &[("REDIS_URL", server.url())],
            &[
                "--redis-url",
                &format!("redis://127.0.0.1:{bad}/"),
                "--redis-port",
                &good
            ]
        ),
        Some(3)
    );
}

#[test]
fn subscribe_stops_on_sigterm_and_reports_reconnects() {
    let server = RedisServer::start();
    let mut sub = bin_at(&server);
    sub.args(["subscribe", "jobs"]);
    let mut sub = Running::spawn(sub);
    sub.stderr_containing("subscribed to 1 channel: jobs");
    server.wait_numsub("jobs", 1, WAIT);

    assert!(server.kill_pubsub_clients() >= 1);
    sub.stderr_containing("connection to Redis lost");
    sub.stderr_containing("reconnected");
    server.wait_numsub("jobs", 1, WAIT);
    server.publish("jobs", b"after the reconnect");
    assert_eq!(
        sub.next_line("message after reconnect"),
        "jobs after the reconnect"
    );

    let start = Instant::now();
    sub.signal("TERM");
    assert_eq!(sub.wait(Duration::from_secs(2)), Some(0), "SIGTERM exits 0");
    assert!(start.elapsed() < Duration::from_secs(2));
    server.wait_numsub("jobs", 0, WAIT);
}

#[test]
fn serve_prints_the_startup_lines_and_stops_on_sigterm() {
    let server = RedisServer::start();
    let mut serve = bin();
    // Env points at nothing; the flags must win.
    serve
        .env("REDIS_HOST", "127.0.0.1")
        .env("REDIS_PORT", closed_port().to_string())
        .args([
            "--port",
            "0",
            "--no-embedded",
            "--redis-port",
            &server.port().to_string(),
        ]);
    let mut serve = Running::spawn(serve);
    let listening = serve.next_line("listening line");
    let url = listening
        .strip_prefix("Redis pub/sub demo server listening on http://127.0.0.1:")
        .unwrap_or_else(|| panic!("unexpected first line {listening:?}"));
    let http_port: u16 = url.parse().expect("a port number");
    assert_ne!(http_port, 0);
    assert_eq!(
        serve.next_line("redis line"),
        format!("Using Redis at 127.0.0.1:{}", server.port())
    );
    assert_eq!(
        serve.next_line("seeded line"),
        "Seeded 3 default subscription(s)"
    );
    server.wait_numsub("orders:new", 1, WAIT);
    assert!(ours(&server) >= 4, "the publisher and three subscribers");
    // An open push stream must not hold the shutdown up.
    let mut events = std::net::TcpStream::connect(("127.0.0.1", http_port)).unwrap();
    events.set_read_timeout(Some(WAIT)).unwrap();
    events
        .write_all(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 512];
    let n = std::io::Read::read(&mut events, &mut first).unwrap();
    let head = String::from_utf8_lossy(&first[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let start = Instant::now();
    serve.signal("TERM");
    assert_eq!(serve.wait(Duration::from_secs(2)), Some(0));
    assert!(start.elapsed() < Duration::from_secs(2));
    server.wait_numsub("orders:new", 0, WAIT);
    server.wait_until(
        WAIT,
        "none of our connections is left in CLIENT LIST",
        || ours(&server) == 0,
    );
}

#[test]
fn serve_with_a_configured_redis_that_is_down_starts_and_connects_when_it_appears() {
    // A port the test kit owns, with nothing on it yet. No --no-embedded: a configured
    // address alone rules the private server out.
    let mut server = RedisServer::start();
    server.stop();
    let mut c = bin_at(&server);
    c.args(["serve", "--port", "0"]);
    let serve = Running::spawn(c);
    let warning = serve.stderr_containing("does not answer");
    assert!(
        warning.contains(&format!("127.0.0.1:{}", server.port())),
        "{warning}"
    );
    let mut port = None;
    let mut lines = Vec::new();
    while port.is_none() {
        let line = serve.next_line("start-up line");
        if let Some(p) =
            line.strip_prefix("Redis pub/sub demo server listening on http://127.0.0.1:")
        {
            port = Some(p.parse::<u16>().expect("a port"));
        }
        lines.push(line);
    }
    let port = port.unwrap();
    assert!(
        !lines.iter().any(|l| l.contains("private")),
        "no private server: {lines:?}"
    );
    assert_eq!(
        serve.next_line("using"),
        format!("Using Redis at 127.0.0.1:{}", server.port())
    );
    let (status, body) = http(port, "GET", "/readyz", &[]);
    assert_eq!(status, 503, "{body}");

    server.start_again();
    server.wait_numpat(1, WAIT);
    server.wait_until(WAIT, "/readyz answers 200", || {
        http(port, "GET", "/readyz", &[]).0 == 200
    });
    let mut serve = serve;
    serve.signal("TERM");
    assert_eq!(serve.wait(WAIT), Some(0));
    assert_eq!(server.numpat(), 0, "every subscription closed at exit");
}

/// Writes `text` as a configuration file in a fresh temp dir (kept alive by the guard).
fn config_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pubsub-hub.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// `serve --print-config` with these settings; returns stdout after asserting exit 0.
fn print_config(file: Option<&std::path::Path>, env: &[(&str, &str)], flags: &[&str]) -> String {
    let mut c = bin();
    if let Some(path) = file {
        c.arg("--config").arg(path);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.args(["serve", "--print-config"]).args(flags);
    let o = run(c, WAIT);
    assert_exit(&o, 0);
    assert_eq!(stderr(&o), "", "nothing on stderr");
    stdout(&o)
}

/// The line of a `--print-config` printout for `key` in `[section]`.
fn printed<'a>(text: &'a str, section: &str, key: &str) -> &'a str {
    let header = format!("[{section}]");
    let body = text
        .split_once(&format!("\n{header}\n"))
        .unwrap_or_else(|| panic!("no {header} in {text}"))
        .1;
    let body = body.split("\n[").next().unwrap();
    body.lines()
        .find(|l| l.starts_with(&format!("{key} = ")) || l.starts_with(&format!("# {key} ")))
        .unwrap_or_else(|| panic!("no {section}.{key} in {text}"))
}

#[test]
fn settings_follow_flag_then_env_then_file_then_default() {
    let (_dir, path) = config_file(
        "[server]\nport = 7001\ntoken = \"file-s3cret-0123456789\"\n[limits]\nmax_message_bytes = 1001\n",
    );
    let port = ("PUBSUB_HUB_PORT", "7002");
    let token = ("PUBSUB_HUB_TOKEN", "env-s3cret-0123456789");
    let limit = ("PUBSUB_HUB_MAX_MESSAGE_BYTES", "1002");
    let flags = [
        "--port",
        "7003",
        "--token",
        "flag-s3cret-0123456789",
        "--max-message-bytes",
        "1003",
    ];

    let defaults = print_config(None, &[], &[]);
    assert_eq!(
        printed(&defaults, "server", "port"),
        "port = 8103  # default"
    );
    assert_eq!(
        printed(&defaults, "server", "token"),
        "# token is not set  # default"
    );
    assert_eq!(
        printed(&defaults, "limits", "max_message_bytes"),
        "max_message_bytes = 65536  # default"
    );
    assert!(defaults.contains("# config file: none"), "{defaults}");

    let file = print_config(Some(&path), &[], &[]);
    assert_eq!(printed(&file, "server", "port"), "port = 7001  # file");
    assert_eq!(printed(&file, "server", "token"), "token = \"***\"  # file");
    assert_eq!(
        printed(&file, "limits", "max_message_bytes"),
        "max_message_bytes = 1001  # file"
    );
    assert_eq!(
        printed(&file, "server", "host"),
        "host = \"127.0.0.1\"  # default"
    );

    let env = print_config(Some(&path), &[port, token, limit], &[]);
    assert_eq!(
        printed(&env, "server", "port"),
        "port = 7002  # env PUBSUB_HUB_PORT"
    );
    assert_eq!(
        printed(&env, "server", "token"),
        "token = \"***\"  # env PUBSUB_HUB_TOKEN"
    );
    assert_eq!(
        printed(&env, "limits", "max_message_bytes"),
        "max_message_bytes = 1002  # env PUBSUB_HUB_MAX_MESSAGE_BYTES"
    );

    let flag = print_config(Some(&path), &[port, token, limit], &flags);
    assert_eq!(printed(&flag, "server", "port"), "port = 7003  # flag");
    assert_eq!(printed(&flag, "server", "token"), "token = \"***\"  # flag");
    assert_eq!(
        printed(&flag, "limits", "max_message_bytes"),
        "max_message_bytes = 1003  # flag"
    );

    // The file can also come from PUBSUB_HUB_CONFIG.
    let via_env = print_config(None, &[("PUBSUB_HUB_CONFIG", path.to_str().unwrap())], &[]);
    assert_eq!(printed(&via_env, "server", "port"), "port = 7001  # file");

    for text in [&defaults, &file, &env, &flag, &via_env] {
        assert!(!text.contains("s3cret"), "a token leaked: {text}");
    }
}

#[test]
fn print_config_masks_passwords_and_shows_the_redis_in_use() {
    let (_dir, path) =
        config_file("[redis]\nurl = \"redis://app:file-pw-s3cret@10.0.0.1:6380/2\"\n");
    let text = print_config(Some(&path), &[], &[]);
    assert_eq!(
        printed(&text, "redis", "url"),
        "url = \"redis://app:***@10.0.0.1:6380/2\"  # file"
    );
    assert!(
        text.contains("# Redis in use: redis://app:***@10.0.0.1:6380/2 (from file)"),
        "{text}"
    );
    // A host/port flag beats a URL from a lower layer.
    let text = print_config(
        Some(&path),
        &[("REDIS_URL", "redis://:env-pw-s3cret@h:1/")],
        &["--redis-port", "7777"],
    );
    assert!(
        text.contains("# Redis in use: localhost:7777 (from flag)"),
        "{text}"
    );
    assert_eq!(
        printed(&text, "redis", "url"),
        "url = \"redis://:***@h:1/\"  # env REDIS_URL"
    );
    assert!(!text.contains("s3cret"), "{text}");
}

#[test]
fn the_example_configuration_in_contrib_loads() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../contrib/pubsub-hub.toml");
    let text = print_config(Some(std::path::Path::new(example)), &[], &[]);
    assert_eq!(
        printed(&text, "server", "host"),
        "host = \"0.0.0.0\"  # file"
    );
    assert_eq!(
        printed(&text, "redis", "embedded_fallback"),
        "embedded_fallback = false  # file"
    );
}

#[test]
fn bad_configuration_is_one_line_naming_the_key_and_exit_2() {
    for (text, expected) in [
        (
            "[limits]\nmax_message_bytes = \"big\"\n",
            "limits.max_message_bytes: invalid type: string, expected usize (line 2)",
        ),
        (
            "[server]\nport = 1\nprot = 2\n",
            "server.prot: unknown field `prot`",
        ),
        (
            "[limits]\nmax_publish_count = 0\n",
            "limits.max_publish_count: the limit max_publish_count must be at least 1",
        ),
        ("[servre]\n", "servre: unknown field `servre`"),
        ("[server\n", "(line 1)"),
    ] {
        let (_dir, path) = config_file(text);
        let mut c = bin();
        c.arg("--config")
            .arg(&path)
            .args(["serve", "--print-config"]);
        let o = run(c, WAIT);
        assert_exit(&o, 2);
        let err = assert_one_line_error(&o);
        let prefix = format!("pubsub-hub: config {}: ", path.display());
        assert!(err.starts_with(&prefix), "{err}");
        assert!(err.contains(expected), "{text:?}: {err}");
        assert_eq!(stdout(&o), "");
    }
    // A missing file is a usage error too, for every command.
    let mut c = bin();
    c.args(["--config", "/nonexistent/pubsub-hub.toml", "inspect"]);
    let o = run(c, WAIT);
    assert_exit(&o, 2);
    assert!(
        assert_one_line_error(&o).contains("config /nonexistent/pubsub-hub.toml: cannot read it")
    );
}

#[test]
fn environment_errors_name_the_variable() {
    for (var, value, args) in [
        ("REDIS_PORT", "abc", vec!["publish", "ch", "m"]),
        ("PUBSUB_HUB_PORT", "http", vec!["serve", "--print-config"]),
        ("PUBSUB_HUB_MAX_SUBSCRIPTIONS", "-1", vec!["serve"]),
        ("PUBSUB_HUB_LOG_FORMAT", "xml", vec!["inspect"]),
    ] {
        let mut c = bin();
        c.env(var, value).args(&args);
        let o = run(c, WAIT);
        assert_exit(&o, 2);
        let err = assert_one_line_error(&o);
        assert!(
            err.starts_with(&format!(
                "pubsub-hub: environment variable {var}: expected "
            )),
            "{err}"
        );
        assert!(!err.contains("--"), "blames no flag: {err}");
    }
}

/// One HTTP/1.1 request without a body on a fresh connection; returns the status code and
/// the body.
fn http(port: u16, method: &str, path: &str, headers: &[&str]) -> (u16, String) {
    http_exchange(port, method, path, headers, "")
}

/// Starts `serve` and returns it with its HTTP port (from the "listening" start-up line).
fn serve(mut cmd: Command) -> (Running, u16, Vec<String>) {
    cmd.args(["--port", "0", "--no-embedded"]);
    let serve = Running::spawn(cmd);
    let mut seen = Vec::new();
    loop {
        let line = serve.next_line("start-up line");
        seen.push(line.clone());
        if let Some((_, port)) = line.rsplit_once(':')
            && line.starts_with("Redis pub/sub demo server listening on http://")
        {
            return (serve, port.parse().expect("a port"), seen);
        }
    }
}

#[test]
fn a_token_is_required_when_served_with_one() {
    let server = RedisServer::start();
    let mut c = bin_at(&server);
    c.args(["serve", "--token", "tok-s3cret-0123456789"]);
    let (mut serve, port, lines) = serve(c);
    let (status, body) = http(port, "GET", "/state", &[]);
    assert_eq!(status, 401, "{body}");
    let (status, _) = http(
        port,
        "GET",
        "/state",
        &["Authorization: Bearer wrong-token"],
    );
    assert_eq!(status, 401);
    let (status, body) = http(
        port,
        "GET",
        "/state",
        &["Authorization: Bearer tok-s3cret-0123456789"],
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("orders-listener"), "{body}");
    // The health check stays open for probes.
    assert_eq!(http(port, "GET", "/healthz", &[]).0, 200);

    serve.signal("TERM");
    assert_eq!(serve.wait(WAIT), Some(0));
    let mut rest: Vec<String> = serve.out.try_iter().collect();
    rest.extend(serve.err.try_iter());
    rest.extend(lines);
    for line in rest {
        assert!(!line.contains("s3cret"), "the token leaked: {line}");
    }
}

#[test]
fn a_public_bind_needs_a_token_or_the_loud_opt_out() {
    let mut c = bin();
    c.args(["serve", "--host", "0.0.0.0", "--port", "0", "--no-embedded"])
        .args([
            "--redis-host",
            "127.0.0.1",
            "--redis-port",
            &closed_port().to_string(),
        ]);
    let o = run(c, WAIT);
    assert_exit(&o, 2);
    let err = assert_one_line_error(&o);
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0 without an access token"),
        "{err}"
    );
    assert!(
        err.contains("--token") && err.contains("--insecure-no-auth"),
        "{err}"
    );

    let server = RedisServer::start();
    let mut c = bin_at(&server);
    c.env("PUBSUB_HUB_INSECURE_NO_AUTH", "true")
        .args(["serve", "--host", "0.0.0.0"]);
    let (mut serve, port, lines) = serve(c);
    assert!(
        lines[0].starts_with("WARNING: listening on 0.0.0.0:")
            && lines[0].contains("without an access token"),
        "{lines:?}"
    );
    assert_eq!(http(port, "GET", "/healthz", &[]).0, 200);
    serve.signal("TERM");
    assert_eq!(serve.wait(WAIT), Some(0));
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let server = RedisServer::start();
    let (_dir, path) = config_file("[log]\nfilter = \"info\"\n");
    let mut c = bin_at(&server);
    c.arg("--config")
        .arg(&path)
        .args(["serve", "--log-format", "json"]);
    let (mut serve, _port, _) = serve(c);
    let started = serve.stderr_containing("starting the dashboard");
    serve.signal("TERM");
    assert_eq!(serve.wait(WAIT), Some(0));
    let mut lines = vec![started];
    lines.extend(serve.err.iter());
    assert!(
        lines.len() >= 2,
        "the start and the shutdown are logged: {lines:?}"
    );
    for line in &lines {
        let doc: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            doc["level"].is_string() && doc["timestamp"].is_string(),
            "{line}"
        );
    }
    let first: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["fields"]["message"], "starting the dashboard");
    assert_eq!(first["fields"]["token"], false);
    assert!(
        lines.iter().any(|l| l.contains("shutting down")),
        "{lines:?}"
    );
}

#[test]
fn text_logs_have_no_colour_codes_when_stderr_is_not_a_terminal() {
    let server = RedisServer::start();
    let mut c = bin_at(&server);
    c.env("RUST_LOG", "info").arg("serve");
    let (mut serve, _port, _) = serve(c);
    let line = serve.stderr_containing("starting the dashboard");
    assert!(!line.contains('\u{1b}'), "{line:?}");
    assert!(line.contains("INFO"), "{line:?}");
    serve.signal("TERM");
    assert_eq!(serve.wait(WAIT), Some(0));
}

#[test]
fn the_config_file_reaches_the_dashboard() {
    let server = RedisServer::start();
    let (_dir, path) = config_file(&format!(
        "[server]\ntoken = \"file-tok-s3cret-0123456789\"\n\
         [redis]\nhost = \"127.0.0.1\"\nport = {}\n\
         [limits]\nmax_message_bytes = 8\n",
        server.port()
    ));
    let mut c = bin();
    c.arg("--config").arg(&path).arg("serve");
    let (mut serve, port, _) = serve(c);
    assert_eq!(
        serve.next_line("redis line"),
        format!("Using Redis at 127.0.0.1:{}", server.port())
    );
    assert_eq!(
        http(port, "GET", "/state", &[]).0,
        401,
        "the file's token is required"
    );
    let auth = "Authorization: Bearer file-tok-s3cret-0123456789";
    let form = "Content-Type: application/x-www-form-urlencoded";
    let (status, body) = http_exchange(
        port,
        "POST",
        "/publish",
        &[auth, form],
        "channel=c&message=12345678",
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_exchange(
        port,
        "POST",
        "/publish",
        &[auth, form],
        "channel=c&message=123456789",
    );
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("max_message_bytes is 8"), "{body}");
    serve.signal("TERM");
    assert_eq!(serve.wait(WAIT), Some(0));
}

#[test]
fn serve_runs_in_shared_mode_and_on_a_cluster_when_told() {
    // Shared mode from the environment: the three seeded subscribers over two connections.
    let server = RedisServer::start();
    let mut c = bin_at(&server);
    c.env("PUBSUB_HUB_MODE", "shared")
        .args(["serve", "--shared-connections", "2"]);
    let (mut serve, port, _) = serve(c);
    let (status, body) = http(port, "GET", "/state", &[]);
    assert_eq!(status, 200, "{body}");
    let state: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(state["mode"]["name"], "shared", "{}", state["mode"]);
    assert_eq!(state["mode"]["numsub_counts"], "connections");
    server.wait_until(WAIT, "two shared subscriber connections", || {
        server
            .client_list()
            .iter()
            .filter(|c| c.is_pubsub())
            .count()
            == 2
    });
    serve.signal("TERM");
    assert_eq!(serve.wait(WAIT), Some(0));

    // A cluster from repeated --cluster-node flags.
    let cluster = pubsub_hub_testkit::RedisCluster::start(3, 0);
    let mut c = bin();
    c.args(["serve", "--port", "0"]);
    for url in cluster.node_urls() {
        c.args(["--cluster-node", &url]);
    }
    let mut serve = Running::spawn(c);
    let listening = serve.next_line("listening line");
    assert!(
        listening.starts_with("Redis pub/sub demo server listening on http://"),
        "{listening}"
    );
    let using = serve.next_line("redis line");
    assert!(using.starts_with("Using Redis Cluster at "), "{using}");
    let port: u16 = listening.rsplit_once(':').unwrap().1.parse().unwrap();
    let (status, body) = http(port, "GET", "/state", &[]);
    assert_eq!(status, 200, "{body}");
    let state: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(state["mode"]["cluster"], true, "{}", state["mode"]);
    serve.signal("TERM");
    assert_eq!(serve.wait(WAIT), Some(0));
}

#[test]
fn subscribe_reports_lag_on_stderr_and_accounts_for_every_message() {
    let server = RedisServer::start();
    let mut cmd = bin_at(&server);
    cmd.args(["subscribe", "flood"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the process starts");
    let err = lines(child.stderr.take().unwrap());
    // Nobody reads stdout at first: once the pipe is full the printer blocks, the
    // consumer's queue (1,024 events) fills, and the oldest events are dropped.
    let (open_gate, gate) = mpsc::channel::<()>();
    let stdout = child.stdout.take().unwrap();
    let (line_tx, out) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = gate.recv();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + WAIT;
    loop {
        let line = err.recv_timeout(WAIT).expect("the subscribed line");
        if line.contains("subscribed to 1 channel: flood") {
            break;
        }
        assert!(Instant::now() < deadline);
    }
    server.wait_numsub("flood", 1, WAIT);
    // Many more than the queue (1,024) and the pipe (64 KiB) hold, so that the link has
    // queued far past the bound by the time the pipeline returns even on a loaded machine,
    // yet far below Redis' 8 MiB soft output-buffer limit for subscribers.
    const TOTAL: usize = 20_000;
    let payload = vec![b'p'; 200];
    let mut conn = server.connection();
    let mut pipe = redis::pipe();
    for _ in 0..TOTAL {
        pipe.cmd("PUBLISH").arg("flood").arg(&payload).ignore();
    }
    let () = pipe.query(&mut conn).expect("the flood is published");
    open_gate.send(()).unwrap();

    // Every message is either printed or counted in a "fell behind" line.
    let (mut printed, mut dropped) = (0usize, 0usize);
    let deadline = Instant::now() + WAIT;
    while printed + dropped < TOTAL {
        assert!(
            Instant::now() < deadline,
            "printed {printed} and dropped {dropped} of {TOTAL}"
        );
        while out.try_recv().is_ok() {
            printed += 1;
        }
        while let Ok(line) = err.try_recv() {
            if let Some(n) = line
                .strip_prefix("pubsub-hub: fell behind: ")
                .and_then(|rest| rest.split_whitespace().next())
            {
                dropped += n.parse::<usize>().expect("a count");
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(printed + dropped, TOTAL);
    assert!(dropped > 0, "the flood outran the blocked printer");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let output = child_output(child, WAIT);
    assert_eq!(output.status.code(), Some(0));
}

/// `other_dashboards` of the dashboard on `port` once `done` holds for it, polled until
/// `within` has passed.
fn other_dashboards_when(port: u16, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = http(port, "GET", "/state", &[]);
        assert_eq!(status, 200, "{body}");
        let state: Value = serde_json::from_str(&body).unwrap();
        let others = state["other_dashboards"].clone();
        if done(&others) {
            return others;
        }
        assert!(Instant::now() < deadline, "never reached: {others}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `others` lists the dashboard `instance`.
fn lists(others: &Value, instance: &str) -> bool {
    others["dashboards"]
        .as_array()
        .is_some_and(|d| d.iter().any(|d| d["instance"] == instance))
}

#[test]
fn a_dashboard_sees_another_process_subscribers_until_that_one_is_killed() {
    use pubsub_hub_web::peers::{PEER_INTERVAL, PEER_TTL};
    let server = RedisServer::start();
    let mut first = bin_at(&server);
    first.arg("serve");
    let (killed, port_a, _) = serve(first);
    let mut second = bin_at(&server);
    second.arg("serve");
    let (_survivor, port_b, _) = serve(second);

    let (_, body) = http(port_a, "GET", "/state", &[]);
    let state_a: Value = serde_json::from_str(&body).unwrap();
    let instance_a = state_a["other_dashboards"]["instance"]
        .as_str()
        .unwrap()
        .to_owned();
    // The second one lists the first one's seeded subscribers, apart from its own.
    let others = other_dashboards_when(port_b, WAIT, |o| {
        o["dashboards"].as_array().is_some_and(|d| {
            d.iter().any(|d| {
                d["instance"] == instance_a.as_str()
                    && d["subscriptions"].as_array().is_some_and(|s| s.len() == 3)
            })
        })
    });
    assert_eq!(others["available"], true);
    let names: Vec<&str> = state_a["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    let entry = others["dashboards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["instance"] == instance_a.as_str())
        .unwrap();
    let listed: Vec<&str> = entry["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(listed, names);

    // SIGKILL: nothing removes its entry; it expires PEER_TTL after its last write (which
    // was at most one interval and a quarter before), and the second one's next read
    // (within one more) drops it.
    killed.signal("KILL");
    let killed_at = Instant::now();
    let bound = PEER_TTL + PEER_INTERVAL * 2 + Duration::from_secs(3);
    other_dashboards_when(port_b, bound, |o| {
        o["available"] == true && !lists(o, &instance_a)
    });
    let elapsed = killed_at.elapsed();
    assert!(
        elapsed >= PEER_TTL - PEER_INTERVAL * 5 / 4 - Duration::from_millis(500),
        "gone {elapsed:?} after the kill, before its entry could expire"
    );
}
