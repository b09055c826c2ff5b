//! The bounded soak, run by `scripts/soak`: `cargo run --release -p pubsub-hub-web --example
//! soak -- [SECONDS]` (default 60). Starts its own redis-server on a free loopback port,
//! serves the dashboard on 127.0.0.1:0, churns for SECONDS with two Redis restarts, prints
//! the account and exits non-zero if any check fails. Needs only `redis-server` on PATH.

#[path = "../tests/support/mod.rs"]
mod support;

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
    let report = runtime.block_on(support::soak::run(support::soak::SoakConfig::seconds(
        seconds,
    )));
    for line in report.lines() {
        println!("{line}");
    }
    println!("soak: all checks passed");
}
