//! [`Gateway`]: the shared state behind the routes, and the Rust API for the application.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pubsub_hub::PubSubHub;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::auth::TokenVerifier;
use crate::config::{ChannelRules, GatewayConfig};
use crate::error::GatewayError;
use crate::features::{FeatureError, HistoryRules, HistoryStore, PresenceEntry, PresenceStore};
use crate::history::RedisHistory;
use crate::metrics::GatewayMetrics;
use crate::node::Node;
use crate::presence::{RedisPresence, info_json, join_leave_channel, join_leave_event};
use crate::protocol::{ClientError, Disconnect};

/// The server version shown in connect replies and `/api/info`.
pub const VERSION: &str = concat!("pubsub-hub-gateway ", env!("CARGO_PKG_VERSION"));

/// How long [`Gateway::shutdown`] waits for connections to take their disconnect.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What a publish did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishResult {
    /// Redis' receiver count for the PUBLISH: connections (gateway processes and other
    /// subscribers), not end clients. On a cluster, only the receiving node's.
    pub receivers: i64,
    /// The publication's offset in the channel's history (0: the channel keeps none).
    pub offset: u64,
    /// The channel's history epoch (empty: the channel keeps none).
    pub epoch: String,
}

/// A WebSocket and SSE gateway from Redis channels to clients speaking the Centrifugo
/// client protocol. Cloning is cheap; every clone is the same gateway.
#[derive(Clone)]
pub struct Gateway {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: GatewayConfig,
    pub(crate) node: Node,
    pub(crate) tokens: TokenVerifier,
    pub(crate) metrics: Arc<GatewayMetrics>,
    pub(crate) history: Arc<dyn HistoryStore>,
    pub(crate) presence: Arc<dyn PresenceStore>,
    /// Cancelled by `shutdown`: no new connection is taken, `/readyz` says 503.
    pub(crate) closing: CancellationToken,
    /// Notified whenever a connection ends, for `shutdown`'s wait.
    pub(crate) connection_ended: Notify,
    pub(crate) started: Instant,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("config", &self.inner.config)
            .field("connections", &self.inner.node.client_count())
            .finish()
    }
}

impl Gateway {
    /// A gateway over `hub`. The hub should be in shared mode
    /// ([`pubsub_hub::ConnectionMode::Shared`]) so that many channels share a few Redis
    /// connections; in dedicated mode every channel costs one connection. Either way each
    /// channel is subscribed once per process, whatever the number of its clients. On a hub
    /// made with [`PubSubHub::cluster`] channels are shard channels (`SSUBSCRIBE`,
    /// `SPUBLISH`), so plain `PUBLISH`es do not reach gateway clients there. Each channel
    /// with local clients is one hub subscription, so the hub's
    /// [`max_subscriptions`](pubsub_hub::HubConfig::max_subscriptions) bounds the number of
    /// such channels (a subscribe beyond it gets "limit exceeded"); its ring buffers are not
    /// used, so `buffer_size` 0 saves their memory.
    ///
    /// History is kept in Redis ([`RedisHistory`]) for the namespaces that set
    /// `history_size`. Presence is kept in the hub's Redis (or Cluster) by a
    /// [`RedisPresence`] with the configured
    /// [`presence_ttl`](GatewayConfig::presence_ttl); it connects only once a channel with
    /// presence is used.
    ///
    /// Fails when the configuration is invalid (the message names the setting).
    pub fn new(hub: PubSubHub, config: GatewayConfig) -> Result<Self, GatewayError> {
        let history = Arc::new(RedisHistory::new(hub.clone()));
        let presence =
            RedisPresence::for_hub(&hub, config.presence_ttl).map_err(GatewayError::Config)?;
        Self::with_stores(hub, config, history, Arc::new(presence))
    }

    /// A gateway with history and presence stores (see [`crate::features`]).
    pub fn with_stores(
        hub: PubSubHub,
        config: GatewayConfig,
        history: Arc<dyn HistoryStore>,
        presence: Arc<dyn PresenceStore>,
    ) -> Result<Self, GatewayError> {
        config.validate().map_err(GatewayError::Config)?;
        let tokens = TokenVerifier::new(&config).map_err(GatewayError::Config)?;
        let metrics = Arc::new(GatewayMetrics::default());
        Ok(Gateway {
            inner: Arc::new(Inner {
                node: Node::new(
                    hub,
                    Arc::clone(&metrics),
                    config.limits.write_queue_messages,
                ),
                config,
                tokens,
                metrics,
                history,
                presence,
                closing: CancellationToken::new(),
                connection_ended: Notify::new(),
                started: Instant::now(),
            }),
        })
    }

    /// Checks a configuration without building a gateway (what [`Gateway::new`] refuses);
    /// the message names the setting.
    pub fn check_config(config: &GatewayConfig) -> Result<(), String> {
        config.validate()?;
        TokenVerifier::new(config).map(|_| ())
    }

    /// The configuration in force.
    pub fn config(&self) -> &GatewayConfig {
        &self.inner.config
    }

    /// The hub underneath.
    pub fn hub(&self) -> &PubSubHub {
        self.inner.node.hub()
    }

    /// The gateway's counters.
    pub fn metrics(&self) -> &GatewayMetrics {
        &self.inner.metrics
    }

    /// Client connections open now.
    pub fn connection_count(&self) -> usize {
        self.inner.node.client_count()
    }

    /// The Redis channel of gateway channel `channel` (the configured prefix added).
    pub fn redis_channel(&self, channel: &str) -> String {
        self.inner.redis_channel(channel)
    }

    /// Publishes `data` to `channel` as its exact bytes: every subscriber of the Redis
    /// channel receives it, gateway clients on every process and plain Redis subscribers.
    /// The channel's namespace must exist; client permissions do not apply. On a channel
    /// with history it is stored and published in one step ([`crate::history`]) and the
    /// result carries its offset and epoch.
    ///
    /// # Cancel safety
    /// If the future is dropped after the PUBLISH was sent, the message may or may not
    /// have been published (and stored, together); nothing else is left behind.
    pub async fn publish(&self, channel: &str, data: &[u8]) -> Result<PublishResult, GatewayError> {
        self.inner
            .check_channel(channel)
            .map_err(|e| GatewayError::InvalidChannel(format!("{channel:?}: {}", e.message)))?;
        if data.len() > self.inner.config.limits.max_message_bytes {
            return Err(GatewayError::InvalidPayload(format!(
                "{} bytes is more than limits.max_message_bytes ({})",
                data.len(),
                self.inner.config.limits.max_message_bytes
            )));
        }
        self.inner.publish_raw(channel, data).await
    }

    /// Disconnects every connection of `user` with "force disconnect" (the SDKs do not
    /// reconnect); returns how many there were. `""` names the anonymous connections.
    pub fn disconnect_user(&self, user: &str) -> usize {
        self.inner.disconnect_where(
            |c| c.user.get().is_some_and(|u| u == user),
            Disconnect::FORCE_NO_RECONNECT,
        )
    }

    /// Channels with subscribers on this gateway process and their local client counts,
    /// sorted by name.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn channels(&self) -> Result<Vec<(String, usize)>, GatewayError> {
        Ok(self.inner.node.channel_counts())
    }

    /// Stops taking connections, sends every client the "shutdown" disconnect (with
    /// reconnect advice: the SDKs reconnect, to this node once it is back or to another),
    /// waits up to [`SHUTDOWN_GRACE`] for them to go, and closes the gateway's Redis
    /// subscriptions. The hub itself stays open: it belongs to the caller.
    ///
    /// # Cancel safety
    /// Every client is told before the first await; a dropped call may leave Redis
    /// subscriptions to be closed by the hub's own shutdown.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.closing.cancel();
        inner.disconnect_where(|_| true, Disconnect::SHUTDOWN);
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        loop {
            let ended = inner.connection_ended.notified();
            if inner.node.client_count() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                tracing::warn!(
                    remaining = inner.node.client_count(),
                    "shutdown went on with connections still closing"
                );
                break;
            }
        }
        inner.node.close_channels().await;
    }

    /// Whether [`Gateway::shutdown`] has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.closing.is_cancelled()
    }
}

impl Inner {
    pub(crate) fn redis_channel(&self, channel: &str) -> String {
        match &self.config.channel_prefix {
            Some(prefix) => format!("{prefix}{channel}"),
            None => channel.to_owned(),
        }
    }

    /// The channel's rules, or the protocol error for an unacceptable name.
    pub(crate) fn check_channel(&self, channel: &str) -> Result<ChannelRules, ClientError> {
        if channel.is_empty() {
            return Err(ClientError::BAD_REQUEST.with_message("empty channel"));
        }
        if channel.len() > self.config.limits.max_channel_length {
            return Err(ClientError::BAD_REQUEST.with_message("channel name too long"));
        }
        if channel.chars().any(char::is_control) {
            return Err(ClientError::BAD_REQUEST.with_message("control character in channel"));
        }
        self.config
            .rules_for(channel)
            .ok_or(ClientError::UNKNOWN_CHANNEL)
    }

    /// PUBLISH (SPUBLISH on a cluster) of `data` on the channel's Redis channel.
    pub(crate) async fn publish_raw(
        &self,
        channel: &str,
        data: &[u8],
    ) -> Result<PublishResult, GatewayError> {
        if self.closing.is_cancelled() {
            return Err(GatewayError::Closed);
        }
        let hub = self.node.hub();
        let redis = self.redis_channel(channel);
        let history_size = self
            .config
            .rules_for(channel)
            .map_or(0, |rules| rules.history_size);
        if history_size > 0 {
            let rules = self.history_rules(channel);
            match self.history.publish(&redis, data, rules).await {
                Ok(stored) => {
                    GatewayMetrics::inc(&self.metrics.publishes_total);
                    return Ok(PublishResult {
                        receivers: stored.receivers,
                        offset: stored.position.offset,
                        epoch: stored.position.epoch,
                    });
                }
                Err(FeatureError::NotAvailable) => {}
                Err(FeatureError::Unavailable(reason)) => {
                    return Err(GatewayError::Unavailable(reason));
                }
            }
        }
        let receivers = if hub.is_cluster() {
            hub.spublish_bytes(&redis, data).await?
        } else {
            hub.publish_bytes(&redis, data).await?
        };
        GatewayMetrics::inc(&self.metrics.publishes_total);
        Ok(PublishResult {
            receivers,
            ..Default::default()
        })
    }

    /// The history rules of `channel` (size 0 when it keeps none or is unknown).
    pub(crate) fn history_rules(&self, channel: &str) -> HistoryRules {
        let mut rules = HistoryRules::default();
        if let Some(r) = self.config.rules_for(channel) {
            rules.size = r.history_size;
            rules.ttl = r.history_ttl();
        }
        rules.sharded = self.node.hub().is_cluster();
        rules
    }

    /// The `presence` result of `channel` (on every process): `{"presence": {client id:
    /// ClientInfo}}`.
    pub(crate) async fn presence_of(
        &self,
        channel: &str,
    ) -> Result<serde_json::Value, FeatureError> {
        let entries = self.presence.presence(&self.redis_channel(channel)).await?;
        let mut map = serde_json::Map::new();
        for entry in &entries {
            let info = serde_json::from_str(&info_json(entry)).unwrap_or_default();
            map.insert(entry.client.clone(), info);
        }
        Ok(serde_json::json!({ "presence": map }))
    }

    /// The `presence_stats` result of `channel`: `{"num_clients", "num_users"}` (distinct
    /// user ids, the anonymous one counted once).
    pub(crate) async fn presence_stats(
        &self,
        channel: &str,
    ) -> Result<serde_json::Value, FeatureError> {
        let entries = self.presence.presence(&self.redis_channel(channel)).await?;
        let users: std::collections::BTreeSet<&str> =
            entries.iter().map(|e| e.user.as_str()).collect();
        Ok(serde_json::json!({
            "num_clients": entries.len(),
            "num_users": users.len(),
        }))
    }

    /// Adds (or with `refresh`, refreshes) `entry` in the presence of Redis channel `redis`.
    /// With `join_leave` it announces the leave of every expired client the store removed
    /// on the way (their process died or lost Redis, so nobody else will), and the join
    /// again of a refreshed entry that had expired and been removed meanwhile.
    ///
    /// Not cancel safe: dropped after the store call, the announcements are lost.
    pub(crate) async fn presence_add(
        &self,
        redis: &str,
        entry: &PresenceEntry,
        join_leave: bool,
        refresh: bool,
    ) -> Result<(), FeatureError> {
        let added = self.presence.add(redis, entry).await?;
        if join_leave {
            for gone in &added.expired {
                self.announce(redis, &join_leave_event(false, gone)).await;
            }
            if refresh && added.created {
                self.announce(redis, &join_leave_event(true, entry)).await;
            }
        }
        Ok(())
    }

    /// Publishes a join or leave `event` of Redis channel `redis` on its companion channel
    /// (see [`crate::presence`]); a failure is logged (subscribers miss that event).
    pub(crate) async fn announce(&self, redis: &str, event: &str) {
        let hub = self.node.hub();
        let companion = join_leave_channel(redis);
        let sent = if hub.is_cluster() {
            hub.spublish_bytes(&companion, event.as_bytes()).await
        } else {
            hub.publish_bytes(&companion, event.as_bytes()).await
        };
        if let Err(e) = sent {
            tracing::warn!(channel = %redis, error = %e, "join/leave event not published");
        }
    }

    /// Closes the queue of every client matching `which` with `reason`; returns how many.
    pub(crate) fn disconnect_where(
        &self,
        which: impl Fn(&crate::node::Client) -> bool,
        reason: Disconnect,
    ) -> usize {
        let mut n = 0;
        for client in self.node.clients() {
            if which(&client) {
                client.queue.close(reason.clone());
                n += 1;
            }
        }
        n
    }
}
