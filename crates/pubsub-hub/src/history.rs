//! Durable publications: history per channel in a capped Redis Stream, with offsets and an
//! epoch, so that a subscriber that was away can ask for exactly what it missed.
//!
//! # Redis keys and commands
//! For channel `C` (with hash tag `T`, see below) two keys hold its history:
//! - `pubsub-hub:history:{T}C` — a Stream, one entry per publication, entry id
//!   `<offset>-0`, field `d` = the payload. Capped with `XADD ... MAXLEN <size>` (after a
//!   batch, one `XTRIM ... MAXLEN <size>`), exact, so exactly the last `size` publications
//!   are kept.
//! - `pubsub-hub:history-meta:{T}C` — a Hash: `e` = the epoch, `s` = the last offset.
//!
//! [`PubSubHub::publish_with_history`] runs [`PUBLISH_SCRIPT`] (`EVALSHA`, `EVAL` when
//! Redis does not know it yet), which in one atomic step: reads the epoch (and when the
//! meta hash is gone, deletes any stream left behind and starts a new epoch given by the
//! caller), `HINCRBY`s the offset, `XADD`s the payload, refreshes both keys' `EXPIRE`, and
//! `PUBLISH`es (or `SPUBLISH`es) the payload wrapped in the live envelope (see
//! [`LiveEnvelope`]). Durable publications of one channel that meet while a script call for
//! it is in flight go out together, as one call of [`PUBLISH_BATCH_SCRIPT`]: the same steps
//! with the epoch read, the `HINCRBY`, the trim (one `XTRIM MAXLEN` after the `XADD`s) and
//! the `EXPIRE`s once for the whole batch (see [Batches](#batches)). [`PubSubHub::history`]
//! runs [`READ_SCRIPT`] (the position, created with a new epoch when absent, and
//! `XRANGE`/`XREVRANGE` in the same atomic step); [`PubSubHub::remove_history`] `DEL`s the
//! stream and keeps the position.
//!
//! # Epoch
//! Both keys share one expiry, refreshed by every publication, so history that expires,
//! is flushed, or is lost with a Redis restart without persistence takes the meta hash
//! with it: the next publication or read starts a new random epoch and offsets start again
//! at 1. A client holding `(offset, epoch)` therefore compares the epoch first: a different
//! one means its offset is meaningless. With the same epoch, the publications after its
//! offset are complete when the oldest offset kept is at most `offset + 1`
//! ([`HistoryPage::covers`]); otherwise some were trimmed away (more than `size`
//! publications, or [`PubSubHub::remove_history`]).
//!
//! # Live envelope
//! The live copy of a durable publication carries its position, so live subscribers can
//! tell their place: `\x1fph1:<offset>:<epoch>\x1f<payload>`. The leading unit separator
//! (0x1F) never starts JSON or ordinary text; [`LiveEnvelope::parse`] accepts only that
//! exact grammar. Plain Redis subscribers of a history channel see the envelope; a plain
//! `PUBLISH` from another client reaches subscribers unwrapped and is not part of history
//! (it has no offset). To make an outside publication durable, run [`PUBLISH_SCRIPT`] with
//! `EVAL` and the keys of [`history_keys`].
//!
//! # Batches
//! A durable publication costs Redis several commands, and the script call itself a
//! quarter of that (BENCHMARKS.md, "History"); so concurrent durable publishes of one
//! channel share calls. Each channel (with one [`HistoryOptions`]) has at most one script
//! call in flight. A caller that finds none in flight sends its own publication from its
//! own future, with [`PUBLISH_SCRIPT`], exactly as before batching. Callers that come while
//! a call is in flight queue; when it ends (or its caller drops the future), a sender task
//! takes over, and sends everything queued as the next call, in queue order, at most
//! [`BATCH_MAX_PUBLICATIONS`] publications and [`BATCH_MAX_BYTES`] of payload per call (a
//! larger payload goes alone; a batch of one runs [`PUBLISH_SCRIPT`]), then the rest, until
//! the queue is empty. After answering a batch the task yields once before taking the next,
//! so that a caller that publishes again at once joins it (publishers in a loop share one
//! call instead of splitting into two batches that take turns). Offsets within a batch are
//! consecutive in queue order; each caller gets its own offset and its own `PUBLISH`
//! receiver count, and a failed call fails every publication in it with the same error.
//!
//! The queues of a hub hold at most [`QUEUE_MAX_BYTES`] in all: each durable publication
//! is charged its payload's length plus [`QUEUE_CHARGE_PER_PUBLICATION`] from the moment it
//! enters (queued, or sent by its own caller) until its call has returned, so at most
//! `QUEUE_MAX_BYTES / QUEUE_CHARGE_PER_PUBLICATION` (32,768) publications and 8 MiB of
//! payload are queued or in flight at once. A caller that finds no room waits (first come,
//! first served) without holding anything of the hub's; a payload larger than the whole
//! budget is charged the whole budget, so it waits until nothing else is in and then goes
//! alone.
//!
//! # Redis Cluster
//! The hash tag `T` is the channel's own hash tag when it has one (`{...}` with something
//! inside), otherwise the whole channel name, so both keys live in the slot of the channel
//! itself and the script may `SPUBLISH` to it (Redis refuses a script touching another
//! slot). A channel name containing `}` without a hash tag cannot be tagged this way: on a
//! cluster its durable publish fails with Redis' cross-slot error. A batch touches one
//! channel's two keys, so one slot, like a single publication.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use redis::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::error::{HubError, bounded};
use crate::hub::PubSubHub;
use crate::locks::lock;

/// The prefix of a channel's history stream key.
pub const STREAM_KEY_PREFIX: &str = "pubsub-hub:history:";
/// The prefix of a channel's history meta hash key.
pub const META_KEY_PREFIX: &str = "pubsub-hub:history-meta:";

/// The durable publish, atomic on the Redis side.
///
/// `KEYS[1]` the stream, `KEYS[2]` the meta hash; `ARGV[1]` payload, `ARGV[2]` size
/// (≥ 1), `ARGV[3]` TTL in seconds (0: no expiry), `ARGV[4]` channel, `ARGV[5]` the epoch
/// to start when there is none, `ARGV[6]` `publish`, `spublish` or empty (store only).
/// Returns `{offset, epoch, receivers}`.
pub const PUBLISH_SCRIPT: &str = r#"
local epoch = redis.call('hget', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[5]
  redis.call('del', KEYS[1])
  redis.call('hset', KEYS[2], 'e', epoch)
end
local offset = redis.call('hincrby', KEYS[2], 's', 1)
redis.call('xadd', KEYS[1], 'MAXLEN', ARGV[2], offset .. '-0', 'd', ARGV[1])
if ARGV[3] ~= '0' then
  redis.call('expire', KEYS[1], ARGV[3])
  redis.call('expire', KEYS[2], ARGV[3])
end
local receivers = 0
if ARGV[6] ~= '' then
  local live = '\31ph1:' .. offset .. ':' .. epoch .. '\31' .. ARGV[1]
  receivers = redis.call(ARGV[6], ARGV[4], live)
end
return {offset, epoch, receivers}
"#;

/// The durable publish of several payloads of one channel, atomic on the Redis side: the
/// steps of [`PUBLISH_SCRIPT`] for each payload in order, with the epoch read, the offset
/// increment, the trim and the expiry refresh done once. The stream is trimmed by one
/// exact `XTRIM MAXLEN` after the `XADD`s rather than by `MAXLEN` on each: the same last
/// `size` entries are kept (no one sees the stream in between), and an exact trim on each
/// `XADD` nearly doubled what a publication costs Redis (a Lua loop on redis-server 7.0,
/// 1,000-entry stream, batches of 8 with `XADD`, `PUBLISH` and trimming: 4.8 us per
/// publication against 2.7 us).
///
/// `KEYS[1]` the stream, `KEYS[2]` the meta hash; `ARGV[1]` size (≥ 1), `ARGV[2]` TTL in
/// seconds (0: no expiry), `ARGV[3]` channel, `ARGV[4]` the epoch to start when there is
/// none, `ARGV[5]` `publish`, `spublish` or empty (store only), `ARGV[6]` and on: the
/// payloads (at least one). Returns `{first offset, epoch, receivers of each payload...}`:
/// the payloads have the offsets `first`, `first + 1`, ... in order. For one payload the
/// reply has the shape of [`PUBLISH_SCRIPT`]'s.
pub const PUBLISH_BATCH_SCRIPT: &str = r#"
local epoch = redis.call('hget', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[4]
  redis.call('del', KEYS[1])
  redis.call('hset', KEYS[2], 'e', epoch)
end
local n = #ARGV - 5
local first = redis.call('hincrby', KEYS[2], 's', n) - n + 1
local reply = {first, epoch}
for i = 1, n do
  local offset = first + i - 1
  redis.call('xadd', KEYS[1], offset .. '-0', 'd', ARGV[5 + i])
  local receivers = 0
  if ARGV[5] ~= '' then
    local live = '\31ph1:' .. offset .. ':' .. epoch .. '\31' .. ARGV[5 + i]
    receivers = redis.call(ARGV[5], ARGV[3], live)
  end
  reply[2 + i] = receivers
end
redis.call('xtrim', KEYS[1], 'MAXLEN', ARGV[1])
if ARGV[2] ~= '0' then
  redis.call('expire', KEYS[1], ARGV[2])
  redis.call('expire', KEYS[2], ARGV[2])
end
return reply
"#;

/// Most publications one call of [`PUBLISH_BATCH_SCRIPT`] carries.
pub const BATCH_MAX_PUBLICATIONS: usize = 64;
/// Most payload bytes one call of [`PUBLISH_BATCH_SCRIPT`] carries; a single payload above
/// it goes alone.
pub const BATCH_MAX_BYTES: usize = 1 << 20;
/// What a hub's durable-publish queues may hold in all, queued and in flight, counted as
/// each publication's payload length plus [`QUEUE_CHARGE_PER_PUBLICATION`].
pub const QUEUE_MAX_BYTES: usize = 8 << 20;
/// What each queued publication is charged against [`QUEUE_MAX_BYTES`] besides its
/// payload: its entry, reply channel and share of the call (a generous round figure), so
/// that the budget also bounds how many publications are queued.
pub const QUEUE_CHARGE_PER_PUBLICATION: usize = 256;

/// The history read, atomic on the Redis side.
///
/// `KEYS[1]` the stream, `KEYS[2]` the meta hash; `ARGV[1]` the epoch to start when there
/// is none, `ARGV[2]` TTL in seconds for a meta hash created here (0: none), `ARGV[3]`
/// `range`, `revrange` or `none`, `ARGV[4]` start id, `ARGV[5]` end id, `ARGV[6]` count
/// (0: all). Returns `{last offset, epoch, entries}`.
pub const READ_SCRIPT: &str = r#"
local meta = redis.call('hmget', KEYS[2], 's', 'e')
local top = meta[1]
local epoch = meta[2]
if not epoch then
  epoch = ARGV[1]
  top = '0'
  redis.call('del', KEYS[1])
  redis.call('hset', KEYS[2], 'e', epoch, 's', 0)
  if ARGV[2] ~= '0' then
    redis.call('expire', KEYS[2], ARGV[2])
  end
end
if not top then top = '0' end
local entries = {}
if ARGV[3] == 'range' then
  if ARGV[6] == '0' then
    entries = redis.call('xrange', KEYS[1], ARGV[4], ARGV[5])
  else
    entries = redis.call('xrange', KEYS[1], ARGV[4], ARGV[5], 'COUNT', ARGV[6])
  end
elseif ARGV[3] == 'revrange' then
  if ARGV[6] == '0' then
    entries = redis.call('xrevrange', KEYS[1], ARGV[4], ARGV[5])
  else
    entries = redis.call('xrevrange', KEYS[1], ARGV[4], ARGV[5], 'COUNT', ARGV[6])
  end
end
local first = redis.call('xrange', KEYS[1], '-', '+', 'COUNT', 1)
local oldest = '0'
if first[1] then oldest = first[1][1] end
return {top, epoch, entries, oldest}
"#;

/// A place in a channel's history: the offset of a publication (0: before the first) in
/// epoch `epoch`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct StreamPosition {
    /// The offset, strictly increasing per channel within an epoch, starting at 1.
    pub offset: u64,
    /// The epoch: changes whenever the channel's history was lost.
    pub epoch: String,
}

/// How a channel keeps history.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryOptions {
    /// Publications kept (at least 1).
    pub size: usize,
    /// How long an idle channel's history lives; refreshed by every publication. Whole
    /// seconds, rounded up; zero keeps it until it is removed.
    pub ttl: Duration,
    /// Publish live with `SPUBLISH` (shard channel) instead of `PUBLISH`.
    pub sharded: bool,
}

impl HistoryOptions {
    /// Keeps the last `size` publications for `ttl` after the last one, published live
    /// with `PUBLISH`.
    pub fn new(size: usize, ttl: Duration) -> Self {
        HistoryOptions {
            size,
            ttl,
            sharded: false,
        }
    }

    /// Publishes live with `SPUBLISH` when `sharded`.
    pub fn with_sharded(mut self, sharded: bool) -> Self {
        self.sharded = sharded;
        self
    }

    fn ttl_secs(&self) -> u64 {
        let secs = self.ttl.as_secs();
        if self.ttl.subsec_nanos() > 0 {
            secs + 1
        } else {
            secs
        }
    }
}

/// What a durable publish did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DurablePublish {
    /// The publication's place in history.
    pub position: StreamPosition,
    /// Redis' receiver count for the live (S)PUBLISH.
    pub receivers: i64,
}

/// A history read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryRequest {
    /// Most publications returned; `None`: all kept; `Some(0)`: only the position.
    pub limit: Option<usize>,
    /// Only publications after this offset (before it with `reverse`). The epoch is not
    /// checked here: compare [`HistoryPage::position`]'s.
    pub since: Option<u64>,
    /// Newest first.
    pub reverse: bool,
}

impl HistoryRequest {
    /// The position only.
    pub fn position() -> Self {
        HistoryRequest {
            limit: Some(0),
            ..Default::default()
        }
    }

    /// At most `limit` publications (`None`: all kept).
    pub fn with_limit(mut self, limit: Option<usize>) -> Self {
        self.limit = limit;
        self
    }

    /// Only publications after `offset` (before it when reversed); `None`: from either end.
    pub fn with_since(mut self, offset: Option<u64>) -> Self {
        self.since = offset;
        self
    }

    /// Newest first.
    pub fn with_reverse(mut self, reverse: bool) -> Self {
        self.reverse = reverse;
        self
    }

    /// Publications after `offset`, oldest first, at most `limit` (`None`: all).
    pub fn since(offset: u64, limit: Option<usize>) -> Self {
        HistoryRequest {
            limit,
            since: Some(offset),
            reverse: false,
        }
    }
}

/// One history read's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryPage {
    /// `(offset, payload)` in the asked order.
    pub publications: Vec<(u64, Vec<u8>)>,
    /// The channel's position now: the last offset and the epoch.
    pub position: StreamPosition,
    /// The oldest offset still kept (0: none kept).
    pub oldest: u64,
}

impl HistoryPage {
    /// Whether everything published after `since` is still in history: same epoch, and
    /// nothing between `since` and the oldest kept offset was trimmed away.
    pub fn covers(&self, since: &StreamPosition) -> bool {
        if since.epoch != self.position.epoch || since.offset > self.position.offset {
            return false;
        }
        since.offset == self.position.offset
            || (self.oldest != 0 && self.oldest <= since.offset + 1)
    }
}

/// A live message of a history channel: its position and payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveEnvelope<'a> {
    /// Where the publication is in history.
    pub position: StreamPosition,
    /// The payload as published.
    pub payload: &'a [u8],
}

impl<'a> LiveEnvelope<'a> {
    /// Splits a received message into position and payload; `None` for a message that is
    /// not in the envelope's exact form (a plain `PUBLISH`).
    pub fn parse(message: &'a [u8]) -> Option<LiveEnvelope<'a>> {
        let rest = message.strip_prefix(b"\x1fph1:")?;
        let end = rest.iter().position(|&b| b == 0x1f)?;
        let header = std::str::from_utf8(&rest[..end]).ok()?;
        let (offset, epoch) = header.split_once(':')?;
        if offset.is_empty() || !offset.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if epoch.is_empty() || !epoch.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        Some(LiveEnvelope {
            position: StreamPosition {
                offset: offset.parse().ok()?,
                epoch: epoch.to_owned(),
            },
            payload: &rest[end + 1..],
        })
    }

    /// The envelope's bytes (what [`PUBLISH_SCRIPT`] publishes).
    pub fn encode(position: &StreamPosition, payload: &[u8]) -> Vec<u8> {
        let mut out = format!("\x1fph1:{}:{}\x1f", position.offset, position.epoch).into_bytes();
        out.extend_from_slice(payload);
        out
    }
}

/// The hash tag that puts a key in `channel`'s own slot: the channel's hash tag when it has
/// one, else the whole name.
fn hash_tag(channel: &str) -> &str {
    if let Some(open) = channel.find('{')
        && let Some(len) = channel[open + 1..].find('}')
        && len > 0
    {
        return &channel[open + 1..open + 1 + len];
    }
    channel
}

/// The stream and meta hash keys of `channel`'s history.
pub fn history_keys(channel: &str) -> (String, String) {
    let tag = hash_tag(channel);
    (
        format!("{STREAM_KEY_PREFIX}{{{tag}}}{channel}"),
        format!("{META_KEY_PREFIX}{{{tag}}}{channel}"),
    )
}

/// A fresh random epoch: 16 hex digits.
fn new_epoch() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// The SHA1 Redis names a script by, learnt from the first `SCRIPT LOAD` answer (the
/// library has no SHA1 of its own); the same on every server.
static PUBLISH_SHA: OnceLock<String> = OnceLock::new();
static PUBLISH_BATCH_SHA: OnceLock<String> = OnceLock::new();
static READ_SHA: OnceLock<String> = OnceLock::new();

fn bad_reply(what: &str) -> HubError {
    HubError::Redis(redis::RedisError::from((
        redis::ErrorKind::Parse,
        "unexpected history script reply",
        what.to_owned(),
    )))
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The offset of a stream entry id `<offset>-0`.
fn id_offset(v: &Value) -> Option<u64> {
    let id = as_string(v)?;
    id.split_once('-')
        .map_or(id.parse().ok(), |(ms, _)| ms.parse().ok())
}

fn parse_entry(v: &Value) -> Option<(u64, Vec<u8>)> {
    let Value::Array(parts) = v else { return None };
    let offset = id_offset(parts.first()?)?;
    let Value::Array(fields) = parts.get(1)? else {
        return None;
    };
    let mut i = 0;
    while i + 1 < fields.len() {
        if as_string(&fields[i]).as_deref() == Some("d") {
            return match &fields[i + 1] {
                Value::BulkString(b) => Some((offset, b.clone())),
                other => as_string(other).map(|s| (offset, s.into_bytes())),
            };
        }
        i += 2;
    }
    None
}

/// The durable-publish queues of a hub, one per channel and options with publications
/// waiting or in flight (see [Batches](self#batches)).
pub(crate) struct Batcher {
    /// The queues. A queue is in the map exactly while a call for its key is in flight:
    /// a caller that finds none inserts an empty one and sends its own publication; when
    /// that call ends (or its future is dropped) the queue is removed if empty, else handed
    /// to a sender task, which removes it once it finds it empty. Both under this lock, so
    /// nothing is queued where no one will send it. No await while it is held.
    queues: Mutex<HashMap<QueueKey, VecDeque<Queued>>>,
    /// [`QUEUE_MAX_BYTES`] of charges; tokio's semaphore serves waiters in order.
    budget: Arc<Semaphore>,
}

impl Default for Batcher {
    fn default() -> Self {
        Batcher {
            queues: Mutex::default(),
            budget: Arc::new(Semaphore::new(QUEUE_MAX_BYTES)),
        }
    }
}

/// What publications must share to go out in one call: the channel (so the keys) and the
/// options the script receives.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct QueueKey {
    channel: String,
    size: usize,
    ttl_secs: u64,
    sharded: bool,
}

/// One queued publication.
struct Queued {
    payload: Vec<u8>,
    /// Its caller's answer. Closed when the caller dropped its future: the publication is
    /// then skipped if it is still queued.
    reply: oneshot::Sender<Result<DurablePublish, HubError>>,
    /// Its charge against [`QUEUE_MAX_BYTES`], given back when the entry is dropped (after
    /// its call returned, or when it is skipped).
    _charge: OwnedSemaphorePermit,
}

/// How a publication entered its channel's queue.
enum Entered {
    /// Queued behind the call in flight; the answer comes from the sender task.
    Queued(oneshot::Receiver<Result<DurablePublish, HubError>>),
    /// No call was in flight: the caller sends its own (holding its charge meanwhile), and
    /// the queue now exists for others to join.
    Own(OwnedSemaphorePermit),
}

impl Batcher {
    /// Queues `payload` behind `key`'s call in flight, or, when there is none, marks one
    /// in flight for the caller to send.
    fn enter(&self, key: &QueueKey, payload: &[u8], charge: OwnedSemaphorePermit) -> Entered {
        let mut queues = lock(&self.queues);
        if let Some(queue) = queues.get_mut(key) {
            let (reply, answer) = oneshot::channel();
            queue.push_back(Queued {
                payload: payload.to_vec(),
                reply,
                _charge: charge,
            });
            return Entered::Queued(answer);
        }
        queues.insert(key.clone(), VecDeque::new());
        Entered::Own(charge)
    }

    /// Takes the next batch of `key`'s queue: the entries in order, skipping those whose
    /// caller has gone, up to the batch bounds. An empty batch means the queue was empty and
    /// is gone from the map, so the next caller starts a new sender.
    fn next_batch(&self, key: &QueueKey) -> Vec<Queued> {
        let mut queues = lock(&self.queues);
        let Some(queue) = queues.get_mut(key) else {
            return Vec::new();
        };
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(next) = queue.front() {
            if next.reply.is_closed() {
                queue.pop_front();
                continue;
            }
            let len = next.payload.len();
            if batch.len() == BATCH_MAX_PUBLICATIONS
                || (!batch.is_empty() && bytes + len > BATCH_MAX_BYTES)
            {
                break;
            }
            bytes += len;
            batch.extend(queue.pop_front());
        }
        if batch.is_empty() {
            queues.remove(key);
        }
        batch
    }
}

/// The end of a lone caller's own call: hands the queue that formed behind it to a sender
/// task, or removes it if empty. Runs when the call returns and when its future is dropped
/// mid-call, so a dropped caller never strands the callers queued behind it.
struct OwnCall<'a> {
    hub: &'a PubSubHub,
    key: &'a QueueKey,
}

impl Drop for OwnCall<'_> {
    fn drop(&mut self) {
        let mut queues = lock(&self.hub.batcher().queues);
        if queues.get(self.key).is_none_or(VecDeque::is_empty) {
            queues.remove(self.key);
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(send_batches(self.hub.clone(), self.key.clone()));
            }
            // Dropped outside a runtime (it is shutting down): the queued callers get
            // `HubError::Closed` rather than wait for a sender that cannot start.
            Err(_) => {
                queues.remove(self.key);
            }
        }
    }
}

/// Removes its queue from the map if the sender task ends without emptying it (a panic, or
/// the runtime shutting down): the entries' callers then get [`HubError::Closed`] instead
/// of waiting for a sender that is gone.
struct SenderExit<'a> {
    batcher: &'a Batcher,
    key: &'a QueueKey,
    /// Set once the task has found its queue empty and removed it itself.
    done: bool,
}

impl Drop for SenderExit<'_> {
    fn drop(&mut self) {
        if !self.done {
            lock(&self.batcher.queues).remove(self.key);
        }
    }
}

/// Sends `key`'s batches until its queue is empty; each caller gets its own answer.
async fn send_batches(hub: PubSubHub, key: QueueKey) {
    let batcher = hub.batcher();
    let mut exit = SenderExit {
        batcher,
        key: &key,
        done: false,
    };
    let keys = history_keys(&key.channel);
    loop {
        let batch = batcher.next_batch(&key);
        if batch.is_empty() {
            exit.done = true;
            return;
        }
        let payloads: Vec<&[u8]> = batch.iter().map(|q| &q.payload[..]).collect();
        match hub.publish_call(&key, &keys, &payloads).await {
            Ok(done) => {
                for (queued, done) in batch.into_iter().zip(done) {
                    let _ = queued.reply.send(Ok(done));
                }
            }
            Err(e) => {
                for queued in batch {
                    let _ = queued.reply.send(Err(e.clone()));
                }
            }
        }
        // Let the callers just answered run first: one that publishes again at once (a
        // publisher in a loop) then joins the next batch instead of the one after it, so
        // that callers do not split into two batches that take turns.
        tokio::task::yield_now().await;
    }
}

/// A script reply that starts with a stream position, `{offset, epoch, ...}`, as the
/// publish and read scripts answer: its parts, the offset and the epoch.
fn position_reply(reply: &Value) -> Result<(&[Value], u64, String), HubError> {
    let Value::Array(parts) = reply else {
        return Err(bad_reply("not an array"));
    };
    let offset = parts
        .first()
        .and_then(as_u64)
        .ok_or_else(|| bad_reply("offset"))?;
    let epoch = parts
        .get(1)
        .and_then(as_string)
        .ok_or_else(|| bad_reply("epoch"))?;
    Ok((parts, offset, epoch))
}

/// The answers in a reply of [`PUBLISH_SCRIPT`] or [`PUBLISH_BATCH_SCRIPT`] for `n`
/// payloads: `{first offset, epoch, receivers...}`.
fn parse_publish_reply(reply: &Value, n: usize) -> Result<Vec<DurablePublish>, HubError> {
    let (parts, first, epoch) = position_reply(reply)?;
    if parts.len() != n + 2 {
        return Err(bad_reply("receiver counts"));
    }
    Ok(parts[2..]
        .iter()
        .zip(first..)
        .map(|(receivers, offset)| DurablePublish {
            position: StreamPosition {
                offset,
                epoch: epoch.clone(),
            },
            receivers: as_u64(receivers).map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX)),
        })
        .collect())
}

impl PubSubHub {
    /// One script call publishing `payloads` durably to `key`'s channel, whose history
    /// keys are `keys`: [`PUBLISH_SCRIPT`] for one payload, [`PUBLISH_BATCH_SCRIPT`] for
    /// more. One answer per payload, in order.
    async fn publish_call(
        &self,
        key: &QueueKey,
        keys: &(String, String),
        payloads: &[&[u8]],
    ) -> Result<Vec<DurablePublish>, HubError> {
        let (stream, meta) = keys;
        let size = key.size.to_string();
        let ttl = key.ttl_secs.to_string();
        let epoch = new_epoch();
        let command: &[u8] = if key.sharded { b"spublish" } else { b"publish" };
        let options = [
            size.as_bytes(),
            ttl.as_bytes(),
            key.channel.as_bytes(),
            epoch.as_bytes(),
            command,
        ];
        let reply = if let [payload] = payloads {
            let mut args = vec![*payload];
            args.extend(options);
            self.run_script(
                "EVALSHA (durable publish)",
                PUBLISH_SCRIPT,
                &[stream, meta],
                &args,
            )
            .await?
        } else {
            let mut args = options.to_vec();
            args.extend(payloads);
            self.run_script(
                "EVALSHA (durable publish batch)",
                PUBLISH_BATCH_SCRIPT,
                &[stream, meta],
                &args,
            )
            .await?
        };
        parse_publish_reply(&reply, payloads.len())
    }

    /// Runs `script` by its SHA (`EVALSHA`), loading it with `EVAL` when Redis does not
    /// know it (a fresh or restarted server), routed by the first key.
    async fn run_script(
        &self,
        operation: &'static str,
        script: &'static str,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<Value, HubError> {
        let conn = self.publisher()?;
        let timeout = self.config().command_timeout;
        let build = |command: &str, first: &str| {
            let mut cmd = redis::cmd(command);
            cmd.arg(first).arg(keys.len());
            for k in keys {
                cmd.arg(*k);
            }
            for a in args {
                cmd.arg(*a);
            }
            cmd
        };
        let cell = if std::ptr::eq(script, PUBLISH_SCRIPT) {
            &PUBLISH_SHA
        } else if std::ptr::eq(script, PUBLISH_BATCH_SCRIPT) {
            &PUBLISH_BATCH_SHA
        } else {
            &READ_SHA
        };
        let sha = match cell.get() {
            Some(sha) => sha.clone(),
            None => {
                let mut load = redis::cmd("SCRIPT");
                load.arg("LOAD").arg(script);
                let sha: String = bounded(operation, timeout, conn.query(&load)).await?;
                cell.get_or_init(|| sha).clone()
            }
        };
        let by_sha = build("EVALSHA", &sha);
        match bounded(operation, timeout, conn.query::<Value>(&by_sha)).await {
            Err(HubError::Redis(e)) if e.code() == Some("NOSCRIPT") => {
                let full = build("EVAL", script);
                bounded(operation, timeout, conn.query::<Value>(&full)).await
            }
            other => other,
        }
    }

    /// Publishes `payload` to `channel` durably: appended to the channel's history stream
    /// (capped at `options.size`, expiring `options.ttl` after the last publication) and
    /// published live in the envelope of [`LiveEnvelope`], in one atomic step (see the
    /// module docs for the keys and [`PUBLISH_SCRIPT`]). Returns the publication's offset and
    /// epoch and Redis' receiver count for its live publish.
    ///
    /// Concurrent calls for the same channel and options are batched: while a script call
    /// for the channel is in flight, further calls queue, and the queue goes out as one call
    /// of [`PUBLISH_BATCH_SCRIPT`] when it returns (at most [`BATCH_MAX_PUBLICATIONS`]
    /// publications and [`BATCH_MAX_BYTES`] per call). Queued publications get consecutive
    /// offsets in queue order, and calls made one after another by one caller keep their
    /// order. A call that finds no call in flight sends its own, as before batching. The
    /// queues of a hub hold at most [`QUEUE_MAX_BYTES`] (each publication charged its
    /// length plus [`QUEUE_CHARGE_PER_PUBLICATION`]); a call that finds no room waits for
    /// it. See [Batches](crate::history#batches).
    ///
    /// Fails with [`HubError::InvalidTarget`] for an empty channel or a zero size, with
    /// [`HubError::Closed`] after [`PubSubHub::shutdown`], and when Redis is down or
    /// stalled: each script call is bounded by `command_timeout`, and a failed call fails
    /// every publication in it with the same error (the next batch tries again). A queued
    /// call also waits for the calls ahead of it in its channel's queue.
    ///
    /// # Cancel safety
    /// Dropping the future leaves the hub as it was. Where it is dropped decides whether
    /// the publication happens:
    /// - waiting for room in the queues: it does not (nothing was queued);
    /// - queued, before a sender task took it into a batch: it does not; the entry is
    ///   skipped when the next batch is formed (right after the call in flight ends), and
    ///   its charge is given back then;
    /// - taken into a batch: it is published with the batch, which the sender task sends,
    ///   and only the answer is lost;
    /// - sending its own call (none was in flight when it came): as before batching, the
    ///   script may or may not have run. The callers queued behind it are not held up: the
    ///   queue is handed to a sender task at once, and its next call goes out on the same
    ///   connection after the dropped one, so offsets still follow the order of the calls.
    ///
    /// Whatever ran, ran whole (appended and published), as Redis runs a script atomically,
    /// so history and the live channel never disagree.
    pub async fn publish_with_history(
        &self,
        channel: &str,
        payload: &[u8],
        options: &HistoryOptions,
    ) -> Result<DurablePublish, HubError> {
        if channel.is_empty() {
            return Err(HubError::InvalidTarget("empty channel".into()));
        }
        if options.size == 0 {
            return Err(HubError::InvalidTarget(
                "history size 0: use publish_bytes for a channel without history".into(),
            ));
        }
        // A closed hub answers at once rather than through a sender task.
        self.publisher()?;
        let batcher = self.batcher();
        let charge = payload
            .len()
            .saturating_add(QUEUE_CHARGE_PER_PUBLICATION)
            .min(QUEUE_MAX_BYTES);
        let charge = Arc::clone(&batcher.budget)
            .acquire_many_owned(u32::try_from(charge).unwrap_or(u32::MAX))
            .await
            .map_err(|_| HubError::Closed)?;
        let key = QueueKey {
            channel: channel.to_owned(),
            size: options.size,
            ttl_secs: options.ttl_secs(),
            sharded: options.sharded,
        };
        let _charge = match batcher.enter(&key, payload, charge) {
            // The sender answers every entry it takes, and drops the others only by ending
            // with the runtime.
            Entered::Queued(answer) => return answer.await.unwrap_or(Err(HubError::Closed)),
            Entered::Own(charge) => charge,
        };
        // No call for this channel was in flight: this one is sent from here, as it was
        // before batching, and callers that come meanwhile queue behind it.
        let _own_call = OwnCall {
            hub: self,
            key: &key,
        };
        let mut done = self
            .publish_call(&key, &history_keys(channel), &[payload])
            .await?;
        done.pop().ok_or_else(|| bad_reply("offset"))
    }

    /// Reads `channel`'s history: the publications `request` asks for and the channel's
    /// position, in one atomic step (see [`READ_SCRIPT`]). A channel without history gets
    /// a position now (offset 0, a new epoch, expiring after `ttl`), so that a client that
    /// starts from it can tell later whether it missed anything.
    ///
    /// # Cancel safety
    /// Dropping the future leaves everything as it was, apart from the position that the
    /// script may have created for a channel that had none (what the next read would create
    /// anyway).
    pub async fn history(
        &self,
        channel: &str,
        request: &HistoryRequest,
        ttl: Duration,
    ) -> Result<HistoryPage, HubError> {
        if channel.is_empty() {
            return Err(HubError::InvalidTarget("empty channel".into()));
        }
        let (stream, meta) = history_keys(channel);
        let ttl = HistoryOptions::new(1, ttl).ttl_secs().to_string();
        let epoch = new_epoch();
        let (mode, start, end) = match (request.limit, request.since, request.reverse) {
            (Some(0), _, _) => ("none", String::new(), String::new()),
            (_, None, false) => ("range", "-".to_owned(), "+".to_owned()),
            (_, None, true) => ("revrange", "+".to_owned(), "-".to_owned()),
            (_, Some(since), false) => (
                "range",
                format!("{}-0", since.saturating_add(1)),
                "+".to_owned(),
            ),
            (_, Some(0), true) => ("none", String::new(), String::new()),
            (_, Some(since), true) => ("revrange", format!("{}-0", since - 1), "-".to_owned()),
        };
        let count = request.limit.unwrap_or(0).to_string();
        let reply = self
            .run_script(
                "EVALSHA (history read)",
                READ_SCRIPT,
                &[&stream, &meta],
                &[
                    epoch.as_bytes(),
                    ttl.as_bytes(),
                    mode.as_bytes(),
                    start.as_bytes(),
                    end.as_bytes(),
                    count.as_bytes(),
                ],
            )
            .await?;
        let (parts, top, epoch) = position_reply(&reply)?;
        let publications = match parts.get(2) {
            Some(Value::Array(entries)) => entries
                .iter()
                .map(|e| parse_entry(e).ok_or_else(|| bad_reply("entry")))
                .collect::<Result<Vec<_>, _>>()?,
            _ => Vec::new(),
        };
        let oldest = parts.get(3).and_then(id_offset).unwrap_or(0);
        Ok(HistoryPage {
            publications,
            position: StreamPosition { offset: top, epoch },
            oldest,
        })
    }

    /// Removes `channel`'s kept publications (`DEL` of its stream). The position stays, so
    /// offsets go on increasing in the same epoch and a client behind it learns that it
    /// cannot recover ([`HistoryPage::covers`] is false).
    ///
    /// # Cancel safety
    /// Dropping the future leaves the hub as it was; the `DEL` may or may not have run.
    pub async fn remove_history(&self, channel: &str) -> Result<(), HubError> {
        if channel.is_empty() {
            return Err(HubError::InvalidTarget("empty channel".into()));
        }
        let (stream, _) = history_keys(channel);
        let conn = self.publisher()?;
        let mut cmd = redis::cmd("DEL");
        cmd.arg(&stream);
        bounded(
            "DEL (history)",
            self.config().command_timeout,
            conn.query::<i64>(&cmd),
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_channel_slot() {
        // Names with a `}` but no hash tag (`{}x`) are the documented exception.
        for channel in ["chat:room", "a{b}c", "{x}{y}", "x{y", "a{b}c}d"] {
            let (stream, meta) = history_keys(channel);
            let slot = crate::cluster::slot_of(channel.as_bytes());
            assert_eq!(crate::cluster::slot_of(stream.as_bytes()), slot, "{stream}");
            assert_eq!(crate::cluster::slot_of(meta.as_bytes()), slot, "{meta}");
        }
        assert_ne!(history_keys("a{b}c").0, history_keys("b").0);
    }

    #[test]
    fn envelope_round_trips_and_refuses_near_misses() {
        let pos = StreamPosition {
            offset: 42,
            epoch: "abc123".into(),
        };
        let bytes = LiveEnvelope::encode(&pos, b"{\"x\":1}");
        let parsed = LiveEnvelope::parse(&bytes).unwrap();
        assert_eq!(parsed.position, pos);
        assert_eq!(parsed.payload, b"{\"x\":1}");
        for bad in [
            &b"{\"x\":1}"[..],
            b"\x1fph1:42:abc",
            b"\x1fph1::abc\x1fx",
            b"\x1fph1:4a:abc\x1fx",
            b"\x1fph1:42:\x1fx",
            b"\x1fph2:42:abc\x1fx",
        ] {
            assert!(LiveEnvelope::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn covers_needs_same_epoch_and_no_trimmed_gap() {
        let page = HistoryPage {
            publications: vec![],
            position: StreamPosition {
                offset: 10,
                epoch: "e".into(),
            },
            oldest: 5,
        };
        let at = |offset, epoch: &str| StreamPosition {
            offset,
            epoch: epoch.into(),
        };
        assert!(page.covers(&at(4, "e")));
        assert!(page.covers(&at(10, "e")));
        assert!(!page.covers(&at(3, "e")));
        assert!(!page.covers(&at(4, "f")));
        assert!(!page.covers(&at(11, "e")));
    }

    #[test]
    fn batches_keep_their_bounds_and_skip_dropped_callers() {
        let batcher = Batcher::default();
        let key = QueueKey {
            channel: "c".into(),
            size: 10,
            ttl_secs: 0,
            sharded: false,
        };
        let charge = |len: usize| {
            Arc::clone(&batcher.budget)
                .try_acquire_many_owned(u32::try_from(len + QUEUE_CHARGE_PER_PUBLICATION).unwrap())
                .unwrap()
        };
        // The first caller sends its own call; the others queue behind it.
        assert!(matches!(
            batcher.enter(&key, b"own", charge(3)),
            Entered::Own(_)
        ));
        let mut answers = Vec::new();
        let mut push = |len: usize, caller_waits: bool| match batcher.enter(
            &key,
            &vec![0; len],
            charge(len),
        ) {
            Entered::Queued(answer) if caller_waits => answers.push(answer),
            Entered::Queued(_) => {}
            Entered::Own(_) => panic!("a call is in flight: the publication queues"),
        };
        for _ in 0..100 {
            push(1, true);
        }
        push(1, false);
        for _ in 0..3 {
            push(400 << 10, true);
        }
        push(2 << 20, true);
        let mut batches = Vec::new();
        loop {
            let batch = batcher.next_batch(&key);
            if batch.is_empty() {
                break;
            }
            batches.push(batch.iter().map(|q| q.payload.len()).collect::<Vec<_>>());
        }
        // At most 64 publications per batch; the caller that went away is skipped; at most
        // 1 MiB per batch, and a larger payload alone.
        assert_eq!(batches[0], vec![1; 64]);
        let mut second = vec![1; 36];
        second.extend([400 << 10, 400 << 10]);
        assert_eq!(batches[1], second);
        assert_eq!(batches[2], vec![400 << 10]);
        assert_eq!(batches[3], vec![2 << 20]);
        assert_eq!(batches.len(), 4);
        // The empty queue is gone, and every charge was given back.
        assert!(lock(&batcher.queues).is_empty());
        assert_eq!(batcher.budget.available_permits(), QUEUE_MAX_BYTES);
    }
}
