//! `/state` built once per hub version, and `/events` deltas: each one matches the
//! `StateDelta` schema of `/openapi.json`, applies to the document the stream sent before,
//! and the result equals `/state`.

use crate::util::{Dashboard, WAIT, apply_delta, sub, sub_names, wait_state};
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use pubsub_hub_web::ApiDoc;
use serde_json::{Value, json};
use tower::ServiceExt;
use utoipa::OpenApi;

/// How many PUBSUB round trips (document builds) the dashboard made, from `/metrics`.
async fn builds(d: &Dashboard) -> f64 {
    let text = d.get("/metrics").await.text();
    text.lines()
        .filter(|l| {
            l.starts_with("pubsub_hub_redis_command_duration_seconds_count")
                && l.contains("command=\"introspect\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_built_once_per_hub_version_and_shared() {
    let d = Dashboard::start().await;
    let first = d.get("/state").await;
    assert_eq!(first.header("content-type"), Some("application/json"));
    let before = builds(&d).await;
    assert!(before >= 1.0, "the first read built it");

    // Twenty readers of an unchanged hub: the same bytes, and at most one more build (the
    // one-second age may run out once on a slow machine).
    let readers: Vec<_> = (0..20).map(|_| d.get("/state")).collect();
    for reply in futures_util::future::join_all(readers).await {
        assert_eq!(reply.text(), first.text());
    }
    assert!(
        builds(&d).await - before <= 1.0,
        "shared, not rebuilt per reader"
    );

    // A change is seen at once: a new version and the new message.
    d.hub.publish("orders:new", &json!({"n": 1})).await.unwrap();
    wait_state(&d, WAIT, "the message is shown", |s| {
        sub(s, "orders-listener")["messages"]
            .as_array()
            .is_some_and(|m| m.len() == 1)
    })
    .await;
    let state = d.state().await;
    assert!(state["version"].as_u64() > first.json()["version"].as_u64());
    assert_eq!(state["stats"]["published_total"], 1);
}

/// The `/events` body, event by event.
struct Events {
    body: Body,
    text: String,
}

impl Events {
    async fn open(d: &Dashboard) -> Events {
        let response = d
            .app
            .clone()
            .oneshot(Request::get("/events").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        Events {
            body: response.into_body(),
            text: String::new(),
        }
    }

    /// The next event's name and data.
    async fn next(&mut self) -> (String, Value) {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(end) = self.text.find("\n\n") {
                    let block: String = self.text.drain(..end + 2).collect();
                    let mut name = String::new();
                    let mut data = None;
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("event: ") {
                            name = v.to_owned();
                        } else if let Some(v) = line.strip_prefix("data: ") {
                            data = Some(serde_json::from_str(v).expect("JSON data"));
                        }
                    }
                    if let Some(data) = data {
                        return (name, data);
                    }
                    continue;
                }
                let frame = self.body.frame().await.expect("a frame").expect("readable");
                if let Ok(bytes) = frame.into_data() {
                    self.text.push_str(std::str::from_utf8(&bytes).unwrap());
                }
            }
        })
        .await
        .expect("an event in time")
    }
}

/// What is wrong with `value` under the component schema `name`.
fn schema_errors(name: &str, value: &Value) -> Vec<String> {
    let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
    let schema = json!({
        "$ref": format!("#/components/schemas/{name}"),
        "components": doc["components"].clone(),
    });
    let validator = jsonschema::draft202012::new(&schema).expect("a valid schema");
    validator
        .iter_errors(value)
        .map(|e| e.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_match_their_schema_and_rebuild_the_state() {
    let d = Dashboard::start().await;
    let mut events = Events::open(&d).await;
    let (name, mut doc) = events.next().await;
    assert_eq!(name, "state");

    // Changes of every kind, each followed by the deltas it causes.
    let changes: [(&str, &str); 5] = [
        ("/publish", "channel=orders%3Anew&message=one&count=3"),
        ("/subscribe", "name=watcher&kind=pattern&target=orders%3A*"),
        ("/publish", "channel=orders%3Anew&message=two"),
        ("/unsubscribe", "name=billing-listener"),
        ("/publish", "channel=notifications%3Ax&message=three"),
    ];
    let mut kinds = (false, false, false);
    for (path, form) in changes {
        let reply = d.post_form(path, form).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        let target = reply.json();
        let target = target.get("state").unwrap_or(&target).clone();
        // Deltas until the copy has caught up with the answer's state.
        while doc["version"].as_u64() < target["version"].as_u64() {
            let (name, delta) = events.next().await;
            assert_eq!(name, "delta", "one whole state per stream");
            assert_eq!(
                schema_errors("StateDelta", &delta),
                Vec::<String>::new(),
                "{delta}"
            );
            for entry in delta["subscriptions"].as_array().unwrap() {
                kinds.0 |= entry.get("messages_new").is_some();
                kinds.1 |= entry.get("messages").is_some();
            }
            kinds.2 |= !delta["removed"].as_array().unwrap().is_empty();
            apply_delta(&mut doc, &delta);
            assert_eq!(schema_errors("StateDocument", &doc), Vec::<String>::new());
        }
    }
    assert_eq!(
        kinds,
        (true, true, true),
        "changed, added and removed subscribers seen"
    );

    // The hub comes to rest: then the copy equals /state, field for field.
    loop {
        let state = d.state().await;
        if state["version"] == doc["version"] {
            assert_eq!(doc, state);
            break;
        }
        let (name, delta) = events.next().await;
        assert_eq!(name, "delta");
        apply_delta(&mut doc, &delta);
    }
    assert_eq!(
        sub_names(&doc),
        ["all-notifications", "orders-listener", "watcher"]
    );
}
