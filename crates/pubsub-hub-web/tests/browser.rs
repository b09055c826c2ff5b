//! The dashboard in a real browser: Debian's headless Chromium driven by playwright-core
//! (`tests/browser/dashboard.test.mjs`), against a private Redis and `serve` on a free port.
//!
//! Needs `/usr/bin/chromium` (or `CHROMIUM_PATH`) and `node` with npm. It fails, rather than
//! skips, when they are missing: a page that is never opened is a page that is never tested.
//! The screenshots land in `target/artifacts/`.
//!
//! The scenario may ask this side for things a page cannot do to itself: it prints
//! `control: <request>` and waits for one line of answer on its stdin. The requests are
//! `restart-server`: stop serving (which ends every open push stream, as a server restart
//! does) and serve again on the same port with the same hub; and `publish-binary`: publish
//! bytes that are not UTF-8 to `orders:new`, which the page's form cannot.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use pubsub_hub::PubSubHub;
use pubsub_hub_testkit::RedisServer;
use pubsub_hub_web::{dashboard_hub_config, seed_defaults, serve};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

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

/// The dashboard served on a listener until `stop` fires.
struct Serving {
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Serving {
    fn start(listener: TcpListener, hub: &PubSubHub) -> Serving {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, hub.clone(), async move {
            let _ = stopped.await;
        }));
        Serving { stop, task }
    }

    /// Stops serving; fails unless serve returns cleanly within 2 s (open streams included).
    async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(2), self.task)
            .await
            .expect("serve returns within 2 s")
            .unwrap()
            .unwrap();
    }
}

/// Binds `addr` again after the server on it stopped (the port stays the page's origin).
async fn rebind(addr: SocketAddr) -> TcpListener {
    let start = std::time::Instant::now();
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "cannot bind {addr} again: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
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
    let addr = listener.local_addr().unwrap();
    let url = format!("http://{addr}/");
    let serving = Serving::start(listener, &hub);

    let artifacts = artifact_dir();
    std::fs::create_dir_all(&artifacts).expect("artifact dir");
    let mut node = Command::new("node");
    node.arg("dashboard.test.mjs")
        .arg(&url)
        .arg(&artifacts)
        .env("CHROMIUM_PATH", chromium_path())
        .current_dir(browser_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = node
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node ({e}); {SETUP_HINT}"));
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = child.stderr.take().unwrap();
    let stderr_text = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });

    let mut stdout_text = String::new();
    let scenario = async {
        let mut serving = serving;
        while let Some(line) = lines.next_line().await.expect("node's stdout") {
            println!("{line}");
            stdout_text.push_str(&line);
            stdout_text.push('\n');
            match line.strip_prefix("control: ") {
                Some("restart-server") => {
                    serving.stop().await;
                    serving = Serving::start(rebind(addr).await, &hub);
                    stdin.write_all(b"restarted\n").await.unwrap();
                }
                Some("publish-binary") => {
                    server.publish("orders:new", &[0xff, 0x00, 0x80, b'h', b'i']);
                    stdin.write_all(b"published\n").await.unwrap();
                }
                Some(other) => panic!("unknown control request {other:?}"),
                None => {}
            }
        }
        (child.wait().await.expect("node ran"), serving)
    };
    let (status, serving) = tokio::time::timeout(SCENARIO_TIMEOUT, scenario)
        .await
        .unwrap_or_else(|_| {
            panic!("the browser scenario: still running after {SCENARIO_TIMEOUT:?}")
        });
    let stderr_text = stderr_text.await.unwrap();
    assert!(
        status.success(),
        "the browser scenario failed (server log tail: {}):\nexit: {status}\n--- stdout ---\n{stdout_text}\n--- stderr ---\n{stderr_text}",
        server.log_tail(20),
    );
    assert!(artifacts.join("dashboard.png").exists());

    serving.stop().await;
    hub.shutdown().await;
}
