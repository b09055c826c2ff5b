//! Delivery, errors, ring buffer, consumers and accounting against a private redis-server.

use std::sync::Arc;

use crate::util::{WAIT, client_count, eventually, hub, hub_with, next_event, next_message};
use pubsub_hub::{Event, HubConfig, PayloadEncoding, PubSubHub, SubscriptionStatus};
use pubsub_hub_testkit::RedisServer;
use serde_json::json;

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_subscriber_receives_json_and_publish_counts() {
    let server = RedisServer::start();
    let hub = hub(&server).await;
    let sub = hub
        .subscribe("orders-listener", strings(&["orders:new"]))
        .await
        .unwrap();
    let mut consumer = sub.consumer();
    assert_eq!(
        server.numsub("orders:new"),
        1,
        "SUBSCRIBE confirmed before return"
    );

    let delivered = hub
        .publish("orders:new", &json!({"order_id": 42, "total": 199.0}))
        .await
        .unwrap();
    assert_eq!(delivered, 1);
    let m = next_message(&mut consumer).await;
    assert_eq!(m.channel, "orders:new");
    assert_eq!(m.pattern, None);
    assert_eq!(m.payload, json!({"order_id": 42, "total": 199.0}));
    assert_eq!(m.payload.encoding(), PayloadEncoding::Json);
    assert!(m.received_at_ms > 0);
    assert_eq!(sub.received_total(), 1);
    assert!(sub.is_alive());

    // Nobody listens on another channel: Redis says 0.
    assert_eq!(hub.publish("orders:old", &json!(1)).await.unwrap(), 0);
    let stats = hub.stats().await;
    assert_eq!(stats.published_total, 2);
    assert_eq!(stats.delivered_total, 1);
    assert_eq!(stats.received_total, 1);
    assert_eq!(stats.active_subscriptions, 1);
    assert_eq!(stats.channel_published.get("orders:new"), Some(&1));
    assert_eq!(stats.channel_published.get("orders:old"), Some(&1));
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pattern_globs_match_as_redis_does() {
    let server = RedisServer::start();
    let hub = hub(&server).await;
    let star = hub.psubscribe("star", strings(&["news:*"])).await.unwrap();
    let question = hub
        .psubscribe("question", strings(&["h?llo"]))
        .await
        .unwrap();
    let class = hub
        .psubscribe("class", strings(&["t[abc]p"]))
        .await
        .unwrap();
    let (mut c_star, mut c_q, mut c_class) =
        (star.consumer(), question.consumer(), class.consumer());
    assert_eq!(server.numpat(), 3);

    for (channel, expected) in [
        ("news:sport", 1),
        ("news", 0),
        ("hello", 1),
        ("hallo", 1),
        ("heello", 0),
        ("tap", 1),
        ("tdp", 0),
    ] {
        let n = hub.publish(channel, &json!(channel)).await.unwrap();
        assert_eq!(n, expected, "PUBLISH {channel}");
    }
    let m = next_message(&mut c_star).await;
    assert_eq!(
        (m.channel.as_str(), m.pattern.as_deref()),
        ("news:sport", Some("news:*"))
    );
    let m = next_message(&mut c_q).await;
    assert_eq!(m.channel, "hello");
    assert_eq!(m.pattern.as_deref(), Some("h?llo"));
    assert_eq!(next_message(&mut c_q).await.channel, "hallo");
    let m = next_message(&mut c_class).await;
    assert_eq!(
        (m.channel.as_str(), m.pattern.as_deref()),
        ("tap", Some("t[abc]p"))
    );
    assert_eq!(
        star.received_total() + question.received_total() + class.received_total(),
        4
    );
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_and_pattern_both_receive_and_multi_target_works() {
    let server = RedisServer::start();
    let hub = hub(&server).await;
    let exact = hub
        .subscribe("exact", strings(&["notifications:billing", "orders:new"]))
        .await
        .unwrap();
    let pattern = hub
        .psubscribe("pattern", strings(&["notifications:*", "orders:*"]))
        .await
        .unwrap();
    let (mut ce, mut cp) = (exact.consumer(), pattern.consumer());

    // One PUBLISH, two deliveries: `message` and `pmessage`.
    assert_eq!(
        hub.publish("notifications:billing", &json!("x"))
            .await
            .unwrap(),
        2
    );
    assert_eq!(hub.publish("orders:new", &json!("y")).await.unwrap(), 2);
    assert_eq!(next_message(&mut ce).await.channel, "notifications:billing");
    assert_eq!(next_message(&mut ce).await.channel, "orders:new");
    let m = next_message(&mut cp).await;
    assert_eq!(m.pattern.as_deref(), Some("notifications:*"));
    let m = next_message(&mut cp).await;
    assert_eq!(m.pattern.as_deref(), Some("orders:*"));
    assert_eq!(hub.local_stats().delivered_total, 4);
    eventually("both subscriptions counted", || async {
        hub.local_stats().received_total == 4
    })
    .await;
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_with_typed_errors() {
    let server = RedisServer::start();
    let hub = hub(&server).await;
    hub.subscribe("a", strings(&["c"])).await.unwrap();
    let dup = hub.subscribe("a", strings(&["d"])).await.unwrap_err();
    assert!(dup.is_duplicate_name(), "{dup}");
    let dup = hub.psubscribe("a", strings(&["d*"])).await.unwrap_err();
    assert!(dup.is_duplicate_name());
    let empty = hub.subscribe("b", vec![]).await.unwrap_err();
    assert!(empty.is_empty_targets(), "{empty}");
    assert!(
        hub.subscribe("", strings(&["c"]))
            .await
            .unwrap_err()
            .is_invalid_input()
    );
    assert!(
        hub.subscribe("b", strings(&[""]))
            .await
            .unwrap_err()
            .is_invalid_input()
    );
    // Rejected calls leave nothing behind: the name is still free, the count unchanged.
    assert_eq!(hub.subscriptions().len(), 1);
    assert_eq!(server.numsub("d"), 0);
    hub.subscribe("b", strings(&["d", "d"])).await.unwrap();
    assert_eq!(
        hub.get_subscription("b").unwrap().targets(),
        &["d".to_string()]
    );
    let names: Vec<String> = hub
        .subscriptions()
        .iter()
        .map(|s| s.name().to_owned())
        .collect();
    assert_eq!(names, ["a", "b"]);
    hub.shutdown().await;
    assert!(
        hub.subscribe("c", strings(&["x"]))
            .await
            .unwrap_err()
            .is_closed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_configuration_is_refused_at_construction_naming_the_field() {
    let server = RedisServer::start();
    // A zero ping interval would panic inside a link task (a zero-period timer) and show
    // up as `Closed`; the configuration refuses it instead.
    let config = HubConfig::default().with_ping_interval(std::time::Duration::ZERO);
    let err = PubSubHub::with_config(server.client(), config.clone())
        .await
        .unwrap_err();
    assert!(err.is_invalid_config(), "{err}");
    assert!(err.to_string().contains("ping_interval"), "{err}");
    #[cfg(feature = "cluster")]
    {
        let err = PubSubHub::cluster(vec![server.url()], config)
            .await
            .unwrap_err();
        assert!(err.is_invalid_config(), "{err}");
    }
    let zero_queue = HubConfig::default().with_queue_capacity(0);
    let err = PubSubHub::with_config(server.client(), zero_queue)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("queue_capacity"), "{err}");
    assert_eq!(client_count(&server), 0, "nothing was opened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_limit_is_enforced() {
    let server = RedisServer::start();
    let hub = hub_with(&server, HubConfig::default().with_max_subscriptions(2)).await;
    hub.subscribe("a", strings(&["x"])).await.unwrap();
    hub.subscribe("b", strings(&["x"])).await.unwrap();
    let err = hub.subscribe("c", strings(&["x"])).await.unwrap_err();
    assert!(err.is_limit_exceeded(), "{err}");
    assert_eq!(server.numsub("x"), 2);
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_buffer_keeps_the_newest_fifty_newest_first() {
    let server = RedisServer::start();
    let hub = hub(&server).await;
    let sub = hub.subscribe("ring", strings(&["r"])).await.unwrap();
    for i in 0..60 {
        hub.publish("r", &json!({"i": i})).await.unwrap();
    }
    eventually("60 messages received", || async {
        sub.received_total() == 60
    })
    .await;
    let all = sub.messages(None);
    assert_eq!(all.len(), 50);
    assert_eq!(all[0].payload, json!({"i": 59}));
    assert_eq!(all[49].payload, json!({"i": 10}));
    let five = sub.messages(Some(5));
    let seen: Vec<_> = five.iter().map(|m| m.payload.json()["i"].clone()).collect();
    assert_eq!(
        seen,
        [json!(59), json!(58), json!(57), json!(56), json!(55)]
    );
    assert_eq!(sub.messages(Some(15)).len(), 15);
    assert_eq!(sub.received_total(), 60);
    assert!(sub.is_alive());
    assert!(!sub.is_pattern());
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_releases_the_redis_subscription_and_keeps_counters() {
    let server = RedisServer::start();
    let hub = hub(&server).await;
    let a = hub.subscribe("a", strings(&["shared"])).await.unwrap();
    hub.subscribe("b", strings(&["shared"])).await.unwrap();
    hub.psubscribe("p", strings(&["sha*"])).await.unwrap();
    assert_eq!(server.numsub("shared"), 2);
    assert_eq!(hub.publish("shared", &json!(1)).await.unwrap(), 3);
    eventually("3 received", || async {
        hub.local_stats().received_total == 3
    })
    .await;

    assert!(hub.unsubscribe("a").await);
    assert_eq!(
        server.numsub("shared"),
        1,
        "released before unsubscribe returned"
    );
    assert_eq!(a.status(), SubscriptionStatus::Closed);
    assert!(!a.is_alive());
    assert!(
        !hub.unsubscribe("a").await,
        "second unsubscribe finds nothing"
    );
    assert!(hub.unsubscribe("p").await);
    assert_eq!(server.numpat(), 0);
    // Lifetime counters do not shrink when subscribers go away.
    assert_eq!(hub.local_stats().received_total, 3);
    assert_eq!(hub.local_stats().active_subscriptions, 1);

    // close() on the subscription itself frees the name too.
    let b = hub.get_subscription("b").unwrap();
    b.close().await;
    assert!(hub.get_subscription("b").is_none());
    assert_eq!(server.numsub("shared"), 0);
    hub.subscribe("b", strings(&["again"])).await.unwrap();
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_channel_names_read_the_same_for_exact_and_pattern() {
    let server = RedisServer::start();
    let hub = hub(&server).await;
    let exact = hub
        .subscribe("exact", strings(&["bin:\u{FFFD}"]))
        .await
        .unwrap();
    let pattern = hub
        .psubscribe("pattern", strings(&["bin:*"]))
        .await
        .unwrap();
    let mut from_pattern = pattern.consumer();
    let mut conn = server
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let delivered: i64 = redis::cmd("PUBLISH")
        .arg(&b"bin:\xff"[..])
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(delivered, 1, "only the pattern matches the raw bytes");
    let m = next_message(&mut from_pattern).await;
    assert_eq!(m.channel, "bin:\u{FFFD}");
    assert_eq!(m.pattern.as_deref(), Some("bin:*"));
    assert_eq!(exact.received_total(), 0);
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_payloads_round_trip_byte_for_byte() {
    let server = RedisServer::start();
    let hub = hub(&server).await;
    let sub = hub.subscribe("bin", strings(&["bin"])).await.unwrap();
    let mut consumer = sub.consumer();
    let raw: Vec<u8> = (0..=255u8).rev().collect();
    assert_eq!(hub.publish_bytes("bin", &raw).await.unwrap(), 1);
    let m = next_message(&mut consumer).await;
    assert_eq!(m.payload.as_bytes(), &raw[..]);
    assert_eq!(m.payload.encoding(), PayloadEncoding::Base64);
    let shown = m.to_json();
    assert_eq!(shown["encoding"], "base64");
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(shown["payload"].as_str().unwrap())
        .unwrap();
    assert_eq!(decoded, raw);

    // Text that is not JSON stays text; a payload from another client arrives as is.
    server.publish("bin", "plain words".as_bytes());
    let m = next_message(&mut consumer).await;
    assert_eq!(m.payload.encoding(), PayloadEncoding::Text);
    assert_eq!(m.payload.json(), &json!("plain words"));
    assert_eq!(m.to_json()["payload"], "plain words");
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_gets_exact_lag_and_others_are_unaffected() {
    let server = RedisServer::start();
    let hub = hub_with(&server, HubConfig::default().with_queue_capacity(4)).await;
    let sub = hub.subscribe("lag", strings(&["lag"])).await.unwrap();
    let mut slow = sub.consumer();
    let mut fast = sub.consumer();
    let collector = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < 20 {
            if let Event::Message(m) = next_event(&mut fast).await {
                got.push(m.payload.json()["n"].as_i64().unwrap());
            }
        }
        got
    });
    for n in 0..20 {
        hub.publish("lag", &json!({"n": n})).await.unwrap();
        // Let the fast consumer keep up: it waits for each message.
        let target = n + 1;
        eventually("message received", || async {
            sub.received_total() == target
        })
        .await;
        tokio::task::yield_now().await;
    }
    let fast_got = tokio::time::timeout(WAIT, collector)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fast_got, (0..20).collect::<Vec<_>>());

    // The slow consumer never read: it lost the 16 oldest, which count as dropped at once,
    // and is told exactly that.
    assert_eq!(sub.dropped_total(), 16);
    match next_event(&mut slow).await {
        Event::Lagged(n) => assert_eq!(n, 16),
        other => panic!("expected Lagged, got {other:?}"),
    }
    let rest: Vec<i64> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(
                next_message(&mut slow).await.payload.json()["n"]
                    .as_i64()
                    .unwrap(),
            );
        }
        v
    };
    assert_eq!(rest, [16, 17, 18, 19]);
    assert_eq!(sub.dropped_total(), 16);
    assert_eq!(hub.local_stats().dropped_total, 16);
    assert!(slow.try_recv().is_none());
    hub.shutdown().await;
    // After close the stream ends.
    assert!(
        tokio::time::timeout(WAIT, slow.recv())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_runs_off_the_reader_task() {
    let server = RedisServer::start();
    let hub = hub(&server).await;
    let sub = hub.subscribe("h", strings(&["h"])).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // The handler is stuck on its first message until the test lets it go.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let handle = sub.spawn_handler({
        let gate = Arc::clone(&gate);
        move |event| {
            let (tx, gate) = (tx.clone(), Arc::clone(&gate));
            async move {
                if let Event::Message(m) = event {
                    let _permit = gate.acquire().await;
                    let _ = tx.send(m.payload.json().clone());
                }
            }
        }
    });
    for i in 0..5 {
        hub.publish("h", &json!(i)).await.unwrap();
    }
    // All five reach the subscription while the handler is still stuck on the first.
    eventually("received while the handler is blocked", || async {
        sub.received_total() == 5
    })
    .await;
    assert_eq!(sub.messages(None).len(), 5);
    assert!(
        rx.try_recv().is_err(),
        "the handler has not finished anything yet"
    );
    gate.add_permits(5);
    for i in 0..5 {
        let got = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, json!(i));
    }
    hub.shutdown().await;
    tokio::time::timeout(WAIT, handle).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_matches_redis() {
    let server = RedisServer::start();
    let hub = hub(&server).await;
    hub.subscribe("a", strings(&["orders:new", "billing:invoice"]))
        .await
        .unwrap();
    hub.subscribe("b", strings(&["orders:new"])).await.unwrap();
    hub.psubscribe("p", strings(&["notifications:*"]))
        .await
        .unwrap();
    assert_eq!(
        hub.active_channels("*").await.unwrap(),
        ["billing:invoice", "orders:new"]
    );
    assert_eq!(
        hub.active_channels("orders:*").await.unwrap(),
        ["orders:new"]
    );
    let counts = hub
        .channel_subscriber_counts(&strings(&["orders:new", "billing:invoice", "none"]))
        .await
        .unwrap();
    assert_eq!(counts.get("orders:new"), Some(&2));
    assert_eq!(counts.get("billing:invoice"), Some(&1));
    assert_eq!(counts.get("none"), Some(&0));
    assert_eq!(hub.pattern_subscriber_count().await.unwrap(), 1);
    let all = hub
        .introspect("*", &strings(&["orders:new"]))
        .await
        .unwrap();
    assert_eq!(all.active_channels, ["billing:invoice", "orders:new"]);
    assert_eq!(all.numsub.get("orders:new"), Some(&2));
    assert_eq!(all.numpat, 1);
    assert_eq!(hub.stats().await.pattern_subscriptions, 1);

    hub.reset_stats();
    hub.publish("orders:new", &json!(1)).await.unwrap();
    let stats = hub.local_stats();
    assert_eq!(stats.published_total, 1);
    assert_eq!(stats.delivered_total, 2);
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_no_connection_behind() {
    let server = RedisServer::start();
    let baseline = client_count(&server);
    let hub = hub(&server).await;
    hub.subscribe("a", strings(&["a"])).await.unwrap();
    hub.subscribe("b", strings(&["b"])).await.unwrap();
    hub.psubscribe("c", strings(&["c*"])).await.unwrap();
    assert_eq!(
        client_count(&server),
        baseline + 4,
        "1 publisher + 3 subscribers"
    );
    let subs = hub.subscriptions();
    hub.shutdown().await;
    assert!(
        subs.iter()
            .all(|s| s.status() == SubscriptionStatus::Closed)
    );
    server.wait_until(WAIT, "our connections are gone from CLIENT LIST", || {
        client_count(&server) == baseline
    });
    assert!(hub.publish("a", &json!(1)).await.unwrap_err().is_closed());
    assert!(hub.subscriptions().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ring_buffer_is_bounded_in_bytes_too() {
    let server = RedisServer::start();
    let hub = hub_with(&server, HubConfig::default().with_buffer_max_bytes(1_000)).await;
    let sub = hub.subscribe("big", strings(&["big"])).await.unwrap();
    let mut consumer = sub.consumer();
    for i in 0..10u8 {
        hub.publish_bytes("big", &[i; 300]).await.unwrap();
    }
    for i in 0..10u8 {
        assert_eq!(
            next_message(&mut consumer).await.payload.as_bytes(),
            [i; 300]
        );
    }
    // 3 x 300 bytes fit in 1,000; the consumer still got all ten.
    let kept: Vec<u8> = sub
        .messages(None)
        .iter()
        .map(|m| m.payload.as_bytes()[0])
        .collect();
    assert_eq!(kept, [9, 8, 7]);
    assert_eq!(hub.memory().buffered_bytes, 900);
    // One message over the whole budget: consumers get it whole, the ring keeps a preview
    // (its start, at most the budget) with its true size, next to what still fits.
    let huge = format!(r#"{{"blob":"{}"}}"#, "z".repeat(50_000));
    hub.publish_bytes("big", huge.as_bytes()).await.unwrap();
    let whole = next_message(&mut consumer).await;
    assert_eq!(whole.payload.as_bytes(), huge.as_bytes());
    assert!(!whole.payload.is_preview());
    let kept = sub.messages(None);
    let newest = &kept[0].payload;
    assert!(newest.is_preview());
    assert_eq!(newest.len(), huge.len(), "the true size");
    assert_eq!(newest.as_bytes(), &huge.as_bytes()[..1_000]);
    assert_eq!(
        newest.encoding(),
        PayloadEncoding::Json,
        "of the whole payload"
    );
    assert_eq!(
        newest.json(),
        &json!(&huge[..1_000]),
        "the kept start, as text"
    );
    assert_eq!(kept.len(), 1, "the preview fills the budget");
    assert_eq!(hub.memory().buffered_bytes, 1_000);
    assert_eq!(sub.received_total(), 11);
    // The consumer's queue is empty again: nothing counted there.
    assert_eq!(hub.memory().queued_bytes, 0);
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_queues_are_bounded_in_bytes_and_keep_the_newest_whole() {
    let server = RedisServer::start();
    let config = HubConfig::default().with_queue_max_bytes(10_000);
    let hub = hub_with(&server, config).await;
    let sub = hub.subscribe("q", strings(&["q"])).await.unwrap();
    let mut consumer = sub.consumer();
    for i in 0..10u8 {
        hub.publish_bytes("q", &[i; 3_000]).await.unwrap();
    }
    eventually("all received", || async { sub.received_total() == 10 }).await;
    assert_eq!(hub.memory().queued_bytes, 9_000, "three of 3,000 bytes fit");
    hub.publish_bytes("q", &[42u8; 50_000]).await.unwrap();
    eventually("received", || async { sub.received_total() == 11 }).await;
    assert_eq!(hub.memory().queued_bytes, 50_000, "the newest alone, whole");
    match next_event(&mut consumer).await {
        Event::Lagged(n) => assert_eq!(n, 10),
        other => panic!("expected Lagged, got {other:?}"),
    }
    let m = next_message(&mut consumer).await;
    assert_eq!(m.payload.as_bytes(), &[42u8; 50_000][..]);
    assert_eq!(hub.memory().queued_bytes, 0);
    assert_eq!(sub.dropped_total(), 10);
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribes_racing_shutdown_leave_nothing_open() {
    let server = RedisServer::start();
    let baseline = client_count(&server);
    let hub = hub(&server).await;
    let calls: Vec<_> = (0..40)
        .map(|i| {
            let hub = hub.clone();
            tokio::spawn(async move {
                hub.subscribe(&format!("r{i}"), vec![format!("r:{i}")])
                    .await
            })
        })
        .collect();
    eventually("some subscribes are through", || async {
        !hub.subscriptions().is_empty()
    })
    .await;
    hub.shutdown().await;
    let mut closed_late = 0;
    for call in calls {
        match tokio::time::timeout(WAIT, call).await.unwrap().unwrap() {
            Ok(sub) => assert_eq!(sub.status(), SubscriptionStatus::Closed, "{}", sub.name()),
            Err(e) => {
                assert!(e.is_closed(), "{e}");
                closed_late += 1;
            }
        }
    }
    println!("{closed_late} of 40 subscribes were refused by the shutdown");
    assert!(hub.subscriptions().is_empty());
    server.wait_until(WAIT, "our connections are gone from CLIENT LIST", || {
        client_count(&server) == baseline
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_statistics_are_bounded() {
    let server = RedisServer::start();
    let hub = hub_with(&server, HubConfig::default().with_max_tracked_channels(3)).await;
    for ch in ["a", "b", "c", "d", "e", "a"] {
        hub.publish(ch, &json!(0)).await.unwrap();
    }
    let stats = hub.local_stats();
    assert_eq!(stats.channel_published.len(), 3);
    assert_eq!(stats.channel_published.get("a"), Some(&2));
    assert_eq!(stats.channel_published_other, 2);
    hub.shutdown().await;
}

/// The protocol (`resp=`) of the connections subscribed to something.
fn subscriber_protocols(server: &RedisServer) -> Vec<String> {
    server
        .client_list()
        .iter()
        .filter(|c| c.sub + c.psub > 0)
        .filter_map(|c| {
            c.raw
                .split(' ')
                .find_map(|kv| kv.strip_prefix("resp="))
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_links_speak_resp3_and_fall_back_to_resp2_when_it_is_refused() {
    let server = RedisServer::start();
    let hub = hub(&server).await;
    let sub = hub.subscribe("three", strings(&["ch"])).await.unwrap();
    assert_eq!(subscriber_protocols(&server), ["3"]);
    let mut consumer = sub.consumer();
    hub.publish("ch", &json!(1)).await.unwrap();
    assert_eq!(next_message(&mut consumer).await.payload, json!(1));
    hub.shutdown().await;

    // A server without HELLO (as before Redis 6) cannot switch to RESP3: the links
    // subscribe over RESP2 and deliver the same, patterns included.
    let server = RedisServer::start_with_args(&["--rename-command", "HELLO", ""]);
    let hub = crate::util::hub(&server).await;
    let exact = hub.subscribe("two", strings(&["ch"])).await.unwrap();
    let pattern = hub.psubscribe("two-p", strings(&["c*"])).await.unwrap();
    assert_eq!(subscriber_protocols(&server), ["2", "2"]);
    let (mut a, mut b) = (exact.consumer(), pattern.consumer());
    assert_eq!(hub.publish("ch", &json!(2)).await.unwrap(), 2);
    assert_eq!(next_message(&mut a).await.payload, json!(2));
    let m = next_message(&mut b).await;
    assert_eq!(
        (m.channel.as_str(), m.pattern.as_deref()),
        ("ch", Some("c*"))
    );
    assert!(exact.is_alive() && pattern.is_alive());
    hub.shutdown().await;
}
