//! [`PeerDirectory`]: the subscribers of every dashboard process on the same Redis, so that
//! a second dashboard can show the first one's (the hub's registry only knows its own
//! process).
//!
//! Each dashboard keeps one entry in Redis, under a random instance id: its subscribers'
//! names, kinds, targets and statuses as JSON. The entries live in a hash
//! (`pubsub-hub:dashboards:{peers}:entries`, instance → JSON) with their expiry times in a
//! sorted set (`pubsub-hub:dashboards:{peers}:expiry`, scored by Redis' own clock in ms);
//! one hash tag keeps both in one slot on a cluster. Every write is one Lua script that
//! first drops expired entries, so a dashboard that died without cleaning up disappears
//! within [`PEER_TTL`]. A background task writes this dashboard's entry when its
//! subscribers change (at most once per [`PEER_INTERVAL`]) and every [`PEER_INTERVAL`]
//! anyway, reads the others' in the same round trip, and removes its own at shutdown.
//!
//! `/state` shows the last read in its additive `other_dashboards` field
//! ([`OtherDashboardsView`], part of the typed document in [`crate::document`]) without
//! asking Redis itself, so the document costs no extra round trip and stays available
//! during an outage: [`PeerDirectory::snapshot`].

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use pubsub_hub::PubSubHub;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::document::{OtherDashboardsView, PeerDashboardView, PeerSubscriptionView};

/// One subscriber in a dashboard's entry in Redis, the JSON the dashboards exchange (fields
/// a newer dashboard adds are ignored).
#[derive(Debug, Serialize, Deserialize)]
struct StoredSubscription {
    name: String,
    kind: String,
    targets: Vec<String>,
    status: String,
}

impl From<StoredSubscription> for PeerSubscriptionView {
    fn from(s: StoredSubscription) -> Self {
        PeerSubscriptionView {
            name: s.name,
            kind: s.kind,
            targets: s.targets,
            status: s.status,
        }
    }
}

/// How often a dashboard rewrites its entry and reads the others'.
pub const PEER_INTERVAL: Duration = Duration::from_secs(2);

/// How long an entry lives without a rewrite: three intervals, so one lost write does not
/// make a live dashboard vanish.
pub const PEER_TTL: Duration = Duration::from_secs(6);

/// Longest wait for the Redis round trip of one write and read.
const PEER_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

const EXPIRY_KEY: &str = "pubsub-hub:dashboards:{peers}:expiry";
const ENTRIES_KEY: &str = "pubsub-hub:dashboards:{peers}:entries";

/// Drops expired entries, writes (ARGV[2] = instance, ARGV[3] = JSON, with ARGV[1] the ttl
/// in ms) or, with no ARGV[3], removes ARGV[2]; returns every other live entry as
/// instance, JSON pairs.
const SYNC_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, i in ipairs(expired) do redis.call('HDEL', KEYS[2], i) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local ttl = tonumber(ARGV[1])
if ARGV[3] then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
else
  redis.call('ZREM', KEYS[1], ARGV[2])
  redis.call('HDEL', KEYS[2], ARGV[2])
end
local out = {}
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  if all[i] ~= ARGV[2] then
    table.insert(out, all[i])
    table.insert(out, all[i + 1])
  end
end
return out
";

/// This dashboard's entry in Redis and its view of the others.
#[derive(Debug)]
pub struct PeerDirectory {
    /// This process's random instance id (its field in the hash).
    instance: String,
    /// The last read: whether it succeeded, and the other dashboards sorted by instance.
    last: Mutex<(bool, Vec<PeerDashboardView>)>,
    started: OnceLock<()>,
    interval: Duration,
    ttl: Duration,
}

impl Default for PeerDirectory {
    fn default() -> Self {
        Self::new()
    }
}

impl PeerDirectory {
    /// A directory with the default interval and expiry.
    pub fn new() -> Self {
        Self::with_timing(PEER_INTERVAL, PEER_TTL)
    }

    /// A directory that writes every `interval`, its entry living `ttl` (tests use short
    /// ones).
    pub fn with_timing(interval: Duration, ttl: Duration) -> Self {
        PeerDirectory {
            instance: format!("dashboard-{}-{:08x}", std::process::id(), fastrand_u32()),
            last: Mutex::new((false, Vec::new())),
            started: OnceLock::new(),
            interval,
            ttl,
        }
    }

    /// This dashboard's instance id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The `other_dashboards` field of `/state`: this dashboard's id, whether the last
    /// read succeeded, and the other dashboards sorted by instance as of that read (at most
    /// [`PEER_INTERVAL`] old while Redis answers).
    pub fn snapshot(&self) -> OtherDashboardsView {
        let (available, dashboards) = self.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        OtherDashboardsView {
            instance: self.instance.clone(),
            available,
            dashboards,
        }
    }

    /// Starts the background task (once; nothing outside a Tokio runtime). It ends, after
    /// removing this dashboard's entry, when `shutdown` is cancelled.
    pub fn start(self: &Arc<Self>, hub: &PubSubHub, shutdown: &CancellationToken) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.started.get_or_init(|| {
            let directory = Arc::clone(self);
            let hub = hub.clone();
            let shutdown = shutdown.clone();
            runtime.spawn(async move { directory.run(hub, shutdown).await });
        });
    }

    async fn run(self: Arc<Self>, hub: PubSubHub, shutdown: CancellationToken) {
        let mut conn: Option<Conn> = None;
        loop {
            let version = hub.version();
            let entry = own_entry(&hub);
            let read = self.sync(&hub, &mut conn, Some(&entry)).await;
            self.record(read);
            // Wait for a change of this dashboard's subscribers (or the interval), then at
            // least the interval before the next write.
            tokio::select! {
                _ = hub.changed(version) => {}
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.cancelled() => break,
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval / 4) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        let _ = self.sync(&hub, &mut conn, None).await;
    }

    fn record(&self, read: Result<Vec<(String, String)>, String>) {
        let last = match read {
            Ok(pairs) => {
                let mut dashboards: Vec<PeerDashboardView> = pairs
                    .into_iter()
                    .map(|(instance, text)| {
                        let stored: Vec<StoredSubscription> = serde_json::from_str(&text)
                            .unwrap_or_else(|error| {
                                tracing::debug!(%instance, %error, "unreadable dashboard entry");
                                Vec::new()
                            });
                        PeerDashboardView {
                            instance,
                            subscriptions: stored.into_iter().map(Into::into).collect(),
                        }
                    })
                    .collect();
                dashboards.sort_by(|a, b| a.instance.cmp(&b.instance));
                (true, dashboards)
            }
            Err(error) => {
                tracing::debug!(%error, "dashboard directory not reachable");
                (false, Vec::new())
            }
        };
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = last;
    }

    /// Writes (or with `None` removes) this dashboard's entry and reads the others'.
    async fn sync(
        &self,
        hub: &PubSubHub,
        conn: &mut Option<Conn>,
        entry: Option<&str>,
    ) -> Result<Vec<(String, String)>, String> {
        let work = async {
            if conn.is_none() {
                *conn = Some(Conn::open(hub).await.map_err(|e| e.to_string())?);
            }
            let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(SYNC_SCRIPT)
                .arg(2)
                .arg(EXPIRY_KEY)
                .arg(ENTRIES_KEY)
                .arg(ttl_ms)
                .arg(&self.instance);
            if let Some(entry) = entry {
                cmd.arg(entry);
            }
            let result: redis::RedisResult<Vec<(String, String)>> = match conn.as_mut() {
                Some(Conn::Single(c)) => cmd.query_async(c).await,
                Some(Conn::Cluster(c)) => cmd.query_async(c).await,
                None => unreachable!("opened above"),
            };
            result.map_err(|e| e.to_string())
        };
        match tokio::time::timeout(PEER_COMMAND_TIMEOUT, work).await {
            Ok(Ok(pairs)) => Ok(pairs),
            Ok(Err(e)) => {
                *conn = None;
                Err(e)
            }
            Err(_) => {
                *conn = None;
                Err("timed out".into())
            }
        }
    }
}

/// This dashboard's subscribers as stored for the others.
fn own_entry(hub: &PubSubHub) -> String {
    let subs: Vec<StoredSubscription> = hub
        .subscriptions()
        .iter()
        .map(|s| StoredSubscription {
            name: s.name().to_owned(),
            kind: s.kind().as_str().to_owned(),
            targets: s.targets().to_vec(),
            status: s.status().as_str().to_owned(),
        })
        .collect();
    serde_json::to_string(&subs).unwrap_or_else(|_| "[]".to_owned())
}

fn fastrand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish() as u32
}

/// The directory's own Redis connection (not the hub's subscriber connections).
enum Conn {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Conn {
    async fn open(hub: &PubSubHub) -> redis::RedisResult<Conn> {
        if hub.is_cluster() {
            let client = redis::cluster::ClusterClient::new(vec![
                hub.client().get_connection_info().clone(),
            ])?;
            Ok(Conn::Cluster(client.get_async_connection().await?))
        } else {
            Ok(Conn::Single(
                hub.client().get_multiplexed_async_connection().await?,
            ))
        }
    }
}
