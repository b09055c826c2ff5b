//! On a Redis Cluster, gateway channels are shard channels (SSUBSCRIBE/SPUBLISH).

use pubsub_hub::PubSubHub;
use pubsub_hub_gateway::{Gateway, serve};
use pubsub_hub_testkit::RedisCluster;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn on_a_cluster_channels_are_shard_channels_spread_over_the_masters() {
    let cluster = RedisCluster::start(3, 0);
    let hub = PubSubHub::cluster(cluster.node_urls(), hub_config())
        .await
        .unwrap();
    let gateway = Gateway::new(hub, base_config()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, gateway.clone(), std::future::pending()));
    let mut c = WsClient::open(&format!("ws://{addr}/connection/websocket")).await;
    c.connect("").await;
    // Channels in different slots, so on different masters.
    let channels: Vec<String> = (0..3)
        .map(|i| RedisCluster::key_for_slot(cluster_slot(i), "room"))
        .collect();
    for channel in &channels {
        assert_eq!(c.subscribe(channel).await["subscribe"], json!({}));
    }
    let client = cluster.cluster_client();
    let mut conn = client.get_async_connection().await.unwrap();
    for (i, channel) in channels.iter().enumerate() {
        // A plain SPUBLISH from any Redis client reaches the gateway's subscribers...
        let n: i64 = redis::cmd("SPUBLISH")
            .arg(channel)
            .arg(format!("{{\"n\":{i}}}"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, 1, "one shard subscriber (the gateway) for {channel}");
        assert_eq!(
            c.push().await,
            json!({"channel": channel, "pub": {"data": {"n": i}}})
        );
        // ...and so does the gateway's own publish, which is an SPUBLISH too.
        assert_eq!(
            gateway
                .publish(channel, b"\"again\"")
                .await
                .unwrap()
                .receivers,
            1
        );
        assert_eq!(c.push().await["pub"]["data"], json!("again"));
    }
    gateway.shutdown().await;
}

/// A slot owned by master `i` of a three-master cluster (slots are split evenly).
fn cluster_slot(i: u16) -> u16 {
    i * 5461 + 100
}

#[tokio::test]
async fn on_a_cluster_presence_and_join_leave_work_in_every_slot() {
    let cluster = RedisCluster::start(3, 0);
    let hub = PubSubHub::cluster(cluster.node_urls(), hub_config())
        .await
        .unwrap();
    let config = base_config().with_namespace(
        "room",
        pubsub_hub_gateway::NamespaceConfig::default()
            .with_presence(true)
            .with_join_leave(true),
    );
    let gateway = Gateway::new(hub, config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, gateway.clone(), std::future::pending()));
    let url = format!("ws://{addr}/connection/websocket");
    let mut watcher = WsClient::open(&url).await;
    watcher.connect("").await;
    let mut other = WsClient::open(&url).await;
    other.connect("").await;
    // Plain names and names with a hash tag, on different masters: the companion channel
    // and the presence keys must share each one's slot.
    let channels = [
        "room:a".to_owned(),
        "room:b".to_owned(),
        format!(
            "room:{{{}}}x",
            RedisCluster::key_for_slot(cluster_slot(2), "t")
        ),
    ];
    for channel in &channels {
        let reply = watcher.subscribe(channel).await;
        assert_eq!(reply["subscribe"], json!({}), "{reply}");
        assert!(watcher.push().await.get("join").is_some());
        other.subscribe(channel).await;
        let join = watcher.push().await;
        assert_eq!(join["channel"], json!(channel), "{join}");
        assert!(join.get("join").is_some(), "{join}");
        let stats = watcher
            .call("presence_stats", json!({"channel": channel}))
            .await;
        assert_eq!(stats["presence_stats"]["num_clients"], json!(2), "{stats}");
        other.call("unsubscribe", json!({"channel": channel})).await;
        assert!(watcher.push().await.get("leave").is_some());
    }
    gateway.shutdown().await;
}
