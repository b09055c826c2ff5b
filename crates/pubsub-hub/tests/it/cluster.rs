//! Redis Cluster mode against a real local cluster: sharded and plain delivery across
//! slots and masters, introspection merged over every node, and shard subscriptions that
//! follow a node restart and replica failovers.
//!
//! Channel names are chosen with `key_for_slot` so that each master owns a known one.
#![cfg(feature = "cluster")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::util::{
    WAIT, client_count, cluster_hub, eventually, next_connection_event, next_message,
};
use pubsub_hub::{
    ConnectionMode, Event, HubConfig, PubSubHub, Subscription, SubscriptionStatus, TargetKind,
};
use pubsub_hub_testkit::{CLUSTER_SLOTS, RedisCluster, RedisServer};
use serde_json::json;

/// A channel whose slot master `index` (in slot order) owns, checked against the cluster.
fn channel_on(cluster: &RedisCluster, index: usize, prefix: &str) -> (String, u16) {
    let masters = cluster.master_ports();
    let slot = (index * usize::from(CLUSTER_SLOTS) / masters.len() + 7) as u16;
    let port = cluster.port_for_slot(slot);
    assert_eq!(
        port, masters[index],
        "slot {slot} belongs to master {index}"
    );
    (RedisCluster::key_for_slot(slot, prefix), port)
}

/// `PUBSUB SHARDNUMSUB channel` as one node counts it.
fn shardnumsub(node: &RedisServer, channel: &str) -> i64 {
    match node.cmd(&["PUBSUB", "SHARDNUMSUB", channel]) {
        redis::Value::Array(v) => redis::from_redis_value(v[1].clone()).unwrap(),
        other => panic!("unexpected SHARDNUMSUB reply {other:?}"),
    }
}

/// A per-node count summed over every node (all running), as the test's own reference.
fn sum_over_nodes(cluster: &RedisCluster, f: impl Fn(&RedisServer) -> i64) -> i64 {
    cluster.nodes().iter().map(f).sum()
}

/// Publishes until Redis reports `receivers` (the cluster may still be settling).
async fn spublish_until(
    hub: &PubSubHub,
    channel: &str,
    payload: &serde_json::Value,
    receivers: i64,
) {
    eventually(
        &format!("SPUBLISH {channel} reaches {receivers}"),
        || async {
            hub.spublish(channel, payload)
                .await
                .is_ok_and(|n| n == receivers)
        },
    )
    .await;
}

/// PUBLISHes `channel` until every one of `subs` has received one more message. Redis
/// relays a PUBLISH to the other nodes over the cluster bus and drops it for a node whose
/// bus link is being re-established (under load, with the tests' short node time-out), so
/// a single try is not a fact; shard messages never cross the bus and need no retry.
async fn publish_until_received(hub: &PubSubHub, channel: &str, subs: &[&Arc<Subscription>]) {
    let before: Vec<u64> = subs.iter().map(|s| s.received_total()).collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let _ = hub.publish(channel, &json!("plain")).await;
        let tried = Instant::now();
        while tried.elapsed() < Duration::from_millis(500) {
            if subs
                .iter()
                .zip(&before)
                .all(|(s, n)| s.received_total() > *n)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(Instant::now() < deadline, "PUBLISH {channel} never arrived");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_and_plain_delivery_across_masters() {
    let cluster = RedisCluster::start(3, 0);
    let baseline: Vec<usize> = cluster.nodes().iter().map(client_count).collect();
    let hub = cluster_hub(&cluster, HubConfig::default()).await;
    assert!(hub.is_cluster());
    let owned: Vec<(String, u16)> = (0..3).map(|i| channel_on(&cluster, i, "orders:")).collect();
    // Edge cases: a second slot on master 0, and two hash-tagged channels sharing a slot.
    let (same_master, _) = {
        let slot = RedisCluster::slot_for_key(&owned[0].0) + 1;
        (RedisCluster::key_for_slot(slot, "orders:"), slot)
    };
    let tagged = ["{cart}:a".to_string(), "{cart}:b".to_string()];
    let mut channels: Vec<String> = owned.iter().map(|(c, _)| c.clone()).collect();
    channels.push(same_master.clone());
    channels.extend(tagged.iter().cloned());

    // One SSUBSCRIBE over three masters and five slots: split per slot and per owner.
    let shards = hub.ssubscribe("shards", channels.clone()).await.unwrap();
    assert!(shards.is_alive());
    for (channel, port) in &owned {
        assert_eq!(
            shardnumsub(cluster.node(*port), channel),
            1,
            "{channel} lives on {port}"
        );
    }
    let tag_owner = cluster.port_for_slot(RedisCluster::slot_for_key("{cart}"));
    assert_eq!(shardnumsub(cluster.node(tag_owner), &tagged[1]), 1);
    assert_eq!(
        hub.subscriber_connections(),
        3,
        "one shard connection per master"
    );

    let mut events = shards.consumer();
    for (i, channel) in channels.iter().enumerate() {
        assert_eq!(
            hub.spublish(channel, &json!({"i": i})).await.unwrap(),
            1,
            "{channel}"
        );
        let m = next_message(&mut events).await;
        assert_eq!(
            (m.channel.as_str(), m.payload.json()),
            (channel.as_str(), &json!({"i": i}))
        );
    }

    // Plain channels and patterns: subscribed on one node, published through any master.
    let plain = hub
        .subscribe("plain", owned.iter().map(|(c, _)| c.clone()).collect())
        .await
        .unwrap();
    let pattern = hub
        .psubscribe("pattern", vec!["orders:*".into()])
        .await
        .unwrap();
    for (channel, _) in &owned {
        publish_until_received(&hub, channel, &[&plain, &pattern]).await;
        assert_eq!(plain.messages(Some(1))[0].channel, *channel);
        let m = &pattern.messages(Some(1))[0];
        assert_eq!(
            (m.channel.as_str(), m.pattern.as_deref()),
            (channel.as_str(), Some("orders:*"))
        );
    }
    // Shard and plain stay apart in a cluster too.
    assert!(events.try_recv().is_none());
    let (plain_seen, pattern_seen) = (plain.received_total(), pattern.received_total());
    hub.spublish(&owned[1].0, &json!("shard")).await.unwrap();
    assert_eq!(next_message(&mut events).await.payload, json!("shard"));
    assert_eq!(
        (plain.received_total(), pattern.received_total()),
        (plain_seen, pattern_seen)
    );

    // Releasing: every owner forgets its channels before unsubscribe returns.
    assert!(hub.unsubscribe("shards").await);
    for (channel, port) in &owned {
        assert_eq!(shardnumsub(cluster.node(*port), channel), 0);
    }
    assert_eq!(
        hub.subscriber_connections(),
        2,
        "only the two plain links are left"
    );
    // Shutdown closes everything: publisher, links and the topology's admin connections.
    hub.shutdown().await;
    for (node, before) in cluster.nodes().iter().zip(baseline) {
        node.wait_until(WAIT, "the hub's connections are closed", || {
            client_count(node) == before
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_is_merged_across_nodes() {
    let cluster = RedisCluster::start(3, 0);
    let hub = cluster_hub(&cluster, HubConfig::default()).await;
    let channels: Vec<String> = (0..3).map(|i| channel_on(&cluster, i, "room:").0).collect();

    // Dedicated links spread over the nodes, so each node only knows some of them.
    for i in 0..6 {
        hub.subscribe(&format!("plain{i}"), vec![channels[i % 3].clone()])
            .await
            .unwrap();
    }
    for i in 0..3 {
        hub.psubscribe(&format!("pattern{i}"), vec![format!("room:{i}*")])
            .await
            .unwrap();
    }
    hub.ssubscribe("shards-a", channels.clone()).await.unwrap();
    hub.ssubscribe("shards-b", vec![channels[2].clone()])
        .await
        .unwrap();

    let nodes_with_plain = cluster
        .nodes()
        .iter()
        .filter(|n| n.numsub(&channels[0]) + n.numsub(&channels[1]) + n.numsub(&channels[2]) > 0)
        .count();
    assert!(
        nodes_with_plain >= 2,
        "the links are spread over several nodes"
    );

    let all = hub.introspect("room:*", &channels).await.unwrap();
    let mut want_channels = channels.clone();
    want_channels.sort();
    assert_eq!(all.active_channels, want_channels, "union over nodes");
    for channel in &channels {
        let by_nodes = sum_over_nodes(&cluster, |n| n.numsub(channel));
        assert_eq!(by_nodes, 2);
        assert_eq!(all.numsub[channel], by_nodes, "NUMSUB summed over nodes");
        assert_eq!(
            all.shard_numsub[channel],
            sum_over_nodes(&cluster, |n| shardnumsub(n, channel))
        );
    }
    assert_eq!(all.shard_numsub[&channels[2]], 2);
    assert_eq!(all.shard_numsub[&channels[0]], 1);
    assert_eq!(all.shard_channels, want_channels);
    assert_eq!(all.numpat, sum_over_nodes(&cluster, |n| n.numpat()));
    assert_eq!(all.numpat, 3, "NUMPAT summed over nodes");

    // The single-purpose calls agree with the pipelined one.
    assert_eq!(hub.active_channels("room:*").await.unwrap(), want_channels);
    assert_eq!(
        hub.channel_subscriber_counts(&channels).await.unwrap(),
        all.numsub
    );
    assert_eq!(hub.pattern_subscriber_count().await.unwrap(), 3);
    assert_eq!(hub.shard_channels("*").await.unwrap(), want_channels);
    assert_eq!(
        hub.shard_subscriber_counts(&channels).await.unwrap(),
        all.shard_numsub
    );
    assert_eq!(hub.stats().await.pattern_subscriptions, 3);
    let none = hub
        .shard_subscriber_counts(&["nobody".to_string()])
        .await
        .unwrap();
    assert_eq!(none, BTreeMap::from([("nobody".to_string(), 0)]));
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_subscriptions_survive_a_node_restart() {
    let started = Instant::now();
    let mut cluster = RedisCluster::start(3, 0);
    // One shared shard link carries both subscriptions, so its per-subscription status is
    // what keeps the unaffected one live.
    let hub = cluster_hub(
        &cluster,
        HubConfig::default().with_mode(ConnectionMode::Shared { connections: 1 }),
    )
    .await;
    let (victim, victim_port) = channel_on(&cluster, 1, "news:");
    let (healthy, healthy_port) = channel_on(&cluster, 2, "news:");
    let hit = hub
        .ssubscribe("hit", vec![victim.clone(), healthy.clone()])
        .await
        .unwrap();
    let spared = hub
        .ssubscribe("spared", vec![healthy.clone()])
        .await
        .unwrap();
    let plain = hub.subscribe("plain", vec![healthy.clone()]).await.unwrap();
    hub.ssubscribe("doomed", vec![victim.clone()])
        .await
        .unwrap();
    let (mut hit_events, mut spared_events) = (hit.consumer(), spared.consumer());

    cluster.stop_node(victim_port);
    assert!(matches!(
        next_connection_event(&mut hit_events).await,
        Event::Disconnected { .. }
    ));
    assert!(matches!(
        hit.status(),
        SubscriptionStatus::Reconnecting { .. }
    ));
    assert!(
        spared.is_alive(),
        "its channel lives on a master that is fine"
    );
    // While the owner is down, calls on its channels fail or finish promptly.
    let t = Instant::now();
    let err = hub
        .ssubscribe("refused", vec![victim.clone()])
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(hub.get_subscription("refused").is_none());
    assert!(
        hub.unsubscribe("doomed").await,
        "nothing to tell the dead node"
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    // The healthy master still delivers to both while the other one is down.
    spublish_until(&hub, &healthy, &json!("meanwhile"), 1).await;
    assert_eq!(
        next_message(&mut spared_events).await.payload,
        json!("meanwhile")
    );
    assert_eq!(
        next_message(&mut hit_events).await.payload,
        json!("meanwhile")
    );

    cluster.start_node(victim_port);
    cluster.wait_healthy(WAIT);
    assert!(matches!(
        next_connection_event(&mut hit_events).await,
        Event::Reconnected
    ));
    assert!(hit.is_alive());
    assert_eq!(hit.reconnects_total(), 1);
    assert_eq!(
        shardnumsub(cluster.node(victim_port), &victim),
        1,
        "resubscribed on the restarted node"
    );
    spublish_until(&hub, &victim, &json!("back"), 1).await;
    assert_eq!(next_message(&mut hit_events).await.payload, json!("back"));
    assert!(
        spared_events.try_recv().is_none(),
        "no connection event for the spared subscription"
    );
    assert_eq!(spared.reconnects_total(), 0);

    // The plain subscription works whichever node its link was on.
    eventually("the plain subscription is live", || async {
        plain.is_alive()
    })
    .await;
    publish_until_received(&hub, &healthy, &[&plain]).await;
    assert_eq!(
        shardnumsub(cluster.node(healthy_port), &healthy),
        1,
        "refcounted: one connection"
    );
    // doomed left during the outage: hit was the last one on the victim's channel.
    assert!(hub.unsubscribe("hit").await);
    assert_eq!(shardnumsub(cluster.node(victim_port), &victim), 0);
    hub.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_master_holds_up_no_message_from_the_others() {
    // Without full coverage the other masters keep serving while one is marked failed.
    let cluster = RedisCluster::start_with_args(3, 0, &["--cluster-require-full-coverage", "no"]);
    let hub = cluster_hub(&cluster, HubConfig::default()).await;
    let (stalled, stalled_port) = channel_on(&cluster, 0, "stall:");
    let (healthy, _) = channel_on(&cluster, 1, "stall:");
    let sub = hub
        .ssubscribe("both", vec![stalled.clone(), healthy.clone()])
        .await
        .unwrap();
    let mut events = sub.consumer();
    // DEBUG SLEEP blocks its caller too, so it runs in a process of its own.
    let mut sleeper = std::process::Command::new("redis-cli")
        .args(["-p", &stalled_port.to_string(), "DEBUG", "SLEEP", "8"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-cli runs");
    // The keep-alive PING to the stalled master times out; its recovery (topology refresh,
    // resubscribe, each waiting out time-outs on that node) keeps the link task busy.
    assert!(matches!(
        next_connection_event(&mut events).await,
        Event::Disconnected { .. }
    ));
    // Meanwhile what the healthy master sends arrives at once, not after the recovery
    // attempts: sampled every 200 ms over 2 s of the stall, so that some samples fall
    // while an attempt is waiting on the stalled node. (The PING notices the stall after
    // about 2.5 s; the samples end by about 4.5 s, well inside the 8 s sleep.)
    let mut pace = tokio::time::interval(Duration::from_millis(200));
    let mut slowest = Duration::ZERO;
    for n in 0..10 {
        pace.tick().await;
        let sent = Instant::now();
        assert_eq!(hub.spublish(&healthy, &json!(n)).await.unwrap(), 1);
        assert_eq!(next_message(&mut events).await.payload, json!(n));
        slowest = slowest.max(sent.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(800),
        "slowest delivery {slowest:?}"
    );
    // The stall outlasted the samples: the recovery was under way the whole time (without
    // direct delivery the slowest sample waits seconds for the first attempt to give up).
    assert!(
        matches!(sub.status(), SubscriptionStatus::Reconnecting { .. }),
        "still recovering: {:?}",
        sub.status()
    );
    let _ = sleeper.wait();
    assert!(matches!(
        next_connection_event(&mut events).await,
        Event::Reconnected
    ));
    spublish_until(&hub, &stalled, &json!("back"), 1).await;
    assert_eq!(next_message(&mut events).await.payload, json!("back"));
    hub.shutdown().await;
}

/// The node a plain or pattern subscription's link is on, as the nodes see it (`sub=` and
/// `psub=` in CLIENT LIST), asking every node but `down`; the test's hub holds one such
/// link per kind.
fn hosting(cluster: &RedisCluster, sub: &Subscription, down: Option<u16>) -> u16 {
    let count = |c: &pubsub_hub_testkit::ClientInfo| if sub.is_pattern() { c.psub } else { c.sub };
    let hosts: Vec<u16> = cluster
        .nodes()
        .iter()
        .filter(|n| Some(n.port()) != down)
        .filter(|n| n.client_list().iter().any(|c| count(c) > 0))
        .map(|n| n.port())
        .collect();
    assert_eq!(hosts.len(), 1, "{}: one link, on one node", sub.name());
    hosts[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_and_pattern_links_survive_a_restart_of_their_own_node() {
    let started = Instant::now();
    let mut cluster = RedisCluster::start(3, 0);
    let hub = cluster_hub(&cluster, HubConfig::default()).await;
    let exact = hub.subscribe("exact", vec!["news".into()]).await.unwrap();
    let pattern = hub
        .psubscribe("pattern", vec!["new*".into()])
        .await
        .unwrap();
    for sub in [&exact, &pattern] {
        let victim = hosting(&cluster, sub, None);
        let mut events = sub.consumer();
        cluster.stop_node(victim);
        assert!(matches!(
            next_connection_event(&mut events).await,
            Event::Disconnected { .. }
        ));
        // Back on another node while the victim is down, then the victim returns.
        assert!(matches!(
            next_connection_event(&mut events).await,
            Event::Reconnected
        ));
        assert!(sub.is_alive());
        assert_ne!(
            hosting(&cluster, sub, Some(victim)),
            victim,
            "{} moved to a running node",
            sub.name()
        );
        cluster.start_node(victim);
        cluster.wait_healthy(WAIT);
        publish_until_received(&hub, "news", &[&exact, &pattern]).await;
    }
    // Each came back at least once (twice if both links were on the first victim).
    assert!(exact.reconnects_total() >= 1 && pattern.reconnects_total() >= 1);
    hub.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_subscriptions_follow_replica_failovers() {
    let started = Instant::now();
    let mut cluster = RedisCluster::start(3, 1);
    let hub = cluster_hub(&cluster, HubConfig::default()).await;
    // A second hub that subscribes only after the failover, with a topology that is stale
    // by then: its SSUBSCRIBE is answered MOVED and must be retried on the new owner.
    let late = cluster_hub(&cluster, HubConfig::default()).await;
    let (graceful, graceful_port) = channel_on(&cluster, 0, "jobs:");
    let (forced, forced_port) = channel_on(&cluster, 1, "jobs:");
    let (steady, _) = channel_on(&cluster, 2, "jobs:");
    let moved = hub
        .ssubscribe("moved", vec![graceful.clone()])
        .await
        .unwrap();
    let killed = hub
        .ssubscribe("killed", vec![forced.clone()])
        .await
        .unwrap();
    let other = hub.ssubscribe("other", vec![steady.clone()]).await.unwrap();
    let (mut moved_events, mut killed_events, mut other_events) =
        (moved.consumer(), killed.consumer(), other.consumer());

    // 1. A graceful failover: the old master becomes a replica and Redis sends
    //    `sunsubscribe` for its shard channels; the hub resubscribes on the new master.
    let new_port = cluster.failover(graceful_port);
    assert_ne!(new_port, graceful_port);
    match next_connection_event(&mut moved_events).await {
        Event::Disconnected { error } => assert!(error.contains("slot moved"), "{error}"),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    assert!(matches!(
        next_connection_event(&mut moved_events).await,
        Event::Reconnected
    ));
    assert_eq!(shardnumsub(cluster.node(new_port), &graceful), 1);
    assert_eq!(shardnumsub(cluster.node(graceful_port), &graceful), 0);
    spublish_until(&hub, &graceful, &json!("after failover"), 1).await;
    assert_eq!(
        next_message(&mut moved_events).await.payload,
        json!("after failover")
    );

    let late_sub = late
        .ssubscribe("late", vec![graceful.clone()])
        .await
        .unwrap();
    assert_eq!(
        shardnumsub(cluster.node(new_port), &graceful),
        2,
        "placed on the new master"
    );
    let mut late_events = late_sub.consumer();
    assert_eq!(hub.spublish(&graceful, &json!("both")).await.unwrap(), 2);
    assert_eq!(next_message(&mut late_events).await.payload, json!("both"));
    assert_eq!(next_message(&mut moved_events).await.payload, json!("both"));

    // 2. A master dies and its replica is forced to take over.
    cluster.stop_node(forced_port);
    assert!(matches!(
        next_connection_event(&mut killed_events).await,
        Event::Disconnected { .. }
    ));
    let replacement = cluster.failover(forced_port);
    assert!(matches!(
        next_connection_event(&mut killed_events).await,
        Event::Reconnected
    ));
    assert!(killed.is_alive());
    assert_eq!(shardnumsub(cluster.node(replacement), &forced), 1);
    spublish_until(&hub, &forced, &json!("replacement"), 1).await;
    assert_eq!(
        next_message(&mut killed_events).await.payload,
        json!("replacement")
    );

    // The subscription on the untouched master never noticed.
    assert!(other.is_alive());
    assert!(other_events.try_recv().is_none());
    assert_eq!(hub.local_stats().reconnects_total, 2);
    assert_eq!(moved.kind(), TargetKind::Shard);
    late.shutdown().await;
    hub.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_hub_fails_fast_without_nodes() {
    let err = PubSubHub::cluster(vec![], HubConfig::default())
        .await
        .unwrap_err();
    assert!(!err.is_timeout(), "{err}");
    // A standalone server is not a cluster: refused with a clear error.
    let server = RedisServer::start();
    let err = PubSubHub::cluster(vec![server.url()], HubConfig::default())
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err}");
}
