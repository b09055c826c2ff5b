//! The `/state` document as types: [`StateDocument`] and its parts. They are the only
//! description of that shape: `/state`, `/events` and the answers that embed a state
//! serialize them, and `/openapi.json` derives its schemas from them, so the document and
//! its description cannot drift apart.
//!
//! Each part is built from the library's data ([`Subscription`], [`SubscriptionStatus`],
//! [`GapHistory`](pubsub_hub::GapHistory), [`ReceivedMessage`], [`Stats`]); what the page shows (payload cuts, the
//! warnings' sentences, the mode's explanation) is decided here, not in the library.

use std::collections::BTreeMap;
use std::sync::Arc;

use pubsub_hub::{
    ConnectionMode, Gap, Payload, PayloadEncoding, PubSubHub, ReceivedMessage, Stats, Subscription,
    SubscriptionStatus,
};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// `GET /state`: every subscriber with its newest messages, what Redis reports about
/// pub/sub, and the counters. The first four fields are the contract's; the rest are
/// additive.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct StateDocument {
    /// Every subscriber, in name order.
    #[schema(value_type = Vec<SubscriptionView>)]
    pub subscriptions: SubscriptionList,
    /// `PUBSUB CHANNELS *` (exact channels only); empty while Redis does not answer.
    pub active_channels: Vec<String>,
    /// `PUBSUB NUMSUB` for every exact channel a local subscriber targets; empty while Redis
    /// does not answer.
    pub numsub: BTreeMap<String, i64>,
    /// The hub's counters.
    pub stats: StatsView,
    /// Whether Redis answered the introspection of this state (additive).
    pub redis: RedisAvailability,
    /// The hub's change counter: grows whenever something observable changes (additive).
    pub version: u64,
    /// One sentence per subscriber that is disconnected now or has been, saying that
    /// messages published in that window were lost for it (additive).
    pub warnings: Vec<String>,
    /// How subscribers map onto Redis connections, and so what `numsub` counts (additive).
    pub mode: ModeView,
    /// True when `active_channels` was cut at `max_listed_channels` (additive).
    pub active_channels_truncated: bool,
    /// How many channels `PUBSUB CHANNELS *` returned before the cut (additive).
    pub active_channels_total: u64,
    /// `PUBSUB SHARDCHANNELS *` (Redis 7 shard channels with a subscriber), sorted, cut at
    /// `max_listed_channels`; empty while Redis does not answer or before Redis 7 (additive).
    pub shard_channels: Vec<String>,
    /// True when `shard_channels` was cut (additive).
    pub shard_channels_truncated: bool,
    /// How many shard channels there were before the cut (additive).
    pub shard_channels_total: u64,
    /// `PUBSUB SHARDNUMSUB` for every shard channel a local `shard` subscriber targets
    /// (additive).
    pub shard_numsub: BTreeMap<String, i64>,
    /// The subscribers of the other dashboard processes on the same Redis, kept there by
    /// each with an expiry ([`crate::peers`]); never mixed into `subscriptions`. Always
    /// present in a dashboard's answers; absent only from a document built for a hub alone
    /// ([`build_state`](crate::build_state)), which has no directory to read (additive).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub other_dashboards: Option<OtherDashboardsView>,
}

/// `/state`'s `other_dashboards`: the subscribers of the other dashboard processes on the
/// same Redis, as this dashboard last read them ([`PeerDirectory`](crate::peers::PeerDirectory)).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct OtherDashboardsView {
    /// This dashboard's own instance id (the others list it under this name).
    pub instance: String,
    /// Whether the last read of the directory in Redis succeeded; while false,
    /// `dashboards` is empty.
    pub available: bool,
    /// Every other live dashboard, sorted by instance id.
    pub dashboards: Vec<PeerDashboardView>,
}

/// One other dashboard process.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PeerDashboardView {
    /// Its instance id.
    pub instance: String,
    /// Its subscribers as of its last write (at most
    /// [`PEER_INTERVAL`](crate::peers::PEER_INTERVAL) old).
    pub subscriptions: Vec<PeerSubscriptionView>,
}

/// One subscriber of another dashboard.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PeerSubscriptionView {
    /// Its name.
    pub name: String,
    /// `channel`, `pattern` or `shard`.
    pub kind: String,
    /// Its channels, patterns or shard channels.
    pub targets: Vec<String>,
    /// `live`, `reconnecting` or `closed`.
    pub status: String,
}

/// The connection mode of the dashboard's hub.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct ModeView {
    /// `dedicated` (one Redis connection per subscriber, as in the guide) or `shared` (a
    /// fixed set of connections for all subscribers).
    #[schema(pattern = "^(dedicated|shared)$")]
    pub name: String,
    /// The size of the shared set, or `null` in dedicated mode.
    #[schema(minimum = 1)]
    pub shared_connections: Option<u64>,
    /// True when the hub works on a Redis Cluster.
    pub cluster: bool,
    /// Subscriber connections the hub holds to Redis now.
    pub subscriber_connections: u64,
    /// What `numsub` counts in this mode: `subscribers` (dedicated: one per named
    /// subscriber) or `connections` (shared: one per shared connection that carries the
    /// channel, however many local subscribers listen).
    #[schema(pattern = "^(subscribers|connections)$")]
    pub numsub_counts: String,
    /// The same, in a sentence for people.
    pub numsub_explanation: String,
}

/// One subscriber in `/state`.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct SubscriptionView {
    /// The subscriber's unique name.
    pub name: String,
    /// Its channels, patterns or shard channels.
    pub targets: Vec<String>,
    /// True for a pattern subscriber.
    pub is_pattern: bool,
    /// Messages received so far.
    pub received_total: u64,
    /// True while the subscriber is connected and subscribed (`status.state == "live"`).
    pub alive: bool,
    /// Its newest messages, newest first, at most 15.
    #[schema(max_items = 15)]
    pub messages: Vec<MessageView>,
    /// `channel`, `pattern` or `shard` (additive).
    pub kind: String,
    /// The connection state (additive).
    pub status: StatusView,
    /// Events dropped for its consumers that fell behind (additive).
    pub dropped_total: u64,
    /// Reconnections after a lost connection (additive).
    pub reconnects_total: u64,
    /// Windows in which it was disconnected, so far (additive).
    pub gaps_total: u64,
    /// The newest such window, or `null` (additive).
    pub last_gap: Option<GapView>,
}

/// A subscriber's connection state, told apart by `state`.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StatusView {
    /// Subscribed on a working connection.
    Live,
    /// The connection was lost; the hub is reconnecting.
    Reconnecting {
        /// Unix ms when the connection was lost.
        since_ms: u64,
        /// Failed reconnect attempts so far.
        attempts: u32,
        /// Why the connection was lost, or why the last attempt failed.
        last_error: String,
    },
    /// Closed; final.
    Closed,
}

/// A window in which a subscriber was disconnected.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct GapView {
    /// Unix ms when the connection was lost (the `since_ms` its status showed then). Never
    /// `null`: the hub records every gap as it opens; the schema keeps `null` allowed so
    /// that clients written against it stay valid.
    #[schema(value_type = Option<u64>)]
    pub started_at_ms: u64,
    /// Unix ms when the subscriber was live again, or `null` while the gap lasts.
    pub ended_at_ms: Option<u64>,
    /// Why the connection was lost.
    pub error: String,
}

/// One received message.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct MessageView {
    /// The channel it was published to.
    pub channel: String,
    /// The matching glob for a pattern delivery, else `null`.
    pub pattern: Option<String>,
    /// The message parsed as JSON when it is JSON, else its text as a string, else its
    /// bytes in base64; cut to a string prefix when `truncated`.
    #[schema(value_type = Value)]
    pub payload: serde_json::Value,
    /// How `payload` shows the bytes (additive).
    pub encoding: PayloadEncodingView,
    /// Unix ms when this process received it.
    pub received_at_ms: u64,
    /// Size in bytes as received (additive).
    pub size: u64,
    /// True when `payload` is a cut preview (additive).
    pub truncated: bool,
}

/// How a payload is shown.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PayloadEncodingView {
    /// A JSON document.
    Json,
    /// UTF-8 text that is not JSON, as a string.
    Text,
    /// Other bytes, as a standard base64 string.
    Base64,
}

/// The counters of `/state`. The contract's six come first; the rest are additive.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct StatsView {
    /// Successful PUBLISH calls of this process.
    pub published_total: u64,
    /// Sum of what Redis returned for those calls.
    pub delivered_total: u64,
    /// Messages received by this process' subscribers (one per subscriber per message).
    pub received_total: u64,
    /// Subscribers open now.
    pub active_subscriptions: u64,
    /// `PUBSUB NUMPAT` (server-wide); 0 while Redis does not answer.
    pub pattern_subscriptions: i64,
    /// Successful publishes per channel, for a bounded number of channels.
    pub channel_published: BTreeMap<String, u64>,
    /// Publishes to channels beyond that bound (additive).
    pub channel_published_other: u64,
    /// PUBLISH calls that failed or timed out (additive).
    pub publish_errors_total: u64,
    /// Events dropped for consumers that fell behind (additive).
    pub dropped_total: u64,
    /// Subscriber connections re-established (additive).
    pub reconnects_total: u64,
}

/// Whether Redis answered for this state.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct RedisAvailability {
    /// True when Redis answered in time.
    pub available: bool,
    /// Why not, when it did not; absent when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<String>,
}

/// The subscribers of a [`StateDocument`], shared: a dashboard keeps the views it built
/// and puts the same ones into every document until they change, so an unchanged hub is
/// not rebuilt per subscriber and message, and two documents are compared subscriber by
/// subscriber with a pointer comparison first. Serialized as a plain array.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SubscriptionList(Arc<Vec<Arc<SubscriptionView>>>);

impl From<Vec<Arc<SubscriptionView>>> for SubscriptionList {
    fn from(views: Vec<Arc<SubscriptionView>>) -> Self {
        SubscriptionList(Arc::new(views))
    }
}

impl From<Vec<SubscriptionView>> for SubscriptionList {
    fn from(views: Vec<SubscriptionView>) -> Self {
        SubscriptionList(Arc::new(views.into_iter().map(Arc::new).collect()))
    }
}

impl std::ops::Deref for SubscriptionList {
    type Target = [Arc<SubscriptionView>];

    fn deref(&self) -> &[Arc<SubscriptionView>] {
        &self.0
    }
}

impl Serialize for SubscriptionList {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|view| &**view))
    }
}

impl SubscriptionView {
    /// One subscriber as the page shows it: its newest `message_limit` messages, payloads
    /// cut at `payload_display_bytes`.
    pub fn new(
        sub: &Arc<Subscription>,
        message_limit: usize,
        payload_display_bytes: usize,
    ) -> Self {
        let messages = sub.messages(Some(message_limit));
        Self::of(
            &SubscriptionReading::of(Arc::clone(sub), messages),
            payload_display_bytes,
        )
    }

    /// The view of what `reading` read, payloads cut at `payload_display_bytes`.
    pub fn of(reading: &SubscriptionReading, payload_display_bytes: usize) -> Self {
        let sub = &reading.sub;
        SubscriptionView {
            name: sub.name().to_owned(),
            targets: sub.targets().to_vec(),
            is_pattern: sub.is_pattern(),
            received_total: reading.received_total,
            alive: reading.status == SubscriptionStatus::Live,
            messages: reading
                .messages
                .iter()
                .map(|m| MessageView::new(m, payload_display_bytes))
                .collect(),
            kind: sub.kind().as_str().to_owned(),
            status: StatusView::from(reading.status.clone()),
            dropped_total: reading.dropped_total,
            reconnects_total: reading.reconnects_total,
            gaps_total: reading.gaps_total,
            last_gap: reading.last_gap.clone(),
        }
    }
}

/// Everything a [`SubscriptionView`] shows of one subscription, read once: the messages
/// are the ring buffer's own (shared) entries, so two readings are compared by pointer,
/// without building a view. Equal readings of the same subscription give equal views.
#[derive(Clone)]
pub struct SubscriptionReading {
    /// The subscription read.
    pub sub: Arc<Subscription>,
    /// Its newest messages, newest first.
    pub messages: Vec<Arc<ReceivedMessage>>,
    /// [`Subscription::status`].
    pub status: SubscriptionStatus,
    /// [`Subscription::received_total`].
    pub received_total: u64,
    /// [`Subscription::dropped_total`].
    pub dropped_total: u64,
    /// [`Subscription::reconnects_total`].
    pub reconnects_total: u64,
    /// How many gaps [`Subscription::gaps`] counts.
    pub gaps_total: u64,
    /// Its newest gap.
    pub last_gap: Option<GapView>,
}

impl SubscriptionReading {
    /// Reads `sub`, whose newest messages (as [`Subscription::messages`] returned them) are
    /// `messages`.
    pub fn of(sub: Arc<Subscription>, messages: Vec<Arc<ReceivedMessage>>) -> Self {
        let gaps = sub.gaps();
        SubscriptionReading {
            status: sub.status(),
            received_total: sub.received_total(),
            dropped_total: sub.dropped_total(),
            reconnects_total: sub.reconnects_total(),
            gaps_total: gaps.total,
            last_gap: gaps.last.as_ref().map(GapView::from),
            messages,
            sub,
        }
    }

    /// True when both read the same subscription and saw the same: the same messages (the
    /// same entries of its ring buffer), status, counters and gaps.
    pub fn same_as(&self, other: &SubscriptionReading) -> bool {
        Arc::ptr_eq(&self.sub, &other.sub)
            && self.messages.len() == other.messages.len()
            && self
                .messages
                .iter()
                .zip(&other.messages)
                .all(|(a, b)| Arc::ptr_eq(a, b))
            && self.status == other.status
            && self.received_total == other.received_total
            && self.dropped_total == other.dropped_total
            && self.reconnects_total == other.reconnects_total
            && self.gaps_total == other.gaps_total
            && self.last_gap == other.last_gap
    }
}

impl From<SubscriptionStatus> for StatusView {
    fn from(status: SubscriptionStatus) -> Self {
        match status {
            SubscriptionStatus::Live => StatusView::Live,
            SubscriptionStatus::Reconnecting {
                since_ms,
                attempts,
                last_error,
            } => StatusView::Reconnecting {
                since_ms,
                attempts,
                last_error,
            },
            // `Closed`, and any state a newer library adds: not receiving.
            _ => StatusView::Closed,
        }
    }
}

impl From<&Gap> for GapView {
    fn from(gap: &Gap) -> Self {
        GapView {
            started_at_ms: gap.started_at_ms,
            ended_at_ms: gap.ended_at_ms,
            error: gap.error.clone(),
        }
    }
}

impl From<PayloadEncoding> for PayloadEncodingView {
    fn from(encoding: PayloadEncoding) -> Self {
        match encoding {
            PayloadEncoding::Json => PayloadEncodingView::Json,
            PayloadEncoding::Text => PayloadEncodingView::Text,
            // Base64, and any encoding a newer library adds: shown as a string.
            _ => PayloadEncodingView::Base64,
        }
    }
}

impl MessageView {
    /// One message with its payload cut at `limit` (bytes of text, or characters of base64).
    pub fn new(m: &ReceivedMessage, limit: usize) -> Self {
        let (payload, truncated) = display_payload(&m.payload, limit);
        MessageView {
            channel: m.channel.clone(),
            pattern: m.pattern.clone(),
            payload,
            encoding: m.payload.encoding().into(),
            received_at_ms: m.received_at_ms,
            size: m.payload.len() as u64,
            truncated,
        }
    }
}

impl From<Stats> for StatsView {
    fn from(s: Stats) -> Self {
        StatsView {
            published_total: s.published_total,
            delivered_total: s.delivered_total,
            received_total: s.received_total,
            active_subscriptions: s.active_subscriptions,
            pattern_subscriptions: s.pattern_subscriptions,
            channel_published: s.channel_published,
            channel_published_other: s.channel_published_other,
            publish_errors_total: s.publish_errors_total,
            dropped_total: s.dropped_total,
            reconnects_total: s.reconnects_total,
        }
    }
}

impl ModeView {
    /// How `hub` maps subscribers onto Redis connections, and so what `numsub` counts.
    pub fn of(hub: &PubSubHub) -> Self {
        let cluster = hub.is_cluster();
        let cluster_note = if cluster {
            " In this cluster every count is summed over all nodes."
        } else {
            ""
        };
        let (name, shared, counts, explanation) = match hub.mode() {
            ConnectionMode::Shared { connections } => (
                "shared",
                Some(connections as u64),
                "connections",
                format!(
                    "Shared mode: all subscribers share {connections} Redis subscriber \
                     connection(s), and each channel is subscribed on one of them however many \
                     local subscribers want it. So NUMSUB counts connections, not names: this \
                     dashboard adds 1 to a channel's NUMSUB whether one or a hundred of its \
                     subscribers listen; each card shows its own count.{cluster_note}"
                ),
            ),
            _ => (
                "dedicated",
                None,
                "subscribers",
                format!(
                    "Dedicated mode: every named subscriber has its own Redis connection, so \
                     NUMSUB counts this dashboard's subscribers of a channel one by one (plus any \
                     other client subscribed to it).{cluster_note}"
                ),
            ),
        };
        ModeView {
            name: name.into(),
            shared_connections: shared,
            cluster,
            subscriber_connections: hub.subscriber_connections() as u64,
            numsub_counts: counts.into(),
            numsub_explanation: explanation,
        }
    }
}

/// One sentence per subscriber in `subs` that is in a gap now or has had one, in the order
/// given, saying that messages published in that window were lost for it.
pub fn warnings<'a>(subs: impl IntoIterator<Item = &'a SubscriptionView>) -> Vec<String> {
    subs.into_iter()
        .filter_map(|s| warning(&s.name, s.gaps_total, s.last_gap.as_ref()?))
        .collect()
}

fn warning(name: &str, total: u64, gap: &GapView) -> Option<String> {
    let start = gap.started_at_ms;
    Some(match gap.ended_at_ms {
        None => format!(
            "{name} is disconnected from Redis since {start} (Unix ms): messages published to \
             its targets now are lost for it"
        ),
        Some(end) => format!(
            "{name} was disconnected from Redis from {start} to {end} (Unix ms, {} ms); \
             messages published to its targets in that window were not received ({total} \
             gap(s) so far)",
            end.saturating_sub(start)
        ),
    })
}

/// The payload's JSON view when it is whole and short; otherwise the start of its text (or
/// of its base64), at most `limit` bytes, as a string, and `true`.
///
/// Only what is shown is ever decoded: a long payload's JSON document is never built (its
/// encoding is found by validating it, which keeps nothing), and a long binary payload's
/// base64 is computed for its first bytes only. A ring-buffer preview (a message larger
/// than the buffer's budget, see [`Payload::is_preview`]) is always shown cut.
fn display_payload(payload: &Payload, limit: usize) -> (Value, bool) {
    let held = payload.as_bytes();
    let whole = !payload.is_preview();
    match payload.encoding() {
        PayloadEncoding::Base64 => {
            if whole && base64_len(held.len()) <= limit {
                return (payload.json().clone(), false);
            }
            // The first `limit` characters of the whole payload's base64: every 3 bytes
            // make 4 characters, so one group more than needed, then cut.
            let start = payload.preview((limit / 4 + 1) * 3);
            let mut shown = start.json().as_str().unwrap_or_default().to_owned();
            shown.truncate(limit);
            (Value::String(shown), true)
        }
        _ => {
            let text = payload.as_str().unwrap_or_default();
            if whole && text.len() <= limit {
                (payload.json().clone(), false)
            } else {
                (
                    Value::String(cut_at_char_boundary(text, limit).to_owned()),
                    true,
                )
            }
        }
    }
}

/// Characters of the padded base64 of `n` bytes.
fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// The longest prefix of `s` that is at most `max` bytes and ends on a character boundary.
fn cut_at_char_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::json;

    fn message(bytes: &[u8]) -> ReceivedMessage {
        ReceivedMessage::new("c".into(), None, Payload::from_bytes(bytes.to_vec()))
    }

    /// A message as it goes on the wire.
    fn view(m: &ReceivedMessage, limit: usize) -> Value {
        serde_json::to_value(MessageView::new(m, limit)).unwrap()
    }

    #[test]
    fn short_payloads_are_shown_whole() {
        let v = view(&message(br#"{"body":"hi","seq":1,"of":1}"#), 64);
        assert_eq!(v["payload"], json!({"body": "hi", "seq": 1, "of": 1}));
        assert_eq!(v["encoding"], "json");
        assert_eq!(v["truncated"], false);
        assert_eq!(v["size"], 28);
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let text = "é".repeat(100); // 200 bytes
        let v = view(&message(text.as_bytes()), 51);
        assert_eq!(v["truncated"], true);
        assert_eq!(v["size"], 200);
        assert_eq!(v["payload"].as_str().unwrap(), "é".repeat(25));
        assert_eq!(v["encoding"], "text");
    }

    #[test]
    fn long_json_becomes_a_text_preview() {
        let body = format!(r#"{{"body":"{}"}}"#, "x".repeat(100));
        let v = view(&message(body.as_bytes()), 20);
        assert_eq!(v["payload"], json!(&body[..20]));
        assert_eq!(v["encoding"], "json");
        assert_eq!(v["truncated"], true);
    }

    #[test]
    fn long_payloads_are_never_decoded_whole() {
        let body = format!(r#"{{"body":"{}"}}"#, "x".repeat(100_000));
        let m = message(body.as_bytes());
        let v = view(&m, 64);
        assert_eq!(v["truncated"], true);
        assert_eq!(v["encoding"], "json");
        let before = Payload::cached_view_bytes();
        view(&m, 64);
        assert!(
            Payload::cached_view_bytes() < before + 100_000,
            "no JSON view of the whole payload was built"
        );

        let binary = message(&[0x80; 100_000]);
        let v = view(&binary, 41);
        // base64 of 0x80 0x80 0x80 is "gICA".
        assert_eq!(v["payload"], json!(&"gICA".repeat(11)[..41]));
        assert_eq!(v["encoding"], "base64");
    }

    #[test]
    fn a_short_binary_payload_is_shown_whole() {
        let v = view(&message(&[0xff, 0, 1]), 4);
        assert_eq!(v["payload"], json!("/wAB"));
        assert_eq!(v["truncated"], false);
    }

    #[test]
    fn long_binary_keeps_a_base64_prefix() {
        let v = view(&message(&[0xff; 300]), 40);
        assert_eq!(v["encoding"], "base64");
        assert_eq!(v["truncated"], true);
        assert_eq!(v["payload"].as_str().unwrap().len(), 40);
        assert_eq!(v["size"], 300);
    }
}
