//! Access control and secrets: the token (header, cookie, `/?token=`), the refusal to listen
//! beyond loopback without one, cross-site and foreign-host refusals, security headers on
//! every answer, `rediss://` with a private CA, ACL credentials in the URL, and no secret in
//! start-up lines, `/state`, errors or logs.

use std::time::{Duration, Instant};

use crate::util::{Live, Reply, Setup, WAIT, capture_logs, request, request_from, stable};
use pubsub_hub_testkit::{RedisServer, TlsRedisServer};
use pubsub_hub_web::{
    AccessControl, Dashboard, DashboardError, DashboardOptions, FailureLimit, TrustedProxies,
};
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

fn assert_security_headers(reply: &Reply, what: &str) {
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
    let before = stable(&live.get_with("/state", &[(auth, &value)]).await.json());

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
    let after = stable(&live.get_with("/state", &[(auth, &value)]).await.json());
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
    assert!(!text.contains("--"), "the dashboard names no flags: {text}");
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
        matches!(
            empty,
            DashboardError::InvalidOption {
                option: "token",
                ..
            }
        ),
        "{empty:?}"
    );

    // A token shorter than 16 characters could be guessed: refused at start, unprinted.
    let short = Dashboard::start(DashboardOptions {
        token: Some("Zq8x-s3cret-015".into()),
        ..public_options(&server)
    })
    .await
    .expect_err("a 15-character token is refused");
    let text = short.to_string();
    assert!(
        matches!(
            short,
            DashboardError::InvalidOption {
                option: "token",
                ..
            }
        ) && text.contains("15 characters")
            && text.contains("at least 16")
            && !text.contains("s3cret")
            && !text.contains('\n'),
        "{text}"
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_start_up_lines_state_errors_and_logs() {
    let logs = capture_logs();
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

    let logged = logs.text();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca() {
    // A private Redis with a TLS port and a throwaway CA; the plain port stays for the
    // test kit's admin connection, and the TLS port speaks nothing but TLS: working through
    // it is working over TLS.
    let tls = TlsRedisServer::start();
    let server = tls.server();
    let tls_port = tls.tls_port();
    let url = tls.tls_url();
    let opts = DashboardOptions {
        port: 0,
        redis_url: Some(url.clone()),
        redis_ca_file: Some(tls.ca_cert_path()),
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
    server.wait_numsub("orders:new", 1, WAIT);
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
    let deadline = Instant::now() + WAIT;
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

/// `GET path` from `source` with extra header lines.
async fn get_from(live: &Live, source: &str, path: &str, headers: &[&str]) -> Reply {
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    request_from(source.parse().unwrap(), live.addr, &head, b"").await
}

async fn with_access(access: AccessControl) -> Live {
    Live::start_on(
        RedisServer::start(),
        Setup {
            access,
            ..Setup::default()
        },
    )
    .await
}

/// A limit that does not refill within a test, so what it allows is exact.
const SLOW_REFILL: FailureLimit = FailureLimit {
    burst: 5,
    refill: Duration::from_secs(600),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_are_limited_per_client_address() {
    let live = with_access(AccessControl::with_token(TOKEN).with_failure_limit(SLOW_REFILL)).await;
    let right = format!("Authorization: Bearer {TOKEN}");
    // Five wrong guesses, by header, cookie and `/?token=`, are answered 401...
    for (path, header) in [
        ("/state", "Authorization: Bearer guess-0000000000000"),
        ("/state", "Cookie: pubsub_hub_token=guess-0000000000001"),
        ("/?token=guess-0000000000002", ""),
        ("/metrics", "Authorization: Bearer guess-0000000000003"),
        ("/events", "Authorization: Bearer guess-0000000000004"),
    ] {
        let headers: Vec<&str> = [header].into_iter().filter(|h| !h.is_empty()).collect();
        get_from(&live, "127.0.0.1", path, &headers)
            .await
            .error(401);
    }
    // ...the sixth is a 429 with Retry-After, and so is the right token from that address:
    // a guesser must not learn that a guess was right.
    for header in ["Authorization: Bearer guess-0000000000005", right.as_str()] {
        let reply = get_from(&live, "127.0.0.1", "/state", &[header]).await;
        let message = reply.error(429);
        assert!(
            message.contains("too many wrong access tokens"),
            "{message}"
        );
        let retry: u64 = reply
            .header("retry-after")
            .expect("a Retry-After header")
            .parse()
            .expect("whole seconds");
        assert!((1..=600).contains(&retry), "{retry}");
        assert!(!reply.text().contains(TOKEN));
    }
    // A request without any token from there is refused the same way.
    get_from(&live, "127.0.0.1", "/state", &[]).await.error(429);
    // The health checks stay public.
    assert_eq!(
        get_from(&live, "127.0.0.1", "/healthz", &[]).await.status,
        200
    );
    // Another address is not affected, and a right token works there.
    let other = get_from(&live, "127.0.0.2", "/state", &[&right]).await;
    assert_eq!(other.status, 200, "{}", other.text());
    get_from(
        &live,
        "127.0.0.2",
        "/state",
        &["Authorization: Bearer nope-000000000000"],
    )
    .await
    .error(401);
    assert_eq!(live.app.access.limiter().tracked(), 2);
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_limit_allows_about_ten_wrong_tokens_a_second() {
    let live = with_token().await;
    let started = Instant::now();
    let mut refused_401 = 0u32;
    let mut first_429 = None;
    for i in 0..500 {
        let header = format!("Authorization: Bearer guess-{i:012}");
        let reply = get_from(&live, "127.0.0.1", "/state", &[&header]).await;
        match reply.status {
            401 => refused_401 += 1,
            429 => {
                assert_eq!(reply.header("retry-after"), Some("1"));
                first_429 = Some(started.elapsed());
                break;
            }
            other => panic!("status {other}: {}", reply.text()),
        }
    }
    let elapsed = first_429.expect("a stream of wrong tokens meets a 429");
    // A burst of 10, then one every 100 ms: never more than that many guesses are checked.
    let bound = 10 + (elapsed.as_millis() / 100) as u32 + 1;
    assert!(
        (10..=bound).contains(&refused_401),
        "{refused_401} wrong tokens were checked in {elapsed:?} (bound {bound})"
    );
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_forwarded_address_is_limited_and_https_makes_the_cookie_secure()
{
    let access = AccessControl::with_token(TOKEN)
        .with_failure_limit(SLOW_REFILL)
        .with_trusted_proxies(TrustedProxies::parse(&["127.0.0.1"]).unwrap());
    let live = with_access(access).await;
    let wrong = "Authorization: Bearer guess-0000000000000";
    for _ in 0..5 {
        get_from(
            &live,
            "127.0.0.1",
            "/state",
            &[wrong, "X-Forwarded-For: 203.0.113.5"],
        )
        .await
        .error(401);
    }
    get_from(
        &live,
        "127.0.0.1",
        "/state",
        &[wrong, "X-Forwarded-For: 203.0.113.5"],
    )
    .await
    .error(429);
    // The proxy's other clients are not locked out.
    get_from(
        &live,
        "127.0.0.1",
        "/state",
        &[wrong, "X-Forwarded-For: 203.0.113.6"],
    )
    .await
    .error(401);
    // An untrusted peer's X-Forwarded-For is its own words: it is limited by its address.
    for _ in 0..5 {
        get_from(
            &live,
            "127.0.0.2",
            "/state",
            &[wrong, "X-Forwarded-For: 198.51.100.1"],
        )
        .await
        .error(401);
    }
    get_from(
        &live,
        "127.0.0.2",
        "/state",
        &[wrong, "X-Forwarded-For: 198.51.100.2"],
    )
    .await
    .error(429);

    // HTTPS at the trusted proxy: the cookie is Secure, and the token leaves the address bar.
    let login = format!("/?token={TOKEN}");
    let https = get_from(&live, "127.0.0.1", &login, &["X-Forwarded-Proto: https"]).await;
    assert_eq!(https.status, 303, "{}", https.text());
    assert_eq!(https.header("location"), Some("/"));
    let cookie = https.header("set-cookie").expect("a cookie");
    assert!(cookie.ends_with("; Secure"), "{cookie}");
    // Plain HTTP, or the header from an untrusted peer: no Secure (the browser would drop
    // the cookie on http://).
    let http = get_from(&live, "127.0.0.1", &login, &["X-Forwarded-Proto: http"]).await;
    assert!(!http.header("set-cookie").unwrap().contains("Secure"));
    let spoofed = get_from(&live, "127.0.0.3", &login, &["X-Forwarded-Proto: https"]).await;
    assert_eq!(spoofed.status, 303);
    assert!(!spoofed.header("set-cookie").unwrap().contains("Secure"));
    live.stop().await;

    // `cookie_secure` marks it always.
    let live = with_access(AccessControl::with_token(TOKEN).with_cookie_secure(true)).await;
    let reply = get_from(&live, "127.0.0.1", &login, &[]).await;
    assert_eq!(reply.status, 303);
    assert!(reply.header("set-cookie").unwrap().ends_with("; Secure"));
    live.stop().await;
}
