//! The gateway from headless Chromium (scenarios in `tests/js/browser.test.mjs` and
//! `tests/js/browser-history.test.mjs`): the SDK's browser bundle over WebSocket, a native
//! `EventSource` on `/connection/uni_sse`, and one resuming a history channel.

use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::routing::get;
use serde_json::json;

use crate::support::{Rig, SECRET, artifact_dir, browser_turn, chromium_path, js_dir, prepare};

/// The test page: it loads the SDK's browser bundle with a plain `<script>` tag.
const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>gateway client test</title>
<script src="centrifuge.js"></script></head>
<body><h1>gateway client test</h1><pre id="log"></pre></body></html>"#;

/// The app the gateway is embedded in: the page and the SDK bundle (`dist/centrifuge.js`
/// of the npm package, the file a `<script>` tag loads). Serving the page from the
/// gateway's own loopback origin keeps its WebSocket and EventSource same-origin, and
/// keeps Chromium's local-network checks satisfied (a loopback page may reach loopback).
fn app() -> Router {
    let bundle = std::fs::read(js_dir().join("node_modules/centrifuge/dist/centrifuge.js"))
        .expect("the SDK bundle (run scripts/setup)");
    Router::new()
        .route(
            "/__client_test__/index.html",
            get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE) }),
        )
        .route(
            "/__client_test__/centrifuge.js",
            get(move || async move { ([(header::CONTENT_TYPE, "text/javascript")], bundle) }),
        )
}

/// Bound on a browser scenario: above the sum of its own bounds (Chromium's start within
/// 60 s, each step within 10 s to 15 s), so a slow step fails with its own message.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(150);

/// Checks that Chromium is there, prepares the SDK packages, and waits for this process's
/// browser slot (held until the returned guard drops).
async fn browser_ready() -> tokio::sync::MutexGuard<'static, ()> {
    let chromium = chromium_path();
    assert!(
        chromium.exists(),
        "{} not found: run scripts/setup (it installs Debian's chromium)",
        chromium.display()
    );
    prepare().await;
    browser_turn().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_sdk_and_native_event_source_receive_redis_publishes() {
    let _turn = browser_ready().await;
    let artifacts = artifact_dir();
    std::fs::create_dir_all(&artifacts).expect("artifact dir");
    let mut rig = Rig::start_in_app(app()).await;
    let params = json!({
        "origin": rig.gateways[0].origin(),
        "secret": SECRET,
        "artifacts": artifacts,
    });
    rig.run_node(
        &["browser.test.mjs".into(), params.to_string()],
        SCENARIO_TIMEOUT,
    )
    .await;
    assert!(artifacts.join("gateway-clients.png").exists());
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_event_source_resumes_a_history_channel_from_last_event_id() {
    let _turn = browser_ready().await;
    let mut rig = Rig::start_in_app(app()).await;
    let params = json!({ "origin": rig.gateways[0].origin(), "secret": SECRET });
    rig.run_node(
        &["browser-history.test.mjs".into(), params.to_string()],
        SCENARIO_TIMEOUT,
    )
    .await;
    rig.stop().await;
}
