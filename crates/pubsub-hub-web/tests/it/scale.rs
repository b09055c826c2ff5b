//! Scale through the dashboard's routes: shard subscribers and SPUBLISH on one Redis 7
//! server, a dashboard in shared-connection mode, and a dashboard on a real local Redis
//! Cluster (plain and shard delivery).

use std::time::{Duration, Instant};

use crate::util::{Dashboard, WAIT, enc, next_message, post_form_to, state_of, sub};
use axum::http::StatusCode;
use pubsub_hub::{ConnectionMode, PubSubHub};
use pubsub_hub_testkit::{RedisCluster, RedisServer};
use pubsub_hub_web::{
    AppState, Dashboard as Server, DashboardOptions, dashboard_hub_config, router, seed_defaults,
};
use serde_json::{Value, json};

fn delivered(reply: &Value) -> Vec<i64> {
    reply["delivered"]
        .as_array()
        .unwrap_or_else(|| panic!("no delivered list in {reply}"))
        .iter()
        .map(|n| n.as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_subscribers_and_spublish_on_one_server() {
    let d = Dashboard::start().await;

    let reply = d
        .post_form(
            "/subscribe",
            "name=shard-orders&kind=shard&target=orders:new,+shard:b",
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let state = reply.json();
    let shard = sub(&state, "shard-orders");
    assert_eq!(shard["kind"], "shard");
    assert_eq!(shard["is_pattern"], false);
    assert_eq!(shard["targets"], json!(["orders:new", "shard:b"]));
    assert_eq!(sub(&state, "orders-listener")["kind"], "channel");
    // SSUBSCRIBE was confirmed before /subscribe answered: Redis counts it already.
    assert_eq!(
        state["shard_numsub"],
        json!({"orders:new": 1, "shard:b": 1})
    );
    assert_eq!(state["shard_channels"], json!(["orders:new", "shard:b"]));
    assert_eq!(state["shard_channels_truncated"], false);
    assert_eq!(state["shard_channels_total"], 2);
    // NUMSUB stays about the plain channels of plain subscribers.
    assert_eq!(
        state["numsub"],
        json!({"billing:invoice": 1, "orders:new": 1})
    );

    let mut shard_rx = d.consumer("shard-orders");
    let mut plain_rx = d.consumer("orders-listener");

    // SPUBLISH reaches the shard subscriber only...
    let reply = d
        .post_form(
            "/publish",
            "channel=orders:new&message=sharded&kind=shard&count=2",
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["kind"], "shard");
    assert_eq!(delivered(&body), [1, 1], "one shard subscriber, twice");
    for seq in 1..=2 {
        let m = next_message(&mut shard_rx).await;
        assert_eq!(m.channel, "orders:new");
        assert_eq!(m.pattern, None);
        assert_eq!(
            m.payload.json(),
            &json!({"body": "sharded", "seq": seq, "of": 2})
        );
    }

    // ...and a request without `kind` is exactly the contract's PUBLISH: the plain
    // subscriber gets it, the shard one does not (Redis counted one receiver).
    let reply = d
        .post_form("/publish", "channel=orders:new&message=plain")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["kind"], "channel");
    assert_eq!(delivered(&body), [1]);
    let m = next_message(&mut plain_rx).await;
    assert_eq!(
        m.payload.json(),
        &json!({"body": "plain", "seq": 1, "of": 1})
    );
    let state = d.state().await;
    assert_eq!(sub(&state, "shard-orders")["received_total"], 2);
    assert_eq!(sub(&state, "orders-listener")["received_total"], 1);
    let shown = &sub(&state, "shard-orders")["messages"];
    assert_eq!(shown[0]["payload"]["seq"], 2, "newest first: {shown}");

    // Bad kinds are refused and change nothing.
    for form in [
        "channel=orders:new&message=x&kind=pattern",
        "channel=orders:new&message=x&kind=SHARD",
    ] {
        let message = d.post_form("/publish", form).await;
        let message = message.assert_error(StatusCode::BAD_REQUEST);
        assert!(message.contains("'shard'"), "{message}");
    }
    let message = d
        .post_form("/subscribe", "name=x&kind=shards&target=a")
        .await
        .assert_error(StatusCode::BAD_REQUEST);
    assert!(message.contains("'shard'"), "{message}");
    let after = d.state().await;
    assert_eq!(after["stats"]["published_total"], 3);
    assert_eq!(after["subscriptions"].as_array().unwrap().len(), 4);

    // Unsubscribing a shard subscriber leaves Redis without it.
    let reply = d.post_form("/unsubscribe", "name=shard-orders").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["state"]["shard_channels"], json!([]));
    d.hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedicated_mode_is_the_default_and_says_what_numsub_counts() {
    let d = Dashboard::start().await;
    let mode = d.state().await["mode"].clone();
    assert_eq!(mode["name"], "dedicated");
    assert_eq!(mode["shared_connections"], Value::Null);
    assert_eq!(mode["cluster"], false);
    assert_eq!(mode["numsub_counts"], "subscribers");
    assert_eq!(
        mode["subscriber_connections"], 3,
        "one per seeded subscriber"
    );
    assert!(
        mode["numsub_explanation"]
            .as_str()
            .unwrap()
            .contains("own Redis connection"),
        "{mode}"
    );
    assert_eq!(DashboardOptions::default().mode, ConnectionMode::Dedicated);
    d.hub.shutdown().await;
}

/// Redis' subscriber connections (RESP2 `flags=P`, or anything with subscriptions).
fn pubsub_connections(server: &RedisServer) -> usize {
    server
        .client_list()
        .iter()
        .filter(|c| c.is_pubsub())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_mode_keeps_a_fixed_set_of_connections() {
    const SHARED: usize = 2;
    let server = RedisServer::start();
    let config = dashboard_hub_config().with_mode(ConnectionMode::Shared {
        connections: SHARED,
    });
    let hub = PubSubHub::with_config(server.client(), config)
        .await
        .expect("hub connects");
    seed_defaults(&hub).await.expect("seeded");
    let app = router(AppState::new(hub.clone()));

    let state = state_of(&app).await;
    let mode = &state["mode"];
    assert_eq!(mode["name"], "shared");
    assert_eq!(mode["shared_connections"], SHARED);
    assert_eq!(mode["numsub_counts"], "connections");
    let explanation = mode["numsub_explanation"].as_str().unwrap();
    assert!(
        explanation.contains("NUMSUB counts connections, not names"),
        "{explanation}"
    );
    let before = pubsub_connections(&server);
    assert!((1..=SHARED).contains(&before), "{before} connections");

    // Twenty more subscribers of one channel and twenty of twenty others: still the set.
    for i in 0..20 {
        let form = format!("name=orders-{i}&target=orders:new");
        let reply = post_form_to(&app, "/subscribe", &form).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let form = format!("name=other-{i}&target=other:{i}");
        let reply = post_form_to(&app, "/subscribe", &form).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    let state = state_of(&app).await;
    let now = pubsub_connections(&server);
    assert!(
        now <= SHARED,
        "{now} subscriber connections for 43 subscribers"
    );
    assert_eq!(state["mode"]["subscriber_connections"], now);
    assert_eq!(state["stats"]["active_subscriptions"], 43);
    // 21 local subscribers of orders:new, one connection carrying it: NUMSUB says 1.
    assert_eq!(state["numsub"]["orders:new"], 1, "{}", state["numsub"]);

    // Exact and pattern both match: both are delivered, in shared mode too.
    let reply = post_form_to(
        &app,
        "/subscribe",
        "name=orders-pattern&kind=pattern&target=orders:*",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let mut exact = hub.get_subscription("orders-listener").unwrap().consumer();
    let mut pattern = hub.get_subscription("orders-pattern").unwrap().consumer();
    let mut other = hub.get_subscription("orders-7").unwrap().consumer();
    let reply = post_form_to(&app, "/publish", "channel=orders:new&message=both").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let m = next_message(&mut exact).await;
    assert_eq!(
        (m.channel.as_str(), m.pattern.as_deref()),
        ("orders:new", None)
    );
    let m = next_message(&mut other).await;
    assert_eq!(m.pattern, None);
    let m = next_message(&mut pattern).await;
    assert_eq!(m.pattern.as_deref(), Some("orders:*"));
    let state = state_of(&app).await;
    let shown = &sub(&state, "orders-pattern")["messages"][0];
    assert_eq!(shown["pattern"], "orders:*");
    assert_eq!(
        sub(&state, "orders-listener")["messages"][0]["pattern"],
        Value::Null
    );
    assert!(pubsub_connections(&server) <= SHARED);
    hub.shutdown().await;
}

/// POSTs `form` to `/publish` until `done` holds for the state, for plain publishes in a
/// cluster: a PUBLISH reaches the other nodes over the cluster bus, which may lose a relay
/// in the first moments after the cluster formed.
async fn publish_until(app: &axum::Router, form: &str, mut done: impl FnMut(&Value) -> bool) {
    let start = Instant::now();
    loop {
        let reply = post_form_to(app, "/publish", form).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        if done(&reply.json()["state"]) {
            return;
        }
        assert!(start.elapsed() < WAIT, "never delivered: {form}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_on_a_redis_cluster() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3, 0))
        .await
        .unwrap();
    let opts = DashboardOptions {
        port: 0,
        cluster_nodes: cluster.node_urls(),
        ..DashboardOptions::default()
    };
    let dashboard = Server::start(opts).await.expect("starts on the cluster");
    let lines = dashboard.startup_lines().to_vec();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let seeds = cluster
        .nodes()
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port()))
        .collect::<Vec<_>>()
        .join(", ");
    assert!(
        lines[1].starts_with(&format!("Using Redis Cluster at {seeds} (cluster mode")),
        "{}",
        lines[1]
    );
    assert_eq!(lines[2], "Seeded 3 default subscription(s)");
    assert!(dashboard.embedded_redis().is_none());
    let hub = dashboard.hub().clone();
    assert!(hub.is_cluster());
    let app = router(AppState::new(hub.clone()));

    let state = state_of(&app).await;
    assert_eq!(state["mode"]["cluster"], true);
    assert_eq!(state["redis"]["available"], true);
    assert_eq!(state["stats"]["pattern_subscriptions"], 1, "NUMPAT summed");

    // Shard channels owned by the three different masters, one subscriber for all.
    let masters = cluster.master_ports();
    assert_eq!(masters.len(), 3);
    let channels: Vec<String> = [0u16, 8000, 16000]
        .iter()
        .map(|&slot| RedisCluster::key_for_slot(slot, "dash:"))
        .collect();
    let owners: std::collections::BTreeSet<u16> = channels
        .iter()
        .map(|c| cluster.port_for_slot(RedisCluster::slot_for_key(c)))
        .collect();
    assert_eq!(owners.len(), 3, "one channel per master");
    let form = format!("name=shards&kind=shard&target={}", enc(&channels.join(",")));
    let reply = post_form_to(&app, "/subscribe", &form).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let state = reply.json();
    assert_eq!(sub(&state, "shards")["kind"], "shard");
    let expected: serde_json::Map<String, Value> =
        channels.iter().map(|c| (c.clone(), json!(1))).collect();
    assert_eq!(state["shard_numsub"], Value::Object(expected));

    let mut shards = hub.get_subscription("shards").unwrap().consumer();
    for channel in &channels {
        let form = format!(
            "channel={}&message=to-{}&kind=shard",
            enc(channel),
            enc(channel)
        );
        let reply = post_form_to(&app, "/publish", &form).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(
            delivered(&reply.json()),
            [1],
            "SPUBLISH on {channel}'s master"
        );
        let m = next_message(&mut shards).await;
        assert_eq!(&m.channel, channel);
        assert_eq!(m.payload.json()["body"], format!("to-{channel}"));
    }

    // Plain publish and subscribe work through the cluster too, exact and pattern.
    publish_until(&app, "channel=orders:new&message=plain", |s| {
        sub(s, "orders-listener")["received_total"] != 0
    })
    .await;
    publish_until(&app, "channel=notifications:x&message=pattern", |s| {
        sub(s, "all-notifications")["received_total"] != 0
    })
    .await;
    let state = state_of(&app).await;
    let m = &sub(&state, "all-notifications")["messages"][0];
    assert_eq!(m["pattern"], "notifications:*");
    assert_eq!(state["numsub"]["orders:new"], 1, "summed over the nodes");

    dashboard.run(async {}).await.expect("clean exit");
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_options_are_checked_and_no_fallback_is_improvised() {
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let opts = DashboardOptions {
        port: 0,
        cluster_nodes: vec![format!("redis://:pw@127.0.0.1:{dead_port}/")],
        ..DashboardOptions::default()
    };
    let err = Server::start(opts.clone()).await.unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "cannot reach any of the Redis Cluster nodes 127.0.0.1:{dead_port}: start the \
             cluster or give the addresses of nodes that run"
        )
    );
    let err = Server::start(DashboardOptions {
        redis_url: Some("redis://127.0.0.1:1/".into()),
        ..opts
    })
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            pubsub_hub_web::DashboardError::InvalidOption {
                option: "cluster_nodes",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("redis_url"), "{err}");
}
