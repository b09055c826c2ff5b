//! The example program of the guide "Redis pub/sub with redis-rs" (section "The pub/sub hub
//! helper"), verbatim except that the line `mod pubsub_hub;` is gone: the module is this
//! crate. It talks to Redis on localhost:6379, as the guide does; the test
//! `guide_example` runs it against a private server inside its own network namespace.
use pubsub_hub::{DEFAULT_BUFFER_SIZE, PubSubHub};
use redis::Client;
use serde_json::json;
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::open("redis://localhost:6379/")?;
    let hub = PubSubHub::new(client, DEFAULT_BUFFER_SIZE).await?;
    // Exact-match subscriber
    hub.subscribe("orders-listener", vec!["orders:new".to_string()])
        .await?;
    // Pattern subscriber covering an entire topic hierarchy
    hub.psubscribe("all-notifications", vec!["notifications:*".to_string()])
        .await?;
    // Publish — returns Redis' delivered count for this PUBLISH
    let delivered = hub
        .publish("orders:new", &json!({ "order_id": 42, "total": 199.0 }))
        .await?;
    println!("Redis delivered to {} subscriber(s)", delivered);
    // Look at what each subscriber received
    for sub in hub.subscriptions() {
        println!("{} {} messages", sub.name(), sub.received_total());
        for m in sub.messages(Some(5)) {
            println!(" {} {}", m.channel, m.payload);
        }
    }
    hub.unsubscribe("orders-listener").await;
    hub.shutdown().await; // closes every remaining subscription
    Ok(())
}
