//! Sharded pub/sub (`SSUBSCRIBE` / `SPUBLISH`) against one Redis 7 server: delivery,
//! separation from plain channels, channels in several slots, reference counting,
//! introspection and recovery after a restart.

use crate::util::{WAIT, client_count, eventually, hub, hub_with, next_event, next_message};
use pubsub_hub::{ConnectionMode, Event, HubConfig, TargetKind};
use pubsub_hub_testkit::{RedisCluster, RedisServer};
use serde_json::json;

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `PUBSUB SHARDNUMSUB channel` on `server`.
fn shardnumsub(server: &RedisServer, channel: &str) -> i64 {
    match server.cmd(&["PUBSUB", "SHARDNUMSUB", channel]) {
        redis::Value::Array(v) => redis::from_redis_value(v[1].clone()).unwrap(),
        other => panic!("unexpected SHARDNUMSUB reply {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_subscribers_receive_spublish_only() {
    let server = RedisServer::start();
    let hub = hub(&server).await;
    // Three channels in three different slots: Redis would refuse them in one SSUBSCRIBE.
    let channels = strings(&["orders:eu", "orders:us", "orders:asia"]);
    let slots: std::collections::BTreeSet<u16> = channels
        .iter()
        .map(|c| RedisCluster::slot_for_key(c))
        .collect();
    assert_eq!(slots.len(), 3, "the channels hash to different slots");
    let sub = hub.ssubscribe("shards", channels.clone()).await.unwrap();
    assert_eq!(sub.kind(), TargetKind::Shard);
    assert_eq!(sub.kind().as_str(), "shard");
    assert!(sub.is_alive());
    for channel in &channels {
        assert_eq!(shardnumsub(&server, channel), 1, "confirmed before return");
        assert_eq!(server.numsub(channel), 0, "not a plain subscription");
    }
    let mut consumer = sub.consumer();

    for (i, channel) in channels.iter().enumerate() {
        assert_eq!(hub.spublish(channel, &json!({"n": i})).await.unwrap(), 1);
        let m = next_message(&mut consumer).await;
        assert_eq!(m.channel, *channel);
        assert_eq!(m.pattern, None);
        assert_eq!(m.payload, json!({"n": i}));
    }
    // Binary-safe, like the plain path.
    let raw = [0xff, 0x00, b'x'];
    assert_eq!(hub.spublish_bytes("orders:eu", &raw).await.unwrap(), 1);
    assert_eq!(next_message(&mut consumer).await.payload.as_bytes(), raw);

    // Plain PUBLISH does not reach shard subscribers, and SPUBLISH not plain ones.
    let plain = hub
        .subscribe("plain", strings(&["orders:eu"]))
        .await
        .unwrap();
    let mut plain_events = plain.consumer();
    assert_eq!(hub.publish("orders:eu", &json!("plain")).await.unwrap(), 1);
    assert_eq!(
        next_message(&mut plain_events).await.payload,
        json!("plain")
    );
    assert_eq!(hub.spublish("orders:eu", &json!("shard")).await.unwrap(), 1);
    assert_eq!(next_message(&mut consumer).await.payload, json!("shard"));
    assert!(consumer.try_recv().is_none() && plain_events.try_recv().is_none());

    assert_eq!(sub.received_total(), 5);
    let stats = hub.local_stats();
    assert_eq!(stats.published_total, 6);
    assert_eq!(stats.channel_published.get("orders:eu"), Some(&4));

    // One connection per node the channels live on: one here.
    assert_eq!(
        hub.subscriber_connections(),
        2,
        "the shard link and the plain link"
    );
    assert!(hub.unsubscribe("shards").await);
    for channel in &channels {
        assert_eq!(shardnumsub(&server, channel), 0, "released before return");
    }
    assert!(next_event_or_end(&mut consumer).await.is_none());
    hub.shutdown().await;
}

/// The consumer's next event, or `None` once its subscription has closed.
async fn next_event_or_end(consumer: &mut pubsub_hub::Consumer) -> Option<Event> {
    tokio::time::timeout(WAIT, consumer.recv())
        .await
        .expect("an event or the end within the time limit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_reports_shard_channels() {
    let server = RedisServer::start();
    let hub = hub(&server).await;
    hub.ssubscribe("a", strings(&["s:1", "s:2"])).await.unwrap();
    hub.ssubscribe("b", strings(&["s:2"])).await.unwrap();
    hub.subscribe("c", strings(&["p:1"])).await.unwrap();
    hub.psubscribe("d", strings(&["p:*"])).await.unwrap();

    assert_eq!(
        hub.shard_channels("s:*").await.unwrap(),
        strings(&["s:1", "s:2"])
    );
    let counts = hub
        .shard_subscriber_counts(&strings(&["s:1", "s:2", "s:3"]))
        .await
        .unwrap();
    // Dedicated mode: one connection per named subscriber, so Redis counts names.
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        vec![("s:1".into(), 1), ("s:2".into(), 2), ("s:3".into(), 0)]
    );
    let all = hub
        .introspect("*", &strings(&["p:1", "s:2"]))
        .await
        .unwrap();
    assert_eq!(all.active_channels, strings(&["p:1"]));
    assert_eq!(all.numsub.get("p:1"), Some(&1));
    assert_eq!(
        all.numsub.get("s:2"),
        Some(&0),
        "NUMSUB ignores shard channels"
    );
    assert_eq!(all.numpat, 1);
    assert_eq!(all.shard_channels, strings(&["s:1", "s:2"]));
    assert_eq!(all.shard_numsub.get("s:2"), Some(&2));
    assert_eq!(all.shard_numsub.get("p:1"), Some(&0));
    assert_eq!(hub.stats().await.pattern_subscriptions, 1);
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_mode_reference_counts_shard_channels() {
    let server = RedisServer::start();
    let baseline = client_count(&server);
    let hub = hub_with(
        &server,
        HubConfig::default().with_mode(ConnectionMode::Shared { connections: 2 }),
    )
    .await;
    let mut subs = Vec::new();
    for i in 0..40 {
        let channel = format!("room:{}", i % 10);
        subs.push(
            hub.ssubscribe(&format!("s{i}"), vec![channel])
                .await
                .unwrap(),
        );
    }
    // Redis sees each channel once, whatever the number of local subscribers.
    assert_eq!(shardnumsub(&server, "room:3"), 1);
    assert_eq!(hub.shared_redis_targets(), 10);
    let open = hub.subscriber_connections();
    assert!(
        (1..=4).contains(&open),
        "2 plain links + at most 2 shard connections, got {open}"
    );
    assert_eq!(client_count(&server), baseline + 1 + open);

    let mut consumers: Vec<_> = subs.iter().map(|s| s.consumer()).collect();
    assert_eq!(hub.spublish("room:3", &json!("hi")).await.unwrap(), 1);
    for (i, consumer) in consumers.iter_mut().enumerate() {
        if i % 10 == 3 {
            assert_eq!(next_message(consumer).await.payload, json!("hi"));
        } else {
            assert!(
                consumer.try_recv().is_none(),
                "s{i} got another room's message"
            );
        }
    }
    for i in [3, 13, 23] {
        assert!(hub.unsubscribe(&format!("s{i}")).await);
        assert_eq!(shardnumsub(&server, "room:3"), 1, "s33 still wants room:3");
    }
    assert!(hub.unsubscribe("s33").await);
    assert_eq!(
        shardnumsub(&server, "room:3"),
        0,
        "last one gone: SUNSUBSCRIBE sent"
    );
    assert_eq!(hub.shared_redis_targets(), 9);
    hub.shutdown().await;
    server.wait_until(WAIT, "connections closed", || {
        client_count(&server) == baseline
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_subscribers_recover_after_a_restart() {
    let mut server = RedisServer::start();
    let hub = hub(&server).await;
    let sub = hub
        .ssubscribe("shards", strings(&["a", "b"]))
        .await
        .unwrap();
    let mut events = sub.consumer();
    server.restart();
    assert!(matches!(
        next_event(&mut events).await,
        Event::Disconnected { .. }
    ));
    assert!(matches!(next_event(&mut events).await, Event::Reconnected));
    assert!(sub.is_alive());
    assert_eq!(sub.reconnects_total(), 1);
    assert_eq!(shardnumsub(&server, "a"), 1);
    assert_eq!(shardnumsub(&server, "b"), 1);
    // The publisher reconnects by itself; retry until it has.
    eventually("spublish reaches the resubscribed channel", || async {
        hub.spublish("b", &json!("back"))
            .await
            .is_ok_and(|n| n == 1)
    })
    .await;
    assert_eq!(next_message(&mut events).await.payload, json!("back"));
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_shard_input_is_rejected() {
    let server = RedisServer::start();
    let hub = hub(&server).await;
    assert!(
        hub.ssubscribe("x", vec![])
            .await
            .unwrap_err()
            .is_empty_targets()
    );
    assert!(
        hub.ssubscribe("x", strings(&[""]))
            .await
            .unwrap_err()
            .is_invalid_input()
    );
    hub.ssubscribe("x", strings(&["c"])).await.unwrap();
    assert!(
        hub.ssubscribe("x", strings(&["d"]))
            .await
            .unwrap_err()
            .is_duplicate_name()
    );
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_tolerates_servers_without_shard_commands() {
    // A user that may not run the shard PUBSUB subcommands stands in for a Redis 6 server,
    // which answers them with an error as well.
    let server = RedisServer::start();
    server.cmd(&[
        "ACL",
        "SETUSER",
        "old",
        "on",
        ">pw",
        "~*",
        "&*",
        "+@all",
        "-pubsub|shardchannels",
        "-pubsub|shardnumsub",
    ]);
    let url = format!("redis://old:pw@127.0.0.1:{}/", server.port());
    let hub =
        pubsub_hub::PubSubHub::with_config(redis::Client::open(url).unwrap(), HubConfig::default())
            .await
            .unwrap();
    hub.subscribe("c", strings(&["c"])).await.unwrap();
    let all = hub.introspect("*", &strings(&["c"])).await.unwrap();
    assert_eq!(all.active_channels, strings(&["c"]));
    assert_eq!(all.numsub.get("c"), Some(&1));
    assert!(all.shard_channels.is_empty() && all.shard_numsub.is_empty());
    let err = hub.shard_channels("*").await.unwrap_err();
    assert!(
        err.is_unavailable(),
        "the direct call reports the refusal: {err}"
    );
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_shard_consumer_gets_exact_lag() {
    let server = RedisServer::start();
    let hub = hub_with(&server, HubConfig::default().with_queue_capacity(4)).await;
    let sub = hub.ssubscribe("lag", strings(&["lag"])).await.unwrap();
    let mut slow = sub.consumer();
    for n in 0..20 {
        assert_eq!(hub.spublish("lag", &json!({"n": n})).await.unwrap(), 1);
    }
    eventually("20 received", || async { sub.received_total() == 20 }).await;
    match next_event(&mut slow).await {
        Event::Lagged(n) => assert_eq!(n, 16),
        other => panic!("expected Lagged, got {other:?}"),
    }
    for n in 16..20 {
        assert_eq!(next_message(&mut slow).await.payload, json!({"n": n}));
    }
    assert_eq!(sub.dropped_total(), 16);
    assert_eq!(hub.local_stats().dropped_total, 16);
    assert_eq!(
        sub.messages(None).len(),
        pubsub_hub::DEFAULT_BUFFER_SIZE.min(20)
    );
    hub.shutdown().await;
}
