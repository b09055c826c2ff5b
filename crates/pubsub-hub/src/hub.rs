//! The hub: publishing, the subscription registry, introspection and statistics.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::ArcSwapOption;

use redis::aio::{ConnectionLike, ConnectionManagerConfig};
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use serde::Serialize;
use serde_json::Value;

use crate::cluster::{self, ClusterView, NodeAddr, slot_of, sum_pairs};
use crate::config::{ConnectionMode, HubConfig};
use crate::error::{HubError, bounded};
use crate::link::{Endpoint, Link};
use crate::publisher::{Publisher, ServerPublisher};
use crate::shard::{self, Resolver};
use crate::subscription::{Subscription, TargetKind};

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
    /// Calls of [`PubSubHub::changed`] waiting now. `touch` skips the `Notify` (and the
    /// lock inside it) when there are none, which is the common case on the hot paths.
    pub(crate) watchers: AtomicUsize,
}

impl HubCounters {
    /// Records that something observable changed and wakes the watchers.
    ///
    /// Sequentially consistent with `changed`: a watcher registers, then reads `version`;
    /// `touch` bumps `version`, then reads `watchers`. Either the watcher sees the new
    /// version, or `touch` sees the watcher and wakes it.
    pub(crate) fn touch(&self) {
        self.version.fetch_add(1, Ordering::SeqCst);
        if self.watchers.load(Ordering::SeqCst) > 0 {
            self.changed.notify_waiters();
        }
    }
}

/// Counts one waiting [`PubSubHub::changed`] call for as long as it lives (also when the
/// call is cancelled).
struct Watching<'a>(&'a AtomicUsize);

impl<'a> Watching<'a> {
    fn new(watchers: &'a AtomicUsize) -> Self {
        watchers.fetch_add(1, Ordering::SeqCst);
        Watching(watchers)
    }
}

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A snapshot of the hub's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// PUBLISH and SPUBLISH calls that succeeded.
    pub published_total: u64,
    /// Sum of the receiver counts Redis returned for those calls. In a cluster Redis counts
    /// only the subscribers of the node that took the command, so this is a lower bound.
    /// In shared mode Redis counts connections, not subscriptions: one shared connection
    /// serving ten local subscribers of a channel counts once here and ten times in
    /// `received_total`.
    pub delivered_total: u64,
    /// Messages received by this hub's subscriptions (one per subscription per message),
    /// including subscriptions since removed.
    pub received_total: u64,
    /// Subscriptions open now.
    pub active_subscriptions: u64,
    /// `PUBSUB NUMPAT`: pattern subscriptions on the whole server, or summed over every
    /// reachable node of a cluster (patterns are node-local there). 0 when Redis is down or
    /// when taken from [`PubSubHub::local_stats`].
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
    /// Recoveries of subscriptions after a connection loss: one per subscription per gap,
    /// however many of its connections the gap took.
    pub reconnects_total: u64,
}

/// What Redis reports about pub/sub, fetched in one round trip (per node, in a cluster).
///
/// In a cluster every field is merged over all reachable nodes: channel lists are unions,
/// counts are sums, because each node only knows the subscribers connected to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Introspection {
    /// `PUBSUB CHANNELS <pattern>`, sorted.
    pub active_channels: Vec<String>,
    /// `PUBSUB NUMSUB` for the channels asked about.
    pub numsub: BTreeMap<String, i64>,
    /// `PUBSUB NUMPAT`.
    pub numpat: i64,
    /// `PUBSUB SHARDCHANNELS <pattern>` (same pattern), sorted; empty before Redis 7.
    pub shard_channels: Vec<String>,
    /// `PUBSUB SHARDNUMSUB` for the same channels; empty before Redis 7.
    pub shard_numsub: BTreeMap<String, i64>,
}

/// Publishes JSON or raw bytes and manages named subscribers over one Redis server or a
/// Redis Cluster.
///
/// Cloning is cheap and every clone is the same hub.
#[derive(Clone)]
pub struct PubSubHub {
    inner: Arc<HubInner>,
}

pub(crate) struct HubInner {
    /// The server's client, or a client for the first seed node of a cluster.
    client: redis::Client,
    config: Arc<HubConfig>,
    /// The connection for PUBLISH and PUBSUB; taken on shutdown so no socket lingers.
    publisher: ArcSwapOption<Publisher>,
    /// Where plain links connect: the server, or any node of the cluster.
    endpoint: Endpoint,
    /// Where shard links subscribe each channel.
    shard_resolver: Arc<Resolver>,
    /// The cluster topology (`None` on a single server); introspection asks every node.
    cluster: Option<Arc<ClusterView>>,
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
}

#[derive(Default)]
struct Registry {
    subs: BTreeMap<String, Arc<Subscription>>,
    /// Names being subscribed right now, so two racing calls cannot both take a name.
    pending: HashSet<String>,
}

/// Publishes per channel. Read-mostly: a publish to a known channel takes the read lock
/// and bumps an atomic, so concurrent publishers do not serialize on it.
#[derive(Default)]
struct ChannelCounts {
    by_channel: HashMap<String, AtomicU64>,
    other: AtomicU64,
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
            ServerPublisher::connect(client.clone(), cm_config),
        )
        .await?;
        let info = client.get_connection_info();
        let shard_resolver = Resolver::Server {
            client: redis::Client::open(cluster::info_for(info, None, true)?)?,
            addr: NodeAddr::of(info).unwrap_or_else(|| NodeAddr {
                host: "local".into(),
                port: 0,
            }),
        };
        Ok(Self::assemble(
            client.clone(),
            config,
            Publisher::Server(publisher),
            Endpoint::Server(client),
            shard_resolver,
            None,
        ))
    }

    /// Connects to a Redis Cluster through any of `nodes` (`redis://host:port/` URLs with
    /// the credentials every node accepts) and learns its topology.
    ///
    /// Plain channels and patterns are subscribed on any reachable node (a PUBLISH anywhere
    /// reaches every node over the cluster bus); shard channels on the master owning their
    /// hash slot. Introspection merges the answers of every reachable node. Fails if no node
    /// answers within the connect and command time-outs.
    pub async fn cluster(nodes: Vec<String>, config: HubConfig) -> Result<Self, HubError> {
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
            Publisher::Cluster(publisher),
            Endpoint::Cluster(Arc::clone(&view)),
            Resolver::Cluster(Arc::clone(&view)),
            Some(view),
        ))
    }

    fn assemble(
        client: redis::Client,
        config: HubConfig,
        publisher: Publisher,
        endpoint: Endpoint,
        shard_resolver: Resolver,
        cluster: Option<Arc<ClusterView>>,
    ) -> PubSubHub {
        let config = Arc::new(config);
        let counters = Arc::new(HubCounters::default());
        let shard_resolver = Arc::new(shard_resolver);
        let shared = match config.mode {
            ConnectionMode::Shared { connections } => connections.max(1),
            _ => 0,
        };
        let shared_links = (0..shared)
            .map(|_| {
                Link::spawn(
                    endpoint.clone(),
                    Arc::clone(&config),
                    Arc::clone(&counters),
                    false,
                )
            })
            .collect();
        let shared_shard_links = (0..shared)
            .map(|_| {
                shard::spawn(
                    Arc::clone(&shard_resolver),
                    Arc::clone(&config),
                    Arc::clone(&counters),
                    false,
                )
            })
            .collect();
        PubSubHub {
            inner: Arc::new(HubInner {
                client,
                config,
                publisher: ArcSwapOption::from_pointee(publisher),
                endpoint,
                shard_resolver,
                cluster,
                registry: Mutex::new(Registry::default()),
                counters,
                channel_published: RwLock::new(ChannelCounts::default()),
                shared_links,
                shared_shard_links,
                next_sub_id: AtomicU64::new(1),
                closed: AtomicBool::new(false),
                pending_done: tokio::sync::Notify::new(),
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

    /// True for a hub made with [`PubSubHub::cluster`].
    pub fn is_cluster(&self) -> bool {
        self.inner.cluster.is_some()
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
        self.send_publish("PUBLISH", channel, payload).await
    }

    /// JSON-encodes `message` and SPUBLISHes it to shard channel `channel` (Redis 7+): only
    /// [`PubSubHub::ssubscribe`] subscribers receive it, not channel or pattern ones. In a
    /// cluster it goes to the master owning the channel's slot. Returns Redis' delivered
    /// count.
    pub async fn spublish(&self, channel: &str, message: &Value) -> Result<i64, HubError> {
        let payload = serde_json::to_vec(message).unwrap_or_else(|_| b"null".to_vec());
        self.spublish_bytes(channel, &payload).await
    }

    /// SPUBLISHes `payload` byte for byte; returns Redis' delivered count.
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
        let conn = self.publisher()?;
        let timeout = self.inner.config.command_timeout;
        let mut cmd = redis::cmd(command);
        cmd.arg(channel).arg(payload);
        let result: Result<i64, HubError> = match (&*conn, &self.inner.cluster) {
            // SPUBLISH goes to the master our view names. redis-rs's own slot map can stay
            // stale after a graceful failover: the demoted master, now a replica, still
            // takes SPUBLISH (and relays it within its shard) without a MOVED, but Redis
            // then counts only that replica's subscribers.
            (Publisher::Cluster(cluster), Some(view)) if command == "SPUBLISH" => {
                match view.owner(slot_of(channel.as_bytes())) {
                    Some(addr) => {
                        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: addr.host,
                            port: addr.port,
                        });
                        let mut cluster = cluster.clone();
                        bounded(command, timeout, async {
                            let value = cluster.route_command(cmd, route).await?;
                            Ok(redis::from_redis_value(value)?)
                        })
                        .await
                    }
                    None => bounded(command, timeout, conn.query(&cmd)).await,
                }
            }
            _ => bounded(command, timeout, conn.query(&cmd)).await,
        };
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
        let counts = &self.inner.channel_published;
        let max = self.inner.config.max_tracked_channels;
        {
            let known = read(counts);
            if let Some(n) = known.by_channel.get(channel) {
                n.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if known.by_channel.len() >= max {
                known.other.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        // A new channel with room left: the write side, checked again.
        let mut counts = write(counts);
        let counts = &mut *counts;
        if let Some(n) = counts.by_channel.get(channel) {
            n.fetch_add(1, Ordering::Relaxed);
        } else if counts.by_channel.len() < max {
            counts
                .by_channel
                .insert(channel.to_owned(), AtomicU64::new(1));
        } else {
            counts.other.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn publisher(&self) -> Result<Arc<Publisher>, HubError> {
        self.inner.publisher.load_full().ok_or(HubError::Closed)
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

    /// Creates subscriber `name` on shard `channels` (`SSUBSCRIBE`, Redis 7+). The channels
    /// may hash to different slots, and in a cluster live on different masters: each is
    /// subscribed on its owner. Returns once every channel is confirmed.
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
        let result = match self.open(name, kind, targets).await {
            // `shutdown` began meanwhile: it waits for this call, but will not see the
            // subscription, so it is closed here.
            Ok(sub) if self.inner.closed.load(Ordering::Acquire) => {
                sub.close_links().await;
                Err(HubError::Closed)
            }
            result => result,
        };
        let mut registry = lock(&self.inner.registry);
        registry.pending.remove(name);
        if let Ok(sub) = &result {
            registry.subs.insert(name.to_owned(), Arc::clone(sub));
        }
        drop(registry);
        self.inner.pending_done.notify_waiters();
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
            &inner.config,
            Arc::downgrade(inner),
            Arc::clone(&inner.counters),
        ));
        let groups: Vec<(Arc<Link>, Vec<String>)> = match kind {
            TargetKind::Shard if inner.shared_shard_links.is_empty() => {
                let link = shard::spawn(
                    Arc::clone(&inner.shard_resolver),
                    Arc::clone(&inner.config),
                    Arc::clone(&inner.counters),
                    true,
                );
                vec![(link, targets)]
            }
            TargetKind::Shard => {
                // By slot, so that one slot's channels share a link.
                let links = &inner.shared_shard_links;
                let mut by_link: BTreeMap<usize, Vec<String>> = BTreeMap::new();
                for target in targets {
                    let i = usize::from(slot_of(target.as_bytes())) % links.len();
                    by_link.entry(i).or_default().push(target);
                }
                by_link
                    .into_iter()
                    .map(|(i, t)| (Arc::clone(&links[i]), t))
                    .collect()
            }
            _ if inner.shared_links.is_empty() => {
                let link = Link::spawn(
                    inner.endpoint.clone(),
                    Arc::clone(&inner.config),
                    Arc::clone(&inner.counters),
                    true,
                );
                vec![(link, targets)]
            }
            _ => {
                let mut by_link: BTreeMap<usize, Vec<String>> = BTreeMap::new();
                for target in targets {
                    let i = shard_of(kind, &target, inner.shared_links.len());
                    by_link.entry(i).or_default().push(target);
                }
                by_link
                    .into_iter()
                    .map(|(i, t)| (Arc::clone(&inner.shared_links[i]), t))
                    .collect()
            }
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
        self.wait_pending_subscribes().await;
        self.close_all().await;
        for link in self
            .inner
            .shared_links
            .iter()
            .chain(&self.inner.shared_shard_links)
        {
            link.shutdown().await;
        }
        self.inner.publisher.store(None);
        if let Some(view) = &self.inner.cluster {
            view.close();
        }
    }

    /// Waits until no `subscribe` call is in flight (each is bounded by the time-outs, and
    /// so is this wait), so that none can register a subscription after `close_all`.
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

    /// Closes every subscription but keeps the hub usable (the dashboard's reset).
    pub async fn close_all(&self) {
        let subs: Vec<Arc<Subscription>> = std::mem::take(&mut lock(&self.inner.registry).subs)
            .into_values()
            .collect();
        futures_util::future::join_all(subs.iter().map(|s| s.close_links())).await;
        self.inner.counters.touch();
    }

    /// `PUBSUB CHANNELS pattern`: channels with at least one exact subscriber, sorted (in a
    /// cluster, the union over all reachable nodes).
    pub async fn active_channels(&self, pattern: &str) -> Result<Vec<String>, HubError> {
        let mut pipe = redis::pipe();
        pipe.cmd("PUBSUB").arg("CHANNELS").arg(pattern);
        let mut names = BTreeSet::new();
        for mut replies in self.ask("PUBSUB CHANNELS", &pipe, 1).await? {
            add_names(&mut names, take(&mut replies, 0))?;
        }
        Ok(names.into_iter().collect())
    }

    /// `PUBSUB NUMSUB`: exact subscribers per channel (in a cluster, summed over all
    /// reachable nodes).
    pub async fn channel_subscriber_counts(
        &self,
        channels: &[String],
    ) -> Result<BTreeMap<String, i64>, HubError> {
        self.counts("NUMSUB", "PUBSUB NUMSUB", channels).await
    }

    /// `PUBSUB NUMPAT`: pattern subscriptions on the whole server. In a cluster pattern
    /// subscriptions are node-local, so this is the sum over all reachable nodes (every
    /// pattern a client subscribed, wherever it is connected).
    pub async fn pattern_subscriber_count(&self) -> Result<i64, HubError> {
        let mut pipe = redis::pipe();
        pipe.cmd("PUBSUB").arg("NUMPAT");
        let mut total = 0;
        for mut replies in self.ask("PUBSUB NUMPAT", &pipe, 1).await? {
            total += int(take(&mut replies, 0))?;
        }
        Ok(total)
    }

    /// `PUBSUB SHARDCHANNELS pattern` (Redis 7+): shard channels with at least one
    /// subscriber, sorted (in a cluster, the union over all reachable nodes, replicas
    /// included, since a shard channel may be subscribed on a replica of its master).
    pub async fn shard_channels(&self, pattern: &str) -> Result<Vec<String>, HubError> {
        let mut pipe = redis::pipe();
        pipe.cmd("PUBSUB").arg("SHARDCHANNELS").arg(pattern);
        let mut names = BTreeSet::new();
        for mut replies in self.ask("PUBSUB SHARDCHANNELS", &pipe, 1).await? {
            add_names(&mut names, take(&mut replies, 0))?;
        }
        Ok(names.into_iter().collect())
    }

    /// `PUBSUB SHARDNUMSUB` (Redis 7+): subscribers per shard channel (in a cluster, summed
    /// over all reachable nodes).
    pub async fn shard_subscriber_counts(
        &self,
        channels: &[String],
    ) -> Result<BTreeMap<String, i64>, HubError> {
        self.counts("SHARDNUMSUB", "PUBSUB SHARDNUMSUB", channels)
            .await
    }

    async fn counts(
        &self,
        subcommand: &str,
        operation: &'static str,
        channels: &[String],
    ) -> Result<BTreeMap<String, i64>, HubError> {
        if channels.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut pipe = redis::pipe();
        pipe.cmd("PUBSUB").arg(subcommand).arg(channels);
        let mut out = BTreeMap::new();
        for mut replies in self.ask(operation, &pipe, 1).await? {
            sum_pairs(&mut out, array(take(&mut replies, 0))?)?;
        }
        Ok(out)
    }

    /// `PUBSUB CHANNELS`, `NUMSUB`, `NUMPAT`, `SHARDCHANNELS` (same pattern) and
    /// `SHARDNUMSUB` (same channels) in one pipelined round trip, to every reachable node
    /// at once in a cluster. The shard fields stay empty on servers older than Redis 7.
    pub async fn introspect(
        &self,
        channels_pattern: &str,
        numsub_channels: &[String],
    ) -> Result<Introspection, HubError> {
        let mut pipe = redis::pipe();
        pipe.cmd("PUBSUB").arg("CHANNELS").arg(channels_pattern);
        pipe.cmd("PUBSUB").arg("NUMSUB").arg(numsub_channels);
        pipe.cmd("PUBSUB").arg("NUMPAT");
        pipe.cmd("PUBSUB")
            .arg("SHARDCHANNELS")
            .arg(channels_pattern);
        pipe.cmd("PUBSUB").arg("SHARDNUMSUB").arg(numsub_channels);
        let mut channels = BTreeSet::new();
        let mut shard_channels = BTreeSet::new();
        let mut out = Introspection::default();
        for mut replies in self.ask("PUBSUB", &pipe, 5).await? {
            add_names(&mut channels, take(&mut replies, 0))?;
            sum_pairs(&mut out.numsub, array(take(&mut replies, 1))?)?;
            out.numpat += int(take(&mut replies, 2))?;
            // Servers before Redis 7 answer "unknown subcommand": no shard channels there.
            if !matches!(replies[3], redis::Value::ServerError(_)) {
                add_names(&mut shard_channels, take(&mut replies, 3))?;
            }
            if !matches!(replies[4], redis::Value::ServerError(_)) {
                sum_pairs(&mut out.shard_numsub, array(take(&mut replies, 4))?)?;
            }
        }
        out.active_channels = channels.into_iter().collect();
        out.shard_channels = shard_channels.into_iter().collect();
        Ok(out)
    }

    /// Runs `pipe` (`count` commands) on the server, or on every reachable node of the
    /// cluster at once; one list of replies per node, server errors included as values.
    /// Bounded by `command_timeout` as a whole.
    async fn ask(
        &self,
        operation: &'static str,
        pipe: &redis::Pipeline,
        count: usize,
    ) -> Result<Vec<Vec<redis::Value>>, HubError> {
        let timeout = self.inner.config.command_timeout;
        let publisher = self.publisher()?;
        let replies = match (&self.inner.cluster, &*publisher) {
            (Some(view), _) => {
                match tokio::time::timeout(timeout, view.on_every_node(operation, pipe, count))
                    .await
                {
                    Ok(result) => result?.into_iter().map(|(_, v)| v).collect(),
                    Err(_) => {
                        return Err(HubError::Timeout {
                            operation,
                            after: timeout,
                        });
                    }
                }
            }
            (None, Publisher::Server(server)) => {
                let call = server
                    .run(|mut conn| async move { conn.req_packed_commands(pipe, 0, count).await });
                vec![bounded(operation, timeout, call).await?]
            }
            (None, Publisher::Cluster(_)) => {
                unreachable!("a cluster publisher always comes with a cluster view")
            }
        };
        if replies.iter().any(|r| r.len() != count) {
            return Err(HubError::Redis(redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "wrong number of replies to a PUBSUB pipeline",
            ))));
        }
        Ok(replies)
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
        let counts = read(&self.inner.channel_published);
        Stats {
            published_total: c.published_total.load(Ordering::Relaxed),
            delivered_total: c.delivered_total.load(Ordering::Relaxed),
            received_total: c.received_total.load(Ordering::Relaxed),
            active_subscriptions: lock(&self.inner.registry).subs.len() as u64,
            pattern_subscriptions: 0,
            channel_published: counts
                .by_channel
                .iter()
                .map(|(k, v)| (k.clone(), v.load(Ordering::Relaxed)))
                .collect(),
            channel_published_other: counts.other.load(Ordering::Relaxed),
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
        *write(&self.inner.channel_published) = ChannelCounts::default();
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
        let _watching = Watching::new(&counters.watchers);
        loop {
            let notified = counters.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = counters.version.load(Ordering::SeqCst);
            if now > since {
                return now;
            }
            notified.await;
        }
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

/// Picks the shared link for a target: stable for the hub's lifetime.
fn shard_of(kind: TargetKind, target: &str, links: usize) -> usize {
    let mut h = DefaultHasher::new();
    kind.hash(&mut h);
    target.hash(&mut h);
    (h.finish() % links as u64) as usize
}

/// Moves reply `i` out of a node's replies.
fn take(replies: &mut [redis::Value], i: usize) -> redis::Value {
    std::mem::replace(&mut replies[i], redis::Value::Nil)
}

/// A reply that must not be a server error.
fn ok(value: redis::Value) -> Result<redis::Value, HubError> {
    match value {
        redis::Value::ServerError(e) => Err(HubError::Redis(e.into())),
        value => Ok(value),
    }
}

fn array(value: redis::Value) -> Result<Vec<redis::Value>, HubError> {
    Ok(redis::from_redis_value(ok(value)?).map_err(redis::RedisError::from)?)
}

fn int(value: redis::Value) -> Result<i64, HubError> {
    Ok(redis::from_redis_value(ok(value)?).map_err(redis::RedisError::from)?)
}

/// Adds a `PUBSUB CHANNELS`-style reply to a set of names (lossy UTF-8).
fn add_names(into: &mut BTreeSet<String>, value: redis::Value) -> Result<(), HubError> {
    let names: Vec<Vec<u8>> =
        redis::from_redis_value(ok(value)?).map_err(redis::RedisError::from)?;
    into.extend(
        names
            .into_iter()
            .map(|n| String::from_utf8_lossy(&n).into_owned()),
    );
    Ok(())
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads an `RwLock`, ignoring poisoning (the data is counters and handles).
pub(crate) fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

/// Writes an `RwLock`, ignoring poisoning.
pub(crate) fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}
