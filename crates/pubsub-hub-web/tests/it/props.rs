//! Property tests of the parsing code: form decoding, target splitting, `count`, and the
//! whole form extractor behind a route. No input panics, and the invariants hold.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use proptest::prelude::*;
use pubsub_hub_web::form::{FormError, decode_form, encode_form, parse_count, parse_targets};
use tower::ServiceExt;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Encoding then decoding gives back exactly the pairs, whatever the text.
    #[test]
    fn forms_round_trip(pairs in prop::collection::vec((".{0,12}", ".{0,24}"), 0..6)) {
        let body = encode_form(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        prop_assert!(body.is_ascii());
        let decoded = decode_form(body.as_bytes()).unwrap();
        prop_assert_eq!(decoded, pairs);
    }

    /// Any bytes: an error or pairs that survive a round trip; never a panic.
    #[test]
    fn any_bytes_decode_or_fail_cleanly(body in prop::collection::vec(any::<u8>(), 0..96)) {
        match decode_form(&body) {
            Ok(pairs) => {
                let again = encode_form(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                prop_assert_eq!(decode_form(again.as_bytes()).unwrap(), pairs);
            }
            Err(FormError::BadPercentEncoding { .. }) => {
                prop_assert!(body.contains(&b'%'));
            }
            Err(e) => {
                let is_utf8 = matches!(e, FormError::InvalidUtf8 { .. });
                prop_assert!(is_utf8, "{}", e);
            }
        }
    }

    /// Bodies made of form syntax characters, where the edge cases live.
    #[test]
    fn form_syntax_soup(body in "[a=&%+0-9A-Fa-fz\u{e9}]{0,40}") {
        if let Ok(pairs) = decode_form(body.as_bytes()) {
            prop_assert!(pairs.len() <= body.matches('&').count() + 1);
            // A name holds `&` only where the body escaped one (`%26`): a raw `&` always
            // ends a pair.
            for (name, _) in &pairs {
                prop_assert!(!name.contains('&') || body.contains("%26"), "{:?}", name);
            }
        }
    }

    /// Targets are trimmed, non-empty, comma-free, and splitting is idempotent.
    #[test]
    fn targets_are_clean(raw in "[ ,\t\u{a0}a-c:*é]{0,40}") {
        let targets = parse_targets(&raw);
        prop_assert!(targets.len() <= raw.matches(',').count() + 1);
        for t in &targets {
            prop_assert!(!t.is_empty());
            prop_assert_eq!(t.trim(), t.as_str());
            prop_assert!(!t.contains(','));
        }
        prop_assert_eq!(parse_targets(&targets.join(",")), targets);
    }

    /// `count` is always within 1..=max, and an in-range integer is kept as it is.
    #[test]
    fn count_is_clamped(raw in ".{0,24}", max in 0u32..50) {
        let n = parse_count(Some(&raw), max);
        prop_assert!((1..=max.max(1)).contains(&n));
    }

    #[test]
    fn in_range_counts_are_kept(n in 1u32..=20, pad in " {0,3}") {
        prop_assert_eq!(parse_count(Some(&format!("{pad}{n}{pad}")), 20), n);
    }

    #[test]
    fn numbers_outside_are_clamped(n in any::<i64>()) {
        let expected = n.clamp(1, 20) as u32;
        prop_assert_eq!(parse_count(Some(&n.to_string()), 20), expected);
    }
}

/// Arbitrary bodies through the real extractor and routes: always a JSON answer, never a
/// 5xx, and a rejection never leaves anything behind. Needs Redis, so fewer cases.
#[test]
fn arbitrary_bodies_through_the_routes() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = pubsub_hub_testkit::RedisServer::start();
    let (hub, app) = runtime.block_on(async {
        let hub = pubsub_hub::PubSubHub::with_config(
            server.client(),
            pubsub_hub_web::dashboard_hub_config(),
        )
        .await
        .unwrap();
        let app = pubsub_hub_web::router(pubsub_hub_web::AppState::new(hub.clone()));
        (hub, app)
    });
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(128));
    let bodies = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        "(name|target|kind|channel|message|count)=[%a-z0-9,*+ ]{0,12}(&(name|target|kind)=[%a-z0-9,*+ ]{0,12}){0,3}"
            .prop_map(String::into_bytes),
    ];
    let paths = prop_oneof![Just("/subscribe"), Just("/unsubscribe")];
    runner
        .run(&(paths, bodies), |(path, body)| {
            let before = hub.subscriptions().len();
            let request = Request::post(path)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .unwrap();
            let (status, json) = runtime.block_on(async {
                let response = app.clone().oneshot(request).await.unwrap();
                let status = response.status();
                let bytes = response.into_body().collect().await.unwrap().to_bytes();
                (status, serde_json::from_slice::<serde_json::Value>(&bytes))
            });
            prop_assert!(json.is_ok(), "not JSON ({status})");
            prop_assert!(!status.is_server_error(), "{status}: {:?}", json);
            if status != StatusCode::OK {
                prop_assert!(json.unwrap()["error"].is_string());
                prop_assert_eq!(hub.subscriptions().len(), before);
            }
            // Keep the hub small: remove whatever a successful subscribe added.
            runtime.block_on(hub.close_all());
            Ok(())
        })
        .unwrap();
    runtime.block_on(hub.shutdown());
}
