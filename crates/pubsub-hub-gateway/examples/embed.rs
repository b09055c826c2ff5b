//! The README's gateway example: an axum app that mounts the gateway next to its own route
//! and publishes through the gateway's Rust API. Run it with a Redis on localhost:6379 and
//! `HMAC_SECRET` set; `cargo test` compiles it, and `tests/it/readme.rs` checks that the
//! README shows exactly the code between the markers.

// README example begins
use axum::{Router, routing::post, serve::ListenerExt};
use pubsub_hub::{ConnectionMode, HubConfig, PubSubHub};
use pubsub_hub_gateway::{Gateway, GatewayConfig, NamespaceConfig, PublishPolicy};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = redis::Client::open("redis://127.0.0.1:6379/")?;
    let shared = HubConfig::default().with_mode(ConnectionMode::Shared { connections: 4 });
    let hub = PubSubHub::with_config(client, shared).await?;
    let config = GatewayConfig::default()
        .with_hmac_secret(std::env::var("HMAC_SECRET")?)
        // Clients subscribed to a `chat:` channel may publish to it.
        .with_namespace(
            "chat",
            NamespaceConfig::default().with_publish(PublishPolicy::Subscribers),
        );
    let gateway = Gateway::new(hub, config)?;

    // The app's own route publishes to every subscriber of `news`, on every gateway process.
    let notifier = gateway.clone();
    let app = Router::new()
        .route(
            "/notify",
            post(move |body: String| async move {
                match notifier.publish("news", body.as_bytes()).await {
                    Ok(_) => "sent\n".to_owned(),
                    Err(e) => format!("not sent: {e}\n"),
                }
            }),
        )
        .merge(gateway.router());

    // Pushes are small writes: without TCP_NODELAY, Nagle's algorithm holds one back until
    // the client acknowledges the last (up to 40 ms with delayed ACKs).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8000")
        .await?
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            gateway.shutdown().await; // every client gets "shutdown", with reconnect advice
        })
        .await?;
    Ok(())
}
// README example ends
