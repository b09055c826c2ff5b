//! The `centrifuge` SDK in Node against in-process gateways, or gateway processes for the
//! kill -9 scenario (scenarios in `tests/js/sdk.test.mjs`).

use std::time::Duration;

use serde_json::json;

use crate::support::{API_KEY, GATEWAY_PROCESS_ENV, Rig, SECRET, prepare, serve_gateway_process};

/// Bound on one scenario; each takes a few seconds when it passes. Generous: its own
/// waits are bounded (10 s to 20 s each) and fail with their own message first.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs scenario `name` of `sdk.test.mjs` against a one-gateway rig.
async fn one_gateway(name: &str) {
    prepare().await;
    let mut rig = Rig::start(1).await;
    let params = json!({ "ws": rig.gateways[0].ws_url(), "secret": SECRET });
    rig.run_node(
        &["sdk.test.mjs".into(), name.into(), params.to_string()],
        SCENARIO_TIMEOUT,
    )
    .await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_subscribes_receives_publishes_where_allowed_and_unsubscribes() {
    one_gateway("basics").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_refreshes_expiring_tokens_and_retries_expired_ones() {
    one_gateway("tokens").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_resubscribes_after_a_gateway_restart_on_the_same_port() {
    one_gateway("gateway-restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_resubscribes_after_a_redis_restart_on_the_same_port() {
    one_gateway("redis-restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_redis_deliver_to_subscribers_on_both() {
    prepare().await;
    let mut rig = Rig::start(2).await;
    let params = json!({
        "ws": [rig.gateways[0].ws_url(), rig.gateways[1].ws_url()],
        "api": [rig.gateways[0].origin(), rig.gateways[1].origin()],
        "apiKey": API_KEY,
        "secret": SECRET,
    });
    rig.run_node(
        &[
            "sdk.test.mjs".into(),
            "two-nodes".into(),
            params.to_string(),
        ],
        SCENARIO_TIMEOUT,
    )
    .await;
    rig.stop().await;
}

/// Bound on the history scenarios, which publish and receive thousands.
const HISTORY_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs history scenario `name` of `sdk.test.mjs` against a one-gateway rig.
async fn one_gateway_history(name: &str) {
    prepare().await;
    let mut rig = Rig::start(1).await;
    let params = json!({ "ws": rig.gateways[0].ws_url(), "secret": SECRET });
    rig.run_node(
        &["sdk.test.mjs".into(), name.into(), params.to_string()],
        HISTORY_TIMEOUT,
    )
    .await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_away_during_1000_publications_recovers_exactly_those_in_order_then_live() {
    one_gateway_history("history-missed-1000").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_reconnecting_100_times_under_1000_per_second_loses_and_repeats_nothing() {
    one_gateway_history("history-100-reconnects").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_after_a_redis_restart_without_persistence_gets_a_new_epoch_and_recovered_false() {
    one_gateway_history("history-redis-restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_clients_of_a_killed_gateway_process_recover_on_the_other() {
    prepare().await;
    let mut rig = Rig::start_processes(2).await;
    let params = json!({
        "ws": [rig.processes[0].ws_url(), rig.processes[1].ws_url()],
        "secret": SECRET,
    });
    rig.run_node(
        &[
            "sdk.test.mjs".into(),
            "history-kill-9".into(),
            params.to_string(),
        ],
        HISTORY_TIMEOUT,
    )
    .await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_presence_and_join_leave_events_span_two_gateways() {
    prepare().await;
    let mut rig = Rig::start(2).await;
    let params = json!({
        "ws": [rig.gateways[0].ws_url(), rig.gateways[1].ws_url()],
        "secret": SECRET,
    });
    rig.run_node(
        &["sdk.test.mjs".into(), "presence".into(), params.to_string()],
        SCENARIO_TIMEOUT,
    )
    .await;
    rig.stop().await;
}

/// Not a test of its own: the gateway process [`crate::support::GatewayProcess`] starts
/// (this binary run again with the Redis URL in its environment), so that the kill -9
/// scenario kills a real process with its own sockets and Redis connections.
#[test]
#[ignore = "a gateway process for the kill -9 scenario, started by it"]
fn gateway_process() {
    let url = std::env::var(GATEWAY_PROCESS_ENV)
        .expect("run by GatewayProcess, with the Redis URL in the environment");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(serve_gateway_process(&url));
}
