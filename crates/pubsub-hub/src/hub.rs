//! The hub: publishing, the subscription registry, and the public face of introspection
//! and statistics (computed in the private `introspect` and `stats` modules).

use std::collections::{BTreeMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures_util::FutureExt;

use serde_json::Value;

#[cfg(feature = "cluster")]
use crate::cluster;
use crate::cluster::slot_of;
use crate::config::{ConnectionMode, HubConfig};
use crate::error::{HubError, bounded};
use crate::history::Batcher;
use crate::introspect::Asker;
use crate::links::{self, Link, LinkEnv};
use crate::locks::{lock, read, write};
use crate::publisher::{Publisher, ServerPublisher};
use crate::stats::{ChannelCounts, HubCounters};
use crate::subscription::{Owner, Released, Subscription, TargetKind};
use crate::topology::Topology;

// Their definitions live with the code that fills them; the hub is where users meet them.
pub use crate::introspect::Introspection;
pub use crate::stats::{MemoryUse, Stats};

/// Publishes JSON or raw bytes and manages named subscribers over one Redis server or a
/// Redis Cluster.
///
/// Cloning is cheap and every clone is the same hub.
#[derive(Clone)]
pub struct PubSubHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    /// The server's client, or a client for the first seed node of a cluster.
    client: redis::Client,
    config: Arc<HubConfig>,
    /// The connection for PUBLISH and PUBSUB; taken on shutdown so no socket lingers.
    publisher: ArcSwapOption<Publisher>,
    /// Where the links connect: the server, or the cluster's nodes.
    topology: Arc<Topology>,
    registry: Mutex<Registry>,
    counters: Arc<HubCounters>,
    channel_published: RwLock<ChannelCounts>,
    /// The fixed links of shared mode (empty in dedicated mode).
    shared_links: Vec<Arc<Link>>,
    /// Shared mode's shard links, as many as `shared_links`; a channel goes to the one its
    /// hash slot picks. They connect only when a shard channel is subscribed.
    shared_shard_links: Vec<Arc<Link>>,
    next_sub_id: AtomicU64,
    closed: AtomicBool,
    /// Woken whenever a `subscribe` call leaves `Registry::pending`; `shutdown` waits on it.
    pending_done: tokio::sync::Notify,
    /// Releases of closed subscriptions still under way (their closers may have gone
    /// away); `close_all` and `shutdown` wait for them.
    retiring: Mutex<Retiring>,
    /// The queues that batch concurrent durable publishes of a channel (see the history
    /// module's docs).
    batcher: Batcher,
}

#[derive(Default)]
struct Registry {
    subs: BTreeMap<String, Arc<Subscription>>,
    /// Names being subscribed right now, so two racing calls cannot both take a name.
    pending: HashSet<String>,
}

/// The publishing connection's connection and response time-outs: the hub's.
fn publisher_timeouts(config: &HubConfig) -> (Duration, Duration) {
    (config.connect_timeout, config.command_timeout)
}

impl PubSubHub {
    /// Connects to Redis with the default configuration and the given ring-buffer size
    /// (the guide's constructor). Fails if Redis cannot be reached.
    ///
    /// # Cancel safety
    /// As [`PubSubHub::with_config`]: a dropped future leaves nothing behind.
    pub async fn new(client: redis::Client, buffer_size: usize) -> Result<Self, HubError> {
        Self::with_config(client, HubConfig::default().with_buffer_size(buffer_size)).await
    }

    /// Connects to Redis with a full configuration. Fails with [`HubError::InvalidConfig`]
    /// if [`HubConfig::validate`] refuses it (before anything is opened), and if Redis
    /// cannot be reached within the connect and command time-outs.
    ///
    /// # Cancel safety
    /// Nothing is started until the hub is returned: a dropped future leaves at most a
    /// publishing connection being opened, which is closed with it.
    pub async fn with_config(client: redis::Client, config: HubConfig) -> Result<Self, HubError> {
        config.validate()?;
        let publisher = bounded(
            "connect",
            config.connect_timeout + config.command_timeout,
            ServerPublisher::connect(client.clone(), publisher_timeouts(&config)),
        )
        .await?;
        let topology = Topology::server(client.clone())?;
        Ok(Self::assemble(
            client,
            config,
            Publisher::Server(publisher),
            topology,
        ))
    }

    /// Like [`PubSubHub::with_config`], but without waiting for Redis: the hub exists at
    /// once, and its connections are made when they are first needed. Until Redis answers,
    /// publishing, subscribing and introspection fail as during any outage; afterwards they
    /// work without a new hub. For a server that must start while its Redis is down (the
    /// dashboard with an address the user configured).
    ///
    /// Fails with [`HubError::InvalidConfig`] if [`HubConfig::validate`] refuses the
    /// configuration, and on a client redis-rs cannot use; never because Redis is away.
    /// Must be called within a Tokio runtime (the publishing connection's manager spawns a
    /// task).
    pub fn with_config_lazy(client: redis::Client, config: HubConfig) -> Result<Self, HubError> {
        config.validate()?;
        let publisher = ServerPublisher::lazy(client.clone(), publisher_timeouts(&config));
        let topology = Topology::server(client.clone())?;
        Ok(Self::assemble(
            client,
            config,
            Publisher::Server(publisher),
            topology,
        ))
    }

    /// Connects to a Redis Cluster through any of `nodes` (`redis://host:port/` URLs with
    /// the credentials every node accepts) and learns its topology.
    ///
    /// Plain channels and patterns are subscribed on any reachable node (a PUBLISH anywhere
    /// reaches every node over the cluster bus); shard channels on the master owning their
    /// hash slot. Introspection merges the answers of every reachable node. Fails if no node
    /// answers within the connect and command time-outs, and with
    /// [`HubError::InvalidConfig`] if [`HubConfig::validate`] refuses the configuration.
    ///
    /// # Cancel safety
    /// A dropped future drops the topology view and the connections opened so far; the
    /// view's background refresh ends by itself once the view is gone.
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub async fn cluster(nodes: Vec<String>, config: HubConfig) -> Result<Self, HubError> {
        config.validate()?;
        let infos = nodes
            .iter()
            .map(|n| redis::IntoConnectionInfo::into_connection_info(n.as_str()))
            .collect::<Result<Vec<_>, _>>()?;
        let budget = config.connect_timeout + config.command_timeout;
        let view = match tokio::time::timeout(budget, cluster::connect(&infos, &config)).await {
            Ok(view) => view?,
            Err(_) => {
                return Err(HubError::Timeout {
                    operation: "CLUSTER NODES",
                    after: budget,
                });
            }
        };
        let cluster_client = redis::cluster::ClusterClientBuilder::new(infos.clone())
            .connection_timeout(config.connect_timeout)
            .response_timeout(config.command_timeout)
            .retries(2)
            .build()?;
        let publisher = bounded("connect", budget, cluster_client.get_async_connection()).await?;
        let client = redis::Client::open(infos[0].clone())?;
        Ok(Self::assemble(
            client,
            config,
            Publisher::Cluster {
                conn: publisher,
                view: Arc::clone(&view),
            },
            Topology::Cluster(view),
        ))
    }

    fn assemble(
        client: redis::Client,
        config: HubConfig,
        publisher: Publisher,
        topology: Topology,
    ) -> PubSubHub {
        let shared = match config.mode {
            ConnectionMode::Shared { connections } => connections,
            _ => 0,
        };
        let env = LinkEnv {
            topology: Arc::new(topology),
            config: Arc::new(config),
            counters: Arc::new(HubCounters::default()),
        };
        let shared_links = (0..shared)
            .map(|_| links::spawn(&env, TargetKind::Channel, false))
            .collect();
        let shared_shard_links = (0..shared)
            .map(|_| links::spawn(&env, TargetKind::Shard, false))
            .collect();
        PubSubHub {
            inner: Arc::new(HubInner {
                client,
                config: env.config,
                publisher: ArcSwapOption::from_pointee(publisher),
                topology: env.topology,
                registry: Mutex::new(Registry::default()),
                counters: env.counters,
                channel_published: RwLock::new(ChannelCounts::default()),
                shared_links,
                shared_shard_links,
                next_sub_id: AtomicU64::new(1),
                closed: AtomicBool::new(false),
                pending_done: tokio::sync::Notify::new(),
                retiring: Mutex::new(Retiring::default()),
                batcher: Batcher::default(),
            }),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// Dedicated or shared subscriber connections.
    pub fn mode(&self) -> ConnectionMode {
        self.inner.config.mode
    }

    /// The Redis client the hub was built from (in cluster mode, one for the first node).
    pub fn client(&self) -> &redis::Client {
        &self.inner.client
    }

    /// True for a hub made with `PubSubHub::cluster` (never without the `cluster` feature).
    pub fn is_cluster(&self) -> bool {
        self.inner.topology.is_cluster()
    }

    /// JSON-encodes `message` and PUBLISHes it; returns how many subscribers Redis delivered
    /// it to. Fails within `command_timeout` when Redis is down or stalled.
    ///
    /// # Cancel safety
    /// Dropping the future leaves the hub as it was: nothing is counted (neither published
    /// nor failed), and the connection stays usable for the next call. The command may or
    /// may not have reached Redis by then, so the message may or may not have been sent,
    /// as with any request whose answer is not awaited.
    pub async fn publish(&self, channel: &str, message: &Value) -> Result<i64, HubError> {
        let payload = serde_json::to_vec(message).unwrap_or_else(|_| b"null".to_vec());
        self.publish_bytes(channel, &payload).await
    }

    /// PUBLISHes `payload` byte for byte; returns Redis' delivered count.
    ///
    /// # Cancel safety
    /// Dropping the future leaves the hub as it was: nothing is counted (neither published
    /// nor failed), and the connection stays usable for the next call. The command may or
    /// may not have reached Redis by then, so the message may or may not have been sent,
    /// as with any request whose answer is not awaited.
    #[tracing::instrument(level = "debug", name = "publish", skip_all, fields(channel = channel, bytes = payload.len()))]
    pub async fn publish_bytes(&self, channel: &str, payload: &[u8]) -> Result<i64, HubError> {
        self.send_publish("PUBLISH", channel, payload).await
    }

    /// JSON-encodes `message` and SPUBLISHes it to shard channel `channel` (Redis 7+): only
    /// [`PubSubHub::ssubscribe`] subscribers receive it, not channel or pattern ones. In a
    /// cluster it goes to the master owning the channel's slot. Returns Redis' delivered
    /// count.
    ///
    /// # Cancel safety
    /// Dropping the future leaves the hub as it was: nothing is counted (neither published
    /// nor failed), and the connection stays usable for the next call. The command may or
    /// may not have reached Redis by then, so the message may or may not have been sent,
    /// as with any request whose answer is not awaited.
    pub async fn spublish(&self, channel: &str, message: &Value) -> Result<i64, HubError> {
        let payload = serde_json::to_vec(message).unwrap_or_else(|_| b"null".to_vec());
        self.spublish_bytes(channel, &payload).await
    }

    /// SPUBLISHes `payload` byte for byte; returns Redis' delivered count.
    ///
    /// # Cancel safety
    /// Dropping the future leaves the hub as it was: nothing is counted (neither published
    /// nor failed), and the connection stays usable for the next call. The command may or
    /// may not have reached Redis by then, so the message may or may not have been sent,
    /// as with any request whose answer is not awaited.
    #[tracing::instrument(level = "debug", name = "spublish", skip_all, fields(channel = channel, bytes = payload.len()))]
    pub async fn spublish_bytes(&self, channel: &str, payload: &[u8]) -> Result<i64, HubError> {
        self.send_publish("SPUBLISH", channel, payload).await
    }

    async fn send_publish(
        &self,
        command: &'static str,
        channel: &str,
        payload: &[u8],
    ) -> Result<i64, HubError> {
        let result = (self.publisher()?)
            .publish(command, channel, payload, self.inner.config.command_timeout)
            .await;
        let counters = &self.inner.counters;
        match result {
            Ok(delivered) => {
                counters.record_publish(delivered);
                self.count_channel(channel);
                counters.touch();
                Ok(delivered)
            }
            Err(e) => {
                counters
                    .publish_errors_total
                    .fetch_add(1, Ordering::Relaxed);
                // A counter the stats show moved: watchers of the version must see it.
                counters.touch();
                tracing::debug!(error = %e, "publish failed");
                Err(e)
            }
        }
    }

    fn count_channel(&self, channel: &str) {
        let counts = &self.inner.channel_published;
        let max = self.inner.config.max_tracked_channels;
        if !read(counts).count_known(channel, max) {
            // A new channel with room left: the write side, checked again.
            write(counts).add(channel, max);
        }
    }

    pub(crate) fn batcher(&self) -> &Batcher {
        &self.inner.batcher
    }

    pub(crate) fn publisher(&self) -> Result<Arc<Publisher>, HubError> {
        self.inner.publisher.load_full().ok_or(HubError::Closed)
    }

    /// Introspection through the publishing connection, bounded by `command_timeout`.
    fn asker(&self) -> Result<Asker, HubError> {
        Ok(Asker {
            publisher: self.publisher()?,
            timeout: self.inner.config.command_timeout,
        })
    }

    /// Creates subscriber `name` on exact `channels` (`SUBSCRIBE`). Returns once Redis has
    /// confirmed every channel, so anything published afterwards is delivered.
    ///
    /// # Cancel safety
    /// As [`PubSubHub::subscribe_kind`]: a dropped future leaves the hub as if the call
    /// never happened.
    pub async fn subscribe(
        &self,
        name: &str,
        channels: Vec<String>,
    ) -> Result<Arc<Subscription>, HubError> {
        self.subscribe_kind(name, TargetKind::Channel, channels)
            .await
    }

    /// Creates subscriber `name` on glob `patterns` (`PSUBSCRIBE`).
    ///
    /// # Cancel safety
    /// As [`PubSubHub::subscribe_kind`]: a dropped future leaves the hub as if the call
    /// never happened.
    pub async fn psubscribe(
        &self,
        name: &str,
        patterns: Vec<String>,
    ) -> Result<Arc<Subscription>, HubError> {
        self.subscribe_kind(name, TargetKind::Pattern, patterns)
            .await
    }

    /// Creates subscriber `name` on shard `channels` (`SSUBSCRIBE`, Redis 7+). The channels
    /// may hash to different slots, and in a cluster live on different masters: each is
    /// subscribed on its owner. Returns once every channel is confirmed.
    ///
    /// # Cancel safety
    /// As [`PubSubHub::subscribe_kind`]: a dropped future leaves the hub as if the call
    /// never happened.
    pub async fn ssubscribe(
        &self,
        name: &str,
        channels: Vec<String>,
    ) -> Result<Arc<Subscription>, HubError> {
        self.subscribe_kind(name, TargetKind::Shard, channels).await
    }

    /// Creates subscriber `name` of the given kind. Duplicate targets are ignored; an empty
    /// name, no targets, an empty target, a name in use or a full hub is an error, and so
    /// is Redis being unreachable.
    ///
    /// # Cancel safety
    /// A dropped future leaves the hub as if the call never happened: the name is free
    /// again at once, nothing is registered or counted, and the links are told to release
    /// whatever they subscribed for it (links handle commands in order, so the release
    /// follows the subscribe even if that is still in flight; `close_all` and `shutdown`
    /// wait for it). The same holds for [`PubSubHub::subscribe`], [`PubSubHub::psubscribe`]
    /// and [`PubSubHub::ssubscribe`].
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
        let mut opening = Opening {
            inner: &self.inner,
            name,
            sub: None,
            registered: false,
        };
        let (sub, groups) = self.prepare(name, kind, targets);
        opening.sub = Some(Arc::clone(&sub));
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
        if opening.register() {
            Ok(sub)
        } else {
            // `shutdown` began meanwhile: it waits for this call, but will not see the
            // subscription, so it is closed here.
            sub.close_links().await;
            Err(HubError::Closed)
        }
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

    /// Makes the subscription and picks (or starts) its links; the targets grouped by
    /// link. Nothing here waits, so a subscribe call cannot be dropped half-way through it.
    fn prepare(
        &self,
        name: &str,
        kind: TargetKind,
        targets: Vec<String>,
    ) -> (Arc<Subscription>, Vec<LinkTargets>) {
        let inner = &self.inner;
        let sub = Arc::new(Subscription::new(
            inner.next_sub_id.fetch_add(1, Ordering::Relaxed),
            name.to_owned(),
            targets.clone(),
            kind,
            &inner.config,
            Arc::downgrade(inner) as std::sync::Weak<dyn Owner>,
            Arc::clone(&inner.counters),
        ));
        let shared = match kind {
            TargetKind::Shard => &inner.shared_shard_links,
            _ => &inner.shared_links,
        };
        let groups: Vec<LinkTargets> = if shared.is_empty() {
            // Dedicated mode: links of its own, which end with it.
            vec![(links::spawn(&inner.link_env(), kind, true), targets)]
        } else {
            let mut by_link: BTreeMap<usize, Vec<String>> = BTreeMap::new();
            for target in targets {
                let i = shared_link_of(kind, &target, shared.len());
                by_link.entry(i).or_default().push(target);
            }
            by_link
                .into_iter()
                .map(|(i, t)| (Arc::clone(&shared[i]), t))
                .collect()
        };
        sub.set_links(groups.iter().map(|(l, _)| Arc::clone(l)).collect());
        (sub, groups)
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
    ///
    /// # Cancel safety
    /// Everything but the wait happens at the first poll (the name is freed, consumers
    /// ended, the links told to release): a future dropped afterwards leaves the hub as if
    /// the call completed, with the release finishing in the links' tasks. A future dropped
    /// before its first poll does nothing.
    pub async fn unsubscribe(&self, name: &str) -> bool {
        let sub = lock(&self.inner.registry).subs.remove(name);
        match sub {
            Some(sub) => {
                let released = sub.begin_close();
                self.inner.counters.touch();
                released.await;
                true
            }
            None => false,
        }
    }

    /// Closes every subscription and every connection of this hub. Later calls fail with
    /// [`HubError::Closed`]. Returns when no connection of the hub is left open.
    ///
    /// # Cancel safety
    /// Everything but the waiting happens at the first poll: the hub is marked closed,
    /// every subscription is closed, the shared links and the publishing connection are let
    /// go. A future dropped afterwards leaves the rest (subscribe calls in flight, releases
    /// on Redis, link tasks ending) to finish by itself; calling `shutdown` again waits for
    /// it.
    pub async fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let released = self.begin_close_all();
        let exits: Vec<_> = self
            .inner
            .shared_links
            .iter()
            .chain(&self.inner.shared_shard_links)
            .map(|link| link.request_shutdown())
            .collect();
        self.inner.publisher.store(None);
        self.inner.topology.close();
        self.wait_pending_subscribes().await;
        released.await;
        self.wait_retiring().await;
        for exit in exits {
            let _ = exit.await;
        }
    }

    /// Waits until no `subscribe` call is in flight (each is bounded by the time-outs, and
    /// so is this wait), so that none can leave a connection open after `shutdown`.
    async fn wait_pending_subscribes(&self) {
        let config = &self.inner.config;
        let bound = config.connect_timeout + config.command_timeout * 2;
        let wait = async {
            loop {
                let done = self.inner.pending_done.notified();
                if lock(&self.inner.registry).pending.is_empty() {
                    return;
                }
                done.await;
            }
        };
        if tokio::time::timeout(bound, wait).await.is_err() {
            tracing::warn!("shutdown went on with subscribe calls still in flight");
        }
    }

    /// Waits for the releases of subscriptions closed by callers that did not wait.
    /// Each release is bounded by the links' time-outs.
    async fn wait_retiring(&self) {
        let releases: Vec<Released> = lock(&self.inner.retiring).releases.clone();
        futures_util::future::join_all(releases).await;
        lock(&self.inner.retiring).prune();
    }

    /// Closes every subscription but keeps the hub usable (the dashboard's reset).
    ///
    /// # Cancel safety
    /// Everything but the wait happens at the first poll: every subscription is removed
    /// and closed, and its links told to release it. A future dropped afterwards leaves the
    /// hub as if the call completed, with the releases finishing in the links' tasks.
    pub async fn close_all(&self) {
        self.begin_close_all().await;
        self.wait_retiring().await;
    }

    /// Removes and closes every subscription now; the future of their releases.
    fn begin_close_all(&self) -> impl std::future::Future<Output = ()> + use<> {
        let subs: Vec<Arc<Subscription>> = std::mem::take(&mut lock(&self.inner.registry).subs)
            .into_values()
            .collect();
        let released: Vec<Released> = subs.iter().map(|s| s.begin_close()).collect();
        self.inner.counters.touch();
        futures_util::future::join_all(released).map(drop)
    }

    /// `PUBSUB CHANNELS pattern`: channels with at least one exact subscriber, sorted (in a
    /// cluster, the union over all reachable nodes).
    ///
    /// # Cancel safety
    /// Read-only: a dropped future changes nothing, and leaves every connection usable (an
    /// answer that arrives for it is discarded).
    pub async fn active_channels(&self, pattern: &str) -> Result<Vec<String>, HubError> {
        (self.asker()?)
            .names("CHANNELS", "PUBSUB CHANNELS", pattern)
            .await
    }

    /// `PUBSUB NUMSUB`: exact subscribers per channel (in a cluster, summed over all
    /// reachable nodes).
    ///
    /// # Cancel safety
    /// Read-only: a dropped future changes nothing, and leaves every connection usable (an
    /// answer that arrives for it is discarded).
    pub async fn channel_subscriber_counts(
        &self,
        channels: &[String],
    ) -> Result<BTreeMap<String, i64>, HubError> {
        (self.asker()?)
            .counts("NUMSUB", "PUBSUB NUMSUB", channels)
            .await
    }

    /// `PUBSUB NUMPAT`: pattern subscriptions on the whole server. In a cluster pattern
    /// subscriptions are node-local, so this is the sum over all reachable nodes (every
    /// pattern a client subscribed, wherever it is connected).
    ///
    /// # Cancel safety
    /// Read-only: a dropped future changes nothing, and leaves every connection usable (an
    /// answer that arrives for it is discarded).
    pub async fn pattern_subscriber_count(&self) -> Result<i64, HubError> {
        self.asker()?.numpat().await
    }

    /// `PUBSUB SHARDCHANNELS pattern` (Redis 7+): shard channels with at least one
    /// subscriber, sorted (in a cluster, the union over all reachable nodes, replicas
    /// included, since a shard channel may be subscribed on a replica of its master).
    ///
    /// # Cancel safety
    /// Read-only: a dropped future changes nothing, and leaves every connection usable (an
    /// answer that arrives for it is discarded).
    pub async fn shard_channels(&self, pattern: &str) -> Result<Vec<String>, HubError> {
        (self.asker()?)
            .names("SHARDCHANNELS", "PUBSUB SHARDCHANNELS", pattern)
            .await
    }

    /// `PUBSUB SHARDNUMSUB` (Redis 7+): subscribers per shard channel (in a cluster, summed
    /// over all reachable nodes).
    ///
    /// # Cancel safety
    /// Read-only: a dropped future changes nothing, and leaves every connection usable (an
    /// answer that arrives for it is discarded).
    pub async fn shard_subscriber_counts(
        &self,
        channels: &[String],
    ) -> Result<BTreeMap<String, i64>, HubError> {
        (self.asker()?)
            .counts("SHARDNUMSUB", "PUBSUB SHARDNUMSUB", channels)
            .await
    }

    /// `PUBSUB CHANNELS`, `NUMSUB`, `NUMPAT`, `SHARDCHANNELS` (same pattern) and
    /// `SHARDNUMSUB` (same channels) in one pipelined round trip, to every reachable node
    /// at once in a cluster. The shard fields stay empty on servers older than Redis 7.
    ///
    /// # Cancel safety
    /// Read-only: a dropped future changes nothing, and leaves every connection usable (an
    /// answer that arrives for it is discarded).
    pub async fn introspect(
        &self,
        channels_pattern: &str,
        numsub_channels: &[String],
    ) -> Result<Introspection, HubError> {
        (self.asker()?)
            .introspect(channels_pattern, numsub_channels)
            .await
    }

    /// The counters plus `PUBSUB NUMPAT` (0 if Redis does not answer), as in the guide.
    ///
    /// # Cancel safety
    /// Read-only: a dropped future changes nothing, and leaves every connection usable (an
    /// answer that arrives for it is discarded).
    pub async fn stats(&self) -> Stats {
        let mut stats = self.local_stats();
        stats.pattern_subscriptions = self.pattern_subscriber_count().await.unwrap_or(0);
        stats
    }

    /// The counters only, without asking Redis.
    pub fn local_stats(&self) -> Stats {
        let active = lock(&self.inner.registry).subs.len() as u64;
        (self.inner.counters).snapshot(active, &read(&self.inner.channel_published))
    }

    /// Zeroes the hub's counters (per-subscription counters are kept).
    pub fn reset_stats(&self) {
        let c = &self.inner.counters;
        c.reset();
        *write(&self.inner.channel_published) = ChannelCounts::default();
        c.touch();
    }

    /// A number that grows whenever something observable changes: a message received, a
    /// subscription added or removed, a status change, a publish.
    pub fn version(&self) -> u64 {
        self.inner.counters.version()
    }

    /// Waits until [`PubSubHub::version`] exceeds `since` and returns the new version.
    /// Cheap to call in a loop; use it to push updates instead of polling.
    ///
    /// # Cancel safety
    /// Cancel safe: it only waits. A dropped future stops counting as a watcher; nothing
    /// is missed, since the version it compares with only grows.
    pub async fn changed(&self, since: u64) -> u64 {
        self.inner.counters.changed(since).await
    }

    /// Payload bytes this hub holds right now, by holder: what the bounds of
    /// [`HubConfig`] limit, measured.
    pub fn memory(&self) -> MemoryUse {
        self.inner.counters.memory()
    }

    /// Subscriber connections this hub holds to Redis right now (live ones only). A shard
    /// subscription holds one per master its channels live on.
    pub fn subscriber_connections(&self) -> usize {
        let mut seen = HashSet::new();
        let open: u64 = self
            .links()
            .into_iter()
            .filter(|l| seen.insert(l.id))
            .map(|l| l.open_connections())
            .sum();
        open as usize
    }

    /// Distinct channels, patterns and shard channels subscribed on Redis through the
    /// shared links (0 in dedicated mode).
    pub fn shared_redis_targets(&self) -> u64 {
        self.inner
            .shared_links
            .iter()
            .chain(&self.inner.shared_shard_links)
            .map(|l| l.redis_targets())
            .sum()
    }

    /// Every link of the hub: the shared ones, or those of the subscriptions.
    fn links(&self) -> Vec<Arc<Link>> {
        if self.inner.shared_links.is_empty() {
            self.subscriptions()
                .iter()
                .flat_map(|s| s.links().to_vec())
                .collect()
        } else {
            self.inner
                .shared_links
                .iter()
                .chain(&self.inner.shared_shard_links)
                .cloned()
                .collect()
        }
    }
}

impl HubInner {
    /// What a new link task starts with.
    fn link_env(&self) -> LinkEnv {
        LinkEnv {
            topology: Arc::clone(&self.topology),
            config: Arc::clone(&self.config),
            counters: Arc::clone(&self.counters),
        }
    }
}

impl Owner for HubInner {
    fn forget(&self, sub: &Subscription) {
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

    /// `close_all` and `shutdown` wait for what is kept here.
    fn retire(&self, released: Released) {
        lock(&self.retiring).add(released);
    }
}

/// Releases of closed subscriptions still under way, which `close_all` and `shutdown`
/// wait for. Finished ones are dropped whenever the list has doubled since it was last
/// pruned (and at each wait), so closing n subscriptions polls releases O(n) times in all;
/// pruning on every close polled the whole list each time, O(n²): closing 10,000
/// subscriptions cost seconds of CPU. The list holds at most twice the unfinished releases,
/// plus [`Retiring::MIN_PRUNE`].
#[derive(Default)]
struct Retiring {
    releases: Vec<Released>,
    /// The length at which the next addition prunes first.
    prune_at: usize,
}

impl Retiring {
    /// The least length at which the list is pruned.
    const MIN_PRUNE: usize = 64;

    fn add(&mut self, released: Released) {
        if is_done(&released) {
            return;
        }
        if self.releases.len() >= self.prune_at {
            self.prune();
        }
        self.releases.push(released);
    }

    fn prune(&mut self) {
        self.releases.retain(|r| !is_done(r));
        self.prune_at = (self.releases.len() * 2).max(Self::MIN_PRUNE);
    }
}

/// Whether a release is over. Polls it once without waiting, so a release no caller
/// awaits (its closer went away) is still seen to end once its links have answered.
fn is_done(released: &Released) -> bool {
    released.peek().is_some() || released.clone().now_or_never().is_some()
}

/// A `subscribe` call in flight: holds the reservation of its name. Dropped before
/// [`Opening::register`] (the call's future was dropped, or it failed), it frees the name
/// and closes the half-made subscription, so nothing of the call is left behind.
struct Opening<'a> {
    inner: &'a HubInner,
    name: &'a str,
    sub: Option<Arc<Subscription>>,
    registered: bool,
}

impl Opening<'_> {
    /// Registers the subscription under its name, unless the hub was shut down meanwhile
    /// (checked under the registry lock, so `shutdown`'s `close_all` either sees it or it
    /// sees the hub closed). Returns whether it was registered.
    fn register(&mut self) -> bool {
        let mut registry = lock(&self.inner.registry);
        let open = !self.inner.closed.load(Ordering::Acquire);
        if open && let Some(sub) = &self.sub {
            registry.subs.insert(self.name.to_owned(), Arc::clone(sub));
            self.registered = true;
        } else if let Some(sub) = &self.sub {
            // Closed before the name is released, so that `shutdown`, which waits for
            // the pending names, finds this release among those it waits for.
            drop(registry);
            drop(sub.begin_close());
            registry = lock(&self.inner.registry);
        }
        registry.pending.remove(self.name);
        drop(registry);
        self.inner.pending_done.notify_waiters();
        self.inner.counters.touch();
        self.registered
    }
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        if self.registered {
            return;
        }
        if let Some(sub) = &self.sub {
            // The release goes on in the links' tasks; the hub keeps its future.
            drop(sub.begin_close());
        }
        lock(&self.inner.registry).pending.remove(self.name);
        self.inner.pending_done.notify_waiters();
        self.inner.counters.touch();
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
        for link in self.shared_links.iter().chain(&self.shared_shard_links) {
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

/// A link and the targets of one subscription it serves.
type LinkTargets = (Arc<Link>, Vec<String>);

/// Picks the shared link for a target: stable for the hub's lifetime. Shard channels go by
/// hash slot, so that one slot's channels share a link (and its connection to the slot's
/// master); other targets by hash.
fn shared_link_of(kind: TargetKind, target: &str, links: usize) -> usize {
    if kind == TargetKind::Shard {
        return usize::from(slot_of(target.as_bytes())) % links;
    }
    let mut h = DefaultHasher::new();
    kind.hash(&mut h);
    target.hash(&mut h);
    (h.finish() % links as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A release that ends when its sender is dropped.
    fn release() -> (tokio::sync::oneshot::Sender<()>, Released) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let fut: futures_util::future::BoxFuture<'static, ()> = Box::pin(async move {
            let _ = rx.await;
        });
        (tx, fut.shared())
    }

    #[test]
    fn finished_releases_are_pruned_and_the_list_stays_bounded() {
        let mut retiring = Retiring::default();
        let mut open = Vec::new();
        for i in 0..10_000 {
            let (tx, r) = release();
            // Poll it once, as a closer would, so that it can notice its end.
            let _ = r.clone().now_or_never();
            retiring.add(r);
            if i % 10 == 0 {
                open.push(tx);
            }
            // Nine in ten have ended by the time the next is added.
        }
        let unfinished = open.len();
        assert!(
            retiring.releases.len() <= 2 * unfinished + Retiring::MIN_PRUNE,
            "{} kept for {unfinished} unfinished",
            retiring.releases.len()
        );
        drop(open);
        retiring.prune();
        assert!(retiring.releases.is_empty());
        // An already finished release is never kept.
        let (tx, r) = release();
        drop(tx);
        retiring.add(r);
        assert!(retiring.releases.is_empty());
    }
}
