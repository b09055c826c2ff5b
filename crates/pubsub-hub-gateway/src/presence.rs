//! [`RedisPresence`]: channel presence kept in Redis, so that every gateway process on the
//! same Redis (or Cluster) sees the same members, and join and leave pushes that reach
//! subscribers on every process.
//!
//! # Keys and commands
//! For the Redis channel `CH`, two keys whose hash tag is `CH` (so a cluster keeps them in
//! one slot and a script may touch both):
//! - `pubsub-hub:presence:{CH}:clients`, a hash: client id → its `ClientInfo` JSON
//!   (`{"client","user","conn_info"?}`);
//! - `pubsub-hub:presence:{CH}:expiry`, a sorted set: client id scored by the Unix time in
//!   milliseconds (Redis' own clock, `TIME`, so the processes' clocks do not matter) after
//!   which the entry is gone unless refreshed.
//!
//! Every change is one Lua script (`EVAL`; each is a few hundred bytes), so the two keys never
//! disagree: adding (or refreshing) sets a client's expiry and info, and first removes every
//! other expired client and returns their infos; removing deletes from both; reading
//! returns the clients that have not expired and writes nothing. Both keys expire
//! (`PEXPIRE`) one expiry after the last add, so a channel nobody refreshes leaves nothing
//! behind.
//!
//! # Join and leave
//! A join or leave is `PUBLISH`ed (`SPUBLISH` on a cluster) to the channel's companion
//! channel [`join_leave_channel`]; each gateway process subscribes to it together with the
//! channel itself (one hub subscription) while it has local subscribers of a channel with
//! `join_leave`, and turns what arrives there into `join` or `leave` pushes.
//!
//! A process that dies announces nothing. Its clients' entries expire one
//! [`presence_ttl`](crate::GatewayConfig::presence_ttl) after their last refresh at most, and
//! the next add on the channel by a live connection (a refresh comes every third of the
//! expiry) removes them and returns them, so that gateway announces their leaves: one
//! `leave` per expired client, within four thirds of the expiry after the death, as long as
//! some live connection keeps presence in that channel.

use std::time::Duration;

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::OnceCell;

use crate::features::{BoxFuture, FeatureError, PresenceAdded, PresenceEntry, PresenceStore};

/// Longest wait for one presence command; a store that does not answer in time fails the
/// call ("unavailable") instead of holding up the connection that asked.
pub const PRESENCE_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// The key prefix of presence keys.
const KEY_PREFIX: &str = "pubsub-hub:presence:";

/// The companion channel prefix of join and leave events.
const JOIN_LEAVE_PREFIX: &str = "pubsub-hub:join_leave:";

/// Removes expired clients (but the ones being added), then adds or refreshes the given
/// ones. KEYS: expiry zset, clients hash. ARGV: ttl in ms, then client id and info pairs.
/// Returns how many of the given ones were new (`'0'`, `'1'`, ...), then the infos of the
/// expired clients it removed.
const ADD_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local adding = {}
for i = 2, #ARGV, 2 do adding[ARGV[i]] = true end
local out = {'0'}
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, c in ipairs(expired) do
  if not adding[c] then
    local info = redis.call('HGET', KEYS[2], c)
    if info then table.insert(out, info) end
    redis.call('HDEL', KEYS[2], c)
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local ttl = tonumber(ARGV[1])
local created = 0
for i = 2, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
  created = created + redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
out[1] = tostring(created)
return out
";

/// Removes one client. KEYS: expiry zset, clients hash. ARGV: client id.
const REMOVE_SCRIPT: &str = r"
redis.call('ZREM', KEYS[1], ARGV[1])
return redis.call('HDEL', KEYS[2], ARGV[1])
";

/// Returns the infos of the clients that have not expired; writes nothing (expired ones
/// are left for the next add, which reports them so that their leaves are announced).
/// KEYS: expiry zset, clients hash.
const READ_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = {}
for _, c in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')) do
  live[c] = true
end
local out = {}
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  if live[all[i]] then table.insert(out, all[i + 1]) end
end
return out
";

/// The presence keys of Redis channel `channel`: (expiry zset, clients hash).
pub fn presence_keys(channel: &str) -> (String, String) {
    (
        format!("{KEY_PREFIX}{{{channel}}}:expiry"),
        format!("{KEY_PREFIX}{{{channel}}}:clients"),
    )
}

/// The Redis channel that carries the join and leave events of Redis channel `channel`.
///
/// On a cluster it must be in the channel's slot (the gateway subscribes to both at once):
/// a name with a hash tag keeps it (the companion only adds a prefix without braces), and
/// a name without braces becomes the tag. A name with braces but no hash tag (such as
/// `a}b`) gets a companion in another slot, and its subscriptions fail on a cluster when
/// `join_leave` is on.
pub fn join_leave_channel(channel: &str) -> String {
    if has_hash_tag(channel) || channel.contains(['{', '}']) {
        format!("{JOIN_LEAVE_PREFIX}{channel}")
    } else {
        format!("{JOIN_LEAVE_PREFIX}{{{channel}}}")
    }
}

/// Whether `key` has a Redis Cluster hash tag: a `{` followed later by a `}` with at least
/// one byte between them.
fn has_hash_tag(key: &str) -> bool {
    key.find('{')
        .and_then(|open| key[open + 1..].find('}'))
        .is_some_and(|len| len > 0)
}

/// A client's `ClientInfo` as stored and as pushed.
#[derive(Serialize, Deserialize)]
pub(crate) struct WireInfo<'a> {
    #[serde(borrow)]
    client: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    user: std::borrow::Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    conn_info: Option<&'a RawValue>,
}

/// Encodes an entry as its `ClientInfo` JSON.
pub(crate) fn info_json(entry: &PresenceEntry) -> String {
    let raw = entry
        .conn_info
        .as_deref()
        .and_then(|t| serde_json::from_str::<&RawValue>(t).ok());
    serde_json::to_string(&WireInfo {
        client: entry.client.as_str().into(),
        user: entry.user.as_str().into(),
        conn_info: raw,
    })
    .unwrap_or_else(|_| "{}".into())
}

fn parse_info(text: &str) -> Option<PresenceEntry> {
    let info: WireInfo<'_> = serde_json::from_str(text).ok()?;
    Some(PresenceEntry {
        client: info.client.into_owned(),
        user: info.user.into_owned(),
        conn_info: info.conn_info.map(|r| r.get().to_owned()),
    })
}

/// A join or leave event as it travels on the companion channel:
/// `{"join":<ClientInfo>}` or `{"leave":<ClientInfo>}`.
pub(crate) fn join_leave_event(join: bool, entry: &PresenceEntry) -> String {
    let kind = if join { "join" } else { "leave" };
    format!("{{\"{kind}\":{}}}", info_json(entry))
}

/// The push (unwrapped) for an event read from a companion channel, or `None` when the
/// payload is not one (anything may `PUBLISH` there; nothing else is passed on).
pub(crate) fn join_leave_push(channel: &str, payload: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Event<'a> {
        #[serde(borrow)]
        join: Option<WireInfo<'a>>,
        #[serde(borrow)]
        leave: Option<WireInfo<'a>>,
    }
    let event: Event<'_> = serde_json::from_slice(payload).ok()?;
    let (kind, info) = match (event.join, event.leave) {
        (Some(info), None) => ("join", info),
        (None, Some(info)) => ("leave", info),
        _ => return None,
    };
    let info = serde_json::to_string(&info).ok()?;
    Some(format!(
        "{{\"channel\":{},\"{kind}\":{{\"info\":{info}}}}}",
        crate::protocol::json_string(channel)
    ))
}

/// Where the store's connection comes from.
enum Target {
    Single(Box<redis::Client>),
    Cluster(Box<redis::cluster::ClusterClient>),
}

/// An open connection (both kinds reconnect by themselves).
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

/// Channel presence in Redis (see the [module docs](self) for keys and scripts). The
/// connection is opened on first use, so building one never fails and a gateway whose
/// namespaces have no presence never connects.
pub struct RedisPresence {
    target: Target,
    conn: OnceCell<Conn>,
    ttl: Duration,
}

impl std::fmt::Debug for RedisPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPresence")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl RedisPresence {
    /// A store on the standalone Redis of `client`; entries live `ttl` after their last
    /// add.
    pub fn new(client: redis::Client, ttl: Duration) -> Self {
        Self::with_target(Target::Single(Box::new(client)), ttl)
    }

    /// A store on a Redis Cluster reached through `client`'s node (the rest of the
    /// cluster is discovered from it).
    pub fn cluster(client: &redis::Client, ttl: Duration) -> Result<Self, String> {
        let cluster =
            redis::cluster::ClusterClient::new(vec![client.get_connection_info().clone()])
                .map_err(|e| format!("presence store on the cluster: {e}"))?;
        Ok(Self::with_target(Target::Cluster(Box::new(cluster)), ttl))
    }

    /// The store for a gateway over `hub`: on its cluster or its Redis.
    pub fn for_hub(hub: &pubsub_hub::PubSubHub, ttl: Duration) -> Result<Self, String> {
        if hub.is_cluster() {
            Self::cluster(hub.client(), ttl)
        } else {
            Ok(Self::new(hub.client().clone(), ttl))
        }
    }

    fn with_target(target: Target, ttl: Duration) -> Self {
        RedisPresence {
            target,
            conn: OnceCell::new(),
            ttl,
        }
    }

    /// How long an entry lives without a refresh.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    async fn conn(&self) -> Result<Conn, FeatureError> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                match &self.target {
                    Target::Single(client) => {
                        let config = redis::aio::ConnectionManagerConfig::new()
                            .set_connection_timeout(Some(PRESENCE_COMMAND_TIMEOUT))
                            .set_response_timeout(Some(PRESENCE_COMMAND_TIMEOUT));
                        ConnectionManager::new_with_config((**client).clone(), config)
                            .await
                            .map(Conn::Single)
                    }
                    Target::Cluster(client) => {
                        client.get_async_connection().await.map(Conn::Cluster)
                    }
                }
            })
            .await
            .map_err(unavailable)?;
        Ok(conn.clone())
    }

    /// Runs `script` on the presence keys of `channel` with `args`, within
    /// [`PRESENCE_COMMAND_TIMEOUT`].
    async fn run<T: redis::FromRedisValue>(
        &self,
        script: &str,
        channel: &str,
        args: &[&[u8]],
    ) -> Result<T, FeatureError> {
        let (expiry, clients) = presence_keys(channel);
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script).arg(2).arg(expiry).arg(clients);
        for a in args {
            cmd.arg(*a);
        }
        let work = async {
            match self.conn().await? {
                Conn::Single(mut c) => cmd.query_async(&mut c).await,
                Conn::Cluster(mut c) => cmd.query_async(&mut c).await,
            }
            .map_err(unavailable)
        };
        tokio::time::timeout(PRESENCE_COMMAND_TIMEOUT, work)
            .await
            .unwrap_or_else(|_| {
                Err(FeatureError::Unavailable(
                    "presence command timed out".into(),
                ))
            })
    }
}

fn unavailable(e: redis::RedisError) -> FeatureError {
    FeatureError::Unavailable(e.to_string())
}

impl PresenceStore for RedisPresence {
    /// # Cancel safety
    /// It only reads: a dropped call changes nothing.
    fn presence<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<Vec<PresenceEntry>, FeatureError>> {
        Box::pin(async move {
            let infos: Vec<String> = self.run(READ_SCRIPT, channel, &[]).await?;
            let mut entries: Vec<PresenceEntry> =
                infos.iter().filter_map(|t| parse_info(t)).collect();
            entries.sort_by(|a, b| a.client.cmp(&b.client));
            Ok(entries)
        })
    }

    /// # Cancel safety
    /// The script is atomic: a dropped call has either added the entry (and removed the
    /// expired ones) or not. When it ran but its answer was lost, the expired entries it
    /// removed are not reported to anyone, so their leaves are not announced.
    fn add<'a>(
        &'a self,
        channel: &'a str,
        entry: &'a PresenceEntry,
    ) -> BoxFuture<'a, Result<PresenceAdded, FeatureError>> {
        Box::pin(async move {
            let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
            let ttl_ms = ttl_ms.to_string();
            let info = info_json(entry);
            let args: [&[u8]; 3] = [ttl_ms.as_bytes(), entry.client.as_bytes(), info.as_bytes()];
            let out: Vec<String> = self.run(ADD_SCRIPT, channel, &args).await?;
            let mut out = out.into_iter();
            let created = out.next().is_some_and(|n| n != "0");
            Ok(PresenceAdded {
                created,
                expired: out.filter_map(|t| parse_info(&t)).collect(),
            })
        })
    }

    /// # Cancel safety
    /// The script is atomic: a dropped call has either removed the entry or not.
    fn remove<'a>(
        &'a self,
        channel: &'a str,
        client: &'a str,
    ) -> BoxFuture<'a, Result<(), FeatureError>> {
        Box::pin(async move {
            let _removed: i64 = self
                .run(REMOVE_SCRIPT, channel, &[client.as_bytes()])
                .await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_companions_share_the_channels_slot() {
        let (a, b) = presence_keys("chat:1");
        assert_eq!(a, "pubsub-hub:presence:{chat:1}:expiry");
        assert_eq!(b, "pubsub-hub:presence:{chat:1}:clients");
        assert_eq!(join_leave_channel("news"), "pubsub-hub:join_leave:{news}");
        assert_eq!(
            join_leave_channel("room{7}"),
            "pubsub-hub:join_leave:room{7}"
        );
        assert!(has_hash_tag("a{b}c") && !has_hash_tag("a{}b") && !has_hash_tag("a}b{"));
    }

    #[test]
    fn join_leave_events_round_trip_and_anything_else_is_dropped() {
        let entry = PresenceEntry::new("c1", "alice").with_conn_info(Some(r#"{"n":1}"#.into()));
        let event = join_leave_event(true, &entry);
        assert_eq!(
            join_leave_push("ch", event.as_bytes()).unwrap(),
            r#"{"channel":"ch","join":{"info":{"client":"c1","user":"alice","conn_info":{"n":1}}}}"#
        );
        let leave = join_leave_event(false, &PresenceEntry::new("c2", ""));
        assert_eq!(
            join_leave_push("ch", leave.as_bytes()).unwrap(),
            r#"{"channel":"ch","leave":{"info":{"client":"c2","user":""}}}"#
        );
        for junk in [&b"hello"[..], b"{}", b"{\"join\":{}}", b"\xff"] {
            assert_eq!(join_leave_push("ch", junk), None);
        }
        assert_eq!(
            parse_info(&info_json(&entry)).as_ref(),
            Some(&entry),
            "stored infos read back"
        );
    }
}
