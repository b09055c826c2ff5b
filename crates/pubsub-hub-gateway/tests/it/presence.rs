//! Presence in Redis across gateway processes: `presence` and `presence_stats` for clients
//! and the server API, join and leave pushes between processes, refresh of live entries,
//! and the expiry of a killed process's clients.

use std::time::{Duration, Instant};

use pubsub_hub::PubSubHub;
use pubsub_hub_gateway::{Gateway, GatewayConfig, NamespaceConfig, serve};
use serde_json::{Value, json};

use crate::support::*;

/// The presence expiry of these tests: short, so a killed gateway's clients leave quickly.
const TTL: Duration = Duration::from_secs(3);

fn presence_config() -> GatewayConfig {
    base_config()
        .with_presence_ttl(TTL)
        .with_namespace(
            "chat",
            NamespaceConfig::default()
                .with_presence(true)
                .with_join_leave(true),
        )
        .with_namespace("quiet", NamespaceConfig::default().with_presence(true))
}

/// A second gateway on `redis`'s server, in this runtime; stopped by its shutdown.
async fn second_gateway(redis: &redis::Client, config: GatewayConfig) -> (Gateway, String) {
    let hub = PubSubHub::with_config(redis.clone(), hub_config())
        .await
        .unwrap();
    let gateway = Gateway::new(hub, config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, gateway.clone(), std::future::pending()));
    (gateway, format!("ws://{addr}/connection/websocket"))
}

/// A gateway in a runtime of its own on another thread, so that dropping the runtime ends
/// every task of it at once without any cleanup: what a killed process leaves behind.
struct Doomed {
    runtime: Option<tokio::runtime::Runtime>,
    url: String,
}

impl Doomed {
    /// Built on a thread of its own (a runtime cannot be started from within the test's).
    fn start(redis: redis::Client, config: GatewayConfig) -> Doomed {
        let (runtime, addr) = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let addr = runtime.block_on(async move {
                let hub = PubSubHub::with_config(redis, hub_config()).await.unwrap();
                let gateway = Gateway::new(hub, config).unwrap();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                tokio::spawn(serve(listener, gateway, std::future::pending()));
                addr
            });
            (runtime, addr)
        })
        .join()
        .unwrap();
        Doomed {
            runtime: Some(runtime),
            url: format!("ws://{addr}/connection/websocket"),
        }
    }

    /// Ends every task of the gateway without letting any of them run again.
    fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Doomed {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The client ids in a `presence` result.
fn clients_of(result: &Value) -> Vec<String> {
    let mut ids: Vec<String> = result["presence"]
        .as_object()
        .unwrap_or_else(|| panic!("no presence map in {result}"))
        .keys()
        .cloned()
        .collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test]
async fn clients_on_two_gateways_see_each_other_and_their_joins_and_leaves() {
    let a = TestGateway::start(presence_config()).await;
    let (b_gateway, b_url) = second_gateway(&a.redis.client(), presence_config()).await;

    let mut on_a = WsClient::open(&a.ws_url()).await;
    let connected = on_a.connect("").await;
    let a_id = connected["connect"]["client"].as_str().unwrap().to_owned();
    let sub = on_a.subscribe("chat:room").await;
    assert!(sub.get("subscribe").is_some(), "{sub}");
    // Its own join comes first.
    let join = on_a.push().await;
    assert_eq!(join["channel"], json!("chat:room"), "{join}");
    assert_eq!(join["join"]["info"]["client"], json!(a_id), "{join}");

    let mut on_b = WsClient::open(&b_url).await;
    let bob = token(json!({"sub": "bob", "exp": now() + 600, "info": {"name": "Bob"}}));
    let connected = on_b.connect(&bob).await;
    let b_id = connected["connect"]["client"].as_str().unwrap().to_owned();
    on_b.subscribe("chat:room").await;

    // A (on the other process) is told that bob joined, with his connection info.
    let join = on_a.push().await;
    assert_eq!(
        join,
        json!({"channel": "chat:room", "join": {"info": {
            "client": b_id, "user": "bob", "conn_info": {"name": "Bob"}}}}),
    );

    // Both processes list both clients.
    for c in [&mut on_a, &mut on_b] {
        let reply = c.call("presence", json!({"channel": "chat:room"})).await;
        assert_eq!(
            clients_of(&reply["presence"]),
            sorted(vec![a_id.clone(), b_id.clone()]),
            "{reply}"
        );
        assert_eq!(
            reply["presence"]["presence"][&b_id],
            json!({"client": b_id, "user": "bob", "conn_info": {"name": "Bob"}})
        );
        let stats = c
            .call("presence_stats", json!({"channel": "chat:room"}))
            .await;
        assert_eq!(
            stats["presence_stats"],
            json!({"num_clients": 2, "num_users": 2}),
            "{stats}"
        );
    }
    // The server API answers the same, through either process.
    let (status, body) = api(a.addr, "presence", json!({"channel": "chat:room"})).await;
    assert_eq!(status, 200);
    assert_eq!(
        clients_of(&body["result"]),
        sorted(vec![a_id.clone(), b_id.clone()])
    );
    let (_, stats) = api(a.addr, "presence_stats", json!({"channel": "chat:room"})).await;
    assert_eq!(stats, json!({"result": {"num_clients": 2, "num_users": 2}}));

    // Bob unsubscribes: A gets the leave and the presence shrinks.
    let unsub = on_b
        .call("unsubscribe", json!({"channel": "chat:room"}))
        .await;
    assert!(unsub.get("unsubscribe").is_some(), "{unsub}");
    let leave = on_a.push().await;
    assert_eq!(leave["leave"]["info"]["client"], json!(b_id), "{leave}");
    assert_eq!(leave["leave"]["info"]["user"], json!("bob"));
    let reply = on_a.call("presence", json!({"channel": "chat:room"})).await;
    assert_eq!(clients_of(&reply["presence"]), vec![a_id.clone()]);

    // Bob subscribes again and disconnects: the leave of a closed connection.
    on_b.subscribe("chat:room").await;
    assert_eq!(on_a.push().await["join"]["info"]["client"], json!(b_id));
    drop(on_b);
    let leave = on_a.push().await;
    assert_eq!(leave["leave"]["info"]["client"], json!(b_id), "{leave}");
    let reply = on_a.call("presence", json!({"channel": "chat:room"})).await;
    assert_eq!(clients_of(&reply["presence"]), vec![a_id]);
    b_gateway.shutdown().await;
}

#[tokio::test]
async fn a_killed_gateways_clients_leave_presence_within_the_expiry() {
    let a = TestGateway::start(presence_config()).await;
    let mut doomed = Doomed::start(a.redis.client(), presence_config());
    let mut on_a = a.client().await;
    on_a.subscribe("quiet:room").await;
    let mut on_doomed = Vec::new();
    for _ in 0..3 {
        let mut c = WsClient::open(&doomed.url).await;
        c.connect("").await;
        let sub = c.subscribe("quiet:room").await;
        assert!(sub.get("subscribe").is_some(), "{sub}");
        on_doomed.push(c);
    }
    // All four present. On a loaded machine a refresh can come late enough for an entry to
    // expire meanwhile; the next refresh adds it again, so this waits for the fact.
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = on_a
            .call("presence_stats", json!({"channel": "quiet:room"}))
            .await;
        if stats["presence_stats"]["num_clients"] == json!(4) {
            break;
        }
        assert!(Instant::now() < deadline, "never four present: {stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    doomed.kill();
    let killed_at = Instant::now();
    // Nothing cleaned up: the entries are still there right after the kill...
    let stats = on_a
        .call("presence_stats", json!({"channel": "quiet:room"}))
        .await;
    assert_eq!(stats["presence_stats"]["num_clients"], json!(4), "{stats}");
    // ...and gone once they expire (within the expiry, plus a margin for a loaded machine).
    let deadline = killed_at + TTL + Duration::from_secs(3);
    loop {
        let stats = on_a
            .call("presence_stats", json!({"channel": "quiet:room"}))
            .await;
        if stats["presence_stats"]["num_clients"] == json!(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {stats} {:?} after the kill",
            killed_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        killed_at.elapsed() >= TTL - Duration::from_millis(500),
        "gone after {:?}, before the expiry: something removed them",
        killed_at.elapsed()
    );
    drop(on_doomed);
}

/// The next push of `c` that is a leave, with the client id it names (joins and
/// publications before it are skipped).
async fn next_leave(c: &mut WsClient) -> String {
    loop {
        let push = c.push().await;
        if let Some(client) = push["leave"]["info"]["client"].as_str() {
            return client.to_owned();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateways_clients_are_announced_as_leaving_once_on_every_other_process() {
    let a = TestGateway::start(presence_config()).await;
    let (b_gateway, b_url) = second_gateway(&a.redis.client(), presence_config()).await;
    let mut doomed = Doomed::start(a.redis.client(), presence_config());
    let mut on_a = a.client().await;
    on_a.subscribe("chat:k").await;
    let mut on_b = WsClient::open(&b_url).await;
    on_b.connect("").await;
    on_b.subscribe("chat:k").await;
    let mut doomed_ids = Vec::new();
    let mut on_doomed = Vec::new();
    for _ in 0..3 {
        let mut c = WsClient::open(&doomed.url).await;
        let reply = c.connect("").await;
        doomed_ids.push(reply["connect"]["client"].as_str().unwrap().to_owned());
        assert!(c.subscribe("chat:k").await.get("subscribe").is_some());
        on_doomed.push(c);
    }
    // Both watchers have seen every join (A's own, B's and the three doomed clients').
    for watcher in [&mut on_a, &mut on_b] {
        let mut joined = Vec::new();
        while !doomed_ids.iter().all(|id| joined.contains(id)) {
            let push = watcher.push().await;
            if let Some(id) = push["join"]["info"]["client"].as_str() {
                joined.push(id.to_owned());
            }
        }
    }

    doomed.kill();
    let killed_at = Instant::now();
    // Each watcher, on its own process, is told of each doomed client's leave: once the
    // entries expire, the next refresh on the channel removes and announces them.
    for watcher in [&mut on_a, &mut on_b] {
        let mut left = Vec::new();
        while left.len() < doomed_ids.len() {
            let id = next_leave(watcher).await;
            assert!(
                doomed_ids.contains(&id),
                "leave of {id}, not a doomed client"
            );
            assert!(!left.contains(&id), "two leaves of {id}");
            if left.is_empty() {
                assert!(
                    killed_at.elapsed() >= TTL - Duration::from_millis(500),
                    "a leave {:?} after the kill, before the expiry",
                    killed_at.elapsed()
                );
            }
            left.push(id);
        }
    }
    // Four thirds of the expiry at most (it expires, then a refresh comes within a third),
    // plus a margin for a loaded machine.
    assert!(
        killed_at.elapsed() < TTL * 4 / 3 + Duration::from_secs(3),
        "leaves announced {:?} after the kill",
        killed_at.elapsed()
    );
    // No second leave later: after several more refreshes on both processes, the next push
    // on each watcher is a marker publication.
    tokio::time::sleep(TTL).await;
    let (status, _) = api(
        a.addr,
        "publish",
        json!({"channel": "chat:k", "data": {"marker": true}}),
    )
    .await;
    assert_eq!(status, 200);
    for watcher in [&mut on_a, &mut on_b] {
        let push = watcher.push().await;
        assert_eq!(push["pub"]["data"], json!({"marker": true}), "{push}");
        let stats = watcher
            .call("presence_stats", json!({"channel": "chat:k"}))
            .await;
        assert_eq!(stats["presence_stats"]["num_clients"], json!(2), "{stats}");
    }
    drop(on_doomed);
    b_gateway.shutdown().await;
}

#[tokio::test]
async fn live_clients_stay_present_past_the_expiry_because_they_refresh() {
    let gw = TestGateway::start(presence_config()).await;
    let mut c = gw.client().await;
    c.subscribe("quiet:long").await;
    // Three expiries: an entry that was not refreshed would be gone twice over.
    let until = Instant::now() + TTL * 3;
    while Instant::now() < until {
        let stats = c
            .call("presence_stats", json!({"channel": "quiet:long"}))
            .await;
        assert_eq!(
            stats["presence_stats"],
            json!({"num_clients": 1, "num_users": 1})
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn presence_answers_follow_the_namespace_and_the_subscription() {
    let gw = TestGateway::start(presence_config()).await;
    let mut c = gw.client().await;
    // No presence in channels without a namespace here: "not available".
    c.subscribe("plain").await;
    let reply = c.call("presence", json!({"channel": "plain"})).await;
    assert_eq!(reply["error"]["code"], json!(108), "{reply}");
    // Presence on, but not subscribed: "permission denied".
    let reply = c.call("presence", json!({"channel": "quiet:x"})).await;
    assert_eq!(reply["error"]["code"], json!(103), "{reply}");
    let reply = c
        .call("presence_stats", json!({"channel": "quiet:x"}))
        .await;
    assert_eq!(reply["error"]["code"], json!(103), "{reply}");
    // Unknown namespace.
    let reply = c.call("presence", json!({"channel": "nope:x"})).await;
    assert_eq!(reply["error"]["code"], json!(102), "{reply}");
    // A channel with presence but no join_leave gets no join pushes: the next line after
    // the subscribe reply is the reply to the ping.
    c.subscribe("quiet:x").await;
    let id = c.send("ping", json!({})).await;
    let next = c.next().await;
    assert_eq!(next["id"], json!(id), "{next}");
    // The server API: not available, unknown channel, bad body.
    let (_, body) = api(gw.addr, "presence", json!({"channel": "plain"})).await;
    assert_eq!(body["error"]["code"], json!(108), "{body}");
    let (_, body) = api(gw.addr, "presence_stats", json!({"channel": "nope:x"})).await;
    assert_eq!(body["error"]["code"], json!(102), "{body}");
    let (status, _) = http(
        gw.addr,
        "POST",
        "/api/presence",
        &[("X-API-Key", API_KEY)],
        "[1]",
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn junk_on_a_companion_channel_reaches_nobody() {
    let gw = TestGateway::start(presence_config()).await;
    let mut c = gw.client().await;
    c.subscribe("chat:j").await;
    assert!(c.push().await.get("join").is_some());
    let companion = pubsub_hub_gateway::presence::join_leave_channel("chat:j");
    gw.redis_publish(&companion, b"not an event").await;
    gw.redis_publish(&companion, br#"{"join":{"user":"x"}}"#)
        .await;
    gw.redis_publish("chat:j", b"\"after\"").await;
    let next = c.push().await;
    assert_eq!(next["pub"]["data"], json!("after"), "{next}");
}

#[tokio::test]
async fn server_side_subscriptions_enter_presence_too() {
    let gw = TestGateway::start(presence_config()).await;
    let mut watcher = gw.client().await;
    watcher.subscribe("chat:s").await;
    assert!(watcher.push().await.get("join").is_some());
    let mut c = WsClient::open(&gw.ws_url()).await;
    let t = token(json!({"sub": "carol", "exp": now() + 600, "channels": ["chat:s"]}));
    let reply = c.connect(&t).await;
    assert!(reply["connect"]["subs"].get("chat:s").is_some(), "{reply}");
    let join = watcher.push().await;
    assert_eq!(join["join"]["info"]["user"], json!("carol"), "{join}");
    let stats = watcher
        .call("presence_stats", json!({"channel": "chat:s"}))
        .await;
    assert_eq!(
        stats["presence_stats"],
        json!({"num_clients": 2, "num_users": 2})
    );
}

#[tokio::test]
async fn dropped_store_calls_leave_the_two_keys_in_agreement() {
    use pubsub_hub_gateway::features::{PresenceEntry, PresenceStore};
    use pubsub_hub_gateway::presence::{RedisPresence, presence_keys};
    let redis = pubsub_hub_testkit::RedisServer::start();
    let store = RedisPresence::new(redis.client(), Duration::from_secs(30));
    let entries: Vec<PresenceEntry> = (0..8)
        .map(|i| PresenceEntry::new(format!("c{i}"), format!("u{}", i % 3)))
        .collect();
    // Each call is cut after a growing delay: before connecting, while the script is in
    // flight, or after it ran. Whatever the cut, a script ran whole or not at all.
    for round in 0..60u64 {
        let entry = &entries[(round % 8) as usize];
        let cut = Duration::from_micros(round * 40);
        if round % 3 == 2 {
            let _ = tokio::time::timeout(cut, store.remove("ch", &entry.client)).await;
        } else {
            let _ = tokio::time::timeout(cut, store.add("ch", entry)).await;
        }
    }
    let listed = store.presence("ch").await.unwrap();
    let mut conn = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let (expiry, clients) = presence_keys("ch");
    let in_zset: Vec<String> = redis::cmd("ZRANGE")
        .arg(&expiry)
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut in_hash: Vec<String> = redis::cmd("HKEYS")
        .arg(&clients)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut in_zset = in_zset;
    in_zset.sort();
    in_hash.sort();
    assert_eq!(in_zset, in_hash, "the expiry set and the hash disagree");
    let names: Vec<String> = listed.iter().map(|e| e.client.clone()).collect();
    assert_eq!(names, in_hash);
    // And the store still works normally afterwards.
    store.add("ch", &entries[0]).await.unwrap();
    store.remove("ch", &entries[0].client).await.unwrap();
    assert!(
        store
            .presence("ch")
            .await
            .unwrap()
            .iter()
            .all(|e| e.client != "c0")
    );
}

#[tokio::test]
async fn the_add_that_removes_expired_entries_reports_them_once() {
    use pubsub_hub_gateway::features::{PresenceEntry, PresenceStore};
    use pubsub_hub_gateway::presence::RedisPresence;
    let redis = pubsub_hub_testkit::RedisServer::start();
    let ttl = Duration::from_secs(1);
    let store = RedisPresence::new(redis.client(), ttl);
    let old = [
        PresenceEntry::new("c1", "u1"),
        PresenceEntry::new("c2", "u2"),
    ];
    for entry in &old {
        let added = store.add("ch", entry).await.unwrap();
        assert!(added.created && added.expired.is_empty(), "{added:?}");
    }
    // A live client refreshes (as a connection does, three times per expiry) while the two
    // others do not: its adds remove them once they expire and report each exactly once.
    let live = PresenceEntry::new("c0", "u0");
    assert!(store.add("ch", &live).await.unwrap().created);
    let mut reported = Vec::new();
    let deadline = Instant::now() + WAIT;
    while reported.len() < old.len() {
        assert!(Instant::now() < deadline, "only {reported:?} reported");
        tokio::time::sleep(ttl / 3).await;
        let added = store.add("ch", &live).await.unwrap();
        assert!(!added.created, "a refresh of a live entry is not new");
        reported.extend(added.expired);
    }
    reported.sort_by(|a, b| a.client.cmp(&b.client));
    assert_eq!(reported, old.to_vec());
    let listed: Vec<String> = (store.presence("ch").await.unwrap())
        .into_iter()
        .map(|e| e.client)
        .collect();
    assert_eq!(listed, ["c0"]);
    // Nothing is reported twice, and a client whose entry was removed comes back as new
    // (so its join is announced again).
    let again = store.add("ch", &live).await.unwrap();
    assert!(again.expired.is_empty(), "{again:?}");
    let back = store.add("ch", &old[0]).await.unwrap();
    assert!(back.created && back.expired.is_empty(), "{back:?}");
    let listed: Vec<String> = store
        .presence("ch")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.client)
        .collect();
    assert_eq!(listed, ["c0", "c1"]);
}

#[tokio::test]
async fn through_a_redis_outage_presence_fails_cleanly_and_comes_back() {
    let mut gw = TestGateway::start(presence_config()).await;
    let mut c = gw.client().await;
    for i in 0..5 {
        c.subscribe(&format!("quiet:{i}")).await;
    }
    gw.redis.stop();
    // Every channel is lost; the client is told about each within the usual bound (the
    // failed presence removals do not queue up behind each other).
    let started = Instant::now();
    for _ in 0..5 {
        let push = c.push().await;
        assert_eq!(push["unsubscribe"]["code"], json!(2500), "{push}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "told after {:?}",
        started.elapsed()
    );
    // Presence while Redis is away: an error reply, not a hang (the client is not
    // subscribed any more, so this is permission denied; the API asks the store).
    let (status, body) = api(gw.addr, "presence", json!({"channel": "quiet:0"})).await;
    assert_eq!(status, 200);
    assert_eq!(body["error"]["code"], json!(100), "{body}");
    gw.redis.start_again();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = c.subscribe("quiet:0").await;
        if reply.get("subscribe").is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "Redis never came back: {reply}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Once Redis is back, presence works again (the connection's failure memory is short).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = c
            .call("presence_stats", json!({"channel": "quiet:0"}))
            .await;
        if stats["presence_stats"]["num_clients"] == json!(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "presence never came back: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
