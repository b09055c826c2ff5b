//! The short soak (10 s) in the normal suite: the same churn, restarts and account as
//! `scripts/soak` (60 s), with a looser memory bound, since 10 s leaves little time after
//! warm-up for memory to settle.

mod support;

use std::time::Duration;

use support::soak::{SoakConfig, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_seconds_of_churn_with_two_restarts() {
    let config = SoakConfig {
        warm_up: Duration::from_secs(3),
        rss_tolerance: 0.5,
        ..SoakConfig::seconds(10)
    };
    let report = run(config).await;
    for line in report.lines() {
        println!("{line}");
    }
}
