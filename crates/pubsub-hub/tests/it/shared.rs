//! Shared-connection mode: many named subscribers over a fixed set of Redis connections,
//! with reference-counted SUBSCRIBE / UNSUBSCRIBE and the same per-subscriber guarantees.

use std::time::Instant;

use crate::util::{WAIT, acl_hub, client_count, eventually, hub_with, next_event, next_message};
use pubsub_hub::{ConnectionMode, Event, HubConfig};
use pubsub_hub_testkit::RedisServer;
use serde_json::json;

fn shared(connections: usize) -> HubConfig {
    HubConfig::default().with_mode(ConnectionMode::Shared { connections })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_subscribers_share_a_few_connections() {
    let server = RedisServer::start();
    let baseline = client_count(&server);
    let hub = hub_with(&server, shared(2)).await;
    assert_eq!(hub.mode(), ConnectionMode::Shared { connections: 2 });
    let started = Instant::now();
    let mut subs = Vec::new();
    for i in 0..200 {
        let channel = format!("room:{}", i % 50);
        subs.push(
            hub.subscribe(&format!("s{i}"), vec![channel])
                .await
                .unwrap(),
        );
    }
    assert!(started.elapsed() < WAIT);
    // 1 publisher + 2 subscriber connections, whatever the number of subscribers.
    assert_eq!(client_count(&server), baseline + 3);
    assert_eq!(hub.subscriber_connections(), 2);
    assert_eq!(hub.shared_redis_targets(), 50);
    // NUMSUB counts connections in shared mode: one per channel.
    assert_eq!(server.numsub("room:7"), 1);

    let mut consumers: Vec<_> = subs.iter().map(|s| s.consumer()).collect();
    // One PUBLISH reaches Redis' single subscriber connection and fans out locally to 4.
    assert_eq!(hub.publish("room:7", &json!("hello")).await.unwrap(), 1);
    for (i, consumer) in consumers.iter_mut().enumerate() {
        if i % 50 == 7 {
            let m = next_message(consumer).await;
            assert_eq!(
                (m.channel.as_str(), m.payload.json()),
                ("room:7", &json!("hello"))
            );
        } else {
            assert!(
                consumer.try_recv().is_none(),
                "s{i} got a message for another room"
            );
        }
    }
    eventually("4 local deliveries", || async {
        hub.local_stats().received_total == 4
    })
    .await;
    hub.shutdown().await;
    server.wait_until(WAIT, "connections closed", || {
        client_count(&server) == baseline
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_subscriptions_are_reference_counted() {
    let server = RedisServer::start();
    let hub = hub_with(&server, shared(1)).await;
    hub.subscribe("a", vec!["c".into()]).await.unwrap();
    hub.subscribe("b", vec!["c".into()]).await.unwrap();
    hub.psubscribe("p1", vec!["c*".into()]).await.unwrap();
    hub.psubscribe("p2", vec!["c*".into()]).await.unwrap();
    assert_eq!(server.numsub("c"), 1);
    assert_eq!(server.numpat(), 1);

    assert!(hub.unsubscribe("a").await);
    assert_eq!(server.numsub("c"), 1, "b still wants c");
    assert!(hub.unsubscribe("b").await);
    assert_eq!(
        server.numsub("c"),
        0,
        "last local subscriber gone: UNSUBSCRIBE sent"
    );
    assert!(hub.unsubscribe("p1").await);
    assert_eq!(server.numpat(), 1);
    assert!(hub.unsubscribe("p2").await);
    assert_eq!(server.numpat(), 0);
    assert_eq!(hub.shared_redis_targets(), 0);
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_and_pattern_both_receive_in_shared_mode() {
    let server = RedisServer::start();
    let hub = hub_with(&server, shared(1)).await;
    let exact = hub.subscribe("exact", vec!["news:a".into()]).await.unwrap();
    let pattern = hub
        .psubscribe("pattern", vec!["news:*".into()])
        .await
        .unwrap();
    let (mut ce, mut cp) = (exact.consumer(), pattern.consumer());
    // Both live on one connection: Redis counts that connection twice.
    assert_eq!(hub.publish("news:a", &json!(1)).await.unwrap(), 2);
    let m = next_message(&mut ce).await;
    assert_eq!(m.pattern, None);
    let m = next_message(&mut cp).await;
    assert_eq!(m.pattern.as_deref(), Some("news:*"));
    assert!(
        ce.try_recv().is_none() && cp.try_recv().is_none(),
        "exactly one each"
    );
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_set_is_resubscribed_after_a_kill() {
    let server = RedisServer::start();
    let hub = hub_with(&server, shared(2)).await;
    let mut subs = Vec::new();
    for i in 0..20 {
        subs.push(
            hub.subscribe(&format!("s{i}"), vec![format!("ch:{i}")])
                .await
                .unwrap(),
        );
    }
    let pattern = hub.psubscribe("all", vec!["ch:*".into()]).await.unwrap();
    let mut events = subs[3].consumer();
    let killed = server.kill_pubsub_clients();
    assert!((1..=2).contains(&killed), "killed {killed}");
    assert!(matches!(
        next_event(&mut events).await,
        Event::Disconnected { .. }
    ));
    assert!(matches!(next_event(&mut events).await, Event::Reconnected));
    eventually("everyone live", || async {
        subs.iter().all(|s| s.is_alive()) && pattern.is_alive()
    })
    .await;
    for i in 0..20 {
        server.wait_numsub(&format!("ch:{i}"), 1, WAIT);
    }
    server.wait_numpat(1, WAIT);
    assert_eq!(hub.publish("ch:3", &json!("again")).await.unwrap(), 2);
    assert_eq!(next_message(&mut events).await.payload, json!("again"));
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_on_several_links_sees_one_gap() {
    let server = RedisServer::start();
    let hub = hub_with(&server, shared(2)).await;
    // Enough targets that both links carry some of them.
    let targets: Vec<String> = (0..16).map(|i| format!("wide:{i}")).collect();
    let sub = hub.subscribe("wide", targets.clone()).await.unwrap();
    let mut events = sub.consumer();
    assert_eq!(server.kill_pubsub_clients(), 2, "both links hold a target");
    assert!(matches!(
        next_event(&mut events).await,
        Event::Disconnected { .. }
    ));
    // Reconnected comes once, after the last link is back: by then every target is live.
    assert!(matches!(next_event(&mut events).await, Event::Reconnected));
    assert!(sub.is_alive());
    for target in &targets {
        server.wait_numsub(target, 1, WAIT);
    }
    assert_eq!(hub.publish("wide:5", &json!("back")).await.unwrap(), 1);
    assert_eq!(next_message(&mut events).await.payload, json!("back"));
    assert!(events.try_recv().is_none(), "no second gap was reported");
    assert_eq!(sub.reconnects_total(), 1);
    assert_eq!(hub.local_stats().reconnects_total, 1);
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_subscribe_leaves_no_channel_behind_on_a_shared_link() {
    let server = RedisServer::start();
    let hub = acl_hub(&server, "pw", "&allowed:*", shared(1)).await;
    let _keeper = hub
        .subscribe("keeper", vec!["allowed:keep".into()])
        .await
        .unwrap();
    // More targets than one SUBSCRIBE carries: the first command is taken, a later one is
    // refused for the channel the ACL forbids.
    let mut targets: Vec<String> = (0..600).map(|i| format!("allowed:{i}")).collect();
    targets.push("denied:x".into());
    let err = hub.subscribe("greedy", targets).await.unwrap_err();
    assert!(err.to_string().contains("no permissions"), "{err}");
    assert!(hub.get_subscription("greedy").is_none());
    let channels = hub.active_channels("*").await.unwrap();
    assert_eq!(channels, vec!["allowed:keep".to_string()]);
    assert_eq!(server.numsub("allowed:0"), 0);
    hub.shutdown().await;
}
