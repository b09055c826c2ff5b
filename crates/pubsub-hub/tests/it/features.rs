//! The library's Cargo features against real servers: with `tls`, a hub works over
//! `rediss://` (plain, pattern and shard subscribers, publishing, introspection) with the
//! crypto provider the feature brings; without it, a `rediss://` URL is refused up front.
//! Without `cluster`, shard channels on a single server are covered by `tests/it/shard.rs`,
//! which scripts/test also runs with `--no-default-features`.

#[cfg(feature = "tls")]
mod tls {
    use std::time::{Duration, Instant};

    use pubsub_hub::{HubConfig, PubSubHub};
    use pubsub_hub_testkit::TlsRedisServer;

    use crate::util::{WAIT, next_message};

    fn trusting_client(server: &TlsRedisServer) -> redis::Client {
        redis::Client::build_with_tls(
            server.tls_url(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(server.ca_cert_pem()),
            },
        )
        .expect("a rediss:// client with our CA")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hub_works_over_tls_with_a_private_ca() {
        let server = TlsRedisServer::start();
        let config = HubConfig::default()
            .with_connect_timeout(Duration::from_secs(2))
            .with_command_timeout(Duration::from_secs(2));

        // Nothing trusts the test CA: the handshake fails, promptly and with an error.
        let started = Instant::now();
        let untrusted = redis::Client::open(server.tls_url()).expect("a rediss:// URL");
        let refused = PubSubHub::with_config(untrusted, config.clone())
            .await
            .expect_err("a certificate from an unknown CA is refused");
        assert!(
            started.elapsed() < WAIT,
            "refusal took {:?}",
            started.elapsed()
        );
        assert!(!refused.to_string().is_empty());

        let hub = PubSubHub::with_config(trusting_client(&server), config)
            .await
            .expect("the hub connects over TLS");
        let orders = hub
            .subscribe("orders", vec!["orders:new".into()])
            .await
            .expect("SUBSCRIBE over TLS");
        let notes = hub
            .psubscribe("notes", vec!["notes:*".into()])
            .await
            .expect("PSUBSCRIBE over TLS");
        let shards = hub
            .ssubscribe("shards", vec!["{s}:one".into()])
            .await
            .expect("SSUBSCRIBE over TLS (a RESP3 shard link)");
        let (mut orders_events, mut notes_events, mut shard_events) =
            (orders.consumer(), notes.consumer(), shards.consumer());

        // The TLS port speaks nothing else, so every subscriber connection Redis counts
        // for these channels is a TLS one.
        server.server().wait_numsub("orders:new", 1, WAIT);
        assert_eq!(
            hub.publish_bytes("orders:new", b"\xff\x00tls")
                .await
                .unwrap(),
            1
        );
        assert_eq!(hub.publish_bytes("notes:a", b"n").await.unwrap(), 1);
        assert_eq!(hub.spublish_bytes("{s}:one", b"s").await.unwrap(), 1);
        assert_eq!(
            next_message(&mut orders_events).await.payload.as_bytes(),
            b"\xff\x00tls"
        );
        assert_eq!(next_message(&mut notes_events).await.channel, "notes:a");
        assert_eq!(
            next_message(&mut shard_events).await.payload.as_bytes(),
            b"s"
        );

        let seen = hub
            .introspect("*", &["orders:new".into(), "{s}:one".into()])
            .await
            .expect("PUBSUB over TLS");
        assert_eq!(seen.numsub.get("orders:new"), Some(&1));
        assert_eq!(seen.numpat, 1);
        assert_eq!(seen.shard_numsub.get("{s}:one"), Some(&1));

        hub.shutdown().await;
    }
}

#[cfg(not(feature = "tls"))]
#[test]
fn rediss_urls_are_refused_without_tls() {
    let err = redis::Client::open("rediss://127.0.0.1:1/").expect_err("no TLS support built in");
    assert!(err.to_string().contains("TLS"), "{err}");
}

#[cfg(not(feature = "cluster"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cluster_a_hub_is_a_single_server_hub() {
    let server = pubsub_hub_testkit::RedisServer::start();
    let hub = crate::util::hub(&server).await;
    assert!(!hub.is_cluster());
    let shards = hub
        .ssubscribe("shards", vec!["{a}:x".into(), "{b}:y".into()])
        .await
        .expect("shard channels on one server need no cluster support");
    let mut events = shards.consumer();
    assert_eq!(hub.spublish_bytes("{b}:y", b"lean").await.unwrap(), 1);
    assert_eq!(
        crate::util::next_message(&mut events)
            .await
            .payload
            .as_bytes(),
        b"lean"
    );
    hub.shutdown().await;
}
