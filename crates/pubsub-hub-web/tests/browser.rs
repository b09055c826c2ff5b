//! The dashboard in a real browser: Debian's headless Chromium driven by playwright-core
//! (`tests/browser/dashboard.test.mjs`), against a private Redis and `serve` on a free port.
//!
//! Needs `/usr/bin/chromium` (or `CHROMIUM_PATH`) and `node` with npm. It fails, rather than
//! skips, when they are missing: a page that is never opened is a page that is never tested.
//! The screenshots land in `target/artifacts/`.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use pubsub_hub::PubSubHub;
use pubsub_hub_testkit::RedisServer;
use pubsub_hub_web::{dashboard_hub_config, seed_defaults, serve};
use tokio::net::TcpListener;
use tokio::process::Command;

/// Bound on `npm ci` (a single small package from the registry).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);
/// Bound on the whole browser scenario.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(180);

const SETUP_HINT: &str = "run the project's setup for browser tests: \
     `apt-get install -y chromium nodejs npm` (Debian), then `cargo test -p pubsub-hub-web --test browser` \
     installs playwright-core from tests/browser/package-lock.json";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn artifact_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("artifacts")
}

fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

fn describe(output: &Output) -> String {
    format!(
        "exit: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `cmd` to completion within `limit`, or fails the test with `what`.
async fn run(mut cmd: Command, limit: Duration, what: &str) -> Output {
    cmd.kill_on_drop(true);
    match tokio::time::timeout(limit, cmd.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => panic!("{what}: cannot run it ({e}); {SETUP_HINT}"),
        Err(_) => panic!("{what}: still running after {limit:?}"),
    }
}

/// Fails with a clear message when Chromium or node is missing; installs playwright-core
/// from the lock file when `node_modules` is not there yet.
async fn prepare() {
    let chromium = chromium_path();
    assert!(
        chromium.exists(),
        "{} not found: {SETUP_HINT}",
        chromium.display()
    );
    let mut node = Command::new("node");
    node.arg("--version");
    let version = run(node, Duration::from_secs(30), "node --version").await;
    assert!(version.status.success(), "node does not run: {SETUP_HINT}");

    let dir = browser_dir();
    if !dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        let mut npm = Command::new("npm");
        npm.args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir);
        let output = run(npm, INSTALL_TIMEOUT, "npm ci in tests/browser").await;
        assert!(
            output.status.success(),
            "npm ci in {} failed:\n{}",
            dir.display(),
            describe(&output)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_works_in_headless_chromium() {
    prepare().await;

    let server = RedisServer::start();
    let hub = PubSubHub::with_config(server.client(), dashboard_hub_config())
        .await
        .expect("hub connects");
    seed_defaults(&hub).await.expect("defaults seeded");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(serve(listener, hub.clone(), async move {
        let _ = stopped.await;
    }));

    let artifacts = artifact_dir();
    std::fs::create_dir_all(&artifacts).expect("artifact dir");
    let mut node = Command::new("node");
    node.arg("dashboard.test.mjs")
        .arg(&url)
        .arg(&artifacts)
        .env("CHROMIUM_PATH", chromium_path())
        .current_dir(browser_dir());
    let output = run(node, SCENARIO_TIMEOUT, "the browser scenario").await;
    println!("{}", String::from_utf8_lossy(&output.stdout));
    assert!(
        output.status.success(),
        "the browser scenario failed (server log tail: {}):\n{}",
        server.log_tail(20),
        describe(&output)
    );
    assert!(artifacts.join("dashboard.png").exists());

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(2), serving)
        .await
        .expect("serve returns after the browser closed")
        .unwrap()
        .unwrap();
    hub.shutdown().await;
}
