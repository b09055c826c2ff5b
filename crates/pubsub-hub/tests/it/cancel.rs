//! Cancel safety, tested systematically: each public async function of the hub is polled
//! N times (the runtime makes I/O progress between polls) and then dropped, for
//! N = 0, 1, 2, ... until a run completes. After every drop the hub and the real Redis are
//! checked: the call either did not happen or completed, never half-way. No name stays
//! reserved, no subscription is registered that its caller never got, Redis counts no
//! subscriber that no `Subscription` owns (`PUBSUB NUMSUB` / `NUMPAT` / `SHARDNUMSUB`,
//! `CLIENT LIST`), consumers are not left waiting, and the next call works. A durable
//! publication is in history whole or not at all, also when other callers' publications
//! of its channel are batched around it; one dropped while queued is never published.
//!
//! Each series runs in dedicated mode and shared mode on one server, and on a three-master
//! test-kit cluster (plain and shard channels; with the `cluster` feature).

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use crate::util::{WAIT, eventually, next_message, one_call_held};
use pubsub_hub::{
    ConnectionMode, HistoryOptions, HistoryRequest, HubConfig, PubSubHub, Subscription, TargetKind,
};
#[cfg(feature = "cluster")]
use pubsub_hub_testkit::RedisCluster;
use pubsub_hub_testkit::RedisServer;
use serde_json::json;

/// No series needs more polls than this to complete.
const MAX_POLLS: usize = 3000;

/// Polls `fut` at most `polls` times, yielding to the runtime between polls so that link
/// tasks and sockets make a little progress (the other worker thread runs them meanwhile);
/// returns its output if it completed, or drops it right after the last poll. Yields are
/// short, so consecutive cuts land on every state a call passes through: before it
/// starts, with its commands queued, on the wire, answered but not yet returned.
async fn cut<F: Future>(fut: F, polls: usize) -> Option<F::Output> {
    let mut fut = pin!(fut);
    for i in 0..polls {
        if i > 0 {
            tokio::task::yield_now().await;
        }
        if let Poll::Ready(out) = futures_util::poll!(fut.as_mut()) {
            return Some(out);
        }
    }
    None
}

/// A private Redis: one server or a cluster, seen as a list of nodes.
enum Deploy {
    Server(Box<RedisServer>),
    #[cfg(feature = "cluster")]
    Cluster(RedisCluster),
}

impl Deploy {
    fn nodes(&self) -> Vec<&RedisServer> {
        match self {
            Deploy::Server(s) => vec![&**s],
            #[cfg(feature = "cluster")]
            Deploy::Cluster(c) => c.nodes().iter().collect(),
        }
    }

    /// Subscribers Redis counts for `target`, summed over the nodes: `NUMSUB`, `NUMPAT`
    /// (patterns are only ever subscribed by the hub under test) or `SHARDNUMSUB`.
    fn count(&self, kind: TargetKind, target: &str) -> i64 {
        self.nodes()
            .iter()
            .map(|node| match kind {
                TargetKind::Channel => node.numsub(target),
                TargetKind::Pattern => node.numpat(),
                _ => match node.cmd(&["PUBSUB", "SHARDNUMSUB", target]) {
                    redis::Value::Array(v) => redis::from_redis_value(v[1].clone()).unwrap(),
                    other => panic!("unexpected SHARDNUMSUB reply {other:?}"),
                },
            })
            .sum()
    }

    /// Connections in pub/sub state on every node (`CLIENT LIST`).
    fn pubsub_clients(&self) -> usize {
        self.nodes()
            .iter()
            .map(|node| node.client_list().iter().filter(|c| c.is_pubsub()).count())
            .sum()
    }

    /// Connections of every node but the test kit's own (`CLIENT LIST`).
    fn clients(&self) -> usize {
        self.nodes()
            .iter()
            .map(|node| {
                node.client_list()
                    .iter()
                    .filter(|c| c.field("name") != Some(pubsub_hub_testkit::ADMIN_CLIENT_NAME))
                    .count()
            })
            .sum()
    }

    /// Builds a hub on this Redis with test-friendly timings.
    async fn connect(&self, config: HubConfig) -> Result<PubSubHub, pubsub_hub::HubError> {
        let config = config
            .with_reconnect_backoff(Duration::from_millis(20), Duration::from_millis(300))
            .with_ping_interval(Duration::from_millis(500));
        match self {
            Deploy::Server(s) => PubSubHub::with_config(s.client(), config).await,
            #[cfg(feature = "cluster")]
            Deploy::Cluster(c) => PubSubHub::cluster(c.node_urls(), config).await,
        }
    }

    /// A hub on this Redis with test-friendly timings.
    async fn hub(&self, config: HubConfig) -> PubSubHub {
        self.connect(config).await.expect("the hub connects")
    }

    /// Waits until Redis counts `n` subscribers of `target` and the pub/sub connections
    /// are back to `clients`.
    async fn settled(&self, kind: TargetKind, target: &str, n: i64, clients: usize) {
        let what = format!("{kind:?} {target}: {n} subscriber(s), {clients} pub/sub connection(s)");
        eventually(&what, || async {
            self.count(kind, target) == n && self.pubsub_clients() == clients
        })
        .await;
    }
}

fn one(target: &str) -> Vec<String> {
    vec![target.to_owned()]
}

fn shared() -> HubConfig {
    HubConfig::default().with_mode(ConnectionMode::Shared { connections: 2 })
}

/// The pub/sub connections a fresh hub keeps by itself (its shared links), once open.
async fn baseline(deploy: &Deploy, hub: &PubSubHub) -> usize {
    let expected = match hub.mode() {
        ConnectionMode::Shared { connections } => connections,
        _ => 0,
    };
    eventually("the shared links are connected", || async {
        hub.subscriber_connections() == expected
    })
    .await;
    // Shared links hold no subscription yet: `CLIENT LIST` shows them in pub/sub state
    // only once they subscribe, so the baseline is measured, not assumed.
    deploy.pubsub_clients()
}

/// `subscribe_kind` cut at every point: dropped, it leaves no name, no registration and,
/// once its links have handled the release, nothing on Redis; completed, it is a normal
/// subscription.
async fn subscribe_series(deploy: &Deploy, hub: &PubSubHub, kind: TargetKind, target: &str) {
    let base = baseline(deploy, hub).await;
    for n in 0..MAX_POLLS {
        let out = cut(hub.subscribe_kind("cut", kind, one(target)), n).await;
        let done = out.is_some();
        match out {
            Some(result) => {
                let sub = result.expect("an uncut subscribe succeeds");
                assert!(
                    hub.get_subscription("cut")
                        .is_some_and(|s| Arc::ptr_eq(&s, &sub))
                );
            }
            None => {
                assert!(
                    hub.get_subscription("cut").is_none(),
                    "cut after {n} polls: registered without its caller"
                );
                assert!(hub.subscriptions().is_empty());
                assert_eq!(hub.local_stats().active_subscriptions, 0);
                // The name is free at once.
                hub.subscribe_kind("cut", kind, one(target))
                    .await
                    .unwrap_or_else(|e| panic!("cut after {n} polls: name not reusable: {e}"));
            }
        }
        // One subscription is left, whatever the cut: Redis counts one subscriber (in
        // shared mode, one connection), never the dropped call's as well.
        let mut consumer = hub.get_subscription("cut").unwrap().consumer();
        eventually("one subscriber on Redis", || async {
            deploy.count(kind, target) == 1
        })
        .await;
        let publish = match kind {
            TargetKind::Shard => hub.spublish(target, &json!(n)).await,
            _ => hub.publish(target, &json!(n)).await,
        };
        assert!(publish.is_ok());
        // In a cluster, an earlier round's message may still be crossing the cluster bus
        // to the node this subscription landed on: skip it.
        while next_message(&mut consumer).await.payload != json!(n) {}
        assert!(hub.unsubscribe("cut").await);
        deploy.settled(kind, target, 0, base).await;
        if done {
            assert!(n > 0, "a subscribe needs at least one poll");
            eprintln!("subscribe {kind:?} {target}: cut at 0..{n} polls, then completed");
            return;
        }
    }
    panic!("subscribe did not complete within {MAX_POLLS} polls");
}

/// How a subscription is closed.
#[derive(Clone, Copy, Debug)]
enum Closing {
    SubscriptionClose,
    HubUnsubscribe,
    HubCloseAll,
}

/// Closing cut at every point: before the first poll nothing happens; after it the name is
/// free, the subscription is closed, its consumers end, and a later `close` waits for
/// Redis to release the target (it is released when that returns).
async fn close_series(
    deploy: &Deploy,
    hub: &PubSubHub,
    kind: TargetKind,
    target: &str,
    how: Closing,
) {
    let base = baseline(deploy, hub).await;
    for n in 0..MAX_POLLS {
        let sub: Arc<Subscription> = hub.subscribe_kind("c", kind, one(target)).await.unwrap();
        let mut consumer = sub.consumer();
        assert_eq!(deploy.count(kind, target), 1, "confirmed before return");
        let done = match how {
            Closing::SubscriptionClose => cut(sub.close(), n).await.is_some(),
            Closing::HubUnsubscribe => cut(hub.unsubscribe("c"), n)
                .await
                .inspect(|r| assert!(r))
                .is_some(),
            Closing::HubCloseAll => cut(hub.close_all(), n).await.is_some(),
        };
        if n == 0 {
            assert!(!done);
            assert!(!sub.is_closed(), "{how:?} never polled did nothing");
            assert!(hub.get_subscription("c").is_some());
            assert!(hub.unsubscribe("c").await);
        } else {
            assert!(
                hub.get_subscription("c").is_none(),
                "{how:?} cut after {n} polls"
            );
            assert!(sub.is_closed());
            let end = tokio::time::timeout(WAIT, consumer.recv()).await;
            assert!(
                matches!(end, Ok(None)),
                "{how:?} cut after {n} polls: the consumer must end"
            );
            // A later close finishes the job: it returns once Redis has let go.
            tokio::time::timeout(WAIT, sub.close())
                .await
                .expect("a later close returns");
            assert_eq!(
                deploy.count(kind, target),
                0,
                "{how:?} cut after {n} polls: released when a later close returns"
            );
        }
        deploy.settled(kind, target, 0, base).await;
        if done {
            eprintln!("{how:?} {kind:?}: cut at 0..{n} polls, then completed");
            return;
        }
    }
    panic!("{how:?} did not complete within {MAX_POLLS} polls");
}

/// [`close_series`] for each (kind, target, closing) in turn, on the same hub.
async fn close_each(deploy: &Deploy, hub: &PubSubHub, cases: &[(TargetKind, &str, Closing)]) {
    for &(kind, target, how) in cases {
        close_series(deploy, hub, kind, target, how).await;
    }
}

/// `shutdown` cut at every point: before the first poll nothing happens; after it the hub
/// refuses new work, consumers end, and a later `shutdown` returns with every connection
/// of the hub closed.
async fn shutdown_series(deploy: &Deploy, config: HubConfig, kind: TargetKind, target: &str) {
    for n in 0..MAX_POLLS {
        let hub = deploy.hub(config.clone()).await;
        let sub = hub.subscribe_kind("s", kind, one(target)).await.unwrap();
        let mut consumer = sub.consumer();
        let done = cut(hub.shutdown(), n).await.is_some();
        if n == 0 {
            assert!(!done);
            assert!(
                hub.publish("other", &json!(1)).await.is_ok(),
                "still usable"
            );
            assert!(hub.get_subscription("s").is_some());
        } else {
            let err = hub.subscribe("t", one("t")).await.unwrap_err();
            assert!(err.is_closed(), "cut after {n} polls: {err}");
            let end = tokio::time::timeout(WAIT, consumer.recv()).await;
            assert!(
                matches!(end, Ok(None)),
                "cut after {n} polls: consumer must end"
            );
        }
        tokio::time::timeout(WAIT, hub.shutdown())
            .await
            .expect("a later shutdown returns");
        assert_eq!(hub.subscriber_connections(), 0);
        assert_eq!(
            deploy.count(kind, target),
            0,
            "released when shutdown returns"
        );
        deploy.settled(kind, target, 0, 0).await;
        if done {
            eprintln!("shutdown: cut at 0..{n} polls, then completed");
            return;
        }
    }
    panic!("shutdown did not complete within {MAX_POLLS} polls");
}

/// The constructors cut at every point: a dropped one leaves no connection open on any
/// node; a completed one works and, shut down, leaves none either.
async fn connect_series(deploy: &Deploy, config: HubConfig) {
    for n in 0..MAX_POLLS {
        let out = cut(deploy.connect(config.clone()), n).await;
        let done = out.is_some();
        if let Some(result) = out {
            let hub = result.expect("an uncut constructor succeeds");
            hub.publish("connected", &json!(n)).await.unwrap();
            hub.shutdown().await;
        }
        eventually("no connection of the hub is left", || async {
            deploy.clients() == 0
        })
        .await;
        if done {
            eprintln!("constructor: cut at 0..{n} polls, then completed");
            return;
        }
    }
    panic!("the constructor did not complete within {MAX_POLLS} polls");
}

/// `publish` / `spublish` cut at every point: the counters only count completed calls,
/// no error is recorded, and the next publish goes through (no lock or connection is left
/// stuck).
async fn publish_series(hub: &PubSubHub, kind: TargetKind, target: &str) {
    let sub = hub.subscribe_kind("p", kind, one(target)).await.unwrap();
    let mut consumer = sub.consumer();
    let send = |n: usize| {
        let hub = hub.clone();
        let target = target.to_owned();
        async move {
            match kind {
                TargetKind::Shard => hub.spublish(&target, &json!({"cut": n})).await,
                _ => hub.publish(&target, &json!({"cut": n})).await,
            }
        }
    };
    for n in 0..MAX_POLLS {
        let before = hub.local_stats();
        let out = cut(send(n), n).await;
        let after = hub.local_stats();
        assert_eq!(after.publish_errors_total, before.publish_errors_total);
        let completed = u64::from(out.is_some());
        assert_eq!(after.published_total, before.published_total + completed);
        if let Some(result) = &out {
            assert!(result.is_ok());
        }
        let marker = MAX_POLLS + n;
        let sent = tokio::time::timeout(WAIT, send(marker))
            .await
            .expect("not stuck");
        // (In a cluster Redis counts only the receiving node's subscribers: not asserted.)
        assert!(sent.is_ok());
        // Whatever the cut message did, the marker arrives.
        loop {
            if next_message(&mut consumer).await.payload == json!({"cut": marker}) {
                break;
            }
        }
        if out.is_some() {
            assert!(hub.unsubscribe("p").await);
            eprintln!("publish {kind:?}: cut at 0..{n} polls, then completed");
            return;
        }
    }
    panic!("publish did not complete within {MAX_POLLS} polls");
}

/// The publications of `channel`'s history, checked whole: exactly the offsets
/// `1..=last`, each once, in order.
async fn whole_history(hub: &PubSubHub, channel: &str) -> Vec<(u64, Vec<u8>)> {
    let page = hub
        .history(channel, &HistoryRequest::default(), Duration::ZERO)
        .await
        .unwrap();
    let offsets: Vec<u64> = page.publications.iter().map(|(o, _)| *o).collect();
    assert_eq!(
        offsets,
        (1..=page.position.offset).collect::<Vec<_>>(),
        "every offset handed out is in the stream once"
    );
    page.publications
}

/// `publish_with_history` cut at every point: the publication is in history whole or not
/// at all, ahead of the same caller's next one, and the next call is not held up. Holds
/// with other callers publishing to the channel meanwhile.
async fn durable_publish_series(hub: &PubSubHub, options: &HistoryOptions) {
    let channel = "cut:durable";
    for n in 0..MAX_POLLS {
        let before = hub
            .history(channel, &HistoryRequest::position(), Duration::ZERO)
            .await
            .unwrap()
            .position
            .offset;
        let payload = format!("cut {n}");
        let out = cut(
            hub.publish_with_history(channel, payload.as_bytes(), options),
            n,
        )
        .await;
        let marker =
            tokio::time::timeout(WAIT, hub.publish_with_history(channel, b"marker", options))
                .await
                .expect("not stuck")
                .unwrap();
        let page = hub
            .history(
                channel,
                &HistoryRequest::since(before, None),
                Duration::ZERO,
            )
            .await
            .unwrap();
        let offsets: Vec<u64> = page.publications.iter().map(|(o, _)| *o).collect();
        assert_eq!(
            offsets,
            (before + 1..=page.position.offset).collect::<Vec<_>>(),
            "cut after {n} polls: every offset handed out is in the stream once"
        );
        let found: Vec<u64> = page
            .publications
            .iter()
            .filter(|(_, p)| p == payload.as_bytes())
            .map(|(o, _)| *o)
            .collect();
        assert!(found.len() <= 1, "cut after {n} polls: {found:?}");
        assert!(found.iter().all(|&o| o < marker.position.offset));
        if let Some(result) = out {
            assert_eq!(found, [result.unwrap().position.offset]);
            eprintln!("publish_with_history: cut at 0..{n} polls, then completed");
            return;
        }
    }
    panic!("publish_with_history did not complete within {MAX_POLLS} polls");
}

/// Durable publishes dropped while queued behind a call in flight: a queued one that is
/// dropped is never published; the caller that sends the call in flight, dropped, holds
/// up nobody queued behind it, and its publication still goes out whole, first.
async fn queued_durable_publishes_dropped(server: &RedisServer, hub: &PubSubHub) {
    let channel = "cut:queued";
    let options = HistoryOptions::new(100, Duration::from_secs(300));
    hub.publish_with_history(channel, b"first", &options)
        .await
        .unwrap();
    server.cmd(&["CLIENT", "PAUSE", "10000", "WRITE"]);
    let mut in_flight = Box::pin(hub.publish_with_history(channel, b"in flight", &options));
    assert!(futures_util::poll!(in_flight.as_mut()).is_pending());
    one_call_held(server).await;
    let mut dropped = Box::pin(hub.publish_with_history(channel, b"dropped", &options));
    assert!(futures_util::poll!(dropped.as_mut()).is_pending());
    let mut behind = Box::pin(hub.publish_with_history(channel, b"behind", &options));
    assert!(futures_util::poll!(behind.as_mut()).is_pending());
    drop(dropped);
    drop(in_flight);
    server.cmd(&["CLIENT", "UNPAUSE"]);
    let behind = tokio::time::timeout(WAIT, behind)
        .await
        .expect("the caller queued behind a dropped one is answered")
        .unwrap();
    assert_eq!(behind.position.offset, 3);
    let kept: Vec<Vec<u8>> = whole_history(hub, channel)
        .await
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert_eq!(
        kept,
        [&b"first"[..], b"in flight", b"behind"],
        "the dropped queued call is not published"
    );
}

/// Runs `call` cut at every point; after each cut a full call must answer `expected`
/// within the time limit.
async fn query_series<T, F, Fut>(what: &str, expected: T, call: F)
where
    T: PartialEq + std::fmt::Debug,
    F: Fn() -> Fut,
    Fut: Future<Output = T>,
{
    for n in 0..MAX_POLLS {
        let out = cut(call(), n).await;
        if let Some(out) = &out {
            assert_eq!(out, &expected, "{what}");
        }
        let full = tokio::time::timeout(WAIT, call())
            .await
            .unwrap_or_else(|_| panic!("{what} is stuck after a cut at {n} polls"));
        assert_eq!(full, expected, "{what} after a cut at {n} polls");
        if out.is_some() {
            eprintln!("{what}: cut at 0..{n} polls, then completed");
            return;
        }
    }
    panic!("{what} did not complete within {MAX_POLLS} polls");
}

/// Every introspection call, cut at every point.
async fn introspection_series(hub: &PubSubHub, channel: &str, shard: &str) {
    let _plain = hub.subscribe("i-plain", one(channel)).await.unwrap();
    let _shard = hub.ssubscribe("i-shard", one(shard)).await.unwrap();
    let names = vec![channel.to_owned(), shard.to_owned()];
    let found = hub.introspect("*", &names).await.unwrap();
    assert_eq!(found.numsub[channel], 1);
    assert_eq!(found.shard_numsub[shard], 1);
    query_series("introspect", found.clone(), || async {
        hub.introspect("*", &names).await.unwrap()
    })
    .await;
    query_series("active_channels", found.active_channels.clone(), || async {
        hub.active_channels("*").await.unwrap()
    })
    .await;
    query_series(
        "channel_subscriber_counts",
        found.numsub.clone(),
        || async { hub.channel_subscriber_counts(&names).await.unwrap() },
    )
    .await;
    query_series("pattern_subscriber_count", 0, || async {
        hub.pattern_subscriber_count().await.unwrap()
    })
    .await;
    query_series("shard_channels", found.shard_channels.clone(), || async {
        hub.shard_channels("*").await.unwrap()
    })
    .await;
    query_series(
        "shard_subscriber_counts",
        found.shard_numsub.clone(),
        || async { hub.shard_subscriber_counts(&names).await.unwrap() },
    )
    .await;
    query_series("stats", 2, || async {
        hub.stats().await.active_subscriptions
    })
    .await;
    hub.close_all().await;
}

/// `Consumer::recv` and `PubSubHub::changed` cut while they wait: nothing is lost, and
/// later calls see what happened.
async fn waiting_calls_lose_nothing(hub: &PubSubHub) {
    let sub = hub.subscribe("w", one("w")).await.unwrap();
    let mut consumer = sub.consumer();
    for n in 0..4 {
        assert!(
            cut(consumer.recv(), n).await.is_none(),
            "nothing published yet"
        );
        let since = hub.version();
        // A status change may wake it legitimately; what matters is what follows.
        let _ = cut(hub.changed(since), n).await;
        hub.publish("w", &json!(n)).await.unwrap();
        assert_eq!(next_message(&mut consumer).await.payload, json!(n));
        let changed = tokio::time::timeout(WAIT, hub.changed(since)).await;
        assert!(changed.expect("a later changed() wakes") > since);
    }
    hub.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedicated_subscribes_cut_anywhere_leave_nothing_behind() {
    let deploy = Deploy::Server(Box::new(RedisServer::start()));
    let hub = deploy.hub(HubConfig::default()).await;
    subscribe_series(&deploy, &hub, TargetKind::Channel, "cut:plain").await;
    subscribe_series(&deploy, &hub, TargetKind::Pattern, "cut:*").await;
    subscribe_series(&deploy, &hub, TargetKind::Shard, "cut:shard").await;
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedicated_closes_and_shutdown_cut_anywhere_finish() {
    let deploy = Deploy::Server(Box::new(RedisServer::start()));
    let hub = deploy.hub(HubConfig::default()).await;
    close_each(
        &deploy,
        &hub,
        &[
            (TargetKind::Channel, "c", Closing::SubscriptionClose),
            (TargetKind::Pattern, "c*", Closing::HubUnsubscribe),
            (TargetKind::Shard, "c", Closing::HubCloseAll),
        ],
    )
    .await;
    hub.shutdown().await;
    shutdown_series(&deploy, HubConfig::default(), TargetKind::Channel, "s").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedicated_publishes_queries_and_waits_cut_anywhere_leave_the_hub_usable() {
    let deploy = Deploy::Server(Box::new(RedisServer::start()));
    connect_series(&deploy, HubConfig::default()).await;
    let hub = deploy.hub(HubConfig::default()).await;
    publish_series(&hub, TargetKind::Channel, "p").await;
    publish_series(&hub, TargetKind::Shard, "p").await;
    introspection_series(&hub, "i", "i:shard").await;
    waiting_calls_lose_nothing(&hub).await;
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_publishes_cut_anywhere_publish_whole_or_not_at_all() {
    let server = RedisServer::start();
    let hub = crate::util::hub(&server).await;
    let options = HistoryOptions::new(10_000, Duration::from_secs(300));
    durable_publish_series(&hub, &options).await;
    // The same with other callers' publications queued and in flight all the while.
    let load = (0..4)
        .map(|i| {
            let hub = hub.clone();
            let options = options.clone();
            tokio::spawn(async move {
                loop {
                    hub.publish_with_history(
                        "cut:durable",
                        format!("load {i}").as_bytes(),
                        &options,
                    )
                    .await
                    .unwrap();
                }
            })
        })
        .collect::<Vec<_>>();
    durable_publish_series(&hub, &options).await;
    for task in load {
        task.abort();
    }
    queued_durable_publishes_dropped(&server, &hub).await;
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_mode_calls_cut_anywhere_leave_nothing_behind() {
    let deploy = Deploy::Server(Box::new(RedisServer::start()));
    let hub = deploy.hub(shared()).await;
    subscribe_series(&deploy, &hub, TargetKind::Channel, "cut:plain").await;
    subscribe_series(&deploy, &hub, TargetKind::Pattern, "cut:*").await;
    subscribe_series(&deploy, &hub, TargetKind::Shard, "cut:shard").await;
    close_each(
        &deploy,
        &hub,
        &[
            (TargetKind::Channel, "c", Closing::SubscriptionClose),
            (TargetKind::Shard, "c", Closing::HubUnsubscribe),
            (TargetKind::Channel, "c", Closing::HubCloseAll),
        ],
    )
    .await;
    publish_series(&hub, TargetKind::Channel, "p").await;
    hub.shutdown().await;
    shutdown_series(&deploy, shared(), TargetKind::Shard, "s").await;
    connect_series(&deploy, shared()).await;
}

#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_calls_cut_anywhere_leave_nothing_behind() {
    let deploy = Deploy::Cluster(RedisCluster::start(3, 0));
    connect_series(&deploy, HubConfig::default()).await;
    let hub = deploy.hub(HubConfig::default()).await;
    subscribe_series(&deploy, &hub, TargetKind::Channel, "cut:plain").await;
    subscribe_series(&deploy, &hub, TargetKind::Shard, "cut:shard").await;
    close_each(
        &deploy,
        &hub,
        &[
            (TargetKind::Channel, "c", Closing::SubscriptionClose),
            (TargetKind::Shard, "c", Closing::HubUnsubscribe),
        ],
    )
    .await;
    publish_series(&hub, TargetKind::Channel, "p").await;
    publish_series(&hub, TargetKind::Shard, "p").await;
    let sharded = HistoryOptions::new(10_000, Duration::from_secs(300)).with_sharded(true);
    durable_publish_series(&hub, &sharded).await;
    introspection_series(&hub, "i", "i:shard").await;
    hub.shutdown().await;
    shutdown_series(&deploy, HubConfig::default(), TargetKind::Shard, "s").await;
}
