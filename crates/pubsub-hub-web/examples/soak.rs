//! The bounded soak, run by `scripts/soak`: `cargo run --release -p pubsub-hub-web --example
//! soak -- [SECONDS]` (default 60). Starts its own redis-server on a free loopback port,
//! serves the dashboard on 127.0.0.1:0 in this process, runs the test kit's soak
//! (`pubsub_hub_testkit::soak`: churn for SECONDS with two Redis restarts), prints the
//! account and exits non-zero if any check fails. Needs only `redis-server` on PATH.

use pubsub_hub::PubSubHub;
use pubsub_hub_testkit::RedisServer;
use pubsub_hub_testkit::soak::{SoakConfig, run};
use pubsub_hub_web::{AppState, dashboard_hub_config, seed_defaults, serve_with_state};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

fn main() {
    let seconds: u64 = match std::env::args().nth(1) {
        None => 60,
        Some(arg) => arg.parse().unwrap_or_else(|_| {
            eprintln!("usage: soak [SECONDS]  (a whole number of seconds, default 60)");
            std::process::exit(2);
        }),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    println!("soak: {seconds} s of churn with two Redis restarts, on loopback");
    let report = runtime.block_on(async {
        let mut server = RedisServer::start();
        let hub = PubSubHub::with_config(server.client(), dashboard_hub_config())
            .await
            .expect("the hub connects to the private server");
        seed_defaults(&hub).await.expect("defaults seeded");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("the bound address");
        let app = AppState::new(hub.clone());
        // The soak's connection baseline must include the peer directory's own connection,
        // which its task opens: wait for the directory's first read of Redis.
        let deadline = std::time::Instant::now() + pubsub_hub_testkit::WAIT;
        while !app.peers.snapshot().available {
            assert!(
                std::time::Instant::now() < deadline,
                "the peer directory never read Redis"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let dashboard = tokio::spawn(serve_with_state(listener, app, async move {
            let _ = stopped.await;
        }));
        let report = run(SoakConfig::seconds(seconds), &mut server, addr).await;
        let _ = stop.send(());
        let _ = dashboard.await;
        hub.shutdown().await;
        report
    });
    for line in report.lines() {
        println!("{line}");
    }
    println!("soak: all checks passed");
}
