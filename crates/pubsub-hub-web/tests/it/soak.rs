//! The short soak (10 s) in the normal suite: the same churn, restarts and account as
//! `scripts/soak` (60 s, the `soak` example), with a looser memory bound, since 10 s leaves
//! little time after warm-up for memory to settle. The soak itself is the test kit's
//! (`pubsub_hub_testkit::soak`).

use std::time::Duration;

use pubsub_hub_testkit::soak::{SoakConfig, run};

use crate::util::Live;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_seconds_of_churn_with_two_restarts() {
    let config = SoakConfig {
        warm_up: Duration::from_secs(3),
        rss_tolerance: 0.5,
        ..SoakConfig::seconds(10)
    };
    let mut live = Live::start().await;
    let report = run(config, &mut live.server, live.addr).await;
    live.stop().await;
    for line in report.lines() {
        println!("{line}");
    }
}
