//! Durable publications against private Redis servers: offsets and epochs, the capped
//! stream, reads since an offset (forward, reverse, limited), the live envelope, a new
//! epoch after a restart without persistence and after expiry, removal, a cluster's shard
//! channels, and futures dropped at every await point. Concurrent publications of a
//! channel batched: offsets, stream and live order, the batch bounds (seen in `SLOWLOG`),
//! and batches failing whole when Redis is killed or stalls.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::util::{WAIT, eventually, hub, next_message, one_call_held};
use pubsub_hub::history::history_keys;
use pubsub_hub::{
    DurablePublish, HistoryOptions, HistoryRequest, HubError, LiveEnvelope, PubSubHub,
    StreamPosition,
};
use pubsub_hub_testkit::RedisServer;

fn opts(size: usize) -> HistoryOptions {
    HistoryOptions::new(size, Duration::from_secs(300))
}

fn payloads(page: &pubsub_hub::HistoryPage) -> Vec<(u64, String)> {
    page.publications
        .iter()
        .map(|(o, p)| (*o, String::from_utf8(p.clone()).unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_increase_and_reads_follow_the_request() {
    let server = RedisServer::start();
    let hub = hub(&server).await;
    let sub = hub.subscribe("watcher", vec!["news".into()]).await.unwrap();
    let mut consumer = sub.consumer();
    let mut epoch = String::new();
    for i in 1..=5u64 {
        let done = hub
            .publish_with_history("news", format!("m{i}").as_bytes(), &opts(3))
            .await
            .unwrap();
        assert_eq!(done.position.offset, i);
        assert_eq!(done.receivers, 1);
        if i == 1 {
            epoch = done.position.epoch.clone();
            assert_eq!(epoch.len(), 16);
        }
        assert_eq!(done.position.epoch, epoch, "one epoch while history lives");
        let live = next_message(&mut consumer).await;
        let envelope = LiveEnvelope::parse(live.payload.as_bytes()).expect("an envelope");
        assert_eq!(envelope.position, done.position);
        assert_eq!(envelope.payload, format!("m{i}").as_bytes());
    }
    // Capped at 3: the stream keeps offsets 3..=5.
    let all = hub
        .history("news", &HistoryRequest::default(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        payloads(&all),
        vec![(3, "m3".into()), (4, "m4".into()), (5, "m5".into())]
    );
    assert_eq!(all.position.offset, 5);
    assert_eq!(all.oldest, 3);
    let at = |offset| StreamPosition {
        offset,
        epoch: epoch.clone(),
    };
    assert!(all.covers(&at(2)) && all.covers(&at(5)));
    assert!(!all.covers(&at(1)), "offset 2 was trimmed away");

    let since = hub
        .history("news", &HistoryRequest::since(3, Some(1)), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(payloads(&since), vec![(4, "m4".into())]);
    let reverse = hub
        .history(
            "news",
            &HistoryRequest::default()
                .with_limit(Some(2))
                .with_reverse(true),
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(payloads(&reverse), vec![(5, "m5".into()), (4, "m4".into())]);
    let before = hub
        .history(
            "news",
            &HistoryRequest::default()
                .with_since(Some(5))
                .with_reverse(true),
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(payloads(&before), vec![(4, "m4".into()), (3, "m3".into())]);
    let position = hub
        .history("news", &HistoryRequest::position(), Duration::ZERO)
        .await
        .unwrap();
    assert!(position.publications.is_empty());
    assert_eq!(position.position, at(5));

    // The keys the module docs name, with the documented layout.
    let (stream, meta) = history_keys("news");
    assert_eq!(stream, "pubsub-hub:history:{news}news");
    assert_eq!(
        server.cmd(&["XLEN", &stream]),
        redis::Value::Int(3),
        "MAXLEN is exact"
    );
    assert_eq!(
        server.cmd(&["HGET", &meta, "s"]),
        redis::Value::BulkString(b"5".to_vec())
    );

    // A plain PUBLISH reaches subscribers unwrapped and is not history.
    server.publish("news", b"outside");
    let live = next_message(&mut consumer).await;
    assert!(LiveEnvelope::parse(live.payload.as_bytes()).is_none());
    let after = hub
        .history("news", &HistoryRequest::default(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(after.position.offset, 5);

    // Removal keeps the position: a client at offset 2 can no longer recover.
    hub.remove_history("news").await.unwrap();
    let removed = hub
        .history("news", &HistoryRequest::default(), Duration::ZERO)
        .await
        .unwrap();
    assert!(removed.publications.is_empty());
    assert_eq!(removed.position, at(5));
    assert!(!removed.covers(&at(2)));
    assert!(removed.covers(&at(5)), "nothing missed at the top");
    let next = hub
        .publish_with_history("news", b"m6", &opts(3))
        .await
        .unwrap();
    assert_eq!(next.position, at(6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_before_redis() {
    let server = RedisServer::start();
    let hub = hub(&server).await;
    assert!(
        hub.publish_with_history("", b"x", &opts(3))
            .await
            .unwrap_err()
            .is_invalid_input()
    );
    assert!(
        hub.publish_with_history("c", b"x", &opts(0))
            .await
            .unwrap_err()
            .is_invalid_input()
    );
    assert!(
        hub.history("", &HistoryRequest::default(), Duration::ZERO)
            .await
            .unwrap_err()
            .is_invalid_input()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epoch_changes_when_history_is_lost() {
    let mut server = RedisServer::start();
    let hub = hub(&server).await;
    // A read before any publish fixes a position, so a subscriber that starts from it
    // notices a later loss too.
    let empty = hub
        .history(
            "room",
            &HistoryRequest::position(),
            Duration::from_secs(300),
        )
        .await
        .unwrap();
    assert_eq!(empty.position.offset, 0);
    let first = hub
        .publish_with_history("room", b"a", &opts(10))
        .await
        .unwrap();
    assert_eq!(
        first.position,
        StreamPosition {
            offset: 1,
            epoch: empty.position.epoch.clone()
        }
    );

    // Restart without persistence: the script cache and the data are gone.
    server.restart();
    let again = tokio::time::timeout(WAIT, async {
        loop {
            match hub.publish_with_history("room", b"b", &opts(10)).await {
                Ok(done) => return done,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .expect("publishes again once Redis is back");
    assert_eq!(again.position.offset, 1, "offsets start again");
    assert_ne!(again.position.epoch, first.position.epoch, "a new epoch");
    let page = hub
        .history("room", &HistoryRequest::default(), Duration::ZERO)
        .await
        .unwrap();
    assert!(!page.covers(&first.position));

    // Expiry takes both keys: a new epoch, and no stale stream left behind.
    let short = HistoryOptions::new(10, Duration::from_secs(1));
    let before = hub
        .publish_with_history("brief", b"x", &short)
        .await
        .unwrap();
    let (stream, meta) = history_keys("brief");
    eventually("the history expired", || {
        let gone = server.cmd(&["EXISTS", &stream, &meta]) == redis::Value::Int(0);
        async move { gone }
    })
    .await;
    let after = hub
        .publish_with_history("brief", b"y", &short)
        .await
        .unwrap();
    assert_eq!(after.position.offset, 1);
    assert_ne!(after.position.epoch, before.position.epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_futures_leave_history_whole() {
    let server = RedisServer::start();
    let hub = hub(&server).await;
    // Drop the publish after 0, 1, 2, ... polls: whatever ran, ran whole, so the stream's
    // length always equals the last offset (nothing is half appended).
    let options = opts(1000);
    for polls in 0..20usize {
        let fut = hub.publish_with_history("drops", b"p", &options);
        tokio::pin!(fut);
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        for _ in 0..polls {
            if fut.as_mut().poll(&mut cx).is_ready() {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    let page = hub
        .history("drops", &HistoryRequest::default(), Duration::ZERO)
        .await
        .unwrap();
    let offsets: Vec<u64> = page.publications.iter().map(|(o, _)| *o).collect();
    let expected: Vec<u64> = (1..=page.position.offset).collect();
    assert_eq!(
        offsets, expected,
        "every offset handed out is in the stream"
    );
    // And the hub still works.
    let done = hub
        .publish_with_history("drops", b"p", &opts(1000))
        .await
        .unwrap();
    assert_eq!(done.position.offset, page.position.offset + 1);
}

#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_channels_on_a_cluster() {
    use pubsub_hub::HubConfig;
    let cluster = pubsub_hub_testkit::RedisCluster::start(3, 0);
    let hub = crate::util::cluster_hub(&cluster, HubConfig::default()).await;
    let channels = ["orders:eu", "orders:us", "orders:{asia}x"];
    let sub = hub
        .ssubscribe("shards", channels.iter().map(|c| c.to_string()).collect())
        .await
        .unwrap();
    let mut consumer = sub.consumer();
    let options = opts(10).with_sharded(true);
    for channel in channels {
        let done = tokio::time::timeout(WAIT, async {
            loop {
                match hub.publish_with_history(channel, b"x", &options).await {
                    Ok(done) => return done,
                    // The cluster may still be settling its slots.
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        })
        .await
        .expect("the durable publish succeeds on the cluster");
        assert_eq!(done.position.offset, 1);
        let live = next_message(&mut consumer).await;
        assert_eq!(live.channel, channel);
        let envelope = LiveEnvelope::parse(live.payload.as_bytes()).unwrap();
        assert_eq!(envelope.position, done.position);
        let page = hub
            .history(channel, &HistoryRequest::default(), Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(page.publications, vec![(1, b"x".to_vec())]);
    }

    // Batches on the cluster: each touches one channel's keys, so one slot. Eight
    // publishers per channel, all three channels at once.
    const EACH: u64 = 10;
    for node in cluster.nodes() {
        node.cmd(&["CONFIG", "RESETSTAT"]);
    }
    let mut publishers = tokio::task::JoinSet::new();
    for channel in channels {
        for task in 0..8 {
            let hub = hub.clone();
            let options = options.clone();
            publishers.spawn(async move {
                let mut mine = Vec::new();
                for i in 0..EACH {
                    let payload = format!("{task}-{i}");
                    let done = hub
                        .publish_with_history(channel, payload.as_bytes(), &options)
                        .await
                        .unwrap();
                    mine.push((channel, done.position.offset, payload));
                }
                mine
            });
        }
    }
    let mut published = Vec::new();
    while let Some(mine) = publishers.join_next().await {
        published.extend(mine.unwrap());
    }
    let calls: u64 = cluster.nodes().iter().map(script_calls).sum();
    assert!(
        calls < 3 * 8 * EACH,
        "{calls} script calls: nothing was batched"
    );
    published.sort();
    for channel in channels {
        let mine: Vec<(u64, Vec<u8>)> = published
            .iter()
            .filter(|(c, _, _)| *c == channel)
            .map(|(_, offset, payload)| (*offset, payload.clone().into_bytes()))
            .collect();
        // Offsets 2..=81 after the first publication, the stream's last 10 matching.
        let offsets: Vec<u64> = mine.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, (2..=1 + 8 * EACH).collect::<Vec<_>>(), "{channel}");
        let page = hub
            .history(channel, &HistoryRequest::default(), Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(page.publications, mine[mine.len() - 10..], "{channel}");
    }
    // Live, each channel's publications arrive in offset order.
    let mut next_offset: std::collections::HashMap<String, u64> =
        channels.iter().map(|c| (c.to_string(), 2)).collect();
    for _ in 0..3 * 8 * EACH {
        let live = next_message(&mut consumer).await;
        let envelope = LiveEnvelope::parse(live.payload.as_bytes()).unwrap();
        let expected = next_offset.get_mut(&live.channel).unwrap();
        assert_eq!(envelope.position.offset, *expected, "{}", live.channel);
        *expected += 1;
    }
}

/// `calls` of `cmdstat_<command>` in `INFO commandstats` (0 when never called).
fn command_calls(server: &RedisServer, command: &str) -> u64 {
    let prefix = format!("cmdstat_{command}:calls=");
    server
        .info("commandstats")
        .lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// Script calls (`EVALSHA` and `EVAL`) the server has run since its stats were reset.
fn script_calls(server: &RedisServer) -> u64 {
    command_calls(server, "evalsha") + command_calls(server, "eval")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_history_publishes_share_script_calls_in_order() {
    const TASKS: usize = 16;
    const EACH: usize = 13;
    let server = RedisServer::start();
    let hub = hub(&server).await;
    let sub = hub.subscribe("live", vec!["batched".into()]).await.unwrap();
    let mut consumer = sub.consumer();
    server.cmd(&["CONFIG", "RESETSTAT"]);
    let options = opts(1000);
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let hub = hub.clone();
        let options = options.clone();
        tasks.spawn(async move {
            let mut mine = Vec::new();
            for i in 0..EACH {
                let payload = format!("t{task}-{i}");
                let done = hub
                    .publish_with_history("batched", payload.as_bytes(), &options)
                    .await
                    .unwrap();
                assert_eq!(done.receivers, 1, "the subscriber's connection");
                mine.push((done.position, payload));
            }
            mine
        });
    }
    let mut published = Vec::new();
    while let Some(mine) = tasks.join_next().await {
        let mine = mine.unwrap();
        // One caller's publications, made one after another, keep their order.
        assert!(mine.windows(2).all(|w| w[0].0.offset < w[1].0.offset));
        published.extend(mine);
    }
    let total = TASKS * EACH;
    let calls = script_calls(&server);
    assert!(
        calls < total as u64,
        "{calls} script calls for {total} publications: nothing was batched"
    );
    eprintln!("{total} durable publications in {calls} script calls");

    // Offsets 1..=total, each handed out once, all in one epoch.
    published.sort_by_key(|(position, _)| position.offset);
    let offsets: Vec<u64> = published.iter().map(|(p, _)| p.offset).collect();
    assert_eq!(offsets, (1..=total as u64).collect::<Vec<_>>());
    let epoch = &published[0].0.epoch;
    assert!(published.iter().all(|(p, _)| &p.epoch == epoch));
    // The stream holds them in offset order, each with its caller's payload.
    let page = hub
        .history("batched", &HistoryRequest::default(), Duration::ZERO)
        .await
        .unwrap();
    let expected: Vec<(u64, String)> = published
        .iter()
        .map(|(p, payload)| (p.offset, payload.clone()))
        .collect();
    assert_eq!(payloads(&page), expected);
    // A subscriber receives them live in offset order, each in its envelope.
    for (position, payload) in &published {
        let live = next_message(&mut consumer).await;
        let envelope = LiveEnvelope::parse(live.payload.as_bytes()).expect("an envelope");
        assert_eq!(&envelope.position, position);
        assert_eq!(envelope.payload, payload.as_bytes());
    }
}

/// The payloads of each durable-publish script call in `SLOWLOG`, oldest first: an
/// `EVALSHA`/`EVAL` carries ten arguments besides its payloads (command, script, key count,
/// two keys, five options); `SLOWLOG` shows 31 arguments and then `... (N more
/// arguments)`.
fn publications_per_call(server: &RedisServer) -> Vec<usize> {
    let redis::Value::Array(entries) = server.cmd(&["SLOWLOG", "GET", "1000"]) else {
        panic!("SLOWLOG GET answers an array");
    };
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        other => format!("{other:?}"),
    };
    let mut per_call: Vec<usize> = entries
        .iter()
        .rev()
        .filter_map(|entry| {
            let redis::Value::Array(fields) = entry else {
                return None;
            };
            let redis::Value::Array(args) = &fields[3] else {
                return None;
            };
            let command = text(&args[0]).to_ascii_lowercase();
            if command != "evalsha" && command != "eval" {
                return None;
            }
            let last = text(args.last().unwrap());
            let argc = match last.strip_prefix("... (") {
                Some(rest) => {
                    let more: usize = rest.split(' ').next().unwrap().parse().unwrap();
                    args.len() - 1 + more
                }
                None => args.len(),
            };
            Some(argc.saturating_sub(10))
        })
        .collect();
    per_call.retain(|&n| n > 0);
    per_call
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_batches_keep_their_bounds_with_many_callers_at_once() {
    use pubsub_hub::history::{BATCH_MAX_PUBLICATIONS, PUBLISH_BATCH_SCRIPT, PUBLISH_SCRIPT};
    const CALLERS: usize = 300;
    let server = RedisServer::start();
    let hub = hub(&server).await;
    // The server knows both scripts, so that no call below is an `EVALSHA` refused with
    // `NOSCRIPT` and sent again (the hub learns a script's SHA once per process).
    for script in [PUBLISH_SCRIPT, PUBLISH_BATCH_SCRIPT] {
        server.cmd(&["SCRIPT", "LOAD", script]);
    }
    server.cmd(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]);
    server.cmd(&["CONFIG", "SET", "slowlog-max-len", "1000"]);
    server.cmd(&["SLOWLOG", "RESET"]);
    // Hold the first call in flight (Redis postpones scripts while writes are paused), so
    // that every other caller is queued behind it before anything goes out.
    server.cmd(&["CLIENT", "PAUSE", "10000", "WRITE"]);
    // Fewer kept than a batch holds: each batch's trim keeps exactly the last 10.
    let options = opts(10);
    let calls: Vec<_> = (0..CALLERS)
        .map(|i| {
            let hub = hub.clone();
            let options = options.clone();
            async move {
                hub.publish_with_history("many", format!("m{i}").as_bytes(), &options)
                    .await
            }
        })
        .collect();
    let all = tokio::spawn(futures_util::future::join_all(calls));
    one_call_held(&server).await;
    // join_all queues every caller in its first poll, which has long ended by now.
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.cmd(&["CLIENT", "UNPAUSE"]);
    let results = tokio::time::timeout(WAIT, all).await.unwrap().unwrap();
    let mut offsets: Vec<u64> = results
        .into_iter()
        .map(|r| r.unwrap().position.offset)
        .collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (1..=CALLERS as u64).collect::<Vec<_>>());
    // (Read before the history read below adds a script call of its own.)
    let per_call = publications_per_call(&server);
    let kept = hub
        .history("many", &HistoryRequest::default(), Duration::ZERO)
        .await
        .unwrap();
    let kept: Vec<u64> = kept.publications.iter().map(|(o, _)| *o).collect();
    assert_eq!(
        kept,
        (CALLERS as u64 - 9..=CALLERS as u64).collect::<Vec<_>>()
    );
    eprintln!("publications per script call: {per_call:?}");
    assert_eq!(per_call.iter().sum::<usize>(), CALLERS, "{per_call:?}");
    assert!(
        per_call.iter().all(|&n| n <= BATCH_MAX_PUBLICATIONS),
        "{per_call:?}"
    );
    // The callers queued behind the held call filled whole batches.
    assert!(
        per_call
            .iter()
            .filter(|&&n| n == BATCH_MAX_PUBLICATIONS)
            .count()
            >= 3,
        "{per_call:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_batch_fails_whole_when_redis_is_killed() {
    use pubsub_hub::HubConfig;
    const QUEUED: usize = 10;
    let timeout = Duration::from_secs(1);
    let mut server = RedisServer::start();
    let hub =
        crate::util::hub_with(&server, HubConfig::default().with_command_timeout(timeout)).await;
    let options = opts(100);
    hub.publish_with_history("doomed", b"first", &options)
        .await
        .unwrap();
    // One call in flight, held by the pause; QUEUED callers behind it form the next batch.
    let (held, mut queued) = hold_one_and_queue(&server, &hub, "doomed", &options, QUEUED).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let killed = tokio::time::Instant::now();
    server.stop();
    let held = tokio::time::timeout(WAIT, held).await.unwrap().unwrap();
    assert!(held.unwrap_err().is_unavailable());
    let mut errors = Vec::new();
    while let Some(joined) = tokio::time::timeout(WAIT, queued.join_next())
        .await
        .expect("every queued caller answers")
    {
        let (result, at) = joined.unwrap();
        let error = result.expect_err("Redis is gone");
        assert!(error.is_unavailable(), "{error}");
        assert!(
            at.duration_since(killed) < timeout + Duration::from_millis(500),
            "answered {:?} after the kill",
            at.duration_since(killed)
        );
        errors.push(error.to_string());
    }
    assert_eq!(errors.len(), QUEUED);
    // They went out together, so they share one error.
    assert!(errors.windows(2).all(|w| w[0] == w[1]), "{errors:?}");

    // The next batch tries again, and works once Redis is back (a new epoch: nothing was
    // persisted).
    server.start_again();
    let again = tokio::time::timeout(WAIT, async {
        loop {
            match hub.publish_with_history("doomed", b"again", &options).await {
                Ok(done) => return done,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .expect("publishes again once Redis is back");
    assert_eq!(again.position.offset, 1);

    // Killed under a steady load of 16 publishers, whatever batch is in flight: every
    // publisher's last call fails within the time-out.
    let published = Arc::new(AtomicU64::new(0));
    let mut publishers = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let hub = hub.clone();
        let options = options.clone();
        let published = Arc::clone(&published);
        publishers.spawn(async move {
            loop {
                match hub.publish_with_history("doomed", b"load", &options).await {
                    Ok(_) => published.fetch_add(1, Ordering::Relaxed),
                    Err(e) => return (e, tokio::time::Instant::now()),
                };
            }
        });
    }
    eventually("the publishers are under way", || {
        let n = published.load(Ordering::Relaxed);
        async move { n >= 200 }
    })
    .await;
    let killed = tokio::time::Instant::now();
    server.stop();
    while let Some(joined) = tokio::time::timeout(WAIT, publishers.join_next())
        .await
        .expect("every publisher's call answers")
    {
        let (error, at) = joined.unwrap();
        assert!(error.is_unavailable(), "{error}");
        assert!(
            at.duration_since(killed) < timeout + Duration::from_millis(500),
            "failed {:?} after the kill",
            at.duration_since(killed)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_history_batch_times_out_whole() {
    use pubsub_hub::HubConfig;
    const QUEUED: usize = 10;
    let timeout = Duration::from_millis(500);
    let server = RedisServer::start();
    let hub =
        crate::util::hub_with(&server, HubConfig::default().with_command_timeout(timeout)).await;
    let options = opts(100);
    hub.publish_with_history("stalled", b"first", &options)
        .await
        .unwrap();
    // Redis stalls the scripts (writes paused): the call in flight times out, then the
    // batch of QUEUED behind it goes out and times out as one.
    let started = tokio::time::Instant::now();
    let (held, mut queued) = hold_one_and_queue(&server, &hub, "stalled", &options, QUEUED).await;
    let held = tokio::time::timeout(WAIT, held).await.unwrap().unwrap();
    assert!(held.unwrap_err().is_timeout());
    let mut errors = Vec::new();
    while let Some(joined) = tokio::time::timeout(WAIT, queued.join_next())
        .await
        .expect("every queued caller answers")
    {
        let error = joined.unwrap().0.expect_err("Redis is stalled");
        assert!(error.is_timeout(), "{error}");
        errors.push(error.to_string());
    }
    // Each waited for the call ahead and then for its own: two time-outs at most.
    assert!(started.elapsed() < 2 * timeout + Duration::from_millis(500));
    assert!(errors.windows(2).all(|w| w[0] == w[1]), "{errors:?}");
    // Whatever of the timed-out calls Redis still ran once it went on, it ran whole and
    // ahead of the next publication: history has no hole.
    server.cmd(&["CLIENT", "UNPAUSE"]);
    let next = tokio::time::timeout(WAIT, hub.publish_with_history("stalled", b"next", &options))
        .await
        .unwrap()
        .unwrap();
    let page = hub
        .history("stalled", &HistoryRequest::default(), Duration::ZERO)
        .await
        .unwrap();
    let kept = payloads(&page);
    assert_eq!(
        kept.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        (1..=next.position.offset).collect::<Vec<_>>()
    );
    assert_eq!(kept.last().unwrap().1, "next");
    eprintln!("{} of the timed-out publications ran", kept.len() - 2);
}

/// What [`hold_one_and_queue`] leaves running: the held call, and the queued callers, each
/// answering with its result and when it got it.
type HeldAndQueued = (
    tokio::task::JoinHandle<Result<DurablePublish, HubError>>,
    tokio::task::JoinSet<(Result<DurablePublish, HubError>, tokio::time::Instant)>,
);

/// Pauses Redis' writes (`CLIENT PAUSE ... WRITE`) so that one durable publish to `channel`
/// (`held`) stays in flight, then starts `n` more (`q0`, `q1`, ...) that queue behind it.
async fn hold_one_and_queue(
    server: &RedisServer,
    hub: &PubSubHub,
    channel: &str,
    options: &HistoryOptions,
    n: usize,
) -> HeldAndQueued {
    server.cmd(&["CLIENT", "PAUSE", "10000", "WRITE"]);
    let held = tokio::spawn({
        let (hub, channel, options) = (hub.clone(), channel.to_owned(), options.clone());
        async move { hub.publish_with_history(&channel, b"held", &options).await }
    });
    one_call_held(server).await;
    let mut queued = tokio::task::JoinSet::new();
    for i in 0..n {
        let (hub, channel, options) = (hub.clone(), channel.to_owned(), options.clone());
        queued.spawn(async move {
            let result = hub
                .publish_with_history(&channel, format!("q{i}").as_bytes(), &options)
                .await;
            (result, tokio::time::Instant::now())
        });
    }
    (held, queued)
}
