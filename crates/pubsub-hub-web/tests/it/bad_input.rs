//! The bad-input table: for every route, hostile or broken requests get a JSON error with
//! the right 4xx status, and the dashboard's state is exactly what it was before.
//! Plus the inputs that look odd but are legitimate (non-ASCII, commas and spaces in names,
//! glob characters in channel names, control characters in messages) and must round-trip.

use crate::util::{Live, Setup, enc, stable, sub};
use pubsub_hub_web::Limits;
use serde_json::{Value, json};

const FORM: &str = "application/x-www-form-urlencoded";

/// One request and what must come back.
struct Case {
    what: &'static str,
    method: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    /// A piece of the error message.
    says: &'static str,
}

fn case(
    what: &'static str,
    method: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    body: impl Into<Vec<u8>>,
    status: u16,
    says: &'static str,
) -> Case {
    Case {
        what,
        method,
        path,
        content_type,
        body: body.into(),
        status,
        says,
    }
}

fn post(
    what: &'static str,
    path: &'static str,
    body: impl Into<Vec<u8>>,
    status: u16,
    says: &'static str,
) -> Case {
    case(what, "POST", path, Some(FORM), body, status, says)
}

fn table() -> Vec<Case> {
    let long = |n: usize| "n".repeat(n);
    vec![
        // Missing fields.
        post(
            "publish: nothing",
            "/publish",
            "",
            400,
            "channel is required",
        ),
        post(
            "publish: no message",
            "/publish",
            "channel=c",
            400,
            "message is required",
        ),
        post(
            "subscribe: nothing",
            "/subscribe",
            "",
            400,
            "name is required",
        ),
        post(
            "subscribe: no target",
            "/subscribe",
            "name=n",
            400,
            "target is required",
        ),
        post(
            "unsubscribe: nothing",
            "/unsubscribe",
            "",
            400,
            "name is required",
        ),
        case(
            "publish: no body, no type",
            "POST",
            "/publish",
            None,
            "",
            400,
            "channel is required",
        ),
        // Empty and whitespace values.
        post(
            "publish: blank channel",
            "/publish",
            "channel=+%09+&message=m",
            400,
            "channel is required",
        ),
        post(
            "publish: blank message",
            "/publish",
            "channel=c&message=%20%0D%0A",
            400,
            "message is required",
        ),
        post(
            "subscribe: blank name",
            "/subscribe",
            "name=%20&target=t",
            400,
            "name is required",
        ),
        post(
            "subscribe: only commas",
            "/subscribe",
            "name=n&target=%2C+%2C",
            400,
            "target is required",
        ),
        post(
            "unsubscribe: blank name",
            "/unsubscribe",
            "name=+++",
            400,
            "name is required",
        ),
        post(
            "subscribe: bad kind",
            "/subscribe",
            "name=n&kind=Pattern&target=t",
            400,
            "kind must be",
        ),
        // Wrong content types, and JSON where a form belongs.
        case(
            "publish: JSON",
            "POST",
            "/publish",
            Some("application/json"),
            r#"{"channel":"c","message":"m"}"#,
            415,
            "application/x-www-form-urlencoded",
        ),
        case(
            "subscribe: text",
            "POST",
            "/subscribe",
            Some("text/plain"),
            "name=n&target=t",
            415,
            "expected Content-Type",
        ),
        case(
            "unsubscribe: multipart",
            "POST",
            "/unsubscribe",
            Some("multipart/form-data; boundary=x"),
            "--x--",
            415,
            "expected Content-Type",
        ),
        post(
            "publish: JSON body labelled as a form",
            "/publish",
            r#"{"channel":"c","message":"m"}"#,
            400,
            "channel is required",
        ),
        // Broken encodings.
        post(
            "publish: %FF",
            "/publish",
            "channel=%FF&message=m",
            400,
            "not valid UTF-8",
        ),
        post(
            "publish: raw 0xFF",
            "/publish",
            &b"channel=c\xff&message=m"[..],
            400,
            "not valid UTF-8",
        ),
        post(
            "subscribe: truncated UTF-8",
            "/subscribe",
            "name=%C3&target=t",
            400,
            "not valid UTF-8",
        ),
        post(
            "publish: %zz",
            "/publish",
            "channel=%zz&message=m",
            400,
            "percent-encoding",
        ),
        post(
            "subscribe: lone %",
            "/subscribe",
            "name=a%&target=t",
            400,
            "percent-encoding",
        ),
        post(
            "unsubscribe: % in a field name",
            "/unsubscribe",
            "na%me=x",
            400,
            "percent-encoding",
        ),
        post(
            "publish: a field twice",
            "/publish",
            "channel=a&channel=b&message=m",
            400,
            "more than once",
        ),
        // Control characters where they would end up in logs and labels.
        post(
            "publish: newline in channel",
            "/publish",
            "channel=a%0Ab&message=m",
            400,
            "control characters",
        ),
        post(
            "subscribe: NUL in name",
            "/subscribe",
            "name=a%00b&target=t",
            400,
            "control characters",
        ),
        post(
            "subscribe: ESC in a target",
            "/subscribe",
            "name=n&target=ok%2Cx%1B%5B31my",
            400,
            "control characters",
        ),
        // Too long and too many.
        post(
            "subscribe: long name",
            "/subscribe",
            format!("name={}&target=t", long(129)),
            413,
            "max_name_bytes",
        ),
        post(
            "subscribe: long target",
            "/subscribe",
            format!("name=n&target={}", long(257)),
            413,
            "max_target_bytes",
        ),
        post(
            "publish: long channel",
            "/publish",
            format!("channel={}&message=m", long(257)),
            413,
            "max_target_bytes",
        ),
        post(
            "publish: long message",
            "/publish",
            format!("channel=c&message={}", long(64 * 1024 + 1)),
            413,
            "max_message_bytes",
        ),
        post(
            "publish: huge body",
            "/publish",
            format!("channel=c&message={}", long(1024 * 1024)),
            413,
            "max_body_bytes",
        ),
        post(
            "subscribe: 33 targets",
            "/subscribe",
            format!(
                "name=n&target={}",
                (0..33)
                    .map(|i| format!("t{i}"))
                    .collect::<Vec<_>>()
                    .join("%2C")
            ),
            400,
            "max_targets_per_subscription",
        ),
        post(
            "subscribe: a name in use",
            "/subscribe",
            "name=orders-listener&target=t",
            400,
            "already exists",
        ),
        // Wrong methods and unknown routes.
        case(
            "GET /publish",
            "GET",
            "/publish",
            None,
            "",
            405,
            "method not allowed",
        ),
        case(
            "PUT /state",
            "PUT",
            "/state",
            None,
            "",
            405,
            "method not allowed",
        ),
        case(
            "DELETE /subscribe",
            "DELETE",
            "/subscribe",
            None,
            "",
            405,
            "method not allowed",
        ),
        case(
            "POST /state",
            "POST",
            "/state",
            Some(FORM),
            "",
            405,
            "method not allowed",
        ),
        case(
            "POST /",
            "POST",
            "/",
            Some(FORM),
            "",
            405,
            "method not allowed",
        ),
        case(
            "POST /events",
            "POST",
            "/events",
            Some(FORM),
            "",
            405,
            "method not allowed",
        ),
        case("GET /nope", "GET", "/nope", None, "", 404, "not found"),
        case(
            "POST /nope",
            "POST",
            "/nope",
            Some(FORM),
            "a=b",
            404,
            "not found",
        ),
        case("GET /state/", "GET", "/state/", None, "", 404, "not found"),
        case("GET /%ff", "GET", "/%ff", None, "", 404, "not found"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_gets_a_json_error_and_changes_nothing() {
    let live = Live::start().await;
    // Something in the buffers, so that a change would show.
    let reply = live
        .post("/publish", "channel=orders:new&message=before")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // The delivery may land just after the publish's answer: wait for it.
    let before = live
        .wait_state("the message is received", |s| {
            sub(s, "orders-listener")["received_total"] == 1
        })
        .await;
    let before = stable(&before);

    for c in table() {
        let mut head = format!("{} {} HTTP/1.1\r\nHost: 127.0.0.1\r\n", c.method, c.path);
        if let Some(ct) = c.content_type {
            head.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n", c.body.len()));
        let reply = live.raw(&head, &c.body).await;
        assert_eq!(reply.status, c.status, "{}: {}", c.what, reply.text());
        let message = reply.error(c.status);
        assert!(
            message.contains(c.says),
            "{}: {message:?} should mention {:?}",
            c.what,
            c.says
        );
        assert!(
            reply.header("x-content-type-options") == Some("nosniff"),
            "{}: security headers on errors too",
            c.what
        );
        let after = stable(&live.state().await);
        assert_eq!(after, before, "{}: the state changed", c.what);
    }
    live.stop().await;
}

/// `/reset` reads no form, so its body and content type do not matter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_ignores_its_body() {
    let live = Live::start().await;
    let reply = live
        .post_with("/reset", &[("Content-Type", "application/json")], b"{}")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscriber_cap_refuses_without_touching_anything() {
    let limits = Limits {
        max_subscriptions: 4,
        max_publish_count: 3,
        ..Limits::default()
    };
    let live = Live::start_on(
        pubsub_hub_testkit::RedisServer::start(),
        Setup {
            limits,
            ..Setup::default()
        },
    )
    .await;
    let reply = live.post("/subscribe", "name=fourth&target=t4").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let before = stable(&live.state().await);
    let reply = live.post("/subscribe", "name=fifth&target=t5").await;
    let message = reply.error(400);
    assert!(message.contains("max_subscriptions is 4"), "{message}");
    assert_eq!(stable(&live.state().await), before);
    assert_eq!(live.server.numsub("t5"), 0, "nothing subscribed on Redis");

    // `count` is clamped to the configured maximum, never refused.
    let reply = live.post("/publish", "channel=t4&message=m&count=50").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["delivered"], json!([1, 1, 1]));
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_but_legitimate_input_round_trips() {
    let live = Live::start().await;
    let name = "Ünïcødé listener, with spaces";
    let targets = ["ümlaut:kanal", "chan with space", "a*b?[c]", "日本語"];
    let reply = live
        .post(
            "/subscribe",
            &format!(
                "name={}&target={}",
                enc(&format!("  {name} ")),
                enc(&format!(" {} ,", targets.join(" , ")))
            ),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let state = reply.json();
    let s = sub(&state, name);
    assert_eq!(s["targets"], json!(targets));
    assert_eq!(s["kind"], "channel");
    // Glob characters in a channel subscription are literal: only that exact name matches.
    assert_eq!(live.server.numsub("a*b?[c]"), 1);
    assert_eq!(live.server.publish("abbc", b"no"), 0);

    // A message keeps its inner control characters, quotes and markup exactly.
    let message = "line 1\nline 2\t\"quoted\" <script>alert(1)</script> ✓";
    for channel in targets {
        let reply = live
            .post(
                "/publish",
                &format!("channel={}&message={}", enc(channel), enc(message)),
            )
            .await;
        assert_eq!(reply.status, 200, "{channel}: {}", reply.text());
        assert_eq!(reply.json()["delivered"], json!([1]), "{channel}");
    }
    let state = live
        .wait_state("the four messages arrived", |s| {
            sub(s, name)["received_total"] == 4
        })
        .await;
    let got: Vec<(Value, Value)> = sub(&state, name)["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["channel"].clone(), m["payload"]["body"].clone()))
        .collect();
    for channel in targets {
        assert!(
            got.contains(&(json!(channel), json!(message))),
            "{channel}: {got:?}"
        );
    }

    // Pattern subscriptions take glob syntax as given.
    let reply = live
        .post(
            "/subscribe",
            &format!(
                "name=globs&kind=pattern&target={}",
                enc("news.[a-c]*,h?llo")
            ),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(live.server.publish("news.b-side", b"x"), 1);
    assert_eq!(live.server.publish("hallo", b"x"), 1);
    assert_eq!(live.server.publish("news.d", b"x"), 0);

    // The name with a comma and spaces is removed by its exact text.
    let reply = live
        .post("/unsubscribe", &format!("name={}", enc(name)))
        .await;
    assert_eq!(reply.json()["removed"], true);
    live.stop().await;
}
