//! The hub: publishing, the subscription registry, introspection and statistics.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Serialize;
use serde_json::Value;

use crate::config::{ConnectionMode, HubConfig};
use crate::error::{HubError, bounded};
use crate::link::Link;
use crate::subscription::{Subscription, SubscriptionStatus, TargetKind};

/// Lifetime counters shared by the hub, its links and its subscriptions. They only go up,
/// except through [`PubSubHub::reset_stats`].
#[derive(Default)]
pub(crate) struct HubCounters {
    pub(crate) published_total: AtomicU64,
    pub(crate) delivered_total: AtomicU64,
    pub(crate) publish_errors_total: AtomicU64,
    pub(crate) received_total: AtomicU64,
    pub(crate) dropped_total: AtomicU64,
    pub(crate) reconnects_total: AtomicU64,
    /// Bumped on every observable change (message, status, registry, publish); watchers
    /// such as the dashboard's push stream wait on `changed`.
    pub(crate) version: AtomicU64,
    pub(crate) changed: tokio::sync::Notify,
}

impl HubCounters {
    /// Records that something observable changed and wakes the watchers.
    pub(crate) fn touch(&self) {
        self.version.fetch_add(1, Ordering::Release);
        self.changed.notify_waiters();
    }
}

/// A snapshot of the hub's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// PUBLISH calls that succeeded.
    pub published_total: u64,
    /// Sum of the receiver counts Redis returned for those PUBLISH calls.
    pub delivered_total: u64,
    /// Messages received by this hub's subscriptions (one per subscription per message),
    /// including subscriptions since removed.
    pub received_total: u64,
    /// Subscriptions open now.
    pub active_subscriptions: u64,
    /// `PUBSUB NUMPAT`: pattern subscriptions on the whole server (0 when Redis is down
    /// or when taken from [`PubSubHub::local_stats`]).
    pub pattern_subscriptions: i64,
    /// Successful publishes per channel, for at most `HubConfig::max_tracked_channels`
    /// channels.
    pub channel_published: BTreeMap<String, u64>,
    /// Publishes to channels beyond that bound.
    pub channel_published_other: u64,
    /// PUBLISH calls that failed or timed out.
    pub publish_errors_total: u64,
    /// Events dropped for consumers that fell behind.
    pub dropped_total: u64,
    /// Subscriber connections re-established after a loss.
    pub reconnects_total: u64,
}

/// What Redis reports about pub/sub, fetched in one round trip.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Introspection {
    /// `PUBSUB CHANNELS <pattern>`, sorted.
    pub active_channels: Vec<String>,
    /// `PUBSUB NUMSUB` for the channels asked about.
    pub numsub: BTreeMap<String, i64>,
    /// `PUBSUB NUMPAT`.
    pub numpat: i64,
}

/// Publishes JSON or raw bytes and manages named subscribers over one Redis server.
///
/// Cloning is cheap and every clone is the same hub.
#[derive(Clone)]
pub struct PubSubHub {
    inner: Arc<HubInner>,
}

pub(crate) struct HubInner {
    client: redis::Client,
    config: Arc<HubConfig>,
    /// The connection for PUBLISH and PUBSUB; taken on shutdown so no socket lingers.
    publisher: RwLock<Option<ConnectionManager>>,
    registry: Mutex<Registry>,
    counters: Arc<HubCounters>,
    channel_published: Mutex<ChannelCounts>,
    /// The fixed links of shared mode (empty in dedicated mode).
    shared_links: Vec<Arc<Link>>,
    next_sub_id: AtomicU64,
    closed: AtomicBool,
}

#[derive(Default)]
struct Registry {
    subs: BTreeMap<String, Arc<Subscription>>,
    /// Names being subscribed right now, so two racing calls cannot both take a name.
    pending: HashSet<String>,
}

#[derive(Default)]
struct ChannelCounts {
    by_channel: HashMap<String, u64>,
    other: u64,
}

impl PubSubHub {
    /// Connects to Redis with the default configuration and the given ring-buffer size
    /// (the guide's constructor). Fails if Redis cannot be reached.
    pub async fn new(client: redis::Client, buffer_size: usize) -> Result<Self, HubError> {
        Self::with_config(client, HubConfig::default().with_buffer_size(buffer_size)).await
    }

    /// Connects to Redis with a full configuration. Fails if Redis cannot be reached within
    /// the connect and command time-outs.
    pub async fn with_config(client: redis::Client, config: HubConfig) -> Result<Self, HubError> {
        let cm_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout))
            .set_number_of_retries(1)
            .set_max_delay(config.reconnect_max);
        let publisher = bounded(
            "connect",
            config.connect_timeout + config.command_timeout,
            client.get_connection_manager_with_config(cm_config),
        )
        .await?;
        let config = Arc::new(config);
        let counters = Arc::new(HubCounters::default());
        let shared_links = match config.mode {
            ConnectionMode::Shared { connections } => (0..connections.max(1))
                .map(|_| {
                    Link::spawn(
                        client.clone(),
                        Arc::clone(&config),
                        Arc::clone(&counters),
                        false,
                    )
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok(PubSubHub {
            inner: Arc::new(HubInner {
                client,
                config,
                publisher: RwLock::new(Some(publisher)),
                registry: Mutex::new(Registry::default()),
                counters,
                channel_published: Mutex::new(ChannelCounts::default()),
                shared_links,
                next_sub_id: AtomicU64::new(1),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// Dedicated or shared subscriber connections.
    pub fn mode(&self) -> ConnectionMode {
        self.inner.config.mode
    }

    /// The Redis client the hub was built from.
    pub fn client(&self) -> &redis::Client {
        &self.inner.client
    }

    /// JSON-encodes `message` and PUBLISHes it; returns how many subscribers Redis delivered
    /// it to. Fails within `command_timeout` when Redis is down or stalled.
    pub async fn publish(&self, channel: &str, message: &Value) -> Result<i64, HubError> {
        let payload = serde_json::to_vec(message).unwrap_or_else(|_| b"null".to_vec());
        self.publish_bytes(channel, &payload).await
    }

    /// PUBLISHes `payload` byte for byte; returns Redis' delivered count.
    #[tracing::instrument(level = "debug", name = "publish", skip_all, fields(channel = channel, bytes = payload.len()))]
    pub async fn publish_bytes(&self, channel: &str, payload: &[u8]) -> Result<i64, HubError> {
        let mut conn = self.publisher()?;
        let timeout = self.inner.config.command_timeout;
        let result: Result<i64, HubError> = bounded(
            "PUBLISH",
            timeout,
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload)
                .query_async(&mut conn),
        )
        .await;
        let counters = &self.inner.counters;
        match result {
            Ok(delivered) => {
                counters.published_total.fetch_add(1, Ordering::Relaxed);
                counters
                    .delivered_total
                    .fetch_add(delivered.max(0) as u64, Ordering::Relaxed);
                self.count_channel(channel);
                counters.touch();
                Ok(delivered)
            }
            Err(e) => {
                counters
                    .publish_errors_total
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "publish failed");
                Err(e)
            }
        }
    }

    fn count_channel(&self, channel: &str) {
        let max = self.inner.config.max_tracked_channels;
        let mut counts = lock(&self.inner.channel_published);
        if let Some(n) = counts.by_channel.get_mut(channel) {
            *n += 1;
        } else if counts.by_channel.len() < max {
            counts.by_channel.insert(channel.to_owned(), 1);
        } else {
            counts.other += 1;
        }
    }

    fn publisher(&self) -> Result<ConnectionManager, HubError> {
        self.inner
            .publisher
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(HubError::Closed)
    }

    /// Creates subscriber `name` on exact `channels` (`SUBSCRIBE`). Returns once Redis has
    /// confirmed every channel, so anything published afterwards is delivered.
    pub async fn subscribe(
        &self,
        name: &str,
        channels: Vec<String>,
    ) -> Result<Arc<Subscription>, HubError> {
        self.subscribe_kind(name, TargetKind::Channel, channels)
            .await
    }

    /// Creates subscriber `name` on glob `patterns` (`PSUBSCRIBE`).
    pub async fn psubscribe(
        &self,
        name: &str,
        patterns: Vec<String>,
    ) -> Result<Arc<Subscription>, HubError> {
        self.subscribe_kind(name, TargetKind::Pattern, patterns)
            .await
    }

    /// Creates subscriber `name` of the given kind. Duplicate targets are ignored; an empty
    /// name, no targets, an empty target, a name in use or a full hub is an error, and so
    /// is Redis being unreachable.
    #[tracing::instrument(level = "debug", name = "subscribe", skip_all, fields(name = name, kind = kind.as_str(), targets = targets.len()))]
    pub async fn subscribe_kind(
        &self,
        name: &str,
        kind: TargetKind,
        targets: Vec<String>,
    ) -> Result<Arc<Subscription>, HubError> {
        if name.is_empty() {
            return Err(HubError::InvalidName("the name is empty".into()));
        }
        if targets.is_empty() {
            return Err(HubError::EmptyTargets);
        }
        if targets.iter().any(String::is_empty) {
            return Err(HubError::InvalidTarget(
                "a target is the empty string".into(),
            ));
        }
        let mut seen = HashSet::new();
        let targets: Vec<String> = targets
            .into_iter()
            .filter(|t| seen.insert(t.clone()))
            .collect();
        self.reserve(name)?;
        let result = self.open(name, kind, targets).await;
        let mut registry = lock(&self.inner.registry);
        registry.pending.remove(name);
        if let Ok(sub) = &result {
            registry.subs.insert(name.to_owned(), Arc::clone(sub));
        }
        drop(registry);
        self.inner.counters.touch();
        result
    }

    fn reserve(&self, name: &str) -> Result<(), HubError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(HubError::Closed);
        }
        let mut registry = lock(&self.inner.registry);
        if registry.subs.contains_key(name) || registry.pending.contains(name) {
            return Err(HubError::DuplicateName(name.to_owned()));
        }
        let max = self.inner.config.max_subscriptions;
        if registry.subs.len() + registry.pending.len() >= max {
            return Err(HubError::LimitExceeded {
                limit: "max_subscriptions",
                max,
            });
        }
        registry.pending.insert(name.to_owned());
        Ok(())
    }

    async fn open(
        &self,
        name: &str,
        kind: TargetKind,
        targets: Vec<String>,
    ) -> Result<Arc<Subscription>, HubError> {
        let inner = &self.inner;
        let sub = Arc::new(Subscription::new(
            inner.next_sub_id.fetch_add(1, Ordering::Relaxed),
            name.to_owned(),
            targets.clone(),
            kind,
            inner.config.buffer_size,
            inner.config.queue_capacity,
            Arc::downgrade(inner),
            Arc::clone(&inner.counters),
        ));
        let groups: Vec<(Arc<Link>, Vec<String>)> = if inner.shared_links.is_empty() {
            let link = Link::spawn(
                inner.client.clone(),
                Arc::clone(&inner.config),
                Arc::clone(&inner.counters),
                true,
            );
            vec![(link, targets)]
        } else {
            let mut by_link: BTreeMap<usize, Vec<String>> = BTreeMap::new();
            for target in targets {
                let i = shard_of(kind, &target, inner.shared_links.len());
                by_link.entry(i).or_default().push(target);
            }
            by_link
                .into_iter()
                .map(|(i, t)| (Arc::clone(&inner.shared_links[i]), t))
                .collect()
        };
        sub.set_links(groups.iter().map(|(l, _)| Arc::clone(l)).collect());
        let attaches = groups
            .into_iter()
            .map(|(link, t)| {
                let sub = Arc::clone(&sub);
                async move { link.attach(sub, t).await }
            })
            .collect::<Vec<_>>();
        let results = futures_util::future::join_all(attaches).await;
        if let Some(err) = results.into_iter().find_map(Result::err) {
            sub.close_links().await;
            return Err(err);
        }
        Ok(sub)
    }

    /// All subscriptions, sorted by name.
    pub fn subscriptions(&self) -> Vec<Arc<Subscription>> {
        lock(&self.inner.registry).subs.values().cloned().collect()
    }

    /// The subscription called `name`, if any.
    pub fn get_subscription(&self, name: &str) -> Option<Arc<Subscription>> {
        lock(&self.inner.registry).subs.get(name).cloned()
    }

    /// Closes and removes subscriber `name`; `false` if there was none. Redis has released
    /// its targets when this returns.
    pub async fn unsubscribe(&self, name: &str) -> bool {
        let sub = lock(&self.inner.registry).subs.remove(name);
        match sub {
            Some(sub) => {
                sub.close_links().await;
                self.inner.counters.touch();
                true
            }
            None => false,
        }
    }

    /// Closes every subscription and every connection of this hub. Later calls fail with
    /// [`HubError::Closed`]. Returns when no connection of the hub is left open.
    pub async fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.close_all().await;
        for link in &self.inner.shared_links {
            link.shutdown().await;
        }
        self.inner
            .publisher
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// Closes every subscription but keeps the hub usable (the dashboard's reset).
    pub async fn close_all(&self) {
        let subs: Vec<Arc<Subscription>> = std::mem::take(&mut lock(&self.inner.registry).subs)
            .into_values()
            .collect();
        futures_util::future::join_all(subs.iter().map(|s| s.close_links())).await;
        self.inner.counters.touch();
    }

    /// `PUBSUB CHANNELS pattern`: channels with at least one exact subscriber, sorted.
    pub async fn active_channels(&self, pattern: &str) -> Result<Vec<String>, HubError> {
        let mut conn = self.publisher()?;
        let names: Vec<Vec<u8>> = bounded(
            "PUBSUB CHANNELS",
            self.inner.config.command_timeout,
            redis::cmd("PUBSUB")
                .arg("CHANNELS")
                .arg(pattern)
                .query_async(&mut conn),
        )
        .await?;
        Ok(sorted_names(names))
    }

    /// `PUBSUB NUMSUB`: exact subscribers per channel.
    pub async fn channel_subscriber_counts(
        &self,
        channels: &[String],
    ) -> Result<BTreeMap<String, i64>, HubError> {
        if channels.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut conn = self.publisher()?;
        let flat: Vec<redis::Value> = bounded(
            "PUBSUB NUMSUB",
            self.inner.config.command_timeout,
            redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(channels)
                .query_async(&mut conn),
        )
        .await?;
        numsub_pairs(flat)
    }

    /// `PUBSUB NUMPAT`: pattern subscriptions on the whole server.
    pub async fn pattern_subscriber_count(&self) -> Result<i64, HubError> {
        let mut conn = self.publisher()?;
        bounded(
            "PUBSUB NUMPAT",
            self.inner.config.command_timeout,
            redis::cmd("PUBSUB").arg("NUMPAT").query_async(&mut conn),
        )
        .await
    }

    /// `PUBSUB CHANNELS`, `NUMSUB` and `NUMPAT` in one pipelined round trip.
    pub async fn introspect(
        &self,
        channels_pattern: &str,
        numsub_channels: &[String],
    ) -> Result<Introspection, HubError> {
        let mut conn = self.publisher()?;
        let mut pipe = redis::pipe();
        pipe.cmd("PUBSUB").arg("CHANNELS").arg(channels_pattern);
        pipe.cmd("PUBSUB").arg("NUMSUB").arg(numsub_channels);
        pipe.cmd("PUBSUB").arg("NUMPAT");
        let (names, flat, numpat): (Vec<Vec<u8>>, Vec<redis::Value>, i64) = bounded(
            "PUBSUB",
            self.inner.config.command_timeout,
            pipe.query_async(&mut conn),
        )
        .await?;
        Ok(Introspection {
            active_channels: sorted_names(names),
            numsub: numsub_pairs(flat)?,
            numpat,
        })
    }

    /// The counters plus `PUBSUB NUMPAT` (0 if Redis does not answer), as in the guide.
    pub async fn stats(&self) -> Stats {
        let mut stats = self.local_stats();
        stats.pattern_subscriptions = self.pattern_subscriber_count().await.unwrap_or(0);
        stats
    }

    /// The counters only, without asking Redis.
    pub fn local_stats(&self) -> Stats {
        let c = &self.inner.counters;
        let counts = lock(&self.inner.channel_published);
        Stats {
            published_total: c.published_total.load(Ordering::Relaxed),
            delivered_total: c.delivered_total.load(Ordering::Relaxed),
            received_total: c.received_total.load(Ordering::Relaxed),
            active_subscriptions: lock(&self.inner.registry).subs.len() as u64,
            pattern_subscriptions: 0,
            channel_published: counts
                .by_channel
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            channel_published_other: counts.other,
            publish_errors_total: c.publish_errors_total.load(Ordering::Relaxed),
            dropped_total: c.dropped_total.load(Ordering::Relaxed),
            reconnects_total: c.reconnects_total.load(Ordering::Relaxed),
        }
    }

    /// Zeroes the hub's counters (per-subscription counters are kept).
    pub fn reset_stats(&self) {
        let c = &self.inner.counters;
        for counter in [
            &c.published_total,
            &c.delivered_total,
            &c.publish_errors_total,
            &c.received_total,
            &c.dropped_total,
            &c.reconnects_total,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        *lock(&self.inner.channel_published) = ChannelCounts::default();
        c.touch();
    }

    /// A number that grows whenever something observable changes: a message received, a
    /// subscription added or removed, a status change, a publish.
    pub fn version(&self) -> u64 {
        self.inner.counters.version.load(Ordering::Acquire)
    }

    /// Waits until [`PubSubHub::version`] exceeds `since` and returns the new version.
    /// Cheap to call in a loop; use it to push updates instead of polling.
    pub async fn changed(&self, since: u64) -> u64 {
        let counters = &self.inner.counters;
        loop {
            let notified = counters.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = counters.version.load(Ordering::Acquire);
            if now > since {
                return now;
            }
            notified.await;
        }
    }

    /// Subscriber connections this hub holds to Redis right now (live ones only).
    pub fn subscriber_connections(&self) -> usize {
        if self.inner.shared_links.is_empty() {
            self.subscriptions()
                .iter()
                .filter(|s| s.status() == SubscriptionStatus::Live)
                .count()
        } else {
            self.inner
                .shared_links
                .iter()
                .filter(|l| l.status() == SubscriptionStatus::Live)
                .count()
        }
    }

    /// Distinct channels and patterns subscribed on Redis through the shared links
    /// (0 in dedicated mode).
    pub fn shared_redis_targets(&self) -> u64 {
        self.inner
            .shared_links
            .iter()
            .map(|l| l.redis_targets())
            .sum()
    }
}

impl HubInner {
    /// Removes `sub` from the registry if it is the one registered under its name.
    pub(crate) fn forget(&self, sub: &Subscription) {
        let mut registry = lock(&self.registry);
        if registry
            .subs
            .get(sub.name())
            .is_some_and(|s| std::ptr::eq(Arc::as_ptr(s), sub))
        {
            registry.subs.remove(sub.name());
        }
        drop(registry);
        self.counters.touch();
    }
}

impl Drop for HubInner {
    /// A hub dropped without `shutdown()` still stops its link tasks: their routes hold the
    /// subscriptions, which hold the links, so nothing else would end them.
    fn drop(&mut self) {
        let registry = lock(&self.registry);
        for sub in registry.subs.values() {
            sub.abandon();
        }
        for link in &self.shared_links {
            link.abandon();
        }
    }
}

impl std::fmt::Debug for PubSubHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSubHub")
            .field("mode", &self.inner.config.mode)
            .field("subscriptions", &lock(&self.inner.registry).subs.len())
            .finish()
    }
}

/// Picks the shared link for a target: stable for the hub's lifetime.
fn shard_of(kind: TargetKind, target: &str, links: usize) -> usize {
    let mut h = DefaultHasher::new();
    kind.hash(&mut h);
    target.hash(&mut h);
    (h.finish() % links as u64) as usize
}

fn sorted_names(names: Vec<Vec<u8>>) -> Vec<String> {
    let mut names: Vec<String> = names
        .into_iter()
        .map(|n| String::from_utf8_lossy(&n).into_owned())
        .collect();
    names.sort();
    names
}

fn numsub_pairs(flat: Vec<redis::Value>) -> Result<BTreeMap<String, i64>, HubError> {
    let mut out = BTreeMap::new();
    let mut it = flat.into_iter();
    while let (Some(name), Some(count)) = (it.next(), it.next()) {
        let name: Vec<u8> = redis::from_redis_value(name).map_err(redis::RedisError::from)?;
        let count: i64 = redis::from_redis_value(count).map_err(redis::RedisError::from)?;
        out.insert(String::from_utf8_lossy(&name).into_owned(), count);
    }
    Ok(out)
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
