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

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pubsub_hub::PubSubHub;
use pubsub_hub_testkit::RedisServer;
use pubsub_hub_testkit::http::rebind;
use pubsub_hub_testkit::node::{
    SETUP_HINT, artifact_dir, browser_turn, chromium_path, npm_ci, run_node,
};
use pubsub_hub_web::{dashboard_hub_config, seed_defaults, serve};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Bound on the whole browser scenario.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(180);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Fails with a clear message when Chromium or node is missing; installs playwright-core
/// from the lock file when it is not there yet.
async fn prepare() {
    let chromium = chromium_path();
    assert!(
        chromium.exists(),
        "{} not found: {SETUP_HINT}",
        chromium.display()
    );
    npm_ci(&browser_dir()).await;
}

/// The dashboard, its hub and its private Redis, serving on a free loopback port.
struct Rig {
    server: RedisServer,
    hub: PubSubHub,
    addr: SocketAddr,
    serving: Option<Serving>,
}

impl Rig {
    async fn start() -> Rig {
        prepare().await;
        let server = RedisServer::start();
        let hub = PubSubHub::with_config(server.client(), dashboard_hub_config())
            .await
            .expect("hub connects");
        seed_defaults(&hub).await.expect("defaults seeded");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = Some(Serving::start(listener, &hub));
        Rig {
            server,
            hub,
            addr,
            serving,
        }
    }

    /// Runs `script` with the dashboard's URL and the artifact directory, answering its
    /// control requests, and fails unless it exits 0 having printed `marker`.
    async fn run(&mut self, script: &str, marker: &str) {
        let artifacts = artifact_dir();
        std::fs::create_dir_all(&artifacts).expect("artifact dir");
        let url = format!("http://{}/", self.addr);
        let args = [OsStr::new(script), OsStr::new(&url), artifacts.as_os_str()];
        let rig = &mut *self;
        let _turn = browser_turn().await;
        let run = run_node(
            &browser_dir(),
            &args,
            SCENARIO_TIMEOUT,
            async |request| match request {
                "restart-server" => {
                    rig.serving.take().expect("serving").stop().await;
                    rig.serving = Some(Serving::start(rebind(rig.addr).await, &rig.hub));
                    "restarted".to_owned()
                }
                "publish-binary" => {
                    rig.server
                        .publish("orders:new", &[0xff, 0x00, 0x80, b'h', b'i']);
                    "published".to_owned()
                }
                other => panic!("unknown control request {other:?}"),
            },
        )
        .await;
        assert!(
            run.passed(marker),
            "{script} failed (server log tail: {}):\n{}",
            self.server.log_tail(20),
            run.describe()
        );
    }

    async fn stop(mut self) {
        self.serving.take().expect("serving").stop().await;
        self.hub.shutdown().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_works_in_headless_chromium() {
    let mut rig = Rig::start().await;
    rig.run("dashboard.test.mjs", "browser test passed").await;
    assert!(artifact_dir().join("dashboard.png").exists());
    rig.stop().await;
}

/// The page following `/events` deltas (`tests/browser/deltas.test.mjs`) ends equal to a page
/// built from fresh `/state` reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_deltas_make_the_page_a_fresh_state_makes() {
    let mut rig = Rig::start().await;
    rig.run("deltas.test.mjs", "PASS").await;
    rig.stop().await;
}
