//! The fault matrix: the dashboard serves on a real socket against a private redis-server
//! throughout, while Redis goes away, drops our connections, stalls or refuses our user.
//!
//! After every fault the same things are checked:
//! - recovery without restarting anything of ours (subscribers live, publishing works);
//! - the gap is visible (`status`, `reconnects_total`, `gaps_total` / `last_gap`, and a
//!   `warnings` sentence saying messages may have been lost);
//! - our Redis connections return to their number before the fault;
//! - every `/state` call, from the test and from a background prober every 50 ms, answered
//!   200 within one second, saying `"available": false` while Redis was away.

use std::time::{Duration, Instant};

use crate::util::{Live, Setup, WAIT, all_live, all_reconnecting, enc, sub};
use pubsub_hub_testkit::RedisServer;
use serde_json::{Value, json};

const PROBE_EVERY: Duration = Duration::from_millis(50);
const NAMES: [&str; 3] = ["all-notifications", "billing-listener", "orders-listener"];

/// Publishes through the dashboard until it answers 200 (Redis may still be coming back);
/// returns the `delivered` list.
async fn publish_until_ok(live: &Live, channel: &str, message: &str) -> Vec<i64> {
    let start = Instant::now();
    loop {
        let reply = live
            .post(
                "/publish",
                &format!("channel={}&message={}", enc(channel), enc(message)),
            )
            .await;
        assert!(
            reply.took < Duration::from_millis(2500),
            "/publish took {:?}",
            reply.took
        );
        if reply.status == 200 {
            return reply.json()["delivered"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_i64().unwrap())
                .collect();
        }
        assert!(
            matches!(reply.status, 502 | 503),
            "unexpected {}: {}",
            reply.status,
            reply.text()
        );
        assert!(start.elapsed() < WAIT, "publishing never worked again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The checks after a fault that cut the subscribers in `gapped`: all live again, each of
/// them shows one more gap and a warning, the connection count is `baseline`, and a
/// message published now reaches orders-listener.
async fn assert_recovered(live: &Live, baseline: usize, gapped: &[&str]) -> Value {
    let state = live
        .wait_state("every subscriber is live and Redis answers", |s| {
            all_live(s) && s["redis"]["available"] == true
        })
        .await;
    let warnings = state["warnings"].as_array().unwrap();
    for name in gapped {
        let s = sub(&state, name);
        assert!(s["gaps_total"].as_u64().unwrap() >= 1, "{name}: {s}");
        assert!(s["reconnects_total"].as_u64().unwrap() >= 1, "{name}: {s}");
        let gap = &s["last_gap"];
        assert!(
            gap["ended_at_ms"].is_u64(),
            "{name}: the gap is over: {gap}"
        );
        assert!(
            warnings.iter().any(|w| {
                let w = w.as_str().unwrap();
                w.starts_with(name) && w.contains("were not received")
            }),
            "{name}: no warning in {warnings:?}"
        );
    }
    live.wait_connections(baseline).await;
    let marker = format!("after-{}", Instant::now().elapsed().as_nanos());
    assert_eq!(publish_until_ok(live, "orders:new", &marker).await, vec![1]);
    live.wait_state("the new message shows", |s| {
        sub(s, "orders-listener")["messages"][0]["payload"]["body"] == marker.as_str()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_for_one_second() {
    let mut live = Live::start().await;
    let baseline = live.connections();
    let prober = live.probe(PROBE_EVERY);

    live.server.stop();
    let down = live
        .wait_state("everyone is reconnecting and Redis is unavailable", |s| {
            all_reconnecting(s) && s["redis"]["available"] == false
        })
        .await;
    assert!(
        down["warnings"].as_array().unwrap().iter().any(|w| w
            .as_str()
            .unwrap()
            .contains("is disconnected from Redis since")),
        "{down}"
    );
    let reply = live
        .post("/publish", "channel=orders:new&message=lost")
        .await;
    assert_eq!(
        reply.error(503),
        "Redis is unavailable right now; try again shortly"
    );
    // The fault itself is a length of time.
    tokio::time::sleep(Duration::from_secs(1)).await;
    live.server.start_again();

    assert_recovered(&live, baseline, &NAMES).await;
    let seen = prober.finish().await;
    assert!(seen.unavailable.load(std::sync::atomic::Ordering::Relaxed) > 0);
    live.stop().await;
}

/// How long the long outage lasts: 30 s. The reconnect backoff reaches its 5 s cap after
/// about 6 s, so most of it is spent in capped attempts, as in a real outage.
const LONG_OUTAGE: Duration = Duration::from_secs(30);

/// A long outage: Redis down for [`LONG_OUTAGE`], then back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_for_thirty_seconds() {
    let mut live = Live::start().await;
    let baseline = live.connections();
    let prober = live.probe(PROBE_EVERY);

    live.server.stop();
    let first = live
        .wait_state("everyone is reconnecting", all_reconnecting)
        .await;
    let since = sub(&first, "orders-listener")["status"]["since_ms"].clone();
    let outage = Instant::now();
    let mut last = first;
    while outage.elapsed() < LONG_OUTAGE {
        last = live.state().await;
        assert_eq!(last["redis"]["available"], false);
        assert!(all_reconnecting(&last));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let orders = sub(&last, "orders-listener");
    assert_eq!(orders["status"]["since_ms"], since, "one gap, one start");
    assert!(
        orders["status"]["attempts"].as_u64().unwrap() >= 6,
        "attempts so far: {orders}"
    );
    assert_eq!(orders["gaps_total"], 1);
    live.server.start_again();

    let state = assert_recovered(&live, baseline, &NAMES).await;
    let gap = &sub(&state, "orders-listener")["last_gap"];
    let length = gap["ended_at_ms"].as_u64().unwrap() - gap["started_at_ms"].as_u64().unwrap();
    assert!(
        u128::from(length) >= LONG_OUTAGE.as_millis(),
        "the gap covers the outage: {gap}"
    );
    prober.finish().await;
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_type_pubsub() {
    let live = Live::start().await;
    let baseline = live.connections();
    let prober = live.probe(PROBE_EVERY);

    assert_eq!(live.server.kill_pubsub_clients(), 3);
    let state = assert_recovered(&live, baseline, &NAMES).await;
    assert_eq!(state["stats"]["reconnects_total"], 3);
    for name in NAMES {
        assert_eq!(sub(&state, name)["gaps_total"], 1, "{name}");
    }
    prober.finish().await;
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publishers_connection_killed() {
    let live = Live::start().await;
    let baseline = live.connections();
    let prober = live.probe(PROBE_EVERY);

    // Kills every normal (non-pub/sub) client: our publishing and PUBSUB connection, and
    // the test kit's admin connection, which reconnects by itself.
    live.server
        .cmd(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "no"]);
    assert_eq!(
        publish_until_ok(&live, "orders:new", "hello again").await,
        vec![1]
    );
    let state = live.state().await;
    for name in NAMES {
        // The subscribers were not touched: no gap.
        assert_eq!(sub(&state, name)["gaps_total"], 0, "{name}");
    }
    assert!(state["warnings"].as_array().unwrap().is_empty());
    live.wait_connections(baseline).await;
    prober.finish().await;
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_cut_by_the_output_buffer_limit() {
    let live = Live::start().await;
    let baseline = live.connections();
    let prober = live.probe(PROBE_EVERY);
    live.server.cmd(&[
        "CONFIG",
        "SET",
        "client-output-buffer-limit",
        "pubsub 8kb 8kb 0",
    ]);

    // One 32 KiB message cannot fit in an 8 KiB pub/sub output buffer: Redis counts it as
    // delivered, then drops the subscriber instead of sending it.
    let big = "x".repeat(32 * 1024);
    let reply = live
        .post("/publish", &format!("channel=orders:new&message={big}"))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["delivered"], json!([1]));

    live.wait_state("orders-listener had a gap", |s| {
        sub(s, "orders-listener")["gaps_total"] == 1
    })
    .await;
    let state = assert_recovered(&live, baseline, &["orders-listener"]).await;
    let orders = sub(&state, "orders-listener");
    // The big one was lost, and the numbers say so: Redis delivered 2, we received 1.
    assert_eq!(orders["received_total"], 1);
    assert_eq!(state["stats"]["delivered_total"], 2);
    for name in ["billing-listener", "all-notifications"] {
        assert_eq!(sub(&state, name)["gaps_total"], 0, "{name}");
    }
    prober.finish().await;
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stalled_by_debug_sleep_and_client_pause() {
    let live = Live::start().await;
    let baseline = live.connections();
    let prober = live.probe(PROBE_EVERY);

    // DEBUG SLEEP blocks the whole server; run it on a connection of its own.
    let mut stall_connection = live.server.connection();
    let stall = tokio::task::spawn_blocking(move || {
        redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(3)
            .query::<()>(&mut stall_connection)
    });
    live.wait_state("the stall shows as unavailable", |s| {
        s["redis"]["available"] == false
    })
    .await;
    let reply = live
        .post("/publish", "channel=orders:new&message=stalled")
        .await;
    assert!(reply.took < Duration::from_millis(2500), "{:?}", reply.took);
    reply.error(503);
    stall.await.unwrap().expect("DEBUG SLEEP ran");
    live.wait_state("Redis answers again", |s| s["redis"]["available"] == true)
        .await;

    // CLIENT PAUSE WRITE holds PUBLISH back: the publish fails within the command timeout
    // instead of waiting for the pause to end.
    live.server.cmd(&["CLIENT", "PAUSE", "2500", "WRITE"]);
    // The paused PUBLISH also holds back the PUBSUB commands queued behind it on the same
    // connection, so /state may say "unavailable" meanwhile; it still answers in time.
    let reply = live
        .post("/publish", "channel=orders:new&message=paused")
        .await;
    assert!(reply.took < Duration::from_millis(2500), "{:?}", reply.took);
    reply.error(503);
    live.state().await;

    // Whether a keep-alive PING of a subscriber fell into the stall is chance: no gap is
    // required, but if there was one it must be accounted for like any other.
    let state = assert_recovered(&live, baseline, &[]).await;
    for name in NAMES {
        let s = sub(&state, name);
        assert_eq!(s["gaps_total"], s["reconnects_total"], "{name}: {s}");
    }
    assert!(state["stats"]["publish_errors_total"].as_u64().unwrap() >= 2);
    prober.finish().await;
    live.stop().await;
}

/// A Redis whose default user needs `admin-pass` (the test kit's), and the dashboard on it
/// logged in as its own ACL user `dash` / `right-pass`.
async fn dashboard_as_acl_user() -> Live {
    let server = RedisServer::start_with_args(&["--requirepass", "admin-pass"]);
    server.cmd(&[
        "ACL",
        "SETUSER",
        "dash",
        "on",
        ">right-pass",
        "~*",
        "&*",
        "+@all",
    ]);
    let url = format!("redis://dash:right-pass@127.0.0.1:{}/", server.port());
    Live::start_on(
        server,
        Setup {
            client: Some(redis::Client::open(url).unwrap()),
            ..Setup::default()
        },
    )
    .await
}

/// Changes `dash`'s password and drops its connections: every reconnect is refused.
async fn lock_out(live: &Live) -> Value {
    live.server
        .cmd(&["ACL", "SETUSER", "dash", "resetpass", ">new-pass"]);
    live.server.cmd(&["CLIENT", "KILL", "USER", "dash"]);
    live.wait_state("the refusals show", |s| {
        all_reconnecting(s)
            && sub(s, "orders-listener")["status"]["attempts"].as_u64() >= Some(1)
            && s["redis"]["available"] == false
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_then_right_password() {
    let live = dashboard_as_acl_user().await;
    let subscriber_connections = 3;
    let prober = live.probe(PROBE_EVERY);

    let refused = lock_out(&live).await;
    let why = sub(&refused, "orders-listener")["status"]["last_error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(why.contains("authentication failed"), "{why}");
    assert!(
        refused["redis"]["error"]
            .as_str()
            .unwrap()
            .contains("refused the dashboard's user"),
        "{refused}"
    );
    let text = refused.to_string();
    assert!(!text.contains("right-pass") && !text.contains("new-pass"));
    let reply = live.post("/publish", "channel=orders:new&message=x").await;
    assert!(reply.took < Duration::from_secs(2), "{:?}", reply.took);
    let message = reply.error(502);
    assert!(message.contains("refused"), "{message}");
    assert!(!message.contains("pass"), "{message}");

    live.server
        .cmd(&["ACL", "SETUSER", "dash", "resetpass", ">right-pass"]);
    let state = live
        .wait_state("every subscriber is live again", all_live)
        .await;
    for name in NAMES {
        let s = sub(&state, name);
        assert_eq!(s["gaps_total"], 1, "{name}: {s}");
        assert!(s["last_gap"]["ended_at_ms"].is_u64(), "{name}: {s}");
    }
    live.server
        .wait_until(WAIT, "the subscribers are back", || {
            live.server
                .client_list()
                .iter()
                .filter(|c| c.is_pubsub())
                .count()
                == subscriber_connections
        });
    prober.finish().await;
    live.stop().await;
}

/// redis-rs 1.8's `ConnectionManager` reconnects only after an I/O error, so a reconnect
/// refused by Redis (wrong password) would stay its answer for good; the hub replaces such
/// a manager, so publishing and `/state`'s Redis part recover with the subscribers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_recovers_after_the_right_password() {
    let live = dashboard_as_acl_user().await;
    let baseline = live.connections();
    lock_out(&live).await;
    live.server
        .cmd(&["ACL", "SETUSER", "dash", "resetpass", ">right-pass"]);
    assert_recovered(&live, baseline, &NAMES).await;
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_without_pubsub_permission() {
    let server = RedisServer::start();
    server.cmd(&[
        "ACL", "SETUSER", "nopub", "on", ">pw", "~*", "&*", "+@all", "-@pubsub",
    ]);
    let url = format!("redis://nopub:pw@127.0.0.1:{}/", server.port());
    let live = Live::start_on(
        server,
        Setup {
            client: Some(redis::Client::open(url).unwrap()),
            seed: false,
            ..Setup::default()
        },
    )
    .await;
    let baseline = live.connections();
    let prober = live.probe(PROBE_EVERY);

    let state = live.state().await;
    assert_eq!(state["redis"]["available"], false);
    assert!(
        state["redis"]["error"].as_str().unwrap().contains("NOPERM"),
        "{state}"
    );
    let reply = live
        .post("/subscribe", "name=watcher&target=orders:new")
        .await;
    assert!(reply.took < Duration::from_secs(3), "{:?}", reply.took);
    let message = reply.error(502);
    assert!(message.contains("NOPERM"), "{message}");
    let reply = live.post("/publish", "channel=orders:new&message=x").await;
    assert!(reply.error(502).contains("NOPERM"));
    assert_eq!(live.state().await["subscriptions"], json!([]));
    live.wait_connections(baseline).await;

    // Granting the permission is enough: nothing of ours restarts.
    live.server.cmd(&["ACL", "SETUSER", "nopub", "+@pubsub"]);
    let reply = live
        .post("/subscribe", "name=watcher&target=orders:new")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(publish_until_ok(&live, "orders:new", "now").await, vec![1]);
    assert_eq!(live.state().await["redis"]["available"], true);
    prober.finish().await;
    live.stop().await;
}
