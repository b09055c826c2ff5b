//! Access control and secrets: the token (header, cookie, `/?token=`), the refusal to listen
//! beyond loopback without one, cross-site and foreign-host refusals, security headers on
//! every answer, `rediss://` with a private CA, ACL credentials in the URL, and no secret in
//! start-up lines, `/state`, errors or logs.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use pubsub_hub_testkit::RedisServer;
use pubsub_hub_web::{AccessControl, Dashboard, DashboardError, DashboardOptions};
use support::{Live, Setup, request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

const TOKEN: &str = "t0ken-Zq8x-s3cret";

async fn with_token() -> Live {
    Live::start_on(
        RedisServer::start(),
        Setup {
            access: AccessControl::with_token(TOKEN),
            ..Setup::default()
        },
    )
    .await
}

fn bearer() -> (&'static str, String) {
    ("Authorization", format!("Bearer {TOKEN}"))
}

fn assert_security_headers(reply: &support::Reply, what: &str) {
    assert_eq!(
        reply.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(
        reply.header("referrer-policy"),
        Some("no-referrer"),
        "{what}"
    );
    let csp = reply
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no CSP"));
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(csp.contains("script-src 'self'"), "{what}: {csp}");
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_guards_every_route_but_the_health_check() {
    let live = with_token().await;
    let (auth, value) = bearer();

    for path in ["/", "/state", "/app.js", "/events", "/nope"] {
        let reply = live.get(path).await;
        let message = reply.error(401);
        assert!(
            message.contains("access token is required"),
            "{path}: {message}"
        );
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"), "{path}");
        assert_security_headers(&reply, path);
    }
    for form_path in ["/publish", "/subscribe", "/unsubscribe", "/reset"] {
        live.post(form_path, "name=x&channel=c&message=m&target=t")
            .await
            .error(401);
    }
    assert_eq!(live.get("/healthz").await.status, 200);

    let wrong = live
        .get_with("/state", &[("Authorization", "Bearer nope")])
        .await;
    assert!(wrong.error(401).contains("wrong"));
    let near = format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]);
    live.get_with("/state", &[("Authorization", &near)])
        .await
        .error(401);

    let ok = live.get_with("/state", &[(auth, &value)]).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert!(!ok.text().contains(TOKEN), "the token is not echoed");
    let published = live
        .post_with(
            "/publish",
            &[
                (auth, &value),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            b"channel=orders:new&message=hi",
        )
        .await;
    assert_eq!(published.status, 200, "{}", published.text());
    live.stop().await;
}

/// Reads only the head of a response (for the never-ending `/events`).
async fn head_of(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(5), async {
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            head.push(byte[0]);
        }
    })
    .await
    .expect("a response head");
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visiting_with_the_token_once_sets_a_cookie_for_the_page_and_its_stream() {
    let live = with_token().await;

    let login = live.get(&format!("/?token={TOKEN}")).await;
    assert_eq!(login.status, 303);
    assert_eq!(login.header("location"), Some("/"));
    let cookie = login.header("set-cookie").expect("a cookie").to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(cookie.contains("Path=/"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_owned();

    for path in ["/", "/app.js", "/style.css", "/state"] {
        let reply = live.get_with(path, &[("Cookie", &pair)]).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    }
    // EventSource cannot send headers; the cookie is enough.
    let head = head_of(
        live.addr,
        &format!("GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {pair}\r\n\r\n"),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("text/event-stream"),
        "{head}"
    );

    live.get("/?token=wrong").await.error(401);
    live.get_with("/state", &[("Cookie", "pubsub_hub_token=wrong")])
        .await
        .error(401);
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_posts_are_refused() {
    let live = with_token().await;
    let (auth, value) = bearer();
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    let host = "127.0.0.1".to_owned();
    let before = support::stable(&live.get_with("/state", &[(auth, &value)]).await.json());

    for (what, extra) in [
        ("foreign Origin", ("Origin", "http://evil.example")),
        ("null Origin", ("Origin", "null")),
        ("other port", ("Origin", "http://127.0.0.1:1")),
        ("cross-site fetch", ("Sec-Fetch-Site", "cross-site")),
        ("same-site fetch", ("Sec-Fetch-Site", "same-site")),
    ] {
        let reply = live
            .post_with(
                "/subscribe",
                &[(auth, &value), form, extra],
                b"name=csrf&target=t",
            )
            .await;
        let message = reply.error(403);
        assert!(message.contains("refused"), "{what}: {message}");
        assert_security_headers(&reply, what);
    }
    let after = support::stable(&live.get_with("/state", &[(auth, &value)]).await.json());
    assert_eq!(after, before, "nothing was subscribed");

    // The page's own requests pass.
    let origin = format!("http://{host}");
    let reply = live
        .post_with(
            "/subscribe",
            &[
                (auth, &value),
                form,
                ("Origin", &origin),
                ("Sec-Fetch-Site", "same-origin"),
            ],
            b"name=mine&target=t",
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_on_loopback_only_loopback_host_names_are_served() {
    let live = Live::start_on(
        RedisServer::start(),
        Setup {
            access: AccessControl::open().with_loopback_hosts_only(true),
            ..Setup::default()
        },
    )
    .await;
    for host in ["127.0.0.1", "localhost:8103", "[::1]:1"] {
        let reply = request(
            live.addr,
            &format!("GET /state HTTP/1.1\r\nHost: {host}\r\n"),
            b"",
        )
        .await;
        assert_eq!(reply.status, 200, "{host}");
    }
    // A rebinding page's name, pointed at 127.0.0.1, is still not ours.
    let reply = request(
        live.addr,
        "GET /state HTTP/1.1\r\nHost: evil.example:8103\r\n",
        b"",
    )
    .await;
    assert!(reply.error(403).contains("localhost"));
    let reply = request(
        live.addr,
        "GET /healthz HTTP/1.1\r\nHost: lb.internal\r\n",
        b"",
    )
    .await;
    assert_eq!(reply.status, 200, "health checks pass anyway");
    // And cross-site posts are refused without a token too.
    live.post_with("/reset", &[("Origin", "http://evil.example")], b"")
        .await
        .error(403);
    live.stop().await;
}

fn public_options(server: &RedisServer) -> DashboardOptions {
    DashboardOptions {
        host: "0.0.0.0".into(),
        port: 0,
        redis_host: "127.0.0.1".into(),
        redis_port: server.port(),
        embedded_fallback: false,
        ..DashboardOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_beyond_loopback_needs_a_token_or_the_loud_opt_out() {
    let server = RedisServer::start();

    let started = Instant::now();
    let err = Dashboard::start(public_options(&server))
        .await
        .expect_err("refused without a token");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        matches!(err, DashboardError::NoTokenForPublicAddress { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(!text.contains('\n'), "one line: {text}");
    assert!(
        text.contains("--token") && text.contains("--insecure-no-auth"),
        "{text}"
    );
    assert_eq!(
        server
            .client_list()
            .iter()
            .filter(|c| c.is_pubsub())
            .count(),
        0,
        "nothing was subscribed"
    );

    let empty = Dashboard::start(DashboardOptions {
        token: Some(String::new()),
        ..public_options(&server)
    })
    .await
    .expect_err("an empty token is no token");
    assert!(
        matches!(empty, DashboardError::InvalidOptions(_)),
        "{empty:?}"
    );

    let open = Dashboard::start(DashboardOptions {
        insecure_no_auth: true,
        ..public_options(&server)
    })
    .await
    .expect("the opt-out works");
    let port = open.local_addr().unwrap().port();
    assert!(
        open.startup_lines()[0].starts_with(&format!(
            "WARNING: listening on 0.0.0.0:{port} without an access token"
        )),
        "{:?}",
        open.startup_lines()
    );
    drop(open);

    let guarded = Dashboard::start(DashboardOptions {
        token: Some(TOKEN.into()),
        ..public_options(&server)
    })
    .await
    .expect("a token is enough");
    let lines = guarded.startup_lines().join("\n");
    assert!(lines.contains("An access token is required"), "{lines}");
    assert!(!lines.contains(TOKEN), "{lines}");
}

/// Everything the tracing subscriber of this test binary wrote.
fn captured_logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&logs);
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || CaptureWriter(Arc::clone(&writer)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        logs
    })
}

struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_start_up_lines_state_errors_and_logs() {
    let logs = captured_logs();
    const REDIS_PASSWORD: &str = "redis-Pw-9f3k2";
    let server = RedisServer::start_with_args(&["--requirepass", "admin-only"]);
    server.cmd(&[
        "ACL",
        "SETUSER",
        "dash",
        "on",
        &format!(">{REDIS_PASSWORD}"),
        "~*",
        "&*",
        "+@all",
    ]);
    let url = format!("redis://dash:{REDIS_PASSWORD}@127.0.0.1:{}/", server.port());
    let opts = DashboardOptions {
        port: 0,
        redis_url: Some(url.clone()),
        embedded_fallback: false,
        token: Some(TOKEN.into()),
        ..DashboardOptions::default()
    };
    let debug = format!("{opts:?}");
    assert!(
        !debug.contains(REDIS_PASSWORD) && !debug.contains(TOKEN),
        "{debug}"
    );

    // A wrong password: a clear one-line error, quickly, without the password.
    let started = Instant::now();
    let wrong = Dashboard::start(DashboardOptions {
        redis_url: Some(url.replace(REDIS_PASSWORD, "not-the-Pw-77")),
        ..opts.clone()
    })
    .await
    .expect_err("a wrong password is refused");
    assert!(started.elapsed() < Duration::from_secs(5));
    let text = wrong.to_string();
    assert!(
        !text.contains('\n') && !text.contains("not-the-Pw-77"),
        "{text}"
    );
    assert!(text.contains("authentication failed"), "{text}");

    // The right one: served as the ACL user.
    let dashboard = Dashboard::start(opts).await.expect("starts");
    let lines = dashboard.startup_lines().join("\n");
    let addr = dashboard.local_addr().unwrap();
    let (stop, stop_rx) = oneshot::channel::<()>();
    let running = tokio::spawn(dashboard.run(async move {
        let _ = stop_rx.await;
    }));
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let state = request(
        addr,
        &format!("GET /state HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}"),
        b"",
    )
    .await;
    assert_eq!(state.status, 200, "{}", state.text());
    let login = request(
        addr,
        &format!("GET /?token={TOKEN} HTTP/1.1\r\nHost: 127.0.0.1\r\n"),
        b"",
    )
    .await;
    assert_eq!(login.status, 303);
    let users: Vec<String> = server
        .client_list()
        .iter()
        .filter_map(|c| c.field("user").map(str::to_owned))
        .collect();
    assert!(
        users.iter().filter(|u| *u == "dash").count() >= 4,
        "{users:?}"
    );
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("stops")
        .unwrap()
        .expect("clean exit");

    let logged = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        logged.contains("request"),
        "requests are logged at all: {logged}"
    );
    for (what, text) in [
        ("start-up lines", &lines),
        ("/state", &state.text()),
        ("logs", &logged),
    ] {
        assert!(
            !text.contains(REDIS_PASSWORD),
            "{what} show the Redis password"
        );
        assert!(!text.contains(TOKEN), "{what} show the access token");
    }
}

/// A throwaway CA and a certificate for 127.0.0.1 signed by it, made with the `openssl` CLI.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl CLI is needed for the TLS test (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=pubsub-hub test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca() {
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = |f: &str| certs.path().join(f).to_string_lossy().into_owned();
    let tls_port_text = tls_port.to_string();
    let (cert, key, ca) = (path("server.crt"), path("server.key"), path("ca.crt"));
    // The plain port stays for the test kit's admin connection; we use only the TLS one.
    let server = RedisServer::start_with_args(&[
        "--tls-port",
        &tls_port_text,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "no",
    ]);
    // The TLS port speaks nothing but TLS: working through it is working over TLS.
    let url = format!("rediss://127.0.0.1:{tls_port}/");
    let opts = DashboardOptions {
        port: 0,
        redis_url: Some(url.clone()),
        redis_ca_file: Some(certs.path().join("ca.crt")),
        embedded_fallback: false,
        ..DashboardOptions::default()
    };

    // Without our CA the certificate is not trusted: a clear error, not a hang.
    let started = Instant::now();
    let untrusted = Dashboard::start(DashboardOptions {
        redis_ca_file: None,
        ..opts.clone()
    })
    .await
    .expect_err("an unknown CA is refused");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!untrusted.to_string().contains('\n'), "{untrusted}");

    let dashboard = Dashboard::start(opts).await.expect("TLS with our CA works");
    assert!(
        dashboard
            .startup_lines()
            .contains(&format!("Using Redis at 127.0.0.1:{tls_port}")),
        "{:?}",
        dashboard.startup_lines()
    );
    let hub = dashboard.hub().clone();
    let addr = dashboard.local_addr().unwrap();
    let (stop, stop_rx) = oneshot::channel::<()>();
    let running = tokio::spawn(dashboard.run(async move {
        let _ = stop_rx.await;
    }));
    server.wait_numsub("orders:new", 1, support::WAIT);
    let body = b"channel=orders:new&message=over-tls";
    let reply = request(
        addr,
        &format!(
            "POST /publish HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ),
        body,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["delivered"], serde_json::json!([1]));
    let deadline = Instant::now() + support::WAIT;
    while hub
        .get_subscription("orders-listener")
        .unwrap()
        .received_total()
        < 1
    {
        assert!(Instant::now() < deadline, "the message came back over TLS");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("stops")
        .unwrap()
        .expect("clean exit");
}
