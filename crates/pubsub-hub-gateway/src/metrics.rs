//! The gateway's counters and gauges, and their Prometheus text rendering for `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters only go up; gauges go up and down.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct GatewayMetrics {
    /// Connections open now (gauge).
    pub connections: AtomicU64,
    /// Connections accepted so far.
    pub connections_total: AtomicU64,
    /// Client subscriptions open now, over all connections (gauge).
    pub subscriptions: AtomicU64,
    /// Channels with at least one local subscriber now (gauge): one Redis subscription each.
    pub channels: AtomicU64,
    /// Pushes (publications, unsubscribes, disconnects) queued to clients.
    pub messages_pushed_total: AtomicU64,
    /// Redis messages received for local channels.
    pub messages_received_total: AtomicU64,
    /// Publishes made through the gateway (client, server API and Rust API).
    pub publishes_total: AtomicU64,
    /// Clients disconnected because their write queue overflowed.
    pub slow_disconnects_total: AtomicU64,
    /// Frames that could not be decoded, or were too large.
    pub bad_frames_total: AtomicU64,
    /// Commands answered with an error.
    pub command_errors_total: AtomicU64,
    /// Connections refused at the connection limit.
    pub connection_limit_refusals_total: AtomicU64,
    /// Times local channels were told their Redis subscription was lost (Redis outage, or
    /// a channel that fell behind).
    pub channel_losses_total: AtomicU64,
}

impl GatewayMetrics {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dec(counter: &AtomicU64) {
        counter.fetch_sub(1, Ordering::Relaxed);
    }

    /// The metrics in the Prometheus text format (0.0.4).
    pub fn render(&self) -> String {
        let rows: [(&str, &str, &str, &AtomicU64); 12] = [
            (
                "pubsub_hub_gateway_connections",
                "gauge",
                "Client connections open now.",
                &self.connections,
            ),
            (
                "pubsub_hub_gateway_connections_total",
                "counter",
                "Client connections accepted.",
                &self.connections_total,
            ),
            (
                "pubsub_hub_gateway_subscriptions",
                "gauge",
                "Client subscriptions open now.",
                &self.subscriptions,
            ),
            (
                "pubsub_hub_gateway_channels",
                "gauge",
                "Channels with local subscribers (one Redis subscription each).",
                &self.channels,
            ),
            (
                "pubsub_hub_gateway_messages_pushed_total",
                "counter",
                "Pushes queued to clients.",
                &self.messages_pushed_total,
            ),
            (
                "pubsub_hub_gateway_messages_received_total",
                "counter",
                "Redis messages received for local channels.",
                &self.messages_received_total,
            ),
            (
                "pubsub_hub_gateway_publishes_total",
                "counter",
                "Publishes made through the gateway.",
                &self.publishes_total,
            ),
            (
                "pubsub_hub_gateway_slow_disconnects_total",
                "counter",
                "Clients disconnected as slow.",
                &self.slow_disconnects_total,
            ),
            (
                "pubsub_hub_gateway_bad_frames_total",
                "counter",
                "Frames that could not be decoded or were too large.",
                &self.bad_frames_total,
            ),
            (
                "pubsub_hub_gateway_command_errors_total",
                "counter",
                "Commands answered with an error.",
                &self.command_errors_total,
            ),
            (
                "pubsub_hub_gateway_connection_limit_refusals_total",
                "counter",
                "Connections refused at the limit.",
                &self.connection_limit_refusals_total,
            ),
            (
                "pubsub_hub_gateway_channel_losses_total",
                "counter",
                "Local channels told their Redis subscription was lost.",
                &self.channel_losses_total,
            ),
        ];
        let mut out = String::with_capacity(2048);
        for (name, kind, help, value) in rows {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        out
    }
}
