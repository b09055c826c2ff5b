//! History and recovery against private Redis servers: offsets on live publications,
//! recovery of 1,000 missed publications, reconnects under a steady publish rate with no
//! loss and no duplicate, a new epoch after a Redis restart, a second gateway taking over a
//! client, positioning after a hole in offsets, the history command and API, and a
//! namespace keeping both history and presence.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use pubsub_hub::PubSubHub;
use pubsub_hub_gateway::{Gateway, GatewayConfig, NamespaceConfig, PublishPolicy, serve};
use serde_json::{Value, json};

use crate::support::*;

/// `chat:` keeps 20,000 publications for five minutes; clients may publish there.
fn history_config() -> GatewayConfig {
    base_config().with_namespace(
        "chat",
        NamespaceConfig::default()
            .with_history(20_000, Duration::from_secs(300))
            .with_publish(PublishPolicy::Any),
    )
}

/// Subscribes `channel` as a recoverable subscription, recovering from `from` when given;
/// retries temporary errors (Redis coming back). Returns the subscribe result.
async fn subscribe_recover(c: &mut WsClient, channel: &str, from: Option<&(u64, String)>) -> Value {
    let mut params = json!({"channel": channel, "recoverable": true});
    if let Some((offset, epoch)) = from {
        params["recover"] = json!(true);
        params["offset"] = json!(offset);
        params["epoch"] = json!(epoch);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let reply = c.call("subscribe", params.clone()).await;
        if let Some(result) = reply.get("subscribe") {
            return result.clone();
        }
        assert_eq!(reply["error"]["temporary"], json!(true), "{reply}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "never subscribed: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn offset_of(publication: &Value) -> u64 {
    publication["offset"]
        .as_u64()
        .unwrap_or_else(|| panic!("no offset in {publication}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_away_during_1000_publications_recovers_exactly_those_then_live() {
    let gw = TestGateway::start(history_config()).await;
    let mut c = gw.client().await;
    let first = subscribe_recover(&mut c, "chat:room", None).await;
    assert_eq!(first["recoverable"], json!(true));
    assert_eq!(first["positioned"], json!(true));
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    assert_eq!(epoch.len(), 16, "{first}");

    let done = gw.gateway.publish("chat:room", b"{\"n\":1}").await.unwrap();
    assert_eq!((done.offset, done.epoch.as_str()), (1, epoch.as_str()));
    let live = c.push().await;
    assert_eq!(live["pub"], json!({"data": {"n": 1}, "offset": 1}));
    drop(c);

    // 1,000 publications while the client is away, eight in flight at a time.
    let gateway = gw.gateway.clone();
    futures_util::stream::iter(2..=1001u64)
        .map(|n| {
            let gateway = gateway.clone();
            async move {
                gateway
                    .publish("chat:room", format!("{{\"n\":{n}}}").as_bytes())
                    .await
                    .unwrap()
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;

    let mut c = gw.client().await;
    let result = subscribe_recover(&mut c, "chat:room", Some(&(1, epoch.clone()))).await;
    assert_eq!(result["recovered"], json!(true), "{result}");
    assert_eq!(result["was_recovering"], json!(true));
    assert_eq!(result["offset"], json!(1001));
    assert_eq!(result["epoch"], json!(epoch));
    let publications = result["publications"].as_array().unwrap();
    assert_eq!(publications.len(), 1000);
    for (i, p) in publications.iter().enumerate() {
        let offset = i as u64 + 2;
        assert_eq!(offset_of(p), offset, "in order");
        // Offsets are handed out in publish order; `n` was sent concurrently, so each
        // payload appears exactly once but not necessarily at offset n.
        assert!(p["data"]["n"].as_u64().is_some());
    }
    let mut ns: Vec<u64> = publications
        .iter()
        .map(|p| p["data"]["n"].as_u64().unwrap())
        .collect();
    ns.sort_unstable();
    assert_eq!(
        ns,
        (2..=1001).collect::<Vec<_>>(),
        "exactly the missed ones"
    );

    // Then live.
    gw.gateway.publish("chat:room", b"\"next\"").await.unwrap();
    assert_eq!(
        c.push().await["pub"],
        json!({"data": "next", "offset": 1002})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_under_a_steady_publish_rate_lose_and_repeat_nothing() {
    let gw = TestGateway::start(history_config()).await;
    let stop = Arc::new(AtomicBool::new(false));
    // About 1,000 publications per second until told to stop.
    let publisher = {
        let gateway = gw.gateway.clone();
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(1));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                ticker.tick().await;
                n += 1;
                let done = gateway
                    .publish("chat:steady", format!("{{\"n\":{n}}}").as_bytes())
                    .await
                    .unwrap();
                assert_eq!(done.offset, n, "one publisher: offset n carries n");
            }
            n
        })
    };

    let mut seen: Vec<u64> = Vec::new();
    let mut position: Option<(u64, String)> = None;
    let mut start = 0;
    for round in 0..100 {
        let mut c = gw.client().await;
        let result = subscribe_recover(&mut c, "chat:steady", position.as_ref()).await;
        if position.is_some() {
            assert_eq!(result["recovered"], json!(true), "round {round}: {result}");
        } else {
            // The first subscription starts from the channel's position then.
            start = result["offset"].as_u64().unwrap_or(0);
        }
        let epoch = result["epoch"].as_str().unwrap().to_owned();
        let mut check = |offset: u64, from: &str| {
            let expected = seen.last().map_or(start + 1, |l| l + 1);
            assert_eq!(
                offset,
                expected,
                "round {round}: {from} offset {offset} after {:?} (reply offset {})",
                seen.last(),
                result["offset"]
            );
            seen.push(offset);
        };
        for p in result["publications"].as_array().into_iter().flatten() {
            assert_eq!(p["data"]["n"], json!(offset_of(p)));
            check(offset_of(p), "recovered");
        }
        // A few live publications, then the connection goes away.
        for _ in 0..3 {
            let push = c.push().await;
            let p = push
                .get("pub")
                .unwrap_or_else(|| panic!("round {round}: a push that is no publication: {push}"));
            assert_eq!(p["data"]["n"], json!(offset_of(p)));
            check(offset_of(p), "live");
        }
        position = Some((*seen.last().unwrap_or(&0), epoch));
        drop(c);
    }
    stop.store(true, Ordering::Relaxed);
    let total = tokio::time::timeout(WAIT, publisher)
        .await
        .expect("the publisher stops")
        .unwrap();
    // The last reconnect recovers the rest.
    let mut c = gw.client().await;
    let result = subscribe_recover(&mut c, "chat:steady", position.as_ref()).await;
    assert_eq!(result["recovered"], json!(true), "{result}");
    for p in result["publications"].as_array().into_iter().flatten() {
        assert_eq!(offset_of(p), seen.last().unwrap() + 1, "in order, once");
        seen.push(offset_of(p));
    }
    assert_eq!(seen.first(), Some(&(start + 1)));
    assert_eq!(seen.last(), Some(&total), "up to the last publication");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_without_persistence_changes_the_epoch() {
    let mut gw = TestGateway::start(history_config()).await;
    let mut c = gw.client().await;
    let first = subscribe_recover(&mut c, "chat:r", None).await;
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    gw.gateway.publish("chat:r", b"1").await.unwrap();
    assert_eq!(offset_of(&c.push().await["pub"]), 1);

    gw.redis.restart();
    let push = c.push().await;
    assert_eq!(push["unsubscribe"]["code"], json!(2500), "{push}");
    let result = subscribe_recover(&mut c, "chat:r", Some(&(1, epoch.clone()))).await;
    assert_eq!(result["was_recovering"], json!(true));
    assert!(
        result.get("recovered").is_none(),
        "recovered: false: {result}"
    );
    assert_ne!(result["epoch"], json!(epoch), "a new epoch");
    // It starts from now: the next publication is offset 1 of the new epoch.
    gw.gateway.publish("chat:r", b"2").await.unwrap();
    assert_eq!(c.push().await["pub"], json!({"data": 2, "offset": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_a_stopped_gateway_recovers_on_the_other() {
    let mut one = TestGateway::start(history_config()).await;
    // A second gateway on the same Redis.
    let hub = PubSubHub::with_config(one.redis.client(), hub_config())
        .await
        .unwrap();
    let two = Gateway::new(hub, history_config()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let two_url = format!(
        "ws://{}/connection/websocket",
        listener.local_addr().unwrap()
    );
    tokio::spawn(serve(listener, two.clone(), std::future::pending()));

    let mut c = one.client().await;
    let first = subscribe_recover(&mut c, "chat:ha", None).await;
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    two.publish("chat:ha", b"1").await.unwrap();
    assert_eq!(offset_of(&c.push().await["pub"]), 1, "across processes");

    one.stop().await;
    assert_eq!(
        c.closed().await.code,
        3001,
        "shutdown, with reconnect advice"
    );
    for n in 2..=50 {
        two.publish("chat:ha", n.to_string().as_bytes())
            .await
            .unwrap();
    }
    let mut c = WsClient::open(&two_url).await;
    c.connect("").await;
    let result = subscribe_recover(&mut c, "chat:ha", Some(&(1, epoch))).await;
    assert_eq!(result["recovered"], json!(true), "{result}");
    let offsets: Vec<u64> = result["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(offset_of)
        .collect();
    assert_eq!(offsets, (2..=50).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hole_in_offsets_makes_a_positioned_client_recover() {
    let gw = TestGateway::start(history_config()).await;
    let mut c = gw.client().await;
    let first = subscribe_recover(&mut c, "chat:hole", None).await;
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    gw.gateway.publish("chat:hole", b"1").await.unwrap();
    assert_eq!(offset_of(&c.push().await["pub"]), 1);

    // Another Redis client stores offset 2 without publishing it (the script with an empty
    // publish command), so the gateway sees offset 3 follow offset 1.
    let (stream, meta) = pubsub_hub::history::history_keys("chat:hole");
    let mut conn = gw.redis_conn().await;
    let _: Value = redis::cmd("EVAL")
        .arg(pubsub_hub::history::PUBLISH_SCRIPT)
        .arg(2)
        .arg(&stream)
        .arg(&meta)
        .arg("\"stored\"")
        .arg(20_000)
        .arg(300)
        .arg("chat:hole")
        .arg("unused")
        .arg("")
        .query_async::<redis::Value>(&mut conn)
        .await
        .map(|v| json!(format!("{v:?}")))
        .unwrap();
    gw.gateway.publish("chat:hole", b"3").await.unwrap();
    let push = c.push().await;
    assert_eq!(push["unsubscribe"]["code"], json!(2500), "{push}");
    let result = subscribe_recover(&mut c, "chat:hole", Some(&(1, epoch))).await;
    assert_eq!(result["recovered"], json!(true), "{result}");
    assert_eq!(
        result["publications"],
        json!([{"data": "stored", "offset": 2}, {"data": 3, "offset": 3}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_command_api_and_outside_publishes() {
    let gw = TestGateway::start(history_config()).await;
    let mut c = gw.client().await;
    subscribe_recover(&mut c, "chat:h", None).await;
    // A client publish gets an offset too.
    let reply = c
        .call("publish", json!({"channel": "chat:h", "data": {"a": 1}}))
        .await;
    assert!(reply.get("publish").is_some(), "{reply}");
    assert_eq!(
        c.push().await["pub"],
        json!({"data": {"a": 1}, "offset": 1})
    );
    // The server API answers offset and epoch.
    let (status, body) = api(
        gw.addr,
        "publish",
        json!({"channel": "chat:h", "data": "b"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["result"]["offset"], json!(2), "{body}");
    let epoch = body["result"]["epoch"].as_str().unwrap().to_owned();
    assert_eq!(c.push().await["pub"]["offset"], json!(2));
    // A plain PUBLISH reaches live clients without an offset, and is not history.
    gw.redis_publish("chat:h", b"\"outside\"").await;
    assert_eq!(c.push().await["pub"], json!({"data": "outside"}));

    let history = c
        .call("history", json!({"channel": "chat:h", "limit": -1}))
        .await;
    assert_eq!(
        history["history"],
        json!({
            "publications": [{"data": {"a": 1}, "offset": 1}, {"data": "b", "offset": 2}],
            "epoch": epoch,
            "offset": 2,
        }),
        "{history}"
    );
    let newest = c
        .call(
            "history",
            json!({"channel": "chat:h", "limit": 1, "reverse": true}),
        )
        .await;
    assert_eq!(
        newest["history"]["publications"],
        json!([{"data": "b", "offset": 2}])
    );
    let since = c
        .call(
            "history",
            json!({"channel": "chat:h", "limit": 10, "since": {"offset": 1, "epoch": epoch}}),
        )
        .await;
    assert_eq!(
        since["history"]["publications"],
        json!([{"data": "b", "offset": 2}])
    );

    let (_, body) = api(
        gw.addr,
        "history",
        json!({"channel": "chat:h", "limit": -1}),
    )
    .await;
    assert_eq!(body["result"]["offset"], json!(2));
    assert_eq!(body["result"]["publications"].as_array().unwrap().len(), 2);
    // Channels without history: not available, as before.
    let (_, body) = api(gw.addr, "history", json!({"channel": "plain"})).await;
    assert_eq!(body["error"]["code"], json!(108), "{body}");
    let (_, body) = api(gw.addr, "history", json!({"channel": "nope:x"})).await;
    assert_eq!(body["error"]["code"], json!(102), "{body}");

    let (_, body) = api(gw.addr, "history_remove", json!({"channel": "chat:h"})).await;
    assert_eq!(body, json!({"result": {}}));
    let (_, body) = api(
        gw.addr,
        "history",
        json!({"channel": "chat:h", "limit": -1}),
    )
    .await;
    assert_eq!(body["result"]["publications"], json!([]));
    assert_eq!(body["result"]["offset"], json!(2), "the position stays");
    // A client behind the removed publications cannot recover them.
    let mut d = gw.client().await;
    let result = subscribe_recover(&mut d, "chat:h", Some(&(0, epoch))).await;
    assert!(result.get("recovered").is_none(), "{result}");
}

/// A raw event stream that keeps each event's `id:` (what a browser's `EventSource` keeps
/// and sends back as `Last-Event-ID`).
struct IdStream {
    reader: tokio::io::BufReader<tokio::net::TcpStream>,
}

impl IdStream {
    async fn open(
        addr: std::net::SocketAddr,
        connect: Value,
        last_event_id: Option<&str>,
    ) -> IdStream {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let query: String = connect
            .to_string()
            .bytes()
            .map(|b| format!("%{b:02X}"))
            .collect();
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let resume = last_event_id
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "GET /connection/uni_sse?cf_connect={query} HTTP/1.0\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{resume}\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut reader = tokio::io::BufReader::new(stream);
        let mut status = String::new();
        reader.read_line(&mut status).await.unwrap();
        assert!(status.contains(" 200 "), "{status}");
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        IdStream { reader }
    }

    /// The next event and the id it set (None: it set none).
    async fn next(&mut self) -> (Value, Option<String>) {
        use tokio::io::AsyncBufReadExt;
        let mut id = None;
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(WAIT, self.reader.read_line(&mut line))
                .await
                .expect("an event in time")
                .unwrap();
            assert!(n > 0, "the stream ended");
            if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.trim_end().to_owned());
            } else if let Some(data) = line.strip_prefix("data: ") {
                let value: Value = serde_json::from_str(data.trim_end()).unwrap();
                if value == json!({}) {
                    continue;
                }
                return (value, id);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_source_resumes_from_last_event_id_without_loss_or_duplicates() {
    let gw = TestGateway::start(history_config()).await;
    let connect = json!({"subs": {"chat:feed": {}}});
    let mut events = IdStream::open(gw.addr, connect.clone(), None).await;
    let (first, id) = events.next().await;
    let sub = &first["connect"]["subs"]["chat:feed"];
    assert_eq!(sub["recoverable"], json!(true), "{first}");
    let epoch = sub["epoch"].as_str().unwrap().to_owned();
    assert_eq!(id, Some(json!({"chat:feed": [0, epoch]}).to_string()));

    let mut last_id = id.unwrap();
    for n in 1..=3u64 {
        gw.gateway
            .publish("chat:feed", n.to_string().as_bytes())
            .await
            .unwrap();
        let (event, id) = events.next().await;
        assert_eq!(event["pub"], json!({"data": n, "offset": n}));
        last_id = id.expect("publication events carry an id");
        assert_eq!(last_id, json!({"chat:feed": [n, epoch]}).to_string());
    }
    drop(events);
    for n in 4..=8u64 {
        gw.gateway
            .publish("chat:feed", n.to_string().as_bytes())
            .await
            .unwrap();
    }
    // The browser's retry: same URL, the last id it saw.
    let mut events = IdStream::open(gw.addr, connect.clone(), Some(&last_id)).await;
    let (first, _) = events.next().await;
    let sub = &first["connect"]["subs"]["chat:feed"];
    assert_eq!(sub["recovered"], json!(true), "{first}");
    for n in 4..=8u64 {
        let (event, id) = events.next().await;
        assert_eq!(
            event["pub"],
            json!({"data": n, "offset": n}),
            "recovered in order"
        );
        assert_eq!(id, Some(json!({"chat:feed": [n, epoch]}).to_string()));
    }
    gw.gateway.publish("chat:feed", b"9").await.unwrap();
    let (event, _) = events.next().await;
    assert_eq!(
        event["pub"],
        json!({"data": 9, "offset": 9}),
        "then live, once"
    );

    // An id from a lost epoch: not recovered, and the stream goes on from now.
    let stale = json!({"chat:feed": [3, "0000000000000000"]}).to_string();
    let mut events = IdStream::open(gw.addr, connect, Some(&stale)).await;
    let (first, id) = events.next().await;
    let sub = &first["connect"]["subs"]["chat:feed"];
    assert!(sub.get("recovered").is_none(), "{first}");
    assert_eq!(id, Some(json!({"chat:feed": [9, epoch]}).to_string()));
    gw.gateway.publish("chat:feed", b"10").await.unwrap();
    let (event, _) = events.next().await;
    assert_eq!(event["pub"]["offset"], json!(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_with_history_and_presence_has_both() {
    let gw = TestGateway::start(
        base_config().with_namespace(
            "both",
            NamespaceConfig::default()
                .with_history(100, Duration::from_secs(300))
                .with_presence(true)
                .with_join_leave(true),
        ),
    )
    .await;
    let mut c = gw.client().await;
    let result = subscribe_recover(&mut c, "both:x", None).await;
    assert_eq!(result["recoverable"], json!(true), "{result}");
    let own = c.push().await;
    assert!(own["join"]["info"]["client"].is_string(), "own join: {own}");

    let mut d = gw.client().await;
    subscribe_recover(&mut d, "both:x", None).await;
    let joined = c.push().await;
    let d_id = joined["join"]["info"]["client"].clone();
    assert!(d_id.is_string(), "d's join: {joined}");
    let presence = c.call("presence", json!({"channel": "both:x"})).await;
    assert_eq!(
        presence["presence"]["presence"]
            .as_object()
            .map(|m| m.len()),
        Some(2),
        "{presence}"
    );

    gw.gateway.publish("both:x", b"1").await.unwrap();
    let on_c = c.push().await;
    assert_eq!(on_c["pub"], json!({"data": 1, "offset": 1}), "{on_c}");
    let own = d.push().await;
    assert_eq!(
        own["join"]["info"]["client"], d_id,
        "d's own join first: {own}"
    );
    let on_d = d.push().await;
    assert_eq!(on_d["pub"], json!({"data": 1, "offset": 1}), "{on_d}");

    d.call("unsubscribe", json!({"channel": "both:x"})).await;
    let left = c.push().await;
    assert_eq!(left["leave"]["info"]["client"], d_id, "{left}");
}
