//! History and presence, behind two small traits so that a Redis-backed implementation can
//! be plugged in without touching the protocol code. The gateway ships
//! [`NoHistory`] and [`NoPresence`], which answer "not available" (protocol error 108), as
//! Centrifugo does for a namespace without history or presence, and the Redis stores
//! [`Gateway::new`](crate::Gateway::new) uses: [`RedisHistory`](crate::history::RedisHistory)
//! and [`RedisPresence`](crate::presence::RedisPresence).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::protocol::StreamPosition;

/// A boxed future, so that the traits stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a history or presence call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FeatureError {
    /// The feature is not available for this channel.
    NotAvailable,
    /// The store failed (for example Redis is unreachable).
    Unavailable(String),
}

/// A history query, as the `history` command asks.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct HistoryQuery {
    /// Most publications (0: only the stream position; `usize::MAX`: all kept).
    pub limit: usize,
    /// Publications after this position.
    pub since: Option<StreamPosition>,
    /// Newest first.
    pub reverse: bool,
    /// The channel's `history_size` (0: the channel keeps no history).
    pub size: usize,
    /// The channel's `history_ttl`, for a position created by this read.
    pub ttl: Duration,
}

/// How one publication is kept: the channel's history rules.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct HistoryRules {
    /// Publications kept (`history_size`, at least 1 when the publication is stored).
    pub size: usize,
    /// How long an idle channel's history lives (`history_ttl`).
    pub ttl: Duration,
    /// Publish live as a shard channel (`SPUBLISH`, on a cluster).
    pub sharded: bool,
}

/// Where a stored publication went, and Redis' receiver count for its live copy.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Stored {
    /// The publication's offset and the channel's epoch.
    pub position: StreamPosition,
    /// Redis' receiver count for the live (S)PUBLISH.
    pub receivers: i64,
}

/// One page of history: raw payloads with their offsets, and the stream position.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct HistoryPage {
    /// `(offset, payload)` pairs in the asked order.
    pub publications: Vec<(u64, Vec<u8>)>,
    /// The channel's current position.
    pub position: StreamPosition,
    /// The oldest offset still kept (0: unknown or none), which tells whether everything
    /// after a client's position is still there.
    pub oldest: u64,
}

impl HistoryPage {
    /// Whether every publication after `since` is in history: same epoch, and nothing
    /// between `since` and the oldest kept offset was trimmed away.
    pub fn covers(&self, since: &StreamPosition) -> bool {
        if since.epoch != self.position.epoch || since.offset > self.position.offset {
            return false;
        }
        since.offset == self.position.offset
            || (self.oldest != 0 && self.oldest <= since.offset + 1)
    }
}

/// Per-channel history. Implementations must be cancel safe: a dropped read leaves the
/// store unchanged, a dropped publish or removal has either happened whole or not at all.
pub trait HistoryStore: Send + Sync + 'static {
    /// Reads the history of the Redis channel `channel`.
    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, FeatureError>>;

    /// Stores `data` in the history of Redis channel `channel` and publishes it live in
    /// the same atomic step, in the envelope [`pubsub_hub::LiveEnvelope`] that carries
    /// its position. "Not available" (the default) makes the gateway publish it plainly.
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        data: &'a [u8],
        rules: HistoryRules,
    ) -> BoxFuture<'a, Result<Stored, FeatureError>> {
        let _ = (channel, data, rules);
        Box::pin(async { Err(FeatureError::NotAvailable) })
    }

    /// Removes the kept publications of Redis channel `channel` (its position stays).
    fn remove<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), FeatureError>> {
        let _ = channel;
        Box::pin(async { Err(FeatureError::NotAvailable) })
    }
}

/// One present client: the protocol's `ClientInfo`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PresenceEntry {
    /// The client id.
    pub client: String,
    /// The user id.
    pub user: String,
    /// The connection's info (the connection token's `info` claim), as JSON text.
    pub conn_info: Option<String>,
}

impl PresenceEntry {
    /// An entry for client `client` of user `user`, without connection info.
    pub fn new(client: impl Into<String>, user: impl Into<String>) -> Self {
        PresenceEntry {
            client: client.into(),
            user: user.into(),
            conn_info: None,
        }
    }

    /// Sets the connection info (JSON text).
    pub fn with_conn_info(mut self, info: Option<String>) -> Self {
        self.conn_info = info;
        self
    }
}

/// What [`PresenceStore::add`] changed besides refreshing its own entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PresenceAdded {
    /// True when the entry was not in the presence before: a first add, or a refresh after
    /// the entry had expired and been removed (its leave was then announced).
    pub created: bool,
    /// Other clients' entries that had expired without a refresh (their process died or
    /// lost Redis) and that this call removed. Each expired entry is removed, and so
    /// reported, by exactly one call, so that the gateway announces its leave once.
    pub expired: Vec<PresenceEntry>,
}

/// Per-channel presence (who is subscribed, on every gateway process).
///
/// The gateway calls [`add`](PresenceStore::add) when a client's subscription to a channel
/// with presence starts and again periodically while it lasts (every third of
/// [`GatewayConfig::presence_ttl`](crate::GatewayConfig::presence_ttl)), and
/// [`remove`](PresenceStore::remove) when it ends; an entry that is not refreshed in time
/// must disappear by itself from [`presence`](PresenceStore::presence), so that a process
/// that dies leaves no ghosts, and be reported once by the `add` that removes it, so that
/// its leave can be announced.
///
/// Implementations must be cancel safe: a dropped future leaves every entry either as it
/// was or as the call would have left it.
pub trait PresenceStore: Send + Sync + 'static {
    /// The clients present in the Redis channel `channel`.
    fn presence<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<Vec<PresenceEntry>, FeatureError>>;

    /// Adds `entry` to the presence of `channel`, or refreshes its expiry; removes the
    /// channel's expired entries on the way and reports them.
    fn add<'a>(
        &'a self,
        channel: &'a str,
        entry: &'a PresenceEntry,
    ) -> BoxFuture<'a, Result<PresenceAdded, FeatureError>> {
        let _ = (channel, entry);
        Box::pin(async { Err(FeatureError::NotAvailable) })
    }

    /// Removes client `client` from the presence of `channel` (nothing when absent).
    fn remove<'a>(
        &'a self,
        channel: &'a str,
        client: &'a str,
    ) -> BoxFuture<'a, Result<(), FeatureError>> {
        let _ = (channel, client);
        Box::pin(async { Ok(()) })
    }
}

/// The history store of a gateway without history: every call is "not available".
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHistory;

impl HistoryStore for NoHistory {
    fn history<'a>(
        &'a self,
        _channel: &'a str,
        _query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, FeatureError>> {
        Box::pin(async { Err(FeatureError::NotAvailable) })
    }
}

/// The presence store of a gateway without presence: every call is "not available".
#[derive(Clone, Copy, Debug, Default)]
pub struct NoPresence;

impl PresenceStore for NoPresence {
    fn presence<'a>(
        &'a self,
        _channel: &'a str,
    ) -> BoxFuture<'a, Result<Vec<PresenceEntry>, FeatureError>> {
        Box::pin(async { Err(FeatureError::NotAvailable) })
    }
}
