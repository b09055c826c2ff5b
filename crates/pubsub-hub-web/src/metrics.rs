//! `GET /metrics`: the dashboard's metrics in the Prometheus text format (version 0.0.4).
//!
//! Each [`AppState`] owns one [`Metrics`] with its own registry (no process-global
//! recorder), so two dashboards in one process, or two tests, never mix their numbers.
//!
//! # What is exported
//! Read from the hub at scrape time (so they are exactly the hub's own numbers):
//! - `pubsub_hub_published_total`, `pubsub_hub_delivered_total`, `pubsub_hub_received_total`,
//!   `pubsub_hub_dropped_total`, `pubsub_hub_reconnects_total`,
//!   `pubsub_hub_publish_errors_total`: the hub's lifetime counters. `POST /reset` zeroes
//!   them, which Prometheus' `rate()` and `increase()` treat as a counter reset.
//! - `pubsub_hub_subscriptions{status="live"|"reconnecting"|"closed"}`: subscribers by
//!   status; all three series are always present.
//! - `pubsub_hub_subscriber_connections`: open subscriber connections to Redis.
//! - `pubsub_hub_redis_up`: 1 when Redis answered the scrape's probe within
//!   [`READY_REDIS_TIMEOUT`](crate::health::READY_REDIS_TIMEOUT), else 0.
//!
//! Counted by the web layer as it works:
//! - `pubsub_hub_redis_command_duration_seconds{command, outcome}`: a histogram of the
//!   Redis calls the dashboard makes (`command` is one of [`REDIS_COMMANDS`], `outcome` is
//!   `ok` or `error`; a call cut off by the dashboard's own deadline is an `error`).
//! - `pubsub_hub_http_requests_total{method, route, status}` and
//!   `pubsub_hub_http_request_duration_seconds{method, route, status}`: every HTTP request,
//!   by the route's pattern (axum's `MatchedPath`, never the raw URI), the method and the
//!   status. The duration is until the response head: an `/events` stream counts as fast.
//! - `pubsub_hub_channel_publishes_total{channel}`: publishes made through `POST /publish`,
//!   per channel.
//! - `pubsub_hub_http_write_timeouts_total`: connections closed because their client stopped
//!   reading ([`Limits::write_timeout`](crate::Limits::write_timeout)).
//!
//! # Label cardinality
//! Every label has a bounded set of values, whatever clients send:
//! - `route` is a route pattern of the router, or `unmatched` for anything else (404s);
//! - `method` is a standard method name or `other`; `status` is an HTTP status code;
//! - `command` and `outcome` are fixed lists;
//! - `channel` is a channel name only for at most [`DEFAULT_MAX_CHANNEL_LABELS`] channels:
//!   a channel gets its own series the first time it is published to while a local
//!   subscriber listens to it by exact name and fewer than that many channels have one.
//!   It keeps it for the life of the process (so every series only goes up). Every other
//!   publish counts under `channel="<other>"`.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use pubsub_hub::{PubSubHub, SubscriptionStatus};

use crate::app::AppState;

/// Most channels with a `channel` label of their own in
/// `pubsub_hub_channel_publishes_total` (32); the rest share `channel="<other>"`.
pub const DEFAULT_MAX_CHANNEL_LABELS: usize = 32;

/// The `channel` label value of publishes to channels without a series of their own.
pub const OTHER_CHANNEL: &str = "<other>";

/// The `route` label value of requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The `command` label values of `pubsub_hub_redis_command_duration_seconds`:
/// `publish` (one PUBLISH), `introspect` (the pipelined `PUBSUB` round trip behind every
/// state), `subscribe` and `unsubscribe` (adding or removing a subscriber, connection
/// included), `numpat` (`PUBSUB NUMPAT`: the readiness probe and `/reset`'s check).
pub const REDIS_COMMANDS: [&str; 5] = [
    "publish",
    "introspect",
    "subscribe",
    "unsubscribe",
    "numpat",
];

/// Bucket bounds of the Redis latency histogram, in seconds: 0.25 ms to 2.5 s.
const REDIS_BUCKETS: [f64; 13] = [
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Bucket bounds of the HTTP latency histogram, in seconds: 1 ms to 5 s.
const HTTP_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RedisLabels {
    command: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    channel: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// One dashboard's metrics: its registry and the series the web layer counts.
pub struct Metrics {
    registry: Registry,
    /// Set by every scrape from its own probe, just before encoding.
    redis_up: Gauge,
    redis_latency: HistogramFamily<RedisLabels>,
    http_requests: Family<HttpLabels, Counter>,
    http_latency: HistogramFamily<HttpLabels>,
    channel_publishes: Family<ChannelLabels, Counter>,
    /// Connections cut by the write-progress timeout.
    write_timeouts: Counter,
    /// Which channels have a series of their own.
    channels: ChannelLabeller,
    /// Held while a scrape sets `redis_up` and encodes, so two concurrent scrapes cannot
    /// swap their probes' results.
    rendering: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// The metrics of a dashboard on `hub`, with [`DEFAULT_MAX_CHANNEL_LABELS`].
    pub fn new(hub: &PubSubHub) -> Self {
        Self::with_max_channel_labels(hub, DEFAULT_MAX_CHANNEL_LABELS)
    }

    /// The metrics of a dashboard on `hub`, with at most `max` channels labelled by name.
    pub fn with_max_channel_labels(hub: &PubSubHub, max: usize) -> Self {
        let mut registry = Registry::default();
        let redis_up = Gauge::default();
        let redis_latency: HistogramFamily<RedisLabels> =
            Family::new_with_constructor(|| Histogram::new(REDIS_BUCKETS));
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_latency: HistogramFamily<HttpLabels> =
            Family::new_with_constructor(|| Histogram::new(HTTP_BUCKETS));
        let channel_publishes = Family::<ChannelLabels, Counter>::default();
        let write_timeouts = Counter::default();
        registry.register_collector(Box::new(HubCollector { hub: hub.clone() }));
        registry.register(
            "pubsub_hub_redis_up",
            "1 when Redis answered this scrape's probe in time, else 0",
            redis_up.clone(),
        );
        registry.register(
            "pubsub_hub_redis_command_duration_seconds",
            "Latency of the dashboard's Redis calls, by command and outcome",
            redis_latency.clone(),
        );
        registry.register(
            "pubsub_hub_http_requests",
            "HTTP requests, by method, route pattern and status",
            http_requests.clone(),
        );
        registry.register(
            "pubsub_hub_http_request_duration_seconds",
            "Time to the response head of HTTP requests, by method, route pattern and status",
            http_latency.clone(),
        );
        registry.register(
            "pubsub_hub_channel_publishes",
            "Publishes through POST /publish, per channel for a bounded set of channels \
             (the rest under channel=\"<other>\")",
            channel_publishes.clone(),
        );
        registry.register(
            "pubsub_hub_http_write_timeouts",
            "Connections closed because their client stopped reading for write_timeout",
            write_timeouts.clone(),
        );
        Metrics {
            registry,
            write_timeouts,
            redis_up,
            redis_latency,
            http_requests,
            http_latency,
            channel_publishes,
            channels: ChannelLabeller::new(max),
            rendering: Mutex::new(()),
        }
    }

    /// Runs one Redis call and records its latency under `command` (one of
    /// [`REDIS_COMMANDS`]) with the outcome `ok` or `error`.
    ///
    /// # Cancel safety
    /// As cancel-safe as `call`: dropping it drops `call`, and nothing is recorded.
    pub async fn time_redis<T, E>(
        &self,
        command: &'static str,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = Instant::now();
        let result = call.await;
        self.observe_redis(command, started.elapsed(), result.is_ok());
        result
    }

    /// Records one Redis call that took `took`.
    pub fn observe_redis(&self, command: &'static str, took: Duration, ok: bool) {
        let labels = RedisLabels {
            command,
            outcome: if ok { "ok" } else { "error" },
        };
        self.redis_latency
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Counts one publish to `channel` made through `POST /publish`. `subscribed` says
    /// whether a local subscriber listens to the channel by exact name, which lets a
    /// channel without a series of its own get one while there is room.
    pub fn count_publish(&self, channel: &str, subscribed: bool) {
        let channel = self.channels.label(channel, subscribed);
        self.channel_publishes
            .get_or_create(&ChannelLabels { channel })
            .inc();
    }

    /// Counts one connection closed by the write-progress timeout.
    pub fn count_write_timeout(&self) {
        self.write_timeouts.inc();
    }

    /// How many connections the write-progress timeout has closed.
    pub fn write_timeouts(&self) -> u64 {
        self.write_timeouts.get()
    }

    /// The metrics in the Prometheus text format, with `pubsub_hub_redis_up` set to
    /// `redis_up`.
    pub fn render(&self, redis_up: bool) -> String {
        let _rendering = self.rendering.lock().unwrap_or_else(|e| e.into_inner());
        self.redis_up.set(i64::from(redis_up));
        let mut text = String::new();
        // Writing into a String cannot fail; an encoder error would be a bug in a metric.
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
        {
            tracing::error!(error = %e, "encoding the metrics failed");
        }
        text
    }

    fn observe_http(&self, method: &Method, route: String, status: u16, took: Duration) {
        let labels = HttpLabels {
            method: method_label(method),
            route,
            status,
        };
        self.http_requests.get_or_create(&labels).inc();
        self.http_latency
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }
}

/// Hands out `channel` label values: a channel's own name for at most `max` channels,
/// chosen once and kept, else [`OTHER_CHANNEL`].
#[derive(Debug)]
struct ChannelLabeller {
    /// Channels that have a series of their own; only grows.
    labelled: Mutex<HashSet<String>>,
    max: usize,
}

impl ChannelLabeller {
    fn new(max: usize) -> Self {
        ChannelLabeller {
            labelled: Mutex::new(HashSet::new()),
            max,
        }
    }

    fn label(&self, channel: &str, subscribed: bool) -> String {
        let mut labelled = self.labelled.lock().unwrap_or_else(|e| e.into_inner());
        if labelled.contains(channel) {
            return channel.to_owned();
        }
        if subscribed && channel != OTHER_CHANNEL && labelled.len() < self.max {
            labelled.insert(channel.to_owned());
            return channel.to_owned();
        }
        OTHER_CHANNEL.to_owned()
    }
}

/// A standard method's name, or `other`, so a client cannot invent label values.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Emits the hub's own numbers at scrape time.
#[derive(Debug)]
struct HubCollector {
    hub: PubSubHub,
}

impl Collector for HubCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.hub.local_stats();
        let counters = [
            (
                "pubsub_hub_published",
                "Successful PUBLISH calls of this process (zeroed by POST /reset).",
                stats.published_total,
            ),
            (
                "pubsub_hub_delivered",
                "Sum of the receiver counts Redis returned for those publishes.",
                stats.delivered_total,
            ),
            (
                "pubsub_hub_received",
                "Messages received by this process' subscribers, one per subscriber per message.",
                stats.received_total,
            ),
            (
                "pubsub_hub_dropped",
                "Events dropped for consumers that fell behind.",
                stats.dropped_total,
            ),
            (
                "pubsub_hub_reconnects",
                "Subscriber connections re-established after a loss.",
                stats.reconnects_total,
            ),
            (
                "pubsub_hub_publish_errors",
                "PUBLISH calls that failed or timed out.",
                stats.publish_errors_total,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }

        let (mut live, mut reconnecting, mut closed) = (0i64, 0i64, 0i64);
        for sub in self.hub.subscriptions() {
            match sub.status() {
                SubscriptionStatus::Live => live += 1,
                SubscriptionStatus::Closed => closed += 1,
                // Reconnecting, and any state a newer library adds: not receiving.
                _ => reconnecting += 1,
            }
        }
        let mut family = encoder.encode_descriptor(
            "pubsub_hub_subscriptions",
            "Subscribers by status.",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (status, n) in [
            ("live", live),
            ("reconnecting", reconnecting),
            ("closed", closed),
        ] {
            let labels = [("status", status)];
            ConstGauge::new(n).encode(family.encode_family(&labels)?)?;
        }

        let connections = ConstGauge::new(self.hub.subscriber_connections() as i64);
        let metric = encoder.encode_descriptor(
            "pubsub_hub_subscriber_connections",
            "Open subscriber connections to Redis.",
            None,
            connections.metric_type(),
        )?;
        connections.encode(metric)
    }
}

/// `GET /metrics`: probes Redis (bounded), then renders every metric.
///
/// # Cancel safety
/// Cancel-safe: it only reads, and holds no lock across an `.await`; dropping it leaves
/// nothing behind.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    description = "Prometheus text format (0.0.4). Needs the access token when one is \
                   configured (Prometheus: `authorization: {credentials: <token>}`).",
    responses(
        (status = 200, description = "The metrics", content_type = "text/plain", body = String),
        (status = 401, description = "An access token is configured and was not presented", body = crate::openapi::ErrorBody),
        (status = 403, description = "Refused whatever the credentials (a foreign Host)", body = crate::openapi::ErrorBody),
    )
)]
pub async fn metrics(State(app): State<AppState>) -> Response {
    let redis_up = crate::health::redis_answers(&app).await;
    let body = app.metrics.render(redis_up);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(prometheus_client::encoding::prometheus_text::CONTENT_TYPE),
        )],
        body,
    )
        .into_response()
}

/// The middleware that counts and times every request by its route pattern.
///
/// # Cancel safety
/// Cancel-safe: a request whose future is dropped is simply not counted.
pub async fn track_http(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED_ROUTE.to_owned(), |p| p.as_str().to_owned());
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    app.metrics.observe_http(
        &method,
        route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_labels_are_bounded_and_sticky() {
        let labeller = ChannelLabeller::new(2);
        assert_eq!(labeller.label("a", false), OTHER_CHANNEL, "not subscribed");
        assert_eq!(labeller.label("a", true), "a");
        assert_eq!(labeller.label("a", false), "a", "kept once given");
        assert_eq!(labeller.label(OTHER_CHANNEL, true), OTHER_CHANNEL);
        assert_eq!(labeller.label("b", true), "b");
        assert_eq!(labeller.label("c", true), OTHER_CHANNEL, "full");
        assert_eq!(labeller.label("b", true), "b");
    }

    #[test]
    fn methods_are_a_closed_set() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }
}
