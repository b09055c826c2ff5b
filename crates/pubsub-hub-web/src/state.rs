//! The `/state` document: what the page shows, built with one Redis round trip.
//!
//! The contract's fields (`docs/http-api.md`) come first (`subscriptions`, `active_channels`, `numsub`, `stats`);
//! everything else is additive, so a client of the guide's server cannot notice it:
//! per subscriber `kind`, `status`, `dropped_total`, `reconnects_total`; per message
//! `encoding`, `size`, `truncated`; in `stats` the library's extra counters; and at the top
//! `redis` (is Redis answering?), `version` (the hub's change counter), `mode` (dedicated or
//! shared connections, cluster or not, and what `numsub` counts then), the shard view
//! (`shard_channels`, `shard_numsub`), the markers of the bounded channel lists
//! (`active_channels_truncated`, `active_channels_total` and their shard twins) and the
//! other dashboards on the same Redis (`other_dashboards`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;

use pubsub_hub::{HubError, Introspection, PubSubHub, Subscription, TargetKind};

use crate::app::{AppState, DashboardSettings};
use crate::document::{
    ModeView, RedisAvailability, StateDocument, SubscriptionList, SubscriptionReading,
    SubscriptionView, warnings,
};
use crate::metrics::Metrics;

/// Messages shown per subscriber, newest first (the contract's 15).
pub const MAX_MESSAGES_PER_SUBSCRIPTION: usize = 15;

/// Payloads longer than this (bytes of text, or characters of base64) are cut for display
/// and marked `"truncated": true`, so that one answer's size stays bounded.
pub const DEFAULT_PAYLOAD_DISPLAY_BYTES: usize = 2048;

/// Builds the `/state` document.
///
/// Asks Redis once (`PUBSUB CHANNELS *`, `NUMSUB` for every exact channel a local subscriber
/// targets, `NUMPAT`, pipelined). When Redis does not answer within
/// [`DashboardSettings::state_timeout`] (or refuses), the local part is still returned, with empty server-side fields and
/// `"redis": {"available": false, "error": ...}`: the page keeps working and says why.
///
/// The server-wide lists (`active_channels`, `shard_channels`) are cut at
/// [`Limits::max_listed_channels`](crate::Limits::max_listed_channels) (its default here).
/// A hub alone has no peer directory, so `other_dashboards` is left out
/// ([`app_state_document`] fills it).
///
/// # Cancel safety
/// Cancel-safe: it only reads, and holds no lock across an `.await`; dropping it leaves
/// nothing behind.
pub async fn build_state(hub: &PubSubHub, settings: &DashboardSettings) -> StateDocument {
    let max_listed = crate::limits::DEFAULT_MAX_LISTED_CHANNELS;
    build_state_timed(hub, settings, max_listed, None, None).await
}

/// How long a built document is served while the hub's version stays. The hub's version
/// moves on every change of the local part (messages, counters, statuses, gaps,
/// subscribers added or removed), but not when Redis' server-wide view changes (another
/// client subscribes, Redis becomes unreachable before a link notices): so that part is at
/// most this old when served.
pub const STATE_MAX_AGE: Duration = Duration::from_secs(1);

/// One built `/state` document and its JSON, shared by every caller until the hub changes
/// or it is [`STATE_MAX_AGE`] old.
pub(crate) struct BuiltState {
    /// The document.
    pub(crate) doc: StateDocument,
    /// `doc` serialized, as `/state` sends it.
    pub(crate) json: Bytes,
    /// `json` gzip-compressed, made by the first caller that accepts gzip and then shared
    /// like `json` (see [`BuiltState::gzipped`]).
    gzip: OnceLock<Option<Bytes>>,
    /// When its building (and so its Redis round trip) began.
    started: Instant,
}

impl BuiltState {
    /// `json` compressed with gzip, once per build: the first caller compresses (at the
    /// fastest level: the document is mostly repeated keys and message envelopes, which
    /// even that shrinks many times over) and every later caller of the same build
    /// shares the bytes, so `/state` costs per compressed byte sent, not per subscriber.
    /// `None` only if compressing failed, which writing into memory does not; the caller
    /// then sends `json`.
    pub(crate) fn gzipped(&self) -> Option<Bytes> {
        self.gzip
            .get_or_init(|| {
                use std::io::Write;
                let mut encoder = flate2::write::GzEncoder::new(
                    Vec::with_capacity(self.json.len() / 8 + 64),
                    flate2::Compression::fast(),
                );
                encoder.write_all(&self.json).ok()?;
                encoder.finish().ok().map(Bytes::from)
            })
            .clone()
    }
}

/// A dashboard's newest built document, and the per-subscriber views it was made of.
#[derive(Default)]
pub(crate) struct StateCache {
    newest: Mutex<Option<Arc<BuiltState>>>,
    /// One build at a time: callers arriving meanwhile wait for it and share its result.
    building: tokio::sync::Mutex<()>,
    /// The last reading of each subscriber (by name) and the view made of it: an equal
    /// reading reuses the view instead of rebuilding its messages.
    views: Mutex<HashMap<String, (SubscriptionReading, Arc<SubscriptionView>)>>,
}

impl StateCache {
    /// The newest document, if it shows hub version `version` and is young enough.
    fn fresh(&self, version: u64) -> Option<Arc<BuiltState>> {
        lock(&self.newest)
            .as_ref()
            .filter(|b| b.doc.version == version && b.started.elapsed() < STATE_MAX_AGE)
            .cloned()
    }

    /// The views of `subs`, reusing those whose subscription reads as it did last time.
    fn views(
        &self,
        subs: &[Arc<Subscription>],
        settings: &DashboardSettings,
    ) -> Vec<Arc<SubscriptionView>> {
        let mut last = lock(&self.views);
        let mut next = HashMap::with_capacity(subs.len());
        let views = subs
            .iter()
            .map(|sub| {
                let messages = sub.messages(Some(settings.message_limit));
                let reading = SubscriptionReading::of(Arc::clone(sub), messages);
                let view = match last.remove(sub.name()) {
                    Some((before, view)) if before.same_as(&reading) => view,
                    _ => Arc::new(SubscriptionView::of(
                        &reading,
                        settings.payload_display_bytes,
                    )),
                };
                next.insert(sub.name().to_owned(), (reading, Arc::clone(&view)));
                view
            })
            .collect();
        *last = next;
        views
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The targets of the local subscribers of `kind`, sorted and deduplicated.
fn targets_of(subs: &[Arc<Subscription>], kind: TargetKind) -> BTreeSet<String> {
    subs.iter()
        .filter(|s| s.kind() == kind)
        .flat_map(|s| s.targets().iter().cloned())
        .collect()
}

/// [`build_state`] with the list bound `max_listed`, timing the Redis round trip in
/// `metrics` when given, and reusing the unchanged subscribers' views from `cache`.
async fn build_state_timed(
    hub: &PubSubHub,
    settings: &DashboardSettings,
    max_listed: usize,
    metrics: Option<&Metrics>,
    cache: Option<&StateCache>,
) -> StateDocument {
    // Read first: everything built below shows at least this version.
    let version = hub.version();
    let subs = hub.subscriptions();
    let exact = targets_of(&subs, TargetKind::Channel);
    let shard = targets_of(&subs, TargetKind::Shard);
    // One pipeline asks NUMSUB and SHARDNUMSUB about the same names: both sets together.
    let exact_channels: Vec<String> = exact.union(&shard).cloned().collect();

    let started = std::time::Instant::now();
    let introspection =
        match tokio::time::timeout(settings.state_timeout, hub.introspect("*", &exact_channels))
            .await
        {
            Ok(result) => result,
            Err(_) => Err(HubError::Timeout {
                operation: "PUBSUB",
                after: settings.state_timeout,
            }),
        };
    if let Some(metrics) = metrics {
        metrics.observe_redis("introspect", started.elapsed(), introspection.is_ok());
    }
    let mut stats = hub.local_stats();
    let (found, redis) = match introspection {
        Ok(found) => {
            stats.pattern_subscriptions = found.numpat;
            (
                Introspected::from(found),
                RedisAvailability {
                    available: true,
                    error: None,
                },
            )
        }
        Err(e) => {
            tracing::debug!(error = %e, "PUBSUB introspection failed");
            (
                Introspected::default(),
                RedisAvailability {
                    available: false,
                    error: Some(redis_problem(&e)),
                },
            )
        }
    };
    let numsub: BTreeMap<String, i64> = found
        .numsub
        .into_iter()
        .filter(|(c, _)| exact.contains(c))
        .collect();
    let shard_numsub: BTreeMap<String, i64> = found
        .shard_numsub
        .into_iter()
        .filter(|(c, _)| shard.contains(c))
        .collect();
    let (active_channels, active_total) = bounded_list(found.active_channels, max_listed);
    let (shard_channels, shard_total) = bounded_list(found.shard_channels, max_listed);

    let subscriptions: Vec<Arc<SubscriptionView>> = match cache {
        Some(cache) => cache.views(&subs, settings),
        None => subs
            .iter()
            .map(|s| {
                Arc::new(SubscriptionView::new(
                    s,
                    settings.message_limit,
                    settings.payload_display_bytes,
                ))
            })
            .collect(),
    };
    let warnings = warnings(subscriptions.iter().map(|v| &**v));
    let subscriptions = SubscriptionList::from(subscriptions);

    StateDocument {
        warnings,
        subscriptions,
        active_channels_truncated: active_channels.len() < active_total,
        active_channels_total: active_total as u64,
        active_channels,
        numsub,
        stats: stats.into(),
        redis,
        version,
        mode: ModeView::of(hub),
        shard_channels_truncated: shard_channels.len() < shard_total,
        shard_channels_total: shard_total as u64,
        shard_channels,
        shard_numsub,
        other_dashboards: None,
    }
}

/// What the introspection found, or nothing while Redis does not answer.
#[derive(Default)]
struct Introspected {
    active_channels: Vec<String>,
    numsub: BTreeMap<String, i64>,
    shard_channels: Vec<String>,
    shard_numsub: BTreeMap<String, i64>,
}

impl From<Introspection> for Introspected {
    fn from(i: Introspection) -> Self {
        Introspected {
            active_channels: i.active_channels,
            numsub: i.numsub,
            shard_channels: i.shard_channels,
            shard_numsub: i.shard_numsub,
        }
    }
}

/// The first `max` names of a sorted list, and how many there were.
fn bounded_list(mut names: Vec<String>, max: usize) -> (Vec<String>, usize) {
    let total = names.len();
    names.truncate(max);
    (names, total)
}

/// The `/state` document of a running dashboard: [`build_state`] with the dashboard's
/// list bound, its Redis round trip timed in its metrics, and the other dashboards as its
/// [`PeerDirectory`](crate::peers::PeerDirectory) last read them (no Redis call of its own);
/// served from the dashboard's newest build while the hub's version stays and that build is
/// younger than [`STATE_MAX_AGE`].
///
/// # Cancel safety
/// Cancel-safe: it only reads, and holds no lock across an `.await` but the one that lets
/// one caller build at a time, which a dropped future releases; a dropped build leaves the
/// previous document in place.
pub async fn app_state_document(app: &AppState) -> StateDocument {
    app_state(app).await.doc.clone()
}

/// [`app_state_document`], shared and with its JSON.
pub(crate) async fn app_state(app: &AppState) -> Arc<BuiltState> {
    let cache = &app.states;
    if let Some(built) = cache.fresh(app.hub.version()) {
        return built;
    }
    let _building = cache.building.lock().await;
    if let Some(built) = cache.fresh(app.hub.version()) {
        return built;
    }
    let started = Instant::now();
    let mut doc = build_state_timed(
        &app.hub,
        &app.settings,
        app.limits.max_listed_channels,
        Some(&app.metrics),
        Some(cache),
    )
    .await;
    doc.other_dashboards = Some(app.peers.snapshot());
    let json = match serde_json::to_vec(&doc) {
        Ok(json) => Bytes::from(json),
        Err(e) => {
            // Only a map with non-string keys could fail, and the document has none.
            tracing::error!(error = %e, "cannot serialize the state");
            Bytes::from_static(b"{}")
        }
    };
    let built = Arc::new(BuiltState {
        doc,
        json,
        gzip: OnceLock::new(),
        started,
    });
    *lock(&cache.newest) = Some(Arc::clone(&built));
    built
}

/// A short, secret-free sentence about why Redis did not answer.
fn redis_problem(e: &HubError) -> String {
    if let Some(code) = e.refusal() {
        format!(
            "Redis refused the dashboard's user ({code}): fix the credentials or the ACL \
             (PUBSUB, PUBLISH and SUBSCRIBE are needed)"
        )
    } else if e.is_timeout() {
        "Redis did not answer in time".into()
    } else if e.is_closed() {
        "the dashboard is shutting down".into()
    } else {
        "cannot reach Redis".into()
    }
}
