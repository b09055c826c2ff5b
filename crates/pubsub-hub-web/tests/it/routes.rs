//! The HTTP contract, route by route, through `Router::oneshot` (no socket) against a
//! private redis-server.

use std::time::{Duration, Instant};

use crate::util::{Dashboard, WAIT, enc, next_message, sub, sub_names, wait_state};
use axum::http::StatusCode;
use http_body_util::BodyExt;
use pubsub_hub_web::DashboardSettings;
use serde_json::{Value, json};

const DEFAULT_NAMES: [&str; 3] = ["all-notifications", "billing-listener", "orders-listener"];

// ---- the page and the plumbing ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_and_assets_are_served_without_inline_code() {
    let d = Dashboard::start().await;

    let page = d.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = page.text();
    assert!(html.contains(r#"<script src="/app.js" defer></script>"#));
    assert!(html.contains(r#"<link rel="stylesheet" href="/style.css">"#));
    // The CSP forbids inline code, so the page must not need any.
    assert_eq!(
        html.matches("<script").count(),
        1,
        "only the external script"
    );
    assert!(!html.contains("<style"), "no inline style element");
    for attr in [
        " onclick=",
        " onload=",
        " onerror=",
        " onsubmit=",
        " style=",
    ] {
        assert!(!html.contains(attr), "inline {attr} in index.html");
    }

    for (path, content_type, needle) in [
        ("/app.js", "text/javascript; charset=utf-8", "EventSource"),
        ("/style.css", "text/css; charset=utf-8", ".card"),
        ("/favicon.svg", "image/svg+xml", "<svg"),
    ] {
        let reply = d.get(path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.header("content-type"), Some(content_type), "{path}");
        assert!(reply.text().contains(needle), "{path}");
    }
    // The script renders data as text only.
    assert!(!d.get("/app.js").await.text().contains("innerHTML"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_headers_are_on_every_response() {
    let d = Dashboard::start().await;
    let replies = vec![
        ("GET /", d.get("/").await),
        ("GET /app.js", d.get("/app.js").await),
        ("GET /state", d.get("/state").await),
        ("GET /healthz", d.get("/healthz").await),
        ("GET /nope", d.get("/nope").await),
        ("GET /publish", d.get("/publish").await),
        ("POST /publish", d.post_form("/publish", "").await),
        ("POST /reset", d.post_form("/reset", "").await),
    ];
    for (what, reply) in replies {
        assert_eq!(
            reply.header("x-content-type-options"),
            Some("nosniff"),
            "{what}"
        );
        let csp = reply
            .header("content-security-policy")
            .unwrap_or_else(|| panic!("{what}: no CSP"));
        assert!(csp.contains("default-src 'self'"), "{what}: {csp}");
        assert!(csp.contains("script-src 'self'"), "{what}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
        assert_eq!(reply.header("x-frame-options"), Some("DENY"), "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_unknown_routes_and_wrong_methods() {
    let d = Dashboard::start().await;

    let health = d.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json(), json!({"status": "ok"}));

    assert_eq!(
        d.get("/no/such/route")
            .await
            .assert_error(StatusCode::NOT_FOUND),
        "not found"
    );
    d.post_form("/state", "")
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED);
    d.get("/subscribe")
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED);
}

// ---- /state -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_has_the_contract_shape() {
    let d = Dashboard::start().await;
    let state = d.state().await;

    assert_eq!(sub_names(&state), DEFAULT_NAMES, "sorted by name");
    for sub in state["subscriptions"].as_array().unwrap() {
        assert!(sub["name"].is_string());
        assert!(
            sub["targets"]
                .as_array()
                .unwrap()
                .iter()
                .all(Value::is_string)
        );
        assert!(sub["is_pattern"].is_boolean());
        assert!(sub["received_total"].is_u64());
        assert_eq!(sub["alive"], true);
        assert!(sub["messages"].as_array().unwrap().is_empty());
        // Additive fields.
        assert!(sub["kind"] == "channel" || sub["kind"] == "pattern");
        assert_eq!(sub["status"]["state"], "live");
        assert!(sub["dropped_total"].is_u64());
        assert!(sub["reconnects_total"].is_u64());
    }
    let orders = sub(&state, "orders-listener");
    assert_eq!(orders["targets"], json!(["orders:new"]));
    assert_eq!(orders["is_pattern"], false);
    let all = sub(&state, "all-notifications");
    assert_eq!(all["targets"], json!(["notifications:*"]));
    assert_eq!(all["is_pattern"], true);
    assert_eq!(all["kind"], "pattern");

    assert_eq!(
        state["active_channels"],
        json!(["billing:invoice", "orders:new"])
    );
    assert_eq!(
        state["numsub"],
        json!({"billing:invoice": 1, "orders:new": 1})
    );
    let stats = &state["stats"];
    for field in [
        "published_total",
        "delivered_total",
        "received_total",
        "active_subscriptions",
        "pattern_subscriptions",
    ] {
        assert!(stats[field].is_u64(), "stats.{field} in {stats}");
    }
    assert!(stats["channel_published"].is_object());
    assert_eq!(stats["active_subscriptions"], 3);
    assert_eq!(
        stats["pattern_subscriptions"], 1,
        "NUMPAT of the private server"
    );
    assert_eq!(state["redis"], json!({"available": true}));
}

// ---- /publish ---------------------------------------------------------------------------

/// A client that accepts gzip gets the same document compressed; one that refuses it, or
/// says nothing, gets the JSON as it is; both are told the answer varies with the header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_gzipped_for_clients_that_accept_it() {
    use std::io::Read;

    let d = Dashboard::start().await;
    let mut orders = d.consumer("orders-listener");
    let reply = d
        .post_form(
            "/publish",
            "channel=orders%3Anew&message=compress+me&count=15",
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    for _ in 0..15 {
        next_message(&mut orders).await;
    }
    let get = |encoding: Option<&'static str>| {
        let mut request = axum::http::Request::get("/state");
        if let Some(e) = encoding {
            request = request.header(axum::http::header::ACCEPT_ENCODING, e);
        }
        d.send(request.body(axum::body::Body::empty()).unwrap())
    };

    let plain = get(None).await;
    assert_eq!(plain.status, StatusCode::OK);
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("vary"), Some("accept-encoding"));
    let gzipped = get(Some("br, gzip;q=0.8, deflate")).await;
    assert_eq!(gzipped.status, StatusCode::OK);
    assert_eq!(gzipped.header("content-encoding"), Some("gzip"));
    assert_eq!(gzipped.header("content-type"), Some("application/json"));
    assert_eq!(gzipped.header("vary"), Some("accept-encoding"));
    let mut inflated = Vec::new();
    flate2::read::GzDecoder::new(gzipped.body.as_slice())
        .read_to_end(&mut inflated)
        .expect("a valid gzip stream");
    let inflated: Value = serde_json::from_slice(&inflated).expect("JSON inside");
    assert_eq!(
        sub(&inflated, "orders-listener")["messages"],
        sub(&plain.json(), "orders-listener")["messages"],
        "the same messages, compressed"
    );
    assert_eq!(inflated["version"], plain.json()["version"]);
    assert!(
        gzipped.body.len() * 2 < plain.body.len(),
        "compressed {} bytes, plain {}",
        gzipped.body.len(),
        plain.body.len()
    );

    for refusal in ["gzip;q=0", "identity", "br, deflate", "*;q=0"] {
        let reply = get(Some(refusal)).await;
        assert_eq!(reply.header("content-encoding"), None, "{refusal}");
        assert_eq!(
            reply.json()["version"],
            plain.json()["version"],
            "{refusal}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_sends_the_envelope_and_state_shows_newest_first() {
    let d = Dashboard::start().await;
    let mut orders = d.consumer("orders-listener");

    let reply = d
        .post_form(
            "/publish",
            "channel=+orders%3Anew+&message=+hi+there+&count=3",
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["channel"], "orders:new", "trimmed");
    assert_eq!(body["publishes"], 3);
    assert_eq!(body["delivered"], json!([1, 1, 1]));
    assert!(body["state"]["subscriptions"].is_array(), "state embedded");

    for seq in 1..=3 {
        let m = next_message(&mut orders).await;
        assert_eq!(m.channel, "orders:new");
        assert_eq!(m.payload, json!({"body": "hi there", "seq": seq, "of": 3}));
    }

    let state = d.state().await;
    let sub = sub(&state, "orders-listener");
    assert_eq!(sub["received_total"], 3);
    let seqs: Vec<u64> = sub["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["payload"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [3, 2, 1], "newest first");
    let m = &sub["messages"][0];
    assert_eq!(m["pattern"], Value::Null);
    assert_eq!(m["encoding"], "json");
    assert!(m["received_at_ms"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(state["stats"]["published_total"], 3);
    assert_eq!(state["stats"]["delivered_total"], 3);
    assert_eq!(state["stats"]["received_total"], 3);
    assert_eq!(
        state["stats"]["channel_published"],
        json!({"orders:new": 3})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_count_defaults_and_clamps() {
    let d = Dashboard::start().await;
    let mut orders = d.consumer("orders-listener");

    for (count_field, expected) in [
        ("", 1),
        ("&count=", 1),
        ("&count=0", 1),
        ("&count=-4", 1),
        ("&count=abc", 1),
        ("&count=2.5", 1),
        ("&count=25", 20),
        ("&count=20", 20),
        ("&count=2", 2),
    ] {
        let reply = d
            .post_form(
                "/publish",
                &format!("channel=orders:new&message=m{count_field}"),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{count_field}: {}",
            reply.text()
        );
        let body = reply.json();
        assert_eq!(body["publishes"], expected, "{count_field}");
        assert_eq!(
            body["delivered"].as_array().unwrap().len(),
            expected as usize,
            "{count_field}"
        );
        for seq in 1..=expected {
            let m = next_message(&mut orders).await;
            assert_eq!(
                m.payload,
                json!({"body": "m", "seq": seq, "of": expected}),
                "{count_field}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_rejects_missing_channel_or_message() {
    let d = Dashboard::start().await;
    for form in [
        "message=hi",
        "channel=&message=hi",
        "channel=+%09+&message=hi",
    ] {
        let msg = d
            .post_form("/publish", form)
            .await
            .assert_error(StatusCode::BAD_REQUEST);
        assert_eq!(msg, "channel is required", "{form}");
    }
    for form in ["channel=c", "channel=c&message=", "channel=c&message=+++"] {
        let msg = d
            .post_form("/publish", form)
            .await
            .assert_error(StatusCode::BAD_REQUEST);
        assert_eq!(msg, "message is required", "{form}");
    }
    // An empty POST without any content type is read as an empty form.
    let msg = d
        .post_raw("/publish", None, b"")
        .await
        .assert_error(StatusCode::BAD_REQUEST);
    assert_eq!(msg, "channel is required");
    assert_eq!(
        d.state().await["stats"]["published_total"],
        0,
        "nothing published"
    );
}

// ---- /subscribe -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_adds_channel_and_pattern_subscribers() {
    let d = Dashboard::start().await;

    let reply = d
        .post_form(
            "/subscribe",
            &format!(
                "name=+audit+&kind=pattern&target={}",
                enc(" orders:* , ,billing:* ,")
            ),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let state = reply.json();
    let audit = sub(&state, "audit");
    assert_eq!(audit["targets"], json!(["orders:*", "billing:*"]));
    assert_eq!(audit["is_pattern"], true);
    assert_eq!(audit["alive"], true);
    assert_eq!(state["stats"]["pattern_subscriptions"], 3);
    assert_eq!(d.server.numpat(), 3);

    // No kind, or an empty one, means channel.
    for (name, kind) in [("plain", ""), ("plain-2", "&kind=")] {
        let reply = d
            .post_form(
                "/subscribe",
                &format!("name={name}&target=chat:lobby{kind}"),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let sub = sub(&reply.json(), name).clone();
        assert_eq!(sub["is_pattern"], false);
        assert_eq!(sub["kind"], "channel");
    }
    assert_eq!(d.server.numsub("chat:lobby"), 2);
    let state = d.state().await;
    assert_eq!(state["numsub"]["chat:lobby"], 2);
    assert!(
        state["active_channels"]
            .as_array()
            .unwrap()
            .contains(&json!("chat:lobby"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_rejects_bad_input() {
    let d = Dashboard::start().await;
    for form in ["target=a", "name=&target=a", "name=+++&target=a"] {
        let msg = d
            .post_form("/subscribe", form)
            .await
            .assert_error(StatusCode::BAD_REQUEST);
        assert_eq!(msg, "name is required", "{form}");
    }
    for kind in ["topic", "Pattern", "channels", "*"] {
        let msg = d
            .post_form("/subscribe", &format!("name=x&kind={}&target=a", enc(kind)))
            .await
            .assert_error(StatusCode::BAD_REQUEST);
        assert!(msg.contains("kind"), "{kind}: {msg}");
    }
    for target in ["", "&target=", "&target=+", "&target=%2C%2C+%2C"] {
        let msg = d
            .post_form("/subscribe", &format!("name=x{target}"))
            .await
            .assert_error(StatusCode::BAD_REQUEST);
        assert_eq!(msg, "target is required", "{target}");
    }
    let msg = d
        .post_form("/subscribe", "name=+orders-listener+&target=other")
        .await
        .assert_error(StatusCode::BAD_REQUEST);
    assert!(msg.contains("already exists"), "{msg}");

    let state = d.state().await;
    assert_eq!(sub_names(&state), DEFAULT_NAMES, "nothing was added");
    assert_eq!(
        sub(&state, "orders-listener")["targets"],
        json!(["orders:new"])
    );
}

// ---- /unsubscribe and /reset --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_removes_and_reports() {
    let d = Dashboard::start().await;

    let reply = d.post_form("/unsubscribe", "name=+orders-listener+").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["removed"], true);
    assert_eq!(
        sub_names(&body["state"]),
        ["all-notifications", "billing-listener"]
    );
    assert_eq!(
        d.server.numsub("orders:new"),
        0,
        "Redis released the channel"
    );
    assert_eq!(body["state"]["active_channels"], json!(["billing:invoice"]));

    let again = d.post_form("/unsubscribe", "name=orders-listener").await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["removed"], false);

    for form in ["", "name=", "name=+%09+"] {
        let msg = d
            .post_form("/unsubscribe", form)
            .await
            .assert_error(StatusCode::BAD_REQUEST);
        assert_eq!(msg, "name is required", "{form:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_closes_everything_zeroes_counters_and_reseeds() {
    let d = Dashboard::start().await;
    let reply = d
        .post_form("/subscribe", "name=extra&kind=channel&target=extra:chan")
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    d.post_form("/unsubscribe", "name=billing-listener").await;
    let mut orders = d.consumer("orders-listener");
    let reply = d
        .post_form("/publish", "channel=orders:new&message=x&count=2")
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    next_message(&mut orders).await;
    next_message(&mut orders).await;

    let reply = d.post_form("/reset", "").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let state = reply.json();
    assert_eq!(sub_names(&state), DEFAULT_NAMES);
    for sub in state["subscriptions"].as_array().unwrap() {
        assert_eq!(sub["received_total"], 0);
        assert!(sub["messages"].as_array().unwrap().is_empty());
        assert_eq!(sub["alive"], true);
    }
    let stats = &state["stats"];
    assert_eq!(stats["published_total"], 0);
    assert_eq!(stats["delivered_total"], 0);
    assert_eq!(stats["received_total"], 0);
    assert_eq!(stats["channel_published"], json!({}));
    assert_eq!(stats["active_subscriptions"], 3);
    assert_eq!(stats["pattern_subscriptions"], 1);
    assert_eq!(
        state["numsub"],
        json!({"billing:invoice": 1, "orders:new": 1})
    );
    assert_eq!(d.server.numsub("extra:chan"), 0);
    assert_eq!(d.server.numsub("orders:new"), 1);
    assert_eq!(d.server.numpat(), 1);
}

// ---- delivery semantics -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_and_pattern_match_both_deliver() {
    let d = Dashboard::start().await;
    let reply = d
        .post_form(
            "/subscribe",
            "name=billing-exact&target=notifications:billing",
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let mut exact = d.consumer("billing-exact");
    let mut pattern = d.consumer("all-notifications");

    let reply = d
        .post_form(
            "/publish",
            "channel=notifications:billing&message=invoice+7",
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json()["delivered"],
        json!([2]),
        "Redis delivered twice"
    );
    assert_eq!(next_message(&mut exact).await.pattern, None);
    assert_eq!(
        next_message(&mut pattern).await.pattern.as_deref(),
        Some("notifications:*")
    );

    let state = d.state().await;
    let m = &sub(&state, "billing-exact")["messages"][0];
    assert_eq!(m["channel"], "notifications:billing");
    assert_eq!(m["pattern"], Value::Null);
    assert_eq!(m["payload"]["body"], "invoice 7");
    let m = &sub(&state, "all-notifications")["messages"][0];
    assert_eq!(m["channel"], "notifications:billing");
    assert_eq!(m["pattern"], "notifications:*");
    assert_eq!(m["payload"]["body"], "invoice 7");
    assert_eq!(state["stats"]["delivered_total"], 2);
    assert_eq!(state["stats"]["received_total"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_capped_at_fifteen() {
    let d = Dashboard::start().await;
    let mut orders = d.consumer("orders-listener");
    for _ in 0..2 {
        let reply = d
            .post_form("/publish", "channel=orders:new&message=m&count=20")
            .await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    for _ in 0..40 {
        next_message(&mut orders).await;
    }
    let state = d.state().await;
    let sub = sub(&state, "orders-listener");
    assert_eq!(sub["received_total"], 40);
    let messages = sub["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 15);
    assert_eq!(messages[0]["payload"]["seq"], 20, "the newest");
    assert_eq!(messages[14]["payload"]["seq"], 6);
}

// ---- payload display ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payloads_are_truncated_and_binary_is_base64() {
    let d = Dashboard::start().await;
    let mut orders = d.consumer("orders-listener");

    let big = "x".repeat(100 * 1024);
    assert_eq!(d.server.publish("orders:new", big.as_bytes()), 1);
    next_message(&mut orders).await;
    assert_eq!(d.server.publish("orders:new", &[0xff, 0x00, 0xfe, b'a']), 1);
    next_message(&mut orders).await;
    let reply = d
        .post_form(
            "/publish",
            &format!("channel=orders:new&message={}", "y".repeat(50_000)),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    next_message(&mut orders).await;

    let reply = d.get("/state").await;
    assert!(
        reply.body.len() < 16 * 1024,
        "a bounded answer, got {} bytes",
        reply.body.len()
    );
    let state = reply.json();
    let messages = sub(&state, "orders-listener")["messages"]
        .as_array()
        .unwrap()
        .clone();

    let envelope = &messages[0];
    assert_eq!(envelope["truncated"], true);
    assert_eq!(envelope["encoding"], "json");
    assert!(envelope["size"].as_u64().unwrap() > 50_000);
    let preview = envelope["payload"].as_str().unwrap();
    assert_eq!(preview.len(), 2048);
    assert!(preview.starts_with(r#"{"body":"yyyy"#), "{preview:.40}");

    let binary = &messages[1];
    assert_eq!(binary["encoding"], "base64");
    assert_eq!(binary["payload"], "/wD+YQ==");
    assert_eq!(binary["truncated"], false);
    assert_eq!(binary["size"], 4);

    let text = &messages[2];
    assert_eq!(text["encoding"], "text");
    assert_eq!(text["truncated"], true);
    assert_eq!(text["size"], 100 * 1024);
    assert_eq!(text["payload"].as_str().unwrap(), "x".repeat(2048));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_display_bound_is_a_setting() {
    let d = Dashboard::start_with(DashboardSettings::default().with_payload_display_bytes(8)).await;
    let mut orders = d.consumer("orders-listener");
    d.server.publish("orders:new", b"0123456789");
    next_message(&mut orders).await;
    let state = d.state().await;
    let m = &sub(&state, "orders-listener")["messages"][0];
    assert_eq!(m["payload"], "01234567");
    assert_eq!(m["truncated"], true);
    // A number is JSON: shown as JSON when it fits.
    d.server.publish("orders:new", b"42");
    next_message(&mut orders).await;
    let state = d.state().await;
    let m = &sub(&state, "orders-listener")["messages"][0];
    assert_eq!(m["payload"], 42);
    assert_eq!(m["truncated"], false);
}

// ---- bad requests at the extractor level ---------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_content_types_and_bad_bodies_get_json_errors() {
    let d = Dashboard::start().await;

    let json_body = br#"{"channel": "orders:new", "message": "hi"}"#;
    let msg = d
        .post_raw("/publish", Some("application/json"), json_body)
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(msg.contains("application/x-www-form-urlencoded"), "{msg}");
    d.post_raw("/subscribe", Some("text/plain"), b"name=x&target=y")
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    d.post_raw(
        "/unsubscribe",
        Some("multipart/form-data; boundary=x"),
        b"--x--",
    )
    .await
    .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // A form that does not deserialize (a repeated field).
    let reply = d
        .post_form("/publish", "channel=a&channel=b&message=m")
        .await;
    assert!(reply.status.is_client_error(), "{}", reply.status);
    reply.assert_error(reply.status);

    // Too large.
    let huge = format!("channel=c&message={}", "z".repeat(2 * 1024 * 1024));
    d.post_form("/publish", &huge)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE);

    assert_eq!(d.state().await["stats"]["published_total"], 0);
}

// ---- Redis down ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_state_answers_and_writes_fail_with_503() {
    let mut d = Dashboard::start().await;
    d.server.stop();

    let started = Instant::now();
    let state = d.state().await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2500), "/state took {took:?}");
    assert_eq!(state["redis"]["available"], false);
    let why = state["redis"]["error"].as_str().unwrap();
    assert!(!why.is_empty());
    assert_eq!(
        sub_names(&state),
        DEFAULT_NAMES,
        "the local part is still there"
    );
    assert_eq!(state["active_channels"], json!([]));

    for (path, form) in [
        ("/publish", "channel=orders:new&message=hi"),
        ("/subscribe", "name=late&target=x"),
        ("/reset", ""),
    ] {
        let msg = d
            .post_form(path, form)
            .await
            .assert_error(StatusCode::SERVICE_UNAVAILABLE);
        assert!(msg.contains("Redis is unavailable"), "{path}: {msg}");
        assert!(
            !msg.contains("os error") && !msg.contains("127.0.0.1"),
            "{path}: {msg}"
        );
    }

    // Back again: the page's view recovers by itself.
    d.server.restart();
    wait_state(&d, WAIT, "Redis is available again", |s| {
        s["redis"]["available"] == true
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_shows_as_reconnecting_then_live_again() {
    let mut d = Dashboard::start().await;
    d.server.stop();
    wait_state(&d, WAIT, "every subscriber is reconnecting", |s| {
        s["subscriptions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|sub| sub["status"]["state"] == "reconnecting" && sub["alive"] == false)
    })
    .await;
    let state = d.state().await;
    let status = &sub(&state, "orders-listener")["status"];
    assert!(status["last_error"].is_string(), "{status}");
    assert!(status["since_ms"].is_u64(), "{status}");

    d.server.start_again();
    wait_state(&d, WAIT, "every subscriber is live again", |s| {
        s["subscriptions"].as_array().unwrap().iter().all(|sub| {
            sub["status"]["state"] == "live" && sub["alive"] == true && sub["reconnects_total"] == 1
        })
    })
    .await;
    d.server.wait_numsub("orders:new", 1, WAIT);
    let mut orders = d.consumer("orders-listener");
    let reply = d
        .post_form("/publish", "channel=orders:new&message=after")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        next_message(&mut orders).await.payload.json()["body"],
        "after"
    );
    let state = d.state().await;
    assert_eq!(state["stats"]["reconnects_total"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_stalled_state_answers_within_the_command_timeout() {
    let d = Dashboard::start().await;
    // DEBUG SLEEP blocks the whole server: connections stay open, nothing answers.
    let mut admin = d.server.connection();
    let stall = std::thread::spawn(move || {
        redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(3)
            .query::<()>(&mut admin)
    });
    d.server.wait_until(WAIT, "the server is stalled", || {
        let mut probe = std::net::TcpStream::connect(d.server.addr()).unwrap();
        probe
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        std::io::Write::write_all(&mut probe, b"PING\r\n").unwrap();
        let mut buf = [0u8; 7];
        std::io::Read::read_exact(&mut probe, &mut buf).is_err()
    });

    let started = Instant::now();
    let state = d.state().await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1800), "/state took {took:?}");
    assert_eq!(state["redis"]["available"], false);
    assert_eq!(state["redis"]["error"], "Redis did not answer in time");
    assert_eq!(sub_names(&state), DEFAULT_NAMES);
    stall.join().unwrap().unwrap();
}

// ---- /events through the router -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_starts_with_a_state_event() {
    let d = Dashboard::start().await;
    let response = tokio::time::timeout(
        WAIT,
        tower::ServiceExt::oneshot(
            d.app.clone(),
            axum::http::Request::get("/events")
                .body(axum::body::Body::empty())
                .unwrap(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let mut body = response.into_body();
    let frame = tokio::time::timeout(WAIT, body.frame())
        .await
        .expect("a first event in time")
        .expect("the stream is open")
        .expect("no body error");
    let text = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
    let data = text
        .strip_prefix("event: state\ndata: ")
        .unwrap_or_else(|| panic!("an event: state, got {text:.80}"));
    let state: Value = serde_json::from_str(data.trim_end()).unwrap();
    assert_eq!(sub_names(&state), DEFAULT_NAMES);
}
