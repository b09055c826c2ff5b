//! A hub on the Redis at localhost:6379: named subscribers, a consumer, publishing and
//! introspection (`cargo run -p pubsub-hub --example readme`).

use pubsub_hub::{DEFAULT_BUFFER_SIZE, Event, PubSubHub};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = redis::Client::open("redis://127.0.0.1:6379/")?;
    let hub = PubSubHub::new(client, DEFAULT_BUFFER_SIZE).await?;

    // Named subscribers: exact channels and glob patterns.
    let orders = hub
        .subscribe("orders-listener", vec!["orders:new".into()])
        .await?;
    hub.psubscribe("all-notifications", vec!["notifications:*".into()])
        .await?;

    // Application code consumes a stream of events; the socket reader never waits for it.
    let mut events = orders.consumer();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                Event::Message(m) => println!("{} {}", m.channel, m.payload),
                Event::Lagged(n) => eprintln!("fell behind: {n} messages dropped"),
                Event::Disconnected { error } => eprintln!("gap begins: {error}"),
                Event::Reconnected => eprintln!("gap ends; messages in between are lost"),
                _ => {}
            }
        }
    });

    // PUBLISH returns how many subscribers Redis delivered to.
    let delivered = hub.publish("orders:new", &json!({"order_id": 42})).await?;
    println!("delivered to {delivered} subscriber(s)");
    hub.publish_bytes("blobs", &[0xff, 0x00, 0x80]).await?; // any bytes, kept exactly

    // The guide's inspection API is all there.
    for sub in hub.subscriptions() {
        println!("{} {} {:?}", sub.name(), sub.received_total(), sub.status());
        for m in sub.messages(Some(5)) {
            println!("  {} {}", m.channel, m.payload);
        }
    }
    println!("{:?}", hub.introspect("*", &["orders:new".into()]).await?);
    hub.shutdown().await;
    Ok(())
}
