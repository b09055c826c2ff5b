//! Recovery after Redis restarts, killed connections and output-buffer-limit disconnects,
//! with truthful status and bounded failures while Redis is away.

use std::time::{Duration, Instant};

use crate::util::{WAIT, acl_hub, eventually, hub, next_connection_event, next_message};
use pubsub_hub::{Event, SubscriptionStatus};
use pubsub_hub_testkit::RedisServer;
use serde_json::json;

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_recover_after_a_restart_and_report_the_gap() {
    let mut server = RedisServer::start();
    let hub = hub(&server).await;
    let exact = hub
        .subscribe("exact", strings(&["orders:new"]))
        .await
        .unwrap();
    let pattern = hub
        .psubscribe("pattern", strings(&["orders:*"]))
        .await
        .unwrap();
    let mut events = exact.consumer();
    assert!(exact.is_alive() && pattern.is_alive());

    server.stop();
    eventually("both report reconnecting", || async {
        !exact.is_alive() && !pattern.is_alive()
    })
    .await;
    assert!(matches!(
        next_connection_event(&mut events).await,
        Event::Disconnected { .. }
    ));
    // While Redis is down, calls fail fast with a clear error instead of hanging.
    let started = Instant::now();
    let err = hub.publish("orders:new", &json!(1)).await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(2600),
        "took {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    assert!(hub.active_channels("*").await.is_err());
    assert!(hub.pattern_subscriber_count().await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
    // A long enough outage shows failed attempts in the status.
    eventually("attempts counted", || async {
        matches!(exact.status(), SubscriptionStatus::Reconnecting { attempts, .. } if attempts >= 2)
    })
    .await;
    if let SubscriptionStatus::Reconnecting {
        since_ms,
        last_error,
        ..
    } = exact.status()
    {
        assert!(since_ms > 0);
        assert!(!last_error.is_empty());
        // The gap in progress is recorded with the status's start, once for the outage.
        let gaps = exact.gaps();
        assert_eq!(gaps.total, 1, "{gaps:?}");
        assert!(gaps.is_open());
        let gap = gaps.last.unwrap();
        assert_eq!(gap.started_at_ms, since_ms);
        assert!(!gap.error.is_empty());
    }
    // Redis stays down a moment more after the gap was seen open: the gap covers that.
    let outage_seen = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen_down = outage_seen.elapsed();

    server.start_again();
    eventually("both live again", || async {
        exact.is_alive() && pattern.is_alive()
    })
    .await;
    assert!(matches!(
        next_connection_event(&mut events).await,
        Event::Reconnected
    ));
    server.wait_numsub("orders:new", 1, WAIT);
    server.wait_numpat(1, WAIT);
    assert_eq!(exact.reconnects_total(), 1);
    assert_eq!(hub.local_stats().reconnects_total, 2);
    // Each subscriber recorded one finished gap that covers the outage.
    for sub in [&exact, &pattern] {
        let gaps = sub.gaps();
        assert_eq!(gaps.total, 1, "{}: {gaps:?}", sub.name());
        assert!(!gaps.is_open());
        let gap = gaps.last.unwrap();
        let end = gap.ended_at_ms.unwrap();
        assert!(end >= gap.started_at_ms, "{gap:?}");
        assert!(
            u128::from(end - gap.started_at_ms) >= seen_down.as_millis(),
            "{gap:?} covers {seen_down:?}"
        );
    }

    // The publisher reconnects by itself too.
    let deadline = Instant::now() + WAIT;
    let delivered = loop {
        match hub
            .publish("orders:new", &json!({"after": "restart"}))
            .await
        {
            Ok(n) => break n,
            Err(e) => assert!(Instant::now() < deadline, "publish never recovered: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(delivered, 2);
    // So do the introspection calls.
    assert_eq!(
        hub.active_channels("*").await.unwrap(),
        strings(&["orders:new"])
    );
    assert_eq!(hub.pattern_subscriber_count().await.unwrap(), 1);
    let m = next_message(&mut events).await;
    assert_eq!(m.payload, json!({"after": "restart"}));
    eventually("pattern received", || async {
        pattern.received_total() >= 1
    })
    .await;
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_type_pubsub_is_recovered() {
    let server = RedisServer::start();
    let hub = hub(&server).await;
    let sub = hub.subscribe("victim", strings(&["k"])).await.unwrap();
    let mut events = sub.consumer();
    assert_eq!(server.kill_pubsub_clients(), 1);
    assert!(matches!(
        next_connection_event(&mut events).await,
        Event::Disconnected { .. }
    ));
    assert!(matches!(
        next_connection_event(&mut events).await,
        Event::Reconnected
    ));
    assert!(sub.is_alive());
    server.wait_numsub("k", 1, WAIT);
    assert_eq!(hub.publish("k", &json!("back")).await.unwrap(), 1);
    assert_eq!(next_message(&mut events).await.payload, json!("back"));
    assert_eq!(sub.reconnects_total(), 1);
    // A gap too short for any polling is still recorded, with both ends.
    let gaps = sub.gaps();
    assert_eq!(gaps.total, 1, "{gaps:?}");
    let gap = gaps.last.unwrap();
    assert!(gap.ended_at_ms.unwrap() >= gap.started_at_ms, "{gap:?}");
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_buffer_limit_disconnect_is_recovered() {
    let server = RedisServer::start();
    server.cmd(&[
        "CONFIG",
        "SET",
        "client-output-buffer-limit",
        "pubsub 1kb 1kb 0",
    ]);
    let hub = hub(&server).await;
    let sub = hub.subscribe("chatty", strings(&["big"])).await.unwrap();
    let mut events = sub.consumer();
    // 64 KiB cannot fit in a 1 KiB pub/sub output buffer: Redis drops the subscriber.
    let big = vec![b'x'; 64 * 1024];
    hub.publish_bytes("big", &big).await.unwrap();
    assert!(matches!(
        next_connection_event(&mut events).await,
        Event::Disconnected { .. }
    ));
    assert!(matches!(
        next_connection_event(&mut events).await,
        Event::Reconnected
    ));
    server.wait_numsub("big", 1, WAIT);
    assert_eq!(hub.publish("big", &json!("small")).await.unwrap(), 1);
    assert_eq!(next_message(&mut events).await.payload, json!("small"));
    assert!(
        server.log().contains("output buffer") || server.log().contains("scheduled to be closed"),
        "redis log mentions the limit:\n{}",
        server.log_tail(20)
    );
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_unsubscribe_and_shutdown_stay_bounded_while_redis_is_down() {
    let mut server = RedisServer::start();
    let hub = hub(&server).await;
    let sub = hub.subscribe("a", strings(&["a"])).await.unwrap();
    server.stop();
    eventually("reconnecting", || async { !sub.is_alive() }).await;

    let started = Instant::now();
    let err = hub.subscribe("b", strings(&["b"])).await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        hub.get_subscription("b").is_none(),
        "a failed subscribe leaves no entry"
    );

    let started = Instant::now();
    assert!(hub.unsubscribe("a").await);
    assert_eq!(sub.status(), SubscriptionStatus::Closed);
    hub.subscribe("c", strings(&["c"])).await.unwrap_err();
    tokio::time::timeout(Duration::from_secs(5), hub.shutdown())
        .await
        .expect("shutdown returns while Redis is down");
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_recovers_after_a_refused_reconnect() {
    let server = RedisServer::start();
    let hub = acl_hub(&server, "old-pass", "&*", pubsub_hub::HubConfig::default()).await;
    let sub = hub.subscribe("s", strings(&["ch"])).await.unwrap();
    assert_eq!(hub.publish("ch", &json!(1)).await.unwrap(), 1);

    // Every reconnect of ours is refused now, the publisher's included.
    server.cmd(&["ACL", "SETUSER", "app", "resetpass", ">new-pass"]);
    server.cmd(&["CLIENT", "KILL", "USER", "app"]);
    eventually("the subscriber is refused", || async { !sub.is_alive() }).await;
    let err = hub.publish("ch", &json!(2)).await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");

    // Once the old password works again, both come back without a new hub.
    server.cmd(&["ACL", "SETUSER", "app", "resetpass", ">old-pass"]);
    eventually("the subscriber is live", || async { sub.is_alive() }).await;
    eventually("publishing works again", || async {
        hub.publish("ch", &json!(3)).await.ok() == Some(1)
    })
    .await;
    assert_eq!(hub.active_channels("*").await.unwrap(), strings(&["ch"]));
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lazy_hub_starts_without_redis_and_works_once_it_appears() {
    let mut server = RedisServer::start();
    server.stop();
    let config = pubsub_hub::HubConfig::default()
        .with_connect_timeout(Duration::from_millis(300))
        .with_command_timeout(Duration::from_millis(300));
    let hub = pubsub_hub::PubSubHub::with_config_lazy(server.client(), config)
        .expect("no connection is needed to build it");
    let err = hub.publish("orders:new", &json!(1)).await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(
        hub.subscribe("early", strings(&["orders:new"]))
            .await
            .is_err()
    );

    server.start_again();
    let sub = {
        let started = Instant::now();
        loop {
            match hub.subscribe("late", strings(&["orders:new"])).await {
                Ok(sub) => break sub,
                Err(e) if started.elapsed() < WAIT => {
                    assert!(e.is_unavailable(), "{e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("no subscription once Redis is up: {e}"),
            }
        }
    };
    let mut consumer = sub.consumer();
    eventually("the publishing connection reconnects", || async {
        matches!(hub.publish("orders:new", &json!({"n": 1})).await, Ok(1))
    })
    .await;
    assert_eq!(next_message(&mut consumer).await.payload, json!({"n": 1}));
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_falls_behind_after_a_gap_still_reads_its_end() {
    let server = RedisServer::start();
    let hub = crate::util::hub_with(
        &server,
        pubsub_hub::HubConfig::default().with_queue_capacity(8),
    )
    .await;
    let sub = hub.subscribe("behind", strings(&["behind"])).await.unwrap();
    let mut consumer = sub.consumer();

    // The consumer reads the start of a gap...
    assert!(server.kill_pubsub_clients() >= 1);
    assert!(matches!(
        next_connection_event(&mut consumer).await,
        Event::Disconnected { .. }
    ));
    eventually("live again", || async { sub.is_alive() }).await;
    // ...then falls far behind: its queue overflows many times over with messages that
    // arrive after `Reconnected`.
    for n in 0..100 {
        hub.publish("behind", &json!({"n": n})).await.unwrap();
    }
    eventually("all received", || async { sub.received_total() == 100 }).await;

    // `Reconnected` was not pushed out by the flood; the dropped messages are reported
    // where they were, and the newest ones follow.
    let mut events = Vec::new();
    while let Some(event) = consumer.try_recv() {
        events.push(event);
    }
    assert!(
        matches!(events.first(), Some(Event::Reconnected)),
        "{events:?}"
    );
    let lagged: u64 = events
        .iter()
        .filter_map(|e| match e {
            Event::Lagged(n) => Some(*n),
            _ => None,
        })
        .sum();
    let messages: Vec<i64> = events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => m.payload.json()["n"].as_i64(),
            _ => None,
        })
        .collect();
    assert_eq!(lagged + messages.len() as u64, 100, "{events:?}");
    assert_eq!(
        messages,
        (100 - messages.len() as i64..100).collect::<Vec<_>>()
    );
    assert_eq!(sub.dropped_total(), lagged);
    hub.shutdown().await;
}
