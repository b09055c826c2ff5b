//! The hub's counters: what was published, delivered and received, the bytes held, and
//! the version number that tells watchers something changed.
//!
//! [`HubCounters`] is shared by the hub, its links and its subscriptions, which bump it on
//! their hot paths with relaxed atomics; [`Stats`] and [`MemoryUse`] are the snapshots
//! [`PubSubHub`](crate::PubSubHub) hands out.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde::Serialize;

/// Lifetime counters shared by the hub, its links and its subscriptions. They only go up,
/// except through [`PubSubHub::reset_stats`](crate::PubSubHub::reset_stats).
#[derive(Default)]
pub(crate) struct HubCounters {
    pub(crate) published_total: AtomicU64,
    pub(crate) delivered_total: AtomicU64,
    pub(crate) publish_errors_total: AtomicU64,
    pub(crate) received_total: AtomicU64,
    pub(crate) dropped_total: AtomicU64,
    pub(crate) reconnects_total: AtomicU64,
    /// Payload bytes the subscriptions' ring buffers hold now.
    pub(crate) buffered_bytes: AtomicU64,
    /// Payload bytes the consumers' queues hold now (shared with every queue).
    pub(crate) queued_bytes: Arc<AtomicU64>,
    /// Bumped on every observable change (message, status, registry, publish); watchers
    /// such as the dashboard's push stream wait on `changed`. The low bit says whether the
    /// current value has been read: only a change after a read needs a new value, so a
    /// flood of messages with no one looking costs `touch` a plain load per message instead
    /// of a read-modify-write on a cache line every link and publisher shares.
    version: AtomicU64,
    changed: tokio::sync::Notify,
    /// Calls of [`HubCounters::changed`] waiting now. `touch` skips the `Notify` (and the
    /// lock inside it) when there are none, which is the common case on the hot paths.
    watchers: AtomicUsize,
}

impl HubCounters {
    /// Records that something observable changed and wakes the watchers.
    ///
    /// The version is odd once read ([`HubCounters::version`] sets the low bit) and even
    /// while its latest change is unread. A change while it is even needs nothing: the
    /// next read returns more than any read before it. A change while it is odd makes it
    /// even (one more), and wakes the watchers.
    ///
    /// Sequentially consistent with `changed`: a watcher registers, then reads `version`;
    /// `touch` bumps `version`, then reads `watchers`. Either the watcher sees the new
    /// version, or `touch` sees the watcher and wakes it.
    pub(crate) fn touch(&self) {
        loop {
            let seen = self.version.load(Ordering::SeqCst);
            if seen & 1 == 0 {
                return;
            }
            if self
                .version
                .compare_exchange(seen, seen + 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                break;
            }
        }
        if self.watchers.load(Ordering::SeqCst) > 0 {
            self.changed.notify_waiters();
        }
    }

    /// The number `touch` moves: it grows after every change (and is marked as read).
    pub(crate) fn version(&self) -> u64 {
        self.version.fetch_or(1, Ordering::SeqCst) | 1
    }

    /// Waits until the version exceeds `since` and returns it. Cancel safe: it only
    /// waits, and a dropped call stops counting as a watcher.
    pub(crate) async fn changed(&self, since: u64) -> u64 {
        let _watching = Watching::new(&self.watchers);
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = self.version();
            if now > since {
                return now;
            }
            notified.await;
        }
    }

    /// Counts a successful PUBLISH or SPUBLISH that Redis delivered to `delivered`.
    pub(crate) fn record_publish(&self, delivered: i64) {
        self.published_total.fetch_add(1, Ordering::Relaxed);
        self.delivered_total
            .fetch_add(delivered.max(0) as u64, Ordering::Relaxed);
    }

    /// A snapshot; `active_subscriptions` and `channels` come from the hub, which owns
    /// them, and `pattern_subscriptions` is left 0 (it needs Redis).
    pub(crate) fn snapshot(&self, active_subscriptions: u64, channels: &ChannelCounts) -> Stats {
        Stats {
            published_total: self.published_total.load(Ordering::Relaxed),
            delivered_total: self.delivered_total.load(Ordering::Relaxed),
            received_total: self.received_total.load(Ordering::Relaxed),
            active_subscriptions,
            pattern_subscriptions: 0,
            channel_published: channels
                .by_channel
                .iter()
                .map(|(k, v)| (k.clone(), v.load(Ordering::Relaxed)))
                .collect(),
            channel_published_other: channels.other.load(Ordering::Relaxed),
            publish_errors_total: self.publish_errors_total.load(Ordering::Relaxed),
            dropped_total: self.dropped_total.load(Ordering::Relaxed),
            reconnects_total: self.reconnects_total.load(Ordering::Relaxed),
        }
    }

    /// Zeroes the lifetime counters (not the gauges of bytes held, which count what is
    /// there, nor the version, which only grows).
    pub(crate) fn reset(&self) {
        for counter in [
            &self.published_total,
            &self.delivered_total,
            &self.publish_errors_total,
            &self.received_total,
            &self.dropped_total,
            &self.reconnects_total,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }

    /// Payload bytes held now.
    pub(crate) fn memory(&self) -> MemoryUse {
        MemoryUse {
            buffered_bytes: self.buffered_bytes.load(Ordering::Relaxed),
            queued_bytes: self.queued_bytes.load(Ordering::Relaxed),
            cached_view_bytes: crate::Payload::cached_view_bytes(),
        }
    }
}

/// Counts one waiting [`HubCounters::changed`] call for as long as it lives (also when the
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

/// Publishes per channel, for at most `HubConfig::max_tracked_channels` channels.
/// Read-mostly: the hub keeps it in an `RwLock`, and a publish to a known channel takes
/// the read lock and bumps an atomic, so concurrent publishers do not serialize on it.
#[derive(Default)]
pub(crate) struct ChannelCounts {
    by_channel: HashMap<String, AtomicU64>,
    other: AtomicU64,
}

impl ChannelCounts {
    /// Counts a publish to a channel already tracked, or one beyond the bound; `false`
    /// when the channel is new and there is room, which needs [`ChannelCounts::add`] (the
    /// write lock).
    pub(crate) fn count_known(&self, channel: &str, max: usize) -> bool {
        if let Some(n) = self.by_channel.get(channel) {
            n.fetch_add(1, Ordering::Relaxed);
        } else if self.by_channel.len() >= max {
            self.other.fetch_add(1, Ordering::Relaxed);
        } else {
            return false;
        }
        true
    }

    /// Counts a publish under the write lock, tracking the channel if there is room.
    pub(crate) fn add(&mut self, channel: &str, max: usize) {
        if !self.count_known(channel, max) {
            self.by_channel
                .insert(channel.to_owned(), AtomicU64::new(1));
        }
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
    /// when taken from [`PubSubHub::local_stats`](crate::PubSubHub::local_stats).
    pub pattern_subscriptions: i64,
    /// Successful publishes per channel, for at most `HubConfig::max_tracked_channels`
    /// channels.
    pub channel_published: BTreeMap<String, u64>,
    /// Publishes to channels beyond that bound.
    pub channel_published_other: u64,
    /// PUBLISH calls that failed or timed out.
    pub publish_errors_total: u64,
    /// Messages dropped for consumers that fell behind.
    pub dropped_total: u64,
    /// Recoveries of subscriptions after a connection loss: one per subscription per gap,
    /// however many of its connections the gap took.
    pub reconnects_total: u64,
}

/// Payload bytes held now ([`PubSubHub::memory`](crate::PubSubHub::memory)). Each holder
/// is bounded: a ring buffer by [`HubConfig::buffer_max_bytes`](crate::HubConfig::buffer_max_bytes)
/// (a larger message is kept as a preview), a consumer's queue by
/// [`HubConfig::queue_max_bytes`](crate::HubConfig::queue_max_bytes) (plus the newest
/// message, kept whole).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MemoryUse {
    /// Payload bytes in this hub's ring buffers.
    pub buffered_bytes: u64,
    /// Payload bytes in this hub's consumer queues.
    pub queued_bytes: u64,
    /// Source bytes of the payloads whose parsed JSON view is cached, in this whole process
    /// ([`Payload::cached_view_bytes`](crate::Payload::cached_view_bytes)).
    pub cached_view_bytes: u64,
}

#[cfg(test)]
mod version_tests {
    use super::*;

    #[test]
    fn every_change_after_a_read_shows_in_the_next_read_and_unread_changes_cost_nothing() {
        let c = HubCounters::default();
        let first = c.version();
        assert_eq!(c.version(), first, "no change, same version");
        c.touch();
        let raw = c.version.load(Ordering::SeqCst);
        for _ in 0..1000 {
            c.touch();
        }
        assert_eq!(
            c.version.load(Ordering::SeqCst),
            raw,
            "changes nobody read yet move nothing"
        );
        let second = c.version();
        assert!(second > first);
        c.touch();
        assert!(c.version() > second);
    }

    #[tokio::test]
    async fn a_watcher_wakes_on_the_first_change_after_its_read() {
        let c = Arc::new(HubCounters::default());
        let since = c.version();
        let watcher = {
            let c = Arc::clone(&c);
            tokio::spawn(async move { c.changed(since).await })
        };
        while c.watchers.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        c.touch();
        let now = tokio::time::timeout(std::time::Duration::from_secs(5), watcher)
            .await
            .expect("woken")
            .unwrap();
        assert!(now > since);
    }
}
